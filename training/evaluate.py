"""Evaluate a seg2vid pipeline: held-out SynthCity clips (ground-truth motion) and, optionally, Cityscapes FIDs.

**SynthCity** (``--num-clips`` held-out seeds from ``--seed-start`` ≥ 1,000,000, rendered at ``--size``). Stage 2
is given the TRUE first frame and its label map (``pipe.animate``) and draws K videos. Their codes come from a
seed s of the clip's own (``--z-seeds per-clip``, the default: s = clip seed · K) or s = 0 for every clip
(``--z-seeds shared``: what a user trying the first K seeds sees), either as one set of K codes that covers the
prior (``--z-sampling stratified``, the default: ``pipe.sample_z_set(K, seed=s, label_map=...)``, one code from
each of K equally likely slices along the prior's principal axis) or as the codes of seeds s … s + K-1 drawn
independently (``--z-sampling independent``). Either way the codes are drawn for the clip's label map, which a
prior conditioned on the layout (``prior_neighbours``) uses. Each stratified code is distributed as an independent one, so the means over z
estimate the same expectations; the best of K is better because K independent codes can all miss a mode (on
SynthCity, a still camera). Diversity and disentanglement always compare the independent codes of seeds s and
s + 1; ``--z-seed-offset N`` adds N to every z seed, for another draw of the codes. Shared seeds judge all clips by
one set of K codes, and the disentanglement ratios by one pair, so a lucky or unlucky set moves every clip together
(on the bundled model ±0.3 dB of best-of-10 PSNR with independent codes, and the z_BG frame ratio from 0.83 to
1.07); per-clip seeds average over as many sets as there are clips:

* backward-flow end-point error vs the true ``w^b_t`` (px; all pixels and pixels visible in the ground truth),
  mean over the K samples and best-of-K, next to the zero-flow baseline;
* occlusion IoU: predicted ``o^b_t < 0.5`` vs the true occluded pixels;
* PSNR / SSIM of frames 1–T vs the true frames (mean and best-of-K), next to copying the first frame;
* the per-clip gain of best-of-K PSNR over copying, mean and median, for all clips and split into clips whose
  camera moves or stands still: on a still clip copying is nearly exact (PSNR up to the 100 dB cap), so a few
  such clips weigh heavily in the mean over clips; each clip's best-of-K PSNR and EPE and its baselines are
  listed in the JSON (``per_clip``);
* diversity: mean |Δ pixel| (0–1 scale) and mean flow difference (px) between the videos of two z draws;
* FG/BG disentanglement (paper section 3.3): re-draw only ``z_fg`` (or only ``z_bg``) and measure the mean change
  of the backward flow (px) and of the frames on foreground vs background pixels (of the input label map); the
  ratios show whether each half of z moves its own part of the scene;
* label fidelity of stage 1: mIoU of a small SynthCity segmenter (``training/train_segmenter.py``) on generated
  first frames (``pipe.first_frame(label_map)``) vs the input labels, next to its mIoU on the real frames; per
  class in the JSON; and the same on both sets of frames blurred (Gaussian, σ = 1 px), a control against
  pixel-level patterns that only a segmenter reads (a stage 1 trained against a segmenting discriminator could
  learn them): such patterns do not survive the blur, the look of a class does.

**Cityscapes** (``--cityscapes ROOT``, label maps from ``training/prepare_cityscapes.py``): the paper's Table 1
(label map → video, ``pipe(label_map)``) and Table 2 (first frame → video, ``pipe.animate``) on the window that
starts at each validation snippet's annotated frame — video FID with a Kinetics-400 video network (torchvision
``r3d_18`` by default; torchvision has no I3D) and image FID with torchvision's Inception-v3, both from local weight
files only (``--video-weights`` / ``--inception-weights``, or the torch hub cache). Parts whose data or weights are
missing are skipped with the reason in the report.

Writes ``OUT/metrics.json`` and ``OUT/metrics.md`` (a table a model card can include).

    python training/evaluate.py --checkpoint checkpoints --out outputs/eval --segmenter checkpoints/segmenter
    python training/evaluate.py --cityscapes /data/cityscapes --video-weights r3d_18-b3b3357e.pth --out outputs/cs
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from seg2vid.data.synthcity import HELDOUT_SEED_START
from seg2vid.evaluation import (
    FeatureWeightsUnavailable,
    VIDEO_NETWORKS,
    as_float_frames,
    best_of_k,
    confusion_matrix,
    endpoint_error,
    foreground_mask,
    frechet_distance,
    load_image_features,
    load_video_features,
    miou_from_confusion,
    occlusion_iou,
    psnr_per_frame,
    region_change,
    ssim_per_frame,
)
from seg2vid.labels import CLASSES, NUM_CLASSES
from seg2vid.pipeline import MAX_Z_SET

EXIT_USAGE = 2
BLUR_SIGMA = 1.0  # px, the label-fidelity control's Gaussian blur
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# SynthCity: motion ground truth


@dataclass
class _Pooled:
    """Sums and pixel counts of a per-pixel change on foreground / background pixels, pooled over clips."""

    fg_sum: float = 0.0
    fg_count: int = 0
    bg_sum: float = 0.0
    bg_count: int = 0

    def add(self, parts) -> None:
        fs, fc, bs, bc = (float(p) for p in parts)
        self.fg_sum, self.fg_count, self.bg_sum, self.bg_count = (
            self.fg_sum + fs, self.fg_count + int(fc), self.bg_sum + bs, self.bg_count + int(bc))

    def means(self) -> tuple[float, float]:
        fg = self.fg_sum / self.fg_count if self.fg_count else float("nan")
        bg = self.bg_sum / self.bg_count if self.bg_count else float("nan")
        return fg, bg


@dataclass
class _SynthAccumulator:
    k: int
    per_sample: dict[str, list[list[float]]] = field(default_factory=dict)  # metric → clips × K
    baselines: dict[str, list[float]] = field(default_factory=dict)  # metric → clips
    diversity: dict[str, list[float]] = field(default_factory=dict)
    fg_only: dict[str, _Pooled] = field(default_factory=lambda: {"flow": _Pooled(), "frame": _Pooled()})
    bg_only: dict[str, _Pooled] = field(default_factory=lambda: {"flow": _Pooled(), "frame": _Pooled()})
    clips_with_fg: int = 0
    camera_still: list[bool] = field(default_factory=list)  # per clip: SynthCity's camera stands still
    seeds: list[int] = field(default_factory=list)  # per clip
    confusion: dict[str, torch.Tensor] = field(default_factory=dict)  # "generated", "real", "…_blurred" → (19, 19)

    def add_samples(self, name: str, values: list[float]) -> None:
        self.per_sample.setdefault(name, []).append(values)

    def add(self, table: dict[str, list[float]], name: str, value: float) -> None:
        table.setdefault(name, []).append(float(value))


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


Z_SEEDS = ("shared", "per-clip")
Z_SAMPLING = ("stratified", "independent")


def evaluate_synthcity(
    pipe, seeds, size: tuple[int, int], k: int, segmenter=None, progress: bool = True, z_seeds: str = "per-clip",
    z_sampling: str = "stratified", z_seed_offset: int = 0,
) -> dict:
    """The SynthCity metrics (see the module docstring) for ``pipe`` on clips ``seeds`` at ``size``."""
    from tqdm.auto import tqdm

    from seg2vid.data.synthcity import render_clip

    seeds = list(seeds)
    if not seeds or min(seeds) < HELDOUT_SEED_START:
        raise ValueError(f"Evaluation seeds must be held out: all ≥ {HELDOUT_SEED_START} (training uses the seeds below).")
    if k < 1:
        raise ValueError(f"k must be ≥ 1; got {k}.")
    if z_seeds not in Z_SEEDS:
        raise ValueError(f"z_seeds must be one of {Z_SEEDS}; got {z_seeds!r}.")
    if z_sampling not in Z_SAMPLING:
        raise ValueError(f"z_sampling must be one of {Z_SAMPLING}; got {z_sampling!r}.")
    if isinstance(z_seed_offset, bool) or not isinstance(z_seed_offset, int) or not 0 <= z_seed_offset < 2**62:
        raise ValueError(f"z_seed_offset must be an integer from 0 to 2**62 - 1; got {z_seed_offset!r}.")
    pipe.resolution = size
    num_frames = pipe.num_frames + 1
    acc = _SynthAccumulator(k)

    for seed in tqdm(seeds, desc="SynthCity clips", unit="clip", disable=not progress):
        clip = render_clip(seed, size=size, num_frames=num_frames)
        frame0, ids0 = clip.frames[0], clip.labels[0]
        true_frames = as_float_frames(clip.frames[1:])  # (T, 3, H, W) in [0, 1]
        true_flow = torch.from_numpy(clip.flow_bwd)  # (T, H, W, 2) px
        visible = torch.from_numpy(clip.occ_bwd).bool()  # (T, H, W), 1 = has a correspondence in frame 0

        # K videos from the true first frame: one stratified set of K codes from seed s, or the codes of seeds
        # s … s + K-1 (s = clip seed · K, or 0 with shared seeds, plus the offset).
        first_z_seed = (seed * k if z_seeds == "per-clip" else 0) + z_seed_offset
        if z_sampling == "stratified":
            z_fg, z_bg = pipe.sample_z_set(k, seed=first_z_seed, label_map=ids0)  # (K, D_fg), (K, D_bg)
            samples = [pipe.animate(frame0, ids0, z_fg=z_fg[j], z_bg=z_bg[j]) for j in range(k)]
        else:
            samples = [pipe.animate(frame0, ids0, seed=first_z_seed + j) for j in range(k)]
        epe, epe_vis, occ, psnr, ssim = [], [], [], [], []
        for out in samples:
            flow = torch.from_numpy(out.flow_bwd)
            frames = as_float_frames(out.frames[1:])
            epe.append(float(endpoint_error(flow, true_flow)))
            epe_vis.append(float(endpoint_error(flow, true_flow, visible)))
            occ.append(float(occlusion_iou(torch.from_numpy(out.occ_bwd), visible.float())))
            psnr.append(float(psnr_per_frame(frames, true_frames).mean()))
            ssim.append(float(ssim_per_frame(frames, true_frames).mean()))
        for name, values in (("epe", epe), ("epe_visible", epe_vis), ("occlusion_iou", occ), ("psnr", psnr), ("ssim", ssim)):
            acc.add_samples(name, values)

        # Baselines: zero flow, and the first frame copied T times.
        zero = torch.zeros_like(true_flow)
        copied = as_float_frames(np.repeat(frame0[None], num_frames - 1, axis=0))
        acc.add(acc.baselines, "epe", float(endpoint_error(zero, true_flow)))
        acc.add(acc.baselines, "epe_visible", float(endpoint_error(zero, true_flow, visible)))
        acc.add(acc.baselines, "psnr", float(psnr_per_frame(copied, true_frames).mean()))
        acc.add(acc.baselines, "ssim", float(ssim_per_frame(copied, true_frames).mean()))
        acc.camera_still.append(clip.camera_speed == 0)
        acc.seeds.append(int(seed))

        # Diversity and disentanglement: two independent z draws (the codes of seeds s and s + 1).
        if k >= 2:
            a, b = (samples[0], samples[1]) if z_sampling == "independent" else (
                pipe.animate(frame0, ids0, seed=first_z_seed + j) for j in range(2))
            acc.add(acc.diversity, "frame_mad", float(np.abs(a.frames[1:].astype(np.float32) - b.frames[1:]).mean() / 255.0))
            acc.add(acc.diversity, "flow_difference", float(endpoint_error(torch.from_numpy(a.flow_bwd), torch.from_numpy(b.flow_bwd))))
            fg = foreground_mask(torch.from_numpy(ids0))  # (H, W), foreground of the input label map
            if fg.any():
                acc.clips_with_fg += 1
                fg_only = pipe.animate(frame0, ids0, z_fg=b.z_fg, z_bg=a.z_bg)
                bg_only = pipe.animate(frame0, ids0, z_fg=a.z_fg, z_bg=b.z_bg)
                for pooled, other in ((acc.fg_only, fg_only), (acc.bg_only, bg_only)):
                    pooled["flow"].add(region_change(a.flow_bwd, other.flow_bwd, fg))
                    pooled["frame"].add(region_change(a.frames[1:] / 255.0, other.frames[1:] / 255.0, fg))

        # Label fidelity of stage 1: segment the generated first frame and the real one, sharp and blurred.
        if segmenter is not None:
            frames = as_float_frames(np.stack([pipe.first_frame(ids0), frame0])) * 2 - 1  # (2, 3, H, W)
            pred = segmenter.predict(torch.cat([frames, gaussian_blur(frames, [5, 5], [BLUR_SIGMA] * 2)]))
            truth = torch.from_numpy(ids0).long()
            for name, p in zip(("generated", "real", "generated_blurred", "real_blurred"), pred):
                acc.confusion[name] = acc.confusion.get(name, 0) + confusion_matrix(p, truth)

    return _summarise_synthcity(acc)


def bootstrap_interval(values, level: float = 0.9, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The central ``level`` interval of the mean of ``values`` (n,) over ``resamples`` resamplings of them with
    replacement (torchmetrics' ``BootStrapper``, multinomial), seeded and leaving torch's global RNG untouched."""
    from torchmetrics import MeanMetric
    from torchmetrics.wrappers import BootStrapper

    values = torch.as_tensor(np.asarray(values, np.float64))
    if values.numel() == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        boot = BootStrapper(MeanMetric(), num_bootstraps=resamples, mean=False, std=False,
                            quantile=torch.tensor([tail, 1 - tail]), sampling_strategy="multinomial")
        boot.update(values)
        lo, hi = boot.compute()["quantile"].tolist()
    return float(lo), float(hi)


def psnr_gain_by_camera(best: np.ndarray, copy: np.ndarray, still: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per-clip gain of the best-of-K PSNR over copying the first frame (dB), for all clips and split by camera.

    ``best``, ``copy`` (clips,) in dB; ``still`` (clips,) bool. The mean over clips of a PSNR is dominated by its
    highest values: on a clip where nothing moves the copied frame *is* the truth (``PSNR_CAP_DB``), so one such
    clip among a hundred can take most of a dB off the mean gain. The median and the still / moving split show it,
    and ``interval_90`` says how much the mean would move on another draw of as many clips (bootstrap, 90 %).
    A group without clips has NaN mean, median and interval (``null`` in metrics.json, "–" in the table).
    """
    gain = np.asarray(best, np.float64) - np.asarray(copy, np.float64)
    still = np.asarray(still, bool)
    out = {}
    for name, keep in (("all", np.ones_like(still)), ("camera_still", still), ("camera_moving", ~still)):
        g = gain[keep]
        out[name] = {"clips": int(keep.sum()), "mean": float(g.mean()) if g.size else float("nan"),
                     "median": float(np.median(g)) if g.size else float("nan"),
                     "interval_90": list(bootstrap_interval(g))}
    return out


def _summarise_synthcity(acc: _SynthAccumulator) -> dict[str, Any]:
    higher = {"epe": False, "epe_visible": False, "occlusion_iou": True, "psnr": True, "ssim": True}
    result: dict[str, Any] = {}
    for name, rows in acc.per_sample.items():
        values = np.array(rows, dtype=np.float64)  # (clips, K)
        keep = ~np.isnan(values).any(axis=1)  # e.g. EPE on visible pixels of a clip with none
        mean, best = best_of_k(torch.from_numpy(values[keep]), higher[name]) if keep.any() else (float("nan"),) * 2
        entry = {"mean": mean, f"best_of_{acc.k}": best}
        if name in acc.baselines:
            entry["zero_flow" if name.startswith("epe") else "copy_first_frame"] = _mean(acc.baselines[name])
        result[name] = entry
    best_psnr = np.array(acc.per_sample["psnr"], dtype=np.float64).max(axis=1)
    result["psnr_gain_over_copy"] = psnr_gain_by_camera(best_psnr, np.array(acc.baselines["psnr"]),
                                                        np.array(acc.camera_still))
    best_epe = np.array(acc.per_sample["epe"], dtype=np.float64).min(axis=1)
    result["per_clip"] = [  # where the means come from: find a model's worst clips
        {"seed": seed, "camera_still": bool(still), f"psnr_best_of_{acc.k}": float(best), "psnr_copy": float(copy),
         f"epe_best_of_{acc.k}": float(epe), "epe_zero_flow": float(zero)}
        for seed, still, best, copy, epe, zero in zip(acc.seeds, acc.camera_still, best_psnr, acc.baselines["psnr"],
                                                      best_epe, acc.baselines["epe"])
    ]
    if acc.diversity:
        result["diversity"] = {name: _mean(v) for name, v in acc.diversity.items()}
        dis: dict[str, Any] = {"clips_with_foreground": acc.clips_with_fg}
        for label, pooled, own in (("z_fg_only", acc.fg_only, "fg"), ("z_bg_only", acc.bg_only, "bg")):
            entry = {}
            for quantity in ("flow", "frame"):
                fg, bg = pooled[quantity].means()
                entry[f"{quantity}_change_fg"], entry[f"{quantity}_change_bg"] = fg, bg
                num, den = (fg, bg) if own == "fg" else (bg, fg)
                entry[f"{quantity}_ratio_{own}_over_{'bg' if own == 'fg' else 'fg'}"] = num / den if den > 0 else float("nan")
            dis[label] = entry
        result["disentanglement"] = dis
    else:
        result["diversity"] = {"skipped": "needs k ≥ 2"}
        result["disentanglement"] = {"skipped": "needs k ≥ 2"}
    if acc.confusion:
        (gen, gen_iou), (real, real_iou) = (miou_from_confusion(acc.confusion[n]) for n in ("generated", "real"))
        result["label_fidelity"] = {
            "generated_first_frame_miou": gen,
            "real_frame_miou": real,
            "blurred_generated_first_frame_miou": miou_from_confusion(acc.confusion["generated_blurred"])[0],
            "blurred_real_frame_miou": miou_from_confusion(acc.confusion["real_blurred"])[0],
            "blur_sigma_px": BLUR_SIGMA,
            "per_class_iou": {c.name: {"generated": float(g), "real": float(r)}
                              for c, g, r in zip(CLASSES, gen_iou, real_iou)},
        }
    return result


# ----------------------------------------------------------------------------------------------------------------
# Cityscapes: the paper's Tables 1 and 2 (FID)


class _Features(torch.nn.Identity):
    """Already-extracted features, for torchmetrics' FID (so real features are computed once for both tables)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


def _fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    metric = frechet_distance(_Features(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def evaluate_cityscapes(
    pipe, root, labels_root=None, split: str = "val", max_clips: int = 500, size=(128, 256),
    video_net: str = "r3d_18", video_weights=None, inception_weights=None, device="cpu", progress: bool = True,
) -> dict[str, Any]:
    """Video and image FIDs for Table 1 (label map → video) and Table 2 (first frame → video).

    Returns ``{"skipped": reason}`` when the data or both feature networks are unavailable.
    """
    from tqdm.auto import tqdm

    from seg2vid.data.cityscapes import CityscapesSequenceDataset

    if not Path(root).is_dir():
        return {"skipped": f"no Cityscapes folder at {str(root)!r}"}
    pipe.resolution = size
    try:
        ds = CityscapesSequenceDataset(root, split, size, pipe.num_frames + 1, labels_root, window_starts="annotated")
    except ValueError as e:
        return {"skipped": str(e)}
    notes, nets = {}, {}
    for name, load in (("video", lambda: load_video_features(video_net, video_weights)),
                       ("image", lambda: load_image_features(inception_weights))):
        try:
            nets[name] = load().to(device)
        except FeatureWeightsUnavailable as e:
            notes[f"{name}_fid"] = f"skipped: {e}"
    if not nets:
        return {"skipped": "no feature-network weights: " + " ".join(notes.values()), **notes}

    n = min(len(ds), max_clips)
    feats: dict[str, dict[str, list[torch.Tensor]]] = {key: {"real": [], "table1": [], "table2": []} for key in nets}

    @torch.no_grad()
    def extract(videos: dict[str, torch.Tensor]) -> None:  # each (T+1, 3, H, W) in [0, 1]
        for which, video in videos.items():
            if "video" in nets:
                feats["video"][which].append(nets["video"](video[None].to(device)).cpu())
            if "image" in nets:
                feats["image"][which].append(nets["image"](video.to(device)).cpu())

    for i in tqdm(range(n), desc="Cityscapes clips", unit="clip", disable=not progress):
        item = ds[i]
        real = (item["video"] + 1) / 2  # (T+1, 3, H, W) in [0, 1]
        ids0 = item["labels"][0].numpy().astype(np.uint8)
        frame0 = (real[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        table1 = pipe(ids0, seed=i)
        table2 = pipe.animate(frame0, ids0, seed=i)
        extract({"real": real, "table1": as_float_frames(table1.frames), "table2": as_float_frames(table2.frames)})

    result: dict[str, Any] = {"split": split, "clips": n, "window": "from the annotated frame (index 19)",
                              "size": list(size), **notes}
    if n < 2:
        return {**result, "skipped": f"FID needs at least 2 clips; the split has {n}"}
    for key, table in feats.items():
        real = torch.cat(table["real"])
        label = f"video_fid_{video_net}" if key == "video" else "image_fid_inception_v3"
        result[label] = {
            "table1_label_map_to_video": _fid(real, torch.cat(table["table1"])),
            "table2_first_frame_to_video": _fid(real, torch.cat(table["table2"])),
        }
    return result


# ----------------------------------------------------------------------------------------------------------------
# Report


def _fmt(v, digits: int = 3, scientific: bool = True) -> str:
    if isinstance(v, (int, np.integer)):
        return str(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if scientific and v != 0 and abs(v) < 10 ** (1 - digits):  # too small for fixed point: two significant digits
        return f"{v:.1e}"
    return f"{v:.{digits}f}"


def _seeds_note(z_seeds: str, z_sampling: str, k: int, offset: int = 0) -> str:
    """Where a report's codes came from, e.g. "clip seed · 10 + 0–9"."""
    first = ("0" if z_seeds == "shared" else f"clip seed · {k}") + (f" + {offset:_}" if offset else "")
    if z_sampling == "stratified":
        return f"seed {first}; diversity from the independent codes of seeds {first} + 0–1"
    if z_seeds == "shared" and not offset:
        return f"0–{k - 1} per clip"
    return f"{first} + 0–{k - 1}"


def _codes_note(protocol: dict[str, Any]) -> str:
    """The table's account of the K codes, e.g. "(z seeds clip seed · 10 + 0–9; independent codes)"."""
    k, sampling = protocol["k"], protocol.get("z_sampling")
    seeds = protocol.get("z_seeds", f"0–{k - 1} per clip")
    if sampling == "stratified":
        return f"(one stratified set per clip for its label map, `pipe.sample_z_set`, from {seeds})"
    return f"(z seeds {seeds}{'; independent codes' if sampling == 'independent' else ''})"


def to_markdown(metrics: dict[str, Any]) -> str:
    """The report as Markdown: one table for SynthCity, one for Cityscapes (or the reason it was skipped)."""
    p = metrics["protocol"]
    k = p["k"]
    s = metrics["synthcity"]
    lines = [
        f"### Evaluation on held-out SynthCity clips",
        "",
        f"{p['num_clips']} clips (seeds {p['seeds'][0]}–{p['seeds'][1] - 1}), {p['size'][0]}×{p['size'][1]}, "
        f"T = {p['num_frames'] - 1}; stage 2 animates the true first frame; K = {k} z samples per clip "
        f"{_codes_note(p)}.",
        "",
        f"| Metric | mean over z | best of {k} | baseline |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows = [
        ("Backward-flow EPE, all pixels (px) ↓", "epe", "zero_flow", "zero flow"),
        ("Backward-flow EPE, visible pixels (px) ↓", "epe_visible", "zero_flow", "zero flow"),
        ("Occlusion IoU ↑", "occlusion_iou", None, None),
        ("PSNR, frames 1–T (dB) ↑", "psnr", "copy_first_frame", "copy frame 0"),
        ("SSIM, frames 1–T ↑", "ssim", "copy_first_frame", "copy frame 0"),
    ]
    for title, key, base, base_name in rows:
        e = s.get(key, {})
        base_text = f"{_fmt(e.get(base))} ({base_name})" if base else "–"
        lines.append(f"| {title} | {_fmt(e.get('mean'))} | {_fmt(e.get(f'best_of_{k}'))} | {base_text} |")
    gains = s.get("psnr_gain_over_copy")
    if gains:
        lines += ["", f"| Best-of-{k} PSNR minus copy-frame-0 PSNR, per clip (dB) | clips | mean | median "
                      "| mean: 90 % bootstrap interval |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for key, title in (("all", "all clips"), ("camera_moving", "camera moving"), ("camera_still", "camera still")):
            g = gains[key]
            lo, hi = g.get("interval_90", (None, None))
            db = lambda v: _fmt(v, 2, scientific=False)  # noqa: E731  (dB: hundredths are what matter)
            lines.append(f"| {title} | {g['clips']} | {db(g['mean'])} | {db(g['median'])} | {db(lo)} – {db(hi)} |")
    lines += ["", "| Diversity and disentanglement | value |", "| --- | ---: |"]
    d = s.get("diversity", {})
    if "skipped" in d:
        lines.append(f"| diversity, disentanglement | skipped ({d['skipped']}) |")
    else:
        lines.append(f"| Mean abs. pixel difference between two z draws (0–1) | {_fmt(d['frame_mad'], 4)} |")
        lines.append(f"| Mean flow difference between two z draws (px) | {_fmt(d['flow_difference'])} |")
        dis = s["disentanglement"]
        fg, bg = dis["z_fg_only"], dis["z_bg_only"]
        lines += [
            f"| New z_fg only: flow change FG / BG (px) | {_fmt(fg['flow_change_fg'])} / {_fmt(fg['flow_change_bg'])} "
            f"(ratio {_fmt(fg['flow_ratio_fg_over_bg'], 2)}) |",
            f"| New z_bg only: flow change BG / FG (px) | {_fmt(bg['flow_change_bg'])} / {_fmt(bg['flow_change_fg'])} "
            f"(ratio {_fmt(bg['flow_ratio_bg_over_fg'], 2)}) |",
            f"| New z_fg only: frame change FG / BG | {_fmt(fg['frame_change_fg'], 4)} / {_fmt(fg['frame_change_bg'], 4)} "
            f"(ratio {_fmt(fg['frame_ratio_fg_over_bg'], 2)}) |",
            f"| New z_bg only: frame change BG / FG | {_fmt(bg['frame_change_bg'], 4)} / {_fmt(bg['frame_change_fg'], 4)} "
            f"(ratio {_fmt(bg['frame_ratio_bg_over_fg'], 2)}) |",
            f"| Clips with foreground pixels | {dis['clips_with_foreground']} |",
        ]
    lf = s.get("label_fidelity")
    if lf is None:
        lines.append(f"| Label fidelity (segmenter mIoU) | skipped ({p.get('segmenter_note', 'no segmenter')}) |")
    else:
        lines.append(f"| Label fidelity: segmenter mIoU on generated first frames ↑ | {_fmt(lf['generated_first_frame_miou'])} |")
        lines.append(f"| Segmenter mIoU on the real SynthCity frames (reference) | {_fmt(lf['real_frame_miou'])} |")
        lines.append(f"| The same on frames blurred (σ = {lf['blur_sigma_px']:g} px): generated / real | "
                     f"{_fmt(lf['blurred_generated_first_frame_miou'])} / {_fmt(lf['blurred_real_frame_miou'])} |")

    c = metrics.get("cityscapes")
    lines += ["", "### Cityscapes (paper Tables 1 and 2)", ""]
    if c is None or "skipped" in c:
        lines.append(f"Skipped: {c['skipped'] if c else 'no --cityscapes ROOT given'}.")
    else:
        lines += [f"{c['clips']} {c['split']} windows {c['window']}, {c['size'][0]}×{c['size'][1]}.", "",
                  "| FID ↓ | Table 1: label map → video | Table 2: first frame → video |", "| --- | ---: | ---: |"]
        for key, value in c.items():
            if isinstance(value, dict):
                lines.append(f"| {key} | {_fmt(value['table1_label_map_to_video'], 2)} | "
                             f"{_fmt(value['table2_first_frame_to_video'], 2)} |")
            elif key.endswith("_fid"):
                lines.append(f"| {key} | {value} | |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Command line


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 128x256; got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive; got {text!r}")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints"),
                   help="pipeline folder or Hub repo id (default: the bundled model in checkpoints/)")
    p.add_argument("--out", required=True, help="output folder for metrics.json and metrics.md")
    p.add_argument("--num-clips", type=int, default=100, help="held-out SynthCity clips (default: %(default)s)")
    p.add_argument("--seed-start", type=int, default=HELDOUT_SEED_START, help="first clip seed (≥ %(default)s)")
    p.add_argument("--size", type=_size, default=(128, 256), metavar="HxW", help="resolution (default 128x256)")
    p.add_argument("--k", type=int, default=10, help="z samples per clip for best-of-K (default: %(default)s)")
    p.add_argument("--z-seeds", choices=Z_SEEDS, default="per-clip",
                   help="per-clip: K seeds of each clip's own (clip seed · K + 0 … K-1); shared: z seeds 0 … K-1 "
                        "for every clip (default: %(default)s)")
    p.add_argument("--z-seed-offset", type=int, default=0, metavar="N",
                   help="add N to every z seed: another draw of the codes, to see how much a result owes to luck "
                        "(default: %(default)s)")
    p.add_argument("--z-sampling", choices=Z_SAMPLING, default="stratified",
                   help="stratified: one set of K codes that covers the prior (pipe.sample_z_set); independent: the "
                        "codes of K seeds (default: %(default)s)")
    p.add_argument("--segmenter", default=str(REPO / "checkpoints" / "segmenter"),
                   help="segmenter folder for label fidelity (default: checkpoints/segmenter)")
    p.add_argument("--cityscapes", default=None, metavar="ROOT", help="Cityscapes root for the FID tables")
    p.add_argument("--cityscapes-labels", default=None, metavar="DIR", help="per-frame label maps (prepare_cityscapes)")
    p.add_argument("--cityscapes-split", default="val")
    p.add_argument("--cityscapes-max", type=int, default=500, help="at most this many snippets (paper: 500)")
    p.add_argument("--video-net", default="r3d_18", choices=sorted(VIDEO_NETWORKS))
    p.add_argument("--video-weights", default=None, help="Kinetics-400 weights file of --video-net")
    p.add_argument("--inception-weights", default=None, help="torchvision Inception-v3 ImageNet weights file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def _finite_or_null(value):
    """NaN / inf → None (strict JSON has no NaN), recursively."""
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_clips < 1:
        return _usage_error(f"--num-clips must be ≥ 1; got {args.num_clips}")
    if args.k < 1:
        return _usage_error(f"--k must be ≥ 1; got {args.k}")
    if not 0 <= args.z_seed_offset < 2**62:
        return _usage_error(f"--z-seed-offset must lie in [0, 2**62); got {args.z_seed_offset}")
    if args.z_sampling == "stratified" and args.k > MAX_Z_SET:
        return _usage_error(f"--k must be at most {MAX_Z_SET} with --z-sampling stratified; got {args.k}")
    if args.seed_start < HELDOUT_SEED_START:
        return _usage_error(
            f"--seed-start {args.seed_start} is a training seed; evaluation uses held-out seeds ≥ {HELDOUT_SEED_START}"
        )
    if args.cityscapes_max < 1:
        return _usage_error(f"--cityscapes-max must be ≥ 1; got {args.cityscapes_max}")

    from seg2vid import Seg2VidPipeline
    from seg2vid.checkpoint import looks_like_repo_id
    from seg2vid.networks.segmenter import load_segmenter

    if not Path(args.checkpoint).is_dir() and not looks_like_repo_id(str(args.checkpoint)):
        return _usage_error(f"no checkpoint folder at {args.checkpoint!r}")
    try:
        pipe = Seg2VidPipeline.from_pretrained(args.checkpoint, device=args.device)
        pipe.resolution = args.size
    except ValueError as e:
        return _usage_error(str(e))
    segmenter, segmenter_note = None, None
    if args.segmenter and Path(args.segmenter).is_dir():
        try:
            segmenter = load_segmenter(args.segmenter, device="cpu")
        except ValueError as e:
            return _usage_error(str(e))
    else:
        segmenter_note = f"no segmenter checkpoint at {args.segmenter!r}; train one with training/train_segmenter.py"
        print(f"note: label fidelity skipped: {segmenter_note}", file=sys.stderr)

    seeds = range(args.seed_start, args.seed_start + args.num_clips)
    metrics: dict[str, Any] = {
        "protocol": {
            "checkpoint": str(args.checkpoint),
            "num_clips": args.num_clips,
            "seeds": [seeds.start, seeds.stop],
            "size": list(args.size),
            "num_frames": pipe.num_frames + 1,
            "k": args.k,
            "z_seeds": _seeds_note(args.z_seeds, args.z_sampling, args.k, args.z_seed_offset),
            "z_sampling": args.z_sampling,
            "segmenter": str(args.segmenter) if segmenter is not None else None,
            "date": datetime.date.today().isoformat(),
        }
    }
    if segmenter_note:
        metrics["protocol"]["segmenter_note"] = segmenter_note
    metrics["synthcity"] = evaluate_synthcity(pipe, seeds, args.size, args.k, segmenter, progress=not args.no_progress,
                                              z_seeds=args.z_seeds, z_sampling=args.z_sampling,
                                              z_seed_offset=args.z_seed_offset)
    if args.cityscapes:
        metrics["cityscapes"] = evaluate_cityscapes(
            pipe, args.cityscapes, args.cityscapes_labels, args.cityscapes_split, args.cityscapes_max, args.size,
            args.video_net, args.video_weights, args.inception_weights, args.device, progress=not args.no_progress,
        )
        if "skipped" in metrics["cityscapes"]:
            print(f"note: Cityscapes skipped: {metrics['cityscapes']['skipped']}", file=sys.stderr)
    else:
        metrics["cityscapes"] = {"skipped": "no --cityscapes ROOT given"}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_finite_or_null(metrics), indent=2) + "\n", encoding="utf-8")
    markdown = to_markdown(metrics)
    (out / "metrics.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {out / 'metrics.json'} and {out / 'metrics.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
