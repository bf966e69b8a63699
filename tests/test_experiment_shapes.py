"""The 3D-shapes experiment end to end, scaled down: both models learn on held-out perturbations of real
meshes, the table and pictures are written, a re-run re-tests instead of retraining, bad configs are
refused naming the key."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trimesh")
pytest.importorskip("lightning")

from graphsphere.config import ConfigError  # noqa: E402
from graphsphere.experiments.shapes import (  # noqa: E402
    ExperimentConfig,
    format_table,
    load_config,
    precision_recall_curve,
    run,
)

try:
    import torch_harmonics  # noqa: F401

    METHODS = ["deepsphere", "sht_cnn"]
except ImportError:  # the SHT baseline is optional: pip install --no-deps torch-harmonics==0.9.3
    METHODS = ["deepsphere"]

# Six real meshes of distinct shapes, each its own class (instance task): the test samples are other random
# rotations, translations and scalings of the training meshes. Trained on z rotations only and tested on
# SO(3) rotations (z/SO3), the harder protocol. nside 8 (768 pixels), a few hundred weights: a run trains in
# seconds.
MESHES = ["meshes/cow.off", "meshes/hand.off", "meshes/pinion.off", "meshes/knot.off", "meshes/elk.off",
          "meshes/helmet.off"]
SMALL = {
    "progress": False, "tta_copies": 2, "methods": METHODS,
    "data": {"task": "instance", "protocols": ["z/SO3"], "meshes": MESHES, "meshes_per_category": None,
             "samples_per_mesh": 10, "val_fraction": 0.2, "test_fraction": 0.3, "workers": 1},
    "deepsphere": {"nside": 8, "channels": [16, 32], "K": 3, "epochs": 8, "batch_size": 8, "lr": 0.01},
    "sht_cnn": {"channels": [16, 32], "anchors": 3, "epochs": 8, "batch_size": 8, "lr": 0.01},
}


# Where the Debian package cannot be had (no apt-get, no network; or GRAPHSPHERE_TEST_BUILT_MESHES=1), six small
# meshes built here stand in: distinct shapes, non-convex ones among them, so that the 6-channel maps tell them
# apart only through their geometry, as for the real meshes.
BUILT = {"box": ("box", {"extents": (1.0, 0.6, 0.3)}), "capsule": ("capsule", {"height": 1.0, "radius": 0.3}),
         "cone": ("cone", {"radius": 0.5, "height": 1.2}),
         "torus": ("torus", {"major_radius": 0.6, "minor_radius": 0.2}),
         "annulus": ("annulus", {"r_min": 0.3, "r_max": 0.6, "height": 0.4}),
         "cylinder": ("cylinder", {"radius": 0.25, "height": 1.4})}


def built_meshes(root: Path) -> dict:
    """Write the stand-in meshes and their category table (each mesh its own category) under ``root``; return
    the ``data`` settings and the picture's mesh that point the experiment at them."""
    import trimesh

    (root / "meshes").mkdir(parents=True)
    rows = ["file,category"]
    for name, (maker, kwargs) in BUILT.items():
        mesh = getattr(trimesh.creation, maker)(**kwargs)
        if name == "box":   # an L: two boxes, so that one shape is far from convex
            leg = trimesh.creation.box((0.3, 0.3, 0.9)).apply_translation((0.35, 0, 0.3))
            mesh = trimesh.util.concatenate([mesh, leg])
        mesh.export(root / "meshes" / f"{name}.off")
        rows.append(f"meshes/{name}.off,{name}")
    (root / "categories.csv").write_text("\n".join(rows) + "\n")
    meshes = [f"meshes/{name}.off" for name in BUILT]
    return {"data": {"root": str(root), "category_table": str(root / "categories.csv"), "meshes": meshes},
            "picture_mesh": meshes[0]}


@pytest.fixture(scope="module")
def mesh_source(tmp_path_factory):
    """The real meshes of the cgal-meshes data set when they can be fetched, else meshes built here."""
    from graphsphere.data import sources

    if os.environ.get("GRAPHSPHERE_TEST_BUILT_MESHES") != "1" and shutil.which("apt-get") is not None:
        try:
            sources.fetch("cgal-meshes")
            return {}
        except sources.DataError as e:
            warnings.warn(f"the shapes experiment runs on built meshes: {e}")
    return built_meshes(tmp_path_factory.mktemp("built_meshes"))


@pytest.fixture(scope="module")
def small_run(mesh_source, tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    settings = {**SMALL, "data": {**SMALL["data"], **mesh_source.get("data", {})}}
    if "picture_mesh" in mesh_source:
        settings["picture_mesh"] = mesh_source["picture_mesh"]
    cfg = load_config(settings, [f"output_dir={root / 'out'}", f"data.cache_dir={root / 'cache'}"])
    return cfg, run(cfg)


def test_models_learn_held_out_rotations(small_run):
    _, results = small_run
    sizes = results["sizes"]
    # 10 perturbations per mesh: seeds 0-4 train, 5-6 validate, 7-9 test
    assert (sizes["classes"], sizes["train"], sizes["val"], sizes["test"]) == (6, 30, 12, 18)
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == set(METHODS)
    # chance is 1/6. 18 test samples: an accuracy of 60% at chance has probability < 1e-4
    assert runs["deepsphere"]["accuracy"] >= 0.6, runs["deepsphere"]["accuracy"]
    assert runs["deepsphere"]["micro"]["mAP"] >= 0.5
    if "sht_cnn" in runs:
        assert runs["sht_cnn"]["accuracy"] >= 0.4, runs["sht_cnn"]["accuracy"]
    for r in runs.values():
        # the same model on the same test samples: the engine's test accuracy (best checkpoint) is the
        # accuracy without test-time augmentation
        assert r["test_acc_engine"] == pytest.approx(r["accuracy_no_tta"], abs=1e-6)
        assert r["accuracy"] == pytest.approx(np.mean(np.array(r["predicted"]) == np.array(r["labels"])))
        assert r["params"] > 0 and r["epochs"] == 8 and 0 <= r["best_epoch"] < 8
        assert r["train_seconds_per_epoch"] > 0 and all(r["inference_ms"][b] > 0 for b in ("1", "32"))
        assert r["pixels"] == 768


def test_table_and_pictures_are_written(small_run):
    cfg, results = small_run
    out = Path(cfg.output_dir)
    table = (out / "results.md").read_text()
    assert table.strip() == format_table(results)
    assert json.loads((out / "results.json").read_text())["runs"][0]["accuracy"] == results["runs"][0]["accuracy"]
    r = results["runs"][0]
    assert (f"| z/SO3 | DeepSphere (graph, HEALPix) | 768 | {r['params']:,} | {100 * r['accuracy']:.1f} |"
            in table)
    assert "Esteves et al. 2018" in table and "| 0.686 |" in table   # the paper's table beside ours
    import matplotlib.image as mpimg

    for name in ("mesh_maps.png", "precision_recall.png", "confusion.png"):
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300, name


def test_same_command_retests_and_changed_settings_retrain(small_run):
    cfg, results = small_run
    out2 = cfg.output_dir + "_again"
    shutil.copytree(Path(cfg.output_dir) / "runs", Path(out2) / "runs")
    same = cfg.model_copy(update={"methods": ["deepsphere"], "output_dir": out2, "timing": False})
    (folder,) = (Path(out2) / "runs").glob("deepsphere_z-SO3_*")
    epoch_times = (folder / "epoch_times.json").read_text()
    again = run(same)                       # finished: tested again from its checkpoint, not retrained
    assert (folder / "epoch_times.json").read_text() == epoch_times
    first = next(r for r in results["runs"] if r["method"] == "deepsphere")
    assert again["runs"][0]["accuracy"] == first["accuracy"]
    assert len(list((Path(out2) / "runs").glob("deepsphere_z-SO3_*"))) == 1
    changed = same.model_copy(update={"deepsphere": cfg.deepsphere.model_copy(update={"lr": 0.003, "epochs": 1})})
    run(changed)                            # never resumes the other model: a folder of its own
    assert len(list((Path(out2) / "runs").glob("deepsphere_z-SO3_*"))) == 2


def test_precision_recall_by_hand():
    # queries 0, 1, 3 are predicted class 0 and retrieve [0, 3, 1] (by p0); query 2 retrieves [2].
    # Interpolated precision at recall 0 / 0.5 / 1: queries 0 and 1 (class 0): 1, 1, 2/3; query 3 (class 1,
    # found at rank 2 of 3): 1/2, 1/2, 0; query 2: 1, 1, 0.
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    curve = precision_recall_curve(probs, np.array([0, 0, 1, 1]), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(curve, [3.5 / 4, 3.5 / 4, (4 / 3) / 4])


def test_defaults_are_the_quick_yaml():
    assert load_config("experiments/shapes_quick.yaml") == ExperimentConfig()


def test_table_yaml_is_the_papers_model():
    cfg = load_config("experiments/shapes_table.yaml")
    assert (cfg.deepsphere.nside, cfg.deepsphere.channels, cfg.deepsphere.K) == (32, [16, 32, 64, 128, 256], 4)
    assert cfg.sht_cnn.grid(32).npix == 12 * 32 ** 2 and cfg.sht_cnn.channels == cfg.deepsphere.channels


@pytest.mark.parametrize("source, overrides, field", [
    ({"data": {"sample_per_mesh": 4}}, [], "data.sample_per_mesh: unknown field"),
    ({}, ["deepsphere.epoch=3"], "deepsphere.epoch: unknown field"),
    ({}, ["methods=[deepsphere, sht]"], "methods.1"),
    ({}, ["data.protocols=[SO3]"], "data.protocols.0"),
    ({}, ["data.task=instances"], "data.task"),
    ({}, ["deepsphere.nside=24"], "deepsphere.nside = 24"),
    ({}, ["deepsphere.nside=4"], "deepsphere.channels: 4 poolings"),
    ({}, ["sht_cnn.nlat=20"], "sht_cnn.channels: 4 poolings"),
    ({}, ["data.val_fraction=0.5", "data.test_fraction=0.5"], "data.test_fraction"),
])
def test_config_errors_name_the_key(source, overrides, field):
    with pytest.raises(ConfigError) as e:
        load_config(source, overrides)
    assert field in str(e.value)


def test_run_refuses_a_typo_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'tta_copies'"):
        run({"output_dir": str(tmp_path / "out"), "tta_copy": 3})
    assert not (tmp_path / "out").exists()


def test_command_reads_a_config_and_overrides(monkeypatch, tmp_path):
    import argparse

    import graphsphere.experiments.shapes as experiment
    from graphsphere.commands import experiment as command

    seen = []
    monkeypatch.setattr(experiment, "run", lambda cfg: seen.append(cfg))
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    for argv in (["shapes", "data.task=instance", "tta_copies=1"],
                 ["shapes", "experiments/shapes_quick.yaml", "data.task=instance", "tta_copies=1"]):
        args = parser.parse_args(argv)
        assert args.func(args) == 0
    assert len(seen) == 2 and seen[0] == seen[1]
    assert (seen[0].data.task, seen[0].tta_copies) == ("instance", 1)
    with pytest.raises(ConfigError, match="tta_copy"):
        args = parser.parse_args(["shapes", "tta_copy=1"])
        args.func(args)
