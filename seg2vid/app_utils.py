"""Pure helpers behind the web app (``app.py``): everything that can be tested without a browser or a model.

* **Label maps in and out of the canvas.** ``street_scene`` draws the default street, ``editor_value`` turns
  trainIds into an ``ImageEditor`` value (colours, enlarged for display), ``editor_to_ids`` turns what the user
  painted back into trainIds at the model resolution.
* **Uploads.** ``read_label_upload`` / ``read_photo_upload`` open untrusted files safely (size checked from the
  header before any pixel is decoded: no decompression bombs), centre-crop to the model's aspect ratio, and
  resize (nearest for labels, bicubic for photos). Every failure is a ``ValueError`` a user can act on.
* **Editing and inspection.** ``replace_class``, ``class_shares``.
* **Scrubbing z.** ``LatentPath``: a great-circle path through the prior about its mean, so every slider position
  is an equally likely motion code and small slider moves make small changes.
* **Visualisation.** ``flow_mosaic`` (colour wheel of torchvision's ``flow_to_image``), ``occlusion_mosaic``.
* **Start-up.** ``load_app_pipeline`` (bundled model, a given checkpoint, or untrained demo weights) and
  ``share_available`` (is a share tunnel worth trying).
* ``friendly_error``: any exception → one line for the user, never a traceback.

Conventions: label maps are (H, W) uint8 trainIds (``labels.IGNORE_ID`` = unlabelled), sizes are (H, W), images
are (H, W, 3) uint8 RGB. Flows are (T, H, W, 2) pixels (dx, dy), occlusion maps (T, H, W) in [0, 1], 1 = visible.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import labels

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS",
    "MIN_UPLOAD_SIDE",
    "OFF_PALETTE_WARNING",
    "UNTRAINED_BANNER",
    "LabelUpload",
    "LatentPath",
    "center_crop_box",
    "class_shares",
    "companion_seed",
    "display_scale",
    "editor_to_ids",
    "editor_value",
    "fit_ids",
    "flow_mosaic",
    "fresh_output_dir",
    "friendly_error",
    "latent_paths",
    "legend_html",
    "load_app_pipeline",
    "occlusion_mosaic",
    "palette_hex",
    "read_label_upload",
    "read_photo_upload",
    "replace_class",
    "share_available",
    "street_scene",
    "tile",
]

# Uploads: refuse before decoding anything larger than this (a 10000×10000 PNG is 300 MB of RGB once decoded).
MAX_UPLOAD_PIXELS = 40_000_000  # about 8900×4450; Cityscapes frames are 2048×1024 = 2.1 MP
MAX_UPLOAD_BYTES = 50 * 2**20
MIN_UPLOAD_SIDE = 16
# Warn when more than this share of an uploaded colour image is far from every class colour.
OFF_PALETTE_WARNING = 0.05
# A painted pixel counts as "exactly one class colour" within this per-channel tolerance (anti-aliased brush
# edges and colour-managed canvases are off by more; those pixels take the class of the nearest exact pixel).
_EXACT_TOLERANCE = 4

EMPTY_CANVAS = "The canvas is empty: press 'Reset to the empty street', or upload a label map."
UNTRAINED_BANNER = (
    "Untrained demo weights: no trained model was found, so the networks are randomly initialised. The app "
    "works end to end, but the frames and the motion are noise. Start it with --checkpoint FOLDER_OR_HUB_REPO."
)


# ----------------------------------------------------------------------------------------------------------------
# Palette and legend


def palette_hex() -> list[str]:
    """The 19 class colours as ``"#rrggbb"`` strings, in trainId order (for ``gr.Brush(colors=...)``)."""
    return ["#{:02x}{:02x}{:02x}".format(*c.color) for c in labels.CLASSES]


def legend_html() -> str:
    """HTML swatches with the class names, background classes first, then the movable foreground classes."""

    def swatches(ids) -> str:
        items = []
        for i in ids:
            c = labels.CLASSES[i]
            r, g, b = c.color
            text = "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"
            items.append(
                f'<span class="swatch" style="background:rgb({r},{g},{b});color:{text}" '
                f'title="trainId {c.train_id}, labelId {c.label_id}">{c.name}</span>'
            )
        return "".join(items)

    return (
        '<div class="legend">'
        f'<div><b>Background</b> (camera motion) {swatches(labels.BG_IDS)}</div>'
        f'<div><b>Foreground</b> (objects that move) {swatches(labels.FG_IDS)}</div>'
        "</div>"
    )


# ----------------------------------------------------------------------------------------------------------------
# The canvas


def street_scene(size: tuple[int, int]) -> np.ndarray:
    """A simple street seen from a car, as (H, W) trainIds: sky over buildings over sidewalk over road.

    One-point perspective with the vanishing point at 45 % of the height: the road is a wedge opening towards
    the bottom, flanked by sidewalks, with building fronts along both sides and sky above.
    """
    h, w = size
    if h < 2 or w < 2:
        raise ValueError(f"The street scene needs at least 2×2 pixels; got {h}×{w}.")
    ids = np.full((h, w), labels.NAME_TO_ID["sky"], np.uint8)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = (y + 0.5) / h, (x + 0.5) / w  # pixel centres in [0, 1]
    horizon, centre = 0.45, 0.5
    depth = np.clip(y - horizon, 0, None)  # 0 at the horizon, growing towards the viewer
    offset = np.abs(x - centre)
    # Buildings: everything off-centre enough, from the horizon up to a roofline that rises towards the sides.
    roof = horizon - 0.1 - 0.7 * np.clip(offset - 0.08, 0, None)
    ids[(y > roof) & (offset > 0.08)] = labels.NAME_TO_ID["building"]
    ids[(y > horizon - 0.03) & (offset <= 0.08)] = labels.NAME_TO_ID["building"]  # the far end of the street
    below = y > horizon
    ids[below & (offset < 1.05 * depth)] = labels.NAME_TO_ID["sidewalk"]
    ids[below & (offset < 0.75 * depth)] = labels.NAME_TO_ID["road"]
    return ids


def display_scale(size: tuple[int, int], target_width: int = 512) -> int:
    """The integer factor by which to enlarge a (H, W) map for painting comfortably (about ``target_width``)."""
    return max(1, round(target_width / size[1]))


def editor_value(ids: np.ndarray, scale: int = 1) -> dict:
    """trainIds → an ``ImageEditor`` value: the colour label map, enlarged ``scale``× (nearest), as background.

    The background is fully opaque, so the composite is always defined (an editor without a background paints
    on transparency, which Gradio flattens onto white).
    """
    rgb = labels.colorize(ids)
    if scale > 1:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    return {"background": rgb, "layers": [], "composite": rgb}


def _as_rgba(image) -> np.ndarray | None:
    """An editor image (array (H, W), (H, W, 3|4), PIL image or path) → (H, W, 4) uint8, or None."""
    if image is None:
        return None
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image

        with Image.open(image) as im:
            image = np.asarray(im.convert("RGBA"))
    elif not isinstance(image, np.ndarray):  # a PIL image
        image = np.asarray(image.convert("RGBA"))
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"The canvas image must be 8-bit; got {image.dtype}.")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"The canvas image has an unexpected shape {tuple(image.shape)}.")
    if image.shape[-1] == 3:
        image = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    return image


def _fill_from_nearest(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Give every pixel where ``known`` is False the label of the nearest known pixel (Euclidean)."""
    if known.all():
        return ids
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~known, return_indices=True)
    return ids[iy, ix]


def editor_to_ids(value: dict | None, size: tuple[int, int]) -> np.ndarray:
    """What the user painted (an ``ImageEditor`` value) → (H, W) uint8 trainIds at ``size``.

    The composite is read where it is opaque; transparent pixels keep the background layer ("keep background").
    Colours are snapped to the palette; pixels that are not exactly one class colour (anti-aliased brush edges)
    take the class of the nearest pixel that is, so a stroke never leaves a rim of some third class. The map is
    then brought to ``size`` with ``fit_ids`` (centre crop to the aspect ratio, nearest resize).
    """
    if not value:
        raise ValueError(EMPTY_CANVAS)
    composite = _as_rgba(value.get("composite"))
    background = _as_rgba(value.get("background"))
    if composite is None and background is None:
        raise ValueError("The canvas is empty: paint a label map or upload one.")
    if composite is None:
        composite = background
    rgb = composite[..., :3].copy()
    known = composite[..., 3] >= 128
    if background is not None and background.shape == composite.shape:
        keep = ~known & (background[..., 3] >= 128)
        rgb[keep] = background[..., :3][keep]
        known |= keep
    if not known.any():
        raise ValueError(EMPTY_CANVAS)
    ids = labels.decode_color(rgb).ids
    exact = np.abs(labels.colorize(ids).astype(np.int16) - rgb.astype(np.int16)).max(axis=-1) <= _EXACT_TOLERANCE
    exact &= known
    if not exact.any():
        raise ValueError("The canvas holds none of the 19 class colours: paint with the class brushes.")
    ids = _fill_from_nearest(ids, exact)
    return fit_ids(ids, size)[0]


# ----------------------------------------------------------------------------------------------------------------
# Uploads


def center_crop_box(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred (top, left, height, width) box of a ``src`` (H, W) image with the aspect of ``dst``."""
    h, w = src
    th, tw = dst
    if h * tw > w * th:  # too tall: crop rows
        ch = max(1, round(w * th / tw))
        return (h - ch) // 2, 0, ch, w
    cw = max(1, round(h * tw / th))  # too wide (or exact): crop columns
    return 0, (w - cw) // 2, h, cw


def fit_ids(ids: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """trainIds of any size → ``size`` (H, W): centre crop to its aspect ratio, then nearest resize.

    Returns the map and whether anything was cropped.
    """
    top, left, ch, cw = center_crop_box(ids.shape, size)
    cropped = (ch, cw) != tuple(ids.shape)
    ids = ids[top : top + ch, left : left + cw]
    if ids.shape != tuple(size):
        ids = labels.resize_ids(ids, size)
    return np.ascontiguousarray(ids), cropped


def _open_image(path, what: str):
    """Open an untrusted image file and decode it, refusing empty, huge, tiny, truncated or non-image files."""
    from PIL import Image, UnidentifiedImageError

    if path is None:
        raise ValueError(f"No {what} was uploaded.")
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise ValueError(f"The uploaded {what} {name!r} could not be found on the server; please upload it again.")
    nbytes = path.stat().st_size
    if nbytes == 0:
        raise ValueError(f"The uploaded {what} {name!r} is empty (0 bytes).")
    if nbytes > MAX_UPLOAD_BYTES:
        raise ValueError(
            f"The uploaded {what} {name!r} is {nbytes / 2**20:.0f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB."
        )
    limit = f"images up to {MAX_UPLOAD_PIXELS / 1e6:.0f} MP are accepted"
    with warnings.catch_warnings():
        # Pillow's own bomb warning is moot: the (lower) pixel limit below is checked before decoding.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)  # reads the header only
        except Image.DecompressionBombError:
            raise ValueError(f"{name!r} has far too many pixels; {limit}.") from None
        except UnidentifiedImageError:
            raise ValueError(
                f"{name!r} is not an image Pillow can read (PNG, JPEG, WebP, BMP, TIFF …), or it is corrupt."
            ) from None
        except OSError as e:
            raise ValueError(f"{name!r} could not be opened as an image ({e}).") from None
        w, h = im.size
        if w * h > MAX_UPLOAD_PIXELS:
            im.close()
            raise ValueError(
                f"{name!r} is {w}×{h} pixels ({w * h / 1e6:.0f} MP); {limit}. Downscale it (with nearest "
                "sampling for label maps) and upload it again."
            )
        if min(w, h) < MIN_UPLOAD_SIDE:
            im.close()
            raise ValueError(
                f"{name!r} is only {w}×{h} pixels; a {what} needs at least {MIN_UPLOAD_SIDE} pixels on each side."
            )
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as e:
            im.close()
            raise ValueError(f"{name!r} is truncated or corrupt and could not be decoded ({e}).") from None
    return im


@dataclass(frozen=True)
class LabelUpload:
    """An uploaded label map brought to the model resolution, and what happened on the way."""

    ids: np.ndarray  # (H, W) uint8 trainIds at the model resolution
    source: str  # "color", "trainId" or "labelId": how the file was read
    off_palette_fraction: float  # share of colour pixels far from every class colour (0 for id maps)
    original_size: tuple[int, int]  # (H, W) of the file
    cropped: bool  # whether a centre crop was needed to reach the model's aspect ratio

    def describe(self, size: tuple[int, int]) -> str:
        """One line for the user: how the file was read and resized."""
        kind = {"color": "colour label image", "trainId": "trainId map", "labelId": "Cityscapes labelId map"}
        h, w = self.original_size
        text = f"Read a {w}×{h} {kind.get(self.source, self.source)}"
        if self.cropped:
            text += f", centre-cropped to the model's {_aspect_text(size)} aspect"
        text += f", resized to {size[1]}×{size[0]} (nearest)."
        if self.off_palette_fraction > 0:
            text += f" {self.off_palette_fraction:.1%} of the pixels were off-palette and snapped to the nearest class."
        return text


def _aspect_text(size: tuple[int, int]) -> str:
    h, w = size
    g = math.gcd(h, w)
    return f"{h // g}:{w // g} (H:W)"


def read_label_upload(path, size: tuple[int, int]) -> LabelUpload:
    """An uploaded label image (colour PNG, grayscale trainIds or labelIds; any size) → trainIds at ``size``.

    The image is decoded at full resolution (so trainId/labelId detection and the off-palette share see every
    pixel), centre-cropped to the aspect ratio of ``size`` and resized with nearest sampling.
    """
    with _open_image(path, "label map") as im:
        original = (im.height, im.width)
        decoded = labels.decode_image(im)
    if decoded.off_palette_fraction > 0.5:
        raise ValueError(
            f"{decoded.off_palette_fraction:.0%} of the pixels are far from every class colour: this looks like a "
            "photo, not a label map. Upload a colour label image in the Cityscapes colours (see the legend), or a "
            "grayscale trainId / labelId map. To animate a photo, use 'Animate your own photo'."
        )
    ids, cropped = fit_ids(decoded.ids, size)
    return LabelUpload(ids, decoded.source, decoded.off_palette_fraction, original, cropped)


def read_photo_upload(path, size: tuple[int, int]) -> np.ndarray:
    """An uploaded photo → (H, W, 3) uint8 at ``size``: centre crop to the aspect ratio, bicubic resize."""
    from PIL import Image, ImageOps

    with _open_image(path, "photo") as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    top, left, ch, cw = center_crop_box((im.height, im.width), size)
    im = im.crop((left, top, left + cw, top + ch))
    if im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BICUBIC)
    return np.asarray(im)


# ----------------------------------------------------------------------------------------------------------------
# Editing and inspecting a label map


def _class_id(name: str) -> int:
    if name not in labels.NAME_TO_ID:
        raise ValueError(f"Unknown class {name!r}; choose one of: {', '.join(labels.CLASS_NAMES)}.")
    return labels.NAME_TO_ID[name]


def replace_class(ids: np.ndarray, old: str, new: str) -> np.ndarray:
    """A copy of ``ids`` with every pixel of class ``old`` (a name) set to class ``new``."""
    a, b = _class_id(old), _class_id(new)
    out = np.array(ids, dtype=np.uint8, copy=True)
    out[out == a] = b
    return out


def class_shares(ids: np.ndarray) -> list[list]:
    """Rows ``[class, group, share %]`` for the classes present in ``ids``, largest first (unlabelled last)."""
    ids = np.asarray(ids)
    counts = np.bincount(ids.ravel(), minlength=256)
    rows = []
    for i in np.flatnonzero(counts[: labels.NUM_CLASSES]):
        group = "foreground" if i in labels.FG_IDS else "background"
        rows.append([labels.CLASS_NAMES[i], group, round(100.0 * float(counts[i]) / ids.size, 1)])
    rows.sort(key=lambda r: -r[2])
    if counts[labels.IGNORE_ID]:
        rows.append(["(unlabelled)", "—", round(100.0 * float(counts[labels.IGNORE_ID]) / ids.size, 1)])
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Scrubbing z


@dataclass(frozen=True)
class LatentPath:
    """Two great-circle arcs through the prior about its mean c, s ∈ [-1, 1]:
    ``z(s) = c + cos(π|s|/2) (start − c) + sin(π|s|/2) (end − c)``, end = ``turn`` for s ≥ 0, ``back`` for s < 0.

    ``start``, ``turn`` and ``back`` are independent draws from the prior and ``centre`` its mean (default 0). For a
    Gaussian prior z(s) then has the prior's distribution for every s (cos² + sin² = 1): each slider position is an
    equally plausible motion code, unlike a straight line between two draws, whose middle is too close to the mean.
    z(0) = ``start`` (the seed's own code), z(1) = ``turn``, z(-1) = ``back``, so both ends are codes the prior
    draws even when it is a mixture (without ``back``, z(-1) = 2c − ``turn``, the reflection a symmetric prior
    draws as often); ‖z(s) − z(s')‖ ≤ π/2 · |s − s'| · (‖start − c‖ + ‖end − c‖) on each side, so small slider
    moves make small changes.
    """

    start: torch.Tensor  # (D,)
    turn: torch.Tensor  # (D,)
    centre: torch.Tensor | None = None  # (D,); None = the origin, the mean of N(0, I)
    back: torch.Tensor | None = None  # (D,); None = the reflection of turn through the centre

    def __call__(self, s: float) -> torch.Tensor:
        if not math.isfinite(s):
            raise ValueError(f"The slider position must be a finite number; got {s!r}.")
        s = min(1.0, max(-1.0, float(s)))
        theta = 0.5 * math.pi * abs(s)
        c = 0.0 if self.centre is None else self.centre
        if s >= 0:
            end = self.turn
        else:
            end = self.back if self.back is not None else 2 * c - self.turn
        # c + cos θ (start − c) + sin θ (end − c), grouped so that s = 0 gives ``start`` bit for bit
        return math.cos(theta) * self.start + (1 - math.cos(theta)) * c + math.sin(theta) * (end - c)  # (D,)


def companion_seed(seed: int) -> int:
    """A second seed derived from ``seed`` (for the ``turn`` draws), independent of it and of its neighbours."""
    return int(np.random.SeedSequence([int(seed), 0x5E62]).generate_state(1, np.uint64)[0] % 2**63)


def latent_paths(
    sample_z: Callable[[int], tuple[torch.Tensor, torch.Tensor]], seed: int, centre=None
) -> tuple[LatentPath, LatentPath]:
    """The foreground and background paths of ``seed``: start = the seed's own (z_fg, z_bg), turn and back = two
    more draws (from ``companion_seed(seed)`` and the companion's companion).

    ``sample_z(seed) -> (z_fg (1, D_fg) or (D_fg,), z_bg (1, D_bg) or (D_bg,))`` — e.g.
    ``lambda s: pipe.sample_z(s, label_map=ids)``, so that both sliders at 0 give exactly ``pipe(ids, seed=seed)``
    (the label map matters to a layout-conditioned prior). ``centre``: the prior's mean (c_fg, c_bg), e.g.
    ``pipe.prior_mean(ids)``; None = N(0, I)'s origin.
    """
    turn_seed = companion_seed(seed)
    fg0, bg0 = sample_z(int(seed))
    fg1, bg1 = sample_z(turn_seed)
    fg2, bg2 = sample_z(companion_seed(turn_seed))
    flat = lambda z: torch.as_tensor(z, dtype=torch.float32).detach().reshape(-1).cpu()
    c_fg, c_bg = (None, None) if centre is None else (flat(centre[0]), flat(centre[1]))
    return (LatentPath(flat(fg0), flat(fg1), c_fg, flat(fg2)),
            LatentPath(flat(bg0), flat(bg1), c_bg, flat(bg2)))


# ----------------------------------------------------------------------------------------------------------------
# Visualisation


def tile(images: np.ndarray, columns: int = 4, gap: int = 2, fill: int = 255) -> np.ndarray:
    """(N, H, W, 3) uint8 → one (rows·H + gaps, columns·W + gaps, 3) image, row-major, ``gap`` px apart."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"tile expects (N, H, W, 3) images; got shape {tuple(images.shape)}.")
    n, h, w, _ = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), fill, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = image
    return out


def flow_mosaic(flow: np.ndarray, columns: int = 4) -> np.ndarray:
    """(T, H, W, 2) flows in pixels → one tiled colour-wheel image (torchvision ``flow_to_image``).

    Hue is the direction, saturation the magnitude, normalised by the largest motion over all T frames so the
    frames can be compared (zero motion is white).
    """
    from torchvision.utils import flow_to_image

    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow_mosaic expects (T, H, W, 2) flows; got shape {tuple(flow.shape)}.")
    images = flow_to_image(torch.from_numpy(flow).permute(0, 3, 1, 2).contiguous())  # (T, 3, H, W) uint8
    return tile(images.permute(0, 2, 3, 1).numpy(), columns)


def occlusion_mosaic(occ: np.ndarray, columns: int = 4) -> np.ndarray:
    """(T, H, W) occlusion maps in [0, 1] (1 = visible) → one tiled grayscale image (white = visible)."""
    occ = np.asarray(occ, dtype=np.float32)
    if occ.ndim != 3:
        raise ValueError(f"occlusion_mosaic expects (T, H, W) maps; got shape {tuple(occ.shape)}.")
    gray = (np.clip(occ, 0, 1) * 255).round().astype(np.uint8)
    return tile(np.repeat(gray[..., None], 3, axis=-1), columns)


# ----------------------------------------------------------------------------------------------------------------
# Errors


def friendly_error(error: BaseException) -> str:
    """One line for the user (no traceback, no internal paths) describing ``error``.

    ``ValueError`` messages in seg2vid are written for users and are passed on; a few other failures get a
    hint; anything else becomes a generic message naming only the kind of error.
    """
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return "The GPU ran out of memory. Try again in a moment, or run the app with --device cpu."
    if isinstance(error, MemoryError):
        return "The server ran out of memory for this request. Try a smaller image."
    if isinstance(error, ValueError):
        message = str(error).strip().splitlines()
        return message[0] if message else "Invalid input."
    if isinstance(error, FileNotFoundError):
        return "A file this request needs is gone from the server (perhaps cleaned up). Please upload it again."
    if isinstance(error, RuntimeError) and "ffmpeg" in str(error).lower():
        return "Writing the video failed (ffmpeg). The frames are still shown below; please try again."
    return f"Something went wrong ({type(error).__name__}). Please try again; if it persists, reload the page."


# ----------------------------------------------------------------------------------------------------------------
# Start-up


def load_app_pipeline(checkpoint: str | None, device: str = "cpu", bundled: str | Path | None = None):
    """The pipeline the app serves, and a banner to show (or None).

    * ``checkpoint`` given (a folder or a Hub repo id): load it; failures raise ``CheckpointError``.
    * ``checkpoint`` None and the bundled folder holds a model: load the bundled model.
    * ``checkpoint`` None and the bundled folder is empty: a randomly initialised default pipeline (seeded, so
      the demo is reproducible; zero-initialised output heads get small random weights so that it moves) and
      ``UNTRAINED_BANNER`` — the app starts either way.
    """
    from .checkpoint import is_pipeline_folder
    from .pipeline import DEFAULT_CHECKPOINT, Seg2VidPipeline

    bundled = Path(bundled) if bundled is not None else DEFAULT_CHECKPOINT
    if checkpoint is not None:
        return Seg2VidPipeline.from_pretrained(checkpoint, device=device), None
    if is_pipeline_folder(bundled):
        return Seg2VidPipeline.from_pretrained(bundled, device=device), None
    from .config import FlowPredictorConfig, ImageGeneratorConfig
    from .networks.flow_predictor import FlowPredictor
    from .networks.image_generator import ImageGenerator

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        image_generator, flow_predictor = ImageGenerator(ImageGeneratorConfig()), FlowPredictor(FlowPredictorConfig())
        # Training starts the output heads (flow, refiner residual) at zero: no motion at all, and sliders that
        # do nothing. Small random heads make the untrained demo move, so the controls can be tried out.
        for param in flow_predictor.parameters():
            if param.dim() > 1 and not param.any():
                param.normal_(0.0, 0.01)
        pipe = Seg2VidPipeline(image_generator, flow_predictor, device)
    return pipe, UNTRAINED_BANNER


def share_available(host: str = "api.gradio.app", port: int = 443, timeout: float = 3.0) -> bool:
    """Whether the share service answers at all (one TCP connect), so ``--share`` offline fails fast."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fresh_output_dir(root: str | Path, keep_seconds: float = 1800.0) -> Path:
    """A new empty folder under ``root`` for one request's files; folders older than ``keep_seconds`` are removed.

    Gradio copies returned files into its own cache after the handler returns, so a request's files only need
    to outlive the request; keeping them a while serves slow downloads and bounds the disk use.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > keep_seconds:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # another request removed it first
            pass
    return Path(tempfile.mkdtemp(dir=root))
