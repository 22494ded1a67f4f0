"""The Cityscapes label system: colour/grayscale decoding, robustness to JPEG, heatmaps."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from seg2vid import labels
from seg2vid.labels import (
    BG_IDS,
    FG_IDS,
    IGNORE_ID,
    NUM_BG,
    NUM_CLASSES,
    NUM_FG,
    colorize,
    decode_color,
    decode_gray,
    foreground_mask,
    load_label_map,
    one_hot,
    resize_ids,
    split_fg_bg,
    validate_ids,
)

LABEL_IDS = np.array([c.label_id for c in labels.CLASSES], np.uint8)  # trainId → labelId


def street_label_map(seed: int = 0, size=(128, 256)) -> np.ndarray:
    """A SynthCity-like (H, W) trainId map: sky, buildings, sidewalk, road, then cars/people as boxes/ellipses."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = Image.new("L", (w, h), 10)  # sky
    draw = ImageDraw.Draw(image)
    x = 0
    while x < w:  # buildings / vegetation along the horizon
        bw = int(rng.integers(w // 10, w // 4))
        draw.rectangle([x, int(rng.integers(h // 8, h // 3)), x + bw, h // 2], fill=int(rng.choice([2, 2, 8, 3])))
        x += bw
    draw.rectangle([0, h // 2, w, h], fill=0)  # road
    draw.polygon([(0, h // 2), (w // 4, h // 2), (0, int(h * 0.8))], fill=1)  # sidewalk
    draw.rectangle([int(w * 0.6), int(h * 0.2), int(w * 0.6) + 2, h // 2], fill=5)  # pole
    for _ in range(8):  # vehicles and people
        cls = int(rng.choice(FG_IDS))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(h // 2, h))
        rx, ry = int(rng.integers(4, w // 8)), int(rng.integers(3, h // 8))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([cx - rx, cy - ry, cx + rx, cy + ry], fill=cls)
    draw.rectangle([int(w * 0.9), 0, w, 4], fill=IGNORE_ID)  # a strip of "unlabeled"
    return np.asarray(image).copy()


def test_palette_and_groups():
    assert labels.PALETTE.shape == (NUM_CLASSES, 3) and len({tuple(c) for c in labels.PALETTE}) == NUM_CLASSES
    assert NUM_FG + NUM_BG == NUM_CLASSES and set(FG_IDS).isdisjoint(BG_IDS)
    assert labels.NAME_TO_ID["car"] in FG_IDS and labels.NAME_TO_ID["road"] in BG_IDS


def test_colour_round_trip_is_exact():
    ids = street_label_map(0)
    decoded = decode_color(colorize(ids))
    np.testing.assert_array_equal(decoded.ids, ids)
    assert decoded.off_palette_fraction == 0 and decoded.source == "color"
    every = np.array([list(range(NUM_CLASSES)) + [IGNORE_ID]], np.uint8)
    np.testing.assert_array_equal(decode_color(colorize(every)).ids, every)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jpeg_compressed_colour_map_decodes_almost_exactly(seed):
    ids = street_label_map(seed)
    buffer = io.BytesIO()
    Image.fromarray(colorize(ids)).save(buffer, format="JPEG", quality=75)
    jpeg = np.asarray(Image.open(buffer).convert("RGB"))
    assert not np.array_equal(jpeg, colorize(ids))  # the artefacts are real
    decoded = load_label_map(Image.open(io.BytesIO(buffer.getvalue())))
    agreement = (decoded.ids == ids).mean()
    assert agreement >= 0.99, agreement


def test_off_palette_share_is_reported():
    rgb = colorize(np.zeros((10, 20), np.uint8))
    rgb[:, :5] = (255, 255, 255)  # white is far from every class colour: a quarter of the pixels
    rgb[0, 5] = np.array(labels.PALETTE[13]) + 3  # a slightly-off car colour is not "off-palette"
    decoded = decode_color(rgb)
    assert decoded.off_palette_fraction == pytest.approx(0.25)
    assert decoded.ids[0, 5] == 13


def test_grayscale_train_ids_and_label_ids_are_told_apart():
    ids = street_label_map(0)
    assert ids.max() == IGNORE_ID and np.unique(ids[ids != IGNORE_ID]).max() < NUM_CLASSES
    as_train = load_label_map(Image.fromarray(ids))
    assert as_train.source == "trainId"
    np.testing.assert_array_equal(as_train.ids, ids)

    label_ids = np.where(ids == IGNORE_ID, 0, LABEL_IDS[np.minimum(ids, NUM_CLASSES - 1)])  # labelId 0 = unlabeled
    as_label = load_label_map(Image.fromarray(label_ids))
    assert as_label.source == "labelId"
    np.testing.assert_array_equal(as_label.ids, ids)
    # labelIds of non-train classes (e.g. 1 = ego vehicle, 4 = static) become ignore.
    np.testing.assert_array_equal(decode_gray(np.array([[1, 4, 26]])).ids, [[IGNORE_ID, IGNORE_ID, 13]])
    # An explicit kind overrides the guess.
    np.testing.assert_array_equal(decode_gray(np.array([[7, 8]]), kind="labelId").ids, [[0, 1]])
    np.testing.assert_array_equal(decode_gray(np.array([[7, 8]]), kind="trainId").ids, [[7, 8]])


def test_grey_ids_saved_as_rgb_are_read_as_ids(tmp_path):
    ids = street_label_map(1)
    small = np.where(ids == IGNORE_ID, 0, ids).astype(np.uint8)
    path = tmp_path / "ids_rgb.png"
    Image.fromarray(np.repeat(small[..., None], 3, axis=-1)).save(path)
    decoded = load_label_map(path)
    assert decoded.source == "trainId"
    np.testing.assert_array_equal(decoded.ids, small)


def test_arrays_tensors_and_rgba_are_accepted():
    ids = street_label_map(2)
    np.testing.assert_array_equal(load_label_map(ids.astype(np.int32)).ids, ids)
    np.testing.assert_array_equal(load_label_map(torch.from_numpy(ids)).ids, ids)
    rgba = np.concatenate([colorize(ids), np.full((*ids.shape, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(load_label_map(rgba).ids, ids)


@pytest.mark.parametrize(
    "value, match",
    [
        (np.zeros((4, 4), np.float32), "integer"),
        (np.zeros((4, 4), bool), "integer"),
        (np.zeros((4,), np.uint8), "2-D"),
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.full((4, 4), 19, np.uint8), "not Cityscapes trainIds"),
        (np.full((4, 4), -1, np.int64), "0–18"),
        (np.full((4, 4), 300, np.int64), "0–18"),
    ],
)
def test_validate_ids_errors(value, match):
    with pytest.raises(ValueError, match=match):
        validate_ids(value)


@pytest.mark.parametrize(
    "value, match",
    [
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        ([[1, 2]], "trainId array"),
        ("/no/such/file.png", "No label-map file"),
        (12, "label map"),
    ],
)
def test_load_label_map_errors(value, match):
    with pytest.raises(ValueError, match=match):
        load_label_map(value)


def test_decode_gray_errors():
    with pytest.raises(ValueError, match="neither trainIds"):
        decode_gray(np.array([[3, 40]]))
    with pytest.raises(ValueError, match="kind"):
        decode_gray(np.array([[3]]), kind="rgb")
    with pytest.raises(ValueError, match="integers"):
        decode_gray(np.array([[0.5]]))


def test_colorize():
    ids = np.array([[0, 13], [IGNORE_ID, 10]], np.uint8)
    rgb = colorize(ids)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == labels.CLASSES[13].color and tuple(rgb[1, 0]) == labels.IGNORE_COLOR
    assert colorize(np.stack([ids, ids])).shape == (2, 2, 2, 3)
    with pytest.raises(ValueError, match="integer"):
        colorize(ids.astype(np.float32))
    with pytest.raises(ValueError, match="trainIds"):
        colorize(np.array([[25]]))


def test_one_hot_shapes_and_ignore():
    ids = street_label_map(0, size=(32, 64))
    heat = one_hot(ids)
    assert heat.shape == (NUM_CLASSES, 32, 64) and heat.dtype == torch.float32
    ignore = torch.from_numpy(ids == IGNORE_ID)
    assert ignore.any() and (heat.sum(0)[ignore] == 0).all()
    assert (heat.sum(0)[~ignore] == 1).all()
    assert torch.equal(heat.argmax(0)[~ignore], torch.from_numpy(ids).long()[~ignore])

    batch = one_hot(torch.from_numpy(np.stack([ids, ids])), dtype=torch.float16)
    assert batch.shape == (2, NUM_CLASSES, 32, 64) and batch.dtype == torch.float16
    for bad in (ids.astype(np.float32), ids[None, None], np.full((2, 2), 30)):
        with pytest.raises(ValueError):
            one_hot(bad)


def test_split_fg_bg():
    ids = street_label_map(0, size=(32, 64))
    heat = one_hot(np.stack([ids, ids]))
    fg, bg = split_fg_bg(heat)
    assert fg.shape == (2, NUM_FG, 32, 64) and bg.shape == (2, NUM_BG, 32, 64)
    fg_pixels = torch.from_numpy(foreground_mask(ids))
    assert fg_pixels.any()
    assert torch.equal(fg[0].sum(0) > 0, fg_pixels)  # foreground channels fire exactly on FG classes
    ignore = torch.from_numpy(ids == IGNORE_ID)
    assert torch.equal(bg[0].sum(0) > 0, ~fg_pixels & ~ignore)
    assert split_fg_bg(heat[0])[0].shape == (NUM_FG, 32, 64)
    with pytest.raises(ValueError, match="19 channels"):
        split_fg_bg(heat[:, :5])


def test_resize_ids_is_nearest_and_writable():
    ids = street_label_map(0)
    small = resize_ids(ids, (32, 64))
    assert small.shape == (32, 64) and small.dtype == np.uint8
    assert set(np.unique(small)) <= set(np.unique(ids))  # never blends classes
    small[0, 0] = 0  # a writable array
    big = resize_ids(ids, (256, 512))
    np.testing.assert_array_equal(big[::2, ::2], ids)
