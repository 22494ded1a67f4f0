"""Stage 2, image encoder (paper Fig. 3): [I0, heatmaps] → multi-scale features, the coarsest being z_I0."""

from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import ConvAct

__all__ = ["ImageEncoder"]


class ImageEncoder(nn.Module):
    """A full-resolution stem, then one stage per level: [3×3 conv stride 2, 3×3 conv], LeakyReLU.

    ``forward(x (B, C_in, H, W)) -> list`` of features fine → coarse, (B, channels[i], H / 2**(i+1), W / 2**(i+1));
    the last one (1/16 with the default four levels) is the spatial bottleneck z_I0. The features are computed
    once per first frame and reused for every sampled z (the flow decoder turns them into skip inputs).
    """

    def __init__(self, in_channels: int, stem_channels: int, channels: tuple[int, ...]):
        super().__init__()
        self.stem = ConvAct(in_channels, stem_channels)
        widths = (stem_channels, *channels)
        self.stages = nn.ModuleList(
            nn.Sequential(ConvAct(widths[i], widths[i + 1], stride=2), ConvAct(widths[i + 1], widths[i + 1]))
            for i in range(len(channels))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x.contiguous(memory_format=torch.channels_last))
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return features
