"""Training losses of seg2vid: the stage-2 cVAE loss (paper Eq. 3–7) and the stage-1 pix2pixHD losses (plus OASIS's
segmentation-adversarial loss, optional).

Pure functions of tensors. Conventions (DESIGN.md, :mod:`seg2vid.warp`): frames in [-1, 1]; flows in pixels,
(dx, dy); ``I_t(x) ≈ I_0(x + w^b_t(x))`` and ``I_0(x) ≈ I_t(x + w^f_t(x))``; occlusion maps 1 = visible.

Normalisation: every term is the **mean** over all its elements — batch, time, channels (RGB or flow
components) and pixels — where the paper writes sums over t and x; the KL term is the mean over batch and latent
dimensions. The flow terms (Eq. 4–5) measure flows in normalised image coordinates, where the frame spans
[-1, 1] in x and y (``grid_sample`` units: one pixel is 2 / (W - 1) wide), not in pixels. Terms therefore do
not grow with resolution, clip length or |z|, and the paper's weights (``LossWeights``) balance them as written:
measured in pixels, the consistency term's constant-magnitude L1 gradient would outweigh the photometric one by
the frame width and freeze the flows at zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ImageGANLossWeights, LossWeights
from .networks.flow_predictor import FlowPrediction, MotionPosterior
from .warp import warp

__all__ = [
    "LossWeights",
    "ImageGANLossWeights",
    "normalised_flow",
    "reconstruction_loss",
    "smoothness_loss",
    "consistency_loss",
    "supervised_flow_loss",
    "l1_loss",
    "vgg_loss",
    "occlusion_penalty",
    "kl_divergence",
    "cvae_loss",
    "gan_loss",
    "feature_matching_loss",
    "class_balance_weights",
    "class_balanced_l1_loss",
    "segmentation_adversarial_loss",
    "label_mix",
    "label_mix_consistency_loss",
]


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) → (B·T, C, H, W)."""
    return x.reshape(-1, *x.shape[2:])


def normalised_flow(flow: torch.Tensor) -> torch.Tensor:
    """Flow (..., 2, H, W) in pixels → normalised image coordinates (the frame spans [-1, 1]; align_corners=True)."""
    h, w = flow.shape[-2:]
    scale = flow.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)]).view(2, 1, 1)
    return flow * scale


def _check_video_pair(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}.")


def reconstruction_loss(
    video: torch.Tensor,
    flow_fwd: torch.Tensor,
    flow_bwd: torch.Tensor,
    occ_fwd: torch.Tensor,
    occ_bwd: torch.Tensor,
) -> torch.Tensor:
    """Eq. 3, occlusion-masked bidirectional reconstruction:

        Σ_t Σ_x  o^f_t(x) |I_0(x) − I_t(x + w^f_t(x))|  +  o^b_t(x) |I_t(x) − I_0(x + w^b_t(x))|

    video (B, T+1, 3, H, W) with I_0 first; flows (B, T, 2, H, W) pixels; occlusions (B, T, 1, H, W).
    Returns a scalar (means, see the module docstring).
    """
    b, t1, c, h, w = video.shape
    t = t1 - 1
    if flow_fwd.shape != (b, t, 2, h, w) or flow_bwd.shape != flow_fwd.shape:
        raise ValueError(f"flows must be ({b}, {t}, 2, {h}, {w}); got {tuple(flow_fwd.shape)}, {tuple(flow_bwd.shape)}.")
    i0 = video[:, :1].expand(b, t, c, h, w).reshape(b * t, c, h, w)  # (B·T, 3, H, W)
    it = _frames(video[:, 1:])  # (B·T, 3, H, W)
    fwd = _frames(occ_fwd) * (i0 - warp(it, _frames(flow_fwd))).abs()  # I_t sampled at x + w^f_t(x)
    bwd = _frames(occ_bwd) * (it - warp(i0, _frames(flow_bwd))).abs()  # I_0 sampled at x + w^b_t(x)
    return fwd.mean() + bwd.mean()


def _gradient_l1(flow: torch.Tensor) -> torch.Tensor:
    """mean |∂W/∂x| + mean |∂W/∂y| for flow (..., 2, H, W)."""
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    return dx.abs().mean() + dy.abs().mean()


def smoothness_loss(flow_fwd: torch.Tensor, flow_bwd: torch.Tensor) -> torch.Tensor:
    """Eq. 4, first-order smoothness |∇W^f|_1 + |∇W^b|_1 (forward differences in x and y).

    Flows (B, T, 2, H, W) in pixels, measured in normalised coordinates (see the module docstring).
    """
    return _gradient_l1(normalised_flow(flow_fwd)) + _gradient_l1(normalised_flow(flow_bwd))


def consistency_loss(
    flow_fwd: torch.Tensor, flow_bwd: torch.Tensor, occ_fwd: torch.Tensor, occ_bwd: torch.Tensor
) -> torch.Tensor:
    """Eq. 5, forward-backward consistency on visible pixels:

        Σ_t Σ_x  o^f_t(x) |w^f_t(x) + w^b_t(x + w^f_t(x))|  +  o^b_t(x) |w^b_t(x) + w^f_t(x + w^b_t(x))|

    Following a flow and then the other direction's flow must return to x, so the two flows *cancel*: the paper
    prints a minus sign, which would vanish only for w^f = w^b; the sum is the residual of the round trip (as in
    the forward-backward check of Sundaram et al. / UnFlow). Flows (B, T, 2, H, W) in pixels, the residual measured
    in normalised coordinates (see the module docstring); occlusions (B, T, 1, H, W).
    """
    _check_video_pair("consistency_loss flows", flow_fwd, flow_bwd)
    wf, wb = _frames(flow_fwd), _frames(flow_bwd)
    fwd = _frames(occ_fwd) * normalised_flow(wf + warp(wb, wf)).abs()
    bwd = _frames(occ_bwd) * normalised_flow(wb + warp(wf, wb)).abs()
    return fwd.mean() + bwd.mean()


def supervised_flow_loss(
    flow: torch.Tensor, flow_true: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Not in the paper (which learns flow without supervision): mean end-point error against known flow.

    An optional auxiliary term for data that has ground-truth flow (SynthCity): flows (B, T, 2, H, W) in pixels,
    compared in normalised coordinates like Eq. 4–5; ``valid`` (B, T, 1, H, W) masks pixels without a
    correspondence (e.g. the ground-truth occlusion map). Mean over all pixels.
    """
    _check_video_pair("supervised_flow_loss", flow, flow_true)
    epe = normalised_flow(_frames(flow) - _frames(flow_true)).norm(dim=1, keepdim=True)  # (B·T, 1, H, W)
    if valid is not None:
        epe = epe * _frames(valid)
    return epe.mean()


def l1_loss(frames: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 6, L_l1(V̂, V): mean |Î_t − I_t| over frames (B, T, 3, H, W) (or any matching shapes)."""
    _check_video_pair("l1_loss", frames, target)
    return (frames - target).abs().mean()


def vgg_loss(vgg, frames: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 6, L_l1(φ(V̂), φ(V)): mean over VGG-19 layers (relu1_2, relu2_2, relu3_3) of mean |φ(Î) − φ(I)|.

    ``vgg`` is a :class:`~seg2vid.networks.vgg.VGGFeatures`; frames / target (..., 3, H, W) in [-1, 1] (videos
    are flattened to frames). The target's features carry no gradient.
    """
    _check_video_pair("vgg_loss", frames, target)
    frames, target = frames.reshape(-1, *frames.shape[-3:]), target.reshape(-1, *target.shape[-3:])
    with torch.no_grad():
        target_features = vgg(target)
    fake_features = vgg(frames)
    terms = [(f - r).abs().mean() for f, r in zip(fake_features, target_features)]
    return torch.stack(terms).mean()


def occlusion_penalty(occ_fwd: torch.Tensor, occ_bwd: torch.Tensor) -> torch.Tensor:
    """Eq. 6, |1 − O^b|_1 + |1 − O^f|_1 (means): keeps the occlusion maps from the trivial all-occluded solution."""
    return (1 - occ_bwd).abs().mean() + (1 - occ_fwd).abs().mean()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Eq. 7, D_KL(N(mu, exp(logvar)) || N(0, I)), mean over batch and latent dimensions; mu, logvar (B, D).

    Per dimension: ½ (mu² + exp(logvar) − logvar − 1).
    """
    _check_video_pair("kl_divergence", mu, logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).mean()


def cvae_loss(
    prediction: FlowPrediction, video: torch.Tensor, weights: LossWeights | None = None, vgg=None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 7: L_cVAE = L_data + β KL, with Eq. 6's

        L_data = λ_r L_r + λ_fs L_fs + λ_fc L_fc + λ_l1 L_l1(V̂, V) + λ_vgg L_l1(φ(V̂), φ(V))
                 + λ_p (|1 − O^b|_1 + |1 − O^f|_1)

    ``prediction`` from ``FlowPredictor.forward`` (its ``posterior`` is required for the KL term); ``video``
    (B, T+1, 3, H, W) in [-1, 1], frame 0 first; ``vgg`` a ``VGGFeatures`` or None (then the perceptual term is
    skipped and reported as 0). Computed in float32 (safe under autocast).

    Returns ``(total, terms)``: ``terms`` holds the detached, *unweighted* 0-d tensors ``reconstruction``,
    ``smoothness``, ``consistency``, ``l1``, ``vgg``, ``occlusion``, ``kl`` (over all of z), ``kl_fg``, ``kl_bg``.
    """
    weights = weights if weights is not None else LossWeights()
    if not isinstance(prediction, FlowPrediction):
        raise ValueError(f"prediction must be a FlowPrediction; got {type(prediction).__name__}.")
    if not isinstance(prediction.posterior, MotionPosterior):
        raise ValueError("prediction.posterior is missing: compute the prediction with FlowPredictor.forward().")
    b, t = prediction.frames.shape[:2]
    if video.dim() != 5 or video.shape[0] != b or video.shape[1] != t + 1 or video.shape[2:] != prediction.frames.shape[2:]:
        raise ValueError(
            f"video must be ({b}, {t + 1}, 3, H, W) matching the prediction {tuple(prediction.frames.shape)}; "
            f"got {tuple(video.shape)}."
        )
    video = video.float()
    p = {k: getattr(prediction, k).float() for k in ("flow_fwd", "flow_bwd", "occ_fwd", "occ_bwd", "frames")}
    q = prediction.posterior
    zero = video.new_zeros(())

    terms = {
        "reconstruction": reconstruction_loss(video, p["flow_fwd"], p["flow_bwd"], p["occ_fwd"], p["occ_bwd"]),
        "smoothness": smoothness_loss(p["flow_fwd"], p["flow_bwd"]),
        "consistency": consistency_loss(p["flow_fwd"], p["flow_bwd"], p["occ_fwd"], p["occ_bwd"]),
        "l1": l1_loss(p["frames"], video[:, 1:]),
        "vgg": vgg_loss(vgg, p["frames"], video[:, 1:]) if vgg is not None and weights.lambda_vgg > 0 else zero,
        "occlusion": occlusion_penalty(p["occ_fwd"], p["occ_bwd"]),
    }
    kl_fg = kl_divergence(q.mu_fg.float(), q.logvar_fg.float())
    kl_bg = kl_divergence(q.mu_bg.float(), q.logvar_bg.float())
    n_fg, n_bg = q.mu_fg.shape[1], q.mu_bg.shape[1]
    terms["kl"] = (kl_fg * n_fg + kl_bg * n_bg) / (n_fg + n_bg)  # the mean over all of z

    total = (
        weights.lambda_r * terms["reconstruction"]
        + weights.lambda_fs * terms["smoothness"]
        + weights.lambda_fc * terms["consistency"]
        + weights.lambda_l1 * terms["l1"]
        + weights.lambda_vgg * terms["vgg"]
        + weights.lambda_p * terms["occlusion"]
        + weights.beta * terms["kl"]
    )
    terms["kl_fg"], terms["kl_bg"] = kl_fg, kl_bg
    return total, {k: v.detach() for k, v in terms.items()}


# ---------------------------------------------------------------------------------------------------- stage 1
def gan_loss(
    outputs: list[list[torch.Tensor]], target_is_real: bool, mode: str = "lsgan", for_discriminator: bool = True
) -> torch.Tensor:
    """Adversarial loss on ``MultiscaleDiscriminator`` outputs (the last tensor of each scale = patch logits).

    ``mode="lsgan"`` (pix2pixHD): mean (D − 1)² for real targets, mean D² for fake ones, for both players.
    ``mode="hinge"``: the discriminator minimises mean relu(1 − D) on real and mean relu(1 + D) on fake; the
    generator (``for_discriminator=False``, ``target_is_real=True``) minimises −mean D.
    Averaged over scales.
    """
    if mode not in ("lsgan", "hinge"):
        raise ValueError(f"gan mode must be 'lsgan' or 'hinge'; got {mode!r}.")
    if not outputs:
        raise ValueError("gan_loss got no discriminator outputs.")
    losses = []
    for scale in outputs:
        logits = scale[-1].float()
        if mode == "lsgan":
            target = 1.0 if target_is_real else 0.0
            losses.append((logits - target).pow(2).mean())
        elif for_discriminator:
            losses.append(F.relu(1 - logits).mean() if target_is_real else F.relu(1 + logits).mean())
        else:
            if not target_is_real:
                raise ValueError("the hinge generator loss is defined for target_is_real=True only.")
            losses.append(-logits.mean())
    return torch.stack(losses).mean()


def feature_matching_loss(fake_outputs: list[list[torch.Tensor]], real_outputs: list[list[torch.Tensor]]) -> torch.Tensor:
    """pix2pixHD feature matching: mean over scales and intermediate layers of mean |D_l(fake) − D_l(real)|.

    The patch logits (last layer) are excluded; the real features are detached.
    """
    if len(fake_outputs) != len(real_outputs):
        raise ValueError(f"feature_matching_loss: {len(fake_outputs)} fake vs {len(real_outputs)} real scales.")
    losses = []
    for fake, real in zip(fake_outputs, real_outputs):
        if len(fake) != len(real) or len(fake) < 2:
            raise ValueError("feature_matching_loss: each scale needs the same ≥2 layers for fake and real.")
        losses += [(f.float() - r.detach().float()).abs().mean() for f, r in zip(fake[:-1], real[:-1])]
    return torch.stack(losses).mean()


def class_balance_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """OASIS's per-pixel class-balancing weights: trainIds (B, H, W) → weights (B, H, W).

    Each present class gets the weight ``P / (K · n_c)`` (P labelled pixels in the batch, K classes present, n_c
    pixels of class c), so every present class carries the same total weight and the mean weight over labelled
    pixels is 1. Ignored pixels (any id outside 0 … num_classes−1, e.g. ``IGNORE_ID``) get 0.
    """
    valid = (labels >= 0) & (labels < num_classes)
    ids = torch.where(valid, labels, torch.zeros_like(labels)).long()
    counts = torch.bincount(ids[valid], minlength=num_classes).float()
    present = (counts > 0).sum().clamp(min=1)
    coefficients = valid.sum() / (present * counts.clamp(min=1))
    return coefficients[ids] * valid


def class_balanced_l1_loss(fake: torch.Tensor, real: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """pix2pix's L1 with OASIS's class balancing: frames (B, C, H, W), trainIds (B, H, W) → the mean over the classes
    present in the batch of each class's mean |fake − real| (ignored pixels do not count), so that a truck's or a
    fence's pixels weigh as much as the road's.
    """
    if fake.dim() != 4 or fake.shape != real.shape or labels.shape != (fake.shape[0], *fake.shape[-2:]):
        raise ValueError(f"class_balanced_l1_loss: frames (B, C, H, W) and labels (B, H, W) must agree; got "
                         f"{tuple(fake.shape)}, {tuple(real.shape)} and {tuple(labels.shape)}.")
    weights = class_balance_weights(labels, num_classes)  # sums to the number of labelled pixels
    return ((fake - real).abs().float().mean(1) * weights).sum() / weights.sum().clamp(min=1)


def segmentation_adversarial_loss(logits: torch.Tensor, labels: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """OASIS adversarial loss on ``SegmentationDiscriminator`` logits (B, N + 1, H, W), N = label classes.

    ``target_is_real=True``: the class-balanced cross-entropy of every labelled pixel to its label class (the
    discriminator on real images, and the generator on its own images); ``False``: the cross-entropy of every
    pixel to the "fake" class N (the discriminator on generated images). Mean over pixels.
    """
    if logits.dim() != 4 or labels.shape != (logits.shape[0], *logits.shape[-2:]):
        raise ValueError(f"segmentation_adversarial_loss: logits (B, N+1, H, W) and labels (B, H, W) must agree; "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}.")
    num_classes = logits.shape[1] - 1
    logits = logits.float()
    if not target_is_real:
        return F.cross_entropy(logits, torch.full_like(labels, num_classes, dtype=torch.long))
    targets = labels.long().clamp(0, num_classes - 1)  # ignored pixels: any class, their weight is 0
    return (F.cross_entropy(logits, targets, reduction="none") * class_balance_weights(labels, num_classes)).mean()


def label_mix(labels: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None):
    """OASIS's LabelMix (Schönfeld et al., ICLR 2021): trainIds (B, H, W), real and fake frames (B, 3, H, W)
    → (mixed (B, 3, H, W), mask (B, 1, H, W) in {0, 1}).

    Every label id of the batch (ignored pixels included) is assigned, by a fair coin, to the real frame (mask 1)
    or the fake one (mask 0); ``mixed = mask · real + (1 − mask) · fake``.
    """
    if labels.dim() != 3 or real.shape != fake.shape or real.shape[0] != labels.shape[0] \
            or real.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"label_mix: labels (B, H, W) and two frames (B, C, H, W) must agree; got "
                         f"{tuple(labels.shape)}, {tuple(real.shape)} and {tuple(fake.shape)}.")
    ids = labels.long()
    if (ids < 0).any() or (ids > 255).any():
        raise ValueError("label_mix: label ids must lie in 0–255.")
    coin = torch.randint(0, 2, (256,), generator=generator, device=generator.device if generator else ids.device)
    mask = coin.to(ids.device)[ids].unsqueeze(1).to(real.dtype)  # (B, 1, H, W)
    return mask * real + (1 - mask) * fake, mask


def label_mix_consistency_loss(
    mask: torch.Tensor, logits_mixed: torch.Tensor, logits_fake: torch.Tensor, logits_real: torch.Tensor
) -> torch.Tensor:
    """OASIS's LabelMix consistency: ‖D(LabelMix(x, x̂, M)) − LabelMix(D(x), D(x̂), M)‖², the mean squared difference of the logits
    (B, N + 1, H, W) on the mixed frame from the same mix of the logits on the real and the fake frame.
    """
    if not (logits_mixed.shape == logits_fake.shape == logits_real.shape) or mask.shape[-2:] != logits_mixed.shape[-2:]:
        raise ValueError(f"label_mix_consistency_loss: the logits must share one shape and the mask its size; got "
                         f"{tuple(logits_mixed.shape)}, {tuple(logits_fake.shape)}, {tuple(logits_real.shape)} "
                         f"and mask {tuple(mask.shape)}.")
    mixed_of_logits = mask * logits_real.float() + (1 - mask) * logits_fake.float()
    return F.mse_loss(logits_mixed.float(), mixed_of_logits)
