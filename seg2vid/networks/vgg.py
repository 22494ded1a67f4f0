"""VGG-19 feature extractor for the perceptual loss (paper Eq. 6: "VGG-19 ... features from the first 16 layers").

Pretrained weights cannot be downloaded here: :meth:`VGGFeatures.from_local` reads torchvision's ImageNet VGG-19
checkpoint from a given file or from the torch hub cache (``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``)
and returns ``None`` when there is none — the caller must then say loudly that it trains without the perceptual
loss. The file is read with ``torch.load(weights_only=True)`` (tensors only, no pickled code).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

__all__ = ["VGGFeatures", "VGG19_FILENAME", "default_vgg19_path"]

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"  # torchvision's IMAGENET1K_V1 VGG-19 weights
# torchvision's vgg19().features[:16]: conv widths, "M" = max-pooling. Layer 15 is relu3_3.
_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256)
_TAPS = (3, 8, 15)  # relu1_2, relu2_2, relu3_3: the features the loss compares
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def default_vgg19_path() -> str:
    """Where torchvision would have cached the VGG-19 weights."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", VGG19_FILENAME)


class VGGFeatures(nn.Module):
    """Frozen VGG-19 layers 0–15: images (N, 3, H, W) in [-1, 1] → [relu1_2, relu2_2, relu3_3] features.

    Build with :meth:`from_local`; a bare ``VGGFeatures()`` has random weights (tests only).
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in _LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, item, 3, 1, 1), nn.ReLU(inplace=True)]
                cin = item
        self.layers = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGFeatures":
        return super().train(False)  # always frozen, always in eval mode

    @classmethod
    def from_local(cls, path: str | os.PathLike | None = None) -> "VGGFeatures | None":
        """Load torchvision's VGG-19 weights from ``path`` or the torch hub cache; never downloads.

        Returns None when ``path`` is None and the cache holds no ``vgg19-dcbb9e9d.pth``. Raises ``ValueError``
        when a given ``path`` does not exist or does not hold VGG-19 weights.
        """
        if path is None:
            path = default_vgg19_path()
            if not os.path.isfile(path):
                return None
        elif not os.path.isfile(path):
            raise ValueError(f"VGG-19 weights not found at {os.fspath(path)!r}.")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{os.fspath(path)!r} does not hold a state dict.")
        model = cls()
        wanted = {k for k in model.layers.state_dict()}
        picked = {}
        for key, value in state.items():
            if key.startswith("features."):
                sub = key[len("features.") :]
                if sub in wanted:
                    picked[sub] = value
        missing = sorted(wanted - set(picked))
        if missing:
            raise ValueError(f"{os.fspath(path)!r} is not a torchvision VGG-19 checkpoint (missing {missing[:3]} ...).")
        try:
            model.layers.load_state_dict(picked, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{os.fspath(path)!r} does not match VGG-19: {e}") from None
        return model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] → ImageNet-normalised
        h = h.contiguous(memory_format=torch.channels_last)
        features = []
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i in _TAPS:
                features.append(h)
        return features
