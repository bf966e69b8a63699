"""Training metrics against scikit-learn on random data."""

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")
skm = pytest.importorskip("sklearn.metrics")

from graphsphere.train.metrics import flatten_metrics, make_metrics  # noqa: E402


def _logits(rng, n, c):
    return rng.normal(size=(n, c)).astype(np.float32)


def test_classification_matches_sklearn(rng):
    n, c = 200, 4
    logits, y = _logits(rng, n, c), rng.integers(0, c, n)
    m = make_metrics("classification", c)
    for i in range(0, n, 64):  # several updates, as in an epoch
        m.update(torch.from_numpy(logits[i:i + 64]), torch.from_numpy(y[i:i + 64]))
    got = {k: float(v) for k, v in m.compute().items()}
    probs = torch.from_numpy(logits).softmax(-1).numpy()
    pred = logits.argmax(1)
    assert got["acc"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-5)
    onehot = np.eye(c)[y]
    assert got["map"] == pytest.approx(skm.average_precision_score(onehot, probs, average="macro"), abs=1e-5)


def test_regression_matches_sklearn(rng):
    n, k = 150, 3
    target = rng.normal(size=(n, k)).astype(np.float32)
    pred = (target + 0.5 * rng.normal(size=(n, k))).astype(np.float32)
    m = make_metrics("regression", k)
    m.update(torch.from_numpy(pred[:70]), torch.from_numpy(target[:70]))
    m.update(torch.from_numpy(pred[70:]), torch.from_numpy(target[70:]))
    got = {k_: float(v) for k_, v in m.compute().items()}
    assert got["mse"] == pytest.approx(skm.mean_squared_error(target, pred), rel=1e-5)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(target, pred), rel=1e-5)
    assert got["r2"] == pytest.approx(skm.r2_score(target, pred), rel=1e-4)


def test_single_output_regression(rng):
    target = rng.normal(size=(50, 1)).astype(np.float32)
    pred = (target + rng.normal(size=(50, 1))).astype(np.float32)
    m = make_metrics("regression", 1)
    m.update(torch.from_numpy(pred), torch.from_numpy(target))
    assert float(m.compute()["r2"]) == pytest.approx(skm.r2_score(target, pred), rel=1e-4)


def test_segmentation_iou_per_class(rng):
    b, v, c = 3, 48, 3
    logits = rng.normal(size=(b, v, c)).astype(np.float32)
    y = rng.integers(0, c, (b, v))
    m = make_metrics("segmentation", c)
    m.update(torch.from_numpy(logits), torch.from_numpy(y))
    got = {k: float(v_) for k, v_ in m.compute().items()}
    pred = logits.argmax(-1).ravel()
    iou = skm.jaccard_score(y.ravel(), pred, average=None)
    for i in range(c):
        assert got[f"iou_{i}"] == pytest.approx(iou[i], abs=1e-6)
    assert got["miou"] == pytest.approx(iou.mean(), abs=1e-6)
    assert got["acc"] == pytest.approx(skm.accuracy_score(y.ravel(), pred), abs=1e-6)
    assert got["f1"] == pytest.approx(skm.f1_score(y.ravel(), pred, average="macro"), abs=1e-5)


def test_flatten_and_errors():
    out = flatten_metrics({"a": torch.tensor(1.0), "iou": torch.tensor([0.2, 0.4])})
    assert set(out) == {"a", "iou_0", "iou_1", "miou"} and float(out["miou"]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="task"):
        make_metrics("detection", 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        make_metrics("classification", 1)
