"""Tests for the cosmology baselines: images from NESTED pixels (against
healpy.pix2xyf), SVM baselines on synthetic maps whose physics is known
(equal power spectra but different skewness, and the converse), the 2D ConvNet
and its parameter count against the DeepSphere FCN."""

import healpy as hp
import numpy as np
import pytest
import torch

from graphsphere.experiments.cosmology.baselines import (ConvNet2D, SVMBaseline, deepsphere_fcn_param_count,
                                                        histogram_edges, histogram_features, image_to_nested,
                                                        nested_image_index, nested_to_image, power_spectrum_features)
from graphsphere.sampling import HEALPix

NSIDE = 32
LMAX = 3 * NSIDE - 1


# ---------------------------------------------------------------------------
# Synthetic maps
# ---------------------------------------------------------------------------

def gaussian_map(cl, rng):
    """A NESTED Gaussian map with spectrum cl, from our own seeded a_lm."""
    lmax = len(cl) - 1
    ell, m = hp.Alm.getlm(lmax)
    sd = np.sqrt(cl[ell])
    re, im = rng.standard_normal((2, ell.size))
    alm = np.where(m == 0, sd * re, sd * (re + 1j * im) / np.sqrt(2))
    return hp.reorder(hp.alm2map(alm, NSIDE, lmax=lmax), r2n=True)


def legendre_table(lmax, mu):
    """P_l(mu) for l = 0..lmax, rows, by the three-term recurrence."""
    p = np.empty((lmax + 1, mu.size))
    p[0] = 1.0
    if lmax > 0:
        p[1] = mu
    for ell in range(1, lmax):
        p[ell + 1] = ((2 * ell + 1) * mu * p[ell] - ell * p[ell - 1]) / (ell + 1)
    return p


def lognormal_cl(cl_g, lmax):
    """C_l of y = exp(g - s^2/2) - 1 for a Gaussian g of spectrum cl_g:
    xi_y = exp(xi_g) - 1 in real space, Legendre transforms by Gauss quadrature."""
    ell = np.arange(len(cl_g))
    mu, w = np.polynomial.legendre.leggauss(4 * (len(cl_g) + lmax) + 8)
    table = legendre_table(max(len(cl_g) - 1, lmax), mu)
    xi_g = ((2 * ell + 1) / (4 * np.pi) * cl_g) @ table[:len(cl_g)]
    return 2 * np.pi * table[:lmax + 1] @ (w * np.expm1(xi_g))


def smooth_cl(fwhm_pixels, variance):
    """A red spectrum smoothed by a Gaussian beam, scaled to a pixel variance."""
    ell = np.arange(LMAX + 1)
    sigma = fwhm_pixels * hp.nside2resol(NSIDE) / np.sqrt(8 * np.log(2))
    cl = np.exp(-ell * (ell + 1) * sigma**2) / (ell + 1.0)
    cl[:2] = 0
    return cl * variance / np.sum((2 * ell + 1) / (4 * np.pi) * cl)


def patches(maps, order=1):
    """Cut NESTED full-sky maps into the (nside/order)^2-pixel patches of the data."""
    return maps.reshape(len(maps) * 12 * order**2, -1)


def split(class0, class1, n_train):
    """Train on the patches of the first n_train maps of each class, test on the rest
    (never patches of one map on both sides)."""
    def xy(a, b):
        x = np.concatenate([patches(a), patches(b)])
        return x, np.repeat([0, 1], len(x) // 2)
    return xy(class0[:n_train], class1[:n_train]) + xy(class0[n_train:], class1[n_train:])


@pytest.fixture(scope="module")
def equal_spectra():
    """Lognormal (skewed) vs Gaussian maps with the same C_l, hence the same variance."""
    rng = np.random.default_rng(7)
    cl_g = smooth_cl(3, variance=0.35**2)
    cl_y = lognormal_cl(cl_g, LMAX)
    shift = np.sum((2 * np.arange(LMAX + 1) + 1) / (4 * np.pi) * cl_g) / 2
    lognormal = np.array([np.expm1(gaussian_map(cl_g, rng) - shift) for _ in range(24)])
    gaussian = np.array([gaussian_map(cl_y, rng) for _ in range(24)])
    return lognormal, gaussian, cl_y


@pytest.fixture(scope="module")
def different_spectra():
    """Gaussian maps of equal variance, smooth (fwhm 4 px) vs rough (fwhm 1.5 px)."""
    rng = np.random.default_rng(8)
    smooth = np.array([gaussian_map(smooth_cl(4, 0.1), rng) for _ in range(14)])
    rough = np.array([gaussian_map(smooth_cl(1.5, 0.1), rng) for _ in range(14)])
    return smooth, rough


# ---------------------------------------------------------------------------
# NESTED pixels -> images, against healpy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("nside,order", [(8, 1), (16, 2), (64, 4), (32, 32)])
def test_patch_image_cells_match_healpy_pix2xyf(nside, order):
    n = nside // order
    rng = np.random.default_rng(0)
    # Patches at several coarse pixels, in polar and equatorial faces.
    for coarse in rng.choice(12 * order**2, size=min(5, 12 * order**2), replace=False):
        ids = coarse * n * n + np.arange(n * n)
        ix, iy, face = hp.pix2xyf(nside, ids, nest=True)
        assert np.all(face == face[0])
        img = nested_to_image(ids[None].astype(float))[0]
        assert img.shape == (n, n)
        # The pixel healpy puts at (ix, iy) must sit at image cell (ix, iy) - corner.
        np.testing.assert_array_equal(img[ix - ix.min(), iy - iy.min()], ids)


def test_full_sky_images_are_base_faces():
    nside = 16
    ids = np.arange(12 * nside**2)
    maps = np.stack([ids, -ids]).astype(float)        # batch of 2
    faces = nested_to_image(maps)
    assert faces.shape == (2, 12, nside, nside)
    ix, iy, face = hp.pix2xyf(nside, ids, nest=True)
    np.testing.assert_array_equal(faces[0, face, ix, iy], ids)
    np.testing.assert_array_equal(faces[1, face, ix, iy], -ids)
    np.testing.assert_array_equal(image_to_nested(faces, full_sky=True), maps)


def test_image_neighbours_are_sphere_neighbours():
    # Independent of pix2xyf: horizontally/vertically adjacent cells must be
    # HEALPix neighbours (healpy.get_all_neighbours) of each other.
    nside = 16
    img = nested_to_image(np.arange(16 * 16))      # patch 0 at order 1
    for a, b in [(img[:-1, :], img[1:, :]), (img[:, :-1], img[:, 1:])]:
        neigh = hp.get_all_neighbours(nside, a.ravel(), nest=True)
        assert np.all(np.any(neigh == b.ravel()[None, :], axis=0))


def test_face_transpose_is_a_mirror_but_rotation_is_not():
    # What train_convnet's docstring claims about augmentation: transposing a
    # whole base-face image mirrors it through the face's central meridian
    # (same colatitude, longitude reflected); a 90-degree rotation moves pixels
    # to other colatitudes, so it is no symmetry of the pixel grid.
    nside = 8
    faces = nested_to_image(np.arange(12 * nside**2))          # [12, n, n]
    theta, phi = hp.pix2ang(nside, faces, nest=True)
    theta_t, phi_t = hp.pix2ang(nside, faces.transpose(0, 2, 1), nest=True)
    _, phi_c = hp.pix2ang(1, np.arange(12), nest=True)
    offset = lambda p: np.angle(np.exp(1j * (p - phi_c[:, None, None])))
    np.testing.assert_allclose(theta_t, theta, atol=1e-12)
    np.testing.assert_allclose(offset(phi_t), -offset(phi), atol=1e-12)
    theta_r, _ = hp.pix2ang(nside, np.rot90(faces, axes=(1, 2)), nest=True)
    assert np.abs(theta_r - theta).max() > 0.1


def test_torch_batches_and_roundtrip():
    x = torch.randn(3, 4, 256)
    img = nested_to_image(x)
    assert isinstance(img, torch.Tensor) and img.shape == (3, 4, 16, 16)
    np.testing.assert_array_equal(img.numpy(), nested_to_image(x.numpy()))
    assert torch.equal(image_to_nested(img), x)
    one = nested_to_image(np.arange(64.0))
    assert one.shape == (8, 8) and one[0, 0] == 0 and one[1, 0] == 1 and one[0, 1] == 2
    assert nested_image_index(8).flags.writeable is False


@pytest.mark.parametrize("npix", [15, 32, 100, 12 * 15, 2 * 64])
def test_nested_to_image_rejects_bad_pixel_counts(npix):
    with pytest.raises(ValueError, match="n\\*n pixels"):
        nested_to_image(np.zeros((2, npix)))


def test_image_to_nested_rejects_bad_shapes():
    with pytest.raises(ValueError, match="square"):
        image_to_nested(np.zeros((2, 8, 4)))
    with pytest.raises(ValueError, match="power of two"):
        image_to_nested(np.zeros((2, 6, 6)))
    with pytest.raises(ValueError, match="12, nside, nside"):
        image_to_nested(np.zeros((2, 11, 8, 8)), full_sky=True)
    with pytest.raises(ValueError, match="scalar"):
        nested_to_image(np.float64(3.0))


# ---------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------

def test_lognormal_construction_has_the_intended_spectrum(equal_spectra):
    # Sanity of the test data itself: equal variance (xi_y(0) = exp(s^2) - 1)
    # and equal spectra, but very different skewness.
    lognormal, gaussian, cl_y = equal_spectra
    var_theory = np.sum((2 * np.arange(LMAX + 1) + 1) / (4 * np.pi) * cl_y)
    assert lognormal.var() == pytest.approx(var_theory, rel=0.05)
    assert gaussian.var() == pytest.approx(var_theory, rel=0.05)
    ell = np.arange(LMAX + 1)
    spec = lambda maps: np.mean([hp.anafast(hp.reorder(m, n2r=True), iter=0) for m in maps], 0)
    band = (ell >= 10) & (ell <= 80)
    ratio = spec(lognormal)[band].sum() / spec(gaussian)[band].sum()
    assert ratio == pytest.approx(1.0, abs=0.05)
    skew = lambda x: np.mean((x - x.mean()) ** 3) / x.std() ** 3
    assert skew(lognormal) > 1.0 and abs(skew(gaussian)) < 0.1


def test_anafast_features_recover_the_spectrum_of_a_patch():
    # For a Gaussian field, f_sky-corrected pseudo-C_l of a patch averages to C_l
    # where C_l is smooth on the mask's scale (a few l).
    # (A steeply falling C_l would leak through the sharp patch edge into high l.)
    rng = np.random.default_rng(3)
    cl = smooth_cl(0.5, 1.0)
    X = patches(np.array([gaussian_map(cl, rng) for _ in range(3)]), order=2)[::3]
    feats = power_spectrum_features(X, order=2, n_bins=6, lmin=12, lmax=64)
    edges = np.unique(np.round(np.geomspace(12, 65, 7)).astype(int))
    truth = np.log10([cl[lo:hi].mean() for lo, hi in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(feats.mean(0), truth, atol=0.12)


def test_histogram_features_match_numpy_histogram():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 300))
    edges = histogram_edges(X, bins=10, quantiles=(0.01, 0.99))
    np.testing.assert_allclose(edges[[0, -1]], np.quantile(X, [0.01, 0.99]))
    h = histogram_features(X, edges)
    clipped = np.clip(X, edges[0], edges[-1])       # tails go to the end bins
    ref = np.stack([np.histogram(x, edges)[0] for x in clipped]) / X.shape[1]
    np.testing.assert_allclose(h, ref)
    np.testing.assert_allclose(h.sum(1), 1.0)


def test_feature_errors():
    with pytest.raises(ValueError, match="order="):
        power_spectrum_features(np.zeros((2, 256)))
    with pytest.raises(ValueError, match="2D"):
        power_spectrum_features(np.zeros(256), order=1)
    with pytest.raises(ValueError, match="n\\*n pixels"):
        power_spectrum_features(np.zeros((2, 250)), order=1)
    with pytest.raises(ValueError, match="method"):
        power_spectrum_features(np.zeros((2, 256)), method="welch")
    with pytest.raises(ValueError, match="no spread"):
        histogram_edges(np.ones((3, 10)))
    with pytest.raises(ValueError, match="features"):
        SVMBaseline("peaks").fit(np.random.default_rng(0).normal(size=(10, 64)), np.arange(10) % 2)
    with pytest.raises(ValueError, match="one label per sample"):
        SVMBaseline().fit(np.random.default_rng(0).normal(size=(10, 64)), np.zeros(9))
    with pytest.raises(RuntimeError, match="fit"):
        SVMBaseline().predict(np.zeros((2, 64)))


# ---------------------------------------------------------------------------
# The physics of the paper's task: SVMs on histograms vs power spectra
# ---------------------------------------------------------------------------

def test_equal_spectra_histogram_svm_separates_psd_svm_does_not(equal_spectra):
    lognormal, gaussian, _ = equal_spectra
    X_train, y_train, X_test, y_test = split(lognormal, gaussian, n_train=14)  # 336 / 240 patches
    groups = np.tile(np.repeat(np.arange(14), 12), 2)   # one group per map
    hist = SVMBaseline("histogram").fit(X_train, y_train, groups=groups)
    acc_hist = hist.score(X_test, y_test)
    psd = SVMBaseline("psd", order=1).fit(X_train, y_train, groups=groups)
    acc_psd = psd.score(X_test, y_test)
    fft = SVMBaseline("psd", psd_method="fft").fit(X_train, y_train, groups=groups)
    acc_fft = fft.score(X_test, y_test)
    print(f"equal C_l: histogram {acc_hist:.3f}, psd anafast {acc_psd:.3f}, psd fft {acc_fft:.3f}")
    assert acc_hist > 0.85
    assert acc_psd < 0.70 and acc_fft < 0.70


def test_different_spectra_psd_svm_separates_histogram_svm_does_not(different_spectra):
    # The converse: Gaussian maps of equal variance, different spectra.
    smooth, rough = different_spectra
    X_train, y_train, X_test, y_test = split(smooth, rough, n_train=8)   # 192 / 144 patches
    acc_psd = SVMBaseline("psd", order=1, cv=3).fit(X_train, y_train).score(X_test, y_test)
    acc_fft = SVMBaseline("psd", psd_method="fft", cv=3).fit(X_train, y_train).score(X_test, y_test)
    acc_hist = SVMBaseline("histogram", cv=3).fit(X_train, y_train).score(X_test, y_test)
    print(f"different C_l: psd anafast {acc_psd:.3f}, psd fft {acc_fft:.3f}, "
          f"histogram {acc_hist:.3f}")
    assert acc_psd > 0.95 and acc_fft > 0.95
    assert acc_hist < 0.70


# ---------------------------------------------------------------------------
# 2D ConvNet
# ---------------------------------------------------------------------------

def test_svm_is_a_scikit_learn_estimator():
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    svm = SVMBaseline("histogram", bins=10, cv=2, Cs=(1.0,))
    assert clone(svm).get_params() == svm.get_params()
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(20, 64)), rng.exponential(size=(20, 64)) - 1])
    y = np.repeat([0, 1], 20)
    assert cross_val_score(svm, X, y, cv=2).mean() > 0.8          # scikit-learn's own tools take it


def test_histogram_bins_come_from_the_training_data_only():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 256))
    svm = SVMBaseline("histogram", bins=8, cv=2).fit(X, np.arange(20) % 2)
    # data far above the training range fall in the last training bin: bins fitted on the data being
    # transformed (test-set leakage) would spread them over all bins instead
    features = svm.transform(X + 100)
    np.testing.assert_array_equal(features[:, -1], 1.0)
    np.testing.assert_array_equal(svm.edges_, histogram_edges(X, 8))


def test_param_count_matches_deepsphere_fcn():
    # GC16-P4, GC32-P4, 3 x GC64-P4, GC2, K = 5: Fin*Fout*K weights + Fout biases,
    # batch norm (2 * Fout) after all but the last layer. Counted by hand here.
    layers = [(1, 16), (16, 32), (32, 64), (64, 64), (64, 64), (64, 2)]
    by_hand = sum(fi * fo * 5 + fo for fi, fo in layers) + 2 * (16 + 32 + 3 * 64)
    assert by_hand == 55202
    assert deepsphere_fcn_param_count() == by_hand
    net = ConvNet2D(HEALPix(256, indices=np.arange(64 * 64)))           # nside 256 / order 4 patches
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    print(f"DeepSphere FCN {by_hand}, ConvNet2D {n_params}")
    assert abs(n_params / by_hand - 1) < 0.10
    assert net(torch.zeros(2, 64 * 64, 1)).shape == (2, 2)


def test_convnet_sees_the_patch_as_its_image():
    patch = HEALPix(32, indices=4 * 256 + np.arange(256))                  # patch 4 at order 2: 16 x 16
    torch.manual_seed(0)
    net = ConvNet2D(patch, channels=(4, 8)).eval()
    x = torch.randn(3, 256, 1)
    img = torch.as_tensor(nested_to_image(x[..., 0].numpy())).unsqueeze(1)   # independent layout
    ref = net.head(net.features(img).mean(dim=(-2, -1)))
    torch.testing.assert_close(net(x), ref)


def test_convnet_learns_through_the_training_engine(different_spectra, tmp_path):
    from graphsphere.train import fit

    smooth, rough = different_spectra
    X_train, y_train, X_val, y_val = split(smooth, rough, n_train=8)
    np.save(tmp_path / "x.npy", X_train.astype(np.float32))
    np.save(tmp_path / "y.npy", y_train)
    np.save(tmp_path / "vx.npy", X_val.astype(np.float32))
    np.save(tmp_path / "vy.npy", y_val)
    npix = X_train.shape[1]
    cfg = {"task": "classification", "output_dir": str(tmp_path / "run"),
           "sampling": {"type": "HEALPix", "nside": NSIDE, "indices": list(range(npix))},
           "data": {"name": "npy", "x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy"),
                    "val_x": str(tmp_path / "vx.npy"), "val_y": str(tmp_path / "vy.npy"),
                    "test_x": str(tmp_path / "vx.npy"), "test_y": str(tmp_path / "vy.npy")},
           "model": {"type": "ConvNet2D", "channels": [8, 16]}, "optim": {"lr": 3e-3},
           "trainer": {"max_epochs": 3, "batch_size": 16, "progress_bar": False, "loggers": ["csv"]}}
    result = fit(cfg)
    assert result.metrics["test"]["test_acc"] > 0.85
    assert type(result.module.model).__name__ == "ConvNet2D"


def test_convnet_errors():
    with pytest.raises(ValueError, match="too small"):
        ConvNet2D(HEALPix(16, indices=np.arange(16 * 16)), channels=(4, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="n\\*n consecutive NESTED pixels"):
        ConvNet2D(HEALPix(16))
    with pytest.raises(ValueError, match="n\\*n consecutive NESTED pixels"):
        ConvNet2D(HEALPix(16, indices=np.arange(1, 257)))                 # not a whole coarse pixel
    net = ConvNet2D(HEALPix(16, indices=np.arange(256)), channels=(4,))
    with pytest.raises(ValueError, match="expects 256 vertices"):
        net(torch.zeros(2, 4096, 1))
