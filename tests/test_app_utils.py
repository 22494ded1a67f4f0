"""The web app's pure helpers (seg2vid.app_utils): canvas ↔ label map, uploads, editing, z paths, visualisation."""

from __future__ import annotations

import itertools
import math
import os
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image

from seg2vid import Seg2VidPipeline, labels
from seg2vid import app_utils as U
from seg2vid.config import FlowPredictorConfig
from test_pipeline import tiny_models

TINY_SIZE = (32, 64)  # (H, W) of the tiny test model; the aspect ratio (1:2) of the real one


def tiny_pipeline(seed: int = 0) -> Seg2VidPipeline:
    """A randomly initialised 9-frame pipeline small enough to run in milliseconds (shared with the app tests).

    Its output heads get small random weights so that the latent codes visibly change the motion, as they do in
    a trained model.
    """
    return Seg2VidPipeline(*tiny_models(seed, size=TINY_SIZE, head_std=0.3, num_frames=8), device="cpu")


def blocky(size, seed: int = 0, classes=None) -> np.ndarray:
    """(H, W) trainIds: a street-like split plus random rectangles of random classes."""
    rng = np.random.default_rng(seed)
    h, w = size
    ids = np.full((h, w), labels.NAME_TO_ID["sky"], np.uint8)
    ids[h // 2 :] = labels.NAME_TO_ID["road"]
    pool = classes if classes is not None else range(labels.NUM_CLASSES)
    for _ in range(8):
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        ids[y : y + rng.integers(2, h // 2), x : x + rng.integers(2, w // 2)] = rng.choice(list(pool))
    return ids


def save_png(array: np.ndarray, path, mode: str | None = None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Palette, legend, default street


def test_palette_hex_matches_the_label_palette():
    colors = U.palette_hex()
    assert len(colors) == labels.NUM_CLASSES
    decoded = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], np.uint8)
    np.testing.assert_array_equal(decoded, labels.PALETTE)


def test_legend_names_every_class_in_its_group():
    html = U.legend_html()
    fg_part, bg_part = html.split("Foreground")[1], html.split("Foreground")[0]
    for i, name in enumerate(labels.CLASS_NAMES):
        assert f">{name}</span>" in (fg_part if i in labels.FG_IDS else bg_part)


@pytest.mark.parametrize("size", [(128, 256), (32, 64), (90, 200)])
def test_street_scene_is_sky_over_buildings_over_sidewalk_and_road(size):
    ids = U.street_scene(size)
    assert ids.shape == size and ids.dtype == np.uint8
    present = set(np.unique(ids).tolist())
    names = {labels.CLASS_NAMES[i] for i in present}
    assert names == {"sky", "building", "sidewalk", "road"}
    rows = np.arange(size[0])[:, None].repeat(size[1], 1)
    mean_row = {n: rows[ids == labels.NAME_TO_ID[n]].mean() for n in names}
    assert mean_row["sky"] < mean_row["building"] < mean_row["road"]
    assert ids[-1, size[1] // 2] == labels.NAME_TO_ID["road"]  # the road is in front of the camera
    assert ids[0, size[1] // 2] == labels.NAME_TO_ID["sky"]


def test_display_scale_targets_a_comfortable_canvas():
    assert U.display_scale((128, 256)) == 2
    assert U.display_scale((32, 64)) == 8
    assert U.display_scale((512, 1024)) == 1


# ----------------------------------------------------------------------------------------------------------------
# Canvas → label map


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_editor_value_round_trips_through_editor_to_ids(scale):
    ids = blocky((32, 64), seed=scale)
    value = U.editor_value(ids, scale)
    assert value["background"].shape == (32 * scale, 64 * scale, 3)
    np.testing.assert_array_equal(U.editor_to_ids(value, (32, 64)), ids)


def _rgba(rgb: np.ndarray, alpha: int = 255) -> np.ndarray:
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), alpha, np.uint8)], axis=-1)


def test_anti_aliased_stroke_edges_take_a_neighbouring_class_not_a_third_one():
    size = (64, 128)
    building, person = labels.NAME_TO_ID["building"], labels.NAME_TO_ID["person"]
    background = labels.colorize(np.full(size, building, np.uint8))
    brush = np.array(labels.CLASSES[person].color, np.float32)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    dist = np.hypot(yy - 32, xx - 64)
    coverage = np.clip((18.0 - dist) / 8.0, 0, 1)[..., None]  # a disk of radius 10, a soft 8-pixel rim
    composite = (coverage * brush + (1 - coverage) * background).round().astype(np.uint8)
    rim = (coverage[..., 0] > 0) & (coverage[..., 0] < 1)
    assert rim.sum() > 50
    # Snapping (even with labels' 5×5 boundary repair) turns half-covered pixels of a wide soft rim into a third
    # class (person over building → bicycle) …
    snapped = labels.decode_color(composite).ids
    assert labels.NAME_TO_ID["bicycle"] in snapped[rim]
    # … the canvas decoder gives them the class of the nearest exactly painted pixel instead.
    ids = U.editor_to_ids({"background": _rgba(background), "layers": [], "composite": _rgba(composite)}, size)
    assert set(np.unique(ids).tolist()) == {building, person}
    assert (ids[dist < 10] == person).all()
    assert (ids[dist > 18] == building).all()


def test_transparent_canvas_pixels_keep_the_background():
    bg_ids = blocky((32, 64), seed=3)
    background = _rgba(labels.colorize(bg_ids))
    composite = _rgba(labels.colorize(np.full_like(bg_ids, labels.NAME_TO_ID["car"])))
    composite[:, :32, 3] = 0  # left half transparent (RGB under it is arbitrary)
    composite[:, :32, :3] = 0
    ids = U.editor_to_ids({"background": background, "layers": [], "composite": composite}, (32, 64))
    np.testing.assert_array_equal(ids[:, :32], bg_ids[:, :32])
    assert (ids[:, 32:] == labels.NAME_TO_ID["car"]).all()


@pytest.mark.parametrize(
    "value",
    [None, {}, {"background": None, "layers": [], "composite": None},
     {"background": None, "layers": [], "composite": np.zeros((8, 16, 4), np.uint8)}],
)
def test_empty_canvas_is_a_clear_error(value):
    with pytest.raises(ValueError, match="canvas is empty"):
        U.editor_to_ids(value, (32, 64))


def test_canvas_without_any_class_colour_is_refused():
    grey = np.full((32, 64, 3), 200, np.uint8)  # 47 away from "pole" grey: snapped, but not a brush colour
    with pytest.raises(ValueError, match="class colours"):
        U.editor_to_ids({"background": grey, "layers": [], "composite": grey}, (32, 64))


# ----------------------------------------------------------------------------------------------------------------
# Aspect handling


def test_center_crop_box_keeps_the_largest_centred_box_of_the_target_aspect():
    assert U.center_crop_box((1024, 1024), (128, 256)) == (256, 0, 512, 1024)  # too tall: rows cropped
    assert U.center_crop_box((100, 400), (128, 256)) == (0, 100, 100, 200)  # too wide: columns cropped
    assert U.center_crop_box((64, 128), (128, 256)) == (0, 0, 64, 128)


def test_fit_ids_crops_the_centre_then_resizes_with_nearest_sampling():
    ids = np.full((64, 64), labels.NAME_TO_ID["building"], np.uint8)
    ids[:16] = labels.NAME_TO_ID["sky"]  # the top and bottom quarters fall outside a 1:2 centre crop
    ids[48:] = labels.NAME_TO_ID["road"]
    out, cropped = U.fit_ids(ids, (8, 16))
    assert cropped and out.shape == (8, 16)
    assert (out == labels.NAME_TO_ID["building"]).all()

    exact = blocky((64, 128), seed=5)
    out, cropped = U.fit_ids(exact, (32, 64))
    assert not cropped
    blocks = exact.reshape(32, 2, 64, 2).transpose(0, 2, 1, 3).reshape(32, 64, 4)
    assert (blocks == out[..., None]).any(axis=-1).all()  # nearest sampling: each pixel comes from its 2×2 block


# ----------------------------------------------------------------------------------------------------------------
# Uploads


def test_colour_grayscale_and_labelid_uploads_decode_to_the_same_map(tmp_path):
    size = (32, 64)
    ids = blocky((64, 128), seed=7)
    expected = U.fit_ids(ids, size)[0]
    color = U.read_label_upload(save_png(labels.colorize(ids), tmp_path / "color.png"), size)
    train = U.read_label_upload(save_png(ids, tmp_path / "train.png"), size)
    label_ids = np.array([c.label_id for c in labels.CLASSES], np.uint8)[ids]
    label = U.read_label_upload(save_png(label_ids, tmp_path / "label.png"), size)
    # a labelId map must hold a value only labelIds have (> 18) to be told apart from trainIds
    assert (label_ids > 18).any()
    for upload, source in ((color, "color"), (train, "trainId"), (label, "labelId")):
        assert upload.source == source
        assert upload.original_size == (64, 128) and not upload.cropped
        np.testing.assert_array_equal(upload.ids, expected)
    assert "128×64 colour label image" in color.describe(size)


def test_off_palette_share_is_reported_and_photos_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    rgb = labels.colorize(blocky((64, 128), seed=1))
    noisy = rgb.copy()
    mask = rng.random(rgb.shape[:2]) < 0.1
    noisy[mask] = rng.integers(0, 256, (mask.sum(), 3))
    upload = U.read_label_upload(save_png(noisy, tmp_path / "noisy.png"), (32, 64))
    assert 0.05 < upload.off_palette_fraction <= 0.1  # some random colours land near a class colour
    assert "off-palette" in upload.describe((32, 64))

    photo = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="photo"):
        U.read_label_upload(save_png(photo, tmp_path / "photo.png"), (32, 64))


def test_non_matching_aspect_upload_is_centre_cropped(tmp_path):
    ids = np.full((100, 100), labels.NAME_TO_ID["car"], np.uint8)
    ids[:25] = labels.NAME_TO_ID["sky"]
    ids[75:] = labels.NAME_TO_ID["road"]
    upload = U.read_label_upload(save_png(labels.colorize(ids), tmp_path / "square.png"), (32, 64))
    assert upload.cropped and "centre-cropped" in upload.describe((32, 64))
    assert (upload.ids == labels.NAME_TO_ID["car"]).all()


def _broken_files(tmp_path) -> dict[str, tuple]:
    """name → (path, words the error message must contain). Shared with the API tests."""
    good = tmp_path / "good.png"
    save_png(labels.colorize(blocky((64, 128))), good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n" * 20)
    tiny = tmp_path / "one_pixel.png"
    save_png(np.zeros((1, 1, 3), np.uint8), tiny)
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)  # 100 MP, a few kB on disk
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {
        "truncated": (truncated, "truncated"),
        "text": (text, "not an image"),
        "one_pixel": (tiny, "1×1"),
        "huge": (huge, "10000×10000"),
        "empty": (empty, "empty"),
    }


@pytest.mark.parametrize("name", ["truncated", "text", "one_pixel", "huge", "empty"])
@pytest.mark.parametrize("reader", [U.read_label_upload, U.read_photo_upload])
def test_broken_uploads_raise_actionable_errors(tmp_path, name, reader):
    path, words = _broken_files(tmp_path)[name]
    started = time.perf_counter()
    with pytest.raises(ValueError) as info:
        reader(path, (32, 64))
    assert words in str(info.value)
    assert "Traceback" not in str(info.value)
    if name == "huge":  # refused from the header: nothing was decoded
        assert time.perf_counter() - started < 1.0


def test_missing_upload_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="No label map"):
        U.read_label_upload(None, (32, 64))
    with pytest.raises(ValueError, match="could not be found"):
        U.read_label_upload(tmp_path / "gone.png", (32, 64))


def test_photo_upload_is_centre_cropped_and_resized(tmp_path):
    photo = np.zeros((300, 300, 3), np.uint8)
    photo[75:225] = (30, 200, 90)  # only the middle half survives a 1:2 centre crop
    out = U.read_photo_upload(save_png(photo, tmp_path / "photo.png"), (32, 64))
    assert out.shape == (32, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - (30, 200, 90)).max() <= 3


# ----------------------------------------------------------------------------------------------------------------
# Editing and inspection


def test_replace_class_changes_only_that_class():
    ids = blocky((32, 64), seed=2)
    old = labels.CLASS_NAMES[int(ids[0, 0])]
    out = U.replace_class(ids, old, "truck")
    changed = ids == labels.NAME_TO_ID[old]
    assert (out[changed] == labels.NAME_TO_ID["truck"]).all()
    np.testing.assert_array_equal(out[~changed], ids[~changed])
    assert ids[0, 0] == labels.NAME_TO_ID[old]  # the input is not modified
    with pytest.raises(ValueError, match="Unknown class"):
        U.replace_class(ids, "spaceship", "car")


def test_class_shares_add_up_and_are_sorted():
    ids = blocky((32, 64), seed=4)
    ids[:2, :8] = labels.IGNORE_ID
    rows = U.class_shares(ids)
    assert rows[-1][0] == "(unlabelled)" and rows[-1][2] == pytest.approx(100 * 16 / ids.size, abs=0.05)
    shares = [r[2] for r in rows[:-1]]
    assert shares == sorted(shares, reverse=True)
    assert sum(r[2] for r in rows) == pytest.approx(100, abs=0.05 * len(rows))
    for name, group, share in rows[:-1]:
        expected = 100 * (ids == labels.NAME_TO_ID[name]).mean()
        assert share == pytest.approx(expected, abs=0.05)
        assert group == ("foreground" if labels.NAME_TO_ID[name] in labels.FG_IDS else "background")


# ----------------------------------------------------------------------------------------------------------------
# z paths


def test_latent_path_is_a_smooth_great_circle_through_the_prior():
    g = torch.Generator().manual_seed(0)
    start, turn = torch.randn(4096, generator=g), torch.randn(4096, generator=g)
    path = U.LatentPath(start, turn)
    torch.testing.assert_close(path(0.0), start)
    torch.testing.assert_close(path(1.0), turn, rtol=0, atol=1e-6)
    torch.testing.assert_close(path(-1.0), -turn, rtol=0, atol=1e-6)
    torch.testing.assert_close(path(7.0), path(1.0))  # clamped to [-1, 1]
    # every position is a plausible N(0, I) draw: the norm stays at sqrt(D), unlike a straight line (0.71 sqrt(D))
    for s in np.linspace(-1, 1, 9):
        assert path(float(s)).norm() / math.sqrt(4096) == pytest.approx(1.0, abs=0.05)
    # small moves, small changes (Lipschitz bound of the docstring)
    bound = 0.5 * math.pi * (start.norm() + turn.norm())
    grid = np.linspace(-1, 1, 101)
    for a, b in itertools.pairwise(grid):
        assert (path(float(b)) - path(float(a))).norm() <= bound * (b - a) + 1e-4
    with pytest.raises(ValueError):
        path(float("nan"))


def test_latent_path_turns_about_the_prior_mean():
    g = torch.Generator().manual_seed(0)
    centre = 3.0 + torch.randn(4096, generator=g)
    start, turn = centre + torch.randn(4096, generator=g), centre + torch.randn(4096, generator=g)
    path = U.LatentPath(start, turn, centre)
    assert torch.equal(path(0.0), start) and torch.equal(path(-0.0), start)
    far = torch.randn(4096, generator=g) / 3 + 0.01  # c + (start − c) does not round back to these starts
    assert torch.equal(U.LatentPath(far, turn, centre)(0.0), far)  # the seed's own code, bit for bit
    torch.testing.assert_close(path(1.0), turn, rtol=0, atol=1e-5)
    torch.testing.assert_close(path(-1.0), 2 * centre - turn, rtol=0, atol=1e-5)
    # every position is as far from the mean as a draw from the prior is; turning about the origin instead would
    # carry the codes far out (|c| ≈ 3 sqrt(D)), where the decoder never saw one
    for s in np.linspace(-1, 1, 9):
        assert (path(float(s)) - centre).norm() / math.sqrt(4096) == pytest.approx(1.0, abs=0.05)
    assert (U.LatentPath(start, turn)(0.5) - centre).norm() / math.sqrt(4096) > 1.5
    # with a third draw the negative half ends there instead, continuously through s = 0
    back = centre + torch.randn(4096, generator=g)
    two_sided = U.LatentPath(start, turn, centre, back)
    torch.testing.assert_close(two_sided(-1.0), back, rtol=0, atol=1e-5)
    torch.testing.assert_close(two_sided(0.7), path(0.7))
    torch.testing.assert_close(two_sided(-1e-6), start, rtol=0, atol=1e-4)
    for s in np.linspace(-1, 0, 5):
        assert (two_sided(float(s)) - centre).norm() / math.sqrt(4096) == pytest.approx(1.0, abs=0.05)


def test_latent_paths_start_at_the_seed_so_sliders_at_zero_reproduce_the_pipeline():
    pipe = tiny_pipeline()
    ids = blocky(TINY_SIZE, seed=1)
    fg, bg = U.latent_paths(pipe.sample_z, seed=11)
    plain = pipe(ids, seed=11)
    torch.testing.assert_close(fg(0.0), plain.z_fg)
    torch.testing.assert_close(bg(0.0), plain.z_bg)
    same = pipe(ids, seed=11, z_fg=fg(0.0), z_bg=bg(0.0))
    np.testing.assert_array_equal(same.frames, plain.frames)
    moved = pipe(ids, seed=11, z_fg=fg(0.5), z_bg=bg(0.0))
    assert not np.array_equal(moved.flow_bwd, plain.flow_bwd)
    # deterministic, and the second draw differs from the first and from the neighbouring seed's
    fg2, _ = U.latent_paths(pipe.sample_z, seed=11)
    torch.testing.assert_close(fg2.turn, fg.turn)
    assert not torch.allclose(fg.turn, fg.start)
    assert not torch.allclose(fg.turn, U.latent_paths(pipe.sample_z, seed=12)[0].start)
    assert U.companion_seed(11) != U.companion_seed(12)
    # with the prior's mean as centre both ends stay the seed's and its companion's codes
    centre = pipe.flow_predictor.prior_mean()
    fg_c, bg_c = U.latent_paths(pipe.sample_z, seed=11, centre=centre)
    assert torch.equal(bg_c(0.0), plain.z_bg.reshape(-1))  # bit for bit, so the sliders at 0 give the seed's video
    np.testing.assert_array_equal(pipe(ids, seed=11, z_fg=fg_c(0.0), z_bg=bg_c(0.0)).frames, plain.frames)
    torch.testing.assert_close(fg_c(1.0), fg.turn, rtol=0, atol=1e-5)
    torch.testing.assert_close(bg_c.centre, centre[1].reshape(-1))
    # both ends of the slider are the pipeline's own draws: s = 1 the companion seed's, s = -1 its companion's
    far = U.companion_seed(U.companion_seed(11))
    torch.testing.assert_close(bg_c(-1.0), pipe.sample_z(far)[1].reshape(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(bg_c(1.0), pipe.sample_z(U.companion_seed(11))[1].reshape(-1), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Visualisation


def test_tile_places_images_row_major_with_gaps():
    images = np.stack([np.full((4, 6, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    out = U.tile(images, columns=3, gap=2)
    assert out.shape == (2 * 4 + 2, 3 * 6 + 2 * 2, 3)
    assert (out[0:4, 8:14] == 20).all() and (out[6:10, 8:14] == 50).all()
    assert (out[4:6] == 255).all() and (out[6:10, 16:] == 255).all()  # gaps and the empty slot


def test_flow_mosaic_uses_the_colour_wheel_and_is_white_without_motion():
    from torchvision.utils import flow_to_image

    t, h, w = 8, 6, 10
    flow = np.zeros((t, h, w, 2), np.float32)
    flow[1, ..., 0] = 3.0  # frame 2 moves right
    flow[2, ..., 0] = -3.0  # frame 3 moves left
    out = U.flow_mosaic(flow, columns=4)
    assert out.shape == (2 * h + 2, 4 * w + 3 * 2, 3) and out.dtype == np.uint8
    assert (out[:h, :w] >= 250).all()  # no motion is white
    right, left = out[0, w + 2 + 1], out[0, 2 * (w + 2) + 1]
    assert not np.array_equal(right, left)
    wheel = flow_to_image(torch.tensor([[[[3.0]], [[0.0]]]]))[0, :, 0, 0].numpy()  # (2, 1, 1) → RGB
    np.testing.assert_array_equal(right, wheel)
    with pytest.raises(ValueError):
        U.flow_mosaic(np.zeros((8, 6, 10, 3), np.float32))


def test_occlusion_mosaic_is_white_where_visible():
    occ = np.zeros((8, 4, 6), np.float32)
    occ[0] = 1.0
    occ[1, :, :3] = 0.5
    out = U.occlusion_mosaic(occ)
    assert (out[:4, :6] == 255).all() and (out[:4, 8 + 3 : 8 + 6] == 0).all()
    assert (out[:4, 8:11] == 128).all()


# ----------------------------------------------------------------------------------------------------------------
# Errors and start-up


def test_friendly_error_passes_user_messages_and_hides_internals():
    assert U.friendly_error(ValueError("Bad label map.\nmore detail")) == "Bad label map."
    message = U.friendly_error(KeyError("/srv/secret/path.py line 3"))
    assert "KeyError" in message and "/srv" not in message
    assert "memory" in U.friendly_error(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert "ffmpeg" in U.friendly_error(RuntimeError("Could not write x.mp4: ffmpeg error"))


def test_app_pipeline_falls_back_to_untrained_weights_only_without_a_model(tmp_path):
    empty = tmp_path / "bundled"
    empty.mkdir()
    pipe, banner = U.load_app_pipeline(None, bundled=empty)
    assert banner == U.UNTRAINED_BANNER and "untrained" in banner.lower()
    assert pipe.resolution == tuple(FlowPredictorConfig().image_size)
    ids = U.street_scene(pipe.resolution)
    still, moved = pipe(ids, seed=0), pipe(ids, seed=1)  # the untrained demo moves, and z changes the motion
    assert np.abs(still.flow_bwd).max() > 0.5 and not np.array_equal(still.flow_bwd, moved.flow_bwd)

    saved = tiny_pipeline(seed=3)
    saved.save_pretrained(tmp_path / "model")
    for checkpoint, bundled in ((str(tmp_path / "model"), empty), (None, tmp_path / "model")):
        pipe, banner = U.load_app_pipeline(checkpoint, bundled=bundled)
        assert banner is None and pipe.resolution == TINY_SIZE
        for a, b in zip(pipe.flow_predictor.state_dict().values(), saved.flow_predictor.state_dict().values()):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="No checkpoint folder"):
        U.load_app_pipeline(str(tmp_path / "missing"), bundled=empty)


def test_share_probe_is_quick_and_tells_open_from_closed_ports():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert U.share_available("127.0.0.1", server.getsockname()[1], timeout=2.0)
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    started = time.perf_counter()
    assert not U.share_available("127.0.0.1", closed, timeout=2.0)
    assert not U.share_available("no-such-host.invalid", 443, timeout=2.0)
    assert time.perf_counter() - started < 5.0


def test_fresh_output_dir_prunes_old_request_folders(tmp_path):
    old = U.fresh_output_dir(tmp_path)
    (old / "video.mp4").write_bytes(b"x")
    recent = U.fresh_output_dir(tmp_path)
    past = time.time() - 7200
    os.utime(old, (past, past))
    new = U.fresh_output_dir(tmp_path, keep_seconds=3600)
    assert new.is_dir() and not any(new.iterdir())
    assert not old.exists() and recent.exists()
