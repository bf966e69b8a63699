"""One look for every picture: sizes that print, fonts that stay legible, colourbars with units.

Figures are sized in inches for paper (``PAGE_WIDTH`` is a page's text width,
``COLUMN_WIDTH`` one column of two) and drawn with 8-point text, so that a
picture printed at its size reads like the page around it; they are saved at
``DPI`` (200: sharp on paper and screens, a few hundred kB).

>>> from graphsphere.plot.style import figure, colorbar
>>> fig, ax = figure(COLUMN_WIDTH, 2.5)
>>> float(fig.get_figwidth())
3.4
>>> cb = colorbar(ax.imshow([[0.0, 1e-4]]), ax, unit="convergence")
>>> cb.ax.get_xlabel()
'convergence [\u00d7 1e-4]'
"""

from __future__ import annotations

import functools

__all__ = ["PAGE_WIDTH", "COLUMN_WIDTH", "DPI", "STYLE", "figure", "colorbar", "use_agg", "styled"]

#: A page's text width (A4 or letter with ordinary margins), inches.
PAGE_WIDTH = 7.0
#: One column of a two-column page, inches.
COLUMN_WIDTH = 3.4
#: Resolution of saved pictures.
DPI = 200
#: matplotlib settings for every figure of the package (8-point text at print size).
STYLE = {
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "figure.titlesize": 9.5, "lines.markersize": 4, "axes.grid": False,
    "savefig.dpi": DPI, "savefig.bbox": "tight", "figure.dpi": 100,
}


def use_agg() -> None:
    """Draw off-screen (Agg) unless a backend is already in use: the pictures are files."""
    import matplotlib

    matplotlib.use("Agg", force=False)


def styled(fn):
    """Run a plotting function in the package's style (text made after ``plt.rc_context``
    closes would fall back to matplotlib's defaults, so the whole drawing runs inside it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        use_agg()
        import matplotlib.pyplot as plt

        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def figure(width: float = PAGE_WIDTH, height: float = 3.0, **kwargs):
    """``(fig, axes)`` of ``plt.subplots(**kwargs)`` at a print size, in the package's style."""
    use_agg()
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        return plt.subplots(figsize=(width, height), **kwargs)


def colorbar(mappable, ax, unit: str, orientation: str = "horizontal", ticks: int = 4, **kwargs):
    """A colourbar for ``mappable`` beside ``ax`` (an axes, or a list of axes that share it), labelled
    with its ``unit``, with at most ``ticks`` ticks. Values far from 1 are shown scaled, the power
    of ten moved into the label (``unit [x 1e-3]``): matplotlib's offset text would sit on the
    label of a horizontal bar, and long tick labels would run into each other."""
    import math

    import matplotlib.colors as mcolors
    import matplotlib.ticker as mticker

    opts = {"shrink": 0.7, "pad": 0.04, "fraction": 0.06, "aspect": 30} if orientation == "horizontal" else {}
    fig = (ax[0] if isinstance(ax, (list, tuple)) else ax).figure  # one axes, or a list sharing the bar
    cb = fig.colorbar(mappable, ax=ax, orientation=orientation, **(opts | kwargs))
    if mappable.get_array() is not None:
        mappable.autoscale_None()
    norm = mappable.norm
    if isinstance(norm, mcolors.LogNorm):  # decades, labelled 10^k
        cb.locator = mticker.LogLocator(numticks=ticks + 4)
        cb.formatter = mticker.LogFormatterSciNotation()
        cb.update_ticks()
        cb.set_label(unit, fontsize=7.5)
        cb.ax.tick_params(labelsize=7)
        return cb
    top = max(abs(norm.vmin or 0.0), abs(norm.vmax or 0.0))
    power = math.floor(math.log10(top)) if top > 0 and math.isfinite(top) else 0
    if -2 <= power <= 3:
        power = 0
    scale = 10.0**power
    cb.locator = mticker.MaxNLocator(ticks)
    cb.formatter = mticker.FuncFormatter(lambda v, _: f"{v / scale:.4g}".replace("-", "\u2212"))
    cb.update_ticks()
    cb.set_label(unit + (f" [\u00d7 1e{power}]" if power else ""), fontsize=7.5)
    cb.ax.tick_params(labelsize=7)
    return cb
