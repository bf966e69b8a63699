"""Pictures of equivariance: error against degree, tuned against heuristic widths.

matplotlib is imported inside the functions (an optional extra).

Example
-------
>>> import graphsphere as gs
>>> from graphsphere.equivariance import equivariance_error
>>> from graphsphere.plot.equivariance import plot_equivariance
>>> s = gs.sampling.HEALPix(nside=8)
>>> res = equivariance_error({"k=8": gs.SphereGraph(s, k=8, kernel_width="mean")}, s,
...                          degrees=(2, 4, 8), n_signals=1, n_rotations=1)
>>> fig = plot_equivariance(res, title="nside 8")
>>> len(fig.axes[0].lines) >= 2          # the curve and the rotation floor
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..equivariance import EquivarianceResult
from .style import COLUMN_WIDTH, PAGE_WIDTH, styled

__all__ = ["plot_equivariance", "plot_tuning"]


def _results(results) -> list:
    if isinstance(results, Mapping):
        return list(results.values())
    if isinstance(results, EquivarianceResult):
        return [results]
    return list(results)


@styled
def plot_equivariance(results, ax=None, title: str | None = None, floor: bool = True, path=None):
    """Equivariance error against degree (log scale), one curve per result,
    with the rotation floor dashed (drawn once per distinct floor).

    ``results``: an :class:`~graphsphere.equivariance.EquivarianceResult`, a
    list of them or a dict (label -> result). Error bars (standard deviation
    over signals and rotations) are drawn only where at least 2 were measured;
    open markers of different shapes, shifted a little apart along the degree
    axis, keep coincident points visible. Returns the figure; saves it to
    ``path`` if given.
    """
    import matplotlib.pyplot as plt

    res = _results(results)
    crowded = len(res) > 2  # then the legend goes beside the axes, off the curves
    if ax is None:
        fig, ax = plt.subplots(figsize=(PAGE_WIDTH if crowded else PAGE_WIDTH * 0.62, 3.2))
    else:
        fig = ax.figure
    markers = "osD^v<>ph*"
    for i, r in enumerate(res):
        e = np.asarray(r.error)
        degrees = np.asarray(r.degrees, dtype=float)
        # a shift of up to +-2% of the degree: equal errors of two graphs stay visible side by side
        shift = 1.0 + 0.02 * (i - (len(res) - 1) / 2) / max(1, len(res) - 1) * 2
        yerr = np.minimum(np.asarray(r.error_std), 0.95 * e) if r.n_signals * r.n_rotations >= 2 else None
        ax.errorbar(degrees * shift, e, yerr=yerr, marker=markers[i % 10], mfc="none", ms=4, mew=1,
                    capsize=2 if yerr is not None else 0, lw=1.2, label=r.label or f"operator {i}")
    if floor:
        seen = []
        for r in res:
            key = (r.rotation, tuple(np.round(np.asarray(r.floor), 12)))
            if key in seen:
                continue
            seen.append(key)
            ax.plot(r.degrees, r.floor, ls="--", color="0.45", lw=0.8,
                    label=f"rotation floor ({r.rotation.replace('_', '-')})")
    ax.set_yscale("log")
    ax.set_xlabel("degree l of the signal")
    ax.set_ylabel(r"relative error $\|R L f - L R f\| \,/\, \|L f\|$")
    ax.grid(True, which="both", alpha=0.3)
    if crowded:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        from .maps import savefig

        savefig(fig, path)
    return fig


@styled
def plot_tuning(table: Mapping[str, Any], k: int | Iterable[int] = (8, 20, 40), path=None):
    """Tuned against heuristic widths, one panel per family of samplings:
    the mean (geometric) equivariance error at each tuned resolution, for
    each k; solid lines tuned, dotted the "mean" heuristic, dashed the
    published HEALPix widths where there are some.

    ``table`` is :func:`graphsphere.kernel_widths.load_table` output.
    """
    import matplotlib.pyplot as plt

    ks = [k] if isinstance(k, int) else list(k)
    fams = table["families"]
    width = min(PAGE_WIDTH, 0.5 + COLUMN_WIDTH * 0.75 * len(fams))
    fig, axes = plt.subplots(1, len(fams), figsize=(width + 1.3, 2.6), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, fam) in zip(axes[0], fams.items()):
        for j, kk in enumerate(ks):
            es = [e for e in fam["entries"] if e["k"] == kk]
            if not es:
                continue
            x = [e["resolution"] for e in es]
            c = colors[j % len(colors)]
            ax.plot(x, [e["objective"] for e in es], "o-", color=c, mfc="none", ms=4, label=f"k={kk} tuned")
            ax.plot(x, [e["objective_heuristic"] for e in es], "s:", color=c, mfc="none", ms=3.5,
                    label=f"k={kk} mean heuristic")
            pub = [(e["resolution"], e["objective_published"]) for e in es if "objective_published" in e]
            if pub:
                ax.plot(*zip(*pub), "^--", color=c, alpha=0.7, mfc="none", ms=4, label=f"k={kk} published")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("mean equivariance error")
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.supxlabel("resolution: nside (HEALPix), $\\sqrt{npix/12}$ (the others)", x=0.5 * width / (width + 1.3),
                  fontsize=plt.rcParams["axes.labelsize"])
    fig.tight_layout(rect=(0, 0, width / (width + 1.3), 1))
    fig.legend(handles.values(), handles.keys(), loc="center right")
    if path is not None:
        from .maps import savefig

        savefig(fig, path)
    return fig
