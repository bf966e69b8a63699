"""The optional triplet loss of SphericalCNN (issue 10, item 4): cross-entropy + triplet_weight x a
batch-hard triplet margin loss on the outputs, saved with the model, in the shapes experiment's config, and
trained through the engine."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

import graphsphere as gs
from graphsphere.models.cnn import SphericalCNN, batch_hard_triplet_loss

S = gs.sampling.HEALPix(nside=4)


def small(**kw):
    return SphericalCNN(S, 1, 3, channels=(4,), K=2, **kw)


def brute_force(e, labels, margin):
    """The loss by the definition: loops over anchors, every positive and negative."""
    e, labels = e.double(), labels.tolist()
    terms = []
    for a in range(len(e)):
        pos = [i for i in range(len(e)) if i != a and labels[i] == labels[a]]
        neg = [i for i in range(len(e)) if labels[i] != labels[a]]
        if pos and neg:
            d_ap = max(float(torch.linalg.norm(e[a] - e[i])) for i in pos)
            d_an = min(float(torch.linalg.norm(e[a] - e[i])) for i in neg)
            terms.append(max(0.0, d_ap - d_an + margin))
    return float(np.mean(terms)) if terms else 0.0


# -- the loss ---------------------------------------------------------------------------------------------------

def test_hand_computed():
    # points on a line; class 0 at 0, 1, 4 and class 1 at 2, -3
    # anchor 0: farthest positive 4, nearest negative 2: 4 - 2 + m
    # anchor 1: farthest positive 3 (at 4), nearest negative 1 (at 2): 3 - 1 + m
    # anchor 4: farthest positive 4 (at 0), nearest negative 2 (at 2): 4 - 2 + m
    # anchor 2: positive 5 (at -3), nearest negative 1 (at 1): 5 - 1 + m
    # anchor -3: positive 5, nearest negative 3 (at 0): 5 - 3 + m;   mean: 12 / 5 + m
    e = torch.tensor([[0.0], [1.0], [4.0], [2.0], [-3.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert float(batch_hard_triplet_loss(e, labels, margin=0.5)) == pytest.approx(2.9, abs=1e-5)
    # 2-D: a 3-4-5 triangle and a far point. Class 0: (0, 0), (3, 4); class 1: (3, 0), (30, 0)
    # anchor (0,0): positive 5, nearest negative 3: 5 - 3 + 1 = 3;  anchor (3,4): 5 - 4 + 1 = 2
    # anchor (3,0): positive 27, nearest negative 3: 27 - 3 + 1 = 25;  anchor (30,0): 27 - sqrt(27^2+16) + 1
    e2 = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0], [30.0, 0.0]])
    far = 27 - np.hypot(27, 4) + 1                       # 0.705...
    want = (3 + 2 + 25 + far) / 4
    assert float(batch_hard_triplet_loss(e2, torch.tensor([0, 0, 1, 1]), margin=1.0)) == pytest.approx(want, abs=1e-5)


def test_mean_over_anchors_with_clipped_terms():
    # class 0 at 0, 1; class 1 at 10, 12; margin 8.5: terms -0.5, 0.5, 1.5, -0.5 -> 0, 0.5, 1.5, 0; mean 0.5
    e = torch.tensor([[0.0], [1.0], [10.0], [12.0]])
    assert float(batch_hard_triplet_loss(e, torch.tensor([0, 0, 1, 1]), margin=8.5)) == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_definition(seed):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(12, 3, generator=g)
    labels = torch.randint(0, 3, (12,), generator=g)
    labels[-1] = 5                                      # a singleton class: a negative, never an anchor
    got = float(batch_hard_triplet_loss(e, labels, margin=0.7))
    assert got == pytest.approx(brute_force(e, labels, 0.7), abs=1e-5)
    assert got > 0


def test_zero_when_the_margin_is_met():
    # two tight clusters 10 apart: every positive at 0.1, every negative at >= 9.9
    e = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.0, 0.1]], requires_grad=True)
    loss = batch_hard_triplet_loss(e, torch.tensor([0, 0, 1, 1]), margin=1.0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(e.grad, torch.zeros_like(e))
    # the same points with a margin larger than the gap: positive again
    assert batch_hard_triplet_loss(e, torch.tensor([0, 0, 1, 1]), margin=10.0).item() > 0


@pytest.mark.parametrize("labels", [[1, 1, 1, 1], [0, 1, 2, 3], [7], []], ids=["one-class", "singletons", "one",
                                                                                "empty"])
def test_no_triplet_gives_zero_and_a_zero_gradient(labels):
    e = torch.randn(len(labels), 3, requires_grad=True)
    loss = batch_hard_triplet_loss(e, torch.tensor(labels, dtype=torch.long), margin=1.0)
    assert loss.shape == () and loss.item() == 0.0
    loss.backward()
    assert torch.equal(e.grad, torch.zeros_like(e))


def test_gradient_pulls_positives_in_and_pushes_negatives_out():
    g = torch.Generator().manual_seed(0)
    e0 = torch.randn(10, 4, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    e = e0.clone().requires_grad_(True)
    batch_hard_triplet_loss(e, labels, margin=5.0).backward()   # every term active
    assert torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0
    stepped = e0 - 1e-3 * e.grad
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(10, dtype=torch.bool)
    before, after = torch.cdist(e0, e0), torch.cdist(stepped, stepped)
    pos_before = before.masked_fill(~same, -1).amax(1)
    pos_after = after.masked_fill(~same, -1).amax(1)
    neg_before = before.masked_fill(labels[:, None] == labels[None, :], float("inf")).amin(1)
    neg_after = after.masked_fill(labels[:, None] == labels[None, :], float("inf")).amin(1)
    # on average (a sample is also another anchor's positive or negative: not every pair moves its way)
    assert pos_after.mean() < pos_before.mean()            # farthest positives come closer
    assert neg_after.mean() > neg_before.mean()            # nearest negatives go away
    assert float(batch_hard_triplet_loss(stepped, labels, 5.0)) < float(batch_hard_triplet_loss(e0, labels, 5.0))


def test_gradient_of_one_triplet_by_hand():
    # x = 0, 2 (class 0) and 3 (class 1, a singleton: not an anchor); margin 2
    # anchor x0: T0 = |x0 - x1| - |x0 - x2| + 2 = 1;  anchor x1: T1 = |x1 - x0| - |x1 - x2| + 2 = 3; loss (T0 + T1) / 2
    # d/dx0 = (-1 + 1 - 1) / 2;  d/dx1 = (1 + 1 + 1) / 2;  d/dx2 = (-1 - 1) / 2
    e = torch.tensor([[0.0], [2.0], [3.0]], requires_grad=True)
    loss = batch_hard_triplet_loss(e, torch.tensor([0, 0, 1]), margin=2.0)
    loss.backward()
    assert loss.item() == pytest.approx(2.0, abs=1e-5)
    # a descent step moves x1 towards its positive x0 and away from x2, and x2 away from both
    assert e.grad.flatten().tolist() == pytest.approx([-0.5, 1.5, -1.0], abs=1e-5)


def test_identical_embeddings_have_finite_gradients():
    e = torch.zeros(4, 2, requires_grad=True)
    loss = batch_hard_triplet_loss(e, torch.tensor([0, 0, 1, 1]), margin=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(1.0, abs=1e-5) and torch.isfinite(e.grad).all()


# -- the model ---------------------------------------------------------------------------------------------------

def test_model_loss_is_cross_entropy_plus_weighted_triplet():
    out = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0], [0.5, 0.0, 0.0]])
    y = torch.tensor([0, 1, 0, 2, 1])
    ce = F.cross_entropy(out, y)
    trip = batch_hard_triplet_loss(out, y, margin=2.0)
    assert float(trip) > 0
    assert torch.equal(small().loss(out, y), ce)                                   # off by default
    assert float(small(triplet_margin=2.0).loss(out, y)) == pytest.approx(float(ce + trip), abs=1e-6)
    assert float(small(triplet_margin=2.0, triplet_weight=0.25).loss(out, y)) == pytest.approx(
        float(ce + 0.25 * trip), abs=1e-6)
    assert float(small().auxiliary_loss(out, y)) == 0.0


def test_auxiliary_loss_leaves_out_masked_samples():
    out = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
    m = small(triplet_margin=1.0, triplet_weight=2.0)
    full = batch_hard_triplet_loss(out, torch.tensor([0, 0, 1, 1]), 1.0)      # (3.8 + 2 + 0.8 + 1.6) / 4
    part = batch_hard_triplet_loss(out[:3], torch.tensor([0, 0, 1]), 1.0)     # (3 + 2) / 2: the last left out
    assert float(full) == pytest.approx(2.05, abs=1e-5) and float(part) == pytest.approx(2.5, abs=1e-5)
    assert float(m.auxiliary_loss(out, torch.tensor([0, 0, 1, 1]))) == pytest.approx(2 * float(full), abs=1e-6)
    assert float(m.auxiliary_loss(out, torch.tensor([0, 0, 1, -1]))) == pytest.approx(2 * float(part), abs=1e-6)
    w = torch.tensor([1.0, 0.5, 2.0, 0.0])
    assert float(m.auxiliary_loss(out, torch.tensor([0, 0, 1, 1]), w)) == pytest.approx(2 * float(part), abs=1e-6)
    assert float(m.auxiliary_loss(out, torch.tensor([[0], [0], [1], [1]]))) == pytest.approx(2 * float(full),
                                                                                              abs=1e-6)


@pytest.mark.parametrize("kw, key", [({"triplet_margin": 0}, "triplet_margin"),
                                     ({"triplet_margin": -1.0}, "triplet_margin"),
                                     ({"triplet_margin": float("nan")}, "triplet_margin"),
                                     ({"triplet_margin": float("inf")}, "triplet_margin"),
                                     ({"triplet_margin": True}, "triplet_margin"),
                                     ({"triplet_margin": "1"}, "triplet_margin"),
                                     ({"triplet_margin": 1.0, "triplet_weight": 0.0}, "triplet_weight"),
                                     ({"triplet_weight": -2}, "triplet_weight"),
                                     ({"triplet_weight": None}, "triplet_weight"),
                                     ({"triplet_margin": 1.0, "task": "regression"}, "triplet_margin")])
def test_bad_options_are_named(kw, key):
    with pytest.raises(ValueError, match=key):
        small(**kw)


def test_good_options_are_kept_as_floats():
    m = small(triplet_margin=2, triplet_weight=3)
    assert m.config["triplet_margin"] == 2.0 and isinstance(m.config["triplet_margin"], float)
    assert m.config["triplet_weight"] == 3.0 and isinstance(m.config["triplet_weight"], float)
    assert small(task="regression").config["triplet_margin"] is None      # off: fine for regression


def test_saved_model_keeps_the_option(tmp_path):
    m = small(triplet_margin=0.8, triplet_weight=0.3)
    m.save(tmp_path / "m.pt")
    back = gs.models.load(tmp_path / "m.pt")
    assert back.config["triplet_margin"] == 0.8 and back.config["triplet_weight"] == 0.3
    out, y = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.equal(back.loss(out, y), m.loss(out, y))
    state = m.to_state()                             # a file from before the option: cross-entropy only
    for key in ("triplet_margin", "triplet_weight"):
        del state["config"][key]
    assert SphericalCNN.from_state(state).config["triplet_margin"] is None


# -- the shapes experiment's config ---------------------------------------------------------------------------

def test_shapes_config_passes_the_option_to_the_model():
    from graphsphere.experiments.shapes.config import load_config
    from graphsphere.experiments.shapes.runner import _model_spec, _run_dir

    off = load_config(None)
    assert off.deepsphere.triplet_margin is None
    assert "triplet_margin" not in _model_spec(off, "deepsphere")   # off: the recorded runs keep their folders
    on = load_config(None, ["deepsphere.triplet_margin=0.5", "deepsphere.triplet_weight=2"])
    spec = _model_spec(on, "deepsphere")
    assert spec["triplet_margin"] == 0.5 and spec["triplet_weight"] == 2.0
    assert "triplet_margin" not in _model_spec(on, "sht_cnn")
    assert _run_dir(on, "deepsphere", "SO3/SO3", 10) != _run_dir(off, "deepsphere", "SO3/SO3", 10)
    assert _run_dir(on, "sht_cnn", "SO3/SO3", 10) == _run_dir(off, "sht_cnn", "SO3/SO3", 10)


@pytest.mark.parametrize("override", ["deepsphere.triplet_margin=-1", "deepsphere.triplet_weight=0",
                                      "sht_cnn.triplet_margin=1"])
def test_shapes_config_errors_name_the_key(override):
    from graphsphere.config import ConfigError
    from graphsphere.experiments.shapes.config import load_config

    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config(None, [override])


# -- through the training engine ------------------------------------------------------------------------------

def engine_config(out, margin, epochs=8):
    model = {"type": "SphericalCNN", "channels": [8, 16], "K": 3}
    if margin is not None:
        model.update(triplet_margin=margin, triplet_weight=1.0)
    return {"task": "classification", "output_dir": str(out), "sampling": {"type": "HEALPix", "nside": 4},
            "data": {"name": "synthetic", "n_train": 64, "n_val": 12, "n_test": 12, "num_classes": 2, "noise": 0.1},
            "model": model, "optim": {"lr": 0.02, "scheduler": "none"},
            "trainer": {"max_epochs": epochs, "batch_size": 16, "progress_bar": False, "loggers": ["csv"],
                        "seed": 0}}


@pytest.fixture(scope="module")
def triplet_run(tmp_path_factory):
    from graphsphere.train import fit

    return fit(engine_config(tmp_path_factory.mktemp("triplet"), margin=1.0))


def test_engine_loss_adds_the_models_triplet_term(triplet_run):
    module = triplet_run.module
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0], [0.5, 0.0]])
    y = torch.tensor([0, 1, 0, 1, 1])
    trip = batch_hard_triplet_loss(out, y, 1.0)
    assert trip.item() > 0.5
    assert module.loss(out, y).item() == pytest.approx((F.cross_entropy(out, y) + trip).item(), abs=1e-5), (
        "the engine's loss (graphsphere.train.module.SphereTask.loss) does not add the model's auxiliary_loss")
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])          # a sample of weight 0 is out of both terms
    trip4 = batch_hard_triplet_loss(out[:4], y[:4], 1.0)
    assert module.loss(out, y, w).item() == pytest.approx((F.cross_entropy(out[:4], y[:4]) + trip4).item(),
                                                          abs=1e-5)


def test_engine_trains_with_the_triplet_loss(triplet_run, tmp_path):
    import csv

    from graphsphere.train import fit
    from graphsphere.train.module import SphereTask

    rows = list(csv.DictReader(next(triplet_run.output_dir.glob("logs/version_*/metrics.csv")).open()))
    epoch_loss = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert len(epoch_loss) == 8 and epoch_loss[-1] < 0.6 * epoch_loss[0], epoch_loss
    assert triplet_run.metrics["test"]["test_acc"] > 0.6                    # 2 classes: chance is 1/2
    back = SphereTask.from_checkpoint(triplet_run.best_checkpoint)          # the checkpoint keeps the option
    assert back.model.config["triplet_margin"] == 1.0 and back.config.model.args["triplet_margin"] == 1.0
    # the same run without the option (same seed, same batches) learns other weights: the term reached the
    # gradients, not only the logged loss
    plain = fit(engine_config(tmp_path, margin=None)).module.model.state_dict()
    trained = triplet_run.module.model.state_dict()
    assert plain.keys() == trained.keys()
    assert any(not torch.equal(plain[k], trained[k]) for k in plain if plain[k].is_floating_point())


def test_engine_resume_refuses_another_triplet_setting(triplet_run):
    from graphsphere.train import fit
    from graphsphere.train.module import CheckpointError

    with pytest.raises(CheckpointError, match="triplet_margin"):
        fit(engine_config(triplet_run.output_dir, margin=0.5, epochs=9))
