"""graphsphere: DeepSphere for modern PyTorch — graph-based spherical CNNs.

>>> import graphsphere as gs
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=4), k=8, kernel_width="mean")
>>> g.npix
192
"""

from . import sampling
from .graph import SphereGraph

__version__ = "0.1.0"

__all__ = ["sampling", "SphereGraph", "__version__"]
