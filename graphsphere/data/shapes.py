"""3D shapes as samples on the sphere: the collection of real meshes, its cache of projected maps, and the
``shapes`` dataset of the training engine.

A *sample* is one mesh under one random perturbation (rotation, translation, scaling; see
:func:`graphsphere.data.meshes.random_perturbation`), projected onto a sampling by ray casting
(:func:`graphsphere.data.meshes.project`: 6 channels). :class:`ShapeCollection` holds the meshes of a folder
(by default the ``cgal-meshes`` data set, fetched on first use) with their coarse categories
(``shape_categories.csv``), and projects, caches and returns samples, in parallel processes if asked.

The ``shapes`` dataset (:func:`build_shapes`, registered for configs' ``data.name``) turns a collection
into train/validation/test splits for two retrieval tasks:

* ``task: category``: the class is the mesh's category (animal, human, mechanical, ...). Splits are
  **by object**, stratified by category: the test objects are never seen in training.
* ``task: instance``: every mesh is its own class. Splits are **by perturbation seed**: every mesh is
  in every split, under other rotations.

and two protocols: ``"SO3/SO3"`` (every split rotated in SO(3)) and ``"z/SO3"`` (training samples
rotated about the z axis only; validation and test in SO(3)), which shows what rotation invariance buys.

Example
-------
>>> import trimesh, tempfile, pathlib, graphsphere as gs
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = trimesh.creation.box().export(root / "box.off")
>>> _ = trimesh.creation.icosphere(1).export(root / "ball.off")
>>> shapes = ShapeCollection(gs.sampling.HEALPix(nside=2), root, categories={"box.off": "box", "ball.off": "ball"},
...                          cache_dir=False, max_translation=0.1)
>>> x = shapes.samples([(0, 0), (1, 0), (1, 0, 1)], progress=False)  # (mesh, seed) or (mesh, seed, copy)
>>> x.shape, shapes.category_names, shapes.labels.tolist()
((3, 48, 6), ['ball', 'box'], [0, 1])
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import threading
import warnings
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from ..config import ConfigError
from ..files import atomic_write, sha256_file
from .meshes import (
    CHANNELS,
    PROJECTION_VERSION,
    MeshProjector,
    Perturbation,
    _directions,
    _resolve_engine,
    load_mesh,
    random_perturbation,
)
from .progress import Progress
from .registry import Params, Splits, register_dataset

__all__ = ["CATEGORIES_CSV", "load_categories", "default_cache_dir", "MeshEntry", "ShapeCollection",
           "SplitPlan", "plan_splits", "ShapesParams", "build_shapes", "PROTOCOLS", "TASKS"]

CATEGORIES_CSV = Path(__file__).with_name("shape_categories.csv")
PROTOCOLS = ("SO3/SO3", "z/SO3")
TASKS = ("category", "instance")


# --- the collection of real meshes -------------------------------------------------------------------

def load_categories(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The coarse category of each file of the ``cgal-meshes`` data set, from
    ``graphsphere/data/shape_categories.csv`` (or ``path``: a CSV with ``file`` and ``category`` columns;
    lines starting with ``#`` are comments).

    >>> categories = load_categories()
    >>> len(categories), categories["meshes/bunny00.off"], categories["points_3/kitten.off"]
    (154, 'animal', 'point set')
    """
    with open(path or CATEGORIES_CSV, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        if not {"file", "category"} <= set(rows.fieldnames or ()):
            raise ValueError(f"{path}: a category table needs the columns 'file' and 'category', "
                             f"got {rows.fieldnames}")
        return {row["file"]: row["category"] for row in rows}


def default_cache_dir() -> Path:
    """Where projected maps are cached: ``$GRAPHSPHERE_CACHE/projections``, else
    ``~/.cache/graphsphere/projections``.

    >>> default_cache_dir().name
    'projections'
    """
    root = os.environ.get("GRAPHSPHERE_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "graphsphere") / "projections"


@dataclass(frozen=True)
class MeshEntry:
    """One mesh of a :class:`ShapeCollection`."""

    name: str      # path relative to the collection's root, e.g. "meshes/bunny00.off"
    path: Path
    category: str
    sha256: str


def _pool_context():
    """Workers come from a fresh server process, never forked from this one: Embree's thread pool (and
    torch's) may already run here, and forking a process with live thread pools can hang the child.
    The server imports this module and trimesh once, so each worker starts in milliseconds."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "trimesh", "scipy.spatial"])
    return context


def _project_task(path: str, engine: str, directions: np.ndarray, perturbations: list[Perturbation]):
    """Worker: one mesh, several perturbations (the mesh's ray structure is built once)."""
    return MeshProjector(load_mesh(path), engine=engine).project_many(directions, perturbations)


def _project_in_parallel(tasks: list[tuple], order: list[int], workers: int, store) -> None:
    """``_project_task(*tasks[t])`` for each ``t`` of ``order`` (largest mesh first) in ``workers`` processes,
    ``store(t, maps)`` here. The first worker waits for the fork server to import this package (seconds, once per
    Python process): meanwhile a thread hands the pool tasks from the front and this process projects from the
    back. Once the pool has started, this process only collects the results."""
    remaining, lock, started = deque(order), threading.Lock(), threading.Event()
    futures: dict = {}
    failure: list[BaseException] = []

    def feed(pool):
        try:
            while True:
                with lock:
                    if not remaining:
                        return
                    t = remaining.popleft()
                futures[pool.submit(_project_task, *tasks[t])] = t
                started.set()
        except BaseException as error:  # noqa: BLE001  (raised again in this thread, below)
            failure.append(error)
        finally:
            started.set()

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
    feeder = threading.Thread(target=feed, args=(pool,), daemon=True)
    try:
        feeder.start()
        while not started.is_set():
            with lock:
                if not remaining:
                    break
                t = remaining.pop()
            store(t, _project_task(*tasks[t]))
        feeder.join()
        if failure:
            raise failure[0]
        for future in as_completed(futures):
            store(futures[future], future.result())
    finally:
        with lock:
            remaining.clear()
        feeder.join()
        pool.shutdown(wait=True, cancel_futures=True)


#: Ends every cached projection: this marker and the SHA-256 of the .npy bytes before it (np.load ignores it).
_CHECKSUM_MARK = b"\x93GS-SHA256"


def _save(path: Path, array: np.ndarray) -> None:
    """Cache a projection atomically, its checksum in the same file (no moment where the two disagree)."""
    buf = io.BytesIO()
    np.save(buf, array)
    body = buf.getvalue()
    with atomic_write(path) as f:
        f.write(body + _CHECKSUM_MARK + hashlib.sha256(body).digest())


def _load_verified(path: Path) -> np.ndarray | None:
    """A cached projection, or None when the file fails its checksum (damaged, truncated, or written by a
    graphsphere that stored none): then it is projected again, never used."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    n = len(_CHECKSUM_MARK) + 32
    body, mark, digest = data[:-n], data[-n:-32], data[-32:]
    if len(data) < n or mark != _CHECKSUM_MARK or hashlib.sha256(body).digest() != digest:
        return None
    try:
        return np.load(io.BytesIO(body))
    except (ValueError, OSError):
        return None


class ShapeCollection:
    """The meshes of a folder (by default the ``cgal-meshes`` data set) with their categories, and
    their projected, perturbed samples, cached on disk.

    A sample is (mesh ``i``, perturbation seed ``j``), or (``i``, ``j``, copy ``c``): copy ``c > 0`` has the
    rotation of copy 0 and a translation and scale of its own, the augmented copies that test-time
    augmentation averages over (the paper used 3 random translations); (``i``, ``j``, ``c``, True) is a copy
    with a rotation of its own as well (rotation averaging at test time). The perturbation is drawn from a
    generator seeded with ``(seed, j, crc32(mesh name))`` (plus ``c`` for the rest of a copy), so it
    depends on the mesh and the seeds, not on which other meshes or seeds are asked for. A projected
    sample is cached in ``cache_dir`` under a digest of the mesh file's sha256, the sampling's pixel
    directions, the perturbation settings, the seeds and ``PROJECTION_VERSION``: any change of these
    projects afresh, a re-run reuses the files.

    Parameters
    ----------
    sampling : graphsphere sampling or (npix, 3) directions
    root : path, optional
        Folder of mesh files; default: the ``cgal-meshes`` data set, fetched if needed.
    categories : dict or path, optional
        File (relative to ``root``) -> category; default: ``shape_categories.csv``. Files without a
        category are left out.
    exclude : iterable of str
        Categories left out (default: "point set", the files without faces).
    names : iterable of str, optional
        Keep only these files.
    protocol : {"SO3", "z"}, max_translation, scale_range
        The perturbations (:func:`graphsphere.data.meshes.random_perturbation`).
    seed : int
        Base seed of all perturbations.
    cache_dir : path, None or False
        None: :func:`default_cache_dir`; False: no cache.
    engine : {"auto", "embree", "triangle"}

    >>> import graphsphere as gs
    >>> shapes = ShapeCollection(gs.sampling.HEALPix(nside=32))        # doctest: +SKIP
    >>> len(shapes), shapes.category_names[:3]                          # doctest: +SKIP
    (142, ['animal', 'human', 'mechanical'])
    >>> x = shapes.samples([(0, 0), (0, 1)], workers=2)                 # doctest: +SKIP
    >>> x.shape                                                         # doctest: +SKIP
    (2, 12288, 6)
    """

    def __init__(self, sampling, root=None, *, categories=None, exclude: Iterable[str] = ("point set",),
                 names: Iterable[str] | None = None, protocol: str = "SO3", max_translation: float = 0.0,
                 scale_range: tuple[float, float] = (1.0, 1.0), seed: int = 0, cache_dir=None,
                 engine: str = "auto"):
        if root is None:
            from .sources import fetch

            root = fetch("cgal-meshes")
        self.root = Path(root)
        self.directions = _directions(sampling)
        if categories is None or isinstance(categories, (str, os.PathLike)):
            categories = load_categories(categories)
        wanted = set(names) if names is not None else None
        excluded = set(exclude)
        self.entries: list[MeshEntry] = []
        for name, category in sorted(categories.items()):
            if category in excluded or (wanted is not None and name not in wanted):
                continue
            path = self.root / name
            if not path.is_file():
                raise FileNotFoundError(f"mesh file {path} listed in the categories is missing from {self.root}")
            self.entries.append(MeshEntry(name, path, category, sha256_file(path)))
        if wanted is not None and len(self.entries) != len(wanted):
            missing = sorted(wanted - {e.name for e in self.entries})
            raise KeyError(f"not in the collection (no category, or excluded): {', '.join(missing)}")
        if not self.entries:
            raise ValueError(f"no mesh selected from {self.root}")
        random_perturbation(np.random.default_rng(0), protocol, max_translation, scale_range)  # validate now
        self.protocol, self.max_translation, self.scale_range = protocol, float(max_translation), tuple(scale_range)
        self.seed = int(seed)
        self.engine = _resolve_engine(engine)
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir()) / "shapes"
        self.category_names = sorted({e.category for e in self.entries})
        self._sampling_digest = hashlib.sha256(np.ascontiguousarray(self.directions).tobytes()).hexdigest()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> np.ndarray:
        """Category index (in :attr:`category_names`) of each mesh."""
        return np.array([self.category_names.index(e.category) for e in self.entries])

    def perturbation(self, index: int, seed: int, copy: int = 0, rotate: bool = False) -> Perturbation:
        """The perturbation of sample (mesh ``index``, seed ``seed``, copy ``copy``, rotated afresh or not)."""
        crc = zlib.crc32(self.entries[index].name.encode())
        first = random_perturbation(np.random.default_rng([self.seed, int(seed), crc]), self.protocol,
                                    self.max_translation, self.scale_range)
        if copy == 0:
            return first
        if copy < 0:
            raise ValueError(f"copy must be >= 0, got {copy}")
        other = random_perturbation(np.random.default_rng([self.seed, int(seed), crc, int(copy)]), self.protocol,
                                    self.max_translation, self.scale_range)
        return other if rotate else Perturbation(first.rotation, other.translation, other.scale)

    def cache_path(self, index: int, seed: int, copy: int = 0, rotate: bool = False) -> Path | None:
        """The cache file of a sample (None without a cache)."""
        if self.cache_dir is None:
            return None
        entry = self.entries[index]
        key = json.dumps({"version": PROJECTION_VERSION, "mesh": entry.sha256, "sampling": self._sampling_digest,
                          "protocol": self.protocol, "max_translation": self.max_translation,
                          "scale_range": list(self.scale_range), "base_seed": self.seed, "seed": int(seed),
                          "copy": int(copy), **({"rotate": True} if rotate and copy else {})}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.cache_dir / f"{Path(entry.name).stem}-{digest}.npy"

    def sample(self, index: int, seed: int, copy: int = 0) -> np.ndarray:
        """The [npix, 6] maps of one sample."""
        return self.samples([(index, seed, copy)], progress=False)[0]

    def samples(self, pairs: Sequence[tuple[int, ...]], *, workers: int = 1, progress: bool = True,
                desc: str = "projecting meshes") -> np.ndarray:
        """The [len(pairs), npix, 6] float32 maps of samples (mesh index, seed), (mesh index, seed, copy) or
        (mesh index, seed, copy, rotate), from the cache where there, projected (in ``workers`` processes) and
        cached otherwise.

        With ``workers > 1``, worker processes project a mesh at a time each, the largest first (this process the
        smallest while the first worker starts). They start from a fresh server process (multiprocessing's
        "forkserver"), so a script must guard its entry point with ``if __name__ == "__main__":``.
        """
        keys = [(int(p[0]), int(p[1]), int(p[2]) if len(p) > 2 else 0, bool(p[3]) if len(p) > 3 else False)
                for p in pairs]
        out = np.empty((len(keys), len(self.directions), len(CHANNELS)), dtype=np.float32)
        todo: dict[int, list[int]] = {}  # mesh index -> positions in keys still to project
        damaged = []
        for k, key in enumerate(keys):
            path = self.cache_path(*key)
            if path is not None and path.is_file():
                cached = _load_verified(path)
                if cached is not None and cached.shape == out[k].shape:
                    out[k] = cached
                    continue
                damaged.append(path)
            todo.setdefault(key[0], []).append(k)
        if damaged:
            warnings.warn(f"{len(damaged)} cached projection(s) fail their checksum (damaged, or cached by an older "
                          f"graphsphere), e.g. {damaged[0]}: projecting them again", stacklevel=2)
        if not todo:
            return out
        # a bar on a terminal; redirected, a plain line every 30 s (a log gets no carriage-return frames)
        bar = Progress(sum(map(len, todo.values())), f"{desc} (samples)", enabled=progress)
        tasks = [(str(self.entries[i].path), self.engine, self.directions,
                  [self.perturbation(*keys[k]) for k in ks]) for i, ks in todo.items()]

        def store(i: int, maps: list[np.ndarray]) -> None:
            for k, m in zip(todo[i], maps):
                out[k] = m
                path = self.cache_path(*keys[k])
                if path is not None:
                    _save(path, m)
            for _ in maps:
                bar.update()

        try:
            if workers <= 1 or len(tasks) == 1:
                for i, task in zip(todo, tasks):
                    store(i, _project_task(*task))
            else:
                # largest files first, so that no big mesh starts last and leaves the other workers idle
                order = sorted(range(len(tasks)), key=lambda t: -os.path.getsize(tasks[t][0]))
                meshes = list(todo)
                _project_in_parallel(tasks, order, workers, lambda t, maps: store(meshes[t], maps))
        finally:
            if bar.bar is not None and bar.done < bar.total:   # stopped early: close the terminal's bar
                bar.bar.close()
        return out


# --- splits for the two tasks --------------------------------------------------------------------------

@dataclass
class SplitPlan:
    """Which samples make each split of the ``shapes`` dataset, before any projection.

    ``train`` / ``val`` / ``test``: lists of (mesh index, seed); ``labels``: the class of each of them;
    ``collections``: the :class:`ShapeCollection` of each split (the training one rotates about z only
    in the z/SO3 protocol); ``class_names``: category names (category task) or mesh files (instance task).
    """

    task: str
    protocol: str
    collections: dict[str, ShapeCollection]
    pairs: dict[str, list[tuple[int, int]]]
    class_names: list[str]
    info: dict = field(default_factory=dict)

    def labels(self, split: str) -> np.ndarray:
        """The class of every sample of ``split``."""
        pairs = self.pairs[split]
        if self.task == "instance":
            return np.array([i for i, _ in pairs], dtype=np.int64)
        per_mesh = self.collections[split].labels
        return np.array([per_mesh[i] for i, _ in pairs], dtype=np.int64)

    def objects(self, split: str) -> set[str]:
        """The mesh files that appear in ``split``."""
        entries = self.collections[split].entries
        return {entries[i].name for i, _ in self.pairs[split]}

    def arrays(self, split: str, *, copy: int = 0, rotate: bool = False, workers: int = 1,
               progress: bool = True) -> np.ndarray:
        """The [n, npix, 6] maps of ``split``: copy ``copy`` of every sample (see :class:`ShapeCollection`)."""
        keys = [(i, j, copy, rotate) for i, j in self.pairs[split]]
        label = f", copy {copy}" + (" rotated" if rotate else "") if copy else ""
        return self.collections[split].samples(keys, workers=workers, progress=progress,
                                               desc=f"projecting {split} ({self.protocol}){label}")


def _counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) out of n: at least one test (and validation) item where the fractions ask for
    some and n allows it, never fewer than one training item."""
    n_test = round(test_fraction * n)
    n_val = round(val_fraction * n)
    if test_fraction > 0 and n >= 2:
        n_test = max(n_test, 1)
    if val_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    while n - n_val - n_test < 1 and n_val > 0:
        n_val -= 1
    while n - n_val - n_test < 1 and n_test > 0:
        n_test -= 1
    return n - n_val - n_test, n_val, n_test


def plan_splits(sampling, *, task: str = "category", protocol: str = "SO3/SO3", samples_per_mesh: int = 8,
                max_translation: float = 0.1, scale_range: tuple[float, float] = (0.9, 1.1),
                val_fraction: float = 0.15, test_fraction: float = 0.25, seed: int = 0,
                categories: Sequence[str] | None = None, meshes: Sequence[str] | None = None,
                meshes_per_category: int | None = None, root=None, category_table=None, cache_dir=None,
                engine: str = "auto") -> SplitPlan:
    """Decide the samples of every split (nothing is projected yet): see the module docstring.

    ``categories``/``meshes`` keep only these categories/files; ``meshes_per_category`` keeps at most that
    many files of each category (a seeded choice), to scale the task down or balance it. Other
    parameters: :class:`ShapeCollection`.

    >>> import graphsphere as gs
    >>> plan = plan_splits(gs.sampling.HEALPix(nside=8), task="category", samples_per_mesh=2,
    ...                    meshes_per_category=4, categories=["animal", "mechanical"])   # doctest: +SKIP
    >>> plan.objects("train") & plan.objects("test")                                     # doctest: +SKIP
    set()
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    table = load_categories(category_table) if category_table is not None else load_categories()
    if categories is not None:
        unknown = sorted(set(categories) - set(table.values()))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; the table has {sorted(set(table.values()))}")
        table = {name: c for name, c in table.items() if c in set(categories)}
    if meshes is not None:
        unknown = sorted(set(meshes) - set(table))
        if unknown:
            raise ValueError(f"meshes {unknown} are not in the category table (or not in the chosen categories)")
        table = {name: c for name, c in table.items() if name in set(meshes)}
    table = {name: c for name, c in table.items() if c != "point set"}
    if meshes_per_category is not None:
        rng = np.random.default_rng([int(seed), 23])
        kept = {}
        for c in sorted(set(table.values())):
            names = sorted(n for n, cat in table.items() if cat == c)
            for n in sorted(rng.permutation(names)[:meshes_per_category].tolist()):
                kept[n] = c
        table = kept
    if not table:
        raise ValueError("no mesh left: check categories, meshes and meshes_per_category")
    common = {"categories": table, "max_translation": max_translation, "scale_range": tuple(scale_range),
              "seed": seed, "cache_dir": cache_dir, "engine": engine}
    rotated = ShapeCollection(sampling, root, protocol="SO3", **common)
    train_collection = rotated if protocol == "SO3/SO3" else ShapeCollection(sampling, rotated.root, protocol="z",
                                                                             **common)
    collections = {"train": train_collection, "val": rotated, "test": rotated}
    pairs: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
    seeds = range(samples_per_mesh)
    if task == "category":
        rng = np.random.default_rng([int(seed), 29])
        labels = rotated.labels
        for c in range(len(rotated.category_names)):
            members = rng.permutation(np.flatnonzero(labels == c))
            n_train, n_val, _ = _counts(len(members), val_fraction, test_fraction)
            parts = {"train": members[:n_train], "val": members[n_train:n_train + n_val],
                     "test": members[n_train + n_val:]}
            for split, idx in parts.items():
                pairs[split] += [(int(i), j) for i in sorted(idx) for j in seeds]
        class_names = list(rotated.category_names)
    else:
        n_train, n_val, n_test = _counts(samples_per_mesh, val_fraction, test_fraction)
        if n_test == 0:
            raise ValueError(f"samples_per_mesh={samples_per_mesh} leaves no test sample per mesh for the instance "
                             "task; use more samples per mesh or a larger test_fraction")
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val,
                                                                                     samples_per_mesh)}
        for split, (a, b) in bounds.items():
            pairs[split] = [(i, j) for i in range(len(rotated)) for j in range(a, b)]
        class_names = [e.name for e in rotated.entries]
    for chosen in pairs.values():
        chosen.sort()
    return SplitPlan(task, protocol, collections, pairs, class_names,
                     info={"meshes": len(rotated), "root": str(rotated.root)})


# --- the dataset of the training engine -----------------------------------------------------------------

class ShapesParams(Params):
    """The ``data`` section of a training config with ``name: shapes``."""

    #: "category": classes are coarse categories, split by object; "instance": every mesh its own class,
    #: split by perturbation seed
    task: Literal["category", "instance"] = "category"
    #: "SO3/SO3": every split rotated in SO(3); "z/SO3": training rotated about z only, val/test in SO(3)
    protocol: Literal["SO3/SO3", "z/SO3"] = "SO3/SO3"
    #: perturbed samples (random rotation, translation, scale) of every mesh
    samples_per_mesh: PositiveInt = 8
    #: translations are uniform in the ball of this radius (the normalised mesh has radius 1)
    max_translation: NonNegativeFloat = 0.1
    scale_range: tuple[PositiveFloat, PositiveFloat] = (0.9, 1.1)
    #: objects (category task) or seeds (instance task) held out for validation and test
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.25, gt=0, lt=1)
    #: keep only these categories / mesh files; at most this many meshes per category (seeded choice)
    categories: list[str] | None = None
    meshes: list[str] | None = None
    meshes_per_category: PositiveInt | None = None
    #: processes that project meshes (each takes a mesh at a time)
    workers: PositiveInt = 1
    #: folder of mesh files and its category table (CSV with file, category); default: cgal-meshes
    root: str | None = None
    category_table: str | None = None
    #: cache of projected maps; null: $GRAPHSPHERE_CACHE/projections or ~/.cache/graphsphere/projections
    cache_dir: str | None = None
    cache: bool = True
    engine: Literal["auto", "embree", "triangle"] = "auto"
    progress: bool = True

    @model_validator(mode="after")
    def _check(self):
        low, high = self.scale_range
        if low > high:
            raise ConfigError([("data.scale_range", f" = {list(self.scale_range)}: low must not exceed high")])
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError([("data.test_fraction", f" = {self.test_fraction}: with val_fraction "
                                f"{self.val_fraction} nothing is left for training")])
        return self


def plan_from_params(sampling, seed: int, params: dict) -> SplitPlan:
    """:func:`plan_splits` from the parameters of a ``shapes`` data section (validated by
    :class:`ShapesParams`)."""
    p = ShapesParams.model_validate(params)
    return plan_splits(sampling, task=p.task, protocol=p.protocol, samples_per_mesh=p.samples_per_mesh,
                       max_translation=p.max_translation, scale_range=p.scale_range, val_fraction=p.val_fraction,
                       test_fraction=p.test_fraction, seed=seed, categories=p.categories, meshes=p.meshes,
                       meshes_per_category=p.meshes_per_category, root=p.root, category_table=p.category_table,
                       cache_dir=(p.cache_dir if p.cache else False), engine=p.engine)


@register_dataset("shapes", params=ShapesParams,
                  hint="the meshes come from the Debian package libcgal-demo: graphsphere data fetch cgal-meshes")
def build_shapes(sampling, learning_task, seed, **params) -> Splits:
    """Perturbed real meshes projected onto the configured sampling (6 channels), split for the category
    or the instance task (``params["task"]``, see :func:`plan_splits`); projections are cached.

    ``learning_task`` is the engine's task (classification): the registry passes it by position, and
    ``task`` is this dataset's own parameter."""
    from .maps import MapDataset

    if sampling is None:
        raise ConfigError([("sampling", ": the shapes dataset projects onto the configured sampling; add e.g. "
                            "sampling: {type: HEALPix, nside: 32}")])
    if learning_task != "classification":
        raise ConfigError([("task", f" = {learning_task!r}: the shapes dataset is a classification task")])
    p = ShapesParams.model_validate(params)
    plan = plan_from_params(sampling, seed, params)
    datasets = {}
    for split in ("train", "val", "test"):
        if not plan.pairs[split]:
            datasets[split] = None
            continue
        x = plan.arrays(split, workers=p.workers, progress=p.progress)
        datasets[split] = MapDataset(x, plan.labels(split), sampling, check_order=False)
    return Splits(datasets["train"], datasets["val"], datasets["test"], sampling=sampling,
                  in_channels=len(CHANNELS), n_out=len(plan.class_names), class_names=plan.class_names,
                  info={"task": plan.task, "protocol": plan.protocol, "meshes": plan.info["meshes"],
                        "sizes": {s: len(v) for s, v in plan.pairs.items()}})
