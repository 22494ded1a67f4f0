"""Stage 2, image-to-video (paper section 3.2–3.3, Fig. 3–4): the conditional VAE that predicts bidirectional
flows and occlusion maps for T future frames from I0 and its label map, and synthesises the frames (Eq. 2).

Parts, one module each:

* :class:`~seg2vid.networks.image_encoder.ImageEncoder` — [I0, heatmaps] → skip features and z_I0;
* :class:`~seg2vid.networks.motion_encoder.MotionEncoder` — Q(z | V, I0), training only; the ``semantics``
  option picks how the label map enters (section 3.3): ``"two_path"`` (one encoder on [V, foreground heatmaps] for
  z_FG, one on [V, background heatmaps] for z_BG, Fig. 4), ``"one_encoder"`` ([V, all heatmaps] → both halves),
  ``"none"`` (V only; the image encoder then sees I0 alone); with ``mask_motion_inputs`` each two-path encoder
  sees the video only on its own (foreground or background) pixels of frame 0;
* :class:`~seg2vid.networks.flow_decoder.FlowDecoder` — (z, z_I0, skips) → W^f, W^b, O^f, O^b at 1/2 resolution;
  with ``gate_z`` (two_path) z_FG reaches it only where frame 0 has foreground, z_BG where it has background;
  with ``layered_flow`` it runs once per half of z and the two passes are composed per pixel (:meth:`_compose`);
* :class:`~seg2vid.networks.refiner.Refiner` — the U-Net P of Eq. 2.

What is sampled: at inference z = [z_FG, z_BG] ~ N(0, I) (:meth:`FlowPredictor.sample_z`), or, with
``fitted_prior``, a distribution fitted after training to the aggregate posterior of the training clips: the
Gaussian z = m + L ε, ε ~ N(0, I) (:meth:`FlowPredictor.set_prior`, :func:`aggregate_posterior_gaussian`), or, with
``prior_components`` = N, the aggregate posterior itself, z = mu_n + σ_n ⊙ ε with n drawn uniformly from the N
training clips (:meth:`FlowPredictor.set_prior_mixture`), and with ``prior_neighbours`` = k from the k of them whose
first label map is nearest the one at hand (:func:`layout_descriptor`); the posterior Q(z | V, I0) of the clip at
hand is used only in training (:meth:`FlowPredictor.forward`).

Conventions (DESIGN.md, :mod:`seg2vid.warp`): frames in [-1, 1]; flows in pixels (dx, dy); backward flow
w^b_t maps frame t to frame 0, ``I_t(x) ≈ I_0(x + w^b_t(x))``; forward flow w^f_t maps frame 0 to frame t,
``I_0(x) ≈ I_t(x + w^f_t(x))``; occlusion maps are 1 where a pixel has a correspondence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import FlowPredictorConfig
from ..labels import NUM_BG, NUM_CLASSES, NUM_FG, split_fg_bg
from ..warp import warp
from .blocks import check_image, init_leaky_relu
from .flow_decoder import FlowDecoder
from .image_encoder import ImageEncoder
from .motion_encoder import MotionEncoder
from .refiner import Refiner

__all__ = ["FlowPredictor", "FlowPrediction", "ImageEncoding", "MotionPosterior", "aggregate_posterior_gaussian",
           "layout_descriptor"]

OCCLUSION_INIT_LOGIT = 3.0  # occlusion heads start at sigmoid(3) ≈ 0.95: "almost everything visible"


@dataclass
class ImageEncoding:
    """Everything stage 2 needs from one first frame; computed by ``encode_image`` and reusable for any z."""

    frame0: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    skips: tuple[torch.Tensor, ...]  # per decoder level, coarse → fine: (B, C_i, H_i, W_i); skips[0] carries z_I0
    # gate_z: per bottleneck cell (B, 1, H/16, W/16), how much z_FG (any foreground pixel: 1) and z_BG (its share
    # of background pixels) reach it
    z_gates: tuple[torch.Tensor, torch.Tensor] | None = None
    # layered_flow: frame 0's foreground, (B, 1, H, W) in {0, 1} — the layer the z_FG pass supplies
    layer_mask: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.frame0.shape[0]

    def expand(self, batch_size: int) -> "ImageEncoding":
        """Repeat a batch-1 encoding ``batch_size`` times (several z for one label map), without copying."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"cannot expand an ImageEncoding of batch {self.batch_size} to batch {batch_size}.")
        return ImageEncoding(
            frame0=self.frame0.expand(batch_size, -1, -1, -1),
            skips=tuple(s.expand(batch_size, -1, -1, -1) for s in self.skips),
            z_gates=None if self.z_gates is None else tuple(g.expand(batch_size, -1, -1, -1) for g in self.z_gates),
            layer_mask=None if self.layer_mask is None else self.layer_mask.expand(batch_size, -1, -1, -1),
        )


@dataclass
class MotionPosterior:
    """Q(z | V, I0) = N(mu, exp(logvar)) for both halves of z (paper section 3.2–3.3)."""

    mu_fg: torch.Tensor  # (B, z_fg_dim)
    logvar_fg: torch.Tensor
    mu_bg: torch.Tensor  # (B, z_bg_dim)
    logvar_bg: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample z = mu + sigma · eps, eps ~ N(0, I) (differentiable in mu and logvar)."""

        def draw(mu, logvar):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            return mu + torch.exp(0.5 * logvar) * eps

        return draw(self.mu_fg, self.logvar_fg), draw(self.mu_bg, self.logvar_bg)


def aggregate_posterior_gaussian(mu: torch.Tensor, logvar: torch.Tensor, jitter: float = 1e-4):
    """The Gaussian with the moments of the mixture (1/N) Σ_n N(mu_n, diag(exp(logvar_n))): mu, logvar (N, D) →
    (mean (D,), scale_tril (D, D)) with mean = E[mu], cov = Cov(mu) + E[diag(exp(logvar))] (+ ``jitter`` · I).

    Computed in float64; needs N ≥ 2.
    """
    if mu.dim() != 2 or mu.shape != logvar.shape or mu.shape[0] < 2:
        raise ValueError(f"mu and logvar must both be (N ≥ 2, D); got {tuple(mu.shape)} and {tuple(logvar.shape)}.")
    mu, var = mu.double(), logvar.double().exp()
    mean = mu.mean(0)
    centred = mu - mean
    cov = centred.T @ centred / (mu.shape[0] - 1) + torch.diag(var.mean(0) + jitter)
    return mean.float(), torch.linalg.cholesky(cov).float()


def _canonical_sign(v: torch.Tensor) -> torch.Tensor:
    """``v`` or ``-v``, whichever has its largest-magnitude entry positive (eigenvectors' signs are arbitrary)."""
    return v if v[v.abs().argmax()] >= 0 else -v


def principal_order(means: torch.Tensor) -> torch.Tensor:
    """The N components of a mixture ranked along the first principal axis of their means (N, D) → (N,) indices.

    The axis is the direction in which the means differ most (on SynthCity's stage 2, the camera's speed: the
    ranks correlate with it at 0.92 in size). Computed in float64 from whichever Gram matrix is smaller; ties keep
    their order.
    """
    centred = means.double() - means.double().mean(0)
    if centred.shape[0] <= centred.shape[1]:  # (N, N): its top eigenvector is the projections, up to scale
        score = torch.linalg.eigh(centred @ centred.T)[1][:, -1]
    else:  # (D, D): its top eigenvector is the axis
        score = centred @ torch.linalg.eigh(centred.T @ centred)[1][:, -1]
    return torch.argsort(_canonical_sign(score), stable=True)


LAYOUT_GRID = (8, 16)  # cells of layout_descriptor: the flow decoder's bottleneck at 128×256


def layout_descriptor(heatmaps: torch.Tensor) -> torch.Tensor:
    """Where the objects are: heatmaps (B, 19, H, W) → (B, 8 · 8 · 16), each foreground class's share of each cell
    of an 8 × 16 grid (the flow decoder's bottleneck cells at 128 × 256), float32. Label maps whose descriptors are
    close put the same kinds of object in the same places; ``prior_neighbours`` compares them by squared distance.
    """
    if heatmaps.dim() != 4 or heatmaps.shape[1] != NUM_CLASSES:
        raise ValueError(f"heatmaps must have shape (B, {NUM_CLASSES}, H, W); got {tuple(heatmaps.shape)}.")
    fg = split_fg_bg(heatmaps.float())[0]  # (B, 8, H, W)
    return F.adaptive_avg_pool2d(fg, LAYOUT_GRID).flatten(1)


def _are_shares(x: torch.Tensor) -> bool:
    """Whether ``x`` holds real values in [0, 1] (class shares: one-hot heatmaps, layout descriptors)."""
    return not x.is_complex() and bool(torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1)


def stratified_uniform(batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """B numbers in (0, 1), one in each of the slices [b/B, (b+1)/B), in random order: (perm + u) / B, float64 on
    ``generator``'s device (without one, on the CPU from torch's global generator)."""
    device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(batch_size, generator=generator, device=device)
    u = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
    return ((perm + u) / batch_size).clamp(1e-12, 1 - 1e-12)


@dataclass
class FlowPrediction:
    """Output of stage 2 for t = 1..T (all tensors batch-first, then time)."""

    flow_fwd: torch.Tensor  # (B, T, 2, H, W) pixels, w^f_t: frame 0 → frame t
    flow_bwd: torch.Tensor  # (B, T, 2, H, W) pixels, w^b_t: frame t → frame 0, I_t(x) ≈ I_0(x + w^b_t(x))
    occ_fwd: torch.Tensor  # (B, T, 1, H, W) in [0, 1], 1 = visible / has a correspondence
    occ_bwd: torch.Tensor  # (B, T, 1, H, W)
    warped: torch.Tensor  # (B, T, 3, H, W) o^b_t · I0(x + w^b_t(x)) (Eq. 2, before the refiner)
    frames: torch.Tensor  # (B, T, 3, H, W) in [-1, 1], refined frames Î_1..Î_T
    posterior: MotionPosterior | None = None  # set by FlowPredictor.forward (training)


class FlowPredictor(nn.Module):
    """The stage-2 cVAE. See the module docstring for its parts and conventions.

    Inference::

        enc = model.encode_image(frame0, heatmaps)          # once per first frame
        z_fg, z_bg = model.sample_z(1, generator=g)          # z ~ N(0, I)
        out = model.decode(enc, z_fg, z_bg)                  # decoder + warp + refiner only

    Training: ``out = model(video, heatmaps)`` encodes the motion, draws a reparameterised z from the posterior
    and decodes; ``out.posterior`` feeds the KL term of :func:`seg2vid.losses.cvae_loss`.
    """

    config_class = FlowPredictorConfig

    def __init__(self, config: FlowPredictorConfig):
        super().__init__()
        if not isinstance(config, FlowPredictorConfig):
            raise ValueError(f"FlowPredictor expects a FlowPredictorConfig; got {type(config).__name__}.")
        self.config = config
        c = config
        frames_in = 3 * (c.num_frames + 1)  # the whole clip, I0 first, stacked along channels

        heat_in = 0 if c.semantics == "none" else NUM_CLASSES
        self.image_encoder = ImageEncoder(3 + heat_in, c.encoder_stem_channels, c.encoder_channels)

        # Motion encoders: (input heatmap channels, z dims) per path; their outputs are concatenated and split
        # into (z_fg, z_bg), so every variant exposes the same two halves.
        if c.semantics == "two_path":
            paths = [(NUM_FG, c.z_fg_dim), (NUM_BG, c.z_bg_dim)]  # Fig. 4: foreground / background encoders
        else:
            paths = [(heat_in, c.z_dim)]
        self.motion_encoders = nn.ModuleList(
            MotionEncoder(frames_in + heat, c.motion_channels, dim, c.motion_pool_size) for heat, dim in paths
        )

        # Head: flows (2 + 2) and occlusion logits (1 + 1), or RGB pixels for the "w/o flow" variant (Fig. 9).
        self.flow_decoder = FlowDecoder(
            z_dim=c.z_dim,
            encoder_channels=c.encoder_channels,
            channels=c.decoder_channels,
            num_frames=c.num_frames,
            bottleneck_frames=c.bottleneck_frames,
            full_3d_levels=c.decoder_full_3d_levels,
            out_channels=6 if c.use_flow else 3,
            z_fg_dim=c.z_fg_dim,
        )
        self.refiner = Refiner(3 + 1 + (3 if c.refiner_uses_first_frame else 0), c.refiner_channels)

        # He initialisation throughout (no normalisation layers: the variance must survive the decoder's depth
        # for z to matter at all), except the output layers, which start from "nothing happens": the posterior
        # equals the prior, the flows are zero, almost everything is visible and the refiner is the identity.
        self.apply(init_leaky_relu)
        for enc in self.motion_encoders:
            nn.init.zeros_(enc.to_gaussian.weight)
            nn.init.zeros_(enc.to_gaussian.bias)
        head = self.flow_decoder.head
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        if c.use_flow:
            nn.init.constant_(head.bias[4:6], OCCLUSION_INIT_LOGIT)
        nn.init.zeros_(self.refiner.to_residual.weight)
        nn.init.zeros_(self.refiner.to_residual.bias)

        # The fitted prior of each half of z: N(m, L Lᵀ), or the mixture of N diagonal Gaussians. Either starts as
        # N(0, I) until set_prior / set_prior_mixture fills it.
        if c.prior_components:  # (config: implies fitted_prior)
            for half, dim in (("fg", c.z_fg_dim), ("bg", c.z_bg_dim)):
                self.register_buffer(f"prior_means_{half}", torch.zeros(c.prior_components, dim))  # (N, D)
                self.register_buffer(f"prior_stds_{half}", torch.ones(c.prior_components, dim))  # (N, D)
            if c.prior_neighbours:  # each component's training clip's layout_descriptor
                cells = LAYOUT_GRID[0] * LAYOUT_GRID[1]
                self.register_buffer("prior_layouts", torch.zeros(c.prior_components, NUM_FG * cells))  # (N, F)
        elif c.fitted_prior:
            for half, dim in (("fg", c.z_fg_dim), ("bg", c.z_bg_dim)):
                self.register_buffer(f"prior_mean_{half}", torch.zeros(dim))
                self.register_buffer(f"prior_scale_{half}", torch.eye(dim))  # lower-triangular L

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def gates_z(self) -> bool:
        """Whether z_FG and z_BG act only on their own cells of the decoder's bottleneck (config ``gate_z``)."""
        return self.config.gate_z and self.config.semantics == "two_path" and not self.config.layered_flow

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
        return self.config.size_multiple

    def _check_heatmaps(self, heatmaps: torch.Tensor | None, like: torch.Tensor) -> None:
        if heatmaps is None:
            if self.config.semantics != "none":
                raise ValueError(f"heatmaps are required with semantics={self.config.semantics!r}.")
            return
        check_image(heatmaps, "heatmaps", NUM_CLASSES, self.size_multiple, batch=like.shape[0])
        if heatmaps.shape[-2:] != like.shape[-2:]:
            raise ValueError(
                f"heatmaps {tuple(heatmaps.shape)} and frames {tuple(like.shape)} differ in height/width."
            )

    def _check_z(self, z: torch.Tensor, name: str, dim: int) -> None:
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{name} must have shape (B, {dim}); got {shape}.")

    # ------------------------------------------------------------------------------------------------- public
    def encode_image(self, frame0: torch.Tensor, heatmaps: torch.Tensor | None) -> ImageEncoding:
        """frame0 (B, 3, H, W) in [-1, 1], heatmaps (B, 19, H, W) → :class:`ImageEncoding` (cache it per image).

        With ``semantics="none"`` the label map is not used and ``heatmaps`` may be None.
        """
        check_image(frame0, "frame0", 3, self.size_multiple)
        self._check_heatmaps(heatmaps, frame0)
        x = frame0 if self.config.semantics == "none" else torch.cat([frame0, heatmaps.to(frame0.dtype)], dim=1)
        features = self.image_encoder(x)  # fine → coarse; the last is z_I0
        skips = self.flow_decoder.project_skips(features)
        z_gates = layer_mask = None
        if self.gates_z or self.config.layered_flow:
            fg = split_fg_bg(heatmaps.to(frame0.dtype))[0].sum(1, keepdim=True).clamp(0, 1)  # (B, 1, H, W)
        if self.gates_z:
            cells = skips[0].shape[-2:]
            z_gates = (F.adaptive_max_pool2d(fg, cells),  # z_FG: any foreground pixel opens a cell
                       1 - F.adaptive_avg_pool2d(fg, cells))  # z_BG: in proportion to the background share
        if self.config.layered_flow:
            layer_mask = fg
        return ImageEncoding(frame0=frame0, skips=skips, z_gates=z_gates, layer_mask=layer_mask)

    def encode_motion(self, video: torch.Tensor, heatmaps: torch.Tensor | None) -> MotionPosterior:
        """Q(z | V, I0): video (B, T+1, 3, H, W) in [-1, 1], frame 0 first; heatmaps (B, 19, H, W) of frame 0."""
        t1 = self.config.num_frames + 1
        if not isinstance(video, torch.Tensor) or video.dim() != 5 or video.shape[1:3] != (t1, 3):
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"video must have shape (B, {t1}, 3, H, W) (frame 0 first); got {shape}.")
        frames = video.flatten(1, 2)  # (B, (T+1)·3, H, W)
        check_image(frames, "video frames", 3 * t1, self.size_multiple)
        self._check_heatmaps(heatmaps, frames)
        if self.config.semantics == "two_path":
            fg, bg = split_fg_bg(heatmaps.to(frames.dtype))  # (B, 8, H, W), (B, 11, H, W)
            if self.config.mask_motion_inputs:  # V × mask: each encoder sees only its own pixels (Fig. 4)
                inputs = [torch.cat([frames * h.sum(1, keepdim=True), h], 1) for h in (fg, bg)]
            else:
                inputs = [torch.cat([frames, fg], 1), torch.cat([frames, bg], 1)]
        elif self.config.semantics == "one_encoder":
            inputs = [torch.cat([frames, heatmaps.to(frames.dtype)], 1)]
        else:
            inputs = [frames]
        mus, logvars = zip(*(enc(x) for enc, x in zip(self.motion_encoders, inputs)))
        mu_fg, mu_bg = torch.cat(mus, 1).split([self.config.z_fg_dim, self.config.z_bg_dim], dim=1)
        logvar_fg, logvar_bg = torch.cat(logvars, 1).split([self.config.z_fg_dim, self.config.z_bg_dim], dim=1)
        return MotionPosterior(mu_fg, logvar_fg, mu_bg, logvar_bg)

    def sample_z(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device=None,
        stratified: bool = False,
        heatmaps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw (z_fg (B, z_fg_dim), z_bg (B, z_bg_dim)) from the prior — what inference samples: N(0, I), or
        with ``fitted_prior`` the same ε mapped through the fitted N(m, L Lᵀ), z = m + L ε, or (``prior_components``
        N) through one of its N components, z = mu_n + σ_n ⊙ ε, n uniform and drawn separately for each half
        (or, with ``joint_prior``, once for both).

        ε_fg is drawn first, then ε_bg, then (mixture only) n_fg and n_bg, on ``generator``'s device (so a CPU
        generator gives the same z on every machine; with ``joint_prior`` n_fg is used for both halves); the
        result is moved to ``device`` (default: the model's).

        ``stratified``: the B draws *cover* the prior instead of falling where they may (stratified sampling). The
        prior's principal axis is cut into B slices of equal probability and each draw takes a different slice, in
        random order, so each draw on its own is still distributed as the prior and means over the B draws stay
        unbiased. The mixture ranks its components along the first principal axis of their means
        (:func:`principal_order`; both halves together with ``joint_prior``) and draw b takes a component from
        slice b of the ranking; a Gaussian prior takes ε's coordinate along the axis of largest variance of L Lᵀ
        (N(0, I): the first coordinate) from slice b of N(0, 1). On the bundled SynthCity model the axis is the
        camera's speed and 18 % of the components stand still: 10 independent draws miss the still camera
        altogether one time in seven, 10 stratified draws one time in thirty. After ε, each stratified half draws
        a permutation of the B slices and B uniforms (once for both halves with ``joint_prior``) instead of n. The
        ranking comes from an eigendecomposition, so components whose positions along the axis agree to rounding
        error (near-duplicates) may trade places on another machine's linear algebra.

        ``heatmaps`` (1, 19, H, W): the label map the codes are for. With ``prior_neighbours`` = k the components
        are those of the k training clips nearest it (:meth:`neighbours`), uniform or stratified as above, a
        nearest-neighbour estimate of p(z | S); without ``heatmaps``, or without ``prior_neighbours``, all N.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
        if heatmaps is not None:
            self._check_prior_heatmaps(heatmaps)
        param = next(self.parameters())
        device = torch.device(device) if device is not None else param.device
        draw_on = generator.device if generator is not None else device
        z_fg = torch.randn(batch_size, self.config.z_fg_dim, generator=generator, device=draw_on)
        z_bg = torch.randn(batch_size, self.config.z_bg_dim, generator=generator, device=draw_on)
        if self.config.prior_components:  # z = mu_n + σ_n ⊙ ε
            means_fg, stds_fg = (getattr(self, f"prior_{k}_fg").to(draw_on, z_fg.dtype) for k in ("means", "stds"))
            means_bg, stds_bg = (getattr(self, f"prior_{k}_bg").to(draw_on, z_bg.dtype) for k in ("means", "stds"))
            pool = self._neighbours(heatmaps) if heatmaps is not None else None  # (k,) sorted, or all N (checked above)
            if stratified:
                n = self._stratified_components(batch_size, generator, draw_on, pool)
            else:
                size = self.config.prior_components if pool is None else len(pool)
                n = torch.randint(size, (2, batch_size), generator=generator, device=draw_on)
                n = n if pool is None else pool.to(draw_on)[n]
            if self.config.joint_prior:  # one training clip for both halves
                n = n[:1].expand(2, batch_size)
            z_fg = means_fg[n[0]] + stds_fg[n[0]] * z_fg
            z_bg = means_bg[n[1]] + stds_bg[n[1]] * z_bg
        else:
            if stratified:  # ε's coordinate along the prior's widest axis: one slice of N(0, 1) per draw
                z_fg, z_bg = (self._stratify_eps(eps, half, generator) for eps, half in ((z_fg, "fg"), (z_bg, "bg")))
            if self.config.fitted_prior:  # z = m + L ε
                z_fg = self.prior_mean_fg.to(draw_on, z_fg.dtype) + z_fg @ self.prior_scale_fg.to(draw_on, z_fg.dtype).T
                z_bg = self.prior_mean_bg.to(draw_on, z_bg.dtype) + z_bg @ self.prior_scale_bg.to(draw_on, z_bg.dtype).T
        return z_fg.to(device=device, dtype=param.dtype), z_bg.to(device=device, dtype=param.dtype)

    def _stratified_components(self, batch_size: int, generator, device, pool=None) -> torch.Tensor:
        """Mixture components for ``sample_z(stratified=True)``: (2, B) indices, row 0 for z_fg, row 1 for z_bg
        (with ``joint_prior`` one row, ranked on both halves' means, for both); draw b of a row takes a component
        from slice b of the ranking along the principal axis. ``pool`` (k,): rank only these components (along the
        axis of all N, so that it stays the camera's speed), default all."""
        fg, bg = self.prior_means_fg.detach().cpu(), self.prior_means_bg.detach().cpu()
        halves = [torch.cat([fg, bg], 1)] if self.config.joint_prior else [fg, bg]  # (N, D) each
        keep = None
        if pool is not None:
            keep = torch.zeros(self.config.prior_components, dtype=torch.bool)
            keep[pool.cpu()] = True
        rows = []
        for means in halves:
            order = principal_order(means)  # (N,)
            order = order if keep is None else order[keep[order]]  # (k,)
            rank = (stratified_uniform(batch_size, generator) * len(order)).long().clamp(max=len(order) - 1)
            rows.append(order[rank.cpu()])  # (B,)
        return torch.stack(rows).to(device)  # (2, B), or (1, B) with joint_prior (sample_z expands it)

    @torch.no_grad()
    def neighbours(self, heatmaps: torch.Tensor) -> torch.Tensor | None:
        """The mixture components ``sample_z(heatmaps=...)`` draws from: the ``prior_neighbours`` components whose
        layout (:func:`layout_descriptor` of their training clip's first label map) is nearest that of
        ``heatmaps`` (1, 19, H, W) in squared distance, ties to the lower index; (k,) indices in increasing order.
        None when the prior is not conditioned on the layout (all components)."""
        self._check_prior_heatmaps(heatmaps)
        return self._neighbours(heatmaps)

    def _neighbours(self, heatmaps: torch.Tensor) -> torch.Tensor | None:
        """:meth:`neighbours` of heatmaps already checked."""
        k = self.config.prior_neighbours
        if not (self.config.prior_components and k):
            return None
        query = layout_descriptor(heatmaps.detach().cpu()).double()  # (1, F)
        distance = ((self.prior_layouts.detach().cpu().double() - query) ** 2).sum(1)  # (N,)
        return torch.sort(torch.argsort(distance, stable=True)[:k]).values

    @staticmethod
    def _check_prior_heatmaps(heatmaps) -> None:
        """``heatmaps`` for ``sample_z`` / ``neighbours``: one label map, (1, 19, H ≥ 1, W ≥ 1), class shares in [0, 1]."""
        ok = (isinstance(heatmaps, torch.Tensor) and heatmaps.dim() == 4 and heatmaps.shape[:2] == (1, NUM_CLASSES)
              and heatmaps.shape[2] > 0 and heatmaps.shape[3] > 0 and heatmaps.device.type != "meta")
        if not ok:
            shape = tuple(heatmaps.shape) if isinstance(heatmaps, torch.Tensor) else type(heatmaps).__name__
            raise ValueError(f"heatmaps must be one label map, (1, {NUM_CLASSES}, H, W); got {shape}.")
        if not _are_shares(heatmaps.detach().cpu()):
            raise ValueError("heatmaps must hold class shares in [0, 1] (e.g. labels.one_hot of a label map).")

    def _stratify_eps(self, eps: torch.Tensor, half: str, generator) -> torch.Tensor:
        """ε (B, D) with its coordinate along the widest axis of the Gaussian prior (v: the first right-singular
        vector of L; N(0, I): the first unit vector) replaced by a stratified draw of N(0, 1)."""
        if self.config.fitted_prior:
            v = _canonical_sign(torch.linalg.svd(getattr(self, f"prior_scale_{half}").double().cpu())[2][0])
        else:
            v = torch.zeros(eps.shape[1], dtype=torch.float64)
            v[0] = 1.0
        v = v.to(eps.device, eps.dtype)
        q = torch.special.ndtri(stratified_uniform(eps.shape[0], generator)).to(eps.device, eps.dtype)  # (B,)
        return eps + (q - eps @ v)[:, None] * v[None, :]

    @torch.no_grad()
    def set_prior(self, mean_fg: torch.Tensor, scale_fg: torch.Tensor, mean_bg: torch.Tensor, scale_bg: torch.Tensor):
        """Make sample_z draw z_FG ~ N(mean_fg, scale_fg scale_fgᵀ), z_BG likewise; scales are lower-triangular.

        Needs a model built with ``fitted_prior=True``; see :func:`aggregate_posterior_gaussian`.
        """
        if not self.config.fitted_prior:
            raise ValueError("this FlowPredictor samples from N(0, I); build it with fitted_prior=True to set a prior.")
        if self.config.prior_components:
            raise ValueError("this FlowPredictor's prior is a mixture (prior_components > 0); use set_prior_mixture.")
        halves = (("fg", self.config.z_fg_dim, mean_fg, scale_fg), ("bg", self.config.z_bg_dim, mean_bg, scale_bg))
        for half, dim, mean, scale in halves:  # check both halves before writing either
            if tuple(mean.shape) != (dim,) or tuple(scale.shape) != (dim, dim):
                raise ValueError(f"the z_{half} prior needs a mean ({dim},) and a scale ({dim}, {dim}); got "
                                 f"{tuple(mean.shape)} and {tuple(scale.shape)}.")
            if not (torch.isfinite(mean).all() and torch.isfinite(scale).all()):
                raise ValueError(f"the z_{half} prior has non-finite values.")
        for half, _, mean, scale in halves:
            getattr(self, f"prior_mean_{half}").copy_(mean)
            getattr(self, f"prior_scale_{half}").copy_(torch.tril(scale))

    @torch.no_grad()
    def set_prior_mixture(
        self,
        means_fg: torch.Tensor,
        stds_fg: torch.Tensor,
        means_bg: torch.Tensor,
        stds_bg: torch.Tensor,
        layouts: torch.Tensor | None = None,
    ):
        """Make sample_z draw each half of z from the mixture (1/N) Σ_n N(means[n], diag stds[n]²), e.g. the
        posteriors of N training clips: ``means_*`` and ``stds_*`` (N, D), N = ``config.prior_components``.

        ``layouts`` (N, 8 · 8 · 16): the :func:`layout_descriptor` of each clip's first label map; required with
        ``prior_neighbours`` and only then.
        """
        c = self.config
        if not c.prior_components:
            raise ValueError("this FlowPredictor has no mixture prior; build it with fitted_prior=True and "
                             "prior_components=N to set one.")
        halves = (("fg", c.z_fg_dim, means_fg, stds_fg), ("bg", c.z_bg_dim, means_bg, stds_bg))
        for half, dim, means, stds in halves:  # check both halves before writing either
            shape = (c.prior_components, dim)
            if tuple(means.shape) != shape or tuple(stds.shape) != shape:
                raise ValueError(f"the z_{half} mixture needs means and stds of shape {shape}; got "
                                 f"{tuple(means.shape)} and {tuple(stds.shape)}.")
            if not (torch.isfinite(means).all() and torch.isfinite(stds).all()) or (stds < 0).any():
                raise ValueError(f"the z_{half} mixture has non-finite means or stds, or negative stds.")
        if c.prior_neighbours:
            shape = tuple(self.prior_layouts.shape)
            if not isinstance(layouts, torch.Tensor) or layouts.is_complex() or tuple(layouts.shape) != shape:
                got = type(layouts).__name__ if not isinstance(layouts, torch.Tensor) else str(tuple(layouts.shape))
                raise ValueError(f"a mixture with prior_neighbours needs layouts of shape {shape}; got {got}.")
            if not _are_shares(layouts):
                raise ValueError("layouts must be class shares in [0, 1].")
        elif layouts is not None:
            raise ValueError("layouts are only used with prior_neighbours > 0; this FlowPredictor has none.")
        for half, _, means, stds in halves:
            getattr(self, f"prior_means_{half}").copy_(means)
            getattr(self, f"prior_stds_{half}").copy_(stds)
        if c.prior_neighbours:
            self.prior_layouts.copy_(layouts)

    @torch.no_grad()
    def prior_mean(self, heatmaps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean of the prior sample_z draws from, (z_fg_dim,) and (z_bg_dim,): zero for N(0, I), m for the
        fitted Gaussian, the average component mean for the mixture (the centre the app's z sliders turn about);
        with ``heatmaps`` and ``prior_neighbours``, the average over the components it draws from for them.
        """
        c = self.config
        if c.prior_components:
            pool = self.neighbours(heatmaps) if heatmaps is not None else None
            fg, bg = (self.prior_means_fg, self.prior_means_bg) if pool is None else (
                self.prior_means_fg[pool.to(self.prior_means_fg.device)],
                self.prior_means_bg[pool.to(self.prior_means_bg.device)])
            return fg.mean(0).clone(), bg.mean(0).clone()
        if c.fitted_prior:
            return self.prior_mean_fg.clone(), self.prior_mean_bg.clone()
        param = next(self.parameters())
        return param.new_zeros(c.z_fg_dim), param.new_zeros(c.z_bg_dim)

    def decode(
        self, enc: ImageEncoding, z_fg: torch.Tensor, z_bg: torch.Tensor, motion_scale: float = 1.0
    ) -> FlowPrediction:
        """P(V | z, I0): flow decoder, warp (Eq. 2) and refiner. Re-sampling z runs only this.

        ``z_fg`` (B, z_fg_dim), ``z_bg`` (B, z_bg_dim); a batch-1 ``enc`` is shared by every z in the batch.
        ``motion_scale`` multiplies the predicted flows before warping (0 = still video); below 1 the occlusion
        maps are relaxed towards 1 in proportion, ``o ← 1 - s · (1 - o)``, since less motion uncovers less.
        """
        if not isinstance(enc, ImageEncoding):
            raise ValueError(f"enc must be the ImageEncoding returned by encode_image; got {type(enc).__name__}.")
        self._check_z(z_fg, "z_fg", self.config.z_fg_dim)
        self._check_z(z_bg, "z_bg", self.config.z_bg_dim)
        if z_fg.shape[0] != z_bg.shape[0]:
            raise ValueError(f"z_fg and z_bg have different batch sizes ({z_fg.shape[0]} vs {z_bg.shape[0]}).")
        if isinstance(motion_scale, bool) or not isinstance(motion_scale, (int, float)) or motion_scale < 0:
            raise ValueError(f"motion_scale must be a number >= 0; got {motion_scale!r}.")
        b, t = z_fg.shape[0], self.config.num_frames
        enc = enc.expand(b)
        h, w = enc.frame0.shape[-2:]

        # 1. Flow decoder at 1/2 resolution: tanh-bounded flows and sigmoid occlusions (or tanh pixels), then
        #    bilinear upsampling to the frame size. layered_flow: a batch of 2B, the z_FG pass then the z_BG pass.
        z_fg, z_bg = z_fg.to(enc.frame0.dtype), z_bg.to(enc.frame0.dtype)
        if self.config.layered_flow:  # [z_FG, 0] then [0, z_BG]: (2B, |z|)
            z = torch.cat([torch.cat([z_fg, torch.zeros_like(z_bg)], 1), torch.cat([torch.zeros_like(z_fg), z_bg], 1)])
            skips = tuple(torch.cat([s, s]) for s in enc.skips)
        else:
            z, skips = torch.cat([z_fg, z_bg], dim=1), enc.skips  # (B, |z|)
        raw = self.flow_decoder(skips, z, enc.z_gates).contiguous()  # ((1 or 2)·B·T, 6 or 3, H/2, W/2)
        if self.config.use_flow:
            half = torch.cat([torch.tanh(raw[:, 0:4]), torch.sigmoid(raw[:, 4:6])], dim=1)
        else:
            half = torch.tanh(raw)
        out = F.interpolate(half, size=(h, w), mode="bilinear", align_corners=False).contiguous()  # (B·T, ., H, W)
        frame0 = enc.frame0.unsqueeze(1).expand(b, t, 3, h, w).reshape(b * t, 3, h, w)  # (B·T, 3, H, W)

        if self.config.use_flow:
            # 2. Flows in pixels: tanh × max_flow × (W, H), times motion_scale; occlusion maps o^f, o^b.
            scale = out.new_tensor([w, h]).view(1, 2, 1, 1) * (self.config.max_flow * motion_scale)
            flow_fwd = out[:, 0:2] * scale  # (B·T, 2, H, W)
            flow_bwd = out[:, 2:4] * scale
            occ = out[:, 4:6]  # (B·T, 2, H, W): [o^f, o^b]
            if motion_scale < 1:
                occ = 1 - motion_scale * (1 - occ)
            occ_fwd, occ_bwd = occ[:, 0:1], occ[:, 1:2]
            if self.config.layered_flow:
                composed = self._compose(enc.layer_mask, flow_fwd, flow_bwd, occ_fwd, occ_bwd)
                flow_fwd, flow_bwd, occ_fwd, occ_bwd = composed  # (B·T, ., H, W) each
            # 3. Eq. 2: warped_t(x) = o^b_t(x) · I0(x + w^b_t(x)).
            warped = occ_bwd * warp(frame0, flow_bwd)
        else:
            # Fig. 9 "w/o flow": the decoder outputs the frames; no flow, nothing occluded.
            flow_fwd = flow_bwd = out.new_zeros(b * t, 2, h, w)
            occ_fwd = occ_bwd = out.new_ones(b * t, 1, h, w)
            warped = out

        # 4. Refiner P (Eq. 2): in-paint what the warp cannot explain; a residual on the warped frame.
        refiner_in = [warped, occ_bwd] + ([frame0] if self.config.refiner_uses_first_frame else [])
        frames = (warped + self.refiner(torch.cat(refiner_in, dim=1))).clamp(-1.0, 1.0)

        def video(x: torch.Tensor) -> torch.Tensor:  # (B·T, C, H, W) → (B, T, C, H, W), standard layout
            return x.reshape(b, t, *x.shape[1:]).contiguous()

        return FlowPrediction(
            flow_fwd=video(flow_fwd),
            flow_bwd=video(flow_bwd),
            occ_fwd=video(occ_fwd),
            occ_bwd=video(occ_bwd),
            warped=video(warped),
            frames=video(frames),
        )

    @staticmethod
    def _compose(mask: torch.Tensor, flow_fwd, flow_bwd, occ_fwd, occ_bwd):
        """layered_flow: the two passes (each (2·B·T, C, H, W), the z_FG pass first) → one motion (B·T, C, H, W).

        Frame 0's foreground ``mask`` (B, 1, H, W) picks the pass for what is indexed by frame-0 pixels (w^f, o^f).
        What is indexed by frame-t pixels (w^b, o^b) takes the foreground pass where frame t shows an object, i.e.
        where the object's own backward flow leads back onto frame 0's foreground, m_t(x) = m_0(x + w^b_FG,t(x)),
        so that a moving object carries its layer with it.
        """
        bt = flow_fwd.shape[0] // 2
        m0 = mask.repeat_interleave(bt // mask.shape[0], dim=0)  # (B·T, 1, H, W), frames b-major
        mt = warp(m0, flow_bwd[:bt])  # (B·T, 1, H, W): frame t's foreground, by the z_FG pass's own flow

        def mix(x, m):  # z_FG pass on m, z_BG pass elsewhere
            fg, bg = x.split(bt)
            return m * fg + (1 - m) * bg

        return mix(flow_fwd, m0), mix(flow_bwd, mt), mix(occ_fwd, m0), mix(occ_bwd, mt)

    def forward(
        self,
        video: torch.Tensor,
        heatmaps: torch.Tensor | None,
        z_fg: torch.Tensor | None = None,
        z_bg: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> FlowPrediction:
        """Training pass: video (B, T+1, 3, H, W), heatmaps (B, 19, H, W) of frame 0 → prediction + posterior.

        z is the reparameterised posterior sample in training mode and the posterior mean in eval mode
        (reconstruction); a given ``z_fg`` / ``z_bg`` replaces the corresponding half.
        """
        posterior = self.encode_motion(video, heatmaps)
        if self.training:
            sample_fg, sample_bg = posterior.sample(generator)
        else:
            sample_fg, sample_bg = posterior.mu_fg, posterior.mu_bg
        enc = self.encode_image(video[:, 0], heatmaps)
        out = self.decode(enc, sample_fg if z_fg is None else z_fg, sample_bg if z_bg is None else z_bg)
        out.posterior = posterior
        return out
