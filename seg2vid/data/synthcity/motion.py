"""Ground-truth optical flow and occlusion between two rendered frames.

For every pixel ``x`` of a *source* frame we know the surface point it sees in object coordinates. Moving that
point to the *target* time (object pose at that time) and projecting it with the target camera gives ``x'``;
the flow is ``x' - x`` in pixels, (dx, dy). With source = frame t and target = frame 0 this is the backward flow
``w^b_t`` (``I_t(x) ≈ I_0(x + w^b_t(x))``); with source = frame 0 and target = frame t the forward flow ``w^f_t``
(``I_0(x) ≈ I_t(x + w^f_t(x))``) — exactly the convention of ``seg2vid.warp.warp``.

``x`` itself is obtained by projecting the same point with the source camera, so when nothing moves both
projections are bit-identical and the flow is exactly zero.

The occlusion map is 1 where the point has a correspondence: ``x'`` lies inside the target frame (pixel centres
0 … W-1, 0 … H-1), the target pixel nearest to ``x'`` sees the same rigid body, and the target's inverse depth,
bilinearly interpolated at ``x'`` (exact on planes, where 1/z is affine in the image), is not larger than the
point's own inverse depth by more than a relative tolerance (nothing in front of it) — or, at creases where the
interpolation mixes two surfaces, the nearest pixel's own inverse depth passes that test.
"""

from __future__ import annotations

import numpy as np

from .geometry import NEAR, Camera, FrameGeometry, Pose
from .scene import Scene

__all__ = ["flow_and_visibility", "DEPTH_TOLERANCE"]

DEPTH_TOLERANCE = 0.015  # relative inverse-depth tolerance of the visibility test


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample (H, W) ``img`` at real positions (clamped to the frame), align_corners convention."""
    h, w = img.shape
    u = np.clip(u, 0, w - 1)
    v = np.clip(v, 0, h - 1)
    u0 = np.minimum(np.floor(u).astype(np.int64), w - 2) if w > 1 else np.zeros(u.shape, np.int64)
    v0 = np.minimum(np.floor(v).astype(np.int64), h - 2) if h > 1 else np.zeros(v.shape, np.int64)
    fu, fv = u - u0, v - v0
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    top = img[v0, u0] * (1 - fu) + img[v0, u1] * fu
    bottom = img[v1, u0] * (1 - fu) + img[v1, u1] * fu
    return top * (1 - fv) + bottom * fv


def flow_and_visibility(
    scene: Scene,
    camera: Camera,
    src: FrameGeometry,
    dst: FrameGeometry,
    dst_pose: Pose,
    dst_tau: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Flow (H, W, 2) float32 from ``src`` pixels to ``dst`` and the visibility mask (H, W) uint8 (1 = visible)."""
    h, w = camera.height, camera.width
    finite = np.isfinite(src.depth)
    # Surface points at the target time: static ones stay put, movers are moved by their offset.
    points = src.world.copy()
    if src.moving.any():
        points[src.moving] = src.local[src.moving] + scene.offsets(dst_tau)[src.prim[src.moving]]
    x_dst, z_dst = dst_pose.project(camera, points)
    sky = ~finite
    if sky.any():  # points at infinity: only the camera rotation matters
        xd, zd = dst_pose.project_directions(camera, src.dirs[sky])
        x_dst[sky] = xd
        z_dst[sky] = np.where(zd > 0, np.inf, -np.inf)
    flow = x_dst - src.xy  # (H, W, 2); src.xy is the same projection made with the source camera

    # Test the position a user of the flow will sample: pixel centre + flow.
    u = np.arange(w, dtype=np.float64)[None, :] + flow[..., 0]
    v = np.arange(h, dtype=np.float64)[:, None] + flow[..., 1]
    inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1) & (z_dst > NEAR)
    iu = np.clip(np.rint(u), 0, w - 1).astype(np.int64)
    iv = np.clip(np.rint(v), 0, h - 1).astype(np.int64)
    same_body = scene.group[dst.prim[iv, iu]] == scene.group[src.prim]
    with np.errstate(divide="ignore"):
        inv_dst = np.where(np.isfinite(dst.depth), 1.0 / dst.depth, 0.0)
        inv_pt = np.where(np.isfinite(z_dst) & (z_dst > 0), 1.0 / np.maximum(z_dst, NEAR), 0.0)
    limit = inv_pt * (1 + DEPTH_TOLERANCE) + 1e-6
    # Bilinear inverse depth is exact inside a plane; at a crease (the foot of a kerb or a wall) it mixes in
    # the other surface, so the nearest pixel's own depth may vouch for the point instead.
    unoccluded = (_bilinear(inv_dst, u, v) <= limit) | (inv_dst[iv, iu] <= limit)
    visible = inside & same_body & unoccluded
    flow = flow.astype(np.float32)
    # The float32 rounding must not carry a visible sample outside the frame.
    visible &= (np.arange(w)[None, :] + flow[..., 0] >= 0) & (np.arange(w)[None, :] + flow[..., 0] <= w - 1)
    visible &= (np.arange(h)[:, None] + flow[..., 1] >= 0) & (np.arange(h)[:, None] + flow[..., 1] <= h - 1)
    return flow, visible.astype(np.uint8)
