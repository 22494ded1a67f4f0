"""Contact sheet of the full pipeline (label map → first frame → video) on the example label maps in ``assets/``.

One row per example map; the columns are the coloured label map, the generated first frame (stage 1), frames
2, 4, 6, 8 of the video for z from seed 0, the backward flow w^b_8 of that video
(``torchvision.utils.flow_to_image``), then frame 8 and w^b_8 for z from seed 1 (how much two z draws differ).
An animated GIF beside it plays every row's two videos (seed 0 | seed 1) side by side.

    python benchmarks/examples_sheet.py                          # bundled model → benchmarks/results/examples_sheet.*
    python benchmarks/examples_sheet.py --checkpoint runs/x/export --out benchmarks/out/examples_sheet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from torchvision.utils import flow_to_image, make_grid  # noqa: E402

from seg2vid.labels import colorize  # noqa: E402

FRAMES = (2, 4, 6, 8)
COLUMNS = ["label map", "first frame", *(f"t={t}, z seed 0" for t in FRAMES), "w^b_8, seed 0", "t=8, seed 1",
           "w^b_8, seed 1"]


def as_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) uint8."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def flow_tile(flow: np.ndarray, scale: float) -> torch.Tensor:
    """(H, W, 2) px → (3, H, W) uint8 colour, normalised by ``scale`` px so tiles of one row compare."""
    f = torch.from_numpy(flow).permute(2, 0, 1) / max(scale, 1.0)
    white = torch.tensor([[[1.0]], [[0.0]]]).expand(1, 2, *f.shape[-2:])  # pins the colour wheel's radius to 1
    return flow_to_image(torch.cat([f[None], white]))[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints"))
    ap.add_argument("--examples", default=str(REPO / "assets" / "examples"))
    ap.add_argument("--size", default="128x256", help="which example maps (file suffix) and model resolution")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "examples_sheet"),
                    help="output stem: writes STEM.png and STEM.gif")
    args = ap.parse_args(argv)
    try:
        h, w = (int(s) for s in args.size.lower().split("x"))
    except ValueError:
        ap.error("--size must look like 128x256")
    maps = sorted(Path(args.examples).glob(f"*_{args.size}.png"))
    if not maps:
        ap.error(f"no example maps *_{args.size}.png in {args.examples}")

    from seg2vid.pipeline import Seg2VidPipeline
    from seg2vid.video import write_gif

    pipe = Seg2VidPipeline.from_pretrained(args.checkpoint)
    pipe.resolution = (h, w)
    tiles, gif_rows = [], []
    for path in maps:
        ids = pipe.load_label_map(path)
        a, b = pipe(ids, seed=0), pipe(ids, seed=1)
        scale = float(max(np.linalg.norm(a.flow_bwd[-1], axis=-1).max(), np.linalg.norm(b.flow_bwd[-1], axis=-1).max()))
        tiles += [as_tensor(colorize(ids)), as_tensor(a.frames[0]), *(as_tensor(a.frames[t]) for t in FRAMES),
                  flow_tile(a.flow_bwd[-1], scale), as_tensor(b.frames[-1]), flow_tile(b.flow_bwd[-1], scale)]
        gif_rows.append(np.concatenate([a.frames, np.full((a.frames.shape[0], h, 4, 3), 255, np.uint8), b.frames], 2))
        print(f"{path.name}: max |w^b_8| {scale:.1f} px; mean |frame 8 (seed 0) − frame 8 (seed 1)| "
              f"{np.abs(a.frames[-1].astype(np.float32) - b.frames[-1]).mean() / 255:.4f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet = make_grid(torch.stack(tiles), nrow=len(COLUMNS), padding=2, pad_value=255)  # (3, H', W') uint8
    from PIL import Image

    Image.fromarray(sheet.permute(1, 2, 0).numpy()).save(out.with_suffix(".png"), optimize=True)
    gap = np.full((gif_rows[0].shape[0], 4, gif_rows[0].shape[2], 3), 255, np.uint8)
    video = np.concatenate([x for row in gif_rows for x in (row, gap)][:-1], 1)  # (T+1, rows·H, 2W, 3)
    write_gif(list(video), out.with_suffix(".gif"), fps=4)
    print(f"wrote {out.with_suffix('.png')} (columns: {' | '.join(COLUMNS)}) and {out.with_suffix('.gif')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
