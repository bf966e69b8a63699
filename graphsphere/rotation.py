"""Rotations of signals on the sphere, through spherical harmonics.

A signal sampled on the sphere is rotated by expanding it in spherical
harmonics up to a band limit ``lmax`` (analysis), rotating the coefficients
with the Wigner D-matrices (``healpy.rotate_alm``) and evaluating the rotated
expansion at the same pixels (synthesis). Rotations are *active*: the rotated
map is ``g(x) = f(R^T x)``, so a bump at ``v`` moves to ``R @ v``.

How each sampling is analysed:

- ``HEALPix`` (full sky): ``healpy.map2alm`` with ``iters`` Jacobi iterations
  (3 by default; ``iters=0`` is the plain quadrature the DeepSphere papers'
  rotations used) and no pixel weights, so healpy never downloads anything.
  Band-limited maps with ``l <= 2 nside`` come back to ~1e-6 or better after
  three iterations; the plain quadrature leaves ~1e-2..1e-3.
- ring grids (``Equiangular``, ``GaussLegendre``): an FFT along each ring
  separates the orders m exactly; then, per m, a least-squares fit of the
  associated Legendre functions to the rings (weighted by the ring areas).
  Exact (to round-off) for signals band-limited to ``lmax``, which defaults
  to ``min(nlat - 1, (nlon - 1) // 2)``.
- anything else (``Icosahedral``, ``Points``): a least-squares fit of the
  real spherical harmonics up to ``lmax`` to the samples, weighted by the
  pixel areas. Exact for band-limited signals when the fit is well posed;
  ``lmax`` defaults to the largest with ``(lmax + 1)^2 <= npix / 2`` (twice
  as many samples as unknowns keeps the fit well conditioned). The dense
  design matrix (``npix x (lmax+1)^2``) limits this to ~10^4 points.

Signals that are not band-limited (a graph Laplacian applied to a smooth map
is not) lose or alias what lies above ``lmax``; measure that floor with
:func:`graphsphere.equivariance.rotation_floor`.

Everything takes maps of shape ``[npix]`` or ``[npix, n]`` and returns
float64 arrays of the same shape. Coefficients ``alm`` use healpy's layout
(complex, ``m >= 0``, index ``m (2 lmax + 1 - m) / 2 + l``), shape
``[nalm]`` or ``[nalm, n]``.

Example
-------
>>> import numpy as np, graphsphere as gs
>>> from graphsphere.rotation import random_rotation, rotate
>>> s = gs.sampling.HEALPix(nside=16)
>>> v = np.array([0.0, 0.6, 0.8])
>>> bump = np.exp(-np.sum((s.xyz - v) ** 2, axis=1) / 0.05)   # smooth bump at v
>>> R = random_rotation(seed=0)
>>> moved = rotate(bump, R, s)
>>> bool(np.linalg.norm(s.xyz[np.argmax(moved)] - R @ v) < 0.1)
True
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import healpy as hp
import numpy as np
import scipy.linalg
from scipy.spatial.transform import Rotation

from .sampling.base import Sampling
from .sampling.equiangular import RingGrid
from .sampling.healpix import HEALPix

__all__ = ["random_rotation", "euler_zyz", "default_lmax", "band_limit", "is_ring_grid", "nalm", "random_alm",
           "legendre", "map2alm", "alm2map", "rotate_alm", "rotate", "rotate_healpix"]


# -- rotations ---------------------------------------------------------------
def random_rotation(n: int | None = None, seed=None) -> np.ndarray:
    """Haar-uniform random rotation matrices: (3, 3), or (n, 3, 3) if ``n`` is given.

    ``seed`` is anything ``numpy.random.default_rng`` takes (an int, a Generator).

    >>> R = random_rotation(seed=1)
    >>> bool(np.allclose(R @ R.T, np.eye(3))), round(float(np.linalg.det(R)), 12)
    (True, 1.0)
    """
    rng = np.random.default_rng(seed)
    return Rotation.random(n, rng=rng).as_matrix()


def euler_zyz(R: np.ndarray) -> tuple[float, float, float]:
    """Euler angles ``(alpha, beta, gamma)`` with ``R = Rz(alpha) Ry(beta) Rz(gamma)``.

    ``healpy.rotate_alm(alm, psi=gamma, theta=beta, phi=alpha)`` applies R
    actively (checked in the tests by moving a bump).

    >>> a, b, g = euler_zyz(np.eye(3))
    >>> round(b, 12)
    0.0
    """
    R = _check_rotation(R)
    with warnings.catch_warnings():  # at beta = 0 or pi only alpha + gamma matters: any split is exact
        warnings.simplefilter("ignore", UserWarning)
        alpha, beta, gamma = Rotation.from_matrix(R).as_euler("ZYZ")
    return float(alpha), float(beta), float(gamma)


def _check_rotation(R) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"a rotation must be a (3, 3) matrix, got shape {R.shape}")
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-8) or np.linalg.det(R) < 0:
        raise ValueError("R is not a rotation matrix (R R^T = I, det R = +1); "
                         "build one with graphsphere.rotation.random_rotation or scipy's Rotation")
    return R


# -- spherical-harmonic bookkeeping -------------------------------------------
def nalm(lmax: int) -> int:
    """Number of coefficients ``a_lm``, ``0 <= m <= l <= lmax`` (healpy's layout)."""
    return (lmax + 1) * (lmax + 2) // 2


def _order_block(lmax: int, m: int) -> slice:
    """Where the coefficients of order m (l = m..lmax) sit in healpy's layout."""
    start = m * (2 * lmax + 1 - m) // 2 + m
    return slice(start, start + lmax - m + 1)


def _lm(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Degrees and orders of healpy's alm layout."""
    return hp.Alm.getlm(lmax)


def default_lmax(sampling: Sampling) -> int:
    """The band limit used to rotate maps of this sampling (see the module docstring)."""
    if isinstance(sampling, HEALPix):
        return 3 * sampling.nside - 1
    if is_ring_grid(sampling):
        return int(min(sampling.nlat - 1, (sampling.nlon - 1) // 2))
    return int(np.floor(np.sqrt(sampling.npix / 2))) - 1


def random_alm(lmax: int, degree: int | None = None, n: int | None = None, seed=None) -> np.ndarray:
    """Random coefficients of real Gaussian signals: ``a_l0 ~ N(0, 1)`` and
    ``a_lm ~ N(0, 1/2) + i N(0, 1/2)`` for m > 0 (a flat power spectrum),
    restricted to one ``degree`` if given. Shape ``[nalm]`` or ``[nalm, n]``.

    >>> a = random_alm(8, degree=3, seed=0)
    >>> l, m = hp.Alm.getlm(8)
    >>> bool(np.all(a[l != 3] == 0)), int(np.count_nonzero(a))
    (True, 4)
    """
    rng = np.random.default_rng(seed)
    shape = (nalm(lmax),) if n is None else (nalm(lmax), n)
    l, m = _lm(lmax)
    a = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    m0 = (m == 0)
    a[m0] = np.sqrt(2) * a[m0].real  # real for m = 0, same variance
    if degree is not None:
        if not 0 <= degree <= lmax:
            raise ValueError(f"degree must be in [0, lmax={lmax}], got {degree}")
        a[l != degree] = 0
    return a


# -- associated Legendre functions -------------------------------------------
def legendre(lmax: int, x: np.ndarray) -> np.ndarray:
    """Orthonormal associated Legendre functions in healpy's alm layout.

    Returns ``P`` of shape ``(len(x), nalm(lmax))`` with
    ``Y_lm(theta, phi) = P[:, idx(l, m)] * exp(i m phi)`` at ``x = cos(theta)``
    (Condon-Shortley phase included, as in ``scipy.special.sph_harm_y`` and
    healpy). Stable three-term recursion in l, vectorised over points and m.

    >>> P = legendre(2, np.array([1.0]))
    >>> round(float(P[0, 0]), 6), round(float(P[0, 1]), 6)   # Y_00, Y_10 at the north pole
    (0.282095, 0.488603)
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    s = np.sqrt(np.clip(1 - x * x, 0, None))
    n = x.size
    out = np.empty((n, nalm(lmax)))
    ms = np.arange(lmax + 1)
    prev2 = np.zeros((n, lmax + 1))
    prev1 = np.zeros((n, lmax + 1))
    prev1[:, 0] = 1 / np.sqrt(4 * np.pi)  # P_00
    out[:, 0] = prev1[:, 0]
    for l in range(1, lmax + 1):
        cur = np.zeros((n, lmax + 1))
        m = ms[: l - 1]
        if m.size:  # P_lm = a (x P_{l-1,m} - b P_{l-2,m}) for m <= l - 2
            a = np.sqrt((4.0 * l * l - 1) / (l * l - m * m))
            b = np.sqrt(((l - 1.0) ** 2 - m * m) / (4.0 * (l - 1) ** 2 - 1))
            cur[:, : l - 1] = a * (x[:, None] * prev1[:, : l - 1] - b * prev2[:, : l - 1])
        cur[:, l - 1] = np.sqrt(2.0 * l + 1) * x * prev1[:, l - 1]          # P_{l,l-1}
        cur[:, l] = -np.sqrt((2.0 * l + 1) / (2.0 * l)) * s * prev1[:, l - 1]  # P_ll
        out[:, hp.Alm.getidx(lmax, l, ms[: l + 1])] = cur[:, : l + 1]
        prev2, prev1 = prev1, cur
    return out


# -- transforms per sampling ----------------------------------------------------
def is_ring_grid(sampling: Sampling) -> bool:
    """Whether the sampling is a latitude-longitude grid (rings of equally spaced longitudes)."""
    return isinstance(sampling, RingGrid)


def _as_2d(m, npix: int, what: str = "map") -> tuple[np.ndarray, bool]:
    a = np.asarray(m, dtype=np.float64)
    if a.ndim not in (1, 2) or a.shape[0] != npix:
        raise ValueError(f"{what} must have shape [npix] or [npix, n] with npix={npix}, got {a.shape}")
    return (a[:, None], True) if a.ndim == 1 else (a, False)


def band_limit(sampling: Sampling, lmax: int | None = None) -> int:
    """``lmax`` checked against what ``sampling`` resolves (default: :func:`default_lmax`).

    Raises for partial skies (a rotation is undefined there) and band limits
    the sampling cannot determine.
    """
    if not sampling.full_sphere:
        raise ValueError(f"{sampling.describe()} is a partial sky: a rotation moves pixels outside it, "
                         "so it is undefined; rotate the full-sky map instead")
    top = default_lmax(sampling)
    if lmax is None:
        return top
    lmax = int(lmax)
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    if is_ring_grid(sampling) and lmax > top:
        raise ValueError(f"lmax={lmax} is above what {sampling.describe()} resolves "
                         f"(min(nlat - 1, (nlon - 1) // 2) = {top}); pass a smaller lmax")
    if not isinstance(sampling, HEALPix) and not is_ring_grid(sampling) and (lmax + 1) ** 2 > sampling.npix:
        raise ValueError(f"lmax={lmax} needs (lmax + 1)^2 = {(lmax + 1) ** 2} coefficients, more than the "
                         f"{sampling.npix} samples of {sampling.describe()}; pass lmax <= {top}")
    return lmax


@lru_cache(maxsize=8)
def _ring_operators(sampling: Sampling, lmax: int):
    """Per order m: the Legendre matrix (nlat, lmax-m+1) and the weighted
    least-squares solver that inverts it."""
    x = sampling.xyz[:: sampling.nlon, 2]  # cos(colatitude) of each ring
    P = legendre(lmax, x)
    w = np.sqrt(sampling.area[:: sampling.nlon])[:, None]
    ops = []
    for m in range(lmax + 1):
        Pm = P[:, _order_block(lmax, m)]
        ops.append((Pm, np.linalg.pinv(w * Pm) * w.T))  # solve min ||w (Pm a - g)||
    return ops


@lru_cache(maxsize=4)
def _ls_operators(sampling: Sampling, lmax: int):
    """Real design matrix B (npix, (lmax+1)^2), the squared area weights and the
    Cholesky factor of the weighted normal equations B^T W B."""
    xyz = sampling.xyz
    P = legendre(lmax, xyz[:, 2])
    _, m = _lm(lmax)
    phi = np.arctan2(xyz[:, 1], xyz[:, 0])
    mphi = phi[:, None] * m[None, :]
    c = np.where(m == 0, 1.0, 2.0)
    # f = sum_m0 a P + sum_{m>0} 2 P (Re a cos(m phi) - Im a sin(m phi))
    B = np.concatenate([P * np.cos(mphi) * c, -2 * (P * np.sin(mphi))[:, m > 0]], axis=1)
    w = np.sqrt(sampling.area)[:, None]
    # Normal equations with a Cholesky factor: cond(B)^2 stays small when the
    # fit has twice as many samples as unknowns, and one step of refinement
    # in map2alm recovers the accuracy; LAPACK's QR is ~10x slower here.
    wB = w * B
    try:
        chol = scipy.linalg.cho_factor(wB.T @ wB, check_finite=False)
    except np.linalg.LinAlgError:
        chol = None
    if chol is None or np.abs(np.diag(chol[0])).min() < 1e-7 * np.abs(np.diag(chol[0])).max():
        raise ValueError(f"the least-squares fit up to lmax={lmax} is singular on {sampling.describe()} "
                         "(the points do not determine that many harmonics); pass a smaller lmax")
    return B, (w * w, chol)


def map2alm(m, sampling: Sampling, lmax: int | None = None, iters: int = 3) -> np.ndarray:
    """Spherical-harmonic coefficients of map(s) on ``sampling`` (healpy layout).

    ``iters`` is the number of healpy Jacobi iterations for HEALPix (the other
    samplings are fitted exactly by least squares and ignore it).

    >>> s = HEALPix(nside=8)
    >>> a = random_alm(10, seed=0)
    >>> bool(np.allclose(map2alm(alm2map(a, s, 10), s, 10), a, atol=1e-6))
    True
    """
    lmax = band_limit(sampling, lmax)
    x, squeeze = _as_2d(m, sampling.npix)
    if isinstance(sampling, HEALPix):
        iters = int(iters)
        if iters < 0:
            raise ValueError(f"iters must be >= 0, got {iters}")
        if sampling.nest:
            x = x[hp.ring2nest(sampling.nside, np.arange(sampling.npix))]  # value of each RING pixel
        alm = np.stack([hp.map2alm(np.ascontiguousarray(col), lmax=lmax, iter=iters, use_pixel_weights=False,
                                   pol=False) for col in x.T], axis=1)
    elif is_ring_grid(sampling):
        nlat, nlon = sampling.nlat, sampling.nlon
        F = np.fft.rfft(x.reshape(nlat, nlon, -1), axis=1) / nlon  # (nlat, nlon//2+1, n)
        alm = np.empty((nalm(lmax), x.shape[1]), dtype=np.complex128)
        for mm, (_, solve) in enumerate(_ring_operators(sampling, lmax)):
            alm[_order_block(lmax, mm)] = solve @ F[:, mm, :]
    else:
        B, (w2, chol) = _ls_operators(sampling, lmax)
        coef = scipy.linalg.cho_solve(chol, B.T @ (w2 * x), check_finite=False)
        coef += scipy.linalg.cho_solve(chol, B.T @ (w2 * (x - B @ coef)), check_finite=False)
        _, mm = _lm(lmax)
        k = nalm(lmax)
        alm = coef[:k].astype(np.complex128)
        alm[mm > 0] += 1j * coef[k:]
    return alm[:, 0] if squeeze else alm


def alm2map(alm, sampling: Sampling, lmax: int | None = None) -> np.ndarray:
    """Evaluate coefficients (healpy layout, ``[nalm]`` or ``[nalm, n]``) at the
    pixels of ``sampling``. Returns float64 ``[npix]`` or ``[npix, n]``.

    >>> s = HEALPix(nside=4)
    >>> a = np.zeros(nalm(4), complex); a[0] = np.sqrt(4 * np.pi)   # Y_00 = 1 / sqrt(4 pi)
    >>> bool(np.allclose(alm2map(a, s, 4), 1.0))
    True
    """
    a = np.asarray(alm)
    if lmax is None:
        lmax = hp.Alm.getlmax(a.shape[0])
        if lmax < 0:
            raise ValueError(f"{a.shape[0]} coefficients is not a healpy alm size; pass lmax")
    if a.shape[0] != nalm(lmax):
        raise ValueError(f"alm has {a.shape[0]} coefficients along axis 0, lmax={lmax} needs {nalm(lmax)}")
    squeeze = a.ndim == 1
    a = a.reshape(a.shape[0], -1).astype(np.complex128)
    if not sampling.full_sphere:
        raise ValueError(f"{sampling.describe()} is a partial sky; synthesise on the full sky and select "
                         "the pixels")
    if isinstance(sampling, HEALPix):
        out = np.stack([hp.alm2map(np.ascontiguousarray(col), sampling.nside, lmax=lmax) for col in a.T], axis=1)
        if sampling.nest:
            out = out[hp.nest2ring(sampling.nside, np.arange(sampling.npix))]
    elif is_ring_grid(sampling):
        nlat, nlon = sampling.nlat, sampling.nlon
        if lmax > (nlon - 1) // 2:
            raise ValueError(f"lmax={lmax} aliases on rings of {nlon} longitudes; need lmax <= {(nlon - 1) // 2}")
        G = np.zeros((nlat, nlon // 2 + 1, a.shape[1]), dtype=np.complex128)
        for mm, (Pm, _) in enumerate(_ring_operators(sampling, lmax)):
            G[:, mm, :] = Pm @ a[_order_block(lmax, mm)]
        out = np.fft.irfft(G * nlon, n=nlon, axis=1).reshape(nlat * nlon, -1)
    else:
        B, _ = _ls_operators(sampling, lmax)
        _, mm = _lm(lmax)
        out = B @ np.concatenate([a.real, a.imag[mm > 0]], axis=0)
    return out[:, 0] if squeeze else out


def rotate_alm(alm, R: np.ndarray, lmax: int | None = None) -> np.ndarray:
    """Rotate coefficients actively by R (a copy; healpy rotates in place).

    >>> a = random_alm(6, seed=0)
    >>> bool(np.allclose(rotate_alm(a, np.eye(3)), a))
    True
    """
    alpha, beta, gamma = euler_zyz(R)
    a = np.asarray(alm, dtype=np.complex128)
    if lmax is None:
        lmax = hp.Alm.getlmax(a.shape[0])
    squeeze = a.ndim == 1
    rows = np.array(a.reshape(a.shape[0], -1).T, order="C")  # a copy: healpy rotates (k, nalm) rows in place
    hp.rotate_alm(rows[0] if rows.shape[0] == 1 else rows, psi=gamma, theta=beta, phi=alpha, lmax=lmax)
    return rows[0] if squeeze else np.ascontiguousarray(rows.T)


def rotate(m, R: np.ndarray, sampling: Sampling, lmax: int | None = None, iters: int = 3) -> np.ndarray:
    """Rotate map(s) ``[npix]`` or ``[npix, n]`` on ``sampling`` by R (active).

    Analysis up to ``lmax`` (see the module docstring for each sampling),
    rotation of the coefficients, synthesis at the same pixels. ``iters=0``
    on HEALPix reproduces the non-iterated rotations of the DeepSphere
    papers.
    """
    lmax = band_limit(sampling, lmax)
    return alm2map(rotate_alm(map2alm(m, sampling, lmax, iters), R, lmax), sampling, lmax)


def rotate_healpix(m, R: np.ndarray, nest: bool = True, lmax: int | None = None, iters: int = 3,
                   non_iterated: bool = False) -> np.ndarray:
    """Rotate full-sky HEALPix map(s) by R through their spherical harmonics.

    Parameters
    ----------
    m : array [npix] or [npix, n]
        Full-sky map(s), NESTED (default) or RING.
    R : (3, 3) rotation matrix (active: a bump at v moves to R v).
    lmax : int, default 3 nside - 1.
    iters : int
        Jacobi iterations of ``healpy.map2alm`` (no pixel weights, nothing is
        downloaded). ``non_iterated=True`` is ``iters=0``, the protocol of
        the DeepSphere papers.

    HEALPix is symmetric under quarter turns about z, so such a rotation only
    permutes pixels:

    >>> nside, lmax = 8, 16
    >>> m = alm2map(random_alm(lmax, seed=0), HEALPix(nside), lmax)     # band-limited, NESTED
    >>> R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])               # 90 degrees about z
    >>> xyz = np.array(hp.pix2vec(nside, np.arange(m.size), nest=True))  # (3, npix)
    >>> moved = m[hp.vec2pix(nside, *(R.T @ xyz), nest=True)]            # f(R^T x)
    >>> bool(np.abs(rotate_healpix(m, R, lmax=lmax) - moved).max() < 1e-3 * np.abs(m).max())
    True
    """
    a = np.asarray(m)
    try:
        nside = hp.npix2nside(a.shape[0])
    except (ValueError, IndexError):
        raise ValueError(f"a full-sky HEALPix map has 12 nside^2 pixels, got shape {a.shape}") from None
    return rotate(a, R, HEALPix(nside, nest=nest), lmax=lmax, iters=0 if non_iterated else iters)
