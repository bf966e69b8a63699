"""Conservative regridding: the overlap areas of source and target cells, exact between lat-lon
grids, estimated by equal-area supersampling otherwise, then balanced to the exact cell areas."""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse as sp

from .grid import LatLonGrid, _Side

#: Largest number of supersampling points kept in memory at once.
_CHUNK = 2_000_000


def _interval_overlaps(a: np.ndarray, b: np.ndarray, period: float | None,
                       a_periodic: bool = False, b_periodic: bool = False) -> sp.coo_matrix:
    """Lengths of the overlaps of intervals ``[a_i, a_i+1]`` and ``[b_j, b_j+1]`` as a sparse
    ``(len(b) - 1, len(a) - 1)`` matrix. Edges increase; with a ``period`` the positions are taken
    modulo it (longitudes), and a periodic side's intervals cover the whole period."""
    na, nb = a.size - 1, b.size - 1
    if period is None:
        lo, hi = max(a[0], b[0]), min(a[-1], b[-1])
        cuts = np.unique(np.concatenate([a, b]))
        cuts = cuts[(cuts >= lo) & (cuts <= hi)]
    else:
        start = a[0]
        cuts = np.unique(np.concatenate([a, start + (b - start) % period, [start, start + period]]))
        cuts = cuts[(cuts >= start) & (cuts <= start + period)]
    if cuts.size < 2:
        return sp.coo_matrix((nb, na))
    mid = (cuts[:-1] + cuts[1:]) / 2
    length = np.diff(cuts)

    def index(edges, x, periodic):
        if period is not None:
            x = edges[0] + (x - edges[0]) % period
        i = np.searchsorted(edges, x, side="right") - 1
        return np.where((i >= 0) & (i < edges.size - 1), i, -1)

    ia, ib = index(a, mid, a_periodic), index(b, mid, b_periodic)
    keep = (ia >= 0) & (ib >= 0) & (length > 0)
    return sp.coo_matrix((length[keep], (ib[keep], ia[keep])), shape=(nb, na))


def _ascending(edges: np.ndarray) -> tuple[np.ndarray, bool]:
    return (edges, True) if edges[0] < edges[-1] else (edges[::-1], False)


def _latlon_overlaps(src: LatLonGrid, tgt: LatLonGrid) -> sp.csr_matrix:
    """Exact overlap areas (steradians) of two lat-lon grids' cells, (tgt.npix, src.npix)."""
    zs, s_asc = _ascending(np.sin(np.deg2rad(src.lat_edges)))
    zt, t_asc = _ascending(np.sin(np.deg2rad(tgt.lat_edges)))
    olat = _interval_overlaps(zs, zt, None).tocsr()
    # back to the grids' own row orders
    if not s_asc:
        olat = olat[:, ::-1]
    if not t_asc:
        olat = olat[::-1, :]
    olon = _interval_overlaps(np.deg2rad(src.lon_edges), np.deg2rad(tgt.lon_edges), 2 * np.pi,
                              src.periodic, tgt.periodic)
    return sp.kron(olat, olon.tocsr(), format="csr")


def _subcells(grid: LatLonGrid, s: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres, owners and areas of the ``s x s`` equal-area sub-cells (uniform in sin(lat) and lon)
    of the cells of the given rows; each sub-cell lies entirely inside its owner."""
    z = np.sin(np.deg2rad(grid.lat_edges))
    f = (np.arange(s) + 0.5) / s
    zc = z[rows, None] + np.outer(z[rows + 1] - z[rows], f)                      # (r, s)
    e = np.deg2rad(grid.lon_edges)
    lc = e[:-1, None] + np.outer(np.diff(e), f)                                  # (nlon, s)
    nlon = grid.lon.size
    zc = np.broadcast_to(zc[:, :, None, None], (rows.size, s, nlon, s))
    lc = np.broadcast_to(lc[None, None, :, :], (rows.size, s, nlon, s))
    rho = np.sqrt(np.clip(1 - zc**2, 0, None))
    xyz = np.stack([rho * np.cos(lc), rho * np.sin(lc), zc], axis=-1).reshape(-1, 3)
    owner = (rows[:, None, None, None] * nlon + np.arange(nlon)[None, None, :, None])
    owner = np.broadcast_to(owner, (rows.size, s, nlon, s)).ravel()
    area = np.broadcast_to((grid.area.reshape(grid.shape)[rows] / (s * s))[:, None, :, None],
                           (rows.size, s, nlon, s)).ravel()
    return xyz, owner.astype(np.int64), area


def _accumulate(parts: list, owner: np.ndarray, other: np.ndarray, area: np.ndarray) -> None:
    keep = other >= 0
    parts.append((owner[keep], other[keep], area[keep]))


def _sparse_from_parts(parts: list, shape: tuple[int, int], owner_is_row: bool) -> sp.csr_matrix:
    if not parts:
        return sp.csr_matrix(shape)
    owner = np.concatenate([p[0] for p in parts])
    other = np.concatenate([p[1] for p in parts])
    area = np.concatenate([p[2] for p in parts])
    rows, cols = (owner, other) if owner_is_row else (other, owner)
    m = sp.coo_matrix((area, (rows, cols)), shape=shape).tocsr()
    m.sum_duplicates()
    return m


def _estimated_overlaps(src: _Side, tgt: _Side, supersample: int) -> sp.csr_matrix:
    """Overlap areas (tgt.npix, src.npix) estimated by supersampling one side exactly (its cells split
    into equal-area sub-cells) and locating the sub-cells' centres in the other side's cells."""
    shape = (tgt.npix, src.npix)
    parts: list = []
    if src.grid is not None or tgt.grid is not None:
        fine_side, other = (src, tgt) if src.grid is not None else (tgt, src)
        grid = fine_side.grid
        s = max(1, math.ceil(supersample * fine_side.width / other.width))
        rows_per_chunk = max(1, _CHUNK // (grid.lon.size * s * s))
        for r0 in range(0, grid.lat.size, rows_per_chunk):
            rows = np.arange(r0, min(r0 + rows_per_chunk, grid.lat.size))
            xyz, owner, area = _subcells(grid, s, rows)
            _accumulate(parts, owner, other.locate_xyz(xyz), area)
        return _sparse_from_parts(parts, shape, owner_is_row=fine_side is tgt)
    import healpy as hp

    if src.healpix or tgt.healpix:
        # The HEALPix side's pixels split into their NESTED children: exact on that side.
        fine_side, other = (src, tgt) if src.healpix else (tgt, src)
        if src.healpix and tgt.healpix and tgt.obj.nside > src.obj.nside:
            fine_side, other = tgt, src
        s_obj = fine_side.obj
        levels = max(0, math.ceil(math.log2(max(1.0, supersample * fine_side.width / other.width))))
        nside_f = s_obj.nside * 2**levels
        ids = np.asarray(s_obj.pixels)
        nested = ids if s_obj.nest else hp.ring2nest(s_obj.nside, ids)
        k = 4**levels
        per_chunk = max(1, _CHUNK // k)
        area = np.full(k, 4 * np.pi / (12 * nside_f**2))
        for p0 in range(0, nested.size, per_chunk):
            sel = np.arange(p0, min(p0 + per_chunk, nested.size))
            children = (nested[sel, None] * k + np.arange(k)).ravel()
            xyz = np.stack(hp.pix2vec(nside_f, children, nest=True), axis=1)
            owner = np.repeat(sel, k)
            _accumulate(parts, owner, other.locate_xyz(xyz), np.tile(area, sel.size))
        return _sparse_from_parts(parts, shape, owner_is_row=fine_side is tgt)
    # Neither side is structured: a fine full-sky HEALPix sampling, located on both sides.
    width = min(src.width, tgt.width) / supersample
    nside_f = 2 ** max(0, math.ceil(math.log2(math.sqrt(4 * np.pi / 12) / width)))
    npix_f = 12 * nside_f**2
    area1 = 4 * np.pi / npix_f
    for p0 in range(0, npix_f, _CHUNK):
        pix = np.arange(p0, min(p0 + _CHUNK, npix_f))
        xyz = np.stack(hp.pix2vec(nside_f, pix, nest=True), axis=1)
        a, b = src.locate_xyz(xyz), tgt.locate_xyz(xyz)
        keep = (a >= 0) & (b >= 0)
        parts.append((b[keep], a[keep], np.full(int(keep.sum()), area1)))
    return _sparse_from_parts(parts, shape, owner_is_row=True)


def _fill_empty(o: sp.csr_matrix, src: _Side, tgt: _Side) -> sp.csr_matrix:
    """Cells too small to catch a supersampling point: give each the cell of the other side that
    contains its centre, with its whole area (such a cell lies (nearly) inside one other cell)."""
    add_r, add_c, add_v = [], [], []
    empty_t = np.flatnonzero(np.diff(o.indptr) == 0)
    if empty_t.size:
        where = src.locate_xyz(tgt.xyz[empty_t])
        ok = where >= 0
        add_r.append(empty_t[ok]), add_c.append(where[ok]), add_v.append(tgt.area[empty_t[ok]])
    empty_s = np.flatnonzero(np.bincount(o.indices, minlength=src.npix) == 0)
    if empty_s.size:
        where = tgt.locate_xyz(src.xyz[empty_s])
        ok = where >= 0
        add_r.append(where[ok]), add_c.append(empty_s[ok]), add_v.append(src.area[empty_s[ok]])
    if not add_r:
        return o
    extra = sp.coo_matrix((np.concatenate(add_v), (np.concatenate(add_r), np.concatenate(add_c))), shape=o.shape)
    return (o + extra).tocsr()


def _balance(o: sp.csr_matrix, row_target: np.ndarray | None, col_target: np.ndarray | None
             ) -> sp.csr_matrix:
    """Correct estimated overlap areas so that rows add up to ``row_target`` and columns to
    ``col_target`` (the exact cell areas); a side that is ``None`` is left free.

    One side: a scaling. Both sides: a few Sinkhorn (alternating scaling) iterations bring the
    marginals within ~1e-3; then the exact minimum-change correction ``O_ji (1 + u_j + v_i)``, whose
    marginal constraints are linear in ``(u, v)``, is solved directly (a sparse system the size of
    both grids). Sinkhorn alone converges like 1/iterations here: the bias to fix must diffuse across
    the whole sphere.
    """
    o = o.tocsr(copy=True)
    nt, ns = o.shape
    rows = np.repeat(np.arange(nt), np.diff(o.indptr))
    cols = o.indices

    def scale_rows():
        rs = np.bincount(rows, weights=o.data, minlength=nt)
        o.data *= np.where(rs > 0, row_target / np.where(rs > 0, rs, 1), 1.0)[rows]

    def scale_cols():
        cs = np.bincount(cols, weights=o.data, minlength=ns)
        o.data *= np.where(cs > 0, col_target / np.where(cs > 0, cs, 1), 1.0)[cols]

    if row_target is not None and col_target is None:
        scale_rows()
    elif col_target is not None and row_target is None:
        scale_cols()
    if row_target is None or col_target is None:
        return o
    for _ in range(30):
        scale_rows()
        scale_cols()
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import splu

    rs = np.bincount(rows, weights=o.data, minlength=nt)
    cs = np.bincount(cols, weights=o.data, minlength=ns)
    k = sp.bmat([[sp.diags(rs), o], [o.T, sp.diags(cs)]], format="csr")
    rhs = np.concatenate([row_target - rs, col_target - cs])
    # (u, v) -> (u + t, v - t) changes nothing: fix one unknown per connected component.
    _, label = connected_components(k, directed=False)
    free = np.ones(nt + ns, dtype=bool)
    free[np.unique(label, return_index=True)[1]] = False
    idx = np.flatnonzero(free)
    uv = np.zeros(nt + ns)
    uv[idx] = splu(k[idx][:, idx].tocsc()).solve(rhs[idx])
    corrected = o.data * (1 + uv[:nt][rows] + uv[nt:][cols])
    rs2 = np.bincount(rows, weights=corrected, minlength=nt)
    cs2 = np.bincount(cols, weights=corrected, minlength=ns)
    err = max(np.abs(rs2 / row_target - 1).max(), np.abs(cs2 / col_target - 1).max())
    if (corrected <= 0).any() or not err < 1e-9:
        warnings.warn(f"conservative weights could not be balanced exactly (residual {err:.1e}): the global "
                      "integral is conserved only approximately; raise `supersample`", RuntimeWarning, stacklevel=3)
        return o
    o.data = corrected
    scale_rows()   # rows exact to rounding (constants stay constant); columns stay within ~1e-12
    return o
