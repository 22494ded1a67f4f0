"""Stage 2, post-processing network P of Eq. 2: a U-Net that in-paints the warped frames (paper section 3.2)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import ConvAct

__all__ = ["Refiner"]


class Refiner(nn.Module):
    """U-Net (Ronneberger et al. 2015, scaled down): (N, C_in, H, W) → residual (N, 3, H, W).

    It runs on every predicted frame, so its full-resolution ends are space-to-depth rearrangements instead of
    convolutions: the input is pixel-unshuffled by 2 (C_in·4 channels at 1/2 resolution) and the output is a
    sub-pixel convolution (12 channels at 1/2 → pixel shuffle → 3 at full resolution); no information is lost.

    Levels at 1/2, 1/4, ... with ``channels`` widths; the encoder has a 3×3 conv per level (stride 2 from the
    second level on) and one more 3×3 conv; the decoder reduces the coarser features with a 1×1 conv, upsamples
    them bilinearly and convolves them concatenated with the skip. The caller adds the residual to the warped frame,
    ``Î_t = clamp(warped_t + residual, -1, 1)``, and starts ``to_residual`` at zero (an untrained refiner is the
    identity).
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...]):
        super().__init__()
        widths = (in_channels * 4, *channels)
        self.down = nn.ModuleList(
            nn.Sequential(
                ConvAct(widths[i], widths[i + 1], stride=1 if i == 0 else 2), ConvAct(widths[i + 1], widths[i + 1])
            )
            for i in range(len(channels))
        )
        levels = reversed(range(len(channels) - 1))
        self.reduce = nn.ModuleList(nn.Conv2d(channels[i + 1], channels[i], 1) for i in reversed(range(len(channels) - 1)))
        self.up = nn.ModuleList(ConvAct(2 * channels[i], channels[i]) for i in levels)
        self.to_residual = nn.Conv2d(channels[0], 3 * 4, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pixel_unshuffle(x, 2).contiguous(memory_format=torch.channels_last)  # (N, 4·C_in, H/2, W/2)
        skips = []
        for stage in self.down:
            h = stage(h)
            skips.append(h)
        skips.pop()  # the bottleneck itself
        for reduce, up in zip(self.reduce, self.up):
            skip = skips.pop()
            h = F.interpolate(reduce(h), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = up(torch.cat([h, skip], dim=1))
        return F.pixel_shuffle(self.to_residual(h), 2)  # (N, 3, H, W)
