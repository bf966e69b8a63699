"""Kernel-width tuning: the width t that makes a graph Laplacian most
rotation-equivariant (DeepSphere v2's tuning, for every sampling).

This sits above :mod:`graphsphere.equivariance` (it measures with it) and
:mod:`graphsphere.graph` (it builds graphs); :mod:`graphsphere.kernel_widths`
below only looks the results up. ``graphsphere tune`` regenerates the shipped
table with :func:`tune` and :func:`make_table`.

>>> import graphsphere as gs
>>> r = tune(gs.sampling.HEALPix(nside=4), k=8, cache=False)
>>> r["objective"] < r["objective_heuristic"]
True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .equivariance import EquivarianceProbe
from .graph import SphereGraph, knn
from .kernel_widths import PUBLISHED_HEALPIX_SIGMA, heuristic_t, published_sigma, sigma_to_t, t_to_sigma
from .rotation import default_lmax

__all__ = ["tune", "make_table", "tuning_degrees"]


def tuning_degrees(sampling) -> list[int]:
    """Degrees the widths are tuned on: ``resolution * (1/8, 1/4, 1/2, 1, 3/2, 2)``
    (capped at the sampling's rotation band limit).

    Log-spaced from the largest scales to 2 nside, the band limit up to which
    HEALPix maps are faithfully analysed (healpy's iterations converge; above
    it the sampling aliases). Tuning up to 3 nside gives widths within 2% of
    the published ones at nside 32; stopping at 1.5 nside gives 5% narrower
    kernels, better at low degrees and worse at the highest (see
    docs/equivariance.md).

    >>> import graphsphere as gs
    >>> tuning_degrees(gs.sampling.HEALPix(nside=32))
    [4, 8, 16, 32, 48, 64]
    """
    res = sampling.resolution()
    top = default_lmax(sampling)
    return sorted({min(top, max(1, int(round(res * f)))) for f in (1 / 8, 1 / 4, 1 / 2, 1, 3 / 2, 2)})


def _cache_dir() -> Path:
    return Path(os.environ.get("GRAPHSPHERE_CACHE", Path.home() / ".cache" / "graphsphere")) / "kernel_widths"


def _objective(errors: np.ndarray, objective: str) -> float:
    if objective == "geometric":
        return float(np.exp(np.mean(np.log(errors))))
    return float(np.mean(errors))


def tune(sampling, k: int, degrees=None, n_signals: int = 2, n_rotations: int = 2, seed: int = 0,
         objective: str = "geometric", rotation: str = "accurate", bounds=(0.02, 0.8), xatol: float = 0.02,
         maxiter: int = 20, cache: bool = True, verbose: bool = False) -> dict[str, Any]:
    """The kernel width t that makes the k-NN graph Laplacian of ``sampling``
    most rotation-equivariant.

    Minimises, over log t, the mean equivariance error (geometric mean over
    ``degrees``, default :func:`tuning_degrees`; ``objective="arithmetic"``
    for the plain mean, dominated by the lowest degrees) of the normalized
    Laplacian, measured with accurate rotations on fixed random signals
    (the objective is then a deterministic function of t), by bounded
    Brent search (``scipy.optimize.minimize_scalar``) within ``bounds`` times
    the mean squared neighbour distance, to a relative tolerance ``xatol``
    in t.

    Results are cached in ``$GRAPHSPHERE_CACHE/kernel_widths`` (default
    ``~/.cache/graphsphere``); ``cache=False`` recomputes.

    Returns a dict: ``t``, ``sigma`` (exp(-ln2 d^2/sigma^2) units),
    ``sigma_resolution`` (sigma * :func:`resolution`), ``objective`` value,
    per-degree ``error`` of the tuned graph and ``error_heuristic`` of the
    "mean" heuristic, ``floor`` (rotation floor), ``evaluations`` and
    ``seconds``.

    (Example in the module docstring.)
    """
    from scipy.optimize import minimize_scalar

    if objective not in ("geometric", "arithmetic"):
        raise ValueError(f"objective must be 'geometric' or 'arithmetic', got {objective!r}")
    degrees = tuning_degrees(sampling) if degrees is None else sorted({int(d) for d in np.atleast_1d(degrees)})
    key = {"sampling": sampling.digest,
           "k": int(k), "degrees": degrees, "n_signals": n_signals, "n_rotations": n_rotations, "seed": seed,
           "objective": objective, "rotation": rotation, "bounds": list(bounds), "xatol": xatol, "version": 2}
    path = _cache_dir() / (hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16] + ".json")
    if cache and path.exists():
        return json.loads(path.read_text())["result"]

    start = time.perf_counter()
    _, sq = knn(sampling.xyz, k)
    msq = float(np.mean(sq))
    probe = EquivarianceProbe(sampling, degrees, n_signals, n_rotations, seed, rotation)
    evaluations: list[tuple[float, float]] = []

    def graph(t):
        with warnings.catch_warnings():  # a disconnected k-NN graph is reported once, in the result
            warnings.simplefilter("ignore", UserWarning)
            return SphereGraph(sampling, k=k, kernel_width=t)

    def f(logt: float) -> float:
        g = graph(math.exp(logt))
        value = _objective(probe.measure(g).error, objective)
        evaluations.append((math.exp(logt), value))
        if verbose:
            print(f"  t = {math.exp(logt):.4g} ({math.exp(logt) / msq:.3f} mean d^2): {value:.5g}", flush=True)
        return value

    lo, hi = math.log(bounds[0] * msq), math.log(bounds[1] * msq)
    opt = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": xatol, "maxiter": maxiter})
    t = float(math.exp(opt.x))
    g = graph(t)
    tuned = probe.measure(g)
    heur = probe.measure(graph("mean"))
    at_edge = min(opt.x - lo, hi - opt.x) < 2 * xatol
    result = {
        "family": sampling.family, "sampling": sampling.describe(), "resolution": sampling.resolution(),
        "native": sampling.native_resolution, "k": int(k), "t": t, "sigma": t_to_sigma(t),
        "sigma_resolution": t_to_sigma(t) * sampling.resolution(),
        "t_over_mean_sq_dist": t / msq, "at_bound": bool(at_edge), "components": g.n_components,
        "objective": _objective(tuned.error, objective), "objective_kind": objective,
        "objective_heuristic": _objective(heur.error, objective), "t_heuristic": heuristic_t(sq),
        "degrees": degrees, "error": tuned.error.tolist(), "error_heuristic": heur.error.tolist(),
        "floor": tuned.floor.tolist(), "evaluations": evaluations, "seconds": time.perf_counter() - start,
    }
    if sampling.family == "HEALPix" and int(k) in PUBLISHED_HEALPIX_SIGMA:
        sig = published_sigma(sampling.nside, int(k))
        pub = probe.measure(graph(sigma_to_t(sig)))
        result.update(sigma_published=sig, error_published=pub.error.tolist(),
                      objective_published=_objective(pub.error, objective))
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "result": result}, indent=1))
        os.replace(tmp, path)
    return result


def make_table(results: list[dict[str, Any]], law_from_finest: int = 2) -> dict[str, Any]:
    """The table of tuned widths from :func:`tune` results, with the law
    ``sigma * resolution = c`` fitted per family and k.

    ``c`` is the mean of ``sigma * resolution`` over the ``law_from_finest``
    finest tuned resolutions: coarse grids deviate from the asymptotic law
    (for k = 20 and 40 on HEALPix, sigma * nside still drifts down by a few
    percent per doubling of nside up to 128). The spread of sigma *
    resolution over all tuned resolutions is recorded as ``c_spread``.
    """
    table: dict[str, Any] = {"version": 1, "units": "t of exp(-d^2/(4t)); sigma of exp(-ln2 d^2/sigma^2), "
                             "t = sigma^2/(4 ln 2); resolution = nside or sqrt(npix/12)", "families": {}}
    for r in results:
        fam = table["families"].setdefault(r["family"], {"entries": [], "law": {}})
        fam["entries"].append({k: r[k] for k in ("sampling", "resolution", "k", "t", "sigma", "sigma_resolution",
                                                 "objective", "objective_heuristic", "degrees", "error",
                                                 "error_heuristic", "floor", "at_bound", "components",
                                                 "seconds")
                               if k in r} | {"native": r["native"]})
        for k in ("sigma_published", "objective_published", "error_published"):
            if k in r:
                fam["entries"][-1][k] = r[k]
    for fam in table["families"].values():
        fam["entries"].sort(key=lambda e: (e["k"], e["resolution"]))
        for k in sorted({e["k"] for e in fam["entries"]}):
            es = [e for e in fam["entries"] if e["k"] == k]  # sorted by resolution
            allc = np.array([e["sigma_resolution"] for e in es])
            fit = es[-max(1, int(law_from_finest)):]
            fam["law"][str(k)] = {"c": float(np.mean([e["sigma_resolution"] for e in fit])),
                                  "c_spread": float(allc.max() - allc.min()),
                                  "fitted_on": [e["native"] for e in fit]}
    return table
