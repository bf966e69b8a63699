"""Graph spectral analysis and graph filters on the sphere (NumPy/SciPy/healpy).

Why DeepSphere works: the Laplacian of a well-built sphere graph has
eigenvalues in plateaus of 2l + 1 (one per spherical-harmonic degree l), with
plateau values close to c l(l+1), and the eigenvectors of plateau l are close
to the spherical harmonics of degree l. A polynomial of the Laplacian is then
close to an isotropic spherical convolution, at O(K |E|) = O(npix) cost.

This module measures that (``fourier_basis``, ``harmonic_degree_groups``,
``alignment_matrix``, ``graph_spectrum_vs_ll1``, ``fit_ll1_scale``) and designs
filters (``chebyshev_coefficients`` of any response g(lambda), ``heat_kernel``,
``gaussian_beam``), applied with ``apply_filter`` (NumPy, or torch through the
same kernel as ``ChebConv``) or exactly with ``spectral_filter`` (small graphs).

Example: smooth a map like ``healpy.smoothing`` with a 5-term graph filter

>>> import numpy as np, graphsphere as gs
>>> from graphsphere import spectral
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=16), k=8)
>>> c = spectral.fit_ll1_scale(g)                 # lambda_l ~ c l(l+1)
>>> response = spectral.gaussian_beam(np.radians(10), scale=c)
>>> coeffs = spectral.filter_coefficients(g, response, K=5)
>>> x = np.random.default_rng(0).standard_normal(g.npix)
>>> y = spectral.apply_filter(g, x, coeffs)
>>> bool(y.std() < x.std())
True
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = [
    "DegreeGroups",
    "SpectrumFit",
    "alignment_matrix",
    "apply_filter",
    "chebyshev_coefficients",
    "chebyshev_order",
    "chebyshev_response",
    "degree_slices",
    "filter_coefficients",
    "fit_ll1_scale",
    "fourier_basis",
    "gaussian_beam",
    "graph_spectrum_vs_ll1",
    "harmonic_degree_groups",
    "harmonic_rayleigh_quotients",
    "heat_kernel",
    "smooth",
    "spectral_filter",
    "transfer_function",
]

#: Largest graph ``fourier_basis`` diagonalises densely when asked for all
#: eigenvectors: 16384^2 float64 is 2 GB, and eigh is O(n^3).
DENSE_LIMIT = 16384


# -- the graph Fourier basis ---------------------------------------------------

def _laplacian(graph) -> sp.csr_matrix | np.ndarray:
    """The Laplacian of a SphereGraph, or a symmetric matrix passed as is."""
    if hasattr(graph, "L") and hasattr(graph, "sampling"):
        return graph.L
    if sp.issparse(graph) or isinstance(graph, np.ndarray):
        if graph.ndim != 2 or graph.shape[0] != graph.shape[1]:
            raise ValueError(f"a Laplacian must be a square matrix, got shape {graph.shape}")
        return graph
    raise TypeError(f"expected a SphereGraph or a symmetric matrix, got {type(graph).__name__}")


def fourier_basis(graph, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and orthonormal eigenvectors of the Laplacian.

    ``graph`` is a :class:`~graphsphere.SphereGraph` or a symmetric matrix.
    With ``n=None`` all ``npix`` eigenpairs (dense ``eigh``; graphs up to
    ``DENSE_LIMIT`` vertices). With ``n``, the ``n`` lowest, from a
    shift-invert Lanczos (``eigsh``) around a point just below 0, where the
    Laplacian (positive semi-definite) is safely invertible; dense ``eigh`` is
    used anyway when ``n`` is a large share of the graph.

    Returns ``(eigenvalues (n,), eigenvectors (npix, n))``, one vector per column.

    >>> import graphsphere as gs
    >>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8)
    >>> lam, U = fourier_basis(g, n=9)
    >>> lam.shape, U.shape, bool(abs(lam[0]) < 1e-10)
    ((9,), (192, 9), True)
    """
    L = _laplacian(graph)
    N = L.shape[0]
    if n is None:
        n = N
    n = int(n)
    if not 1 <= n <= N:
        raise ValueError(f"n must be between 1 and the number of vertices {N}, got {n}")
    # Lanczos needs n < N - 1 and stops paying off when n is a large share of N.
    if n > N // 4 or N <= 512:
        if N > DENSE_LIMIT:
            raise ValueError(f"{N} vertices is too many for a dense eigendecomposition (limit {DENSE_LIMIT}); "
                             f"ask for the n lowest eigenpairs, e.g. fourier_basis(graph, n=100)")
        dense = L.toarray() if sp.issparse(L) else np.asarray(L)
        lam, U = np.linalg.eigh(dense)
        return lam[:n], U[:, :n]
    # Spectrum scale for the shift: below 0 by a hair of the spectral radius.
    scale = float(abs(L).sum(axis=1).max()) if sp.issparse(L) else float(np.abs(L).sum(axis=1).max())
    v0 = np.random.default_rng(0).standard_normal(N)
    lam, U = spla.eigsh(sp.csc_matrix(L), k=n, sigma=-1e-3 * scale, which="LM", v0=v0)
    order = np.argsort(lam)
    return lam[order], U[:, order]


def degree_slices(lmax: int) -> list[slice]:
    """Where degree l sits in an eigenvalue-sorted list: ``slice(l^2, (l+1)^2)``.

    >>> degree_slices(2)
    [slice(0, 1, None), slice(1, 4, None), slice(4, 9, None)]
    """
    return [slice(l * l, (l + 1) ** 2) for l in range(int(lmax) + 1)]


@dataclass
class DegreeGroups:
    """Eigenvalues grouped in plateaus of 2l + 1 (see ``harmonic_degree_groups``).

    ``spread[l]``: (max - min) / mean inside group l (NaN for l = 0).
    ``gap[l]``: (first of group l+1 - last of group l) / mean of group l (NaN for
    l = 0 and for the last group). Plateaus are clean when every spread is
    much smaller than every gap.
    """

    ell: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    gap: np.ndarray

    def contrast(self, lmax: int | None = None) -> float:
        """Smallest gap over largest spread for 1 <= l < lmax (> 1: plateaus separate)."""
        lmax = len(self.ell) - 1 if lmax is None else lmax
        return float(np.nanmin(self.gap[1:lmax]) / np.nanmax(self.spread[1:lmax + 1]))


def harmonic_degree_groups(eigenvalues, lmax: int | None = None) -> DegreeGroups:
    """Group ascending eigenvalues as 1, 3, 5, ... = 2l + 1 per degree l.

    ``lmax`` defaults to the largest complete degree. Returns the group means
    and the relative spread inside and gap between groups (``DegreeGroups``).

    >>> import graphsphere as gs
    >>> lam, _ = fourier_basis(gs.SphereGraph(gs.sampling.HEALPix(nside=8), k=8))
    >>> groups = harmonic_degree_groups(lam, lmax=5)
    >>> bool(groups.contrast() > 5)
    True
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())
    full = math.isqrt(lam.size) - 1
    lmax = full if lmax is None else int(lmax)
    if not 0 <= lmax <= full:
        raise ValueError(f"{lam.size} eigenvalues hold complete degrees up to {full}, not lmax={lmax}; "
                         f"compute (lmax+1)^2 = {(lmax + 1) ** 2} eigenvalues")
    groups = [lam[s] for s in degree_slices(lmax)]
    mean = np.array([grp.mean() for grp in groups])
    spread = np.full(lmax + 1, np.nan)
    gap = np.full(lmax + 1, np.nan)
    for l in range(1, lmax + 1):
        spread[l] = (groups[l].max() - groups[l].min()) / mean[l]
        if l < lmax:
            gap[l] = (groups[l + 1].min() - groups[l].max()) / mean[l]
    return DegreeGroups(np.arange(lmax + 1), mean, spread, gap)


# -- alignment with the spherical harmonics ------------------------------------

def _is_full_healpix(sampling) -> bool:
    return type(sampling).__name__ == "HEALPix" and sampling.full_sphere


def _degree_energy_healpix(U: np.ndarray, sampling, lmax_sh: int) -> np.ndarray:
    """Energy sum_m |a_lm|^2 of each column of U per degree, (ncols, lmax_sh + 1)."""
    import healpy as hp

    ell, m = hp.Alm.getlm(lmax_sh)
    # A real map has a_{l,-m} = (-1)^m conj(a_lm): healpy stores m >= 0 only.
    w = np.where(m > 0, 2.0, 1.0)
    out = np.empty((U.shape[1], lmax_sh + 1))
    for j in range(U.shape[1]):
        u = hp.reorder(U[:, j], n2r=True) if sampling.nest else U[:, j]
        # iter=3 for an accurate analysis; no pixel weights: they would be downloaded.
        alm = hp.map2alm(u, lmax=lmax_sh, iter=3, use_pixel_weights=False)
        out[j] = np.bincount(ell, weights=w * np.abs(alm) ** 2, minlength=lmax_sh + 1)
    return out


def _degree_energy_quadrature(U: np.ndarray, sampling, lmax_sh: int) -> np.ndarray:
    """The same by area-weighted quadrature with scipy's spherical harmonics (any sampling)."""
    from scipy.special import sph_harm_y_all

    lon, lat = np.radians(sampling.lonlat).T
    area = sampling.area
    acc = np.zeros((U.shape[1], lmax_sh + 1, 2 * lmax_sh + 1), dtype=np.complex128)
    # Chunks of pixels keep the table of harmonics (l, m, chunk) near 300 MB at most.
    chunk = max(64, int(2e7 // ((lmax_sh + 1) * (2 * lmax_sh + 1))))
    for start in range(0, sampling.npix, chunk):
        s = slice(start, start + chunk)
        Y = sph_harm_y_all(lmax_sh, lmax_sh, np.pi / 2 - lat[s], lon[s])  # (l, m, chunk); zero where |m| > l
        acc += np.einsum("lmp,pj->jlm", np.conj(Y), area[s, None] * U[s])
    out = (np.abs(acc) ** 2).sum(axis=2)
    return out


def alignment_matrix(graph, lmax: int = 8, sampling=None, lmax_sh: int | None = None,
                     band: int | None = None) -> np.ndarray:
    """Energy of the graph's Fourier modes in each spherical-harmonic degree.

    Row l averages the 2l + 1 eigenvectors of group l (taken in eigenvalue
    order, indices l^2 .. (l+1)^2 - 1); column l' is the share of their energy
    in degree l' (sum over m of |a_l'm|^2). Each eigenvector's energy is
    normalised by its total over the degrees 0..``band`` the analysis resolves
    (3 nside - 1 for HEALPix), so a row sums to at most 1 and the deficit is
    energy beyond ``lmax_sh``. A graph whose eigenvectors are spherical
    harmonics gives the identity; DeepSphere's HEALPix graphs come close at
    low l (near block-diagonal).

    ``graph`` is a SphereGraph, or eigenvectors (npix, >= (lmax+1)^2) with
    ``sampling``. Full-sky HEALPix is analysed with ``healpy.map2alm`` (RING
    reordered, iter=3, no pixel weights); other full-sphere samplings by
    area-weighted quadrature (approximate where the scheme is not exact).

    Returns an array (lmax + 1, lmax_sh + 1), ``lmax_sh`` defaulting to lmax.

    >>> import numpy as np, graphsphere as gs
    >>> A = alignment_matrix(gs.SphereGraph(gs.sampling.HEALPix(nside=8), k=8), lmax=3)
    >>> A.shape, bool(np.all(np.diag(A) > 0.99))
    ((4, 4), True)
    """
    lmax = int(lmax)
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    n = (lmax + 1) ** 2
    if hasattr(graph, "sampling") and hasattr(graph, "L"):
        sampling = graph.sampling if sampling is None else sampling
        _, U = fourier_basis(graph, n=n)
    else:
        U = np.asarray(graph, dtype=np.float64)
        if sampling is None:
            raise ValueError("pass the sampling of the eigenvectors: alignment_matrix(U, sampling=...)")
        if U.ndim != 2 or U.shape[0] != sampling.npix:
            raise ValueError(f"eigenvectors must be (npix={sampling.npix}, n), got shape {U.shape}")
        if U.shape[1] < n:
            raise ValueError(f"lmax={lmax} needs (lmax+1)^2 = {n} eigenvectors, got {U.shape[1]}")
        U = U[:, :n]
    if not sampling.full_sphere:
        raise ValueError(f"{sampling.describe()} is a partial sky: spherical harmonics are not orthogonal on it, "
                         "so the alignment is undefined; use a full-sphere sampling")
    lmax_sh = lmax if lmax_sh is None else int(lmax_sh)
    healpix = _is_full_healpix(sampling)
    if band is None:
        band = 3 * sampling.nside - 1 if healpix else max(lmax_sh, int(math.sqrt(sampling.npix / 2)))
    if lmax_sh > band:
        raise ValueError(f"lmax_sh={lmax_sh} is above the band {band} the analysis resolves")
    energy = (_degree_energy_healpix if healpix else _degree_energy_quadrature)(U, sampling, band)
    energy /= energy.sum(axis=1, keepdims=True)
    return np.stack([energy[s].mean(axis=0)[:lmax_sh + 1] for s in degree_slices(lmax)])


# -- graph eigenvalues against l(l+1) --------------------------------------------

def harmonic_rayleigh_quotients(graph, ells, seed: int = 0) -> np.ndarray:
    """x^T L x / x^T x for a random map x of each single degree l.

    The Laplacian's "dispersion relation" lambda(l), measured without an
    eigendecomposition: O(npix) per degree after one ``healpy.alm2map``, so it
    works at any nside (full-sky HEALPix only). It weighs every graph mode
    by its energy in degree l; a little leakage into far higher modes biases
    it upwards at the lowest l of fine graphs (fit from l ~ 4 up there).

    >>> import graphsphere as gs
    >>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=16), k=8)
    >>> q = harmonic_rayleigh_quotients(g, [2, 4])
    >>> bool(2.5 < q[1] / q[0] < 3.5)       # ~ 20 / 6
    True
    """
    import healpy as hp

    s = graph.sampling
    if not _is_full_healpix(s):
        raise ValueError(f"harmonic Rayleigh quotients need a full-sky HEALPix graph, got {s.describe()}; "
                         "use fit_ll1_scale(graph, method='eig')")
    rng = np.random.default_rng(seed)
    out = []
    for l in np.atleast_1d(ells).astype(int):
        if not 0 <= l <= 3 * s.nside - 1:
            raise ValueError(f"degree {l} is outside 0..3 nside - 1 = {3 * s.nside - 1}")
        ell, m = hp.Alm.getlm(l)
        alm = np.where(ell == l, rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size), 0)
        alm[m == 0] = alm[m == 0].real
        x = hp.alm2map(alm, s.nside, lmax=l)
        if s.nest:
            x = hp.reorder(x, r2n=True)
        out.append(float(x @ (graph.L @ x) / (x @ x)))
    return np.array(out)


@dataclass
class SpectrumFit:
    """Graph eigenvalues per degree against l(l+1) (see ``graph_spectrum_vs_ll1``).

    ``ell``, ``value[l]`` (mean eigenvalue of group l, or Rayleigh quotient),
    the least-squares ``scale`` c of value ~ c l(l+1) over 1 <= l <= lmax,
    ``ratio`` = value / (c l(l+1)), and the sorted ``eigenvalues`` when an
    eigendecomposition was made (else None).
    """

    ell: np.ndarray
    value: np.ndarray
    scale: float
    method: str
    eigenvalues: np.ndarray | None = None

    @property
    def ll1(self) -> np.ndarray:
        return self.ell * (self.ell + 1.0)

    @property
    def ratio(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.value / (self.scale * self.ll1)


def _default_fit_lmax(graph) -> int:
    # The plateaus follow c l(l+1) closely only for l well below nside (the
    # pixel scale): at l = nside/4 the ratio has dropped by ~1% (k = 8).
    nside_like = math.sqrt(graph.npix / 12)
    return int(max(2, min(8, nside_like // 4)))


def graph_spectrum_vs_ll1(graph, lmax: int | None = None, method: str = "auto") -> SpectrumFit:
    """The graph spectrum per degree l and its fit c l(l+1).

    ``method``: "eig" (mean eigenvalue of each plateau of 2l + 1, from the
    (lmax+1)^2 lowest eigenpairs), "rayleigh" (``harmonic_rayleigh_quotients``,
    any nside, full-sky HEALPix), or "auto" (rayleigh for full-sky HEALPix
    above 3072 vertices, where shift-invert Lanczos gets slow; else eig).
    ``lmax`` defaults to min(8, nside/4) (at least 2).

    >>> import graphsphere as gs
    >>> fit = graph_spectrum_vs_ll1(gs.SphereGraph(gs.sampling.HEALPix(nside=16), k=8))
    >>> bool(abs(fit.ratio[1:] - 1).max() < 0.02)
    True
    """
    if not graph.sampling.full_sphere:
        raise ValueError(f"{graph.sampling.describe()} is a partial sky: its spectrum has no l(l+1) plateaus; "
                         "fit c on the full-sky graph built the same way")
    lmax = _default_fit_lmax(graph) if lmax is None else int(lmax)
    if lmax < 1:
        raise ValueError(f"lmax must be >= 1 to fit c l(l+1), got {lmax}")
    if method == "auto":
        method = "eig" if graph.npix <= 3072 or not _is_full_healpix(graph.sampling) else "rayleigh"
    ell = np.arange(lmax + 1)
    eigenvalues = None
    if method == "eig":
        eigenvalues, _ = fourier_basis(graph, n=(lmax + 1) ** 2)
        value = harmonic_degree_groups(eigenvalues, lmax).mean
    elif method == "rayleigh":
        value = np.concatenate([[0.0], harmonic_rayleigh_quotients(graph, ell[1:])])
    else:
        raise ValueError(f"method must be 'auto', 'eig' or 'rayleigh', got {method!r}")
    ll1 = ell * (ell + 1.0)
    scale = float(ll1 @ value / (ll1 @ ll1))
    return SpectrumFit(ell, value, scale, method, eigenvalues)


def fit_ll1_scale(graph, lmax: int | None = None, method: str = "auto") -> float:
    """c in lambda_l ~ c l(l+1): the graph's eigenvalue per unit of the sphere's.

    A heat kernel exp(-t lambda) on the graph then acts like the Gaussian beam
    exp(-l(l+1) sigma^2 / 2) with t = sigma^2 / (2 c). See ``graph_spectrum_vs_ll1``.

    >>> import graphsphere as gs
    >>> c = fit_ll1_scale(gs.SphereGraph(gs.sampling.HEALPix(nside=16), k=8))
    >>> bool(0.28 < c * 16**2 < 0.36)       # c nside^2 = 0.32 for k = 8 with the published widths
    True
    """
    return graph_spectrum_vs_ll1(graph, lmax, method).scale


# -- filters: responses and their Chebyshev expansions ---------------------------

def _interval(lmax) -> tuple[float, float]:
    if np.ndim(lmax) == 0:
        lo, hi = 0.0, float(lmax)
    else:
        if len(lmax) != 2:
            raise ValueError(f"the interval must be lmax or (low, high), got {lmax!r}")
        lo, hi = map(float, lmax)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"the spectral interval must have high > low, got [{lo}, {hi}]")
    return lo, hi


def chebyshev_coefficients(response: Callable[[np.ndarray], np.ndarray], K: int, lmax,
                           n_points: int | None = None) -> np.ndarray:
    """Coefficients theta_0..theta_{K-1} of g(lambda) ~ sum_k theta_k T_k(x(lambda)).

    x = 2 (lambda - low) / (high - low) - 1 maps the interval ``lmax`` (a float
    for [0, lmax], or (low, high)) onto [-1, 1]. The projection onto each T_k
    is computed by Chebyshev-Gauss quadrature with ``n_points`` nodes (default
    max(256, 2K)): exact for a polynomial response of degree < K, and the
    truncated Chebyshev series of a smooth one. ``response`` maps an array of
    eigenvalues to an array of the same shape, or to (n, C) for C channels
    (then the coefficients are (K, C)).

    For a graph, the interval is [0, graph.lmax / a], as in ``graph.operator(a)``:
    see ``filter_coefficients``.

    >>> theta = chebyshev_coefficients(lambda lam: 3 * lam**2, K=3, lmax=2.0)
    >>> theta.round(12)                     # 3 (x+1)^2 = 4.5 T0 + 6 T1 + 1.5 T2
    array([4.5, 6. , 1.5])
    """
    K = int(K)
    if K < 1:
        raise ValueError(f"K (the number of Chebyshev coefficients) must be >= 1, got {K}")
    lo, hi = _interval(lmax)
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


def chebyshev_response(coefficients, lam, lmax) -> np.ndarray:
    """The response sum_k theta_k T_k(x(lambda)) a set of coefficients realises
    on the interval ``lmax`` (the inverse of ``chebyshev_coefficients``).

    >>> chebyshev_response([4.5, 6.0, 1.5], [0.0, 1.0, 2.0], lmax=2.0)
    array([ 0.,  3., 12.])
    """
    lo, hi = _interval(lmax)
    x = 2 * (np.asarray(lam, dtype=np.float64) - lo) / (hi - lo) - 1
    return np.polynomial.chebyshev.chebval(x, np.asarray(coefficients, dtype=np.float64))


def filter_coefficients(graph, response, K: int, a: float = 1.0, n_points: int | None = None) -> np.ndarray:
    """``chebyshev_coefficients`` on the interval of ``graph.operator(a)``: [0, lmax / a]."""
    return chebyshev_coefficients(response, K, graph.lmax / a, n_points)


def chebyshev_order(response, lmax, tol: float = 1e-3, K_max: int = 200) -> int:
    """The smallest K whose expansion of ``response`` on the interval ``lmax``
    is within ``tol`` (relative to max |g|) of the response, uniformly.

    Bound: |T_k| <= 1 on the interval, so truncating at K errs by at most the
    sum of the dropped |theta_k| (from a ``K_max``-term expansion).

    >>> chebyshev_order(heat_kernel(1.0), 2.0), chebyshev_order(heat_kernel(20.0), 2.0)
    (5, 16)
    """
    theta = chebyshev_coefficients(response, K_max, lmax)
    lo, hi = _interval(lmax)
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

# graph -> {key: rescaled operator}: operator(a) is rebuilt on every call and
# costs several sparse passes; filters reuse it. Weak keys: no graph is kept alive.
_OPERATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _operator(graph, a: float, torch_dtype=None, device=None):
    cache = _OPERATORS.setdefault(graph, {})
    key = (float(a), str(torch_dtype), str(device))
    if key not in cache:
        if torch_dtype is None:
            cache[key] = graph.operator(a)
        else:
            from .nn.functional.chebyshev import as_operator

            cache[key] = as_operator(_operator(graph, a), dtype=torch_dtype, device=device, check=False)
    return cache[key]


def apply_filter(graph, x, coefficients, a: float = 1.0):
    """y = sum_k theta_k T_k(L~) x with L~ = ``graph.operator(a)``: a Chebyshev filter.

    NumPy ``x`` of shape (V,), (V, C) or (B, V, C) goes through a SciPy sparse
    three-term recursion (float64). A torch tensor ``x`` [B, V, C] goes through
    ``graphsphere.nn.functional.cheb_conv``, the kernel of ``ChebConv``, in x's
    dtype and device. ``coefficients`` (K,) filter every channel alike; (K, C)
    give each channel its own filter (depthwise). ``graph`` is a SphereGraph
    or an already rescaled operator (scipy sparse, spectrum in [-1, 1]).

    >>> import numpy as np, graphsphere as gs
    >>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8)
    >>> x = np.random.default_rng(0).standard_normal(g.npix)
    >>> bool(np.allclose(apply_filter(g, x, [0.0, 1.0]), g.operator() @ x))   # theta_1 T_1 = L~
    True
    """
    theta = np.asarray(coefficients, dtype=np.float64)
    if theta.ndim not in (1, 2) or theta.shape[0] < 1:
        raise ValueError(f"coefficients must be (K,) or (K, channels), got shape {theta.shape}")
    try:
        import torch
    except ImportError:  # torch is a core dependency; tolerate its absence for NumPy use
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        return _apply_filter_torch(graph, x, theta, a)
    op = _operator(graph, a) if hasattr(graph, "operator") else sp.csr_matrix(graph)
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


def _apply_filter_torch(graph, x, theta: np.ndarray, a: float):
    import torch

    from .nn.functional.chebyshev import as_operator, cheb_conv

    if x.dim() != 3:
        raise ValueError(f"a torch signal must be [batch, vertices, channels], got shape {tuple(x.shape)}")
    B, V, C = x.shape
    op = _operator(graph, a, x.dtype, x.device) if hasattr(graph, "operator") else \
        as_operator(graph, dtype=x.dtype, device=x.device)
    if op.n != V:
        raise ValueError(f"x has {V} vertices, the graph {op.n}")
    K = theta.shape[0]
    w = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    if theta.ndim == 1:
        # One shared filter: channels become batch entries of a 1 -> 1 convolution.
        xs = x.permute(0, 2, 1).reshape(B * C, V, 1)
        y = cheb_conv(xs, op, w.reshape(K, 1, 1))
        return y.reshape(B, C, V).permute(0, 2, 1)
    if theta.shape[1] != C:
        raise ValueError(f"coefficients have {theta.shape[1]} channels, x has {C}")
    # Depthwise: a diagonal channel mixing per Chebyshev order.
    return cheb_conv(x, op, torch.diag_embed(w))


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
    ``x`` as in ``apply_filter`` (NumPy or torch), in the graph's pixel order
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
    interval = graph.lmax / a
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
