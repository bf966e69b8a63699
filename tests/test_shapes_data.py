"""graphsphere.data.shapes: the collection of meshes, its cache, the splits of the two tasks and protocols,
and the ``shapes`` dataset of the training engine."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("pydantic")

import graphsphere as gs  # noqa: E402
from graphsphere.config import ConfigError  # noqa: E402
from graphsphere.data import shapes  # noqa: E402
from graphsphere.data.meshes import CHANNELS, MeshReadError, load_mesh, project  # noqa: E402
from graphsphere.data.shapes import ShapeCollection, build_shapes, load_categories, plan_splits  # noqa: E402

HEALPIX4 = gs.sampling.HEALPix(nside=4)
HEALPIX8 = gs.sampling.HEALPix(nside=8)


def asymmetric_mesh():
    """A non-convex, asymmetric shape (a slab with a tilted rod), so that how rotations act shows up."""
    slab = trimesh.creation.box(extents=(1.0, 0.5, 0.3))
    rod = trimesh.creation.cylinder(radius=0.12, height=1.4, sections=24)
    rod.apply_transform(trimesh.transformations.rotation_matrix(0.7, [1, 1, 0]))
    rod.apply_translation((0.3, 0.1, 0.05))
    return trimesh.util.concatenate([slab, rod])


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "meshes"
    root.mkdir()
    trimesh.creation.box(extents=(1, 2, 3)).export(root / "box.off")
    asymmetric_mesh().export(root / "odd.ply")
    trimesh.creation.icosphere(2).export(root / "ball.stl")
    return root


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """4 categories of 5 small meshes each, and their category table (a CSV, as shape_categories.csv)."""
    root = tmp_path_factory.mktemp("zoo")
    rows = ["# a comment line, as in the shipped table", "file,category"]
    for k in range(5):
        shapes_k = {"box": trimesh.creation.box(extents=(1, 1 + 0.3 * k, 2)),
                    "rod": trimesh.creation.cylinder(radius=0.2 + 0.05 * k, height=2, sections=12),
                    "cone": trimesh.creation.cone(radius=0.5 + 0.1 * k, height=1.5, sections=12),
                    "odd": asymmetric_mesh().apply_scale(1 + 0.1 * k)}
        for category, mesh in shapes_k.items():
            name = f"{category}{k}.off"
            mesh.export(root / name)
            rows.append(f"{name},{category}")
    (root / "categories.csv").write_text("\n".join(rows) + "\n")
    return root


# --- the collection and its cache ----------------------------------------------------------------------

def test_collection_projects_caches_and_reuses(folder, tmp_path, monkeypatch):
    categories = {"box.off": "primitive", "odd.ply": "mechanical", "ball.stl": "primitive"}
    kwargs = dict(root=folder, categories=categories, max_translation=0.1, cache_dir=tmp_path / "cache")
    collection = ShapeCollection(HEALPIX8, **kwargs)
    assert [e.name for e in collection.entries] == ["ball.stl", "box.off", "odd.ply"]
    assert collection.category_names == ["mechanical", "primitive"] and collection.labels.tolist() == [1, 1, 0]
    pairs = [(0, 0), (2, 0), (2, 1), (1, 3)]
    x = collection.samples(pairs, progress=False)
    assert x.shape == (4, HEALPIX8.npix, len(CHANNELS)) and x.dtype == np.float32
    # each sample is the mesh under its own perturbation
    p = collection.perturbation(2, 1)
    np.testing.assert_allclose(x[2], project(load_mesh(folder / "odd.ply"), HEALPIX8, *p), atol=1e-6)
    assert np.abs(x[1] - x[2]).max() > 0.05  # seeds 0 and 1 differ
    cached = sorted((tmp_path / "cache" / "shapes").iterdir())
    assert len(cached) == 4 and all(c.suffix == ".npy" for c in cached)  # no temporary file left
    # a re-run, even in a new collection object, reads the cache and projects nothing
    monkeypatch.setattr(shapes, "_project_task", lambda *a: pytest.fail("projected although cached"))
    again = ShapeCollection(HEALPIX8, **kwargs).samples(pairs[::-1], progress=False)
    np.testing.assert_array_equal(again, x[::-1])
    # other settings, another sampling, another seed or another copy are other keys
    paths = {collection.cache_path(2, 1),
             ShapeCollection(HEALPIX8, **dict(kwargs, max_translation=0.2)).cache_path(2, 1),
             ShapeCollection(HEALPIX4, **kwargs).cache_path(2, 1),
             ShapeCollection(HEALPIX8, **dict(kwargs, protocol="z")).cache_path(2, 1),
             collection.cache_path(2, 2), collection.cache_path(2, 1, 1)}
    assert len(paths) == 6


def test_collection_cache_key_follows_the_file(folder, tmp_path):
    categories = {"box.off": "primitive"}
    before = ShapeCollection(HEALPIX8, folder, categories=categories, cache_dir=tmp_path).cache_path(0, 0)
    trimesh.creation.box(extents=(1, 2, 3.5)).export(folder / "box.off")
    after = ShapeCollection(HEALPIX8, folder, categories=categories, cache_dir=tmp_path).cache_path(0, 0)
    assert before != after


def test_collection_workers_give_the_same_maps(folder):
    collection = ShapeCollection(HEALPIX8, folder, categories={"box.off": "a", "odd.ply": "b", "ball.stl": "a"},
                                 cache_dir=False, max_translation=0.1)
    pairs = [(i, j) for i in range(3) for j in range(2)]
    np.testing.assert_array_equal(collection.samples(pairs, workers=2, progress=False),
                                  collection.samples(pairs, workers=1, progress=False))



@pytest.mark.parametrize("padding", [0, 200_000])
def test_collection_workers_report_a_broken_file(folder, padding):
    """A file that cannot be read stops the parallel projection with the error naming it, whether this process
    reads it (a small file: taken from the back of the queue while the workers start) or a worker does (a large
    one: handed to the pool first)."""
    (folder / "broken.off").write_text("OFF\n3 1 0\nthis is not a number\n" + "#" * padding + "\n")
    categories = {"box.off": "a", "odd.ply": "b", "ball.stl": "a", "broken.off": "b"}
    collection = ShapeCollection(HEALPIX4, folder, categories=categories, cache_dir=False)
    with pytest.raises(MeshReadError, match="broken.off"):
        collection.samples([(i, 0) for i in range(4)], workers=2, progress=False)

def test_collection_selection_errors(folder):
    with pytest.raises(FileNotFoundError, match="nothere.off"):
        ShapeCollection(HEALPIX8, folder, categories={"nothere.off": "x"})
    with pytest.raises(KeyError, match="box.off"):
        ShapeCollection(HEALPIX8, folder, categories={"box.off": "point set"}, names=["box.off"])


def test_copies_keep_the_rotation_and_move_the_shape(folder):
    """Test-time augmentation's copies: the rotation of copy 0, a translation and scale of their own."""
    collection = ShapeCollection(HEALPIX8, folder, categories={"odd.ply": "a"}, cache_dir=False,
                                 max_translation=0.1, scale_range=(0.8, 1.2))
    first, second = collection.perturbation(0, 3), collection.perturbation(0, 3, copy=1)
    np.testing.assert_array_equal(first.rotation, second.rotation)
    assert np.linalg.norm(first.translation - second.translation) > 1e-3 and first.scale != second.scale
    assert np.linalg.norm(second.translation) <= 0.1 and 0.8 <= second.scale <= 1.2
    # copy 0 is the sample itself; the copy is the mesh moved by its own perturbation
    np.testing.assert_array_equal(collection.sample(0, 3, 0), collection.sample(0, 3))
    np.testing.assert_allclose(collection.sample(0, 3, 1), project(load_mesh(folder / "odd.ply"), HEALPIX8,
                                                                   *second), atol=1e-6)


def test_rotated_copies_turn_the_shape_and_are_cached_apart(folder, tmp_path):
    """Copies with ``rotate``: a rotation of their own as well (averaging over rotations at test time)."""
    collection = ShapeCollection(HEALPIX8, folder, categories={"odd.ply": "a"}, cache_dir=tmp_path,
                                 max_translation=0.1, scale_range=(0.8, 1.2))
    first, moved = collection.perturbation(0, 3), collection.perturbation(0, 3, copy=1)
    turned = collection.perturbation(0, 3, copy=1, rotate=True)
    assert np.abs(turned.rotation - first.rotation).max() > 0.1            # another rotation ...
    np.testing.assert_allclose(turned.rotation @ turned.rotation.T, np.eye(3), atol=1e-12)
    assert (turned.scale, tuple(turned.translation)) == (moved.scale, tuple(moved.translation))  # same move
    same = collection.perturbation(0, 3, copy=0, rotate=True)             # copy 0 is the sample itself
    np.testing.assert_array_equal(same.rotation, first.rotation)
    assert collection.cache_path(0, 3, 1, True) != collection.cache_path(0, 3, 1)
    assert collection.cache_path(0, 3, 0, True) == collection.cache_path(0, 3, 0)
    maps = collection.samples([(0, 3, 1), (0, 3, 1, True)], progress=False)
    np.testing.assert_allclose(maps[1], project(load_mesh(folder / "odd.ply"), HEALPIX8, *turned), atol=1e-6)
    assert np.abs(maps[0] - maps[1]).max() > 0.1
    np.testing.assert_array_equal(collection.samples([(0, 3, 1, True)], progress=False)[0], maps[1])  # cached


def test_rotated_test_copies_of_z_protocol_turn_in_so3(zoo):
    """Under z/SO3 the test copies are rotated as the test samples are: anywhere, not about z only."""
    plan = plan_splits(HEALPIX4, task="instance", protocol="z/SO3", samples_per_mesh=10,
                       category_table=zoo / "categories.csv", root=zoo, cache_dir=False)
    test = plan.collections["test"]
    tilts = [abs(test.perturbation(i, j, copy=1, rotate=True).rotation[2, 2]) for i, j in plan.pairs["train"]]
    assert min(tilts) < 0.5


def test_perturbations_do_not_depend_on_the_other_samples(folder):
    a = ShapeCollection(HEALPIX4, folder, categories={"odd.ply": "a"}, cache_dir=False, max_translation=0.1)
    b = ShapeCollection(HEALPIX4, folder, categories={"odd.ply": "a", "box.off": "b"}, cache_dir=False,
                        max_translation=0.1)
    np.testing.assert_array_equal(a.perturbation(0, 5).rotation, b.perturbation(1, 5).rotation)


def test_categories_table():
    categories = load_categories()
    counts = {c: sum(v == c for v in categories.values()) for c in set(categories.values())}
    # the counts written in the table's header
    assert counts == {"animal": 18, "human": 9, "mechanical": 19, "primitive": 65, "surface": 24, "other": 7,
                      "point set": 12}


def test_categories_table_needs_its_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,kind\nbox.off,primitive\n")
    with pytest.raises(ValueError, match="'file' and 'category'"):
        load_categories(path)


# --- splits ----------------------------------------------------------------------------------------------

def test_category_split_is_by_object_and_stratified(zoo):
    plan = plan_splits(HEALPIX4, task="category", samples_per_mesh=3, category_table=zoo / "categories.csv",
                       root=zoo, val_fraction=0.2, test_fraction=0.2, cache_dir=False)
    train, val, test = (plan.objects(s) for s in ("train", "val", "test"))
    assert not (train & test) and not (train & val) and not (val & test)
    assert len(train | val | test) == 20
    # 5 objects per category: 3 train, 1 validation, 1 test, each with all its 3 perturbations
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        assert np.bincount(plan.labels(split)).tolist() == [3 * n] * 4, split
    assert plan.class_names == ["box", "cone", "odd", "rod"]
    names = [plan.collections["test"].entries[i].name for i, _ in plan.pairs["test"]]
    assert [plan.class_names[y] for y in plan.labels("test")] == [re.sub(r"\d+\.off$", "", n) for n in names]
    # another seed, another split
    other = plan_splits(HEALPIX4, task="category", samples_per_mesh=3, category_table=zoo / "categories.csv",
                        root=zoo, val_fraction=0.2, test_fraction=0.2, cache_dir=False, seed=1)
    assert other.objects("test") != test


def test_instance_split_is_by_seed(zoo):
    plan = plan_splits(HEALPIX4, task="instance", samples_per_mesh=10, category_table=zoo / "categories.csv",
                       root=zoo, val_fraction=0.2, test_fraction=0.3, cache_dir=False)
    seeds = {s: {j for _, j in plan.pairs[s]} for s in ("train", "val", "test")}
    assert seeds == {"train": set(range(5)), "val": {5, 6}, "test": {7, 8, 9}}
    for split in seeds:   # every mesh in every split, its own class
        assert plan.objects(split) == {e.name for e in plan.collections[split].entries}
        np.testing.assert_array_equal(plan.labels(split), [i for i, _ in plan.pairs[split]])
    assert len(plan.class_names) == 20


def test_split_counts_keep_a_training_object():
    assert shapes._counts(1, 0.2, 0.3) == (1, 0, 0)
    assert shapes._counts(2, 0.2, 0.3) == (1, 0, 1)
    assert shapes._counts(3, 0.15, 0.25) == (1, 1, 1)
    assert shapes._counts(12, 0.15, 0.25) == (7, 2, 3)


def test_selection_scales_the_task_down(zoo):
    kw = dict(category_table=zoo / "categories.csv", root=zoo, cache_dir=False, samples_per_mesh=2)
    plan = plan_splits(HEALPIX4, categories=["box", "rod"], meshes_per_category=3, **kw)
    kept = [e.name for e in plan.collections["train"].entries]
    assert len(kept) == 6 and {n[:3] for n in kept} == {"box", "rod"}
    assert [e.name for e in plan_splits(HEALPIX4, meshes=["cone1.off", "odd2.off"], **kw).collections[
        "train"].entries] == ["cone1.off", "odd2.off"]
    with pytest.raises(ValueError, match="unknown categories"):
        plan_splits(HEALPIX4, categories=["boxes"], **kw)
    with pytest.raises(ValueError, match="not in the category table"):
        plan_splits(HEALPIX4, meshes=["cone9.off"], **kw)


def test_protocol_z_rotates_training_about_z_only(zoo):
    plan = plan_splits(HEALPIX4, task="instance", protocol="z/SO3", samples_per_mesh=10,
                       category_table=zoo / "categories.csv", root=zoo, cache_dir=False)
    train, test = plan.collections["train"], plan.collections["test"]
    assert plan.collections["val"] is test
    z = np.array([0.0, 0.0, 1.0])
    for i, j in plan.pairs["train"]:
        r = train.perturbation(i, j).rotation
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        np.testing.assert_allclose(r @ z, z, atol=1e-12)     # the z axis is fixed: a rotation about z
        np.testing.assert_allclose(r[2], z, atol=1e-12)
    # the test rotations are Haar-distributed on SO(3): E[R] = 0, and the z axis goes anywhere
    rotations = np.array([test.perturbation(i, j).rotation for i, j in plan.pairs["test"] + plan.pairs["train"]])
    assert np.abs(rotations.mean(axis=0)).max() < 0.15            # 200 rotations: std of a mean ~0.04
    assert (np.abs(rotations[:, 2, 2]) < 0.5).mean() > 0.35        # uniform cos(tilt): P(|cos| < 0.5) = 0.5
    # under SO3/SO3, training is rotated in SO(3) too
    so3 = plan_splits(HEALPIX4, task="instance", protocol="SO3/SO3", samples_per_mesh=10,
                      category_table=zoo / "categories.csv", root=zoo, cache_dir=False)
    assert so3.collections["train"] is so3.collections["test"]
    assert min(abs(so3.collections["train"].perturbation(i, j).rotation[2, 2]) for i, j in so3.pairs["train"]) < 0.5


# --- the dataset of the engine ---------------------------------------------------------------------------

def test_builder_projects_the_planned_samples(zoo, tmp_path):
    params = {"task": "category", "protocol": "z/SO3", "samples_per_mesh": 2, "categories": ["box", "odd"],
              "root": str(zoo), "category_table": str(zoo / "categories.csv"), "cache_dir": str(tmp_path),
              "progress": False}
    splits = build_shapes(HEALPIX4, "classification", 0, **params)
    assert splits.in_channels == 6 and splits.n_out == 2 and splits.class_names == ["box", "odd"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 10 * 2
    plan = plan_splits(HEALPIX4, task="category", protocol="z/SO3", samples_per_mesh=2, categories=["box", "odd"],
                       root=zoo, category_table=zoo / "categories.csv", cache_dir=False)
    for split in ("train", "test"):   # the z-rotated training samples, the SO(3)-rotated test samples
        k = len(plan.pairs[split]) - 1
        i, j = plan.pairs[split][k]
        collection = plan.collections[split]
        x, y = getattr(splits, split)[k]
        expected = project(load_mesh(collection.entries[i].path), HEALPIX4, *collection.perturbation(i, j))
        np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)
        assert int(y) == plan.labels(split)[k]


def test_engine_config_validates_the_shapes_parameters():
    from graphsphere.train.config import load_train_config

    base = {"task": "classification", "sampling": {"type": "HEALPix", "nside": 4}}
    cfg = load_train_config({**base, "data": {"name": "shapes", "task": "instance", "protocol": "z/SO3"}})
    assert cfg.data.params["protocol"] == "z/SO3" and cfg.data.params["samples_per_mesh"] == 8
    with pytest.raises(ConfigError, match="data.sample_per_mesh: unknown field.*did you mean 'samples_per_mesh'"):
        load_train_config({**base, "data": {"name": "shapes", "sample_per_mesh": 3}})
    with pytest.raises(ConfigError, match="data.protocol"):
        load_train_config({**base, "data": {"name": "shapes", "protocol": "SO3"}})
    with pytest.raises(ConfigError, match="data.test_fraction"):
        load_train_config({**base, "data": {"name": "shapes", "val_fraction": 0.5, "test_fraction": 0.5}})
    with pytest.raises(ConfigError, match="sampling"):
        build_shapes(None, "classification", 0)


# --- the real meshes of libcgal-demo ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cgal_meshes():
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed: the cgal-meshes data set cannot be fetched here")
    from graphsphere.data import sources

    return sources.fetch("cgal-meshes")


def test_real_category_split(cgal_meshes):
    plan = plan_splits(HEALPIX4, task="category", samples_per_mesh=1, root=cgal_meshes, cache_dir=False)
    train, val, test = (plan.objects(s) for s in ("train", "val", "test"))
    assert not (train & test) and not (val & test) and not (train & val)
    assert len(train | val | test) == 142     # every mesh that has faces
    assert "meshes/b9.ply" not in train | val | test   # a point set
    assert plan.class_names == ["animal", "human", "mechanical", "other", "primitive", "surface"]
    assert set(plan.labels("test").tolist()) == set(range(6))   # every category is tested


def test_real_collection(cgal_meshes, tmp_path):
    collection = ShapeCollection(HEALPIX8, cgal_meshes, names=["meshes/bunny00.off", "meshes/fandisk.off"],
                                 cache_dir=tmp_path, max_translation=0.05)
    assert [e.category for e in collection.entries] == ["animal", "mechanical"]
    x = collection.samples([(0, 0), (1, 0)], progress=False)
    assert (x[:, :, 0] > 0).mean() > 0.95 and x[:, :, 0].max() < 1.1
