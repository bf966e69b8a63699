"""Re-running the cosmology experiment: finished runs are only re-tested (the engine's last.ckpt is
an epoch end, so even a resume trains nothing), tables merge and never shrink, sweeps print
"run i/N" with the time left, data generation shows its progress as plain lines in a log file,
and accuracy.png draws error bars only from two seeds or more."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyccl")
pytest.importorskip("lightning")
pytest.importorskip("sklearn")

from graphsphere.experiments.cosmology import load_config, run  # noqa: E402
from graphsphere.experiments.cosmology.runner import accuracy_figure  # noqa: E402

# nside 32, order 1: patches of 32 x 32 pixels; 4 maps per class (1 validation, 2 test maps per class
# at these fractions); 2 epochs: a network run takes a few seconds. What is tested is the bookkeeping.
TINY = {
    "data": {"nside": 32, "orders": [1], "n_maps_per_class": 5, "shift_scale": 0.1,
             "test_fraction": 0.4, "val_fraction": 0.2},
    "noise_levels": [0.0],
    "methods": ["deepsphere_fcn", "svm_histogram"],
    "deepsphere": {"channels": [4, 8], "K": 3, "epochs": 2, "batch_pixels": 8192, "lr": 3e-3},
    "progress": False,
}


def _train_rows(run_dir: Path) -> int:
    """Rows of training metrics in every CSV log of a run (a resumed run logs into a new version)."""
    import csv

    rows = 0
    for f in run_dir.glob("logs/version_*/metrics.csv"):
        with open(f) as fh:
            rows += sum(1 for r in csv.DictReader(fh) if r.get("train_loss_epoch"))
    return rows


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("reruns")
    cfg = load_config(TINY, [f"output_dir={root / 'out'}", f"data.cache_dir={root / 'cache'}"])
    return cfg, run(cfg)


def test_last_checkpoint_is_an_epoch_end_and_a_rerun_only_retests(first, capsys):
    import torch

    cfg, results = first
    (run_dir,) = (Path(cfg.output_dir) / "runs").glob("deepsphere_fcn_order1_noise0_seed0_*")
    ck = run_dir / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["best.ckpt", "last.ckpt"]   # no last-v1.ckpt
    state = torch.load(ck / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == cfg.deepsphere.epochs
    assert state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"]
    before = {p.name: p.stat().st_mtime_ns for p in [*ck.iterdir(), run_dir / "metrics.json"]}
    rows = _train_rows(run_dir)
    capsys.readouterr()

    again = run(cfg)                                        # the same command
    out = capsys.readouterr().out
    assert "re-tested (trained earlier)" in out and "resuming" not in out
    assert again["accuracy"] == results["accuracy"]
    assert {p.name: p.stat().st_mtime_ns for p in [*ck.iterdir(), run_dir / "metrics.json"]} == before
    assert _train_rows(run_dir) == rows
    fcn = next(r for r in again["runs"] if r["method"] == "deepsphere_fcn")
    assert fcn["retested"] and fcn["seconds"] == next(
        r for r in results["runs"] if r["method"] == "deepsphere_fcn")["seconds"]   # the training's time kept

    # a run killed after its last epoch (no metrics.json) resumes from last.ckpt and trains nothing more
    (run_dir / "metrics.json").unlink()
    resumed = run(cfg)
    assert "resuming from" in capsys.readouterr().out
    assert _train_rows(run_dir) == rows
    assert resumed["accuracy"] == results["accuracy"]
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == state["global_step"]


def test_fewer_methods_and_other_noise_levels_add_to_the_table(first):
    cfg, results = first
    out = Path(cfg.output_dir)
    svm_only = cfg.model_copy(update={"methods": ["svm_histogram"], "noise_levels": [0.0, 1.0]})
    merged = run(svm_only)
    saved = json.loads((out / "results.json").read_text())
    assert saved["accuracy"] == merged["accuracy"]
    assert merged["accuracy"]["deepsphere_fcn"] == results["accuracy"]["deepsphere_fcn"]   # kept
    assert set(merged["accuracy"]["svm_histogram"]["o1"]) == {"0", "1"}                   # added
    assert merged["config"]["noise_levels"] == [0.0, 1.0]
    assert merged["config"]["methods"] == ["deepsphere_fcn", "svm_histogram"]
    table = (out / "results.md").read_text()
    fcn_row = next(line for line in table.splitlines() if line.startswith("| 1 | DeepSphere FCN"))
    assert fcn_row.endswith(" | - |")                                                    # not run at noise 1
    assert "noise 1" in table and "over 3 runs" in table

    # other settings: the old table is kept aside, the new one starts over
    other = cfg.model_copy(update={"deepsphere": cfg.deepsphere.model_copy(update={"epochs": 1}),
                                   "methods": ["svm_histogram"]})
    fresh = run(other)
    assert list(fresh["accuracy"]) == ["svm_histogram"]
    kept = json.loads((out / f"results_{saved['settings']}.json").read_text())
    assert kept["accuracy"] == merged["accuracy"]


def test_sweep_prints_run_i_of_n_and_maps_progress_as_plain_lines(tmp_path, capsys):
    from graphsphere.data.cosmology import generate_maps

    assert generate_maps(nside=16, n_maps_per_class=2, seed=3, cache_dir=tmp_path, progress=True) == 4
    err = capsys.readouterr().err
    assert "\r" not in err and "4/4 (100%)" in err                  # stderr is not a terminal here
    assert generate_maps(nside=16, n_maps_per_class=2, seed=3, cache_dir=tmp_path, progress=True) == 0

    cfg = load_config(TINY, [f"output_dir={tmp_path / 'out'}", f"data.cache_dir={tmp_path / 'cache'}",
                             "methods=[svm_histogram, svm_psd]", "noise_levels=[0, 1]"])
    run(cfg)
    out = capsys.readouterr().out
    assert [f"run {i}/4 done" in out for i in (1, 2, 3, 4)] == [True] * 4
    assert "left" in out and "all done" in out


def _results(seeds, per_cell):
    cfg = load_config(None, ["data.orders=[1, 2]", "data.nside=64", f"seeds={seeds}", "noise_levels=[0, 2]",
                             "methods=[deepsphere_fcn, svm_histogram]"]).model_dump()
    cell = {"0": per_cell, "2": per_cell}
    return {"config": cfg, "accuracy": {m: {"o1": cell, "o2": cell} for m in cfg["methods"]}}


def test_accuracy_plot_error_bars_only_from_two_seeds_and_markers_apart():
    import matplotlib.pyplot as plt

    one = accuracy_figure(_results([0], [0.7]))
    assert one.get_figwidth() >= 6.5                               # two panels: the page's width
    assert not any(c.has_yerr for c in one.axes[0].containers)
    two = accuracy_figure(_results([0, 1], [0.7, 0.8]))
    (bars,) = [c for c in two.axes[0].containers if c.has_yerr][:1]
    segs = bars.lines[2][0].get_segments()
    assert np.allclose([s[1][1] - s[0][1] for s in segs], 2 * 100 * np.std([0.7, 0.8], ddof=1))
    # equal accuracies of the two methods: side by side along x, open markers
    lines = [ln for ln in two.axes[0].get_lines() if ln.get_label() in ("DeepSphere FCN", "SVM on histograms")]
    xs = [tuple(ln.get_xdata()) for ln in lines[:2]]
    assert xs[0] != xs[1] and np.allclose(lines[0].get_ydata(), lines[1].get_ydata())
    assert lines[0].get_markerfacecolor() == "none"
    plt.close("all")
