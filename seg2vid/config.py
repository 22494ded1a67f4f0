"""Configurations of the seg2vid networks and losses: plain, validated, JSON-serialisable dataclasses.

Every config checks itself on construction (``__post_init__``) and round-trips through ``to_dict`` /
``from_dict``; ``from_dict`` rejects unknown keys and wrong types with a ``ValueError`` that names the key, so a
hand-edited ``config.json`` fails loudly instead of building a different network.

The defaults are the shipped model: sized so that stage 2 re-samples a 128×256, T = 8 video in about a tenth of
a second on two CPU cores (see the architecture notes in :mod:`seg2vid.networks.flow_predictor`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from .labels import NUM_CLASSES

__all__ = [
    "ImageGeneratorConfig",
    "DiscriminatorConfig",
    "FlowPredictorConfig",
    "LossWeights",
    "ImageGANLossWeights",
    "SEMANTICS",
]

SEMANTICS = ("none", "one_encoder", "two_path")  # paper section 3.3 / 4.3 (Fig. 10 ablation)

C = TypeVar("C", bound="_Config")


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Check (and normalise: JSON list → tuple, int → float) one field value against its annotation."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"config key {name!r} must be a list/tuple; got {value!r}.")
        if len(args) == 2 and args[1] is Ellipsis:
            elem_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ValueError(f"config key {name!r} must have {len(args)} entries; got {value!r}.")
            elem_types = list(args)
        return tuple(_check_type(f"{name}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, elem_types)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config key {name!r} must be true/false; got {value!r}.")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {name!r} must be an integer; got {value!r}.")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {name!r} must be a number; got {value!r}.")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"config key {name!r} must be a string; got {value!r}.")
        return value
    raise TypeError(f"unsupported config annotation {annotation!r} for {name!r}")  # a bug in this module


class _Config:
    """Shared machinery: type checking of every field, ``to_dict`` and strict ``from_dict``."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check_type(f.name, getattr(self, f.name), hints[f.name]))
        self.validate()

    def validate(self) -> None:  # overridden by each config
        pass

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls: type[C], d: dict) -> C:
        """Build from a dict (e.g. a parsed ``config.json``); unknown keys / wrong types raise ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}.from_dict expects a dict; got {type(d).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config key(s) {unknown}; known keys are {sorted(known)}.")
        return cls(**d)


def _positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(v <= 0 for v in values):
            raise ValueError(f"{type(cfg).__name__}: {name} must be positive; got {value!r}.")


def _non_negative(cfg, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{type(cfg).__name__}: {name} must be >= 0; got {getattr(cfg, name)!r}.")


@dataclass
class ImageGeneratorConfig(_Config):
    """Stage 1 (paper section 3.1): a pix2pixHD global generator, label heatmaps → first frame I0."""

    num_classes: int = NUM_CLASSES
    base_channels: int = 16  # width of the full-resolution stem; doubles at every downsampling
    num_downsample: int = 3  # stride-2 convolutions; residual blocks run at 1 / 2**num_downsample
    num_res_blocks: int = 6
    max_channels: int = 128  # cap on the width (the bottleneck width when base · 2**num_downsample exceeds it)
    appearance_dim: int = 0  # optional appearance code modulating the bottleneck (AdaIN-style); 0 = off
    # SPADE-style label modulation of every upsampling level (Park et al. 2019): the label map scales and shifts
    # the normalised features at each resolution, so thin classes need not survive the bottleneck. False = the
    # plain pix2pixHD global generator.
    label_modulation: bool = True
    image_size: tuple[int, int] = (128, 256)  # training resolution (H, W); the network is fully convolutional

    def validate(self) -> None:
        _positive(self, "num_classes", "base_channels", "num_downsample", "max_channels", "image_size")
        _non_negative(self, "num_res_blocks", "appearance_dim")


@dataclass
class DiscriminatorConfig(_Config):
    """Stage-1 training only: multi-scale PatchGAN discriminator on [heatmaps, image] (pix2pixHD)."""

    num_classes: int = NUM_CLASSES
    base_channels: int = 32
    num_layers: int = 3  # stride-2 convolutions per scale
    num_scales: int = 2  # the input is average-pooled by 2 between scales
    # widths (at 1, 1/2, 1/4, ...) of the U-Net segmentation discriminator, built only when loss.lambda_seg > 0
    seg_channels: tuple[int, ...] = (16, 32, 64, 96, 128)

    def validate(self) -> None:
        _positive(self, "num_classes", "base_channels", "num_layers", "num_scales", "seg_channels")
        if len(self.seg_channels) < 2:
            raise ValueError("DiscriminatorConfig: seg_channels needs at least two levels.")


@dataclass
class FlowPredictorConfig(_Config):
    """Stage 2 (paper section 3.2–3.3, Fig. 3–4): the cVAE predicting flows, occlusions and frames.

    Widths are listed coarse → fine for the decoder and fine → coarse for the encoders; the image encoder and
    the flow decoder share the levels 1/2, 1/4, ..., 1/2**len(decoder_channels) of the frame.
    """

    num_frames: int = 8  # T, frames predicted after I0
    image_size: tuple[int, int] = (128, 256)  # training resolution (H, W); any multiple of size_multiple works
    z_fg_dim: int = 896  # paper section 4.2: |z| = 1024 = 896 (foreground) + 128 (background)
    z_bg_dim: int = 128
    semantics: str = "two_path"  # "none" | "one_encoder" | "two_path" (section 3.3)
    # two_path only: each motion encoder sees the video only on its own pixels of frame 0's label map (V × mask),
    # so that "each sequence encoder only focuses on learning either foreground or background motion" (Fig. 4)
    # and camera motion cannot be read off the whole frame by the foreground encoder. Training-only.
    mask_motion_inputs: bool = True
    # two_path only: each half of z enters the flow decoder only on its own part of the bottleneck (cells of 1/16
    # of the frame): z_FG on cells holding any foreground pixel of the label map, z_BG in proportion to each cell's
    # share of background. A new z_FG then moves objects and not the street, a new z_BG the street and much less
    # the objects (section 3.3's separation, carried through to the decoder), and a map without objects has no
    # object motion. False: z = [z_FG, z_BG] is tiled over the whole bottleneck (the paper's decoder).
    gate_z: bool = True
    # two_path only: layered motion. The flow decoder runs twice, once reading z_FG alone and once z_BG alone, and
    # each pass supplies the flows and occlusions of its own layer: the foreground pass on the objects of frame 0
    # (carried along by their own backward flow in frame t), the background pass everywhere else. A new z_FG then
    # cannot move the street and a new z_BG cannot move the objects, whatever the decoder learns; the camera's
    # motion of the objects is z_FG's to carry. The composition by the semantic mask follows vid2vid's
    # foreground-background prior (Wang et al., NeurIPS 2018, Eq. 9). Replaces gate_z; costs a second decoder
    # pass. False: one pass.
    layered_flow: bool = False
    use_flow: bool = True  # False: Fig. 9 "w/o flow" — the decoder outputs pixels directly

    # image encoder on [I0, heatmaps]: a full-resolution stem, then one stride-2 stage per decoder level
    encoder_stem_channels: int = 16
    encoder_channels: tuple[int, ...] = (24, 32, 64, 96)  # at 1/2, 1/4, 1/8, 1/16
    # motion encoder Q(z | V, I0): 2-D convolutions with max-pooling, frames stacked along channels (section 4.2)
    motion_channels: tuple[int, ...] = (16, 32, 64, 96, 128)  # at 1, 1/2, 1/4, 1/8, 1/16
    motion_pool_size: tuple[int, int] = (2, 4)  # adaptive average pooling grid before the (mu, logvar) layer
    # flow decoder: z tiled at the bottleneck, upsampled in space and time (section 4.2)
    decoder_channels: tuple[int, ...] = (96, 48, 32, 16)  # at 1/16, 1/8, 1/4, 1/2 (coarse → fine)
    decoder_full_3d_levels: int = 2  # the coarsest levels use 3×3×3 convolutions, finer ones (2+1)-D ones
    bottleneck_frames: int = 2  # time steps at the bottleneck; doubled per level until num_frames
    max_flow: float = 0.5  # flow head: tanh × max_flow × (W, H); fraction of the frame size
    # refiner P (Eq. 2): a U-Net on [warped frame, occlusion] predicting a residual
    refiner_channels: tuple[int, ...] = (12, 24, 48)  # at 1/2, 1/4, 1/8 (full resolution by pixel (un)shuffle)
    refiner_uses_first_frame: bool = False  # also feed I0 to the refiner
    # The distribution sample_z draws from. False: N(0, I), the paper's prior. True: a Gaussian N(m, L Lᵀ) fitted
    # after training to the aggregate posterior of the training clips (``training/fit_prior.py``; ex-post density
    # estimation, Ghosh et al., ICLR 2020), stored as the buffers prior_{mean,scale}_{fg,bg}. A cVAE trained with a
    # weak KL term leaves the aggregate posterior far from N(0, I) — whole motion modes (a camera standing still)
    # sit where N(0, I) never samples — and the fitted prior samples them again.
    fitted_prior: bool = False
    # With fitted_prior, the form of the fitted distribution. 0: the one Gaussian above. N > 0: the aggregate
    # posterior itself, the mixture (1/N) Σ_n N(mu_n, diag σ_n²) of N training clips' posteriors, stored as the
    # buffers prior_{means,stds}_{fg,bg} (N, D). A Gaussian cannot hold SynthCity's motion modes apart (one clip in
    # five has a still camera; the Gaussian blends it into slow driving); the mixture samples each as often as the
    # training clips show it.
    prior_components: int = 0
    # With prior_components: draw z_FG and z_BG from the same training clip's posterior (one n per sample), so
    # that the objects' and the street's motion agree (what layered_flow needs: both halves carry the camera).
    # False: a clip is drawn for each half separately.
    joint_prior: bool = False
    # With prior_components: draw z from the k components whose training clip's first label map is nearest the
    # label map at hand (foreground layout; ``FlowPredictor.sample_z(heatmaps=...)``), a k-nearest-neighbour
    # estimate of p(z | S) instead of p(z). Stored as the buffer prior_layouts (N, 8·8·16). 0: all N components.
    prior_neighbours: int = 0

    def validate(self) -> None:
        _positive(self, "num_frames", "image_size", "z_fg_dim", "z_bg_dim", "encoder_stem_channels")
        _positive(self, "encoder_channels", "motion_channels", "decoder_channels", "refiner_channels")
        _positive(self, "motion_pool_size", "bottleneck_frames", "max_flow")
        _non_negative(self, "prior_components", "prior_neighbours")
        if self.prior_neighbours and not self.prior_components:
            raise ValueError(f"FlowPredictorConfig: prior_neighbours ({self.prior_neighbours}) needs a mixture prior "
                             "(prior_components > 0).")
        if self.prior_neighbours > self.prior_components:
            raise ValueError(f"FlowPredictorConfig: prior_neighbours ({self.prior_neighbours}) cannot exceed "
                             f"prior_components ({self.prior_components}).")
        if self.prior_components and not self.fitted_prior:
            raise ValueError(
                f"FlowPredictorConfig: prior_components ({self.prior_components}) needs fitted_prior: true."
            )
        if self.semantics not in SEMANTICS:
            raise ValueError(f"FlowPredictorConfig: semantics must be one of {SEMANTICS}; got {self.semantics!r}.")
        if self.layered_flow and (self.semantics != "two_path" or not self.use_flow):
            raise ValueError("FlowPredictorConfig: layered_flow needs semantics='two_path' and use_flow=True "
                             "(it composes a foreground and a background flow).")
        if len(self.encoder_channels) != len(self.decoder_channels):
            raise ValueError(
                "FlowPredictorConfig: encoder_channels and decoder_channels must have one entry per level "
                f"(same length); got {self.encoder_channels} and {self.decoder_channels}."
            )
        if not 0 <= self.decoder_full_3d_levels <= len(self.decoder_channels):
            raise ValueError(
                f"FlowPredictorConfig: decoder_full_3d_levels must lie in 0..{len(self.decoder_channels)}; "
                f"got {self.decoder_full_3d_levels}."
            )
        if self.bottleneck_frames > self.num_frames:
            raise ValueError(
                f"FlowPredictorConfig: bottleneck_frames ({self.bottleneck_frames}) must not exceed "
                f"num_frames ({self.num_frames})."
            )
        if len(self.refiner_channels) < 2:
            raise ValueError("FlowPredictorConfig: refiner_channels needs at least two levels.")
        for h in self.image_size:
            if h % self.size_multiple:
                raise ValueError(
                    f"FlowPredictorConfig: image_size {self.image_size} must be divisible by {self.size_multiple}."
                )

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (the deepest stride of the encoders, decoder and refiner)."""
        return 2 ** max(len(self.decoder_channels), len(self.motion_channels) - 1, len(self.refiner_channels))

    @property
    def z_dim(self) -> int:
        return self.z_fg_dim + self.z_bg_dim


@dataclass
class LossWeights(_Config):
    """Weights of the stage-2 cVAE loss, paper Eq. 6–7 (defaults = the paper's section 3.2 values)."""

    lambda_r: float = 1.0  # Eq. 3, occlusion-masked bidirectional reconstruction
    lambda_fs: float = 1.0  # Eq. 4, flow smoothness
    lambda_fc: float = 1.0  # Eq. 5, forward-backward consistency
    lambda_l1: float = 1.0  # Eq. 6, L1 between refined and true frames
    lambda_vgg: float = 1.0  # Eq. 6, L1 between VGG-19 features (skipped when no VGG weights are available)
    lambda_p: float = 0.1  # Eq. 6, occlusion penalty |1 - O|
    beta: float = 0.1  # Eq. 7, KL(Q(z | V, I0) || N(0, I))

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _non_negative(self, f.name)


@dataclass
class ImageGANLossWeights(_Config):
    """Weights of the stage-1 (pix2pixHD) generator loss."""

    gan_mode: str = "lsgan"  # "lsgan" | "hinge"
    lambda_gan: float = 1.0
    lambda_fm: float = 10.0  # discriminator feature matching
    lambda_vgg: float = 10.0  # VGG-19 perceptual loss (skipped when no VGG weights are available)
    # Not in pix2pixHD: pix2pix's L1 to the real frame; 0 = off. A cheap stand-in when no VGG weights exist.
    lambda_l1: float = 0.0
    # Weigh that L1 term per pixel by OASIS's class-balancing weights (every class present in the batch carries the
    # same total weight), so that a truck's or a fence's colours count as much as the road's.
    l1_class_balanced: bool = False
    # Not in pix2pixHD: OASIS's adversarial supervision (Schönfeld et al., ICLR 2021), added to the terms above.
    # A U-Net discriminator segments images into the N classes plus "fake"; the generator minimises its
    # class-balanced cross-entropy of the generated pixels to their label-map classes, so every region, thin and
    # rare classes included, must look like its class to a segmenter that is learning to catch fakes. 0 = off.
    lambda_seg: float = 0.0
    # OASIS's LabelMix regulariser of that discriminator (OASIS uses 10): the classes of the label
    # map are split at random between a real and a generated frame, and D_seg's logits on the mixed frame must
    # equal the same mix of its logits on the two, so that it judges each region by its content, not by a global
    # "this frame is fake" cue. Needs lambda_seg > 0. 0 = off.
    lambda_labelmix: float = 0.0

    def validate(self) -> None:
        if self.gan_mode not in ("lsgan", "hinge"):
            raise ValueError(f"ImageGANLossWeights: gan_mode must be 'lsgan' or 'hinge'; got {self.gan_mode!r}.")
        _non_negative(self, "lambda_gan", "lambda_fm", "lambda_vgg", "lambda_l1", "lambda_seg", "lambda_labelmix")
        if self.l1_class_balanced and self.lambda_l1 == 0:
            raise ValueError("ImageGANLossWeights: l1_class_balanced weighs the L1 term, which is off (lambda_l1 = 0).")
        if self.lambda_labelmix > 0 and self.lambda_seg == 0:
            raise ValueError("ImageGANLossWeights: lambda_labelmix regularises the segmentation discriminator, "
                             "which only exists with lambda_seg > 0.")
