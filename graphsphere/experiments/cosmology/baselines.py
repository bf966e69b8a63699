"""Baselines of the DeepSphere cosmology experiment (Perraudin et al. 2019).

DeepSphere was compared with three classifiers that do not see the sphere as a
graph: a linear SVM on the power spectrum of each map, a linear SVM on the
histogram of its pixel values, and a 2D ConvNet on the images that HEALPix base
faces make when their NESTED pixels are laid out on a square grid. This module
holds all three, for inputs shaped like the experiment's data: float arrays
``[n_samples, npix]`` in NESTED order, where a sample is either a patch (the
``n * n`` fine pixels of one coarse pixel, consecutive in NESTED order) or a
full-sky map (``12 * nside**2`` pixels).

The SVMs are scikit-learn estimators (``clone``, pipelines and grid searches
take them); the ConvNet is a model of the training engine (``model.type:
ConvNet2D``), trained, checkpointed and evaluated like DeepSphere.

Example
-------
>>> import numpy as np
>>> from graphsphere.experiments.cosmology.baselines import nested_to_image, deepsphere_fcn_param_count
>>> nested_to_image(np.arange(16)).tolist()[0]      # row ix = 0: iy = 0..3
[0, 2, 8, 10]
>>> deepsphere_fcn_param_count()
55202
"""

from __future__ import annotations

import functools
import math

import healpy as hp
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from ...models.base import SphereModel, check_channels, positive
from ...sampling import HEALPix

__all__ = [
    "nested_image_index",
    "nested_to_image",
    "image_to_nested",
    "power_spectrum_features",
    "histogram_edges",
    "histogram_features",
    "SVMBaseline",
    "deepsphere_fcn_param_count",
    "ConvNet2D",
]

# ---------------------------------------------------------------------------
# NESTED pixels <-> images
# ---------------------------------------------------------------------------

def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@functools.lru_cache(maxsize=32)
def nested_image_index(n: int) -> np.ndarray:
    """NESTED index of each cell of the ``n x n`` image of one HEALPix pixel.

    Inside a pixel, NESTED indices interleave the bits of the face coordinates:
    bit ``b`` of ``ix`` is bit ``2b`` of the index, bit ``b`` of ``iy`` is bit
    ``2b + 1`` (``ix, iy`` as returned by ``healpy.pix2xyf``). The returned
    ``[n, n]`` int64 array (read-only, cached) holds at ``[ix, iy]`` the local
    index of that cell, so ``patch[..., nested_image_index(n)]`` is the image.

    >>> nested_image_index(2).tolist()
    [[0, 2], [1, 3]]
    """
    n = int(n)
    if not _is_power_of_two(n):
        raise ValueError(f"image side must be a power of two, got {n}")
    coord = np.arange(n, dtype=np.int64)
    # Spread the bits of a coordinate to the even positions: b -> 2b.
    spread = np.zeros(n, dtype=np.int64)
    for b in range(max(n.bit_length() - 1, 0)):
        spread |= ((coord >> b) & 1) << (2 * b)
    index = spread[:, None] | (spread[None, :] << 1)
    index.setflags(write=False)
    return index


def _image_layout(npix: int) -> tuple[str, int]:
    """('patch', n) for n*n pixels, ('full', nside) for 12*nside^2, else raise."""
    n = math.isqrt(npix)
    if n * n == npix and _is_power_of_two(n):
        return "patch", n
    nside = math.isqrt(npix // 12)
    if npix % 12 == 0 and 12 * nside * nside == npix and _is_power_of_two(nside):
        return "full", nside
    raise ValueError(
        f"cannot make images from {npix} pixels per sample: expected a NESTED patch of "
        f"n*n pixels with n a power of two (one coarse HEALPix pixel, e.g. 4096 = 64*64) or "
        f"a full-sky NESTED map of 12*nside^2 pixels (e.g. {12 * 64 * 64} for nside 64). "
        "The pixels must be the last axis: [n_samples, npix].")


def _take(x, index: np.ndarray):
    """x[..., index] for NumPy arrays and torch tensors alike."""
    if isinstance(x, torch.Tensor):
        return x[..., torch.tensor(index, device=x.device)]  # copy: index is read-only
    return np.asarray(x)[..., index]


def nested_to_image(x):
    """Lay NESTED pixels out as images: ``[..., n*n] -> [..., n, n]`` for a
    patch, ``[..., 12*nside^2] -> [..., 12, nside, nside]`` for a full sky.

    ``out[..., ix, iy]`` is the pixel with face coordinates ``(ix, iy)``
    (``healpy.pix2xyf`` convention) relative to the patch's corner; a full sky
    gives one image per base face, ``out[..., face, ix, iy]``. The two layouts
    cannot be confused (``12 * 4^k`` is never a power of four). Works on NumPy
    arrays and torch tensors; returns a copy of the same kind.

    Adjacent cells are adjacent pixels on the sphere, but the image is not a
    uniform grid: pixel shapes change across a face, and the edges of the 12
    faces meet in ways a 2D ConvNet does not know about.

    >>> import numpy as np
    >>> nested_to_image(np.zeros((5, 64 * 64))).shape
    (5, 64, 64)
    >>> nested_to_image(np.zeros((2, 12 * 16 * 16))).shape
    (2, 12, 16, 16)
    """
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("nested_to_image needs an array of pixels [..., npix], got a scalar")
    layout, n = _image_layout(int(x.shape[-1]))
    if layout == "full":
        x = x.reshape(*x.shape[:-1], 12, n * n)  # NESTED: each base face is a contiguous block
    return _take(x, nested_image_index(n))


def image_to_nested(img, full_sky: bool = False):
    """Inverse of :func:`nested_to_image`: ``[..., n, n] -> [..., n*n]``, or with
    ``full_sky=True`` ``[..., 12, nside, nside] -> [..., 12*nside^2]``.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(3, 256))
    >>> bool(np.array_equal(image_to_nested(nested_to_image(x)), x))
    True
    """
    if not isinstance(img, torch.Tensor):
        img = np.asarray(img)
    if img.ndim < 2 or img.shape[-1] != img.shape[-2] or not _is_power_of_two(int(img.shape[-1])):
        raise ValueError(f"expected square images [..., n, n] with n a power of two, "
                         f"got shape {tuple(img.shape)}")
    if full_sky and (img.ndim < 3 or img.shape[-3] != 12):
        raise ValueError(f"full_sky=True needs [..., 12, nside, nside], got {tuple(img.shape)}")
    n = int(img.shape[-1])
    inverse = np.argsort(nested_image_index(n), axis=None)
    out = _take(img.reshape(*img.shape[:-2], n * n), inverse)
    if full_sky:
        out = out.reshape(*out.shape[:-2], 12 * n * n)
    return out


# ---------------------------------------------------------------------------
# Features for the SVMs
# ---------------------------------------------------------------------------

def _as_samples(X, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        raise ValueError(f"{name} must be 2D [n_samples, npix]; for one sample use "
                         f"{name}[None, :]")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2D [n_samples, npix], got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no samples")
    return X


def _log_edges(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """n_bins + 1 log-spaced edges in [lo, hi]; fewer where bins would be empty."""
    return np.unique(np.round(np.geomspace(lo, hi, n_bins + 1)).astype(np.int64))


def _bin_means(values: np.ndarray, keys: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of ``values[..., i]`` over ``edges[j] <= keys[i] < edges[j+1]``, per bin j."""
    which = np.digitize(keys, edges) - 1
    inside = (which >= 0) & (which < len(edges) - 1)
    onehot = np.zeros((keys.size, len(edges) - 1))
    onehot[np.flatnonzero(inside), which[inside]] = 1.0
    counts = onehot.sum(axis=0)
    if np.any(counts == 0):
        raise ValueError(f"an l/k bin is empty (edges {edges.tolist()}); use fewer bins")
    return values @ onehot / counts


def power_spectrum_features(X, *, order: int | None = None, n_bins: int = 16,
                            lmin: int | None = None, lmax: int | None = None,
                            method: str = "anafast", patch_pixel: int = 0) -> np.ndarray:
    """Binned log power spectrum of each NESTED sample: ``[n_samples, n_bins]``.

    ``method="anafast"`` (default, as in the paper): the patch is put back on the
    sphere at coarse pixel ``patch_pixel`` of ``nside = order`` (the rest of the
    sky is zero), ``healpy.anafast`` (no iterations) gives the pseudo-spectrum,
    which is divided by the observed sky fraction ``f_sky`` (for a binary mask,
    E[pseudo-C_l] ~ f_sky C_l where C_l varies slowly over the mask's kernel,
    about 2 pi / patch width ~ ``6 * order`` wide in l; a steeply falling C_l
    leaks through the sharp edge into high l, equally for every class, so the
    classifier does not care). The features are ``log10`` of the mean of C_l in
    ``n_bins`` log-spaced bins of l from ``lmin`` (default: pi / patch width,
    about ``3 * order``, the largest scale the patch holds) to ``lmax`` (default
    ``3 * nside - 1``). Full-sky samples (12 nside^2 pixels) need no ``order``
    and use ``f_sky = 1``. Where a patch came from does not matter for an
    isotropic field, so all patches are put at ``patch_pixel``; the base faces
    differ only in the shape of their pixels. Cost: one full-sky transform per
    sample (about 0.2 s at nside 256, 5 s at nside 1024 on one core).

    ``method="fft"``: the 2D periodogram of the base-face image (mean removed,
    Hann window against the leakage of the non-periodic edges), averaged in
    ``n_bins`` log-spaced rings of |k| from 1 to ``n / 2`` cycles per patch.
    Ring ``|k|`` corresponds to ``l ~ 2 pi |k| / width`` with ``width ~
    sqrt(4 pi / (12 order^2))`` radians. Thousands of times faster, needs no
    ``order``, but measures the spectrum on a distorted grid.

    A Gaussian field is described entirely by its spectrum; these features see
    nothing of the non-Gaussian information that DeepSphere uses.

    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(20, 16 * 16))  # white noise, sigma 1
    >>> f = power_spectrum_features(X, order=2, n_bins=4)        # nside 32
    >>> f.shape
    (20, 4)
    >>> white = np.log10(4 * np.pi / (12 * 32**2))              # C_l = 4 pi sigma^2 / npix
    >>> bool(abs(f[:, -1].mean() - white) < 0.05)
    True
    """
    X = _as_samples(X)
    npix = X.shape[1]
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if method == "fft":
        layout, n = _image_layout(npix)
        if layout != "patch":
            raise ValueError("method='fft' works on patches (n*n pixels); for full-sky "
                             "maps use method='anafast'")
        if n < 4:
            raise ValueError(f"patch of {n}x{n} pixels is too small for a spectrum")
        img = nested_to_image(X)
        img = img - img.mean(axis=(-2, -1), keepdims=True)
        window = np.outer(np.hanning(n), np.hanning(n))
        power = np.abs(np.fft.fft2(img * window)) ** 2 / np.sum(window**2)
        k = np.fft.fftfreq(n, d=1.0 / n)  # cycles per patch
        kr = np.hypot(k[:, None], k[None, :]).ravel()
        edges = _log_edges(1, n // 2 + 1, n_bins)
        binned = _bin_means(power.reshape(len(X), -1), kr, edges)
    elif method == "anafast":
        layout, n = _image_layout(npix)
        if layout == "full":
            nside, ring_ids, fsky = n, hp.nest2ring(n, np.arange(npix)), 1.0
        else:
            if order is None:
                raise ValueError(
                    "power spectra of patches need order= (the patch is one pixel at "
                    "nside=order, so the map's nside is order * sqrt(npix)); or use "
                    "method='fft'")
            if not _is_power_of_two(int(order)):
                raise ValueError(f"order must be a power of two, got {order}")
            nside = int(order) * n
            if not 0 <= patch_pixel < 12 * int(order) ** 2:
                raise ValueError(f"patch_pixel must be in [0, {12 * int(order) ** 2}), "
                                 f"got {patch_pixel}")
            nested_ids = patch_pixel * npix + np.arange(npix)
            ring_ids = hp.nest2ring(nside, nested_ids)
            fsky = npix / hp.nside2npix(nside)
        lmax = 3 * nside - 1 if lmax is None else int(lmax)
        if lmin is None:
            width = math.sqrt(4 * math.pi * fsky)
            lmin = max(1, round(math.pi / width))
        if not 0 <= lmin < lmax:
            raise ValueError(f"need 0 <= lmin < lmax, got lmin={lmin}, lmax={lmax}")
        edges = _log_edges(max(lmin, 1), lmax + 1, n_bins)
        if lmin == 0:
            edges[0] = 0
        full = np.zeros(hp.nside2npix(nside))
        spectra = np.empty((len(X), lmax + 1))
        for i, sample in enumerate(X):
            full[ring_ids] = sample
            spectra[i] = hp.anafast(full, lmax=lmax, iter=0) / fsky
        binned = _bin_means(spectra, np.arange(lmax + 1), edges)
    else:
        raise ValueError(f"method must be 'anafast' or 'fft', got {method!r}")
    # The floor keeps log10 finite for constant maps; far below any real power.
    return np.log10(np.maximum(binned, 1e-300))


def histogram_edges(X_train, bins: int = 80,
                    quantiles: tuple[float, float] = (0.001, 0.999)) -> np.ndarray:
    """Fixed histogram bin edges from training data: ``bins`` equal bins between
    two quantiles of all training pixel values (robust to a few extreme pixels).

    >>> import numpy as np
    >>> histogram_edges(np.linspace(0, 1, 1001)[None], bins=4, quantiles=(0, 1)).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    X = _as_samples(X_train, "X_train")
    lo_q, hi_q = quantiles
    if not 0 <= lo_q < hi_q <= 1:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    lo, hi = np.quantile(X, [lo_q, hi_q])
    if not hi > lo:
        raise ValueError(f"training pixel values have no spread between quantiles {quantiles} "
                         f"({lo} to {hi}); cannot build histogram bins")
    return np.linspace(lo, hi, bins + 1)


def histogram_features(X, edges) -> np.ndarray:
    """Fraction of each sample's pixels in each bin: ``[n_samples, len(edges)-1]``.

    Values outside the edges are counted in the first or last bin: the tails are
    where non-Gaussian maps differ most, so they are kept, not dropped.

    >>> import numpy as np
    >>> histogram_features(np.array([[-5., 0.1, 0.2, 0.9, 7.]]), [0, 0.5, 1]).tolist()
    [[0.6, 0.4]]
    """
    X = _as_samples(X)
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be a 1D increasing array of at least 2 values")
    nb = len(edges) - 1
    which = np.clip(np.searchsorted(edges, X, side="right") - 1, 0, nb - 1)
    # One bincount over (sample, bin) pairs: no Python loop over samples.
    flat = (which + nb * np.arange(len(X))[:, None]).ravel()
    counts = np.bincount(flat, minlength=len(X) * nb).reshape(len(X), nb)
    return counts / X.shape[1]


class SVMBaseline(ClassifierMixin, BaseEstimator):
    """Linear SVM on power-spectrum or histogram features: a scikit-learn estimator.

    Features are standardised (``StandardScaler``) and fed to ``LinearSVC``;
    ``C`` is chosen among ``Cs`` by stratified k-fold cross-validation on the
    training set (grouped by ``groups`` if given, e.g. the map each patch was
    cut from, so that patches of one map do not sit on both sides of a fold).
    Histogram bins come from the training data (``fit``) only: ``transform``
    of other data reuses them.

    Parameters
    ----------
    features : "psd" or "histogram"
    bins : number of histogram bins (default 80) or of l bins (psd, default 16).
    order, psd_method, lmin, lmax : passed to :func:`power_spectrum_features`.
    quantiles : training-data quantiles that bound the histogram.
    Cs, cv, seed, max_iter : the cross-validated grid, folds, seed and LinearSVC iterations.

    After ``fit``: ``classes_``, ``C_`` (chosen), ``cv_accuracy_`` (its mean CV
    accuracy), ``edges_`` (histogram), ``pipeline_`` (fitted scaler + SVM).

    >>> import numpy as np
    >>> from sklearn.base import clone
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(size=(40, 256)), rng.exponential(size=(40, 256)) - 1])
    >>> y = np.repeat([0, 1], 40)
    >>> svm = SVMBaseline("histogram", bins=20, cv=3)
    >>> clone(svm).fit(X, y).score(X, y) > 0.9
    True
    """

    def __init__(self, features: str = "histogram", *, bins: int | None = None, order: int | None = None,
                 psd_method: str = "anafast", lmin: int | None = None, lmax: int | None = None,
                 quantiles: tuple[float, float] = (0.001, 0.999), Cs=(1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
                 cv: int = 5, seed: int = 0, max_iter: int = 20000):
        # scikit-learn's contract: store the arguments as given, check them in fit.
        self.features, self.bins, self.order, self.psd_method = features, bins, order, psd_method
        self.lmin, self.lmax, self.quantiles = lmin, lmax, quantiles
        self.Cs, self.cv, self.seed, self.max_iter = Cs, cv, seed, max_iter

    def _n_bins(self) -> int:
        return (80 if self.features == "histogram" else 16) if self.bins is None else int(self.bins)

    def _check(self) -> None:
        if self.features not in ("psd", "histogram"):
            raise ValueError(f"features must be 'psd' or 'histogram', got {self.features!r}")
        if self.psd_method not in ("anafast", "fft"):
            raise ValueError(f"psd_method must be 'anafast' or 'fft', got {self.psd_method!r}")

    def transform(self, X) -> np.ndarray:
        """The feature matrix of ``X`` (histograms need ``fit`` first, for the edges)."""
        self._check()
        if self.features == "psd":
            return power_spectrum_features(X, order=self.order, n_bins=self._n_bins(), lmin=self.lmin,
                                           lmax=self.lmax, method=self.psd_method)
        if not hasattr(self, "edges_"):
            raise RuntimeError("call fit() first: histogram bins come from the training data")
        return histogram_features(X, self.edges_)

    def fit(self, X, y, groups=None) -> "SVMBaseline":
        from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        self._check()
        X = _as_samples(X)
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise ValueError(f"y must be 1D with one label per sample ({len(X)}), got {y.shape}")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("y holds a single class; an SVM needs at least two")
        if self.features == "histogram":
            self.edges_ = histogram_edges(X, self._n_bins(), self.quantiles)
        F = self.transform(X)
        cv = int(self.cv)
        folds = (StratifiedKFold(cv, shuffle=True, random_state=self.seed) if groups is None
                 else StratifiedGroupKFold(cv, shuffle=True, random_state=self.seed))
        pipe = make_pipeline(StandardScaler(), LinearSVC(dual="auto", max_iter=self.max_iter,
                                                         random_state=self.seed))
        search = GridSearchCV(pipe, {"linearsvc__C": list(self.Cs)}, cv=folds, scoring="accuracy")
        search.fit(F, y, groups=groups)
        self.pipeline_ = search.best_estimator_
        self.C_ = search.best_params_["linearsvc__C"]
        self.cv_accuracy_ = float(search.best_score_)
        return self

    def predict(self, X) -> np.ndarray:
        if not hasattr(self, "pipeline_"):
            raise RuntimeError("call fit() before predict()")
        return self.pipeline_.predict(self.transform(X))

    @property
    def n_features(self) -> int:
        """Number of features (after ``fit``), the SVM's weights per class minus its bias."""
        return int(self.pipeline_[-1].coef_.shape[1])


# ---------------------------------------------------------------------------
# 2D ConvNet
# ---------------------------------------------------------------------------

def deepsphere_fcn_param_count(channels=(16, 32, 64, 64, 64, 2), K: int = 5,
                               in_channels: int = 1, bias: bool = True,
                               batchnorm: bool = True) -> int:
    """Trainable parameters of a DeepSphere stack of Chebyshev graph convolutions.

    Each layer has ``Fin * Fout * K`` weights and ``Fout`` biases; batch norm
    (scale and shift, ``2 * Fout``) follows every layer but the last. The
    default is the cosmology FCN: GC16-P4, GC32-P4, 3 x (GC64-P4), GC2, K = 5
    (pooling and the final average have no parameters).

    >>> deepsphere_fcn_param_count(batchnorm=False)
    54722
    """
    total, fin = 0, in_channels
    for i, fout in enumerate(channels):
        total += fin * fout * K + (fout if bias else 0)
        if batchnorm and i < len(channels) - 1:
            total += 2 * fout
        fin = fout
    return total


class ConvNet2D(SphereModel):
    """A plain 2D ConvNet on the image of a HEALPix patch: ``len(channels)``
    blocks of conv(k x k) - batch norm - ReLU - 2x2 max pool, global average
    pooling, and a linear head. A model of the training engine
    (``model.type: ConvNet2D``), so it trains, checkpoints and keeps its best
    epoch exactly like DeepSphere.

    ``sampling`` is the patch: ``n * n`` consecutive NESTED pixels (one
    HEALPix pixel at a coarser nside), laid out as an ``n x n`` image by
    :func:`nested_to_image`. Each 2x2 pool divides the pixel count by 4, like
    DeepSphere's P4, so five blocks mirror the cosmology FCN (GC16-P4,
    GC32-P4, 3 x GC64-P4). A 3x3 kernel has 9 weights where a K = 5 Chebyshev
    filter has 5, so the paper-size deep blocks have 46 channels, not 64:
    56,554 parameters against the FCN's 55,202 (+2.4 %). Convolutions have no
    bias: the batch norm that follows has one.

    No augmentation: flips and 90-degree rotations of a patch image are not
    symmetries of the sphere's pixel grid (exact are only the transpose of a
    whole base face, a mirror through its central meridian, and for the 4
    equatorial faces the anti-transpose), so they would teach a distorted
    invariance.

    >>> import torch, numpy as np
    >>> patch = HEALPix(nside=64, indices=np.arange(64 * 64))     # 1/12 of the sky at nside 64
    >>> net = ConvNet2D(patch)
    >>> net(torch.zeros(3, 64 * 64, 1)).shape
    torch.Size([3, 2])
    >>> sum(p.numel() for p in net.parameters())
    56554
    """

    def __init__(self, sampling, in_channels: int = 1, out_features: int = 2, channels=(16, 32, 46, 46, 46),
                 kernel_size: int = 3):
        channels = check_channels(channels)
        in_channels, out_features = positive(in_channels, "in_channels"), positive(out_features, "out_features")
        kernel_size = positive(kernel_size, "kernel_size")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        super().__init__(sampling, dict(in_channels=in_channels, out_features=out_features,
                                        channels=list(channels), kernel_size=kernel_size))
        self.side = _patch_side(sampling)
        if self.side < 2 ** len(channels):
            raise ValueError(f"a {self.side}x{self.side} patch is too small for {len(channels)} 2x2 poolings; "
                             f"need at least {2 ** len(channels)}x{2 ** len(channels)}: use fewer channels")
        self.register_buffer("image_index", torch.from_numpy(nested_image_index(self.side).ravel().copy()),
                             persistent=False)
        blocks, fin = [], in_channels
        for fout in channels:
            blocks += [nn.Conv2d(fin, fout, kernel_size, padding=kernel_size // 2, bias=False),
                       nn.BatchNorm2d(fout), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            fin = fout
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(fin, out_features)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, n*n pixels (NESTED), channels] -> logits [batch, out_features]."""
        self.check_input(x)
        n = self.side
        img = x[:, self.image_index].reshape(x.shape[0], n, n, x.shape[2]).permute(0, 3, 1, 2)
        return self.head(self.features(img).mean(dim=(-2, -1)))


def _patch_side(sampling) -> int:
    """n for a sampling that is n*n consecutive NESTED HEALPix pixels forming one coarse pixel."""
    n = math.isqrt(sampling.npix)
    ok = (isinstance(sampling, HEALPix) and sampling.nest and sampling.indices is not None
          and n * n == sampling.npix and _is_power_of_two(n) and int(sampling.indices[0]) % sampling.npix == 0
          and np.array_equal(sampling.indices, sampling.indices[0] + np.arange(sampling.npix)))
    if not ok:
        raise ValueError(f"ConvNet2D needs a HEALPix patch of n*n consecutive NESTED pixels (one coarse pixel), "
                         f"got {sampling.describe()}")
    return n
