"""SynthCity rendering speed on one CPU thread: clips per second for 9-frame clips.

    OMP_NUM_THREADS=1 python benchmarks/synthcity_speed.py [--clips 20]

Reports wall-clock and process CPU time (the CPU column is the fairer one on a busy machine), and how the time
of one clip splits into ray casting, shading and flow/occlusion.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

from seg2vid.data.synthcity import FRAME_INTERVAL_S, build_scene, render_clip  # noqa: E402
from seg2vid.data.synthcity.geometry import Camera, camera_pose, cast_frame  # noqa: E402
from seg2vid.data.synthcity.motion import flow_and_visibility  # noqa: E402
from seg2vid.data.synthcity.shading import shade_frame  # noqa: E402


def stage_times(seed: int, size: tuple[int, int], num_frames: int = 9) -> dict[str, float]:
    """CPU seconds of each stage for one clip (the same steps as ``render_clip``)."""
    t = {}
    c0 = time.process_time()
    scene = build_scene(seed)
    camera = Camera(*size)
    dirs = camera.ray_directions_cam()
    taus = [i * FRAME_INTERVAL_S for i in range(num_frames)]
    poses = [camera_pose(scene, tau) for tau in taus]
    c1 = time.process_time()
    geoms = [cast_frame(scene, camera, p, tau, dirs) for p, tau in zip(poses, taus)]
    c2 = time.process_time()
    for g in geoms:
        shade_frame(scene, camera, g)
    c3 = time.process_time()
    for i in range(1, num_frames):
        flow_and_visibility(scene, camera, geoms[i], geoms[0], poses[0], taus[0])
        flow_and_visibility(scene, camera, geoms[0], geoms[i], poses[i], taus[i])
    c4 = time.process_time()
    t["scene"], t["cast"], t["shade"], t["motion"] = c1 - c0, c2 - c1, c3 - c2, c4 - c3
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=20)
    args = ap.parse_args(argv)
    if args.clips < 1:
        ap.error("--clips must be at least 1")
    render_clip(0, size=(32, 64))  # warm-up (imports, tables)
    print(f"SynthCity speed, 9-frame clips, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"{args.clips} clips per size")
    print("| size    | clips/s (wall) | clips/s (CPU) | ms/clip CPU: scene | cast | shade | flow+occ |")
    print("|---------|----------------|---------------|--------------------|------|-------|----------|")
    for size in ((128, 256), (256, 512)):
        w0, c0 = time.perf_counter(), time.process_time()
        for seed in range(args.clips):
            render_clip(seed, size=size)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        stages = [stage_times(seed, size) for seed in range(min(args.clips, 5))]
        mean = {k: 1000 * float(np.mean([s[k] for s in stages])) for k in stages[0]}
        print(f"| {size[0]}x{size[1]} | {args.clips / wall:14.2f} | {args.clips / cpu:13.2f} | "
              f"{mean['scene']:18.1f} | {mean['cast']:4.0f} | {mean['shade']:5.0f} | {mean['motion']:8.0f} |")


if __name__ == "__main__":
    main()
