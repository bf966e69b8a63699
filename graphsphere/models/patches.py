"""Skies too large for one pass: predict patch by patch, with a border of context, into one map.

A per-pixel model (a :class:`~graphsphere.models.SphericalUNet`) on a HEALPix sky can run on one
patch of it at a time. The sky is cut into *cores*, the pixels under one HEALPix pixel at
``patch_nside``. Each core is grown by ``border`` rings of *unit* pixels (pixels at the nside of the
model's coarsest pyramid level, so that pooling inside a patch is pooling on the full sky). The
model runs on each patch and keeps its core's outputs; the cores tile the sky once.

Each patch's graph operators are the full sky's, restricted to the patch (rows and columns of the
rescaled Laplacian of every pyramid level), not graphs rebuilt on the patch: inside the patch the
graph is the full sky's, with its weights, degrees and largest eigenvalue, and only rows at the
patch's edge lose neighbours. A core whose receptive field lies inside its patch
(:func:`receptive_border` rings) gets the one-pass outputs to float precision; a thinner border
leaves an error that falls with the border (docs/patches.md has the table).

>>> import torch, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=8)
>>> unet = gs.models.SphericalUNet(s, 1, 2, channels=(4, 8), K=2).eval()
>>> x = torch.randn(1, s.npix, 1)
>>> y = predict_in_patches(unet, x, patch_nside=2, progress=False)   # 48 patches, border receptive_border(unet)
>>> with torch.no_grad():
...     bool(torch.allclose(y, unet(x), atol=1e-5))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import healpy as hp
import numpy as np
import torch
from torch import nn

from ..nn.functional.chebyshev import SparseOperator
from ..nn.operator import GraphOperator
from ..sampling import HEALPix, check_nside
from .base import SphereModel

__all__ = ["PatchPredictor", "SkyPatch", "patch_model", "predict_in_patches", "receptive_border", "sky_patches"]


@dataclass(frozen=True)
class SkyPatch:
    """One patch of a sky: a core and its context border.

    ``index`` is the NESTED id of the patch's HEALPix pixel at ``patch_nside``; ``core`` and
    ``pixels`` are positions in the sampling's data order (for a full NESTED sky, the pixel ids),
    ascending: the core's pixels, and all the patch's pixels (core and border)."""

    index: int
    core: np.ndarray
    pixels: np.ndarray

    @property
    def core_in_patch(self) -> np.ndarray:
        """Where the core's pixels are in ``pixels``."""
        return np.searchsorted(self.pixels, self.core)


class _Positions:
    """Positions, in a HEALPix sampling's data order, of pixel ids in its ordering."""

    def __init__(self, sampling: HEALPix):
        self.full = sampling.full_sphere
        if not self.full:
            self.order = np.argsort(sampling.pixels, kind="stable")
            self.sorted = sampling.pixels[self.order]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        if self.full:
            return np.asarray(ids, dtype=np.int64)
        j = np.minimum(np.searchsorted(self.sorted, ids), self.sorted.size - 1)
        if not np.array_equal(self.sorted[j], ids):
            raise ValueError("pixels outside the sampling's footprint")  # a bug here, not the user's
        return self.order[j]


def _integer(v, name: str, minimum: int) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, float)) or int(v) != v or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _nside(v, name: str) -> int:
    try:
        return check_nside(v)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


class _Tiling:
    """The patches of a HEALPix sampling, kept at the unit nside (small); pixels on demand."""

    def __init__(self, sampling, patch_nside, border, unit_nside=None):
        if not isinstance(sampling, HEALPix):
            raise TypeError(f"patches are cut along HEALPix pixels: the sampling must be HEALPix, got "
                            f"{type(sampling).__name__}")
        self.sampling = sampling
        nside = sampling.nside
        self.unit = nside if unit_nside is None else _nside(unit_nside, "unit_nside")
        if self.unit > nside:
            raise ValueError(f"unit_nside {self.unit} is finer than the sampling's nside {nside}")
        self.patch_nside = _nside(patch_nside, "patch_nside")
        if self.patch_nside > self.unit:
            raise ValueError(
                f"patch_nside {self.patch_nside} is finer than the unit nside {self.unit} (the model's coarsest "
                f"pyramid level): a core must be whole unit pixels; use patch_nside <= {self.unit}")
        self.border = _integer(border, "border (rings of context pixels)", 0)
        self.fine = (nside // self.unit) ** 2        # pixels per unit pixel
        per_patch = (self.unit // self.patch_nside) ** 2   # unit pixels per core
        if sampling.full_sphere:
            present = None
            units = np.arange(12 * self.unit**2)
        else:
            units, counts = np.unique(sampling.nested_pixels() // self.fine, return_counts=True)
            if np.any(counts != self.fine):
                raise ValueError(f"this partial sky is not a union of whole pixels at the unit nside {self.unit}: "
                                 "extend it with graphsphere.sampling.extend_footprint")
            present = units
        self.present = present
        self.indices = np.unique(units // per_patch)  # patches with a non-empty core
        self.per_patch = per_patch
        self.positions = _Positions(sampling)

    def __len__(self) -> int:
        return int(self.indices.size)

    def units(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The core's and the patch's unit pixels (NESTED ids at the unit nside, sorted)."""
        core = np.arange(index * self.per_patch, (index + 1) * self.per_patch)
        grown, front = core, core
        for _ in range(self.border):
            nb = hp.get_all_neighbours(self.unit, front, nest=True).ravel()
            front = np.setdiff1d(nb[nb >= 0], grown)
            grown = np.union1d(grown, front)
        if self.present is not None:
            # Rings grow through pixels the sky lacks: a graph edge may jump such a gap.
            core, grown = np.intersect1d(core, self.present), np.intersect1d(grown, self.present)
        return core, grown

    def _pixels(self, units: np.ndarray) -> np.ndarray:
        nested = (units[:, None] * self.fine + np.arange(self.fine)).ravel()
        ids = nested if self.sampling.nest else hp.nest2ring(self.sampling.nside, nested)
        return np.sort(self.positions(ids))

    def patch(self, index: int) -> SkyPatch:
        core, grown = self.units(index)
        return SkyPatch(int(index), self._pixels(core), self._pixels(grown))

    def __iter__(self):
        return (self.patch(i) for i in self.indices)


def sky_patches(sampling: HEALPix, patch_nside: int, border: int, unit_nside: int | None = None) -> list[SkyPatch]:
    """The patches of a HEALPix sky: one per pixel at ``patch_nside`` holding pixels of the sky.

    Parameters
    ----------
    sampling : HEALPix
        The sky, full or partial (a partial sky must be whole pixels at ``unit_nside``), any ordering.
    patch_nside : int
        A power of two, at most ``unit_nside``: the cores are the sky's pixels under each pixel at
        this nside (12 patch_nside^2 patches on the full sky).
    border : int
        Rings of unit pixels (``healpy.get_all_neighbours`` at ``unit_nside``) around each core.
    unit_nside : int, optional
        The nside whose whole pixels make up cores and borders: a model's coarsest pyramid level
        (``sampling.nside`` by default).

    Returns
    -------
    list of SkyPatch
        In order of their ``index``; their cores cover every pixel of the sky exactly once.

    >>> import graphsphere as gs
    >>> patches = sky_patches(gs.sampling.HEALPix(nside=8), patch_nside=1, border=1, unit_nside=4)
    >>> len(patches), patches[0].core.size, patches[0].pixels.size
    (12, 64, 136)

    Base pixel 0 is 4 x 4 unit pixels; one ring around it adds 18, not 20: at two of its corners
    only three base pixels meet. 34 unit pixels of 4 pixels each.
    """
    return list(_Tiling(sampling, patch_nside, border, unit_nside))


# -- the model on a patch ------------------------------------------------------------------------------

def _levels(model: SphereModel) -> int:
    """Poolings in the model's pyramid (0 for a model without one)."""
    return len(getattr(model, "npix_levels", [None])) - 1


def _restrict(indptr: np.ndarray, indices: np.ndarray, values: torch.Tensor, pos: np.ndarray,
              block: int = 0) -> SparseOperator:
    """Rows and columns ``pos`` (in that order) of the CSR operator (indptr, indices, values).

    ``block``: ``pos`` is ascending runs of ``block`` whole aligned blocks of positions (a full
    NESTED sky's unit pixels), so a column is found through its block, not by a search.
    The index arithmetic is NumPy's (one thread: torch's threaded indexing is slower at these
    sizes, many times so on a busy machine); the values are gathered where they are (a GPU)."""
    n = pos.size
    start = indptr[pos].astype(np.int64)
    count = indptr[pos + 1] - start
    row = np.repeat(np.arange(n), count)
    entry = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(row.size)
    col = indices[entry]
    ascending = n < 2 or bool(np.all(pos[1:] > pos[:-1]))
    if block:
        where = np.full((indptr.size - 1) // block, -1, dtype=np.int64)   # the patch's blocks, by block id
        where[pos[::block] // block] = np.arange(0, n, block)
        j = where[col // block]
        keep = j >= 0
        j = j[keep] + col[keep] % block
        row, entry = row[keep], entry[keep]
        col = j
    else:
        perm = None if ascending else np.argsort(pos, kind="stable")
        sorted_pos = pos if ascending else pos[perm]
        j = np.minimum(np.searchsorted(sorted_pos, col), n - 1)
        keep = sorted_pos[j] == col
        row, j, entry = row[keep], j[keep], entry[keep]
        col = j if ascending else perm[j]
    if not ascending:   # columns renumbered out of order: sort each row again
        order = np.lexsort((col, row))
        row, col, entry = row[order], col[order], entry[order]
    new_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n), out=new_indptr[1:])
    itype = torch.int32 if max(n, row.size) < 2**31 - 1 else torch.int64
    device = values.device
    return SparseOperator(torch.from_numpy(new_indptr).to(device, itype), torch.from_numpy(col).to(device, itype),
                          values[torch.from_numpy(entry).to(device)])


class _FullSky:
    """What patches of one model take from its full sky: each level's operator and pixel positions."""

    def __init__(self, model: SphereModel):
        if not isinstance(model, SphereModel):
            raise TypeError(f"predicting in patches needs a graphsphere model (SphereModel), got "
                            f"{type(model).__name__}")
        s = model.sampling
        if not isinstance(s, HEALPix):
            raise TypeError(f"predicting in patches needs a model on a HEALPix sampling, got {s.describe()}")
        self.model = model
        self.levels = _levels(model)
        if s.full_sphere:   # no pyramid to build: the coarse full skies are known
            samplings = [HEALPix(s.nside >> i, nest=s.nest) for i in range(self.levels + 1)]
        else:
            samplings = [t for t, _ in s.pyramid(self.levels)]
        self.positions = [_Positions(t) for t in samplings]
        self.operators = {int(k): v for k, v in getattr(model, "operators", {}).items()}
        self._csr: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # each level's CSR indices, on the CPU
        self.cls = self._patch_class(type(model))

    @property
    def device(self) -> torch.device:
        p = next((p for p in self.model.parameters() if p.is_floating_point()), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next((p for p in self.model.parameters() if p.is_floating_point()), None)
        return p.dtype if p is not None else torch.get_default_dtype()

    def _patch_class(self, cls):
        """``cls`` whose levels take the full sky's operators, restricted to the patch, instead of
        building graphs on it (no k-NN, no eigenvalue, nothing written to the graph cache)."""
        full = self

        def level_operator(self, level, sampling, *args, **kwargs):
            return full.operator(level, sampling)

        return type(cls.__name__, (cls,), {"level_operator": level_operator, "__module__": cls.__module__,
                                           "__qualname__": cls.__qualname__})

    def operator(self, level: int, sampling: HEALPix) -> GraphOperator:
        full = self.operators.get(level)
        if full is None:
            raise ValueError(f"the model has no graph operator at pyramid level {level}, which its patch asks for")
        if level not in self._csr:   # views on the CPU, one copy from a GPU
            self._csr[level] = (full.indptr.cpu().numpy(), full.indices.cpu().numpy())
        indptr, indices = self._csr[level]
        s = self.model.sampling
        # A full NESTED sky's position is the pixel id, and a patch is whole unit pixels: blocks of ids.
        block = 4 ** (self.levels - level) if s.full_sphere and s.nest else 0
        op = _restrict(indptr, indices, full.values, self.positions[level](sampling.pixels), block)
        return GraphOperator(op, dtype=full.values.dtype)

    def on(self, pixels: np.ndarray) -> SphereModel:
        s = self.model.sampling
        ids = pixels if s.full_sphere else s.indices[pixels]   # a full sky lists its pixels in id order
        patch = HEALPix(s.nside, nest=s.nest, indices=ids)
        with torch.random.fork_rng(devices=[]):   # the throw-away initial weights leave the caller's RNG alone
            m = self.cls(patch, **self.model.config)
        own = {id(op) for op in getattr(m, "operators", {}).values()}
        stray = [name for name, mod in m.named_modules() if isinstance(mod, GraphOperator) and id(mod) not in own]
        if stray:
            raise TypeError(f"{type(self.model).__name__} builds graph operators outside SphereModel.pyramid "
                            f"({stray[0]}): predicting it in patches would use the patch's own graph")
        m.to(device=self.device, dtype=self.dtype)   # before the weights: float64 weights stay float64
        m.load_state_dict(self.model.state_dict())
        return m.eval()


def patch_model(model: SphereModel, pixels) -> SphereModel:
    """``model`` on a patch of its sky: the same class, configuration and weights, on the pixels
    at positions ``pixels`` (of the model's sampling; a union of whole pixels at its coarsest
    level), with each level's graph operator the full sky's restricted to the patch. In eval mode.

    >>> import numpy as np, graphsphere as gs
    >>> unet = gs.models.SphericalUNet(gs.sampling.HEALPix(nside=4), 1, 1, channels=(4, 8), K=2)
    >>> patch_model(unet, np.arange(64)).npix_levels       # base pixels 0 to 3, pooled once
    [64, 16]
    """
    return _FullSky(model).on(np.sort(np.asarray(pixels, dtype=np.int64)))


# -- the receptive field ----------------------------------------------------------------------------

def _edge_reach(op: GraphOperator, sampling: HEALPix, rows_per_chunk: int = 1 << 18) -> int:
    """The largest ring distance (HEALPix 8-neighbour rings) spanned by an edge of ``op``: the
    Chebyshev distance of (x, y) for edges within a base face (an upper bound of the ring
    distance), rings grown from one end for the few edges between faces."""
    nside = sampling.nside
    nested = sampling.nested_pixels()
    x, y, f = (a.astype(np.int16) for a in hp.pix2xyf(nside, nested, nest=True))   # nside <= 8192: small gathers
    indptr = op.indptr.cpu().numpy()
    indices = op.indices.cpu().numpy()
    reach, across = 0, []
    for a in range(0, sampling.npix, rows_per_chunk):
        b = min(a + rows_per_chunk, sampling.npix)
        rows = np.repeat(np.arange(a, b, dtype=indices.dtype), np.diff(indptr[a:b + 1]))
        cols = indices[indptr[a]:indptr[b]]
        same = f[rows] == f[cols]
        dx, dy = x[rows] - x[cols], y[rows] - y[cols]
        np.abs(dx, out=dx)
        np.abs(dy, out=dy)
        np.maximum(dx, dy, out=dx)
        if same.any():
            reach = max(reach, int(dx[same].max()))
        across.append(np.stack([nested[rows[~same]], nested[cols[~same]]]))
    pairs = np.unique(np.concatenate(across, axis=1), axis=1)
    ring, front = 0, pairs[0][None, :]     # front: [pixels, edges], the pixels `ring` steps from each edge's start
    while pairs.shape[1]:
        ring += 1
        if ring > 16:
            raise ValueError("graph edges span more than 16 rings of HEALPix neighbours: pass border explicitly")
        nb = hp.get_all_neighbours(nside, front.ravel(), nest=True).reshape(8 * front.shape[0], -1)
        front = np.where(nb >= 0, nb, pairs[0][None, :])   # a missing neighbour (7 at base corners): stay put
        found = (front == pairs[1][None, :]).any(axis=0)
        pairs, front = pairs[:, ~found], front[:, ~found]
    return max(reach, ring)


def receptive_border(model: SphereModel, hops: list[int] | None = None) -> int:
    """The border, in rings of the model's coarsest-level pixels, that holds the receptive field of
    any core: with it, :func:`predict_in_patches` equals one pass to float precision.

    A U-Net's output at a pixel depends on inputs up to (rings at the finest level, read backward
    from the output): the head and decoder convolutions reach ``K - 1`` edges each, an edge at level
    ``i`` spanning ``hops[i]`` rings; unpooling halves the distance (rounded up) and pooling doubles
    it; the way back down the encoder dominates the skip connections. ``hops`` is measured on the
    model's graphs when not given (2 for k = 8, 3 for k = 20 on HEALPix).

    >>> import graphsphere as gs
    >>> unet = gs.models.SphericalUNet(gs.sampling.HEALPix(nside=8), 1, 1, channels=(4, 8), K=2)
    >>> receptive_border(unet, hops=[2, 2])   # 2 + 2 at level 0, 2 up, + 2, 8 down, + 2 = 10 rings at nside 8
    5
    """
    from .unet import SphericalUNet

    if not isinstance(model, SphereModel):
        raise TypeError(f"receptive_border needs a graphsphere model (SphereModel), got {type(model).__name__}")
    _check_per_pixel(model)
    operators = getattr(model, "operators", None)
    if not operators:
        return 0     # no graph, no pyramid: every output pixel sees its own input only
    if not isinstance(model, SphericalUNet) or type(model).forward is not SphericalUNet.forward:
        raise ValueError(f"the receptive field of a {type(model).__name__} is not known here: pass border "
                         "(rings of coarsest-level pixels around each core) explicitly")
    levels = _levels(model)
    if hops is None:
        full = _FullSky(model)
        s = model.sampling
        samplings = ([HEALPix(s.nside >> i, nest=s.nest) for i in range(levels + 1)] if s.full_sphere
                     else [t for t, _ in s.pyramid(levels)])
        hops = [_edge_reach(full.operators[i], samplings[i]) for i in range(levels + 1)]
    if len(hops) != levels + 1:
        raise ValueError(f"hops needs one value per pyramid level ({levels + 1}), got {len(hops)}")
    reach = [(model.config["K"] - 1) * h for h in hops]
    r = reach[0]                       # the head
    for i in range(levels):            # decoder at level i, then up (the unpooling) to level i + 1
        r = math.ceil((r + reach[i]) / 2)
    r += reach[levels]                 # the coarsest encoder convolution
    for i in reversed(range(levels)):  # down (pooling) to level i, then its encoder convolution
        r = 2 * r + reach[i]
    return math.ceil(r / 2**levels)


# -- prediction -------------------------------------------------------------------------------------

def _progress(total: int, progress: bool | None):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with the train extra; without it, no bar
        return None
    # None: a bar where there are many patches, on a terminal only (tqdm's disable=None)
    disable = (None if total >= 10 else True) if progress is None else not progress
    return tqdm(total=total, desc="patches", unit="patch", disable=disable)


def _not_per_pixel(model, shape: str) -> ValueError:
    return ValueError(f"{type(model).__name__} does not output one vector per pixel ({shape}): only per-pixel "
                      "models (a SphericalUNet) can be predicted in patches; run it on the whole sky")


def _check_per_pixel(model) -> None:
    from .cnn import SphericalCNN

    if isinstance(model, SphericalCNN):
        raise _not_per_pixel(model, "one vector per map")


@torch.no_grad()
def predict_in_patches(model: SphereModel, x, patch_nside: int, border: int | None = None, *,
                       batch_size: int | None = None, progress: bool | None = None) -> torch.Tensor:
    """``model(x)`` computed patch by patch: for skies too large for one pass.

    Parameters
    ----------
    model : SphereModel
        A per-pixel model (``[B, npix, in] -> [B, npix, out]``: a SphericalUNet) on a HEALPix
        sampling (full or partial sky, any ordering); run in eval mode.
    x : tensor or array [B, npix, in]
        The inputs on the model's sampling; may stay on the CPU while the model is on a GPU (each
        patch moves there).
    patch_nside : int
        Cores are the pixels under each pixel at this nside (a power of two, at most the nside of
        the model's coarsest level): 12 patch_nside^2 patches on the full sky.
    border : int, optional
        Rings of coarsest-level pixels of context around each core. Default: the receptive field
        (:func:`receptive_border`): the one-pass result to float precision.
    batch_size : int, optional
        Maps per forward pass (all by default).
    progress : bool, optional
        A tqdm bar over the patches (default: where there are 10 or more, on a terminal).

    Returns
    -------
    tensor [B, npix, out]
        On x's device, in the model's dtype.

    >>> import torch, graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=8)
    >>> unet = gs.models.SphericalUNet(s, 1, 1, channels=(4, 8), K=2).eval()
    >>> x = torch.randn(2, s.npix, 1)
    >>> y = predict_in_patches(unet, x, patch_nside=1, progress=False)   # border: receptive_border(unet)
    >>> with torch.no_grad():
    ...     float((y - unet(x)).abs().max()) < 1e-5
    True
    """
    return PatchPredictor(model, patch_nside, border, batch_size=batch_size, progress=progress)(x)


class PatchPredictor(nn.Module):
    """A per-pixel model that runs in patches: ``PatchPredictor(model, ...)(x)`` is
    :func:`predict_in_patches` ``(model, x, ...)``, with the patches and the border (the receptive
    field, measured once, by default) set up once for all calls. Stands in for the model where a
    caller runs ``model(x)`` (the training engine's ``predict``).

    >>> import torch, graphsphere as gs
    >>> unet = gs.models.SphericalUNet(gs.sampling.HEALPix(nside=4), 1, 1, channels=(4, 8), K=2).eval()
    >>> run = PatchPredictor(unet, patch_nside=1, border=1, progress=False)
    >>> len(run.tiling), run(torch.randn(1, 192, 1)).shape
    (12, torch.Size([1, 192, 1]))
    """

    def __init__(self, model: SphereModel, patch_nside: int, border: int | None = None,
                 batch_size: int | None = None, progress: bool | None = None):
        super().__init__()
        self.full = _FullSky(model)
        self.model = model
        _check_per_pixel(model)
        border = receptive_border(model) if border is None else border
        self.tiling = _Tiling(model.sampling, patch_nside, border, unit_nside=model.sampling.nside >> self.full.levels)
        self.batch_size = None if batch_size is None else _integer(batch_size, "batch_size", 1)
        self.progress = progress

    @property
    def border(self) -> int:
        return self.tiling.border

    @torch.no_grad()
    def forward(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        self.model.check_input(x)
        if x.shape[0] == 0:
            raise ValueError(f"no maps to predict: x has shape {tuple(x.shape)}")
        full, out = self.full, None
        step = x.shape[0] if self.batch_size is None else self.batch_size
        bar = _progress(len(self.tiling), self.progress)
        try:
            for patch in self.tiling:
                m = full.on(patch.pixels)
                device = full.device
                keep = torch.as_tensor(patch.core_in_patch, device=device)
                core = torch.as_tensor(patch.core, device=x.device)
                xp = x[:, torch.as_tensor(patch.pixels, device=x.device)]
                for a in range(0, x.shape[0], step):
                    y = m(xp[a:a + step].to(device=device, dtype=full.dtype))
                    if out is None:
                        if y.dim() != 3 or y.shape[1] != patch.pixels.size:
                            raise _not_per_pixel(self.model, f"output shape {tuple(y.shape)} for a patch of "
                                                             f"{patch.pixels.size} pixels")
                        out = torch.full((x.shape[0], x.shape[1], y.shape[2]), float("nan"), dtype=y.dtype,
                                         device=x.device)
                    out[a:a + step, core] = y[:, keep].to(x.device)
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:
                bar.close()
        return out
