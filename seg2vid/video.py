"""Writing videos: H.264 mp4 (moviepy 2), looping GIF (Pillow), PNG frames and a zip of them.

All writers take ``frames`` as a (N, H, W, 3) uint8 array or a sequence of (H, W, 3) uint8 arrays, an optional
integer ``scale`` to enlarge small videos (128×256 is tiny in a browser) with ``resample`` = ``"nearest"``
(crisp pixels) or ``"bicubic"``, and write atomically (temporary file in the same folder, then rename).

The mp4 is H.264 in yuv420p with ``+faststart`` (plays in every browser, starts before it is fully loaded).
yuv420p needs even width and height; odd sizes are padded by one pixel (edge replicated) — with odd sizes
ffmpeg otherwise writes a 0-byte file and moviepy raises nothing, so every mp4 is also checked after writing.
"""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["as_frames", "upscale", "make_even", "write_mp4", "write_gif", "write_frames", "frames_zip"]

_RESAMPLE = ("nearest", "bicubic")


def as_frames(frames) -> np.ndarray:
    """(N, H, W, 3) uint8 array or a sequence of (H, W, 3) uint8 arrays → one (N, H, W, 3) uint8 array.

    Grayscale frames (N, H, W) are repeated to RGB. Raises ``ValueError`` for anything else.
    """
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("No frames to write.")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"All frames must have the same shape; got {sorted(shapes)}.")
        frames = np.stack([np.asarray(f) for f in frames])
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Frames must be (N, H, W, 3) RGB; got shape {tuple(frames.shape)}.")
    if frames.dtype != np.uint8:
        raise ValueError(f"Frames must be uint8; got {frames.dtype} (convert with (x * 255).round().astype(np.uint8)).")
    if 0 in frames.shape:
        raise ValueError(f"No frames to write (shape {tuple(frames.shape)}).")
    return frames


def upscale(frames, scale: int = 1, resample: str = "nearest") -> np.ndarray:
    """Enlarge (N, H, W, 3) uint8 frames by an integer ``scale`` with ``"nearest"`` or ``"bicubic"`` sampling."""
    frames = as_frames(frames)
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer; got {scale!r}.")
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {_RESAMPLE}; got {resample!r}.")
    if scale == 1:
        return frames
    if resample == "nearest":
        return frames.repeat(scale, axis=1).repeat(scale, axis=2)
    from PIL import Image

    _, h, w, _ = frames.shape
    return np.stack([np.asarray(Image.fromarray(f).resize((w * scale, h * scale), Image.BICUBIC)) for f in frames])


def make_even(frames: np.ndarray) -> np.ndarray:
    """Pad (N, H, W, 3) frames by one edge-replicated row / column where H / W is odd (yuv420p needs even)."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _temp_path(path: Path) -> Path:
    # Same folder (atomic rename) and same suffix (ffmpeg picks the container from it).
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def _check_fps(fps) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or not 0 < float(fps) <= 240:
        raise ValueError(f"fps must be a number in (0, 240]; got {fps!r}.")
    return float(fps)


def _prepare(path, frames, scale, resample) -> tuple[Path, np.ndarray]:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; give a file name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, upscale(frames, scale, resample)


def write_mp4(
    frames, path, fps: float = 8, scale: int = 1, resample: str = "nearest", crf: int = 18, preset: str = "medium"
) -> Path:
    """Write an H.264 mp4 (yuv420p, ``+faststart``); returns the path. Raises ``RuntimeError`` if ffmpeg fails.

    ``preset`` is the x264 speed preset (``"ultrafast"`` … ``"veryslow"``): the web app's live slider uses a fast one.
    """
    from moviepy import ImageSequenceClip

    fps = _check_fps(fps)
    path, frames = _prepare(path, frames, scale, resample)
    frames = make_even(frames)
    tmp = _temp_path(path)
    clip = ImageSequenceClip(list(frames), fps=fps)
    try:
        clip.write_videofile(
            str(tmp),
            fps=fps,
            codec="libx264",
            preset=preset,
            audio=False,
            pixel_format="yuv420p",
            ffmpeg_params=["-crf", str(int(crf)), "-movflags", "+faststart"],
            logger=None,
        )
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError(f"ffmpeg wrote an empty file for {str(path)!r} (frames {tuple(frames.shape)}).")
        os.replace(tmp, path)
    except OSError as e:  # moviepy reports ffmpeg failures as OSError
        raise RuntimeError(f"Could not write {str(path)!r}: {e}") from None
    finally:
        clip.close()
        if tmp.exists():
            tmp.unlink()
    return path


def write_gif(frames, path, fps: float = 8, scale: int = 1, resample: str = "nearest", loop: int = 0) -> Path:
    """Write an animated GIF that loops forever (``loop=0``); returns the path.

    GIF holds 256 colours per frame; Pillow merges consecutive identical frames into one longer frame.
    """
    from PIL import Image

    fps = _check_fps(fps)
    path, frames = _prepare(path, frames, scale, resample)
    images = [Image.fromarray(f) for f in frames]
    tmp = _temp_path(path)
    try:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=loop,
            disposal=1,
        )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_frames(frames, folder, prefix: str = "frame_", scale: int = 1, resample: str = "nearest") -> list[Path]:
    """Write each frame as ``folder/{prefix}{i:02d}.png`` (lossless); returns the paths in order."""
    from PIL import Image

    frames = upscale(frames, scale, resample)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(len(frames) - 1)))
    paths = []
    for i, frame in enumerate(frames):
        path = folder / f"{prefix}{i:0{width}d}.png"
        tmp = _temp_path(path)
        Image.fromarray(frame).save(tmp, format="PNG")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def frames_zip(frames, path, prefix: str = "frame_", scale: int = 1, resample: str = "nearest") -> Path:
    """Write the frames as PNGs into one zip file (handy as a download); returns the path."""
    from PIL import Image

    path, frames = _prepare(path, frames, scale, resample)
    width = max(2, len(str(len(frames) - 1)))
    tmp = _temp_path(path)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are already compressed
            for i, frame in enumerate(frames):
                buf = io.BytesIO()
                Image.fromarray(frame).save(buf, format="PNG")
                zf.writestr(f"{prefix}{i:0{width}d}.png", buf.getvalue())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
