"""Tests found by mutation testing of graphsphere.train (issue 18): behaviours no other test checked.

Fast (no Lightning fit unless said): config validation naming the key, the sampler's partitions,
metrics against hand-computed values, checkpoints, resume bookkeeping.
"""

import os
import random
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("pydantic")

from graphsphere.train import evaluate, fit, predict  # noqa: E402
from graphsphere.train.config import ConfigError  # noqa: E402
from graphsphere.train.config import load_train_config as load_config  # noqa: E402
from graphsphere.train.module import SphereTask, build_model  # noqa: E402
from graphsphere.train.sampler import EpochSampler  # noqa: E402
from test_train import tiny as train_tiny  # noqa: E402  (tests/ is on sys.path: pytest's rootdir import mode)
from test_train_config import BASE, _err  # noqa: E402


# -- config ---------------------------------------------------------------------------------------
def test_negative_weight_decay_is_refused_naming_the_key():
    assert "optim.weight_decay = -0.1" in _err(BASE, ["optim.weight_decay=-0.1"])
    assert load_config(BASE, ["optim.weight_decay=0"]).optim.weight_decay == 0


# -- sampler --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, world", [(10, 3), (7, 2), (12, 4)])
def test_evaluation_ranks_cover_every_sample_with_equal_counts(n, world):
    ranks = [list(EpochSampler(n, 2, shuffle=False, rank=r, world_size=world)) for r in range(world)]
    per_rank = -(-n // world)
    assert all(len(r) == per_rank for r in ranks)
    together = sum(ranks, [])
    assert sorted(set(together)) == list(range(n))                       # every sample seen
    assert len(together) - n == per_rank * world - n                     # the padding only
    lengths = [len(EpochSampler(n, 2, shuffle=False, rank=r, world_size=world)) for r in range(world)]
    assert lengths == [per_rank] * world


# -- shared: one tiny trained run, and modules built without training ----------------------------
def tiny(out, task="classification", **trainer):
    """test_train's tiny run, smaller still: 32 training maps, one epoch, no step checkpoints."""
    return train_tiny(out, task, n_train=32, channels=[4], K=2,
                      **{"max_epochs": 1, "checkpoint_every_n_steps": 0, **trainer})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny classification run (2 steps) for the tests that only read its checkpoints."""
    return fit(tiny(tmp_path_factory.mktemp("run")))


def task_module(task="classification", n_out=2, in_channels=1, **kw):
    """A SphereTask on HEALPix(4) built from a config, untrained."""
    cfg = load_config(tiny("unused", task))
    sampling = cfg.sampling.build()
    model = build_model(cfg.model, task, sampling, in_channels, n_out)
    return SphereTask(cfg, model, sampling, in_channels, n_out, **kw)


def test_package_getattr_names_the_missing_attribute():
    import graphsphere.train as gt

    assert gt.fit is fit
    with pytest.raises(AttributeError, match="module 'graphsphere.train' has no attribute 'nope'"):
        gt.nope  # noqa: B018


# -- layer_summary --------------------------------------------------------------------------------
class _Pair(torch.nn.Module):
    """A leaf without parameters returning a tuple: the table shows the first element's shape."""

    def forward(self, x):
        return x, x[:, :1]


class _Owner(torch.nn.Module):
    """Owns a parameter and has a child: only its own 3 parameters count on its row."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(3))
        self.inner = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.inner(x) * self.scale


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())   # a container: no row
        self.pair = _Pair()
        self.owner = _Owner()
        self.head = torch.nn.Linear(3, 1)

    def forward(self, x):
        x = self.block(x)
        x, _ = self.pair(x)
        return self.head(self.owner(x)).mean(1)


def test_layer_summary_table_exactly():
    from graphsphere.train.callbacks import layer_summary

    net = _Net()
    net.train()
    text = layer_summary(net, torch.zeros(1, 5, 2))
    rows = [
        ("layer", "type", "output", "pixels", "params"),
        ("block.0", "Linear", "[1, 5, 3]", "5", "9"),
        ("block.1", "ReLU", "[1, 5, 3]", "5", "0"),
        ("pair", "_Pair", "[1, 5, 3]", "5", "0"),
        ("owner.inner", "Linear", "[1, 5, 3]", "5", "12"),
        ("owner", "_Owner", "[1, 5, 3]", "5", "3"),
        ("head", "Linear", "[1, 5, 1]", "5", "4"),
        ("total", "", "", "", "28"),
    ]
    want = [f"{a:<32} {b:<18} {c:<18} {d:>8} {e:>10}" for a, b, c, d, e in rows]
    assert text.splitlines() == want
    assert net.training                                            # the mode is restored
    assert not net.head._forward_hooks                             # the hooks are removed
    # 2-d outputs have no pixel axis; long names and types are cut to their columns; thousands get commas
    seq = torch.nn.Sequential()
    seq.add_module("a_very_long_layer_name_" + "x" * 20, torch.nn.Linear(40, 50))
    lines = layer_summary(seq, torch.zeros(2, 40)).splitlines()
    assert lines[1] == f"{'a_very_long_layer_name_xxxxxxxxx':<32} {'Linear':<18} {'[2, 50]':<18} {'-':>8} {'2,050':>10}"
    lstm = torch.nn.Sequential(torch.nn.LSTM(2, 3, batch_first=True))
    lines = layer_summary(lstm, torch.zeros(1, 4, 2)).splitlines()
    assert lines[1].split()[:5] == ["0", "LSTM", "[1,", "4,", "3]"]


def test_layer_summary_cuts_types_and_shapes_to_their_columns():
    from graphsphere.train.callbacks import layer_summary

    class AVeryLongModuleTypeName(torch.nn.Module):
        def forward(self, x):
            return x.reshape(1, 1, 1, 1, 1, 1, 1, -1)

    seq = torch.nn.Sequential(AVeryLongModuleTypeName())
    line = layer_summary(seq, torch.zeros(1, 3)).splitlines()[1]
    assert line == f"{'0':<32} {'AVeryLongModuleTyp':<18} {'[1, 1, 1, 1, 1, 1,':<18} {'-':>8} {'0':>10}"


# -- PlainProgress --------------------------------------------------------------------------------
def test_plain_progress_prints_one_line_per_epoch(capsys, monkeypatch):
    import time

    from graphsphere.train.callbacks import PlainProgress

    clock = iter([100.0, 103.4])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    metrics = {"train_loss_epoch": torch.tensor(0.5234), "val_loss": torch.tensor(0.61), "val_acc": torch.tensor(0.8),
               "val_iou": torch.tensor([0.1, 0.2]), "train_loss_step": torch.tensor(9.0)}
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, callback_metrics=metrics,
                              current_epoch=2, max_epochs=10)
    cb = PlainProgress()
    cb.on_train_epoch_start(trainer, None)
    cb.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == "epoch 3/10  train_loss 0.5234  val_acc 0.8  val_loss 0.61  (3 s)\n"
    for quiet in ({"is_global_zero": False}, {"sanity_checking": True}):
        cb.on_train_epoch_end(SimpleNamespace(**{**vars(trainer), **quiet}), None)
        assert capsys.readouterr().out == ""


# -- DivergenceGuard's clean-up --------------------------------------------------------------------
def test_remove_checkpoints_from_a_step_on(tmp_path):
    from graphsphere.train.callbacks import _remove_checkpoints_from

    for name, step in (("early.ckpt", 3), ("at.ckpt", 5), ("late.ckpt", 7)):
        torch.save({"global_step": step}, tmp_path / name)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    callbacks = [SimpleNamespace(last_model_path=str(tmp_path / "late.ckpt"),
                                 best_model_path=str(tmp_path / "early.ckpt")),
                 SimpleNamespace(last_model_path=str(tmp_path / "at.ckpt"), best_model_path=""),
                 SimpleNamespace(last_model_path=str(tmp_path / "junk.ckpt")),
                 SimpleNamespace(last_model_path=str(tmp_path / "gone.ckpt"), best_model_path=None)]
    other = SimpleNamespace(is_global_zero=False, checkpoint_callbacks=callbacks)
    assert _remove_checkpoints_from(other, 5) == []
    assert {p.name for p in tmp_path.iterdir()} == {"early.ckpt", "at.ckpt", "late.ckpt", "junk.ckpt"}
    trainer = SimpleNamespace(is_global_zero=True, checkpoint_callbacks=callbacks)
    assert _remove_checkpoints_from(trainer, 5) == ["at.ckpt", "late.ckpt"]
    assert {p.name for p in tmp_path.iterdir()} == {"early.ckpt", "junk.ckpt"}
    torch.save({"epoch": 0}, tmp_path / "nostep.ckpt")            # no global_step: step 0
    trainer.checkpoint_callbacks = [SimpleNamespace(last_model_path=str(tmp_path / "nostep.ckpt"))]
    assert _remove_checkpoints_from(trainer, 1) == [] and _remove_checkpoints_from(trainer, 0) == ["nostep.ckpt"]


# -- class_counts and balanced class weights ------------------------------------------------------
class _Rows(torch.utils.data.Dataset):
    def __init__(self, *columns):
        self.columns = columns

    def __len__(self):
        return len(self.columns[0])

    def __getitem__(self, i):
        return tuple(c[i] for c in self.columns)


def test_class_counts_by_hand():
    from graphsphere.train.engine import class_counts

    x = torch.zeros(7, 3, 1)
    y = torch.tensor([0, 2, 2, -1, 2, 1, 0])
    got = class_counts(_Rows(x, y), 4, batch_size=3)
    assert got.dtype == torch.float64 and got.tolist() == [2, 1, 3, 0]
    w = torch.tensor([1.0, 0.0, 2.0, 1.0, 1.0, 0.0, 1.0])                  # weight 0: left out
    assert class_counts(_Rows(x, y, w), 3, batch_size=2).tolist() == [2, 0, 2]
    # per-pixel labels with per-pixel weights
    yp = torch.tensor([[0, 1, 1], [2, -1, 1]])
    wp = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    assert class_counts(_Rows(torch.zeros(2, 3, 1), yp, wp), 3, batch_size=1).tolist() == [1, 2, 1]
    assert class_counts(_Rows(torch.zeros(2, 3, 1), yp), 3).tolist() == [1, 3, 1]
    # per-sample weights on per-pixel labels
    assert class_counts(_Rows(torch.zeros(2, 3, 1), yp, torch.tensor([0.0, 1.0])), 3).tolist() == [0, 1, 1]


def test_balanced_class_weights_from_the_training_counts():
    from graphsphere.train.engine import _class_weights

    splits = SimpleNamespace(train=_Rows(torch.zeros(6, 2, 1), torch.tensor([0, 0, 0, 0, 1, 2])), n_out=3)
    cfg = load_config({**BASE, "data": {"class_weights": "balanced"}})
    torch.testing.assert_close(_class_weights(cfg, splits), torch.tensor([6 / 12, 6 / 3, 6 / 3]))
    assert _class_weights(load_config(BASE), splits) is None
    given = _class_weights(load_config({**BASE, "data": {"class_weights": [1, 2, 3]}}), splits)
    assert given.dtype == torch.float32 and given.tolist() == [1, 2, 3]
    with pytest.raises(ConfigError, match=r"data.class_weights = \[1.0, 2.0\]: one weight per class \(3\) needed"):
        _class_weights(load_config({**BASE, "data": {"class_weights": [1, 2]}}), splits)
    splits.train = _Rows(torch.zeros(3, 2, 1), torch.tensor([0, 2, 0]))
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] never occur in the training split"):
        _class_weights(cfg, splits)
    reg = load_config({**BASE, "task": "regression", "data": {"class_weights": "balanced"}})
    with pytest.raises(ConfigError, match="data.class_weights = 'balanced': class weights are for classification"):
        _class_weights(reg, splits)


# -- the loss, with masks and weights -------------------------------------------------------------
def test_classification_loss_is_the_weighted_mean_cross_entropy():
    import torch.nn.functional as F

    m = task_module(n_out=3)
    out = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0], [0.5, 0.0, 0.0]])
    y = torch.tensor([0, 2, 2, 1])
    ce = F.cross_entropy(out, y, reduction="none")
    torch.testing.assert_close(m.loss(out, y), ce.mean())
    w = torch.tensor([1.0, 0.0, 3.0, 2.0])
    torch.testing.assert_close(m.loss(out, y, w), (ce * w).sum() / w.sum())
    weighted = task_module(n_out=3, class_weights=torch.tensor([1.0, 2.0, 0.5]))
    torch.testing.assert_close(weighted.loss(out, y), F.cross_entropy(out, y, weight=torch.tensor([1.0, 2.0, 0.5])))
    torch.testing.assert_close(weighted.loss(out, torch.tensor([0, -1, 2, 1])),
                               (ce[[0, 2, 3]] * torch.tensor([1.0, 0.5, 2.0])).sum() / 3.5)
    assert float(m.loss(out, torch.tensor([-1, -1, -1, -1]))) == 0.0   # nothing counts: 0, not NaN


def test_segmentation_loss_masks_labels_and_weighs_pixels():
    import torch.nn.functional as F

    m = task_module("segmentation", n_out=3)
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 4, 3, generator=g)
    y = torch.tensor([[0, 1, -1, 2], [2, 2, 0, -1]])
    w = torch.tensor([[1.0, 2.0, 5.0, 0.0], [1.0, 1.0, 3.0, 1.0]])
    ce = F.cross_entropy(out.reshape(-1, 3), y.reshape(-1).clamp(min=0), reduction="none")
    keep = (y.reshape(-1) >= 0).float() * w.reshape(-1)
    torch.testing.assert_close(m.loss(out, y, w), (ce * keep).sum() / keep.sum())
    ws = torch.tensor([2.0, 1.0])                                             # per map
    keep = (y >= 0).float() * ws[:, None]
    torch.testing.assert_close(m.loss(out, y, ws), (ce * keep.reshape(-1)).sum() / keep.sum())


def test_regression_loss_masks_nan_targets_and_weighs_samples():
    m = task_module("regression", n_out=2)
    out = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]])
    y = torch.tensor([[0.0, 2.0], [float("nan"), 1.0], [1.0, 0.0]])
    err = torch.tensor([[1.0, 0.0], [0.0, 4.0], [4.0, 9.0]])
    keep = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(m.loss(out, y), (err * keep).sum() / keep.sum())
    w = torch.tensor([1.0, 2.0, 0.5])
    kw = keep * w[:, None]
    torch.testing.assert_close(m.loss(out, y, w), (err * kw).sum() / kw.sum())
    # a flat target of as many values as the output is reshaped to it
    one = task_module("regression", n_out=1)
    torch.testing.assert_close(one.loss(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])), torch.tensor(2.5))
    # with target standardisation the loss is on standardised targets
    std = task_module("regression", n_out=2, target_stats=(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0])))
    ys = torch.tensor([[3.0, 2.0]])
    torch.testing.assert_close(std.loss(torch.tensor([[0.0, 0.0]]), ys), torch.tensor((1.0 + 4.0) / 2))


# -- predict_step and postprocess -----------------------------------------------------------------
def test_predict_step_and_postprocess():
    m = task_module(n_out=3).eval()
    x = torch.randn(2, 192, 1, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(x).softmax(-1)
        torch.testing.assert_close(m.predict_step(x, 0), ref)
        torch.testing.assert_close(m.predict_step((x, torch.zeros(2)), 0), ref)
        torch.testing.assert_close(m.predict_step([x, torch.zeros(2), torch.ones(2)], 0), ref)
    seg = task_module("segmentation", n_out=3)
    out = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(seg.postprocess(out), out.softmax(-1))
    reg = task_module("regression", n_out=2, target_stats=(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 3.0])))
    out = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    got = reg.postprocess(out)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(reg.in_data_units(out).float(), torch.tensor([[2.0, 2.0]]))
    assert task_module().in_data_units(out) is out


# -- random-number state in checkpoints ------------------------------------------------------------
def test_rng_state_capture_and_restore_round_trip():
    from graphsphere.train.module import _capture_rng, _restore_rng

    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    np.random.normal()                                           # numpy holds a cached gaussian now
    state = _capture_rng()
    first = (torch.rand(3), np.random.normal(size=3), np.random.random(), random.random())
    torch.rand(10), np.random.random(10), random.random()
    _restore_rng(state)
    again = (torch.rand(3), np.random.normal(size=3), np.random.random(), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2] and first[3] == again[3]
    assert "cuda" not in state or torch.cuda.is_available()


def test_rng_restore_sets_the_cuda_state_only_when_saved(monkeypatch):
    from graphsphere.train.module import _capture_rng, _restore_rng

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: calls.append(s))
    state = _capture_rng() if not torch.cuda.is_initialized() else {**_capture_rng()}
    state.pop("cuda", None)
    _restore_rng(state)
    assert calls == []
    _restore_rng({**state, "cuda": ["saved"]})
    assert calls == [["saved"]]


# -- evaluate and predict on a trained run --------------------------------------------------------
def test_evaluate_every_split_quietly(run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                                     # Lightning would write logs here
    capsys.readouterr()
    for split in ("train", "val", "test"):
        got = evaluate(run.best_checkpoint, split=split, device="cpu")
        assert set(got) == {f"{split}_{k}" for k in ("loss", "acc", "f1", "map")}
    assert got["test_loss"] == pytest.approx(run.metrics["test"]["test_loss"], abs=1e-6)
    assert capsys.readouterr().out == ""                              # no progress bar, no table
    assert list(tmp_path.iterdir()) == []                             # no logs, no checkpoints
    with pytest.raises(ValueError, match="split must be 'test', 'val' or 'train', got 'dev'"):
        evaluate(run.best_checkpoint, split="dev")


def test_evaluate_batches_do_not_change_the_metrics(run):
    a = evaluate(run.best_checkpoint, split="train", batch_size=3)
    b = evaluate(run.best_checkpoint, split="train", batch_size=32)
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-5)
    # the train split in order and whole: 32 maps, none dropped or repeated
    assert a["train_acc"] * 32 == pytest.approx(round(a["train_acc"] * 32), abs=1e-4)


def test_evaluate_refuses_other_data_and_missing_splits(run):
    from graphsphere.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"the data \(HEALPix.*1 channels\) do not match the model"):
        evaluate(run.best_checkpoint, overrides=["sampling.nside=2"])
    with pytest.raises(ValueError, match="dataset 'synthetic' has no test split"):
        evaluate(run.best_checkpoint, overrides=["data.n_test=0"])


def test_predict_lists_of_arrays_files_and_devices(run, tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 192)).astype(np.float32)
    p = predict(run.best_checkpoint, x)
    np.testing.assert_allclose(predict(run.best_checkpoint, list(x)), p, rtol=1e-6)
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_allclose(predict(run.best_checkpoint, [tmp_path / "a.npy"]), p, rtol=1e-6)
    np.testing.assert_allclose(predict(run.best_checkpoint, str(tmp_path / "a.npy"), batch_size=2), p, rtol=1e-6)
    np.save(tmp_path / "two.npy", np.stack([x, x], -1))               # 2 channels for a 1-channel model
    with pytest.raises(ValueError):
        predict(run.best_checkpoint, tmp_path / "two.npy")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            predict(run.best_checkpoint, x, device="cuda")
    with pytest.raises(ValueError, match="border is the context around patches: give patch_nside too"):
        predict(run.best_checkpoint, x, border=1)


def test_code_in_a_checkpoint_never_runs(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = torch.load(run.best_checkpoint, map_location="cpu", weights_only=True)
    ckpt["graphsphere"]["config"]["model"] = {"type": "os:system", "command": "touch PWNED"}
    torch.save(ckpt, tmp_path / "crafted.ckpt")
    for call in (lambda: evaluate(tmp_path / "crafted.ckpt"),
                 lambda: predict(tmp_path / "crafted.ckpt", np.zeros((1, 192), np.float32)),
                 lambda: SphereTask.from_checkpoint(tmp_path / "crafted.ckpt")):
        with pytest.raises(ConfigError, match="trust_code"):
            call()
    assert not (tmp_path / "PWNED").exists()


# -- training statistics ---------------------------------------------------------------------------
def test_training_statistics_by_hand():
    from graphsphere.train.engine import training_statistics

    x = torch.tensor([[[1.0, 10.0], [3.0, float("nan")]],
                      [[5.0, 10.0], [7.0, 10.0]],
                      [[float("inf"), 10.0], [9.0, 10.0]]])                # [3 maps, 2 pixels, 2 channels]
    y = torch.zeros(3)
    mean, std = training_statistics(_Rows(x, y), "inputs", batch_size=2)
    for a, b in zip(training_statistics(_Rows(x, y)), (mean, std)):       # inputs by default
        torch.testing.assert_close(a, b)
    vals = np.array([1.0, 3, 5, 7, 9])
    assert mean.dtype == torch.float32 and std.dtype == torch.float32
    np.testing.assert_allclose(mean.numpy(), [vals.mean(), 10.0], rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), [vals.std(), 1.0], rtol=1e-6)    # no spread: 1
    # targets: NaN and weight-0 entries left out, per sample and per pixel
    t = torch.tensor([[1.0, 2.0], [3.0, float("nan")], [100.0, 100.0], [5.0, 6.0]])
    w = torch.tensor([1.0, 1.0, 0.0, 2.0])
    mean, std = training_statistics(_Rows(torch.zeros(4, 2, 1), t, w), "targets", batch_size=3, n_out=2)
    np.testing.assert_allclose(mean.numpy(), [3.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), [np.std([1.0, 3, 5]), 2.0], rtol=1e-6)
    tp = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])                # per-pixel targets, one output
    wp = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    mean, std = training_statistics(_Rows(torch.zeros(2, 3, 1), tp, wp), "targets", n_out=1)
    np.testing.assert_allclose(mean.numpy(), [np.mean([1.0, 3, 5, 6])], rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), [np.std([1.0, 3, 5, 6])], rtol=1e-6)
    mean, _ = training_statistics(_Rows(torch.zeros(2, 3, 1), tp), "targets")           # n_out defaults to 1
    np.testing.assert_allclose(mean.numpy(), [3.5], rtol=1e-6)
    tiny_values = torch.tensor([1e-14, 3e-14])[:, None, None].expand(2, 3, 1)               # small values, real spread
    mean, std = training_statistics(_Rows(tiny_values, torch.zeros(2)), "inputs")
    np.testing.assert_allclose(std.numpy(), [1e-14], rtol=1e-5)
    big = torch.full((2, 3, 1), 1e6) + torch.tensor([0.0, 1.0])[:, None, None]            # large mean, real spread
    mean, std = training_statistics(_Rows(big, torch.zeros(2)), "inputs")
    np.testing.assert_allclose(std.numpy(), [0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="the training split holds no value of some input channel"):
        training_statistics(_Rows(torch.full((2, 3, 1), float("nan")), torch.zeros(2)), "inputs")
    with pytest.raises(ValueError, match="no value of some target channel"):
        training_statistics(_Rows(torch.zeros(1, 3, 1), torch.zeros(1, 2), torch.zeros(1)), "targets", n_out=2)


# -- the trainer a config makes ----------------------------------------------------------------------
def _trainer(tmp_path, has_val=True, stage="fit", steps_per_epoch=None, **trainer):
    from graphsphere.train.engine import build_trainer

    cfg = load_config(tiny(tmp_path, **trainer))
    return build_trainer(cfg, tmp_path, has_val=has_val, stage=stage, steps_per_epoch=steps_per_epoch)


def test_build_trainer_checkpoints_monitor_and_limits(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from graphsphere.train import engine
    from graphsphere.train.callbacks import AtomicCheckpointIO, DivergenceGuard, LayerSummary, PlainProgress

    monkeypatch.setattr(engine, "_interactive", lambda: False)
    t = _trainer(tmp_path, checkpoint_every_n_steps=7, early_stopping_patience=3, monitor="val_acc",
                 monitor_mode="max", verbose=True, divergence_factor=50.0, max_epochs=5, max_steps=30,
                 log_every_n_steps=4, val_every_n_epochs=2, gradient_clip_val=0.5, limit_train_batches=0.5,
                 limit_val_batches=3, progress_bar=True, steps_per_epoch=2)
    ck = [c for c in t.callbacks if isinstance(c, ModelCheckpoint)]
    assert len(ck) == 3 and all(c.dirpath == str(tmp_path / "checkpoints") for c in ck)
    steps, last, best = ck
    assert steps._every_n_train_steps == 7 and steps.save_top_k == 0 and steps.save_last
    assert last._every_n_train_steps == 0 and last.save_last and last._save_on_train_epoch_end and last.save_top_k == 0
    assert best.filename == "best" and best.monitor == "val_acc" and best.mode == "max" and best.save_top_k == 1
    assert best._save_on_train_epoch_end and not best.save_last and not best.auto_insert_metric_name
    assert not any(c._enable_version_counter for c in ck)
    stop = [c for c in t.callbacks if isinstance(c, EarlyStopping)]
    assert len(stop) == 1 and stop[0].monitor == "val_acc" and stop[0].patience == 3 and stop[0].mode == "max"
    summary = [c for c in t.callbacks if isinstance(c, LayerSummary)]
    assert len(summary) == 1 and summary[0].verbose is True
    guard = [c for c in t.callbacks if isinstance(c, DivergenceGuard)]
    assert len(guard) == 1 and guard[0].factor == 50.0
    assert sum(isinstance(c, PlainProgress) for c in t.callbacks) == 1
    assert t.max_epochs == 5 and t.max_steps == 30 and t.check_val_every_n_epoch == 2
    assert t.log_every_n_steps == 2                                    # at most the epoch's steps
    assert t.gradient_clip_val == 0.5 and t.limit_train_batches == 0.5 and t.limit_val_batches == 3
    assert isinstance(t.strategy.checkpoint_io, AtomicCheckpointIO)
    assert t.checkpoint_callback is not None and not t.progress_bar_callback
    assert [type(lg).__name__ for lg in t.loggers] == ["CSVLogger"] and t.loggers[0].save_dir == str(tmp_path)
    assert t._accelerator_connector.use_distributed_sampler is False
    assert t.precision == "32-true" and t.default_root_dir == str(tmp_path)


def test_build_trainer_defaults_and_no_validation(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from graphsphere.train import engine
    from graphsphere.train.callbacks import PlainProgress

    monkeypatch.setattr(engine, "_interactive", lambda: False)
    t = _trainer(tmp_path, has_val=False, checkpoint_every_n_steps=0, progress_bar=False, log_every_n_steps=5)
    ck = [c for c in t.callbacks if isinstance(c, ModelCheckpoint)]
    assert len(ck) == 2 and ck[1].monitor == "train_loss_epoch" and ck[1].mode == "min"
    assert not any(isinstance(c, (EarlyStopping, PlainProgress)) for c in t.callbacks)
    assert t.limit_val_batches == 0 and t.limit_train_batches == 1.0 and t.log_every_n_steps == 5
    assert t.gradient_clip_val is None and t.max_steps == -1
    t = _trainer(tmp_path, has_val=False, monitor="train_loss_epoch", steps_per_epoch=0, log_every_n_steps=5)
    assert [c for c in t.callbacks if isinstance(c, ModelCheckpoint)][-1].monitor == "train_loss_epoch"
    assert t.log_every_n_steps == 5                                   # unknown epoch length: as configured
    monkeypatch.setattr(engine, "_interactive", lambda: True)
    t = _trainer(tmp_path, progress_bar=True, loggers=["csv", "tensorboard"])
    assert not any(isinstance(c, PlainProgress) for c in t.callbacks) and t.progress_bar_callback is not None
    assert [type(lg).__name__ for lg in t.loggers] == ["CSVLogger", "TensorBoardLogger"]
    assert t.loggers[0].name == "logs" and t.loggers[1].name == "tensorboard"
    test = _trainer(tmp_path, stage="test", early_stopping_patience=2)
    assert not test.checkpoint_callbacks and not test.loggers
    assert not any(isinstance(c, EarlyStopping) for c in test.callbacks)
    assert not _trainer(tmp_path, loggers=[]).loggers
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        t = _trainer(tmp_path, deterministic=True, precision="64", num_nodes=2, accelerator="cpu")
        assert torch.are_deterministic_algorithms_enabled()
        assert t.precision == "64-true" and t.num_nodes == 2
    finally:
        torch.use_deterministic_algorithms(False)


def test_interactive_follows_the_terminal(monkeypatch):
    import sys

    from graphsphere.train.engine import _interactive

    monkeypatch.setattr(sys, "stdout", SimpleNamespace(isatty=lambda: True))
    assert _interactive() is True
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(isatty=lambda: False))
    assert _interactive() is False


def test_loggers_fallback_adds_csv_once(tmp_path, monkeypatch):
    import lightning.pytorch.loggers as L

    from graphsphere.train.engine import _loggers

    def missing(*a, **k):
        raise ModuleNotFoundError("no tensorboard")

    monkeypatch.setattr(L, "TensorBoardLogger", missing)
    with pytest.warns(UserWarning, match="tensorboard is not installed: logging to CSV only"):
        got = _loggers(load_config(tiny(tmp_path, loggers=["csv", "tensorboard"])), tmp_path)
    assert [type(lg).__name__ for lg in got] == ["CSVLogger"]


def test_quiet_lightning_filter():
    import logging

    from graphsphere.train.engine import _QuietLightning

    f = _QuietLightning()
    rec = lambda msg: logging.LogRecord("x", logging.INFO, "f", 1, msg, None, None)  # noqa: E731
    for noise in ("GPU available: False, used: False", "Restoring states from the checkpoint path at /x",
                  "Restored all states from the checkpoint", "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]",
                  "Loaded model weights from the checkpoint at /x", "💡 Tip: try litlogger"):
        assert f.filter(rec(noise)) is False, noise
    assert f.filter(rec("Epoch 3: early stopping")) is True


def test_resolve_device():
    from graphsphere.train.engine import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'; use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        for d in ("cuda", "cuda:1"):
            with pytest.raises(ValueError, match=f"device '{d}' was asked for, but there is no CUDA device here"):
                resolve_device(d)


# -- output folder, run lock, latest checkpoint, retired outputs ------------------------------------
def test_output_dir_must_be_a_folder(tmp_path, monkeypatch):
    from graphsphere.train.engine import _output_dir

    (tmp_path / "file").write_text("x")
    assert _output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    with pytest.raises(ConfigError, match=r"output_dir = '.*file': .*file is a file, not a folder"):
        _output_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match=r"output_dir = '.*file/run': .*file is a file, not a folder"):
        _output_dir(tmp_path / "file" / "run")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _output_dir("~/runs") == tmp_path / "runs"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_run_lock(tmp_path, monkeypatch):
    from graphsphere.train.engine import RunLockedError, _RunLock

    for v in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(v, raising=False)
    out = tmp_path / "a" / "b"
    with _RunLock(out) as lock:
        assert lock.fd is not None and (out / ".lock").read_text() == str(os.getpid())
        assert (out / ".lock").stat().st_mode & 0o777 == 0o644 & ~_umask()
        with pytest.raises(RunLockedError, match=rf"output_dir .*b is in use by another run \(PID {os.getpid()}\)"):
            with _RunLock(out):
                pass
    with _RunLock(out):                                       # released on exit, and the file is reused
        assert (out / ".lock").read_text() == str(os.getpid())
    (out / ".lock").write_text("99999999")
    with _RunLock(out):
        assert (out / ".lock").read_text() == str(os.getpid())   # truncated, not appended
    assert issubclass(RunLockedError, ValueError)
    for v in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.setenv(v, "1")
        other = tmp_path / v
        with _RunLock(other) as lock:                         # other processes of a distributed run take none
            assert lock.fd is None and not other.exists()
        monkeypatch.setenv(v, "")
        with _RunLock(other) as lock:
            assert lock.fd is not None
        monkeypatch.delenv(v)


def test_latest_checkpoint(tmp_path):
    from graphsphere.train.engine import _latest_checkpoint

    assert _latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"1")
    assert _latest_checkpoint(tmp_path) == last
    hpc = tmp_path / "hpc_ckpt_2.ckpt"
    hpc.write_bytes(b"2")
    os.utime(last, (1000, 1000))
    os.utime(hpc, (2000, 2000))
    assert _latest_checkpoint(tmp_path) == hpc
    os.utime(last, (3000, 3000))
    assert _latest_checkpoint(tmp_path) == last
    last.unlink()
    assert _latest_checkpoint(tmp_path) == hpc


def test_retire_outputs(tmp_path, capsys, monkeypatch):
    import time

    from graphsphere.train.engine import _retire_outputs

    (tmp_path / "config.yaml").write_text("old config")
    (tmp_path / "metrics.json").write_text("{}")
    _retire_outputs(tmp_path, fresh=False)                       # resumed: metrics.json only goes
    assert not (tmp_path / "metrics.json").exists() and (tmp_path / "config.yaml").exists()
    _retire_outputs(tmp_path, fresh=False)                       # nothing to remove: fine
    (tmp_path / "checkpoints").mkdir()
    _retire_outputs(tmp_path, fresh=True)                        # an empty folder and a config: nothing moved
    assert not (tmp_path / "replaced").exists() and capsys.readouterr().out == ""
    real, new_year = time.strftime, time.struct_time((2026, 1, 1, 0, 0, 0, 3, 1, 0))
    monkeypatch.setattr(time, "strftime", lambda fmt: real(fmt, new_year))      # the clock at a fixed time
    for n in range(2):
        (tmp_path / "checkpoints").mkdir(exist_ok=True)
        (tmp_path / "checkpoints" / "last.ckpt").write_text(f"w{n}")
        (tmp_path / "hpc_ckpt_1.ckpt").write_text("h")
        (tmp_path / "metrics.json").write_text("{}")
        (tmp_path / "config.yaml").write_text(f"config {n}")
        _retire_outputs(tmp_path, fresh=True)
    first, second = tmp_path / "replaced" / "20260101-000000", tmp_path / "replaced" / "20260101-000000-1"
    assert sorted(p.name for p in first.iterdir()) == ["checkpoints", "config.yaml", "hpc_ckpt_1.ckpt", "metrics.json"]
    assert (first / "checkpoints" / "last.ckpt").read_text() == "w0"
    assert (second / "config.yaml").read_text() == "config 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replaced"]
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "metrics.json").exists()
    out = capsys.readouterr().out
    assert out.count("starting afresh: the previous run's checkpoints, config and metrics are now in") == 2
    assert str(second) in out
    (tmp_path / "metrics.json").write_text("{}")                # metrics alone count as a previous run
    _retire_outputs(tmp_path, fresh=True)
    assert (tmp_path / "replaced" / "20260101-000000-2" / "metrics.json").exists()


def test_build_data_seed(tmp_path):
    from graphsphere.train.engine import build_data

    cfg = tiny(tmp_path)
    a = build_data(load_config(cfg, ["trainer.seed=3"]))
    b = build_data(load_config(cfg, ["data.seed=3", "trainer.seed=9"]))
    c = build_data(load_config(cfg, ["trainer.seed=4"]))
    assert torch.equal(a.train[0][0], b.train[0][0]) and not torch.equal(a.train[0][0], c.train[0][0])
    assert a.sampling.npix == 192 and a.n_out == 2 and len(a.train) == 32


# -- checkpoints: reading, digests, format 1 ------------------------------------------------------
def test_read_checkpoint_errors(tmp_path):
    from graphsphere.train.checkpoint import CheckpointError, read_checkpoint

    with pytest.raises(CheckpointError,
                       match=r"is a folder; give the path of a .ckpt file \(e.g. .*/checkpoints/best.ckpt\)"):
        read_checkpoint(tmp_path)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.ckpt is empty \(0 bytes\): the run was killed while writing"):
        read_checkpoint(tmp_path / "empty.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"junk\nmore")
    with pytest.raises(CheckpointError, match=r"junk.ckpt is not a readable graphsphere checkpoint "
                                              r"\(\w+: [^)\n]+\); if it is damaged, use checkpoints/best.ckpt"):
        read_checkpoint(tmp_path / "junk.ckpt")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match=r"no 'graphsphere' entry; found list\)"):
        read_checkpoint(tmp_path / "list.ckpt")
    torch.save({k: 0 for k in "jihgfedcba"}, tmp_path / "dict.ckpt")
    with pytest.raises(CheckpointError, match=r"found \['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'\]\); checkpoints are "):
        read_checkpoint(tmp_path / "dict.ckpt")
    torch.save({"graphsphere": {"format": 7}, "state_dict": {}}, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match=r"future.ckpt: checkpoint format 7 is not supported: this graphsphere "
                                              r"reads formats 1 and 2"):
        read_checkpoint(tmp_path / "future.ckpt")


def test_tensor_digest_covers_values_dtypes_shapes_and_places(tmp_path):
    from graphsphere.train.checkpoint import DIGEST_KEY, CheckpointError, read_checkpoint, tensor_digest

    base = {"a": {"w": torch.arange(4.0), "b": [torch.ones(2), torch.zeros(0)]}, "n": 3, "z": torch.tensor(1)}
    d = tensor_digest(base)
    assert len(d) == 64 and d == tensor_digest({**base})
    variants = [{**base, "z": torch.tensor(2)},
                {**base, "z": torch.tensor(1.0)},
                {**base, "a": {**base["a"], "w": torch.arange(4.0).reshape(2, 2)}},
                {**base, "a": {**base["a"], "b": [torch.zeros(0), torch.ones(2)]}},
                {"a": base["a"], "n": 3, "y": torch.tensor(1)},
                {**base, "a": {**base["a"], "b": (torch.ones(2), torch.zeros(0), torch.ones(1))}}]
    assert len({d, *(tensor_digest(v) for v in variants)}) == len(variants) + 1  # all different
    assert tensor_digest({**base, DIGEST_KEY: "whatever", "n": 4}) == d          # only tensors count
    assert tensor_digest({"a": {"w": torch.arange(4.0)[::2]}}) == tensor_digest({"a": {"w": torch.tensor([0.0, 2.0])}})
    ckpt = {"graphsphere": {"format": 2}, "state_dict": {"w": torch.ones(3)}}
    ckpt[DIGEST_KEY] = tensor_digest(ckpt)
    torch.save(ckpt, tmp_path / "ok.ckpt")
    assert torch.equal(read_checkpoint(tmp_path / "ok.ckpt")["state_dict"]["w"], torch.ones(3))
    ckpt["state_dict"]["w"][1] = 2.0
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"bad.ckpt is damaged: its tensors do not match the checksum"):
        read_checkpoint(tmp_path / "bad.ckpt")
    del ckpt[DIGEST_KEY]
    torch.save(ckpt, tmp_path / "old.ckpt")                                      # no digest: older files pass
    assert read_checkpoint(tmp_path / "old.ckpt")["state_dict"]["w"][1] == 2.0


def test_upgrade_of_a_format_1_checkpoint():
    from graphsphere.train.checkpoint import CHECKPOINT_FORMAT, upgrade

    cfg = {"task": "classification", "model": {"type": "graphsphere.experiments.cosmology:StandardizedSphericalCNN",
                                               "channels": [4], "input_mean": 2.5, "input_std": 0.5},
           "data": {"name": "synthetic"}}
    state = {"model.fc.weight": torch.ones(2), "model.conv.op_indices": torch.ones(1),
             "model.pool.index": torch.ones(1),
             "model.input_mean": torch.tensor(2.5), "model.input_std": torch.tensor(0.5), "model.x._extra_state": 1}
    ckpt = {"graphsphere": {"format": 1, "config": cfg, "sampling": {"type": "HEALPix"}, "in_channels": 1, "n_out": 2,
                            "class_names": ["a", "b"]}, "state_dict": state}
    got = upgrade(ckpt)
    meta = got["graphsphere"]
    assert meta == {"format": CHECKPOINT_FORMAT, "config": meta["config"], "sampling": {"type": "HEALPix"},
                    "in_channels": 1, "n_out": 2, "class_names": ["a", "b"],
                    "standardize": {"inputs": True, "targets": False}, "upgraded_from": 1}
    assert meta["config"]["model"] == {"type": "SphericalCNN", "channels": [4]}
    assert meta["config"]["data"] == {"name": "synthetic", "standardize_inputs": True, "standardize_targets": False}
    assert set(got["state_dict"]) == {"model.fc.weight", "input_norm.mean", "input_norm.std"}
    assert got["state_dict"]["input_norm.mean"].tolist() == [2.5]
    assert got["state_dict"]["input_norm.std"].tolist() == [0.5]
    plain = {"graphsphere": {"format": 1,
                             "config": {"model": {"type": "SphericalCNN", "K": 3}, "data": {"name": "npy"}},
                             "sampling": {}, "in_channels": 2, "n_out": 3},
             "state_dict": {"model.w": torch.ones(1), "model.rows": torch.ones(1)}}
    meta = upgrade(plain)["graphsphere"]
    assert meta["standardize"] == {"inputs": False, "targets": False} and meta["class_names"] is None
    assert meta["config"]["model"] == {"type": "SphericalCNN", "K": 3}
    assert meta["config"]["data"]["standardize_inputs"] is False and set(plain["state_dict"]) == {"model.w"}
    current = {"graphsphere": {"format": CHECKPOINT_FORMAT, "x": 1}}
    assert upgrade(current) is current and current == {"graphsphere": {"format": CHECKPOINT_FORMAT, "x": 1}}


# -- the module: identity, compatibility, rebuild ------------------------------------------------
def test_meta_and_rebuild_from_a_checkpoint(run, tmp_path):
    from graphsphere.train.checkpoint import CHECKPOINT_FORMAT, CheckpointError, read_checkpoint

    ckpt = read_checkpoint(run.last_checkpoint)
    meta = ckpt["graphsphere"]
    assert meta["format"] == CHECKPOINT_FORMAT and meta["in_channels"] == 1 and meta["n_out"] == 2
    assert meta["standardize"] == {"inputs": True, "targets": False} and meta["class_weights"] is False
    assert meta["sampling"] == run.module.sampling.to_state() and meta["config"] == run.module.config.to_dict()
    assert meta["weight_shapes"]["model.fc.weight"] == list(run.module.model.fc.weight.shape)
    assert "graphsphere_rng" in ckpt and set(ckpt["graphsphere_rng"]) >= {"torch", "python", "numpy"}
    m = SphereTask.from_checkpoint(run.last_checkpoint)
    assert m.task == "classification" and m.in_channels == 1 and m.n_out == 2 and m.target_norm is None
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(m.state_dict()[k], v), k
    torch.testing.assert_close(m.input_norm.mean, run.module.input_norm.mean)
    ckpt["graphsphere"]["class_names"] = ["cold", "warm"]         # not a tensor: the digest still holds
    torch.save(ckpt, tmp_path / "named.ckpt")
    assert SphereTask.from_checkpoint(tmp_path / "named.ckpt").class_names == ["cold", "warm"]
    assert SphereTask.from_checkpoint(tmp_path / "named.ckpt", map_location="meta").model.fc.weight.is_meta
    ckpt = {**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items() if k != "model.fc.bias"}}
    del ckpt["graphsphere_digest"]                                 # (the digest would call it damaged)
    torch.save(ckpt, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match=r"(?s)missing.ckpt: weights do not fit the model: .*\"model.fc.bias\""):
        SphereTask.from_checkpoint(tmp_path / "missing.ckpt")
    ckpt["state_dict"]["model.fc.weight"] = torch.zeros(5, 5)
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"bad.ckpt: weights do not fit the model: Error\(s\) in loading"):
        SphereTask.from_checkpoint(tmp_path / "bad.ckpt")


def test_check_compatible_names_every_difference(run):
    from graphsphere.train.checkpoint import CheckpointError

    m = run.module
    mine = m.meta()
    m.check_compatible(mine, "same.ckpt")
    changed = {**mine, "config": {**mine["config"], "trainer": {**mine["config"]["trainer"], "max_epochs": 99,
                                                                "batch_size": 3},
                                  "output_dir": "elsewhere", "data": {**mine["config"]["data"], "num_workers": 4}}}
    with pytest.raises(CheckpointError) as e:
        m.check_compatible(changed, "x.ckpt")
    assert str(e.value) == ("x.ckpt was trained with other settings:\n  trainer.batch_size: 3 there, 16 here\n  use a "
                            "new output_dir, set trainer.resume=false to start afresh, or restore the old settings")
    other = {**mine, "in_channels": 3, "n_out": 5, "sampling": {"type": "HEALPix", "nside": 8, "indices": [1, 2, 3]},
             "config": {**mine["config"], "task": "regression", "extra": {"a": 1}}}
    with pytest.raises(CheckpointError) as e:
        m.check_compatible(other, "y.ckpt")
    lines = str(e.value).splitlines()
    assert lines[1:5] == ["  in_channels: 3 there, 1 here", "  n_out: 5 there, 2 here",
                          "  sampling: {type: HEALPix, nside: 8, indices: <3 values>} there, "
                          f"{{{', '.join(f'{k}: {v}' for k, v in mine['sampling'].items())}}} here",
                          "  extra: {'a': 1} there, None here"]
    assert lines[5] == "  task: 'regression' there, 'classification' here"
    shapes = {**mine, "weight_shapes": {**mine["weight_shapes"], "model.fc.weight": [1], "extra.w": [2]}}
    with pytest.raises(CheckpointError, match=r"weights differ: \['extra.w', 'model.fc.weight'\]"):
        m.check_compatible(shapes, "z.ckpt")
    many = {**mine, "weight_shapes": {**mine["weight_shapes"], **{f"x{i}": [i] for i in range(7)}}}
    with pytest.raises(CheckpointError, match=r"weights differ: \['x0', 'x1', 'x2', 'x3', 'x4'\]\n"):
        m.check_compatible(many, "z.ckpt")                     # the first five
    m.check_compatible({k: v for k, v in mine.items() if k != "weight_shapes"}, "old.ckpt")   # format 1: none
    with pytest.raises(CheckpointError, match="not a graphsphere checkpoint"):
        m.on_load_checkpoint({"state_dict": {}})
    with pytest.raises(CheckpointError, match=r"^the checkpoint was trained with other settings:\n  in_channels: 3"):
        m.on_load_checkpoint({"graphsphere": other})


def test_short_and_config_differences():
    from graphsphere.train.module import _config_differences, _short

    assert _short({"a": 1, "b": [1, 2]}) == "{a: 1, b: <2 values>}" and _short(None) == "None" and _short([1]) == "[1]"
    theirs = {"output_dir": "a", "trainer": {"resume": True, "seed": 1}, "data": {"num_workers": 1}}
    ours = {"output_dir": "b", "trainer": {"resume": False, "seed": 2}, "data": {"num_workers": 2}}
    assert _config_differences(theirs, ours) == ["trainer.seed: 1 there, 2 here"]
    assert _config_differences({"task": "a", "model": {"K": 3}}, {"task": "a", "model": {"K": 3, "channels": [4]}}) == \
        ["model.channels: None there, [4] here"]
    assert _config_differences({"optim": {"lr": 1}}, {"optim": None}) == ["optim: {'lr': 1} there, None here"]


def test_task_module_checks_its_arguments():
    with pytest.raises(ValueError, match="target standardisation is for regression, not classification"):
        task_module(target_stats=(torch.zeros(2), torch.ones(2)))
    with pytest.raises(ValueError, match=r"class weights need a classification task and one weight per class \(2\), "
                                         r"got 3 for classification"):
        task_module(class_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"got 1 for regression"):
        task_module("regression", n_out=1, class_weights=[1.0])
    m = task_module(class_weights=[1, 3], class_names=("a", "b"))
    assert m.class_weights.dtype == torch.float32 and m.class_weights.tolist() == [1.0, 3.0]
    assert "class_weights" in dict(m.named_buffers()) and m.class_names == ["a", "b"]
    m = task_module(in_channels=2, input_stats=(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])))
    assert m.in_channels == 2 and m.class_names is None and m.class_weights is None
    x = torch.tensor([[[3.0, 6.0]]]).expand(1, 192, 2)
    torch.testing.assert_close(m.input_norm(x)[0, 0], torch.tensor([1.0, 1.0]))
    assert {type(v).__name__ for v in (m.val_metrics, m.test_metrics)} == {"_Flat"}
    assert m.val_metrics is not m.test_metrics


def test_forward_missing_inputs():
    cfg_fill = load_config(tiny("unused"), ["data.missing_inputs=fill"])
    sampling = cfg_fill.sampling.build()
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.sum((1, 2))[:, None].expand(-1, 2)

    x = torch.tensor([[1.0, float("nan"), 3.0]]).reshape(1, 3, 1)
    stats = (torch.tensor([2.0]), torch.tensor([0.5]))
    m = SphereTask(cfg_fill, Spy(), sampling, 1, 2, input_stats=stats)
    m(x)
    torch.testing.assert_close(seen[-1], torch.tensor([[[-2.0], [0.0], [2.0]]]))   # standardised, NaN -> the mean
    flag = SphereTask(load_config(tiny("unused"), ["data.missing_inputs=flag"]), Spy(), sampling, 1, 2)
    flag(x)
    torch.testing.assert_close(seen[-1], torch.tensor([[[1.0, 1.0], [0.0, 0.0], [3.0, 1.0]]]))
    strict = SphereTask(load_config(tiny("unused")), Spy(), sampling, 1, 2)
    with pytest.raises(ValueError, match="the inputs hold NaN or Inf .*data.missing_inputs: fill"):
        strict(x)
    with pytest.raises(ValueError, match="hold NaN or Inf"):
        strict(torch.tensor([[[1.0], [float("inf")]]]))
    big = torch.tensor([[[3e38], [3e38]]])                 # a sum past the float range is not a missing value
    strict(big)
    torch.testing.assert_close(seen[-1], big)


def test_output_shape_checks():
    x, xb = torch.zeros(2, 192, 1), torch.zeros(2, 192, 1)
    cls = task_module(n_out=3)
    cls._check_output(torch.zeros(2, 3), x, torch.zeros(2))
    with pytest.raises(ValueError, match=r"SphericalCNN returned shape \(2, 4\) for task 'classification', expected "
                                         r"\(2, 3\) \(\[batch, classes\] for classification, "
                                         r"\[batch, pixels, classes\]"):
        cls._check_output(torch.zeros(2, 4), x, torch.zeros(2))
    seg = task_module("segmentation", n_out=3)
    seg._check_output(torch.zeros(2, 192, 3), xb, torch.zeros(2, 192))
    with pytest.raises(ValueError, match=r"returned shape \(2, 3\) for task 'segmentation', expected \(2, 192, 3\)"):
        seg._check_output(torch.zeros(2, 3), xb, torch.zeros(2, 192))
    reg = task_module("regression", n_out=1)
    reg._check_output(torch.zeros(2, 1), x, torch.zeros(2))
    reg._check_output(torch.zeros(2, 1), x, torch.zeros(2, 1))               # [B, 1]: one value per map
    reg._check_output(torch.zeros(2, 192, 1), x, torch.zeros(2, 192))        # per pixel, one output
    with pytest.raises(ValueError, match=r"the targets are per pixel \(\(2, 192\)\) but SphericalCNN outputs one "
                                         r"vector "
                                         r"per map \(\(2, 1\)\): use a per-vertex model such as SphericalUNet"):
        reg._check_output(torch.zeros(2, 1), x, torch.zeros(2, 192))
    with pytest.raises(ValueError, match=r"the targets are one vector per map \(\(2, 1\)\) but SphericalCNN "
                                         r"outputs one "
                                         r"per pixel \(\(2, 192, 1\)\): use SphericalCNN, or give per-pixel targets"):
        reg._check_output(torch.zeros(2, 192, 1), x, torch.zeros(2, 1))
    reg3 = task_module("regression", n_out=3)
    reg3._check_output(torch.zeros(2, 192, 3), x, torch.zeros(2, 192, 3))   # per pixel, 3 outputs
    reg3._check_output(torch.zeros(2, 3), x, torch.zeros(2, 192))           # 192 values a map, not per pixel
    with pytest.raises(ValueError, match="per pixel"):
        reg3._check_output(torch.zeros(2, 3), x, torch.zeros(2, 192, 3))


def test_configure_optimizers_for_every_setting():
    def opt(*overrides, steps=40):
        m = SphereTask(load_config(tiny("unused"), list(overrides)), torch.nn.Linear(2, 2),
                       load_config(tiny("unused")).sampling.build(), 1, 2)
        m._trainer = SimpleNamespace(estimated_stepping_batches=steps)
        return m.configure_optimizers()

    o = opt("optim.lr=0.5", "optim.weight_decay=0.25")
    assert type(o).__name__ == "Adam" and o.defaults["lr"] == 0.5 and o.defaults["weight_decay"] == 0.25
    assert len(o.param_groups[0]["params"]) == 2
    assert o.defaults["eps"] == 1e-8                        # torch's default unless asked
    o = opt("optim.name=adamw", "optim.lr=0.5", "optim.weight_decay=0.25", "optim.eps=0.1")
    assert type(o).__name__ == "AdamW" and o.defaults["lr"] == 0.5 and o.defaults["weight_decay"] == 0.25
    assert o.defaults["eps"] == 0.1 and opt("optim.eps=0.125").defaults["eps"] == 0.125
    o = opt("optim.name=sgd", "optim.lr=0.5", "optim.weight_decay=0.25", "optim.momentum=0.7")
    assert type(o).__name__ == "SGD" and o.defaults["momentum"] == 0.7 and o.defaults["weight_decay"] == 0.25
    assert o.defaults["lr"] == 0.5
    d = opt("optim.scheduler=cosine", "trainer.max_epochs=7")
    assert type(d["lr_scheduler"]["scheduler"]).__name__ == "CosineAnnealingLR"
    assert d["lr_scheduler"]["interval"] == "epoch"
    assert d["lr_scheduler"]["scheduler"].T_max == 7 and type(d["optimizer"]).__name__ == "Adam"
    d = opt("optim.scheduler=cosine", "optim.interval=step", steps=40)
    assert d["lr_scheduler"]["scheduler"].T_max == 40 and d["lr_scheduler"]["interval"] == "step"
    assert opt("optim.scheduler=cosine", "optim.interval=step", steps=0)["lr_scheduler"]["scheduler"].T_max == 1
    d = opt("optim.scheduler=step", "optim.step_size=3", "optim.gamma=0.5")
    s = d["lr_scheduler"]["scheduler"]
    assert type(s).__name__ == "StepLR" and s.step_size == 3 and s.gamma == 0.5
    s = opt("optim.scheduler=exponential", "optim.gamma=0.9")["lr_scheduler"]["scheduler"]
    assert type(s).__name__ == "ExponentialLR" and s.gamma == 0.9
    d = opt("optim.scheduler=plateau", "optim.gamma=0.3", "optim.step_size=4", "trainer.monitor=val_acc",
            "optim.interval=step")
    s = d["lr_scheduler"]["scheduler"]
    assert type(s).__name__ == "ReduceLROnPlateau" and s.factor == 0.3 and s.patience == 4
    assert d["lr_scheduler"]["monitor"] == "val_acc" and d["lr_scheduler"]["interval"] == "epoch"
    assert set(d) == {"optimizer", "lr_scheduler"} and set(d["lr_scheduler"]) == {"scheduler", "monitor", "interval"}


def test_build_model_arguments_and_errors():
    cfg = load_config(tiny("unused", "segmentation"))
    sampling = cfg.sampling.build()
    unet = build_model(cfg.model, "segmentation", sampling, 2, 3)
    assert unet(torch.zeros(1, 192, 2)).shape == (1, 192, 3)
    reg = build_model(load_config(tiny("unused", "regression")).model, "regression", sampling, 1, 4)
    assert reg(torch.zeros(2, 192, 1)).shape == (2, 4)
    bad = load_config(tiny("unused"), ["model.K=0"]).model
    with pytest.raises(ConfigError, match=r"model \(SphericalCNN\): "):
        build_model(bad, "classification", sampling, 1, 2)
    bad = SimpleNamespace(type="NoSuchModel", args={})
    with pytest.raises(ConfigError, match="model.type = 'NoSuchModel': "):
        build_model(bad, "classification", sampling, 1, 2)


# -- callbacks: the divergence guard, the checkpoint writer, the summary ------------------------------
def _guard_setup(tmp_path, step=5, lr=0.01):
    module = SimpleNamespace(config=SimpleNamespace(optim=SimpleNamespace(lr=lr)))
    params = {"w": torch.ones(2), "b": torch.zeros(1)}
    module.named_parameters = lambda: iter(params.items())
    module.named_buffers = lambda: iter([("steps", torch.tensor(3))])
    trainer = SimpleNamespace(global_step=step, is_global_zero=True, checkpoint_callbacks=[])
    return trainer, module, params


def test_divergence_guard(tmp_path):
    from graphsphere.train.callbacks import DivergenceGuard, TrainingDiverged

    trainer, module, params = _guard_setup(tmp_path)
    g = DivergenceGuard(factor=10.0)
    g.on_train_batch_end(trainer, module, {"loss": torch.tensor(0.0)}, None, 0)
    assert g.first_loss is None                                    # a zero loss is no reference
    g.on_train_batch_end(trainer, module, torch.tensor([2.0, 2.0]), None, 0)
    assert g.first_loss == 2.0 and g.state_dict() == {"first_loss": 2.0}
    g.on_train_batch_end(trainer, module, {"loss": torch.tensor(20.0)}, None, 0)     # 10 times: still fine
    g.on_train_batch_end(trainer, module, None, None, 0)                              # no loss: nothing to check
    assert g.first_loss == 2.0
    with pytest.raises(TrainingDiverged, match=r"^the loss diverged at step 5 \(loss 20.1, over "
                                               r"trainer.divergence_factor=10 times the first loss 2\): "
                                               r"lower the learning rate \(optim.lr=0.01 now\)"
                                               r", or check the data for NaN or huge values$"):
        g.on_train_batch_end(trainer, module, {"loss": torch.tensor(20.1)}, None, 0)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 5 \(loss nan\)"):
        g.on_train_batch_end(trainer, module, torch.tensor(float("nan")), None, 0)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 5 \(loss inf\)"):
        DivergenceGuard(None).on_train_batch_end(trainer, module, torch.tensor([1.0, float("inf")]), None, 0)
    params["b"] = torch.tensor([float("nan")])
    with pytest.raises(TrainingDiverged, match=r"at step 5 \(b is not finite after the optimiser step\)"):
        DivergenceGuard(None).on_train_batch_end(trainer, module, torch.tensor(1.0), None, 0)
    params["b"] = torch.zeros(1)
    DivergenceGuard(None).on_train_batch_end(trainer, module, torch.tensor(1e30), None, 0)   # no factor: no limit
    g2 = DivergenceGuard()
    assert g2.factor == 1e6 and g2.first_loss is None
    g2.load_state_dict(g.state_dict())
    assert g2.first_loss == 2.0
    g2.load_state_dict({})
    assert g2.first_loss is None
    g2.on_train_batch_end(trainer, module, torch.tensor(0.5), None, 0)      # any positive loss is the reference
    assert g2.first_loss == 0.5


def test_divergence_guard_removes_the_checkpoints_of_diverged_weights(tmp_path):
    from graphsphere.train.callbacks import DivergenceGuard, TrainingDiverged

    trainer, module, params = _guard_setup(tmp_path, step=6)
    for name, step in (("a.ckpt", 4), ("b.ckpt", 5), ("c.ckpt", 6)):
        torch.save({"global_step": step}, tmp_path / name)
    trainer.checkpoint_callbacks = [SimpleNamespace(last_model_path=str(tmp_path / n), best_model_path="")
                                    for n in ("a.ckpt", "b.ckpt", "c.ckpt")]
    g = DivergenceGuard(2.0)
    g.first_loss = 1.0
    with pytest.raises(TrainingDiverged, match=r"; removed b.ckpt, c.ckpt \(written from the diverged weights\)$"):
        g.on_train_batch_end(trainer, module, torch.tensor(3.0), None, 0)     # the loss of the weights of step 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]
    torch.save({"global_step": 6}, tmp_path / "c.ckpt")
    params["w"] = torch.tensor([float("inf"), 1.0])                             # the weights after step 6
    with pytest.raises(TrainingDiverged, match=r"\(w is not finite after the optimiser step\).*; removed c.ckpt \("):
        DivergenceGuard(None).on_train_batch_end(trainer, module, torch.tensor(1.0), None, 0)


def test_first_non_finite():
    from graphsphere.train.callbacks import _first_non_finite

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert _first_non_finite(net) is None
    with torch.no_grad():
        net[1].running_var[0] = float("nan")
    assert _first_non_finite(net) == "1.running_var"
    with torch.no_grad():
        net[0].bias[1] = float("inf")
    assert _first_non_finite(net) == "0.bias"                                  # parameters first
    big = torch.nn.Linear(2, 2)
    with torch.no_grad():
        big.weight.fill_(3e38)                                                  # a sum past the range: finite values
    assert _first_non_finite(big) is None
    assert _first_non_finite(torch.nn.Embedding(2, 2).requires_grad_(False).to(torch.float16)) is None
    ints = torch.nn.Module()
    ints.register_buffer("n", torch.tensor([1, 2]))
    assert _first_non_finite(ints) is None


def test_atomic_checkpoint_io(tmp_path):
    from graphsphere.train.callbacks import AtomicCheckpointIO, TrainingDiverged
    from graphsphere.train.checkpoint import DIGEST_KEY, tensor_digest

    io = AtomicCheckpointIO()
    ckpt = {"graphsphere": {"format": 2}, "state_dict": {"w": torch.ones(2), "n": torch.tensor([1, 2]), "s": "x"},
            "global_step": 9}
    io.save_checkpoint(ckpt, tmp_path / "a.ckpt")
    raw = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert raw[DIGEST_KEY] == tensor_digest(raw)
    assert torch.equal(io.load_checkpoint(tmp_path / "a.ckpt")["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]
    io.save_checkpoint({"graphsphere": {"format": 2}}, tmp_path / "nostate.ckpt")       # no state_dict: fine
    assert (tmp_path / "nostate.ckpt").exists()
    (tmp_path / "nostate.ckpt").unlink()
    with pytest.raises(TypeError, match="AtomicCheckpointIO does not take storage_options"):
        io.save_checkpoint(ckpt, tmp_path / "b.ckpt", storage_options={})
    ckpt["state_dict"]["w"] = torch.tensor([1.0, float("nan")])
    with pytest.raises(TrainingDiverged, match=r"not writing .*c.ckpt: w is not finite "
                                               r"\(the training diverged at step 9\)"
                                               r"; lower the learning rate \(optim.lr\)"):
        io.save_checkpoint(ckpt, tmp_path / "c.ckpt")
    assert not (tmp_path / "b.ckpt").exists() and not (tmp_path / "c.ckpt").exists()


def test_layer_summary_callback(capsys):
    from graphsphere.train.callbacks import LayerSummary

    m = task_module(n_out=3)
    n = sum(p.numel() for p in m.model.parameters())
    splits = SimpleNamespace(train=[(torch.zeros(192, 1), 0)])
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(splits=splits))
    LayerSummary().on_fit_start(trainer, m)
    head = (f"SphericalCNN on {m.sampling!r}, task classification, 1 input channel(s), 3 output(s), "
            f"{n:,} parameters")
    assert capsys.readouterr().out == head + "\n"
    LayerSummary(verbose=True).on_fit_start(trainer, m)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == head + ":" and out[1].split() == ["layer", "type", "output", "pixels", "params"]
    assert out[-1].split() == ["total", f"{n:,}"]
    splits.train = [torch.zeros(192, 1)]                                   # a sample that is the input alone
    LayerSummary(verbose=True).on_fit_start(trainer, m)
    assert capsys.readouterr().out.splitlines()[-1].split() == ["total", f"{n:,}"]
    for quiet in (SimpleNamespace(is_global_zero=False, datamodule=trainer.datamodule),
                  SimpleNamespace(is_global_zero=True, datamodule=None)):
        LayerSummary(verbose=True).on_fit_start(quiet, m)
        assert capsys.readouterr().out == ""


# -- the data module: where the epoch was -----------------------------------------------------------
def _dm(n=20, batch=4, seed=0, val=True):
    from graphsphere.train.datamodule import SphereDataModule

    data = _Rows(torch.arange(n, dtype=torch.float32)[:, None, None], torch.arange(n))
    splits = SimpleNamespace(train=data, val=data if val else None, test=data if val else None)
    return SphereDataModule(splits, batch, seed=seed, num_workers=0)


def _order(loader):
    return [int(i) for x, _ in loader for i in x.reshape(-1)]


def test_datamodule_loaders_and_resume(recwarn):
    from graphsphere.train.sampler import EpochSampler

    dm = _dm()
    full = _order(dm.train_dataloader())
    assert full == list(EpochSampler(20, 4, seed=0, shuffle=True, drop_last=True))
    assert _order(dm.val_dataloader()) == list(range(20)) and _order(dm.test_dataloader()) == list(range(20))
    assert dm._rank_world() == (0, 1) and dm.batch_size == 4 and dm.seed == 0
    assert dm.train_dataloader().generator.initial_seed() == 0 and dm.train_dataloader().batch_size == 4
    assert _dm(seed=5).train_dataloader().generator.initial_seed() == 5
    assert _order(_dm(seed=5).train_dataloader()) != full
    dm.load_state_dict({"epoch": 0, "batches_done": 2, "n_batches": 5, "samples_per_batch": 4})
    assert _order(dm.train_dataloader()) == full[8:]                       # the 2 batches done are skipped
    assert _order(dm.train_dataloader()) == full                            # once only
    dm.load_state_dict({"epoch": 2, "batches_done": 5, "n_batches": 5, "samples_per_batch": 4})
    loader = dm.train_dataloader()                                          # epoch 2 was complete: epoch 3
    assert loader.sampler.epoch == 3 and _order(loader) == list(EpochSampler(20, 4, seed=0, drop_last=True,
                                                                               resume=(3, 0)))
    assert not recwarn.list
    dm.load_state_dict({"epoch": 1, "batches_done": 1, "n_batches": 5, "samples_per_batch": 8})
    with pytest.warns(UserWarning, match="resuming with 4 samples per step instead of 8: the rest of epoch 1 is "
                                         "approximate"):
        loader = dm.train_dataloader()
    assert loader.sampler.epoch == 1 and loader.sampler._resume == (1, 8)
    dm.load_state_dict({})
    assert dm._resume is None
    assert dm.state_dict() == {}                                            # no trainer: nothing to save
    nov = _dm(val=False)
    assert nov.val_dataloader() == [] and nov.test_dataloader() == []
    tail = _dm(n=22)                                                        # training drops the incomplete batch
    assert len(_order(tail.train_dataloader())) == 20 and len(_order(tail.val_dataloader())) == 22


def test_datamodule_state_dict_from_the_trainer():
    dm = _dm()
    progress = SimpleNamespace(current=SimpleNamespace(processed=3))
    trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), current_epoch=2, num_training_batches=5,
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
                              global_rank=1, world_size=2)
    dm.trainer = trainer
    assert dm._rank_world() == (1, 2)
    assert dm.state_dict() == {"epoch": 2, "batches_done": 3, "n_batches": 5, "samples_per_batch": 8}
    trainer.state.fn = "test"
    assert dm.state_dict() == {}
    dm.load_state_dict({"epoch": 0, "batches_done": 2, "n_batches": 5, "samples_per_batch": 8})
    trainer.state.fn = "fit"
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                      # 8 samples a step, as before: exact
        loader = dm.train_dataloader()                                      # rank 1 of 2: 16 done, 8 of its own
    assert loader.sampler.rank == 1 and loader.sampler.world_size == 2 and loader.sampler._resume == (0, 8)


# -- the sampler --------------------------------------------------------------------------------------
def test_sampler_errors_lengths_and_resume():
    with pytest.raises(ValueError, match="a sampler needs at least one sample, got n=0"):
        EpochSampler(0, 2)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        EpochSampler(5, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got -1"):
        EpochSampler(5, 2, rank=-1, world_size=2)
    with pytest.raises(ValueError, match=r"^7 samples are fewer than one batch of 4 on each of 2 process\(es\); "
                                         r"lower trainer.batch_size or add data$"):
        EpochSampler(7, 4, world_size=2, drop_last=True)
    assert len(EpochSampler(8, 4, world_size=2, drop_last=True)) == 4
    assert len(EpochSampler(23, 4, world_size=2, drop_last=True)) == 8      # 2 whole batches of 4 a rank
    assert len(EpochSampler(9, 4, drop_last=True)) == 8 and len(EpochSampler(9, 4)) == 9
    assert list(EpochSampler(9, 4, shuffle=False, drop_last=True)) == list(range(8))
    s = EpochSampler(10, 2, seed=1, resume=(3, 4))
    assert s.epoch == 3 and list(s) == s.order(3).tolist()[4:] and len(s) == 10
    s.set_epoch(3)
    assert list(s) == s.order(3).tolist()[4:]                               # still in the resumed epoch
    s.set_epoch(4)
    assert list(s) == s.order(4).tolist()
    s.set_epoch(3)
    assert list(s) == s.order(3).tolist()                                   # the skip is over for good
    z = EpochSampler(10, 2, seed=1, resume=(2, 0))
    assert z.epoch == 2 and z._resume is None and list(z) == z.order(2).tolist()
    a, b = EpochSampler(10, 2, seed=1), EpochSampler(10, 2, seed=2)
    assert sorted(a.order(0).tolist()) == list(range(10)) and a.order(0).tolist() != b.order(0).tolist()
    assert a.order(0).tolist() != a.order(1).tolist()
    g = torch.Generator().manual_seed(1 * 1_000_003 + 5)
    assert a.order(5).tolist() == torch.randperm(10, generator=g).tolist()
    r = EpochSampler(10, 2, shuffle=False, rank=1, world_size=3)            # 4 a rank: 0..9 then 0, 1 wrapped
    assert r.order(0).tolist() == [1, 4, 7, 0] and len(r) == 4
    assert EpochSampler(10, 2, shuffle=False, rank=0, world_size=3).order(0).tolist() == [0, 3, 6, 9]
    assert EpochSampler(10, 2, shuffle=False, rank=2, world_size=3).order(0).tolist() == [2, 5, 8, 1]


# -- metrics ---------------------------------------------------------------------------------------
def test_segmentation_metrics_per_class_against_sklearn(rng):
    skm = pytest.importorskip("sklearn.metrics")
    from graphsphere.train.metrics import make_metrics

    b, v, c = 4, 30, 3
    logits = rng.normal(size=(b, v, c)).astype(np.float32)
    y = rng.integers(0, c, (b, v))
    y[0, :5] = -1                                                             # unknown labels: left out
    m = make_metrics("segmentation", c)
    m.update(torch.from_numpy(logits[:2]), torch.from_numpy(y[:2]))
    m.update(torch.from_numpy(logits[2:]), torch.from_numpy(y[2:]))
    got = {k: float(x) for k, x in m.compute().items()}
    keep = y.ravel() >= 0
    yt, pred = y.ravel()[keep], logits.reshape(-1, c).argmax(-1)[keep]
    probs = torch.from_numpy(logits).softmax(-1).numpy().reshape(-1, c)[keep]
    recall = skm.recall_score(yt, pred, average=None)
    iou = skm.jaccard_score(yt, pred, average=None)
    ap = [skm.average_precision_score(yt == i, probs[:, i]) for i in range(c)]
    assert set(got) == {"acc", "f1", *(f"{k}_{i}" for k in ("iou", "recall", "ap") for i in range(c)),
                        "miou", "mrecall", "map"}
    for i in range(c):
        assert got[f"recall_{i}"] == pytest.approx(recall[i], abs=1e-6)
        assert got[f"iou_{i}"] == pytest.approx(iou[i], abs=1e-6)
        assert got[f"ap_{i}"] == pytest.approx(ap[i], abs=0.02)                # binned on 200 thresholds
    assert got["mrecall"] == pytest.approx(recall.mean(), abs=1e-6)
    assert got["map"] == pytest.approx(np.mean(ap), abs=0.02)
    assert got["acc"] == pytest.approx(skm.accuracy_score(yt, pred), abs=1e-6)
    assert got["f1"] == pytest.approx(skm.f1_score(yt, pred, average="macro"), abs=1e-5)
    m.reset()
    m.update(torch.from_numpy(logits[:1]), torch.from_numpy(y[:1]))
    known = y[0] >= 0
    assert float(m.compute()["acc"]) == pytest.approx(skm.accuracy_score(y[0][known], logits[0].argmax(-1)[known]))


def test_metrics_by_hand_and_weights():
    from graphsphere.train.metrics import make_metrics

    m = make_metrics("classification", 3)
    out = torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0]])
    m.update(out, torch.tensor([0, 1, 1, 2]), torch.tensor([1.0, 1.0, 0.0, 1.0]))  # the third map does not count
    got = {k: float(v) for k, v in m.compute().items()}
    assert set(got) == {"acc", "f1", "map"} and got["acc"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    r = make_metrics("regression", 2)
    r.update(torch.tensor([[1.0, 0.0], [3.0, 1.0], [5.0, 9.0]]),
             torch.tensor([[1.0, 1.0], [2.0, float("nan")], [5.0, 2.0]]))
    got = {k: float(v) for k, v in r.compute().items()}
    assert set(got) == {"mse", "mae", "r2"}
    assert got["mse"] == pytest.approx((0 + 1 + 0 + 49) / 4) and got["mae"] == pytest.approx((0 + 1 + 0 + 7) / 4)
    # R² averaged over outputs, on the complete rows (1 and 3): output 0 exact, output 1 off
    assert got["r2"] == pytest.approx((1.0 + (1 - (1 + 49) / 0.5)) / 2)
    one = make_metrics("regression", 1)
    one.update(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 2.0, 3.0]))
    assert float(one.compute()["mse"]) == pytest.approx(1 / 3)
    empty = make_metrics("segmentation", 2)
    empty.update(torch.zeros(1, 3, 2), torch.tensor([[-1, -1, -1]]))         # nothing counts: no update at all
    empty.update(torch.tensor([[[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]]]), torch.tensor([[0, 1, 0]]),
                 torch.tensor([[1.0, 1.0, 0.0]]))                              # per-pixel weight
    assert float(empty.compute()["acc"]) == 1.0
    with pytest.raises(ValueError, match=r"segmentation needs at least 2 classes, got 1"):
        make_metrics("segmentation", 1)
    with pytest.raises(ValueError, match=r"task must be one of \('classification', 'regression', 'segmentation'\), "
                                         r"got 'detection'"):
        make_metrics("detection", 2)


def test_flatten_metrics_leaves_absent_classes_out():
    from graphsphere.train.metrics import flatten_metrics

    out = flatten_metrics({"recall": torch.tensor([0.5, float("nan"), 1.0]), "acc": torch.tensor(0.25)})
    assert list(out) == ["recall_0", "recall_1", "recall_2", "mrecall", "acc"]
    assert float(out["mrecall"]) == pytest.approx(0.75) and float(out["acc"]) == 0.25


# -- fit: what a run writes, resumes and returns --------------------------------------------------------
def test_fit_writes_its_outputs_and_returns_the_last_weights(run, capsys):
    import json

    from graphsphere.train.checkpoint import read_checkpoint
    from graphsphere.train.engine import build_data, training_statistics

    out = run.output_dir
    cfg = load_config(tiny(out))
    assert (out / "config.yaml").read_text() == cfg.to_yaml()
    assert run.epochs == 1 and run.global_step == 2 and run.resumed_from is None
    assert run.last_checkpoint == out / "checkpoints" / "last.ckpt"
    assert run.best_checkpoint == out / "checkpoints" / "best.ckpt"
    summary = json.loads((out / "metrics.json").read_text())
    assert summary == {"metrics": run.metrics, "epochs": 1, "global_step": 2,
                       "best_checkpoint": str(run.best_checkpoint),
                       "last_checkpoint": str(run.last_checkpoint), "resumed_from": None}
    assert set(run.metrics) == {"val", "test"}
    assert set(run.metrics["val"]) == {"val_loss", "val_acc", "val_f1", "val_map"}
    assert set(run.metrics["test"]) == {"test_loss", "test_acc", "test_f1", "test_map"}
    assert all(isinstance(v, float) for v in run.metrics["test"].values())
    last = read_checkpoint(run.last_checkpoint)["state_dict"]
    for k, v in run.module.state_dict().items():
        assert torch.equal(v, last[k]), k                               # the end of training, not best.ckpt
    mean, std = training_statistics(build_data(cfg).train, "inputs")
    torch.testing.assert_close(last["input_norm.mean"], mean)
    torch.testing.assert_close(last["input_norm.std"], std)
    assert (out / ".lock").exists() and not list(out.glob("checkpoints/*.tmp"))
    csv = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    column = csv[0].split(",").index("train_loss_step")           # logged every step of a 2-step epoch
    assert [row.split(",")[column] != "" for row in csv[1:]].count(True) >= 1


def test_fit_resumes_then_starts_afresh(tmp_path, capsys):
    import json

    cfg = tiny(tmp_path / "r", checkpoint_every_n_steps=1)
    cfg["data"]["n_test"] = 0
    first = fit(cfg)
    assert "test" not in first.metrics and first.global_step == 2
    capsys.readouterr()
    cfg["trainer"]["max_epochs"] = 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = fit(cfg)
    assert not [w for w in caught if "exists and is not empty" in str(w.message) or "ended before" in str(w.message)]
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert second.resumed_from == last and second.global_step == 4 and second.epochs == 2
    assert f"resuming from {last}" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["resumed_from"] == str(last)
    cfg["trainer"]["resume"] = False
    third = fit(cfg)
    assert third.resumed_from is None and third.global_step == 4
    assert "starting afresh" in capsys.readouterr().out
    replaced = list((tmp_path / "r" / "replaced").iterdir())
    assert len(replaced) == 1 and (replaced[0] / "checkpoints" / "last.ckpt").exists()


def test_fit_regression_with_flagged_missing_inputs_and_no_validation(tmp_path):
    from graphsphere.train.checkpoint import read_checkpoint
    from graphsphere.train.engine import build_data, training_statistics

    cfg = tiny(tmp_path / "reg", "regression")
    cfg["data"].update(n_val=0, n_test=4, missing_inputs="flag")
    r = fit(cfg)
    assert set(r.metrics["test"]) == {"test_loss", "test_mse", "test_mae", "test_r2"} and r.metrics["val"] == {}
    assert r.best_checkpoint is not None                              # monitored on the training loss
    with torch.no_grad():
        assert r.module.eval().model(torch.zeros(1, 192, 2)).shape == (1, 1)   # inputs and their observed flags
    splits = build_data(load_config(cfg))
    mean, std = training_statistics(splits.train, "targets", n_out=1)
    state = read_checkpoint(r.last_checkpoint)["state_dict"]
    torch.testing.assert_close(state["target_norm.mean"], mean)
    torch.testing.assert_close(state["target_norm.std"], std)
    m = SphereTask.from_checkpoint(r.last_checkpoint)
    assert m.config.data.missing_inputs == "flag" and m.target_norm is not None
    assert m.model.config["task"] == "regression"                   # model.predict gives values, not classes
    x = torch.zeros(2, 192, 1)
    x[0, :5] = float("nan")
    with torch.no_grad():
        torch.testing.assert_close(m.eval().postprocess(m(x)), r.module.eval().postprocess(r.module(x)))


def test_fit_balanced_class_weights_are_kept(tmp_path):
    cfg = tiny(tmp_path / "cw")
    cfg["data"]["class_weights"] = "balanced"
    cfg["data"]["standardize_inputs"] = False
    r = fit(cfg)
    assert r.module.class_weights is not None and r.module.input_norm is None
    m = SphereTask.from_checkpoint(r.last_checkpoint)
    torch.testing.assert_close(m.class_weights, r.module.class_weights)
    assert m.meta()["class_weights"] is True and m.meta()["standardize"] == {"inputs": False, "targets": False}


def test_sync_batchnorm_needs_a_gpu(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"trainer.sync_batchnorm = True: torch's SyncBatchNorm runs on GPUs only"):
        fit(tiny(tmp_path, sync_batchnorm=True, accelerator="cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="SyncBatchNorm runs on GPUs only"):
        fit(tiny(tmp_path, sync_batchnorm=True, accelerator="auto"))
    assert not tmp_path.joinpath("checkpoints").exists()


def test_fit_returns_the_end_of_training_weights_when_best_is_earlier(tmp_path):
    """A bug found by mutation testing: the module's weights were "restored" after testing best.ckpt from
    ``state_dict()``, which shares the parameters' storage, so the returned module held best.ckpt's weights."""
    from graphsphere.train.checkpoint import read_checkpoint

    r = fit(tiny(tmp_path / "w", max_epochs=4))            # the validation loss is lowest after the first epoch
    best, last = (read_checkpoint(p) for p in (r.best_checkpoint, r.last_checkpoint))
    assert best["global_step"] < last["global_step"] == 8
    for k, v in r.module.state_dict().items():
        assert torch.equal(v, last["state_dict"][k]), k
    got = evaluate(r.best_checkpoint)                       # the test metrics are best.ckpt's
    assert got == pytest.approx(r.metrics["test"], abs=1e-6)


def test_fit_is_reproducible_and_segments(run, tmp_path):
    """The same config gives the same weights (the seed), and a segmentation run trains and predicts per pixel."""
    from graphsphere.train.checkpoint import read_checkpoint

    again = fit(tiny(tmp_path / "again"))
    a, b = (read_checkpoint(r.last_checkpoint)["state_dict"] for r in (run, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    seg = tiny(tmp_path / "seg", "segmentation")
    seg["data"]["missing_inputs"] = "fill"
    s = fit(seg)
    assert {"test_iou_0", "test_iou_2", "test_miou", "test_mrecall", "test_map", "test_acc"} <= set(s.metrics["test"])
    x = np.random.default_rng(3).normal(size=(2, 192)).astype(np.float32)
    p = predict(s.last_checkpoint, x, check_order=False)
    assert p.shape == (2, 192, 3) and np.allclose(p.sum(-1), 1, atol=1e-5)
    # patch by patch (receptive-field borders by default): the one-pass result; without borders, not
    np.testing.assert_allclose(predict(s.last_checkpoint, x, check_order=False, patch_nside=1), p, atol=1e-5)
    assert not np.allclose(predict(s.last_checkpoint, x, check_order=False, patch_nside=1, border=0), p, atol=1e-3)
    x[1, 7] = np.nan                                            # no input there: no prediction there
    q = predict(s.last_checkpoint, x, check_order=False)
    assert np.isnan(q[1, 7]).all() and np.isfinite(np.delete(q.reshape(-1, 3), 192 + 7, 0)).all()


# -- the module's steps and hooks, without a trainer ------------------------------------------------
def test_steps_log_what_users_see(monkeypatch):
    m = task_module(n_out=2)
    logged, dicts = [], []
    monkeypatch.setattr(m, "log", lambda name, value, **kw: logged.append((name, float(value), kw)))
    monkeypatch.setattr(m, "log_dict", lambda d, **kw: dicts.append(({k: float(v) for k, v in d.items()}, kw)))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 192, 1, generator=g), torch.tensor([0, 1, 1, 0])
    w = torch.tensor([1.0, 0.0, 1.0, 1.0])
    with torch.no_grad():
        out = m(x)
    loss = m.training_step((x, y, w), 0)
    assert float(loss) == pytest.approx(float(m.loss(out, y, w)), abs=1e-6)
    assert logged == [("train_loss", pytest.approx(float(loss)), dict(prog_bar=True, on_step=True, on_epoch=True,
                                                                       batch_size=4, sync_dist=True))]
    logged.clear()
    assert float(m.validation_step((x, y), 0)) == pytest.approx(float(m.loss(out, y)), abs=1e-6)
    want = dict(prog_bar=True, on_step=False, on_epoch=True, batch_size=4, sync_dist=True)
    assert logged == [("val_loss", pytest.approx(float(m.loss(out, y))), want)]
    logged.clear()
    m.test_step((x[:2], y[:2], torch.ones(2)), 0)
    assert logged[0][0] == "test_loss" and logged[0][2]["batch_size"] == 2
    pred = out.argmax(-1)
    m.on_validation_epoch_end()
    (vals, kw), = dicts
    assert kw == {"prog_bar": False, "sync_dist": True} and set(vals) == {"val_acc", "val_f1", "val_map"}
    assert vals["val_acc"] == pytest.approx(float((pred == y).float().mean()))
    m.on_test_epoch_end()
    assert set(dicts[1][0]) == {"test_acc", "test_f1", "test_map"}
    assert dicts[1][0]["test_acc"] == pytest.approx(float((pred[:2] == y[:2]).float().mean()))
    m.validation_step((x[:1], y[:1]), 0)                             # reset after each epoch: this one alone
    m.on_validation_epoch_end()
    assert dicts[2][0]["val_acc"] == float(pred[0] == y[0])


def test_regression_eval_metrics_are_in_data_units(monkeypatch):
    m = task_module("regression", n_out=1, target_stats=(torch.tensor([10.0]), torch.tensor([2.0])))
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    got = {}
    monkeypatch.setattr(m, "log_dict", lambda d, **kw: got.update({k: float(v) for k, v in d.items()}))
    x = torch.randn(3, 192, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = m(x) * 2.0 + 10.0                                   # the model's output in the data's units
    y = torch.tensor([[9.0], [11.0], [14.0]])
    m.validation_step((x, y), 0)
    m.on_validation_epoch_end()
    assert got["val_mse"] == pytest.approx(float(((pred - y) ** 2).mean()), rel=1e-5)


def test_rng_state_travels_in_checkpoints_and_is_restored_at_the_first_batch():
    m = task_module()
    ckpt = {}
    m.on_save_checkpoint(ckpt)
    assert ckpt["graphsphere"] == m.meta() and set(ckpt["graphsphere_rng"]) >= {"torch", "python", "numpy"}
    expected = torch.rand(3)
    m.on_load_checkpoint(ckpt)
    assert m._pending_rng is ckpt["graphsphere_rng"]
    torch.rand(5)                                                   # the loaders and sanity check draw numbers
    m.on_train_batch_start(None, 0)
    assert torch.equal(torch.rand(3), expected) and m._pending_rng is None
    m.on_train_batch_start(None, 1)                                 # once only
    assert not torch.equal(torch.rand(3), expected)


def test_unpack_and_unit_stats():
    from graphsphere.train.module import _unit_stats, _unpack

    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert _unpack((a, b)) == (a, b, None) and _unpack([a, b, c]) == (a, b, c)
    mean, std = _unit_stats(3)
    assert mean.tolist() == [0.0, 0.0, 0.0] and std.tolist() == [1.0, 1.0, 1.0]


# -- fit and evaluate: arguments passed through ----------------------------------------------------------
def test_evaluate_takes_a_loaded_module(run):
    got = evaluate(run.module, split="val")
    assert got == pytest.approx(evaluate(run.best_checkpoint, split="val"), abs=1e-6)


def test_sampling_arrays_are_checked_when_built(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([0, 5, 10_000]))
    cfg = load_config({**BASE, "sampling": {"type": "HEALPix", "nside": 4, "indices": str(tmp_path / "ids.npy")}})
    with pytest.raises(ConfigError, match=r"sampling \(HEALPix\): "):
        cfg.sampling.build()
    np.save(tmp_path / "ids.npy", np.array([0, 5, 7]))
    assert cfg.sampling.build().npix == 3


def test_remove_checkpoints_reads_best_paths_safely(tmp_path):
    from graphsphere.train.callbacks import _remove_checkpoints_from

    torch.save({"global_step": 8, "state_dict": {"w": torch.ones(2)}}, tmp_path / "best.ckpt")
    torch.save({"global_step": 2, "state_dict": {"w": torch.ones(2)}}, tmp_path / "early.ckpt")

    class Payload:                                   # a pickle that runs code when loaded without weights_only
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "code_ran"),))

    import pickle
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"global_step": 9, "x": Payload()}))
    callbacks = [SimpleNamespace(best_model_path=str(tmp_path / "best.ckpt")),          # no last_model_path
                 SimpleNamespace(last_model_path=str(tmp_path / "early.ckpt"),
                                 best_model_path=str(tmp_path / "evil.ckpt")),
                 object()]                                                               # neither
    trainer = SimpleNamespace(is_global_zero=True, checkpoint_callbacks=callbacks)
    assert _remove_checkpoints_from(trainer, 5) == ["best.ckpt"]
    assert not (tmp_path / "code_ran").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["early.ckpt", "evil.ckpt"]


def test_layer_summary_rows_of_non_tensor_outputs():
    from graphsphere.train.callbacks import layer_summary

    class Shape(torch.nn.Module):
        def forward(self, x):
            return x.shape                            # a tuple of ints: no tensor to show

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.shape = Shape()
            self.lin = torch.nn.Linear(2, 1)

        def forward(self, x):
            self.shape(x)
            return self.lin(x)

    lines = layer_summary(Net(), torch.zeros(1, 2)).splitlines()
    assert lines[1] == f"{'shape':<32} {'Shape':<18} {'[]':<18} {'-':>8} {'0':>10}"


def test_plain_progress_flushes_each_line_and_needs_no_start(monkeypatch):
    import sys

    from graphsphere.train.callbacks import PlainProgress

    events = []
    out = SimpleNamespace(write=lambda s: events.append(("write", s)), flush=lambda: events.append(("flush",)))
    monkeypatch.setattr(sys, "stdout", out)
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, current_epoch=0, max_epochs=1,
                              callback_metrics={"train_loss_epoch": torch.tensor(1.0)})
    PlainProgress().on_train_epoch_end(trainer, None)             # no start seen (a resumed epoch): 0 s, not -0 s
    assert "".join(e[1] for e in events if e[0] == "write") == "epoch 1/1  train_loss 1  (0 s)\n"
    assert events[-1] == ("flush",)


def test_loss_is_float32_whatever_the_weights_dtype():
    m = task_module(n_out=2)
    out, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    ref = m.loss(out, y, torch.tensor([1.0, 3.0]))
    for w in (torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([1, 3])):
        got = m.loss(out, y, w)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref)
    reg = task_module("regression", n_out=1)
    got = reg.loss(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]]),
                   torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert got.dtype == torch.float32 and float(got) == pytest.approx((1 + 12) / 4)


def test_evaluate_builds_its_trainer_for_the_device(run, monkeypatch):
    import lightning.pytorch as pl

    from graphsphere.train import engine

    seen = {}

    class Stop(Exception):
        pass

    def trainer(**kw):
        seen.clear()
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(pl, "Trainer", trainer)
    monkeypatch.setattr(engine, "resolve_device", lambda device: device)   # as if a GPU were here
    with pytest.raises(Stop):
        evaluate(run.best_checkpoint, device="cuda:1")
    assert seen == dict(accelerator="gpu", devices=[1], precision="32", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, use_distributed_sampler=False)
    with pytest.raises(Stop):
        evaluate(run.best_checkpoint, device="cuda", progress_bar=True)
    assert seen["accelerator"] == "gpu" and seen["devices"] == [0] and seen["enable_progress_bar"] is True
    with pytest.raises(Stop):
        evaluate(run.best_checkpoint, device="cpu")
    assert seen["accelerator"] == "cpu" and seen["devices"] == 1


def test_a_trusted_model_class_evaluates_only_when_trusted(tmp_path):
    cfg = tiny(tmp_path / "t")
    cfg["model"]["type"] = "graphsphere.models:SphericalCNN"
    cfg["data"]["n_test"] = 0
    r = fit(cfg, trust_code=True)
    with pytest.raises(ConfigError, match="trust_code"):
        evaluate(r.last_checkpoint, split="val")
    names = {"val_loss", "val_acc", "val_f1", "val_map"}
    assert set(evaluate(r.last_checkpoint, split="val", trust_code=True)) == names
    assert set(evaluate(r.last_checkpoint, split="val", trust_code=True, overrides=["data.noise=0.2"])) == names
    assert predict(r.last_checkpoint, np.zeros((1, 192), np.float32), trust_code=True).shape == (1, 2)


def test_predict_names_its_inputs_and_checks_the_ordering(run, tmp_path):
    import healpy as hp

    x = np.random.default_rng(0).normal(size=(3, 192)).astype(np.float32)
    with pytest.raises(ValueError, match=r"^inputs: shape \(3, 100\) does not fit a model on 192 pixels"):
        predict(run.best_checkpoint, x[:, :100])
    with pytest.raises(ValueError, match=r"^inputs: .*RING"):
        np.random.seed(0)
        predict(run.best_checkpoint, hp.synfast(1.0 / (1 + np.arange(12)) ** 4, 4)[None])
    np.random.seed(0)
    ring = hp.synfast(1.0 / (1 + np.arange(12)) ** 4, 4).astype(np.float32)     # smooth, RING ordered
    np.save(tmp_path / "ring.npy", ring[None])
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'ring.npy'}: .*RING"):
        predict(run.best_checkpoint, tmp_path / "ring.npy")
    assert predict(run.best_checkpoint, tmp_path / "ring.npy", check_order=False).shape == (1, 2)


def test_predict_reads_the_named_netcdf_variable(run, tmp_path):
    from scipy.io import netcdf_file

    a, b = np.random.default_rng(1).normal(size=(2, 2, 192)).astype(np.float32)
    with netcdf_file(tmp_path / "two.nc", "w") as f:
        f.createDimension("time", 2)
        f.createDimension("pixel", 192)
        f.createVariable("a", "f", ("time", "pixel"))[:] = a
        f.createVariable("b", "f", ("time", "pixel"))[:] = b
    np.testing.assert_allclose(predict(run.best_checkpoint, tmp_path / "two.nc", var="b", check_order=False),
                               predict(run.best_checkpoint, b, check_order=False), rtol=1e-6)


def test_resolve_device_with_a_gpu(monkeypatch):
    from graphsphere.train.engine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"
