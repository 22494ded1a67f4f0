"""Write a trainId label map for every frame of the Cityscapes sequences (paper section 4.1).

Cityscapes annotates only the 20th frame of each 30-frame snippet; like the paper (which used DeepLabV3) we label
every frame with a Cityscapes segmentation network. The maps land where ``CityscapesSequenceDataset`` reads them::

    {out}/{split}/{city}/{city}_{seq:06d}_{frame:06d}_trainIds.png      single-channel PNG, trainIds 0–18, 255 ignore

(``--out`` defaults to ``{root}/trainIds_sequence``.) Two sources:

* **a segmentation network** (default): SegFormer-B1 fine-tuned on Cityscapes,
  ``nvidia/segformer-b1-finetuned-cityscapes-1024-1024``, run at full resolution through ``transformers``
  (an optional extra: ``pip install transformers``). Get the weights on a machine with internet, e.g.
  ``huggingface-cli download nvidia/segformer-b1-finetuned-cityscapes-1024-1024`` (the Hugging Face cache is then
  used offline), or pass ``--model`` a local folder. Any SegFormer checkpoint whose 19 labels are the Cityscapes
  train classes works (``--model nvidia/segformer-b5-finetuned-cityscapes-1024-1024`` for better maps).
* **--precomputed DIR**: maps made elsewhere, found anywhere under DIR by their file name
  ``{city}_{seq:06d}_{frame:06d}_*.png``; ``*_labelIds.png`` are mapped labelIds → trainIds, colour images are decoded
  with the official palette, ``*_trainIds.png`` are copied (``--precomputed-kind`` overrides the guess).

The job is resumable: existing outputs are skipped and every file is written atomically (temporary file, then
rename), so an interrupted run can simply be started again.

    python training/prepare_cityscapes.py /data/cityscapes --splits train val --batch-size 4 --device cuda
    python training/prepare_cityscapes.py /data/cityscapes --precomputed /data/deeplab_maps
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from seg2vid.data.cityscapes import (
    IMAGES_DIR,
    LABELS_DIR,
    find_snippets,
    image_path,
    label_path,
    parse_frame_name,
)
from seg2vid.checkpoint import atomic_write
from seg2vid.labels import CLASS_NAMES, IGNORE_ID, NAME_TO_ID, load_label_map, resize_ids

DEFAULT_MODEL = "nvidia/segformer-b1-finetuned-cityscapes-1024-1024"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A segmenter: RGB frames (H, W, 3) uint8 → trainId maps (H, W) uint8, one per frame.
SegmentFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


class SegmenterUnavailable(RuntimeError):
    """The segmentation network cannot be loaded here (package or weights missing)."""


@dataclass(frozen=True)
class FrameJob:
    key: tuple[str, int, int]  # (city, seq, frame)
    image: Path
    out: Path


# ----------------------------------------------------------------------------------------------------------------
# Sources of label maps


def _class_to_train_id(name: str) -> int | None:
    name = name.strip().lower().replace("_", " ").replace("-", " ")
    return NAME_TO_ID.get(name)


def load_segformer(model: str = DEFAULT_MODEL, device: str = "cpu", infer_size: tuple[int, int] | None = None) -> SegmentFn:
    """Load a Cityscapes SegFormer through ``transformers`` and return a ``SegmentFn``.

    Frames are normalised with the checkpoint's mean/std, optionally resized to ``infer_size`` (H, W), segmented,
    and the logits upsampled (bilinear) to the frame size before the arg-max. The checkpoint's class names are
    matched to seg2vid's trainIds by name, so the label order of the checkpoint does not matter.
    """
    try:
        import torch
        import torch.nn.functional as F
        from transformers import AutoImageProcessor, SegformerForSemanticSegmentation
    except ImportError:
        raise SegmenterUnavailable(
            "The default segmenter needs the optional package `transformers` (pip install transformers); "
            "or pass --precomputed DIR with label maps made elsewhere."
        ) from None
    try:
        net = SegformerForSemanticSegmentation.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise SegmenterUnavailable(
            f"Could not load the segmentation weights {model!r} ({str(e).splitlines()[0]}). On a machine with "
            f"internet run `huggingface-cli download {model}` (or save the model to a folder and pass --model DIR)."
        ) from None
    try:
        processor = AutoImageProcessor.from_pretrained(model)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    except (OSError, ValueError, AttributeError):
        mean, std = IMAGENET_MEAN, IMAGENET_STD

    id2label = {int(k): v for k, v in net.config.id2label.items()}
    lut = np.full(max(id2label) + 1, IGNORE_ID, dtype=np.uint8)
    for k, name in id2label.items():
        tid = _class_to_train_id(name)
        if tid is None:
            raise SegmenterUnavailable(
                f"{model!r} predicts a class {name!r} that is not one of the 19 Cityscapes train classes "
                f"({', '.join(CLASS_NAMES)}); use a Cityscapes-finetuned checkpoint."
            )
        lut[k] = tid
    if sorted(set(lut.tolist()) - {IGNORE_ID}) != list(range(len(CLASS_NAMES))):
        raise SegmenterUnavailable(f"{model!r} does not predict all 19 Cityscapes train classes.")

    net = net.to(device).eval()
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    lut_t = torch.from_numpy(lut).to(device)

    @torch.no_grad()
    def segment(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(frames)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames):
            by_size.setdefault(f.shape[:2], []).append(i)
        for (h, w), idx in by_size.items():  # only frames of one size can share a batch
            x = torch.from_numpy(np.stack([frames[i] for i in idx])).to(device)  # (B, H, W, 3) uint8
            x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean_t) / std_t  # (B, 3, H, W)
            if infer_size is not None and tuple(infer_size) != (h, w):
                x = F.interpolate(x, size=tuple(infer_size), mode="bilinear", align_corners=False, antialias=True)
            logits = net(pixel_values=x).logits  # (B, C, H', W'), H' = H/4 for SegFormer
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            ids = lut_t[logits.argmax(dim=1)].cpu().numpy()  # (B, H, W) uint8 trainIds
            for j, i in enumerate(idx):
                out[i] = ids[j]
        return out  # type: ignore[return-value]

    return segment


# Precomputed maps: the preferred file when several exist for one frame (e.g. gtFine's labelIds and color).
_SUFFIX_PREFERENCE = ("trainIds", "labelTrainIds", "labelIds", "color")
_SUFFIX_KIND = {"trainIds": "trainId", "labelTrainIds": "trainId", "labelIds": "labelId", "color": "auto"}


def index_precomputed(folder) -> dict[tuple[str, int, int], Path]:
    """Every ``{city}_{seq}_{frame}_*.png`` under ``folder`` (recursively) → (city, seq, frame) → path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--precomputed {str(folder)!r} is not a folder.")
    found: dict[tuple[str, int, int], Path] = {}
    rank = {s: i for i, s in enumerate(_SUFFIX_PREFERENCE)}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            parsed = parse_frame_name(name)
            if parsed is None:
                continue
            city, seq, frame, suffix = parsed
            key = (city, seq, frame)
            old = found.get(key)
            if old is None or rank.get(suffix, len(rank)) < rank.get(parse_frame_name(old.name)[3], len(rank)):
                found[key] = Path(dirpath) / name
    if not found:
        raise ValueError(f"--precomputed {str(folder)!r} holds no PNG named '{{city}}_{{seq:06d}}_{{frame:06d}}_*.png'.")
    return found


def read_precomputed(path: Path, kind: str = "auto") -> np.ndarray:
    """A precomputed map → (H, W) uint8 trainIds; ``kind="auto"`` guesses from the file-name suffix."""
    if kind == "auto":
        kind = _SUFFIX_KIND.get(parse_frame_name(path.name)[3], "auto")
    if kind == "color":
        kind = "auto"  # colour images are recognised by load_label_map itself
    try:
        return load_label_map(path, kind=kind).ids
    except ValueError as e:
        raise ValueError(f"{str(path)!r}: {e}") from None


# ----------------------------------------------------------------------------------------------------------------
# The job


def list_jobs(root, splits: Sequence[str], out_dir) -> list[FrameJob]:
    jobs = []
    for split in splits:
        for s in find_snippets(root, split):
            for n in s.frame_numbers():
                jobs.append(
                    FrameJob((s.city, s.seq, n), image_path(root, split, s.city, s.seq, n), label_path(out_dir, split, s.city, s.seq, n))
                )
    return jobs


def write_label_map(ids: np.ndarray, path: Path, size: tuple[int, int] | None = None) -> None:
    """Save trainIds as a single-channel PNG atomically (temporary file in the same folder, then rename)."""
    if size is not None and ids.shape != tuple(size):
        ids = resize_ids(ids, size)
    atomic_write(path, lambda tmp: Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8)).save(tmp, format="PNG"))


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass
class PrepareSummary:
    total: int
    skipped: int  # already written by an earlier run
    written: int
    missing: list[FrameJob]  # frames with no precomputed map


def prepare(
    root,
    splits: Sequence[str] = ("train", "val"),
    out_dir=None,
    segment: SegmentFn | None = None,
    precomputed=None,
    precomputed_kind: str = "auto",
    batch_size: int = 4,
    size: tuple[int, int] | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Label every frame of ``splits``, with ``segment`` or from the ``precomputed`` folder (exactly one)."""
    from tqdm.auto import tqdm

    if (segment is None) == (precomputed is None):
        raise ValueError("Give exactly one source of label maps: a segmenter or a precomputed folder.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1; got {batch_size}.")
    out_dir = Path(out_dir) if out_dir is not None else Path(root) / LABELS_DIR
    jobs = list_jobs(root, splits, out_dir)
    todo = [j for j in jobs if not j.out.is_file()]
    summary = PrepareSummary(total=len(jobs), skipped=len(jobs) - len(todo), written=0, missing=[])
    bar = tqdm(total=len(todo), desc="label maps", unit="frame", disable=not progress)
    if precomputed is not None:
        index = index_precomputed(precomputed)
        for job in todo:
            src = index.get(job.key)
            if src is None:
                summary.missing.append(job)
            else:
                write_label_map(read_precomputed(src, precomputed_kind), job.out, size)
                summary.written += 1
            bar.update(1)
    else:
        for batch in _batches(todo, batch_size):
            maps = segment([_read_rgb(j.image) for j in batch])
            if len(maps) != len(batch):
                raise RuntimeError(f"The segmenter returned {len(maps)} maps for {len(batch)} frames.")
            for job, ids in zip(batch, maps):
                write_label_map(np.asarray(ids, dtype=np.uint8), job.out, size)
            summary.written += len(batch)
            bar.update(len(batch))
    bar.close()
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Command line


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 512x1024; got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive; got {text!r}")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help=f"Cityscapes folder holding {IMAGES_DIR}/")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to label (default: train val)")
    p.add_argument("--out", default=None, help=f"output folder (default: ROOT/{LABELS_DIR})")
    p.add_argument("--model", default=DEFAULT_MODEL, help="SegFormer Hub id or local folder (default: %(default)s)")
    p.add_argument("--precomputed", default=None, metavar="DIR", help="take maps from DIR instead of running a model")
    p.add_argument("--precomputed-kind", default="auto", choices=["auto", "trainId", "labelId", "color"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    p.add_argument("--infer-size", type=_parse_size, default=None, metavar="HxW", help="run the model at this size")
    p.add_argument("--size", type=_parse_size, default=None, metavar="HxW", help="save maps at this size (nearest)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Sequence[str] | None = None, load_model: Callable[..., SegmentFn] | None = None) -> int:
    """Run the command line; ``load_model(model, device, infer_size)`` builds the segmenter (default SegFormer)."""
    args = build_parser().parse_args(argv)
    load_model = load_model or load_segformer
    if args.batch_size < 1:
        print(f"error: --batch-size must be ≥ 1; got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        segment = None
        if args.precomputed is None:
            segment = load_model(args.model, args.device, args.infer_size)
        summary = prepare(
            args.root,
            args.splits,
            args.out,
            segment=segment,
            precomputed=args.precomputed,
            precomputed_kind=args.precomputed_kind,
            batch_size=args.batch_size,
            size=args.size,
            progress=not args.no_progress,
        )
    except (ValueError, SegmenterUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary.written} label maps written, {summary.skipped} already present, of {summary.total} frames.")
    if summary.missing:
        first = summary.missing[0]
        print(
            f"error: {len(summary.missing)} frames have no precomputed map (the first: {first.image.name}; "
            f"expected a file named {first.out.name.replace('_trainIds', '_*')} under {args.precomputed}).",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
