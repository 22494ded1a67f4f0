"""``SynthCityDataset``: SynthCity clips as training tensors for both stages.

Each item is one clip of ``num_frames = T + 1`` frames, read from a folder written by
``python -m seg2vid.data.synthcity`` (``root`` given) or rendered on the fly (``root=None``)::

    video     (T+1, 3, H, W) float in [-1, 1]
    labels    (T+1, H, W)    long trainIds
    heatmaps  (19, H, W)     float, one-hot of frame 0's labels (``seg2vid.labels.one_hot``)
    flow_fwd  (T, 2, H, W)   float pixels (dx, dy): frame 0 → frame t   (I_0(x) ≈ I_t(x + w^f_t(x)))
    flow_bwd  (T, 2, H, W)   float pixels (dx, dy): frame t → frame 0   (I_t(x) ≈ I_0(x + w^b_t(x)))
    occ_fwd   (T, 1, H, W)   float {0, 1}, 1 = has a correspondence (on frame 0's pixels)
    occ_bwd   (T, 1, H, W)   float {0, 1} (on frame t's pixels)
    seed      ()             long

Seeds from ``HELDOUT_SEED_START`` (1,000,000) on are reserved for evaluation; a dataset built with such seeds
must say ``allow_heldout=True``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..labels import one_hot
from .synthcity import HELDOUT_SEED_START, render_clip
from .synthcity.writer import FORMAT, is_complete, read_clip

__all__ = ["SynthCityDataset", "HELDOUT_SEED_START"]


class SynthCityDataset(Dataset):
    """SynthCity clips by seed, from disk (``root``) or rendered on the fly (``root=None``)."""

    def __init__(
        self,
        root: str | Path | None = None,
        seeds: Sequence[int] = range(0, 1000),
        size: tuple[int, int] = (128, 256),
        num_frames: int = 9,
        allow_heldout: bool = False,
    ):
        self.seeds = list(seeds)
        if not self.seeds:
            raise ValueError("SynthCityDataset needs at least one seed.")
        if any((not isinstance(s, (int, np.integer))) or s < 0 for s in self.seeds):
            raise ValueError("Seeds must be non-negative integers.")
        if not allow_heldout and max(self.seeds) >= HELDOUT_SEED_START:
            raise ValueError(
                f"Seeds ≥ {HELDOUT_SEED_START:,} are held out for evaluation; pass allow_heldout=True to use them."
            )
        self.size = (int(size[0]), int(size[1]))
        self.num_frames = int(num_frames)
        self.root = None if root is None else Path(root)
        if self.root is not None:
            meta_path = self.root / "meta.json"
            if not meta_path.is_file():
                raise ValueError(f"{self.root} is not a SynthCity dataset folder (no meta.json). Write one with "
                                 f"`python -m seg2vid.data.synthcity --out {self.root}`.")
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"{meta_path} has format {meta.get('format')!r}; expected {FORMAT!r}.")
            if tuple(meta["size"]) != self.size or int(meta["num_frames"]) != self.num_frames:
                raise ValueError(f"{self.root} holds {meta['size'][0]}x{meta['size'][1]} clips of "
                                 f"{meta['num_frames']} frames; asked for {self.size[0]}x{self.size[1]} and "
                                 f"{self.num_frames} frames.")
            missing = [s for s in self.seeds if not is_complete(self.root, s)]
            if missing:
                raise ValueError(f"{len(missing)} of the requested seeds are missing under {self.root} (first: "
                                 f"{missing[0]}); write them with `python -m seg2vid.data.synthcity --out "
                                 f"{self.root} --seeds {min(self.seeds)}:{max(self.seeds) + 1}`.")

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed = self.seeds[index]
        if self.root is not None:
            clip = read_clip(self.root, seed)
        else:
            clip = render_clip(seed, size=self.size, num_frames=self.num_frames)
        video = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        labels = torch.from_numpy(clip.labels.astype(np.int64))  # (T+1, H, W)
        return {
            "video": video,  # (T+1, 3, H, W)
            "labels": labels,
            "heatmaps": one_hot(labels[0]),  # (19, H, W)
            "flow_fwd": torch.from_numpy(clip.flow_fwd).float().permute(0, 3, 1, 2).contiguous(),  # (T, 2, H, W)
            "flow_bwd": torch.from_numpy(clip.flow_bwd).float().permute(0, 3, 1, 2).contiguous(),
            "occ_fwd": torch.from_numpy(clip.occ_fwd).float().unsqueeze(1),  # (T, 1, H, W)
            "occ_bwd": torch.from_numpy(clip.occ_bwd).float().unsqueeze(1),
            "seed": torch.tensor(seed, dtype=torch.long),
        }
