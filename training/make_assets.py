"""Write the example label maps and the palette legend under ``assets/`` (deterministic).

    python training/make_assets.py [--out assets]

* ``assets/examples/<name>_128x256.png`` and ``<name>_256x512.png``: Cityscapes-colour label maps. Most are
  frame 0 of held-out SynthCity clips; four are composed with SynthCity's scene builder from hand-set
  parameters (an empty road, a busy crossing, a parking lot, a tree-lined avenue). Each scene is rendered at
  both sizes (not resized), so the two files show the same street.
* ``assets/palette_legend.png``: the 19 classes, their colours, trainIds and names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from seg2vid.data.synthcity import HELDOUT_SEED_START, SceneParams, render_clip  # noqa: E402
from seg2vid.labels import CLASSES, FG_IDS, colorize  # noqa: E402

SIZES = ((128, 256), (256, 512))
NO_MOVERS = dict(num_cars_ahead=0, num_cars_oncoming=0, num_parked_cars=0, num_people=0, num_cyclists=0)

# name → (seed, scene parameters). Seeds are held out from training.
EXAMPLES: dict[str, tuple[int, SceneParams | None]] = {
    "street_01": (HELDOUT_SEED_START + 1, None),
    "street_02": (HELDOUT_SEED_START + 2, None),
    "street_03": (HELDOUT_SEED_START + 5, None),
    "street_04": (HELDOUT_SEED_START + 8, None),
    "street_05": (HELDOUT_SEED_START + 13, None),
    "empty_road": (HELDOUT_SEED_START + 101, SceneParams(camera_yaw_deg=0.0, parking_lanes=False, crossing_at=np.nan,
                                                          tree_spacing=np.inf, **NO_MOVERS)),
    "busy_crossing": (HELDOUT_SEED_START + 102, SceneParams(
        camera_yaw_deg=0.0, crossing_at=20.0, lanes_per_direction=2, parking_lanes=True, num_parked_cars=6,
        num_cars_ahead=3, num_cars_oncoming=5, num_people=16, people_walk=True, num_cyclists=1,
        heavy_vehicle_prob=0.3)),
    "parking_lot": (HELDOUT_SEED_START + 103, SceneParams(
        camera_yaw_deg=8.0, parking_lot=True, parking_lanes=False, lanes_per_direction=1, crossing_at=np.nan,
        num_cars_ahead=0, num_cars_oncoming=1, num_people=4, tree_spacing=np.inf)),
    "tree_lined_avenue": (HELDOUT_SEED_START + 104, SceneParams(
        camera_yaw_deg=0.0, lanes_per_direction=2, grass_strip=True, tree_spacing=8.0, crossing_at=np.nan,
        num_cars_ahead=2, num_cars_oncoming=3, num_people=4, max_building_height=16.0)),
}


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def palette_legend() -> Image.Image:
    """Two columns of colour swatches with trainId and class name."""
    rows, swatch, pad, col_w = 10, 26, 6, 250
    img = Image.new("RGB", (2 * col_w + pad, rows * (swatch + pad) + pad + 24), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((pad, pad), "Cityscapes classes (trainId, name); * = foreground", fill=(0, 0, 0), font=_font(15))
    for i, c in enumerate(CLASSES):
        x = pad + (i // rows) * col_w
        y = 24 + pad + (i % rows) * (swatch + pad)
        draw.rectangle([x, y, x + 2 * swatch, y + swatch], fill=c.color, outline=(0, 0, 0))
        star = " *" if c.train_id in FG_IDS else ""
        draw.text((x + 2 * swatch + 8, y + 4), f"{c.train_id:2d}  {c.name}{star}", fill=(0, 0, 0), font=_font(16))
    return img


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write assets/examples/*.png and assets/palette_legend.png.")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    for name, (seed, params) in EXAMPLES.items():
        for h, w in SIZES:
            labels = render_clip(seed, size=(h, w), num_frames=2, params=params).labels[0]
            path = out / "examples" / f"{name}_{h}x{w}.png"
            Image.fromarray(colorize(labels)).save(path, optimize=True)
        print(f"wrote {name} ({', '.join(f'{h}x{w}' for h, w in SIZES)})")
    palette_legend().save(out / "palette_legend.png", optimize=True)
    print(f"wrote {out / 'palette_legend.png'}")


if __name__ == "__main__":
    main()
