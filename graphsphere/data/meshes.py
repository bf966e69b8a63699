"""Real 3D meshes to spherical maps, as in DeepSphere's SHREC'17 experiment (Defferrard et al. 2020).

A mesh is centred and scaled into the unit ball (:func:`normalize`), optionally rotated, translated and
scaled (:func:`random_perturbation`), and a ray is cast from the centre of the sphere along the
direction of every pixel of a sampling (:func:`project`; HEALPix nside 32 in the paper). Each pixel
gets 6 channels (:data:`CHANNELS`): the distance from the centre to the surface, the cosine and the
sine of the angle between the ray and the surface normal, then the same three for the convex hull.

Choices, and why:

* **Which hit.** A ray from the centre may cross the surface several times; the pixel takes the
  *farthest* hit, the point an observer outside the shape sees when looking back at the centre along
  the ray. It is what the SHREC'17 spherical CNNs used (rays cast inwards from the enclosing sphere,
  first hit kept), and it stays defined when the centre is outside a non-convex shape (a torus, a
  mug, a shifted shape): the farthest crossing on the ray's half-line is still the visible one.
  It is computed as the *first* hit of a ray shot back towards the centre from outside the shape.
* **Missed rays.** A ray that meets nothing on its half-line (the centre outside a non-convex
  shape, a hole in a non-watertight mesh, an open surface patch) gives 0 in all three channels of
  its group. A hit always has cos^2 + sin^2 = 1, so a miss stays distinguishable from a hit at the
  centre.
* **Normal orientation.** cos = |ray . face normal|, the angle folded into [0, 90 deg]. Many real
  meshes are not watertight or not consistently wound, so the sign of a face normal is arbitrary
  there; for a closed, consistently oriented mesh the farthest hit always faces outwards, so the
  sign would carry no information anyway. Face (flat) normals are used, as the cube test needs.
* **Centre and scale.** The centre is the area-weighted centroid of the surface (trimesh's
  ``centroid``; robust to uneven vertex density, always inside the convex hull); the scale puts the
  farthest vertex at distance 1. Perturbations act after that: ``x -> scale * R x + translation``.
* **Convex hull.** From qhull through trimesh, its faces wound as qhull gives them (only |cos| is
  used); a flat mesh (all vertices in one plane) gets the flat convex polygon, two-sided, as its hull.
* **Reading files.** Plain OFF files (header ``OFF``, all faces triangles or all quads: most of the
  data set) are parsed by a fast reader here that gives trimesh's vertices and faces exactly; trimesh
  reads the rest (.off/.ply/.stl/.obj); degenerate (zero-area) faces are removed; files whose OFF
  polygons trimesh cannot triangulate (mixed polygon sizes) are read by a small OFF reader here that
  fan-triangulates each polygon (exact for convex polygons; a concave one is approximated). A file
  without faces (a point set) is refused.

Ray engine: Intel Embree through the ``embreex`` package when it is installed, its scenes built as
trimesh's ``ray_pyembree`` builds them and queried directly (the same hits, without trimesh's per-call
work), else trimesh's pure-Python intersector, which gives the same maps but is about a thousand
times slower (tens of seconds per nside-32 sample): ``pip install embreex``. Either way a mesh's ray
structures are built once (:class:`MeshProjector`), each perturbation moves the rays instead of the
mesh, and each ray is one first-hit query (see "Which hit").

Collections of meshes, their cached samples and the ``shapes`` dataset: :mod:`graphsphere.data.shapes`.

Example
-------
>>> import numpy as np, trimesh, graphsphere as gs
>>> from graphsphere.data.meshes import project
>>> sphere = trimesh.creation.icosphere(subdivisions=3, radius=2.0)
>>> maps = project(sphere, gs.sampling.HEALPix(nside=4))
>>> maps.shape, maps.dtype
((192, 6), dtype('float32'))
>>> bool(np.all(np.abs(maps[:, 0] - 1) < 0.01)), bool(np.all(maps[:, 1] > 0.99))   # unit ball, cos ~ 1
(True, True)
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "CHANNELS", "PROJECTION_VERSION", "MeshReadError", "load_mesh", "normalize", "convex_hull",
    "available_engines", "MeshProjector", "project", "Perturbation", "random_perturbation",
]

#: The 6 channels of a projected map, in order.
CHANNELS = ("distance", "cos", "sin", "hull_distance", "hull_cos", "hull_sin")

#: Bumped whenever a change here changes the maps, so that cached maps of older code are not reused.
PROJECTION_VERSION = 1

#: Rays per call of trimesh's own intersector: its candidate lists grow with rays x faces, and a whole
#: nside-32 sphere in one call was seen to need tens of GB on a 90k-face mesh.
_TRIANGLE_CHUNK = 256

class MeshReadError(ValueError):
    """A mesh file that cannot be read, or that holds no surface to project."""


# --- reading -----------------------------------------------------------------------------------------

def _read_off(path: Path):
    """A plain-text OFF file (also COFF, NOFF, ...), polygons fan-triangulated."""
    import trimesh

    lines = []
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                lines.append(line.split())
    if not lines or not lines[0][0].endswith("OFF"):
        raise MeshReadError(f"{path}: not an OFF file (no OFF header)")
    header = lines[0][1:] or lines[1]
    start = 1 if lines[0][1:] else 2
    n_vertices, n_faces = int(header[0]), int(header[1])
    vertices = np.array([[float(v) for v in row[:3]] for row in lines[start:start + n_vertices]])
    triangles = []
    for row in lines[start + n_vertices:start + n_vertices + n_faces]:
        k = int(row[0])
        polygon = [int(i) for i in row[1:1 + k]]
        triangles += [(polygon[0], polygon[j], polygon[j + 1]) for j in range(1, k - 1)]
    if len(vertices) != n_vertices:
        raise MeshReadError(f"{path}: the header announces {n_vertices} vertices, the file holds {len(vertices)}")
    faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise MeshReadError(f"{path}: a face refers to a vertex outside 0..{n_vertices - 1}")
    return trimesh.Trimesh(vertices=vertices, faces=faces, process=True)


_OFF_HEADER = re.compile(r"\s*OFF\s+(\d+)\s+(\d+)\s+(\d+)\s")


def _read_plain_off(path: Path):
    """The common OFF file (header ``OFF``, 3 coordinates a vertex, all faces triangles or all quads, nothing
    after them) read about 5 times faster than by trimesh's reader, with the same vertices and faces (quads
    split as trimesh splits them). None for any other file, which then goes to trimesh's reader."""
    import trimesh

    text = path.read_bytes()
    if b"#" in text:
        text = re.sub(rb"#[^\n]*", b"", text)
    match = _OFF_HEADER.match(text.decode("ascii", errors="replace")[:200])
    if match is None:
        return None
    n_vertices, n_faces = int(match[1]), int(match[2])
    tokens = text[match.end():].split()
    if n_faces == 0 or len(tokens) < 3 * n_vertices + 1:
        return None
    k = int(tokens[3 * n_vertices]) if tokens[3 * n_vertices].isdigit() else 0
    if k not in (3, 4) or len(tokens) != 3 * n_vertices + n_faces * (k + 1):
        return None
    try:
        vertices = np.array(tokens[:3 * n_vertices], dtype=np.float64).reshape(n_vertices, 3)
        rows = np.array(tokens[3 * n_vertices:], dtype=np.int64).reshape(n_faces, k + 1)
    except ValueError:  # a token that is no number: trimesh's reader, or ours, says what is wrong
        return None
    if (rows[:, 0] != k).any():
        return None
    faces = trimesh.geometry.triangulate_quads(rows[:, 1:])
    if faces.min() < 0 or faces.max() >= n_vertices:
        return None  # trimesh's reader gives the error
    return trimesh.Trimesh(vertices=vertices, faces=faces, process=True)


def load_mesh(path: str | os.PathLike):
    """Read a mesh file into a ``trimesh.Trimesh`` with its degenerate faces removed.

    Raises :class:`MeshReadError` naming the file when it cannot be read, has no faces (a point
    set) or non-finite coordinates; ``FileNotFoundError`` when it does not exist.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tetra.off"
    >>> _ = path.write_text("OFF\\n4 4 0\\n0 0 0\\n1 0 0\\n0 1 0\\n0 0 1\\n3 0 2 1\\n3 0 1 3\\n3 0 3 2\\n3 1 2 3\\n")
    >>> mesh = load_mesh(path)
    >>> len(mesh.vertices), len(mesh.faces), mesh.is_watertight
    (4, 4, True)
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {path} does not exist")
    try:
        mesh = _read_plain_off(path) if path.suffix.lower() == ".off" else None
        if mesh is None:
            mesh = trimesh.load(path, force="mesh")
    except Exception as error:  # trimesh raises many kinds; all mean "cannot read"
        if path.suffix.lower() != ".off":
            raise MeshReadError(f"cannot read mesh file {path}: {type(error).__name__}: {error}") from error
        try:
            mesh = _read_off(path)
        except MeshReadError:
            raise
        except Exception as fallback_error:
            raise MeshReadError(f"cannot read mesh file {path}: {type(fallback_error).__name__}: "
                                f"{fallback_error}") from error
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshReadError(f"cannot read mesh file {path} as a triangle mesh (got {type(mesh).__name__})")
    if len(mesh.faces):
        mesh.update_faces(mesh.nondegenerate_faces())
        mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise MeshReadError(f"mesh file {path} has no (non-degenerate) faces: a point set or an empty mesh "
                            "has no surface to project")
    if not np.isfinite(mesh.vertices).all():
        raise MeshReadError(f"mesh file {path} has non-finite vertex coordinates")
    return mesh


def normalize(mesh):
    """A copy of ``mesh`` centred on its area-weighted centroid and scaled so that its farthest vertex
    is at distance 1.

    >>> import trimesh
    >>> box = normalize(trimesh.creation.box(extents=(2, 4, 4)).apply_translation((5, 0, 0)))
    >>> [round(float(v), 6) for v in box.centroid], round(float(np.linalg.norm(box.vertices, axis=1).max()), 6)
    ([0.0, 0.0, 0.0], 1.0)
    """
    out = mesh.copy()
    out.apply_translation(-mesh.centroid)
    radius = float(np.linalg.norm(out.vertices, axis=1).max())
    if not radius > 0:
        raise ValueError("cannot normalise a mesh whose vertices all coincide")
    out.apply_scale(1.0 / radius)
    return out


def convex_hull(mesh):
    """The convex hull of ``mesh`` as a mesh; a flat polygon (both sides) for a flat mesh.

    >>> import trimesh
    >>> square = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    >>> hull = convex_hull(square)
    >>> round(float(hull.area), 6)   # the unit square, both sides
    2.0
    """
    import trimesh
    from scipy.spatial import ConvexHull

    points = np.asarray(mesh.vertices, dtype=np.float64)
    centred = points - points.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    if singular[2] > 1e-9 * singular[0]:
        return trimesh.convex.convex_hull(mesh, repair=False)  # winding is irrelevant: |cos| is used
    # qhull cannot hull a flat set in 3-D: hull it in its plane, then fan the convex polygon
    polygon = ConvexHull(centred @ axes[:2].T).vertices  # counter-clockwise order
    fan = np.stack([np.full(len(polygon) - 2, polygon[0]), polygon[1:-1], polygon[2:]], axis=1)
    return trimesh.Trimesh(points, np.concatenate([fan, fan[:, ::-1]]), process=False)


# --- ray casting -------------------------------------------------------------------------------------

def available_engines() -> list[str]:
    """Ray engines usable here: ``"embree"`` (needs ``embreex``) and ``"triangle"`` (trimesh's own).

    >>> "triangle" in available_engines()
    True
    """
    try:
        from trimesh.ray import ray_pyembree  # noqa: F401  (imports embreex)
        return ["embree", "triangle"]
    except ImportError:
        return ["triangle"]


_warned_slow = False


def _resolve_engine(engine: str) -> str:
    global _warned_slow
    engines = available_engines()
    if engine == "auto":
        if "embree" not in engines and not _warned_slow:
            warnings.warn("embreex is not installed: projecting with trimesh's own ray intersector, about "
                          "1000 times slower; `pip install embreex` for Embree", RuntimeWarning, stacklevel=3)
            _warned_slow = True
        return engines[0]
    if engine not in ("embree", "triangle"):
        raise ValueError(f"engine must be 'auto', 'embree' or 'triangle', got {engine!r}")
    if engine not in engines:
        raise ImportError("engine='embree' needs the embreex package: pip install embreex")
    return engine


def _intersector(mesh, engine: str):
    if engine == "embree":
        from trimesh.ray.ray_pyembree import RayMeshIntersector
    else:
        from trimesh.ray.ray_triangle import RayMeshIntersector
    return RayMeshIntersector(mesh)


def _directions(sampling) -> np.ndarray:
    xyz = np.asarray(getattr(sampling, "xyz", sampling), dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or not np.isfinite(xyz).all():
        raise ValueError(f"expected a sampling or an (n, 3) array of finite directions, got shape {xyz.shape}")
    norms = np.linalg.norm(xyz, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("a direction of length 0 has no ray")
    return xyz / norms


class _Surface:
    """One surface (the mesh or its convex hull) ready for rays: its ray structure, and per face what turns a hit
    into a distance and an angle (the unit normal, and the plane's offset n . x)."""

    def __init__(self, mesh, engine: str):
        self.mesh = mesh
        self.normals = np.ascontiguousarray(mesh.face_normals)
        self.offsets = np.einsum("ij,ij->i", self.normals, mesh.triangles[:, 0])
        if engine == "embree":
            # Embree's scene as trimesh's ray_pyembree builds it (float32, shifted to the bounding box's corner
            # and zoomed to a diagonal of 100), called directly: the same hits without trimesh's per-call work
            from embreex import rtcore_scene
            from embreex.mesh_construction import TriangleMesh

            vertices = np.asarray(mesh.vertices, dtype=np.float64)
            self.shift, self.zoom = vertices.min(axis=0), 100.0 / mesh.scale
            self.scene = rtcore_scene.EmbreeScene()
            TriangleMesh(scene=self.scene, vertices=((vertices - self.shift) * self.zoom).astype(np.float32),
                         indices=np.asarray(mesh.faces).astype(np.int32))
        else:
            self.intersector = _intersector(mesh, engine)

    def first_faces(self, starts: np.ndarray, backwards: np.ndarray) -> np.ndarray:
        """The first face each ray meets (-1: none). Embree takes float32 rays (see ``MeshProjector._project``)."""
        if not hasattr(self, "scene"):  # trimesh's own intersector, in chunks
            return np.concatenate([np.asarray(self.intersector.intersects_first(starts[a:a + _TRIANGLE_CHUNK],
                                                                                backwards[a:a + _TRIANGLE_CHUNK]),
                                              dtype=np.int64) for a in range(0, len(starts), _TRIANGLE_CHUNK)])
        return self.scene.run(((starts.astype(np.float64) - self.shift) * self.zoom).astype(np.float32), backwards)

    def maps(self, tri: np.ndarray, origin: np.ndarray, directions: np.ndarray, reach: float, scale: float,
             out: np.ndarray) -> None:
        """Distance, cos and sin of the farthest crossing of each ray's half-line into ``out`` [n, 3]."""
        hit = tri >= 0
        face = np.where(hit, tri, 0)
        normals = self.normals[face]
        # where the ray meets the hit face's plane, as a signed distance from the centre along the ray (float64,
        # whatever precision the engine works in); a ray grazing its face takes the face's centre
        facing = np.einsum("ij,ij->i", normals, directions)
        grazing = np.abs(facing) < 1e-9
        along = (self.offsets[face] - normals @ origin) / np.where(grazing, 1.0, facing)
        grazing &= hit
        if grazing.any():
            centres = self.mesh.triangles_center[face[grazing]]
            along[grazing] = np.einsum("ij,ij->i", centres - origin, directions[grazing])
        keep = hit & (along >= -1e-9 * reach)  # a first hit behind the centre: nothing on the half-line
        cos = np.minimum(np.abs(facing), 1.0)
        out[:, 0] = np.where(keep, np.maximum(along, 0.0) * scale, 0.0)
        out[:, 1] = np.where(keep, cos, 0.0)
        out[:, 2] = np.where(keep, np.sqrt(1.0 - cos ** 2), 0.0)


def _check_perturbation(rotation, translation, scale):
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    translation = np.zeros(3) if translation is None else np.asarray(translation, dtype=np.float64)
    if rotation.shape != (3, 3) or not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6):
        raise ValueError("rotation must be a 3 x 3 orthogonal matrix")
    if translation.shape != (3,):
        raise ValueError(f"translation must have 3 components, got shape {translation.shape}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    return rotation, translation, float(scale)


class MeshProjector:
    """A mesh, its convex hull and their ray structures, built once to project many perturbations.

    The farthest crossing of a ray's half-line from the centre is found as the *first* hit of the reversed ray,
    cast from outside the shape (beyond the farthest vertex) towards the centre: one first-hit query per ray, far
    cheaper than listing every hit; a first hit behind the centre means nothing on the half-line. A perturbation
    moves the rays (by the inverse transformation) rather than the mesh, so the ray structures are built once.

    Parameters
    ----------
    mesh : trimesh.Trimesh
    unit_ball : bool
        Centre and scale the mesh into the unit ball first (:func:`normalize`); with False, rays start
        at the origin of the mesh's own coordinates.
    engine : {"auto", "embree", "triangle"}
        The ray engine; "auto" takes Embree when ``embreex`` is installed.

    >>> import trimesh, graphsphere as gs
    >>> projector = MeshProjector(trimesh.creation.box(extents=(2, 2, 2)), unit_ball=False)
    >>> maps = projector.project(np.eye(3))                    # rays along x, y, z
    >>> maps[:, 0].tolist(), maps[:, 1].tolist()             # distance 1 to each face, head-on
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    """

    def __init__(self, mesh, *, unit_ball: bool = True, engine: str = "auto"):
        self.engine = _resolve_engine(engine)
        self.mesh = normalize(mesh) if unit_ball else mesh
        self.hull = convex_hull(self.mesh)
        # rays start beyond the farthest vertex from the local origin, so that their first hit is the
        # farthest crossing of the outward half-line
        self._radius = float(np.linalg.norm(self.mesh.vertices, axis=1).max())
        self._surfaces = [_Surface(m, self.engine) for m in (self.mesh, self.hull)]

    def _project(self, directions: np.ndarray, rotation, translation, scale, out: np.ndarray) -> np.ndarray:
        origin = rotation.T @ (-translation) / scale     # the sphere's centre in the mesh's frame
        local = directions @ rotation                     # row i: rotation.T @ direction i
        reach = float(np.linalg.norm(origin)) + self._radius + 1.0
        starts = origin + reach * local                   # the reversed rays start outside the shape
        if self.engine == "embree":  # float32 rays, exactly as trimesh's ray_pyembree would cast them
            import trimesh

            rays = starts.astype(np.float32), trimesh.util.unitize((-local).astype(np.float32)).astype(np.float32)
        else:
            rays = starts, -local
        for k, surface in enumerate(self._surfaces):
            surface.maps(surface.first_faces(*rays), origin, local, reach, scale, out[:, 3 * k:3 * k + 3])
        return out

    def project(self, sampling, rotation=None, translation=None, scale: float = 1.0) -> np.ndarray:
        """The [npix, 6] float32 maps of the mesh moved by ``x -> scale * rotation @ x + translation``.

        Rather than moving the mesh (and rebuilding its ray structure), the rays are moved by the inverse
        transformation; distances scale back by ``scale``, angles are unchanged.
        """
        directions = _directions(sampling)
        out = np.empty((len(directions), len(CHANNELS)), dtype=np.float32)
        return self._project(directions, *_check_perturbation(rotation, translation, scale), out)

    def project_many(self, sampling, perturbations) -> np.ndarray:
        """The [len(perturbations), npix, 6] maps of several (rotation, translation, scale), the same as
        :meth:`project` for each, the directions prepared once."""
        directions = _directions(sampling)
        out = np.empty((len(perturbations), len(directions), len(CHANNELS)), dtype=np.float32)
        for i, p in enumerate(perturbations):
            self._project(directions, *_check_perturbation(*p), out[i])
        return out


def project(mesh, sampling, rotation=None, translation=None, scale: float = 1.0, *, unit_ball: bool = True,
            engine: str = "auto") -> np.ndarray:
    """Project a mesh onto a sampling: the [npix, 6] float32 maps of :data:`CHANNELS`.

    Parameters
    ----------
    mesh : trimesh.Trimesh
        E.g. from :func:`load_mesh`.
    sampling : graphsphere sampling, or (npix, 3) array of directions
        Any sampling (its ``xyz``): HEALPix nside 32 in the paper.
    rotation, translation, scale
        Applied to the normalised mesh: ``x -> scale * rotation @ x + translation`` (see
        :func:`random_perturbation`). Rays always start at the sphere's centre, the origin.
    unit_ball : bool
        Centre and scale the mesh into the unit ball first (:func:`normalize`; default), as the paper
        does; with False, rays start at the origin of the mesh's own coordinates.
    engine : {"auto", "embree", "triangle"}

    >>> import trimesh, graphsphere as gs
    >>> cube = trimesh.creation.box(extents=(2, 2, 2))     # [-1, 1]^3
    >>> maps = project(cube, np.array([[1.0, 0, 0], [1, 1, 1]]), unit_ball=False)
    >>> np.round(maps[:, 0] ** 2, 6).tolist()   # squared distances 1 (a face centre) and 3 (a corner)
    [1.0, 3.0]
    """
    return MeshProjector(mesh, unit_ball=unit_ball, engine=engine).project(sampling, rotation, translation, scale)


# --- perturbations -----------------------------------------------------------------------------------

class Perturbation(NamedTuple):
    """A similarity transformation ``x -> scale * rotation @ x + translation``."""

    rotation: np.ndarray
    translation: np.ndarray
    scale: float


def random_perturbation(rng: np.random.Generator, protocol: str = "SO3", max_translation: float = 0.0,
                        scale_range: tuple[float, float] = (1.0, 1.0)) -> Perturbation:
    """A random rotation, translation and scaling.

    Parameters
    ----------
    rng : numpy.random.Generator
    protocol : {"SO3", "z"}
        "SO3": a rotation drawn from the Haar (uniform) measure on SO(3), as a unit quaternion with
        Gaussian components; "z": a rotation about the z axis by a uniform angle (the z/SO(3)
        protocol trains on these).
    max_translation : float
        The translation is uniform in the ball of this radius (the normalised mesh has radius 1).
    scale_range : (low, high)
        The scale is uniform in this interval.

    >>> p = random_perturbation(np.random.default_rng(0), "z", max_translation=0.1, scale_range=(0.9, 1.1))
    >>> bool(np.allclose(p.rotation @ p.rotation.T, np.eye(3))), p.rotation[2].tolist()
    (True, [0.0, 0.0, 1.0])
    >>> bool(np.linalg.norm(p.translation) <= 0.1), 0.9 <= p.scale <= 1.1
    (True, True)
    """
    from scipy.spatial.transform import Rotation

    if protocol == "SO3":
        q = rng.standard_normal(4)
        rotation = Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()
    elif protocol == "z":
        angle = rng.uniform(0.0, 2 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    else:
        raise ValueError(f"protocol must be 'SO3' or 'z', got {protocol!r}")
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    if max_translation < 0:
        raise ValueError(f"max_translation must be >= 0, got {max_translation}")
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    translation = direction * max_translation * rng.uniform() ** (1 / 3)  # uniform in the ball
    return Perturbation(rotation, translation, float(rng.uniform(low, high)))
