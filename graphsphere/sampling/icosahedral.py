"""Icosahedral sampling: the vertices of a subdivided icosahedron.

Level 0 is the icosahedron (12 vertices, two of them on the poles); each
level splits every triangle into four through its edge midpoints, projected
onto the sphere, giving ``10 * 4**level + 2`` vertices. The vertices of level
``l - 1`` are the first ``10 * 4**(l - 1) + 2`` vertices of level ``l``
(coarse vertices first, then one new vertex per coarse edge), so pooling to
the coarser level keeps a prefix of the data.

Example
-------
>>> import numpy as np, graphsphere as gs
>>> s = gs.sampling.Icosahedral(level=2)
>>> s.npix, s.faces.shape
(162, (320, 3))
>>> coarse, assign = s.coarsen()
>>> coarse.npix, bool(np.allclose(s.xyz[:coarse.npix], coarse.xyz))
(42, True)
>>> bool(np.isclose(s.area.sum(), 4 * np.pi))
True
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from .base import Sampling
from .equiangular import _check_count

__all__ = ["Icosahedral"]

#: 10 * 4**10 + 2 vertices (10.5 M) and 21 M faces take a few GB to build.
MAX_LEVEL = 10


def _check_level(level) -> int:
    n = _check_count(level, "level", minimum=0)
    if n > MAX_LEVEL:
        raise ValueError(f"level {n} is above the supported maximum {MAX_LEVEL} ({10 * 4**MAX_LEVEL + 2} vertices)")
    return n


def _icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """The 12 vertices (north pole, two rings of 5 at latitude +-atan(1/2),
    south pole) and 20 outward-oriented faces of the icosahedron."""
    lat = np.arctan(0.5)
    lon_up = np.deg2rad(72.0 * np.arange(5))
    lon_dn = lon_up + np.deg2rad(36.0)

    def ring(lon, la):
        return np.stack([np.cos(la) * np.cos(lon), np.cos(la) * np.sin(lon), np.full(5, np.sin(la))], axis=1)

    xyz = np.concatenate([[[0.0, 0.0, 1.0]], ring(lon_up, lat), ring(lon_dn, -lat), [[0.0, 0.0, -1.0]]])
    i = np.arange(5)
    up, dn, nxt = 1 + i, 6 + i, (i + 1) % 5
    faces = np.concatenate([
        np.stack([np.zeros(5, int), up, 1 + nxt], axis=1),    # cap around the north pole
        np.stack([up, dn, 1 + nxt], axis=1),                  # belt, triangles pointing up
        np.stack([dn, 6 + nxt, 1 + nxt], axis=1),             # belt, triangles pointing down
        np.stack([np.full(5, 11), 6 + nxt, dn], axis=1),      # cap around the south pole
    ])
    return xyz, faces.astype(np.int64)


def _subdivide(xyz: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One level of subdivision. Returns the new vertices (old ones first),
    the new faces, and for each new vertex the two old vertices of its edge."""
    n = xyz.shape[0]
    a, b, c = faces.T
    # Each edge appears in two faces: key it by its sorted endpoints to make one midpoint.
    pairs = np.stack([np.stack([a, b], 1), np.stack([b, c], 1), np.stack([c, a], 1)])  # (3, F, 2)
    lo, hi = pairs.min(axis=-1), pairs.max(axis=-1)
    keys, inverse = np.unique(lo * n + hi, return_inverse=True)
    edges = np.stack(np.divmod(keys, n), axis=1)
    mid = xyz[edges[:, 0]] + xyz[edges[:, 1]]
    mid /= np.linalg.norm(mid, axis=1, keepdims=True)
    ab, bc, ca = (n + inverse.reshape(3, -1))
    # The corner triangles and the middle one keep the parent's orientation.
    new_faces = np.concatenate([np.stack(f, 1) for f in
                                ([a, ab, ca], [ab, b, bc], [ca, bc, c], [ab, bc, ca])])
    return np.concatenate([xyz, mid]), new_faces, edges


def _spherical_triangle_area(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Signed solid angle of spherical triangles with unit-vector corners (rows),
    positive when counter-clockwise seen from outside (Van Oosterom & Strackee 1983)."""
    num = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = 1 + np.einsum("ij,ij->i", a, b) + np.einsum("ij,ij->i", b, c) + np.einsum("ij,ij->i", c, a)
    return 2 * np.arctan2(num, den)


class Icosahedral(Sampling):
    """Vertices of the icosahedron subdivided ``level`` times.

    Parameters
    ----------
    level : int
        Subdivision level, 0 to 10; ``10 * 4**level + 2`` vertices (level 5:
        10242, level 7: 163842).

    Attributes
    ----------
    faces : int array (20 * 4**level, 3)
        The triangles, as vertex indices, counter-clockwise seen from outside
        (e.g. for ``matplotlib``'s ``plot_trisurf`` or a mesh viewer).

    The ``area`` of a vertex is the exact area of its Voronoi (dual) cell on the
    sphere: the polygon joining the circumcentres of the triangles around it.
    Cells are hexagons, and pentagons at the 12 original vertices.

    >>> s = Icosahedral(level=1)
    >>> s.npix, round(float(s.area.max() / s.area.min()), 3)
    (42, 1.13)
    """

    ARG_CHECKS = {"level": _check_level}

    def __init__(self, level: int):
        self.level = _check_level(level)

    @property
    def npix(self) -> int:
        return 10 * 4**self.level + 2

    @cached_property
    def _mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vertices, faces, parent edge of each vertex of the last level)."""
        xyz, faces = _icosahedron()
        parents = np.empty((0, 2), dtype=np.int64)
        for _ in range(self.level):
            xyz, faces, parents = _subdivide(xyz, faces)
        faces.setflags(write=False)
        parents.setflags(write=False)
        return xyz, faces, parents

    @property
    def faces(self) -> np.ndarray:
        """Triangles as vertex indices, (20 * 4**level, 3), outward oriented."""
        return self._mesh[1]

    def _compute_xyz(self) -> np.ndarray:
        return self._mesh[0]

    def _compute_area(self) -> np.ndarray:
        # Split each triangle (a, b, c) among its corners by its circumcentre o:
        # corner a gets the quadrilateral a, mid(ab), o, mid(ca), which lies in a's
        # Voronoi cell. Signed areas keep this exact even if o falls outside the
        # triangle, as long as the mesh is a Delaunay triangulation (it is).
        f = self.faces
        corner = self.xyz[f.T]                                   # (3, F, 3)
        o = np.cross(corner[1] - corner[0], corner[2] - corner[0])
        o /= np.linalg.norm(o, axis=-1, keepdims=True)
        mid = corner + np.roll(corner, -1, axis=0)               # mid[k]: edge (k, k+1)
        mid /= np.linalg.norm(mid, axis=-1, keepdims=True)
        area = np.zeros(self.npix)
        for k in range(3):
            p, m_next, m_prev = corner[k], mid[k], mid[k - 1]
            piece = _spherical_triangle_area(p, m_next, o) + _spherical_triangle_area(p, o, m_prev)
            area += np.bincount(f[:, k], weights=piece, minlength=self.npix)
        return area

    def _params(self) -> dict[str, Any]:
        return {"level": self.level}

    family = "Icosahedral"

    @property
    def native_resolution(self) -> int:
        return self.level

    def coarsen(self) -> tuple["Icosahedral", sp.csr_matrix]:
        """Level ``l - 1`` and the assignment of each vertex to the coarse
        Voronoi cell(s) it lies in.

        A vertex kept from level ``l - 1`` belongs to itself (weight 1). A new
        vertex is the midpoint of a coarse edge, equidistant from its two
        endpoints and farther from every other coarse vertex: it lies on the
        border of their Voronoi cells and is split 1/2 - 1/2 between them. The
        mean pooling ``assign`` row-normalised is then the usual icosahedral
        "keep the vertex, average with half of each of its 6 (or 5) midpoints".

        >>> c, a = Icosahedral(1).coarsen()
        >>> a.shape, sorted(set(a.data.tolist()))
        ((12, 42), [0.5, 1.0])
        """
        if self.level == 0:
            raise ValueError("level 0 (the icosahedron) is the coarsest icosahedral level; "
                             "it cannot be coarsened")
        coarse = Icosahedral(self.level - 1)
        nc = coarse.npix
        parents = self._mesh[2]
        new = np.arange(nc, self.npix)
        rows = np.concatenate([np.arange(nc), parents[:, 0], parents[:, 1]])
        cols = np.concatenate([np.arange(nc), new, new])
        vals = np.concatenate([np.ones(nc), np.full(2 * new.size, 0.5)])
        assign = sp.csr_matrix((vals, (rows, cols)), shape=(nc, self.npix))
        return coarse, assign
