"""Pictures: maps on the sphere, spectra, filters, equivariance curves.

matplotlib is imported inside the functions (it is an optional extra:
``pip install -e '.[plot]'`` in the repository). Every picture is sized for
print (:mod:`graphsphere.plot.style`) and its colourbars carry units.

>>> from graphsphere import plot
>>> callable(plot.mollview) and callable(plot.mapview) and callable(plot.plot_equivariance)
True
"""

from . import equivariance, maps, spectral, style
from .equivariance import plot_equivariance, plot_tuning
from .maps import mapview, mollview, savefig, scatter
from .spectral import plot_alignment, plot_filter_response, plot_spectrum, plot_transfer_function

__all__ = ["maps", "spectral", "equivariance", "style", "mollview", "mapview", "scatter", "savefig",
           "plot_spectrum", "plot_alignment", "plot_filter_response", "plot_transfer_function", "plot_equivariance",
           "plot_tuning"]
