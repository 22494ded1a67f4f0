"""The one backward-warping function of seg2vid (paper Eq. 2, 3, 5).

Convention (DESIGN.md): flows are in **pixels**, channel order (dx, dy). ``warp(src, flow)`` returns
``out(x) = src(x + flow(x))`` — it *samples* ``src`` at the displaced position. Hence

* backward flow ``w^b_t`` (frame t → frame 0):  ``I_t ≈ warp(I_0, w^b_t)``
* forward  flow ``w^f_t`` (frame 0 → frame t):  ``I_0 ≈ warp(I_t, w^f_t)``

Pixel centres sit at integer coordinates 0 … W-1 and 0 … H-1, which is ``grid_sample(align_corners=True)``
after normalising ``x`` to ``2 x / (W - 1) - 1``. Positions outside the image read the border pixel
(``padding_mode="border"``) unless told otherwise; use ``valid_mask`` to know which samples fell outside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["warp", "base_grid", "valid_mask"]


def base_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel coordinates (2, H, W) as (x, y), x in 0 … W-1, y in 0 … H-1."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([xs, ys])


def _check(src: torch.Tensor, flow: torch.Tensor) -> None:
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W) in pixels; got {tuple(flow.shape)}.")
    if src.dim() != 4:
        raise ValueError(f"src must be (B, C, H, W); got {tuple(src.shape)}.")
    if src.shape[0] != flow.shape[0] or src.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"src {tuple(src.shape)} and flow {tuple(flow.shape)} disagree in batch or size.")


def warp(src: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border") -> torch.Tensor:
    """Backward-warp ``src`` (B, C, H, W) by ``flow`` (B, 2, H, W, pixels, (dx, dy)): ``out(x) = src(x + flow(x))``.

    ``mode`` is ``"bilinear"`` (images, flows) or ``"nearest"`` (labels); ``align_corners=True``; samples outside
    the frame follow ``padding_mode`` (``"border"``, ``"zeros"`` or ``"reflection"``).
    """
    _check(src, flow)
    b, _, h, w = flow.shape
    pos = base_grid(h, w, flow.device, flow.dtype).unsqueeze(0) + flow  # (B, 2, H, W) absolute pixel coordinates
    # Normalise to [-1, 1] with align_corners=True: pixel 0 → -1, pixel W-1 → +1.
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=flow.device, dtype=flow.dtype)
    grid = (pos * scale.view(1, 2, 1, 1) - 1.0).permute(0, 2, 3, 1)  # (B, H, W, 2)
    if src.dtype != grid.dtype:
        grid = grid.to(src.dtype)
    return F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def valid_mask(flow: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float mask: 1 where ``x + flow(x)`` lands inside the frame, 0 where it falls outside."""
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W) in pixels; got {tuple(flow.shape)}.")
    _, _, h, w = flow.shape
    pos = base_grid(h, w, flow.device, flow.dtype).unsqueeze(0) + flow
    inside = (pos[:, 0] >= 0) & (pos[:, 0] <= w - 1) & (pos[:, 1] >= 0) & (pos[:, 1] <= h - 1)
    return inside.unsqueeze(1).to(flow.dtype)
