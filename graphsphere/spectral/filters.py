"""Graph filters: responses g(lambda), their Chebyshev expansions, and applying them.

``chebyshev_coefficients`` of any response, ``heat_kernel`` and
``gaussian_beam``; ``apply_filter`` (SciPy; on torch tensors
``graphsphere.nn.functional.chebyshev_filter`` runs the kernel of
``ChebConv``), ``spectral_filter`` (exact, small graphs) and ``smooth`` (the
O(npix) analogue of ``healpy.smoothing``).

>>> theta = chebyshev_coefficients(lambda lam: 3 * lam**2, K=3, interval=2.0)
>>> theta.round(12)                     # 3 (x+1)^2 = 4.5 T0 + 6 T1 + 1.5 T2
array([4.5, 6. , 1.5])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from ..graph import SphereGraph
from .basis import fit_ll1_scale, fourier_basis

__all__ = ["apply_filter", "chebyshev_coefficients", "chebyshev_order", "chebyshev_response", "filter_coefficients",
           "gaussian_beam", "heat_kernel", "smooth", "spectral_filter", "transfer_function"]


def _interval(interval) -> tuple[float, float]:
    if np.ndim(interval) == 0:
        lo, hi = 0.0, float(interval)
    else:
        if len(interval) != 2:
            raise ValueError(f"the interval must be a largest eigenvalue or (low, high), got {interval!r}")
        lo, hi = map(float, interval)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"the spectral interval must have high > low, got [{lo}, {hi}]")
    return lo, hi


def chebyshev_coefficients(response: Callable[[np.ndarray], np.ndarray], K: int, interval,
                           n_points: int | None = None) -> np.ndarray:
    """Coefficients theta_0..theta_{K-1} of g(lambda) ~ sum_k theta_k T_k(x(lambda)).

    x = 2 (lambda - low) / (high - low) - 1 maps the ``interval`` (a float
    lambda_max for [0, lambda_max], or (low, high)) onto [-1, 1]. The projection onto each T_k
    is computed by Chebyshev-Gauss quadrature with ``n_points`` nodes (default
    max(256, 2K)): exact for a polynomial response of degree < K, and the
    truncated Chebyshev series of a smooth one. ``response`` maps an array of
    eigenvalues to an array of the same shape, or to (n, C) for C channels
    (then the coefficients are (K, C)).

    For a graph, the interval is [0, graph.lambda_max / a], as in ``graph.operator(a)``:
    see ``filter_coefficients``.

    >>> theta = chebyshev_coefficients(lambda lam: 3 * lam**2, K=3, interval=2.0)
    >>> theta.round(12)                     # 3 (x+1)^2 = 4.5 T0 + 6 T1 + 1.5 T2
    array([4.5, 6. , 1.5])
    """
    K = int(K)
    if K < 1:
        raise ValueError(f"K (the number of Chebyshev coefficients) must be >= 1, got {K}")
    lo, hi = _interval(interval)
    n = max(256, 2 * K) if n_points is None else int(n_points)
    if n < K:
        raise ValueError(f"n_points={n} must be at least K={K}")
    theta_nodes = np.pi * (np.arange(n) + 0.5) / n
    lam = lo + (np.cos(theta_nodes) + 1) * (hi - lo) / 2
    g = np.asarray(response(lam), dtype=np.float64)
    if g.shape[0] != n or g.ndim > 2:
        raise ValueError(f"response must map {n} eigenvalues to ({n},) or ({n}, channels), got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError(f"response is not finite on [{lo:.4g}, {hi:.4g}]")
    coef = (2.0 / n) * np.cos(np.outer(np.arange(K), theta_nodes)) @ g
    coef[0] /= 2
    return coef


def chebyshev_response(coefficients, lam, interval) -> np.ndarray:
    """The response sum_k theta_k T_k(x(lambda)) a set of coefficients realises
    on the ``interval`` (the inverse of ``chebyshev_coefficients``).

    >>> chebyshev_response([4.5, 6.0, 1.5], [0.0, 1.0, 2.0], interval=2.0)
    array([ 0.,  3., 12.])
    """
    lo, hi = _interval(interval)
    x = 2 * (np.asarray(lam, dtype=np.float64) - lo) / (hi - lo) - 1
    return np.polynomial.chebyshev.chebval(x, np.asarray(coefficients, dtype=np.float64))


def filter_coefficients(graph, response, K: int, a: float = 1.0, n_points: int | None = None) -> np.ndarray:
    """``chebyshev_coefficients`` on the interval of ``graph.operator(a)``: [0, lambda_max / a]."""
    return chebyshev_coefficients(response, K, graph.lambda_max / a, n_points)


def chebyshev_order(response, interval, tol: float = 1e-3, K_max: int = 200) -> int:
    """The smallest K whose expansion of ``response`` on the ``interval``
    is within ``tol`` (relative to max |g|) of the response, uniformly.

    Bound: |T_k| <= 1 on the interval, so truncating at K errs by at most the
    sum of the dropped |theta_k| (from a ``K_max``-term expansion).

    >>> chebyshev_order(heat_kernel(1.0), 2.0), chebyshev_order(heat_kernel(20.0), 2.0)
    (5, 16)
    """
    theta = chebyshev_coefficients(response, K_max, interval)
    lo, hi = _interval(interval)
    gmax = float(np.max(np.abs(response(np.linspace(lo, hi, 257)))))
    tail = np.cumsum(np.abs(theta)[::-1])[::-1]  # tail[k] = sum_{j >= k} |theta_j|
    ok = np.nonzero(np.append(tail, 0.0) <= tol * gmax)[0]
    K = int(ok[0])
    if K >= K_max:
        raise ValueError(f"the response needs more than K_max={K_max} Chebyshev terms for tol={tol}: "
                         "it is too sharp on this interval; raise K_max or tol")
    return max(K, 1)


def heat_kernel(t: float) -> Callable[[np.ndarray], np.ndarray]:
    """The heat kernel response g(lambda) = exp(-t lambda), t >= 0.

    >>> heat_kernel(2.0)(np.array([0.0, 1.0])).round(4)
    array([1.    , 0.1353])
    """
    t = float(t)
    if not (np.isfinite(t) and t >= 0):
        raise ValueError(f"the heat kernel time t must be finite and >= 0, got {t}")

    def response(lam):
        return np.exp(-t * np.asarray(lam, dtype=np.float64))

    response.__doc__ = f"exp(-{t:.6g} lambda)"
    response.__name__ = f"heat_kernel(t={t:.6g})"
    return response


def gaussian_beam(fwhm: float | None = None, scale: float | None = None, sigma: float | None = None):
    """The graph response matching the Gaussian beam exp(-l(l+1) sigma^2 / 2)
    of ``healpy.gauss_beam`` / ``healpy.smoothing``: the heat kernel with
    t = sigma^2 / (2 c), since lambda_l ~ c l(l+1) (``scale`` = c, from
    ``fit_ll1_scale``). ``fwhm`` or ``sigma`` in radians, as in healpy.

    The match holds where lambda_l ~ c l(l+1), i.e. for l well below nside;
    the graph smooths less than the beam near the pixel scale.

    >>> beam = gaussian_beam(fwhm=0.1, scale=1e-3)
    >>> bool(abs(beam(np.array([1e-3 * 20 * 21])) - np.exp(-20 * 21 * (0.1 / 2.3548)**2 / 2))[0] < 1e-4)
    True
    """
    if scale is None or not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale c (lambda ~ c l(l+1)) must be positive: get it from fit_ll1_scale(graph); "
                         f"got {scale!r}")
    if (fwhm is None) == (sigma is None):
        raise ValueError("give exactly one of fwhm or sigma (radians)")
    sigma = float(fwhm) / math.sqrt(8 * math.log(2)) if sigma is None else float(sigma)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"the beam width must be finite and >= 0 (radians), got {sigma}")
    return heat_kernel(sigma**2 / (2 * float(scale)))


# -- applying a filter ------------------------------------------------------------

def apply_filter(graph, x, coefficients, a: float = 1.0):
    """y = sum_k theta_k T_k(L~) x with L~ = ``graph.operator(a)``: a Chebyshev filter.

    ``x`` of shape (V,), (V, C) or (B, V, C) goes through a SciPy sparse
    three-term recursion (float64); for torch tensors use
    ``graphsphere.nn.functional.chebyshev_filter`` (same arguments, the
    kernel of ``ChebConv``). ``coefficients`` (K,) filter every channel
    alike; (K, C) give each channel its own filter (depthwise). ``graph`` is
    a SphereGraph or an already rescaled operator (scipy sparse, spectrum in
    [-1, 1]).

    >>> import numpy as np, graphsphere as gs
    >>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8)
    >>> x = np.random.default_rng(0).standard_normal(g.npix)
    >>> bool(np.allclose(apply_filter(g, x, [0.0, 1.0]), g.operator() @ x))   # theta_1 T_1 = L~
    True
    """
    theta = np.asarray(coefficients, dtype=np.float64)
    if theta.ndim not in (1, 2) or theta.shape[0] < 1:
        raise ValueError(f"coefficients must be (K,) or (K, channels), got shape {theta.shape}")
    op = graph.operator(a) if isinstance(graph, SphereGraph) else sp.csr_matrix(graph)
    x = np.asarray(x, dtype=np.float64)
    V = op.shape[0]
    vaxis = 0 if x.ndim <= 2 else 1
    if x.ndim not in (1, 2, 3) or x.shape[vaxis] != V:
        raise ValueError(f"x must be (V,), (V, C) or (B, V, C) with V = {V} vertices, got shape {x.shape}")
    C = 1 if x.ndim == 1 else x.shape[-1]
    if theta.ndim == 2 and theta.shape[1] != C:
        raise ValueError(f"coefficients have {theta.shape[1]} channels, x has {C}")
    # Vertex-major 2-D view [V, B*C] so that each sparse product is one call.
    X = np.moveaxis(x, 1, 0) if x.ndim == 3 else x
    shape = X.shape
    X = X.reshape(V, -1)
    if theta.ndim == 2:  # per-channel coefficients, broadcast over the batch
        reps = X.shape[1] // C
        th = np.tile(theta, (1, reps))  # (K, B*C), channel fastest as in X
    else:
        th = theta[:, None]
    t_prev, y = X, th[0] * X
    if len(th) > 1:
        t_cur = op @ X
        y = y + th[1] * t_cur
        for k in range(2, len(th)):
            t_prev, t_cur = t_cur, 2 * (op @ t_cur) - t_prev
            y += th[k] * t_cur
    y = y.reshape(shape)
    return np.moveaxis(y, 0, 1) if x.ndim == 3 else y


def spectral_filter(graph, x, response, basis: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The exact filter U g(Lambda) U^T x, from the full eigendecomposition.

    The reference a Chebyshev filter approximates; O(npix^3), small graphs
    only. ``basis`` = (eigenvalues, eigenvectors) reuses a decomposition.
    ``x`` is (V,) or (V, C).

    >>> import numpy as np, graphsphere as gs
    >>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=8, laplacian="combinatorial")
    >>> x = np.ones(g.npix)                  # the null space of D - W: passes any heat kernel
    >>> bool(np.allclose(spectral_filter(g, x, heat_kernel(5.0)), x))
    True
    """
    lam, U = fourier_basis(graph) if basis is None else basis
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] != U.shape[0]:
        raise ValueError(f"x has {x.shape[0]} vertices, the basis {U.shape[0]}")
    g = np.asarray(response(lam), dtype=np.float64)
    coeffs = U.T @ x
    return U @ (g.reshape(-1, *([1] * (x.ndim - 1))) * coeffs)


def smooth(graph, x, fwhm: float | None = None, sigma: float | None = None, K: int | None = None,
           scale: float | None = None, tol: float = 1e-3, a: float = 1.0):
    """Gaussian smoothing on the graph, the O(npix) analogue of ``healpy.smoothing``.

    The heat kernel matched to the beam of ``fwhm`` (or ``sigma``), radians,
    through lambda_l ~ c l(l+1) (``scale`` = c; fitted on the graph when not
    given, which needs a full-sphere graph: for a partial sky pass the c of
    the full-sky graph with the same construction). ``K`` defaults to the
    smallest order within ``tol`` of the response (``chebyshev_order``).
    ``x`` as in ``apply_filter``, in the graph's pixel order
    (NESTED for HEALPix unless the sampling says RING).

    >>> import numpy as np, graphsphere as gs
    >>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=16), k=8)
    >>> x = np.random.default_rng(0).standard_normal(g.npix)
    >>> bool(smooth(g, x, fwhm=np.radians(20)).std() < 0.2 * x.std())
    True
    """
    if scale is None:
        if not graph.sampling.full_sphere:
            raise ValueError(f"{graph.sampling.describe()} is a partial sky: its spectrum does not follow "
                             "l(l+1); pass scale=fit_ll1_scale(full_sky_graph) built the same way")
        scale = fit_ll1_scale(graph)
    response = gaussian_beam(fwhm=fwhm, sigma=sigma, scale=scale)
    interval = graph.lambda_max / a
    K = chebyshev_order(response, interval, tol) if K is None else int(K)
    return apply_filter(graph, x, chebyshev_coefficients(response, K, interval), a=a)


def transfer_function(x_in, x_out, nest: bool = True, lmax: int | None = None) -> np.ndarray:
    """C_l(out) / C_l(in) of two full-sky HEALPix maps (``healpy.anafast``,
    iter=3, no pixel weights): the effective transfer function of a filter,
    to compare with a beam squared (``healpy.gauss_beam(fwhm, lmax)**2``).

    >>> import numpy as np, healpy as hp
    >>> m = hp.synfast(np.ones(24), 8, lmax=23)
    >>> bool(np.allclose(transfer_function(m, 2 * m, nest=False), 4))
    True
    """
    import healpy as hp

    maps = []
    for m in (x_in, x_out):
        m = np.asarray(m, dtype=np.float64)
        if m.ndim != 1:
            raise ValueError(f"transfer_function takes single full-sky maps, got shape {m.shape}")
        maps.append(hp.reorder(m, n2r=True) if nest else m)
    cl_in, cl_out = (hp.anafast(m, lmax=lmax, iter=3, use_pixel_weights=False) for m in maps)
    with np.errstate(divide="ignore", invalid="ignore"):
        return cl_out / cl_in
