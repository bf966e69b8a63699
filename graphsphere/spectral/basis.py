"""The graph Fourier basis on the sphere and how it matches the spherical harmonics.

Why DeepSphere works: the Laplacian of a well-built sphere graph has
eigenvalues in plateaus of 2l + 1 (one per spherical-harmonic degree l), with
plateau values close to c l(l+1), and the eigenvectors of plateau l are close
to the spherical harmonics of degree l. This module measures that
(``fourier_basis``, ``harmonic_degree_groups``, ``alignment_matrix``,
``graph_spectrum_vs_ll1``, ``fit_ll1_scale``).

>>> import graphsphere as gs
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=8), k=8)
>>> lam, U = fourier_basis(g, n=16)
>>> groups = harmonic_degree_groups(lam, lmax=3)     # plateaus of 1, 3, 5, 7 eigenvalues
>>> bool(groups.contrast() > 1)                      # gaps between plateaus exceed their spread
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..graph import SphereGraph
from ..sampling import HEALPix

__all__ = ["DegreeGroups", "SpectrumFit", "alignment_matrix", "degree_slices", "fit_ll1_scale", "fourier_basis",
           "graph_spectrum_vs_ll1", "harmonic_degree_groups", "harmonic_rayleigh_quotients", "DENSE_LIMIT"]

#: Largest graph ``fourier_basis`` diagonalises densely when asked for all
#: eigenvectors: 16384^2 float64 is 2 GB, and eigh is O(n^3).
DENSE_LIMIT = 16384


# -- the graph Fourier basis ---------------------------------------------------

def _laplacian(graph) -> sp.csr_matrix | np.ndarray:
    """The Laplacian of a SphereGraph, or a symmetric matrix passed as is."""
    if isinstance(graph, SphereGraph):
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
    return isinstance(sampling, HEALPix) and sampling.full_sphere


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
    if isinstance(graph, SphereGraph):
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
