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
    world: np.ndarray  # (H, W, 3) hit point in world coordinates at this frame's time
    local: np.ndarray  # (H, W, 3) hit point in object coordinates (= world position at time 0)
    moving: np.ndarray  # (H, W) bool: the hit belongs to a mover
    xy: np.ndarray  # (H, W, 2) re-projection of the hit into this frame (the pixel centre up to rounding)
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


def _rect_pixels(r0, r1, c0, c1, width):
    """Flattened pixel indices of all rectangles at once, and which rectangle each belongs to."""
    rw, rh = (c1 - c0).astype(np.int32), (r1 - r0).astype(np.int32)
    area = rw * rh
    owner = np.repeat(np.arange(len(area), dtype=np.int32), area)  # (n,)
    start = np.cumsum(area, dtype=np.int64).astype(np.int32) - area
    local = np.arange(owner.size, dtype=np.int32) - start[owner]
    w_own = rw[owner]
    row = local // w_own
    col = local - row * w_own
    return (r0.astype(np.int32)[owner] + row) * width + c0.astype(np.int32)[owner] + col, owner


def cast_frame(scene: Scene, camera: Camera, pose: Pose, tau: float, dirs_cam: np.ndarray) -> FrameGeometry:
    """Cast one ray per pixel at time ``tau`` and keep the nearest hit (depth buffer).

    Every primitive is tested only against the pixels of its (near-clipped) screen rectangle; all
    (pixel, primitive) pairs of a frame are intersected in one vectorised pass (float32) and reduced with a
    per-pixel minimum.
    """
    n = scene.num_prims
    ground, sky = n, n + 1
    h, w = camera.height, camera.width
    o = pose.position
    dirs = (dirs_cam.reshape(-1, 3) @ pose.rotation.T)  # (P, 3) world directions
    planes = np.ascontiguousarray(dirs.T, dtype=np.float32)  # (3, P)
    depth = np.full(h * w, np.inf, dtype=np.float32)
    prim = np.full(h * w, sky, dtype=np.int32)
    face = np.full(h * w, -1, dtype=np.int8)  # box face axis of the hit (0, 1, 2), -1 otherwise

    # Ground plane Y = 0.
    down = planes[1] < -1e-9
    depth[down] = -o[1] / planes[1][down]
    prim[down] = ground

    # (pixel, primitive) pairs inside each primitive's screen rectangle.
    offsets = scene.offsets(tau)[:n]
    lo, hi = scene.lo + offsets, scene.hi + offsets
    r0, r1, c0, c1, _, visible = _screen_boxes(camera, pose, lo, hi)
    vis = np.flatnonzero(visible)
    pix, owner = _rect_pixels(r0[vis], r1[vis], c0[vis], c1[vis], w)
    is_box_vis = scene.shape[vis] == Shape.BOX
    rel_lo = np.ascontiguousarray((lo[vis] - o).T, dtype=np.float32)  # (3, V) box corners relative to the camera
    rel_hi = np.ascontiguousarray((hi[vis] - o).T, dtype=np.float32)
    pair_box = is_box_vis[owner]
    hits_t, hits_pix, hits_owner, hits_face = [], [], [], []

    # Boxes: slab test; remember which slab bounds the entry point (the face that was hit).
    b = np.flatnonzero(pair_box)
    if b.size:
        pb, ob = pix[b], owner[b]
        t_near = np.full(b.size, -np.inf, np.float32)
        t_far = np.full(b.size, np.inf, np.float32)
        axis = np.zeros(b.size, np.int8)
        for a in range(3):
            da = planes[a][pb]
            da[np.abs(da) < 1e-12] = 1e-12
            inv = np.float32(1.0) / da
            ta, tb = rel_lo[a][ob] * inv, rel_hi[a][ob] * inv
            enter = np.minimum(ta, tb)
            later = enter > t_near
            axis[later] = a
            t_near = np.maximum(t_near, enter)
            t_far = np.minimum(t_far, np.maximum(ta, tb))
        ok = (t_near <= t_far) & (t_near > NEAR)
        hits_t.append(t_near[ok]), hits_pix.append(pb[ok]), hits_owner.append(ob[ok]), hits_face.append(axis[ok])

    # Ellipsoids: |q + t e|^2 = 1 in the unit-sphere frame of each ellipsoid.
    e = np.flatnonzero(~pair_box)
    if e.size:
        pe, oe = pix[e], owner[e]
        center, radii = (rel_lo + rel_hi) / 2, (rel_hi - rel_lo) / 2  # (3, V), relative to the camera
        q = -center / radii  # camera position in each unit-sphere frame
        qq = (q * q).sum(0) - 1.0  # (V,)
        aa = bh = np.float32(0.0)
        for a in range(3):
            ea = planes[a][pe] / radii[a][oe]
            aa = aa + ea * ea
            bh = bh + ea * q[a][oe]
        disc = bh * bh - aa * qq[oe]
        te = (-bh - np.sqrt(np.maximum(disc, 0.0))) / aa
        ok = (disc > 0) & (te > NEAR)
        hits_t.append(te[ok]), hits_pix.append(pe[ok]), hits_owner.append(oe[ok])
        hits_face.append(np.full(int(ok.sum()), -1, np.int8))

    # Depth test: per-pixel minimum, then the primitive that achieved it.
    if hits_t:
        t, hp, ho, hf = (np.concatenate(x) for x in (hits_t, hits_pix, hits_owner, hits_face))
        np.minimum.at(depth, hp, t)
        won = t == depth[hp]
        prim[hp[won]] = vis[ho[won]]
        face[hp[won]] = hf[won]

    # Hit points (float64 from here on), normals and pixel footprints.
    depth = depth.astype(np.float64)
    finite = np.isfinite(depth)
    t = np.where(finite, depth, 0.0)
    world = o + t[:, None] * dirs  # (P, 3)
    local = world.copy()
    moving = scene.mover[prim] >= 0
    if moving.any():
        local[moving] -= scene.offsets(tau)[prim[moving]]
    normal = np.zeros((h * w, 3))
    normal[:, 1] = 1.0  # ground
    is_face = face >= 0
    if is_face.any():  # box faces point against the ray along the entry axis
        fi = np.flatnonzero(is_face)
        ax = face[fi].astype(np.int64)
        normal[fi] = 0.0
        normal[fi, ax] = -np.sign(dirs[fi, ax])
    is_ell = (prim < n) & ~is_face
    if is_ell.any():
        k = prim[is_ell]
        c, r = (lo[k] + hi[k]) / 2, (hi[k] - lo[k]) / 2
        ne = (world[is_ell] - c) / (r * r)
        normal[is_ell] = ne / np.linalg.norm(ne, axis=-1, keepdims=True)
    if (~finite).any():
        normal[~finite] = -dirs[~finite] / np.linalg.norm(dirs[~finite], axis=-1, keepdims=True)

    # Pixel footprint on a (locally) planar surface: dP/du = t (d_u - d (n.d_u)/(n.d)), likewise for v.
    ndot = (normal * dirs).sum(-1)
    ndot = np.where(np.abs(ndot) < 0.05, np.where(ndot < 0, -0.05, 0.05), ndot)
    fp = np.zeros((h * w, 3))
    for a in (0, 1):
        du = pose.rotation[:, a] / camera.focal  # (3,) derivative of the ray direction along image axis a
        fp += np.abs(t[:, None] * (du - dirs * ((normal @ du) / ndot)[:, None]))
    # Re-projection of every hit (sky: of its direction), the reference point of the flow (see motion.py).
    xy, _ = pose.project(camera, world)
    if (~finite).any():
        xy[~finite] = pose.project_directions(camera, dirs[~finite])[0]
    shape3 = (h, w, 3)
    return FrameGeometry(depth=depth.reshape(h, w), prim=prim.reshape(h, w).astype(np.int64),
                         dirs=dirs.reshape(shape3), world=world.reshape(shape3), local=local.reshape(shape3),
                         moving=moving.reshape(h, w), xy=xy.reshape(h, w, 2), normal=normal.reshape(shape3),
                         footprint=fp.reshape(shape3))
