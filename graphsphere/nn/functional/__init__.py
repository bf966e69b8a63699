"""The kernels behind the layers: Chebyshev convolution and pooling.

Tensors are ``[batch, vertices, channels]`` at this boundary.
"""
