"""Pictures: maps drawn by healpy in the order they are in, wrong orders refused at every nside,
gap-free maps of every sampling, colourbars with units and legible ticks, error bars only where
there is a spread to show."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import healpy as hp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import graphsphere as gs  # noqa: E402
from graphsphere.plot import style  # noqa: E402
from graphsphere.plot.maps import mapview, mollview, savefig, scatter  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _image(ax) -> np.ndarray:
    return np.ma.filled(ax.get_images()[0].get_array().astype(float), np.nan)


def _smooth_map(nside: int, nest: bool) -> np.ndarray:
    """A large-scale map (a dipole plus a quadrupole), in the ordering asked for."""
    x, y, z = hp.pix2vec(nside, np.arange(12 * nside**2), nest=nest)
    return x + 2 * y + z**2


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # healpy 1.20's colormap calls, matplotlib 3.11
def test_mollview_draws_a_nested_map_as_healpy_draws_it_in_ring_order():
    s = gs.sampling.HEALPix(nside=8)
    m = _smooth_map(8, nest=True)
    ours = _image(mollview(m, nest=True, xsize=200, colorbar=False))
    ref = np.ma.filled(hp.mollview(hp.reorder(m, n2r=True), nest=False, return_projected_map=True, xsize=200)
                       .astype(float), np.nan)
    inside = np.isfinite(ref) & (np.abs(ref) < 1e20)
    assert inside.mean() > 0.7                                      # the ellipse: pi/4 of the rectangle
    np.testing.assert_array_equal(ours[inside], ref[inside])
    # the same through the sampling, and the sampling's order wins over nothing said
    np.testing.assert_array_equal(_image(mollview(m, sampling=s, xsize=200, colorbar=False))[inside], ref[inside])
    # the north is up: the top rows are near z = 1
    z = _image(mollview(s.xyz[:, 2], nest=True, xsize=200, colorbar=False))
    assert np.nanmean(z[-10:]) > 0.8 and np.nanmean(z[:10]) < -0.8


@pytest.mark.parametrize("nside", [4, 8, 16, 32, 64, 128])
@pytest.mark.parametrize("stored_nested", [True, False])
def test_a_map_in_the_other_order_is_refused_with_the_fix_at_every_nside(nside, stored_nested):
    m = _smooth_map(nside, nest=stored_nested)
    with pytest.raises(ValueError, match="healpy.reorder") as err:
        mollview(m, nest=not stored_nested, colorbar=False)
    assert f"nest={stored_nested}" in str(err.value)                # the other fix: say the right order
    mollview(m, nest=stored_nested, colorbar=False)                  # the right order draws
    mollview(m, nest=not stored_nested, check_order=False, colorbar=False)   # and the check can be skipped


def test_the_ordering_must_be_said():
    with pytest.raises(ValueError, match="nest=True .* or nest=False"):
        mollview(np.zeros(48))
    ring = gs.sampling.HEALPix(nside=4, nest=False)
    mollview(_smooth_map(4, nest=False), sampling=ring, colorbar=False)
    with pytest.raises(ValueError, match="contradicts the sampling"):
        mollview(np.zeros(192), sampling=ring, nest=True)
    with pytest.raises(ValueError, match="mapview"):
        mollview(np.zeros(32), sampling=gs.sampling.GaussLegendre(nlat=4))


def test_partial_sky_and_bad_input():
    ax = mollview(np.arange(16.0), indices=np.arange(16), nside=4, nest=True, xsize=120, colorbar=False)
    img = ax.get_images()[0].get_array()
    shown = ~np.ma.getmaskarray(img) & (np.ma.filled(img, hp.UNSEEN) > hp.UNSEEN / 2)
    assert 0.07 < shown.sum() / (np.pi / 4 * img.size) < 0.1         # 1/12 of the sky's ellipse
    with pytest.raises(ValueError, match="not a full HEALPix map"):
        mollview(np.ones(100), nest=True)
    with pytest.raises(ValueError, match="needs its nside"):
        mollview(np.ones(16), indices=np.arange(16), nest=True)


@pytest.mark.parametrize("sampling", [
    gs.sampling.HEALPix(nside=8), gs.sampling.Equiangular(nlat=16, nlon=32, poles="SOFT"),
    gs.sampling.GaussLegendre(nlat=12), gs.sampling.Icosahedral(level=2),
    gs.sampling.Points(lon=np.random.default_rng(0).uniform(0, 360, 300),
                       lat=np.degrees(np.arcsin(np.random.default_rng(1).uniform(-1, 1, 300))))],
    ids=lambda s: type(s).__name__)
def test_mapview_fills_the_sphere_with_each_pixels_value(sampling):
    values = np.random.default_rng(2).standard_normal(sampling.npix)
    ax = mapview(sampling, values, resolution=120, colorbar=False)
    img = ax.collections[0].get_array()
    assert img.shape == (60, 120)
    assert not np.ma.getmaskarray(img).any()                        # no gaps, whatever the sampling
    assert set(np.unique(img.filled())) <= set(values)              # only pixel values, no interpolation
    # a brute-force nearest pixel for a few cells (row 30, column 5 etc.; flip="geo": lon = x)
    for row, col in [(30, 5), (10, 60), (55, 100)]:
        lon = -np.pi + (col + 0.5) * 2 * np.pi / 120
        lat = -np.pi / 2 + (row + 0.5) * np.pi / 60
        v = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
        assert img[row, col] == values[np.argmax(sampling.xyz @ v)]


def test_colourbars_carry_units_and_legible_ticks(tmp_path):
    s = gs.sampling.HEALPix(nside=8)
    fig = plt.figure(figsize=(style.PAGE_WIDTH, 2.5))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    mollview(3e-4 * _smooth_map(8, True), sampling=s, ax=axes[0], unit="convergence")
    mapview(gs.sampling.GaussLegendre(nlat=8), np.linspace(-12345, 54321, 128), ax=plt.subplot(1, 3, 2,
            projection="mollweide"), unit="K")
    scatter(np.array([[10.0, 20.0], [30.0, -40.0]]), [0.5, 2.5], ax=plt.subplot(1, 3, 3, projection="mollweide"),
            unit="degrees C")
    fig.canvas.draw()
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert [b.get_xlabel() for b in bars] == ["convergence [\u00d7 1e-4]", "K [\u00d7 1e4]", "degrees C"]
    renderer = fig.canvas.get_renderer()
    for bar in bars:
        labels = [t for t in bar.get_xticklabels() if t.get_text()]
        assert 2 <= len(labels) <= 5
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    savefig(fig, tmp_path / "maps.png")
    img = plt.imread(tmp_path / "maps.png")
    assert img.shape[1] > 1000                                      # 7 inches at print resolution


def test_equivariance_error_bars_only_from_two_draws_and_markers_apart():
    from graphsphere.equivariance import EquivarianceResult
    from graphsphere.plot.equivariance import plot_equivariance

    def result(label, n_signals, n_rotations):
        d = np.array([2, 4, 8])
        return EquivarianceResult(d, np.full(3, 0.1), np.full(3, 0.02), np.full(3, 1e-3), np.full(3, 1e-3),
                                  "accurate", n_signals, n_rotations, "HEALPix", label)

    fig = plot_equivariance([result("one draw", 1, 1), result("four draws", 2, 2)])
    single, several = fig.axes[0].containers[:2]
    assert not single.has_yerr and several.has_yerr
    x1, x2 = single.lines[0].get_xdata(), several.lines[0].get_xdata()
    assert np.all(x1 < x2) and np.allclose(x1 / x2, x1[0] / x2[0])  # equal errors: side by side, not on top
    assert single.lines[0].get_markerfacecolor() == "none"


def test_figures_print_at_page_size(tmp_path):
    from graphsphere import spectral
    from graphsphere.plot.spectral import plot_spectrum

    fit = spectral.graph_spectrum_vs_ll1(gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8), lmax=3)
    fig = plot_spectrum(fit)
    assert fig.get_figwidth() == pytest.approx(style.PAGE_WIDTH)
    assert fig.axes[0].title.get_fontsize() == pytest.approx(style.STYLE["axes.titlesize"])
    savefig(fig, tmp_path / "s.png")
    assert plt.imread(tmp_path / "s.png").shape[1] == pytest.approx(style.PAGE_WIDTH * style.DPI, rel=0.1)
