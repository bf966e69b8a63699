"""Loaders for users' maps (graphsphere.data.maps), the resumable sampler and
the dataset registry of graphsphere.train."""

import os

import healpy as hp
import numpy as np
import pytest
import torch

import graphsphere as gs
from graphsphere.data.maps import MapDataset, PatchDataset, check_maps, load_array

pytest.importorskip("lightning")
pytest.importorskip("pydantic")

from graphsphere.data.synthetic import make_synthetic, save_example  # noqa: E402
from graphsphere.train.config import ConfigError  # noqa: E402
from graphsphere.train.config import load_train_config as load_config  # noqa: E402
from graphsphere.train.engine import build_data as build_splits  # noqa: E402
from graphsphere.train.sampler import EpochSampler  # noqa: E402


def _smooth_nested_map(nside, seed=0):
    """A spatially correlated map, NESTED (as real data are)."""
    cl = 1.0 / (1 + np.arange(3 * nside)) ** 3
    np.random.seed(seed)
    return hp.reorder(hp.synfast(cl, nside), r2n=True)


# -- sampler ---------------------------------------------------------------------------------------
def test_sampler_permutation_and_seed():
    s = EpochSampler(37, batch_size=4, seed=3)
    a = list(s)
    assert sorted(a) == list(range(37))
    s.set_epoch(1)
    b = list(s)
    assert sorted(b) == list(range(37)) and a != b            # new epoch, new order
    assert list(EpochSampler(37, 4, seed=3)) == a             # same seed, same order
    assert list(EpochSampler(37, 4, seed=4)) != a
    assert list(EpochSampler(37, 4, shuffle=False)) == list(range(37))


def test_sampler_ranks_rebuild_the_big_batches():
    """Rank r's k-th batch, over all ranks, is the k-th batch of one process
    with world_size times the batch: what makes DDP equal to a big batch."""
    n, b, world = 50, 3, 2
    single = EpochSampler(n, b * world, seed=1, drop_last=True)
    ranks = [EpochSampler(n, b, seed=1, rank=r, world_size=world, drop_last=True) for r in range(world)]
    for epoch in (0, 1):
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        big = list(single)
        per_rank = [list(s) for s in ranks]
        assert len(single) == world * len(ranks[0]) == 48   # 50 -> whole batches of 6
        for k in range(len(big) // (b * world)):
            together = sum((p[k * b:(k + 1) * b] for p in per_rank), [])
            assert sorted(together) == sorted(big[k * b * world:(k + 1) * b * world])


def test_sampler_resume_and_padding():
    full = list(EpochSampler(20, 4, seed=2, drop_last=True))
    s = EpochSampler(20, 4, seed=2, drop_last=True, resume=(0, 8))
    assert list(s) == full[8:] and list(s) == full[8:]      # re-iterating the resumed epoch keeps the skip
    s.set_epoch(1)
    assert len(list(s)) == 20                               # the next epoch is whole
    ev = [list(EpochSampler(5, 2, shuffle=False, rank=r, world_size=2)) for r in range(2)]
    assert ev == [[0, 2, 4], [1, 3, 0]]                     # padded by wrapping, equal counts
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochSampler(3, 4, drop_last=True)


# -- maps ------------------------------------------------------------------------------------------
def test_map_dataset_shapes_and_targets():
    s = gs.sampling.HEALPix(nside=2)
    ds = MapDataset(np.ones((4, 48, 2)), np.array([0.5, 1, 2, 3]), sampling=s)
    x, y = ds[2]
    assert x.shape == (48, 2) and x.dtype == torch.float32 and y.dtype == torch.float32
    ds = MapDataset(np.ones((4, 48)), np.arange(4), sampling=s)
    assert ds[1][0].shape == (48, 1) and ds[1][1].dtype == torch.int64
    with pytest.raises(ValueError, match="4 maps but 3 targets"):
        MapDataset(np.ones((4, 48)), np.arange(3), sampling=s)


def test_pixel_count_mismatch_is_clear():
    s = gs.sampling.HEALPix(nside=4)
    with pytest.raises(ValueError, match=r"768 pixels per map, but HEALPix\(nside=4.*192.*nside 8"):
        check_maps(np.zeros((2, 768)), s)


def test_ring_ordered_maps_are_refused():
    s = gs.sampling.HEALPix(nside=8)
    m = _smooth_nested_map(8)
    check_maps(m[None], s)                                   # NESTED: fine
    with pytest.raises(ValueError, match="RING.*reorder"):
        check_maps(hp.reorder(m, n2r=True)[None], s)
    check_maps(hp.reorder(m, n2r=True)[None], s, check_order=False)


def test_missing_file_names_field_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.x: file not found: .*nope\.npy\n.*numpy\.save"):
        load_array(tmp_path / "nope.npy", what="data.x", hint="save it with numpy.save(path, x)")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_patches_stream_from_a_file_larger_than_the_batches(tmp_path):
    """A 48 MB file of 4 maps at nside 512, read patch by patch: values are
    right and the process does not grow by anything near the file size."""
    nside, n_maps, patch_nside = 512, 4, 4
    npix = 12 * nside**2
    path = tmp_path / "maps.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_maps, npix))
    for i in range(n_maps):   # value = 4e6 * map + pixel: exact in float32, checkable without the file
        mm[i] = 4e6 * i + np.arange(npix, dtype=np.float32)
    mm.flush()
    del mm
    size = os.path.getsize(path)
    assert size > 45e6

    ds = PatchDataset(path, patch_nside=patch_nside, labels=np.arange(n_maps) % 2)
    assert isinstance(ds.maps, np.memmap)
    assert len(ds) == n_maps * 12 * patch_nside**2 and ds.sampling.npix == (nside // patch_nside) ** 2
    block = ds.block
    loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=EpochSampler(len(ds), 8, seed=0))
    next(iter(loader))                        # warm up: first-use allocations of torch and the loader
    before = _rss_bytes()
    seen = 0
    for x, _ in loader:
        assert x.shape == (8, block, 1)
        seen += 8
        if seen == 48:
            break
    grown = _rss_bytes() - before
    read = seen * block * 4
    print(f"RSS grew by {grown / 1e6:.1f} MB reading {seen} patches ({read / 1e6:.1f} MB) "
          f"of a {size / 1e6:.0f} MB file")
    # 48 random patches of 64 KB (3 MB, 1/16 of the file) were read. The process grows by a small
    # multiple of that (the kernel maps the pages around each read: up to 64 KB windows on both
    # sides of a patch), far from the whole file.
    assert grown < 4 * read + 4e6 and grown < size / 2

    class Recorder:  # every read the dataset makes goes through here
        def __init__(self, a):
            self.a, self.sizes = a, []
            self.shape, self.ndim = a.shape, a.ndim

        def __getitem__(self, key):
            out = self.a[key]
            self.sizes.append(out.size)
            return out

    ds.maps = Recorder(ds.maps)
    next(iter(loader))
    assert ds.maps.sizes == [block] * 8       # one patch-sized read per sample, nothing more
    i = 201                                    # map 1, patch 201 - 192 = 9
    x, y = ds[i]
    m, p = divmod(i, 12 * patch_nside**2)
    expect = 4e6 * m + p * block + np.arange(block)
    np.testing.assert_array_equal(x[:, 0].numpy(), expect.astype(np.float32))
    assert int(y) == m % 2
    # The patch's sampling is a contiguous nested block, a valid partial sky.
    np.testing.assert_array_equal(ds.sampling_of(9).pixels, 9 * block + np.arange(block))
    with pytest.raises(ValueError, match="patch_nside 1024 must be <="):
        PatchDataset(path, patch_nside=1024)


# -- synthetic data and the dataset registry -------------------------------------------------------
def test_synthetic_tasks_are_deterministic_and_learnable_in_principle():
    s = gs.sampling.HEALPix(nside=4)
    x1, y1 = make_synthetic(s, "classification", 40, num_classes=2, noise=0.0, seed=5)
    x2, y2 = make_synthetic(s, "classification", 40, num_classes=2, noise=0.0, seed=5)
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(x1, make_synthetic(s, "classification", 40, seed=6)[0])
    # Class 0 (wide bumps) is smoother than class 1: neighbour differences tell them apart.
    nb = hp.get_all_neighbours(4, np.arange(192), nest=True)
    rough = np.array([np.mean((m[nb[0]] - m) ** 2) / np.var(m) for m in x1[:, :, 0]])
    assert np.median(rough[y1 == 1]) > 2 * np.median(rough[y1 == 0])
    xr, yr = make_synthetic(s, "regression", 10, n_targets=2, seed=0)
    assert yr.shape == (10, 2) and yr.dtype == np.float32 and np.all((yr[:, 0] >= 0) & (yr[:, 0] <= 1))
    xs, ys = make_synthetic(s, "segmentation", 10, num_classes=3, seed=0)
    assert ys.shape == (10, 192) and set(np.unique(ys)) == {0, 1, 2}
    # Segmentation labels follow the sign of the bumps (class 1 positive, class 2 negative).
    assert xs[..., 0][ys == 1].mean() > 0.3 and xs[..., 0][ys == 2].mean() < -0.3


def _npy_config(tmp_path, **data):
    return {"task": "classification", "output_dir": str(tmp_path / "run"),
            "sampling": {"type": "HEALPix", "nside": 4},
            "data": {"name": "npy", "x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy"), **data},
            "model": {"type": "SphericalCNN", "channels": [4], "K": 2}}


def test_npy_dataset_splits(tmp_path):
    save_example(tmp_path, nside=4, n=50, seed=0)
    cfg = load_config(_npy_config(tmp_path, val_fraction=0.2, test_fraction=0.1))
    sp = build_splits(cfg)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (35, 10, 5)
    assert sp.in_channels == 1 and sp.n_out == 2
    x, y = sp.val[0]
    assert x.shape == (192, 1) and y.dtype == torch.int64
    # memory-mapped, not loaded
    assert isinstance(sp.train.dataset.x.base, np.memmap) or isinstance(sp.train.dataset.x, np.memmap)


def test_npy_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"data\.x: file not found.*\n.*python -m graphsphere\.data\.synthetic"):
        build_splits(load_config(_npy_config(tmp_path)))
    save_example(tmp_path, nside=8, n=10, seed=0)            # nside 8 data, nside 4 sampling
    with pytest.raises(ValueError, match=r"data\.x .*768 pixels per map.*192.*nside: 8"):
        build_splits(load_config(_npy_config(tmp_path)))
    m = _smooth_nested_map(4)
    np.save(tmp_path / "x.npy", np.stack([hp.reorder(m, n2r=True)] * 10))
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    with pytest.raises(ValueError, match="looks RING-ordered but NESTED is expected"):
        build_splits(load_config(_npy_config(tmp_path)))
    np.save(tmp_path / "x.npy", np.stack([m] * 10))
    np.save(tmp_path / "y.npy", np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match="one integer class per map"):
        build_splits(load_config(_npy_config(tmp_path)))


def test_unknown_dataset_and_params():
    with pytest.raises(ConfigError, match=r"data\.name = 'imagenet': unknown dataset; allowed: \[.*'npy'.*'synthetic'"):
        load_config({"task": "classification", "data": {"name": "imagenet"}})
    with pytest.raises(ConfigError, match=r"data\.n_trian: unknown field \(value 5\); did you mean 'n_train'"):
        load_config({"task": "classification", "data": {"name": "synthetic", "n_trian": 5}})
    with pytest.raises(ConfigError, match=r"data\.noise = -1.*greater than or equal to 0"):
        load_config({"task": "classification", "data": {"name": "synthetic", "noise": -1}})


def test_cosmology_hook(tmp_path):
    pytest.importorskip("pyccl")
    base = {"task": "classification", "data": {"name": "cosmology", "nside": 16, "n_maps_per_class": 3, "order": 1,
                                               "noise": 0.5, "cache_dir": str(tmp_path)}}
    with pytest.raises(ConfigError, match=r"data\.nsid: unknown field.*did you mean 'nside'"):
        load_config({"task": "classification", "data": {"name": "cosmology", "nsid": 16}})
    sp = build_splits(load_config(base))
    # The sampling comes from the data set: one of the 12 base-pixel patches at nside 16.
    assert sp.sampling.npix == 16**2 and sp.in_channels == 1 and sp.n_out == 2
    labels = [np.array([int(ds[i][1]) for i in range(len(ds))]) for ds in (sp.train, sp.val, sp.test)]
    assert [len(v) for v in labels] == [24, 24, 24]         # 1 map per class in each split, 12 patches a map
    assert all(np.bincount(v).tolist() == [12, 12] for v in labels)
    with pytest.raises(ConfigError, match=r"sampling: the config says .*nside=8.* but dataset 'cosmology'"):
        build_splits(load_config({**base, "sampling": {"type": "HEALPix", "nside": 8}}))


def test_patches_dataset_from_config(tmp_path):
    """Maps on disk -> patches, split by whole maps, through the config."""
    maps = np.stack([_smooth_nested_map(8, seed=i) for i in range(10)]).astype(np.float32)
    np.save(tmp_path / "maps.npy", maps)
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    cfg = {"task": "classification", "data": {"name": "patches", "maps": str(tmp_path / "maps.npy"),
                                              "targets": str(tmp_path / "y.npy"), "patch_nside": 2,
                                              "val_fraction": 0.2, "test_fraction": 0.2}}
    sp = build_splits(load_config(cfg))
    assert sp.sampling.npix == 16 and not sp.sampling.full_sphere          # (8 / 2)^2 pixels a patch
    assert [len(d) for d in (sp.train, sp.val, sp.test)] == [6 * 48, 2 * 48, 2 * 48]
    maps_of = [{i // 48 for i in d.indices} for d in (sp.train, sp.val, sp.test)]
    assert not (maps_of[0] & maps_of[1]) and not (maps_of[0] & maps_of[2])   # no map in two splits
    x, y = sp.val[5]
    m = sp.val.indices[5] // 48
    np.testing.assert_array_equal(x[:, 0].numpy(), maps[m, 5 * 16:6 * 16])
    assert int(y) == m % 2
    np.save(tmp_path / "y.npy", np.arange(9) % 2)
    with pytest.raises(ValueError, match="10 maps but 9 labels"):
        build_splits(load_config(cfg))


def test_a_registered_dataset_cannot_shadow_a_built_in_one():
    # docs/training.md once registered its example as "stations": every later config naming the built-in
    # stations data set trained on the example instead (found by the docs test, run after it)
    from graphsphere.data.registry import BUILTIN_DATASETS, dataset_entry, register_dataset

    def build_mine(sampling, task, seed, *, path: str):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="'stations' is a built-in dataset name"):
        register_dataset("stations")(build_mine)
    assert dataset_entry("stations").builder.__module__ == BUILTIN_DATASETS["stations"]
    register_dataset("test_mine_not_built_in")(build_mine)
    assert dataset_entry("test_mine_not_built_in").builder is build_mine
