"""Score networks ``net(x, t)`` with time embeddings: a residual MLP, a small U-Net, and a denoiser head for
dequantised data."""

from .embedding import FourierFeatures, FourierLogSNR, FourierTime
from .lattice import LatticeDenoiser
from .mlp import MLP
from .unet import UNet

__all__ = ["FourierFeatures", "FourierTime", "FourierLogSNR", "MLP", "UNet", "LatticeDenoiser"]
