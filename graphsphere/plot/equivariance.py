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

from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["plot_equivariance", "plot_tuning"]


def _results(results) -> list:
    if isinstance(results, Mapping):
        return list(results.values())
    if hasattr(results, "degrees"):
        return [results]
    return list(results)


def plot_equivariance(results, ax=None, title: str | None = None, floor: bool = True, path=None):
    """Equivariance error against degree (log scale), one curve per result,
    with the rotation floor dashed (drawn once per distinct floor).

    ``results``: an :class:`~graphsphere.equivariance.EquivarianceResult`, a
    list of them or a dict (label -> result). Returns the figure; saves it
    to ``path`` if given.
    """
    import matplotlib

    if ax is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    res = _results(results)
    crowded = len(res) > 5  # then the legend goes beside the axes
    if ax is None:
        fig, ax = plt.subplots(figsize=(9.6 if crowded else 6.4, 4.4))
    else:
        fig = ax.figure
    markers = "osD^v<>ph*"
    for i, r in enumerate(res):
        e = np.asarray(r.error)
        ax.errorbar(r.degrees, e, yerr=np.minimum(np.asarray(r.error_std), 0.95 * e), marker=markers[i % 10],
                    ms=4, capsize=2, lw=1.4, label=r.label or f"operator {i}")
    if floor:
        seen = []
        for r in res:
            key = (r.rotation, tuple(np.round(np.asarray(r.floor), 12)))
            if key in seen:
                continue
            seen.append(key)
            ax.plot(r.degrees, r.floor, ls="--", color="0.45", lw=1,
                    label=f"rotation floor ({r.rotation.replace('_', '-')})")
    ax.set_yscale("log")
    ax.set_xlabel("degree l of the signal")
    ax.set_ylabel(r"$\|R L f - L R f\| \,/\, \|L f\|$")
    ax.grid(True, which="both", alpha=0.3)
    if crowded:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_tuning(table: Mapping[str, Any], k: int | Iterable[int] = (8, 20, 40), path=None):
    """Tuned against heuristic widths, one panel per family of samplings:
    the mean (geometric) equivariance error at each tuned resolution, for
    each k; solid lines tuned, dotted the "mean" heuristic, dashed the
    published HEALPix widths where there are some.

    ``table`` is :func:`graphsphere.kernel_widths.load_table` output.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ks = [k] if isinstance(k, int) else list(k)
    fams = table["families"]
    fig, axes = plt.subplots(1, len(fams), figsize=(3.6 * len(fams), 3.6), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, fam) in zip(axes[0], fams.items()):
        for j, kk in enumerate(ks):
            es = [e for e in fam["entries"] if e["k"] == kk]
            if not es:
                continue
            x = [e["resolution"] for e in es]
            c = colors[j % len(colors)]
            ax.plot(x, [e["objective"] for e in es], "o-", color=c, label=f"k={kk} tuned")
            ax.plot(x, [e["objective_heuristic"] for e in es], "s:", color=c, label=f"k={kk} mean heuristic")
            pub = [(e["resolution"], e["objective_published"]) for e in es if "objective_published" in e]
            if pub:
                ax.plot(*zip(*pub), "^--", color=c, alpha=0.7, label=f"k={kk} published")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("resolution (nside or sqrt(npix/12))")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("mean equivariance error")
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=7)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
