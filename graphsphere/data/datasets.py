"""The built-in datasets: ``synthetic`` (toy tasks on any sampling), ``npy``
(your own arrays), ``patches`` (partial-sky patches streamed from full-sky
maps on disk) and ``cosmology`` (:func:`graphsphere.data.cosmology.make_dataset`).

Importing this module registers them (:mod:`graphsphere.data.registry` does
it on first use of their names).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt, create_model

from ..config import ConfigError
from .registry import Params as _Params
from .registry import Splits, _params_from_signature, register_dataset

__all__ = ["build_synthetic", "build_npy", "build_patches", "build_cosmology", "check_labels"]


def check_labels(label_arrays, num_classes: int | None, ignore: int | None = None) -> int:
    """The number of classes of integer labels, checked: labels are 0..C-1 (``ignore``, e.g. -1 for
    unlabelled pixels, aside); without ``num_classes``, every class 0..max must occur (a stray label 5
    among 0/1 labels would otherwise silently make a 6-class model).

    >>> check_labels([np.array([0, 1, 1]), np.array([1, 0])], None)
    2
    >>> check_labels([np.array([0, 1, 5])], None)
    Traceback (most recent call last):
    ...
    ValueError: labels 0..5 have no sample of classes [2, 3, 4]: fix the stray labels, or set data.num_classes: 6 if those classes exist
    """
    values = np.unique(np.concatenate([np.unique(np.asarray(y)) for y in label_arrays]))
    if ignore is not None:
        values = values[values != ignore]
    if values.size == 0:
        raise ValueError("no labels at all (every target is unlabelled)")
    low, high = int(values.min()), int(values.max())
    if low < 0:
        allowed = f" ({ignore} marks unlabelled pixels)" if ignore is not None else ""
        raise ValueError(f"label {low} is negative; classes are 0..C-1{allowed}")
    if num_classes is not None:
        if high >= num_classes:
            raise ValueError(f"label {high} is out of range for data.num_classes: {num_classes} (labels 0.."
                             f"{num_classes - 1}); raise num_classes or fix the labels")
        return max(int(num_classes), 2)
    missing = sorted(set(range(high + 1)) - set(values.tolist()))
    if missing:
        raise ValueError(f"labels 0..{high} have no sample of classes {missing[:10]}: fix the stray labels, or set "
                         f"data.num_classes: {high + 1} if those classes exist")
    return max(high + 1, 2)


def _need_sampling(sampling, name):
    if sampling is None:
        raise ConfigError([("sampling", f": dataset {name!r} needs a sampling section, "
                            "e.g. sampling: {type: HEALPix, nside: 8}")])


def _split_indices(n: int, fractions: tuple[float, float], seed: int) -> tuple[np.ndarray, ...]:
    """Seeded random split of range(n) into train, val, test."""
    perm = np.random.default_rng([int(seed), 7]).permutation(n)
    n_val, n_test = (int(round(f * n)) for f in fractions)
    if n - n_val - n_test < 1:
        raise ConfigError([("data", f": val/test fractions {fractions} leave no training sample out of {n}")])
    return np.sort(perm[n_val + n_test:]), np.sort(perm[:n_val]), np.sort(perm[n_val:n_val + n_test])


def _subset(ds, idx):
    from torch.utils.data import Subset

    return Subset(ds, idx.tolist()) if idx.size else None


# -- synthetic ---------------------------------------------------------------------------------------
class SyntheticParams(_Params):
    n_train: PositiveInt = 512
    n_val: NonNegativeInt = 128
    n_test: NonNegativeInt = 128
    num_classes: int = Field(2, ge=2)
    n_targets: Literal[1, 2] = 1
    noise: NonNegativeFloat = 0.1


@register_dataset("synthetic", params=SyntheticParams)
def build_synthetic(sampling, task, seed, *, n_train, n_val, n_test, num_classes, n_targets, noise) -> Splits:
    """Toy tasks of ``graphsphere.data.synthetic`` on the configured sampling."""
    from .maps import MapDataset
    from .synthetic import make_synthetic

    _need_sampling(sampling, "synthetic")
    n = n_train + n_val + n_test
    x, y = make_synthetic(sampling, task, n, num_classes=num_classes, n_targets=n_targets, noise=noise, seed=seed)
    # Classes cycle in make_synthetic; shuffle before slicing so that splits are random.
    perm = np.random.default_rng([int(seed), 11]).permutation(n)
    x, y = x[perm], y[perm]
    parts = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n)]
    ds = [MapDataset(x[a:b], y[a:b], sampling) if b > a else None for a, b in parts]
    n_out = n_targets if task == "regression" else num_classes
    return Splits(*ds, sampling=sampling, in_channels=1, n_out=n_out)


# -- npy: users' own arrays ----------------------------------------------------------------------------
_NPY_HINT = ("save your maps with numpy.save(path, x) as [n_maps, npix] or [n_maps, npix, channels] (pixels in "
             "the sampling's order, HEALPix NESTED) and targets as [n_maps] (class), [n_maps, k] (regression) or "
             "[n_maps, npix] (a class per pixel); or write a synthetic stand-in with: "
             "python -m graphsphere.data.synthetic DIR --nside 8")


class NpyParams(_Params):
    x: str
    y: str
    val_x: str | None = None
    val_y: str | None = None
    test_x: str | None = None
    test_y: str | None = None
    #: Used when val_x/test_x are not given: a seeded random split of x.
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    #: Memory-map the files (read a map at a time) instead of loading them.
    mmap: bool = True
    check_order: bool = True
    num_classes: PositiveInt | None = None


def _check_targets(y, x, task: str, what: str) -> None:
    n, npix = x.shape[0], x.shape[1]
    if len(y) != n:
        raise ValueError(f"{what}: {len(y)} targets for {n} maps")
    integer = np.issubdtype(y.dtype, np.integer)
    if task == "classification" and not (y.ndim == 1 and integer):
        raise ValueError(f"{what}: classification needs one integer class per map, shape [{n}]; "
                         f"got shape {y.shape}, dtype {y.dtype}")
    if task == "segmentation" and not (y.ndim == 2 and y.shape[1] == npix and integer):
        raise ValueError(f"{what}: segmentation needs an integer class per pixel, shape [{n}, {npix}]; "
                         f"got shape {y.shape}, dtype {y.dtype}")
    if task == "regression" and (y.ndim not in (1, 2, 3) or (y.ndim == 3 and y.shape[1] != npix)):
        raise ValueError(f"{what}: regression needs targets [n] or [n, k] (per map), or [n, {npix}] or "
                         f"[n, {npix}, k] (per pixel); got shape {y.shape}")


@register_dataset("npy", params=NpyParams, hint=_NPY_HINT)
def build_npy(sampling, task, seed, *, x, y, val_x, val_y, test_x, test_y, val_fraction, test_fraction, mmap,
              check_order, num_classes) -> Splits:
    """Arrays from ``.npy`` files (memory-mapped by default)."""
    from .maps import MapDataset, check_maps, load_array

    _need_sampling(sampling, "npy")

    def pair(fx, fy, name):
        pre = f"data.{name}_" if name else "data."
        if (fx is None) != (fy is None):
            raise ConfigError([(f"{pre}x", f": give both {pre}x and {pre}y, or neither")])
        if fx is None:
            return None
        xs = check_maps(load_array(fx, mmap, f"{pre}x", _NPY_HINT), sampling, what=f"{pre}x ({fx})",
                        check_order=check_order)
        ys = load_array(fy, mmap and task == "segmentation", f"{pre}y", _NPY_HINT)
        _check_targets(ys, xs, task, f"{pre}y ({fy})")
        if task == "regression" and ys.ndim == 1:
            ys = ys[:, None]
        elif task == "regression" and ys.ndim == 2 and ys.shape[1] == xs.shape[1]:
            ys = ys[:, :, None]  # [n, npix]: one value per pixel (npix outputs per map would make no sense)
        return xs, ys

    train = pair(x, y, "")
    val, test = pair(val_x, val_y, "val"), pair(test_x, test_y, "test")
    xs, ys = train
    channels = xs.shape[2]
    for other, name in ((val, "val"), (test, "test")):
        if other is not None and other[0].shape[2] != channels:
            raise ValueError(f"data.{name}_x has {other[0].shape[2]} channels, data.x has {channels}")
    if task == "regression":
        n_out = ys.shape[-1]
    else:
        n_out = check_labels([p[1] for p in (train, val, test) if p is not None], num_classes,
                             ignore=-1 if task == "segmentation" else None)
    full = MapDataset(xs, ys)
    tr_idx, va_idx, te_idx = _split_indices(len(full), (0.0 if val else val_fraction, 0.0 if test else test_fraction),
                                            seed)
    splits = Splits(train=_subset(full, tr_idx) if tr_idx.size < len(full) else full,
                    val=MapDataset(*val) if val else _subset(full, va_idx),
                    test=MapDataset(*test) if test else _subset(full, te_idx),
                    sampling=sampling, in_channels=channels, n_out=n_out)
    return splits


# -- patches: partial-sky patches streamed from full-sky maps on disk -----------------------------------
class PatchParams(_Params):
    #: .npy of full-sky maps [n_maps, 12 nside^2], NESTED; memory-mapped, never loaded.
    maps: str
    #: .npy of one target per map [n_maps] (class) or [n_maps, k] (regression); its patches share it.
    targets: str
    patch_nside: PositiveInt
    #: Whole maps go to validation and test (patches of a map share its large scales).
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    num_classes: PositiveInt | None = None


@register_dataset("patches", params=PatchParams, hint=_NPY_HINT)
def build_patches(sampling, task, seed, *, maps, targets, patch_nside, val_fraction, test_fraction,
                  num_classes) -> Splits:
    """Maps larger than memory: :class:`graphsphere.data.maps.PatchDataset` per split.

    Every patch goes through the graph of the first patch (see PatchDataset).
    """
    from .maps import PatchDataset, load_array

    if task == "segmentation":
        raise ConfigError([("task", " = 'segmentation': the patches dataset has one target per map; "
                            "use the npy dataset for a class per pixel")])
    y = np.asarray(load_array(targets, mmap=False, what="data.targets", hint=_NPY_HINT))
    if task == "classification" and not (y.ndim == 1 and np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"data.targets ({targets}): classification needs one integer class per map, got shape "
                         f"{y.shape}, dtype {y.dtype}")
    if task == "regression":
        y = (y[:, None] if y.ndim == 1 else y).astype(np.float32)
    full = PatchDataset(maps, patch_nside, labels=y, what="data.maps")
    tr, va, te = _split_indices(full.maps.shape[0], (val_fraction, test_fraction), seed)

    def part(idx):  # all patches of the maps idx (PatchDataset is map-major)
        return _subset(full, (idx[:, None] * full.patches.size + np.arange(full.patches.size)).ravel())

    if sampling is not None and sampling != full.sampling:
        raise ConfigError([("sampling", f": patches of nside {full.nside} maps at patch_nside {patch_nside} are on "
                            f"{full.sampling!r}; remove the sampling section (it comes from the data)")])
    n_out = y.shape[1] if task == "regression" else check_labels([y], num_classes)
    return Splits(part(tr), part(va), part(te), sampling=full.sampling, in_channels=1, n_out=n_out)


# -- cosmology (graphsphere.data.cosmology) -----------------------------------------------------------
def _cosmology_params() -> type[BaseModel]:
    """The parameters of ``make_dataset`` plus how to split and how much noise."""
    try:
        from . import cosmology
    except ImportError:  # optional module: accept anything, let the builder complain
        return create_model("cosmology_params", __config__=ConfigDict(extra="allow"))
    base = _params_from_signature("cosmology_make", cosmology.make_dataset, skip=("seed", "progress"))
    return create_model("cosmology_params", __base__=base, noise=(NonNegativeFloat, 0.0),
                        test_fraction=(float, Field(0.2, gt=0, lt=1)), val_fraction=(float, Field(0.1, ge=0, lt=1)))


def build_cosmology(sampling, task, seed, *, noise=0.0, test_fraction=0.2, val_fraction=0.1, **kwargs):
    """Partial-sky convergence maps of two cosmologies to tell apart (the 2019 paper).

    ``noise``: standard deviation of the added white noise, in units of the
    clean maps' pixel standard deviation (the paper used 0 to 2).
    """
    from ..data import cosmology
    from .maps import MapDataset

    if task != "classification":
        raise ConfigError([("task", f" = {task!r}: the cosmology dataset is a classification task")])
    data = cosmology.make_dataset(seed=seed, progress=True, **kwargs)  # a bar on a terminal, lines in a log
    s = data.sampling()
    train_idx, test_idx = cosmology.split(data, test_fraction=test_fraction, seed=seed)
    # Validation maps come from the training maps, whole maps at a time (patches of a map share
    # its large scales), the same number per class (at least one where a class has 2 maps or more).
    rng = np.random.default_rng([int(seed), 13])
    val_maps = []
    for c in np.unique(data.y[train_idx]):
        maps = np.unique(data.map_id[train_idx][data.y[train_idx] == c])
        k = min(max(int(round(val_fraction * maps.size)), 1 if val_fraction > 0 else 0), maps.size - 1)
        val_maps.extend(rng.permutation(maps)[:k].tolist())
    is_val = np.isin(data.map_id[train_idx], val_maps)
    val_idx, train_idx = train_idx[is_val], train_idx[~is_val]
    x = data.noisy(noise)
    full = MapDataset(x, data.y, s, check_order=False)
    return Splits(train=_subset(full, train_idx), val=_subset(full, val_idx), test=_subset(full, test_idx),
                  sampling=s, in_channels=1, n_out=2,
                  class_names=[f"Omega_m={om}, sigma_8={s8}" for om, s8 in data.cosmologies],
                  info={"noise": noise})


register_dataset("cosmology", params=_cosmology_params(),
                 hint="the maps are computed with pyccl and healpy, then cached, by "
                      "graphsphere.data.cosmology.make_dataset: pip install -e '.[cosmology]' from the repository")(build_cosmology)
