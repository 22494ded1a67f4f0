"""A compact U-Net that segments frames into the 19 Cityscapes train classes — an evaluation tool, not part of the
seg2vid model.

It measures *label fidelity* of stage 1: a first frame generated from a label map should segment back into that
map (the pix2pixHD-style check; seg2vid's evaluation reports its mIoU next to the segmenter's mIoU on real frames).
Trained on SynthCity by ``training/train_segmenter.py``; about 0.9 M parameters, fast on a CPU.

Architecture (``SegmenterConfig.channels = (c0, …, c4)``, widths at 1, 1/2, 1/4, 1/8, 1/16 of the frame)::

    frame (B, 3, H, W) in [-1, 1]
      enc_0: 2 × [conv3×3 → BN → ReLU] at c0                        ─ skip_0
      enc_l: max-pool 2, 2 × [conv3×3 → BN → ReLU] at c_l  (l ≥ 1)    ─ skip_l
      dec_l: bilinear ×2, concat skip_l, 2 × [conv3×3 → BN → ReLU] at c_l   (l = L-1 … 0)
      head:  conv1×1 → logits (B, num_classes, H, W)

Checkpoints are folders with ``config.json`` (``{"class": "Segmenter", "format_version": 1, "config": {...}}``)
and ``model.safetensors``, loaded strictly (``save_segmenter`` / ``load_segmenter``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import atomic_write
from ..config import _Config, _positive
from ..labels import NUM_CLASSES

__all__ = ["SegmenterConfig", "Segmenter", "save_segmenter", "load_segmenter"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


@dataclass
class SegmenterConfig(_Config):
    num_classes: int = NUM_CLASSES
    channels: tuple[int, ...] = (16, 32, 64, 96, 128)  # widths at 1, 1/2, 1/4, … (one entry per level)

    def validate(self) -> None:
        _positive(self, "num_classes", "channels")
        if len(self.channels) < 2:
            raise ValueError("SegmenterConfig: channels needs at least two levels.")

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (one max-pool per level below the first)."""
        return 2 ** (len(self.channels) - 1)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class Segmenter(nn.Module):
    """Frames (B, 3, H, W) in [-1, 1] → class logits (B, num_classes, H, W)."""

    config_class = SegmenterConfig

    def __init__(self, config: SegmenterConfig | None = None):
        super().__init__()
        self.config = config or SegmenterConfig()
        ch = self.config.channels
        self.encoders = nn.ModuleList([_DoubleConv(3, ch[0])] + [_DoubleConv(ch[i - 1], ch[i]) for i in range(1, len(ch))])
        # decoder level i (coarse → fine) fuses the upsampled level i+1 with skip i
        self.decoders = nn.ModuleList([_DoubleConv(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(len(ch) - 1))])
        self.head = nn.Conv2d(ch[0], self.config.num_classes, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        m = self.config.size_multiple
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"Segmenter expects frames of shape (B, 3, H, W); got {tuple(frames.shape)}.")
        if frames.shape[-2] % m or frames.shape[-1] % m:
            raise ValueError(f"Segmenter: H and W must be multiples of {m}; got {tuple(frames.shape[-2:])}.")
        x = frames.contiguous(memory_format=torch.channels_last)
        skips = []
        for level, enc in enumerate(self.encoders):
            x = enc(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()  # the bottleneck, (B, c_L, H/2^L, W/2^L)
        for dec in self.decoders:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], dim=1))
        return self.head(x)  # (B, num_classes, H, W)

    @torch.no_grad()
    def predict(self, frames: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Frames (N, 3, H, W) in [-1, 1] → trainIds (N, H, W) int64, in batches, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self(frames[i : i + batch_size]).argmax(1) for i in range(0, len(frames), batch_size)])
        finally:
            self.train(was_training)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint I/O: config.json + model.safetensors, atomic writes, strict loading.


def save_segmenter(model: Segmenter, folder, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``folder/model.safetensors`` then ``folder/config.json`` (so a config never points at half a file)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"class": "Segmenter", "format_version": FORMAT_VERSION, "config": model.config.to_dict()}
    if metadata:
        record["metadata"] = metadata
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return folder


def load_segmenter(folder, device: str | torch.device = "cpu") -> Segmenter:
    """Load a segmenter folder strictly; raises ``ValueError`` naming the folder and the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise ValueError(
            f"No segmenter checkpoint at {str(folder)!r} (expected {CONFIG_NAME} and {WEIGHTS_NAME}); "
            "train one with `python training/train_segmenter.py`."
        )
    try:
        record = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(config_path)!r} is not valid JSON ({e}).") from None
    if not isinstance(record, dict) or record.get("class") != "Segmenter" or not isinstance(record.get("config"), dict):
        raise ValueError(f"{str(config_path)!r} does not describe a Segmenter checkpoint.")
    if record.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"{str(config_path)!r} has an unsupported format_version {record.get('format_version')!r}.")
    model = Segmenter(SegmenterConfig.from_dict(record["config"]))
    try:
        state = load_file(weights_path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{str(weights_path)!r} is corrupt or truncated ({e}).") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"The weights in {str(weights_path)!r} do not match its {CONFIG_NAME}: {e}") from None
    return model.to(device).eval()
