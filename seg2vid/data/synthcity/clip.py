"""``render_clip``: one SynthCity clip — frames, labels, bidirectional flow and occlusion (paper Eq. 2–5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Camera, camera_pose, cast_frame
from .motion import flow_and_visibility
from .scene import FRAME_INTERVAL_S, Scene, SceneParams, build_scene
from .shading import shade_frame

__all__ = ["SynthClip", "render_clip", "MAX_SIDE"]

MAX_SIDE = 2048  # larger renders are refused (they would take minutes)


@dataclass(frozen=True)
class SynthClip:
    """A rendered clip of ``T + 1`` frames. Flow ``t - 1`` relates frame ``t`` and frame 0 (DESIGN.md).

    ``flow_bwd[t-1]`` lives on frame t's pixels: ``frames[t](x) ≈ frames[0](x + flow_bwd[t-1](x))``;
    ``flow_fwd[t-1]`` lives on frame 0's pixels: ``frames[0](x) ≈ frames[t](x + flow_fwd[t-1](x))``.
    ``occ_*`` is 1 where that correspondence exists (visible in both frames), 0 where it does not.
    """

    seed: int
    frames: np.ndarray  # (T+1, H, W, 3) uint8
    labels: np.ndarray  # (T+1, H, W) uint8 trainIds
    flow_fwd: np.ndarray  # (T, H, W, 2) float32 pixels (dx, dy)
    flow_bwd: np.ndarray  # (T, H, W, 2) float32 pixels (dx, dy)
    occ_fwd: np.ndarray  # (T, H, W) uint8 {0, 1}
    occ_bwd: np.ndarray  # (T, H, W) uint8 {0, 1}
    depth: np.ndarray  # (T+1, H, W) float32 camera depth in metres (inf for sky)
    camera_speed: float  # m/s
    frame_interval: float  # seconds between frames
    vanishing_point: tuple[float, float]  # (x, y) pixel where the street's direction (+Z) projects in frame 0
    focus_of_expansion: tuple[float, float]  # (x, y) pixel where the camera's direction of travel projects
    num_movers: int  # moving objects (cars, people, cyclists) in the scene

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]


def _check_args(seed, size, num_frames):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)):
        raise ValueError(f"size must be a pair of integers (height, width); got {size!r}.")
    h, w = size
    if not (8 <= h <= MAX_SIDE and 8 <= w <= MAX_SIDE):
        raise ValueError(f"size must lie between 8 and {MAX_SIDE} pixels per side; got {tuple(size)}.")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or not 2 <= num_frames <= 64:
        raise ValueError(f"num_frames must be an integer in 2–64; got {num_frames!r}.")


def render_clip(
    seed: int,
    size: tuple[int, int] = (128, 256),
    num_frames: int = 9,
    params: SceneParams | None = None,
) -> SynthClip:
    """Render clip ``seed`` at ``size`` = (H, W) with ``num_frames`` frames (the first one plus T = num_frames - 1).

    The same seed (and params) gives bit-identical arrays; ``params`` fixes parts of the scene (see
    ``SceneParams``). The scene does not depend on ``size``: a larger size renders the same street sharper.
    """
    _check_args(seed, size, num_frames)
    scene: Scene = build_scene(int(seed), params)
    camera = Camera(int(size[0]), int(size[1]))
    dirs_cam = camera.ray_directions_cam()
    taus = [t * FRAME_INTERVAL_S for t in range(num_frames)]
    poses = [camera_pose(scene, tau) for tau in taus]
    geoms = [cast_frame(scene, camera, pose, tau, dirs_cam) for pose, tau in zip(poses, taus)]
    shaded = [shade_frame(scene, camera, g) for g in geoms]

    flow_fwd, flow_bwd, occ_fwd, occ_bwd = [], [], [], []
    for t in range(1, num_frames):
        fb, ob = flow_and_visibility(scene, camera, geoms[t], geoms[0], poses[0], taus[0])  # w^b_t, o^b_t
        ff, of = flow_and_visibility(scene, camera, geoms[0], geoms[t], poses[t], taus[t])  # w^f_t, o^f_t
        flow_bwd.append(fb), occ_bwd.append(ob), flow_fwd.append(ff), occ_fwd.append(of)

    street, _ = poses[0].project_directions(camera, np.array([0.0, 0.0, 1.0]))
    travel = np.array([np.sin(scene.camera_heading), 0.0, np.cos(scene.camera_heading)])
    foe, _ = poses[0].project_directions(camera, travel)
    moving = np.linalg.norm(scene.velocity, axis=-1) > 0 if len(scene.velocity) else np.zeros(0, bool)
    return SynthClip(
        seed=int(seed),
        frames=np.stack([s[0] for s in shaded]),
        labels=np.stack([s[1] for s in shaded]),
        flow_fwd=np.stack(flow_fwd),
        flow_bwd=np.stack(flow_bwd),
        occ_fwd=np.stack(occ_fwd),
        occ_bwd=np.stack(occ_bwd),
        depth=np.stack([g.depth for g in geoms]).astype(np.float32),
        camera_speed=float(scene.camera_speed),
        frame_interval=FRAME_INTERVAL_S,
        vanishing_point=(float(street[0]), float(street[1])),
        focus_of_expansion=(float(foe[0]), float(foe[1])),
        num_movers=int(moving.sum()),
    )
