"""Materials, lighting and haze: turns a ``FrameGeometry`` into an RGB image and a trainId map.

Every texture is a function of *object* coordinates (``FrameGeometry.local``), so patterns stick to the surfaces.
Textures are band-limited by the pixel footprint (``FrameGeometry.footprint``, metres per pixel along each world
axis): stripes and windows are box-filtered analytically (``band``) and noise octaves fade out before they get
smaller than about two pixels (``fbm``). A frame rendered with one sample per pixel is then smooth enough for
bilinear warping to reproduce it, which is what the ground-truth flow is checked against.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from .geometry import Camera, FrameGeometry
from .scene import ROAD, TERRAIN, Material, Scene

__all__ = ["shade_frame", "value_noise", "fbm", "band"]


# --- procedural building blocks ----------------------------------------------------------------------------------


def _hash2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice → uniform [0, 1) (a 32-bit multiply–xorshift hash; platform independent)."""
    h = (ix.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0x8DA6B343)
    h ^= (iy.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0xD8163841)
    h ^= np.uint32(seed & 0xFFFFFFFF)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0x5BD1E995)
    h ^= h >> np.uint32(15)
    return h.astype(np.float64) * (1.0 / 4294967296.0)


_LATTICE = 256  # the noise lattice repeats every 256 cells (≥ 32 m at the lowest frequency used)
_TABLE = _hash2(np.arange(_LATTICE * _LATTICE) % _LATTICE, np.arange(_LATTICE * _LATTICE) // _LATTICE, 12345)
_TABLE = _TABLE.astype(np.float32)


def value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1) with unit lattice spacing (bilinear between random lattice values)."""
    shift = _hash2(np.array([seed]), np.array([seed + 1]), 99)[0] * _LATTICE  # per-seed offset of the lattice
    u = u + shift
    v = v + shift * 0.618
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = (u - iu).astype(np.float32), (v - iv).astype(np.float32)
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    m = _LATTICE - 1
    iu, iv = iu.astype(np.int64) & m, iv.astype(np.int64) & m
    iu1, iv1 = (iu + 1) & m, (iv + 1) & m
    row0, row1 = iv * _LATTICE, iv1 * _LATTICE
    a, b = _TABLE.take(row0 + iu), _TABLE.take(row0 + iu1)
    c, d = _TABLE.take(row1 + iu), _TABLE.take(row1 + iu1)
    return (a + (b - a) * fu) * (1 - fv) + (c + (d - c) * fu) * fv


def fbm(u, v, fp, freq: float, octaves: int, seed: int, gain: float = 0.5) -> np.ndarray:
    """Zero-mean fractal noise (≈ ±0.5) whose octaves fade out once a lattice cell spans < 2–4 pixels.

    ``fp`` is the pixel footprint (metres) in the (u, v) plane; octave ``k`` has ``freq * 2^k`` cells per metre.
    """
    out = np.zeros(u.shape, np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        f = freq * 2.0**k
        weight = np.clip((0.5 - fp * f) / 0.25, 0.0, 1.0).astype(np.float32)
        live = np.flatnonzero(weight)
        if live.size == weight.size:
            out += amp * weight * (value_noise(u * f, v * f, seed + 7919 * k) - 0.5)
        elif live.size:  # only the pixels near enough to resolve this octave
            noise = value_noise(u.take(live) * f, v.take(live) * f, seed + 7919 * k) - 0.5
            out[live] += amp * weight.take(live) * noise
        total += amp
        amp *= gain
    return out / np.float32(total)


def band(u, center, half, fp, period: float | None = None) -> np.ndarray:
    """Coverage in [0, 1] of the stripe |u - center| < half, box-filtered over a pixel of width ``fp``.

    With ``period`` the stripe repeats; once a period is shorter than two pixels the coverage fades to its mean.
    """
    fp = np.maximum(fp, 1e-4)
    d = u - center
    if period is not None:
        d = np.mod(d + period / 2, period) - period / 2
    cov = np.clip(np.minimum(d + fp / 2, half) - np.maximum(d - fp / 2, -half), 0.0, None) / fp
    if period is not None:
        fade = np.clip((fp / period - 0.25) / 0.25, 0.0, 1.0)
        cov = cov + (2 * half / period - cov) * fade
    return np.clip(cov, 0.0, 1.0)


def _mix(a, b, t):
    """Linear blend of colours a, b ((n, 3) or (3,)) by t (n,)."""
    return a + (b - a) * t[:, None]


def _face_uv(p, n, fp):
    """Coordinates on an axis-aligned face: u horizontal along the face, v = height; and their footprints."""
    on_x = np.abs(n[:, 0]) > 0.5
    u = np.where(on_x, p[:, 2], p[:, 0])
    fu = np.where(on_x, fp[:, 2], fp[:, 0])
    return u, p[:, 1], fu, fp[:, 1]


# --- materials: each maps the pixels of one material to albedo (n, 3) --------------------------------------------


class _Pixels:
    """The pixels of one material in one frame (attributes are gathered on first use)."""

    def __init__(self, scene: Scene, geom: FrameGeometry, idx: np.ndarray):
        self._scene, self._geom, self._idx = scene, geom, idx
        self.k = geom.prim.reshape(-1).take(idx)
        self.seed = scene.noise_seed

    def _pixel(self, name):
        arr = getattr(self._geom, name)
        return arr.reshape(-1, arr.shape[-1]).take(self._idx, axis=0).astype(np.float32)

    def _prim(self, name):
        arr = getattr(self._scene, name)
        return arr.take(np.minimum(self.k, len(arr) - 1), axis=0)

    @cached_property
    def p(self):  # (n, 3) object coordinates
        return self._pixel("local")

    @cached_property
    def n(self):  # (n, 3) normals
        return self._pixel("normal")

    @cached_property
    def fp(self):  # (n, 3) footprints
        return self._pixel("footprint")

    @cached_property
    def color(self):
        return self._prim("color")

    @cached_property
    def param(self):
        return self._prim("param")

    @cached_property
    def lo(self):
        return self._prim("lo")

    @cached_property
    def hi(self):
        return self._prim("hi")

    @cached_property
    def center(self):
        return (self.lo + self.hi) / 2


def _ground(s: _Pixels, scene: Scene):
    x, z = s.p[:, 0], s.p[:, 2]
    fx, fz = s.fp[:, 0], s.fp[:, 2]
    fmax = np.maximum(fx, fz)
    rh = scene.road_half_width
    right = rh + (26.0 if scene.parking_lot else 0.0)
    on_road = (x > -rh) & (x < right)
    in_cross = np.zeros_like(on_road)
    if scene.crossing is not None:
        in_cross = (z > scene.crossing[0]) & (z < scene.crossing[1])
    road = on_road | in_cross
    label = np.where(road, ROAD, TERRAIN).astype(np.uint8)

    tarmac = scene.asphalt * (1.0 + 0.35 * fbm(x, z, fmax, 0.8, 3, s.seed))[:, None]
    tarmac *= (1.0 + 0.25 * fbm(x, z, fmax, 0.08, 2, s.seed + 1))[:, None]
    # Lane markings (only on the main road, not inside the junction).
    lw, lanes = scene.lane_width, scene.lanes_per_direction
    dash = band(z, 0.0, 1.5, fz, period=9.0)
    if lanes == 1:
        m = band(x, 0.0, 0.07, fx) * dash
    else:
        m = np.maximum(band(x, -0.14, 0.06, fx), band(x, 0.14, 0.06, fx))
        for lane in range(1, lanes):
            m = np.maximum(m, band(np.abs(x), lane * lw, 0.07, fx) * dash)
    if scene.parking_lane_width > 1.0:
        m = np.maximum(m, band(np.abs(x), lanes * lw, 0.08, fx))
    m = np.where((x > -rh) & (x < rh) & ~in_cross, m, 0.0)
    if scene.crosswalk is not None:  # zebra stripes across the road
        c0, c1 = scene.crosswalk
        zebra = band(x, 0.25, 0.25, fx, period=1.0) * band(z, (c0 + c1) / 2, (c1 - c0) / 2, fz)
        m = np.maximum(m, np.where(np.abs(x) < rh, zebra, 0.0))
    wear = 0.8 + 0.4 * fbm(x, z, fmax, 1.5, 2, s.seed + 2)
    col = _mix(tarmac, scene.marking, np.clip(m * wear, 0, 1))
    grass = scene.grass * (1.0 + 0.6 * fbm(x, z, fmax, 1.2, 3, s.seed + 3))[:, None]
    return np.where(road[:, None], col, grass), label


def _sidewalk(s: _Pixels, scene: Scene):
    x, z = s.p[:, 0], s.p[:, 2]
    top = s.n[:, 1] > 0.5
    fx, fz = s.fp[:, 0], s.fp[:, 2]
    tile = 0.5
    joints = np.maximum(band(x, 0.0, 0.012, fx, tile), band(z, 0.0, 0.012, fz, tile))
    per_tile = _hash2(np.floor(x / tile), np.floor(z / tile), s.seed + 11) - 0.5
    per_tile *= np.clip((0.5 - np.maximum(fx, fz) / tile) / 0.25, 0, 1)
    shade = 1.0 + 0.08 * per_tile - 0.25 * joints + 0.15 * fbm(x, z, np.maximum(fx, fz), 0.7, 2, s.seed + 12)
    kerb = 1.12 + 0.05 * fbm(z, s.p[:, 1], s.fp[:, 2], 2.0, 2, s.seed + 13)
    return s.color * np.where(top, shade, kerb)[:, None]


def _grass(s: _Pixels, scene: Scene):
    f = np.maximum(s.fp[:, 0], s.fp[:, 2])
    return s.color * (1.0 + 0.6 * fbm(s.p[:, 0], s.p[:, 2], f, 1.5, 3, s.seed + 21))[:, None]


def _building(s: _Pixels, scene: Scene):
    u, v, fu, fv = _face_uv(s.p, s.n, s.fp)
    floor_h, spacing, win_w, win_h, shop, bseed = s.param.T
    top_y = s.hi[:, 1]
    f = np.maximum(fu, fv)
    wall = s.color * (1.0 + 0.18 * fbm(u, v, f, 1.2, 3, s.seed + 31))[:, None]
    wall *= (1.0 - 0.12 * band(v, 0.0, 0.012, fv, 0.32) * np.clip(1 - fv / 0.08, 0, 1))[:, None]  # brick courses
    offset = np.mod(bseed, spacing)
    col_b = band(u, offset + spacing / 2, win_w / 2, fu, spacing)
    row_b = band(v, floor_h * 0.55, win_h / 2, fv, floor_h)
    upper = (v > floor_h) & (v < top_y - 0.8)
    windows = np.where(upper, col_b * row_b, 0.0)
    sill = np.where(upper, col_b * band(v, floor_h * 0.55 - win_h / 2 - 0.06, 0.05, fv, floor_h), 0.0)
    shop_b = band(u, offset, spacing * 0.8, fu, spacing * 2) * band(v, 1.45, 1.05, fv)
    windows = np.maximum(windows, np.where(shop > 0.5, shop_b, 0.0))
    cell = _hash2(np.floor((u - offset) / spacing), np.floor(v / floor_h), s.seed + 33) - 0.5
    glass = np.array([0.13, 0.15, 0.19]) * (1.0 + 0.9 * cell)[:, None] + 0.05 * (np.mod(v, floor_h) / floor_h)[:, None]
    col = _mix(wall, glass, windows)
    col = _mix(col, np.minimum(s.color * 1.25, 1.0), 0.8 * sill)
    cornice = band(v, top_y - 0.25, 0.25, fv)
    plinth = band(v, 0.0, 0.35, fv)
    return col * (1.0 - 0.25 * cornice - 0.2 * plinth)[:, None]


def _wall(s: _Pixels, scene: Scene):
    u, v, fu, fv = _face_uv(s.p, s.n, s.fp)
    f = np.maximum(fu, fv)
    col = s.color * (1.0 + 0.2 * fbm(u, v, f, 1.5, 3, s.seed + 41))[:, None]
    joints = band(u, 0.0, 0.02, fu, s.param[:, 0])
    coping = band(v, s.hi[:, 1] - 0.06, 0.06, fv)
    return col * (1.0 - 0.35 * joints + 0.2 * coping)[:, None]


def _fence(s: _Pixels, scene: Scene):
    u, v, fu, fv = _face_uv(s.p, s.n, s.fp)
    slats = band(u, 0.0, 0.02, fu, s.param[:, 0])
    rails = np.maximum(band(v, s.hi[:, 1] - 0.1, 0.05, fv), band(v, 0.25, 0.05, fv))
    grain = fbm(u * 0.3, v * 3.0, np.maximum(fu, fv), 1.0, 2, s.seed + 51)
    return s.color * (1.0 - 0.45 * slats + 0.15 * rails + 0.15 * grain)[:, None]


def _metal(s: _Pixels, scene: Scene):
    u, v, fu, fv = _face_uv(s.p, s.n, s.fp)
    return s.color * (1.0 + 0.1 * fbm(u, v, np.maximum(fu, fv), 2.0, 2, s.seed + 61))[:, None]


def _sign(s: _Pixels, scene: Scene):
    style, face = s.param[:, 0], s.param[:, 1]
    front = s.n[:, 2] * face > 0.5
    du = (s.p[:, 0] - s.center[:, 0]) / ((s.hi[:, 0] - s.lo[:, 0]) / 2)
    dv = (s.p[:, 1] - s.center[:, 1]) / ((s.hi[:, 1] - s.lo[:, 1]) / 2)
    r = np.hypot(du, dv)
    white, red = np.array([0.92, 0.92, 0.9]), np.array([0.78, 0.08, 0.07])
    blue, yellow = np.array([0.08, 0.25, 0.65]), np.array([0.95, 0.78, 0.1])
    no_entry = np.where(((np.abs(dv) < 0.18) & (np.abs(du) < 0.6))[:, None], white, red)
    round_blue = np.where((r < 0.5)[:, None] & (r > 0.3)[:, None], white, blue)
    square = np.where(((np.abs(du) < 0.75) & (np.abs(dv) < 0.75))[:, None], blue, white)
    diamond = np.where((np.abs(du) + np.abs(dv) < 0.75)[:, None], yellow,
                       np.where((np.abs(du) + np.abs(dv) < 0.9)[:, None], 0.1 * white, white))
    designs = np.stack([no_entry, round_blue, square, diamond])  # (4, n, 3)
    col = designs[style.astype(int).clip(0, 3), np.arange(len(style))]
    return np.where(front[:, None], col, np.array([0.5, 0.5, 0.52]))


def _traffic_light(s: _Pixels, scene: Scene):
    lit, face = s.param[:, 0].astype(int), s.param[:, 1]
    front = s.n[:, 2] * face > 0.5
    du = s.p[:, 0] - s.center[:, 0]
    dv = s.p[:, 1] - s.center[:, 1]
    lamps = np.array([[1.0, 0.12, 0.05], [1.0, 0.7, 0.05], [0.15, 1.0, 0.45]])
    col = s.color.copy()
    for i, y in enumerate((0.28, 0.0, -0.28)):  # red on top
        inside = front & (np.hypot(du, dv - y) < 0.1)
        bright = np.where(lit == i, 1.0, 0.18)
        col = np.where(inside[:, None], lamps[i] * bright[:, None], col)
    return col


def _bark(s: _Pixels, scene: Scene):
    u = s.p[:, 0] + s.p[:, 2]
    f = np.maximum(s.fp[:, 0], s.fp[:, 1])
    return s.color * (1.0 + 0.35 * fbm(u * 3.0, s.p[:, 1] * 0.6, f * 3.0, 1.0, 3, s.seed + 71))[:, None]


def _foliage(s: _Pixels, scene: Scene):
    box = s.param[:, 1] > 0.5  # hedges are boxes
    d = s.p - s.center
    radius = (s.hi[:, 0] - s.lo[:, 0]) / 2
    u = np.where(box, s.p[:, 0] + s.p[:, 2], np.arctan2(d[:, 2], d[:, 0]) * radius) + s.param[:, 0]
    f = s.fp.max(-1)
    leaves = fbm(u, s.p[:, 1], f, 1.2, 4, s.seed + 81, gain=0.7)
    return s.color * np.clip(1.0 + 1.1 * leaves, 0.3, 2.0)[:, None]


def _wheel_disc(dz, dy, radius, fp):
    """Coverage of a wheel (tyre + rim) drawn on a car's side; returns (tyre, rim) weights."""
    r = np.hypot(dz, dy)
    tyre = band(r, 0.0, radius, fp)
    rim = band(r, 0.0, radius * 0.55, fp)
    return tyre, rim


def _vehicle_side(s, col, axle, radius, fp):
    """Dark tyres with grey rims at ``±axle`` (metres from the centre along Z), on ±X faces only."""
    side = np.abs(s.n[:, 0]) > 0.5
    dz = s.p[:, 2] - s.center[:, 2]
    dy = s.p[:, 1] - radius
    tyre = np.zeros(len(dz))
    rim = np.zeros(len(dz))
    for sgn in (-1, 1):
        t, r = _wheel_disc(dz - sgn * axle, dy, radius, fp)
        tyre, rim = np.maximum(tyre, t), np.maximum(rim, r)
    tyre, rim = np.where(side, tyre, 0), np.where(side, rim, 0)
    col = _mix(col, np.array([0.04, 0.04, 0.045]), tyre)
    return _mix(col, np.array([0.45, 0.45, 0.47]), rim)


def _car_body(s: _Pixels, scene: Scene):
    front_dir, length = s.param[:, 0], s.param[:, 1]
    f = s.fp.max(-1)
    y = s.p[:, 1]
    col = s.color * (0.9 + 0.25 * np.clip(y, 0, 1))[:, None]
    col = _mix(col, np.array([0.06, 0.06, 0.07]), band(y, 0.1, 0.18, f))  # sills / under-body shadow
    col = _vehicle_side(s, col, length / 2 - 0.85, 0.32, f)
    ends = np.abs(s.n[:, 2]) > 0.5
    is_front = s.n[:, 2] * front_dir > 0.5
    dx = np.abs(s.p[:, 0] - s.center[:, 0])
    half_w = (s.hi[:, 0] - s.lo[:, 0]) / 2
    lamp = band(dx, half_w - 0.22, 0.13, f) * band(y, 0.72, 0.07, f)
    lamp_col = np.where(is_front[:, None], np.array([0.95, 0.93, 0.8]), np.array([0.7, 0.05, 0.04]))
    plate = band(dx, 0.0, 0.25, f) * band(y, 0.45, 0.06, f)
    bumper = band(y, 0.3, 0.1, f)
    end_col = _mix(_mix(_mix(col, np.array([0.1, 0.1, 0.1]), bumper), lamp_col, lamp), np.array([0.9, 0.9, 0.85]),
                   plate)
    return np.where(ends[:, None], end_col, col)


def _car_cabin(s: _Pixels, scene: Scene):
    f = s.fp.max(-1)
    glass = np.array([0.07, 0.08, 0.1]) + 0.06 * (s.p[:, 1] - s.lo[:, 1])[:, None]
    d = s.p - s.center
    half = (s.hi - s.lo) / 2
    side = np.abs(s.n[:, 0]) > 0.5
    ends = np.abs(s.n[:, 2]) > 0.5
    # Side windows with pillars at both ends and in the middle; wind-screens at the ends.
    side_glass = band(d[:, 2], 0.0, half[:, 2] - 0.12, f) * (1 - band(d[:, 2], 0.0, 0.05, f))
    end_glass = band(d[:, 0], 0.0, half[:, 0] - 0.1, f)
    vert = band(d[:, 1], 0.02, half[:, 1] - 0.08, f)
    g = np.where(side, side_glass, np.where(ends, end_glass, 0.0)) * vert
    return _mix(s.color, glass, g)


def _bus(s: _Pixels, scene: Scene):
    length, kind = s.param[:, 0], s.param[:, 1].astype(int)
    f = s.fp.max(-1)
    y = s.p[:, 1]
    d = s.p - s.center
    half = (s.hi - s.lo) / 2
    glass = np.array([0.08, 0.09, 0.11])
    col = s.color * (1.0 + 0.05 * fbm(s.p[:, 2], y, f, 1.0, 2, s.seed + 91))[:, None]
    band_lo = np.where(kind == 1, 1.5, 1.25)
    band_hi = np.where(kind == 1, 2.4, s.hi[:, 1] - 0.35)
    win = band(y, (band_lo + band_hi) / 2, (band_hi - band_lo) / 2, f)
    across = np.where(np.abs(s.n[:, 0]) > 0.5, band(d[:, 2], 0.0, half[:, 2] - 0.3, f),
                      band(d[:, 0], 0.0, half[:, 0] - 0.15, f))
    win = np.where(kind == 2, 0.0, win * across)
    pillars = np.where(kind == 0, band(s.p[:, 2], 0.0, 0.06, f, 1.4), 0.0) * (np.abs(s.n[:, 0]) > 0.5)
    col = _mix(col, glass, win * (1 - pillars))
    ribs = np.where(kind == 2, band(s.p[:, 2], 0.0, 0.03, f, 0.6), 0.0)
    col = col * (1.0 - 0.2 * ribs)[:, None]
    col = _mix(col, np.array([0.08, 0.08, 0.08]), band(y, 0.2, 0.2, f))
    axle = np.where(kind == 0, length / 2 - 2.2, half[:, 2] - 0.9)
    return _vehicle_side(s, col, axle, 0.5, f)


def _cloth(s: _Pixels, scene: Scene):
    u, v, fu, fv = _face_uv(s.p, s.n, s.fp)
    return s.color * (1.0 + 0.15 * fbm(u, v, np.maximum(fu, fv), 4.0, 2, s.seed + 101))[:, None]


def _skin(s: _Pixels, scene: Scene):
    rel = (s.p[:, 1] - s.center[:, 1]) / ((s.hi[:, 1] - s.lo[:, 1]) / 2)
    hair = band(rel, 0.75, 0.45, s.fp[:, 1] / ((s.hi[:, 1] - s.lo[:, 1]) / 2))
    return _mix(s.color, s.param[:, :3], hair)


def _wheel(s: _Pixels, scene: Scene):
    d = s.p - s.center
    r = np.hypot(d[:, 1], d[:, 2]) / ((s.hi[:, 1] - s.lo[:, 1]) / 2)
    f = s.fp.max(-1) / 0.34
    tyre = band(r, 1.0, 0.15, f)
    return _mix(np.array([0.32, 0.32, 0.34]), np.array([0.05, 0.05, 0.05]), tyre)


_MATERIALS = {
    Material.SIDEWALK: _sidewalk,
    Material.GRASS: _grass,
    Material.BUILDING: _building,
    Material.WALL: _wall,
    Material.FENCE: _fence,
    Material.METAL: _metal,
    Material.SIGN: _sign,
    Material.TRAFFIC_LIGHT: _traffic_light,
    Material.BARK: _bark,
    Material.FOLIAGE: _foliage,
    Material.CAR_BODY: _car_body,
    Material.CAR_CABIN: _car_cabin,
    Material.BUS: _bus,
    Material.CLOTH: _cloth,
    Material.SKIN: _skin,
    Material.WHEEL: _wheel,
}


def _sky(scene: Scene, camera: Camera, dirs: np.ndarray) -> np.ndarray:
    """Sky colour (n, 3) for world ray directions (n, 3): gradient, sun glow and soft clouds (at infinity)."""
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    elev = d[:, 1]
    g = np.clip(elev / 0.45, 0.0, 1.0) ** 0.6
    col = _mix(scene.sky_horizon, scene.sky_zenith, g)
    col = col + scene.sun_color * 0.35 * np.clip(d @ scene.sun_dir, 0, 1)[:, None] ** 24
    e = np.maximum(elev, 0.03)
    cu, cv = d[:, 0] / e, d[:, 2] / e  # coordinates on a cloud layer at unit height
    fp = 2.0 / (camera.focal * e * e)
    cloud = fbm(cu, cv, fp, 0.35, 4, scene.noise_seed + 5, gain=0.6)
    cover = np.clip(cloud * 3.0 + 0.1, 0, 1) * np.clip((elev - 0.02) / 0.1, 0, 1)
    return _mix(col, np.array([0.93, 0.93, 0.94]), 0.8 * cover)


def shade_frame(scene: Scene, camera: Camera, geom: FrameGeometry) -> tuple[np.ndarray, np.ndarray]:
    """RGB (H, W, 3) uint8 and trainIds (H, W) uint8 for one frame."""
    h, w = camera.height, camera.width
    prim = geom.prim.reshape(-1)
    material = scene.material[prim]
    labels = scene.label[prim].copy()
    albedo = np.zeros((h * w, 3))
    for mat in np.unique(material):
        idx = np.flatnonzero(material == mat)
        if mat == Material.SKY:
            continue
        pixels = _Pixels(scene, geom, idx)
        if mat == Material.GROUND:
            albedo[idx], labels[idx] = _ground(pixels, scene)
        else:
            albedo[idx] = _MATERIALS[Material(mat)](pixels, scene)

    # Lighting: sun (Lambert) + sky light that favours up-facing surfaces.
    n = geom.normal.reshape(-1, 3)
    sun = np.clip(n @ scene.sun_dir, 0.0, None)[:, None] * scene.sun_color
    sky_light = scene.ambient * (0.75 + 0.25 * n[:, 1:2])
    rgb = albedo * (sun + sky_light)
    # Haze by distance.
    dirs = geom.dirs.reshape(-1, 3)
    depth = geom.depth.reshape(-1)
    is_sky = ~np.isfinite(depth)
    dist = np.where(is_sky, 0.0, depth) * np.linalg.norm(dirs, axis=-1)
    haze = 1.0 - np.exp(-dist / scene.fog_distance)
    rgb = _mix(rgb, scene.sky_horizon, haze)
    if is_sky.any():
        rgb[is_sky] = _sky(scene, camera, dirs[is_sky])
    img = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(h, w, 3)
    return img, labels.reshape(h, w)
