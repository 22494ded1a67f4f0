"""Cityscapes video snippets as seg2vid training / evaluation clips (paper section 4.1).

Cityscapes ships 30-frame snippets (17 Hz) in ``leftImg8bit_sequence``; only the 20th frame of each (index 19,
``ANNOTATED_INDEX``) has a human annotation. Like the paper, which ran DeepLabV3 on every frame, seg2vid trains on
per-frame label maps predicted by a segmentation network; ``training/prepare_cityscapes.py`` writes them.

Folder layout read here (the official one; ``root`` is the folder holding ``leftImg8bit_sequence``)::

    {root}/leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    {labels_root}/{split}/{city}/{city}_{seq:06d}_{frame:06d}_trainIds.png        (written by prepare_cityscapes)

``labels_root`` defaults to ``{root}/trainIds_sequence``. Label maps are single-channel PNGs of trainIds 0–18
(255 = ignore), at any resolution (they are resized with nearest sampling).

A *snippet* is a maximal run of consecutive frame numbers of one ``{city}_{seq}``: frame numbers do not start at
0 (``frankfurt_000000_000275 … 000304``), and one ``{city}_{seq}`` may hold several snippets. A *window* is
``num_frames`` consecutive frames of a snippet, chosen by ``window_starts``:

* ``"all"`` (default): every start ``0, stride, 2·stride, …`` that fits in the snippet (training);
* ``"annotated"``: the one window whose first frame is the annotated frame (index 19), so the input label map can
  be the human annotation and frames 20–27 are the future (evaluation, paper Tables 1–2);
* a sequence of ints: those offsets within each snippet (those that do not fit are an error).

Items are dicts like ``SynthCityDataset``'s, without the ground-truth motion (Cityscapes has none):

* ``video``    (T+1, 3, H, W) float32 in [-1, 1]   frames resized with antialiased bilinear (area-like) filtering
* ``labels``   (T+1, H, W) int64 trainIds           resized with nearest sampling
* ``heatmaps`` (19, H, W) float32                   one-hot of ``labels[0]`` (``seg2vid.labels.one_hot``)
* ``name``     ``"{city}_{seq:06d}_{frame:06d}"`` of the window's first frame (str)

``flow_fwd``, ``flow_bwd``, ``occ_fwd`` and ``occ_bwd`` are absent (not ``None``, so the default collate works).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..labels import NUM_CLASSES, one_hot, resize_ids, validate_ids

__all__ = [
    "ANNOTATED_INDEX",
    "SNIPPET_LENGTH",
    "IMAGES_DIR",
    "IMAGE_SUFFIX",
    "LABELS_DIR",
    "LABELS_SUFFIX",
    "Snippet",
    "CityscapesSequenceDataset",
    "find_snippets",
    "frame_stem",
    "image_path",
    "label_path",
    "parse_frame_name",
]

SNIPPET_LENGTH = 30  # frames per Cityscapes snippet
ANNOTATED_INDEX = 19  # the 20th frame carries the gtFine annotation
IMAGES_DIR = "leftImg8bit_sequence"
IMAGE_KIND = "leftImg8bit"  # the file-name suffix of the RGB frames
IMAGE_SUFFIX = f"_{IMAGE_KIND}.png"
LABELS_DIR = "trainIds_sequence"  # default labels_root, relative to the Cityscapes root
LABELS_SUFFIX = "_trainIds.png"

# "{city}_{seq:06d}_{frame:06d}_{suffix}.png"; city names are lower-case words (possibly with "_" or "-").
_FRAME_NAME = re.compile(r"^(?P<city>.+?)_(?P<seq>\d{6})_(?P<frame>\d{6})_(?P<suffix>[^.]+)\.png$")


def frame_stem(city: str, seq: int, frame: int) -> str:
    """``"{city}_{seq:06d}_{frame:06d}"``, the name every Cityscapes file of one frame starts with."""
    return f"{city}_{seq:06d}_{frame:06d}"


def parse_frame_name(filename: str) -> tuple[str, int, int, str] | None:
    """``"aachen_000000_000019_leftImg8bit.png"`` → ``("aachen", 0, 19, "leftImg8bit")``; ``None`` otherwise."""
    m = _FRAME_NAME.match(os.path.basename(filename))
    if m is None:
        return None
    return m["city"], int(m["seq"]), int(m["frame"]), m["suffix"]


def image_path(root, split: str, city: str, seq: int, frame: int) -> Path:
    return Path(root) / IMAGES_DIR / split / city / (frame_stem(city, seq, frame) + IMAGE_SUFFIX)


def label_path(labels_root, split: str, city: str, seq: int, frame: int) -> Path:
    return Path(labels_root) / split / city / (frame_stem(city, seq, frame) + LABELS_SUFFIX)


@dataclass(frozen=True)
class Snippet:
    """One run of consecutive frames ``first_frame … first_frame + length - 1`` of ``{city}_{seq}``."""

    split: str
    city: str
    seq: int
    first_frame: int
    length: int

    def frame_numbers(self) -> range:
        return range(self.first_frame, self.first_frame + self.length)

    @property
    def name(self) -> str:
        return frame_stem(self.city, self.seq, self.first_frame)


def find_snippets(root, split: str) -> list[Snippet]:
    """Index ``{root}/leftImg8bit_sequence/{split}``: every snippet, sorted by city, sequence and frame.

    Raises ``ValueError`` when the folder is missing or holds no frame named like a Cityscapes sequence frame.
    """
    root = Path(root)
    split_dir = root / IMAGES_DIR / split
    if not (root / IMAGES_DIR).is_dir():
        raise ValueError(
            f"No Cityscapes sequences at {str(root)!r}: expected the folder {IMAGES_DIR}/ inside it "
            f"(download leftImg8bit_sequence_trainvaltest.zip from cityscapes-dataset.com and unzip it there)."
        )
    if not split_dir.is_dir():
        have = sorted(p.name for p in (root / IMAGES_DIR).iterdir() if p.is_dir())
        raise ValueError(f"No split {split!r} in {str(root / IMAGES_DIR)!r} (it has: {', '.join(have) or 'nothing'}).")

    frames: dict[tuple[str, int], list[int]] = {}
    for city_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for entry in os.scandir(city_dir):
            parsed = parse_frame_name(entry.name)
            if parsed is None or parsed[3] != IMAGE_KIND:
                continue
            city, seq, frame, _ = parsed
            frames.setdefault((city, seq), []).append(frame)
    if not frames:
        raise ValueError(
            f"The split folder {str(split_dir)!r} holds no frames named "
            f"'{{city}}_{{seq:06d}}_{{frame:06d}}{IMAGE_SUFFIX}' in its city folders."
        )

    snippets = []
    for (city, seq), numbers in sorted(frames.items()):
        numbers = sorted(numbers)
        start = prev = numbers[0]
        for n in numbers[1:] + [None]:  # split into maximal runs of consecutive frame numbers
            if n is not None and n == prev + 1:
                prev = n
                continue
            snippets.append(Snippet(split, city, seq, start, prev - start + 1))
            if n is not None:
                start = prev = n
    return snippets


def _parse_starts(window_starts, stride: int) -> str | tuple[int, ...]:
    if isinstance(window_starts, str):
        if window_starts not in ("all", "annotated"):
            raise ValueError(f"window_starts must be 'all', 'annotated' or a list of offsets; got {window_starts!r}.")
        return window_starts
    try:
        starts = tuple(int(s) for s in window_starts)
    except (TypeError, ValueError):
        raise ValueError(f"window_starts must be 'all', 'annotated' or a list of ints; got {window_starts!r}.") from None
    if not starts or min(starts) < 0:
        raise ValueError(f"window_starts must be non-empty offsets ≥ 0; got {list(starts)}.")
    return starts


class CityscapesSequenceDataset(Dataset):
    """``num_frames``-frame windows of Cityscapes snippets with per-frame label maps (see the module docstring).

    Args:
        root: the Cityscapes folder holding ``leftImg8bit_sequence/``.
        split: ``"train"``, ``"val"`` or ``"test"`` (any sub-folder name of ``leftImg8bit_sequence``).
        size: (H, W) of the returned frames and labels.
        num_frames: frames per window (T + 1 = 9 in the paper).
        labels_root: folder of per-frame label maps (default ``{root}/trainIds_sequence``).
        window_starts: ``"all"``, ``"annotated"`` or explicit offsets within each snippet.
        stride: distance between window starts for ``"all"``.

    Raises ``ValueError`` for a missing folder, an empty split, snippets too short for a window, or missing label
    maps (naming the first missing file; ``training/prepare_cityscapes.py`` writes them).
    """

    def __init__(
        self,
        root,
        split: str = "train",
        size: tuple[int, int] = (128, 256),
        num_frames: int = 9,
        labels_root=None,
        window_starts: str | Sequence[int] = "all",
        stride: int = 1,
    ):
        if len(tuple(size)) != 2 or min(size) < 1:
            raise ValueError(f"size must be (H, W) with positive entries; got {size!r}.")
        if num_frames < 2:
            raise ValueError(f"num_frames must be at least 2 (a first frame and one future frame); got {num_frames}.")
        if stride < 1:
            raise ValueError(f"stride must be ≥ 1; got {stride}.")
        self.root = Path(root)
        self.split = split
        self.size = (int(size[0]), int(size[1]))
        self.num_frames = int(num_frames)
        self.labels_root = Path(labels_root) if labels_root is not None else self.root / LABELS_DIR
        starts = _parse_starts(window_starts, stride)

        self.snippets = find_snippets(self.root, split)
        # (snippet index, offset of the window's first frame in the snippet)
        self.windows: list[tuple[int, int]] = []
        for i, snip in enumerate(self.snippets):
            self.windows.extend((i, o) for o in self._offsets(snip, starts, stride))
        if not self.windows:
            raise ValueError(
                f"No {self.num_frames}-frame window fits in the {len(self.snippets)} snippet(s) of split {split!r} "
                f"(longest: {max(s.length for s in self.snippets)} frames)."
            )
        self._check_labels()

    def _offsets(self, snip: Snippet, starts, stride: int) -> list[int]:
        last = snip.length - self.num_frames  # last offset that fits
        if starts == "all":
            return list(range(0, last + 1, stride))
        if starts == "annotated":
            if snip.length != SNIPPET_LENGTH:
                return []  # not a complete snippet: its annotated frame is unknown
            if ANNOTATED_INDEX > last:
                raise ValueError(
                    f"A {self.num_frames}-frame window from the annotated frame (index {ANNOTATED_INDEX}) does not "
                    f"fit in a {SNIPPET_LENGTH}-frame snippet; use at most {SNIPPET_LENGTH - ANNOTATED_INDEX} frames."
                )
            return [ANNOTATED_INDEX]
        bad = [o for o in starts if o > last]
        if bad:
            raise ValueError(
                f"Window start(s) {bad} do not fit a {self.num_frames}-frame window in snippet {snip.name} "
                f"({snip.length} frames; the last start that fits is {last})."
            )
        return list(starts)

    def _check_labels(self) -> None:
        needed: dict[Path, None] = {}  # every label map a window reads, in window order (an ordered set)
        for snip_index, offset in self.windows:
            s = self.snippets[snip_index]
            for n in range(s.first_frame + offset, s.first_frame + offset + self.num_frames):
                needed[label_path(self.labels_root, s.split, s.city, s.seq, n)] = None
        missing = [p for p in needed if not p.is_file()]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(needed)} label maps are missing under {str(self.labels_root)!r}; the first is "
                f"{str(missing[0])!r}. Write them with `python training/prepare_cityscapes.py {self.root} "
                f"--splits {self.split}` (or pass labels_root=)."
            )

    def __len__(self) -> int:
        return len(self.windows)

    def frame_paths(self, index: int) -> list[tuple[Path, Path]]:
        """(image, label map) paths of the window's frames, first frame first."""
        snip_index, offset = self.windows[index]
        s = self.snippets[snip_index]
        numbers = [s.first_frame + offset + t for t in range(self.num_frames)]
        return [
            (image_path(self.root, s.split, s.city, s.seq, n), label_path(self.labels_root, s.split, s.city, s.seq, n))
            for n in numbers
        ]

    def _load_frame(self, path: Path) -> np.ndarray:
        from PIL import Image

        h, w = self.size
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (w, h):
                # PIL's bilinear filter widens its support when shrinking (area-like antialiasing); reducing_gap
                # first box-reduces by an integer factor, which is much faster on 2048×1024 inputs.
                im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(im)  # (H, W, 3) uint8

    def _load_labels(self, path: Path) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as im:
            ids = np.asarray(im)
        if ids.ndim != 2:
            raise ValueError(f"{str(path)!r} is not a single-channel trainId map (shape {ids.shape}).")
        ids = validate_ids(ids)
        return ids if ids.shape == self.size else resize_ids(ids, self.size)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        paths = self.frame_paths(index)
        frames = np.stack([self._load_frame(img) for img, _ in paths])  # (T+1, H, W, 3) uint8
        labels = np.stack([self._load_labels(lab) for _, lab in paths])  # (T+1, H, W) uint8
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (T+1, 3, H, W) [-1, 1]
        labels_t = torch.from_numpy(labels).long()  # (T+1, H, W)
        heatmaps = one_hot(labels_t[0])  # (NUM_CLASSES, H, W)
        assert heatmaps.shape[0] == NUM_CLASSES
        return {"video": video, "labels": labels_t, "heatmaps": heatmaps, "name": paths[0][0].name[: -len(IMAGE_SUFFIX)]}
