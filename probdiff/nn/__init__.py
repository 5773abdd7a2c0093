"""Score networks ``net(x, t)`` with time embeddings: a residual MLP, a small U-Net, a denoiser head for
dequantised data, and a bidirectional transformer for token sequences."""

from .embedding import FourierFeatures, FourierLogSNR, FourierTime
from .lattice import LatticeDenoiser
from .mlp import MLP
from .transformer import Transformer
from .unet import UNet

__all__ = ["FourierFeatures", "FourierTime", "FourierLogSNR", "MLP", "UNet", "LatticeDenoiser", "Transformer"]
