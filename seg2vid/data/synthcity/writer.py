"""Write SynthCity clips to disk (layout in the package docstring) and read them back.

    python -m seg2vid.data.synthcity --out DIR --seeds 0:1000 --size 128x256 [--frames 9] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .clip import MAX_SIDE, SynthClip, render_clip

__all__ = ["write_clip", "read_clip", "write_dataset", "clip_dir", "is_complete", "FORMAT", "main"]

FORMAT = "synthcity-v1"
_DONE = "clip.json"  # written last: its presence marks a complete clip


def clip_dir(root: str | os.PathLike, seed: int) -> Path:
    return Path(root) / f"{seed:07d}"


def is_complete(root: str | os.PathLike, seed: int) -> bool:
    return (clip_dir(root, seed) / _DONE).is_file()


def write_clip(root: str | os.PathLike, clip: SynthClip) -> Path:
    """Write one clip atomically: into a temporary folder, then renamed into place."""
    final = clip_dir(root, clip.seed)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for t in range(clip.num_frames):
        Image.fromarray(clip.frames[t]).save(tmp / f"frame_{t:02d}.png")
        Image.fromarray(clip.labels[t], mode="L").save(tmp / f"label_{t:02d}.png")
    np.savez_compressed(
        tmp / "motion.npz",
        flow_fwd=clip.flow_fwd.astype(np.float16),
        flow_bwd=clip.flow_bwd.astype(np.float16),
        occ_fwd=clip.occ_fwd.astype(np.uint8),
        occ_bwd=clip.occ_bwd.astype(np.uint8),
    )
    meta = {
        "seed": clip.seed,
        "num_frames": clip.num_frames,
        "size": list(clip.frames.shape[1:3]),
        "camera_speed": clip.camera_speed,
        "frame_interval": clip.frame_interval,
        "vanishing_point": list(clip.vanishing_point),
        "focus_of_expansion": list(clip.focus_of_expansion),
        "num_movers": clip.num_movers,
    }
    (tmp / _DONE).write_text(json.dumps(meta, indent=1))
    if final.exists():  # an incomplete leftover of an interrupted run
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


@dataclass(frozen=True)
class StoredClip:
    """A clip read from disk (flows are float32 again, from the stored float16)."""

    seed: int
    frames: np.ndarray  # (T+1, H, W, 3) uint8
    labels: np.ndarray  # (T+1, H, W) uint8
    flow_fwd: np.ndarray  # (T, H, W, 2) float32
    flow_bwd: np.ndarray
    occ_fwd: np.ndarray  # (T, H, W) uint8
    occ_bwd: np.ndarray
    meta: dict


def read_clip(root: str | os.PathLike, seed: int) -> StoredClip:
    folder = clip_dir(root, seed)
    if not (folder / _DONE).is_file():
        raise ValueError(f"No complete SynthCity clip for seed {seed} under {root!s} (expected {folder}/{_DONE}).")
    meta = json.loads((folder / _DONE).read_text())
    n = int(meta["num_frames"])
    frames = np.stack([np.asarray(Image.open(folder / f"frame_{t:02d}.png").convert("RGB")) for t in range(n)])
    labels = np.stack([np.asarray(Image.open(folder / f"label_{t:02d}.png")) for t in range(n)])
    with np.load(folder / "motion.npz") as m:
        motion = {k: m[k] for k in ("flow_fwd", "flow_bwd", "occ_fwd", "occ_bwd")}
    return StoredClip(seed=seed, frames=frames, labels=labels, flow_fwd=motion["flow_fwd"].astype(np.float32),
                      flow_bwd=motion["flow_bwd"].astype(np.float32), occ_fwd=motion["occ_fwd"],
                      occ_bwd=motion["occ_bwd"], meta=meta)


def _render_and_write(job):
    root, seed, size, num_frames = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    write_clip(root, render_clip(seed, size=size, num_frames=num_frames))
    return seed


def write_dataset(root, seeds, size=(128, 256), num_frames=9, workers=1, progress=True) -> int:
    """Render and write every seed that is not yet complete; returns how many clips were written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta_path = root / "meta.json"
    meta = {"format": FORMAT, "size": list(size), "num_frames": num_frames}
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} != meta:
            raise ValueError(f"{root} already holds a SynthCity dataset with {old}; asked for {meta}. "
                             f"Use another --out folder.")
    else:
        meta_path.write_text(json.dumps(meta, indent=1))
    todo = [s for s in seeds if not is_complete(root, s)]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), unit="clip", disable=not progress,
               desc=f"SynthCity → {root}")
    jobs = [(str(root), s, tuple(size), num_frames) for s in todo]
    if workers <= 1:
        for job in jobs:
            _render_and_write(job)
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_render_and_write, jobs, chunksize=4):
                bar.update()
    bar.close()
    return len(todo)


def _parse_seeds(text: str) -> range:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must look like START:STOP (e.g. 0:1000); got {text!r}") from None
    if a < 0 or b <= a:
        raise argparse.ArgumentTypeError(f"--seeds needs 0 <= START < STOP; got {text!r}")
    return range(a, b)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like HxW (e.g. 128x256); got {text!r}") from None
    if not (8 <= h <= MAX_SIDE and 8 <= w <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"--size sides must lie in 8–{MAX_SIDE}; got {text!r}")
    return h, w


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seg2vid.data.synthcity",
                                 description="Render SynthCity clips to DIR (resumable; see the package docstring).")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seeds", type=_parse_seeds, default=range(0, 1000), help="START:STOP (default 0:1000)")
    ap.add_argument("--size", type=_parse_size, default=(128, 256), help="HxW (default 128x256)")
    ap.add_argument("--frames", type=int, default=9, help="frames per clip, first one included (default 9)")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    args = ap.parse_args(argv)
    if not 2 <= args.frames <= 64:
        ap.error(f"--frames must lie in 2–64; got {args.frames}")
    if args.workers < 1:
        ap.error(f"--workers must be at least 1; got {args.workers}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        ap.error(f"--out {args.out!r} exists and is not a folder")
    try:
        n = write_dataset(args.out, args.seeds, args.size, args.frames, args.workers)
    except ValueError as e:
        ap.error(str(e))
    print(f"wrote {n} clips to {args.out} ({len(args.seeds) - n} were already there)")
    return 0
