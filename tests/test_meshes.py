"""graphsphere.data.meshes: ray-cast spherical maps of meshes, checked against analytic shapes."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

import graphsphere as gs  # noqa: E402
from graphsphere.data import meshes  # noqa: E402
from graphsphere.data.meshes import MeshReadError, load_mesh, normalize, project, random_perturbation  # noqa: E402

ENGINES = meshes.available_engines()
HEALPIX8 = gs.sampling.HEALPix(nside=8)


def asymmetric_mesh():
    """A non-convex, asymmetric shape: a slab with a tilted rod through it (two parts, not watertight
    as a whole), so that any error in how rotations act shows up."""
    slab = trimesh.creation.box(extents=(1.0, 0.5, 0.3))
    rod = trimesh.creation.cylinder(radius=0.12, height=1.4, sections=24)
    rod.apply_transform(trimesh.transformations.rotation_matrix(0.7, [1, 1, 0]))
    rod.apply_translation((0.3, 0.1, 0.05))
    return trimesh.util.concatenate([slab, rod])


def rotation(angle, axis):
    return trimesh.transformations.rotation_matrix(angle, axis)[:3, :3]


# --- analytic shapes ------------------------------------------------------------------------------

def test_sphere_gives_its_radius_and_normal_incidence():
    r = 0.7
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=r)  # 5120 faces
    maps = project(sphere, HEALPIX8, unit_ball=False)
    # Bounds from the mesh itself: a hit lies between the nearest face plane and the sphere r, and
    # the ray leaves from the centre through the face, so its angle to the face normal is at most the
    # largest angle between a face's normal and the directions of its vertices.
    planes = np.abs(np.einsum("ij,ij->i", sphere.face_normals, sphere.triangles[:, 0]))
    corners = sphere.triangles / np.linalg.norm(sphere.triangles, axis=2, keepdims=True)
    cos_min = np.einsum("ij,ikj->ik", sphere.face_normals, corners).min()
    assert 0.998 < cos_min < 1 and r * 0.998 < planes.min() < r  # the bounds are tight
    assert maps.shape == (HEALPIX8.npix, 6) and maps.dtype == np.float32
    assert np.all(maps[:, 0] <= r * (1 + 1e-6)) and np.all(maps[:, 0] >= planes.min() * (1 - 1e-6))
    assert np.all(maps[:, 1] >= cos_min - 1e-6)
    np.testing.assert_allclose(maps[:, 1] ** 2 + maps[:, 2] ** 2, 1, atol=1e-5)
    np.testing.assert_allclose(maps[:, 3:], maps[:, :3], atol=1e-6)  # convex: the hull is the shape
    # normalised: the radius becomes 1 (the vertices are at distance r exactly), then scaled
    scaled = project(sphere, HEALPIX8, scale=0.5)
    assert np.all(scaled[:, 0] <= 0.5 * (1 + 1e-6)) and np.all(scaled[:, 0] >= 0.5 * planes.min() / r * (1 - 1e-6))


def test_cube_distances_and_normal_angles_are_exact():
    a = 0.8
    cube = trimesh.creation.box(extents=(2 * a, 2 * a, 2 * a))
    d = HEALPIX8.xyz
    largest = np.abs(d).max(axis=1)  # the face hit is the one of the largest |component|
    maps = project(cube, HEALPIX8, unit_ball=False)
    np.testing.assert_allclose(maps[:, 0], a / largest, rtol=1e-6)
    # the face normal is that axis: cos(angle) = |d_k| (at an edge |d_x| = |d_y|, either face gives it)
    np.testing.assert_allclose(maps[:, 1], largest, atol=1e-6)
    np.testing.assert_allclose(maps[:, 2], np.sqrt(1 - largest ** 2), atol=1e-5)
    np.testing.assert_allclose(maps[:, 3:], maps[:, :3], atol=1e-6)
    # normalised (corner at distance 1: half-width 1/sqrt(3)), then scaled by 1.3
    maps = project(cube, HEALPIX8, scale=1.3)
    np.testing.assert_allclose(maps[:, 0], 1.3 / np.sqrt(3) / largest, rtol=1e-6)


def test_farthest_hit_counts_and_misses_are_zero():
    shell = trimesh.util.concatenate([trimesh.creation.icosphere(3, radius=1.0),
                                      trimesh.creation.icosphere(3, radius=0.5)])
    maps = project(shell, HEALPIX8, unit_ball=False)
    assert np.all(maps[:, 0] > 0.99)  # the outer sphere, never the inner one
    # a torus around z, seen from its centre (outside the solid): rays in the equatorial plane cross the
    # inner wall at R - r and the outer at R + r (the farthest is kept); rays near the axis meet nothing
    R, r = 1.0, 0.25
    torus = trimesh.creation.torus(major_radius=R, minor_radius=r, major_sections=64, minor_sections=32)
    directions = np.array([[1.0, 0, 0], [0, -1, 0], [np.cos(1), np.sin(1), 0], [0, 0, 1], [0.1, 0, -1]])
    maps = project(torus, directions, unit_ball=False)
    np.testing.assert_allclose(maps[:3, 0], R + r, rtol=2e-3)
    assert np.all(maps[:3, 1] > 0.99)
    np.testing.assert_array_equal(maps[3:, :3], 0)  # missed: all three channels 0
    # the hull (a squat cylinder-like solid) is hit by every ray, also along the axis, at height r
    np.testing.assert_allclose(maps[3, 3], r, rtol=1e-2)
    assert np.all(maps[:, 3] > 0)


def test_face_orientation_does_not_matter():
    mesh = asymmetric_mesh()
    flipped = trimesh.Trimesh(mesh.vertices, mesh.faces[:, ::-1], process=False)  # normals point inwards
    assert np.allclose(flipped.face_normals, -mesh.face_normals)
    np.testing.assert_allclose(project(flipped, HEALPIX8), project(mesh, HEALPIX8), atol=1e-6)


def test_flat_mesh_has_a_flat_two_sided_hull():
    square = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    hull = meshes.convex_hull(square)
    assert np.isclose(hull.area, 8.0)  # 2 x 2, both sides
    maps = project(square, np.array([[0.0, 0, 1], [0, 0, -1], [1, 0, 0]]), translation=(0, 0, 0.1), unit_ball=False)
    # the square moved 0.1 up: seen from the centre, straight up hits it at 0.1 head-on; down and
    # sideways miss, for the hull as well
    np.testing.assert_allclose(maps[0], [0.1, 1, 0, 0.1, 1, 0], atol=1e-6)
    np.testing.assert_array_equal(maps[1:], 0)


# --- perturbations --------------------------------------------------------------------------------

def test_rotated_mesh_gives_the_rotated_map():
    mesh = asymmetric_mesh()
    R = rotation(1.1, [0.3, -0.5, 0.8])
    d = HEALPIX8.xyz
    rotated = mesh.copy()
    rotated.apply_transform(np.block([[R, np.zeros((3, 1))], [np.zeros((1, 3)), 1]]))
    # map of the rotated mesh at d == map of the mesh at R^T d (rows: d @ R)
    np.testing.assert_allclose(project(rotated, d), project(mesh, d @ R), atol=2e-5)
    # and the rotation argument is the same thing
    np.testing.assert_allclose(project(mesh, d, rotation=R), project(rotated, d), atol=2e-5)
    assert np.abs(project(mesh, d) - project(rotated, d)).max() > 0.1  # the shape is not symmetric


def test_perturbation_equals_moving_the_mesh():
    """The rays are moved by the inverse transformation instead of the mesh: check against the mesh moved."""
    mesh = asymmetric_mesh()
    p = random_perturbation(np.random.default_rng(3), "SO3", max_translation=0.2, scale_range=(0.7, 1.3))
    moved = normalize(mesh)
    moved.apply_scale(p.scale)
    moved.apply_transform(np.block([[p.rotation, np.zeros((3, 1))], [np.zeros((1, 3)), 1]]))
    moved.apply_translation(p.translation)
    expected = project(moved, HEALPIX8, unit_ball=False)
    np.testing.assert_allclose(project(mesh, HEALPIX8, *p), expected, atol=2e-5)
    assert np.linalg.norm(p.translation) > 0.01 and abs(p.scale - 1) > 0.01


def test_haar_rotations():
    rng = np.random.default_rng(0)
    Rs = np.array([random_perturbation(rng).rotation for _ in range(4000)])
    np.testing.assert_allclose(Rs @ Rs.transpose(0, 2, 1), np.broadcast_to(np.eye(3), Rs.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(Rs), 1, atol=1e-12)
    assert np.abs(Rs.mean(axis=0)).max() < 0.05  # Haar: E[R] = 0
    # Haar rotation angles have density (1 - cos t) / pi: P(t < pi/2) = (pi/2 - 1) / pi = 0.1817
    angle = np.arccos(np.clip((np.trace(Rs, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert abs(np.mean(angle < np.pi / 2) - (np.pi / 2 - 1) / np.pi) < 0.02
    # z protocol: fixes the z axis, uniform angle
    Rz = np.array([random_perturbation(rng, "z").rotation for _ in range(2000)])
    np.testing.assert_allclose(Rz[:, :, 2], np.broadcast_to([0, 0, 1], (2000, 3)), atol=1e-12)
    assert abs(Rz[:, 0, 0].mean()) < 0.05 and abs(np.mean(Rz[:, 1, 0] > 0) - 0.5) < 0.05


def test_translation_and_scale_distributions():
    rng = np.random.default_rng(1)
    ps = [random_perturbation(rng, "SO3", max_translation=0.2, scale_range=(0.8, 1.2)) for _ in range(4000)]
    radius = np.linalg.norm([p.translation for p in ps], axis=1)
    scales = np.array([p.scale for p in ps])
    assert radius.max() <= 0.2 and abs(np.mean(radius < 0.1) - 1 / 8) < 0.02  # uniform in the ball
    assert scales.min() >= 0.8 and scales.max() <= 1.2 and abs(scales.mean() - 1) < 0.01
    with pytest.raises(ValueError, match="protocol must be 'SO3' or 'z'"):
        random_perturbation(rng, "SO2")
    with pytest.raises(ValueError, match="scale_range"):
        random_perturbation(rng, scale_range=(1.2, 0.8))


def test_bad_arguments():
    cube = trimesh.creation.box()
    with pytest.raises(ValueError, match="orthogonal"):
        project(cube, HEALPIX8, rotation=np.ones((3, 3)))
    with pytest.raises(ValueError, match="scale must be a positive"):
        project(cube, HEALPIX8, scale=0)
    with pytest.raises(ValueError, match=r"\(n, 3\) array"):
        project(cube, np.ones((5, 2)))
    with pytest.raises(ValueError, match="engine must be"):
        project(cube, HEALPIX8, engine="optix")


@pytest.mark.skipif("embree" not in ENGINES, reason="embreex is not installed: only one engine to compare")
def test_engines_agree():
    mesh = asymmetric_mesh()
    sampling = gs.sampling.HEALPix(nside=4)
    # moved off-centre, so that the centre is outside the shape and some rays miss
    p = random_perturbation(np.random.default_rng(5))._replace(translation=np.array([0.5, 0.3, 0.0]))
    embree = project(mesh, sampling, *p, engine="embree")
    triangle = project(mesh, sampling, *p, engine="triangle")
    np.testing.assert_array_equal(embree[:, 0] == 0, triangle[:, 0] == 0)
    np.testing.assert_allclose(embree, triangle, atol=1e-5)
    assert (embree[:, 0] == 0).any() and (embree[:, 0] > 0).any()  # both hits and misses compared


def nested_shape():
    """A torus around the z axis, a ball off the centre inside its hole, and a tilted slab across both: rays from
    the centre cross up to 6 surfaces, and those along the axis (the centre is outside the torus) may miss."""
    torus = trimesh.creation.torus(major_radius=0.75, minor_radius=0.2, major_sections=48, minor_sections=24)
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.15).apply_translation((0.32, 0.1, 0.0))
    slab = trimesh.creation.box(extents=(1.6, 0.8, 0.08))
    slab.apply_transform(trimesh.transformations.rotation_matrix(0.4, [1, 0, 0]))
    slab.apply_translation((0.1, 0.0, 0.35))
    return trimesh.util.concatenate([torus, ball, slab])


def all_hits_reference(mesh, directions):
    """Distance, cos, sin of the farthest crossing of every ray from the origin, from trimesh's own intersector
    listing all hits (the slow way the projection avoids); 0 where a ray meets nothing. Also the hits per ray."""
    from trimesh.ray.ray_triangle import RayMeshIntersector

    n = len(directions)
    locations, ray, tri = RayMeshIntersector(mesh).intersects_location(np.zeros((n, 3)), directions,
                                                                      multiple_hits=True)
    along = np.einsum("ij,ij->i", locations, directions[ray])
    farthest = np.full(n, -1)
    for k in np.argsort(along):  # increasing distance: the last written is the farthest
        farthest[ray[k]] = k
    out = np.zeros((n, 3))
    hit = farthest >= 0
    cos = np.abs(np.einsum("ij,ij->i", mesh.face_normals[tri[farthest[hit]]], directions[hit]))
    out[hit, 0], out[hit, 1], out[hit, 2] = along[farthest[hit]], cos, np.sqrt(1 - cos ** 2)
    return out, np.bincount(ray, minlength=n)


@pytest.mark.parametrize("engine", ENGINES)
def test_single_first_hit_equals_all_hits_reference(engine):
    """One first-hit query a reversed ray (cast from outside towards the centre) gives the farthest of all the
    crossings that trimesh's all-hits intersector lists, for the mesh and its hull, under a perturbation."""
    mesh = nested_shape()
    directions = np.random.default_rng(0).standard_normal((600, 3))  # generic: no ray meets an edge
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    p = random_perturbation(np.random.default_rng(4))._replace(translation=np.array([0.12, -0.08, 0.05]), scale=1.2)
    maps = project(mesh, directions, *p, unit_ball=False, engine=engine)
    moved = mesh.copy()
    moved.apply_scale(p.scale)
    moved.apply_transform(np.block([[p.rotation, np.zeros((3, 1))], [np.zeros((1, 3)), 1]]))
    moved.apply_translation(p.translation)
    reference, hits = all_hits_reference(moved, directions)
    hull_reference, _ = all_hits_reference(meshes.convex_hull(moved), directions)
    # the centre is outside every solid: each ray that meets the shape crosses it 2 or 4 times, so the farthest
    # crossing is never the first; about a third of the rays miss
    assert (hits >= 2).mean() > 0.5 and (hits >= 4).sum() > 30 and (hits == 0).sum() > 100
    np.testing.assert_array_equal(maps[:, 0] == 0, hits == 0)
    np.testing.assert_allclose(maps[:, :3], reference, atol=2e-6)
    np.testing.assert_allclose(maps[:, 3:], hull_reference, atol=2e-6)


def test_project_many_equals_project():
    mesh = asymmetric_mesh()
    ps = [random_perturbation(np.random.default_rng(k), "SO3", 0.1, (0.9, 1.1)) for k in range(3)]
    projector = meshes.MeshProjector(mesh)
    many = projector.project_many(HEALPIX8, ps)
    assert many.shape == (3, HEALPIX8.npix, 6) and many.dtype == np.float32
    for maps, p in zip(many, ps):
        np.testing.assert_array_equal(maps, projector.project(HEALPIX8, *p))
    assert np.abs(many[0] - many[1]).max() > 0.1


# --- files --------------------------------------------------------------------------------------------

TETRA = "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n"


def test_load_mesh_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.off"):
        load_mesh(tmp_path / "missing.off")
    garbage = tmp_path / "garbage.off"
    garbage.write_text("this is not a mesh\n")
    with pytest.raises(MeshReadError, match="garbage.off"):
        load_mesh(garbage)
    unknown = tmp_path / "shape.xyz3"
    unknown.write_text(TETRA)
    with pytest.raises(MeshReadError, match=r"shape\.xyz3"):
        load_mesh(unknown)
    points = tmp_path / "points.ply"
    points.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                      "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(MeshReadError, match=r"points\.ply has no .*faces"):
        load_mesh(points)


def test_degenerate_faces_removed(tmp_path):
    path = tmp_path / "tetra.off"
    path.write_text(TETRA.replace("4 4 0", "4 6 0") + "3 0 1 1\n3 2 2 2\n")  # two zero-area faces
    mesh = load_mesh(path)
    assert len(mesh.faces) == 4 and mesh.is_watertight
    only_degenerate = tmp_path / "flat.off"
    only_degenerate.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n")  # collinear
    with pytest.raises(MeshReadError, match="flat.off has no"):
        load_mesh(only_degenerate)


def test_mixed_polygon_off_is_read(tmp_path):
    """A square pyramid: one quad and four triangles (trimesh's own OFF reader fails on mixed polygons
    with NumPy 2); the fallback fan-triangulates."""
    path = tmp_path / "pyramid.off"
    path.write_text("OFF\n# a comment\n5 5 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0.5 0.5 1\n"
                    "4 0 3 2 1\n3 0 1 4\n3 1 2 4\n3 2 3 4\n3 3 0 4 0.5 0.5 0.5\n")
    mesh = load_mesh(path)
    assert len(mesh.faces) == 6 and mesh.is_watertight
    assert np.isclose(mesh.volume, 1 / 3)


def test_plain_off_reader_equals_trimesh(tmp_path):
    """The fast reader of plain OFF files (triangles or quads) gives trimesh's vertices and faces exactly, and
    leaves every other file to trimesh's reader."""
    rng = np.random.default_rng(0)
    vertices = rng.uniform(-1, 1, (30, 3)).round(7)
    triangles = np.array([rng.choice(30, 3, replace=False) for _ in range(40)])
    quads = np.array([rng.choice(30, 4, replace=False) for _ in range(20)])

    def write(name, header, rows, extra="", comment_inside=False):
        lines = ["# a comment line", header, f"{len(vertices)} {len(rows)} 0", ""]
        lines += ["# a comment line after the header"] if comment_inside else []
        lines += [" ".join(repr(float(x)) for x in v) + ("  # a comment after a vertex" if i == 3 else "")
                  for i, v in enumerate(vertices)]
        lines += [f"{len(r)} " + " ".join(map(str, r)) + extra for r in rows] + [""]
        path = tmp_path / name
        path.write_text("\n".join(lines))
        return path

    for path in (write("tri.off", "OFF", triangles), write("quad.off", "OFF", quads)):
        fast, slow = meshes._read_plain_off(path), trimesh.load(path, force="mesh")
        assert fast is not None and len(fast.faces) > 20
        np.testing.assert_array_equal(fast.vertices, slow.vertices)
        np.testing.assert_array_equal(fast.faces, slow.faces)
    assert len(meshes._read_plain_off(tmp_path / "quad.off").faces) == 2 * len(quads)
    # a comment line after the header (trimesh 5.2's comment stripping repeats the header there)
    inside = meshes._read_plain_off(write("inside.off", "OFF", triangles, comment_inside=True))
    np.testing.assert_array_equal(inside.vertices, meshes._read_plain_off(tmp_path / "tri.off").vertices)
    # not plain: colours, mixed polygons, a face colour, a count that does not match, no faces
    others = [write("coff.off", "COFF", triangles), write("mixed.off", "OFF", [*triangles[:5], *quads[:5]]),
              write("coloured.off", "OFF", triangles, extra=" 255 0 0"), write("empty.off", "OFF", triangles[:0])]
    (tmp_path / "short.off").write_text((tmp_path / "tri.off").read_text().rsplit("\n", 3)[0])
    for path in [*others, tmp_path / "short.off"]:
        assert meshes._read_plain_off(path) is None, path.name
    assert len(load_mesh(tmp_path / "mixed.off").faces) == 5 + 2 * 5  # trimesh's reader, or ours, still reads it


# --- the real meshes of libcgal-demo ----------------------------------------------------------------

@pytest.fixture(scope="module")
def cgal_meshes(tmp_path_factory):
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed: the cgal-meshes data set cannot be fetched here")
    from graphsphere.data import sources

    mp = pytest.MonkeyPatch()
    mp.setenv("GRAPHSPHERE_DATA", str(tmp_path_factory.mktemp("data")))
    try:
        yield sources.fetch("cgal-meshes")
    finally:
        mp.undo()


def test_categories_cover_the_package(cgal_meshes):
    from graphsphere.data import sources
    from graphsphere.data.shapes import load_categories

    categories = load_categories()
    assert sorted(categories) == sorted(rel for rel, _, _ in sources.SOURCES["cgal-meshes"].files)
    assert set(categories.values()) == {"animal", "human", "mechanical", "primitive", "surface", "other",
                                        "point set"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, category in categories.items():
            if category == "point set":
                with pytest.raises(MeshReadError, match="no .*faces"):
                    load_mesh(cgal_meshes / name)
            else:
                assert len(load_mesh(cgal_meshes / name).faces) > 0, name


def test_real_cube_matches_the_analytic_cube(cgal_meshes):
    maps = project(load_mesh(cgal_meshes / "meshes/cube.off"), HEALPIX8)
    largest = np.abs(HEALPIX8.xyz).max(axis=1)
    np.testing.assert_allclose(maps[:, 0], 1 / np.sqrt(3) / largest, rtol=1e-6)
    np.testing.assert_allclose(maps[:, 1], largest, atol=1e-6)


