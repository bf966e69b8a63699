"""Synthetic spherical tasks that a small graph CNN learns in seconds, on any
sampling: maps are sums of Gaussian bumps ``a exp(-(1 - cos θ) / σ²)`` around
random centres (θ the angle to the centre), plus white noise.

- classification: class ``c`` is the bump width ``σ_c`` (wide ... narrow),
  3 bumps a map of random signs and amplitudes;
- regression: one bump; the targets are its width (as ``u`` in [0, 1], the
  position of log σ between the narrowest and widest bump) and, with
  ``n_targets=2``, its amplitude minus 1;
- segmentation: class ``k`` of ``1 .. C-1`` is a bump of amplitude
  ``±(1 + (k-1) // 2)``; a pixel belongs to the bump that dominates it where
  that bump is above half its peak, else to class 0 (background).

>>> import graphsphere as gs
>>> x, y = make_synthetic(gs.sampling.HEALPix(nside=4), "classification", n=6, num_classes=3, seed=0)
>>> x.shape, y.tolist()
((6, 192, 1), [0, 1, 2, 0, 1, 2])

Write a stand-in for users' own ``.npy`` data (``x.npy``, ``y.npy``)::

    python -m graphsphere.data.synthetic data/toy --nside 8 --task classification
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["make_synthetic", "save_example"]


def _random_unit_vectors(rng, shape) -> np.ndarray:
    v = rng.standard_normal((*shape, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _widths(npix: int) -> tuple[float, float]:
    """Narrowest and widest bump (radians): 3 pixel sizes up to 0.7 rad (40 deg)."""
    pix = np.sqrt(4 * np.pi / npix)
    return min(3 * pix, 0.35), 0.7


def _bumps(xyz, centres, sigma, amp) -> np.ndarray:
    """[n, npix]: per map, bumps summed over the second axis of centres/sigma/amp ([n, b, ...])."""
    cos = np.einsum("nbk,pk->nbp", centres, xyz)
    return np.einsum("nb,nbp->np", amp, np.exp(-(1 - cos) / sigma[..., None] ** 2)), cos


def make_synthetic(sampling, task: str, n: int, num_classes: int = 2, n_targets: int = 1, noise: float = 0.1,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` maps ``x [n, npix, 1]`` (float32) on ``sampling`` and their targets.

    Targets: int64 ``[n]`` (classification; classes cycle 0, 1, ..., so any
    prefix is balanced), float32 ``[n, n_targets]`` (regression), int64
    ``[n, npix]`` (segmentation). Deterministic in ``seed``.
    """
    rng = np.random.default_rng([int(seed), 20_240_917])
    xyz = np.asarray(sampling.xyz, dtype=np.float64)
    lo, hi = _widths(sampling.npix)
    if task == "classification":
        if num_classes < 2:
            raise ValueError(f"classification needs num_classes >= 2, got {num_classes}")
        y = np.arange(n) % num_classes
        widths = np.exp(np.linspace(np.log(hi), np.log(lo), num_classes))
        b = 3
        sigma = np.repeat(widths[y][:, None], b, axis=1) * rng.uniform(0.9, 1.1, (n, b))
        amp = rng.choice([-1.0, 1.0], (n, b)) * rng.uniform(0.7, 1.3, (n, b))
        m, _ = _bumps(xyz, _random_unit_vectors(rng, (n, b)), sigma, amp)
        y = y.astype(np.int64)
    elif task == "regression":
        if n_targets not in (1, 2):
            raise ValueError(f"synthetic regression has 1 (width) or 2 (width, amplitude) targets, got {n_targets}")
        u = rng.uniform(0, 1, n)
        a = rng.uniform(0.5, 1.5, n)
        sigma = np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))
        m, _ = _bumps(xyz, _random_unit_vectors(rng, (n, 1)), sigma[:, None], a[:, None])
        y = np.stack([u, a - 1], axis=1)[:, :n_targets].astype(np.float32)
    elif task == "segmentation":
        if num_classes < 2:
            raise ValueError(f"segmentation needs num_classes >= 2 (background + 1), got {num_classes}")
        b = 4
        cls = rng.integers(1, num_classes, (n, b))
        amp = np.where(cls % 2 == 1, 1.0, -1.0) * (1 + (cls - 1) // 2)
        sigma = np.full((n, b), np.sqrt(lo * hi) * 0.7)
        centres = _random_unit_vectors(rng, (n, b))
        m, cos = _bumps(xyz, centres, sigma, amp)
        profile = np.exp(-(1 - cos) / sigma[..., None] ** 2)          # [n, b, npix]
        top = profile.argmax(axis=1)                                  # dominant bump per pixel
        inside = np.take_along_axis(profile, top[:, None], 1)[:, 0] > 0.5
        y = np.where(inside, np.take_along_axis(cls, top, 1), 0).astype(np.int64)
    else:
        raise ValueError(f"task must be classification, regression or segmentation, got {task!r}")
    x = m + noise * rng.standard_normal(m.shape)
    return x[:, :, None].astype(np.float32), y


def save_example(folder, nside: int = 8, task: str = "classification", n: int = 256, num_classes: int = 2,
                 noise: float = 0.1, seed: int = 0) -> tuple[Path, Path]:
    """Write ``x.npy`` ([n, 12 nside², 1], HEALPix NESTED) and ``y.npy`` to ``folder``."""
    from ..sampling import HEALPix

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = make_synthetic(HEALPix(nside), task, n, num_classes=num_classes, noise=noise, seed=seed)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    return folder / "x.npy", folder / "y.npy"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m graphsphere.data.synthetic",
                                description="write synthetic HEALPix maps (x.npy, y.npy) to a folder")
    p.add_argument("folder")
    p.add_argument("--nside", type=int, default=8)
    p.add_argument("--task", default="classification", choices=["classification", "regression", "segmentation"])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--noise", type=float, default=0.1, help="white-noise std (the example config trains at 0.1)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    fx, fy = save_example(a.folder, a.nside, a.task, a.n, a.num_classes, noise=a.noise, seed=a.seed)
    print(f"wrote {fx} and {fy}")


if __name__ == "__main__":
    main()
