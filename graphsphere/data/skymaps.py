"""Your own sky maps as a training set: files in, masks and missing values, and spatial splits of one sky.

The ``maps`` dataset of the training engine (``data: {name: maps, ...}``) reads HEALPix FITS files
(any ordering: healpy converts; ``UNSEEN`` is missing), ``.npy`` arrays and NetCDF variables, brings
them to one resolution (``healpy.ud_grade``: the mean of the children for intensive quantities such as
a temperature, their sum for extensive ones such as counts) and NESTED order, and says what it did.
Missing values are NaN throughout: in the inputs they are filled (and flagged) by the engine
(``data.missing_inputs``), in the targets they are left out of every loss and metric.

Two ways to split:

* ``split: maps``: the samples (maps) are split at random, as for any data set;
* ``split: regions``: one sky (or several, e.g. the months of a climatology), divided into
  train/validation/test *regions*: the parent pixels at nside ``region_nside`` are drawn at random
  (seeded) into the three sets, optionally with a ``buffer`` of pixels left out of training around the
  other regions (spatially correlated neighbours would leak the answer). Every split sees the full sky
  as input; its loss and metrics count only its own pixels (per-pixel weights).

>>> import numpy as np
>>> codes = region_codes(nside=8, region_nside=2, fractions=(0.25, 0.25), seed=0)
>>> codes.shape, sorted(np.unique(codes).tolist())                  # train 0, val 1, test 2
((768,), [0, 1, 2])
>>> bool(np.all(codes.reshape(48, 16) == codes.reshape(48, 16)[:, :1]))   # whole parent pixels
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import healpy as hp
import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt

from ..sampling import HEALPix, check_nside
from .registry import Params, Splits, register_dataset

__all__ = ["read_map_file", "region_codes", "SkyDataset", "build_maps", "SPLITS"]

SPLITS = ("train", "val", "test")


def _say(message: str) -> None:
    print(f"[maps] {message}", flush=True)


def read_map_file(path, nside: int | None = None, quantity: str = "intensive", fields: str = "channels",
                  ordering: str = "nested", var: str | None = None) -> np.ndarray:
    """The maps in a file as float64 ``[n, 12 nside^2, C]``, NESTED, NaN where missing.

    ``.fits``: HEALPix maps read by healpy in NESTED order (it converts RING files by their
    ``ORDERING`` header); ``UNSEEN`` becomes NaN; several fields are channels (``fields="channels"``,
    e.g. I, Q, U) or samples (``"samples"``, e.g. months). ``.npy``: ``[npix]``, ``[n, npix]`` or
    ``[n, npix, C]`` in ``ordering`` (``"nested"`` or ``"ring"``). ``.nc``: the variable ``var``
    with a last axis of ``12 nside^2`` pixels. With ``nside``, maps of another resolution are
    resampled (``healpy.ud_grade``; ``quantity="extensive"`` sums children instead of averaging).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.npy")
    >>> np.save(p, np.arange(48.0))
    >>> read_map_file(p, nside=1).shape                     # nside 2 -> 1: means of 4 children
    [maps] m.npy: nside 2 -> 1 (ud_grade, mean of the 4 children: intensive)
    (1, 12, 1)
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"map file not found: {path.resolve()}")
    if quantity not in ("intensive", "extensive"):
        raise ValueError(f"quantity must be 'intensive' or 'extensive', got {quantity!r}")
    name = path.name.lower()
    if name.endswith((".fits", ".fit", ".fits.gz")):
        try:
            m = np.atleast_2d(hp.read_map(str(path), field=None, nest=True, dtype=np.float64))
        except Exception as e:  # noqa: BLE001 - astropy/healpy raise many kinds for a bad file
            raise ValueError(f"{path}: not a readable HEALPix FITS map ({type(e).__name__}: {e})") from None
        m = m[:, :, None] if fields == "samples" else m.T[None]           # [n, npix, C]
    elif name.endswith(".npy"):
        m = np.load(path, allow_pickle=False).astype(np.float64)
        m = m[None, :, None] if m.ndim == 1 else (m[:, :, None] if m.ndim == 2 else m)
        if ordering not in ("nested", "ring"):
            raise ValueError(f"ordering must be 'nested' or 'ring', got {ordering!r}")
        if ordering == "ring":
            m = np.stack([np.stack([hp.reorder(m[i, :, c], r2n=True) for c in range(m.shape[2])], -1)
                          for i in range(m.shape[0])])
            _say(f"{path.name}: RING -> NESTED")
    elif name.endswith(".nc"):
        from scipy.io import netcdf_file

        with netcdf_file(path, "r", mmap=False) as f:
            if var is None or var not in f.variables:
                raise ValueError(f"{path}: give the variable (var=) among {sorted(f.variables)}")
            m = np.array(f.variables[var][:], dtype=np.float64)
        m = m[None, :, None] if m.ndim == 1 else (m[:, :, None] if m.ndim == 2 else m)
    else:
        raise ValueError(f"{path}: unknown map format; use .fits, .npy or .nc (NetCDF latitude-longitude fields: "
                         "regrid them first with graphsphere.data.regrid)")
    if m.ndim != 3:
        raise ValueError(f"{path}: expected maps [n, npix] or [n, npix, channels], got shape {m.shape}")
    try:
        have = hp.npix2nside(m.shape[1])
    except ValueError:
        raise ValueError(f"{path}: {m.shape[1]} pixels per map is not a full HEALPix sky (12 nside^2)") from None
    m[m == hp.UNSEEN] = np.nan
    if nside is not None and check_nside(nside) != have:
        power = -2 if quantity == "extensive" else None
        m = np.stack([np.stack([_ud_grade(m[i, :, c], nside, power) for c in range(m.shape[2])], -1)
                      for i in range(m.shape[0])])
        how = ("sum" if quantity == "extensive" else "mean") if nside < have else "copies"
        _say(f"{path.name}: nside {have} -> {nside} (ud_grade, {how} of the {max(have, nside)**2 // min(have, nside)**2} "
             f"{'children' if nside < have else 'children of each parent'}: {quantity})")
    return m


def _ud_grade(m: np.ndarray, nside: int, power) -> np.ndarray:
    bad = ~np.isfinite(m)
    out = hp.ud_grade(np.where(bad, hp.UNSEEN, m), nside, order_in="NESTED", order_out="NESTED", power=power,
                      pess=False)
    return np.where(out == hp.UNSEEN, np.nan, out)


def region_codes(nside: int, region_nside: int, fractions=(0.15, 0.15), seed: int = 0, buffer: int = 0) -> np.ndarray:
    """Split code of every NESTED pixel at ``nside``: 0 train, 1 validation, 2 test, -1 buffer.

    The ``12 region_nside^2`` parent pixels are shuffled (seeded) and the first ``fractions[0]`` of
    them go to validation, the next ``fractions[1]`` to test, the rest to training. ``buffer``:
    training pixels within that many neighbour steps of a validation or test pixel become -1 (left
    out everywhere).
    """
    nside, region_nside = check_nside(nside), check_nside(region_nside)
    if region_nside > nside:
        raise ValueError(f"region_nside {region_nside} must be at most the maps' nside {nside}")
    n_parent = 12 * region_nside**2
    n_val, n_test = (int(round(f * n_parent)) for f in fractions)
    if n_val + n_test >= n_parent:
        raise ValueError(f"the val/test fractions {fractions} leave no training region out of {n_parent} "
                         f"(region_nside {region_nside}); use a finer region_nside or smaller fractions")
    order = np.random.default_rng([int(seed), 17]).permutation(n_parent)
    parent_code = np.zeros(n_parent, dtype=np.int64)
    parent_code[order[:n_val]] = 1
    parent_code[order[n_val:n_val + n_test]] = 2
    codes = np.repeat(parent_code, (nside // region_nside) ** 2)
    if buffer:
        held = codes > 0
        near = held.copy()
        for _ in range(int(buffer)):
            nb = hp.get_all_neighbours(nside, np.flatnonzero(near), nest=True).ravel()
            near[nb[nb >= 0]] = True
        codes[near & (codes == 0)] = -1
    return codes


class SkyDataset:
    """Samples ``(x [npix, C], y, weight [npix])`` of full-sky maps, the weights keeping one split's
    pixels (and the user's own weights or mask)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray, indices=None):
        self.x, self.y, self.weight = x, y, weight
        self.indices = np.arange(len(x)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i):
        import torch

        j = int(self.indices[i])
        y = self.y[j]
        return (torch.from_numpy(np.ascontiguousarray(self.x[j], dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64 if y.dtype.kind in "iu" else np.float32)),
                torch.from_numpy(np.ascontiguousarray(self.weight[j], dtype=np.float32)))


class MapsParams(Params):
    #: Input files (their channels are concatenated): .fits, .npy or .nc; a file of one map serves every sample.
    inputs: list[str] = Field(min_length=1)
    #: Per-pixel targets: values (regression; NaN or UNSEEN = unknown) or integer labels (segmentation; -1 = none).
    targets: str
    #: Optional per-pixel weights or 0/1 mask of the targets (0: left out).
    weights: str | None = None
    #: Resample every file to this nside (default: the sampling's, else the inputs').
    nside: PositiveInt | None = None
    quantity: Literal["intensive", "extensive"] = "intensive"
    #: FITS files with several fields: channels (I, Q, U) or samples (months).
    fits_fields: Literal["channels", "samples"] = "channels"
    #: Pixel order of .npy files.
    ordering: Literal["nested", "ring"] = "nested"
    #: NetCDF variables, in the order of inputs then targets (when .nc files are given).
    variables: list[str] = []
    split: Literal["regions", "maps"] = "regions"
    region_nside: PositiveInt = 2
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    buffer: NonNegativeInt = 0


@register_dataset("maps", params=MapsParams,
                  hint="give data.inputs (FITS, .npy or .nc maps) and data.targets; see docs/tutorials/your_maps.md")
def build_maps(sampling, task, seed, *, inputs, targets, weights, nside, quantity, fits_fields, ordering, variables,
               split, region_nside, val_fraction, test_fraction, buffer) -> Splits:
    """Full-sky maps from files, split by sky regions or by maps (see the module docstring)."""
    from .datasets import check_labels

    if task == "classification":
        raise ValueError("the maps dataset has per-pixel targets: use task regression or segmentation")
    if sampling is not None and not (isinstance(sampling, HEALPix) and sampling.full_sphere):
        raise ValueError(f"the maps dataset is on full-sky HEALPix maps; the config's sampling is {sampling!r}")
    if sampling is not None and not sampling.nest:
        raise ValueError("the maps dataset works in NESTED order (files are converted): set sampling.nest: true")
    nside = nside or (sampling.nside if sampling is not None else None)
    names = iter(variables)
    kw = dict(quantity=quantity, fields=fits_fields, ordering=ordering)
    xs = []
    for p in inputs:  # the first file sets the resolution when neither the config nor the sampling does
        xs.append(read_map_file(p, nside, var=next(names, None) if p.endswith(".nc") else None, **kw))
        nside = nside or hp.npix2nside(xs[0].shape[1])
    n = max(x.shape[0] for x in xs)
    xs = [np.repeat(x, n, axis=0) if x.shape[0] == 1 else x for x in xs]   # one map (a latitude, a mask) for all
    if len({x.shape[0] for x in xs}) != 1:
        raise ValueError(f"the input files hold different numbers of maps: {[x.shape[0] for x in xs]}")
    x = np.concatenate(xs, axis=2)
    label_quantity = "intensive" if task == "regression" else quantity
    y = read_map_file(targets, nside, var=next(names, None) if targets.endswith(".nc") else None,
                      **dict(kw, quantity=label_quantity))
    if y.shape[0] == 1 and x.shape[0] > 1:
        y = np.repeat(y, x.shape[0], axis=0)               # one target map for every input sample
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{targets}: {y.shape[0]} target maps for {x.shape[0]} input maps")
    w = np.ones(y.shape[:2])
    if weights is not None:
        w = read_map_file(weights, nside, **kw)[..., 0]
        w = np.broadcast_to(np.nan_to_num(w, nan=0.0), y.shape[:2]).copy()
        if (w < 0).any():
            raise ValueError(f"{weights}: weights must be >= 0 (0 leaves a pixel out)")
    if task == "segmentation":
        if y.shape[2] != 1:
            raise ValueError(f"{targets}: segmentation takes one label map per sample, got {y.shape[2]} channels")
        labels = y[..., 0]
        known = np.isfinite(labels)
        if np.any(known & (labels != np.round(labels))):
            raise ValueError(f"{targets}: segmentation labels must be integers (classes 0..C-1, -1 for none)")
        y = np.where(known, labels, -1).astype(np.int64)
        n_out = check_labels([y], None, ignore=-1)
    else:
        n_out = y.shape[2]
    s = sampling or HEALPix(nside)
    observed = np.isfinite(x).any(axis=2).mean()
    _say(f"{x.shape[0]} map(s) at nside {nside}, {x.shape[2]} input channel(s), {observed:.1%} of the input pixels "
         f"observed; split by {split}")
    if split == "maps":
        from .datasets import _split_indices

        tr, va, te = _split_indices(len(x), (val_fraction, test_fraction), seed)
        parts = [SkyDataset(x, y, w, idx) if idx.size else None for idx in (tr, va, te)]
    else:
        codes = region_codes(nside, region_nside, (val_fraction, test_fraction), seed, buffer)
        parts = []
        for k in range(3):
            wk = w * (codes == k)[None, :]
            parts.append(SkyDataset(x, y, wk) if (wk > 0).any() else None)
        counts = [int((codes == k).sum()) for k in range(3)]
        _say(f"regions at nside {region_nside}: {counts[0]} training, {counts[1]} validation, {counts[2]} test pixels"
             + (f", {int((codes < 0).sum())} in the buffer" if buffer else ""))
    return Splits(*parts, sampling=s, in_channels=x.shape[2], n_out=n_out,
                  info={"split": split, "nside": nside})
