"""Score networks ``net(x, t)`` with time embeddings: a residual MLP and a small U-Net."""

from .embedding import FourierFeatures, FourierLogSNR, FourierTime
from .mlp import MLP
from .unet import UNet

__all__ = ["FourierFeatures", "FourierTime", "FourierLogSNR", "MLP", "UNet"]
