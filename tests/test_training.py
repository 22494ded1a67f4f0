"""Training scripts: options, exact resume, atomic checkpoints, export → pipeline, command-line errors.

Every run uses the ``tiny`` preset (32×64 SynthCity clips rendered on the fly, tiny networks, a few steps) in a
temporary runs folder, on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from training import common as C
from training import export, train_image, train_video

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"image": train_image, "video": train_video}
STEPS = 4  # the tiny preset's max_steps; checkpoints every 2 steps


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_settings():
    """The tiny preset sets one thread and deterministic algorithms; do not leak them into other test files."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def run(stage: str, runs_dir: Path, name: str, *extra: str) -> Path:
    return SCRIPTS[stage].main(["--preset", "tiny", "--runs-dir", str(runs_dir), "--name", name, "--no-progress",
                                *extra])


def checkpoint(run_dir: Path, step: int) -> dict:
    return C.load_checkpoint(run_dir / "checkpoints" / f"step-{step:08d}.pt")


def assert_same_tensors(a, b, where=""):
    """Bitwise equality of nested dicts / lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"tensors differ at {where}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"keys differ at {where}"
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{a!r} != {b!r} at {where}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per stage: a straight 4-step run, and a 2-step run resumed to 4 past a stray half-written checkpoint."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for stage in SCRIPTS:
        straight = run(stage, root, f"{stage}-straight")
        resumed = run(stage, root, f"{stage}-resumed", "--max-steps", "2")
        # A checkpoint killed mid-write: only its temp file exists (truncated bytes of a real checkpoint).
        good = (resumed / "checkpoints" / "step-00000002.pt").read_bytes()
        stray = resumed / "checkpoints" / ".step-00000003.pt.4242.tmp"
        stray.write_bytes(good[: len(good) // 2])
        run(stage, root, f"{stage}-resumed", "--max-steps", str(STEPS), "--export", str(root / "export"))
        out[stage] = (straight, resumed, stray)
    return root, out


@pytest.mark.parametrize("stage", ["image", "video"])
def test_resume_is_bitwise_exact(runs, stage):
    _, out = runs
    straight, resumed, _ = out[stage]
    a, b = checkpoint(straight, STEPS), checkpoint(resumed, STEPS)
    assert a["step"] == b["step"] == STEPS
    names = ["model", "model_ema", "optimizer", "scaler"]
    if stage == "image":
        names += ["discriminator", "optimizer_d"]
    for name in names:
        assert_same_tensors(a[name], b[name], name)
    # The run really trained: the weights moved away from the step-2 checkpoint.
    mid = checkpoint(straight, 2)["model"]
    assert any(not torch.equal(mid[k], a["model"][k]) for k in mid if mid[k].is_floating_point())
    # log.csv has every step once, with the same losses in both runs.
    for run_dir in (straight, resumed):
        rows = (run_dir / "log.csv").read_text().splitlines()
        assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, STEPS + 1))
    loss_col = lambda d: [r.split(",")[4] for r in (d / "log.csv").read_text().splitlines()[1:]]  # noqa: E731
    assert loss_col(straight) == loss_col(resumed)


@pytest.mark.parametrize("stage", ["image", "video"])
def test_run_folder_records_options_samples_and_keeps_last_checkpoints(runs, stage):
    _, out = runs
    straight, _, stray = out[stage]
    options = json.loads((straight / "options.json").read_text())
    assert options["stage"] == stage and options["preset"] == "tiny"
    assert options["vgg"] is False  # the tiny preset trains without the perceptual loss, and says so
    assert options["image_size"] == [32, 64] == options["model"]["image_size"]
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["step-00000002.pt", "step-00000004.pt"]
    suffix = ".png"
    assert sorted(p.name for p in (straight / "samples").glob(f"*{suffix}")) == [
        "step-00000002.png", "step-00000004.png"]
    if stage == "video":
        assert (straight / "samples" / "step-00000004.gif").stat().st_size > 0
    assert stray.exists(), "the stray temp file must be ignored, not loaded or deleted by name"
    assert [s for s, _ in C.list_checkpoints(stray.parent)] == [2, 4]


def test_export_loads_in_pipeline_and_generates_video(runs):
    from seg2vid import Seg2VidPipeline
    from seg2vid.data.synthcity import HELDOUT_SEED_START, render_clip

    root, out = runs
    folder = root / "export"  # written by the two --export runs
    pipe = Seg2VidPipeline.from_pretrained(folder)
    # The export holds the EMA weights of the last checkpoint.
    for stage, module in (("image", pipe.image_generator), ("video", pipe.flow_predictor)):
        ema = checkpoint(out[stage][1], STEPS)["model_ema"]
        assert_same_tensors({k: v.cpu() for k, v in module.state_dict().items()}, ema, stage)
    labels = render_clip(HELDOUT_SEED_START + 5, size=(32, 64), num_frames=2).labels[0]
    video = pipe(labels, seed=3)
    assert video.frames.shape == (9, 32, 64, 3) and video.frames.dtype == np.uint8
    assert video.flow_bwd.shape == (8, 32, 64, 2)
    # export.py writes the same files from the run folders.
    again = export.main(["--image-run", str(out["image"][1]), "--video-run", str(out["video"][1]),
                         "--out", str(root / "export2")])
    from safetensors.torch import load_file

    for sub in ("image_generator", "flow_predictor"):
        assert_same_tensors(load_file(again / sub / "model.safetensors"), load_file(folder / sub / "model.safetensors"))


def test_export_of_an_earlier_step_takes_that_checkpoint(runs, tmp_path, capsys):
    from safetensors.torch import load_file

    _, out = runs
    folder = export.main(["--image-run", str(out["image"][1]), "--image-step", "2", "--out", str(tmp_path / "e")])
    weights = load_file(folder / "image_generator" / "model.safetensors")
    assert_same_tensors(weights, checkpoint(out["image"][1], 2)["model_ema"])
    assert not all(torch.equal(weights[k], v) for k, v in checkpoint(out["image"][1], STEPS)["model_ema"].items())
    assert json.loads((folder / "image_generator" / "config.json").read_text())["metadata"]["steps"] == 2
    for argv, message in ((["--image-run", str(out["image"][1]), "--image-step", "3"], "no checkpoint of step 3"),
                          (["--video-step", "2"], "--video-step needs --video-run")):
        with pytest.raises(SystemExit) as e:
            export.main([*argv, "--out", str(tmp_path / "f")])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_export_refuses_weights_its_options_do_not_describe(runs, tmp_path, capsys):
    """A run whose stored model options no longer describe its weights: a one-line error, no traceback."""
    import shutil

    _, out = runs
    run_dir = tmp_path / "mismatch"
    shutil.copytree(out["image"][1], run_dir)
    path = run_dir / "checkpoints" / f"step-{STEPS:08d}.pt"
    state = C.load_checkpoint(path)
    options = json.loads(state["options"])
    options["model"]["label_modulation"] = not options["model"]["label_modulation"]
    state["options"] = json.dumps(options)
    torch.save(state, path)
    with pytest.raises(SystemExit) as e:
        export.main(["--image-run", str(run_dir), "--out", str(tmp_path / "export")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "does not match the ImageGenerator" in err and "Traceback" not in err
    assert not (tmp_path / "export" / "image_generator").exists()


@pytest.mark.parametrize("kind, neighbours", [("mixture", 0), ("gaussian", 0), ("mixture", 3)])
def test_fit_prior_fits_the_posteriors_of_the_training_clips(runs, tmp_path, capsys, kind, neighbours):
    import shutil

    from seg2vid import Seg2VidPipeline
    from seg2vid.networks.flow_predictor import aggregate_posterior_gaussian, layout_descriptor
    from training import fit_prior

    root, _ = runs
    folder = tmp_path / "pipeline"
    shutil.copytree(root / "export", folder)
    before = export.load_stage_weights(folder, train_video.FlowPredictor)
    assert before.config.fitted_prior is False
    chosen = [] if kind == "mixture" else ["--prior", kind]  # the mixture is the default
    chosen += ["--neighbours", str(neighbours)] if neighbours else []  # default 0: not conditioned on the layout
    out = fit_prior.main(["--checkpoint", str(folder), "--data", "synthcity", "--clips", "6", "--batch-size", "4",
                          "--no-progress", *chosen])
    assert out == folder / "flow_predictor" and "z_bg" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["flow_predictor", "image_generator"]  # no temp folders left
    after = export.load_stage_weights(folder, train_video.FlowPredictor)
    assert after.config.fitted_prior is True
    assert after.config.prior_components == (6 if kind == "mixture" else 0)
    assert after.config.prior_neighbours == neighbours
    config = json.loads((out / "config.json").read_text())
    assert config["metadata"]["prior"] == {"kind": kind, "data": "synthcity", "clips": 6, "neighbours": neighbours}
    # Every network weight is unchanged; the prior is the six clips' posteriors, or the Gaussian of their moments.
    for k, v in before.state_dict().items():
        assert torch.equal(after.state_dict()[k], v), k
    options = C.TrainOptions(data="synthcity", image_size=tuple(before.config.image_size))
    clips = C.build_clip_dataset(options, "train", before.config.num_frames + 1, num_clips=6)
    batch = C.fixed_batch(clips, 6)
    with torch.no_grad():
        q = before.encode_motion(batch["video"], batch["heatmaps"])
    for half, mu, logvar in (("fg", q.mu_fg, q.logvar_fg), ("bg", q.mu_bg, q.logvar_bg)):
        if kind == "mixture":
            torch.testing.assert_close(getattr(after, f"prior_means_{half}"), mu, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(getattr(after, f"prior_stds_{half}"), (0.5 * logvar).exp(), atol=1e-5,
                                       rtol=1e-4)
            # With --neighbours, also where each clip's objects stood, to pick the clips nearest a label map.
            assert ("prior_layouts" in after.state_dict()) == bool(neighbours)
            if neighbours:
                torch.testing.assert_close(after.prior_layouts, layout_descriptor(batch["heatmaps"]))
        else:
            mean, scale = aggregate_posterior_gaussian(mu, logvar)
            torch.testing.assert_close(getattr(after, f"prior_mean_{half}"), mean, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(getattr(after, f"prior_scale_{half}"), scale, atol=1e-5, rtol=1e-4)
    # The pipeline draws seed 3's codes through the fitted prior, from the same noise.
    pipe = Seg2VidPipeline.from_pretrained(folder)
    eps_fg, eps_bg = before.sample_z(1, torch.Generator().manual_seed(3))
    z_fg, z_bg = pipe.sample_z(3)
    if kind == "mixture":
        offsets = (z_bg - after.prior_means_bg) / after.prior_stds_bg  # (6, D): ε for the component drawn
        assert any(torch.allclose(row, eps_bg[0], atol=1e-4) for row in offsets)
    else:
        torch.testing.assert_close(z_bg, after.prior_mean_bg + eps_bg @ after.prior_scale_bg.T)
    assert not torch.allclose(z_fg, eps_fg)


@pytest.mark.parametrize("kwargs, message", [
    ({"neighbours": -1}, "non-negative integer"), ({"neighbours": True}, "non-negative integer"),
    ({"neighbours": 2, "kind": "gaussian"}, "needs the mixture prior"), ({"neighbours": 7}, "cannot exceed"),
    ({"kind": "flat"}, "kind must be one of"),
])
def test_fit_prior_function_refuses_bad_options_before_encoding_anything(runs, kwargs, message, monkeypatch):
    from training import fit_prior

    root, _ = runs
    model = export.load_stage_weights(root / "export", train_video.FlowPredictor)
    monkeypatch.setattr(fit_prior, "collect_posteriors", lambda *a, **k: pytest.fail("encoded clips"))
    with pytest.raises(ValueError, match=message):
        fit_prior.fit_prior(model, list(range(6)), progress=False, **kwargs)


@pytest.mark.parametrize("args, message", [
    (["--clips", "1"], "--clips must be at least 2"),
    (["--data", "elsewhere:x"], "data"),
    (["--checkpoint", "IMAGE"], "not a FlowPredictor"),
    (["--checkpoint", "MISSING"], "MISSING"),
    (["--prior", "flat"], "invalid choice"),
    (["--neighbours", "-1"], "--neighbours must not be negative"),
    (["--neighbours", "2", "--prior", "gaussian"], "--neighbours needs --prior mixture"),
    (["--neighbours", "5"], "--neighbours (5) cannot exceed the 4 clips"),
])
def test_fit_prior_rejects_bad_arguments(runs, tmp_path, capsys, args, message):
    from training import fit_prior

    root, _ = runs
    given = {"--checkpoint": str(root / "export"), "--data": "synthcity", "--clips": "4"}
    for flag, value in zip(args[::2], args[1::2]):
        given[flag] = {"IMAGE": str(root / "export" / "image_generator"),
                       "MISSING": str(tmp_path / "MISSING")}.get(value, value)
    with pytest.raises(SystemExit) as e:
        fit_prior.main([x for kv in given.items() for x in kv] + ["--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    config = json.loads((root / "export" / "flow_predictor" / "config.json").read_text())["config"]
    assert config["fitted_prior"] is False  # nothing was written


def test_init_from_export_starts_from_its_weights(runs, tmp_path, monkeypatch, capsys):
    root, _ = runs
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-cache"))  # no VGG weights can be found
    run_dir = run("image", tmp_path, "finetune", "--init-from", str(root / "export"), "--max-steps", "1",
                  "--set", "lr=1e-9", "lr_d=1e-9", "vgg=true")
    err = capsys.readouterr().err
    assert "WITHOUT the VGG-19 perceptual loss" in err
    options = json.loads((run_dir / "options.json").read_text())
    assert options["vgg"] is False and options["init_from"] == str(root / "export")
    exported = export.load_stage_weights(root / "export", train_image.ImageGenerator)
    assert options["model"] == {**exported.config.to_dict(), "image_size": options["image_size"]}  # the export's
    state = checkpoint(run_dir, 1)["model"]
    for k, v in exported.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(state[k], v, atol=1e-6, rtol=0)


def test_init_from_keeps_model_options_given_on_the_command_line(runs, tmp_path, capsys):
    # A model.* option given with --set wins over the export's config when the weights still fit (layered_flow
    # only changes how the decoder runs); one that would change the weights is refused with a one-line error.
    root, _ = runs
    exported = export.load_stage_weights(root / "export", train_video.FlowPredictor)
    assert exported.config.layered_flow is False
    run_dir = run("video", tmp_path, "layered", "--init-from", str(root / "export"), "--max-steps", "1",
                  "--set", "lr=1e-9", "model.layered_flow=true")
    assert "except model.layered_flow" in capsys.readouterr().out
    options = json.loads((run_dir / "options.json").read_text())
    assert options["model"]["layered_flow"] is True
    assert options["model"]["decoder_channels"] == list(exported.config.decoder_channels)  # the rest: the export's
    state = checkpoint(run_dir, 1)["model"]
    for k, v in exported.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(state[k], v, atol=1e-6, rtol=0)
    with pytest.raises(SystemExit) as e:
        run("image", tmp_path, "wider", "--init-from", str(root / "export"), "--max-steps", "1",
            "--set", "model.base_channels=8")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "model.base_channels would change the weights" in err and "Traceback" not in err
    assert not C.list_checkpoints(tmp_path / "wider" / "checkpoints")


def test_killed_process_leaves_a_resumable_run(tmp_path):
    """SIGKILL a training process while it checkpoints every step; every checkpoint on disk loads, resume works."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "training" / "train_image.py"), "--preset", "tiny", "--runs-dir",
           str(tmp_path), "--name", "killed", "--max-steps", "200", "--set", "ckpt_every=1", "keep_last=3",
           "sample_every=1000", "log_every=1000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(C.list_checkpoints(ckpts)) < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    found = C.list_checkpoints(ckpts)
    assert len(found) >= 3
    for _, path in found:  # no half-written file ever carries a checkpoint name
        assert C.load_checkpoint(path)["step"] >= 1
    last = found[-1][0]
    run_dir = run("image", tmp_path, "killed", "--max-steps", str(last + 1))
    assert checkpoint(run_dir, last + 1)["step"] == last + 1


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        C.save_checkpoint(folder, step, {"step": step, "w": torch.full((3,), float(step))}, keep_last=2)
    assert [s for s, _ in C.list_checkpoints(folder)] == [2, 3]
    (folder / "step-00000003.pt").write_bytes(b"not a checkpoint")
    state, path = C.load_latest_checkpoint(folder, log=lambda m: None)
    assert state["step"] == 2 and path.name == "step-00000002.pt"


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "state.pt"
    C.atomic_write_bytes(path, lambda f: f.write(b"old"))

    def interrupted(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        C.atomic_write_bytes(path, interrupted)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    device = torch.device("cpu")
    state = C.capture_rng_state(device)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    C.save_checkpoint(tmp_path, 7, {"rng": [state]}, keep_last=1)
    loaded = C.load_checkpoint(tmp_path / "step-00000007.pt")["rng"][0]
    C.restore_rng_state(loaded, device)
    assert random.random() == expected[0] and np.random.rand() == expected[1]
    assert torch.equal(torch.rand(2), expected[2])


def test_data_order_is_a_function_of_seed_and_step():
    dist = C.Distributed(device=torch.device("cpu"))
    options = C.TrainOptions(batch_size=3, num_workers=0, seed=5)
    dataset = list(range(10))  # 3 batches per epoch, 1 item dropped

    def stream(start, n):
        loader, sampler = C.make_loader(dataset, options, dist)
        it = C.batches_from(loader, sampler, start, options.seed)
        return [next(it).tolist() for _ in range(n)]

    full = stream(0, 7)
    assert stream(4, 3) == full[4:]
    for epoch in range(2):  # each epoch is a permutation without repeats
        items = sum(full[3 * epoch : 3 * epoch + 3], [])
        assert len(set(items)) == 9
    assert full[:3] != full[3:6]  # reshuffled every epoch
    shards = [list(C.ResumableSampler(dataset, C.Distributed(torch.device("cpu"), r, r, 2), seed=5)) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 5


def test_set_option_parses_nested_keys_and_types():
    options = train_video.VideoTrainOptions()
    C.set_option(options, "lr", "3e-4")
    C.set_option(options, "compile", "true")
    C.set_option(options, "image_size", "64x128")
    C.set_option(options, "model.decoder_channels", "8,4")
    C.set_option(options, "loss.beta", "0.5")
    assert options.lr == 3e-4 and options.compile is True and options.image_size == (64, 128)
    assert options.model.decoder_channels == (8, 4) and options.loss.beta == 0.5
    for key, value in [("nope", "1"), ("model.nope", "1"), ("lr", "fast"), ("compile", "maybe"), ("model", "1")]:
        with pytest.raises(C.OptionError, match=key.split(".")[0]):
            C.set_option(options, key, value)


@pytest.mark.parametrize("preset", list(C.PRESETS))
@pytest.mark.parametrize("stage", ["image", "video"])
def test_every_preset_resolves(preset, stage, tmp_path):
    parser = C.build_parser(stage, "")
    args = parser.parse_args(["--preset", preset, "--data", "synthcity", "--runs-dir", str(tmp_path)])
    script = SCRIPTS[stage]
    cls = script.ImageTrainOptions if stage == "image" else script.VideoTrainOptions
    options, stored = C.resolve_options(parser, args, cls, stage)
    assert stored is None and options.name == f"{preset}-{stage}" and options.preset == preset
    assert tuple(options.model.image_size) == tuple(options.image_size)
    expected = {**C.PRESETS[preset]["shared"], **C.PRESETS[preset][stage]}
    flat = C.flatten(C.options_to_dict(options))
    for key, value in expected.items():
        if key != "data":
            assert flat[key] == (list(value) if isinstance(value, tuple) else value), key


BAD_ARGS = [
    (["--preset", "huge"], "unknown preset"),
    (["--set", "learning_rate=1"], "unknown option 'learning_rate'"),
    (["--set", "lr=fast"], "bad value for 'lr'"),
    (["--set", "model.base_channels=-3"], "base_channels"),
    (["--set", "image_size=100x200"], "multiples of 32"),
    (["--set", "lr"], "KEY=VALUE"),
    (["--data", "synthcity:/no/such/folder"], "data folder not found"),
    (["--data", "imagenet"], "data must be"),
    (["--batch-size", "many"], "invalid int value"),
    (["--amp", "fp8"], "invalid choice"),
    (["--set", "num_samples=0"], "num_samples must be at least 1"),
    (["--set", "loss.lambda_labelmix=10"], "only exists with lambda_seg > 0"),
    (["--preset", "tiny", "--set", "loss.l1_class_balanced=true"], "which is off (lambda_l1 = 0)"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGS)
def test_bad_arguments_exit_2_with_a_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_image.main(["--runs-dir", str(tmp_path), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_resume_refuses_to_change_the_network(runs, capsys):
    root, out = runs
    with pytest.raises(SystemExit) as exc:
        run("video", root, "video-straight", "--set", "model.z_fg_dim=16")
    assert exc.value.code == 2 and "model.z_fg_dim" in capsys.readouterr().err


def test_command_line_errors_print_one_line_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for argv in (["train_video.py", "--runs-dir", str(tmp_path), "--set", "model.semantics=three_path"],
                 ["export.py", "--out", str(tmp_path)]):
        res = subprocess.run([sys.executable, str(REPO / "training" / argv[0]), *argv[1:]], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr and "error:" in res.stderr.splitlines()[-1]


def test_fresh_moves_the_old_run_aside(tmp_path):
    first = run("image", tmp_path, "again", "--max-steps", "1", "--set", "loss.gan_mode=hinge")
    second = run("image", tmp_path, "again", "--max-steps", "1", "--fresh", "--set", "loss.gan_mode=hinge")
    assert first == second
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("again.")]
    assert len(moved) == 1 and (moved[0] / "checkpoints" / "step-00000001.pt").is_file()
    rows = (second / "log.csv").read_text().splitlines()
    assert len(rows) == 2  # header + step 1 of the new run: it started over instead of resuming
    assert json.loads((second / "options.json").read_text())["loss"]["gan_mode"] == "hinge"


def test_flow_supervision_adds_a_logged_term(tmp_path):
    run_dir = run("video", tmp_path, "supervised", "--max-steps", "1", "--set", "lambda_flow_supervised=0.5")
    header, row = (run_dir / "log.csv").read_text().splitlines()
    values = dict(zip(header.split(","), row.split(",")))
    assert float(values["flow_supervised"]) > 0
    with pytest.raises(SystemExit):
        train_video.main(["--runs-dir", str(tmp_path), "--data", f"cityscapes:{tmp_path}",
                          "--set", "lambda_flow_supervised=1"])


def test_stage1_l1_term_enters_the_generator_loss_with_its_weight(tmp_path):
    def logged(name, weight, *settings):
        run_dir = run("image", tmp_path, name, "--max-steps", "1", "--set", f"loss.lambda_l1={weight}", *settings)
        header, row = (run_dir / "log.csv").read_text().splitlines()
        return {k: float(v) for k, v in zip(header.split(","), row.split(",")) if k.startswith(("loss", "g_"))}

    off, on = logged("l1-off", 0), logged("l1-on", 5)
    assert off["g_l1"] == 0 and on["g_l1"] > 0.01
    # Same seed, same batch, same first step: the L1 term is the only difference between the two losses.
    assert on["loss_g"] - off["loss_g"] == pytest.approx(5 * on["g_l1"], rel=1e-3)
    balanced = logged("l1-balanced", 5, "loss.l1_class_balanced=true")
    assert balanced["g_l1"] > 0.01 and balanced["g_l1"] != pytest.approx(on["g_l1"], rel=1e-3)
    assert balanced["loss_g"] - off["loss_g"] == pytest.approx(5 * balanced["g_l1"], rel=1e-3)


def test_stage1_segmentation_discriminator_trains_resumes_exactly_and_enters_the_loss(tmp_path):
    """loss.lambda_seg > 0 adds OASIS's D_seg: its weights and optimiser are checkpointed and resumed bitwise."""
    straight = run("image", tmp_path, "seg-straight", "--set", "loss.lambda_seg=2")
    resumed = run("image", tmp_path, "seg-resumed", "--max-steps", "2", "--set", "loss.lambda_seg=2")
    run("image", tmp_path, "seg-resumed", "--max-steps", str(STEPS))
    a, b = checkpoint(straight, STEPS), checkpoint(resumed, STEPS)
    for key in ("model", "discriminator", "seg_discriminator", "optimizer_seg"):
        assert_same_tensors(a[key], b[key], key)
    assert "seg_discriminator" not in checkpoint(run("image", tmp_path, "seg-off", "--max-steps", "2"), 2)
    # Switched on when a run without it is resumed: D_seg starts fresh, the rest resumes.
    later = run("image", tmp_path, "seg-off", "--max-steps", str(STEPS), "--set", "loss.lambda_seg=2")
    later = checkpoint(later, STEPS)
    assert "seg_discriminator" in later and later["step"] == STEPS

    rows = [dict(zip(*(line.split(",") for line in ((straight / "log.csv").read_text().splitlines()[0], r))))
            for r in (straight / "log.csv").read_text().splitlines()[1:]]
    first = {k: float(v) for k, v in rows[0].items()}
    # Before D_seg has learnt anything its 20 logits are nearly uniform: cross-entropies near log 20.
    assert 0.5 * math.log(20) < first["g_seg"] < 2 * math.log(20)
    assert first["dseg_real"] > 0 and first["dseg_fake"] > 0
    parts = first["g_gan"] + 10 * first["g_fm"] + 2 * first["g_seg"]  # the tiny preset: no VGG, no L1
    assert first["loss_g"] == pytest.approx(parts, rel=1e-3)


def test_stage1_labelmix_regularises_the_segmentation_discriminator(tmp_path):
    def first_row(name, *settings):
        run_dir = run("image", tmp_path, name, "--max-steps", "1", "--set", "loss.lambda_seg=2", *settings)
        header, row = (run_dir / "log.csv").read_text().splitlines()[:2]
        return {k: float(v) for k, v in zip(header.split(","), row.split(","))}

    off, on = first_row("lm-off"), first_row("lm-on", "loss.lambda_labelmix=10")
    assert off["dseg_labelmix"] == 0 and on["dseg_labelmix"] > 0
    # The D_seg step runs before the generator's, so the regulariser already changes what G is told at step 1.
    assert on["g_seg"] != off["g_seg"]


def test_torchrun_two_processes_then_resume_in_one(tmp_path):
    """DDP on CPU (Gloo): rank 0 checkpoints every rank's RNG state; a single process resumes that run."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "training" / "train_image.py"), "--preset", "tiny", "--runs-dir", str(tmp_path), "--name",
           "ddp", "--max-steps", "2"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    state = checkpoint(tmp_path / "ddp", 2)
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    log = (tmp_path / "ddp" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == ["1", "2"]  # rank 0 alone writes the log
    run_dir = run("image", tmp_path, "ddp", "--max-steps", "3")
    assert checkpoint(run_dir, 3)["step"] == 3


def test_push_to_hub_offline_fails_clearly(runs, monkeypatch, capsys):
    from huggingface_hub import constants

    root, _ = runs
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as exc:
        export.main(["--out", str(root / "export"), "--push-to-hub", "someone/seg2vid"])
    assert exc.value.code == 1
    assert "offline" in capsys.readouterr().err
