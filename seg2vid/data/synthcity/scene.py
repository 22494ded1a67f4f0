"""The SynthCity scene builder: a random street described by analytic primitives.

World frame (metres): ``X`` right, ``Y`` up, ``Z`` along the street (the ego car drives towards +Z in the right
lane; right-hand traffic). Every visible thing is one of

* the ground plane ``Y = 0`` (road, side streets, grass beyond the kerbs) — handled analytically by the renderer;
* an axis-aligned box (buildings, sidewalks, walls, fences, poles, sign plates, car bodies, people's limbs …);
* an axis-aligned ellipsoid (tree crowns, heads, round signs, bicycle wheels), stored by its bounding box.

Movers (cars, buses, trucks, people, cyclists) translate at constant velocity and never rotate, so each of their
primitives stays axis-aligned: at time ``tau`` (seconds) a mover's primitives are offset by ``velocity * tau``.
The *local* coordinates of a surface point are its world position at time 0; textures are functions of local
coordinates, so they stick to the surfaces as the camera and the movers move.

``build_scene(seed, params)`` draws a scene from ``np.random.default_rng(seed)``; every field of ``SceneParams``
left ``None`` is drawn at random, a field that is set is used as given (that is how the hand-composed example
scenes are made).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np

from ...labels import NAME_TO_ID

__all__ = ["Material", "SceneParams", "Scene", "build_scene", "FRAME_INTERVAL_S"]

FRAME_INTERVAL_S = 1.0 / 12.0  # seconds between consecutive frames of a clip
NUM_PARAMS = 6  # material parameters per primitive

ROAD, SIDEWALK, BUILDING, WALL, FENCE = (NAME_TO_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN, VEGETATION, TERRAIN = (
    NAME_TO_ID[n] for n in ("pole", "traffic light", "traffic sign", "vegetation", "terrain")
)
SKY, PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = (
    NAME_TO_ID[n] for n in ("sky", "person", "rider", "car", "truck", "bus", "bicycle")
)


class Material(IntEnum):
    """How a primitive is textured (see ``shading.py``); the ground and the sky have their own."""

    GROUND = 0
    SKY = 1
    SIDEWALK = 2
    GRASS = 3
    BUILDING = 4
    WALL = 5
    FENCE = 6
    METAL = 7  # poles, lamp arms, sign backs
    SIGN = 8
    TRAFFIC_LIGHT = 9
    BARK = 10
    FOLIAGE = 11
    CAR_BODY = 12
    CAR_CABIN = 13
    BUS = 14
    CLOTH = 15
    SKIN = 16
    WHEEL = 17


class Shape(IntEnum):
    BOX = 0
    ELLIPSOID = 1


@dataclass(frozen=True)
class SceneParams:
    """Knobs of the scene builder. ``None`` = draw at random from the seed."""

    camera_speed: float | None = None  # m/s along the street; 0 = standing still
    camera_yaw_deg: float | None = None  # heading of the camera relative to the street (+ = looking right)
    camera_yaw_rate_deg: float | None = None  # deg/s (steering)
    camera_pitch_deg: float | None = None  # + = looking down
    camera_height: float | None = None  # metres
    lanes_per_direction: int | None = None  # 1 or 2
    parking_lanes: bool | None = None
    sidewalk_width: float | None = None
    grass_strip: bool | None = None  # a terrain strip with trees between kerb and sidewalk
    crossing_at: float | None = None  # Z of a side street (m ahead of the camera); nan = none
    building_gap_prob: float | None = None  # chance that a block is left empty (fence / wall / hedge / lot)
    max_building_height: float | None = None
    tree_spacing: float | None = None  # metres between street trees; inf = no trees
    num_cars_ahead: int | None = None  # moving, same direction
    num_cars_oncoming: int | None = None
    num_parked_cars: int | None = None
    num_people: int | None = None
    num_cyclists: int | None = None
    heavy_vehicle_prob: float | None = None  # chance that a moving vehicle is a bus or a truck
    people_walk: bool | None = None  # False = everybody stands still
    parking_lot: bool = False  # a wide open tarmac area with rows of parked cars on the right


@dataclass(frozen=True)
class Scene:
    """A scene as flat per-primitive arrays (N primitives; row N is the ground, row N+1 the sky)."""

    shape: np.ndarray  # (N,) Shape
    lo: np.ndarray  # (N, 3) bounding-box minimum at time 0 (world)
    hi: np.ndarray  # (N, 3) bounding-box maximum at time 0
    mover: np.ndarray  # (N+2,) index into ``velocity``, -1 for static
    group: np.ndarray  # (N+2,) rigid-body identity used by the occlusion test
    label: np.ndarray  # (N+2,) trainId (the ground's label is decided per pixel)
    material: np.ndarray  # (N+2,) Material
    color: np.ndarray  # (N+2, 3) base albedo in [0, 1]
    param: np.ndarray  # (N+2, NUM_PARAMS) material parameters (meaning depends on the material)
    velocity: np.ndarray  # (M, 3) m/s
    # Global look and layout.
    road_half_width: float
    lane_width: float
    lanes_per_direction: int
    parking_lane_width: float
    crossing: tuple[float, float] | None  # Z range of the side street
    crosswalk: tuple[float, float] | None  # Z range of the zebra crossing
    parking_lot: bool
    asphalt: np.ndarray  # (3,)
    grass: np.ndarray  # (3,)
    marking: np.ndarray  # (3,)
    sky_horizon: np.ndarray  # (3,)
    sky_zenith: np.ndarray  # (3,)
    sun_dir: np.ndarray  # (3,) unit, towards the sun
    sun_color: np.ndarray  # (3,)
    ambient: np.ndarray  # (3,)
    fog_distance: float  # metres; haze reaches 63 % at this distance
    noise_seed: int
    # Ego camera.
    camera_start: np.ndarray  # (3,) world position at time 0
    camera_speed: float
    camera_heading: float  # radians, direction of travel relative to +Z (+ = right)
    camera_yaw: float  # radians, viewing direction at time 0
    camera_yaw_rate: float  # rad/s
    camera_pitch: float  # radians

    @property
    def num_prims(self) -> int:
        return len(self.shape)

    def offsets(self, tau: float) -> np.ndarray:
        """Translation of every primitive row (N+2, 3) at time ``tau`` seconds."""
        moved = np.concatenate([self.velocity * tau, np.zeros((1, 3))])  # last row: static
        return moved[self.mover]  # mover == -1 → the zero row

    def camera_position(self, tau: float) -> np.ndarray:
        d = np.array([np.sin(self.camera_heading), 0.0, np.cos(self.camera_heading)])
        return self.camera_start + self.camera_speed * tau * d

    def camera_yaw_at(self, tau: float) -> float:
        return self.camera_yaw + self.camera_yaw_rate * tau


@dataclass
class _Builder:
    """Accumulates primitives; ``finish`` turns them into a ``Scene``."""

    rows: list = field(default_factory=list)
    velocities: list = field(default_factory=list)
    next_group: int = 2  # 0 = ground, 1 = sky

    def new_mover(self, velocity) -> tuple[int, int]:
        self.velocities.append(np.asarray(velocity, float))
        g = self.next_group
        self.next_group += 1
        return len(self.velocities) - 1, g

    def add(self, shape, lo, hi, label, material, color, param=(0,) * NUM_PARAMS, mover=-1, group=None):
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        if np.any(hi <= lo):
            return
        if group is None:
            group = self.next_group
            self.next_group += 1
        padded = np.zeros(NUM_PARAMS)
        padded[: len(param)] = param
        self.rows.append((int(shape), lo, hi, mover, group, label, int(material), np.asarray(color, float), padded))

    def box(self, lo, hi, label, material, color, param=(0,) * NUM_PARAMS, mover=-1, group=None):
        self.add(Shape.BOX, lo, hi, label, material, color, param, mover, group)

    def ellipsoid(self, center, radii, label, material, color, param=(0,) * NUM_PARAMS, mover=-1, group=None):
        c, r = np.asarray(center, float), np.asarray(radii, float)
        self.add(Shape.ELLIPSOID, c - r, c + r, label, material, color, param, mover, group)


def _jitter(rng, base, amount):
    return np.clip(np.asarray(base, float) * (1.0 + rng.uniform(-amount, amount, 3)), 0.0, 1.0)


FACADE_COLORS = np.array([
    [0.72, 0.66, 0.56], [0.62, 0.60, 0.58], [0.55, 0.33, 0.26], [0.80, 0.78, 0.72], [0.48, 0.44, 0.40],
    [0.70, 0.55, 0.40], [0.58, 0.62, 0.66], [0.76, 0.70, 0.52], [0.40, 0.38, 0.40], [0.66, 0.48, 0.42],
])
CAR_COLORS = np.array([
    [0.85, 0.85, 0.85], [0.08, 0.08, 0.09], [0.45, 0.46, 0.48], [0.62, 0.63, 0.65], [0.55, 0.08, 0.07],
    [0.10, 0.18, 0.45], [0.12, 0.28, 0.16], [0.75, 0.70, 0.55], [0.25, 0.25, 0.28], [0.80, 0.55, 0.10],
])
CLOTH_COLORS = np.array([
    [0.10, 0.10, 0.12], [0.20, 0.22, 0.35], [0.55, 0.10, 0.10], [0.75, 0.75, 0.72], [0.35, 0.30, 0.22],
    [0.15, 0.30, 0.20], [0.60, 0.50, 0.30], [0.25, 0.25, 0.25], [0.45, 0.20, 0.40], [0.15, 0.35, 0.55],
])
SKIN_COLORS = np.array([[0.87, 0.69, 0.56], [0.70, 0.50, 0.36], [0.45, 0.30, 0.20], [0.95, 0.80, 0.68]])


def _pick(rng, table, amount=0.08):
    return _jitter(rng, table[rng.integers(len(table))], amount)


def _add_building(b: _Builder, rng, side: int, z0: float, z1: float, x_front: float, height: float):
    """A block of flats: one box whose street facade sits at |X| = x_front."""
    depth = rng.uniform(12, 20)
    xa, xb = (x_front, x_front + depth) if side > 0 else (-x_front - depth, -x_front)
    floor_h = rng.uniform(2.9, 3.6)
    spacing = rng.uniform(1.6, 3.2)
    win_w = rng.uniform(0.35, 0.6) * spacing
    win_h = rng.uniform(0.4, 0.6) * floor_h
    shop = float(rng.random() < 0.5)
    color = _pick(rng, FACADE_COLORS, 0.1)
    b.box((xa, 0.0, z0), (xb, height, z1), BUILDING, Material.BUILDING, color,
          (floor_h, spacing, win_w, win_h, shop, rng.uniform(0, 1000)))


def _add_person(b: _Builder, rng, x, z, vel, label=PERSON, y0=0.0, seated=False):
    """A pedestrian (or a rider when ``seated``): two legs, a torso and a head, moving as one body."""
    mover, group = b.new_mover(vel)
    h = rng.uniform(1.6, 1.9)
    skin, shirt, trousers = _pick(rng, SKIN_COLORS, 0.05), _pick(rng, CLOTH_COLORS, 0.15), _pick(rng, CLOTH_COLORS)
    hair = _pick(rng, CLOTH_COLORS[[0, 4, 7]], 0.2)
    leg_h = 0.47 * h
    # Walking along Z: the body is thinner in X; walking along X (a zebra crossing): thinner in Z.
    along_x = abs(vel[0]) > abs(vel[2])
    wx, wz = (0.2, 0.42) if along_x else (0.42, 0.2)
    if not seated:
        for s in (-1, 1):  # two legs with a gap
            off = 0.06 * s
            lo = (x + off - 0.08, y0, z - 0.1) if not along_x else (x - 0.1, y0, z + off - 0.08)
            hi = (x + off + 0.08, y0 + leg_h, z + 0.1) if not along_x else (x + 0.1, y0 + leg_h, z + off + 0.08)
            if s > 0:  # stride: one leg ahead of the other in the walking direction
                d = 0.12 * np.sign(vel[2] if not along_x else vel[0])
                k = 2 if not along_x else 0
                lo, hi = list(lo), list(hi)
                lo[k] += d
                hi[k] += d
            b.box(lo, hi, label, Material.CLOTH, trousers, mover=mover, group=group)
    torso_lo = y0 + (leg_h if not seated else 0.0)
    torso_hi = torso_lo + 0.36 * h
    b.box((x - wx / 2, torso_lo, z - wz / 2), (x + wx / 2, torso_hi, z + wz / 2), label, Material.CLOTH, shirt,
          mover=mover, group=group)
    hr = 0.11 * h / 1.75
    b.ellipsoid((x, torso_hi + hr * 1.05, z), (hr * 0.85, hr * 1.1, hr * 0.9), label, Material.SKIN, skin,
                (hair[0], hair[1], hair[2], 0), mover=mover, group=group)


def _add_car(b: _Builder, rng, x, z, vel, heavy_prob=0.0, rear_at_z=False):
    """A car (lower body + cabin), or a bus or a truck, centred at ``z`` (or with its rear end at ``z``).

    Returns the vehicle's length (along Z).
    """
    mover, group = b.new_mover(vel)
    r = rng.random()
    lengths = rng.uniform([10.0, 6.5, 3.9], [12.5, 8.5, 4.8])  # bus, truck, car
    kind = 0 if r < heavy_prob * 0.5 else 1 if r < heavy_prob else 2
    if rear_at_z:
        z = z + lengths[kind] / 2
    if kind == 0:  # bus
        L, W, H = lengths[0], 2.5, rng.uniform(2.9, 3.3)
        color = _pick(rng, np.array([[0.85, 0.75, 0.15], [0.75, 0.1, 0.1], [0.9, 0.9, 0.9], [0.15, 0.35, 0.6]]))
        b.box((x - W / 2, 0.05, z - L / 2), (x + W / 2, H, z + L / 2), BUS, Material.BUS, color, (L, 0, 0, 0),
              mover=mover, group=group)
        return L
    if kind == 1:  # truck: cab + cargo box
        L, W = lengths[1], 2.4
        cab_l = 2.0
        color = _pick(rng, CAR_COLORS)
        cargo = _pick(rng, np.array([[0.9, 0.9, 0.88], [0.6, 0.6, 0.62], [0.3, 0.4, 0.6]]))
        front = np.sign(vel[2]) if vel[2] != 0 else 1.0
        zc = z + front * (L / 2 - cab_l / 2)
        b.box((x - W / 2, 0.05, zc - cab_l / 2), (x + W / 2, 2.7, zc + cab_l / 2), TRUCK, Material.BUS, color,
              (cab_l, 1, 0, 0), mover=mover, group=group)
        zk = z - front * (cab_l / 2 + 0.15)
        b.box((x - W / 2, 0.05, zk - (L - cab_l) / 2), (x + W / 2, rng.uniform(3.0, 3.6), zk + (L - cab_l) / 2),
              TRUCK, Material.BUS, cargo, (L - cab_l, 2, 0, 0), mover=mover, group=group)
        return L
    L, W = lengths[2], rng.uniform(1.7, 1.9)
    body_h = rng.uniform(0.9, 1.05)
    cab_h = rng.uniform(0.45, 0.6)
    color = _pick(rng, CAR_COLORS, 0.1)
    front = np.sign(vel[2]) if vel[2] != 0 else rng.choice([-1.0, 1.0])
    b.box((x - W / 2, 0.02, z - L / 2), (x + W / 2, body_h, z + L / 2), CAR, Material.CAR_BODY, color,
          (front, L, 0, 0), mover=mover, group=group)
    cab_l = L * rng.uniform(0.5, 0.6)
    zc = z - front * L * 0.06
    b.box((x - W / 2 + 0.08, body_h, zc - cab_l / 2), (x + W / 2 - 0.08, body_h + cab_h, zc + cab_l / 2), CAR,
          Material.CAR_CABIN, color, (front, cab_l, 0, 0), mover=mover, group=group)
    return L


def _add_cyclist(b: _Builder, rng, x, z, vel):
    mover, group = b.new_mover(vel)
    frame = _pick(rng, CAR_COLORS, 0.1)
    for s in (-1, 1):
        b.ellipsoid((x, 0.34, z + 0.52 * s), (0.03, 0.34, 0.34), BICYCLE, Material.WHEEL, (0.08, 0.08, 0.08),
                    mover=mover, group=group)
    b.box((x - 0.03, 0.45, z - 0.45), (x + 0.03, 0.85, z + 0.45), BICYCLE, Material.METAL, frame,
          mover=mover, group=group)
    # The rider shares the bicycle's motion but is a separate rigid body for the occlusion test.
    _add_person_on(b, rng, x, z, mover, group)


def _add_person_on(b: _Builder, rng, x, z, mover, group):
    h = rng.uniform(1.6, 1.85)
    shirt, trousers = _pick(rng, CLOTH_COLORS, 0.15), _pick(rng, CLOTH_COLORS)
    skin, hair = _pick(rng, SKIN_COLORS, 0.05), _pick(rng, CLOTH_COLORS[[0, 4, 7]], 0.2)
    b.box((x - 0.16, 0.35, z - 0.12), (x + 0.16, 0.95, z + 0.12), RIDER, Material.CLOTH, trousers, mover=mover,
          group=group)
    b.box((x - 0.2, 0.95, z - 0.14), (x + 0.2, 0.95 + 0.36 * h, z + 0.14), RIDER, Material.CLOTH, shirt,
          mover=mover, group=group)
    top = 0.95 + 0.36 * h
    b.ellipsoid((x, top + 0.12, z), (0.1, 0.13, 0.11), RIDER, Material.SKIN, skin, (hair[0], hair[1], hair[2], 0),
                mover=mover, group=group)


def _add_tree(b: _Builder, rng, x, z, scale=1.0):
    trunk_h = rng.uniform(2.0, 3.2) * scale
    tw = rng.uniform(0.12, 0.2) * scale
    b.box((x - tw, 0.0, z - tw), (x + tw, trunk_h + 0.6, z + tw), VEGETATION, Material.BARK,
          _jitter(rng, (0.33, 0.26, 0.2), 0.15))
    rh = rng.uniform(1.3, 2.6) * scale
    rv = rh * rng.uniform(0.9, 1.4)
    green = _jitter(rng, rng.choice(np.array([[0.25, 0.38, 0.12], [0.18, 0.32, 0.12], [0.35, 0.40, 0.15],
                                                [0.45, 0.40, 0.12]])), 0.12)
    b.ellipsoid((x, trunk_h + rv * 0.8, z), (rh, rv, rh), VEGETATION, Material.FOLIAGE, green,
                (rng.uniform(0, 1000), 0, 0, 0))
    for _ in range(rng.integers(0, 3)):
        d = rng.normal(0, rh * 0.45, 3)
        b.ellipsoid((x + d[0], trunk_h + rv * 0.8 + d[1] * 0.5, z + d[2]), (rh * 0.7, rv * 0.7, rh * 0.7),
                    VEGETATION, Material.FOLIAGE, _jitter(rng, green, 0.08), (rng.uniform(0, 1000), 0, 0, 0))


def _add_pole(b: _Builder, rng, x, z, side, kind):
    """A street lamp, a traffic sign or a traffic light standing at (x, z)."""
    grey = _jitter(rng, (0.45, 0.46, 0.47), 0.2)
    w = 0.08
    if kind == "lamp":
        h = rng.uniform(6.0, 8.5)
        b.box((x - w, 0, z - w), (x + w, h, z + w), POLE, Material.METAL, grey)
        arm = rng.uniform(1.0, 2.0)
        xa = x - side * arm
        b.box((min(x, xa) - 0.04, h - 0.12, z - 0.04), (max(x, xa) + 0.04, h, z + 0.04), POLE, Material.METAL, grey)
        b.box((xa - 0.3, h - 0.22, z - 0.15), (xa + 0.3, h - 0.05, z + 0.15), POLE, Material.METAL,
              _jitter(rng, (0.3, 0.3, 0.3), 0.1))
    elif kind == "sign":
        h = rng.uniform(2.2, 2.8)
        b.box((x - 0.04, 0, z - 0.04), (x + 0.04, h, z + 0.04), POLE, Material.METAL, grey)
        style = int(rng.integers(0, 4))
        face = -1.0 if side > 0 else 1.0  # signs face the traffic on their side of the road
        zf = z + face * 0.06
        if style < 2:  # round plate
            b.ellipsoid((x, h + 0.3, zf), (0.32, 0.32, 0.02), SIGN, Material.SIGN, (0.5, 0.5, 0.5), (style, face, 0, 0))
        else:  # square plate
            b.box((x - 0.3, h, zf - 0.02), (x + 0.3, h + 0.6, zf + 0.02), SIGN, Material.SIGN, (0.5, 0.5, 0.5),
                  (style, face, 0, 0))
    else:  # traffic light
        h = rng.uniform(2.6, 3.2)
        b.box((x - 0.06, 0, z - 0.06), (x + 0.06, h, z + 0.06), POLE, Material.METAL, grey)
        face = -1.0 if side > 0 else 1.0
        b.box((x - 0.17, h, z - 0.15), (x + 0.17, h + 0.95, z + 0.15), LIGHT, Material.TRAFFIC_LIGHT,
              (0.08, 0.08, 0.08), (int(rng.integers(0, 3)), face, 0, 0))


def build_scene(seed: int, params: SceneParams | None = None) -> Scene:
    """Draw a street scene for ``seed``; fields of ``params`` that are set override the random draws."""
    rng = np.random.default_rng(seed)
    p = params or SceneParams()

    def pick(value, draw):
        return draw() if value is None else value

    # --- ego camera ---------------------------------------------------------------------------------------------
    speed = float(pick(p.camera_speed, lambda: 0.0 if rng.random() < 0.2 else rng.uniform(3.0, 13.0)))
    yaw = np.radians(pick(p.camera_yaw_deg, lambda: rng.uniform(-5, 5)))
    yaw_rate = np.radians(pick(p.camera_yaw_rate_deg, lambda: 0.0 if speed == 0 else rng.uniform(-3, 3)))
    pitch = np.radians(pick(p.camera_pitch_deg, lambda: rng.uniform(2.0, 4.5)))
    cam_h = float(pick(p.camera_height, lambda: rng.uniform(1.3, 1.7)))

    # --- street layout ------------------------------------------------------------------------------------------
    lanes = int(pick(p.lanes_per_direction, lambda: int(rng.integers(1, 3))))
    lane_w = rng.uniform(3.0, 3.5)
    parking = bool(pick(p.parking_lanes, lambda: rng.random() < 0.6))
    park_w = 2.3 if parking else 0.4
    road_half = lanes * lane_w + park_w
    sidewalk_w = float(pick(p.sidewalk_width, lambda: rng.uniform(2.5, 5.0)))
    grass = bool(pick(p.grass_strip, lambda: rng.random() < 0.35))
    crossing_z = pick(p.crossing_at, lambda: rng.uniform(22, 70) if rng.random() < 0.45 else np.nan)
    crossing = None if not np.isfinite(crossing_z) else (float(crossing_z), float(crossing_z + rng.uniform(8, 12)))
    crosswalk = None if crossing is None else (crossing[0] - 4.0, crossing[0] - 1.0)
    gap_prob = float(pick(p.building_gap_prob, lambda: rng.uniform(0.05, 0.3)))
    max_h = float(pick(p.max_building_height, lambda: rng.uniform(10, 32)))
    tree_spacing = float(pick(p.tree_spacing, lambda: rng.choice([np.inf, rng.uniform(6, 14), rng.uniform(14, 30)])))
    lane_x = (np.arange(lanes) + 0.5) * lane_w  # centres of the right-hand lanes
    ego_lane = int(rng.integers(lanes))
    heading = np.radians(rng.uniform(-0.6, 0.6)) if speed > 0 else 0.0

    b = _Builder()
    z_min, z_max = -40.0, 240.0
    lot_w = 26.0 if p.parking_lot else 0.0

    def in_crossing(z0, z1):
        return crossing is not None and z1 > crossing[0] - 1.5 and z0 < crossing[1] + 1.5

    # --- sidewalks (raised 15 cm; the kerb is the box's face towards the road) ---------------------------------
    kerb_h = 0.15
    pave = _jitter(rng, rng.choice(np.array([[0.62, 0.6, 0.58], [0.55, 0.52, 0.5], [0.68, 0.62, 0.55]])), 0.08)
    for side in (-1, 1):
        x_in = road_half + (lot_w if side > 0 else 0.0)
        x_out = x_in + sidewalk_w
        spans = [(z_min, z_max)] if crossing is None else [(z_min, crossing[0]), (crossing[1], z_max)]
        for z0, z1 in spans:
            lo, hi = (x_in, 0.0, z0), (x_out + 0.3, kerb_h, z1)  # beyond it: front yards, lots (terrain)
            if side < 0:
                lo, hi = (-x_out - 0.3, 0.0, z0), (-x_in, kerb_h, z1)
            b.box(lo, hi, SIDEWALK, Material.SIDEWALK, pave)
            if grass:  # a terrain strip inside the sidewalk, next to the kerb
                g0, g1 = x_in + 0.4, x_in + 1.6
                glo, ghi = (g0, 0.0, z0 + 1.0), (g1, kerb_h + 0.04, z1 - 1.0)
                if side < 0:
                    glo, ghi = (-g1, 0.0, z0 + 1.0), (-g0, kerb_h + 0.04, z1 - 1.0)
                b.box(glo, ghi, TERRAIN, Material.GRASS, _jitter(rng, (0.3, 0.42, 0.16), 0.15))

    # --- buildings, gaps with walls / fences / hedges -------------------------------------------------------------
    for side in (-1, 1):
        line = road_half + (lot_w if side > 0 else 0.0) + sidewalk_w
        z = z_min + rng.uniform(-10, 0)
        while z < z_max:
            length = rng.uniform(8, 30)
            z0, z1 = z, z + length
            if in_crossing(z0, z1):
                z = crossing[1] + 1.5 + rng.uniform(0, 4)
                continue
            if rng.random() < gap_prob:
                kind = rng.choice(["fence", "wall", "hedge", "open"])
                x0 = line + rng.uniform(0.0, 0.5)
                xs = (x0, x0 + 0.15) if side > 0 else (-x0 - 0.15, -x0)
                height = rng.uniform(0.9, 2.2)
                if kind == "fence":
                    b.box((xs[0], 0, z0), (xs[1], height, z1), FENCE, Material.FENCE,
                          _pick(rng, np.array([[0.45, 0.35, 0.25], [0.35, 0.38, 0.36], [0.6, 0.6, 0.58]])),
                          (rng.uniform(0.1, 0.25), 0, 0, 0))
                elif kind == "wall":
                    b.box((xs[0], 0, z0), (xs[1], height, z1), WALL, Material.WALL,
                          _pick(rng, FACADE_COLORS, 0.1), (rng.uniform(1.5, 3.0), 0, 0, 0))
                elif kind == "hedge":
                    hx = (x0, x0 + 0.9) if side > 0 else (-x0 - 0.9, -x0)
                    b.box((hx[0], 0, z0), (hx[1], rng.uniform(1.0, 1.8), z1), VEGETATION, Material.FOLIAGE,
                          _jitter(rng, (0.2, 0.33, 0.12), 0.15), (rng.uniform(0, 1000), 1, 0, 0))
                # Something farther back fills the gap: a lower building or trees.
                if rng.random() < 0.6:
                    _add_building(b, rng, side, z0 + 1, z1 - 1, line + rng.uniform(8, 20), rng.uniform(6, max_h))
                else:
                    for zt in np.arange(z0 + 2, z1 - 1, rng.uniform(3, 6)):
                        _add_tree(b, rng, side * (line + rng.uniform(2, 8)), zt, scale=rng.uniform(1.0, 1.6))
            else:
                setback = 0.0 if rng.random() < 0.65 else rng.uniform(1.0, 4.0)
                height = rng.uniform(6.0, max(max_h, 7.0))
                _add_building(b, rng, side, z0, z1, line + setback, height)
                if setback > 1.5 and rng.random() < 0.6:  # a front yard behind a low fence
                    x0 = line + 0.1
                    xs = (x0, x0 + 0.08) if side > 0 else (-x0 - 0.08, -x0)
                    b.box((xs[0], 0, z0), (xs[1], rng.uniform(0.8, 1.3), z1), FENCE, Material.FENCE,
                          _pick(rng, np.array([[0.25, 0.25, 0.25], [0.5, 0.4, 0.3]])), (rng.uniform(0.1, 0.2), 0, 0, 0))
            z = z1 + (0.0 if rng.random() < 0.7 else rng.uniform(0.5, 3.0))

    # --- street furniture and trees ------------------------------------------------------------------------------
    for side in (-1, 1):
        x_kerb = road_half + (lot_w if side > 0 else 0.0)
        z = z_min + rng.uniform(0, 20)
        while z < z_max:
            if not in_crossing(z - 1, z + 1):
                kind = rng.choice(["lamp", "lamp", "sign"])
                _add_pole(b, rng, side * (x_kerb + 0.45), z, side, kind)
            z += rng.uniform(18, 35)
        if np.isfinite(tree_spacing):
            z = z_min + rng.uniform(0, tree_spacing)
            while z < z_max:
                if not in_crossing(z - 3, z + 3):
                    xt = x_kerb + (1.0 if grass else rng.uniform(0.9, 1.4))
                    _add_tree(b, rng, side * xt, z)
                z += tree_spacing * rng.uniform(0.8, 1.2)
    if crossing is not None:  # traffic lights at the four corners
        for side in (-1, 1):
            x = side * (road_half + (lot_w if side > 0 else 0.0) + 0.5)
            _add_pole(b, rng, x, crossing[0] - 0.5 if side > 0 else crossing[1] + 0.5, side, "light")

    # --- vehicles ---------------------------------------------------------------------------------------------
    heavy = float(pick(p.heavy_vehicle_prob, lambda: rng.uniform(0.0, 0.3)))
    tau_end = 9 * FRAME_INTERVAL_S * 1.5  # a little longer than a clip, for safety margins
    n_ahead = int(pick(p.num_cars_ahead, lambda: int(rng.integers(0, 5))))
    for lane in range(lanes):
        z, v_prev = rng.uniform(8, 20), None
        for _ in range(n_ahead if lane == ego_lane else int(rng.integers(0, n_ahead + 1))):
            v = max(0.0, speed * rng.uniform(0.8, 1.2) + rng.uniform(-2, 2)) if speed > 0 else rng.choice(
                [0.0, rng.uniform(3, 12)])
            if lane == ego_lane:  # never let the camera run into the car ahead
                z = max(z, 7.0 + max(0.0, speed - v) * tau_end + 3.0)
            if v_prev is not None:  # nor two cars of a lane into each other
                z += max(0.0, v - v_prev) * tau_end
            L = _add_car(b, rng, lane_x[lane] + rng.uniform(-0.3, 0.3), z, (0, 0, v), heavy, rear_at_z=True)
            z, v_prev = z + L + rng.uniform(6, 30), v
    n_on = int(pick(p.num_cars_oncoming, lambda: int(rng.integers(0, 6))))
    for i in range(n_on):
        lane = int(rng.integers(lanes))
        v = rng.uniform(4, 13)
        z = rng.uniform(5, 120)
        _add_car(b, rng, -lane_x[lane] + rng.uniform(-0.3, 0.3), z, (0, 0, -v), heavy)
    n_parked = int(pick(p.num_parked_cars, lambda: int(rng.integers(2, 14)) if parking else 0))
    if n_parked and (parking or p.parking_lot):
        for side in (-1, 1):
            z = rng.uniform(-25, 0)
            placed = 0
            while z < 150 and placed < (n_parked + (side > 0)) // 2:
                if not in_crossing(z - 3, z + 3) and not (crosswalk and crosswalk[0] - 4 < z < crosswalk[1] + 2):
                    x = side * (road_half - park_w / 2 - 0.1) if parking else side * (road_half - 1.2)
                    z += _add_car(b, rng, x + rng.uniform(-0.1, 0.1), z, (0, 0, 0.0))
                    placed += 1
                z += rng.uniform(1.0, 12.0)
    if p.parking_lot:  # rows of parked cars on the open tarmac to the right
        for row_x in np.arange(road_half + 3.0, road_half + lot_w - 2.0, 5.5):
            for zc in np.arange(rng.uniform(5, 9), 90, 5.6):
                if rng.random() < 0.75:
                    _add_car(b, rng, row_x + rng.uniform(-0.2, 0.2), zc, (0, 0, 0.0))

    # --- people and cyclists ------------------------------------------------------------------------------------
    walk = p.people_walk
    n_people = int(pick(p.num_people, lambda: int(rng.integers(0, 12))))
    for _ in range(n_people):
        side = rng.choice([-1, 1])
        x_in = road_half + (lot_w if side > 0 else 0.0) + (1.8 if grass else 0.5)
        x = side * rng.uniform(x_in, x_in + max(sidewalk_w - (2.0 if grass else 0.8), 0.3))
        moving = (rng.random() < 0.75) if walk is None else walk
        v = rng.uniform(0.8, 1.8) * rng.choice([-1, 1]) if moving else 0.0
        z = rng.uniform(3, 60)
        if crosswalk is not None and rng.random() < 0.3:  # crossing the street on the zebra
            x = rng.uniform(-road_half, road_half)
            z = rng.uniform(*crosswalk)
            _add_person(b, rng, x, z, (v, 0, 0), y0=0.0)
        else:
            _add_person(b, rng, x, z, (0, 0, v), y0=kerb_h)
    n_cyc = int(pick(p.num_cyclists, lambda: int(rng.integers(0, 2))))
    for _ in range(n_cyc):
        x = lanes * lane_w + (park_w - 0.6 if not parking else 0.5)
        v = rng.uniform(3, 7)
        z = 12.0 + max(0.0, speed - v) * tau_end + rng.uniform(0, 30)
        _add_cyclist(b, rng, x if rng.random() < 0.7 else -x, z, (0, 0, v))

    # --- global look --------------------------------------------------------------------------------------------
    sun_el, sun_az = np.radians(rng.uniform(15, 65)), rng.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el), np.cos(sun_el) * np.cos(sun_az)])
    overcast = rng.random() < 0.35
    zenith = _jitter(rng, (0.35, 0.55, 0.85) if not overcast else (0.62, 0.66, 0.7), 0.1)
    horizon = _jitter(rng, (0.75, 0.82, 0.9) if not overcast else (0.78, 0.79, 0.8), 0.05)
    sun_color = _jitter(rng, (1.0, 0.95, 0.85), 0.05) * (rng.uniform(0.7, 1.0) if not overcast else 0.3)
    ambient = _jitter(rng, (0.45, 0.5, 0.58), 0.1) * (1.0 if not overcast else 1.6)

    n = len(b.rows)
    if n == 0:
        raise ValueError("The scene is empty.")
    cols = list(zip(*b.rows))
    extra = lambda arr, ground, sky: np.concatenate([np.asarray(arr), np.asarray([ground, sky])])  # noqa: E731
    scene = Scene(
        shape=np.array(cols[0], np.int64),
        lo=np.stack(cols[1]),
        hi=np.stack(cols[2]),
        mover=extra(np.array(cols[3], np.int64), -1, -1),
        group=extra(np.array(cols[4], np.int64), 0, 1),
        label=extra(np.array(cols[5], np.uint8), ROAD, SKY).astype(np.uint8),
        material=extra(np.array(cols[6], np.int64), Material.GROUND, Material.SKY),
        color=np.concatenate([np.stack(cols[7]), np.zeros((2, 3))]),
        param=np.concatenate([np.stack(cols[8]), np.zeros((2, NUM_PARAMS))]),
        velocity=np.array(b.velocities, float).reshape(-1, 3),
        road_half_width=float(road_half),
        lane_width=float(lane_w),
        lanes_per_direction=lanes,
        parking_lane_width=float(park_w),
        crossing=crossing,
        crosswalk=crosswalk,
        parking_lot=bool(p.parking_lot),
        asphalt=_jitter(rng, rng.choice(np.array([[0.3, 0.3, 0.31], [0.36, 0.35, 0.34], [0.24, 0.24, 0.26]])), 0.05),
        grass=_jitter(rng, (0.3, 0.4, 0.15), 0.15),
        marking=_jitter(rng, (0.85, 0.85, 0.82), 0.05),
        sky_horizon=horizon,
        sky_zenith=zenith,
        sun_dir=sun,
        sun_color=sun_color,
        ambient=ambient,
        fog_distance=float(rng.uniform(120, 400)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
        camera_start=np.array([lane_x[ego_lane] + rng.uniform(-0.3, 0.3), cam_h, 0.0]),
        camera_speed=speed,
        camera_heading=float(heading),
        camera_yaw=float(yaw),
        camera_yaw_rate=float(yaw_rate),
        camera_pitch=float(pitch),
    )
    return scene


def with_params(params: SceneParams, **changes) -> SceneParams:
    """A copy of ``params`` with some fields changed (convenience for presets)."""
    return replace(params, **changes)
