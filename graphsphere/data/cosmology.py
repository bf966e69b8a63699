"""Weak-lensing convergence maps for the DeepSphere cosmology experiment (Perraudin et al. 2019).

Two flat LambdaCDM models with nearly the same convergence power spectrum,
model 1 (Omega_m = 0.31, sigma_8 = 0.82) and model 2 (Omega_m = 0.26, sigma_8 = 0.91),
must be told apart from partial-sky maps. The maps are made from physics, not noise:

1. ``convergence_cl``: the Limber convergence power spectrum C_l from pyccl
   (CAMB transfer function, halofit non-linear matter power, Smail source n(z)).
2. ``lognormal_shift``: the shift lambda of a shifted lognormal field, set to the
   empty-beam convergence (the lowest convergence a light ray can have, Taruya et
   al. 2002). It scales with Omega_m, so it is what makes the models' one-point
   distributions (skewness) differ while their C_l agree to a few percent.
3. ``lognormal_map``: a full-sky map kappa = lambda (exp(g - sigma_g^2/2) - 1) whose
   two-point function is the model's, from a Gaussian field g whose C_l follow from
   xi_g = ln(1 + xi_kappa / lambda^2); smoothed with a 3 arcmin Gaussian beam; NESTED.
4. ``make_dataset``: maps cut into the 12 o^2 patches of order o (one HEALPix pixel
   at nside o each), cached on disk, with Gaussian noise added on demand.

See docs/cosmology_data.md for the physics choices and what they imply.
Needs the ``cosmology`` extra (pyccl, camb) for the spectra: ``pip install -e '.[cosmology]'`` in the repository.

Example
-------
>>> from graphsphere.data.cosmology import make_dataset, split
>>> data = make_dataset(nside=64, n_maps_per_class=2, order=2, progress=False)  # doctest: +SKIP
>>> data.x.shape, data.y[:3], data.npix_patch                                   # doctest: +SKIP
((192, 256), array([0, 0, 0]), 256)
>>> train, test = split(data, test_fraction=0.5, seed=0)                        # doctest: +SKIP
>>> noisy = data.noisy(1.0)  # noise std = 1 x the clean maps' pixel std        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import healpy as hp
import numpy as np
from scipy.special import roots_legendre

from ..files import is_verified, write_verified
from ..sampling.healpix import check_nside
from .progress import Progress

__all__ = [
    "COSMOLOGIES", "smail_nz", "convergence_cl", "lognormal_shift", "cl_to_xi", "xi_to_cl",
    "gaussian_cl", "lognormal_map", "split_patches", "patch_pixel_ids", "add_noise",
    "CosmologyData", "generate_maps", "make_dataset", "split", "default_cache_dir",
]

#: (Omega_m, sigma_8) of the paper's two models; index = class label.
COSMOLOGIES = ((0.31, 0.82), (0.26, 0.91))

#: Parameters held fixed (Planck-2015-like, as in the paper's simulations).
OMEGA_B, H, N_S = 0.049, 0.67, 0.96
#: Smail n(z) scale: n(z) ~ z^2 exp(-(z/z0)^1.5) has mean redshift ~0.96 at z0 = 0.64.
Z0 = 0.64
#: Gaussian smoothing of the final maps, as in the paper.
SMOOTHING_ARCMIN = 3.0

# Bump when the generated maps change for the same parameters, so stale caches are not reused.
_CACHE_VERSION = 1
_INSTALL_HINT = ("graphsphere[cosmology], from the repository: pip install -e '.[cosmology]' "
                 "(or: pip install pyccl camb)")


def default_cache_dir() -> Path:
    """Where spectra and maps are cached: ``$GRAPHSPHERE_CACHE`` or ``~/.cache/graphsphere``."""
    env = os.environ.get("GRAPHSPHERE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graphsphere"


def _cache_root(cache_dir) -> Path:
    root = (default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()) / "cosmology"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _key(config: dict) -> str:
    blob = json.dumps({"v": _CACHE_VERSION, **config}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _atomic_save(path: Path, save) -> None:
    # Written atomically with its checksum beside it (a crash or a concurrent reader never sees half a
    # file); a file that does not verify later (truncated, zeroed, edited) is made again, never used.
    write_verified(path, save)


def _import_pyccl():
    try:
        import pyccl
    except ImportError as err:
        raise ImportError(f"the cosmology data set needs pyccl to compute power spectra: {_INSTALL_HINT}") from err
    return pyccl


def smail_nz(z, z0: float = Z0) -> np.ndarray:
    """Smail-type source redshift distribution n(z) ~ z^2 exp(-(z/z0)^1.5), normalised to unit integral.

    >>> z = np.linspace(0, 5, 2001)
    >>> round(float(np.trapezoid(z * smail_nz(z), z)), 2)   # mean redshift at z0 = 0.64
    0.96
    """
    z = np.asarray(z, dtype=np.float64)
    if z0 <= 0:
        raise ValueError(f"z0 must be positive, got {z0}")
    # Analytic normalisation: int z^2 exp(-(z/z0)^1.5) dz = z0^3 Gamma(2) / 1.5.
    return z**2 * np.exp(-(z / z0) ** 1.5) * 1.5 / z0**3


def _check_params(omega_m, sigma8, omega_b):
    if not omega_b < omega_m < 1:
        raise ValueError(f"Omega_m must lie in (Omega_b={omega_b}, 1), got {omega_m}")
    if sigma8 is not None and not 0 < sigma8 < 3:
        raise ValueError(f"sigma_8 must be in (0, 3), got {sigma8}")


def _ccl_cosmology(omega_m, sigma8, omega_b, h, n_s, transfer_function):
    ccl = _import_pyccl()
    if transfer_function == "boltzmann_camb":
        try:
            import camb  # noqa: F401  (pyccl imports it lazily and fails late; fail early and clearly)
        except ImportError as err:
            raise ImportError(f"transfer_function='boltzmann_camb' needs camb: {_INSTALL_HINT}; "
                              "or pass transfer_function='eisenstein_hu' (no camb, ~5% less accurate)") from err
    return ccl.Cosmology(Omega_c=omega_m - omega_b, Omega_b=omega_b, h=h, n_s=n_s, sigma8=sigma8,
                         transfer_function=transfer_function, matter_power_spectrum="halofit")


def _lensing_kernel(cosmo, z0):
    ccl = _import_pyccl()
    z = np.linspace(0.0, 5.0, 1001)  # n(z0=0.64) is below 1e-9 of its peak at z = 5
    return ccl.tracers.get_lensing_kernel(cosmo, dndz=(z, smail_nz(z, z0)))


def convergence_cl(omega_m: float, sigma8: float, lmax: int, *, z0: float = Z0, omega_b: float = OMEGA_B,
                   h: float = H, n_s: float = N_S, transfer_function: str = "boltzmann_camb",
                   cache_dir=None) -> np.ndarray:
    """Angular power spectrum C_l (l = 0..lmax) of the weak-lensing convergence kappa.

    Limber approximation, non-linear matter power (halofit), flat LambdaCDM, sources
    distributed as ``smail_nz(z, z0)``. The tracer is pyccl's lensing kernel with the
    convergence angular factor l(l+1)/(l+1/2)^2 (``der_angles=1``), i.e. kappa itself,
    not the shear: C_l^kappa = C_l^shear (l+2)(l-1) / (l(l+1)) would otherwise be off
    by a factor (l+2)(l-1)/(l(l+1)), large at low l. C_0 = C_1 = 0 (no monopole; the
    Limber dipole is meaningless). Cached in ``cache_dir`` (default: ``default_cache_dir()``);
    a cached longer spectrum serves any smaller lmax.

    >>> cl = convergence_cl(0.31, 0.82, lmax=1000)         # doctest: +SKIP
    >>> cl.shape, cl[:2]                                   # doctest: +SKIP
    ((1001,), array([0., 0.]))
    """
    _check_params(omega_m, sigma8, omega_b)
    lmax = int(lmax)
    if lmax < 2:
        raise ValueError(f"lmax must be at least 2, got {lmax}")
    if transfer_function not in ("boltzmann_camb", "eisenstein_hu"):
        raise ValueError(f"transfer_function must be 'boltzmann_camb' or 'eisenstein_hu', got {transfer_function!r}")
    # One file per cosmology, holding the longest spectrum asked for so far (C_l does not depend on lmax).
    config = dict(kind="cl", omega_m=float(omega_m), sigma8=float(sigma8), z0=float(z0),
                  omega_b=float(omega_b), h=float(h), n_s=float(n_s), tf=transfer_function)
    path = _cache_root(cache_dir) / f"cl-{_key(config)}.npz"
    if is_verified(path):
        with np.load(path) as f:
            if f["cl"].size > lmax:
                return f["cl"][:lmax + 1].copy()
    ccl = _import_pyccl()
    cosmo = _ccl_cosmology(omega_m, sigma8, omega_b, h, n_s, transfer_function)
    chi, w = _lensing_kernel(cosmo, z0)
    tracer = ccl.Tracer()
    tracer.add_tracer(cosmo, kernel=(chi, w), der_bessel=-1, der_angles=1)
    ell = np.arange(lmax + 1)
    cl = np.zeros(lmax + 1)
    cl[2:] = ccl.angular_cl(cosmo, tracer, tracer, ell[2:])
    _atomic_save(path, lambda f: np.savez(f, cl=cl, config=json.dumps(config)))
    return cl


def lognormal_shift(omega_m: float, *, z0: float = Z0, omega_b: float = OMEGA_B, h: float = H) -> float:
    """Shift lambda of the lognormal convergence: minus the empty-beam convergence.

    A light ray through empty space (delta = -1 all along) has the lowest possible
    convergence, kappa_empty = -int W(chi) dchi, with W the lensing kernel of the
    source distribution; kappa >= -lambda = kappa_empty bounds the lognormal field
    from below as physics bounds the real one. lambda grows roughly like Omega_m,
    so lower-Omega_m models are more skewed at equal variance (skewness ~ 3 sigma / lambda).
    Depends on the background only (not sigma_8, not the transfer function).

    >>> round(lognormal_shift(0.31), 3), round(lognormal_shift(0.26), 3)   # doctest: +SKIP
    (0.068, 0.061)
    """
    _check_params(omega_m, None, omega_b)
    cosmo = _ccl_cosmology(omega_m, 0.8, omega_b, h, N_S, "eisenstein_hu")  # sigma_8, n_s: unused
    chi, w = _lensing_kernel(cosmo, z0)
    return float(np.trapezoid(w, chi))


def cl_to_xi(cl, x) -> np.ndarray:
    """Correlation function xi(x) = sum_l (2l+1)/(4 pi) C_l P_l(x) at x = cos(theta).

    Legendre recurrence, O(lmax * len(x)); stable for |x| <= 1.

    >>> cl_to_xi([4 * np.pi, 0, 0], [0.3])   # l = 0 only: xi = C_0 / (4 pi)
    array([1.])
    """
    cl = np.asarray(cl, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    p_prev, p = np.ones_like(x), x.copy()
    xi = cl[0] / (4 * np.pi) * p_prev
    if cl.size > 1:
        xi = xi + 3 * cl[1] / (4 * np.pi) * p
    for ell in range(1, cl.size - 1):
        p_prev, p = p, ((2 * ell + 1) * x * p - ell * p_prev) / (ell + 1)
        xi += (2 * ell + 3) / (4 * np.pi) * cl[ell + 1] * p
    return xi


def xi_to_cl(xi, x, w, lmax: int) -> np.ndarray:
    """Inverse of ``cl_to_xi``: C_l = 2 pi int xi(x) P_l(x) dx by quadrature (nodes x, weights w).

    Exact for band-limited xi with Gauss-Legendre nodes, n >= lmax + 1.

    >>> x, w = roots_legendre(8)
    >>> np.round(xi_to_cl(cl_to_xi([1.0, 2.0, 3.0], x), x, w, 2), 12)
    array([1., 2., 3.])
    """
    x = np.asarray(x, dtype=np.float64)
    fw = 2 * np.pi * np.asarray(w, dtype=np.float64) * np.asarray(xi, dtype=np.float64)
    out = np.empty(lmax + 1)
    p_prev, p = np.ones_like(x), x.copy()
    out[0] = fw.sum()
    if lmax >= 1:
        out[1] = fw @ p
    for ell in range(1, lmax):
        p_prev, p = p, ((2 * ell + 1) * x * p - ell * p_prev) / (ell + 1)
        out[ell + 1] = fw @ p
    return out


def gaussian_cl(cl_kappa, shift: float) -> np.ndarray:
    """C_l of the Gaussian field g such that kappa = shift (exp(g - sigma_g^2/2) - 1) has spectrum ``cl_kappa``.

    Goes through the correlation functions, xi_g = ln(1 + xi_kappa / shift^2), with
    2 (lmax + 1) Gauss-Legendre nodes in cos(theta). Tiny negative C_l^g (the lognormal
    model is not exactly realisable for every spectrum) are set to zero; a warning
    is issued if they carry more than 0.1% of the variance.

    >>> cl = np.r_[0, 0, 1e-5 / np.arange(2, 50) ** 2]
    >>> clg = gaussian_cl(cl, 0.05)
    >>> bool(np.all(clg >= 0)), bool(clg[10] > cl[10])     # g has relatively more power
    (True, True)
    """
    cl_kappa = np.asarray(cl_kappa, dtype=np.float64)
    if cl_kappa.ndim != 1 or cl_kappa.size < 3 or np.any(cl_kappa < 0):
        raise ValueError("cl_kappa must be a 1-D array of non-negative C_l, l = 0..lmax with lmax >= 2")
    if not shift > 0:
        raise ValueError(f"the lognormal shift must be positive, got {shift}")
    lmax = cl_kappa.size - 1
    x, w = roots_legendre(2 * (lmax + 1))
    cl_g = xi_to_cl(np.log1p(cl_to_xi(cl_kappa, x) / shift**2), x, w, lmax)
    weight = (2 * np.arange(lmax + 1) + 1) / (4 * np.pi)
    negative = weight @ np.clip(-cl_g, 0, None)
    if negative > 1e-3 * (weight @ np.clip(cl_g, 0, None)):
        warnings.warn(f"lognormal transform: negative C_l of g carry {negative:.3g} of variance; set to zero",
                      stacklevel=2)
    return np.clip(cl_g, 0, None)


def _gaussian_alm(cl, rng) -> np.ndarray:
    # Our own draw (healpy.synalm uses NumPy's global state): a_l0 real with variance C_l,
    # a_lm (m > 0) complex with variance C_l / 2 per component; healpy's alm layout.
    lmax = cl.size - 1
    ell, m = hp.Alm.getlm(lmax)
    amp = np.sqrt(cl)[ell]
    alm = rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size)
    alm *= amp / np.sqrt(2)
    m0 = m == 0
    alm[m0] = rng.standard_normal(int(m0.sum())) * amp[m0]
    return alm


def lognormal_map(cl_kappa, shift: float, nside: int, seed=None, *,
                  smoothing_arcmin: float = SMOOTHING_ARCMIN, cl_g=None) -> np.ndarray:
    """Full-sky shifted lognormal convergence map, NESTED order, float64.

    kappa = shift * (exp(g - sigma_g^2 / 2) - 1) with g Gaussian of spectrum
    ``gaussian_cl(cl_kappa, shift)`` (pass it as ``cl_g`` to skip recomputing), so that
    <kappa> = 0, kappa > -shift, and kappa's two-point function is ``cl_kappa``'s
    (l = 0..lmax, lmax = len(cl_kappa) - 1, at most 3 nside - 1). Then smoothed with a
    Gaussian beam of FWHM ``smoothing_arcmin`` (0: none), in harmonic space up to lmax.
    ``seed``: int, sequence of ints or numpy Generator; same seed, same map.

    >>> cl = np.r_[0, 0, 1e-5 / np.arange(2, 48) ** 2]
    >>> m = lognormal_map(cl, 0.05, nside=16, seed=1, smoothing_arcmin=0)
    >>> m.shape, bool(m.min() > -0.05)
    ((3072,), True)
    """
    cl_kappa = np.asarray(cl_kappa, dtype=np.float64)
    nside = check_nside(nside)
    lmax = cl_kappa.size - 1
    if lmax > 3 * nside - 1:
        raise ValueError(f"lmax = len(cl_kappa) - 1 = {lmax} exceeds 3 nside - 1 = {3 * nside - 1}; "
                         f"pass cl_kappa[:{3 * nside}]")
    if smoothing_arcmin < 0:
        raise ValueError(f"smoothing_arcmin must be >= 0, got {smoothing_arcmin}")
    cl_g = gaussian_cl(cl_kappa, shift) if cl_g is None else np.asarray(cl_g, dtype=np.float64)
    if cl_g.shape != cl_kappa.shape:
        raise ValueError(f"cl_g has shape {cl_g.shape}, expected {cl_kappa.shape} like cl_kappa")
    rng = np.random.default_rng(seed)
    g = hp.alm2map(_gaussian_alm(cl_g, rng), nside, lmax=lmax)
    # Variance of the band-limited g actually drawn (after clipping), so that <kappa> = 0 exactly.
    sigma2 = (2 * np.arange(lmax + 1) + 1) @ cl_g / (4 * np.pi)
    kappa = shift * np.expm1(g - sigma2 / 2)
    if smoothing_arcmin > 0:
        # iter=0: one quadrature pass; the beam is applied to the final (non-Gaussian) map as in the paper.
        alm = hp.map2alm(kappa, lmax=lmax, iter=0, use_pixel_weights=False)
        hp.almxfl(alm, hp.gauss_beam(np.radians(smoothing_arcmin / 60), lmax=lmax), inplace=True)
        kappa = hp.alm2map(alm, nside, lmax=lmax)
    return hp.reorder(kappa, r2n=True)


def _check_order(nside: int, order) -> int:
    if isinstance(order, (bool, np.bool_)) or not float(order).is_integer():
        raise ValueError(f"order must be an integer power of two (1, 2, 4, ...), got {order!r}")
    o = int(order)
    if o < 1 or o & (o - 1) or o > nside:
        raise ValueError(f"order must be a power of two between 1 and nside = {nside}, got {order}; "
                         "order o cuts the sky into 12 o^2 patches (o = 1, 2, 4: 1/12, 1/48, 1/192 of it)")
    return o


def split_patches(maps, order: int) -> np.ndarray:
    """Cut NESTED full-sky maps [..., 12 nside^2] into patches [..., 12 o^2, (nside/o)^2].

    Patch p is pixel p of HEALPix at nside = o: its fine pixels are the consecutive
    NESTED ids p (nside/o)^2 + arange((nside/o)^2), so the cut is a reshape (a view).

    >>> split_patches(np.arange(48), order=1).shape
    (12, 4)
    """
    maps = np.asarray(maps)
    npix = maps.shape[-1]
    nside = hp.npix2nside(npix) if hp.isnpixok(npix) else None
    if nside is None:
        raise ValueError(f"last axis has {npix} entries, not a HEALPix full-sky pixel count 12 nside^2")
    o = _check_order(nside, order)
    return maps.reshape(*maps.shape[:-1], 12 * o * o, (nside // o) ** 2)


def patch_pixel_ids(nside: int, order: int, patch: int = 0) -> np.ndarray:
    """NESTED ids at ``nside`` of the pixels of ``patch`` (order o), in data order.

    Every patch has the same layout: ids relative to the first, arange((nside/o)^2),
    are the same for all patches, and nested order makes each patch's pixel hierarchy
    identical; only the base-pixel geometry differs slightly (polar vs equatorial).
    Models can therefore use one sampling, e.g. ``HEALPix(nside, indices=patch_pixel_ids(nside, o))``.

    >>> patch_pixel_ids(4, 2, patch=3)
    array([12, 13, 14, 15])
    """
    nside = check_nside(nside)
    o = _check_order(nside, order)
    if not 0 <= patch < 12 * o * o:
        raise ValueError(f"patch must be in [0, {12 * o * o}) at order {o}, got {patch}")
    n = (nside // o) ** 2
    return patch * n + np.arange(n)


def add_noise(x, level: float, rng, std: float | None = None) -> np.ndarray:
    """``x`` plus white Gaussian noise of standard deviation ``level * std``.

    ``std`` is the pixel standard deviation of the noiseless maps (the paper's relative
    noise); default ``x.std()``, right only if ``x`` is the whole clean data set: pass
    the data set's ``std`` when noising a subset, or the noise would depend on the subset.
    ``rng``: numpy Generator or seed. Keeps x's float dtype.

    >>> x = np.zeros(100000, dtype=np.float32)
    >>> y = add_noise(x, 2.0, rng=0, std=0.5)
    >>> y.dtype, round(float(y.std()), 2)
    (dtype('float32'), 1.0)
    """
    x = np.asarray(x)
    if not level >= 0:
        raise ValueError(f"noise level must be >= 0, got {level}")
    std = float(x.std()) if std is None else float(std)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    if level == 0:
        return x.astype(dtype, copy=True)
    rng = np.random.default_rng(rng)
    noise = rng.standard_normal(x.shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    noise *= level * std
    return x + noise


@dataclass(frozen=True)
class CosmologyData:
    """Clean partial-sky convergence samples of the two models (see ``make_dataset``).

    x : float32 [n, npix_patch]    one patch per sample, NESTED pixels of the patch in order
    y : int64 [n]                  class: 0 = model 1 (0.31, 0.82), 1 = model 2 (0.26, 0.91)
    map_id : int64 [n]             full-sky map the patch comes from (2 n_maps_per_class maps)
    patch : int64 [n]              patch index p = HEALPix pixel at nside = order
    std : float                    pixel std of all clean maps (both classes): the noise unit
    """

    x: np.ndarray
    y: np.ndarray
    map_id: np.ndarray
    patch: np.ndarray
    nside: int
    order: int
    std: float
    seed: int
    noise_levels: tuple = (0.0, 0.5, 1.0, 1.5, 2.0)
    cosmologies: tuple = COSMOLOGIES
    config: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.y.size)

    @property
    def npix_patch(self) -> int:
        return (self.nside // self.order) ** 2

    def pixel_ids(self, patch: int = 0) -> np.ndarray:
        """NESTED ids of a patch's pixels at ``nside`` (see ``patch_pixel_ids``)."""
        return patch_pixel_ids(self.nside, self.order, patch)

    def sampling(self, patch: int = 0):
        """``graphsphere.sampling.HEALPix`` of one patch: the sampling every sample is on."""
        from ..sampling import HEALPix
        return HEALPix(self.nside, indices=self.pixel_ids(patch))

    def noisy(self, level: float, seed: int | None = None, index=None) -> np.ndarray:
        """Samples ``x[index]`` plus noise of std ``level * self.std``; deterministic by (seed, level).

        ``seed`` defaults to the data set's seed; ``index`` selects samples (default all).
        """
        x = self.x if index is None else self.x[index]
        seed = self.seed if seed is None else seed
        rng = np.random.default_rng([int(seed), 1_000_003, int(round(level * 1e6))])
        return add_noise(x, level, rng, std=self.std)


def _map_folders(nside, cosmologies, z0, transfer_function, smoothing_arcmin, shift_scale, cache_dir):
    """(Omega_m, sigma_8, folder, config) of each model's cached maps."""
    root = _cache_root(cache_dir)
    fields = []
    for omega_m, sigma8 in cosmologies:
        config = dict(kind="map", omega_m=float(omega_m), sigma8=float(sigma8), nside=nside, lmax=3 * nside - 1,
                      z0=float(z0), tf=transfer_function, smoothing=float(smoothing_arcmin),
                      shift_scale=float(shift_scale))
        folder = root / f"maps-{_key(config)}"
        folder.mkdir(exist_ok=True)
        fields.append((omega_m, sigma8, folder, config))
    return fields


def generate_maps(nside: int = 256, n_maps_per_class: int = 30, seed: int = 0, cache_dir=None,
                  progress: bool = True, *, smoothing_arcmin: float = SMOOTHING_ARCMIN, z0: float = Z0,
                  shift_scale: float = 1.0, transfer_function: str = "boltzmann_camb",
                  cosmologies=COSMOLOGIES) -> int:
    """Make the full-sky maps ``make_dataset`` needs that are not cached yet; returns how many were made.

    The same arguments as :func:`make_dataset` (the patch order does not matter: maps are cut
    when loaded). ``progress``: a bar on a terminal, plain lines every 30 s otherwise (a log
    file gets no carriage-return frames). Call it first to see the progress of a long generation
    and keep loading separate, as ``graphsphere cosmology`` does.

    >>> generate_maps(nside=64, n_maps_per_class=2, progress=False)   # doctest: +SKIP
    4
    """
    nside = check_nside(nside)
    if int(n_maps_per_class) < 1:
        raise ValueError(f"n_maps_per_class must be >= 1, got {n_maps_per_class}")
    if not shift_scale > 0:
        raise ValueError(f"shift_scale must be positive, got {shift_scale}")
    fields = _map_folders(nside, cosmologies, z0, transfer_function, smoothing_arcmin, shift_scale, cache_dir)
    todo = [(c, i) for c, f in enumerate(fields) for i in range(int(n_maps_per_class))
            if not is_verified(f[2] / f"map-{seed}-{i}.npy")]
    lmax = 3 * nside - 1
    bar = Progress(len(todo), f"cosmology maps (nside {nside}, seed {seed})", enabled=progress)
    prepared = {}
    for c, i in todo:
        omega_m, sigma8, folder, config = fields[c]
        if c not in prepared:
            cl = convergence_cl(omega_m, sigma8, lmax, z0=z0, transfer_function=transfer_function,
                                cache_dir=cache_dir)
            shift = shift_scale * lognormal_shift(omega_m, z0=z0)
            prepared[c] = (cl, shift, gaussian_cl(cl, shift))
        cl, shift, cl_g = prepared[c]
        map_seed = [int(seed), round(omega_m * 1e6), round(sigma8 * 1e6), i]
        m = lognormal_map(cl, shift, nside, seed=map_seed, smoothing_arcmin=smoothing_arcmin,
                          cl_g=cl_g).astype(np.float32)
        _atomic_save(folder / f"map-{seed}-{i}.npy", lambda f, m=m: np.save(f, m))
        bar.update()
    return len(todo)


def make_dataset(nside: int = 256, n_maps_per_class: int = 30, order: int = 4,
                 noise_levels=(0.0, 0.5, 1.0, 1.5, 2.0), seed: int = 0, cache_dir=None,
                 progress: bool = True, *, smoothing_arcmin: float = SMOOTHING_ARCMIN, z0: float = Z0,
                 shift_scale: float = 1.0, transfer_function: str = "boltzmann_camb",
                 cosmologies=COSMOLOGIES) -> CosmologyData:
    """Partial-sky convergence maps of the two models, cut into patches of order ``order``.

    For each class c (``cosmologies[c]`` = (Omega_m, sigma_8)) draws ``n_maps_per_class``
    full-sky lognormal maps (``lognormal_map``, lmax = 3 nside - 1) and cuts each into its
    12 order^2 patches (``split_patches``). Map i of a model uses the seed
    [seed, 10^6 Omega_m, 10^6 sigma_8, i]: independent between models, and asking for more
    maps keeps the first ones. Clean maps are cached one file per map in
    ``cache_dir/cosmology/`` (default ``$GRAPHSPHERE_CACHE`` or ``~/.cache/graphsphere``):
    float32, 3 MB each at nside 256, 50 MB at 1024. Noise is not stored: draw it with
    ``data.noisy(level)`` for each of ``data.noise_levels``. Costs ~0.2 s a map at
    nside 256 and ~8 s at nside 1024 (2 cores), plus ~1 s per model for the spectra.
    ``progress``: see :func:`generate_maps`.

    ``shift_scale`` multiplies both models' empty-beam shifts: below 1 makes the maps more
    skewed (ray-tracing fits prefer ~0.5, see docs/cosmology_data.md), keeping the ratio.

    >>> data = make_dataset(nside=64, n_maps_per_class=1, order=1, progress=False)  # doctest: +SKIP
    >>> data.x.shape, data.sampling().npix                                          # doctest: +SKIP
    ((24, 1024), 1024)
    """
    nside = check_nside(nside)
    order = _check_order(nside, order)
    n_maps = int(n_maps_per_class)
    noise_levels = tuple(float(v) for v in noise_levels)
    if any(not v >= 0 for v in noise_levels):
        raise ValueError(f"noise levels must be >= 0, got {noise_levels}")
    generate_maps(nside, n_maps, seed, cache_dir, progress, smoothing_arcmin=smoothing_arcmin, z0=z0,
                  shift_scale=shift_scale, transfer_function=transfer_function, cosmologies=cosmologies)
    fields = _map_folders(nside, cosmologies, z0, transfer_function, smoothing_arcmin, shift_scale, cache_dir)

    npatch, npix_patch = 12 * order**2, (nside // order) ** 2
    n = len(fields) * n_maps
    x = np.empty((n * npatch, npix_patch), dtype=np.float32)
    sums = np.zeros(2)
    for k, (c, i) in enumerate((c, i) for c in range(len(fields)) for i in range(n_maps)):
        m = np.load(fields[c][2] / f"map-{seed}-{i}.npy")
        if m.shape != (12 * nside**2,):
            raise RuntimeError(f"cached map {fields[c][2]} / map-{seed}-{i}.npy is corrupt; delete it")
        x[k * npatch:(k + 1) * npatch] = split_patches(m, order)
        m64 = m.astype(np.float64)
        sums += (m64.sum(), (m64**2).sum())
    mean = sums[0] / x.size
    std = float(np.sqrt(sums[1] / x.size - mean**2))
    map_id = np.repeat(np.arange(n), npatch)
    return CosmologyData(
        x=x, y=map_id // n_maps, map_id=map_id, patch=np.tile(np.arange(npatch), n),
        nside=nside, order=order, std=std, seed=int(seed), noise_levels=noise_levels,
        cosmologies=tuple(tuple(cm) for cm in cosmologies),
        config=dict(fields[0][3], n_maps_per_class=n_maps, order=order))


def split(data: CosmologyData, test_fraction: float = 0.2, seed: int = 0):
    """Train/test sample indices, split by full-sky map and balanced by class.

    Patches of one map share its large-scale modes, so all patches of a map go to the
    same side (no leakage). Per class, round(test_fraction * n_maps) maps (at least one,
    at most all but one) go to the test side, chosen by ``seed``.

    >>> # train, test = split(data, 0.2, seed=0); data.x[train], data.y[test]
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_maps = []
    for c in np.unique(data.y):
        maps = np.unique(data.map_id[data.y == c])
        if maps.size < 2:
            raise ValueError(f"class {c} has {maps.size} map(s); need at least 2 to split by map")
        k = min(max(int(round(test_fraction * maps.size)), 1), maps.size - 1)
        test_maps.append(rng.permutation(maps)[:k])
    is_test = np.isin(data.map_id, np.concatenate(test_maps))
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)
