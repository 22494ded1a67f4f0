"""Metrics for seg2vid videos: flow error, occlusion IoU, PSNR / SSIM, best-of-K, diversity, FG/BG
disentanglement, segmentation mIoU, and Fréchet distances (image FID, video FID) — plain functions over tensors.

``training/evaluate.py`` runs them on held-out SynthCity clips (which have ground-truth motion) and on Cityscapes
(paper section 4.1, Tables 1–2: FID only, as Cityscapes has no motion ground truth).

Conventions (shared with the rest of seg2vid, see DESIGN.md):

* flows are in **pixels**, channels last: ``(..., H, W, 2)`` holding (dx, dy); the backward flow ``w^b_t`` maps
  frame t to frame 0, ``I_t(x) ≈ I_0(x + w^b_t(x))``;
* occlusion maps are 1 where a pixel has a correspondence (visible) and 0 where it has none; a predicted map is
  *occluded* where it is below 0.5;
* frames are float in **[0, 1]**, ``(N, 3, H, W)`` for PSNR / SSIM (``data_range = 1``), or uint8 ``(..., H, W, 3)``
  where a function says so.

PSNR and SSIM are torchmetrics' (``peak_signal_noise_ratio``, ``structural_similarity_index_measure``); FID is
torchmetrics' ``FrechetInceptionDistance`` with a feature network given as a module (weights from local files
only — nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .labels import FG_IDS, IGNORE_ID, NUM_CLASSES

__all__ = [
    "PSNR_CAP_DB",
    "as_float_frames",
    "endpoint_error",
    "occlusion_iou",
    "mask_iou",
    "psnr_per_frame",
    "ssim_per_frame",
    "best_of_k",
    "region_change",
    "foreground_mask",
    "confusion_matrix",
    "miou_from_confusion",
    "VIDEO_NETWORKS",
    "VideoFeatures",
    "ImageFeatures",
    "FeatureWeightsUnavailable",
    "load_video_features",
    "load_image_features",
    "frechet_distance",
]

# PSNR of identical frames is infinite; it is capped here so that means over frames and clips stay finite.
PSNR_CAP_DB = 100.0


def _tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def as_float_frames(frames) -> torch.Tensor:
    """uint8 frames (..., H, W, 3) → float (..., 3, H, W) in [0, 1]."""
    x = _tensor(frames)
    if x.dtype != torch.uint8 or x.shape[-1] != 3:
        raise ValueError(f"Expected uint8 frames (..., H, W, 3); got {x.dtype} {tuple(x.shape)}.")
    return x.movedim(-1, -3).float() / 255.0


# ----------------------------------------------------------------------------------------------------------------
# Motion


def endpoint_error(pred, true, mask=None) -> torch.Tensor:
    """Mean end-point error ‖pred − true‖₂ in pixels over the pixels of ``mask`` (all pixels if ``None``).

    ``pred``, ``true``: flows (..., H, W, 2); ``mask``: bool (..., H, W) broadcastable to them. Returns a scalar
    float tensor; ``nan`` when the mask selects no pixel.
    """
    pred, true = _tensor(pred).float(), _tensor(true).float()
    if pred.shape != true.shape or pred.shape[-1] != 2:
        raise ValueError(f"Flows must have equal shapes (..., H, W, 2); got {tuple(pred.shape)} and {tuple(true.shape)}.")
    epe = torch.linalg.vector_norm(pred - true, dim=-1)  # (..., H, W)
    if mask is None:
        return epe.mean()
    mask = _tensor(mask).bool().expand_as(epe)
    return epe[mask].mean() if mask.any() else torch.tensor(float("nan"))


def mask_iou(pred, true) -> torch.Tensor:
    """Intersection over union of two boolean masks (any equal shapes); 1 when both are empty."""
    pred, true = _tensor(pred).bool(), _tensor(true).bool()
    if pred.shape != true.shape:
        raise ValueError(f"Masks must have equal shapes; got {tuple(pred.shape)} and {tuple(true.shape)}.")
    union = (pred | true).sum()
    if union == 0:
        return torch.tensor(1.0)
    return (pred & true).sum().float() / union.float()


def occlusion_iou(pred_occ, true_occ, threshold: float = 0.5) -> torch.Tensor:
    """IoU of the *occluded* regions: predicted ``pred_occ < threshold`` vs true ``true_occ < 0.5`` (1 = visible)."""
    return mask_iou(_tensor(pred_occ) < threshold, _tensor(true_occ) < 0.5)


# ----------------------------------------------------------------------------------------------------------------
# Frames


def _check_frames(pred: torch.Tensor, true: torch.Tensor) -> None:
    if pred.shape != true.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"Frames must be (N, 3, H, W) of equal shapes; got {tuple(pred.shape)} and {tuple(true.shape)}.")


def psnr_per_frame(pred, true) -> torch.Tensor:
    """PSNR in dB of each frame pair, frames (N, 3, H, W) in [0, 1] → (N,); identical frames → ``PSNR_CAP_DB``."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    pred, true = _tensor(pred).float(), _tensor(true).float()
    _check_frames(pred, true)
    psnr = peak_signal_noise_ratio(pred, true, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return psnr.clamp(max=PSNR_CAP_DB)


def ssim_per_frame(pred, true) -> torch.Tensor:
    """SSIM of each frame pair (Gaussian window 11, σ 1.5), frames (N, 3, H, W) in [0, 1] → (N,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    pred, true = _tensor(pred).float(), _tensor(true).float()
    _check_frames(pred, true)
    return structural_similarity_index_measure(pred, true, data_range=1.0, reduction="none").reshape(-1)


def best_of_k(values, higher_is_better: bool) -> tuple[float, float]:
    """Scores (N clips, K samples) → (mean over samples and clips, mean over clips of the best sample).

    Best-of-K is the usual protocol for stochastic video prediction: of K videos drawn for one input, the one
    closest to the ground truth counts.
    """
    v = _tensor(values).double()
    if v.dim() != 2 or v.numel() == 0:
        raise ValueError(f"best_of_k expects a non-empty (N, K) array; got shape {tuple(v.shape)}.")
    best = v.max(dim=1).values if higher_is_better else v.min(dim=1).values
    return float(v.mean()), float(best.mean())


# ----------------------------------------------------------------------------------------------------------------
# Disentanglement of foreground and background motion (paper section 3.3)


def foreground_mask(label_map) -> torch.Tensor:
    """trainIds (..., H, W) → bool mask of foreground (movable-object) classes, trainIds 11–18."""
    ids = _tensor(label_map).long()
    return (ids >= FG_IDS[0]) & (ids <= FG_IDS[-1])


def region_change(a, b, fg_mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """How much ``b`` differs from ``a`` on foreground vs background pixels, as sums and pixel counts.

    ``a``, ``b``: (..., H, W, C) (flows: C = 2, the per-pixel difference is the L2 norm; frames: C = 3, the mean
    absolute difference over channels); ``fg_mask``: bool (H, W) or broadcastable to (..., H, W). Returns
    (sum over FG, FG pixel count, sum over BG, BG pixel count); sums over clips give pooled means.
    """
    a, b = _tensor(a).float(), _tensor(b).float()
    if a.shape != b.shape:
        raise ValueError(f"region_change needs equal shapes; got {tuple(a.shape)} and {tuple(b.shape)}.")
    d = a - b
    diff = torch.linalg.vector_norm(d, dim=-1) if d.shape[-1] == 2 else d.abs().mean(dim=-1)  # (..., H, W)
    fg = _tensor(fg_mask).bool().expand_as(diff)
    return diff[fg].sum(), fg.sum(), diff[~fg].sum(), (~fg).sum()


# ----------------------------------------------------------------------------------------------------------------
# Segmentation


def confusion_matrix(pred, true, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_ID) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = true class, columns = predicted; ignore pixels dropped."""
    pred, true = _tensor(pred).long().reshape(-1), _tensor(true).long().reshape(-1)
    if pred.shape != true.shape:
        raise ValueError("Predicted and true label maps must have the same number of pixels.")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"Predicted labels must lie in 0–{num_classes - 1}.")
    keep = (true != ignore_index) & (true >= 0) & (true < num_classes)
    idx = true[keep] * num_classes + pred[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou_from_confusion(cm) -> tuple[float, torch.Tensor]:
    """Mean IoU over the classes that occur (in truth or prediction) and the per-class IoU (nan = absent)."""
    cm = _tensor(cm).double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    present = ~torch.isnan(iou)
    return (float(iou[present].mean()) if present.any() else float("nan")), iou


# ----------------------------------------------------------------------------------------------------------------
# Fréchet distances with local weights only


class FeatureWeightsUnavailable(RuntimeError):
    """A pretrained feature network's weights are not on this machine."""


# torchvision video classifiers pretrained on Kinetics-400 (torchvision has no I3D). r3d_18 is the default: like
# I3D it is a 3-D ResNet-style network over RGB clips; its 512-d pooled features are the "video Inception"
# features of the video FID (paper section 4.1). Values: (builder, weights enum, feature size, input H).
VIDEO_NETWORKS = {
    "r3d_18": ("r3d_18", "R3D_18_Weights", 512, 112),
    "mc3_18": ("mc3_18", "MC3_18_Weights", 512, 112),
    "r2plus1d_18": ("r2plus1d_18", "R2Plus1D_18_Weights", 512, 112),
    "s3d": ("s3d", "S3D_Weights", 1024, 224),
}
_KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
_KINETICS_STD = (0.22803, 0.22145, 0.216989)


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _local_weights(weights_enum, path) -> Path:
    """The weights file to use: ``path`` if given, else torchvision's file in the torch hub cache if present."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FeatureWeightsUnavailable(f"No weights file at {str(path)!r}.")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name
    if not cached.is_file():
        raise FeatureWeightsUnavailable(
            f"The pretrained weights {Path(weights_enum.url).name} are not in the torch cache ({cached.parent}); "
            f"download them on a machine with internet ({weights_enum.url}) and pass the file, or copy it there."
        )
    return cached


def _load_pretrained(build, path: Path) -> nn.Module:
    """Build a network without initialising it (on the meta device) and load ``path`` into it, strictly."""
    with torch.device("meta"):
        net = build()
    try:
        net.load_state_dict(_read_state_dict(path), strict=True, assign=True)
    except RuntimeError as e:
        raise FeatureWeightsUnavailable(f"{str(path)!r} does not hold the weights of this network: {e}") from None
    return net


class VideoFeatures(nn.Module):
    """Kinetics-400 video network without its classifier: videos (N, T, 3, H, W) in [0, 1] → (N, D) features.

    Frames are resized to the network's input height (aspect ratio kept), normalised with the Kinetics mean and
    std, and fed as (N, 3, T, H, W). ``num_features`` tells torchmetrics the feature size.
    """

    def __init__(self, name: str = "r3d_18", weights_path=None, pretrained: bool = True):
        super().__init__()
        import torchvision.models.video as tvv

        if name not in VIDEO_NETWORKS:
            raise ValueError(f"Unknown video network {name!r}; choose one of {', '.join(VIDEO_NETWORKS)}.")
        builder, weights_name, self.num_features, self.input_height = VIDEO_NETWORKS[name]
        self.name = name
        if pretrained:
            path = _local_weights(getattr(tvv, weights_name).KINETICS400_V1, weights_path)
            self.net = _load_pretrained(lambda: getattr(tvv, builder)(weights=None), path)
        else:
            self.net = getattr(tvv, builder)(weights=None)
        # Drop the classifier: r3d/mc3/r2plus1d end in .fc, s3d in .classifier (a dropout + 1×1×1 conv).
        if hasattr(self.net, "fc"):
            self.net.fc = nn.Identity()
        else:
            self.net.classifier = nn.Identity()
        self.register_buffer("mean", torch.tensor(_KINETICS_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_KINETICS_STD).view(1, 3, 1, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.dim() != 5 or videos.shape[2] != 3:
            raise ValueError(f"VideoFeatures expects (N, T, 3, H, W) in [0, 1]; got {tuple(videos.shape)}.")
        n, t, c, h, w = videos.shape
        x = videos.float().reshape(n * t, c, h, w)
        size = (self.input_height, max(1, round(w * self.input_height / h)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.reshape(n, t, c, *size).transpose(1, 2)  # (N, 3, T, H', W')
        feats = self.net((x - self.mean) / self.std)
        return feats.reshape(n, -1)  # (N, D)


class ImageFeatures(nn.Module):
    """torchvision Inception-v3 (ImageNet) pool features: images (N, 3, H, W) in [0, 1] → (N, 2048).

    Images are resized to 299×299 and normalised with the ImageNet mean and std. This is torchvision's
    Inception, not the TF-FID one, so its FIDs are comparable with each other, not with published numbers.
    """

    num_features = 2048

    def __init__(self, weights_path=None, pretrained: bool = True):
        super().__init__()
        from torchvision.models import Inception_V3_Weights, inception_v3

        def build():
            return inception_v3(weights=None, aux_logits=True, init_weights=False)

        if pretrained:
            self.net = _load_pretrained(build, _local_weights(Inception_V3_Weights.IMAGENET1K_V1, weights_path))
        else:
            self.net = build()
        self.net.fc = nn.Identity()
        self.net.aux_logits, self.net.AuxLogits = False, None
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ImageFeatures expects (N, 3, H, W) in [0, 1]; got {tuple(images.shape)}.")
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std)  # (N, 2048)


def load_video_features(name: str = "r3d_18", weights_path=None) -> VideoFeatures:
    """The pretrained video feature network; raises ``FeatureWeightsUnavailable`` when its weights are absent."""
    return VideoFeatures(name, weights_path)


def load_image_features(weights_path=None) -> ImageFeatures:
    """The pretrained Inception-v3; raises ``FeatureWeightsUnavailable`` when its weights are absent."""
    return ImageFeatures(weights_path)


def frechet_distance(features: nn.Module):
    """A torchmetrics ``FrechetInceptionDistance`` over ``features`` (a module with ``num_features``).

    Update it with ``metric.update(batch, real=True/False)`` where a batch is whatever ``features`` accepts
    (images (N, 3, H, W) or videos (N, T, 3, H, W), in [0, 1]); ``metric.compute()`` needs ≥ 2 of each.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=features, reset_real_features=True, normalize=True)

