"""Stage-1 training: the pix2pixHD multi-scale PatchGAN discriminator on [heatmaps, image] pairs, and the optional
OASIS segmentation discriminator on images alone."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import DiscriminatorConfig
from .blocks import NEG_SLOPE
from .segmenter import Segmenter, SegmenterConfig

__all__ = ["PatchDiscriminator", "MultiscaleDiscriminator", "SegmentationDiscriminator"]


class PatchDiscriminator(nn.Module):
    """70×70-style PatchGAN: ``num_layers`` stride-2 4×4 convolutions, one stride-1, then a 1-channel patch map.

    ``forward`` returns the list of every layer's output; the last one is the (B, 1, h, w) patch logits, the
    others feed the feature-matching loss.
    """

    def __init__(self, in_channels: int, base_channels: int, num_layers: int):
        super().__init__()
        widths = [min(base_channels * 2**i, 8 * base_channels) for i in range(num_layers + 1)]
        layers = [nn.Sequential(nn.Conv2d(in_channels, widths[0], 4, 2, 2), nn.LeakyReLU(NEG_SLOPE, inplace=True))]
        for i in range(1, num_layers + 1):
            stride = 2 if i < num_layers else 1
            layers.append(
                nn.Sequential(
                    nn.Conv2d(widths[i - 1], widths[i], 4, stride, 2),
                    nn.InstanceNorm2d(widths[i]),
                    nn.LeakyReLU(NEG_SLOPE, inplace=True),
                )
            )
        layers.append(nn.Sequential(nn.Conv2d(widths[-1], 1, 4, 1, 2)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs applied to the input average-pooled by 1, 2, 4, ... (pix2pixHD).

    ``forward(heatmaps (B, K, H, W), image (B, 3, H, W)) -> list[list[Tensor]]``: per scale (finest first), the
    per-layer features, last = patch logits. Use with :func:`seg2vid.losses.gan_loss` and
    :func:`seg2vid.losses.feature_matching_loss`.
    """

    config_class = DiscriminatorConfig

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.scales = nn.ModuleList(
            PatchDiscriminator(config.num_classes + 3, config.base_channels, config.num_layers)
            for _ in range(config.num_scales)
        )

    def forward(self, heatmaps: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        if heatmaps.dim() != 4 or heatmaps.shape[1] != self.config.num_classes:
            raise ValueError(
                f"heatmaps must be (B, {self.config.num_classes}, H, W); got {tuple(heatmaps.shape)}."
            )
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[0] != heatmaps.shape[0] or (
            image.shape[-2:] != heatmaps.shape[-2:]
        ):
            raise ValueError(
                f"image must be (B, 3, H, W) matching heatmaps {tuple(heatmaps.shape)}; got {tuple(image.shape)}."
            )
        x = torch.cat([heatmaps, image], dim=1).contiguous(memory_format=torch.channels_last)
        outputs = []
        for i, disc in enumerate(self.scales):
            if i > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(disc(x))
        return outputs


class SegmentationDiscriminator(nn.Module):
    """OASIS discriminator (Schönfeld et al., ICLR 2021): a U-Net that segments an image into N + 1 classes.

    ``forward(image (B, 3, H, W)) -> logits (B, N + 1, H, W)``: classes 0 … N−1 are the label classes, class N
    (``fake_class``) is "generated". It sees no label map: real pixels must be recognised as their class from
    their looks alone. The network is the evaluation segmenter's U-Net architecture (``Segmenter``, widths
    ``config.seg_channels``) with its own weights, trained only against the generator. Use with
    :func:`seg2vid.losses.segmentation_adversarial_loss`.
    """

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.fake_class = config.num_classes
        self.net = Segmenter(SegmenterConfig(num_classes=config.num_classes + 1, channels=config.seg_channels))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)
