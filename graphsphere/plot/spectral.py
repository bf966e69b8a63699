"""Pictures of the graph spectrum: eigenvalues against l(l+1), the alignment
of graph Fourier modes with spherical harmonics, filter responses and the
transfer function of a graph smoothing.

matplotlib is imported inside the functions. Each takes an optional ``ax``
and returns the axes (or the figure for multi-panel pictures).

Example
-------
>>> import graphsphere as gs
>>> from graphsphere import spectral
>>> from graphsphere.plot.spectral import plot_spectrum
>>> fit = spectral.graph_spectrum_vs_ll1(gs.SphereGraph(gs.sampling.HEALPix(nside=8), k=8), lmax=6)
>>> fig = plot_spectrum(fit)                                  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from .style import COLUMN_WIDTH, PAGE_WIDTH, colorbar, styled

__all__ = ["plot_alignment", "plot_filter_response", "plot_spectrum", "plot_transfer_function"]


def _axes(ax, figsize=(COLUMN_WIDTH, 2.6)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


@styled
def plot_spectrum(fit, title: str | None = None):
    """Two panels from a ``SpectrumFit`` (``spectral.graph_spectrum_vs_ll1``):
    the eigenvalues by index against the staircase c l(l+1) (plateaus of
    2l + 1), and eigenvalue / c against l(l+1) (on the diagonal when the
    graph Laplacian acts like the Laplace-Beltrami operator). Returns the figure.
    """
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 2.8))
    c = fit.scale
    if fit.eigenvalues is not None:
        lam = np.sort(fit.eigenvalues)
        idx = np.arange(lam.size)
        deg = np.floor(np.sqrt(idx)).astype(int)  # degree of index i: l^2 <= i < (l+1)^2
        a1.plot(idx, lam, ".", ms=3, label="graph eigenvalues")
        a1.step(idx, c * deg * (deg + 1), where="post", color="k", lw=0.8, label="c l(l+1)")
        a1.set_xlabel("eigenvalue index")
        a1.set_ylabel("eigenvalue $\\lambda$ (no unit)")
        a2.plot(deg * (deg + 1.0), lam / c, ".", ms=3, label="graph eigenvalues / c")
    else:
        a1.plot(fit.ell, fit.value, "o", mfc="none", label=f"{fit.method} per degree")
        a1.plot(fit.ell, c * fit.ll1, "k-", lw=0.8, label="c l(l+1)")
        a1.set_xlabel("degree l")
        a1.set_ylabel("eigenvalue $\\lambda$ (no unit)")
        a2.plot(fit.ll1, fit.value / c, "o", mfc="none", label=f"{fit.method} / c")
    top = fit.ll1.max()
    a2.plot([0, top], [0, top], "k-", lw=0.8, label="l(l+1)")
    a2.set_xlabel("l(l+1)")
    a2.set_ylabel("eigenvalue / c")
    a1.legend(loc="upper left")
    a2.legend(loc="upper left")
    fig.suptitle(title or f"graph spectrum vs l(l+1): c = {c:.4g} ({fit.method})")
    fig.tight_layout()
    return fig


@styled
def plot_alignment(A, ax=None, title: str | None = None, log: bool = False):
    """Heat map of an alignment matrix (``spectral.alignment_matrix``): row l
    = graph eigenvector group l, column l' = spherical-harmonic degree l'.
    ``log`` shows log10 of the energy share (reveals the small leaks)."""
    import matplotlib.colors as mcolors

    A = np.asarray(A, dtype=np.float64)
    ax = _axes(ax, (COLUMN_WIDTH + 0.6, 3.2))
    norm = mcolors.LogNorm(vmin=max(A[A > 0].min(), 1e-6), vmax=1) if log else mcolors.Normalize(0, 1)
    im = ax.imshow(np.where(A > 0, A, np.nan) if log else A, origin="upper", cmap="magma_r", norm=norm,
                   interpolation="nearest")
    colorbar(im, ax, "share of the group's energy (fraction)", orientation="vertical", ticks=6)
    ax.set_xlabel("spherical harmonic degree l'")
    ax.set_ylabel("graph eigenvector group l (2l+1 vectors)")
    ax.set_title(title or "alignment of graph Fourier modes with spherical harmonics")
    return ax


@styled
def plot_filter_response(response, coefficients=None, lambda_max: float = 2.0, eigenvalues=None, ax=None,
                         title: str | None = None, logy: bool = False):
    """A spectral response g(lambda) on [0, lambda_max] and, with ``coefficients``,
    the Chebyshev polynomial that realises it; ``eigenvalues`` are marked.
    ``logy`` plots |g| on a log scale (shows the approximation error's floor)."""
    from ..spectral import chebyshev_response

    ax = _axes(ax)
    lam = np.linspace(0, lambda_max, 400)
    ax.plot(lam, response(lam), "k-", lw=1.5, label="target")
    if coefficients is not None:
        K = len(coefficients)
        ax.plot(lam, chebyshev_response(coefficients, lam, lambda_max), "C1--", lw=1,
                label=f"Chebyshev ({K} terms)")
    if eigenvalues is not None:
        ev = np.asarray(eigenvalues)
        ax.plot(ev, response(ev), "|", color="C0", ms=8, label="graph eigenvalues")
    if logy:
        ax.set_yscale("log")
        for line in ax.get_lines():
            line.set_ydata(np.abs(line.get_ydata()))
        ax.set_ylim(1e-7, 2)
    ax.set_xlabel("graph eigenvalue $\\lambda$ (no unit)")
    ax.set_ylabel("|g($\\lambda$)|, gain" if logy else "g($\\lambda$), gain")
    ax.set_title(title or "filter response")
    ax.legend(loc="upper right", handlelength=1.5)
    return ax


@styled
def plot_transfer_function(ell, measured, target, band: int | None = None, ax=None, title: str | None = None,
                           label: str = "graph filter"):
    """Measured transfer function C_l(out) / C_l(in) against a target (e.g. a
    beam squared), log scale; ``band`` marks the degree up to which they are
    compared."""
    ax = _axes(ax)
    ax.semilogy(ell, target, "k-", lw=1.5, label="target: beam$^2$")
    ax.semilogy(ell, measured, "C1.", ms=3, label=label)
    if band is not None:
        ax.axvline(band, color="gray", ls=":", label=f"compared: l \u2264 {band}")
    ax.set_xlabel("degree l")
    ax.set_ylabel("$C_\\ell$(out) / $C_\\ell$(in), power ratio")
    ax.set_ylim(max(np.nanmin(np.asarray(target)[np.asarray(target) > 0]), 1e-6), 2)
    ax.set_title(title or "transfer function")
    ax.legend(loc="upper right", handlelength=1.5)
    return ax
