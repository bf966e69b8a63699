"""Data sets for the experiments and loaders for users' own data.

>>> from graphsphere.data import cosmology  # physics-generated convergence maps
"""

from . import cosmology

__all__ = ["cosmology"]
