"""graphsphere: DeepSphere for modern PyTorch — graph-based spherical CNNs.

The NumPy/SciPy layers (samplings, graphs, analysis) import at once; the
PyTorch ones (``nn``, ``models``, ``train``) on first use, so that
``import graphsphere`` stays light for users who only need graphs.

>>> import graphsphere as gs
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8, kernel_width="mean")
>>> g.npix
192
"""

import importlib

from . import sampling
from .graph import SphereGraph

__version__ = "0.1.0"

_LAZY = {"nn", "models", "train", "data", "spectral", "rotation", "equivariance", "kernel_widths", "tuning", "plot",
         "experiments", "config", "files"}

__all__ = ["sampling", "SphereGraph", "__version__", *sorted(_LAZY)]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'graphsphere' has no attribute {name!r}")
