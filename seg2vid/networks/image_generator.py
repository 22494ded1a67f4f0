"""Stage 1, image-to-image (paper section 3.1): semantic heatmaps → first frame I0.

A pix2pixHD *global generator* (Wang et al., CVPR 2018) scaled down for CPU inference:

    one-hot (B, K, H, W)
      → stem: 3×3 conv, IN, ReLU                              (base, H, W)
      → num_downsample × [3×3 conv stride 2, IN, ReLU]        (widths ×2 per step, capped at max_channels)
      → [appearance modulation, if appearance_dim > 0]
      → num_res_blocks × residual block                       (at 1 / 2**num_downsample)
      → num_downsample × [nearest ×2, 3×3 conv, IN, ReLU,    (upsample + conv: no checkerboard artefacts)
                          label modulation]                   (SPADE-style, if label_modulation)
      → 7×7 conv → tanh                                      (B, 3, H, W) in [-1, 1]
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ImageGeneratorConfig
from .blocks import ConvAct, ResidualBlock, check_image

__all__ = ["ImageGenerator", "LabelModulation"]


class LabelModulation(nn.Module):
    """SPADE-style modulation (Park et al., CVPR 2019): ``h · (1 + γ(m)) + β(m)``, γ and β predicted per pixel
    from the label heatmaps ``m`` resized (nearest) to ``h``'s resolution by a 3×3 conv, ReLU, 3×3 conv.

    h (B, C, h, w), heatmaps (B, K, H, W) → (B, C, h, w). The last conv starts at zero: the identity.
    """

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.shared = nn.Sequential(nn.Conv2d(num_classes, channels, 3, 1, 1), nn.ReLU(inplace=True))
        self.to_gamma_beta = nn.Conv2d(channels, 2 * channels, 3, 1, 1)
        nn.init.zeros_(self.to_gamma_beta.weight)
        nn.init.zeros_(self.to_gamma_beta.bias)

    def forward(self, h: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        m = F.interpolate(heatmaps, size=h.shape[-2:], mode="nearest")  # (B, K, h, w)
        gamma, beta = self.to_gamma_beta(self.shared(m)).chunk(2, dim=1)  # (B, C, h, w) each
        return h * (1 + gamma) + beta


class ImageGenerator(nn.Module):
    """pix2pixHD-style global generator; ``forward(heatmaps, appearance=None) -> (B, 3, H, W)`` in [-1, 1].

    ``appearance`` (B, appearance_dim), when the config enables it, scales and shifts the bottleneck features
    per channel (AdaIN-style: ``h · (1 + γ(a)) + β(a)``); left out, it defaults to the zero code.
    """

    config_class = ImageGeneratorConfig

    def __init__(self, config: ImageGeneratorConfig):
        super().__init__()
        if not isinstance(config, ImageGeneratorConfig):
            raise ValueError(f"ImageGenerator expects an ImageGeneratorConfig; got {type(config).__name__}.")
        self.config = config
        widths = [min(config.base_channels * 2**i, config.max_channels) for i in range(config.num_downsample + 1)]

        self.stem = ConvAct(config.num_classes, widths[0], norm=True, relu="relu")
        self.down = nn.Sequential(
            *(ConvAct(widths[i], widths[i + 1], stride=2, norm=True, relu="relu") for i in range(config.num_downsample))
        )
        self.appearance = nn.Linear(config.appearance_dim, 2 * widths[-1]) if config.appearance_dim > 0 else None
        if self.appearance is not None:  # start as the identity modulation
            nn.init.zeros_(self.appearance.weight)
            nn.init.zeros_(self.appearance.bias)
        self.res_blocks = nn.Sequential(*(ResidualBlock(widths[-1]) for _ in range(config.num_res_blocks)))
        self.up = nn.ModuleList(
            ConvAct(widths[i + 1], widths[i], norm=True, relu="relu") for i in reversed(range(config.num_downsample))
        )
        self.modulate = (
            nn.ModuleList(
                LabelModulation(config.num_classes, widths[i]) for i in reversed(range(config.num_downsample))
            )
            if config.label_modulation else None
        )
        self.to_rgb = nn.Conv2d(widths[0], 3, 7, 1, 3)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return 2**self.config.num_downsample

    def forward(self, heatmaps: torch.Tensor, appearance: torch.Tensor | None = None) -> torch.Tensor:
        """heatmaps (B, num_classes, H, W) one-hot → image (B, 3, H, W) in [-1, 1]."""
        check_image(heatmaps, "heatmaps", self.config.num_classes, self.size_multiple)
        b = heatmaps.shape[0]
        if appearance is not None and self.appearance is None:
            raise ValueError("this ImageGenerator has appearance_dim=0; do not pass an appearance code.")
        if appearance is not None and tuple(appearance.shape) != (b, self.config.appearance_dim):
            raise ValueError(
                f"appearance must have shape ({b}, {self.config.appearance_dim}); got {tuple(appearance.shape)}."
            )

        x = heatmaps.contiguous(memory_format=torch.channels_last)
        h = self.down(self.stem(x))  # (B, C, H / 2**n, W / 2**n)
        if self.appearance is not None:
            if appearance is None:
                appearance = h.new_zeros(b, self.config.appearance_dim)
            gamma, beta = self.appearance(appearance).view(b, -1, 1, 1).chunk(2, dim=1)
            h = h * (1 + gamma) + beta
        h = self.res_blocks(h)
        for i, up in enumerate(self.up):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B, C_i, 2h, 2w)
            if self.modulate is not None:
                h = self.modulate[i](h, x)
        return torch.tanh(self.to_rgb(h)).contiguous()  # (B, 3, H, W)
