"""Stage 2, motion (sequence) encoder Q(z | V, I0) (paper section 3.2–3.3, Fig. 4, section 4.2).

"The motion encoder is built upon stacks of 2D convolutional layers intercepted with max pooling layers": the
T + 1 frames (I0 first) are stacked along channels together with the semantic heatmaps of I0 — the foreground
ones for the foreground encoder, the background ones for the background encoder (Fig. 4). Used for training only:
at inference z is drawn from the prior N(0, I).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import ConvAct

__all__ = ["MotionEncoder"]


class MotionEncoder(nn.Module):
    """[frames stacked along channels, heatmaps] (B, C_in, H, W) → (mu, logvar), each (B, z_dim).

    One 3×3 conv + LeakyReLU per level, 2×2 max-pooling between levels, then adaptive average pooling to a
    fixed ``pool_size`` grid (so any input resolution works) and a linear layer to the Gaussian's parameters.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], z_dim: int, pool_size: tuple[int, int]):
        super().__init__()
        widths = (in_channels, *channels)
        layers: list[nn.Module] = []
        for i in range(len(channels)):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers.append(ConvAct(widths[i], widths[i + 1]))
        self.features = nn.Sequential(*layers)
        self.pool_size = pool_size
        self.to_gaussian = nn.Linear(channels[-1] * pool_size[0] * pool_size[1], 2 * z_dim)
        self.z_dim = z_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x.contiguous(memory_format=torch.channels_last))
        h = F.adaptive_avg_pool2d(h, self.pool_size).flatten(1)  # (B, C · ph · pw)
        mu, logvar = self.to_gaussian(h).chunk(2, dim=1)  # (B, z_dim) each
        return mu, logvar
