"""Equivariance error: exactly equivariant operators measure ~0, scrambling
ones ~1, and graph Laplacians land in the order the papers report."""

import healpy as hp
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import graphsphere as gs
from graphsphere import kernel_widths as kw
from graphsphere import rotation as rot
from graphsphere.equivariance import EquivarianceProbe, EquivarianceResult, equivariance_error, rotation_floor
from graphsphere.sampling.equiangular import Equiangular
from graphsphere.sampling.gauss_legendre import GaussLegendre


GL = GaussLegendre(16)  # exact transforms up to lmax 15: rotations exact to round-off


def heat_filter(sampling, lmax, tau=0.01):
    """exp(-tau l(l+1)) in the spherical-harmonic domain: exactly equivariant."""
    l, _ = hp.Alm.getlm(lmax)
    h = np.exp(-tau * l * (l + 1))
    return lambda x: rot.alm2map(h[:, None] * rot.map2alm(x, sampling, lmax), sampling, lmax)


def test_exactly_equivariant_operators_measure_round_off():
    # f -> f^2 (degree 2l <= lmax here) and a spherical-harmonic filter commute with rotations.
    for op in (np.square, heat_filter(GL, 15)):
        res = equivariance_error(op, GL, degrees=(2, 5, 7), n_signals=2, n_rotations=2)
        assert res.error.max() < 1e-10, res
        assert res.floor.max() < 1e-12 and res.floor_direct.max() < 1e-12


def test_pointwise_square_on_healpix_is_at_the_rotation_floor():
    s = gs.sampling.HEALPix(nside=16)
    acc = equivariance_error(np.square, s, degrees=(3, 8), n_signals=2, n_rotations=2, lmax=32)
    raw = equivariance_error(np.square, s, degrees=(3, 8), n_signals=2, n_rotations=2, lmax=32,
                             rotation="non_iterated")
    assert acc.error.max() < 1e-3
    assert acc.error.max() < raw.error.max() / 10   # the non-iterated rotation's own error shows


def test_scrambling_operators_measure_order_one():
    perm = np.random.default_rng(0).permutation(GL.npix)
    res = equivariance_error(lambda x: x[perm], GL, degrees=(3, 10), n_signals=2, n_rotations=2)
    assert np.all(res.error > 0.8)   # ~sqrt(2): R P f and P R f are unrelated maps
    s = Equiangular(32, 64, poles="SOFT")
    grid = gs.SphereGraph(s, k=4, neighbours="grid")
    res = equivariance_error(grid, s, degrees=(4, 12), n_signals=2, n_rotations=2)
    assert np.all(res.error > 0.3), res


def test_graph_laplacians_order_as_in_the_papers():
    s = gs.sampling.HEALPix(nside=32)
    graphs = {"k8 mean": gs.SphereGraph(s, k=8, kernel_width="mean"),
              "k8 tuned": gs.SphereGraph(s, k=8, kernel_width=kw.published_t(32, 8)),
              "k20 tuned": gs.SphereGraph(s, k=20, kernel_width=kw.published_t(32, 20))}
    res = equivariance_error(graphs, s, degrees=(8, 16, 32), n_signals=2, n_rotations=2)
    e = {k: r.error for k, r in res.items()}
    # measured (seed 0): 0.57/0.28/0.17, 0.19/0.085/0.048, 0.048/0.021/0.012; floor <= 0.0015
    assert np.all(e["k8 mean"] > 2 * e["k8 tuned"])
    assert np.all(e["k8 tuned"] > 2 * e["k20 tuned"])
    assert np.all(res["k8 mean"].floor < e["k20 tuned"] / 5)


def test_non_iterated_rotations_inflate_the_low_degree_error():
    # The papers' protocol: the rotation error, amplified by the small eigenvalue at low l.
    s = gs.sampling.HEALPix(nside=32)
    g = gs.SphereGraph(s, k=20, kernel_width=kw.published_t(32, 20))
    acc = equivariance_error(g, s, degrees=(4,), n_signals=2, n_rotations=2)
    raw = equivariance_error(g, s, degrees=(4,), n_signals=2, n_rotations=2, rotation="non_iterated")
    assert raw.error[0] > 2 * acc.error[0]   # measured: 0.57 against 0.13


def test_operator_kinds_agree():
    s = gs.sampling.HEALPix(nside=8)
    g = gs.SphereGraph(s, k=8, kernel_width="mean")
    L = g.L
    coo = L.tocoo()
    Lt = torch.sparse_coo_tensor(np.stack([coo.row, coo.col]), coo.data, L.shape, check_invariants=True).coalesce()

    class Module(torch.nn.Module):
        def forward(self, x):  # [B, V, C] -> [B, V, 2C]: two channels, L x and 2 L x
            y = torch.stack([torch.sparse.mm(Lt, xb.double()) for xb in x]).float()
            return torch.cat([y, 2 * y], dim=-1)

    probe = EquivarianceProbe(s, degrees=(3, 6), n_signals=2, n_rotations=2)
    ref = probe.measure(L).error
    assert np.allclose(probe.measure(g).error, ref)
    assert np.allclose(probe.measure(L.toarray()).error, ref)
    assert np.allclose(probe.measure(lambda x: L @ x).error, ref)
    assert np.allclose(probe.measure(lambda x: L @ x if x.ndim == 1 else None).error, ref)  # 1-D only
    assert np.allclose(probe.measure(Module()).error, ref, rtol=1e-4)


def test_same_seed_same_draws_and_floor_matches():
    s = gs.sampling.HEALPix(nside=8)
    a = equivariance_error(sp.identity(s.npix), s, degrees=(2, 5), n_signals=2, n_rotations=2, seed=3)
    b = rotation_floor(s, degrees=(2, 5), n_signals=2, n_rotations=2, seed=3)
    assert np.allclose(a.floor, b.error) and np.allclose(a.error, 0, atol=1e-12)
    back = EquivarianceResult.from_dict(a.to_dict())
    assert np.array_equal(back.error, a.error) and back.rotation == "accurate"


def test_bad_inputs_say_what_is_wrong():
    s = gs.sampling.HEALPix(nside=4)
    with pytest.raises(ValueError, match="degrees"):
        equivariance_error(sp.identity(s.npix), s, degrees=(50,))
    with pytest.raises(ValueError, match="rotation"):
        equivariance_error(sp.identity(s.npix), s, degrees=(2,), rotation="exact")
    with pytest.raises(ValueError, match="output_sampling"):
        equivariance_error(lambda x: x[:48], s, degrees=(2,), n_signals=1, n_rotations=1)
    with pytest.raises(TypeError, match="operator"):
        equivariance_error("laplacian", s, degrees=(2,))


def test_pooling_operator_with_output_sampling():
    s = gs.sampling.HEALPix(nside=8)
    coarse, assign = s.coarsen()
    pool = sp.diags(1 / np.asarray(assign.sum(axis=1)).ravel()) @ assign   # mean of 4 children
    res = equivariance_error(pool, s, degrees=(2, 4), n_signals=2, n_rotations=2, output_sampling=coarse)
    assert np.all(res.error < 0.05)   # averaging neighbours nearly commutes with rotations at low l


def test_equiangular_grid_graph_structure():
    s = Equiangular(6, 8)  # Driscoll-Healy: the first row is the north pole, 8 times
    W = gs.SphereGraph(s, k=4, neighbours="grid").W
    assert (W != W.T).nnz == 0
    nnb = W.getnnz(axis=1).reshape(6, 8)
    assert np.all(nnb[0] == 1)          # pole copies join only the row below
    assert np.all(nnb[1:-1] == 4) and np.all(nnb[-1] == 3)
    i, j = 9, 10                         # row 1, columns 1 and 2: east neighbours
    d = np.arccos(s.xyz[i] @ s.xyz[j])
    assert W[i, j] == pytest.approx(1 / d)
    assert W[8, 15] > 0                  # longitude wraps around
    with pytest.raises(TypeError, match="latitude-longitude"):
        gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=4, neighbours="grid")


def test_equivariance_command_writes_json_and_pictures(tmp_path):
    import json

    from graphsphere.cli import main

    rc = main(["equivariance", "--sampling", "healpix:8", "--graphs", "k8:mean", "k8:tuned", "--degrees", "2", "4",
               "--signals", "1", "--rotations", "1", "--rotation", "accurate", "non_iterated", "--out", str(tmp_path)])
    assert rc == 0
    rec = json.loads((tmp_path / "equivariance_healpix8.json").read_text())
    mean, tuned = (rec["results"]["accurate"][k]["error"] for k in ("k=8, mean", "k=8, tuned"))
    assert tuned[0] < mean[0]
    assert (tmp_path / "equivariance_healpix8_non_iterated.png").stat().st_size > 10_000
    assert main(["equivariance", "--sampling", "cube:3"]) == 2
