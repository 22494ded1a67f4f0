"""Pinhole camera and per-pixel ray casting against SynthCity's analytic primitives.

Camera frame (OpenCV): ``x`` right, ``y`` down, ``z`` forward. A pose holds the camera centre ``c`` (world) and
``R`` (world-from-camera), so a world point ``X`` has camera coordinates ``R^T (X - c)`` and projects to

    u = f x / z + cx,    v = f y / z + cy          (pixel centres at integer coordinates, as in ``warp``).

The ray of pixel (u, v) is ``c + t d`` with ``d = R ((u - cx) / f, (v - cy) / f, 1)``, so the ray parameter ``t``
*is* the depth ``z`` in the camera. One sample per pixel, no anti-aliasing: labels stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import Scene, Shape

__all__ = ["Camera", "Pose", "FrameGeometry", "camera_pose", "cast_frame", "NEAR"]

NEAR = 0.05  # metres: nothing closer than this to the camera is drawn
FOCAL_PER_WIDTH = 1.0  # focal length in units of the image width (≈ 53° horizontal field of view)
PRINCIPAL_Y = 0.5  # principal point, fraction of the height (the pitch puts the horizon higher)

# The 12 edges of a box whose 8 corners are indexed by bits (x, y, z).
_CORNER_BITS = np.array([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=bool)  # (8, 3)
_EDGES = np.array([(i, i | (1 << a)) for i in range(8) for a in range(3) if not (i >> a) & 1])  # (12, 2)


@dataclass(frozen=True)
class Camera:
    """Intrinsics for an image of ``height`` × ``width`` pixels."""

    height: int
    width: int

    @property
    def focal(self) -> float:
        return FOCAL_PER_WIDTH * self.width

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0

    @property
    def cy(self) -> float:
        return PRINCIPAL_Y * (self.height - 1)

    def ray_directions_cam(self) -> np.ndarray:
        """(H, W, 3) camera-frame ray directions with z = 1."""
        u = (np.arange(self.width) - self.cx) / self.focal
        v = (np.arange(self.height) - self.cy) / self.focal
        d = np.empty((self.height, self.width, 3))
        d[..., 0] = u[None, :]
        d[..., 1] = v[:, None]
        d[..., 2] = 1.0
        return d


@dataclass(frozen=True)
class Pose:
    position: np.ndarray  # (3,) camera centre, world
    rotation: np.ndarray  # (3, 3) world-from-camera

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) → camera coordinates (..., 3)."""
        return (points - self.position) @ self.rotation

    def project(self, camera: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) → pixel positions (..., 2) and depths (...,). Depth is clamped to ``NEAR``."""
        pc = self.to_camera(points)
        z = pc[..., 2]
        zc = np.maximum(z, NEAR)
        uv = np.stack([camera.focal * pc[..., 0] / zc + camera.cx, camera.focal * pc[..., 1] / zc + camera.cy], -1)
        return uv, z

    def project_directions(self, camera: Camera, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points at infinity (directions (..., 3)) → pixel positions (..., 2) and their camera z (sign)."""
        dc = dirs @ self.rotation
        z = dc[..., 2]
        zc = np.maximum(z, 1e-6)
        uv = np.stack([camera.focal * dc[..., 0] / zc + camera.cx, camera.focal * dc[..., 1] / zc + camera.cy], -1)
        return uv, z


def camera_pose(scene: Scene, tau: float) -> Pose:
    """The ego camera at time ``tau``: yaw about world Y, pitch about the camera x axis, Y-up → y-down."""
    yaw, pitch = scene.camera_yaw_at(tau), scene.camera_pitch
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])  # + yaw turns +Z towards +X (right)
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # + pitch tilts +Z towards -Y (down)
    flip = np.diag([1.0, -1.0, 1.0])  # camera y points down
    return Pose(scene.camera_position(tau), r_yaw @ r_pitch @ flip)


@dataclass(frozen=True)
class FrameGeometry:
    """What each pixel of one frame sees."""

    depth: np.ndarray  # (H, W) camera z of the hit, inf for sky
    prim: np.ndarray  # (H, W) primitive row (N = ground, N+1 = sky)
    dirs: np.ndarray  # (H, W, 3) world ray directions (camera z = 1)
    local: np.ndarray  # (H, W, 3) hit point in object coordinates (= world position at time 0)
    normal: np.ndarray  # (H, W, 3) world unit normal (sky: -ray direction)
    footprint: np.ndarray  # (H, W, 3) extent of the pixel on the surface along each world axis (metres)


def _screen_boxes(camera: Camera, pose: Pose, lo: np.ndarray, hi: np.ndarray):
    """Conservative pixel rectangles (rows r0:r1, cols c0:c1) and nearest depth of boxes (N, 3), near-clipped."""
    corners = np.where(_CORNER_BITS[None], hi[:, None, :], lo[:, None, :])  # (N, 8, 3)
    pc = pose.to_camera(corners)  # (N, 8, 3)
    a, b = pc[:, _EDGES[:, 0]], pc[:, _EDGES[:, 1]]  # (N, 12, 3)
    za, zb = a[..., 2] - NEAR, b[..., 2] - NEAR
    crosses = (za * zb) < 0
    s = np.where(crosses, za / np.where(crosses, za - zb, 1.0), 0.0)
    clipped = a + s[..., None] * (b - a)  # points on the near plane
    pts = np.concatenate([pc, clipped], 1)  # (N, 20, 3)
    ok = np.concatenate([pc[..., 2] >= NEAR, crosses], 1)
    z = np.maximum(pts[..., 2], NEAR)
    u = camera.focal * pts[..., 0] / z + camera.cx
    v = camera.focal * pts[..., 1] / z + camera.cy
    inf = np.inf
    c0 = np.floor(np.where(ok, u, inf).min(1)).clip(-1, camera.width) 
    c1 = np.ceil(np.where(ok, u, -inf).max(1)).clip(-1, camera.width)
    r0 = np.floor(np.where(ok, v, inf).min(1)).clip(-1, camera.height)
    r1 = np.ceil(np.where(ok, v, -inf).max(1)).clip(-1, camera.height)
    zmin = np.where(ok, pts[..., 2], inf).min(1)
    c0, r0 = np.maximum(c0, 0), np.maximum(r0, 0)
    c1, r1 = np.minimum(c1 + 1, camera.width), np.minimum(r1 + 1, camera.height)
    visible = ok.any(1) & (c1 > c0) & (r1 > r0)
    return r0.astype(int), r1.astype(int), c0.astype(int), c1.astype(int), zmin, visible


def cast_frame(scene: Scene, camera: Camera, pose: Pose, tau: float, dirs_cam: np.ndarray) -> FrameGeometry:
    """Cast one ray per pixel at time ``tau`` and keep the nearest hit (depth buffer)."""
    n = scene.num_prims
    ground, sky = n, n + 1
    dirs = dirs_cam @ pose.rotation.T  # (H, W, 3) world directions
    with np.errstate(divide="ignore"):
        inv = 1.0 / np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    o = pose.position
    h, w = camera.height, camera.width
    depth = np.full((h, w), np.inf)
    prim = np.full((h, w), sky, dtype=np.int64)

    # Ground plane Y = 0.
    down = dirs[..., 1] < -1e-9
    t_ground = np.where(down, -o[1] / np.where(down, dirs[..., 1], -1.0), np.inf)
    hit = down & (t_ground > NEAR)
    depth[hit] = t_ground[hit]
    prim[hit] = ground

    # Primitives, front to back, each tested only inside its screen rectangle.
    offsets = scene.offsets(tau)[:n]
    lo, hi = scene.lo + offsets, scene.hi + offsets
    r0, r1, c0, c1, zmin, visible = _screen_boxes(camera, pose, lo, hi)
    for k in np.flatnonzero(visible)[np.argsort(zmin[visible], kind="stable")]:
        sl = (slice(r0[k], r1[k]), slice(c0[k], c1[k]))
        dsub = depth[sl]
        if dsub.max() < zmin[k]:  # everything in the rectangle is already in front of the primitive
            continue
        if scene.shape[k] == Shape.BOX:
            t1 = (lo[k] - o) * inv[sl]  # (h, w, 3) slab distances
            t2 = (hi[k] - o) * inv[sl]
            t_near = np.minimum(t1, t2).max(-1)
            t_far = np.maximum(t1, t2).min(-1)
            hit = (t_near <= t_far) & (t_near > NEAR) & (t_near < dsub)
            t = t_near
        else:  # ellipsoid: solve |q + t e|^2 = 1 in the unit-sphere frame
            c, r = (lo[k] + hi[k]) / 2, (hi[k] - lo[k]) / 2
            q = (o - c) / r
            e = dirs[sl] / r
            a = (e * e).sum(-1)
            bh = e @ q
            disc = bh * bh - a * (q @ q - 1.0)
            t = (-bh - np.sqrt(np.maximum(disc, 0.0))) / a
            hit = (disc > 0) & (t > NEAR) & (t < dsub)
        np.copyto(dsub, t, where=hit)
        np.copyto(prim[sl], k, where=hit)

    # Hit points, normals and pixel footprints.
    finite = np.isfinite(depth)
    t = np.where(finite, depth, 0.0)
    world = o + t[..., None] * dirs  # (H, W, 3)
    all_off = scene.offsets(tau)  # (N+2, 3)
    local = world - all_off[prim]
    normal = np.zeros((h, w, 3))
    normal[..., 1] = 1.0  # ground
    is_prim = prim < n
    if is_prim.any():
        k = prim[is_prim]
        p = world[is_prim]
        c = (lo[k] + hi[k]) / 2
        half = (hi[k] - lo[k]) / 2
        rel = (p - c) / half
        nb = np.zeros_like(rel)
        axis = np.abs(rel).argmax(-1)
        nb[np.arange(len(k)), axis] = np.sign(rel[np.arange(len(k)), axis])
        ne = rel / half
        ne /= np.linalg.norm(ne, axis=-1, keepdims=True)
        normal[is_prim] = np.where((scene.shape[k] == Shape.BOX)[:, None], nb, ne)
    normal[~finite] = -dirs[~finite] / np.linalg.norm(dirs[~finite], axis=-1, keepdims=True)

    # Pixel footprint on a (locally) planar surface: dP/du = t (d_u - d (n.d_u)/(n.d)), likewise for v.
    ndot = (normal * dirs).sum(-1)
    ndot = np.where(np.abs(ndot) < 0.05, np.where(ndot < 0, -0.05, 0.05), ndot)
    fp = np.zeros((h, w, 3))
    for axis in (0, 1):
        du = pose.rotation[:, axis] / camera.focal  # (3,)
        dp = t[..., None] * (du - dirs * ((normal @ du) / ndot)[..., None])
        fp += np.abs(dp)
    return FrameGeometry(depth=depth, prim=prim, dirs=dirs, local=local, normal=normal, footprint=fp)
