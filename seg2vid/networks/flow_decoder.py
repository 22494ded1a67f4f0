"""Stage 2, flow decoder P(V | z, I0) (paper Fig. 3, section 4.2).

"Blocks of 3D convolutional layers intercepted with bilinear upsampling layers that progressively recover the
input resolution in both spatial and temporal dimensions." With the default four levels:

    level   resolution   frames   width   convolutions
      0       1/16          2       96     z ⊕ z_I0 → 3×3×3
      1       1/8           4       48     ↑(t, x) → 3×3×3 (+ skip) → 3×3×3
      2       1/4           8       32     ↑(t, x) → (2+1)-D (+ skip) → (2+1)-D
      3       1/2           8       16     ↑(x)    → (2+1)-D (+ skip) → (2+1)-D → 3×3 head

The latent z (B, |z|) is tiled over the bottleneck and concatenated with z_I0; because the tiled z is constant in
space, the 1×1 convolution that reads it is a linear map z → (channels, bottleneck_frames), added to a 3×3
convolution of z_I0. Skip connections from the image encoder work the same way: a skip is constant in time, so
its share of a level's first convolution is computed once per image (:meth:`FlowDecoder.project_skips`, cached in
``ImageEncoding``) and broadcast over t. Re-sampling z therefore re-runs only the cheap per-frame layers.

Given per-cell gates at the bottleneck (``ImageEncoding.z_gates``), the linear map splits as
W z + b = g_FG · W_FG z_FG + g_BG · W_BG z_BG + b: each half of z reaches only the cells its gate opens (z_FG the
foreground cells, z_BG the background ones); the decoder's later layers spread it by their receptive field only.

The decoder stops at 1/2 resolution; :class:`~seg2vid.networks.flow_predictor.FlowPredictor` upsamples the
head's output bilinearly to the frame size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import NEG_SLOPE, SpaceTimeConv, upsample_video, video_to_frames

__all__ = ["FlowDecoder"]

Gates = tuple[torch.Tensor, torch.Tensor]  # (g_FG, g_BG), each (B, 1, H/16, W/16) in [0, 1]


class FlowDecoder(nn.Module):
    """(skips, z) → per-frame head output (B·T, out_channels, H/2, W/2), frames ordered b-major (b, t).

    ``encoder_channels`` are the image encoder's widths fine → coarse; ``channels`` the decoder's widths
    coarse → fine; both have one entry per level.
    """

    def __init__(
        self,
        z_dim: int,
        encoder_channels: tuple[int, ...],
        channels: tuple[int, ...],
        num_frames: int,
        bottleneck_frames: int,
        full_3d_levels: int,
        out_channels: int,
        z_fg_dim: int,
    ):
        super().__init__()
        if not 0 < z_fg_dim < z_dim:
            raise ValueError(f"z_fg_dim must be in (0, {z_dim}); got {z_fg_dim}")
        self.z_fg_dim = z_fg_dim  # z = [z_FG (z_fg_dim), z_BG]; gates split it there (see module doc)
        levels = len(channels)
        # Frames per level: doubled from the bottleneck until num_frames (upsampling in time, section 4.2).
        self.time_steps = [min(num_frames, bottleneck_frames * 2**i) for i in range(levels)]
        self.time_steps[-1] = num_frames
        self.channels = channels
        self.z_to_bottleneck = nn.Linear(z_dim, channels[0] * bottleneck_frames)  # 1×1 conv on the tiled z
        # Level i reads the encoder features of the same resolution (encoder index levels-1-i).
        self.skip_proj = nn.ModuleList(
            nn.Conv2d(encoder_channels[levels - 1 - i], channels[i], 3, 1, 1) for i in range(levels)
        )
        self.level_in = nn.ModuleList(
            SpaceTimeConv(channels[i - 1], channels[i], factorised=i >= full_3d_levels) for i in range(1, levels)
        )
        self.level_out = nn.ModuleList(
            SpaceTimeConv(channels[i], channels[i], factorised=i >= full_3d_levels) for i in range(levels)
        )
        self.head = nn.Conv2d(channels[-1], out_channels, 3, 1, 1)

    def project_skips(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Encoder features (fine → coarse) → per-level time-constant inputs (coarse → fine), (B, C_i, H_i, W_i)."""
        return tuple(proj(f) for proj, f in zip(self.skip_proj, reversed(features)))

    def forward(
        self, skips: tuple[torch.Tensor, ...], z: torch.Tensor, z_gates: Gates | None = None
    ) -> torch.Tensor:
        """(B·T, out_channels, H/2, W/2); ``z_gates`` as in :meth:`bottleneck_z`."""
        return self.head(video_to_frames(self.features(skips, z, z_gates)))

    def bottleneck_z(self, z: torch.Tensor, z_gates: Gates | None) -> torch.Tensor:
        """z (B, |z|) → its share of the first convolution: (B, C0, T0, 1, 1), or (B, C0, T0, H/16, W/16) with
        ``z_gates`` = (g_FG, g_BG), each (B, 1, H/16, W/16) in [0, 1]."""
        b, shape = z.shape[0], (z.shape[0], self.channels[0], self.time_steps[0], 1, 1)
        if z_gates is None:
            return self.z_to_bottleneck(z).view(shape)
        w_fg, w_bg = self.z_to_bottleneck.weight.split([self.z_fg_dim, z.shape[1] - self.z_fg_dim], dim=1)
        from_fg = F.linear(z[:, : self.z_fg_dim], w_fg).view(shape)  # W_FG z_FG
        from_bg = F.linear(z[:, self.z_fg_dim :], w_bg).view(shape)  # W_BG z_BG
        g_fg, g_bg = (g.view(b, 1, 1, *g.shape[-2:]) for g in z_gates)
        return g_fg * from_fg + g_bg * from_bg + self.z_to_bottleneck.bias.view(1, *shape[1:3], 1, 1)

    def features(
        self, skips: tuple[torch.Tensor, ...], z: torch.Tensor, z_gates: Gates | None = None
    ) -> torch.Tensor:
        """The finest level's features (B, C, T, H/2, W/2), before the head."""
        # Level 0: [tiled z, z_I0] → first convolution (see module docstring).
        z_map = self.bottleneck_z(z, z_gates)  # (B, C0, T0, 1 or H/16, 1 or W/16)
        h = F.leaky_relu(z_map + skips[0].unsqueeze(2), NEG_SLOPE)  # (B, C0, T0, H/16, W/16)
        h = self.level_out[0](h.contiguous(memory_format=torch.channels_last_3d))
        for i in range(1, len(self.channels)):
            size = (self.time_steps[i], *skips[i].shape[-2:])
            h = upsample_video(h, size)  # trilinear, (B, C, T_i, H_i, W_i)
            h = self.level_in[i - 1](h, bias=skips[i])
            h = self.level_out[i](h)
        return h
