"""How well SynthCity's ground-truth flow explains its own frames (warp consistency), over many clips.

For every clip and t = 1..T:
  backward: warp(I_0, w^b_t) vs I_t on pixels with occ_bwd = 1   (mean absolute error, 0–1 scale)
  forward:  warp(I_t, w^f_t) vs I_0 on pixels with occ_fwd = 1
  labels:   nearest-warped labels agree with the target labels on visible pixels (%)
Prints one table row per direction. Usage: python benchmarks/synthcity_consistency.py [--clips 20] [--size 128x256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from seg2vid.data.synthcity import render_clip  # noqa: E402
from seg2vid.warp import warp  # noqa: E402


def clip_consistency(clip) -> dict[str, tuple[float, float, int]]:
    """Per direction: (sum of abs errors, label agreements, number of visible pixels) over a clip."""
    frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).double() / 255.0  # (T+1, 3, H, W)
    labels = torch.from_numpy(clip.labels).double().unsqueeze(1)  # (T+1, 1, H, W)
    out = {}
    for name, flow, occ in (("backward", clip.flow_bwd, clip.occ_bwd), ("forward", clip.flow_fwd, clip.occ_fwd)):
        fl = torch.from_numpy(flow).permute(0, 3, 1, 2).double()  # (T, 2, H, W)
        vis = torch.from_numpy(occ).bool()  # (T, H, W)
        if name == "backward":  # sample frame 0 at x + w^b_t(x) → frame t
            src_img, src_lab = frames[:1].expand(len(fl), -1, -1, -1), labels[:1].expand(len(fl), -1, -1, -1)
            tgt_img, tgt_lab = frames[1:], labels[1:]
        else:  # sample frame t at x + w^f_t(x) → frame 0
            src_img, src_lab = frames[1:], labels[1:]
            tgt_img, tgt_lab = frames[:1].expand(len(fl), -1, -1, -1), labels[:1].expand(len(fl), -1, -1, -1)
        err = (warp(src_img, fl) - tgt_img).abs().mean(1)  # (T, H, W)
        agree = warp(src_lab, fl, mode="nearest")[:, 0] == tgt_lab[:, 0]
        out[name] = (float(err[vis].sum()), float(agree[vis].sum()), int(vis.sum()))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--size", default="128x256")
    args = ap.parse_args(argv)
    try:
        h, w = (int(s) for s in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size must look like 128x256; got {args.size!r}")
    totals = {"backward": np.zeros(3), "forward": np.zeros(3)}
    per_clip = {"backward": [], "forward": []}
    for seed in range(args.first_seed, args.first_seed + args.clips):
        res = clip_consistency(render_clip(seed, size=(h, w)))
        for k, v in res.items():
            totals[k] += v
            per_clip[k].append(v[0] / max(v[2], 1))
    print(f"SynthCity warp consistency, {args.clips} clips at {h}x{w} (seeds {args.first_seed}…)")
    print(f"| direction | MAE visible (0–1) | worst clip MAE | label agreement | visible share |")
    print(f"|-----------|-------------------|----------------|-----------------|---------------|")
    n_px = args.clips * 8 * h * w
    for k, (err, agree, n) in totals.items():
        print(f"| {k:9s} | {err / n:17.4f} | {max(per_clip[k]):14.4f} | {100 * agree / n:14.2f}% | "
              f"{100 * n / n_px:12.1f}% |")


if __name__ == "__main__":
    main()
