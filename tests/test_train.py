"""The training engine: fit / evaluate / predict, checkpoints, the command line."""

import json

import healpy as hp
import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("pydantic")

from graphsphere.cli import main  # noqa: E402
from graphsphere.data.io import write_predictions as _write  # noqa: E402
from graphsphere.nn import convert_sync_batchnorm  # noqa: E402
from graphsphere.train import evaluate, fit, predict  # noqa: E402
from graphsphere.train.callbacks import atomic_torch_save, layer_summary  # noqa: E402
from graphsphere.train.config import ConfigError  # noqa: E402
from graphsphere.train.module import CheckpointError, SphereTask  # noqa: E402


def write_predictions(pred, path, module):
    return _write(pred, path, module.sampling, module.task)


def tiny(out, task="classification", *, n_train=64, channels=(8,), K=3, **trainer):
    """A small synthetic run's config (n_train // 4 validation and test maps); ``trainer`` overrides."""
    model = {"type": "SphericalCNN", "channels": list(channels), "K": K}
    if task == "segmentation":
        model = {"type": "SphericalUNet", "channels": [4, 8], "K": 2}
    return {"task": task, "output_dir": str(out), "sampling": {"type": "HEALPix", "nside": 4},
            "data": {"name": "synthetic", "n_train": n_train, "n_val": n_train // 4, "n_test": n_train // 4,
                     "num_classes": 3 if
                     task == "segmentation" else 2, "noise": 0.1},
            "model": model, "optim": {"lr": 0.02},
            "trainer": {"max_epochs": 2, "batch_size": 16, "progress_bar": False, "loggers": ["csv"],
                        "checkpoint_every_n_steps": 3, **trainer}}


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k], k


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small classification run shared by the tests that only read it."""
    cfg = tiny(tmp_path_factory.mktemp("cls"), max_epochs=4)
    cfg["model"]["channels"] = [8, 16]          # two poolings: learns the task in 16 steps
    return fit(cfg)


def test_fit_writes_everything_and_learns(trained):
    out = trained.output_dir
    for f in ["config.yaml", "metrics.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt"]:
        assert (out / f).exists(), f
    assert list(out.glob("checkpoints/.*.tmp")) == []                   # no temporaries left
    assert trained.global_step == 4 * 64 // 16 and trained.epochs == 4
    m = trained.metrics
    assert set(m["test"]) >= {"test_loss", "test_acc", "test_f1", "test_map"}
    assert m["test"]["test_acc"] >= 0.75        # 2 bump widths: chance is 0.5
    csv = next(out.glob("logs/version_*/metrics.csv")).read_text()
    assert "train_loss_step" in csv and "val_acc" in csv
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["global_step"] == trained.global_step
    assert summary["best_checkpoint"].endswith("best.ckpt")


def test_evaluate_reproduces_the_test_metrics(trained):
    got = evaluate(trained.best_checkpoint)
    assert set(got) == set(trained.metrics["test"])                  # the names of metrics.json
    for k in ("acc", "f1", "map", "loss"):
        assert got[f"test_{k}"] == pytest.approx(trained.metrics["test"][f"test_{k}"], abs=1e-6)


def test_predict_arrays_and_files(trained, tmp_path):
    module = SphereTask.from_checkpoint(trained.last_checkpoint)
    x = np.random.default_rng(0).normal(size=(5, 192)).astype(np.float32)
    p = predict(module, x)
    assert p.shape == (5, 2) and np.allclose(p.sum(1), 1, atol=1e-6)
    with torch.no_grad():
        ref = module.eval()(torch.from_numpy(x)[:, :, None]).softmax(-1).numpy()
    np.testing.assert_allclose(p, ref, rtol=1e-6)
    np.save(tmp_path / "in.npy", x)
    np.testing.assert_allclose(predict(trained.last_checkpoint, tmp_path / "in.npy"), p, rtol=1e-6)
    # One map in a FITS file (written RING by healpy, read back NESTED), and NetCDF output.
    m = hp.reorder(x[0].astype(np.float64), n2r=True)
    hp.write_map(str(tmp_path / "in.fits"), m, nest=False)
    np.testing.assert_allclose(predict(module, tmp_path / "in.fits", check_order=False), p[:1], rtol=1e-5)
    write_predictions(p, tmp_path / "out.nc", module)
    from scipy.io import netcdf_file
    with netcdf_file(tmp_path / "out.nc", "r", mmap=False) as f:
        np.testing.assert_allclose(f.variables["prediction"][:], p, rtol=1e-6)
        assert f.variables["prediction"].dimensions == ("sample", "class")
    with pytest.raises(ValueError, match="FITS holds HEALPix maps.*one vector per map"):
        write_predictions(p, tmp_path / "out.fits", module)
    with pytest.raises(ValueError, match=r"shape \(5, 100\) does not fit a model on 192 pixels"):
        predict(module, x[:, :100])


def test_same_seed_same_result_and_other_seed_differs(tmp_path):
    a = fit(tiny(tmp_path / "a", max_epochs=1))
    b = fit(tiny(tmp_path / "b", max_epochs=1))
    c = fit(tiny(tmp_path / "c", max_epochs=1, seed=1))
    wa, wb, wc = (weights(r.last_checkpoint) for r in (a, b, c))
    assert_same(wa, wb)
    assert not torch.equal(wa["model.fc.weight"], wc["model.fc.weight"])


def test_resume_at_an_epoch_boundary_equals_one_run(tmp_path):
    once = fit(tiny(tmp_path / "once", max_epochs=3))
    fit(tiny(tmp_path / "twice", max_epochs=1))
    again = fit(tiny(tmp_path / "twice", max_epochs=3))
    assert again.resumed_from is not None and again.global_step == once.global_step
    assert_same(weights(once.last_checkpoint), weights(again.last_checkpoint))


def test_checkpoint_of_another_model_is_refused(tmp_path, trained):
    cfg = tiny(trained.output_dir)
    cfg["model"]["channels"] = [4]
    with pytest.raises(CheckpointError, match=r"trained with other settings:\n  model.channels: \[8, 16\] there, \[4\] here"):
        fit(cfg)
    torch.save({"state_dict": {}, "epoch": 0}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a graphsphere training checkpoint"):
        evaluate(tmp_path / "other.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable graphsphere checkpoint"):
        SphereTask.from_checkpoint(tmp_path / "junk.ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        SphereTask.from_checkpoint(tmp_path / "none.ckpt")


def test_regression_and_segmentation(tmp_path):
    r = fit(tiny(tmp_path / "reg", "regression", max_epochs=1))
    assert set(r.metrics["test"]) >= {"test_mse", "test_mae", "test_r2"}
    assert predict(r.last_checkpoint, np.zeros((2, 192), np.float32)).shape == (2, 1)
    s = fit(tiny(tmp_path / "seg", "segmentation", max_epochs=1))
    assert {"test_iou_0", "test_iou_2", "test_miou", "test_acc"} <= set(s.metrics["test"])
    module = SphereTask.from_checkpoint(s.last_checkpoint)
    x = np.random.default_rng(1).normal(size=(2, 192)).astype(np.float32)
    p = predict(module, x)
    assert p.shape == (2, 192, 3)
    write_predictions(p, tmp_path / "seg.fits", module)
    maps = hp.read_map(str(tmp_path / "seg.fits"), field=None, nest=True)
    np.testing.assert_array_equal(maps, p.argmax(-1))               # one label map per input


def test_bf16_mixed_on_cpu(tmp_path):
    r = fit(tiny(tmp_path / "bf16", max_epochs=1, precision="bf16-mixed", checkpoint_every_n_steps=0))
    assert np.isfinite(r.metrics["val"]["val_loss"]) and np.isfinite(r.metrics["test"]["test_loss"])
    # Mixed precision computes in bf16 but keeps the weights in float32.
    assert weights(r.last_checkpoint)["model.fc.weight"].dtype == torch.float32


def test_atomic_save_leaves_old_checkpoint_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"w": torch.ones(3)}, path)

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["w"], torch.ones(3))        # the old one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]    # no temporary left behind


def test_layer_summary_counts():
    import graphsphere as gs
    from graphsphere.models import SphericalCNN
    model = SphericalCNN(gs.sampling.HEALPix(nside=4), 1, 2, channels=(4, 8), K=2)
    text = layer_summary(model, torch.zeros(1, 192, 1))
    lines = text.splitlines()
    total = sum(p.numel() for p in model.parameters())
    assert lines[-1].split()[-1] == f"{total:,}"
    assert sum(int(line.split()[-1].replace(",", "")) for line in lines[1:-1]) == total
    pixels = [line.split()[-2] for line in lines[1:-1]]
    assert pixels[0] == "192" and "48" in pixels and "12" in pixels


def test_sync_batchnorm_keeps_the_vertex_layout():
    import copy

    import graphsphere as gs
    from graphsphere.models import SphericalCNN
    model = SphericalCNN(gs.sampling.HEALPix(nside=4), 1, 2, channels=(4,), K=2)
    ref = copy.deepcopy(model)
    convert_sync_batchnorm(model)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in ref.modules())
    # Without a process group SyncBatchNorm is plain batch norm: same outputs, same layout,
    # same running statistics.
    x = torch.randn(3, 192, 1)
    torch.testing.assert_close(model(x), ref(x))
    model.eval()
    ref.eval()
    torch.testing.assert_close(model(x), ref(x))
    with pytest.raises(ConfigError, match="SyncBatchNorm runs on GPUs only"):
        fit({**tiny("unused"), "trainer": {"sync_batchnorm": True, "accelerator": "cpu"}})


def test_tensorboard_missing_falls_back_to_csv(tmp_path, monkeypatch):
    import lightning.pytorch.loggers as L

    def missing(*a, **k):
        raise ModuleNotFoundError("Neither `tensorboard` nor `tensorboardX` is available.")

    monkeypatch.setattr(L, "TensorBoardLogger", missing)
    from graphsphere.train.config import load_train_config
    from graphsphere.train.engine import _loggers
    with pytest.warns(UserWarning, match="tensorboard is not installed: logging to CSV only"):
        loggers = _loggers(load_train_config(tiny(tmp_path, loggers=["tensorboard"])), tmp_path)
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger"]


def test_command_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    import yaml
    cfg.write_text(yaml.safe_dump(tiny(tmp_path / "run")))
    assert main(["train", str(cfg), "trainer.max_epochs=1", "data.n_test=0"]) == 0
    printed = json.loads("{" + capsys.readouterr().out.rsplit("\n{", 1)[-1])   # the summary comes last
    assert printed["epochs"] == 1 and "val_acc" in printed["metrics"]["val"]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    assert main(["evaluate", str(ckpt), "--split", "val", "--json", str(tmp_path / "m.json")]) == 0
    clean = json.loads((tmp_path / "m.json").read_text())
    assert set(clean) >= {"val_acc", "val_f1", "val_map", "val_loss"}
    assert main(["evaluate", str(ckpt), "data.noise=3", "--split", "val", "--json",
                 str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["val_loss"] != clean["val_loss"]
    np.save(tmp_path / "x.npy", np.zeros((3, 192), np.float32))
    assert main(["predict", str(ckpt), str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.npy")]) == 0
    assert np.load(tmp_path / "p.npy").shape == (3, 2)
    capsys.readouterr()
    assert main(["train", str(cfg), "trainer.max_epoch=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config error in {cfg}:") and "did you mean 'max_epochs'" in err
    assert main(["evaluate", str(tmp_path / "nope.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_early_stopping(tmp_path):
    # A learning rate too small to change anything: no improvement after the first epoch.
    cfg = tiny(tmp_path, max_epochs=6, early_stopping_patience=1, checkpoint_every_n_steps=0)
    cfg["optim"]["lr"] = 1e-12
    cfg["data"]["n_test"] = 0
    r = fit(cfg)
    assert r.epochs == 2 and r.global_step == 2 * 64 // 16


def test_evaluate_with_other_data_and_netcdf_input(trained, tmp_path):
    clean = evaluate(trained.best_checkpoint)
    noisy = evaluate(trained.best_checkpoint, overrides=["data.noise=3.0"])
    assert noisy["test_loss"] > clean["test_loss"]                      # the same model on much noisier maps
    x = np.random.default_rng(2).normal(size=(4, 192)).astype(np.float32)
    from scipy.io import netcdf_file
    with netcdf_file(tmp_path / "in.nc", "w") as f:
        f.createDimension("time", 4)
        f.createDimension("pixel", 192)
        f.createVariable("maps", "f", ("time", "pixel"))[:] = x
    np.testing.assert_allclose(predict(trained.best_checkpoint, tmp_path / "in.nc"),
                               predict(trained.best_checkpoint, x), rtol=1e-6)


def test_checkpoints_of_graphsphere_0_1_still_evaluate_and_predict():
    from pathlib import Path

    data = Path(__file__).parent / "data"
    io = torch.load(data / "v1_train_best_io.pt", weights_only=True)
    np.testing.assert_allclose(predict(data / "v1_train_best.ckpt", io["x"].numpy(), check_order=False),
                               io["y"].numpy(), rtol=1e-5, atol=1e-6)
    metrics = evaluate(data / "v1_train_best.ckpt")
    assert metrics["test_acc"] == pytest.approx(0.625)            # as graphsphere 0.1 measured it


def test_a_checkpoint_naming_code_is_refused_unless_trusted(trained, tmp_path):
    # a crafted checkpoint: its stored config names os:system as the model
    ckpt = torch.load(trained.best_checkpoint, map_location="cpu", weights_only=True)
    ckpt["graphsphere"]["config"]["model"] = {"type": "os:system", "command": "touch PWNED"}
    torch.save(ckpt, tmp_path / "crafted.ckpt")
    for call in (lambda: evaluate(tmp_path / "crafted.ckpt"),
                 lambda: predict(tmp_path / "crafted.ckpt", np.zeros((1, 192), np.float32))):
        with pytest.raises(ConfigError, match="code outside graphsphere.*trust_code"):
            call()
    assert not (tmp_path / "PWNED").exists() and not list(tmp_path.parent.glob("PWNED"))
