"""The web app: over its HTTP API with gradio_client against a launched server, and its handlers in-process.

The server runs ``python app.py --checkpoint <tiny model>`` in a subprocess on a free port (offline, CPU).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_app_utils import TINY_SIZE, _broken_files, save_png, tiny_pipeline

from seg2vid import app_utils as U
from seg2vid import labels

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 180  # importing torch + gradio on a busy 2-core machine is slow


# ----------------------------------------------------------------------------------------------------------------
# Launching the app (shared with the browser test)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(checkpoint, log_path: Path, extra_args=()):
    """Start ``app.py`` in a subprocess on a free port; yield its URL; stop it (by its own pid) afterwards."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--host", "127.0.0.1", "--device", "cpu"]
    if checkpoint is not None:
        command += ["--checkpoint", str(checkpoint)]
    with open(log_path, "w") as log:
        process = subprocess.Popen([*command, *extra_args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not start within {STARTUP_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_model")
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def app_url(tiny_checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("app_log") / "app.log"
    with running_app(tiny_checkpoint, log) as url:
        yield url


@pytest.fixture()
def client(app_url) -> Client:
    return Client(app_url, verbose=False, download_files=str(Path(os.environ.get("TMPDIR", "/tmp")) / "seg2vid-client"))


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG", f"{path} is {im.format}, not PNG (label colours must travel losslessly)"
        return np.asarray(im.convert("RGB"))


def editor_payload(editor: dict) -> dict:
    """An ImageEditor value as the client returned it → the same value as an input."""
    return {
        "background": handle_file(editor["background"]),
        "layers": [],
        "composite": handle_file(editor["composite"]),
        "id": None,
    }


def updated_value(value):
    """A component returned as an update (``gr.File(path, visible=True)``) reaches the client as a dict."""
    return value["value"] if isinstance(value, dict) and value.get("__type__") == "update" else value


def video_file(value) -> str:
    return value if isinstance(value, str) else value["video"]


def gallery_frames(gallery) -> np.ndarray:
    return np.stack([read_png(item["image"]) for item in gallery])


def street_with_objects(size=(64, 128)) -> np.ndarray:
    """A 2× model-resolution label map with a car and a person on the street scene."""
    ids = U.street_scene(size)
    h, w = size
    ids[int(0.7 * h) : int(0.85 * h), int(0.3 * w) : int(0.45 * w)] = labels.NAME_TO_ID["car"]
    ids[int(0.55 * h) : int(0.9 * h), int(0.7 * w) : int(0.74 * w)] = labels.NAME_TO_ID["person"]
    return ids


def assert_friendly(message: str) -> None:
    assert message and "Traceback" not in message and 'File "' not in message and "site-packages" not in message


# ----------------------------------------------------------------------------------------------------------------
# Over the API


def test_upload_generate_scrub_and_download(client, tmp_path):
    ids = street_with_objects()
    path = save_png(labels.colorize(ids), tmp_path / "street.png")
    expected = U.fit_ids(ids, TINY_SIZE)[0]

    editor, label_view, table, note = client.predict(handle_file(str(path)), api_name="/upload")
    np.testing.assert_array_equal(read_png(label_view), labels.colorize(expected))  # PNG: colours intact
    assert {row[0] for row in table["data"]} == {labels.CLASS_NAMES[i] for i in np.unique(expected)}
    assert "128×64" in note and "nearest" in note
    scale = U.display_scale(TINY_SIZE)
    enlarged = expected.repeat(scale, axis=0).repeat(scale, axis=1)
    np.testing.assert_array_equal(read_png(editor["background"]), labels.colorize(enlarged))

    first, video, mp4, gif, frames_zip, gallery, flow, occ, status, seen_view, _ = client.predict(
        editor_payload(editor), None, 5, 0.0, 0.0, 1.0, api_name="/generate"
    )
    assert updated_value(gif) is None and updated_value(frames_zip) is None  # exported on request only
    np.testing.assert_array_equal(read_png(seen_view), labels.colorize(expected))  # what the model was given
    frames = gallery_frames(gallery)
    assert frames.shape == (9, *TINY_SIZE, 3)
    np.testing.assert_array_equal(read_png(first), frames[0])
    assert read_png(flow).shape[:2] == (2 * TINY_SIZE[0] + 2, 4 * TINY_SIZE[1] + 6)  # 2 × 4 tiles
    assert read_png(occ).shape == read_png(flow).shape
    assert "Seed 5" in status
    import imageio_ffmpeg

    video_path = video_file(video)
    assert Path(video_path).read_bytes()[4:8] == b"ftyp"  # an mp4 container
    reader = imageio_ffmpeg.read_frames(video_path)
    meta = next(reader)
    assert meta["codec"] == "h264" and tuple(meta["size"]) == (2 * TINY_SIZE[1], 2 * TINY_SIZE[0])
    assert sum(1 for _ in reader) == 9
    assert Path(mp4).read_bytes() == Path(video_path).read_bytes()  # the mp4 download is the video shown

    # The sliders at the positions Generate used reproduce its frames exactly (same z, cached stage 1) …
    _, _, _, _, same_gallery, *_ = client.predict(0.0, 0.0, 1.0, api_name="/scrub")
    np.testing.assert_array_equal(gallery_frames(same_gallery), frames)
    # … moving the foreground slider changes the motion but keeps the first frame.
    new_video, new_mp4, _, _, moved_gallery, moved_flow, *_ = client.predict(0.6, 0.0, 1.0, api_name="/scrub")
    moved = gallery_frames(moved_gallery)
    np.testing.assert_array_equal(moved[0], frames[0])
    assert not np.array_equal(moved[1:], frames[1:])
    assert not np.array_equal(read_png(moved_flow), read_png(flow))
    assert video_file(new_video) != video_path
    assert Path(new_mp4).read_bytes() == Path(video_file(new_video)).read_bytes()

    gif, frames_zip = map(updated_value, client.predict(api_name="/export"))  # GIF and PNGs of the last render
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames >= 2 and im.size == (2 * TINY_SIZE[1], 2 * TINY_SIZE[0])
    with zipfile.ZipFile(frames_zip) as zf:
        names = sorted(zf.namelist())
        assert len(names) == 9
        zf.extract(names[3], tmp_path)
    np.testing.assert_array_equal(read_png(tmp_path / names[3]), moved[3])


def test_animating_an_uploaded_photo_starts_from_that_photo(client, tmp_path):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (90, 200, 3), dtype=np.uint8)  # not 1:2: centre-cropped
    photo_path = save_png(photo, tmp_path / "photo.png")
    expected = U.read_photo_upload(photo_path, TINY_SIZE)
    preview = client.predict(handle_file(str(photo_path)), api_name="/photo")
    np.testing.assert_array_equal(read_png(preview), expected)

    editor, *_ = client.predict(handle_file(str(save_png(labels.colorize(street_with_objects()), tmp_path / "l.png"))),
                                api_name="/upload")
    first, _, _, _, _, gallery, _, _, status, *_ = client.predict(
        editor_payload(editor), handle_file(str(photo_path)), 1, 0.0, 0.0, 1.0, api_name="/generate"
    )
    np.testing.assert_array_equal(read_png(first), expected)
    assert gallery_frames(gallery).shape == (9, *TINY_SIZE, 3)
    assert "your photo" in status


def test_broken_uploads_get_a_clear_message_and_the_app_keeps_answering(client, tmp_path):
    good = save_png(labels.colorize(street_with_objects()), tmp_path / "good.png")
    for name, (path, words) in _broken_files(tmp_path).items():
        for endpoint in ("/upload", "/photo"):
            with pytest.raises(AppError) as info:
                client.predict(handle_file(str(path)), api_name=endpoint)
            message = str(info.value)
            assert words in message, (name, endpoint, message)
            assert_friendly(message)
        _, label_view, _, _ = client.predict(handle_file(str(good)), api_name="/upload")  # still answering
        assert read_png(label_view).shape == (*TINY_SIZE, 3)


def test_generate_from_an_empty_canvas_is_a_clear_message(client):
    with pytest.raises(AppError) as info:
        client.predict(None, None, 0, 0.0, 0.0, 1.0, api_name="/generate")
    assert "canvas is empty" in str(info.value)
    assert_friendly(str(info.value))


# ----------------------------------------------------------------------------------------------------------------
# In-process: the handlers and the start-up logic


@pytest.fixture()
def app_module():
    pytest.importorskip("gradio")
    sys.path.insert(0, str(ROOT))
    try:
        import app

        yield app
    finally:
        sys.path.remove(str(ROOT))


def no_progress(*args, **kwargs):
    pass


def test_slider_moves_rerun_stage_two_only(app_module):
    pipe = tiny_pipeline()
    calls = {"stage1": 0, "encode": 0, "decode": 0}
    pipe.image_generator.register_forward_hook(lambda *a: calls.__setitem__("stage1", calls["stage1"] + 1))
    for name, key in (("encode_image", "encode"), ("decode", "decode")):
        original = getattr(pipe.flow_predictor, name)

        def counted(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        setattr(pipe.flow_predictor, name, counted)
    demo_app = app_module.Seg2VidApp(pipe)
    canvas = U.editor_value(street_with_objects(TINY_SIZE), 2)
    clip, *_ = demo_app.generate(canvas, None, 3, 0.0, 0.0, 1.0, progress=no_progress)
    assert calls == {"stage1": 1, "encode": 1, "decode": 1}
    previous = None
    for fg, bg, strength in ((0.2, 0.0, 1.0), (0.2, -0.5, 1.0), (0.2, -0.5, 1.7)):
        clip, video, _, _, _, gallery, *_ = demo_app.scrub(clip, fg, bg, strength)
        assert Path(video).stat().st_size > 0 and len(gallery) == 9
        frames = np.stack([frame for frame, _ in gallery])
        assert previous is None or not np.array_equal(frames, previous)
        previous = frames
    assert calls == {"stage1": 1, "encode": 1, "decode": 4}


def test_the_app_draws_the_codes_of_the_painted_label_map(app_module):
    """With a prior conditioned on the layout, the sliders start at (and turn about) the painted map's codes."""
    import torch
    from test_pipeline import tiny_models

    from seg2vid import Seg2VidPipeline
    from seg2vid.networks.flow_predictor import layout_descriptor

    generator, flow_predictor = tiny_models(0, size=TINY_SIZE, head_std=0.3, num_frames=8, fitted_prior=True,
                                            prior_components=4, prior_neighbours=1)
    maps = [U.street_scene(TINY_SIZE) for _ in range(4)]  # the "training clips": one car each, in four places
    for i, m in enumerate(maps):
        m[18:24, 4 + 14 * i:12 + 14 * i] = labels.NAME_TO_ID["car"]
    layouts = torch.cat([layout_descriptor(labels.one_hot(m).unsqueeze(0)) for m in maps])
    g = torch.Generator().manual_seed(0)
    flow_predictor.set_prior_mixture(torch.randn(4, 6, generator=g), torch.zeros(4, 6),
                                     torch.randn(4, 3, generator=g), torch.zeros(4, 3), layouts)
    pipe = Seg2VidPipeline(generator, flow_predictor, device="cpu")
    demo_app = app_module.Seg2VidApp(pipe)
    for i in (1, 3):
        clip, *_ = demo_app.generate(U.editor_value(maps[i], 2), None, 5, 0.0, 0.0, 1.0, progress=no_progress)
        assert np.array_equal(clip.ids, maps[i])
        # One neighbour: every code of this map is training clip i's (stds 0), the start and both ends alike.
        assert torch.equal(clip.fg_path.start, flow_predictor.prior_means_fg[i])
        assert torch.equal(clip.bg_path(1.0), flow_predictor.prior_means_bg[i])
        torch.testing.assert_close(clip.bg_path.centre, flow_predictor.prior_means_bg[i])
        np.testing.assert_array_equal(clip.frames, pipe(maps[i], seed=5).frames)


def test_handler_failures_become_friendly_gradio_errors(app_module, tmp_path, monkeypatch):
    import gradio as gr

    demo_app = app_module.Seg2VidApp(tiny_pipeline())
    with pytest.raises(gr.Error, match="canvas is empty"):
        demo_app.generate(None, None, 0, 0.0, 0.0, 1.0, progress=no_progress)
    path, words = _broken_files(tmp_path)["text"]
    with pytest.raises(gr.Error, match=words):
        demo_app.upload_label_map(str(path))

    def crash(*args, **kwargs):
        raise KeyError("/srv/internal/secret.py")

    monkeypatch.setattr(demo_app.pipe, "__call__", crash)
    monkeypatch.setattr(type(demo_app.pipe), "__call__", crash)
    with pytest.raises(gr.Error) as info:
        demo_app.generate(U.editor_value(U.street_scene(TINY_SIZE)), None, 0, 0.0, 0.0, 1.0, progress=no_progress)
    assert "KeyError" in info.value.message and "/srv" not in info.value.message


def test_page_shows_the_untrained_banner_only_without_a_model_and_serves_png(app_module):
    import gradio as gr

    def markdown_text(demo) -> str:
        return "\n".join(str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown))

    pipe = tiny_pipeline()
    with_banner = app_module.build_demo(app_module.Seg2VidApp(pipe, U.UNTRAINED_BANNER))
    assert U.UNTRAINED_BANNER in markdown_text(with_banner)
    without = app_module.build_demo(app_module.Seg2VidApp(pipe, None))
    assert "Untrained" not in markdown_text(without)
    images = [b for b in without.blocks.values() if isinstance(b, (gr.Image, gr.ImageEditor, gr.Gallery))]
    assert len(images) >= 6 and all(b.format == "png" for b in images)
    editors = [b for b in without.blocks.values() if isinstance(b, gr.ImageEditor)]
    assert len(editors) == 1
    assert editors[0].brush.colors == U.palette_hex() and editors[0].brush.color_mode == "fixed"


def test_share_without_internet_warns_and_serves_locally(app_module, monkeypatch, caplog):
    import gradio as gr

    launched = {}
    monkeypatch.setattr(app_module.U, "share_available", lambda *a, **k: False)
    monkeypatch.setattr(app_module.U, "load_app_pipeline", lambda checkpoint, device: (tiny_pipeline(), None))
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    with caplog.at_level(logging.WARNING, logger="seg2vid.app"):
        app_module.main(["--share", "--port", "7999"])
    assert launched["share"] is False and launched["server_port"] == 7999
    assert "serving locally" in caplog.text


def test_bad_checkpoint_exits_with_a_message_not_a_traceback(app_module, tmp_path):
    with pytest.raises(SystemExit) as info:
        app_module.main(["--checkpoint", str(tmp_path / "nowhere")])
    assert "No checkpoint folder" in str(info.value.code)
