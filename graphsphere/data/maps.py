"""Users' own maps as PyTorch datasets: in-memory arrays, ``.npy`` files, and
partial-sky patches streamed from maps on disk that do not fit in memory.

Layout everywhere: ``[n_maps, npix]`` or ``[n_maps, npix, channels]``, pixels
in the order of the sampling (HEALPix: NESTED unless the sampling says RING).
A wrong pixel count or, for full-sky HEALPix maps, a map that looks like it is
in the other ordering is an error, never a silent reshuffle.

>>> import numpy as np, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=2)
>>> ds = MapDataset(np.zeros((5, 48), np.float32), np.arange(5), sampling=s)
>>> x, y = ds[3]
>>> tuple(x.shape), int(y)
((48, 1), 3)

Streaming: ``PatchDataset`` memory-maps an ``.npy`` of full-sky NESTED maps
and reads one contiguous block of pixels per sample, so a file far larger than
memory costs only the pages of the patches actually read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..sampling import HEALPix, check_nside
from ..sampling.healpix import check_map_order

__all__ = ["MapDataset", "PatchDataset", "load_array", "check_maps", "MAX_ORDER_CHECK_NPIX"]

#: Full-sky maps above this size are not checked for their ordering (the check
#: looks at all 8 neighbours of every pixel: ~70 bytes a pixel).
MAX_ORDER_CHECK_NPIX = 12 * 256**2


def load_array(path, mmap: bool = True, what: str = "data file", hint: str | None = None) -> np.ndarray:
    """``np.load`` an ``.npy`` file, memory-mapped by default, with a clear
    error naming ``what`` (e.g. the config field) and how to make the file."""
    path = Path(path).expanduser()
    if not path.exists():
        msg = f"{what}: file not found: {path.resolve()}"
        if hint:
            msg += f"\n  {hint}"
        raise FileNotFoundError(msg)
    if path.suffix != ".npy":
        raise ValueError(f"{what}: {path} is not a .npy file; save arrays with numpy.save(path, array)")
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def check_maps(x, sampling, what: str = "maps", check_order: bool = True) -> np.ndarray:
    """Check ``x`` is ``[n, npix]`` or ``[n, npix, channels]`` on ``sampling``
    and return it with a channel axis (a view: memory maps stay on disk).

    For a full-sky HEALPix sampling, the first map is checked for its ordering
    (``graphsphere.sampling.healpix.check_map_order``) up to ``MAX_ORDER_CHECK_NPIX``.
    """
    if x.ndim not in (2, 3):
        raise ValueError(f"{what} must be [n_maps, npix] or [n_maps, npix, channels], got shape {tuple(x.shape)}")
    if x.shape[1] != sampling.npix:
        extra = ""
        if isinstance(sampling, HEALPix) and x.shape[1] % 12 == 0:
            n = int(round(np.sqrt(x.shape[1] / 12)))
            if 12 * n * n == x.shape[1]:
                extra = f" (that is a full-sky HEALPix map at nside {n}; set sampling.nside: {n})"
        raise ValueError(f"{what} has {x.shape[1]} pixels per map, but {sampling.describe()} has "
                         f"{sampling.npix}{extra}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} holds no maps (shape {tuple(x.shape)})")
    if (check_order and isinstance(sampling, HEALPix) and sampling.full_sphere
            and sampling.npix <= MAX_ORDER_CHECK_NPIX):
        first = np.asarray(x[0] if x.ndim == 2 else x[0, :, 0], dtype=np.float64)
        try:
            check_map_order(first, nest=sampling.nest)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    return x if x.ndim == 3 else x[:, :, None]


def _as_tensor(a, dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=dtype, copy=True))


class MapDataset(Dataset):
    """Maps (and optional targets) as a dataset of ``(x [npix, C] float32, y)``.

    ``x`` may be a NumPy array, a memory map (read one map at a time) or
    anything indexable to arrays; ``y`` is ``[n]`` (class), ``[n, k]``
    (regression) or ``[n, npix]`` (a class per pixel), or None.
    Targets are int64 when integer-valued, float32 otherwise.
    """

    def __init__(self, x, y=None, sampling=None, what: str = "maps", check_order: bool = True):
        x = x if hasattr(x, "ndim") else np.asarray(x)
        if sampling is not None:
            x = check_maps(x, sampling, what=what, check_order=check_order)
        elif x.ndim == 2:
            x = x[:, :, None]
        self.x = x
        if y is not None:
            y = y if hasattr(y, "ndim") else np.asarray(y)
            if len(y) != len(x):
                raise ValueError(f"{what}: {len(x)} maps but {len(y)} targets")
        self.y = y
        self.y_dtype = None if y is None else (np.int64 if np.issubdtype(y.dtype, np.integer) else np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        x = _as_tensor(self.x[i], np.float32)
        if self.y is None:
            return x
        return x, _as_tensor(self.y[i], self.y_dtype)


class PatchDataset(Dataset):
    """Partial-sky patches streamed from full-sky maps in an ``.npy`` file.

    The file holds ``[n_maps, 12 nside^2]`` maps in NESTED order; it is
    memory-mapped, never loaded. Patch ``p`` (a HEALPix pixel at
    ``patch_nside``) is the contiguous block of ``(nside / patch_nside)^2``
    pixels ``p * B .. (p + 1) * B - 1``, so a sample costs one contiguous read.
    Sample ``i`` is patch ``patches[i % len(patches)]`` of map ``i // len(patches)``.

    All patches are fed through the graph of the first one, ``self.sampling``
    (as in the DeepSphere cosmology code): patches of one HEALPix level have
    the same number of pixels and nearly the same shape.

    Parameters
    ----------
    path : str or Path
        The ``.npy`` file.
    patch_nside : int
        Resolution of the patches: ``12 patch_nside^2`` patches per map.
    labels : array [n_maps] or [n_maps, ...], optional
        A target per map, shared by its patches.
    patches : array of int, optional
        Which patches to use (default all); e.g. a footprint.

    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "maps.npy")
    >>> np.save(f, np.arange(2 * 192, dtype=np.float32).reshape(2, 192))
    >>> ds = PatchDataset(f, patch_nside=1, labels=[0, 1])
    >>> len(ds), ds.sampling.npix
    (24, 16)
    >>> x, y = ds[13]                      # map 1, patch 1: pixels 16..31
    >>> float(x[0, 0]), int(y)
    (208.0, 1)
    """

    def __init__(self, path, patch_nside: int, labels=None, patches=None, what: str = "maps"):
        self.path = Path(path)
        self.maps = load_array(self.path, mmap=True, what=what)
        if self.maps.ndim != 2:
            raise ValueError(f"{what}: expected [n_maps, npix] full-sky maps, got shape {self.maps.shape}")
        npix = self.maps.shape[1]
        nside = int(round(np.sqrt(npix / 12)))
        if 12 * nside * nside != npix:
            raise ValueError(f"{what}: {npix} pixels per map is not a full HEALPix map (12 nside^2)")
        self.nside = check_nside(nside)
        self.patch_nside = check_nside(patch_nside)
        if self.patch_nside > self.nside:
            raise ValueError(f"patch_nside {self.patch_nside} must be <= the maps' nside {self.nside}")
        self.block = (self.nside // self.patch_nside) ** 2
        n_patch = 12 * self.patch_nside**2
        self.patches = np.arange(n_patch) if patches is None else np.asarray(patches, dtype=np.int64)
        if self.patches.size == 0 or self.patches.min() < 0 or self.patches.max() >= n_patch:
            raise ValueError(f"patches must be ids in [0, {n_patch}) at patch_nside {self.patch_nside}")
        if labels is not None:
            labels = np.asarray(labels)
            if len(labels) != self.maps.shape[0]:
                raise ValueError(f"{what}: {self.maps.shape[0]} maps but {len(labels)} labels")
        self.labels = labels

    @property
    def sampling(self) -> HEALPix:
        """The sampling of the first patch, whose graph serves all patches."""
        return self.sampling_of(int(self.patches[0]))

    def sampling_of(self, patch: int) -> HEALPix:
        return HEALPix(self.nside, indices=patch * self.block + np.arange(self.block))

    def __len__(self) -> int:
        return self.maps.shape[0] * self.patches.size

    def __getitem__(self, i):
        m, k = divmod(int(i), self.patches.size)
        start = int(self.patches[k]) * self.block
        x = _as_tensor(self.maps[m, start:start + self.block], np.float32)[:, None]
        if self.labels is None:
            return x
        y = self.labels[m]
        return x, torch.as_tensor(y)

    def __repr__(self) -> str:
        size = os.path.getsize(self.path) / 1e6
        return (f"PatchDataset({self.path.name}: {self.maps.shape[0]} maps at nside {self.nside}, {size:.0f} MB, "
                f"{self.patches.size} patches of {self.block} pixels)")
