"""Train the small SynthCity segmenter used to measure the label fidelity of stage 1 (``training/evaluate.py``).

Frames and labels are rendered on the fly from SynthCity training seeds (< ``HELDOUT_SEED_START``) at the
evaluation resolution and kept in a pool that is refreshed as training goes (one new clip of two frames per step),
so no data set has to be written to disk. Random crops and horizontal flips, and (unless ``--no-augment``)
photometric jitter, blur, noise and resampling, so that label fidelity is judged by layout and colour rather than
by render-exact texture (a segmenter that has only seen clean renders mislabels slightly soft frames);
cross-entropy with median-frequency class weights (thin and small classes cover few pixels); AdamW with a warm-up
and a cosine decay. At the end the mIoU on held-out seeds (≥ ``HELDOUT_SEED_START``) is printed and stored in the
checkpoint's metadata.

    python training/train_segmenter.py --out checkpoints/segmenter                 # about 1 h on one CPU core
    python training/train_segmenter.py --out checkpoints/segmenter --resume        # continue an interrupted run

The output folder holds ``config.json`` + ``model.safetensors`` (``seg2vid.networks.segmenter.load_segmenter``);
it is rewritten every ``--save-every`` steps. ``--resume`` restarts from the saved weights, step and data
position (the optimizer moments start afresh).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from seg2vid.data.synthcity import HELDOUT_SEED_START, render_clip
from seg2vid.evaluation import confusion_matrix, miou_from_confusion
from seg2vid.labels import CLASS_NAMES, IGNORE_ID
from seg2vid.networks.segmenter import Segmenter, SegmenterConfig, load_segmenter, save_segmenter

REPO = Path(__file__).resolve().parents[1]
FRAMES_PER_CLIP = 2  # frames rendered per new clip (frame 0 costs the scene build; later frames are cheap)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 128x256; got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"sizes must be at least 8; got {text!r}")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "checkpoints" / "segmenter"), help="output folder (default: checkpoints/segmenter)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--size", type=_size, default=(128, 256), metavar="HxW", help="render size (default 128x256)")
    p.add_argument("--crop", type=_size, default=(64, 128), metavar="HxW", help="training crop (default 64x128)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--pool-clips", type=int, default=128, help="clips kept in the training pool")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="photometric jitter, blur, noise and resampling of the training crops (default: on)")
    p.add_argument("--class-balance", type=float, default=0.5,
                   help="class weights (median frequency / frequency) ** this power; 0 = plain cross-entropy")
    p.add_argument("--eval-clips", type=int, default=50, help="held-out clips for the final mIoU")
    p.add_argument("--channels", type=int, nargs="+", default=list(SegmenterConfig().channels))
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=100, help="print the loss every N steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the weights in --out")
    p.add_argument("--no-progress", action="store_true")
    return p


def learning_rate(step: int, base: float, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5 % of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def to_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in [-1, 1] (the seg2vid frame convention)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def class_weights(labels: np.ndarray, power: float, max_weight: float = 10.0) -> torch.Tensor:
    """Median-frequency balancing: (median class frequency / frequency) ** power, clipped to [1/max, max].

    Thin and small classes (poles, signs, people) cover few pixels; without weights they are learnt last.
    Classes absent from ``labels`` get the largest weight.
    """
    counts = np.bincount(labels[labels != IGNORE_ID].ravel(), minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)]
    freq = counts / max(1, counts.sum())
    present = freq > 0
    if power == 0 or not present.any():
        return torch.ones(len(CLASS_NAMES))
    weights = np.full(len(CLASS_NAMES), max_weight)
    weights[present] = (np.median(freq[present]) / freq[present]) ** power
    return torch.from_numpy(np.clip(weights, 1.0 / max_weight, max_weight)).float()


def augment(frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Per-crop photometric and degradation augmentation of frames (n, 3, h, w) in [-1, 1]; labels are unchanged.

    Brightness, contrast and saturation × U[0.75, 1.25]; with probability ½ each: Gaussian blur (σ ∈ [0.3, 1.5]),
    resampling through a lower resolution (× U[0.5, 0.85], bilinear), and Gaussian noise (σ ∈ [0, 0.04]).
    """
    from torchvision.transforms.v2 import functional as TF

    out = []
    for frame in frames.add(1.0).div(2.0):  # (3, h, w) in [0, 1]
        lo, hi = rng.uniform(0.75, 1.25, 3), rng.random(3)
        frame = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(frame, lo[0]), lo[1]), lo[2])
        if hi[0] < 0.5:
            frame = TF.gaussian_blur(frame, kernel_size=[5, 5], sigma=[float(rng.uniform(0.3, 1.5))] * 2)
        if hi[1] < 0.5:
            size = frame.shape[-2:]
            small = [max(8, round(n * rng.uniform(0.5, 0.85))) for n in size]
            frame = F.interpolate(F.interpolate(frame[None], small, mode="bilinear", antialias=True), size,
                                  mode="bilinear")[0]
        if hi[2] < 0.5:
            frame = frame + torch.from_numpy(rng.normal(0.0, rng.uniform(0, 0.04), frame.shape)).float()
        out.append(frame.clamp(0.0, 1.0))
    return torch.stack(out).mul(2.0).sub(1.0)


class FramePool:
    """A ring buffer of rendered (frame, labels) pairs from consecutive training seeds."""

    def __init__(self, clips: int, size: tuple[int, int], first_seed: int):
        self.capacity = clips * FRAMES_PER_CLIP
        self.size = size
        self.next_seed = first_seed
        self.frames = np.zeros((self.capacity, *size, 3), np.uint8)
        self.labels = np.full((self.capacity, *size), IGNORE_ID, np.uint8)
        self.filled = 0
        self._cursor = 0

    def add_clip(self) -> None:
        if self.next_seed >= HELDOUT_SEED_START:
            raise ValueError(f"Ran out of training seeds (the held-out seeds start at {HELDOUT_SEED_START}).")
        clip = render_clip(self.next_seed, size=self.size, num_frames=FRAMES_PER_CLIP)
        self.next_seed += 1
        for frame, ids in zip(clip.frames, clip.labels):
            self.frames[self._cursor], self.labels[self._cursor] = frame, ids
            self._cursor = (self._cursor + 1) % self.capacity
            self.filled = min(self.filled + 1, self.capacity)

    def batch(self, n: int, crop: tuple[int, int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops (and horizontal flips) → frames (n, 3, ch, cw) in [-1, 1], labels (n, ch, cw) int64."""
        (h, w), (ch, cw) = self.size, crop
        idx = rng.integers(0, self.filled, n)
        ys, xs = rng.integers(0, h - ch + 1, n), rng.integers(0, w - cw + 1, n)
        flips = rng.random(n) < 0.5
        frames = np.empty((n, ch, cw, 3), np.uint8)
        labels = np.empty((n, ch, cw), np.uint8)
        for j, (i, y, x, flip) in enumerate(zip(idx, ys, xs, flips)):
            f, l = self.frames[i, y : y + ch, x : x + cw], self.labels[i, y : y + ch, x : x + cw]
            frames[j], labels[j] = (f[:, ::-1], l[:, ::-1]) if flip else (f, l)
        return to_input(frames), torch.from_numpy(labels).long()


@torch.no_grad()
def heldout_miou(model: Segmenter, clips: int, size: tuple[int, int], progress: bool = False):
    """mIoU (and per-class IoU) on frame 0 of held-out clips ``HELDOUT_SEED_START …``."""
    from tqdm.auto import tqdm

    cm = torch.zeros(len(CLASS_NAMES), len(CLASS_NAMES), dtype=torch.long)
    for seed in tqdm(range(HELDOUT_SEED_START, HELDOUT_SEED_START + clips), desc="held-out mIoU", disable=not progress):
        clip = render_clip(seed, size=size, num_frames=2)
        pred = model.predict(to_input(clip.frames[:1]))
        cm += confusion_matrix(pred, torch.from_numpy(clip.labels[:1]).long())
    return miou_from_confusion(cm)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    problems = []
    if min(args.steps, args.batch_size, args.pool_clips, args.save_every, args.log_every) < 1 or args.eval_clips < 0:
        problems.append("--steps, --batch-size, --pool-clips, --save-every, --log-every must be ≥ 1, --eval-clips ≥ 0")
    if args.crop[0] > args.size[0] or args.crop[1] > args.size[1]:
        problems.append(f"--crop {args.crop} must fit in --size {args.size}")
    try:
        config = SegmenterConfig(channels=tuple(args.channels))
    except ValueError as e:
        problems.append(str(e))
        config = None
    if config is not None and (args.crop[0] % config.size_multiple or args.crop[1] % config.size_multiple):
        problems.append(f"--crop must be a multiple of {config.size_multiple} per side")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    from tqdm.auto import tqdm

    out = Path(args.out)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model, step, first_seed = Segmenter(config), 0, 0
    if args.resume and (out / "config.json").is_file():
        try:
            model = load_segmenter(out)
        except ValueError as e:
            print(f"error: cannot resume: {e}", file=sys.stderr)
            return 2
        meta = json.loads((out / "config.json").read_text()).get("metadata", {})
        step, first_seed = int(meta.get("steps", 0)), int(meta.get("next_train_seed", 0))
        rng = np.random.default_rng([args.seed, step])
        print(f"resuming from step {step} (next training seed {first_seed})")
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Segmenter {config.channels}: {n_params / 1e6:.2f} M parameters; {args.steps} steps of {args.batch_size} "
          f"crops {args.crop[0]}x{args.crop[1]} from {args.size[0]}x{args.size[1]} SynthCity frames")

    pool = FramePool(args.pool_clips, args.size, first_seed)
    for _ in tqdm(range(args.pool_clips), desc="filling the frame pool", disable=args.no_progress):
        pool.add_clip()
    weights = class_weights(pool.labels[: pool.filled], args.class_balance)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    def save(steps_done: int, extra: dict | None = None) -> None:
        meta = {"steps": steps_done, "next_train_seed": pool.next_seed, "train_size": list(args.size),
                "data": f"SynthCity seeds 0–{pool.next_seed - 1}", "augment": args.augment, **(extra or {})}
        save_segmenter(model, out, metadata=meta)

    t0, running = time.time(), None
    bar = tqdm(range(step, args.steps), initial=step, total=args.steps, desc="training", disable=args.no_progress)
    for step in bar:
        lr = learning_rate(step, args.lr, args.steps, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        frames, labels = pool.batch(args.batch_size, args.crop, rng)
        if args.augment:
            frames = augment(frames, rng)
        loss = F.cross_entropy(model(frames), labels, weight=weights, ignore_index=IGNORE_ID)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pool.add_clip()  # keep the data fresh
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}", lr=f"{lr:.1e}")
        if (step + 1) % args.log_every == 0:
            tqdm.write(f"step {step + 1}: loss {running:.4f}, lr {lr:.2e}, {time.time() - t0:.0f} s")
        if (step + 1) % args.save_every == 0:
            save(step + 1)
    bar.close()
    train_time = time.time() - t0

    miou, iou = heldout_miou(model, args.eval_clips, args.size, progress=not args.no_progress) if args.eval_clips else (float("nan"), None)
    extra = {"train_seconds_this_run": round(train_time, 1)}
    if iou is not None:
        extra.update(heldout_miou=round(miou, 4), heldout_clips=args.eval_clips)
    save(args.steps, extra)
    print(f"saved {out}/ (config.json + model.safetensors) after {args.steps} steps, {train_time / 60:.1f} min")
    if iou is not None:
        per_class = ", ".join(f"{n} {v:.2f}" for n, v in zip(CLASS_NAMES, iou.tolist()) if not math.isnan(v))
        print(f"held-out mIoU on {args.eval_clips} SynthCity frames (seeds ≥ {HELDOUT_SEED_START}): {miou:.4f}")
        print(f"per class: {per_class}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
