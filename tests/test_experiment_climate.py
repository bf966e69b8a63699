"""The climate experiment: the data sets' year splits (no test-year value reaches a threshold, a
statistic or a training input), the label check, the scores against hand computations and the
engine, a scaled-down run that learns (the graph U-Net beats the per-pixel network; the forecast
beats persistence), and missing or damaged data files surfacing as clear errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightning")
pytest.importorskip("sklearn")

import graphsphere as gs
from graphsphere.config import ConfigError
from graphsphere.data import climate_datasets as cd
from graphsphere.data import climate_tasks as ct
from graphsphere.data.regrid import LatLonGrid
from graphsphere.experiments.climate import (
    ExperimentConfig,
    forecast_scores,
    format_tables,
    load_config,
    run,
    segmentation_scores,
)
from graphsphere.experiments.climate.baselines import PixelNet


@pytest.fixture(scope="session")
def ferret_dir() -> Path:
    """The ``ferret`` data set: $GRAPHSPHERE_FERRET_DIR, else fetched and verified; skipped offline."""
    if os.environ.get("GRAPHSPHERE_FERRET_DIR"):
        return Path(os.environ["GRAPHSPHERE_FERRET_DIR"])
    from graphsphere.data import sources

    try:
        return sources.fetch("ferret")
    except sources.DataError as err:
        pytest.skip(f"ferret data set unavailable here: {err}")


def made_up_fields(sampling=None, years=(1982, 1987), seed=0) -> cd.ClimateFields:
    """Winds with a seasonal cycle and noise on a 10-degree grid, regridded onto ``sampling``."""
    grid = LatLonGrid.regular(10.0)
    times = np.arange(f"{years[0]}-01", f"{years[1] + 1}-01", dtype="datetime64[M]")
    rng = np.random.default_rng(seed)
    season = np.cos(2 * np.pi * np.arange(times.size) / 12)[:, None, None]
    lat = np.deg2rad(grid.lat)[None, :, None]
    u = 5 * np.cos(lat) + 2 * season + rng.normal(0, 2, (times.size,) + grid.shape)
    v = rng.normal(0, 2, u.shape)
    sampling = sampling or gs.sampling.HEALPix(nside=4)
    return cd.ClimateFields.from_arrays(sampling, grid, u, v, times, land=np.zeros(sampling.npix))


def with_test_years_changed(fields: cd.ClimateFields, years) -> cd.ClimateFields:
    """The same fields with every value of ``years`` replaced (source grid and target alike)."""
    hit = np.isin(fields.times.astype("datetime64[Y]").astype(int) + 1970, years)
    arrays = {}
    for name in ("u", "v", "source_u", "source_v"):
        a = np.array(getattr(fields, name))
        a[hit] = 50.0 + 10 * a[hit]
        arrays[name] = a
    return cd.ClimateFields(fields.sampling, arrays["u"], arrays["v"], fields.times, fields.land,
                            arrays["source_u"], arrays["source_v"], fields.source_grid, fields.regrid)


# -- the data sets ----------------------------------------------------------------------------------

def test_segmentation_split_never_sees_the_test_years():
    fields = made_up_fields()
    task = cd.segmentation_task(fields, test_years=[1987], val_years=[1986])
    years = {k: np.unique(t.astype("datetime64[Y]").astype(int) + 1970).tolist() for k, t in task.times.items()}
    assert years == {"train": [1982, 1983, 1984, 1985], "val": [1986], "test": [1987]}
    assert (len(task.x["train"]), len(task.x["val"]), len(task.x["test"])) == (48, 12, 12)
    changed = cd.segmentation_task(with_test_years_changed(fields, [1987]), test_years=[1987], val_years=[1986])
    # thresholds, training and validation data: identical; the test months: different inputs and labels
    np.testing.assert_array_equal(changed.thresholds, task.thresholds)
    for split in ("train", "val"):
        np.testing.assert_array_equal(changed.x[split], task.x[split])
        np.testing.assert_array_equal(changed.y[split], task.y[split])
    assert not np.array_equal(changed.x["test"], task.x["test"])
    assert (changed.y["test"] == 2).mean() > 0.9 > (task.y["test"] == 2).mean()   # 10x winds: all extreme
    # the channels are what they say: speed of the regridded components, the land fraction
    x = task.x["train"]
    np.testing.assert_allclose(x[..., 2], np.hypot(x[..., 0], x[..., 1]), rtol=1e-5)
    assert task.channels == ("u", "v", "speed", "land") and (x[..., 3] == 0).all()


def test_validation_years_are_labelled_with_training_thresholds():
    fields = made_up_fields()
    task = cd.segmentation_task(fields, test_years=[1987], val_years=[1986])
    train = np.isin(fields.times.astype("datetime64[Y]").astype(int) + 1970, [1982, 1983, 1984, 1985])
    _, thr = ct.extreme_wind_labels(fields.u[train], fields.v[train], fields.times[train],
                                    [1982, 1983, 1984, 1985])
    np.testing.assert_array_equal(task.thresholds, thr)
    val = fields.times.astype("datetime64[Y]").astype(int) + 1970 == 1986
    expected = ct.wind_labels(ct.wind_speed(fields.u[val], fields.v[val]), fields.times[val], thr)
    np.testing.assert_array_equal(task.y["val"], expected)


def test_forecast_split_never_sees_the_test_years():
    fields = made_up_fields()
    task = cd.forecast_task(fields, test_years=[1987], val_years=[1986], n_input=2)
    changed = cd.forecast_task(with_test_years_changed(fields, [1987]), test_years=[1987], val_years=[1986],
                               n_input=2)
    np.testing.assert_array_equal(changed.climatology, task.climatology)
    for split in ("train", "val"):
        np.testing.assert_array_equal(changed.x[split], task.x[split])
        np.testing.assert_array_equal(changed.y[split], task.y[split])
    assert not np.array_equal(changed.y["test"], task.y["test"])
    # training samples: targets and inputs from 1982-1985 only (the first 2 months have no history)
    assert str(task.times["train"][0]) == "1982-03" and str(task.times["train"][-1]) == "1985-12"
    assert str(task.times["test"][0]) == "1987-01" and len(task.times["val"]) == 12
    # the climatology is the training years' monthly mean; anomalies + offset give back the winds
    train = (fields.times.astype("datetime64[Y]").astype(int) + 1970) <= 1985
    jan = train & (fields.times.astype(int) % 12 == 0)
    np.testing.assert_allclose(task.climatology[0, :, 0], fields.u[jan].mean(0), rtol=1e-5)
    i = int(np.flatnonzero(fields.times == task.times["test"][5])[0])
    np.testing.assert_allclose(task.values("test", task.y["test"])[5, :, 1], fields.v[i], atol=1e-5)
    np.testing.assert_array_equal(task.persistence["test"][5, :, 0], fields.u[i - 1])


def test_label_check_is_exact_on_the_source_grid_and_not_on_a_coarser_sampling():
    """When the sampling is the source grid itself, regridding is the identity and both label rules
    agree everywhere; on a coarser sampling they do not (the regridding's error on the labels)."""
    same = gs.sampling.Equiangular(18, 36)
    grid = LatLonGrid.from_sampling(same)
    times = np.arange("1982-01", "1986-01", dtype="datetime64[M]")
    u = np.random.default_rng(3).gamma(3.0, 2.0, (times.size,) + grid.shape)
    exact = cd.ClimateFields.from_arrays(same, grid, u, 0 * u, times, land=np.zeros(same.npix))
    check = cd.segmentation_task(exact, test_years=[1985], val_years=[]).label_check["test"]
    assert check["agreement"] == 1.0 and check["iou"] == [1.0, 1.0, 1.0]
    coarse = cd.ClimateFields.from_arrays(gs.sampling.HEALPix(nside=4), grid, u, 0 * u, times, land=np.zeros(192))
    check = cd.segmentation_task(coarse, test_years=[1985], val_years=[]).label_check["test"]
    assert check["agreement"] < 0.97 and min(check["iou"][1:]) < 0.7


def test_split_and_input_errors():
    fields = made_up_fields()
    with pytest.raises(ValueError, match="both test and validation"):
        cd.segmentation_task(fields, test_years=[1987], val_years=[1987])
    with pytest.raises(ValueError, match=r"test years \[1999\] not in the data"):
        cd.forecast_task(fields, test_years=[1999])
    with pytest.raises(ValueError, match="inputs must be distinct names"):
        cd.segmentation_task(fields, test_years=[1987], inputs=["u", "pressure"])


def test_builders_through_the_registry(ferret_dir):
    from graphsphere.data.registry import build_splits, validate_params

    s = gs.sampling.HEALPix(nside=8)
    params = validate_params("climate_segmentation", {"path": str(ferret_dir), "inputs": ["u", "v", "month"]})
    splits = build_splits("climate_segmentation", params.model_dump(), s, "segmentation", 0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (96, 12, 24)
    assert splits.in_channels == 4 and splits.n_out == 3 and splits.class_names == list(ct.LABELS)
    x, y = splits.train[0]
    assert tuple(x.shape) == (768, 4) and y.dtype.is_floating_point is False and int(y.min()) >= 0
    assert splits.info["channels"] == ("u", "v", "cos(month)", "sin(month)")
    params = validate_params("climate_forecast", {"path": str(ferret_dir), "n_input": 2})
    splits = build_splits("climate_forecast", params.model_dump(), s, "regression", 0)
    assert splits.in_channels == 5 and splits.n_out == 2 and tuple(splits.test[0][1].shape) == (768, 2)
    with pytest.raises(ConfigError, match="task: segmentation"):
        build_splits("climate_segmentation", {**params.model_dump(exclude={"n_input", "anomalies"}),
                                              "inputs": ["u"], "labels": "target", "quantiles": [90, 99],
                                              "month_window": 1}, s, "regression", 0)
    with pytest.raises(ConfigError, match="add a sampling section"):
        build_splits("climate_forecast", params.model_dump(), None, "regression", 0)
    with pytest.raises(ConfigError, match="did you mean 'n_input'"):
        validate_params("climate_forecast", {"n_inputs": 2})


# -- scores and the per-pixel network --------------------------------------------------------------

def test_segmentation_scores_by_hand():
    y = np.array([[0, 0, 0, 1, 1, 2, -1]])
    p = np.array([[[.8, .1, .1], [.6, .3, .1], [.3, .6, .1], [.2, .7, .1], [.5, .4, .1], [.1, .2, .7], [0, 0, 1]]])
    s = segmentation_scores(p, y)
    # predicted classes 0 0 1 1 0 2 (the -1 pixel is left out)
    assert s["recall"] == [2 / 3, 0.5, 1.0] and s["pixels"] == 6
    assert s["iou"] == [2 / 4, 1 / 3, 1.0]
    # class 1 ranked by p1: .7 (yes) .6 (no) .4 (yes) .3 .2 .1 -> AP = (1 * 1/2) + (2/3 * 1/2)
    assert s["ap"][1] == pytest.approx(0.5 + 1 / 3)
    assert s["map_events"] == pytest.approx((0.5 + 1 / 3 + 1.0) / 2)
    assert s["mean_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)


def test_forecast_scores_by_hand():
    area = np.array([1.0, 3.0])
    obs = np.array([[[1.0, 0.0], [2.0, 0.0]]])
    fc = np.array([[[0.0, 1.0], [2.0, 1.0]]])
    s = forecast_scores(fc, obs, np.zeros_like(obs), area)
    assert s["rmse"] == [pytest.approx(0.5, abs=1e-4), pytest.approx(1.0, abs=1e-4)]
    # u anomalies f = (0, 2), o = (1, 2), weights (1/4, 3/4): 3 / sqrt(3 * 3.25)
    assert s["acc"][0] == pytest.approx(3 / np.sqrt(3 * 3.25), abs=1e-4)
    assert np.isnan(forecast_scores(obs * 0, obs, obs * 0, area)["acc"][0])   # the climatology: no anomaly


def test_pixel_net_sees_no_neighbourhood():
    """A change at one pixel moves the per-pixel network's output there only; the U-Net's spreads."""
    import torch

    s = gs.sampling.HEALPix(nside=4)
    torch.manual_seed(0)
    x = torch.randn(1, s.npix, 4)
    bumped = x.clone()
    bumped[0, 17] += 5
    for model, alone in ((PixelNet(s, 4, 3, hidden=[8]), True),
                         (gs.models.SphericalUNet(s, 4, 3, channels=(4, 8), K=3, batchnorm=False), False)):
        moved = (model(bumped) - model(x)).abs().sum(-1)[0] > 1e-6
        assert moved[17] and (moved.sum() == 1) == alone


# -- the experiment end to end ----------------------------------------------------------------------

#: HEALPix nside 8 (768 pixels, ~7 degrees), small networks: about a minute of CPU.
SMALL = {"sampling": {"type": "HEALPix", "nside": 8}, "progress": False,
         "segmentation": {"methods": ["unet_weighted", "pixel_weighted"],
                          "unet": {"channels": [16, 32, 64], "K": 4, "epochs": 12, "lr": 3e-3},
                          "pixel": {"epochs": 12}},
         "forecast": {"methods": ["unet", "persistence", "climatology"],
                      "unet": {"channels": [16, 32], "K": 3, "epochs": 8, "lr": 3e-3}}}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, ferret_dir):
    out = tmp_path_factory.mktemp("climate") / "out"
    cfg = load_config(SMALL, [f"output_dir={out}", f"data.path={ferret_dir}"])
    return cfg, run(cfg)


def _mean(results, task, method, key):
    return np.mean([r[key] for r in results[task]["runs"] if r["method"] == method], axis=0)


def test_unet_beats_the_per_pixel_network_and_forecasts_beat_persistence(small_run):
    _, results = small_run
    seg = results["segmentation"]
    assert seg["sizes"] == {"train": 96, "val": 12, "test": 24}
    unet, pixel = (_mean(results, "segmentation", m, "map_events") for m in ("unet_weighted", "pixel_weighted"))
    freq = seg["class_frequencies"]["test"]
    assert pixel > 1.5 * np.mean(freq[1:])          # both learn: well above the no-skill AP (the frequencies)
    assert unet > pixel + 0.02, (unet, pixel)       # context helps
    rmse = {m: _mean(results, "forecast", m, "rmse") for m in ("unet", "persistence", "climatology")}
    assert (rmse["unet"] < rmse["persistence"]).all(), rmse
    assert (rmse["climatology"] < rmse["persistence"]).all()


def test_reported_scores_are_the_engines(small_run):
    """The table's recall comes from the best checkpoint's predictions; the engine's test metrics of
    the same checkpoint agree (recall exactly, AP within its 200-threshold binning)."""
    cfg, results = small_run
    for r in results["segmentation"]["runs"]:
        engine = json.loads((Path(cfg.output_dir) / "runs" / r["run"] / "metrics.json").read_text())["metrics"]["test"]
        for c in range(3):
            assert r["recall"][c] == pytest.approx(engine[f"test_recall_{c}"], abs=1e-5)
            assert r["ap"][c] == pytest.approx(engine[f"test_ap_{c}"], abs=0.03)


def test_tables_pictures_and_rerun(small_run, capsys):
    cfg, results = small_run
    out = Path(cfg.output_dir)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    table = (out / "results.md").read_text()
    assert table.strip() == format_tables(results).strip()
    for words in ("U-Net, weighted loss", "per-pixel net, weighted loss", "persistence (last month)",
                  "Regridding's own error on the labels", "HEALPix (nside 8, 768 pixels)"):
        assert words in table
    for name in ("segmentation_maps.png", "pr_curves.png", "forecast_maps.png"):
        assert (out / name).stat().st_size > 20_000, name
    capsys.readouterr()
    again = run(cfg.model_copy(update={"tasks": ["segmentation"]}))       # finished runs: re-evaluated only
    assert all(r["reused"] for r in again["segmentation"]["runs"])
    assert [r["map_events"] for r in again["segmentation"]["runs"]] == \
        [r["map_events"] for r in results["segmentation"]["runs"]]
    said = [line for line in capsys.readouterr().out.splitlines() if " done: " in line]
    assert [line.split(" done")[0] for line in said] == ["[climate] run 1/2", "[climate] run 2/2"]
    assert said[0].endswith(" left") and said[1].endswith(", all done"), said
    # merged, never shrunk: the forecast of the first invocation stays in the results and the tables
    assert again["forecast"] == json.loads(json.dumps(results["forecast"]))
    assert again["config"]["tasks"] == ["segmentation", "forecast"]
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(again))
    assert "**Forecasting**" in (out / "results.md").read_text()


def test_results_of_the_same_settings_merge_and_others_are_kept_aside(tmp_path, capsys):
    from graphsphere.experiments.climate.runner import merge_results

    def invocation(cfg, runs):
        seg = [{"method": m, "seed": s, "mean_accuracy": acc} for m, s, acc in runs]
        merged = merge_results(tmp_path, {"config": cfg.to_dict(), "segmentation": {"runs": seg, "sizes": {}}})
        (tmp_path / "results.json").write_text(json.dumps(merged))
        (tmp_path / "results.md").write_text("table\n")
        return merged

    cfg = load_config(None, ["tasks=[segmentation]", "segmentation.methods=[unet_weighted, pixel_weighted]"])
    invocation(cfg, [("unet_weighted", 0, 0.5), ("pixel_weighted", 0, 0.4)])
    fewer = cfg.model_copy(update={"seeds": [1], "segmentation": cfg.segmentation.model_copy(
        update={"methods": ["pixel_weighted"]})})
    merged = invocation(fewer, [("pixel_weighted", 1, 0.3)])
    assert [(r["method"], r["seed"]) for r in merged["segmentation"]["runs"]] == \
        [("unet_weighted", 0), ("pixel_weighted", 0), ("pixel_weighted", 1)]
    assert merged["config"]["seeds"] == [0, 1]
    assert merged["config"]["segmentation"]["methods"] == ["unet_weighted", "pixel_weighted"]
    again = invocation(fewer, [("pixel_weighted", 1, 0.35)])                  # measured again: replaced
    assert [r["mean_accuracy"] for r in again["segmentation"]["runs"]] == [0.5, 0.4, 0.35]
    capsys.readouterr()
    other = fewer.model_copy(update={"data": cfg.data.model_copy(update={"val_years": [1989]})})
    fresh = invocation(other, [("pixel_weighted", 1, 0.2)])
    assert len(fresh["segmentation"]["runs"]) == 1 and "kept as results_" in capsys.readouterr().out
    kept = json.loads((tmp_path / f"results_{again['settings']}.json").read_text())
    assert kept["segmentation"]["runs"] == again["segmentation"]["runs"]
    assert (tmp_path / f"results_{again['settings']}.md").exists()


# -- errors -----------------------------------------------------------------------------------------

def test_missing_and_damaged_files_surface_through_the_experiment(tmp_path, ferret_dir):
    import argparse

    from graphsphere.cli import user_errors
    from graphsphere.commands import experiment as command
    from graphsphere.data.climate import ClimateDataError

    def main(*words):
        parser = argparse.ArgumentParser()
        command.register(parser.add_subparsers())
        args = parser.parse_args(["climate", *words])
        return args.func(args)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="monthly_navy_winds.cdf does not exist.*graphsphere data fetch ferret"):
        main(f"data.path={empty}", f"output_dir={tmp_path / 'o1'}", "tasks=[forecast]")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("monthly_navy_winds.cdf", "etopo60.cdf"):
        shutil.copy(ferret_dir / name, broken / name)
    with open(broken / "monthly_navy_winds.cdf", "r+b") as f:
        f.truncate(4000)
    with pytest.raises(ClimateDataError, match="corrupt or truncated|damaged") as err:
        main(f"data.path={broken}", f"output_dir={tmp_path / 'o2'}", "progress=false")
    assert "monthly_navy_winds.cdf" in str(err.value) and "fetch it again" in str(err.value)
    assert isinstance(err.value, user_errors())                 # the command line prints one error line


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="segmentation.unet.channels.*can be pooled 2 time"):
        load_config({"sampling": {"type": "HEALPix", "nside": 4}, "segmentation": {"unet": {"channels": [4, 4, 4, 4]}}})
    with pytest.raises(ConfigError, match="data.val_years.*overlaps the test years"):
        load_config(None, ["data.val_years=[1991]"])
    with pytest.raises(ConfigError, match="forecast.methods"):
        load_config(None, ["forecast.methods=[unet, lstm]"])


def test_defaults_are_the_quick_yaml():
    assert load_config("experiments/climate_quick.yaml") == ExperimentConfig()
