"""Maps in and out of files: NumPy ``.npy``, HEALPix FITS, NetCDF.

One reader (:func:`read_maps`) for training, evaluation and prediction, and
one writer (:func:`write_predictions`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..sampling import HEALPix

__all__ = ["read_maps", "as_batch", "write_predictions"]


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


def read_maps(path, sampling, channels: int, var: str | None = None, fits_fields: str = "auto") -> np.ndarray:
    """Maps from ``.npy``, HEALPix ``.fits`` or NetCDF ``.nc``, as ``[n, npix, C]``.

    ``path`` may be a list of files: their channels are concatenated (a file
    of one map serves every sample), as the ``maps`` dataset does. FITS is
    read in NESTED order at the model's nside (healpy converts RING files;
    another nside is resampled and said so), ``UNSEEN`` as NaN; its fields
    are channels or samples (``fits_fields``; ``auto``: channels when their
    number fits the model, else samples).
    """
    if isinstance(path, (list, tuple)) and len(path) == 1:
        path = path[0]
    if isinstance(path, (list, tuple)):
        parts = [read_maps(p, sampling, None, var, fits_fields) for p in path]
        n = max(p.shape[0] for p in parts)
        parts = [np.repeat(p, n, axis=0) if p.shape[0] == 1 else p for p in parts]
        if len({p.shape[0] for p in parts}) != 1:
            raise ValueError(f"the input files hold different numbers of maps: {[p.shape[0] for p in parts]}")
        return as_batch(np.concatenate(parts, axis=2), sampling.npix, channels, " + ".join(map(str, path)))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path.resolve()}")
    name = path.name.lower()
    if name.endswith(".npy"):
        x = np.load(path, mmap_mode="r")
    elif name.endswith((".fits", ".fit", ".fits.gz")):
        import healpy as hp

        if not isinstance(sampling, HEALPix):
            raise ValueError(f"{path}: FITS maps are HEALPix maps, but the model is on {sampling!r}")
        from .skymaps import read_map_file

        # NESTED at the model's nside (resampled and said so when the file differs), UNSEEN as NaN
        x = read_map_file(path, sampling.nside)                          # [1, npix, fields]
        if not sampling.nest:
            x = np.stack([hp.reorder(x[0, :, c], n2r=True) for c in range(x.shape[2])], -1)[None]
        x = x[:, sampling.pixels]  # partial sky: the model's pixels
        if fits_fields == "samples" or (fits_fields == "auto" and channels is not None and x.shape[2] != channels):
            x = x[0].T[:, :, None]                                       # several fields: samples
    elif name.endswith(".nc"):
        from scipy.io import netcdf_file

        with netcdf_file(path, "r", mmap=False) as f:
            names = [v for v in f.variables if v not in f.dimensions]
            if var is None:
                cands = [v for v in names if sampling.npix in f.variables[v].shape]
                if len(cands) != 1:
                    raise ValueError(f"{path}: pick the variable with var= among {names} (variables with "
                                     f"{sampling.npix} pixels: {cands})")
                var = cands[0]
            if var not in f.variables:
                raise ValueError(f"{path}: no variable {var!r}; it has {names}")
            x = np.array(f.variables[var][:])
    else:
        raise ValueError(f"{path}: unknown input format; use .npy, .fits or .nc")
    x = np.asarray(x)
    if channels is None:  # one of several files: any channel count, [n, npix, c]
        return x[None, :, None] if x.ndim == 1 else (x[:, :, None] if x.ndim == 2 else x)
    return as_batch(x, sampling.npix, channels, str(path))


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
