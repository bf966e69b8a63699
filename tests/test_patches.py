"""Predicting in patches (issue 15, item 5): the cores tile the sky once, the error against one pass
falls with the border and is float rounding once the border holds the receptive field (computed
from K and the levels, checked against autograd), the patch operators are the full sky's restricted
(checked against SciPy), partial and RING skies, clear errors, and the engine and CLI path."""

import itertools

import healpy as hp
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import graphsphere as gs
from graphsphere.models.patches import patch_model, predict_in_patches, receptive_border, sky_patches


def unet(sampling, seed=0, **kw):
    """A small U-Net in eval mode with batch-norm statistics that are not the identity's."""
    torch.manual_seed(seed)
    kw = {"channels": (4, 8), "K": 2, "task": "regression", **kw}
    m = gs.models.SphericalUNet(sampling, 2, 3, **kw)
    for mod in m.modules():
        if getattr(mod, "running_mean", None) is not None:
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


S16 = gs.sampling.HEALPix(nside=16)


@pytest.fixture(scope="module")
def model16():
    return unet(S16)


@pytest.fixture(scope="module")
def x16():
    return torch.randn(2, S16.npix, 2, generator=torch.Generator().manual_seed(1))


# -- the tiling ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch_nside", [1, 2, 8])
def test_cores_tile_the_full_sky_once_and_lie_under_their_patch_pixel(patch_nside):
    patches = sky_patches(S16, patch_nside, border=1, unit_nside=8)
    assert [p.index for p in patches] == list(range(12 * patch_nside**2))
    cores = np.concatenate([p.core for p in patches])
    np.testing.assert_array_equal(np.sort(cores), np.arange(S16.npix))       # each pixel in exactly one core
    for p in patches[::5]:
        # healpy, independently: the centre of every core pixel falls in the patch's pixel at patch_nside
        theta, phi = hp.pix2ang(16, p.core, nest=True)
        assert np.all(hp.ang2pix(patch_nside, theta, phi, nest=True) == p.index)
        assert np.all(np.diff(p.pixels) > 0) and np.array_equal(p.pixels[p.core_in_patch], p.core)
        assert p.pixels.size % 4 == 0 and np.all(np.bincount(p.pixels // 4) % 4 == 0)   # whole unit pixels


def test_borders_grow_by_healpix_rings_of_unit_pixels():
    # one unit pixel inside a base face: 3 x 3, then 5 x 5 unit pixels (4 pixels each at nside 16)
    inner = 8 * 8 * 4 + 27          # base pixel 4, nested id 27 at nside 8: away from the face's edges
    x, y, f = hp.pix2xyf(8, inner, nest=True)
    assert 2 <= x <= 5 and 2 <= y <= 5 and f == 4
    for border, units in [(0, 1), (1, 9), (2, 25)]:
        p = sky_patches(S16, 8, border, unit_nside=8)[inner]
        assert p.pixels.size == 4 * units
    # a unit pixel at a corner where only three base pixels meet has 7 neighbours
    corner = next(i for i in range(768) if (hp.get_all_neighbours(8, i, nest=True) < 0).any())
    assert sky_patches(S16, 8, 1, unit_nside=8)[corner].pixels.size == 4 * 8


def test_cores_tile_a_shuffled_partial_ring_sky_once():
    nested = np.arange(3 * 256, 7 * 256)                   # base pixels 3 to 6 at nside 16
    ring = hp.nest2ring(16, nested)[np.random.default_rng(0).permutation(nested.size)]
    s = gs.sampling.HEALPix(nside=16, nest=False, indices=ring)
    patches = sky_patches(s, 2, border=2, unit_nside=8)
    assert [p.index for p in patches] == list(range(12, 28))                  # only patches with sky under them
    np.testing.assert_array_equal(np.sort(np.concatenate([p.core for p in patches])), np.arange(s.npix))
    for p in patches:                                                          # positions in the data's order
        assert set(hp.ring2nest(16, ring[p.core]) // 64) == {p.index}
        assert p.pixels.max() < s.npix


# -- the error against one pass ---------------------------------------------------------------------

def test_error_falls_with_the_border_and_is_rounding_at_the_receptive_field(model16, x16):
    border = receptive_border(model16)
    # K = 2, levels 0 and 1, k = 8 edges spanning up to 2 rings: 2 + 2 at level 0, 2 at level 1, + 2,
    # 8 back at level 0, + 2: 10 rings at nside 16, 5 at the unit nside 8
    assert border == 5
    with torch.no_grad():
        full = model16(x16)
    errors = [rel(predict_in_patches(model16, x16, 2, b, progress=False), full) for b in range(border + 1)]
    assert errors[0] > 0.3, errors                                    # no context: clearly wrong
    assert all(b < a for a, b in itertools.pairwise(errors)), errors  # every ring of context helps
    assert errors[border - 1] > 1e-6, errors                          # the receptive field reaches ring 5 ...
    assert errors[border] < 1e-6, errors                              # ... and no further: float rounding


def test_receptive_border_holds_what_autograd_says_each_core_depends_on():
    # average pooling and a batch of random maps: every dependency shows in the gradient
    m = unet(S16, pool="avg", batchnorm=False, channels=(4, 4))
    border = receptive_border(m)
    x = torch.randn(4, S16.npix, 2, requires_grad=True)
    y = m(x)
    reached_outside = False
    for p, q in zip(sky_patches(S16, 2, border, unit_nside=8), sky_patches(S16, 2, border - 1, unit_nside=8)):
        (g,) = torch.autograd.grad(y[:, p.core].sum(), x, retain_graph=True)
        depends = np.flatnonzero(g.abs().sum(dim=(0, 2)).numpy() > 0)
        assert np.isin(depends, p.pixels).all(), f"patch {p.index}: inputs outside its border"
        reached_outside |= not np.isin(depends, q.pixels).all()
    assert reached_outside                                            # one ring less would not do


def test_edge_reach_of_the_graphs_matches_breadth_first_search():
    # hops measured on the model's graphs equal ring distances found by growing HEALPix rings
    s = gs.sampling.HEALPix(nside=8)
    for k, expected in [(8, 2), (20, 3)]:
        m = gs.models.SphericalUNet(s, 1, 1, channels=(4, 4), K=2, k=k)
        hops = []
        for level in range(2):
            nside = 8 >> level
            W = m.operators[str(level)].operator.to_torch().to_dense().numpy() != 0
            nb = hp.get_all_neighbours(nside, np.arange(12 * nside**2), nest=True)
            A = np.eye(W.shape[0], dtype=bool)
            for j in range(8):
                ok = nb[j] >= 0
                A[np.flatnonzero(ok), nb[j][ok]] = True
            reach, ring = 0, np.eye(W.shape[0], dtype=bool)
            while not ring[W].all():
                ring = ring | ((ring.astype(np.int32) @ A.astype(np.int32)) > 0)
                reach += 1
            hops.append(reach)
        assert max(hops) == expected
        assert receptive_border(m) == receptive_border(m, hops=hops)


@pytest.mark.parametrize("sky", ["full NESTED", "shuffled partial RING"])
def test_patch_operators_are_the_full_sky_operators_restricted(sky):
    # SciPy's submatrix as the reference (positions in the data's order)
    nested = np.arange(2 * 256, 8 * 256)
    ring = hp.nest2ring(16, nested)[np.random.default_rng(1).permutation(nested.size)]
    s = S16 if sky == "full NESTED" else gs.sampling.HEALPix(nside=16, nest=False, indices=ring)
    m = unet(s)
    levels = [t for t, _ in s.pyramid(1)]
    p = sky_patches(s, 2, 1, unit_nside=8)[3]
    pm = patch_model(m, p.pixels)
    for level, (patch_level, _) in enumerate(pm.sampling.pyramid(1)):
        full = m.operators[str(level)].operator.to_torch()
        full = sp.csr_matrix((full.values().numpy(), full.col_indices().numpy(), full.crow_indices().numpy()))
        where = {pix: i for i, pix in enumerate(levels[level].pixels)}
        pos = np.array([where[pix] for pix in patch_level.pixels])
        got = pm.operators[str(level)].operator.to_torch().to_dense().numpy()
        np.testing.assert_array_equal(got, full[pos][:, pos].toarray())


def test_restriction_to_positions_in_any_order_matches_scipy():
    from graphsphere.models.patches import _restrict

    g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8)
    full = sp.csr_matrix(g.operator())
    for pos in (np.arange(20, 90), np.random.default_rng(3).permutation(192)[:70]):
        op = _restrict(full.indptr, full.indices, torch.from_numpy(full.data), pos)
        got = sp.csr_matrix((op.values.numpy(), op.indices.numpy(), op.indptr.numpy()), shape=(70, 70))
        assert np.all(np.diff(got.indices)[np.diff(np.repeat(np.arange(70), np.diff(got.indptr))) == 0] > 0)
        np.testing.assert_array_equal(got.toarray(), full[pos][:, pos].toarray())


@pytest.mark.parametrize("nest", [True, False])
def test_partial_skies_in_any_order_equal_one_pass(nest):
    nested = np.arange(3 * 256, 7 * 256)
    ids = nested if nest else hp.nest2ring(16, nested)
    s = gs.sampling.HEALPix(nside=16, nest=nest, indices=ids[np.random.default_rng(2).permutation(ids.size)])
    m = unet(s)
    x = torch.randn(1, s.npix, 2)
    with torch.no_grad():
        full = m(x)
    assert rel(predict_in_patches(m, x, 1, progress=False), full) < 1e-6
    assert rel(predict_in_patches(m, x, 1, 0, progress=False), full) > 0.05


def test_float64_models_stay_float64_and_the_callers_rng_is_left_alone():
    m = unet(gs.sampling.HEALPix(nside=8)).double()
    x = torch.randn(1, 768, 2, dtype=torch.float64)
    state = torch.random.get_rng_state()
    y = predict_in_patches(m, x, 1, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)          # patch models' initial weights drew nothing
    assert y.dtype == torch.float64
    with torch.no_grad():
        assert rel(y, m(x)) < 1e-13


def test_progress_bar_and_batches(model16, x16, capsys):
    y = predict_in_patches(model16, x16, 1, 2, batch_size=1, progress=True)
    err = capsys.readouterr().err
    assert "patches" in err and "12/12" in err
    assert torch.equal(y, predict_in_patches(model16, x16, 1, 2, progress=False))


# -- errors ------------------------------------------------------------------------------------------

def test_clear_errors(model16, x16):
    with pytest.raises(TypeError, match="must be HEALPix"):
        sky_patches(gs.sampling.Equiangular(8, 16), 1, 1)
    with pytest.raises(ValueError, match="patch_nside: nside must be a power of two.*nearest: 2 or 4"):
        sky_patches(S16, 3, 1)
    with pytest.raises(ValueError, match="patch_nside 16 is finer than the unit nside 8.*patch_nside <= 8"):
        predict_in_patches(model16, x16, 16, 1)
    with pytest.raises(ValueError, match="border .* must be an integer >= 0, got -1"):
        sky_patches(S16, 2, -1)
    with pytest.raises(ValueError, match="border .* must be an integer >= 0, got 1.5"):
        sky_patches(S16, 2, 1.5)
    with pytest.raises(ValueError, match="not a union of whole pixels at the unit nside 8"):
        sky_patches(gs.sampling.HEALPix(nside=16, indices=np.arange(10)), 1, 1, unit_nside=8)
    with pytest.raises(ValueError, match="expects 2 input channel"):
        predict_in_patches(model16, x16[..., :1], 2, 1)
    cnn = gs.models.SphericalCNN(S16, 1, 2, channels=(4,), K=2, head="conv")
    with pytest.raises(ValueError, match="does not output one vector per pixel .*run it on the whole sky"):
        predict_in_patches(cnn, torch.randn(1, S16.npix, 1), 2)
    with pytest.raises(ValueError, match="does not output one vector per pixel"):
        predict_in_patches(cnn, torch.randn(1, S16.npix, 1), 2, border=1)


# -- the engine and the command line -------------------------------------------------------------------

def test_engine_and_command_line_predict_in_patches(tmp_path, capsys):
    pytest.importorskip("lightning")
    from graphsphere.cli import main
    from graphsphere.train import fit, predict

    s = gs.sampling.HEALPix(nside=8)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, s.npix, 2)).astype(np.float32)
    x[0, :5, 0] = np.nan                                              # missing inputs, filled by the module ...
    x[1, :3] = np.nan                                                 # ... and pixels with no input: no output
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.nan_to_num(x[..., :1]) * 3 + 1)
    run = fit({"task": "regression", "output_dir": str(tmp_path / "r"), "sampling": {"type": "HEALPix", "nside": 8},
               "data": {"name": "npy", "x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy"),
                        "check_order": False, "val_fraction": 0.34, "missing_inputs": "fill"},
               "model": {"type": "SphericalUNet", "channels": [4, 8], "K": 2},
               "trainer": {"max_epochs": 1, "batch_size": 2, "progress_bar": False, "loggers": ["csv"]}})
    ckpt = run.best_checkpoint
    one_pass = predict(ckpt, x, check_order=False)
    patched = predict(ckpt, x, check_order=False, patch_nside=2)       # border: the receptive field
    assert np.array_equal(np.isnan(patched), np.isnan(one_pass)) and np.isnan(one_pass).sum() == 3
    np.testing.assert_allclose(patched, one_pass, rtol=1e-5, atol=1e-5 * np.nanmax(np.abs(one_pass)))
    thin = predict(ckpt, x, check_order=False, patch_nside=2, border=0)
    assert np.nanmax(np.abs(thin - one_pass)) > 1e-3 * np.nanmax(np.abs(one_pass))
    with pytest.raises(ValueError, match="give patch_nside too"):
        predict(ckpt, x, check_order=False, border=1)
    assert main(["predict", str(ckpt), str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.npy"),
                 "--patch-nside", "2", "--border", "5", "--no-check-order"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), one_pass, rtol=1e-5,
                               atol=1e-5 * np.nanmax(np.abs(one_pass)))
    assert main(["predict", str(ckpt), str(tmp_path / "x.npy"), "--out", str(tmp_path / "q.npy"),
                 "--patch-nside", "2", "--border", "1", "--no-check-order"]) == 0
    assert not np.allclose(np.load(tmp_path / "q.npy"), one_pass, rtol=1e-5, atol=1e-5 * np.nanmax(np.abs(one_pass)),
                           equal_nan=True)
