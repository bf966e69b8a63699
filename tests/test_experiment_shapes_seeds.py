"""The shapes experiment over several seeds: ``data.seed`` as an int or a list, every seed's run is the
scalar config's run (same folder), the mean ± std and paired differences are right by hand, the table
reads as documented, and two seeds run end to end on the tiny setup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from graphsphere.config import ConfigError
from graphsphere.experiments.shapes import format_table, load_config
from graphsphere.experiments.shapes.runner import _run_dir, _train_config
from graphsphere.experiments.shapes.summary import paired_differences, summarize, summary_lines

# --- the config ----------------------------------------------------------------------------------------


def test_seed_is_an_int_or_a_list():
    assert load_config(None).data.seed == 0 and load_config(None).data.seeds == [0]
    assert load_config({"data": {"seed": 7}}).data.seeds == [7]
    cfg = load_config({"data": {"seed": [2, 0, 5]}})
    assert cfg.data.seed == [2, 0, 5] and cfg.data.seeds == [2, 0, 5]   # the order given is kept
    assert load_config(None, ["data.seed=[0,1,2]"]).data.seeds == [0, 1, 2]
    assert load_config(None, ["data.seed=[3, 4]"]).data.seeds == [3, 4]
    # an override replaces a file's list by a scalar and the other way round
    assert load_config("experiments/shapes_table.yaml", ["data.seed=4"]).data.seeds == [4]
    assert load_config("experiments/shapes_quick.yaml", ["data.seed=[1,2]"]).data.seeds == [1, 2]


@pytest.mark.parametrize("source, overrides, why", [
    ({}, ["data.seed=[]"], "the list of seeds is empty"),
    ({"data": {"seed": []}}, [], "the list of seeds is empty"),
    ({}, ["data.seed=[0,1,0]"], "a seed is listed twice"),
    ({}, ["data.seed=1.5"], "not an int"),
    ({}, ["data.seed=[1,2.5]"], "a seed is not an int"),
    ({}, ["data.seed=[1,x]"], "a seed is not an int"),
    ({}, ["data.seed=true"], "not an int"),
    ({}, ["data.seed=[true,2]"], "a seed is not an int"),
    ({}, ["data.seed=null"], "not an int"),
    ({"data": {"seed": "3"}}, [], "not an int"),
])
def test_bad_seeds_name_the_key(source, overrides, why):
    with pytest.raises(ConfigError) as e:
        load_config(source, overrides)
    assert e.value.issues[0][0] == "data.seed" and why in e.value.issues[0][1]
    assert "non-empty list of distinct ints" in str(e.value)


def test_for_seed_is_the_scalar_config():
    cfg = load_config("experiments/shapes_table.yaml", ["data.seed=[0,1,2]", "deepsphere.epochs=3"])
    for s in (0, 1, 2):
        scalar = load_config("experiments/shapes_table.yaml", [f"data.seed={s}", "deepsphere.epochs=3"])
        assert cfg.for_seed(s) == scalar
    with pytest.raises(ValueError, match="seed 3 is not among"):
        cfg.for_seed(3)


@pytest.mark.parametrize("method", ["deepsphere", "sht_cnn"])
@pytest.mark.parametrize("protocol", ["SO3/SO3", "z/SO3"])
def test_every_seed_trains_in_the_scalar_configs_folder(method, protocol):
    # the runs of seed s of a list config are the runs the scalar config data.seed=s trained (a run already
    # trained with data.seed=0 is re-tested, not retrained), and other seeds are other runs
    overrides = ["data.meshes_per_category=null", "progress=false"]
    many = load_config("experiments/shapes_table.yaml", overrides + ["data.seed=[0,1,2]"])
    dirs = set()
    for s in (0, 1, 2):
        scalar = load_config("experiments/shapes_table.yaml", overrides + [f"data.seed={s}"])
        shown = load_config("experiments/shapes_table.yaml", overrides + [f"data.seed={s}", "progress=true"])
        one = many.for_seed(s)
        assert _run_dir(one, method, protocol, 400) == _run_dir(scalar, method, protocol, 400) \
            == _run_dir(shown, method, protocol, 400)    # how a run is shown is not what it is
        assert _train_config(one, method, protocol, Path("x"), 400) == \
            _train_config(scalar, method, protocol, Path("x"), 400)
        assert _train_config(one, method, protocol, Path("x"), 400)["data"]["seed"] == s
        dirs.add(_run_dir(one, method, protocol, 400))
    assert len(dirs) == 3


# --- the summary, by hand ------------------------------------------------------------------------------

def _run(seed, protocol, method, acc, no_tta, f1, micro, macro):
    return {"seed": seed, "protocol": protocol, "method": method, "accuracy": acc, "accuracy_no_tta": no_tta,
            "f1_weighted": f1, "micro": {"mAP": micro, "P@N": 0.5, "R@N": 0.5, "F1@N": 0.5}, "macro": {"mAP": macro},
            "pixels": 768, "params": 1234, "best_epoch": 2, "epochs": 4, "train_seconds_per_epoch": 1.0,
            "train_seconds_to_best": 3.0, "retested": False}


# three seeds, two protocols, two methods
RUNS = [
    _run(0, "SO3/SO3", "deepsphere", 0.70, 0.60, 0.68, 0.60, 0.55),
    _run(0, "SO3/SO3", "sht_cnn", 0.50, 0.45, 0.48, 0.50, 0.40),
    _run(0, "z/SO3", "deepsphere", 0.40, 0.40, 0.40, 0.30, 0.30),
    _run(0, "z/SO3", "sht_cnn", 0.60, 0.60, 0.60, 0.50, 0.50),
    _run(1, "SO3/SO3", "deepsphere", 0.60, 0.55, 0.58, 0.50, 0.45),
    _run(1, "SO3/SO3", "sht_cnn", 0.60, 0.50, 0.56, 0.55, 0.50),
    _run(1, "z/SO3", "deepsphere", 0.50, 0.50, 0.50, 0.40, 0.40),
    _run(1, "z/SO3", "sht_cnn", 0.50, 0.50, 0.50, 0.40, 0.40),
    _run(2, "SO3/SO3", "deepsphere", 0.80, 0.70, 0.78, 0.70, 0.65),
    _run(2, "SO3/SO3", "sht_cnn", 0.55, 0.50, 0.52, 0.45, 0.45),
    _run(2, "z/SO3", "deepsphere", 0.60, 0.60, 0.60, 0.50, 0.50),
    _run(2, "z/SO3", "sht_cnn", 0.40, 0.40, 0.40, 0.30, 0.30),
]


def test_summary_by_hand():
    summary = summarize(RUNS)
    assert [(s["protocol"], s["method"], s["n"], s["seeds"]) for s in summary] == [
        ("SO3/SO3", "deepsphere", 3, [0, 1, 2]), ("SO3/SO3", "sht_cnn", 3, [0, 1, 2]),
        ("z/SO3", "deepsphere", 3, [0, 1, 2]), ("z/SO3", "sht_cnn", 3, [0, 1, 2])]
    ds = summary[0]
    # accuracy 0.7, 0.6, 0.8: mean 0.7, deviations 0, -0.1, 0.1: sample variance 0.02 / 2 = 0.01, std 0.1
    assert ds["accuracy"] == pytest.approx({"mean": 0.7, "std": 0.1, "min": 0.6, "max": 0.8})
    # no TTA 0.6, 0.55, 0.7: mean 0.61667, deviations -1/60, -4/60, 5/60: squares 42/3600, / 2 -> std 0.07638
    assert ds["accuracy_no_tta"]["mean"] == pytest.approx(1.85 / 3)
    assert ds["accuracy_no_tta"]["std"] == pytest.approx(math.sqrt(42 / 3600 / 2), rel=1e-9)
    assert ds["f1_weighted"] == pytest.approx({"mean": 0.68, "std": 0.1, "min": 0.58, "max": 0.78})
    assert ds["mAP_micro"] == pytest.approx({"mean": 0.6, "std": 0.1, "min": 0.5, "max": 0.7})
    assert ds["mAP_macro"] == pytest.approx({"mean": 0.55, "std": 0.1, "min": 0.45, "max": 0.65})
    sht = summary[1]
    # 0.5, 0.6, 0.55: mean 0.55, std sqrt((0.0025 + 0.0025 + 0) / 2) = 0.05
    assert sht["accuracy"] == pytest.approx({"mean": 0.55, "std": 0.05, "min": 0.5, "max": 0.6})
    # mAP micro 0.5, 0.55, 0.45: mean 0.5, std 0.05
    assert sht["mAP_micro"] == pytest.approx({"mean": 0.5, "std": 0.05, "min": 0.45, "max": 0.55})


def test_paired_differences_by_hand():
    so3, z = paired_differences(RUNS)
    assert (so3["protocol"], so3["of"], so3["minus"], so3["n"], so3["seeds"]) == \
        ("SO3/SO3", "deepsphere", "sht_cnn", 3, [0, 1, 2])
    # SO3/SO3 accuracy: 0.7 - 0.5, 0.6 - 0.6, 0.8 - 0.55 = 0.2, 0, 0.25: mean 0.15, deviations 0.05, -0.15, 0.1:
    # squares 0.0025 + 0.0225 + 0.01 = 0.035, / 2 -> std sqrt(0.0175)
    assert so3["accuracy"] == pytest.approx({"mean": 0.15, "std": math.sqrt(0.0175), "min": 0.0, "max": 0.25})
    assert so3["ahead"] == 3       # a tie (seed 1) counts as at least equal
    # mAP micro: 0.1, -0.05, 0.25: mean 0.1, deviations 0, -0.15, 0.15: std sqrt(0.045 / 2) = 0.15
    assert so3["mAP_micro"] == pytest.approx({"mean": 0.1, "std": 0.15, "min": -0.05, "max": 0.25})
    # z/SO3 accuracy: -0.2, 0, 0.2: mean 0, std 0.2; DeepSphere at least equal on seeds 1 and 2
    assert z["accuracy"] == pytest.approx({"mean": 0.0, "std": 0.2, "min": -0.2, "max": 0.2}, abs=1e-12)
    assert z["ahead"] == 2
    # not the difference of the means' spreads: the pairing is seed by seed
    shuffled = [dict(r, seed={0: 1, 1: 0, 2: 2}[r["seed"]]) if r["method"] == "sht_cnn" else r for r in RUNS]
    assert paired_differences(shuffled)[0]["accuracy"]["mean"] == pytest.approx(0.15)
    assert paired_differences(shuffled)[0]["accuracy"]["std"] != pytest.approx(so3["accuracy"]["std"])


def test_paired_differences_need_both_models_of_a_seed():
    one_method = [r for r in RUNS if r["method"] == "deepsphere"]
    assert paired_differences(one_method) == []
    missing = [r for r in RUNS if not (r["seed"] == 2 and r["method"] == "sht_cnn")]
    so3 = paired_differences(missing)[0]
    assert so3["n"] == 2 and so3["seeds"] == [0, 1] and so3["accuracy"]["mean"] == pytest.approx(0.1)


def test_one_seed_has_no_std():
    s = summarize([r for r in RUNS if r["seed"] == 1])[0]
    assert s["n"] == 1 and s["accuracy"] == {"mean": 0.6, "std": None, "min": 0.6, "max": 0.6}


# --- the table -----------------------------------------------------------------------------------------

def _results(runs):
    cfg = load_config(None, ["data.task=instance", "tta_copies=2"]).model_dump(mode="json")
    cfg["data"]["seed"] = list(dict.fromkeys(r["seed"] for r in runs))
    sizes = {"meshes": 6, "classes": 6, "train": 30, "val": 12, "test": 18}
    return {"config": cfg, "sizes": sizes, "runs": runs, "summary": summarize(runs),
            "paired_differences": paired_differences(runs),
            "machine": {"cpu_count": 2, "torch_threads": 2, "load_average_at_timing": [1.0], "timed_seed": 0},
            "data_seconds": 3.0, "total_seconds": 60.0}


def test_table_of_one_seed_is_as_before():
    table = format_table(_results([r for r in RUNS if r["seed"] == 0]))
    assert summary_lines(_results([r for r in RUNS if r["seed"] == 0])) == []
    assert "±" not in table and "| seed |" not in table and "Over " not in table
    assert "| protocol | model | pixels | params | accuracy (%) |" in table
    assert "| SO3/SO3 | DeepSphere (graph, HEALPix) | 768 | 1,234 | 70.0 | 60.0 | 68.0 | 0.600 | 0.550 |" in table
    assert "timed on the models of seed" not in table


def test_table_of_several_seeds():
    table = format_table(_results(RUNS))
    lines = table.splitlines()
    # first the mean ± std over seeds, then the paired differences, then the per-seed rows with a seed column
    i_mean = lines.index("| protocol | model | n | accuracy (%) | no TTA (%) | F1 (%) | mAP micro | mAP macro "
                         "| accuracy min-max (%) |")
    assert lines[i_mean + 2] == ("| SO3/SO3 | DeepSphere (graph, HEALPix) | 3 | 70.0 ± 10.0 | 61.7 ± 7.6 | "
                                 "68.0 ± 10.0 | 0.600 ± 0.100 | 0.550 ± 0.100 | 60.0-80.0 |")
    assert lines[i_mean + 3].startswith("| SO3/SO3 | SHT CNN (Gauss-Legendre) | 3 | 55.0 ± 5.0 |")
    i_pair = next(i for i, line in enumerate(lines) if line.startswith("| protocol | n | accuracy (points)"))
    assert i_pair > i_mean
    # 15.0 points, std 100 sqrt(0.0175) = 13.2
    assert lines[i_pair + 2].startswith("| SO3/SO3 | 3 | +15.0 ± 13.2 |") and lines[i_pair + 2].endswith(
        "| 3 of 3 |")
    assert lines[i_pair + 3].startswith("| z/SO3 | 3 | +0.0 ± 20.0 |") and lines[i_pair + 3].endswith("| 2 of 3 |")
    assert "| +0.100 ± 0.150 |" in lines[i_pair + 2]
    i_rows = lines.index("| seed | protocol | model | pixels | params | accuracy (%) | no TTA (%) | F1 (%) "
                         "| mAP micro | mAP macro | P@N | R@N | F1@N |")
    assert i_rows > i_pair
    assert lines[i_rows + 2].startswith("| 0 | SO3/SO3 | DeepSphere (graph, HEALPix) | 768 | 1,234 | 70.0 |")
    assert lines[i_rows + 13].startswith("| 2 | z/SO3 | SHT CNN (Gauss-Legendre) | 768 | 1,234 | 40.0 |")
    assert sum(line.startswith("| 1 | ") for line in lines) == 8   # per-seed rows of both tables
    assert "timed on the models of seed 0 only" in table
    assert "| seed | protocol | model | inference, batch 1 (ms) |" in table


def test_table_computes_the_summary_of_older_results():
    results = _results(RUNS)
    del results["summary"], results["paired_differences"]
    assert format_table(results) == format_table(_results(RUNS))


# --- end to end: two seeds on the tiny setup ----------------------------------------------------------

def test_two_seeds_end_to_end(tmp_path, monkeypatch):
    import torch
    from test_experiment_shapes import SMALL, built_meshes  # tests/ is on sys.path (pytest's rootdir import mode)

    from graphsphere.experiments.shapes import run, runner
    from graphsphere.train.module import SphereTask

    timed, inference_times = {}, runner._inference_times
    monkeypatch.setattr(runner, "_inference_times", lambda models: timed.update(models) or inference_times(models))

    source = built_meshes(tmp_path / "meshes")
    settings = {**SMALL, "methods": ["deepsphere"], "timing": True, "tta_copies": 1,
                "data": {**SMALL["data"], **source["data"], "samples_per_mesh": 6, "val_fraction": 0.2,
                         "test_fraction": 0.35},
                "deepsphere": {**SMALL["deepsphere"], "channels": [4], "epochs": 2},
                "picture_mesh": source["picture_mesh"]}
    common = [f"data.cache_dir={tmp_path / 'cache'}"]
    # seed 1 alone first: the two-seed run re-tests it from its checkpoint
    alone = run(load_config(settings, common + [f"output_dir={tmp_path / 'out'}", "data.seed=1", "timing=false"]))
    (alone_run,) = alone["runs"]
    assert alone_run["seed"] == 1 and alone["summary"][0]["n"] == 1 and alone["paired_differences"] == []
    results = run(load_config(settings, common + [f"output_dir={tmp_path / 'out'}", "data.seed=[0,1]"]))
    assert results["seeds"] == [0, 1] and [r["seed"] for r in results["runs"]] == [0, 1]
    first, second = results["runs"]
    assert not first["retested"] and second["retested"] and second["run_dir"] == alone_run["run_dir"]
    assert second["accuracy"] == alone_run["accuracy"] and first["run_dir"] != second["run_dir"]
    assert "inference_ms" in first and "inference_ms" not in second   # timed once, on the first seed
    (module, _, _), = timed.values()                                   # ... on the first seed's model
    for r, same in ((first, True), (second, False)):
        trained = SphereTask.from_checkpoint(r["best_checkpoint"]).model.state_dict()
        assert all(torch.equal(v, trained[k]) for k, v in module.model.state_dict().items()) == same
    (s,) = results["summary"]
    assert s["n"] == 2 and s["accuracy"]["mean"] == pytest.approx((first["accuracy"] + second["accuracy"]) / 2)
    out = Path(results["config"]["output_dir"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"] == results["summary"] and saved["sizes_by_seed"].keys() == {"0", "1"}
    table = (out / "results.md").read_text()
    assert "Over 2 seeds (0, 1;" in table and "| 1 | z/SO3 | DeepSphere" in table
    assert (out / "confusion.png").exists()
    # averaging over rotated copies is a test-time choice: the trained run is re-tested, its copies projected
    cached = set((tmp_path / "cache").rglob("*.npy"))
    turned = run(load_config(settings, common + [f"output_dir={tmp_path / 'out'}", "data.seed=1", "timing=false",
                                                 "tta_copies=2", "tta_rotations=true"]))
    (again,) = turned["runs"]
    assert again["retested"] and again["run_dir"] == alone_run["run_dir"]
    assert again["accuracy_no_tta"] == alone_run["accuracy_no_tta"]
    new = set((tmp_path / "cache").rglob("*.npy")) - cached
    assert len(new) == turned["sizes"]["test"]                         # one rotated copy per test sample
    assert "2 copies (each rotated afresh)" in (out / "results.md").read_text()


@pytest.mark.parametrize("method", ["deepsphere", "sht_cnn"])
def test_select_val_acc_monitors_the_validation_accuracy_and_keeps_other_folders(method):
    """`select: val_acc` keeps the epoch of highest validation accuracy (the engine's monitor); the default,
    the lowest validation loss, writes no monitor into the run's config, so runs trained before the option
    keep their folders."""
    loss = ["data.seed=0", "deepsphere.select=val_loss", "sht_cnn.select=val_loss"]
    base = load_config("experiments/shapes_table.yaml", loss)
    chosen = load_config("experiments/shapes_table.yaml", loss + [f"{method}.select=val_acc"])
    default = _train_config(base, method, "SO3/SO3", Path("x"), 400)["trainer"]
    assert "monitor" not in default and "monitor_mode" not in default
    trainer = _train_config(chosen, method, "SO3/SO3", Path("x"), 400)["trainer"]
    assert trainer["monitor"] == "val_acc" and trainer["monitor_mode"] == "max"
    assert _run_dir(chosen, method, "SO3/SO3", 400) != _run_dir(base, method, "SO3/SO3", 400)
    other = "sht_cnn" if method == "deepsphere" else "deepsphere"     # the other network is untouched
    assert _run_dir(chosen, other, "SO3/SO3", 400) == _run_dir(base, other, "SO3/SO3", 400)
    with pytest.raises(ConfigError, match=f"{method}.select"):
        load_config(None, [f"{method}.select=val_f1"])


@pytest.mark.parametrize("method", ["deepsphere", "sht_cnn"])
def test_dropout_reaches_the_model_and_keeps_other_folders(method):
    """`dropout` is passed to the network only when set: runs without it keep their folders."""
    base = load_config("experiments/shapes_table.yaml", ["data.seed=0"])
    chosen = load_config("experiments/shapes_table.yaml", ["data.seed=0", f"{method}.dropout=0.3"])
    assert "dropout" not in _train_config(base, method, "SO3/SO3", Path("x"), 400)["model"]
    assert _train_config(chosen, method, "SO3/SO3", Path("x"), 400)["model"]["dropout"] == 0.3
    assert _run_dir(chosen, method, "SO3/SO3", 400) != _run_dir(base, method, "SO3/SO3", 400)
    other = "sht_cnn" if method == "deepsphere" else "deepsphere"
    assert _run_dir(chosen, other, "SO3/SO3", 400) == _run_dir(base, other, "SO3/SO3", 400)
    with pytest.raises(ConfigError, match=f"{method}.dropout"):
        load_config(None, [f"{method}.dropout=1.0"])
    # the engine builds the network with it
    from graphsphere.sampling import from_spec
    from graphsphere.train.config import ModelConfig
    from graphsphere.train.module import build_model

    small = load_config(None, ["data.seed=0", f"{method}.dropout=0.3"])
    tc = _train_config(small, method, "SO3/SO3", Path("x"), 400)
    spec = dict(tc["sampling"])
    net = build_model(ModelConfig(**tc["model"]), "classification", from_spec(spec.pop("type"), **spec), 6, 6)
    assert isinstance(net.dropout, torch.nn.Dropout) and net.dropout.p == 0.3


def test_graph_neighbours_reach_the_model_and_keep_other_folders():
    """`deepsphere.k` builds every level's graph with that many neighbours; the paper's 8 writes nothing into
    the run's config, so runs on its graph keep their folders."""
    base = load_config("experiments/shapes_table.yaml", ["data.seed=0"])
    chosen = load_config("experiments/shapes_table.yaml", ["data.seed=0", "deepsphere.k=20"])
    assert "k" not in _train_config(base, "deepsphere", "SO3/SO3", Path("x"), 400)["model"]
    assert _run_dir(chosen, "deepsphere", "SO3/SO3", 400) != _run_dir(base, "deepsphere", "SO3/SO3", 400)
    assert _run_dir(chosen, "sht_cnn", "SO3/SO3", 400) == _run_dir(base, "sht_cnn", "SO3/SO3", 400)
    with pytest.raises(ConfigError, match="deepsphere.k"):
        load_config(None, ["deepsphere.k=0"])
    from graphsphere.sampling import from_spec
    from graphsphere.train.config import ModelConfig
    from graphsphere.train.module import build_model

    tc = _train_config(load_config(None, ["data.seed=0", "deepsphere.k=20"]), "deepsphere", "SO3/SO3", Path("x"), 400)
    spec = dict(tc["sampling"])
    net = build_model(ModelConfig(**tc["model"]), "classification", from_spec(spec.pop("type"), **spec), 6, 6)
    finest = net.blocks[0].conv.operator
    # a symmetrised 20-nearest-neighbour graph: 20 to ~2 x 20 neighbours a vertex (8 gives ~8-9)
    assert 20 * finest.n <= finest.values.numel() <= 40 * finest.n


@pytest.mark.parametrize("method", ["deepsphere", "sht_cnn"])
def test_adam_eps_reaches_the_optimizer_and_keeps_other_folders(method):
    """`adam_eps` (the paper: 0.1) goes into the engine's optim section only when not torch's default."""
    base = load_config("experiments/shapes_table.yaml", ["data.seed=0"])
    chosen = load_config("experiments/shapes_table.yaml", ["data.seed=0", f"{method}.adam_eps=0.1"])
    assert "eps" not in _train_config(base, method, "SO3/SO3", Path("x"), 400)["optim"]
    assert _train_config(chosen, method, "SO3/SO3", Path("x"), 400)["optim"]["eps"] == 0.1
    assert _run_dir(chosen, method, "SO3/SO3", 400) != _run_dir(base, method, "SO3/SO3", 400)
    other = "sht_cnn" if method == "deepsphere" else "deepsphere"
    assert _run_dir(chosen, other, "SO3/SO3", 400) == _run_dir(base, other, "SO3/SO3", 400)
    with pytest.raises(ConfigError, match=f"{method}.adam_eps"):
        load_config(None, [f"{method}.adam_eps=0"])
