"""Chebyshev graph filters on torch tensors: the torch side of
:func:`graphsphere.spectral.apply_filter`, through the kernel of ``ChebConv``.

>>> import numpy as np, torch, graphsphere as gs
>>> from graphsphere import spectral
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8)
>>> x = np.random.default_rng(0).standard_normal((2, g.npix, 3))
>>> theta = [0.5, 0.3, 0.2]
>>> y = chebyshev_filter(torch.from_numpy(x), g, theta)
>>> bool(np.allclose(y.numpy(), spectral.apply_filter(g, x, theta)))
True
"""

from __future__ import annotations

import numpy as np
import torch

from ...graph import SphereGraph
from .chebyshev import SparseOperator, as_operator, cheb_conv

__all__ = ["chebyshev_filter"]


def chebyshev_filter(x: torch.Tensor, graph, coefficients, a: float = 1.0) -> torch.Tensor:
    """y = sum_k theta_k T_k(L~) x for x [batch, vertices, channels], in x's dtype and device.

    ``graph``: a SphereGraph (L~ = ``graph.operator(a)``, its torch copy kept
    in the graph's cache per dtype and device), or an already rescaled
    operator (SciPy sparse or :class:`SparseOperator`). ``coefficients`` (K,)
    filter every channel alike; (K, C) give each channel its own filter.
    """
    theta = np.asarray(coefficients, dtype=np.float64)
    if theta.ndim not in (1, 2) or theta.shape[0] < 1:
        raise ValueError(f"coefficients must be (K,) or (K, channels), got shape {theta.shape}")
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a [batch, vertices, channels] tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    B, V, C = x.shape
    if isinstance(graph, SphereGraph):
        g = graph
        key = ("torch operator", float(a), x.dtype, str(x.device))
        op = g.derived(key, lambda: as_operator(g.operator(a), dtype=x.dtype, device=x.device))
    elif isinstance(graph, SparseOperator):
        op = graph.to(x.device, x.dtype)
    else:
        op = as_operator(graph, dtype=x.dtype, device=x.device)
    if op.n != V:
        raise ValueError(f"x has {V} vertices, the graph {op.n}")
    K = theta.shape[0]
    w = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    if theta.ndim == 1:
        # One shared filter: channels become batch entries of a 1 -> 1 convolution.
        xs = x.permute(0, 2, 1).reshape(B * C, V, 1)
        return cheb_conv(xs, op, w.reshape(K, 1, 1)).reshape(B, C, V).permute(0, 2, 1)
    if theta.shape[1] != C:
        raise ValueError(f"coefficients have {theta.shape[1]} channels, x has {C}")
    # Depthwise: a diagonal channel mixing per Chebyshev order.
    return cheb_conv(x, op, torch.diag_embed(w))
