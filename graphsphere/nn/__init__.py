"""PyTorch layers: Chebyshev graph convolution and pooling on the sphere."""

from . import functional
