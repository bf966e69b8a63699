"""Interpolation weights: bilinear and bicubic stencils on lat-lon grids, barycentric weights on
the Delaunay triangles of any other sampling."""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull

from .grid import LatLonGrid, _Side


def _lagrange(nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Lagrange weights (n, k) of k nodes per point (n, k) at x (n,)."""
    k = nodes.shape[1]
    w = np.ones_like(nodes)
    for i in range(k):
        for j in range(k):
            if i != j:
                w[:, i] *= (x - nodes[:, j]) / (nodes[:, i] - nodes[:, j])
    return w


def _stencil(ext: np.ndarray, x: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n, order) into the increasing nodes ``ext`` and interpolation weights at ``x``
    (assumed within [ext[0], ext[-1]]): linear for order 2, cubic Lagrange for order 4; a stencil that
    would leave the nodes is shifted inwards."""
    k = np.clip(np.searchsorted(ext, x, side="right") - 1, 0, ext.size - 2)
    order = min(order, ext.size)
    start = np.clip(k - (order // 2 - 1), 0, ext.size - order)
    idx = start[:, None] + np.arange(order)
    return idx, _lagrange(ext[idx], x)


def _grid_interp(grid: LatLonGrid, lon: np.ndarray, lat: np.ndarray, order: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target, source, weight) triplets of tensor-product interpolation on a lat-lon grid."""
    pad = order // 2
    nlat, nlon = grid.shape
    asc = np.argsort(grid.lat)
    lat_a = grid.lat[asc]
    ext_lat, ext_row, ext_shift = [lat_a], [asc], [np.zeros(nlat)]
    edges = np.sort(grid.lat_edges[[0, -1]])
    south_pole, north_pole = edges[0] <= -90, edges[1] >= 90
    if grid.periodic and south_pole:
        r = np.flatnonzero(lat_a > -90)[:pad]                  # rows across the south pole (not a pole row)
        ext_lat.insert(0, (-180 - lat_a[r])[::-1]); ext_row.insert(0, asc[r][::-1])
        ext_shift.insert(0, np.full(r.size, 180.0))
    if grid.periodic and north_pole:
        r = np.flatnonzero(lat_a < 90)[::-1][:pad]
        ext_lat.append(180 - lat_a[r]); ext_row.append(asc[r]); ext_shift.append(np.full(r.size, 180.0))
    ext_lat, ext_row, ext_shift = map(np.concatenate, (ext_lat, ext_row, ext_shift))

    inside_lat = (lat >= edges[0]) & (lat <= edges[1])
    lat_c = np.clip(lat, ext_lat[0], ext_lat[-1])               # between the outer centre and the edge: flat
    ilat, wlat = _stencil(ext_lat, lat_c, order)                 # (n, order)

    lon_u = grid._lon_u
    if grid.periodic:
        ext_lon = np.concatenate([lon_u[-pad:] - 360, lon_u, lon_u[:pad] + 360])
        ext_col = np.concatenate([np.arange(nlon)[-pad:], np.arange(nlon), np.arange(nlon)[:pad]])
    else:
        ext_lon, ext_col = lon_u, np.arange(nlon)
    e0 = grid.lon_edges[0]
    n = lat.size
    tgt_idx, src_idx, weights = [], [], []
    inside = inside_lat.copy()
    for a in range(ilat.shape[1]):
        row = ext_row[ilat[:, a]]
        phi = e0 + (lon + ext_shift[ilat[:, a]] - e0) % 360.0
        if not grid.periodic:
            inside &= phi <= grid.lon_edges[-1]
        phi = np.clip(phi, ext_lon[0], ext_lon[-1])
        icol, wlon = _stencil(ext_lon, phi, order)
        for b in range(icol.shape[1]):
            tgt_idx.append(np.arange(n))
            src_idx.append(row * nlon + ext_col[icol[:, b]])
            weights.append(wlat[:, a] * wlon[:, b])
    tgt_idx, src_idx, weights = map(np.concatenate, (tgt_idx, src_idx, weights))
    keep = inside[tgt_idx] & (weights != 0)
    return tgt_idx[keep], src_idx[keep], weights[keep]


def _barycentric(src: _Side, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target, source, weight) triplets of linear interpolation on the spherical Delaunay
    triangulation (convex hull) of the source's pixel centres."""
    pts = src.xyz
    tri = ConvexHull(pts).simplices                                   # (ntri, 3)
    corners = pts[tri]                                                # (ntri, 3 corners, 3)
    inv = np.linalg.inv(np.transpose(corners, (0, 2, 1)))             # solves [a b c] lam = p
    # triangles around each vertex
    order = np.argsort(tri.ravel(), kind="stable")
    tri_of = (order // 3)
    start = np.searchsorted(tri.ravel()[order], np.arange(pts.shape[0] + 1))
    edge_len = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).max(axis=1)
    # Hull faces that close a partial sky's hole are long: never interpolate across them.
    long_face = edge_len > 4 * np.median(edge_len) if not src.full else np.zeros(tri.shape[0], bool)
    near = src._tree.query(xyz, k=min(3, pts.shape[0]), workers=-1)[1].reshape(len(xyz), -1)
    best_lam = np.full((len(xyz), 3), np.nan)
    best_tri = np.full(len(xyz), -1)
    best_score = np.full(len(xyz), -np.inf)
    deg = np.diff(start)
    for c in range(near.shape[1]):
        v = near[:, c]
        for slot in range(int(deg.max())):
            has = slot < deg[v]
            t = np.where(has, tri_of[start[v] + np.minimum(slot, deg[v] - 1)], 0)
            lam = np.einsum("nij,nj->ni", inv[t], xyz)
            score = np.where(has & ~long_face[t], lam.min(axis=1), -np.inf)
            better = score > best_score
            best_score[better], best_tri[better], best_lam[better] = score[better], t[better], lam[better]
    n = len(xyz)
    lam = np.clip(best_lam, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):     # rows without a triangle: replaced below
        lam /= lam.sum(axis=1, keepdims=True)
    # no containing triangle within tolerance (holes of a partial sky, far outside): nearest pixel
    nearest = best_score < -1e-6
    tgt = np.repeat(np.arange(n), 3)
    srcs = tri[np.maximum(best_tri, 0)].ravel()
    w = lam.ravel()
    w = np.where(np.repeat(nearest, 3), 0.0, w)
    tgt = np.concatenate([tgt, np.flatnonzero(nearest)])
    srcs = np.concatenate([srcs, near[nearest, 0]])
    w = np.concatenate([w, np.ones(int(nearest.sum()))])
    keep = w > 0
    return tgt[keep], srcs[keep], w[keep]
