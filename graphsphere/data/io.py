"""Maps in and out of files: NumPy ``.npy``, HEALPix FITS, NetCDF.

One reader for training, evaluation and prediction (:func:`read_maps`, which
on HEALPix models reads every file with the ``maps`` dataset's
:func:`~graphsphere.data.skymaps.read_map_file`), and one writer
(:func:`write_predictions`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..sampling import HEALPix

__all__ = ["read_maps", "map_options", "as_batch", "write_predictions"]


def as_batch(x: np.ndarray, npix: int, channels: int, what: str) -> np.ndarray:
    """[npix] / [n, npix] / [npix, C] / [C, npix] / [n, npix, C] -> [n, npix, C]."""
    if x.ndim == 1 and channels == 1:
        return x[None, :, None]
    if x.ndim == 2:
        if x.shape[1] == npix and channels == 1:
            return x[:, :, None]
        if x.shape == (npix, channels):
            return x[None]
        if x.shape == (channels, npix):  # channels first, as in multi-field FITS files
            return x.T[None]
    if x.ndim == 3 and x.shape[1:] == (npix, channels):
        return x
    raise ValueError(f"{what}: shape {tuple(x.shape)} does not fit a model on {npix} pixels with {channels} input "
                     f"channel(s); expected [n, {npix}, {channels}]" + (f", [n, {npix}] or [{npix}]"
                                                                          if channels == 1 else ""))


#: The ``maps`` dataset's options that say how its files are read; ``predict`` reads its inputs the same way.
READ_OPTIONS = ("ordering", "quantity", "regrid", "min_valid", "variables")


def map_options(data_config) -> dict:
    """How the training data's files were read (:data:`READ_OPTIONS` of a ``maps`` data config, as a
    checkpoint keeps it), as keyword arguments of :func:`read_maps`; empty for other data sets."""
    if data_config is None or getattr(data_config, "name", None) != "maps":
        return {}
    extra = dict(getattr(data_config, "model_extra", None) or {})
    return {k: extra[k] for k in READ_OPTIONS if extra.get(k) is not None}


def read_maps(path, sampling, channels: int, var: str | None = None, fits_fields: str = "auto", *,
              ordering: str | None = None, quantity: str = "intensive", regrid: str = "conservative",
              min_valid: float = 0.0, variables=()) -> np.ndarray:
    """Maps from ``.npy``, HEALPix ``.fits`` or NetCDF ``.nc``, as ``[n, npix, C]``.

    ``path`` may be a list of files: their channels are concatenated (a file
    of one map serves every sample), as the ``maps`` dataset does. On a
    HEALPix model every file goes through the ``maps`` dataset's reader,
    :func:`graphsphere.data.skymaps.read_map_file`: NESTED order at the
    model's nside (healpy converts RING FITS files; ``.npy`` and HEALPix
    NetCDF in ``ordering``, by default the model's; another nside is
    resampled as ``quantity`` says, and said so), ``UNSEEN`` and fill values
    as NaN, NetCDF latitude-longitude fields regridded (``regrid``,
    ``min_valid``); FITS fields are channels or samples (``fits_fields``;
    ``auto``: channels when their number fits the model, else samples).
    ``var`` (or, in order, the NetCDF files' ``variables``) names the NetCDF
    variable. Other samplings read ``.npy`` and NetCDF arrays whose pixel
    axis is the model's.
    """
    if isinstance(path, (list, tuple)) and len(path) == 1:
        path = path[0]
    kw = dict(ordering=ordering, quantity=quantity, regrid=regrid, min_valid=min_valid)
    if isinstance(path, (list, tuple)):
        names = iter(variables)
        parts = [read_maps(p, sampling, None, var if var is not None or not str(p).lower().endswith((".nc", ".cdf"))
                           else next(names, None), fits_fields, **kw) for p in path]
        n = max(p.shape[0] for p in parts)
        parts = [np.repeat(p, n, axis=0) if p.shape[0] == 1 else p for p in parts]
        if len({p.shape[0] for p in parts}) != 1:
            raise ValueError(f"the input files hold different numbers of maps: {[p.shape[0] for p in parts]}")
        return as_batch(np.concatenate(parts, axis=2), sampling.npix, channels, " + ".join(map(str, path)))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path.resolve()}")
    name = path.name.lower()
    if var is None and name.endswith((".nc", ".cdf")) and variables:
        var = variables[0]
    if not name.endswith((".npy", ".fits", ".fit", ".fits.gz", ".nc", ".cdf")):
        raise ValueError(f"{path}: unknown input format; use .npy, .fits or .nc")
    raw = np.load(path, mmap_mode="r") if name.endswith(".npy") else None
    if not isinstance(sampling, HEALPix) or (raw is not None and not sampling.full_sphere
                                             and sampling.npix in raw.shape[:2]):
        if name.endswith((".fits", ".fit", ".fits.gz")):
            raise ValueError(f"{path}: FITS maps are HEALPix maps, but the model is on {sampling!r}")
        x = raw if raw is not None else _netcdf_array(path, sampling, var)   # the model's own pixels
    else:
        import healpy as hp

        from .skymaps import read_map_file

        fields = "samples" if fits_fields == "samples" else "channels"
        kw["ordering"] = ordering or ("nested" if sampling.nest else "ring")
        x = read_map_file(path, sampling.nside, var=var, fields=fields, **kw)   # [n, full-sky npix, c], NESTED
        if not sampling.nest:
            x = np.stack([np.stack([hp.reorder(x[i, :, c], n2r=True) for c in range(x.shape[2])], -1)
                          for i in range(x.shape[0])])
        x = x[:, sampling.pixels]  # partial sky: the model's pixels
        one_map_of_fields = x.shape[0] == 1 and name.endswith((".fits", ".fit", ".fits.gz"))
        if one_map_of_fields and fits_fields == "auto" and channels is not None and x.shape[2] != channels:
            x = x[0].T[:, :, None]                                       # several fields: samples
        elif raw is not None and raw.ndim == 2 and channels not in (None, 1) and raw.shape[0] == channels:
            x = x[:, :, 0].T[None]                                       # [C, npix]: channels first
    x = np.asarray(x)
    if channels is None:  # one of several files: any channel count, [n, npix, c]
        return x[None, :, None] if x.ndim == 1 else (x[:, :, None] if x.ndim == 2 else x)
    return as_batch(x, sampling.npix, channels, str(path))


def _netcdf_array(path: Path, sampling, var: str | None) -> np.ndarray:
    from scipy.io import netcdf_file

    from .skymaps import netcdf_variable

    with netcdf_file(path, "r", mmap=False) as f:   # a map: a variable with the model's pixel count on an axis
        var = netcdf_variable(f, path, var, lambda f, v: sampling.npix in f.variables[v].shape)
        return np.array(f.variables[var][:])


def write_predictions(pred: np.ndarray, path, sampling, task: str) -> Path:
    """Write predictions to ``.npy``, NetCDF ``.nc`` or HEALPix ``.fits``.

    FITS holds maps: one column per input map, the predicted class
    (segmentation) or value (dense regression with one output) per pixel;
    partial skies are written as partial maps; pixels without any observed
    input are ``UNSEEN`` (NaN in ``.npy`` and ``.nc``). Every file is written
    to a temporary name and renamed: a crash leaves no half file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if not name.endswith((".npy", ".nc", ".fits", ".fit")):
        raise ValueError(f"{path}: unknown output format; use .npy, .nc or .fits")
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        _write(pred, tmp, path, sampling, task)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write(pred: np.ndarray, path: Path, shown: Path, sampling, task: str) -> None:
    s, name = sampling, shown.name.lower()
    dense = pred.ndim == 3
    if name.endswith(".npy"):
        with open(path, "wb") as f:
            np.save(f, pred)
    elif name.endswith(".nc"):
        from scipy.io import netcdf_file

        with netcdf_file(path, "w", version=2) as f:
            f.createDimension("sample", pred.shape[0])
            dims = ["sample"]
            if dense:
                f.createDimension("pixel", pred.shape[1])
                dims.append("pixel")
                pix = f.createVariable("pixel", "i", ("pixel",))
                pix[:] = np.asarray(getattr(s, "pixels", np.arange(s.npix)), dtype=np.int32)
            last = "output" if task == "regression" else "class"
            f.createDimension(last, pred.shape[-1])
            v = f.createVariable("prediction", "f", tuple(dims + [last]))
            v[:] = pred.astype(np.float32)
            v.description = ("probability per class" if task != "regression" else "predicted value")
            f.task = task
            f.sampling = repr(s)
            if isinstance(s, HEALPix):
                f.nside, f.ordering = s.nside, s.order
    elif name.endswith((".fits", ".fit")):
        import healpy as hp

        if not dense or not isinstance(s, HEALPix):
            raise ValueError(f"{shown}: FITS holds HEALPix maps, but this model predicts "
                             f"{'non-HEALPix maps' if dense else 'one vector per map'} (shape {pred.shape}); "
                             "write .npy or .nc instead")
        missing = ~np.isfinite(pred).all(-1)                 # pixels without inputs: UNSEEN in the file
        if task == "segmentation":
            maps = np.where(missing, hp.UNSEEN, np.nan_to_num(pred).argmax(-1)).astype(np.float32)
        elif pred.shape[-1] == 1:
            maps = np.where(missing, hp.UNSEEN, pred[..., 0]).astype(np.float32)
        else:
            raise ValueError(f"{shown}: {pred.shape[-1]} outputs per pixel; FITS takes one map per input here, "
                             "write .npy or .nc instead")
        full = np.full((maps.shape[0], 12 * s.nside**2), hp.UNSEEN, dtype=np.float32)
        full[:, s.pixels] = maps
        hp.write_map(str(path), list(full), nest=s.nest, partial=not s.full_sphere, overwrite=True,
                     column_names=[f"MAP{i}" for i in range(len(full))], dtype=np.float32)
