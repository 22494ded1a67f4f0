"""seg2vid.warp: the pixel-unit backward warp ``out(x) = src(x + flow(x))`` (align_corners=True)."""

import pytest
import torch

from seg2vid.warp import base_grid, valid_mask, warp

H, W = 12, 16


def image(seed=0, channels=3, h=H, w=W):
    return torch.rand(1, channels, h, w, generator=torch.Generator().manual_seed(seed))


def const_flow(dx, dy, h=H, w=W, batch=1):
    flow = torch.zeros(batch, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def test_base_grid_is_x_then_y_in_pixels():
    g = base_grid(3, 4)
    assert g.shape == (2, 3, 4)
    assert torch.equal(g[0, 2], torch.arange(4.0))  # x varies along a row
    assert torch.equal(g[1, :, 3], torch.arange(3.0))  # y varies down a column


def test_zero_flow_is_identity():
    src = image()
    assert torch.allclose(warp(src, const_flow(0, 0)), src, atol=1e-6)


@pytest.mark.parametrize("dx, dy", [(3, 0), (-2, 0), (0, 4), (0, -1), (2, -3)])
def test_integer_shift_samples_displaced_pixel(dx, dy):
    src = image(1)
    out = warp(src, const_flow(dx, dy))
    ys, xs = slice(max(0, -dy), H - max(0, dy)), slice(max(0, -dx), W - max(0, dx))  # x + flow inside the frame
    ys_src, xs_src = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    assert torch.allclose(out[..., ys, xs], src[..., ys_src, xs_src], atol=1e-5)


def test_border_padding_repeats_edge_and_zeros_padding_gives_zero():
    src = image(2)
    out = warp(src, const_flow(3, 0))
    assert torch.allclose(out[..., -3:], src[..., -1:].expand(-1, -1, -1, 3), atol=1e-5)
    out_zeros = warp(src, const_flow(W + 5, 0), padding_mode="zeros")
    assert torch.all(out_zeros == 0)


@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("shift", [0.25, 0.5, -0.7])
def test_subpixel_shift_is_exact_on_linear_ramps(axis, shift):
    # Bilinear interpolation reproduces linear functions exactly: ramp(x + s) = a (x + s) + b.
    g = base_grid(H, W).unsqueeze(0)
    coord = g[:, 0:1] if axis == "x" else g[:, 1:2]
    src = 0.3 * coord + 1.0
    flow = const_flow(shift, 0) if axis == "x" else const_flow(0, shift)
    out = warp(src, flow)
    inside = valid_mask(flow).bool()
    expected = 0.3 * (coord + shift) + 1.0
    assert torch.allclose(out[inside], expected[inside], atol=1e-5)


def test_half_pixel_shift_averages_neighbours():
    src = image(3)
    out = warp(src, const_flow(0, 0.5))
    assert torch.allclose(out[..., :-1, :], 0.5 * (src[..., :-1, :] + src[..., 1:, :]), atol=1e-5)


def test_forward_then_backward_integer_shifts_compose_to_identity():
    # I_t(x) = I_0(x + w^b) with w^b = d, and I_0(x) = I_t(x + w^f) with w^f = -d.
    src = image(4)
    d = (2, -1)
    frame_t = warp(src, const_flow(*d))
    back = warp(frame_t, const_flow(-d[0], -d[1]))
    interior = (slice(None), slice(None), slice(1, H - 1), slice(2, W - 2))
    assert torch.allclose(back[interior], src[interior], atol=1e-5)


def test_composition_of_two_warps_is_warp_by_composed_flow():
    # warp(warp(I, f), g)(x) = I(x + g(x) + f(x + g(x))); for constant flows: warp(I, f + g).
    src = image(5)
    twice = warp(warp(src, const_flow(1, 2)), const_flow(2, -1))
    once = warp(src, const_flow(3, 1))
    interior = (slice(None), slice(None), slice(2, H - 3), slice(0, W - 4))
    assert torch.allclose(twice[interior], once[interior], atol=1e-5)


def test_spatially_varying_flow_matches_manual_gather():
    src = image(6)
    flow = torch.randint(-2, 3, (1, 2, H, W)).float()
    out = warp(src, flow, mode="nearest")
    g = base_grid(H, W).long()
    xs = (g[0] + flow[0, 0].long()).clamp(0, W - 1)
    ys = (g[1] + flow[0, 1].long()).clamp(0, H - 1)
    assert torch.allclose(out[0], src[0][:, ys, xs], atol=1e-6)


def test_nearest_mode_keeps_label_values():
    labels = torch.randint(0, 19, (1, 1, H, W)).float()
    out = warp(labels, const_flow(0.4, -1.3), mode="nearest")
    assert torch.equal(out, out.round())
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())


def test_valid_mask_marks_samples_that_leave_the_frame():
    m = valid_mask(const_flow(3, 0))
    assert m.shape == (1, 1, H, W)
    assert torch.all(m[..., : W - 3] == 1) and torch.all(m[..., W - 3 :] == 0)
    m = valid_mask(const_flow(0, -0.5))
    assert torch.all(m[..., 0, :] == 0) and torch.all(m[..., 1:, :] == 1)
    assert torch.all(valid_mask(const_flow(0, 0)) == 1)


def test_batches_and_double_precision():
    src = torch.rand(3, 2, H, W, dtype=torch.float64)
    flow = const_flow(1, 0, batch=3).double()
    out = warp(src, flow)
    assert out.dtype == torch.float64 and out.shape == src.shape
    assert torch.allclose(out[..., :-1], src[..., 1:])


@pytest.mark.parametrize(
    "src_shape, flow_shape",
    [
        ((1, 3, H, W), (1, 3, H, W)),  # flow must have 2 channels
        ((1, 3, H, W), (2, H, W)),  # flow must be 4-D
        ((3, H, W), (1, 2, H, W)),  # src must be 4-D
        ((2, 3, H, W), (1, 2, H, W)),  # batch mismatch
        ((1, 3, H, W), (1, 2, H, W + 1)),  # size mismatch
    ],
)
def test_bad_shapes_raise_value_error(src_shape, flow_shape):
    with pytest.raises(ValueError):
        warp(torch.zeros(src_shape), torch.zeros(flow_shape))


def test_valid_mask_rejects_bad_flow():
    with pytest.raises(ValueError):
        valid_mask(torch.zeros(1, 3, H, W))
