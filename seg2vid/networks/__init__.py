"""The seg2vid networks, one module per part of the paper (Fig. 3–4)."""

from .discriminator import MultiscaleDiscriminator, PatchDiscriminator
from .flow_predictor import FlowPrediction, FlowPredictor, ImageEncoding, MotionPosterior
from .image_generator import ImageGenerator
from .vgg import VGGFeatures

__all__ = [
    "ImageGenerator",
    "MultiscaleDiscriminator",
    "PatchDiscriminator",
    "FlowPredictor",
    "FlowPrediction",
    "ImageEncoding",
    "MotionPosterior",
    "VGGFeatures",
]
