"""Video writers: decodable mp4 (odd sizes too), looping GIF, PNG frames, zip, upscaling."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from seg2vid.video import as_frames, frames_zip, make_even, upscale, write_frames, write_gif, write_mp4


def moving_frames(n: int = 9, h: int = 32, w: int = 64) -> np.ndarray:
    """(n, h, w, 3) uint8: a smooth gradient with a bright square moving right (easy to compress, distinct)."""
    y, x = np.mgrid[0:h, 0:w]
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        frames[t, ..., 0] = (x * 255 // max(w - 1, 1)).astype(np.uint8)
        frames[t, ..., 1] = (y * 255 // max(h - 1, 1)).astype(np.uint8)
        frames[t, ..., 2] = 60
        x0 = 2 + 3 * t
        frames[t, h // 4 : h // 4 + 8, x0 : x0 + 8] = 255
    return frames


def read_mp4(path) -> tuple[np.ndarray, float]:
    from moviepy import VideoFileClip

    clip = VideoFileClip(str(path), audio=False)
    try:
        return np.stack(list(clip.iter_frames())), clip.fps
    finally:
        clip.close()


@pytest.mark.parametrize("size", [(32, 64), (33, 65), (31, 64)])
def test_mp4_is_decodable_with_the_right_frames(tmp_path, size):
    frames = moving_frames(9, *size)
    path = write_mp4(frames, tmp_path / "video.mp4", fps=8)
    assert path.stat().st_size > 0
    decoded, fps = read_mp4(path)
    h, w = size
    even = (h + h % 2, w + w % 2)  # odd sizes are padded by one pixel
    assert decoded.shape == (9, *even, 3) and fps == 8
    error = np.abs(decoded[:, :h, :w].astype(int) - frames.astype(int)).mean()
    assert error < 6, error  # H.264 is lossy, but the content is there (a wrong frame order would be far off)
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]  # no temporary files left


def test_mp4_is_faststart_h264_yuv420p(tmp_path):
    path = write_mp4(moving_frames(), tmp_path / "v.mp4")
    data = path.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # +faststart: the index comes first
    assert b"avc1" in data  # H.264


def test_mp4_upscaled(tmp_path):
    decoded, _ = read_mp4(write_mp4(moving_frames(4), tmp_path / "v.mp4", scale=2, resample="bicubic"))
    assert decoded.shape == (4, 64, 128, 3)


def test_gif_loops_with_every_frame(tmp_path):
    frames = moving_frames(9, 31, 63)
    path = write_gif(frames, tmp_path / "v.gif", fps=10)
    with Image.open(path) as im:
        assert im.n_frames == 9 and im.size == (63, 31)
        assert im.info["loop"] == 0 and im.info["duration"] == 100
        im.seek(4)
        frame = np.asarray(im.convert("RGB"))
    assert np.abs(frame.astype(int) - frames[4].astype(int)).mean() < 8  # palette quantisation only


def test_png_frames_are_lossless_and_ordered(tmp_path):
    frames = moving_frames(9)
    paths = write_frames(frames, tmp_path / "frames")
    assert [p.name for p in paths] == [f"frame_{i:02d}.png" for i in range(9)]
    for p, f in zip(paths, frames):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), f)
    scaled = write_frames(frames[:2], tmp_path / "big", scale=3)
    assert Image.open(scaled[0]).size == (192, 96)


def test_frames_zip(tmp_path):
    frames = moving_frames(3)
    path = frames_zip(frames, tmp_path / "frames.zip")
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["frame_00.png", "frame_01.png", "frame_02.png"]
        with zf.open("frame_02.png") as f:
            np.testing.assert_array_equal(np.asarray(Image.open(f)), frames[2])


def test_upscale_and_make_even():
    frames = moving_frames(2, 3, 5)
    nearest = upscale(frames, 2)
    assert nearest.shape == (2, 6, 10, 3)
    np.testing.assert_array_equal(nearest[:, ::2, ::2], frames)
    np.testing.assert_array_equal(upscale(frames, 1), frames)
    even = make_even(frames)
    assert even.shape == (2, 4, 6, 3)
    np.testing.assert_array_equal(even[:, :3, :5], frames)
    np.testing.assert_array_equal(even[:, 3, :5], frames[:, 2])  # edge replicated


def test_frame_inputs():
    frames = moving_frames(3)
    np.testing.assert_array_equal(as_frames(list(frames)), frames)
    gray = as_frames(frames[..., 0])
    assert gray.shape == (3, 32, 64, 3)


@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((3, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((3, 8, 8, 4), np.uint8), "RGB"),
        ([], "No frames"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 6, 3), np.uint8)], "same shape"),
        (np.zeros((0, 8, 8, 3), np.uint8), "No frames"),
    ],
)
def test_bad_frames(tmp_path, frames, match):
    with pytest.raises(ValueError, match=match):
        write_gif(frames, tmp_path / "x.gif")


@pytest.mark.parametrize("kwargs, match", [(dict(fps=0), "fps"), (dict(scale=0), "scale"), (dict(scale=2.5), "scale")])
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_mp4(moving_frames(2), tmp_path / "x.mp4", **kwargs)
    assert not (tmp_path / "x.mp4").exists()


def test_an_empty_mp4_from_ffmpeg_is_an_error(tmp_path, monkeypatch):
    """ffmpeg can exit quietly with a 0-byte file (odd sizes with yuv420p); the writer must notice."""
    from moviepy import ImageSequenceClip

    def write_nothing(self, filename, **kwargs):
        open(filename, "wb").close()

    monkeypatch.setattr(ImageSequenceClip, "write_videofile", write_nothing)
    with pytest.raises(RuntimeError, match="empty file"):
        write_mp4(moving_frames(2), tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []
