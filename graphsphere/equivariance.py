"""How far an operator on a sampled sphere is from commuting with rotations.

The equivariance error of an operator L (a graph Laplacian, a filter, a
network) at degree l is, as in the DeepSphere papers,

    E_l = mean over f, g of  ||R(g) L f - L R(g) f|| / ||L f||

(the plain ratio, unsquared), with f random real signals whose spherical
harmonic expansion has degree l only, synthesised exactly on the sampling,
and g Haar-uniform random rotations. Rotations of sampled maps go through
spherical harmonics (:mod:`graphsphere.rotation`): ``rotation="accurate"``
analyses HEALPix maps with 3 Jacobi iterations, ``"non_iterated"`` with none
(the papers' protocol, whose own error inflates the measured E at low l).
The same rotation is applied to f and to L f, as in the papers: rotation
errors common to both then largely cancel (see ``docs/equivariance.md``).

Every result carries the *rotation floor* of the same signals: the relative
error of rotating and rotating back (``floor``), and of the rotated map
against the exact rotation of its known coefficients (``floor_direct``).

Example
-------
>>> import graphsphere as gs
>>> from graphsphere.equivariance import equivariance_error
>>> s = gs.sampling.HEALPix(nside=8)
>>> g = gs.SphereGraph(s, k=8, kernel_width="mean")
>>> res = equivariance_error(g, s, degrees=(2, 8), n_signals=2, n_rotations=2)
>>> bool(0 < res.error[0] < 1), bool(res.floor[0] < res.error[0] / 100)
(True, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import scipy.sparse as sp

from . import rotation as rot
from .graph import SphereGraph
from .sampling.base import Sampling

__all__ = ["EquivarianceResult", "EquivarianceProbe", "equivariance_error", "rotation_floor", "map_function",
           "ROTATIONS"]

#: Rotation protocols and the healpy Jacobi iterations they use on HEALPix.
ROTATIONS = {"accurate": 3, "non_iterated": 0}


@dataclass
class EquivarianceResult:
    """Equivariance error per degree, with the rotation floor beside it.

    ``error``, ``error_std``, ``floor`` and ``floor_direct`` are arrays
    aligned with ``degrees``; ``floor`` is the rotate-and-rotate-back error,
    ``floor_direct`` the error of one rotation against the exact one.
    """

    degrees: np.ndarray
    error: np.ndarray
    error_std: np.ndarray
    floor: np.ndarray
    floor_direct: np.ndarray
    rotation: str
    n_signals: int
    n_rotations: int
    sampling: str
    label: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("degrees", "error", "error_std", "floor", "floor_direct"):
            d[k] = np.asarray(d[k]).tolist()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EquivarianceResult":
        d = dict(d)
        for k in ("degrees", "error", "error_std", "floor", "floor_direct"):
            d[k] = np.asarray(d[k])
        return cls(**d)

    def mean_error(self) -> float:
        """Mean of ``error`` over the degrees (the quantity kernel widths are tuned on)."""
        return float(np.mean(self.error))

    def __str__(self) -> str:
        head = f"{self.label or 'operator'} on {self.sampling}, {self.rotation} rotations"
        rows = [f"{'l':>5} {'E':>10} {'+-':>9} {'floor':>9} {'direct':>9}"]
        rows += [f"{l:>5d} {e:>10.4g} {s:>9.2g} {f:>9.2g} {fd:>9.2g}" for l, e, s, f, fd in
                 zip(self.degrees, self.error, self.error_std, self.floor, self.floor_direct)]
        return head + "\n" + "\n".join(rows)


# -- operators ---------------------------------------------------------------
def map_function(operator, npix: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function from maps ``[npix, n]`` to outputs ``[npix_out, n * c]``.

    Accepts a ``SphereGraph`` (its Laplacian ``L``), a scipy sparse matrix or
    dense array, a callable on numpy arrays (called on ``[npix, n]``; if that
    fails or gives the wrong shape, column by column on ``[npix]``), or a
    ``torch.nn.Module`` taking ``[batch, vertices, channels]`` (each signal
    is a batch element with one channel; the output's channels are stacked).
    """
    if isinstance(operator, SphereGraph):
        operator = operator.L
    if sp.issparse(operator) or isinstance(operator, np.ndarray):
        A = operator.tocsr() if sp.issparse(operator) else operator
        if A.ndim != 2 or (npix is not None and A.shape[1] != npix):
            raise ValueError(f"the operator matrix has shape {A.shape}; it must act on maps of {npix} pixels")
        return lambda x: np.asarray(A @ x, dtype=np.float64)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        torch = None
    if torch is not None and isinstance(operator, torch.nn.Module):
        return _module_operator(operator)
    if callable(operator):
        return _callable_operator(operator)
    raise TypeError(f"cannot use a {type(operator).__name__} as an operator: pass a SphereGraph, a scipy sparse "
                    "matrix, a numpy array, a callable on numpy arrays or a torch.nn.Module")


def _callable_operator(fn):
    def apply(x: np.ndarray) -> np.ndarray:
        try:
            y = np.asarray(fn(x), dtype=np.float64)
            if y.ndim == 2 and y.shape[1] == x.shape[1]:
                return y
        except Exception:  # the callable only takes single maps: fall back below
            pass
        return np.stack([np.asarray(fn(x[:, i]), dtype=np.float64).reshape(-1) for i in range(x.shape[1])],
                        axis=1)
    return apply


def _module_operator(module):
    import torch

    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")

    def apply(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(x.T[:, :, None], dtype=dtype, device=device)  # [B=n, V, C=1]
            y = module(t)
        if y.ndim != 3 or y.shape[0] != x.shape[1]:
            raise ValueError(f"the module must map [batch, vertices, channels] to the same layout; "
                             f"got output shape {tuple(y.shape)} for input {tuple(t.shape)}")
        y = y.detach().to("cpu", torch.float64).numpy()  # [n, V_out, C_out]
        return np.ascontiguousarray(y.transpose(1, 0, 2).reshape(y.shape[1], -1))
    return apply


# -- the measurement -----------------------------------------------------------
def _check_args(sampling, degrees, rotation, lmax):
    if not isinstance(sampling, Sampling):
        raise TypeError(f"sampling must be a graphsphere Sampling, got {type(sampling).__name__}")
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {sorted(ROTATIONS)}, got {rotation!r}")
    lmax = rot.band_limit(sampling, lmax)
    degrees = np.atleast_1d(np.asarray(degrees, dtype=int))
    if degrees.size == 0 or degrees.min() < 1 or degrees.max() > lmax:
        raise ValueError(f"degrees must be in [1, lmax={lmax}] for {sampling.describe()}, got {degrees.tolist()}; "
                         "pass smaller degrees or a finer sampling")
    return degrees, lmax


class EquivarianceProbe:
    """Random signals and rotations, drawn and rotated once, to measure many
    operators on the same footing (what :func:`equivariance_error` and the
    kernel-width tuner use).

    >>> import graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=8)
    >>> probe = EquivarianceProbe(s, degrees=(4,), n_signals=1, n_rotations=2)
    >>> a, b = (probe.measure(gs.SphereGraph(s, k=k, kernel_width="mean")) for k in (8, 20))
    >>> bool(b.error[0] < a.error[0])
    True
    """

    def __init__(self, sampling: Sampling, degrees=(10, 50, 100, 190), n_signals: int = 4, n_rotations: int = 4,
                 seed=0, rotation: str = "accurate", lmax: int | None = None):
        degrees, lmax = _check_args(sampling, degrees, rotation, lmax)
        if int(n_signals) < 1 or int(n_rotations) < 1:
            raise ValueError(f"n_signals and n_rotations must be >= 1, got {n_signals} and {n_rotations}")
        self.sampling, self.degrees, self.lmax, self.rotation = sampling, degrees, lmax, rotation
        self.n_signals, self.n_rotations = int(n_signals), int(n_rotations)
        self.iters = ROTATIONS[rotation]
        rng = np.random.default_rng(seed)
        n = self.n_signals
        self.f, self.Rf, self.R = [], [], []
        self.floor = np.zeros((len(degrees), n * self.n_rotations))
        self.floor_direct = np.zeros_like(self.floor)
        for i, l in enumerate(degrees):
            alm = rot.random_alm(lmax, degree=int(l), n=n, seed=rng)
            f = rot.alm2map(alm, sampling, lmax)                               # [npix, n]
            Rs = rot.random_rotation(self.n_rotations, seed=rng)
            Rf = np.stack([rot.rotate(f, R, sampling, lmax, self.iters) for R in Rs])  # [n_rot, npix, n]
            nf = np.linalg.norm(f, axis=0)
            for r, R in enumerate(Rs):
                cols = slice(r * n, (r + 1) * n)
                back = rot.rotate(Rf[r], R.T, sampling, lmax, self.iters)
                exact = rot.alm2map(rot.rotate_alm(alm, R, lmax), sampling, lmax)
                self.floor[i, cols] = np.linalg.norm(back - f, axis=0) / nf
                self.floor_direct[i, cols] = np.linalg.norm(Rf[r] - exact, axis=0) / nf
            self.f.append(f)
            self.Rf.append(Rf)
            self.R.append(Rs)

    def errors(self, operator, output_sampling: Sampling | None = None) -> np.ndarray:
        """Every single error, shape (n_degrees, n_rotations * n_signals)."""
        op = map_function(operator, self.sampling.npix)
        out_s = self.sampling if output_sampling is None else output_sampling
        out_lmax = self.lmax if output_sampling is None else rot.band_limit(out_s, None)
        n = self.n_signals
        err = np.zeros_like(self.floor)
        for i in range(len(self.degrees)):
            Lf = op(self.f[i])
            if Lf.shape[0] != out_s.npix:
                raise ValueError(f"the operator's output has {Lf.shape[0]} vertices but {out_s.describe()} has "
                                 f"{out_s.npix}; pass output_sampling= for operators that change the sampling")
            ref = (Lf.reshape(Lf.shape[0], n, -1) ** 2).sum(axis=(0, 2))
            for r, R in enumerate(self.R[i]):
                RLf = rot.rotate(Lf, R, out_s, out_lmax, self.iters)
                diff = (RLf - op(self.Rf[i][r])).reshape(Lf.shape[0], n, -1)
                err[i, r * n:(r + 1) * n] = np.sqrt((diff**2).sum(axis=(0, 2)) / ref)
        return err

    def measure(self, operator, output_sampling: Sampling | None = None, label: str = "") -> EquivarianceResult:
        """The :class:`EquivarianceResult` of one operator on this probe's signals."""
        e = self.errors(operator, output_sampling)
        return EquivarianceResult(degrees=self.degrees.copy(), error=e.mean(axis=1), error_std=e.std(axis=1),
                                  floor=self.floor.mean(axis=1), floor_direct=self.floor_direct.mean(axis=1),
                                  rotation=self.rotation, n_signals=self.n_signals, n_rotations=self.n_rotations,
                                  sampling=self.sampling.describe(), label=label)


def equivariance_error(operator, sampling: Sampling, degrees=(10, 50, 100, 190), n_signals: int = 4,
                       n_rotations: int = 4, seed=0, rotation: str = "accurate", lmax: int | None = None,
                       output_sampling: Sampling | None = None, label: str = ""):
    """Mean equivariance error per degree of ``operator`` on ``sampling``.

    Parameters
    ----------
    operator : SphereGraph | sparse matrix | ndarray | callable | torch.nn.Module,
        or a dict of them (name -> operator): then all are measured on the
        same signals and rotations (rotated once) and a dict of results is
        returned.
    degrees : degrees l of the random signals (each in [1, lmax]).
    n_signals, n_rotations : random signals per degree and random rotations
        (per degree); the error is averaged over all pairs.
    seed : seeds the signals and rotations (same seed, same draws).
    rotation : "accurate" (HEALPix analysis with 3 iterations) or
        "non_iterated" (none, as in the DeepSphere papers).
    lmax : band limit of the rotations (default: ``rotation.default_lmax``).
    output_sampling : where the operator's output lives, if not on
        ``sampling`` (e.g. a network that pools).

    Returns
    -------
    EquivarianceResult (or a dict of them).
    """
    probe = EquivarianceProbe(sampling, degrees, n_signals, n_rotations, seed, rotation, lmax)
    if isinstance(operator, Mapping):
        return {k: probe.measure(v, output_sampling, label=str(k)) for k, v in operator.items()}
    return probe.measure(operator, output_sampling, label=label)


def rotation_floor(sampling: Sampling, degrees=(10, 50, 100, 190), n_signals: int = 4, n_rotations: int = 4,
                   seed=0, rotation: str = "accurate", lmax: int | None = None) -> EquivarianceResult:
    """The error of the rotations themselves, per degree, on the same random
    signals as :func:`equivariance_error` (same seed, same draws).

    Returns an :class:`EquivarianceResult` whose ``error`` is the rotate-and-
    rotate-back error (equal to ``floor``).

    >>> import graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=8)
    >>> acc = rotation_floor(s, degrees=(4,), n_signals=1, n_rotations=2)
    >>> raw = rotation_floor(s, degrees=(4,), n_signals=1, n_rotations=2, rotation="non_iterated")
    >>> bool(acc.floor[0] < raw.floor[0] / 10)
    True
    """
    probe = EquivarianceProbe(sampling, degrees, n_signals, n_rotations, seed, rotation, lmax)
    floor, direct = probe.floor.mean(axis=1), probe.floor_direct.mean(axis=1)
    return EquivarianceResult(degrees=probe.degrees, error=floor.copy(), error_std=probe.floor.std(axis=1),
                              floor=floor, floor_direct=direct, rotation=rotation, n_signals=probe.n_signals,
                              n_rotations=probe.n_rotations, sampling=sampling.describe(), label="rotation floor")

