"""Small building blocks shared by the seg2vid networks.

Memory layout: 2-D networks convert their input to ``channels_last`` (the fast oneDNN path on CPU, tensor cores on
GPU); the stage-2 decoder keeps 5-D videos (B, C, T, H, W) in ``channels_last_3d`` memory, i.e. laid out as
(B, T, H, W, C), so that per-frame 2-D convolutions and temporal convolutions are strided views of one buffer.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ConvAct",
    "ResidualBlock",
    "SpaceTimeConv",
    "frames_to_video",
    "upsample_video",
    "video_to_frames",
    "check_image",
    "init_leaky_relu",
]

NEG_SLOPE = 0.2  # LeakyReLU slope used throughout stage 2


def check_image(x: torch.Tensor, name: str, channels: int, multiple: int, batch: int | None = None) -> None:
    """Raise a ``ValueError`` unless ``x`` is (B, channels, H, W) with H, W multiples of ``multiple``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(x).__name__}.")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W); got {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor; got {x.dtype}.")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple or h == 0 or w == 0:
        raise ValueError(
            f"{name} has size {h}×{w}; height and width must be positive multiples of {multiple} "
            f"(resize or pad the input, e.g. to {max(multiple, h // multiple * multiple)}×"
            f"{max(multiple, w // multiple * multiple)})."
        )
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has batch size {x.shape[0]}; expected {batch}.")


def init_leaky_relu(module: nn.Module) -> None:
    """He initialisation for LeakyReLU(0.2) networks without normalisation layers (use with ``Module.apply``).

    PyTorch's default initialisation shrinks the activations' variance about threefold per layer; through the
    stage-2 decoder's dozen layers the tiled z would then reach the output a million times weaker than the skips,
    and the cVAE would start by ignoring z. He initialisation keeps the variance constant.
    """
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, a=NEG_SLOPE, nonlinearity="leaky_relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def video_to_frames(v: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) → (B·T, C, H, W); a free view when ``v`` is in ``channels_last_3d`` memory."""
    b, c, t, h, w = v.shape
    return v.transpose(1, 2).reshape(b * t, c, h, w)


def frames_to_video(x: torch.Tensor, batch: int) -> torch.Tensor:
    """(B·T, C, H, W) → (B, C, T, H, W); a free view when ``x`` is in ``channels_last`` memory."""
    bt, c, h, w = x.shape
    return x.reshape(batch, bt // batch, c, h, w).transpose(1, 2)


def upsample_video(v: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resize (align_corners=False) of a video (B, C, T, H, W) to ``size`` = (T', H', W').

    Done separably — linear in time, then bilinear per frame, which is the same operator — with 2-D kernels on
    channels-last memory; PyTorch's CPU trilinear kernel falls back to slow copies on this layout.
    """
    b, c, t, h, w = v.shape
    t2, h2, w2 = size
    v = v.contiguous(memory_format=torch.channels_last_3d)  # (B, T, H, W, C) memory
    if t2 != t:
        x = v.as_strided((b, c, t, h * w), (t * h * w * c, 1, h * w * c, c))  # (B, C, T, H·W), channels last
        v = F.interpolate(x, size=(t2, h * w), mode="bilinear", align_corners=False).reshape(b, c, t2, h, w)
    if (h2, w2) != (h, w):
        frames = F.interpolate(video_to_frames(v), size=(h2, w2), mode="bilinear", align_corners=False)
        v = frames_to_video(frames, b)
    return v


class ConvAct(nn.Sequential):
    """Conv2d → (optional InstanceNorm) → LeakyReLU / ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, norm: bool = False, relu: str = "leaky"):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=not norm)]
        if norm:
            layers.append(nn.InstanceNorm2d(cout, affine=True))
        layers.append(nn.LeakyReLU(NEG_SLOPE, inplace=True) if relu == "leaky" else nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """pix2pixHD residual block: x + IN(conv(ReLU(IN(conv(x)))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvAct(channels, channels, norm=True, relu="relu"),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SpaceTimeConv(nn.Module):
    """A 3-D convolution block on videos (B, C, T, H, W) → (B, C', T, H, W), followed by LeakyReLU.

    ``factorised=False``: one 3×3×3 convolution (used at coarse levels, where it is cheap). It is evaluated as a
    2-D convolution over [x_{t-1}, x_t, x_{t+1}] stacked along channels (zero-padded in time) with the Conv3d's
    weight rearranged — the same operator, but on the fast 2-D convolution path (CPU builds of PyTorch run
    ``conv3d`` on a slow reference kernel).
    ``factorised=True``: a (2+1)-D convolution — a 3×3 convolution per frame, then a 3-tap convolution along
    time — which covers the same 3×3×3 neighbourhood at a fraction of the cost at fine levels (R(2+1)D).
    ``bias`` lets the caller add a time-constant contribution (B, C', H, W) after the first convolution — used
    for the image-encoder skips, whose contribution is computed once per image (see ``FlowDecoder``).
    """

    def __init__(self, cin: int, cout: int, factorised: bool):
        super().__init__()
        self.factorised = factorised
        if factorised:
            self.spatial = nn.Conv2d(cin, cout, 3, 1, 1)
            self.temporal = nn.Conv2d(cout, cout, (3, 1), 1, (1, 0))  # runs on (B, C, T, H·W)
        else:
            self.conv = nn.Conv3d(cin, cout, 3, 1, 1)

    def _conv3d(self, v: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = v.shape
        frames = v.transpose(1, 2)  # (B, T, C, H, W)
        padded = F.pad(frames, (0, 0, 0, 0, 0, 0, 1, 1))  # zero frames before t = 0 and after t = T-1
        stacked = torch.cat([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], dim=2)  # (B, T, 3C, H, W)
        stacked = stacked.reshape(b * t, 3 * c, h, w).contiguous(memory_format=torch.channels_last)
        weight = self.conv.weight.transpose(1, 2).reshape(self.conv.out_channels, 3 * c, 3, 3)  # taps t-1, t, t+1
        return frames_to_video(F.conv2d(stacked, weight, self.conv.bias, padding=1), b)

    def forward(self, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, _, t, h, w = v.shape
        if self.factorised:
            y = frames_to_video(self.spatial(video_to_frames(v)), b)  # (B, C', T, H, W)
            if bias is not None:
                y.add_(bias.unsqueeze(2))  # in place: keeps the channels-last layout (an out-of-place add may not)
            y = F.leaky_relu(y, NEG_SLOPE).contiguous(memory_format=torch.channels_last_3d)  # (B, T, H, W, C) memory
            c = y.shape[1]
            # The same memory as (B, C, T, H·W) in channels-last order; as_strided spells out the batch stride,
            # which a reshape leaves ambiguous for B = 1 (the convolution would then fall back to NCHW).
            y = self.temporal(y.as_strided((b, c, t, h * w), (t * h * w * c, 1, h * w * c, c)))
            y = y.reshape(b, c, t, h, w)
        else:
            y = self._conv3d(v)
            if bias is not None:
                y.add_(bias.unsqueeze(2))
        return F.leaky_relu(y, NEG_SLOPE)
