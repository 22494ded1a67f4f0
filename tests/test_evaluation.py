"""Metric functions on known cases, the segmenter, and training/evaluate.py end to end on a tiny random pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from seg2vid import Seg2VidPipeline
from seg2vid.config import FlowPredictorConfig, ImageGeneratorConfig
from seg2vid.data.cityscapes import IMAGES_DIR, LABELS_DIR, label_path
from seg2vid.data.synthcity import HELDOUT_SEED_START, render_clip
from seg2vid.evaluation import (
    PSNR_CAP_DB,
    FeatureWeightsUnavailable,
    VideoFeatures,
    best_of_k,
    confusion_matrix,
    endpoint_error,
    frechet_distance,
    mask_iou,
    miou_from_confusion,
    occlusion_iou,
    psnr_per_frame,
    region_change,
    ssim_per_frame,
)
from seg2vid.labels import CLASSES, NUM_CLASSES
from seg2vid.networks.flow_predictor import FlowPredictor
from seg2vid.networks.image_generator import ImageGenerator
from seg2vid.networks.segmenter import Segmenter, SegmenterConfig, load_segmenter, save_segmenter
from training import evaluate

SIZE = (32, 64)


# ----------------------------------------------------------------------------------------------------------------
# Metric functions


def test_endpoint_error_known_cases():
    flow = torch.randn(3, 8, 16, 2)
    assert endpoint_error(flow, flow) == 0
    offset = torch.tensor([3.0, -4.0])
    assert endpoint_error(flow + offset, flow).item() == pytest.approx(5.0, rel=1e-5)
    # Masked: the error lives only outside the mask.
    other = flow.clone()
    mask = torch.zeros(3, 8, 16, dtype=torch.bool)
    mask[:, :4] = True
    other[:, 4:] += 10.0
    assert endpoint_error(other, flow, mask) == 0
    assert endpoint_error(other, flow, ~mask).item() == pytest.approx(10 * math.sqrt(2), rel=1e-5)
    assert math.isnan(endpoint_error(other, flow, torch.zeros_like(mask)))
    with pytest.raises(ValueError, match="shapes"):
        endpoint_error(flow, flow[..., :1])


def test_mask_and_occlusion_iou():
    rng = np.random.default_rng(0)
    m = rng.random((4, 8, 8)) < 0.3
    assert mask_iou(m, m) == 1.0
    assert mask_iou(m, ~m) == 0.0
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    half = np.zeros((4, 4), bool)
    half[:, :2] = True
    assert mask_iou(half, np.ones((4, 4), bool)).item() == pytest.approx(0.5)
    # Occlusion maps are 1 = visible: the IoU is over the occluded (0) pixels, predicted < 0.5.
    true_occ = (~m).astype(np.float32)
    assert occlusion_iou(np.where(m, 0.2, 0.9), true_occ) == 1.0
    assert occlusion_iou(np.where(m, 0.9, 0.2), true_occ) == 0.0


def test_psnr_and_ssim():
    frames = torch.rand(5, 3, 16, 16)
    psnr_same = psnr_per_frame(frames, frames)
    assert torch.isfinite(psnr_same).all() and (psnr_same == PSNR_CAP_DB).all()
    shifted = (frames * 0.8 + 0.1)
    shifted[0] = frames[0].clamp(0, 0.9) + 0.1  # frame 0: mostly a constant 0.1 offset
    p = psnr_per_frame(shifted, frames)
    assert p.shape == (5,) and (p < PSNR_CAP_DB).all()
    const = torch.full((1, 3, 8, 8), 0.5)
    assert psnr_per_frame(const + 0.1, const).item() == pytest.approx(20.0, abs=1e-3)  # 10·log10(1 / 0.1²)
    s_same = ssim_per_frame(frames, frames)
    assert s_same.shape == (5,) and torch.allclose(s_same, torch.ones(5), atol=1e-5)
    assert (ssim_per_frame(torch.rand(5, 3, 16, 16), frames) < 0.5).all()
    with pytest.raises(ValueError, match="equal shapes"):
        psnr_per_frame(frames, frames[:2])


def test_best_of_k_bounds_the_mean():
    values = torch.rand(7, 4)
    mean, best = best_of_k(values, higher_is_better=True)
    assert best >= mean and best == pytest.approx(values.max(1).values.mean().item())
    mean, best = best_of_k(values, higher_is_better=False)
    assert best <= mean and mean == pytest.approx(values.mean().item())
    with pytest.raises(ValueError):
        best_of_k(torch.rand(4), True)


def test_region_change_separates_foreground_and_background():
    a = torch.zeros(2, 4, 6, 2)
    fg = torch.zeros(4, 6, dtype=torch.bool)
    fg[1:3, 2:4] = True
    b = a.clone()
    b[:, fg] = torch.tensor([0.0, 2.0])
    fs, fc, bs, bc = region_change(a, b, fg)
    assert (fs / fc).item() == pytest.approx(2.0) and bs == 0 and fc == 2 * 4 and bc == 2 * 20
    frames_a, frames_b = torch.zeros(2, 4, 6, 3), torch.full((2, 4, 6, 3), 0.25)
    fs, fc, bs, bc = region_change(frames_a, frames_b, fg)
    assert (fs / fc).item() == pytest.approx(0.25) and (bs / bc).item() == pytest.approx(0.25)


def test_confusion_and_miou():
    rng = np.random.default_rng(0)
    truth = torch.from_numpy(rng.integers(0, NUM_CLASSES, (2, 16, 16)))
    truth[0, 0, :4] = 255
    cm = confusion_matrix(truth.clamp(max=NUM_CLASSES - 1), truth)
    assert cm.sum() == truth.numel() - 4
    miou, iou = miou_from_confusion(cm)
    assert miou == pytest.approx(1.0)
    # Two classes, half of class 1 predicted as 0: IoU(0) = 4/6, IoU(1) = 2/4.
    t = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    p = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    miou, iou = miou_from_confusion(confusion_matrix(p, t, num_classes=2))
    assert iou.tolist() == pytest.approx([4 / 6, 2 / 4]) and miou == pytest.approx((4 / 6 + 0.5) / 2)
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([5]), torch.tensor([0]), num_classes=2)


class _TinyFeatures(nn.Module):
    """Per-channel means and stds: a cheap stand-in feature network for FID plumbing."""

    num_features = 6

    def forward(self, x):
        x = x.flatten(2) if x.dim() == 4 else x.transpose(1, 2).flatten(2)  # images or (N, T, 3, H, W)
        return torch.cat([x.mean(-1), x.std(-1)], dim=1)


def test_frechet_distance_with_a_feature_module():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 8, 8, generator=g)
    same = frechet_distance(_TinyFeatures())
    same.update(real, real=True)
    same.update(real, real=False)
    shifted = frechet_distance(_TinyFeatures())
    shifted.update(real, real=True)
    shifted.update((real + 0.3).clamp(0, 1), real=False)
    assert abs(float(same.compute())) < 1e-3 < float(shifted.compute())


def test_video_features_from_a_local_file_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FeatureWeightsUnavailable, match="r3d_18"):
        VideoFeatures("r3d_18")
    with pytest.raises(FeatureWeightsUnavailable, match="No weights file"):
        VideoFeatures("r3d_18", weights_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="Unknown video network"):
        VideoFeatures("i3d", pretrained=False)
    from safetensors.torch import save_file
    from torchvision.models.video import r3d_18

    with torch.device("meta"):  # only the names and shapes: random values stand in for Kinetics weights
        shapes = r3d_18().state_dict()
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype)
             for k, v in shapes.items()}
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}
    save_file(state, tmp_path / "r3d.safetensors")
    loaded = VideoFeatures("r3d_18", weights_path=tmp_path / "r3d.safetensors")
    for name, value in loaded.net.state_dict().items():
        assert torch.equal(value, state[name]), name
    save_file({k: v for k, v in state.items() if k != "fc.bias"}, tmp_path / "incomplete.safetensors")
    with pytest.raises(FeatureWeightsUnavailable, match="fc.bias"):
        VideoFeatures("r3d_18", weights_path=tmp_path / "incomplete.safetensors")
    feats = loaded(torch.rand(1, 1, 3, 8, 16))  # (N, T, 3, H, W); resized to the network's 112-pixel height
    assert feats.shape == (1, 512) and torch.isfinite(feats).all()


# ----------------------------------------------------------------------------------------------------------------
# Segmenter


def test_segmenter_shapes_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig(channels=(4, 8, 8)))
    frames = torch.rand(3, 3, 16, 32) * 2 - 1
    assert model(frames).shape == (3, NUM_CLASSES, 16, 32)
    pred = model.predict(frames, batch_size=2)
    assert pred.shape == (3, 16, 32) and pred.dtype == torch.int64 and pred.max() < NUM_CLASSES
    save_segmenter(model, tmp_path / "seg", metadata={"steps": 1})
    loaded = load_segmenter(tmp_path / "seg")
    torch.testing.assert_close(loaded(frames), model.eval()(frames))
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.zeros(1, 3, 10, 32))
    with pytest.raises(ValueError, match="No segmenter checkpoint"):
        load_segmenter(tmp_path / "nothing")
    (tmp_path / "seg" / "config.json").write_text(json.dumps({"class": "Segmenter", "config": {"channels": [4, 8]}}))
    with pytest.raises(ValueError, match="do not match"):
        load_segmenter(tmp_path / "seg")


def test_segmenter_default_size():
    n = sum(p.numel() for p in Segmenter().parameters())
    assert 0.5e6 <= n <= 2e6


# ----------------------------------------------------------------------------------------------------------------
# training/evaluate.py end to end


def _tiny_pipeline_folder(path):
    torch.manual_seed(0)
    image_generator = ImageGenerator(
        ImageGeneratorConfig(base_channels=4, num_downsample=2, num_res_blocks=1, max_channels=8, image_size=SIZE)
    )
    flow_predictor = FlowPredictor(
        FlowPredictorConfig(
            num_frames=4, image_size=SIZE, z_fg_dim=6, z_bg_dim=3, encoder_stem_channels=4,
            encoder_channels=(4, 4, 8, 8), motion_channels=(4, 4, 8, 8, 8), decoder_channels=(8, 8, 4, 4),
            refiner_channels=(4, 4, 8, 8),
        )
    )
    with torch.no_grad():  # zero-initialised output layers would make every z alike
        for p in flow_predictor.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, 0.5)
    Seg2VidPipeline(image_generator, flow_predictor).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    pipe_dir = _tiny_pipeline_folder(tmp / "pipe")
    torch.manual_seed(0)
    save_segmenter(Segmenter(SegmenterConfig(channels=(4, 8))), tmp / "seg")
    return tmp, pipe_dir


def _numbers(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from _numbers(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield v


def test_evaluate_end_to_end(eval_setup, capsys):
    tmp, pipe_dir = eval_setup
    out = tmp / "out"
    argv = ["--checkpoint", str(pipe_dir), "--out", str(out), "--num-clips", "2", "--k", "3",
            "--size", f"{SIZE[0]}x{SIZE[1]}", "--segmenter", str(tmp / "seg"), "--no-progress"]
    assert evaluate.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["seeds"] == [HELDOUT_SEED_START, HELDOUT_SEED_START + 2]
    s = metrics["synthcity"]
    for key in ("epe", "epe_visible", "occlusion_iou", "psnr", "ssim"):
        assert {"mean", "best_of_3"} <= set(s[key])
    assert s["epe"]["best_of_3"] <= s["epe"]["mean"] and s["psnr"]["best_of_3"] >= s["psnr"]["mean"]
    assert s["ssim"]["best_of_3"] >= s["ssim"]["mean"] and s["occlusion_iou"]["best_of_3"] >= s["occlusion_iou"]["mean"]
    assert "zero_flow" in s["epe"] and "copy_first_frame" in s["psnr"]
    assert s["diversity"]["frame_mad"] > 0 and s["diversity"]["flow_difference"] > 0
    dis = s["disentanglement"]
    assert {"flow_ratio_fg_over_bg", "frame_ratio_fg_over_bg"} <= set(dis["z_fg_only"])
    assert {"flow_ratio_bg_over_fg", "frame_ratio_bg_over_fg"} <= set(dis["z_bg_only"])
    lf = s["label_fidelity"]
    for key in ("generated_first_frame_miou", "real_frame_miou", "blurred_generated_first_frame_miou",
                "blurred_real_frame_miou"):
        assert 0 <= lf[key] <= 1
    per_class = lf["per_class_iou"]
    assert list(per_class) == [c.name for c in CLASSES]
    present = [v["real"] for v in per_class.values() if v["real"] is not None]
    assert present and lf["real_frame_miou"] == pytest.approx(sum(present) / len(present))
    numbers = list(_numbers(s))
    assert len(numbers) > 25 and all(math.isfinite(v) for v in numbers)
    assert "skipped" in metrics["cityscapes"]
    md = (out / "metrics.md").read_text()
    assert "| Metric | mean over z | best of 3 | baseline |" in md and "Backward-flow EPE" in md
    assert metrics["protocol"]["z_sampling"] == "stratified"  # the default, and the table says so
    assert ("(one stratified set per clip for its label map, `pipe.sample_z_set`, from seed clip seed · 3; "
            "diversity from the "
            "independent codes of seeds clip seed · 3 + 0–1)") in md
    assert f"{s['psnr']['mean']:.3f}" in md
    gains = s["psnr_gain_over_copy"]
    assert gains["all"]["clips"] == 2 == gains["camera_still"]["clips"] + gains["camera_moving"]["clips"]
    assert gains["all"]["mean"] == pytest.approx(s["psnr"]["best_of_3"] - s["psnr"]["copy_first_frame"])
    assert f"| all clips | 2 | {gains['all']['mean']:.2f} | {gains['all']['median']:.2f} | " in md
    gains["camera_moving"]["median"] = -0.063  # dB in fixed point, however small
    assert f"| camera moving | {gains['camera_moving']['clips']} | {gains['camera_moving']['mean']:.2f} | -0.06 | " \
        in evaluate.to_markdown(metrics)
    # Per clip: the rows the means come from.
    rows = s["per_clip"]
    assert [r["seed"] for r in rows] == [HELDOUT_SEED_START, HELDOUT_SEED_START + 1]
    assert sum(r["camera_still"] for r in rows) == gains["camera_still"]["clips"]
    assert np.mean([r["psnr_best_of_3"] for r in rows]) == pytest.approx(s["psnr"]["best_of_3"])
    assert np.mean([r["psnr_copy"] for r in rows]) == pytest.approx(s["psnr"]["copy_first_frame"])
    assert np.mean([r["epe_best_of_3"] for r in rows]) == pytest.approx(s["epe"]["best_of_3"])
    assert np.mean([r["epe_zero_flow"] for r in rows]) == pytest.approx(s["epe"]["zero_flow"])
    assert (f"| The same on frames blurred (σ = 1 px): generated / real | "
            f"{lf['blurred_generated_first_frame_miou']:.3f} / {lf['blurred_real_frame_miou']:.3f} |") in md
    assert md in capsys.readouterr().out


def test_psnr_gain_is_split_by_camera():
    best = np.array([30.0, 25.0, 40.0, 22.0])
    copy = np.array([20.0, 24.0, 100.0, 21.0])  # clip 2: nothing moved, copying is exact (the PSNR cap)
    still = np.array([False, False, True, False])
    g = evaluate.psnr_gain_by_camera(best, copy, still)
    assert g["all"]["clips"] == 4 and g["all"]["mean"] == pytest.approx((10 + 1 - 60 + 1) / 4)
    assert g["all"]["median"] == pytest.approx(1.0)
    assert g["camera_still"] == {"clips": 1, "mean": pytest.approx(-60.0), "median": pytest.approx(-60.0),
                                 "interval_90": [pytest.approx(-60.0), pytest.approx(-60.0)]}  # one clip: no spread
    assert g["camera_moving"]["clips"] == 3 and g["camera_moving"]["mean"] == pytest.approx(4.0)
    lo, hi = g["all"]["interval_90"]
    assert -60 < lo < g["all"]["mean"] < hi < 10  # resampling 4 clips, one of them -60: a wide interval
    empty = evaluate.psnr_gain_by_camera(best, copy, np.zeros(4, bool))["camera_still"]
    assert empty["clips"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["median"])
    assert all(math.isnan(v) for v in empty["interval_90"])


def test_bootstrap_interval_is_seeded_and_narrows_with_more_clips():
    rng = np.random.default_rng(0)
    few, many = rng.normal(2.0, 3.0, 25), rng.normal(2.0, 3.0, 400)
    state = torch.random.get_rng_state()
    lo, hi = evaluate.bootstrap_interval(few)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert (lo, hi) == evaluate.bootstrap_interval(few)  # and the interval is reproducible
    assert lo < few.mean() < hi
    # The standard error of a mean: about 1.645 · 3 / sqrt(n) on either side.
    assert (hi - lo) / 2 == pytest.approx(1.645 * few.std() / 5, rel=0.25)
    lo_many, hi_many = evaluate.bootstrap_interval(many)
    assert (hi_many - lo_many) < (hi - lo) / 2.5
    assert evaluate.bootstrap_interval(few, level=0.5)[1] - evaluate.bootstrap_interval(few, level=0.5)[0] < hi - lo


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seed-start", "5"], "held-out seeds"),
        (["--num-clips", "0"], "--num-clips"),
        (["--k", "0"], "--k"),
        (["--k", "5000"], "at most 4096 with --z-sampling stratified"),
        (["--z-seed-offset", "-3"], "--z-seed-offset"),
        (["--size", "30x64"], "multiples"),
    ],
)
def test_evaluate_rejects_bad_arguments(eval_setup, extra, message, capsys):
    tmp, pipe_dir = eval_setup
    assert evaluate.main(["--checkpoint", str(pipe_dir), "--out", str(tmp / "bad"), "--no-progress", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp / "bad" / "metrics.json").exists()


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path / "no" / "such" / "dir"), "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--out", str(tmp_path), "--size", "big"])
    assert e.value.code == 2


def test_synthcity_evaluation_refuses_training_seeds(eval_setup):
    _, pipe_dir = eval_setup
    pipe = Seg2VidPipeline.from_pretrained(pipe_dir)
    with pytest.raises(ValueError, match="held out"):
        evaluate.evaluate_synthcity(pipe, [HELDOUT_SEED_START - 1, HELDOUT_SEED_START], SIZE, k=2, progress=False)


@pytest.mark.parametrize("z_seeds", ["shared", "per-clip"])
@pytest.mark.parametrize("z_sampling", ["stratified", "independent"])
def test_synthcity_evaluation_draws_z_from_the_chosen_seeds(eval_setup, monkeypatch, z_seeds, z_sampling):
    _, pipe_dir = eval_setup
    pipe = Seg2VidPipeline.from_pretrained(pipe_dir)
    used, sets = [], []
    animate, sample_z_set = pipe.animate, pipe.sample_z_set
    monkeypatch.setattr(pipe, "animate", lambda *a, seed=0, **kw: used.append(
        ("given" if "z_fg" in kw else seed)) or animate(*a, seed=seed, **kw))
    maps = []
    monkeypatch.setattr(pipe, "sample_z_set", lambda k, seed=0, label_map=None: sets.append(
        (k, seed, None if label_map is None else label_map.shape)) or maps.append(label_map)
        or sample_z_set(k, seed, label_map))
    clips = [HELDOUT_SEED_START + 3, HELDOUT_SEED_START + 4]
    evaluate.evaluate_synthcity(pipe, clips, SIZE, k=3, progress=False, z_seeds=z_seeds, z_sampling=z_sampling)
    starts = [0, 0] if z_seeds == "shared" else [3 * clips[0], 3 * clips[1]]
    # Per clip: the K videos; with stratified codes, then the two independent draws of diversity; then the two
    # disentanglement re-draws (given codes).
    if z_sampling == "stratified":
        assert sets == [(3, s, SIZE) for s in starts]  # each set drawn for its clip's label map
        for clip, label_map in zip(clips, maps):
            first = render_clip(clip, size=SIZE, num_frames=pipe.num_frames + 1).labels[0]
            np.testing.assert_array_equal(label_map, first)
        assert used == [x for s in starts for x in ["given"] * 3 + [s, s + 1] + ["given"] * 2]
    else:
        assert sets == []
        assert used == [x for s in starts for x in [s, s + 1, s + 2] + ["given"] * 2]
    with pytest.raises(ValueError, match="z_seeds"):
        evaluate.evaluate_synthcity(pipe, clips, SIZE, k=2, progress=False, z_seeds="random")
    with pytest.raises(ValueError, match="z_sampling"):
        evaluate.evaluate_synthcity(pipe, clips, SIZE, k=2, progress=False, z_sampling="sobol")
    # An offset moves every seed by the same amount.
    sets.clear(), used.clear()
    evaluate.evaluate_synthcity(pipe, clips[:1], SIZE, k=3, progress=False, z_seeds=z_seeds, z_sampling=z_sampling,
                                z_seed_offset=1000)
    drawn = [x for x in used if x != "given"] + [seed for _, seed, _ in sets]
    assert drawn and all(d >= starts[0] + 1000 for d in drawn) and starts[0] + 1000 in drawn
    with pytest.raises(ValueError, match="z_seed_offset"):
        evaluate.evaluate_synthcity(pipe, clips, SIZE, k=2, progress=False, z_seed_offset=-1)


def test_evaluate_passes_the_sampling_options_on(eval_setup, monkeypatch):
    tmp, pipe_dir = eval_setup
    seen = {}

    def fake(pipe, seeds, size, k, segmenter=None, progress=True, **options):
        seen.update(options)
        raise RuntimeError("stop here")

    monkeypatch.setattr(evaluate, "evaluate_synthcity", fake)
    argv = ["--checkpoint", str(pipe_dir), "--out", str(tmp / "opts"), "--no-progress", "--segmenter", "none",
            "--z-seeds", "shared", "--z-sampling", "independent", "--z-seed-offset", "77"]
    with pytest.raises(RuntimeError, match="stop here"):
        evaluate.main(argv)
    assert seen == {"z_seeds": "shared", "z_sampling": "independent", "z_seed_offset": 77}


def test_stratified_and_independent_codes_agree_on_diversity_and_differ_in_the_k_videos(eval_setup):
    _, pipe_dir = eval_setup
    pipe = Seg2VidPipeline.from_pretrained(pipe_dir)
    clips = [HELDOUT_SEED_START + 5]
    strat = evaluate.evaluate_synthcity(pipe, clips, SIZE, k=3, progress=False, z_sampling="stratified")
    indep = evaluate.evaluate_synthcity(pipe, clips, SIZE, k=3, progress=False, z_sampling="independent")
    assert strat["diversity"] == indep["diversity"]  # the same two independent codes
    assert strat["disentanglement"] == indep["disentanglement"]
    assert strat["psnr"]["mean"] != indep["psnr"]["mean"]  # other codes, other videos
    assert strat["psnr"]["copy_first_frame"] == indep["psnr"]["copy_first_frame"]


def test_cityscapes_tables_on_a_fake_tree(eval_setup, tmp_path, monkeypatch):
    """Tables 1 and 2 on 3 fake val snippets, with cheap stand-in feature networks (the real ones need weights)."""
    _, pipe_dir = eval_setup
    rng = np.random.default_rng(0)
    root = tmp_path / "cs"
    for seq in range(3):
        for n in range(30):
            img = root / IMAGES_DIR / "val" / "lindau" / f"lindau_{seq:06d}_{n:06d}_leftImg8bit.png"
            img.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)).save(img)
            lab = label_path(root / LABELS_DIR, "val", "lindau", seq, n)
            lab.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, NUM_CLASSES, (16, 32), dtype=np.uint8)).save(lab)
    pipe = Seg2VidPipeline.from_pretrained(pipe_dir)

    # Without weights, both FIDs are skipped with the reason.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    result = evaluate.evaluate_cityscapes(pipe, root, size=SIZE, progress=False)
    assert "skipped" in result and "r3d_18" in result["skipped"] and "inception" in result["skipped"]

    monkeypatch.setattr(evaluate, "load_video_features", lambda name, path: _TinyFeatures())
    monkeypatch.setattr(evaluate, "load_image_features", lambda path: _TinyFeatures())
    result = evaluate.evaluate_cityscapes(pipe, root, size=SIZE, progress=False)
    assert result["clips"] == 3
    for key in ("video_fid_r3d_18", "image_fid_inception_v3"):
        values = result[key]
        assert set(values) == {"table1_label_map_to_video", "table2_first_frame_to_video"}
        assert all(math.isfinite(v) and v >= -1e-6 for v in values.values())
    md = evaluate.to_markdown({"protocol": {"k": 2, "num_clips": 1, "seeds": [1, 2], "size": [32, 64], "num_frames": 5},
                               "synthcity": {"diversity": {"skipped": "needs k ≥ 2"}}, "cityscapes": result})
    assert "Table 1: label map → video" in md and "video_fid_r3d_18" in md

    missing = evaluate.evaluate_cityscapes(pipe, tmp_path / "nowhere", size=SIZE, progress=False)
    assert "no Cityscapes folder" in missing["skipped"]


def test_train_segmenter_saves_and_resumes(tmp_path, capsys):
    from training import train_segmenter

    out = tmp_path / "seg"
    common = ["--out", str(out), "--size", "32x64", "--crop", "16x32", "--batch-size", "2", "--pool-clips", "2",
              "--channels", "4", "8", "--eval-clips", "1", "--no-progress"]
    assert train_segmenter.main([*common, "--steps", "3"]) == 0
    meta = json.loads((out / "config.json").read_text())["metadata"]
    assert meta["steps"] == 3 and meta["next_train_seed"] == 2 + 3  # pool of 2 clips, then one new clip per step
    assert meta["augment"] is True  # the default recipe augments, and says so
    assert 0 <= meta["heldout_miou"] <= 1
    first = load_segmenter(out).state_dict()
    assert "held-out mIoU" in capsys.readouterr().out

    assert train_segmenter.main([*common, "--steps", "5", "--resume"]) == 0
    meta = json.loads((out / "config.json").read_text())["metadata"]
    assert meta["steps"] == 5 and meta["next_train_seed"] == 5 + 2 + 2  # resumed: seeds continue where they stopped
    assert "resuming from step 3" in capsys.readouterr().out
    assert any(not torch.equal(v, load_segmenter(out).state_dict()[k]) for k, v in first.items())

    assert train_segmenter.main([*common, "--steps", "2", "--crop", "64x64"]) == 2
    assert "must fit" in capsys.readouterr().err


def test_segmenter_augmentation_degrades_frames_within_range():
    from training.train_segmenter import FramePool, augment

    pool = FramePool(2, (32, 64), first_seed=0)
    for _ in range(2):
        pool.add_clip()
    frames, _ = pool.batch(8, (32, 64), np.random.default_rng(0))
    out = augment(frames, np.random.default_rng(1))
    assert out.shape == frames.shape and out.dtype == frames.dtype
    assert out.min() >= -1.0 and out.max() <= 1.0
    per_crop = (out - frames).abs().mean(dim=(1, 2, 3))
    assert (per_crop > 1e-3).all()  # every crop is jittered at least photometrically …
    assert per_crop.mean() < 0.3  # … but stays the same picture
    assert torch.equal(out, augment(frames, np.random.default_rng(1)))  # reproducible from the generator
    assert not torch.equal(out, augment(frames, np.random.default_rng(2)))


def test_class_weights_favour_rare_classes():
    from training.train_segmenter import class_weights

    labels = np.zeros((4, 10, 10), np.uint8)  # road everywhere …
    labels[:, :, :3] = 10  # … a lot of sky, a thin pole, one ignore column
    labels[:, 5, 5] = 5
    labels[:, :, 9] = 255
    w = class_weights(labels, power=0.5)
    assert w.shape == (NUM_CLASSES,)
    assert w[5] > w[10] > w[0]  # rarer → heavier
    assert w[11] == w.max()  # absent classes get the largest weight
    assert torch.equal(class_weights(labels, power=0.0), torch.ones(NUM_CLASSES))
