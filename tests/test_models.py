"""SphericalCNN and SphericalUNet: shapes, invariance to an exact symmetry of
the HEALPix grid, save/load without graph building, training, errors."""

import healpy as hp
import numpy as np
import pytest
import torch

import graphsphere as gs
import graphsphere.models as models
from graphsphere.models import SphericalCNN, SphericalUNet
from graphsphere.nn.pool import Unpool

HEALPix = gs.sampling.HEALPix


# Tiny tensors: threads only add overhead (and contend on a shared machine).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def s8():
    return HEALPix(nside=8)


@pytest.fixture(scope="module")
def s16():
    return HEALPix(nside=16)


def _z90_permutation(nside):
    """NESTED pixel i -> the pixel its centre lands on after a 90 degree
    rotation about z (an exact symmetry of the HEALPix grid)."""
    x, y, z = hp.pix2vec(nside, np.arange(12 * nside**2), nest=True)
    perm = hp.vec2pix(nside, -y, x, z, nest=True)
    assert np.array_equal(np.sort(perm), np.arange(perm.size)), "not a bijection"
    xr, yr, zr = hp.pix2vec(nside, perm, nest=True)
    np.testing.assert_allclose(np.stack([xr, yr, zr]), np.stack([-y, x, z]), atol=1e-12)
    return torch.from_numpy(perm)


def _rotate(x, perm):
    out = torch.empty_like(x)
    out[:, perm] = x
    return out


# -- shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["conv", "global", "fc"])
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_cnn_output_shapes(s8, head, pool):
    gp = "meanvar" if head == "global" else "mean"
    m = SphericalCNN(s8, in_channels=2, out_features=3, channels=(4, 8), K=3, head=head, pool=pool,
                     global_pool=gp, dropout=0.1)
    assert m.npix_levels == [768, 192, 48]
    assert m(torch.randn(5, 768, 2)).shape == (5, 3)
    assert m.blocks[1].conv.vertices == 192
    if head == "conv":
        assert m.head_conv.vertices == 48
    if head == "fc":
        assert m.fc.in_features == 48 * 8


def test_published_architectures_build(s16):
    """The three published variants (REFERENCE.md section 5) at small scale."""
    fcn = SphericalCNN(s16, 1, 2, channels=(16, 32, 64, 64), K=5, head="conv")
    cnn = SphericalCNN(s16, 1, 2, channels=(16, 32, 64, 64), K=5, head="fc")
    shrec = SphericalCNN(s16, 6, 55, channels=(16, 32, 64, 128), K=4, head="global")
    x = torch.randn(2, s16.npix, 1)
    assert fcn(x).shape == cnn(x).shape == (2, 2)
    assert shrec(torch.randn(2, s16.npix, 6)).shape == (2, 55)
    # GC16..GC128 with K=4 and a 128 -> 55 linear layer: weights counted by hand.
    conv_w = 4 * (6 * 16 + 16 * 32 + 32 * 64 + 64 * 128)
    bn = 2 * (16 + 32 + 64 + 128)
    assert sum(p.numel() for p in shrec.parameters()) == conv_w + bn + 128 * 55 + 55


def test_unet_output_shape(s8):
    for unpool in ["repeat", "max"]:
        u = SphericalUNet(s8, in_channels=3, out_channels=5, channels=(4, 8, 16), K=3, unpool=unpool)
        assert u(torch.randn(2, 768, 3)).shape == (2, 768, 5)
    # Encoder and decoder convolutions of a level share one operator module, owned by the model.
    assert u.decoder[0].conv.graph_operator is u.encoder[0].conv.graph_operator is u.operators["0"]
    assert u.head.graph_operator is u.operators["0"] and u.encoder[1].conv.graph_operator is u.operators["1"]
    # ... held once (named_buffers lists each tensor once) and never in the state_dict
    names = [n for n, _ in u.named_buffers() if n.endswith(".values")]
    assert len(names) == 3 and not any(k.endswith(("values", "indptr", "indices")) for k in u.state_dict())


# -- invariance ---------------------------------------------------------------------------------------
def test_fcn_invariant_fc_head_not(s16):
    """A 90 degree rotation about z permutes the HEALPix pixels and their
    nested hierarchy. The graph is invariant up to k-NN ties (measured: the
    FCN output moves ~1e-3 relative); a flatten + linear head is not
    invariant (~0.2 relative)."""
    perm = _z90_permutation(16)
    x = torch.randn(8, s16.npix, 1, generator=torch.Generator().manual_seed(0))
    xr = _rotate(x, perm)
    rel = {}
    for head in ["conv", "global", "fc"]:
        torch.manual_seed(1)
        m = SphericalCNN(s16, 1, 4, channels=(8, 16, 16), K=5, head=head).eval()
        with torch.no_grad():
            a, b = m(x), m(xr)
        rel[head] = float((a - b).norm() / a.norm())
    assert rel["conv"] < 1e-2 and rel["global"] < 1e-2, rel
    assert rel["fc"] > 5e-2, rel
    assert rel["fc"] > 20 * max(rel["conv"], rel["global"]), rel


def test_unet_equivariant_to_grid_symmetry(s16):
    perm = _z90_permutation(16)
    x = torch.randn(4, s16.npix, 1, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    u = SphericalUNet(s16, 1, 2, channels=(8, 16, 16), K=4).eval()
    with torch.no_grad():
        a, b = _rotate(u(x), perm), u(_rotate(x, perm))
    assert float((a - b).norm() / a.norm()) < 1e-2


# -- persistence --------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["conv", "global", "fc"])
def test_cnn_save_load_round_trip(s8, tmp_path, head):
    torch.manual_seed(0)
    m = SphericalCNN(s8, 2, 3, channels=(4, 8), K=3, head=head, pool="avg", global_pool="max", task="regression")
    m.train()
    m(torch.randn(4, 768, 2))  # move the batch-norm statistics away from their defaults
    m.eval()
    x = torch.randn(3, 768, 2)
    path = tmp_path / "cnn.pt"
    m.save(path)
    m2 = SphericalCNN.load(path).eval()
    assert m2.config == m.config and m2.sampling == m.sampling
    torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)
    assert type(models.load(path)) is SphericalCNN          # the generic loader reads the class from the file
    assert [p.name for p in tmp_path.iterdir()] == ["cnn.pt"]  # atomic write left nothing behind


def test_unet_save_load_round_trip(tmp_path):
    s = HEALPix(nside=8, indices=np.arange(256, 512))  # partial sky: the ids travel in the file
    torch.manual_seed(0)
    u = SphericalUNet(s, 1, 3, channels=(4, 8, 8), K=3, unpool="max").eval()
    x = torch.randn(2, s.npix, 1)
    u.save(tmp_path / "unet.pt")
    u2 = SphericalUNet.load(tmp_path / "unet.pt").eval()
    assert np.array_equal(u2.sampling.indices, s.indices)
    torch.testing.assert_close(u2(x), u(x), rtol=0, atol=0)
    assert u2.decoder[0].conv.graph_operator is u2.encoder[0].conv.graph_operator
    with pytest.raises(ValueError, match="holds a SphericalUNet"):
        SphericalCNN.load(tmp_path / "unet.pt")


def test_saved_on_one_dtype_loads_on_another(s8, tmp_path):
    torch.manual_seed(0)
    m = SphericalCNN(s8, 1, 2, channels=(4, 8), K=3).double().eval()
    assert m.operators["0"].values.dtype == torch.float64       # operators follow .to(dtype)
    x = torch.randn(2, 768, 1, dtype=torch.float64)
    m.save(tmp_path / "m64.pt")
    m32 = SphericalCNN.load(tmp_path / "m64.pt").eval()           # weights cast into a float32 model
    assert m32.blocks[0].conv.weight.dtype == torch.float32 and m32.operators["0"].values.dtype == torch.float32
    torch.testing.assert_close(m32(x.float()).double(), m(x), rtol=1e-4, atol=1e-5)
    on_meta = SphericalCNN.load(tmp_path / "m64.pt", map_location="meta")  # any device: all tensors follow
    assert {t.device.type for t in [*on_meta.parameters(), *on_meta.buffers()]} == {"meta"}


def test_large_graphs_come_from_the_cache_on_load(tmp_path, monkeypatch):
    from graphsphere import graph as graph_mod

    monkeypatch.setenv("GRAPHSPHERE_CACHE", str(tmp_path))
    monkeypatch.setattr(graph_mod, "CACHE_MIN_NPIX", 1000)
    s = HEALPix(nside=16)
    m = SphericalCNN(s, 1, 2, channels=(4, 8), K=3).eval()
    m.save(tmp_path / "m.pt")
    built = []
    monkeypatch.setattr(graph_mod, "_build", lambda *a, **k: built.append(a[0].npix) or _real_build(*a, **k))
    m2 = SphericalCNN.load(tmp_path / "m.pt").eval()
    assert built == [768]                          # only the small coarse level was rebuilt
    x = torch.randn(2, s.npix, 1)
    torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)


from graphsphere.graph import _build as _real_build  # noqa: E402


@pytest.mark.parametrize("name", ["cnn", "unet"])
def test_files_of_graphsphere_0_1_load_and_give_the_same_outputs(name):
    from pathlib import Path

    data = Path(__file__).parent / "data"
    m = models.load(data / f"v1_model_{name}.pt").eval()
    io = torch.load(data / f"v1_model_{name}_io.pt", weights_only=True)
    # the same graphs and weights: equal up to the float32 rounding of the kernel's summation order
    torch.testing.assert_close(m(io["x"]), io["y"], rtol=1e-5, atol=1e-6)


def test_unknown_format_is_a_clear_error(s8, tmp_path):
    state = SphericalCNN(s8, 1, 2, channels=(4,), K=2).to_state()
    state["format"] = 99
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format 99 is not supported.*formats 1 and 2"):
        models.load(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt is not a readable graphsphere model file"):
        models.load(tmp_path / "junk.pt")


# -- training -----------------------------------------------------------------------------------------
def test_cnn_learns_smooth_vs_white(s8):
    """Maps constant on nside-2 cells vs white noise: separable by their
    spectrum, not their mean or variance. A tiny FCN learns it in 30 steps."""
    g = torch.Generator().manual_seed(0)
    up = [Unpool(HEALPix(nside=4)), Unpool(s8)]

    def data(n):
        smooth = up[1](up[0](torch.randn(n, 48, 1, generator=g)))
        white = torch.randn(n, 768, 1, generator=g)
        return torch.cat([smooth, white]), torch.cat([torch.zeros(n), torch.ones(n)]).long()

    x, y = data(16)
    torch.manual_seed(0)
    m = SphericalCNN(s8, 1, 2, channels=(8, 8), K=3, head="conv")
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = m.loss(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses
    xt, yt = data(16)
    assert (m.predict(xt) == yt).float().mean() >= 0.9
    torch.testing.assert_close(m.predict_proba(xt).argmax(1), m.predict(xt))


def test_unet_skip_connections_matter(s8):
    """Reproducing white noise (identity) needs full-resolution detail: with
    skip connections the U-Net gets far below the variance; without them the
    pooled bottleneck cannot."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 768, 1, generator=g)
    final = {}
    for skip in [True, False]:
        torch.manual_seed(0)
        u = SphericalUNet(s8, 1, 1, channels=(8, 8), K=3, skip=skip, task="regression")
        opt = torch.optim.Adam(u.parameters(), lr=1e-2)
        for _ in range(30):
            opt.zero_grad()
            loss = u.loss(u(x), x)
            loss.backward()
            opt.step()
        final[skip] = loss.item()
    assert final[True] < 0.2 and final[False] > 0.4 and final[True] < 0.3 * final[False], final


# -- other samplings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["equiangular", "icosahedral"])
def test_other_samplings(name, tmp_path):
    if name == "equiangular":
        s = pytest.importorskip("graphsphere.sampling.equiangular").Equiangular(16, 32)
    else:
        s = pytest.importorskip("graphsphere.sampling.icosahedral").Icosahedral(3)
    torch.manual_seed(0)
    m = SphericalCNN(s, 1, 2, channels=(4, 8), K=3, head="conv").eval()
    u = SphericalUNet(s, 1, 2, channels=(4, 8, 8), K=3).eval()
    x = torch.randn(2, s.npix, 1)
    assert m(x).shape == (2, 2) and u(x).shape == (2, s.npix, 2)
    if name == "equiangular":  # unequal pixel areas: the global mean is area-weighted
        assert m.global_pool.area.numel() == m.npix_levels[-1]
    m.save(tmp_path / "m.pt")
    torch.testing.assert_close(SphericalCNN.load(tmp_path / "m.pt").eval()(x), m(x), rtol=0, atol=0)


# -- errors -------------------------------------------------------------------------------------------
def test_clear_errors(s8):
    with pytest.raises(ValueError, match=r"can be pooled 3 time\(s\), but .* needs 4"):
        SphericalCNN(s8, 1, 2, channels=(4, 4, 4, 4))
    with pytest.raises(ValueError, match="extend_footprint"):
        SphericalCNN(HEALPix(nside=8, indices=np.arange(10)), 1, 2, channels=(4,))
    m = SphericalCNN(s8, 2, 3, channels=(4,), K=2)
    with pytest.raises(ValueError, match="expects 768 vertices, got 767"):
        m(torch.randn(1, 767, 2))
    with pytest.raises(ValueError, match="expects 2 input channel"):
        m(torch.randn(1, 768, 1))
    with pytest.raises(ValueError, match=r"x\[\.\.\., None\]"):
        SphericalCNN(s8, 1, 3, channels=(4,), K=2)(torch.randn(1, 768))
    with pytest.raises(ValueError, match="meanvar"):
        SphericalCNN(s8, 1, 2, head="conv", global_pool="meanvar")
    with pytest.raises(ValueError, match="head must be"):
        SphericalCNN(s8, 1, 2, head="dense")
    with pytest.raises(ValueError, match=r"channels=\(16,\)"):
        SphericalCNN(s8, 1, 2, channels=16)
    with pytest.raises(ValueError, match="needs pool='max'"):
        SphericalUNet(s8, 1, 2, pool="avg", unpool="max")
    with pytest.raises(ValueError, match="at least two levels"):
        SphericalUNet(s8, 1, 2, channels=(8,))
