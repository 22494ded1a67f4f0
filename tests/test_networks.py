"""The seg2vid networks: configs, stage 1 (generator, discriminator), stage 2 (FlowPredictor and its parts), VGG."""

import functools
import json

import pytest
import torch

from seg2vid.checkpoint import CheckpointError, load_stage, save_stage
from seg2vid.config import DiscriminatorConfig, FlowPredictorConfig, ImageGeneratorConfig
from seg2vid.labels import NAME_TO_ID, NUM_BG, NUM_CLASSES, one_hot, split_fg_bg
from seg2vid.networks import (
    FlowPrediction,
    FlowPredictor,
    ImageEncoding,
    ImageGenerator,
    MotionPosterior,
    MultiscaleDiscriminator,
    VGGFeatures,
)
from seg2vid.networks.flow_predictor import LAYOUT_GRID, layout_descriptor, principal_order
from seg2vid.networks.vgg import VGG19_FILENAME
from seg2vid.warp import warp

H, W, T = 32, 64, 4


def tiny_flow_config(**overrides) -> FlowPredictorConfig:
    kw = dict(
        num_frames=T,
        image_size=(H, W),
        z_fg_dim=12,
        z_bg_dim=4,
        encoder_stem_channels=4,
        encoder_channels=(8, 8, 16),
        motion_channels=(4, 8, 8),
        motion_pool_size=(1, 2),
        decoder_channels=(16, 8, 8),
        decoder_full_3d_levels=1,
        bottleneck_frames=1,
        refiner_channels=(8, 8),
    )
    kw.update(overrides)
    return FlowPredictorConfig(**kw)


def tiny_generator_config(**overrides) -> ImageGeneratorConfig:
    kw = dict(base_channels=4, num_downsample=2, num_res_blocks=1, max_channels=16, image_size=(H, W))
    kw.update(overrides)
    return ImageGeneratorConfig(**kw)


def heatmaps_for(b=1, h=H, w=W, seed=0):
    ids = torch.randint(0, NUM_CLASSES, (b, h // 8, w // 8), generator=torch.Generator().manual_seed(seed))
    ids = ids.repeat_interleave(8, 1).repeat_interleave(8, 2)
    return torch.nn.functional.one_hot(ids, NUM_CLASSES).permute(0, 3, 1, 2).float()


def video_for(b=1, t=T, h=H, w=W, seed=0):
    return torch.rand(b, t + 1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def randomise_heads(model: FlowPredictor, std=0.3):
    """The output layers start at zero ("nothing happens"); tests that need them to matter perturb them."""
    with torch.no_grad():
        model.flow_decoder.head.weight.normal_(0, std, generator=torch.Generator().manual_seed(1))
        model.refiner.to_residual.weight.normal_(0, std, generator=torch.Generator().manual_seed(2))
        for i, enc in enumerate(model.motion_encoders):
            enc.to_gaussian.weight.normal_(0, std, generator=torch.Generator().manual_seed(3 + i))


# ------------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("cls", [ImageGeneratorConfig, DiscriminatorConfig, FlowPredictorConfig])
def test_config_json_round_trip(cls):
    cfg = cls()
    again = cls.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_flow_config_defaults_follow_the_paper():
    cfg = FlowPredictorConfig()
    assert (cfg.z_fg_dim, cfg.z_bg_dim, cfg.num_frames) == (896, 128, 8)  # section 4.2
    assert cfg.semantics == "two_path" and cfg.use_flow


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"not_a_key": 1}, "not_a_key"),
        ({"z_fg_dim": "896"}, "z_fg_dim"),
        ({"z_fg_dim": 1.5}, "z_fg_dim"),
        ({"use_flow": 1}, "use_flow"),
        ({"semantics": "three_path"}, "semantics"),
        ({"image_size": [100, 256]}, "image_size"),
        ({"image_size": [128]}, "image_size"),
        ({"decoder_channels": [8, 8]}, "decoder_channels"),
        ({"max_flow": -1.0}, "max_flow"),
    ],
)
def test_flow_config_from_dict_rejects_bad_values_naming_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        FlowPredictorConfig.from_dict(bad)


def test_generator_config_rejects_negative_appearance_dim():
    with pytest.raises(ValueError, match="appearance_dim"):
        ImageGeneratorConfig.from_dict({"appearance_dim": -1})


def test_default_models_stay_small():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert 1e6 <= count(ImageGenerator(ImageGeneratorConfig())) <= 3e6
    assert 2e6 <= count(FlowPredictor(FlowPredictorConfig())) <= 6e6


# ------------------------------------------------------------------------------------------------- stage 1
def test_image_generator_shape_and_range():
    torch.manual_seed(0)
    gen = ImageGenerator(tiny_generator_config())
    out = gen(heatmaps_for(2))
    assert out.shape == (2, 3, H, W)
    assert out.min() >= -1 and out.max() <= 1
    assert out.std() > 0  # not a constant image
    assert gen(heatmaps_for(1, h=2 * H, w=2 * W)).shape == (1, 3, 2 * H, 2 * W)  # fully convolutional


def test_image_generator_depends_on_labels():
    torch.manual_seed(0)
    gen = ImageGenerator(tiny_generator_config())
    assert not torch.allclose(gen(heatmaps_for(seed=0)), gen(heatmaps_for(seed=1)))


@pytest.mark.parametrize(
    "shape", [(1, NUM_CLASSES - 1, H, W), (1, NUM_CLASSES, H + 2, W), (NUM_CLASSES, H, W), (1, NUM_CLASSES, H, W - 2)]
)
def test_image_generator_rejects_bad_heatmaps(shape):
    gen = ImageGenerator(tiny_generator_config())
    with pytest.raises(ValueError):
        gen(torch.zeros(shape))


def test_image_generator_appearance_code():
    torch.manual_seed(0)
    gen = ImageGenerator(tiny_generator_config(appearance_dim=5))
    heat = heatmaps_for()
    # The modulation starts as the identity; once trained (here: perturbed) the code changes the image.
    assert torch.allclose(gen(heat), gen(heat, torch.randn(1, 5)), atol=1e-6)
    with torch.no_grad():
        gen.appearance.weight.normal_(0, 0.5)
    a, b = torch.randn(1, 5), torch.randn(1, 5)
    assert not torch.allclose(gen(heat, a), gen(heat, b))
    with pytest.raises(ValueError, match="appearance"):
        gen(heat, torch.randn(1, 4))
    with pytest.raises(ValueError, match="appearance_dim=0"):
        ImageGenerator(tiny_generator_config())(heat, torch.randn(1, 5))


def test_label_modulation_starts_as_identity_and_acts_per_pixel():
    from seg2vid.networks.image_generator import LabelModulation

    torch.manual_seed(0)
    mod = LabelModulation(NUM_CLASSES, 6)
    h, heat = torch.randn(1, 6, H // 2, W // 2), heatmaps_for()
    assert torch.equal(mod(h, heat), h)  # zero-initialised: a fresh generator is the plain pix2pixHD one
    with torch.no_grad():
        mod.to_gamma_beta.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    # Relabel one 8×8 block of the input: the modulated features change there (and within the 3×3 + 3×3
    # receptive field at half resolution) and nowhere else.
    ids = heat.argmax(1)
    relabelled = ids.clone()
    relabelled[:, 8:16, 8:16] = (ids[:, 8:16, 8:16] + 1) % NUM_CLASSES
    heat2 = torch.nn.functional.one_hot(relabelled, NUM_CLASSES).permute(0, 3, 1, 2).float()
    diff = (mod(h, heat) - mod(h, heat2)).abs().sum(1)[0]  # (H/2, W/2)
    assert diff[4:8, 4:8].min() > 0
    outside = torch.ones_like(diff, dtype=torch.bool)
    outside[2:10, 2:10] = False
    assert diff[outside].max() == 0


def test_image_generator_without_label_modulation_is_plain_pix2pixhd():
    with_mod = ImageGenerator(tiny_generator_config())
    plain = ImageGenerator(tiny_generator_config(label_modulation=False))
    extra = set(with_mod.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("modulate.") for k in extra)
    assert set(plain.state_dict()) <= set(with_mod.state_dict())
    plain.load_state_dict({k: v for k, v in with_mod.state_dict().items() if k in plain.state_dict()})
    heat = heatmaps_for()
    torch.testing.assert_close(with_mod(heat), plain(heat))  # identical until the modulation is trained


def test_multiscale_discriminator_outputs():
    cfg = DiscriminatorConfig(base_channels=4, num_layers=3, num_scales=3)
    disc = MultiscaleDiscriminator(cfg)
    out = disc(heatmaps_for(2), torch.rand(2, 3, H, W))
    assert len(out) == 3
    for scale in out:
        assert len(scale) == cfg.num_layers + 2  # stride-2 layers, the stride-1 layer, the logits
        assert scale[-1].shape[:2] == (2, 1)
        assert all(f.shape[0] == 2 for f in scale)
    assert out[1][-1].shape[-1] < out[0][-1].shape[-1]  # coarser scales see a pooled input
    with pytest.raises(ValueError):
        disc(heatmaps_for(2), torch.rand(2, 3, H, W + 8))
    with pytest.raises(ValueError):
        disc(torch.rand(2, 3, H, W), torch.rand(2, 3, H, W))


# ------------------------------------------------------------------------------------------------- stage 2
@pytest.mark.parametrize("semantics", ["none", "one_encoder", "two_path"])
@pytest.mark.parametrize("use_flow", [True, False])
def test_flow_predictor_shapes_for_every_variant(semantics, use_flow):
    torch.manual_seed(0)
    cfg = tiny_flow_config(semantics=semantics, use_flow=use_flow)
    model = FlowPredictor(cfg)
    b = 2
    out = model(video_for(b), heatmaps_for(b))
    assert isinstance(out, FlowPrediction)
    for name, c in [("flow_fwd", 2), ("flow_bwd", 2), ("occ_fwd", 1), ("occ_bwd", 1), ("warped", 3), ("frames", 3)]:
        assert getattr(out, name).shape == (b, T, c, H, W), name
    post = out.posterior
    assert isinstance(post, MotionPosterior)
    assert post.mu_fg.shape == post.logvar_fg.shape == (b, cfg.z_fg_dim)
    assert post.mu_bg.shape == post.logvar_bg.shape == (b, cfg.z_bg_dim)
    assert out.frames.min() >= -1 and out.frames.max() <= 1
    assert out.occ_bwd.min() >= 0 and out.occ_bwd.max() <= 1
    if not use_flow:  # Fig. 9 "w/o flow": zero flows, nothing occluded, frames straight from the decoder
        assert torch.all(out.flow_fwd == 0) and torch.all(out.flow_bwd == 0)
        assert torch.all(out.occ_fwd == 1) and torch.all(out.occ_bwd == 1)
    out.frames.sum().backward()  # the whole graph is differentiable
    assert all(p.grad is not None for p in model.motion_encoders.parameters())


def test_two_path_encoders_see_their_own_heatmaps():
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config(semantics="two_path")).eval()
    randomise_heads(model)
    video, heat = video_for(), heatmaps_for()
    changed_bg = heat.clone()
    changed_bg[:, :NUM_BG] = changed_bg[:, :NUM_BG].flip(-1)  # background heatmaps only
    a, b = model.encode_motion(video, heat), model.encode_motion(video, changed_bg)
    assert torch.equal(a.mu_fg, b.mu_fg) and torch.equal(a.logvar_fg, b.logvar_fg)
    assert not torch.allclose(a.mu_bg, b.mu_bg)


@pytest.mark.parametrize("masked", [True, False])
def test_two_path_masked_encoders_see_only_their_own_pixels(masked):
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config(semantics="two_path", mask_motion_inputs=masked)).eval()
    randomise_heads(model)
    video, heat = video_for(), heatmaps_for()
    is_fg = split_fg_bg(heat)[0].sum(1, keepdim=True).bool()  # (1, 1, H, W)
    assert is_fg.any() and not is_fg.all()
    bg_changed = torch.where(is_fg.unsqueeze(1), video, video_for(seed=5))  # new pixels off the foreground only
    a, b = model.encode_motion(video, heat), model.encode_motion(bg_changed, heat)
    assert not torch.allclose(a.mu_bg, b.mu_bg)  # the background encoder sees background pixels either way
    assert torch.equal(a.mu_fg, b.mu_fg) == masked  # the foreground encoder sees them only without masks


def _heatmaps_with_car_columns(width: int, car_columns: slice) -> torch.Tensor:
    """(1, 19, H, width): road everywhere, a car (a foreground class) in ``car_columns``."""
    ids = torch.full((1, H, width), NAME_TO_ID["road"])
    ids[:, :, car_columns] = NAME_TO_ID["car"]
    return one_hot(ids)


@pytest.mark.parametrize("gated", [True, False])
def test_gated_z_halves_act_on_their_own_cells(gated):
    # gate_z: z_FG reaches the decoder only at bottleneck cells with foreground and z_BG only at cells with
    # background, so a new z_FG leaves pixels beyond the decoder's receptive field untouched, a map without
    # objects does not depend on z_FG at all, and a map of nothing but objects not on z_BG.
    torch.manual_seed(0)
    width = 256
    model = FlowPredictor(tiny_flow_config(gate_z=gated)).eval()
    randomise_heads(model)
    frame0 = video_for(w=width)[:, 0]
    z_fg, z_bg = model.sample_z(1, generator=torch.Generator().manual_seed(0))

    def flows(car_columns: slice):  # flow_bwd (1, T, 2, H, W) for z, new z_FG, new z_BG
        enc = model.encode_image(frame0, _heatmaps_with_car_columns(width, car_columns))
        return [model.decode(enc, a, b).flow_bwd for a, b in ((z_fg, z_bg), (-z_fg, z_bg), (z_fg, -z_bg))]

    with torch.inference_mode():
        base, new_fg, new_bg = flows(slice(0, 16))
        no_car = flows(slice(0, 0))
        all_car = flows(slice(0, width))
    far = (..., slice(192, None))  # columns at least 176 px from the car
    assert not torch.allclose(base[..., :16], new_fg[..., :16])  # the car moves differently
    assert torch.equal(base[far], new_fg[far]) == gated  # the street far from it does not
    assert not torch.allclose(base[far], new_bg[far])  # z_BG moves the street
    assert torch.equal(no_car[0], no_car[1]) == gated  # no objects, no object motion
    assert torch.equal(all_car[0], all_car[2]) == gated  # no street, no street motion
    assert not torch.allclose(all_car[0], all_car[1])


def test_layered_flow_gives_each_half_of_z_its_own_layer():
    # layered_flow: one decoder pass reads z_FG alone, one z_BG alone; frame 0's objects take the first pass's
    # forward flow and occlusion, frame t's objects (frame 0's carried by their own backward flow) its backward
    # flow and occlusion; everything else the second pass's.
    torch.manual_seed(0)
    layered = FlowPredictor(tiny_flow_config(layered_flow=True)).eval()
    randomise_heads(layered)
    one_pass = FlowPredictor(tiny_flow_config(gate_z=False)).eval()  # the same weights, decoded once
    one_pass.load_state_dict(layered.state_dict())
    frame0 = video_for()[:, 0]
    heat = _heatmaps_with_car_columns(W, slice(16, 32))
    z_fg, z_bg = layered.sample_z(1, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        enc = layered.encode_image(frame0, heat)
        base, new_fg, new_bg = (layered.decode(enc, a, b) for a, b in ((z_fg, z_bg), (-z_fg, z_bg), (z_fg, -z_bg)))
        enc1 = one_pass.encode_image(frame0, heat)
        fg_pass = one_pass.decode(enc1, z_fg, torch.zeros_like(z_bg))
        bg_pass = one_pass.decode(enc1, torch.zeros_like(z_fg), z_bg)
    assert enc1.layer_mask is None and enc.z_gates is None
    car, street = (..., slice(16, 32)), (..., slice(40, None))  # street: columns ≥ 8 px from the car
    close = functools.partial(torch.testing.assert_close, atol=1e-4, rtol=1e-4)
    # Frame-0-indexed outputs: exactly one pass each.
    for name in ("flow_fwd", "occ_fwd"):
        close(getattr(base, name)[car], getattr(fg_pass, name)[car])  # (batch 2 vs 1: float rounding)
        close(getattr(base, name)[street], getattr(bg_pass, name)[street])
        assert torch.equal(getattr(base, name)[street], getattr(new_fg, name)[street])  # z_FG leaves the street
        assert torch.equal(getattr(base, name)[car], getattr(new_bg, name)[car])  # z_BG leaves the car
    assert not torch.allclose(base.flow_fwd[car], new_fg.flow_fwd[car])
    assert not torch.allclose(base.flow_fwd[street], new_bg.flow_fwd[street])
    # Frame-t-indexed outputs: the car's layer is where its own backward flow leads back onto it.
    b, t = base.flow_bwd.shape[:2]
    m0 = enc.layer_mask.expand(t, -1, -1, -1)  # (T, 1, H, W)
    mt = warp(m0, fg_pass.flow_bwd[0])
    assert mt.min() == 0 and mt.max() == 1 and not torch.equal(mt, m0)  # the layer moved
    for name in ("flow_bwd", "occ_bwd"):
        fg, bg = getattr(fg_pass, name)[0], getattr(bg_pass, name)[0]
        close(getattr(base, name)[0], mt * fg + (1 - mt) * bg)
    # A map without objects does not depend on z_FG; one of nothing but objects not on z_BG.
    for columns, other in ((slice(0, 0), 1), (slice(0, W), 2)):
        with torch.inference_mode():
            enc = layered.encode_image(frame0, _heatmaps_with_car_columns(W, columns))
            outs = [layered.decode(enc, a, b_) for a, b_ in ((z_fg, z_bg), (-z_fg, z_bg), (z_fg, -z_bg))]
        for name in ("flow_fwd", "flow_bwd", "occ_fwd", "occ_bwd"):  # (bilinear sampling of 1s: 1 ± 1 ulp)
            close(getattr(outs[0], name), getattr(outs[other], name))
        assert not torch.allclose(outs[0].flow_fwd, outs[3 - other].flow_fwd)


def test_layered_flow_needs_two_paths_and_flow():
    with pytest.raises(ValueError, match="layered_flow needs semantics='two_path'"):
        tiny_flow_config(layered_flow=True, semantics="one_encoder")
    with pytest.raises(ValueError, match="layered_flow needs"):
        tiny_flow_config(layered_flow=True, use_flow=False)


def test_semantics_none_ignores_the_label_map():
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config(semantics="none")).eval()
    video = video_for()
    a = model.encode_motion(video, heatmaps_for(seed=0))
    b = model.encode_motion(video, None)
    assert torch.equal(a.mu_fg, b.mu_fg) and torch.equal(a.mu_bg, b.mu_bg)
    enc = model.encode_image(video[:, 0], None)
    assert isinstance(enc, ImageEncoding)
    with pytest.raises(ValueError, match="heatmaps"):
        FlowPredictor(tiny_flow_config(semantics="one_encoder")).encode_image(video[:, 0], None)


def test_same_z_same_video_different_z_different_flow():
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config()).eval()
    randomise_heads(model)
    video, heat = video_for(), heatmaps_for()
    with torch.inference_mode():
        enc = model.encode_image(video[:, 0], heat)
        z1 = model.sample_z(1, generator=torch.Generator().manual_seed(1))
        z1_again = model.sample_z(1, generator=torch.Generator().manual_seed(1))
        z2 = model.sample_z(1, generator=torch.Generator().manual_seed(2))
        a, a_again, b = model.decode(enc, *z1), model.decode(enc, *z1_again), model.decode(enc, *z2)
    assert all(torch.equal(x, y) for x, y in zip(z1, z1_again))
    assert torch.equal(a.frames, a_again.frames) and torch.equal(a.flow_bwd, a_again.flow_bwd)
    assert not torch.allclose(a.flow_bwd, b.flow_bwd)
    assert not torch.allclose(a.frames, b.frames)


def test_z_reaches_the_output_at_initialisation():
    # He initialisation: the tiled z must not fade away through the decoder's layers before training starts.
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config()).eval()
    with torch.inference_mode():
        enc = model.encode_image(video_for()[:, 0], heatmaps_for())
        z_a = torch.cat(model.sample_z(1, generator=torch.Generator().manual_seed(0)), 1)
        z_b = torch.cat(model.sample_z(1, generator=torch.Generator().manual_seed(1)), 1)
        features = [model.flow_decoder.features(enc.skips, z) for z in (z_a, z_b)]  # (1, C, T, H/2, W/2)
    change = (features[0] - features[1]).abs().mean() / features[0].abs().mean()
    assert change > 0.05


def test_each_half_of_z_matters():
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config()).eval()
    randomise_heads(model)
    with torch.inference_mode():
        enc = model.encode_image(video_for()[:, 0], heatmaps_for())
        z_fg, z_bg = model.sample_z(1, generator=torch.Generator().manual_seed(0))
        base = model.decode(enc, z_fg, z_bg).flow_fwd
        assert not torch.allclose(base, model.decode(enc, -z_fg, z_bg).flow_fwd)
        assert not torch.allclose(base, model.decode(enc, z_fg, -z_bg).flow_fwd)


def test_batch_one_encoding_is_shared_by_a_batch_of_z():
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config()).eval()
    randomise_heads(model)
    with torch.inference_mode():
        enc = model.encode_image(video_for()[:, 0], heatmaps_for())
        z_fg, z_bg = model.sample_z(3, generator=torch.Generator().manual_seed(0))
        batch = model.decode(enc, z_fg, z_bg)
        second = model.decode(enc, z_fg[1:2], z_bg[1:2])
    assert batch.frames.shape[0] == 3
    assert torch.allclose(batch.flow_bwd[1:2], second.flow_bwd, atol=1e-4)  # batched vs single convolutions
    assert torch.allclose(batch.frames[1:2], second.frames, atol=1e-4)


def test_motion_scale_zero_gives_a_still_video_of_the_refined_first_frame():
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config()).eval()
    randomise_heads(model)
    frame0 = video_for()[:, 0]
    with torch.inference_mode():
        enc = model.encode_image(frame0, heatmaps_for())
        z = model.sample_z(1, generator=torch.Generator().manual_seed(0))
        moving = model.decode(enc, *z)
        still = model.decode(enc, *z, motion_scale=0.0)
        half = model.decode(enc, *z, motion_scale=0.5)
        refined0 = (frame0 + model.refiner(torch.cat([frame0, torch.ones_like(frame0[:, :1])], 1))).clamp(-1, 1)
    assert moving.flow_bwd.abs().max() > 0
    assert torch.all(still.flow_fwd == 0) and torch.all(still.flow_bwd == 0)
    assert torch.all(still.occ_bwd == 1)
    assert torch.allclose(still.warped, frame0.unsqueeze(1).expand_as(still.warped), atol=1e-4)
    assert torch.allclose(still.frames, refined0.unsqueeze(1).expand_as(still.frames), atol=1e-4)
    assert torch.allclose(half.flow_bwd, 0.5 * moving.flow_bwd, atol=1e-5)


def test_untrained_flow_predictor_starts_from_the_identity():
    # Zero-initialised output layers: posterior = prior, no motion, the refiner adds nothing; warped = o^b · I0.
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config()).eval()
    frame0 = video_for()[:, 0]
    posterior = model.encode_motion(video_for(), heatmaps_for())
    assert all(torch.all(t == 0) for t in (posterior.mu_fg, posterior.logvar_fg, posterior.mu_bg, posterior.logvar_bg))
    with torch.inference_mode():
        out = model.decode(model.encode_image(frame0, heatmaps_for()), *model.sample_z(1))
    assert torch.all(out.flow_bwd == 0)
    assert torch.allclose(out.warped, out.occ_bwd * frame0.unsqueeze(1), atol=1e-5)
    assert torch.allclose(out.frames, out.warped.clamp(-1, 1), atol=1e-6)
    assert 0.9 < out.occ_bwd.mean() < 1


def test_flow_predictor_runs_at_two_resolutions_with_the_same_weights():
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config()).eval()
    with torch.inference_mode():
        for h, w in [(H, W), (2 * H, 2 * W), (H, H)]:
            enc = model.encode_image(torch.zeros(1, 3, h, w), heatmaps_for(h=h, w=w))
            assert model.decode(enc, *model.sample_z(1)).frames.shape == (1, T, 3, h, w)


def test_training_mode_samples_the_posterior_eval_mode_uses_its_mean():
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config())
    randomise_heads(model)
    video, heat = video_for(), heatmaps_for()
    g = torch.Generator().manual_seed
    train_a = model(video, heat, generator=g(0)).flow_bwd
    train_b = model(video, heat, generator=g(1)).flow_bwd
    assert not torch.allclose(train_a, train_b)
    model.eval()
    assert torch.equal(model(video, heat).flow_bwd, model(video, heat).flow_bwd)


def test_sample_z_shapes_and_errors():
    model = FlowPredictor(tiny_flow_config())
    z_fg, z_bg = model.sample_z(3)
    assert z_fg.shape == (3, 12) and z_bg.shape == (3, 4)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            model.sample_z(bad)


def test_flow_predictor_rejects_bad_inputs():
    model = FlowPredictor(tiny_flow_config())
    frame0, heat = video_for()[:, 0], heatmaps_for()
    with pytest.raises(ValueError, match="frame0"):
        model.encode_image(torch.zeros(1, 4, H, W), heat)  # wrong channels
    with pytest.raises(ValueError, match="multiples"):
        model.encode_image(torch.zeros(1, 3, H + 4, W), heatmaps_for(h=H + 4))  # not divisible
    with pytest.raises(ValueError, match="heatmaps"):
        model.encode_image(frame0, heat[:, :18])
    with pytest.raises(ValueError, match="height/width"):
        model.encode_image(frame0, heatmaps_for(h=2 * H))
    enc = model.encode_image(frame0, heat)
    z_fg, z_bg = model.sample_z(1)
    with pytest.raises(ValueError, match="z_fg"):
        model.decode(enc, z_fg[:, :-1], z_bg)
    with pytest.raises(ValueError, match="z_bg"):
        model.decode(enc, z_fg, z_bg.unsqueeze(0))
    with pytest.raises(ValueError, match="batch"):
        model.decode(enc, z_fg.repeat(2, 1), z_bg)
    with pytest.raises(ValueError, match="motion_scale"):
        model.decode(enc, z_fg, z_bg, motion_scale=-1.0)
    with pytest.raises(ValueError, match="video"):
        model.encode_motion(video_for(t=T + 1), heat)  # one frame too many
    with pytest.raises(ValueError, match="ImageGeneratorConfig"):
        ImageGenerator(tiny_flow_config())


# ------------------------------------------------------------------------------------------------------ VGG
def test_vgg_from_local_returns_none_without_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert VGGFeatures.from_local() is None
    with pytest.raises(ValueError, match="not found"):
        VGGFeatures.from_local(tmp_path / "missing.pth")


def test_vgg_from_local_loads_a_torchvision_state_dict(tmp_path, monkeypatch):
    torch.manual_seed(0)
    reference = VGGFeatures()
    # torchvision's vgg19 state dict names the convolutions features.<index>; the classifier is ignored.
    state = {f"features.{k}": v for k, v in reference.layers.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / VGG19_FILENAME)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    vgg = VGGFeatures.from_local()
    assert vgg is not None and not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    feats = vgg(x)
    assert [f.shape for f in feats] == [(2, 64, 32, 48), (2, 128, 16, 24), (2, 256, 8, 12)]
    assert all(torch.equal(a, b) for a, b in zip(feats, reference(x)))
    vgg.train()
    assert not vgg.training  # stays frozen in eval mode

    del state["features.14.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="VGG-19"):
        VGGFeatures.from_local(tmp_path / "broken.pth")


# ------------------------------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("batch", [1, 2])
def test_space_time_conv_matches_conv3d(batch):
    from seg2vid.networks.blocks import SpaceTimeConv

    torch.manual_seed(0)
    v = torch.randn(batch, 5, 4, 6, 10)
    full = SpaceTimeConv(5, 7, factorised=False)
    ref = torch.nn.functional.leaky_relu(full.conv(v), 0.2)  # the 3×3×3 Conv3d it stands for
    assert torch.allclose(full(v), ref, atol=1e-5)
    fact = SpaceTimeConv(5, 7, factorised=True)
    spatial = torch.nn.functional.conv3d(v, fact.spatial.weight.unsqueeze(2), fact.spatial.bias, padding=(0, 1, 1))
    temporal = torch.nn.functional.conv3d(
        torch.nn.functional.leaky_relu(spatial, 0.2), fact.temporal.weight.unsqueeze(-1), fact.temporal.bias,
        padding=(1, 0, 0),
    )
    assert torch.allclose(fact(v), torch.nn.functional.leaky_relu(temporal, 0.2), atol=1e-5)


def test_upsample_video_is_trilinear():
    from seg2vid.networks.blocks import upsample_video

    v = torch.randn(2, 3, 2, 4, 6)
    for size in [(4, 8, 12), (2, 8, 12), (4, 4, 6)]:
        ref = torch.nn.functional.interpolate(v, size=size, mode="trilinear", align_corners=False)
        assert torch.allclose(upsample_video(v, size), ref, atol=1e-5)


# ------------------------------------------------------------------------------------------ fitted prior
def test_aggregate_posterior_gaussian_has_the_mixtures_moments():
    from seg2vid.networks.flow_predictor import aggregate_posterior_gaussian

    g = torch.Generator().manual_seed(0)
    mu = torch.randn(400, 3, generator=g) * torch.tensor([3.0, 0.5, 1.0]) + torch.tensor([1.0, -2.0, 0.0])
    mu[:, 2] += 0.8 * mu[:, 0]  # correlated dimensions
    logvar = torch.randn(400, 3, generator=g) * 0.3 - 0.5
    mean, scale = aggregate_posterior_gaussian(mu, logvar)
    assert torch.equal(scale, torch.tril(scale))
    # Draw from the mixture itself: one sample per component, many rounds.
    draws = mu.repeat(500, 1) + (0.5 * logvar.repeat(500, 1)).exp() * torch.randn(200_000, 3, generator=g)
    torch.testing.assert_close(mean, draws.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(scale @ scale.T, torch.cov(draws.T), atol=0.08, rtol=0.02)
    with pytest.raises(ValueError, match="N ≥ 2"):
        aggregate_posterior_gaussian(mu[:1], logvar[:1])


def test_fitted_prior_maps_the_same_noise_through_its_gaussian():
    torch.manual_seed(0)
    plain = FlowPredictor(tiny_flow_config())
    fitted = FlowPredictor(tiny_flow_config(fitted_prior=True))
    fitted.load_state_dict(plain.state_dict(), strict=False)
    d_fg, d_bg = fitted.config.z_fg_dim, fitted.config.z_bg_dim
    # Untouched, the fitted prior is N(0, I): identical draws.
    for a, b in zip(plain.sample_z(3, torch.Generator().manual_seed(5)),
                    fitted.sample_z(3, torch.Generator().manual_seed(5))):
        assert torch.equal(a, b)
    g = torch.Generator().manual_seed(1)
    means = torch.randn(d_fg, generator=g), torch.randn(d_bg, generator=g) + 4
    scales = [torch.tril(torch.randn(d, d, generator=g)) + 2 * torch.eye(d) for d in (d_fg, d_bg)]
    fitted.set_prior(means[0], scales[0], means[1], scales[1])
    eps = plain.sample_z(3, torch.Generator().manual_seed(5))
    z = fitted.sample_z(3, torch.Generator().manual_seed(5))
    for e, zz, m, s in zip(eps, z, means, scales):
        torch.testing.assert_close(zz, m + e @ s.T)
    many = fitted.sample_z(40_000, torch.Generator().manual_seed(6))[1]
    torch.testing.assert_close(many.mean(0), means[1], atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(many.T), scales[1] @ scales[1].T, atol=0.3, rtol=0.05)
    # What decode sees: a new prior changes the video drawn for a seed.
    heat = heatmaps_for()
    randomise_heads(plain)
    randomise_heads(fitted)
    enc = fitted.encode_image(video_for()[:, 0], heat)
    assert not torch.allclose(fitted.decode(enc, z[0][:1], z[1][:1]).flow_bwd,
                              fitted.decode(enc, eps[0][:1], eps[1][:1]).flow_bwd)


def test_set_prior_refuses_what_it_cannot_store():
    plain = FlowPredictor(tiny_flow_config())
    d_fg, d_bg = plain.config.z_fg_dim, plain.config.z_bg_dim
    good = (torch.zeros(d_fg), torch.eye(d_fg), torch.zeros(d_bg), torch.eye(d_bg))
    with pytest.raises(ValueError, match="fitted_prior=True"):
        plain.set_prior(*good)
    fitted = FlowPredictor(tiny_flow_config(fitted_prior=True))
    with pytest.raises(ValueError, match="z_bg prior needs"):
        fitted.set_prior(good[0], good[1], torch.zeros(d_bg + 1), good[3])
    with pytest.raises(ValueError, match="non-finite"):
        fitted.set_prior(good[0], good[1] * float("nan"), good[2], good[3])
    assert set(fitted.state_dict()) - set(plain.state_dict()) == {
        "prior_mean_fg", "prior_scale_fg", "prior_mean_bg", "prior_scale_bg"}


def test_mixture_prior_draws_each_half_from_one_of_its_training_posteriors(tmp_path):
    torch.manual_seed(0)
    plain = FlowPredictor(tiny_flow_config())
    mixed = FlowPredictor(tiny_flow_config(fitted_prior=True, prior_components=3))
    mixed.load_state_dict(plain.state_dict(), strict=False)
    d_fg, d_bg = mixed.config.z_fg_dim, mixed.config.z_bg_dim
    assert {k for k in mixed.state_dict() if k.startswith("prior_")} == {
        "prior_means_fg", "prior_stds_fg", "prior_means_bg", "prior_stds_bg"}
    g = torch.Generator().manual_seed(1)
    means_fg, means_bg = torch.randn(3, d_fg, generator=g), 10 * torch.randn(3, d_bg, generator=g)
    stds_fg, stds_bg = torch.rand(3, d_fg, generator=g) + 0.5, torch.rand(3, d_bg, generator=g) + 0.5
    mixed.set_prior_mixture(means_fg, stds_fg, means_bg, stds_bg)
    # The same ε as N(0, I) draws (drawn first), put through the component each half drew.
    eps_fg, eps_bg = plain.sample_z(200, torch.Generator().manual_seed(5))
    z_fg, z_bg = mixed.sample_z(200, torch.Generator().manual_seed(5))
    n_fg = ((z_fg[:, None] - means_fg) / stds_fg - eps_fg[:, None]).abs().amax(-1).argmin(1)  # (200,)
    n_bg = ((z_bg[:, None] - means_bg) / stds_bg - eps_bg[:, None]).abs().amax(-1).argmin(1)
    torch.testing.assert_close(z_fg, means_fg[n_fg] + stds_fg[n_fg] * eps_fg)
    torch.testing.assert_close(z_bg, means_bg[n_bg] + stds_bg[n_bg] * eps_bg)
    # Every component is drawn, about equally often, and the halves choose independently.
    assert torch.bincount(n_bg, minlength=3).min() > 40
    assert (n_fg != n_bg).float().mean() > 0.4
    # joint_prior: one component for both halves, the one the fg half drew before; ε unchanged.
    joint = FlowPredictor(tiny_flow_config(fitted_prior=True, prior_components=3, joint_prior=True))
    joint.load_state_dict(mixed.state_dict())
    j_fg, j_bg = joint.sample_z(200, torch.Generator().manual_seed(5))
    assert torch.equal(j_fg, z_fg)
    torch.testing.assert_close(j_bg, means_bg[n_fg] + stds_bg[n_fg] * eps_bg)
    # Reproducible from the generator; the mean the app's sliders turn about is the components' average.
    again = mixed.sample_z(200, torch.Generator().manual_seed(5))
    assert torch.equal(again[0], z_fg) and torch.equal(again[1], z_bg)
    centre_fg, centre_bg = mixed.prior_mean()
    torch.testing.assert_close(centre_bg, means_bg.mean(0))
    torch.testing.assert_close(centre_fg, means_fg.mean(0))
    assert torch.equal(plain.prior_mean()[1], torch.zeros(d_bg))
    # Saved and loaded like any stage: same draws.
    save_stage(mixed, tmp_path / "stage", {})
    loaded = load_stage(tmp_path / "stage", FlowPredictor)
    for a, b in zip(loaded.sample_z(4, torch.Generator().manual_seed(9)),
                    mixed.sample_z(4, torch.Generator().manual_seed(9))):
        assert torch.equal(a, b)
    # A checkpoint whose mixture does not match its config is refused, naming the tensors.
    config_file = tmp_path / "stage" / "config.json"
    edited = json.loads(config_file.read_text())
    edited["config"]["prior_components"] = 2
    config_file.write_text(json.dumps(edited))
    with pytest.raises(CheckpointError, match="prior_means_bg"):
        load_stage(tmp_path / "stage", FlowPredictor)


def _mixture_along_a_line(n: int, joint: bool) -> tuple[FlowPredictor, torch.Tensor]:
    """A mixture of n point masses (stds 0) whose means lie along one direction in a shuffled order, with a little
    noise across it; returns the model and each component's position along the line (n,)."""
    mixed = FlowPredictor(tiny_flow_config(fitted_prior=True, prior_components=n, joint_prior=joint))
    d_fg, d_bg = mixed.config.z_fg_dim, mixed.config.z_bg_dim
    g = torch.Generator().manual_seed(3)
    position = torch.randperm(n, generator=g).float()  # component i sits at position[i]
    direction = torch.randn(d_fg + d_bg, generator=g)
    means = 5 * position[:, None] * direction / direction.norm() + 0.1 * torch.randn(n, d_fg + d_bg, generator=g)
    means_fg, means_bg = means.split([d_fg, d_bg], 1)
    mixed.set_prior_mixture(means_fg, torch.zeros(n, d_fg), means_bg, torch.zeros(n, d_bg))
    return mixed, position


def _component(z: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    return torch.cdist(z, means).argmin(1)  # stds 0: each draw is exactly one component's mean


def test_principal_order_ranks_components_along_their_widest_spread():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(30, generator=g)
    axis = torch.randn(7, generator=g)
    means = 1.0 + t[:, None] * axis + 0.01 * torch.randn(30, 7, generator=g)
    order = principal_order(means)
    assert sorted(order.tolist()) == list(range(30))
    ranked = t[order]
    assert torch.all(ranked[1:] >= ranked[:-1]) or torch.all(ranked[1:] <= ranked[:-1])
    # The sign of an eigenvector is arbitrary; the ranking is not: mirrored means rank the same, more dims than
    # components take the other Gram matrix and agree.
    assert torch.equal(principal_order(-means), order)
    wide = torch.cat([means, 0.001 * torch.randn(30, 50, generator=g)], 1)  # N = 30 < D = 57
    assert torch.equal(principal_order(wide), order)


@pytest.mark.parametrize("joint", [False, True])
def test_stratified_mixture_draws_cover_the_components_slice_by_slice(joint):
    mixed, position = _mixture_along_a_line(20, joint)
    means_fg, means_bg = mixed.prior_means_fg, mixed.prior_means_bg
    seen, same = torch.zeros(20), 0
    for seed in range(200):
        z_fg, z_bg = mixed.sample_z(4, torch.Generator().manual_seed(seed), stratified=True)
        n_fg, n_bg = _component(z_fg, means_fg), _component(z_bg, means_bg)
        # One draw from each quarter of the line (positions 0-4, 5-9, 10-14, 15-19), in random order.
        for n in (n_fg, n_bg):
            assert sorted((position[n] // 5).long().tolist()) == [0, 1, 2, 3]
        same += torch.equal(n_fg, n_bg)
        seen[n_fg[0]] += 1
    assert same == 200 if joint else same < 20  # joint: one component for both halves; else each half its own
    # Each draw on its own is still uniform over the components (the slices come in random order).
    assert seen.min() >= 3 and seen.max() <= 20
    # Independent draws do miss slices: the stratification is what covers them.
    misses = sum(len(set((position[_component(mixed.sample_z(4, torch.Generator().manual_seed(s))[1], means_bg)]
                          // 5).long().tolist())) < 4 for s in range(50))
    assert misses > 20
    # Reproducible from the generator.
    a = mixed.sample_z(4, torch.Generator().manual_seed(7), stratified=True)
    b = mixed.sample_z(4, torch.Generator().manual_seed(7), stratified=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("prior", ["standard", "diagonal", "full"])
def test_stratified_gaussian_draws_cover_the_widest_axis_slice_by_slice(prior):
    torch.manual_seed(0)
    model = FlowPredictor(tiny_flow_config(fitted_prior=prior != "standard"))
    d_fg, d_bg = model.config.z_fg_dim, model.config.z_bg_dim
    means = (torch.full((d_fg,), 2.0), torch.full((d_bg,), -1.0)) if prior != "standard" else (0, 0)
    if prior == "diagonal":  # widest along the last coordinate (std 6), so N(0, I)'s first coordinate is not it
        scales = [torch.diag(torch.tensor([1.0] * (d - 1) + [6.0])) for d in (d_fg, d_bg)]
    elif prior == "full":  # lower-triangular with correlations: L's left and right singular vectors differ
        g = torch.Generator().manual_seed(2)
        scales = [torch.tril(torch.randn(d, d, generator=g)) + 2 * torch.eye(d) for d in (d_fg, d_bg)]
    else:
        scales = [torch.eye(d_fg), torch.eye(d_bg)]
    if prior != "standard":
        model.set_prior(means[0], scales[0], means[1], scales[1])
    normal = torch.distributions.Normal(0.0, 1.0)
    first_slices = []
    for seed in range(60):
        plain = model.sample_z(5, torch.Generator().manual_seed(seed))
        strat = model.sample_z(5, torch.Generator().manual_seed(seed), stratified=True)
        for half, (p, s, m, scale) in enumerate(zip(plain, strat, means, scales)):
            # The widest axis of the prior's covariance L Lᵀ and its standard deviation (N(0, I): the first axis).
            variances, vectors = torch.linalg.eigh(scale.double() @ scale.double().T)
            axis, std = vectors[:, -1].float(), float(variances[-1].sqrt())
            if prior == "standard":
                axis = torch.eye(p.shape[1])[0]
            slices = (normal.cdf((s - m) @ axis / std) * 5).floor().long()
            assert sorted(slices.tolist()) == [0, 1, 2, 3, 4]  # one draw in each fifth of the prior along it
            # Only that direction changes: what is left of each draw is the independent draw's.
            rest = lambda z: (z - m) - ((z - m) @ axis)[:, None] * axis  # noqa: E731
            torch.testing.assert_close(rest(s), rest(p), atol=1e-4, rtol=1e-4)
            if half == 0:
                first_slices.append(int(slices[0]))
    # The slices come in random order: the first draw on its own lands in any fifth.
    assert torch.bincount(torch.tensor(first_slices), minlength=5).min() >= 5


def test_sample_z_stratified_for_one_draw_is_a_draw_from_the_prior():
    mixed, _ = _mixture_along_a_line(8, joint=True)
    firsts = [int(_component(mixed.sample_z(1, torch.Generator().manual_seed(s), stratified=True)[1],
                             mixed.prior_means_bg)) for s in range(400)]
    assert torch.bincount(torch.tensor(firsts), minlength=8).min() > 25


def _car_at(column: int) -> torch.Tensor:
    """(1, 19, H, W) heatmaps of a street with one car, a block of 8 × 8 pixels whose left edge is ``column``."""
    ids = torch.full((H, W), NAME_TO_ID["road"])
    ids[12:20, column:column + 8] = NAME_TO_ID["car"]
    return one_hot(ids).unsqueeze(0)


def test_layout_descriptor_is_each_foreground_class_share_per_cell():
    cells = LAYOUT_GRID[0] * LAYOUT_GRID[1]
    street = _car_at(0).clone()
    street[:, :, 12:20, 0:8] = 0
    street[:, NAME_TO_ID["road"], 12:20, 0:8] = 1
    assert torch.equal(layout_descriptor(street), torch.zeros(1, 8 * cells))  # background only: nothing
    d = layout_descriptor(torch.cat([_car_at(0), _car_at(10)])).view(2, 8, *LAYOUT_GRID)  # 4 × 4 px per cell
    car = NAME_TO_ID["car"] - NUM_BG
    assert torch.equal(d[0, car, 3:5, 0:2], torch.ones(2, 2)) and float(d[0].sum()) == 4.0  # 8 × 8 px = 4 cells
    assert torch.equal(d[1, car, 3:5, 2], torch.full((2,), 0.5))  # columns 10-17 cover half of cells 2 and 4
    assert float(d[1, car].sum()) == 4.0 and float(d[1].sum() - d[1, car].sum()) == 0.0
    with pytest.raises(ValueError, match="heatmaps must have shape"):
        layout_descriptor(torch.zeros(1, 8, H, W))


def _layout_mixture(neighbours: int, **config) -> tuple[FlowPredictor, torch.Tensor]:
    """A mixture of 12 point masses whose training clips each had one car, clip i's at column 4 i; returns the model
    and each component's car column."""
    n = 12
    mixed = FlowPredictor(tiny_flow_config(fitted_prior=True, prior_components=n, prior_neighbours=neighbours,
                                           **config))
    d_fg, d_bg = mixed.config.z_fg_dim, mixed.config.z_bg_dim
    g = torch.Generator().manual_seed(4)
    columns = 4 * torch.arange(n)
    layouts = torch.cat([layout_descriptor(_car_at(int(c))) for c in columns])  # (12, F)
    mixed.set_prior_mixture(torch.randn(n, d_fg, generator=g), torch.zeros(n, d_fg),
                            torch.randn(n, d_bg, generator=g), torch.zeros(n, d_bg), layouts)
    return mixed, columns


@pytest.mark.parametrize("joint", [False, True])
def test_layout_conditioned_mixture_draws_from_the_clips_whose_cars_stood_nearest(joint, tmp_path):
    mixed, columns = _layout_mixture(3, joint_prior=joint)
    assert "prior_layouts" in mixed.state_dict()
    query = _car_at(21)  # nearest: the clips with the car at columns 20, 24, then 16 (not 28)
    assert mixed.neighbours(query).tolist() == [4, 5, 6]
    assert mixed.neighbours(_car_at(0)).tolist() == [0, 1, 2]
    for stratified in (False, True):
        drawn = set()
        for seed in range(60):
            z_fg, z_bg = mixed.sample_z(3, torch.Generator().manual_seed(seed), stratified=stratified, heatmaps=query)
            n_fg, n_bg = _component(z_fg, mixed.prior_means_fg), _component(z_bg, mixed.prior_means_bg)
            assert set(n_fg.tolist()) | set(n_bg.tolist()) <= {4, 5, 6}
            if stratified:  # three draws from three components: one from each slice of the three
                assert sorted(n_fg.tolist()) == [4, 5, 6] and sorted(n_bg.tolist()) == [4, 5, 6]
            if joint:  # one training clip for both halves
                assert torch.equal(n_fg, n_bg)
            drawn |= set(n_fg.tolist())
        assert drawn == {4, 5, 6}
    # Without a label map it draws from every component, exactly as the unconditioned mixture does.
    plain = FlowPredictor(tiny_flow_config(fitted_prior=True, prior_components=12, joint_prior=joint))
    plain.load_state_dict({k: v for k, v in mixed.state_dict().items() if k != "prior_layouts"})
    for stratified in (False, True):
        a = mixed.sample_z(5, torch.Generator().manual_seed(2), stratified=stratified)
        b = plain.sample_z(5, torch.Generator().manual_seed(2), stratified=stratified)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # The centre of its codes for a label map is the average of the components it draws from.
    centre_fg, centre_bg = mixed.prior_mean(query)
    torch.testing.assert_close(centre_fg, mixed.prior_means_fg[4:7].mean(0))
    torch.testing.assert_close(centre_bg, mixed.prior_means_bg[4:7].mean(0))
    torch.testing.assert_close(mixed.prior_mean()[1], mixed.prior_means_bg.mean(0))
    # Saved and loaded like any stage: the same neighbours and draws.
    save_stage(mixed, tmp_path / "stage", {})
    loaded = load_stage(tmp_path / "stage", FlowPredictor)
    a = loaded.sample_z(4, torch.Generator().manual_seed(9), heatmaps=query)
    b = mixed.sample_z(4, torch.Generator().manual_seed(9), heatmaps=query)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_all_neighbours_is_the_unconditioned_mixture():
    mixed, _ = _layout_mixture(12, joint_prior=True)
    plain = FlowPredictor(tiny_flow_config(fitted_prior=True, prior_components=12, joint_prior=True))
    plain.load_state_dict({k: v for k, v in mixed.state_dict().items() if k != "prior_layouts"})
    for stratified in (False, True):
        a = mixed.sample_z(6, torch.Generator().manual_seed(3), stratified=stratified, heatmaps=_car_at(30))
        b = plain.sample_z(6, torch.Generator().manual_seed(3), stratified=stratified, heatmaps=_car_at(30))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_layout_conditioned_prior_refuses_what_it_cannot_use():
    with pytest.raises(ValueError, match="prior_neighbours .* needs a mixture prior"):
        tiny_flow_config(fitted_prior=True, prior_neighbours=2)
    with pytest.raises(ValueError, match="cannot exceed prior_components"):
        tiny_flow_config(fitted_prior=True, prior_components=3, prior_neighbours=4)
    mixed, _ = _layout_mixture(3)
    args = (mixed.prior_means_fg, mixed.prior_stds_fg, mixed.prior_means_bg, mixed.prior_stds_bg)
    before = mixed.prior_layouts.clone()
    with pytest.raises(ValueError, match="needs layouts of shape"):
        mixed.set_prior_mixture(*args)
    with pytest.raises(ValueError, match="needs layouts of shape"):
        mixed.set_prior_mixture(*args, before[:5])
    with pytest.raises(ValueError, match="class shares in"):
        mixed.set_prior_mixture(*args, before + 2)
    assert torch.equal(mixed.prior_layouts, before)  # nothing written
    unconditioned = FlowPredictor(tiny_flow_config(fitted_prior=True, prior_components=12))
    with pytest.raises(ValueError, match="only used with prior_neighbours"):
        unconditioned.set_prior_mixture(*args, before)
    for model in (mixed, unconditioned):  # checked whether or not the prior uses it
        for bad in (torch.zeros(2, 19, H, W), torch.zeros(19, H, W), torch.zeros(1, 19, 0, 0), "street"):
            with pytest.raises(ValueError, match="one label map"):
                model.sample_z(2, heatmaps=bad)
        for bad in (torch.full((1, 19, H, W), float("nan")), -_car_at(3), 100 * _car_at(3)):
            with pytest.raises(ValueError, match=r"class shares in \[0, 1\]"):
                model.sample_z(2, heatmaps=bad)
    with pytest.raises(ValueError, match="needs layouts of shape"):
        mixed.set_prior_mixture(*args, before.tolist())


def test_mixture_prior_refuses_what_it_cannot_store():
    d = tiny_flow_config()
    means = (torch.zeros(3, d.z_fg_dim), torch.ones(3, d.z_fg_dim), torch.zeros(3, d.z_bg_dim),
             torch.ones(3, d.z_bg_dim))
    with pytest.raises(ValueError, match="no mixture prior"):
        FlowPredictor(tiny_flow_config(fitted_prior=True)).set_prior_mixture(*means)
    mixed = FlowPredictor(tiny_flow_config(fitted_prior=True, prior_components=3))
    with pytest.raises(ValueError, match="use set_prior_mixture"):
        mixed.set_prior(torch.zeros(d.z_fg_dim), torch.eye(d.z_fg_dim), torch.zeros(d.z_bg_dim),
                        torch.eye(d.z_bg_dim))
    with pytest.raises(ValueError, match=r"z_fg mixture needs means and stds of shape \(3, "):
        mixed.set_prior_mixture(means[0][:2], means[1][:2], means[2], means[3])
    with pytest.raises(ValueError, match="negative stds"):
        mixed.set_prior_mixture(means[0], means[1], means[2], -means[3])
    with pytest.raises(ValueError, match="non-finite"):
        mixed.set_prior_mixture(means[0] * float("nan"), means[1], means[2], means[3])
    assert torch.equal(mixed.prior_stds_fg, torch.ones(3, d.z_fg_dim))  # nothing was half-written
    with pytest.raises(ValueError, match="needs fitted_prior: true"):
        tiny_flow_config(prior_components=3)
    with pytest.raises(ValueError, match="prior_components must be >= 0"):
        tiny_flow_config(fitted_prior=True, prior_components=-1)
