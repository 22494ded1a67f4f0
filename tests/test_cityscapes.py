"""Cityscapes sequences: the dataset and training/prepare_cityscapes.py on a tiny fake tree in the official layout."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seg2vid.data.cityscapes import (
    ANNOTATED_INDEX,
    IMAGES_DIR,
    LABELS_DIR,
    CityscapesSequenceDataset,
    find_snippets,
    label_path,
    parse_frame_name,
)
from seg2vid.labels import CLASSES, IGNORE_ID, NUM_CLASSES
from training import prepare_cityscapes

FRAME_SIZE = (16, 32)  # (H, W) of the fake frames
CITIES = {"aachen": [(0, 0), (1, 0)], "frankfurt": [(0, 275), (0, 576)]}  # (seq, first frame) per snippet




def _frames(root: Path, split: str = "train"):
    for city, snippets in CITIES.items():
        for seq, first in snippets:
            for n in range(first, first + 30):
                yield city, seq, n, root / IMAGES_DIR / split / city / f"{city}_{seq:06d}_{n:06d}_leftImg8bit.png"


@pytest.fixture
def tree(tmp_path):
    """2 cities × 2 snippets × 30 frames of small random PNGs; frankfurt's two snippets share sequence 0."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cityscapes"
    for _, _, _, path in _frames(root):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8)).save(path)
    return root


def _stand_in_segmenter(calls):
    """A 'segmenter' whose map is a deterministic function of the frame (red channel mod 19)."""

    def load(model, device, infer_size):
        def segment(frames):
            calls.append(len(frames))
            return [(f[..., 0] % NUM_CLASSES).astype(np.uint8) for f in frames]

        return segment

    return load


def test_snippets_are_runs_of_consecutive_frames(tree):
    snippets = find_snippets(tree, "train")
    assert [(s.city, s.seq, s.first_frame, s.length) for s in snippets] == [
        (city, seq, first, 30) for city, snips in CITIES.items() for seq, first in snips
    ]
    assert parse_frame_name("frankfurt_000000_000294_leftImg8bit.png") == ("frankfurt", 0, 294, "leftImg8bit")
    assert parse_frame_name("notes.txt") is None


def test_prepare_with_stand_in_segmenter_is_resumable(tree):
    calls = []
    rc = prepare_cityscapes.main([str(tree), "--splits", "train", "--batch-size", "7", "--no-progress"],
                                 load_model=_stand_in_segmenter(calls))
    assert rc == 0
    assert sum(calls) == 120 and max(calls) == 7
    for city, seq, n, img in _frames(tree):
        out = label_path(tree / LABELS_DIR, "train", city, seq, n)
        expected = np.asarray(Image.open(img).convert("RGB"))[..., 0] % NUM_CLASSES
        np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)
    assert not list((tree / LABELS_DIR).rglob("*.tmp"))

    # An interrupted run: delete two outputs; the second run segments exactly those.
    victims = [label_path(tree / LABELS_DIR, "train", "aachen", 1, 3), label_path(tree / LABELS_DIR, "train", "frankfurt", 0, 600)]
    for v in victims:
        v.unlink()
    calls.clear()
    rc = prepare_cityscapes.main([str(tree), "--splits", "train", "--no-progress"], load_model=_stand_in_segmenter(calls))
    assert rc == 0 and sum(calls) == 2 and all(v.is_file() for v in victims)


def test_prepare_from_precomputed_label_ids_and_colours(tree, tmp_path):
    rng = np.random.default_rng(1)
    pre = tmp_path / "precomputed"
    truth = {}
    for i, (city, seq, n, _) in enumerate(_frames(tree)):
        train_ids = rng.integers(0, NUM_CLASSES, FRAME_SIZE).astype(np.uint8)
        train_ids[0, 0] = IGNORE_ID
        truth[(city, seq, n)] = train_ids
        stem = pre / city / f"{city}_{seq:06d}_{n:06d}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        if i % 2:  # labelIds, as in gtFine_labelIds
            label_ids = np.zeros_like(train_ids)
            for c in CLASSES:
                label_ids[train_ids == c.train_id] = c.label_id
            Image.fromarray(label_ids).save(f"{stem}_gtFine_labelIds.png")
        else:  # colour images
            colour = np.zeros((*FRAME_SIZE, 3), np.uint8)
            for c in CLASSES:
                colour[train_ids == c.train_id] = c.color
            Image.fromarray(colour).save(f"{stem}_gtFine_color.png")

    out = tmp_path / "maps"
    args = [str(tree), "--splits", "train", "--precomputed", str(pre), "--out", str(out), "--no-progress"]
    assert prepare_cityscapes.main(args) == 0
    for key, ids in truth.items():
        np.testing.assert_array_equal(np.asarray(Image.open(label_path(out, "train", *key))), ids)

    # Second run: everything is skipped — outputs untouched even if the sources change.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    summary = prepare_cityscapes.prepare(tree, ["train"], out, precomputed=pre, progress=False)
    assert (summary.written, summary.skipped) == (0, 120)
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}


def test_prepare_reports_frames_without_precomputed_map(tree, tmp_path, capsys):
    pre = tmp_path / "pre"
    pre.mkdir()
    Image.fromarray(np.zeros(FRAME_SIZE, np.uint8)).save(pre / "aachen_000000_000000_trainIds.png")
    rc = prepare_cityscapes.main([str(tree), "--splits", "train", "--precomputed", str(pre), "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "119 frames have no precomputed map" in err and "aachen_000000_000001" in err


def test_prepare_without_transformers_or_weights_fails_clearly(tree, capsys):
    def unavailable(model, device, infer_size):
        raise prepare_cityscapes.SegmenterUnavailable("needs transformers (pip install transformers)")

    assert prepare_cityscapes.main([str(tree), "--no-progress"], load_model=unavailable) == 2
    assert "pip install transformers" in capsys.readouterr().err
    # The real loader, here (offline, and transformers may be absent): a clear message, not a traceback.
    with pytest.raises(prepare_cityscapes.SegmenterUnavailable, match="transformers|weights"):
        prepare_cityscapes.load_segformer("no-such-org/no-such-segformer", "cpu")


@pytest.fixture
def prepared(tree):
    calls = []
    assert prepare_cityscapes.main([str(tree), "--splits", "train", "--no-progress"], load_model=_stand_in_segmenter(calls)) == 0
    return tree


def test_dataset_windows_shapes_and_names(prepared):
    ds = CityscapesSequenceDataset(prepared, "train", size=(8, 16), num_frames=9, stride=4)
    assert len(ds) == 4 * len(range(0, 30 - 9 + 1, 4))
    item = ds[0]
    assert set(item) == {"video", "labels", "heatmaps", "name"}
    assert item["video"].shape == (9, 3, 8, 16) and item["video"].dtype == torch.float32
    assert -1.0 <= item["video"].min() and item["video"].max() <= 1.0
    assert item["labels"].shape == (9, 8, 16) and item["labels"].dtype == torch.long
    assert item["heatmaps"].shape == (NUM_CLASSES, 8, 16)
    torch.testing.assert_close(item["heatmaps"].argmax(0), item["labels"][0])
    assert item["name"] == "aachen_000000_000000"

    # The window of the last frankfurt snippet starting at offset 8 → frame 576 + 8.
    last = ds.windows.index((3, 8))
    assert ds[last]["name"] == "frankfurt_000000_000584"
    paths = ds.frame_paths(last)
    assert [p.name for p, _ in paths][-1] == "frankfurt_000000_000592_leftImg8bit.png"

    # Labels are resized with nearest sampling: values stay the stand-in segmenter's (red channel mod 19).
    full = CityscapesSequenceDataset(prepared, "train", size=FRAME_SIZE, window_starts=[0])
    img = np.asarray(Image.open(full.frame_paths(0)[4][0]).convert("RGB"))
    np.testing.assert_array_equal(full[0]["labels"][4].numpy(), img[..., 0] % NUM_CLASSES)
    np.testing.assert_allclose(full[0]["video"][4].permute(1, 2, 0).numpy(), img / 127.5 - 1.0, atol=1e-5)


def test_dataset_annotated_and_explicit_windows(prepared):
    ds = CityscapesSequenceDataset(prepared, "train", size=(8, 16), window_starts="annotated")
    assert ds.windows == [(i, ANNOTATED_INDEX) for i in range(4)]
    assert ds[1]["name"] == f"aachen_000001_{ANNOTATED_INDEX:06d}"
    ds = CityscapesSequenceDataset(prepared, "train", size=(8, 16), window_starts=[0, 21], num_frames=9)
    assert len(ds) == 8
    with pytest.raises(ValueError, match="do not fit"):
        CityscapesSequenceDataset(prepared, "train", window_starts=[22], num_frames=9)
    with pytest.raises(ValueError, match="annotated"):
        CityscapesSequenceDataset(prepared, "train", window_starts="annotated", num_frames=12)


def test_dataset_errors_on_broken_trees(tree, tmp_path):
    with pytest.raises(ValueError, match=IMAGES_DIR):
        CityscapesSequenceDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="No split 'val'.*train"):
        CityscapesSequenceDataset(tree, "val")
    (tree / IMAGES_DIR / "test" / "berlin").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no frames"):
        CityscapesSequenceDataset(tree, "test")
    # No label maps yet: the message names the first missing file and how to make them.
    first = label_path(tree / LABELS_DIR, "train", "aachen", 0, 0)
    with pytest.raises(ValueError, match=rf"120 of 120 .*{first.name}.*prepare_cityscapes"):
        CityscapesSequenceDataset(tree, "train")


def test_dataset_names_the_first_missing_label_map(prepared):
    victim = label_path(prepared / LABELS_DIR, "train", "frankfurt", 0, 290)
    os.remove(victim)
    with pytest.raises(ValueError, match=victim.name):
        CityscapesSequenceDataset(prepared, "train")
    # A window choice that does not read that frame still works.
    assert len(CityscapesSequenceDataset(prepared, "train", window_starts=[0])) == 4
