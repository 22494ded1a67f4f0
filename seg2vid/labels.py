"""The Cityscapes label system: 19 train classes, their colours, and conversions.

Everything in seg2vid speaks **trainIds** 0–18 (``IGNORE_ID`` = 255 for "no class").  Background classes are
trainIds 0–10 (road … sky), foreground classes 11–18 (person … bicycle); the stage-2 motion encoders see the two
groups separately (paper section 3.3, Fig. 4).

Conversions offered here:

* ``decode_color``: an RGB label image → trainIds, snapping every pixel to the nearest palette colour (robust to
  JPEG artefacts and anti-aliased brush edges), reporting the share of pixels that were far from every colour.
* ``decode_gray``: a single-channel image holding trainIds or Cityscapes labelIds (0–33) → trainIds.
* ``load_label_map``: any of the accepted inputs (array, PIL image, path) → trainIds.
* ``colorize``: trainIds → RGB in the official colours.
* ``one_hot`` / ``split_fg_bg``: trainIds → semantic heatmaps (19 channels), and their FG/BG halves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch


class LabelClass(NamedTuple):
    name: str
    train_id: int
    label_id: int  # Cityscapes labelId (as in the *_labelIds.png files)
    color: tuple[int, int, int]


# The 19 Cityscapes evaluation ("train") classes with their official colours and labelIds.
CLASSES: tuple[LabelClass, ...] = (
    LabelClass("road", 0, 7, (128, 64, 128)),
    LabelClass("sidewalk", 1, 8, (244, 35, 232)),
    LabelClass("building", 2, 11, (70, 70, 70)),
    LabelClass("wall", 3, 12, (102, 102, 156)),
    LabelClass("fence", 4, 13, (190, 153, 153)),
    LabelClass("pole", 5, 17, (153, 153, 153)),
    LabelClass("traffic light", 6, 19, (250, 170, 30)),
    LabelClass("traffic sign", 7, 20, (220, 220, 0)),
    LabelClass("vegetation", 8, 21, (107, 142, 35)),
    LabelClass("terrain", 9, 22, (152, 251, 152)),
    LabelClass("sky", 10, 23, (70, 130, 180)),
    LabelClass("person", 11, 24, (220, 20, 60)),
    LabelClass("rider", 12, 25, (255, 0, 0)),
    LabelClass("car", 13, 26, (0, 0, 142)),
    LabelClass("truck", 14, 27, (0, 0, 70)),
    LabelClass("bus", 15, 28, (0, 60, 100)),
    LabelClass("train", 16, 31, (0, 80, 100)),
    LabelClass("motorcycle", 17, 32, (0, 0, 230)),
    LabelClass("bicycle", 18, 33, (119, 11, 32)),
)

NUM_CLASSES = len(CLASSES)  # 19
IGNORE_ID = 255
IGNORE_COLOR = (0, 0, 0)  # Cityscapes paints "unlabeled" black
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
NAME_TO_ID: dict[str, int] = {c.name: c.train_id for c in CLASSES}

# Background = road … sky (trainIds 0–10); foreground = person … bicycle (11–18).
BG_IDS: tuple[int, ...] = tuple(range(0, 11))
FG_IDS: tuple[int, ...] = tuple(range(11, 19))
NUM_BG = len(BG_IDS)  # 11
NUM_FG = len(FG_IDS)  # 8

PALETTE = np.array([c.color for c in CLASSES], dtype=np.uint8)  # (19, 3)

# labelId (0–33) → trainId; every labelId that is not one of the 19 classes maps to IGNORE_ID.
NUM_LABEL_IDS = 34
LABELID_TO_TRAINID = np.full(256, IGNORE_ID, dtype=np.uint8)
for _c in CLASSES:
    LABELID_TO_TRAINID[_c.label_id] = _c.train_id
LABELID_TO_TRAINID.setflags(write=False)

# Pixels farther than this (Euclidean, RGB 0–255) from every palette colour count as "off-palette".
OFF_PALETTE_DISTANCE = 40.0
# Pixels farther than this from every palette colour are decoded with the help of their neighbours (see
# ``decode_color``); within it, a pixel simply takes its nearest colour.
SURE_DISTANCE = 12.0
NEIGHBOURHOOD_RADIUS = 2  # a 5×5 window


@dataclass(frozen=True)
class DecodedLabels:
    """A decoded label map and how trustworthy the decoding was."""

    ids: np.ndarray  # (H, W) uint8 trainIds, IGNORE_ID where unlabeled
    off_palette_fraction: float  # share of pixels far from every palette colour (0 for grayscale inputs)
    source: str  # "color", "trainId" or "labelId"


def _check_ids(ids: np.ndarray, what: str = "label map") -> None:
    bad = (ids >= NUM_CLASSES) & (ids != IGNORE_ID)
    if bad.any():
        values = sorted(set(np.unique(ids[bad]).tolist()))[:8]
        raise ValueError(
            f"{what} holds values {values} that are not Cityscapes trainIds (0–{NUM_CLASSES - 1}, or {IGNORE_ID})."
        )


def validate_ids(ids: np.ndarray) -> np.ndarray:
    """Check an (H, W) integer array of trainIds and return it as uint8. Raises ``ValueError`` otherwise."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"A label map must be a 2-D (H, W) array of trainIds; got shape {tuple(ids.shape)}.")
    if ids.size == 0:
        raise ValueError("The label map is empty.")
    if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"A label map must hold integer trainIds; got dtype {ids.dtype}.")
    if ids.min() < 0 or ids.max() > IGNORE_ID:
        raise ValueError(f"Label values must lie in 0–{NUM_CLASSES - 1} (or {IGNORE_ID}); got {ids.min()}–{ids.max()}.")
    ids = ids.astype(np.uint8)
    _check_ids(ids)
    return ids


def decode_color(rgb: np.ndarray, snap_ignore: bool = True) -> DecodedLabels:
    """Decode an (H, W, 3) uint8 colour label image by snapping each pixel to the nearest palette colour.

    JPEG (chroma subsampling) and anti-aliased brushes blend the colours of neighbouring classes at their
    boundaries, and a blend may lie closest to a third class (road + sky ≈ wall). So a pixel farther than
    ``SURE_DISTANCE`` from every colour takes the nearest colour among the classes of the surely decoded pixels
    in its 5×5 neighbourhood (the global nearest when there are none). Exact palette colours decode exactly.

    With ``snap_ignore`` black (Cityscapes "unlabeled") is one of the candidate colours and decodes to
    ``IGNORE_ID``. Only the distinct colours are compared with the palette, so large images stay cheap.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"A colour label image must have shape (H, W, 3); got {tuple(rgb.shape)}.")
    if rgb.dtype != np.uint8:
        raise ValueError(f"A colour label image must be uint8; got {rgb.dtype}.")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("The label image is empty.")
    rgb = rgb[..., :3]
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colors, inverse = np.unique(packed.ravel(), return_inverse=True)
    ucol = np.stack([(colors >> 16) & 255, (colors >> 8) & 255, colors & 255], axis=1).astype(np.float32)

    candidates = PALETTE.astype(np.float32)
    candidate_ids = np.arange(NUM_CLASSES, dtype=np.uint8)
    if snap_ignore:
        candidates = np.concatenate([candidates, np.array([IGNORE_COLOR], np.float32)])
        candidate_ids = np.concatenate([candidate_ids, np.array([IGNORE_ID], np.uint8)])
    dist = np.linalg.norm(ucol[:, None, :] - candidates[None, :, :], axis=-1)  # (U, K)
    nearest = dist.argmin(axis=1)
    nearest_dist = dist[np.arange(len(ucol)), nearest]
    far = nearest_dist > OFF_PALETTE_DISTANCE
    off = float(far[inverse].mean())

    inverse = inverse.reshape(rgb.shape[:2])  # (H, W) index of each pixel's colour
    choice = nearest[inverse]  # (H, W) candidate index
    unsure = nearest_dist[inverse] > SURE_DISTANCE
    if unsure.any() and not unsure.all():
        ys, xs = np.nonzero(unsure)
        r = NEIGHBOURHOOD_RADIUS
        sure_choice = np.pad(np.where(unsure, -1, choice), r, constant_values=-1)  # -1: unsure or outside
        allowed = np.zeros((len(ys), len(candidates)), dtype=bool)  # (N, K) classes seen around each pixel
        rows = np.arange(len(ys))
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                seen = sure_choice[ys + dy, xs + dx]
                ok = seen >= 0
                allowed[rows[ok], seen[ok]] = True
        local = np.where(allowed, dist[inverse[ys, xs]], np.inf).argmin(axis=1)
        choice[ys, xs] = np.where(allowed.any(axis=1), local, choice[ys, xs])
    return DecodedLabels(ids=candidate_ids[choice], off_palette_fraction=off, source="color")


def decode_gray(gray: np.ndarray, kind: str = "auto") -> DecodedLabels:
    """Decode an (H, W) single-channel image of trainIds or Cityscapes labelIds.

    ``kind`` is ``"trainId"``, ``"labelId"`` or ``"auto"``: values 19–33 can only be labelIds, so "auto" reads
    the map as labelIds when any such value is present and as trainIds otherwise.
    """
    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"A grayscale label image must have shape (H, W); got {tuple(gray.shape)}.")
    if not np.issubdtype(gray.dtype, np.integer) or gray.dtype == bool:
        raise ValueError(f"A grayscale label image must hold integers; got dtype {gray.dtype}.")
    if gray.size == 0:
        raise ValueError("The label image is empty.")
    if kind not in ("auto", "trainId", "labelId"):
        raise ValueError(f"kind must be 'auto', 'trainId' or 'labelId'; got {kind!r}.")
    if gray.min() < 0 or gray.max() > 255:
        raise ValueError(f"Label values must lie in 0–255; got {gray.min()}–{gray.max()}.")
    values = np.unique(gray)
    if kind == "auto":
        real = values[values != IGNORE_ID]
        kind = "labelId" if (real >= NUM_CLASSES).any() else "trainId"
    if kind == "labelId":
        bad = values[(values >= NUM_LABEL_IDS) & (values != IGNORE_ID)]
        if bad.size:
            raise ValueError(
                f"The grayscale image holds values {bad[:8].tolist()} that are neither trainIds (0–18) nor "
                f"Cityscapes labelIds (0–33)."
            )
        ids = LABELID_TO_TRAINID[gray.astype(np.uint8)]
    else:
        ids = gray.astype(np.uint8)
        _check_ids(ids, "The grayscale label image")
    return DecodedLabels(ids=ids, off_palette_fraction=0.0, source=kind)


def decode_image(image, kind: str = "auto") -> DecodedLabels:
    """Decode a PIL image (colour or grayscale label image) to trainIds."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise ValueError(f"Expected a PIL image; got {type(image).__name__}.")
    if image.mode in ("L", "I", "I;16"):
        return decode_gray(np.asarray(image).astype(np.int64), kind=kind)
    if image.mode == "LA":
        return decode_gray(np.asarray(image.convert("L")).astype(np.int64), kind=kind)
    # Everything else (RGB, RGBA, palette "P", CMYK …) is read as a colour label image.
    rgb = np.asarray(image.convert("RGB"))
    # A colour image whose three channels are equal and small is a grayscale id map saved as RGB.
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all() and rgb[..., 0].max() < NUM_LABEL_IDS:
        return decode_gray(rgb[..., 0].astype(np.int64), kind=kind)
    return decode_color(rgb)


def load_label_map(label_map, kind: str = "auto") -> DecodedLabels:
    """Turn any accepted label-map input into trainIds.

    Accepts an (H, W) integer array or tensor of trainIds, an (H, W, 3) uint8 colour array, a PIL image, or a
    path to an image file. Anything else raises ``ValueError`` with a message a user can act on.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(label_map, (str, os.PathLike)):
        path = os.fspath(label_map)
        if not os.path.isfile(path):
            raise ValueError(f"No label-map file at {path!r}.")
        try:
            with Image.open(path) as im:
                im.load()
                return decode_image(im, kind=kind)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"Could not read {os.path.basename(path)!r} as an image ({e}).") from None
    if isinstance(label_map, Image.Image):
        return decode_image(label_map, kind=kind)
    if isinstance(label_map, torch.Tensor):
        label_map = label_map.detach().cpu().numpy()
    if isinstance(label_map, np.ndarray):
        if label_map.ndim == 3 and label_map.shape[-1] in (3, 4):
            return decode_color(label_map)
        if label_map.ndim == 2:
            return DecodedLabels(ids=validate_ids(label_map), off_palette_fraction=0.0, source="trainId")
        raise ValueError(
            f"A label-map array must be (H, W) trainIds or (H, W, 3) colours; got shape {tuple(label_map.shape)}."
        )
    raise ValueError(
        f"A label map must be an (H, W) trainId array, a PIL image or an image path; got {type(label_map).__name__}."
    )


def colorize(ids: np.ndarray) -> np.ndarray:
    """trainIds (..., H, W) → RGB (..., H, W, 3) uint8 in the official Cityscapes colours (ignore → black)."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"colorize expects integer trainIds; got dtype {ids.dtype}.")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    lut[IGNORE_ID] = IGNORE_COLOR
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError("trainIds must lie in 0–255.")
    _check_ids(ids.astype(np.uint8))
    return lut[ids.astype(np.uint8)]


def one_hot(ids, device=None, dtype=torch.float32) -> torch.Tensor:
    """trainIds (H, W) or (B, H, W) → semantic heatmaps (19, H, W) or (B, 19, H, W); ignore pixels are all-zero."""
    t = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"one_hot expects integer trainIds; got {t.dtype}.")
    if t.dim() not in (2, 3):
        raise ValueError(f"one_hot expects (H, W) or (B, H, W) trainIds; got shape {tuple(t.shape)}.")
    t = t.to(device=device, dtype=torch.long)
    valid = t < NUM_CLASSES
    if ((~valid) & (t != IGNORE_ID)).any() or (t < 0).any():
        raise ValueError(f"one_hot got values outside 0–{NUM_CLASSES - 1} and {IGNORE_ID}.")
    out = torch.nn.functional.one_hot(torch.where(valid, t, 0), NUM_CLASSES).to(dtype)  # (..., H, W, 19)
    out = out * valid.unsqueeze(-1).to(dtype)
    return out.movedim(-1, -3).contiguous()


def split_fg_bg(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split 19-channel heatmaps (..., 19, H, W) into foreground (..., 8, H, W) and background (..., 11, H, W)."""
    if heatmaps.dim() < 3 or heatmaps.shape[-3] != NUM_CLASSES:
        raise ValueError(f"Expected heatmaps with {NUM_CLASSES} channels at dim -3; got {tuple(heatmaps.shape)}.")
    return heatmaps[..., NUM_BG:, :, :], heatmaps[..., :NUM_BG, :, :]


def foreground_mask(ids) -> np.ndarray:
    """Boolean (H, W) mask of foreground (movable-object) pixels."""
    ids = np.asarray(ids)
    return (ids >= FG_IDS[0]) & (ids <= FG_IDS[-1])


def resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize trainIds to (H, W) with nearest sampling (labels must never be interpolated)."""
    from PIL import Image

    h, w = size
    return np.array(Image.fromarray(np.asarray(ids, dtype=np.uint8)).resize((w, h), Image.NEAREST))  # writable
