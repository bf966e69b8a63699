"""Kernel widths of the Gaussian edge weights w = exp(-d^2 / (4t)).

``kernel_width="tuned"`` looks widths up here. Published widths (DeepSphere
v2, ICLR 2020) are given as sigma in w = exp(-ln2 d^2 / sigma^2), hence
t = sigma^2 / (4 ln 2). Outside the published table, sigma follows the fitted
law sigma = c_k / nside (sigma * nside is nearly constant per k).

>>> round(published_sigma(64, 8), 5)
0.01228
>>> round(sigma_to_t(0.01228), 8)
5.439e-05
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PUBLISHED_HEALPIX_SIGMA", "published_sigma", "sigma_to_t", "t_to_sigma",
           "healpix_scaling_constant", "heuristic_t"]

#: sigma of exp(-ln2 d^2/sigma^2) per (nside, k), from REFERENCE.md section 2.
#: The k=40 value at nside 256 is flagged doubtful by its authors and left out.
PUBLISHED_HEALPIX_SIGMA: dict[int, dict[int, float]] = {
    8: {32: 0.02500, 64: 0.01228, 128: 0.00614, 256: 0.00307, 512: 0.00154, 1024: 0.00077},
    20: {32: 0.03185, 64: 0.01564, 128: 0.00782, 256: 0.00391, 512: 0.00196, 1024: 0.00098},
    40: {32: 0.042432, 64: 0.021354, 128: 0.010595},
    60: {32: 0.051720, 64: 0.025403, 128: 0.012695, 256: 0.006351},
}


def sigma_to_t(sigma: float) -> float:
    """t of exp(-d^2/4t) equal to exp(-ln2 d^2/sigma^2)."""
    return sigma**2 / (4 * math.log(2))


def t_to_sigma(t: float) -> float:
    """Inverse of ``sigma_to_t``."""
    return math.sqrt(4 * math.log(2) * t)


def healpix_scaling_constant(k: int) -> float:
    """c_k of the law sigma = c_k / nside, least-squares fitted to the table."""
    if k not in PUBLISHED_HEALPIX_SIGMA:
        raise ValueError(f"no published HEALPix widths for k={k}; published k: {sorted(PUBLISHED_HEALPIX_SIGMA)}")
    table = PUBLISHED_HEALPIX_SIGMA[k]
    inv = np.array([1.0 / n for n in table])
    sig = np.array(list(table.values()))
    return float(inv @ sig / (inv @ inv))


def published_sigma(nside: int, k: int) -> float:
    """Published sigma for HEALPix (nside, k), or the fitted law outside the table."""
    if k not in PUBLISHED_HEALPIX_SIGMA:
        raise ValueError(
            f"kernel_width='tuned' has HEALPix widths for k in {sorted(PUBLISHED_HEALPIX_SIGMA)}, not k={k}; "
            "pass kernel_width='mean' or a number")
    table = PUBLISHED_HEALPIX_SIGMA[k]
    return table.get(nside, healpix_scaling_constant(k) / nside)


def heuristic_t(sq_dist: np.ndarray) -> float:
    """The 2019 heuristic: t = half the mean squared edge length."""
    return float(np.mean(sq_dist)) / 2
