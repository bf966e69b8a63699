"""Your own sky maps as a training set: files in, masks and missing values, and spatial splits of one sky.

The ``maps`` dataset of the training engine (``data: {name: maps, ...}``) reads HEALPix FITS files
(any ordering: healpy converts; ``UNSEEN`` is missing), ``.npy`` arrays and NetCDF variables (HEALPix
pixels, or latitude-longitude fields regridded onto HEALPix with :mod:`graphsphere.data.regrid`), brings
them to one resolution (``healpy.ud_grade``: the mean of the children for intensive quantities such as
a temperature, their sum for extensive ones such as counts) and NESTED order, and says what it did.
The same reader (:func:`read_map_file`) serves ``predict``. Missing values are NaN throughout: in the
inputs they are filled (and flagged) by the engine (``data.missing_inputs``), in the targets they are
left out of every loss and metric; ``weights`` (a file) and ``pixels`` (a subset of pixel ids) restrict
the loss and metrics further.

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
from ..sampling.healpix import unseen
from .registry import Params, Splits, register_dataset

__all__ = ["read_map_file", "pixel_subset", "region_codes", "SkyDataset", "build_maps", "SPLITS"]

SPLITS = ("train", "val", "test")


def _say(message: str) -> None:
    print(f"[maps] {message}", flush=True)


def read_map_file(path, nside: int | None = None, quantity: str = "intensive", fields: str = "channels",
                  ordering: str = "nested", var: str | None = None, regrid: str = "conservative",
                  min_valid: float = 0.0) -> np.ndarray:
    """The maps in a file as float64 ``[n, 12 nside^2, C]``, NESTED, NaN where missing.

    ``.fits``: HEALPix maps read by healpy in NESTED order (it converts RING files by their
    ``ORDERING`` header); ``UNSEEN`` becomes NaN; several fields are channels (``fields="channels"``,
    e.g. I, Q, U) or samples (``"samples"``, e.g. months). ``.npy``: ``[npix]``, ``[n, npix]`` or
    ``[n, npix, C]`` (or one map ``[npix, C]``) in ``ordering`` (``"nested"`` or ``"ring"``). ``.nc``:
    the variable ``var`` (by default the file's only map variable), either HEALPix maps (a last axis
    of ``12 nside^2`` pixels, in ``ordering``) or a latitude-longitude field ``[..., lat, lon]``
    (dimensions named lat/latitude/y and lon/longitude/x, or whose coordinate variables say
    ``degrees_north``/``degrees_east``; leading dimensions such as time are samples; ``_FillValue``,
    ``missing_value`` and ``valid_range`` are missing), which is regridded onto HEALPix(``nside``,
    NESTED) by :class:`~graphsphere.data.regrid.Regridder` (``regrid="conservative"``: area-weighted
    means, or ``"bilinear"``), missing cells left out of every mean and pixels that see none (or a
    valid share below ``min_valid``) NaN; such input needs ``nside``. With ``nside``, maps of another
    resolution are resampled (``healpy.ud_grade``; ``quantity="extensive"`` sums children instead of
    averaging; an extensive lat-lon field is regridded as a density, so its total is kept).

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
    elif name.endswith((".npy", ".nc", ".cdf")):
        if ordering not in ("nested", "ring"):
            raise ValueError(f"ordering must be 'nested' or 'ring', got {ordering!r}")
        if name.endswith(".npy"):
            m = np.load(path, allow_pickle=False).astype(np.float64)
            if m.ndim == 2 and _is_npix(m.shape[0]) and not _is_npix(m.shape[1]):
                m = m[None]                                                 # one map [npix, C]
        else:
            m, latlon = _read_netcdf(path, var, nside, quantity, regrid, min_valid)
            if latlon:
                return m
        m = m[None, :, None] if m.ndim == 1 else (m[:, :, None] if m.ndim == 2 else m)
        if ordering == "ring" and m.ndim == 3 and _is_npix(m.shape[1]):
            m = np.stack([np.stack([hp.reorder(m[i, :, c], r2n=True) for c in range(m.shape[2])], -1)
                          for i in range(m.shape[0])])
            _say(f"{path.name}: RING -> NESTED")
    else:
        raise ValueError(f"{path}: unknown map format; use .fits, .npy or .nc (HEALPix maps, or latitude-longitude "
                         "fields, regridded)")
    if m.ndim != 3:
        raise ValueError(f"{path}: expected maps [n, npix] or [n, npix, channels], got shape {m.shape}")
    try:
        have = hp.npix2nside(m.shape[1])
    except ValueError:
        raise ValueError(f"{path}: {m.shape[1]} pixels per map is not a full HEALPix sky (12 nside^2)") from None
    m[unseen(m)] = np.nan
    if nside is not None and check_nside(nside) != have:
        power = -2 if quantity == "extensive" else None
        m = np.stack([np.stack([_ud_grade(m[i, :, c], nside, power) for c in range(m.shape[2])], -1)
                      for i in range(m.shape[0])])
        how = ("sum" if quantity == "extensive" else "mean") if nside < have else "copies"
        k = max(have, nside) ** 2 // min(have, nside) ** 2
        _say(f"{path.name}: nside {have} -> {nside} (ud_grade, {how} of the {k} "
             f"{'children' if nside < have else 'children of each parent'}: {quantity})")
    return m


def _is_npix(n: int) -> bool:
    k = n // 12
    return n > 0 and n % 12 == 0 and k & (k - 1) == 0 and round(k ** 0.5) ** 2 == k


def _text(value) -> str:
    value = value.tobytes() if isinstance(value, np.ndarray) and value.dtype.kind in "SU" else value
    return (value.decode("latin-1") if isinstance(value, bytes) else str(value)).strip().lower()


def _axis_kind(f, dim: str) -> str | None:
    """``"lat"``, ``"lon"`` or None: a dimension by its name or by its coordinate variable's attributes."""
    name = dim.lower()
    coord = f.variables.get(dim)
    attrs = {k: _text(v) for k, v in coord._attributes.items()} if coord is not None else {}
    units, std, axis = attrs.get("units", ""), attrs.get("standard_name", ""), attrs.get("axis", "")
    if name in ("lat", "latitude", "y") or std == "latitude" or units in ("degrees_north", "degree_north",
                                                                         "degree_n", "degrees_n"):
        return "lat"
    if name in ("lon", "longitude", "x") or std == "longitude" or units in ("degrees_east", "degree_east",
                                                                          "degree_e", "degrees_e"):
        return "lon"
    return "lat" if axis == "y" else ("lon" if axis == "x" else None)


_REGRIDDERS: dict = {}


def netcdf_variable(f, path, var: str | None, is_map) -> str:
    """The name of the variable to read from an open NetCDF file ``f``: ``var``, checked, or else the
    file's one variable that ``is_map(f, name)`` accepts (both readers of maps use it)."""
    names = [v for v in f.variables if v not in f.dimensions]
    if var is None:
        maps = [v for v in names if is_map(f, v)]
        if len(maps) != 1:
            raise ValueError(f"{path}: give the variable to read (data.variables in a config, --var for predict, "
                             f"var= in Python) among {names} (maps among them: {maps})")
        var = maps[0]
    if var not in f.variables:
        raise ValueError(f"{path}: no variable {var!r}; it has {names}")
    return var


def _read_netcdf(path: Path, var, nside, quantity: str, method: str, min_valid: float) -> tuple[np.ndarray, bool]:
    """A NetCDF variable: HEALPix values as stored (``latlon`` False), or a lat-lon field regridded
    to ``[n, 12 nside^2, 1]`` NESTED (``latlon`` True). Fill values are NaN either way."""
    from scipy.io import netcdf_file

    from .climate import _decode
    from .regrid import LatLonGrid, Regridder

    def kind(f, v):
        dims, shape = f.variables[v].dimensions, f.variables[v].shape
        if len(dims) >= 2 and sorted(_axis_kind(f, d) or "" for d in dims[-2:]) == ["lat", "lon"]:
            return "latlon"
        return "healpix" if shape and _is_npix(shape[-1]) else None

    with netcdf_file(path, "r", mmap=False) as f:
        var = netcdf_variable(f, path, var, kind)
        how, v = kind(f, var), f.variables[var]
        if how != "latlon":
            return _decode(v).astype(np.float64), False
        dims = v.dimensions[-2:]
        if nside is None:
            raise ValueError(f"{path}: {var} is a latitude-longitude field {v.shape}; say the HEALPix nside to "
                             "regrid it to: data.nside (or sampling.nside) in a config, nside= in Python")
        missing = [d for d in dims if d not in f.variables]
        if missing:
            raise ValueError(f"{path}: {var} is on dimensions {v.dimensions} but {missing} have no coordinate "
                             "variable: the latitudes and longitudes are needed to regrid it")
        lat, lon = (np.asarray(f.variables[d].data, dtype=np.float64) for d in dims)
        values = _decode(v).astype(np.float64)
        if _axis_kind(f, dims[0]) == "lon":
            lat, lon, values = lon, lat, np.swapaxes(values, -1, -2)
    values = values.reshape((-1,) + values.shape[-2:])
    d = np.diff(lon)
    if lon.size > 2 and abs(lon[-1] - lon[0] - 360) < 0.01 * np.median(np.abs(d)):
        lon, values = lon[:-1], values[..., :-1]                         # a last column repeating the first
    try:
        grid = LatLonGrid(lat, lon)
    except ValueError as e:
        raise ValueError(f"{path}: the coordinates of {var} are not a latitude-longitude grid ({e})") from None
    key = (lat.tobytes(), lon.tobytes(), int(check_nside(nside)), method)
    if key not in _REGRIDDERS:
        if method not in ("conservative", "bilinear"):
            raise ValueError(f"regrid must be 'conservative' or 'bilinear', got {method!r}")
        _REGRIDDERS.clear()                                             # one grid at a time is the usual case
        _REGRIDDERS[key] = Regridder(grid, HEALPix(nside, nest=True), method=method)
    area = grid.area.reshape(grid.shape) if quantity == "extensive" else 1.0
    out = _REGRIDDERS[key].apply(values / area, min_valid=min_valid)
    if quantity == "extensive":
        out = out * hp.nside2pixarea(nside)
    how = f"{method} regridding" + (", as a density: extensive" if quantity == "extensive" else "")
    _say(f"{path.name}: {var} {values.shape[0]} x {grid.shape[0]} x {grid.shape[1]} latitude-longitude -> HEALPix "
         f"nside {nside} NESTED ({how}; {np.isnan(values).mean():.1%} of the cells missing, "
         f"{np.isnan(out).mean():.1%} of the pixels NaN)")
    return out[:, :, None], True


def _ud_grade(m: np.ndarray, nside: int, power) -> np.ndarray:
    bad = ~np.isfinite(m)
    out = hp.ud_grade(np.where(bad, hp.UNSEEN, m), nside, order_in="NESTED", order_out="NESTED", power=power,
                      pess=False)
    return np.where(out == hp.UNSEEN, np.nan, out)


def pixel_subset(path, nside: int, pixels_nside: int | None = None) -> np.ndarray:
    """A 0/1 weight per NESTED pixel at ``nside``: 1 on the pixel ids in ``path`` (a ``.npy`` of NESTED
    ids at ``pixels_nside``, by default ``nside``; a coarser id keeps all its children)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"pixel subset file not found: {path.resolve()}")
    ids = np.load(path, allow_pickle=False).ravel()
    at = check_nside(pixels_nside or nside)
    if at > nside:
        raise ValueError(f"{path}: pixels_nside {at} is finer than the maps' nside {nside}")
    if ids.size == 0 or ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= 12 * at**2:
        raise ValueError(f"{path}: pixel ids must be a non-empty array of integers in [0, {12 * at**2}) "
                         f"(NESTED, nside {at}); got dtype {ids.dtype}, {ids.size} values")
    keep = np.zeros(12 * at**2)
    keep[ids] = 1.0
    keep = np.repeat(keep, (nside // at) ** 2)
    _say(f"{path.name}: loss and metrics on {int(keep.sum())} of {keep.size} pixels ({keep.mean():.1%} of the sky)")
    return keep


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
    #: Optional .npy of NESTED HEALPix pixel ids (at pixels_nside, default the maps' nside): the loss and metrics
    #: count only these pixels (a sampling subset); the inputs stay full-sky.
    pixels: str | None = None
    pixels_nside: PositiveInt | None = None
    #: Resample every file to this nside (default: the sampling's, else the inputs'); needed for lat-lon NetCDF.
    nside: PositiveInt | None = None
    quantity: Literal["intensive", "extensive"] = "intensive"
    #: NetCDF latitude-longitude fields onto HEALPix: area-weighted means, or bilinear interpolation.
    regrid: Literal["conservative", "bilinear"] = "conservative"
    #: ... a pixel whose share of valid (not missing) cells is below this is NaN (0: any valid cell will do).
    min_valid: float = Field(0.0, ge=0, le=1)
    #: FITS files with several fields: channels (I, Q, U) or samples (months).
    fits_fields: Literal["channels", "samples"] = "channels"
    #: Pixel order of .npy files and HEALPix NetCDF variables.
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
def build_maps(sampling, task, seed, *, inputs, targets, weights, pixels, pixels_nside, nside, quantity, regrid,
               min_valid, fits_fields, ordering, variables, split, region_nside, val_fraction, test_fraction,
               buffer) -> Splits:
    """Full-sky maps from files, split by sky regions or by maps (see the module docstring)."""
    from .datasets import check_labels

    if task == "classification":
        raise ValueError("the maps dataset has per-pixel targets: use task regression or segmentation")
    if sampling is not None and not (isinstance(sampling, HEALPix) and sampling.full_sphere):
        raise ValueError(f"the maps dataset is on full-sky HEALPix maps; the config's sampling is {sampling!r} "
                         "(to train and score on part of the sky only, keep a full-sky sampling and give "
                         "data.pixels, data.weights or NaN targets)")
    if sampling is not None and not sampling.nest:
        raise ValueError("the maps dataset works in NESTED order (files are converted): set sampling.nest: true")
    nside = nside or (sampling.nside if sampling is not None else None)
    names = iter(variables)
    kw = dict(quantity=quantity, fields=fits_fields, ordering=ordering, regrid=regrid, min_valid=min_valid)
    xs = []
    for p in inputs:  # the first file sets the resolution when neither the config nor the sampling does
        xs.append(read_map_file(p, nside, var=next(names, None) if p.lower().endswith((".nc", ".cdf")) else None, **kw))
        nside = nside or hp.npix2nside(xs[0].shape[1])
    n = max(x.shape[0] for x in xs)
    xs = [np.repeat(x, n, axis=0) if x.shape[0] == 1 else x for x in xs]   # one map (a latitude, a mask) for all
    if len({x.shape[0] for x in xs}) != 1:
        raise ValueError(f"the input files hold different numbers of maps: {[x.shape[0] for x in xs]}")
    x = np.concatenate(xs, axis=2)
    label_quantity = "intensive" if task == "regression" else quantity
    y = read_map_file(targets, nside, var=next(names, None) if targets.lower().endswith((".nc", ".cdf")) else None,
                      **dict(kw, quantity=label_quantity))
    if y.shape[0] == 1 and x.shape[0] > 1:
        y = np.repeat(y, x.shape[0], axis=0)               # one target map for every input sample
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{targets}: {y.shape[0]} target maps for {x.shape[0]} input maps")
    w = np.ones(y.shape[:2])
    if weights is not None:
        w = read_map_file(weights, nside, **dict(kw, quantity="intensive"))[..., 0]   # a weight is a mean
        w = np.broadcast_to(np.nan_to_num(w, nan=0.0), y.shape[:2]).copy()
        if (w < 0).any():
            raise ValueError(f"{weights}: weights must be >= 0 (0 leaves a pixel out)")
    if pixels is not None:
        w = w * pixel_subset(pixels, nside, pixels_nside)[None, :]
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
