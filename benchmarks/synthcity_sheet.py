"""Contact sheet of SynthCity clips: frames, coloured labels, backward flow and occlusion.

One block per clip; inside it, columns are frames 0, 2, 4, 6, 8 (or whatever ``--frames`` says) and rows are
the RGB frame, its label map (Cityscapes colours), the backward flow ``w^b_t`` (``torchvision.utils.flow_to_image``,
frame 0 shows the speed / seed caption) and the backward occlusion map (white = has a correspondence).

    python benchmarks/synthcity_sheet.py --out benchmarks/out/synthcity_sheet.png --seeds 0:6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from seg2vid.data.synthcity import render_clip  # noqa: E402
from seg2vid.labels import colorize  # noqa: E402
from torchvision.utils import flow_to_image  # noqa: E402


def parse_seeds(text: str) -> list[int]:
    """'0:6' → [0 … 5]; '1,5,9' → [1, 5, 9]."""
    if ":" in text:
        a, b = text.split(":")
        return list(range(int(a), int(b)))
    return [int(s) for s in text.split(",") if s.strip()]


def clip_block(clip, frames: list[int], flow_max: float | None = None) -> np.ndarray:
    """(4 H + gaps, n W + gaps, 3) uint8 block for one clip."""
    h, w = clip.frames.shape[1:3]
    rows = []
    flows = torch.from_numpy(clip.flow_bwd).permute(0, 3, 1, 2)  # (T, 2, H, W)
    scale = flow_max or max(float(flows.norm(dim=1).max()), 1.0)
    # Normalise all flows of a clip by one common maximum so colours compare across t.
    flow_img = flow_to_image(torch.cat([flows / scale, torch.tensor([[[[1.0]], [[0.0]]]]).expand(1, 2, h, w)]))
    flow_img = flow_img[:-1].permute(0, 2, 3, 1).numpy()
    for kind in ("rgb", "label", "flow", "occ"):
        tiles = []
        for t in frames:
            if kind == "rgb":
                tile = clip.frames[t]
            elif kind == "label":
                tile = colorize(clip.labels[t])
            elif t == 0:  # no flow into frame 0 itself: a blank tile (the caption goes here)
                tile = np.full((h, w, 3), 255, np.uint8)
            elif kind == "flow":
                tile = flow_img[t - 1]
            else:
                tile = np.repeat(clip.occ_bwd[t - 1][..., None] * 255, 3, -1).astype(np.uint8)
            tiles.append(tile)
            tiles.append(np.full((h, 2, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles[:-1], 1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    block = np.concatenate(rows[:-1], 0)
    img = Image.fromarray(block)
    ImageDraw.Draw(img).text((3, 2 * (h + 2) + 3),
                             f"seed {clip.seed}\n{clip.camera_speed:.1f} m/s\nmax |w| {scale:.0f}px", fill=(0, 0, 0))
    return np.asarray(img)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write a contact sheet of SynthCity clips.")
    ap.add_argument("--out", default="benchmarks/out/synthcity_sheet.png")
    ap.add_argument("--seeds", default="0:4", help="'a:b' or a comma list")
    ap.add_argument("--size", default="128x256")
    ap.add_argument("--frames", default="0,2,4,6,8")
    args = ap.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        h, w = (int(s) for s in args.size.lower().split("x"))
        frames = [int(f) for f in args.frames.split(",")]
    except ValueError:
        ap.error("--seeds must be 'a:b' or 'a,b,c', --size like 128x256, --frames like 0,2,4")
    if not seeds:
        ap.error("--seeds selects no clip")
    n_frames = max(frames) + 1
    if min(frames) < 0 or n_frames < 2:
        ap.error("--frames must be non-negative and reach at least frame 1")
    blocks = []
    for seed in seeds:
        blocks.append(clip_block(render_clip(seed, size=(h, w), num_frames=n_frames), frames))
        blocks.append(np.full((8, blocks[-1].shape[1], 3), 255, np.uint8))
    sheet = np.concatenate(blocks[:-1], 0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out, optimize=True)
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}, {len(seeds)} clips)")


if __name__ == "__main__":
    main()
