"""seg2vid.losses: the cVAE loss terms of paper Eq. 3–7 and the stage-1 GAN losses."""

import math

import pytest
import torch

from seg2vid.config import DiscriminatorConfig, FlowPredictorConfig, LossWeights
from seg2vid.labels import IGNORE_ID
from seg2vid.losses import (
    class_balance_weights,
    class_balanced_l1_loss,
    label_mix,
    label_mix_consistency_loss,
    consistency_loss,
    cvae_loss,
    feature_matching_loss,
    gan_loss,
    kl_divergence,
    l1_loss,
    normalised_flow,
    occlusion_penalty,
    reconstruction_loss,
    segmentation_adversarial_loss,
    smoothness_loss,
    supervised_flow_loss,
    vgg_loss,
)
from seg2vid.networks import FlowPrediction, FlowPredictor, MotionPosterior, MultiscaleDiscriminator, VGGFeatures
from seg2vid.networks.discriminator import SegmentationDiscriminator
from seg2vid.warp import valid_mask

H, W, T = 24, 40, 3


def texture(h, w, seed=0, blur=3):
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.nn.functional.avg_pool2d(x, blur, 1, blur // 2, count_include_pad=False)


def translated_clip(shifts, h=H, w=W, seed=0):
    """Frames I_t(x) = tex(x + o_t) cropped from one texture, o_0 = (0, 0): a camera pan.

    Hence I_t(x) = I_0(x + o_t): the backward flow is w^b_t = o_t and the forward flow w^f_t = -o_t.
    """
    pad = 16
    tex = texture(h + 2 * pad, w + 2 * pad, seed)
    frames = [tex[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w] for dx, dy in [(0, 0), *shifts]]
    video = torch.stack(frames, dim=1)  # (1, T+1, 3, H, W)
    flow_bwd = torch.zeros(1, len(shifts), 2, h, w)
    for t, (dx, dy) in enumerate(shifts):
        flow_bwd[:, t, 0], flow_bwd[:, t, 1] = dx, dy
    return video, -flow_bwd, flow_bwd


def visible(flow):  # (1, T, 2, H, W) → (1, T, 1, H, W): 1 where x + w(x) stays inside the frame
    return valid_mask(flow.flatten(0, 1)).unflatten(0, flow.shape[:2])


SHIFTS = [(1, 0), (2, -1), (3, 2)]


# ------------------------------------------------------------------------------------------------ Eq. 3
def test_reconstruction_is_zero_for_the_true_flows_on_visible_pixels():
    video, flow_fwd, flow_bwd = translated_clip(SHIFTS)
    occ_fwd, occ_bwd = visible(flow_fwd), visible(flow_bwd)
    assert reconstruction_loss(video, flow_fwd, flow_bwd, occ_fwd, occ_bwd) < 1e-6
    # Without masking the pixels that leave the frame, the border clamping shows up as error ...
    ones = torch.ones_like(occ_fwd)
    assert reconstruction_loss(video, flow_fwd, flow_bwd, ones, ones) > 1e-3
    # ... and wrong flows (zero, or the directions swapped) are penalised much more.
    zero = torch.zeros_like(flow_fwd)
    wrong = reconstruction_loss(video, zero, zero, ones, ones)
    assert wrong > 10 * reconstruction_loss(video, flow_fwd, flow_bwd, ones, ones)
    assert reconstruction_loss(video, flow_bwd, flow_fwd, occ_fwd, occ_bwd) > 0.05


def test_reconstruction_with_zero_flow_is_the_mean_frame_difference():
    video, flow_fwd, _ = translated_clip(SHIFTS)
    zero, ones = torch.zeros_like(flow_fwd), torch.ones(1, T, 1, H, W)
    diff = (video[:, 1:] - video[:, :1]).abs().mean()
    assert torch.allclose(reconstruction_loss(video, zero, zero, ones, ones), 2 * diff, atol=1e-6)
    assert reconstruction_loss(video, zero, zero, 0 * ones, 0 * ones) == 0  # fully occluded: no data term


def test_reconstruction_rejects_mismatched_flows():
    video, flow_fwd, flow_bwd = translated_clip(SHIFTS)
    ones = torch.ones(1, T, 1, H, W)
    with pytest.raises(ValueError):
        reconstruction_loss(video, flow_fwd[:, :-1], flow_bwd, ones, ones)


# ------------------------------------------------------------------------------------------------ Eq. 4
def test_normalised_flow_maps_the_frame_to_the_unit_square():
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0], flow[:, 1] = W - 1, -(H - 1)  # across the whole frame
    n = normalised_flow(flow)
    assert torch.allclose(n[:, 0], torch.tensor(2.0)) and torch.allclose(n[:, 1], torch.tensor(-2.0))


def test_smoothness_is_zero_for_constant_flow_and_measures_gradients():
    _, flow_fwd, flow_bwd = translated_clip(SHIFTS)
    assert smoothness_loss(flow_fwd, flow_bwd) == 0
    a = 0.3
    ramp = torch.zeros(1, 1, 2, H, W)
    ramp[:, :, 0] = a * torch.arange(W).float()  # u = a·x, v = 0: |∂u/∂x| = a px/px on one of two components
    per_direction = a * 2 / (W - 1) / 2  # in normalised units, averaged over the two components
    assert torch.allclose(smoothness_loss(ramp, torch.zeros_like(ramp)), torch.tensor(per_direction))
    assert torch.allclose(smoothness_loss(ramp, ramp), torch.tensor(2 * per_direction))


# ------------------------------------------------------------------------------------------------ Eq. 5
def test_consistency_is_zero_for_exact_inverse_flows():
    _, flow_fwd, flow_bwd = translated_clip(SHIFTS)
    ones = torch.ones(1, T, 1, H, W)
    assert consistency_loss(flow_fwd, flow_bwd, ones, ones) < 1e-6


def test_consistency_measures_the_round_trip_residual():
    d = torch.tensor([1.5, -0.5])
    flow = d.view(1, 1, 2, 1, 1).expand(1, T, 2, H, W).contiguous()
    ones = torch.ones(1, T, 1, H, W)
    # Same flow both ways: every round trip ends 2d away; in normalised units, averaged over the components.
    expected = 2 * (2 * d * torch.tensor([2 / (W - 1), 2 / (H - 1)])).abs().mean()
    assert torch.allclose(consistency_loss(flow, flow, ones, ones), expected)
    assert torch.allclose(consistency_loss(flow, flow, 0.5 * ones, 0 * ones), 0.25 * expected)  # occlusion-masked


def test_consistency_is_zero_for_inverse_non_uniform_flows_on_visible_pixels():
    # A 2-pixel pan left of the right half, still left half: w^f = -w^b where both agree on the moved pixels.
    video, flow_fwd, flow_bwd = translated_clip(SHIFTS)
    flow_fwd, flow_bwd = flow_fwd.clone(), flow_bwd.clone()
    flow_fwd[..., : W // 2] = 0
    flow_bwd[..., : W // 2] = 0
    # Pixels whose round trip crosses the boundary have no consistent correspondence: mark them occluded.
    occ = torch.ones(1, T, 1, H, W)
    occ[..., W // 2 - 4 : W // 2 + 4] = 0
    occ = occ * visible(flow_fwd) * visible(flow_bwd)
    assert consistency_loss(flow_fwd, flow_bwd, occ, occ) < 1e-6


def test_supervised_flow_loss_is_the_masked_end_point_error():
    _, flow_fwd, flow_bwd = translated_clip(SHIFTS)
    assert supervised_flow_loss(flow_bwd, flow_bwd) == 0
    off = flow_bwd.clone()
    off[:, :, 0] += 3.0  # 3 px too far right everywhere
    assert torch.allclose(supervised_flow_loss(off, flow_bwd), torch.tensor(3.0 * 2 / (W - 1)))
    half = torch.ones(1, T, 1, H, W)
    half[..., : W // 2] = 0
    assert torch.allclose(supervised_flow_loss(off, flow_bwd, half), torch.tensor(1.5 * 2 / (W - 1)))


# ------------------------------------------------------------------------------------------ Eq. 6 and 7
def test_occlusion_penalty_follows_the_formula():
    ones = torch.ones(2, T, 1, H, W)
    assert occlusion_penalty(ones, ones) == 0
    assert torch.allclose(occlusion_penalty(0.25 * ones, ones), torch.tensor(0.75))
    assert torch.allclose(occlusion_penalty(0.25 * ones, 0 * ones), torch.tensor(1.75))


def test_kl_divergence_follows_the_formula():
    zeros = torch.zeros(4, 7)
    assert kl_divergence(zeros, zeros) == 0
    assert torch.allclose(kl_divergence(torch.ones(4, 7), zeros), torch.tensor(0.5))
    log2 = math.log(2.0)
    assert torch.allclose(kl_divergence(zeros, torch.full((4, 7), log2)), torch.tensor(0.5 * (1 - log2)))
    mu, logvar = torch.randn(5, 9), torch.randn(5, 9)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    reference = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean()
    assert torch.allclose(kl_divergence(mu, logvar), reference, atol=1e-6)


def test_l1_loss():
    a = torch.zeros(1, T, 3, H, W)
    assert l1_loss(a, a) == 0
    assert torch.allclose(l1_loss(a, a + 0.5), torch.tensor(0.5))
    with pytest.raises(ValueError):
        l1_loss(a, a[:, :-1])


def test_vgg_loss_is_zero_for_identical_frames_and_differentiable():
    torch.manual_seed(0)
    vgg = VGGFeatures()  # random weights: enough to test the plumbing
    target = torch.rand(1, 2, 3, 16, 16) * 2 - 1
    assert vgg_loss(vgg, target, target) == 0
    frames = (target + 0.1 * torch.randn_like(target)).requires_grad_(True)
    loss = vgg_loss(vgg, frames, target)
    loss.backward()
    assert loss > 0 and frames.grad.abs().sum() > 0


def fake_prediction(video, flow_fwd, flow_bwd, z_dims=(6, 2), frames=None):
    occ = torch.ones(video.shape[0], video.shape[1] - 1, 1, *video.shape[-2:])
    zeros_fg, zeros_bg = torch.zeros(video.shape[0], z_dims[0]), torch.zeros(video.shape[0], z_dims[1])
    return FlowPrediction(
        flow_fwd=flow_fwd, flow_bwd=flow_bwd, occ_fwd=visible(flow_fwd) * occ, occ_bwd=visible(flow_bwd) * occ,
        warped=video[:, 1:], frames=video[:, 1:] if frames is None else frames,
        posterior=MotionPosterior(zeros_fg, zeros_fg.clone(), zeros_bg, zeros_bg.clone()),
    )


def test_cvae_loss_of_a_perfect_prediction_is_only_the_occlusion_penalty():
    video, flow_fwd, flow_bwd = translated_clip(SHIFTS)
    pred = fake_prediction(video, flow_fwd, flow_bwd)
    total, terms = cvae_loss(pred, video, LossWeights())
    expected_keys = {"reconstruction", "smoothness", "consistency", "l1", "vgg", "occlusion", "kl", "kl_fg", "kl_bg"}
    assert set(terms) == expected_keys
    assert all(v.dim() == 0 and not v.requires_grad for v in terms.values())
    for key in ("reconstruction", "smoothness", "consistency", "l1", "vgg", "kl"):
        assert terms[key] < 1e-6, key
    # The only cost left: the pixels that leave the frame are (correctly) occluded, λp |1 - O|.
    assert terms["occlusion"] > 0
    assert torch.allclose(total, 0.1 * terms["occlusion"], atol=1e-6)


def test_cvae_loss_is_the_weighted_sum_of_its_terms():
    video, flow_fwd, flow_bwd = translated_clip(SHIFTS)
    pred = fake_prediction(video, 0.5 * flow_fwd, flow_bwd, frames=torch.zeros(1, T, 3, H, W))
    pred.posterior.mu_fg.fill_(1.0)
    w = LossWeights(lambda_r=2, lambda_fs=3, lambda_fc=5, lambda_l1=7, lambda_vgg=0, lambda_p=11, beta=13)
    total, t = cvae_loss(pred, video, w)
    expected = (2 * t["reconstruction"] + 3 * t["smoothness"] + 5 * t["consistency"] + 7 * t["l1"]
                + 11 * t["occlusion"] + 13 * t["kl"])
    assert torch.allclose(total, expected)
    assert torch.allclose(t["kl_fg"], torch.tensor(0.5)) and t["kl_bg"] == 0
    assert torch.allclose(t["kl"], torch.tensor(0.5 * 6 / 8))  # mean over all 8 latent dimensions
    assert t["consistency"] > 0 and t["l1"] > 0


def test_cvae_loss_rejects_bad_inputs():
    video, flow_fwd, flow_bwd = translated_clip(SHIFTS)
    pred = fake_prediction(video, flow_fwd, flow_bwd)
    with pytest.raises(ValueError, match="video"):
        cvae_loss(pred, video[:, 1:])
    pred.posterior = None
    with pytest.raises(ValueError, match="posterior"):
        cvae_loss(pred, video)


def tiny_model(**overrides):
    kw = dict(num_frames=T, image_size=(32, 64), z_fg_dim=8, z_bg_dim=4, encoder_stem_channels=8,
              encoder_channels=(8, 16), motion_channels=(8, 16, 16), motion_pool_size=(1, 2),
              decoder_channels=(16, 8), decoder_full_3d_levels=1, refiner_channels=(8, 16))
    kw.update(overrides)
    return FlowPredictor(FlowPredictorConfig(**kw))


def train_steps(model, video, heatmaps, steps):
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for i in range(steps):
        loss, _ = cvae_loss(model(video, heatmaps, generator=torch.Generator().manual_seed(i)), video)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_a_few_adam_steps_on_a_panning_clip_lower_the_loss():
    torch.manual_seed(0)
    video, _, true_bwd = translated_clip([(2 * (t + 1), 0) for t in range(T)], h=32, w=64)
    heatmaps = torch.zeros(1, 19, 32, 64)
    heatmaps[:, 0] = 1
    model = tiny_model()
    losses = train_steps(model, video, heatmaps, 25)
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    model.eval()
    with torch.no_grad():
        flow = model(video, heatmaps).flow_bwd[0, -1, 0, 8:-8, 8:-8].mean()
    assert flow > 0  # moving towards the true pan (+2 px per frame in x)


def test_a_few_adam_steps_on_a_synthcity_clip_lower_the_loss():
    synthcity = pytest.importorskip("seg2vid.data.synthcity")
    from seg2vid.labels import one_hot

    torch.manual_seed(0)
    clip = synthcity.render_clip(3, size=(32, 64), num_frames=T + 1)
    video = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float().div(127.5).sub(1).unsqueeze(0)
    heatmaps = one_hot(clip.labels[0]).unsqueeze(0)
    losses = train_steps(tiny_model(), video, heatmaps, 25)
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5


# ---------------------------------------------------------------------------------------------- stage 1
def test_gan_losses_follow_their_definitions():
    ones = [[torch.zeros(1, 2, 4, 4), torch.ones(1, 1, 3, 3)]]
    assert gan_loss(ones, True, "lsgan") == 0
    assert gan_loss(ones, False, "lsgan") == 1
    assert gan_loss(ones, True, "hinge", for_discriminator=True) == 0  # margin reached
    assert gan_loss(ones, False, "hinge", for_discriminator=True) == 2
    assert gan_loss(ones, True, "hinge", for_discriminator=False) == -1
    two_scales = [[torch.full((1, 1, 2, 2), 3.0)], [torch.full((1, 1, 1, 1), -1.0)]]
    assert gan_loss(two_scales, True, "lsgan") == (4 + 4) / 2  # mean over scales
    with pytest.raises(ValueError):
        gan_loss(ones, True, "wgan")


def test_feature_matching_on_discriminator_outputs():
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator(DiscriminatorConfig(base_channels=4, num_layers=2, num_scales=2))
    heat = torch.zeros(2, 19, 32, 32)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = (real + 0.2 * torch.randn_like(real)).requires_grad_(True)
    out_real, out_fake = disc(heat, real), disc(heat, fake)
    assert feature_matching_loss(out_real, out_real) == 0
    loss = feature_matching_loss(out_fake, out_real)
    loss.backward()
    assert loss > 0 and fake.grad.abs().sum() > 0
    assert gan_loss(out_fake, True).dim() == 0
    with pytest.raises(ValueError):
        feature_matching_loss(out_fake, out_real[:1])


def test_class_balance_weights_give_every_present_class_the_same_total_weight():
    # 7 labelled pixels (class 0 ×4, class 3 ×2, class 5 ×1) and one ignored: P = 7, K = 3 → 7/(3·n_c).
    labels = torch.tensor([[[0, 0, 0, 0], [3, 3, IGNORE_ID, 5]]])
    w = class_balance_weights(labels, 19)
    assert w[0, 0].tolist() == pytest.approx([7 / 12] * 4)
    assert w[0, 1].tolist() == pytest.approx([7 / 6, 7 / 6, 0.0, 7 / 3])
    assert float(w[0, 0].sum()) == pytest.approx(float(w[0, 1, :2].sum())) == pytest.approx(float(w[0, 1, 3]))
    assert float(w[labels != IGNORE_ID].mean()) == pytest.approx(1.0)


def test_class_balanced_l1_is_the_mean_over_classes_of_each_class_error():
    labels = torch.tensor([[[0, 0, 0, 0, 0, 0, 7, IGNORE_ID]]])  # (1, 1, 8): six road pixels, one car, one ignored
    real = torch.zeros(1, 3, 1, 8)
    fake = real.clone()
    fake[..., :6] = 0.1  # the road is off by 0.1 on every channel
    fake[..., 6] = 0.7  # the car by 0.7
    fake[..., 7] = 5.0  # the ignored pixel does not count
    assert float(class_balanced_l1_loss(fake, real, labels, 19)) == pytest.approx((0.1 + 0.7) / 2)
    assert float((fake[..., :7] - real[..., :7]).abs().mean()) == pytest.approx((6 * 0.1 + 0.7) / 7)  # plain L1
    with pytest.raises(ValueError, match="must agree"):
        class_balanced_l1_loss(fake, real, labels[0], 19)


def test_segmentation_adversarial_loss_follows_its_definition():
    labels = torch.tensor([[[0, 0, 0, 1]]])  # (1, 1, 4): class 1 is rare
    confident = torch.full((1, 20, 1, 4), -20.0)  # 19 classes + fake
    for x, c in enumerate(labels[0, 0].tolist()):
        confident[0, c, 0, x] = 20.0
    assert float(segmentation_adversarial_loss(confident, labels, True)) < 1e-6
    assert float(segmentation_adversarial_loss(confident, labels, False)) > 30  # nothing was called fake
    fake = torch.full((1, 20, 1, 4), -20.0)
    fake[:, 19] = 20.0
    assert float(segmentation_adversarial_loss(fake, labels, False)) < 1e-6
    # Uniform logits: CE = log 20 on every pixel, and the balanced weights average to 1.
    uniform = torch.zeros(1, 20, 1, 4)
    assert float(segmentation_adversarial_loss(uniform, labels, True)) == pytest.approx(math.log(20), rel=1e-5)
    # Missing the one rare pixel costs as much as missing all three common ones (balanced classes).
    miss_rare, miss_common = confident.clone(), confident.clone()
    miss_rare[0, :, 0, 3] = 0.0
    miss_common[0, :, 0, :3] = 0.0
    assert float(segmentation_adversarial_loss(miss_rare, labels, True)) == pytest.approx(
        float(segmentation_adversarial_loss(miss_common, labels, True)), rel=1e-4)
    with pytest.raises(ValueError, match="must agree"):
        segmentation_adversarial_loss(uniform, labels[0], True)


def test_label_mix_takes_each_class_whole_from_one_frame():
    labels = torch.tensor([[0, 0, 1, 1, 2, 2, IGNORE_ID, 13]]).repeat(2, 4, 1)  # (2, 4, 8)
    real, fake = torch.ones(2, 3, 4, 8), -torch.ones(2, 3, 4, 8)
    picks = []
    for seed in range(40):
        mixed, mask = label_mix(labels, real, fake, torch.Generator().manual_seed(seed))
        assert mask.shape == (2, 1, 4, 8) and set(mask.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(mixed, torch.where(mask.bool(), real, fake).expand_as(mixed))
        per_class = [mask[:, 0][labels == c] for c in (0, 1, 2, IGNORE_ID, 13)]
        assert all(bool((m == m[0]).all()) for m in per_class)  # one coin per class, for the whole batch
        picks.append([float(m[0]) for m in per_class])
    share = torch.tensor(picks).mean(0)  # fair coins: each class real about half the time
    assert bool(((share > 0.2) & (share < 0.8)).all())
    with pytest.raises(ValueError, match="must agree"):
        label_mix(labels[0], real, fake)


def test_label_mix_consistency_is_zero_for_a_per_pixel_discriminator_and_not_for_a_spatial_one():
    torch.manual_seed(0)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 5
    real, fake = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    mixed, mask = label_mix(labels, real, fake, torch.Generator().manual_seed(0))
    assert 0 < float(mask.mean()) < 1  # this seed splits the two classes between the frames
    pointwise, spatial = torch.nn.Conv2d(3, 20, 1), torch.nn.Conv2d(3, 20, 3, padding=1)
    # A 1×1 convolution judges every pixel alone: the logits of the mix are the mix of the logits.
    loss = label_mix_consistency_loss(mask, pointwise(mixed), pointwise(fake), pointwise(real))
    assert float(loss) < 1e-10
    # A 3×3 one looks across the class boundary, where the mix differs from both frames.
    spatial_loss = label_mix_consistency_loss(mask, spatial(mixed), spatial(fake), spatial(real))
    assert float(spatial_loss) > 1e-4
    spatial_loss.backward()
    assert spatial.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="share one shape"):
        label_mix_consistency_loss(mask, spatial(mixed), spatial(fake)[:1], spatial(real))


def test_segmentation_discriminator_segments_into_the_classes_plus_fake():
    torch.manual_seed(0)
    disc = SegmentationDiscriminator(DiscriminatorConfig(seg_channels=(4, 8)))
    image = (torch.rand(2, 3, 16, 32) * 2 - 1).requires_grad_(True)
    logits = disc(image)
    assert logits.shape == (2, 20, 16, 32) and disc.fake_class == 19
    labels = torch.randint(0, 19, (2, 16, 32))
    segmentation_adversarial_loss(logits, labels, True).backward()
    assert image.grad.abs().sum() > 0  # the generator gets a gradient through it
