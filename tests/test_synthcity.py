"""SynthCity: ground-truth flow and occlusion agree with the rendered frames (DESIGN.md convention)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from seg2vid.data.synthcity import SceneParams, render_clip
from seg2vid.labels import NAME_TO_ID
from seg2vid.warp import warp

SIZE = (64, 128)
STILL = SceneParams(camera_speed=0.0, num_cars_ahead=0, num_cars_oncoming=0, num_people=0, num_cyclists=0)


def _warp_errors(clip, direction):
    """Mean abs error (0–1) and label agreement of warping along ``direction`` flows, on visible pixels."""
    frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).double() / 255.0
    labels = torch.from_numpy(clip.labels).double().unsqueeze(1)
    T = clip.flow_bwd.shape[0]
    first, first_l = frames[:1].expand(T, -1, -1, -1), labels[:1].expand(T, -1, -1, -1)
    if direction == "backward":  # I_t(x) ≈ I_0(x + w^b_t(x))
        flow, occ = clip.flow_bwd, clip.occ_bwd
        src, src_l, tgt, tgt_l = first, first_l, frames[1:], labels[1:]
    else:  # I_0(x) ≈ I_t(x + w^f_t(x))
        flow, occ = clip.flow_fwd, clip.occ_fwd
        src, src_l, tgt, tgt_l = frames[1:], labels[1:], first, first_l
    fl = torch.from_numpy(flow).permute(0, 3, 1, 2).double()
    vis = torch.from_numpy(occ).bool()
    err = (warp(src, fl) - tgt).abs().mean(1)[vis]
    agree = (warp(src_l, fl, mode="nearest") == tgt_l)[:, 0][vis]
    return err, agree


@pytest.fixture(scope="module")
def clips():
    return [render_clip(seed, size=SIZE) for seed in (1, 2, 4)]


def test_shapes_dtypes_and_ranges(clips):
    c = clips[0]
    H, W = SIZE
    assert c.frames.shape == (9, H, W, 3) and c.frames.dtype == np.uint8
    assert c.labels.shape == (9, H, W) and c.labels.dtype == np.uint8 and c.labels.max() < 19
    for f in (c.flow_fwd, c.flow_bwd):
        assert f.shape == (8, H, W, 2) and f.dtype == np.float32 and np.isfinite(f).all()
    for o in (c.occ_fwd, c.occ_bwd):
        assert o.shape == (8, H, W) and set(np.unique(o)) <= {0, 1}


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_warp_consistency(clips, direction):
    errs, agrees = zip(*(_warp_errors(c, direction) for c in clips))
    err, agree = torch.cat(errs), torch.cat(agrees)
    assert err.numel() > 0.4 * len(clips) * 8 * SIZE[0] * SIZE[1]  # most pixels keep a correspondence
    assert err.mean() <= 0.04
    assert agree.double().mean() >= 0.97


def test_visible_pixels_land_inside_the_frame(clips):
    H, W = SIZE
    for c in clips:
        for flow, occ in ((c.flow_bwd, c.occ_bwd), (c.flow_fwd, c.occ_fwd)):
            x = np.arange(W)[None, None, :] + flow[..., 0]
            y = np.arange(H)[None, :, None] + flow[..., 1]
            inside = (x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)
            assert not (occ.astype(bool) & ~inside).any()


def test_moving_camera_occludes_what_leaves_the_frame():
    c = render_clip(3, size=SIZE, params=SceneParams(camera_speed=12.0, camera_yaw_rate_deg=0.0))
    # Driving forwards, the border of frame 0 leaves the view: forward occlusion there, little of it backwards.
    border = np.zeros(SIZE, bool)
    border[:, :3] = border[:, -3:] = True
    assert c.occ_fwd[-1][border].mean() < 0.5
    assert c.occ_bwd[-1].mean() > c.occ_fwd[-1].mean()


def test_standing_still_without_movers_has_exactly_zero_flow():
    c = render_clip(5, size=SIZE, params=STILL)
    assert c.camera_speed == 0.0 and c.num_movers == 0
    assert (c.flow_fwd == 0).all() and (c.flow_bwd == 0).all()
    assert (c.occ_fwd == 1).all() and (c.occ_bwd == 1).all()
    assert (c.frames == c.frames[0]).all() and (c.labels == c.labels[0]).all()


def test_background_expands_from_the_vanishing_point():
    c = render_clip(7, size=SIZE, params=SceneParams(camera_speed=10.0, camera_yaw_rate_deg=0.0))
    fx, fy = c.focus_of_expansion
    H, W = SIZE
    ys, xs = np.mgrid[0:H, 0:W]
    radial = np.stack([xs - fx, ys - fy], -1)  # (H, W, 2) pointing away from the focus of expansion
    far = np.hypot(*radial.transpose(2, 0, 1)) > 8
    static = np.isin(c.labels[0], [NAME_TO_ID["road"], NAME_TO_ID["building"], NAME_TO_ID["sidewalk"]])
    sel = far & static & c.occ_fwd[-1].astype(bool)
    outward = (c.flow_fwd[-1] * radial).sum(-1)[sel]  # frame 0 → frame 8: points move outwards
    assert sel.sum() > 500 and (outward > 0).mean() > 0.95
    inward = (c.flow_bwd[-1] * radial).sum(-1)  # frame 8 → frame 0: back towards the vanishing point
    sel_b = far & np.isin(c.labels[-1], [0, 1, 2]) & c.occ_bwd[-1].astype(bool)
    assert (inward[sel_b] < 0).mean() > 0.95


def test_movers_move_relative_to_their_surroundings():
    params = SceneParams(camera_speed=0.0, num_cars_oncoming=4, num_cars_ahead=2, num_parked_cars=0,
                         parking_lanes=False, num_people=10, people_walk=True)
    moved = 0
    for seed in (11, 12):
        c = render_clip(seed, size=SIZE, params=params)
        fg = c.labels[0] >= 11
        background = ~fg & c.occ_fwd[-1].astype(bool)
        assert (c.flow_fwd[-1][background] == 0).all()  # still camera: the background does not move
        mag = np.hypot(*c.flow_fwd[-1].transpose(2, 0, 1))
        for cls in ("car", "person"):
            m = c.labels[0] == NAME_TO_ID[cls]
            moved += int(m.any() and np.median(mag[m]) > 0.3)
    assert moved >= 3
    # With a moving camera, cars still move differently from the background around them.
    c = render_clip(13, size=SIZE, params=SceneParams(camera_speed=8.0, num_cars_oncoming=4, parking_lanes=False,
                                                        num_parked_cars=0))
    cars = c.labels[0] == NAME_TO_ID["car"]
    ring = ndimage.binary_dilation(cars, iterations=3) & ~cars & (c.labels[0] < 11)
    assert cars.sum() > 20 and ring.sum() > 20
    diff = np.abs(np.median(c.flow_fwd[-1][cars], 0) - np.median(c.flow_fwd[-1][ring], 0)).max()
    assert diff > 1.0


def test_deterministic_per_seed_and_different_across_seeds():
    a, b = render_clip(21, size=(32, 64)), render_clip(21, size=(32, 64))
    for name in ("frames", "labels", "flow_fwd", "flow_bwd", "occ_fwd", "occ_bwd"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = render_clip(22, size=(32, 64))
    assert not np.array_equal(a.frames, c.frames) and not np.array_equal(a.labels, c.labels)


def test_scenes_contain_the_street_classes():
    seen = set()
    for seed in range(6):
        seen |= set(np.unique(render_clip(seed, size=(48, 96), num_frames=2).labels[0]).tolist())
    for name in ("road", "sidewalk", "building", "pole", "vegetation", "sky", "car"):
        assert NAME_TO_ID[name] in seen, name


@pytest.mark.parametrize("kwargs", [dict(seed=-1), dict(seed=1.5), dict(size=(0, 64)), dict(size=(64,)),
                                    dict(size=(64, 99999)), dict(num_frames=1), dict(num_frames=True)])
def test_bad_arguments_raise_value_error(kwargs):
    args = dict(seed=0, size=(32, 64), num_frames=3) | kwargs
    with pytest.raises(ValueError):
        render_clip(**args)


def test_writer_cli_is_resumable_and_validates(tmp_path, capsys):
    from seg2vid.data.synthcity.writer import main, read_clip

    out = tmp_path / "ds"
    assert main(["--out", str(out), "--seeds", "3:5", "--size", "32x64", "--frames", "3"]) == 0
    files = sorted(p.name for p in (out / "0000003").iterdir())
    assert files == ["clip.json", "frame_00.png", "frame_01.png", "frame_02.png", "label_00.png", "label_01.png",
                     "label_02.png", "motion.npz"]
    stamp = (out / "0000003" / "motion.npz").stat().st_mtime_ns
    main(["--out", str(out), "--seeds", "3:6", "--size", "32x64", "--frames", "3"])
    assert (out / "0000003" / "motion.npz").stat().st_mtime_ns == stamp  # complete clips are skipped
    assert "wrote 1 clips" in capsys.readouterr().out
    stored, fresh = read_clip(out, 5), render_clip(5, size=(32, 64), num_frames=3)
    assert np.array_equal(stored.frames, fresh.frames) and np.array_equal(stored.labels, fresh.labels)
    assert np.abs(stored.flow_bwd - fresh.flow_bwd).max() < 0.05  # float16 storage
    assert np.array_equal(stored.occ_fwd, fresh.occ_fwd)
    for bad in (["--seeds", "5:1"], ["--size", "big"], ["--workers", "0"], ["--size", "64x64"]):
        with pytest.raises(SystemExit) as e:
            main(["--out", str(out), "--seeds", "0:2", "--size", "32x64", "--frames", "3"] + bad)
        assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
