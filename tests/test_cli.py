"""``python -m seg2vid``: help, one-line errors with exit code 2, a full run on a tiny checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg2vid import Seg2VidPipeline, labels
from seg2vid.cli import main
from test_pipeline import SIZE, T, blocky_label_map, tiny_models

REPO = Path(__file__).resolve().parent.parent


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "seg2vid", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    Seg2VidPipeline(*tiny_models()).save_pretrained(folder)
    return folder


@pytest.fixture
def label_png(tmp_path) -> Path:
    path = tmp_path / "street.png"
    Image.fromarray(labels.colorize(blocky_label_map(0))).save(path)
    return path


def test_help_explains_the_command():
    result = run_module("generate", "--help")
    assert result.returncode == 0
    for option in ("LABEL", "--output", "--gif", "--seed", "--checkpoint", "--frames-dir", "--motion-scale",
                   "--device", "--first-frame", "labelIds", "examples:"):
        assert option in result.stdout, option
    top = run_module("--help")
    assert top.returncode == 0 and "generate" in top.stdout


def test_no_command_prints_usage_and_fails(capsys):
    assert main([]) == 2
    assert "generate" in capsys.readouterr().err


def test_missing_label_file_is_one_clear_line():
    result = run_module("generate", "no/such/label.png", "-o", "out.mp4")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "seg2vid: error: No label-map file at 'no/such/label.png'."


@pytest.mark.parametrize(
    "make_args, match",
    [
        (lambda d, lbl, ck: [str(d / "junk.png"), "-o", str(d / "o.mp4"), "--checkpoint", str(ck)], "as an image"),
        (lambda d, lbl, ck: [str(lbl), "-o", str(d / "o.mp4"), "--checkpoint", str(d / "nope")], "No checkpoint"),
        (lambda d, lbl, ck: [str(lbl), "-o", str(d / "o.avi"), "--checkpoint", str(ck)], "must end in .mp4 or .gif"),
        (lambda d, lbl, ck: [str(lbl), "-o", str(lbl / "o.mp4"), "--checkpoint", str(ck)], "is not a folder"),
        (lambda d, lbl, ck: [str(lbl), "-o", str(d / "o.mp4"), "--checkpoint", str(ck), "--scale", "0"], "--scale"),
        (lambda d, lbl, ck: [str(lbl), "-o", str(d / "o.mp4"), "--checkpoint", str(ck), "--seed", "-3"], "--seed"),
        (lambda d, lbl, ck: [str(lbl), "-o", str(d / "o.mp4"), "--checkpoint", str(ck), "--first-frame", "x.jpg"],
         "No first-frame image"),
    ],
)
def test_bad_inputs_exit_2_without_traceback(tmp_path, label_png, checkpoint, capsys, make_args, match):
    (tmp_path / "junk.png").write_bytes(b"definitely not an image")
    code = main(["generate", *make_args(tmp_path, label_png, checkpoint)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("seg2vid: error: ") and match in err and err.count("\n") == 1, err


def test_broken_checkpoint_is_reported(tmp_path, label_png, checkpoint, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "flow_predictor" / "model.safetensors").write_bytes(b"\x01" * 100)
    code = main(["generate", str(label_png), "-o", str(tmp_path / "o.mp4"), "--checkpoint", str(broken)])
    err = capsys.readouterr().err
    assert code == 2 and "corrupt or truncated" in err and "Traceback" not in err


def test_full_run_writes_mp4_gif_and_frames(tmp_path, label_png, checkpoint):
    out = tmp_path / "out" / "street.mp4"
    frames_dir = tmp_path / "frames"
    result = run_module(
        "generate", str(label_png), "-o", str(out), "--gif", "--frames-dir", str(frames_dir),
        "--checkpoint", str(checkpoint), "--seed", "3", "--scale", "2",
    )
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0 and out.with_suffix(".gif").stat().st_size > 0
    with Image.open(out.with_suffix(".gif")) as gif:
        assert gif.size == (2 * SIZE[1], 2 * SIZE[0])
    pngs = sorted(frames_dir.glob("*.png"))
    assert len(pngs) == T + 1
    # The frames are the pipeline's own output (upscaled ×2 with nearest sampling).
    expected = Seg2VidPipeline.from_pretrained(checkpoint)(label_png, seed=3).frames
    np.testing.assert_array_equal(np.asarray(Image.open(pngs[-1]))[::2, ::2], expected[-1])
    assert str(out) in result.stdout


def test_gif_only_and_animate(tmp_path, label_png, checkpoint, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(photo)
    gif = tmp_path / "v.gif"
    code = main(
        ["generate", str(label_png), "-o", str(gif), "--first-frame", str(photo), "--checkpoint", str(checkpoint),
         "--motion-scale", "0.5"]
    )
    assert code == 0, capsys.readouterr().err
    assert not gif.with_suffix(".mp4").exists()
    with Image.open(gif) as im:
        first = np.asarray(im.convert("RGB"))
    # The GIF starts with the given photo (up to palette quantisation), not a generated frame.
    assert np.abs(first.astype(int) - np.asarray(Image.open(photo)).astype(int)).mean() < 20
