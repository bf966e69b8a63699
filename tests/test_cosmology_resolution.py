"""The resolution sweep of the cosmology experiment (benchmarks/cosmology_resolution.py): the overrides
keep the steps per epoch at every nside, bad sweeps are refused before anything runs, the table's
numbers are the seeds' mean and sample std, the figure has error bars only with 2 seeds or more, and
one tiny sweep drives the real command end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyccl")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from graphsphere.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cosmology_resolution", ROOT / "benchmarks" / "cosmology_resolution.py")
cr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cr)


def test_pixel_size_matches_healpy():
    hp = pytest.importorskip("healpy")
    for nside in (64, 128, 256, 1024):
        assert cr.pixel_arcmin(nside) == pytest.approx(hp.nside2resol(nside, arcmin=True), rel=1e-12)


def test_overrides_keep_patches_per_step_at_every_nside(tmp_path):
    overrides = cr.plan(cr.CONFIG, [64, 128, 256], tmp_path)
    for nside, ov in overrides.items():
        cfg = cr.load(cr.CONFIG, ov)
        npix = (nside // 4) ** 2
        assert cfg.data.nside == nside and cfg.data.orders == [4]
        # 64 patches per step at every nside: 2688 training patches -> 42 steps per epoch everywhere
        assert cfg.deepsphere.batch_pixels == 64 * npix
        assert Path(cfg.output_dir) == tmp_path / f"nside{nside}"
        # everything but the resolution is the config's
        base = cr.load(cr.CONFIG)
        assert cfg.deepsphere.channels == base.deepsphere.channels and cfg.deepsphere.epochs == base.deepsphere.epochs
        assert cfg.data.n_maps_per_class == base.data.n_maps_per_class


def test_bad_sweeps_are_refused_before_running(tmp_path):
    # nside 32 at order 4: 8 x 8 patches cannot take the network's 3 poolings
    with pytest.raises(ConfigError, match="deepsphere.channels"):
        cr.plan(cr.CONFIG, [32], tmp_path)
    with pytest.raises(ValueError, match="one order"):
        cr.plan(cr.CONFIG, [64], tmp_path, ["data.orders=[2,4]"])
    with pytest.raises(ValueError, match="multiple of 1024"):
        cr.plan(cr.CONFIG, [64], tmp_path, ["deepsphere.batch_pixels=1000"])


def _results(nside, accs: dict, seeds=(0, 1), channels=(8, 16, 32)):
    """A results.json as the runner writes it: accs = {(method, noise): [acc per seed]}."""
    accuracy, runs = {}, []
    for (m, noise), values in accs.items():
        accuracy.setdefault(m, {}).setdefault("o4", {})[f"{noise:g}"] = list(values)
        runs += [{"method": m, "order": 4, "noise": noise, "seed": s, "accuracy": a, "params": 1,
                  "seconds": 10.0 * nside / 64, "retested": False, "run": None, "extra": {}}
                 for s, a in zip(seeds, values)]
    cfg = cr.load(cr.CONFIG, [f"data.nside={nside}", f"seeds={list(seeds)}", f"deepsphere.channels={list(channels)}",
                              f"deepsphere.batch_pixels={64 * (nside // 4) ** 2}"]).model_dump()
    return {"config": cfg, "accuracy": accuracy, "runs": runs,
            "sizes": {"o4": {"train": 2688, "val": 384, "test": 2304, "pixels per sample": (nside // 4) ** 2}}}


def test_table_reports_mean_and_sample_std(tmp_path):
    found = {64: _results(64, {("deepsphere_fcn", 0.0): [0.55, 0.58], ("svm_histogram", 1.0): [0.52, 0.53]}),
             256: _results(256, {("deepsphere_fcn", 0.0): [0.70, 0.75], ("svm_histogram", 1.0): [0.60, 0.66]})}
    text = cr.format_report(found, {})
    fcn = next(line for line in text.splitlines() if line.startswith("| DeepSphere FCN | 0 |"))
    cells = [c.strip() for c in fcn.strip("|").split("|")]
    std64 = np.std([55.0, 58.0], ddof=1)
    assert cells[2] == f"56.5 ± {std64:.1f}"
    assert cells[3] == f"72.5 ± {np.std([70.0, 75.0], ddof=1):.1f}"
    assert cells[4] == "+16.0"                       # 72.5 - 56.5
    assert "nside 64 (55')" in text and "nside 256 (14')" in text
    # the same 64 patches per step at both resolutions
    assert "64 patches (16384 pixels) per step" in text and "64 patches (262144 pixels) per step" in text


def test_one_seed_gives_no_plus_minus_and_no_error_bars():
    found = {64: _results(64, {("deepsphere_fcn", 0.0): [0.55]}, seeds=(0,)),
             128: _results(128, {("deepsphere_fcn", 0.0): [0.6]}, seeds=(0,))}
    rows = [line for line in cr.format_report(found, {}).splitlines() if line.startswith("| DeepSphere FCN | 0 |")]
    assert rows == ["| DeepSphere FCN | 0 | 55.0 | 60.0 | +5.0 |"]
    fig = cr.figure(found)
    assert not fig.axes[0].containers               # errorbar adds an ErrorbarContainer
    two = {n: _results(n, {("deepsphere_fcn", 0.0): [0.55, 0.6], ("svm_psd", 1.0): [0.5, 0.52]}) for n in (64, 128)}
    fig2 = cr.figure(two)
    assert len(fig2.axes[0].containers) == 2
    # the paper's stars sit at nside 1024 with its order-4 values (FCN 100 at noise 0, PSD SVM 71.4 at noise 1)
    stars = [ln for ln in fig2.axes[0].get_lines() if ln.get_marker() == "*" and len(ln.get_xdata())]
    assert sorted(float(ln.get_ydata()[0]) for ln in stars) == [71.4, 100.0]
    assert all(1000 < float(ln.get_xdata()[0]) < 1050 for ln in stars)


def test_complete_needs_every_run_with_the_same_settings(tmp_path):
    accs = {(m, n): [0.6, 0.6] for m in ("deepsphere_fcn", "svm_histogram", "svm_psd") for n in (0.0, 1.0)}
    out = tmp_path / "nside64"
    out.mkdir()
    cfg = cr.load(cr.CONFIG, cr.nside_overrides(cr.load(cr.CONFIG), 64, tmp_path))
    (out / "results.json").write_text(json.dumps(_results(64, accs)))
    assert cr.complete(cfg, out)
    fewer = dict(accs)
    fewer.pop(("svm_psd", 1.0))
    (out / "results.json").write_text(json.dumps(_results(64, fewer)))
    assert not cr.complete(cfg, out)
    (out / "results.json").write_text(json.dumps(_results(64, accs, channels=(8, 16))))
    assert not cr.complete(cfg, out)                 # another network: its runs do not count


def test_sweep_runs_the_command_once_per_incomplete_nside(tmp_path, monkeypatch):
    # The real command is exercised by the sweep itself (minutes); here the runner is replaced by a stand-in
    # that writes what the runner writes, to check the command lines, the log and the skipping of done nsides.
    calls = []

    def fake_run(cmd, check, cwd):
        calls.append(cmd)
        ov = cmd[3:]
        cfg = cr.load(cr.CONFIG, ov)
        accs = {(m, float(n)): [0.6] * len(cfg.seeds) for m in cfg.methods for n in cfg.noise_levels}
        out = Path(cfg.output_dir)
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps(_results(cfg.data.nside, accs, seeds=cfg.seeds)))

    monkeypatch.setattr(cr.subprocess, "run", fake_run)
    log = cr.sweep(cr.CONFIG, [64, 128], tmp_path)
    assert [c[:3] for c in calls] == [[str(Path(cr._cli()[0])), "cosmology", str(cr.CONFIG)]] * 2
    assert Path(calls[0][0]).name == "graphsphere" and Path(calls[0][0]).exists()
    assert calls[1][3:] == cr.nside_overrides(cr.load(cr.CONFIG), 128, tmp_path)
    assert set(log) == {"64", "128"} and all(v["wall_s"] >= 0 for v in log.values())
    assert json.loads((tmp_path / "sweep.json").read_text()) == log
    # both complete now: nothing runs again, unless forced (the runner would re-test)
    cr.sweep(cr.CONFIG, [64, 128], tmp_path)
    assert len(calls) == 2
    (tmp_path / "nside128" / "results.json").unlink()
    (tmp_path / "nside128").rmdir()
    cr.sweep(cr.CONFIG, [64, 128], tmp_path)
    assert len(calls) == 3 and calls[2][3:] == calls[1][3:]
    md, png = tmp_path / "table.md", tmp_path / "fig.png"
    cr.report(tmp_path, [64, 128, 256], md, png)
    assert "| SVM on power spectra | 1 | 60.0 ± 0.0 | 60.0 ± 0.0 | +0.0 |" in md.read_text()
    assert png.stat().st_size > 10_000
