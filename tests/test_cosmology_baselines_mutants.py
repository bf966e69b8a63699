"""Tests found by mutation testing of graphsphere.experiments.cosmology.baselines
(tools/mutation.py cosmology_scoring): behaviours that no test checked before, one group per function.

Each test checks a documented or user-visible behaviour against an independent reference where
there is one: healpy (anafast on the RING map, pix2xyf for the image layout), scikit-learn (the same
grid search built by hand), numpy (np.histogram, an FFT periodogram written out here), or values
computed by hand (bin edges, parameter counts, error messages).
"""

import re
import warnings

import healpy as hp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphsphere.experiments.cosmology.baselines import (ConvNet2D, SVMBaseline, _bin_means,
                                                        deepsphere_fcn_param_count, histogram_edges,
                                                        histogram_features, image_to_nested, nested_to_image,
                                                        power_spectrum_features)
from graphsphere.models.base import SphereModel
from graphsphere.sampling import HEALPix


def _full_sky_maps(nside, n, seed=0, monopole=3.0):
    """NESTED white-noise maps with a large monopole (so that whether l = 0 is binned shows)."""
    return np.random.default_rng(seed).normal(size=(n, 12 * nside**2)) + monopole


def _binned_log(cl, edges):
    """log10 of the mean of cl over [edges[j], edges[j+1]), per bin: written out, no digitize."""
    return np.log10([cl[lo:hi].mean() for lo, hi in zip(edges[:-1], edges[1:])])


def _anafast_reference(X, edges, lmax, order=None, patch_pixel=0):
    """The paper's power-spectrum features from healpy alone: the sample put on a NESTED sky,
    reordered to RING, anafast without iterations, divided by the sky fraction."""
    out = []
    for sample in X:
        if order is None:
            nside, full, fsky = hp.npix2nside(sample.size), sample, 1.0
        else:
            nside = order * int(round(np.sqrt(sample.size)))
            full = np.zeros(hp.nside2npix(nside))
            full[patch_pixel * sample.size:(patch_pixel + 1) * sample.size] = sample
            fsky = sample.size / full.size
        cl = hp.anafast(hp.reorder(full, n2r=True), lmax=lmax, iter=0) / fsky
        out.append(_binned_log(cl, edges))
    return np.array(out)


def _image_from_healpy(X, order):
    """[n_samples, n, n] images of patch 0 at nside = order * n, laid out with healpy.pix2xyf."""
    n = int(round(np.sqrt(X.shape[1])))
    ix, iy, _ = hp.pix2xyf(order * n, np.arange(n * n), nest=True)
    img = np.empty((len(X), n, n))
    img[:, ix - ix.min(), iy - iy.min()] = X
    return img


def _fft_reference(X, edges, order=1):
    """Hann-windowed periodogram of each image (mean removed), averaged in rings of |k|."""
    img = _image_from_healpy(X, order)
    n = img.shape[-1]
    img = img - img.mean(axis=(1, 2), keepdims=True)
    w = np.outer(np.hanning(n), np.hanning(n))
    power = np.abs(np.fft.fft2(img * w)) ** 2 / (w**2).sum()
    k = np.fft.fftfreq(n) * n
    kr = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    out = []
    for p in power:
        out.append(np.log10([p[(kr >= lo) & (kr < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])]))
    return np.array(out)


# ---------------------------------------------------------------------------
# _as_samples (through the public functions)
# ---------------------------------------------------------------------------

def test_as_samples_messages_name_the_argument():
    with pytest.raises(ValueError, match=re.escape("X must be 2D [n_samples, npix]; for one sample use X[None, :]")):
        power_spectrum_features(np.zeros(256), order=1)
    with pytest.raises(ValueError, match=re.escape("X must be 2D [n_samples, npix], got shape (2, 3, 4)")):
        histogram_features(np.zeros((2, 3, 4)), [0, 1])
    with pytest.raises(ValueError, match=re.escape("X_train must be 2D [n_samples, npix]; for one sample use "
                                                   "X_train[None, :]")):
        histogram_edges(np.linspace(0, 1, 100))


def test_as_samples_rejects_zero_samples_but_not_zero_features_first():
    with pytest.raises(ValueError, match="^X has no samples$"):
        histogram_features(np.zeros((0, 16)), [0, 1])
    with pytest.raises(ValueError, match="^X_train has no samples$"):
        histogram_edges(np.zeros((0, 16)))


def test_as_samples_computes_in_float64_whatever_the_input_dtype():
    # float32 patches (as the experiment's .npy files hold) give the features of their float64 values:
    # the mean removal and the FFT run in double precision.
    X = np.random.default_rng(4).normal(loc=50.0, size=(4, 16 * 16)).astype(np.float32)
    f32 = power_spectrum_features(X, method="fft", n_bins=4)
    f64 = power_spectrum_features(X.astype(np.float64), method="fft", n_bins=4)
    np.testing.assert_allclose(f32, f64, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------
# _bin_means
# ---------------------------------------------------------------------------

def test_bin_means_by_hand_and_empty_bins():
    values = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    keys = np.array([0.0, 1.0, 1.5, 2.0, 3.9, 4.0])   # 0 is below the edges, 4 at/above the last one
    np.testing.assert_allclose(_bin_means(values, keys, np.array([1, 2, 4])), [[2.5, 4.5]])
    with pytest.raises(ValueError, match=re.escape("an l/k bin is empty (edges [1, 2, 3, 4]); use fewer bins")):
        _bin_means(values, np.array([1.0, 1.2, 1.5, 3.0, 3.2, 3.5]), np.array([1, 2, 3, 4]))


# ---------------------------------------------------------------------------
# _image_layout, nested_to_image, image_to_nested
# ---------------------------------------------------------------------------

def test_image_layout_message_gives_the_nside_64_example():
    with pytest.raises(ValueError, match=re.escape("(e.g. 49152 for nside 64)")):
        nested_to_image(np.zeros((1, 100)))


def test_image_to_nested_takes_one_image_without_batch_axis():
    ids = np.arange(64)
    ix, iy, _ = hp.pix2xyf(8, ids, nest=True)
    img = np.empty((8, 8))
    img[ix, iy] = ids                           # healpy's layout of patch 0 at nside 8
    np.testing.assert_array_equal(image_to_nested(img), ids)


def test_image_to_nested_takes_one_full_sky_without_batch_axis():
    nside = 4
    ids = np.arange(12 * nside**2)
    ix, iy, face = hp.pix2xyf(nside, ids, nest=True)
    faces = np.empty((12, nside, nside))
    faces[face, ix, iy] = ids
    np.testing.assert_array_equal(image_to_nested(faces, full_sky=True), ids)
    np.testing.assert_array_equal(image_to_nested(torch.as_tensor(faces), full_sky=True).numpy(), ids)


# ---------------------------------------------------------------------------
# power_spectrum_features, method="anafast"
# ---------------------------------------------------------------------------

def test_anafast_full_sky_defaults_match_healpy():
    # nside 8, no order needed: f_sky = 1, lmin = max(1, round(pi / sqrt(4 pi))) = 1, lmax = 3 * 8 - 1 = 23;
    # edges round(geomspace(1, 24, 5)) = 1, 2, 5, 11, 24 (by hand: ratio 24^(1/4) = 2.213).
    X = _full_sky_maps(8, 3)
    feats = power_spectrum_features(X, n_bins=4)
    np.testing.assert_allclose(feats, _anafast_reference(X, [1, 2, 5, 11, 24], lmax=23), rtol=1e-10)


def test_anafast_explicit_lmin_1_excludes_the_monopole():
    X = _full_sky_maps(8, 2, seed=1)
    feats = power_spectrum_features(X, n_bins=4, lmin=1, lmax=23)
    np.testing.assert_allclose(feats, _anafast_reference(X, [1, 2, 5, 11, 24], lmax=23), rtol=1e-10)


def test_anafast_lmin_0_bins_the_monopole_into_the_first_bin():
    X = _full_sky_maps(8, 2, seed=2)
    feats = power_spectrum_features(X, n_bins=4, lmin=0, lmax=23)
    # the edges of lmin = 1 with the first moved down to 0: [0, 2), [2, 5), [5, 11), [11, 24)
    np.testing.assert_allclose(feats, _anafast_reference(X, [0, 2, 5, 11, 24], lmax=23), rtol=1e-10)
    assert feats[:, 0].min() > feats[:, 1].max() + 0.5        # the monopole (mean 3) dominates bin 0


def test_anafast_explicit_lmax_is_the_last_l_binned():
    X = _full_sky_maps(8, 2, seed=3)
    feats = power_spectrum_features(X, n_bins=3, lmin=2, lmax=20)
    # round(geomspace(2, 21, 4)) = 2, 4, 10, 21
    np.testing.assert_allclose(feats, _anafast_reference(X, [2, 4, 10, 21], lmax=20), rtol=1e-10)


def test_anafast_patch_defaults_match_healpy():
    # an 8x8 patch at order 2: nside 16, f_sky = 64 / 3072 = 1/48, width sqrt(4 pi / 48) = 0.512 rad,
    # lmin = round(pi / 0.512) = 6 (about 3 * order), lmax = 47; edges round(geomspace(6, 48, 5)).
    X = np.random.default_rng(5).normal(size=(3, 64))
    feats = power_spectrum_features(X, order=2, n_bins=4)
    ref = _anafast_reference(X, [6, 10, 17, 29, 48], lmax=47, order=2, patch_pixel=0)
    np.testing.assert_allclose(feats, ref, rtol=1e-10)
    # where the patch is put matters at order 2 (the coarse pixels have different shapes), so the
    # default above really is patch_pixel 0
    other = _anafast_reference(X, [6, 10, 17, 29, 48], lmax=47, order=2, patch_pixel=1)
    assert np.abs(other - ref).max() > 1e-6


def test_anafast_patch_pixel_range():
    X = np.random.default_rng(6).normal(size=(2, 64))
    feats = power_spectrum_features(X, order=2, n_bins=4, patch_pixel=47)      # the last of 12 * 2^2
    np.testing.assert_allclose(feats, _anafast_reference(X, [6, 10, 17, 29, 48], lmax=47, order=2,
                                                         patch_pixel=47), rtol=1e-10)
    with pytest.raises(ValueError, match=re.escape("patch_pixel must be in [0, 48), got 48")):
        power_spectrum_features(X, order=2, n_bins=4, patch_pixel=48)
    # order 4, a 4x4 patch: nside 16, 192 coarse pixels
    X4 = np.random.default_rng(7).normal(size=(1, 16))
    assert power_spectrum_features(X4, order=4, n_bins=2, patch_pixel=191).shape == (1, 2)
    with pytest.raises(ValueError, match=re.escape("patch_pixel must be in [0, 192), got 192")):
        power_spectrum_features(X4, order=4, n_bins=2, patch_pixel=192)


def test_anafast_argument_errors():
    X = np.random.default_rng(8).normal(size=(2, 64))
    with pytest.raises(ValueError, match=re.escape("order must be a power of two, got 3")):
        power_spectrum_features(X, order=3)
    with pytest.raises(ValueError, match=re.escape("need 0 <= lmin < lmax, got lmin=20, lmax=20")):
        power_spectrum_features(X, order=2, lmin=20, lmax=20)
    with pytest.raises(ValueError, match=re.escape("n_bins must be >= 1, got 0")):
        power_spectrum_features(X, order=2, n_bins=0)


def test_power_spectrum_features_bins():
    X = _full_sky_maps(4, 2, seed=9)
    assert power_spectrum_features(X).shape[0] == 2
    # default n_bins=16 at nside 16 (lmax 47): round(geomspace(1, 48, 17)) has 14 distinct edges
    X16 = _full_sky_maps(16, 1, seed=9)
    edges16 = [1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 23, 30, 38, 48]
    np.testing.assert_allclose(power_spectrum_features(X16), _anafast_reference(X16, edges16, lmax=47),
                               rtol=1e-10)
    # one bin: the mean of C_l over l = 1..11 (nside 4, lmax 11)
    one = power_spectrum_features(X, n_bins=1)
    np.testing.assert_allclose(one, _anafast_reference(X, [1, 12], lmax=11), rtol=1e-10)


# ---------------------------------------------------------------------------
# power_spectrum_features, method="fft"
# ---------------------------------------------------------------------------

def test_fft_features_match_a_periodogram_written_out():
    # per-sample offsets: the mean of each image must be removed before the window
    rng = np.random.default_rng(10)
    X = rng.normal(size=(4, 16 * 16)) + np.array([0.0, 10.0, -7.0, 3.0])[:, None]
    feats = power_spectrum_features(X, method="fft", n_bins=4)
    # 16x16 images: |k| from 1 to n/2 + 1 = 9, round(geomspace(1, 9, 5)) = 1, 2, 3, 5, 9
    np.testing.assert_allclose(feats, _fft_reference(X, [1, 2, 3, 5, 9]), rtol=1e-10, atol=1e-12)


def test_fft_features_ignore_a_constant_offset():
    X = np.random.default_rng(11).normal(size=(3, 16 * 16))
    np.testing.assert_allclose(power_spectrum_features(X + 25.0, method="fft", n_bins=4),
                               power_spectrum_features(X, method="fft", n_bins=4), atol=1e-9)


def test_fft_white_noise_has_unit_power():
    # with the window normalised by sum(w^2), white noise of variance 1 has E[P(k)] = 1: log10 ~ 0 in the
    # last ring, |k| in [8, 17), which holds hundreds of modes (the first rings hold few, and the mean
    # removal through the window takes power out of |k| = 1)
    X = np.random.default_rng(12).normal(size=(200, 32 * 32))
    feats = power_spectrum_features(X, method="fft", n_bins=4)
    assert abs(feats[:, -1].mean()) < 0.02


def test_fft_patch_sizes():
    X = np.random.default_rng(13).normal(size=(2, 16))               # 4x4: the smallest allowed
    feats = power_spectrum_features(X, method="fft", n_bins=2)
    # |k| from 1 to 3: round(geomspace(1, 3, 3)) = 1, 2, 3
    np.testing.assert_allclose(feats, _fft_reference(X, [1, 2, 3]), rtol=1e-10)
    with pytest.raises(ValueError, match=re.escape("patch of 2x2 pixels is too small for a spectrum")):
        power_spectrum_features(np.zeros((2, 4)), method="fft")
    with pytest.raises(ValueError, match=re.escape("method='fft' works on patches (n*n pixels); for full-sky "
                                                   "maps use method='anafast'")):
        power_spectrum_features(np.zeros((2, 12 * 16)), method="fft")


# ---------------------------------------------------------------------------
# histogram_edges, histogram_features
# ---------------------------------------------------------------------------

def test_histogram_edges_defaults_and_one_bin():
    X = np.random.default_rng(14).normal(size=(3, 500))
    edges = histogram_edges(X)
    assert edges.shape == (81,)                                       # 80 bins
    np.testing.assert_allclose(edges[[0, -1]], np.quantile(X, [0.001, 0.999]))
    one = histogram_edges(X, bins=1, quantiles=(0, 1))
    np.testing.assert_allclose(one, [X.min(), X.max()])


def test_histogram_edges_errors():
    X = np.random.default_rng(15).normal(size=(3, 50))
    for q in [(0.5, 0.5), (0.0, 1.5), (-0.1, 0.9)]:
        with pytest.raises(ValueError, match=re.escape(f"quantiles must satisfy 0 <= low < high <= 1, got {q}")):
            histogram_edges(X, quantiles=q)
    with pytest.raises(ValueError, match=re.escape("bins must be >= 1, got 0")):
        histogram_edges(X, bins=0)


def test_histogram_features_one_bin_and_values_on_edges():
    X = np.array([[-1.0, 0.0, 0.5, 0.5, 1.0, 3.0]])
    np.testing.assert_allclose(histogram_features(X, [0, 1]), [[1.0]])
    # a value on an interior edge belongs to the bin above it, as in np.histogram
    edges = [0.0, 0.5, 1.0]
    inner = np.array([[0.1, 0.5, 0.5, 0.7]])
    np.testing.assert_allclose(histogram_features(inner, edges), np.histogram(inner[0], edges)[0][None] / 4)
    np.testing.assert_allclose(histogram_features(X, edges), [[2 / 6, 4 / 6]])


@pytest.mark.parametrize("edges", [[0.0], [[0.0, 1.0], [2.0, 3.0]], [0.0, 2.0, 1.0], [0.0, 1.0, 1.0],
                                   np.array([3, 2, 1], dtype=np.uint8)])
def test_histogram_features_rejects_bad_edges(edges):
    # the unsigned case: decreasing edges whose differences would wrap around in uint8
    with pytest.raises(ValueError, match=re.escape("edges must be a 1D increasing array of at least 2 values")):
        histogram_features(np.zeros((2, 4)), edges)


# ---------------------------------------------------------------------------
# deepsphere_fcn_param_count
# ---------------------------------------------------------------------------

def test_param_count_without_bias_by_hand():
    layers = [(1, 16), (16, 32), (32, 64), (64, 64), (64, 64), (64, 2)]
    weights = sum(fi * fo * 5 for fi, fo in layers)
    assert deepsphere_fcn_param_count(bias=False) == weights + 2 * (16 + 32 + 3 * 64)
    assert deepsphere_fcn_param_count(channels=(4,), K=2, bias=False, batchnorm=False) == 8


# ---------------------------------------------------------------------------
# SVMBaseline
# ---------------------------------------------------------------------------

def _noisy_classes(n=60, npix=64, seed=16):
    """Two weakly separable classes: Gaussian vs a Gaussian with a mild exponential admixture."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) // 3) % 2                         # groups of 3 samples share a class
    X = rng.normal(size=(n, npix))
    X[y == 1] += 0.4 * (rng.exponential(size=((y == 1).sum(), npix)) - 1)
    return X, y, np.arange(n) // 3


def _grid_search_by_hand(X, y, groups, bins, quantiles, Cs, cv, seed, max_iter=20000):
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    Fx = histogram_features(X, histogram_edges(X, bins, quantiles))
    folds = (StratifiedKFold(cv, shuffle=True, random_state=seed) if groups is None
             else StratifiedGroupKFold(cv, shuffle=True, random_state=seed))
    pipe = make_pipeline(StandardScaler(), LinearSVC(dual="auto", max_iter=max_iter, random_state=seed))
    return GridSearchCV(pipe, {"linearsvc__C": list(Cs)}, cv=folds, scoring="accuracy").fit(Fx, y, groups=groups)


def test_svm_default_parameters():
    params = SVMBaseline().get_params()
    assert params == {"features": "histogram", "bins": None, "order": None, "psd_method": "anafast", "lmin": None,
                      "lmax": None, "quantiles": (0.001, 0.999), "Cs": (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
                      "cv": 5, "seed": 0, "max_iter": 20000}


@pytest.mark.parametrize("groups", [False, True])
def test_svm_cross_validation_matches_scikit_learn_by_hand(groups):
    X, y, g = _noisy_classes()
    g = g if groups else None
    scores = set()
    for seed in (3, 4, 5):        # three seeds: folds drawn at random would match all three only by chance
        kw = dict(bins=8, quantiles=(0.01, 0.99), Cs=(0.001, 0.1, 10.0), cv=3, seed=seed)
        svm = SVMBaseline("histogram", **kw).fit(X, y, groups=g)
        ref = _grid_search_by_hand(X, y, g, kw["bins"], kw["quantiles"], kw["Cs"], kw["cv"], kw["seed"])
        assert isinstance(svm.cv_accuracy_, float)
        assert svm.cv_accuracy_ == pytest.approx(ref.best_score_, abs=1e-12)
        assert svm.C_ == ref.best_params_["linearsvc__C"]
        scores.add(round(svm.cv_accuracy_, 12))
    # the folds really matter on these data: other seeds (other folds) give other scores
    assert len(scores) > 1
    np.testing.assert_allclose(svm.pipeline_.decision_function(svm.transform(X)),
                               ref.best_estimator_.decision_function(histogram_features(X, svm.edges_)))
    np.testing.assert_array_equal(svm.edges_, histogram_edges(X, 8, (0.01, 0.99)))


def test_svm_default_cv_is_five_shuffled_stratified_folds():
    X, y, _ = _noisy_classes(seed=17)
    svm = SVMBaseline("histogram", bins=8, Cs=(0.001, 0.1, 10.0)).fit(X, y)
    ref = _grid_search_by_hand(X, y, None, 8, (0.001, 0.999), (0.001, 0.1, 10.0), 5, 0)
    assert svm.cv_accuracy_ == pytest.approx(ref.best_score_, abs=1e-12)
    assert svm.C_ == ref.best_params_["linearsvc__C"]


def test_svm_fitted_pipeline_is_scaler_and_linear_svc():
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    X, y, _ = _noisy_classes(seed=18)
    svm = SVMBaseline("histogram", bins=6, Cs=(1.0,), cv=2, seed=5, max_iter=1234).fit(X, y)
    assert [type(s) for s in svm.pipeline_] == [StandardScaler, LinearSVC]
    p = svm.pipeline_[-1].get_params()
    assert (p["max_iter"], p["random_state"], p["dual"], p["C"]) == (1234, 5, "auto", 1.0)


def test_svm_fit_is_reproducible_in_the_dual_solver():
    # more features (bins) than samples: LinearSVC solves the dual, whose coordinate order is random
    rng = np.random.default_rng(19)
    X = rng.normal(size=(24, 256))
    X[12:] += 0.3 * (rng.exponential(size=(12, 256)) - 1)
    y = np.repeat([0, 1], 12)
    coefs = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            svm = SVMBaseline("histogram", bins=60, Cs=(10.0,), cv=2, max_iter=200).fit(X, y)
        coefs.append(svm.pipeline_[-1].coef_)
    np.testing.assert_array_equal(coefs[0], coefs[1])


def test_svm_default_bins():
    X, y, _ = _noisy_classes(seed=20)
    assert SVMBaseline("histogram", Cs=(1.0,), cv=2).fit(X, y).edges_.shape == (81,)
    # psd features need no fit: 16 l bins by default, the lmin/lmax/bins given are passed on
    M = _full_sky_maps(16, 2, seed=21)
    np.testing.assert_array_equal(SVMBaseline("psd").transform(M), power_spectrum_features(M, n_bins=16))
    np.testing.assert_array_equal(SVMBaseline("psd", bins=3, lmin=3, lmax=20).transform(M),
                                  power_spectrum_features(M, n_bins=3, lmin=3, lmax=20))
    P = np.random.default_rng(22).normal(size=(2, 64 * 64))
    np.testing.assert_array_equal(SVMBaseline("psd", psd_method="fft").transform(P),
                                  power_spectrum_features(P, method="fft", n_bins=16))


def test_svm_errors():
    X, y, _ = _noisy_classes(seed=23)
    with pytest.raises(ValueError, match=re.escape("psd_method must be 'anafast' or 'fft', got 'welch'")):
        SVMBaseline("psd", psd_method="welch").fit(X, y)
    with pytest.raises(ValueError, match=re.escape("y holds a single class; an SVM needs at least two")):
        SVMBaseline().fit(X, np.zeros(len(X)))
    with pytest.raises(RuntimeError, match=re.escape("call fit() first: histogram bins come from the training data")):
        SVMBaseline("histogram").transform(X)


# ---------------------------------------------------------------------------
# ConvNet2D
# ---------------------------------------------------------------------------

PATCH16 = HEALPix(32, indices=4 * 256 + np.arange(256))          # patch 4 at order 2: 16 x 16


def test_convnet_config_and_state_roundtrip():
    torch.manual_seed(0)
    net = ConvNet2D(PATCH16, in_channels=2, out_features=3, channels=(4, 8), kernel_size=5).eval()
    assert net.config == {"in_channels": 2, "out_features": 3, "channels": [4, 8], "kernel_size": 5}
    # the weights only: the image index is rebuilt from the sampling, not saved
    assert "image_index" not in net.state_dict()
    rebuilt = SphereModel.from_state(net.to_state()).eval()
    x = torch.randn(2, 256, 2)
    torch.testing.assert_close(rebuilt(x), net(x))
    assert rebuilt(x).shape == (2, 3)


def test_convnet_forward_matches_functional_reference_with_kernel_5():
    torch.manual_seed(1)
    net = ConvNet2D(PATCH16, channels=(3, 5), kernel_size=5).eval()
    x = torch.randn(2, 256, 1)
    h = torch.as_tensor(nested_to_image(x[..., 0].numpy())).unsqueeze(1)   # [batch, 1, 16, 16]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for conv, bn in zip(convs, norms):
        h = F.conv2d(h, conv.weight, padding="same")
        h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
        h = F.max_pool2d(F.relu(h), 2)
    assert h.shape[-2:] == (4, 4)
    ref = F.linear(h.mean(dim=(2, 3)), net.head.weight, net.head.bias)
    torch.testing.assert_close(net(x), ref)


def test_convnet_smallest_patch_for_its_depth():
    net = ConvNet2D(PATCH16, channels=(2, 2, 2, 2))                  # 16 = 2^4: four poolings down to 1x1
    assert net(torch.randn(3, 256, 1)).shape == (3, 2)
    with pytest.raises(ValueError, match=re.escape("a 16x16 patch is too small for 5 2x2 poolings; need at "
                                                   "least 32x32: use fewer channels")):
        ConvNet2D(PATCH16, channels=(2, 2, 2, 2, 2))


@pytest.mark.parametrize("kw,message", [
    (dict(in_channels=0), "in_channels must be a positive integer, got 0"),
    (dict(out_features=0), "out_features must be a positive integer, got 0"),
    (dict(kernel_size=0), "kernel_size must be a positive integer, got 0"),
    (dict(kernel_size=4), "kernel_size must be odd (same padding), got 4"),
])
def test_convnet_argument_errors(kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ConvNet2D(PATCH16, channels=(4,), **kw)
