"""The kernels behind the layers: Chebyshev convolution and pooling.

Tensors are ``[batch, vertices, channels]`` at this boundary.
"""

from . import pooling
from .chebyshev import SparseOperator, as_operator, cheb_conv, laplacian_matmul
from .filtering import chebyshev_filter
from .pooling import global_pool, max_unpool, pooling_plan

__all__ = ["pooling", "SparseOperator", "as_operator", "cheb_conv", "laplacian_matmul", "chebyshev_filter",
           "pooling_plan", "global_pool", "max_unpool"]
