"""Conventions a user meets at the borders (issue 17): a state_dict of another resolution, the
torch_geometric export with its lambda_max, and progress that a log file can hold (no carriage returns)."""

import pytest
import torch

import graphsphere as gs
from graphsphere.models import SphericalCNN
from graphsphere.nn import ChebConv

KW = dict(in_channels=1, out_features=2, channels=(4, 8), K=3)


@pytest.mark.parametrize("head", ["conv", "global"])
def test_state_dict_of_another_resolution_loads_by_design(head):
    """Operators are non-persistent buffers, so an nside-8 state_dict loads (strict) into an nside-16 model,
    which keeps its own operators: the K Chebyshev weights are a polynomial of whatever graph they act on."""
    torch.manual_seed(0)
    coarse = SphericalCNN(gs.sampling.HEALPix(nside=8), head=head, **KW)
    fine = SphericalCNN(gs.sampling.HEALPix(nside=16), head=head, **KW)
    with torch.no_grad():
        for p in coarse.parameters():
            p.normal_()
    own = {name: b.clone() for name, b in fine.operators.named_buffers()}
    result = fine.load_state_dict(coarse.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for (name, w), (other, v) in zip(fine.state_dict().items(), coarse.state_dict().items(), strict=True):
        assert name == other and torch.equal(w, v)                      # every weight is the nside-8 one
    for name, b in fine.operators.named_buffers():
        assert torch.equal(b, own[name])                                # ... the operators stay nside 16's
    assert fine.operators["0"].indptr.numel() == 12 * 16**2 + 1
    fine.eval()
    x = torch.randn(2, 12 * 16**2, 1)
    first = fine.blocks[0].conv
    ref = ChebConv(1, 4, K=3, graph=gs.SphereGraph(fine.sampling, k=8, kernel_width="auto"), bias=False)
    with torch.no_grad():
        ref.weight.copy_(coarse.blocks[0].conv.weight)
        torch.testing.assert_close(first(x), ref(x))   # the nside-8 filter applied on the nside-16 graph
        assert torch.isfinite(fine(x)).all()


def test_state_dict_of_another_resolution_refused_by_the_fc_head(tmp_path):
    """head="fc" has one weight per coarsest pixel: another resolution is a size mismatch, said by torch;
    model.save / load keeps the resolution (the file holds the sampling)."""
    coarse = SphericalCNN(gs.sampling.HEALPix(nside=8), head="fc", **KW)
    fine = SphericalCNN(gs.sampling.HEALPix(nside=16), head="fc", **KW)
    with pytest.raises(RuntimeError, match="size mismatch for fc.weight"):
        fine.load_state_dict(coarse.state_dict())
    coarse.save(tmp_path / "m.pt")
    assert SphericalCNN.load(tmp_path / "m.pt").sampling == gs.sampling.HEALPix(nside=8)


@pytest.mark.parametrize("laplacian", ["normalized", "combinatorial"])
def test_pyg_export_carries_lambda_max(laplacian):
    """``graph.to_pyg()`` splats into torch_geometric's ChebConv and gives graphsphere's ChebConv output; the
    old ``to_edge_index()`` without lambda_max gives another filter."""
    pyg = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(0)
    g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8, laplacian=laplacian)
    export = g.to_pyg()
    assert set(export) == {"edge_index", "edge_weight", "lambda_max"} and export["lambda_max"] == g.lambda_max
    edge_index, edge_weight = g.to_edge_index()                          # the old call, unchanged
    assert torch.equal(export["edge_index"], edge_index) and torch.equal(export["edge_weight"], edge_weight)
    ours = ChebConv(3, 5, K=4, graph=g)
    theirs = pyg.ChebConv(3, 5, K=4, normalization="sym" if laplacian == "normalized" else None)
    with torch.no_grad():
        ours.bias.normal_()
        for k, lin in enumerate(theirs.lins):
            lin.weight.copy_(ours.weight[k].t())                         # pyg: [out, in] per term
        theirs.bias.copy_(ours.bias)
        x = torch.randn(g.npix, 3)
        y = ours(x[None])[0]
        torch.testing.assert_close(theirs(x, **export), y, rtol=1e-4, atol=1e-5 * y.abs().max().item())
        forgotten = theirs(x, edge_index, edge_weight)                   # PyG's default lambda_max, 2
        assert (forgotten - y).norm() > 0.05 * y.norm()


def test_shapes_projection_progress_is_plain_lines_off_a_terminal(tmp_path, capsys):
    """Redirected output (not a terminal) gets the plain lines of graphsphere.data.progress, never tqdm's
    carriage-return frames."""
    trimesh = pytest.importorskip("trimesh")
    from graphsphere.data.shapes import ShapeCollection

    trimesh.creation.box(extents=(1, 2, 3)).export(tmp_path / "box.off")
    trimesh.creation.icosphere(1).export(tmp_path / "ball.off")
    shapes = ShapeCollection(gs.sampling.HEALPix(nside=2), tmp_path, categories={"box.off": "box", "ball.off": "ball"},
                             cache_dir=False)
    assert shapes.samples([(0, 0), (1, 0), (1, 1)]).shape == (3, 48, 6)
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    assert err.splitlines()[0] == "projecting meshes (samples): 3 to do"
    assert err.splitlines()[-1].startswith("projecting meshes (samples): 3/3 (100%), ")
    shapes.samples([(0, 1)], progress=False)
    assert capsys.readouterr() == ("", "")
