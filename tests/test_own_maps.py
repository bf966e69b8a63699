"""A scientist's own maps: masks and missing values everywhere, normalisation in the data's units,
spatial splits of one sky, FITS in any ordering, shape errors, and a masked full-sky regression from a
YAML config through train, evaluate and predict."""

import healpy as hp
import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("lightning")

import graphsphere as gs  # noqa: E402
from graphsphere.cli import main  # noqa: E402
from graphsphere.data.skymaps import read_map_file, region_codes  # noqa: E402
from graphsphere.train import fit, predict  # noqa: E402
from graphsphere.train.config import load_train_config  # noqa: E402
from graphsphere.train.module import SphereTask, build_model  # noqa: E402

S = gs.sampling.HEALPix(nside=4)


def task_module(task, n_out, model="SphericalUNet"):
    cfg = load_train_config({"task": task, "sampling": {"type": "HEALPix", "nside": 4},
                             "model": {"type": model, "channels": [4, 4] if model == "SphericalUNet" else [4],
                                       "K": 2}})
    torch.manual_seed(0)
    m = build_model(cfg.model, task, S, 2, n_out)
    return SphereTask(cfg, m, S, 2, n_out, target_stats=(torch.tensor([3.0]), torch.tensor([2.0]))
                      if task == "regression" else None)


def loss_grads_metrics(module, x, y, w):
    module.zero_grad()
    module.val_metrics.reset()
    out = module(x)
    loss = module.loss(out, y, w)
    loss.backward()
    module.val_metrics.update(module.in_data_units(out), y, w)
    grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    return loss.detach(), grads, {k: float(v) for k, v in module.val_metrics.compute().items()}


@pytest.mark.parametrize("task", ["regression", "segmentation", "classification"])
def test_masked_targets_change_nothing(task):
    """Any value, NaN included, under the mask: the same loss, gradients and metrics."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((3, S.npix, 2)).astype(np.float32))
    if task == "classification":
        module = task_module(task, 3, "SphericalCNN")
        y = torch.tensor([0, 2, 1])
        w = torch.tensor([1.0, 0.0, 1.0])                      # sample 1 left out
        y2 = torch.tensor([0, 0, 1])                           # ... whatever its label
        changed = [(y2, w)]
    else:
        module = task_module(task, 1 if task == "regression" else 3)
        w = torch.from_numpy((rng.random((3, S.npix)) > 0.3).astype(np.float32))
        if task == "regression":
            y = torch.from_numpy(rng.standard_normal((3, S.npix, 1)).astype(np.float32) * 2 + 3)
            y[0, :10] = float("nan")                            # unknown targets: as if their weight were 0
            masked = (w == 0)[..., None]
            changed = [(torch.where(masked, torch.full_like(y, v), y), w) for v in (float("nan"), 1e30, -7.0)]
            w_nan = w.clone()
            w_nan[0, :10] = 0                                   # ... so NaN targets = weight 0, any value
            changed.append((torch.where(torch.isnan(y), torch.full_like(y, 1e30), y), w_nan))
        else:
            y = torch.from_numpy(rng.integers(0, 3, (3, S.npix)))
            y[1, :20] = -1                                      # unlabelled pixels: as if their weight were 0
            masked = w == 0
            changed = [(torch.where(masked, torch.full_like(y, v), y), w) for v in (-1, 2)]
            w_unlabelled = w.clone()
            w_unlabelled[1, :20] = 0
            changed.append((torch.where(y < 0, torch.full_like(y, 1), y), w_unlabelled))
    ref = loss_grads_metrics(module, x, y, w)
    assert torch.isfinite(ref[0]) and ref[2]
    for y2, w2 in changed:
        got = loss_grads_metrics(module, x, y2, w2)
        assert torch.equal(got[0], ref[0])
        assert all(torch.equal(a, b) for a, b in zip(got[1], ref[1]))
        assert got[2] == ref[2]
    if task == "regression":                                   # and the mask does something
        unmasked = loss_grads_metrics(module, x, torch.nan_to_num(y, nan=3.0), None)
        assert not torch.equal(unmasked[0], ref[0])


def test_missing_inputs_error_fill_and_flag():
    cfg = {"task": "regression", "sampling": {"type": "HEALPix", "nside": 4},
           "model": {"type": "SphericalUNet", "channels": [4, 4], "K": 2}}
    x = torch.randn(2, S.npix, 2)
    x[0, 5, 1] = float("nan")
    for missing, cin in (("error", 2), ("fill", 2), ("flag", 4)):
        c = load_train_config({**cfg, "data": {"missing_inputs": missing}})
        m = SphereTask(c, build_model(c.model, "regression", S, cin, 1), S, 2, 1)
        if missing == "error":
            with pytest.raises(ValueError, match="missing_inputs: fill"):
                m(x)
        else:
            assert torch.isfinite(m(x)).all()
    seen = {}

    def spy(module, args):
        seen["x"] = args[0]

    c = load_train_config({**cfg, "data": {"missing_inputs": "flag"}})
    m = SphereTask(c, build_model(c.model, "regression", S, 4, 1), S, 2, 1,
                   input_stats=(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])))
    m.model.register_forward_pre_hook(spy)
    m(x)
    got = seen["x"]
    assert got.shape == (2, S.npix, 4)
    assert got[0, 5, 1] == 0 and got[0, 5, 3] == 0 and got[0, 5, 2] == 1         # filled at the mean, flagged
    assert got[1, 7, 0] == pytest.approx((float(x[1, 7, 0]) - 1) / 2)


def test_region_splits_are_disjoint_whole_parents_with_a_buffer():
    codes = region_codes(16, 2, (0.2, 0.2), seed=3)
    parents = codes.reshape(48, 64)
    assert np.all(parents == parents[:, :1])                                    # whole parent pixels
    assert sorted(np.unique(codes)) == [0, 1, 2]
    np.testing.assert_array_equal(np.bincount(parents[:, 0]), [28, 10, 10])     # round(0.2 * 48) = 10 each
    buffered = region_codes(16, 2, (0.2, 0.2), seed=3, buffer=2)
    np.testing.assert_array_equal(buffered[buffered >= 0], codes[buffered >= 0])  # only training pixels lost
    lost = np.flatnonzero(buffered < 0)
    assert lost.size and np.all(codes[lost] == 0)
    # every lost pixel is within 2 steps of a held-out pixel, and no kept training pixel is next to one
    held = codes > 0
    nb = hp.get_all_neighbours(16, np.flatnonzero(buffered == 0), nest=True)
    assert not held[nb[nb >= 0]].any()
    assert not np.array_equal(region_codes(16, 2, (0.2, 0.2), seed=4), codes)    # seeded


def test_fits_in_ring_order_with_unseen_pixels_read_nested_with_nan(tmp_path):
    np.random.seed(1)
    ring = hp.synfast(1 / (1 + np.arange(24.0)) ** 2, 8)
    ring[[0, 100, 500]] = hp.UNSEEN
    hp.write_map(str(tmp_path / "m.fits"), ring, nest=False)
    m = read_map_file(tmp_path / "m.fits")
    nested = hp.reorder(ring, r2n=True)
    assert m.shape == (1, 768, 1)
    np.testing.assert_array_equal(np.isnan(m[0, :, 0]), nested == hp.UNSEEN)
    np.testing.assert_allclose(m[0, nested != hp.UNSEEN, 0], nested[nested != hp.UNSEEN], rtol=1e-6)
    coarse = read_map_file(tmp_path / "m.fits", nside=4)                       # averaged children, NaN skipped
    ref = hp.ud_grade(nested, 4, order_in="NESTED", order_out="NESTED", pess=False)
    np.testing.assert_allclose(coarse[0, :, 0], ref, rtol=1e-5)


def test_targets_shapes_are_checked(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, S.npix)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "dense.npy", x * 2)                                      # [n, npix]: per pixel
    base = {"task": "regression", "output_dir": str(tmp_path / "r"), "sampling": {"type": "HEALPix", "nside": 4},
            "data": {"name": "npy", "x": str(tmp_path / "x.npy"), "y": str(tmp_path / "dense.npy"),
                     "check_order": False, "val_fraction": 0.25},
            "trainer": {"max_epochs": 1, "batch_size": 2, "progress_bar": False, "loggers": ["csv"]}}
    with pytest.raises(ValueError, match="targets are per pixel .* use a per-vertex model such as SphericalUNet"):
        fit({**base, "model": {"type": "SphericalCNN", "channels": [4], "K": 2}})
    r = fit({**base, "model": {"type": "SphericalUNet", "channels": [4, 4], "K": 2}})
    assert predict(r.best_checkpoint, x[:2], check_order=False).shape == (2, S.npix, 1)
    np.save(tmp_path / "bad.npy", np.zeros((8, 5, 2)))
    with pytest.raises(ValueError, match=r"regression needs targets \[n\] or \[n, k\]"):
        fit({**base, "data": {**base["data"], "y": str(tmp_path / "bad.npy")},
             "model": {"type": "SphericalUNet", "channels": [4, 4], "K": 2}})


def _sky(tmp_path, nside=8):
    """Two physical-looking maps: y = 2 x + smoothed x + 5, in kelvin; x in RING FITS, a land mask."""
    rng = np.random.default_rng(2)
    np.random.seed(2)
    x = hp.synfast(1 / (1 + np.arange(3 * nside)) ** 2, nside) * 10 + 280               # RING
    smooth = hp.smoothing(x - 280, fwhm=np.radians(20), iter=1, use_pixel_weights=False)
    y = 2 * (x - 280) + 3 * smooth + 5 + 0.1 * rng.standard_normal(x.size)
    land = hp.ang2pix(nside, *hp.pix2ang(nside, np.arange(x.size)))                     # placeholder ids
    land = (np.cos(np.radians(hp.pix2ang(nside, np.arange(x.size), lonlat=True)[0] * 3)) > 0.7)
    x_masked = np.where(land, hp.UNSEEN, x)                                              # no input on land
    y_masked = np.where(land, hp.UNSEEN, y)                                              # nor target
    hp.write_map(str(tmp_path / "x.fits"), x_masked, nest=False)
    hp.write_map(str(tmp_path / "y.fits"), y_masked, nest=False)
    lat = hp.pix2ang(nside, np.arange(x.size), lonlat=True)[1]
    hp.write_map(str(tmp_path / "lat.fits"), np.where(land, hp.UNSEEN, np.cos(np.radians(lat))), nest=False)
    return land


def test_masked_full_sky_regression_from_yaml_through_the_command_line(tmp_path, capsys):
    land = _sky(tmp_path)
    cfg = {"task": "regression", "output_dir": str(tmp_path / "run"),
           "sampling": {"type": "HEALPix", "nside": 8},
           "data": {"name": "maps", "inputs": [str(tmp_path / "x.fits"), str(tmp_path / "lat.fits")],
                    "targets": str(tmp_path / "y.fits"),
                    "split": "regions", "region_nside": 2, "val_fraction": 0.2, "test_fraction": 0.2,
                    "missing_inputs": "flag"},
           "model": {"type": "SphericalUNet", "channels": [8, 16], "K": 3},
           "optim": {"lr": 0.01},
           "trainer": {"max_epochs": 25, "batch_size": 1, "progress_bar": False, "loggers": ["csv"],
                       "checkpoint_every_n_steps": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert main(["evaluate", str(ckpt), "--json", str(tmp_path / "m.json")]) == 0
    import json

    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["test_r2"] > 0.5, metrics                                            # held-out regions
    assert main(["predict", str(ckpt), str(tmp_path / "x.fits"), str(tmp_path / "lat.fits"),
                 "--out", str(tmp_path / "pred.fits")]) == 0
    pred = hp.read_map(str(tmp_path / "pred.fits"), nest=True)
    land_nest = hp.reorder(land.astype(float), r2n=True) > 0.5
    assert pred.shape == (768,) and np.all(pred[land_nest] == hp.UNSEEN) and np.all(pred[~land_nest] != hp.UNSEEN)
    truth = hp.reorder(hp.read_map(str(tmp_path / "y.fits")), r2n=True)
    ok = ~land_nest
    assert np.corrcoef(pred[ok], truth[ok])[0, 1] > 0.8                                   # in kelvin, not z-scores
    assert abs(pred[ok].mean() - truth[ok].mean()) < 0.3 * truth[ok].std()


def test_target_statistics_come_from_training_pixels_only(tmp_path):
    from graphsphere.train.engine import build_data, training_statistics

    _sky(tmp_path)
    cfg = load_train_config({"task": "regression", "sampling": {"type": "HEALPix", "nside": 8},
                             "data": {"name": "maps", "inputs": [str(tmp_path / "x.fits")],
                                      "targets": str(tmp_path / "y.fits"), "region_nside": 2}})
    splits = build_data(cfg)
    mean, std = training_statistics(splits.train, "targets", n_out=1)
    x, y, w = splits.train[0]
    keep = (w > 0) & torch.isfinite(y[:, 0])
    assert float(mean) == pytest.approx(float(y[keep, 0].double().mean()), rel=1e-5)
    assert float(std) == pytest.approx(float(y[keep, 0].double().std(unbiased=False)), rel=1e-4)


def test_class_weights_match_torch_and_balance_the_training_labels():
    import torch.nn.functional as F

    from graphsphere.train.engine import class_counts

    module = task_module("segmentation", 3)
    cw = torch.tensor([0.5, 2.0, 4.0])
    module.class_weights = None
    del module.class_weights
    module.register_buffer("class_weights", cw)
    x = torch.randn(2, S.npix, 2)
    y = torch.randint(0, 3, (2, S.npix))
    out = module(x)
    ref = F.cross_entropy(out.reshape(-1, 3), y.reshape(-1), weight=cw)          # torch's weighted mean
    torch.testing.assert_close(module.loss(out, y), ref)
    labels = torch.tensor([[0] * 6 + [1] * 3 + [2] * 1 + [-1] * 2])                  # -1: unlabelled
    ds = [(torch.zeros(12, 1), labels[0])]
    counts = class_counts(ds, 3)
    np.testing.assert_array_equal(counts.numpy(), [6, 3, 1])
    balanced = counts.sum() / (3 * counts)                                           # sklearn's "balanced"
    torch.testing.assert_close(balanced.float(), torch.tensor([10 / 18, 10 / 9, 10 / 3]))


def _maps_config(tmp_path, **data):
    return load_train_config({"task": "regression", "sampling": {"type": "HEALPix", "nside": 4},
                              "data": {"name": "maps", "inputs": [str(tmp_path / "x.npy")],
                                       "targets": str(tmp_path / "y.npy"), "region_nside": 1, **data}})


def _two_channel_maps(tmp_path, n=3):
    rng = np.random.default_rng(5)
    np.save(tmp_path / "x.npy", rng.standard_normal((n, S.npix, 2)))
    y = rng.standard_normal((n, S.npix)) * 2 + 3
    np.save(tmp_path / "y.npy", y)
    return y


def test_a_sampling_subset_of_pixels_masks_the_loss_and_metrics(tmp_path):
    """data.pixels (NESTED ids): weight 0 elsewhere; targets changed there (NaN, 1e30, -7) leave the loss,
    the gradients and the metrics as they were."""
    from graphsphere.data.skymaps import pixel_subset
    from graphsphere.train.engine import build_data

    y = _two_channel_maps(tmp_path)
    subset = np.random.default_rng(1).choice(S.npix, 60, replace=False)
    np.save(tmp_path / "pix.npy", subset)
    inside = np.isin(np.arange(S.npix), subset)
    splits = build_data(_maps_config(tmp_path, pixels=str(tmp_path / "pix.npy")))
    x, y0, w = (torch.stack(t) for t in zip(*(splits.train[i] for i in range(len(splits.train)))))
    assert w[:, ~inside].eq(0).all() and w[:, inside].gt(0).any()
    full = build_data(_maps_config(tmp_path)).train
    np.testing.assert_array_equal(w.numpy(), np.broadcast_to(full[0][2].numpy() * inside, w.shape))  # region x subset
    module = task_module("regression", 1)
    ref = loss_grads_metrics(module, x, y0, w)
    assert torch.isfinite(ref[0]) and ref[2]
    for v in (np.nan, 1e30, -7.0):
        np.save(tmp_path / "y.npy", np.where(inside[None], y, v))
        s2 = build_data(_maps_config(tmp_path, pixels=str(tmp_path / "pix.npy")))
        x2, y2, w2 = (torch.stack(t) for t in zip(*(s2.train[i] for i in range(len(s2.train)))))
        assert not torch.equal(torch.nan_to_num(y2), torch.nan_to_num(y0))
        got = loss_grads_metrics(module, x2, y2, w2)
        assert torch.equal(got[0], ref[0])
        assert all(torch.equal(a, b) for a, b in zip(got[1], ref[1]))
        assert got[2] == ref[2]
    np.save(tmp_path / "coarse.npy", np.array([3]))                  # nside-1 id 3: its 16 children at nside 4
    np.testing.assert_array_equal(np.flatnonzero(pixel_subset(tmp_path / "coarse.npy", 4, 1)), np.arange(48, 64))
    np.save(tmp_path / "bad.npy", np.array([S.npix]))
    with pytest.raises(ValueError, match=r"pixel ids must be .* in \[0, 192\)"):
        pixel_subset(tmp_path / "bad.npy", 4)


def test_weights_from_a_file_multiply_the_split_weights(tmp_path):
    from graphsphere.train.engine import build_data

    _two_channel_maps(tmp_path)
    weights = np.random.default_rng(2).random(S.npix)
    weights[:20] = 0
    weights[20:25] = np.nan                                              # NaN weight: left out
    np.save(tmp_path / "w.npy", weights)
    full = build_data(_maps_config(tmp_path)).train[0][2].numpy()
    w = build_data(_maps_config(tmp_path, weights=str(tmp_path / "w.npy"))).train[0][2].numpy()
    np.testing.assert_allclose(w, full * np.nan_to_num(weights), rtol=1e-6)
    assert w[:25].max() == 0 and (w > 0).sum() == ((full > 0) & (np.nan_to_num(weights) > 0)).sum()
    np.save(tmp_path / "w.npy", -np.ones(S.npix))
    with pytest.raises(ValueError, match="weights must be >= 0"):
        build_data(_maps_config(tmp_path, weights=str(tmp_path / "w.npy")))


def test_extensive_quantities_are_summed_not_averaged(tmp_path):
    counts = np.random.default_rng(3).poisson(5.0, 12 * 8**2).astype(float)   # counts per pixel, nside 8
    np.save(tmp_path / "n.npy", counts)
    down = read_map_file(tmp_path / "n.npy", nside=4, quantity="extensive")[0, :, 0]
    np.testing.assert_allclose(down, counts.reshape(-1, 4).sum(1))               # NESTED: 4 children in a row
    np.testing.assert_allclose(down, hp.ud_grade(counts, 4, order_in="NESTED", order_out="NESTED", power=-2))
    up = read_map_file(tmp_path / "n.npy", nside=16, quantity="extensive")[0, :, 0]
    np.testing.assert_allclose(up, np.repeat(counts / 4, 4))                      # split evenly, total kept
    mean = read_map_file(tmp_path / "n.npy", nside=4)[0, :, 0]                    # intensive: the mean
    np.testing.assert_allclose(mean, counts.reshape(-1, 4).mean(1))


def test_a_dataset_builder_named_in_yaml_runs_only_with_trust_code(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_sky_data.py").write_text(
        "import numpy as np, torch\n"
        "from graphsphere.data.registry import Splits\n"
        "CALLS = []\n"
        "def build(sampling, task, seed, n: int = 8):\n"
        "    CALLS.append(n)\n"
        "    g = torch.Generator().manual_seed(seed)\n"
        "    x = torch.randn(n, sampling.npix, 1, generator=g)\n"
        "    y = x.mean(dim=(1, 2))[:, None]\n"
        "    ds = list(zip(x, y))\n"
        "    return Splits(ds[:6], ds[6:], ds[6:], sampling=sampling, in_channels=1, n_out=1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {"task": "regression", "output_dir": str(tmp_path / "run"), "sampling": {"type": "HEALPix", "nside": 2},
           "data": {"name": "my_sky_data:build", "n": 10},
           "model": {"type": "SphericalCNN", "channels": [4], "K": 2},
           "trainer": {"max_epochs": 1, "batch_size": 2, "progress_bar": False, "loggers": ["csv"]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2                       # refused: code outside graphsphere
    assert "--trust-code" in capsys.readouterr().err
    import sys

    assert "my_sky_data" not in sys.modules                                     # ... and never imported
    assert main(["train", str(tmp_path / "c.yaml"), "--trust-code"]) == 0
    assert sys.modules["my_sky_data"].CALLS == [10]                               # its parameter from the YAML
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
