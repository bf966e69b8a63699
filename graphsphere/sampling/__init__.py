"""Samplings of the sphere: where the pixels are (NumPy only).

>>> import graphsphere as gs
>>> gs.sampling.HEALPix(nside=2).npix
48
"""

from .base import Sampling, check_lonlat, lonlat_to_xyz, sampling_classes, xyz_to_lonlat
from .equiangular import Equiangular
from .gauss_legendre import GaussLegendre
from .healpix import HEALPix, check_map_order, check_nside, extend_footprint
from .icosahedral import Icosahedral
from .points import Points
from .spec import check_spec, from_spec, from_state, parse_spec, sampling_names, spec_params

__all__ = ["Sampling", "HEALPix", "Equiangular", "GaussLegendre", "Icosahedral", "Points", "check_nside",
           "extend_footprint", "check_map_order", "lonlat_to_xyz", "xyz_to_lonlat", "check_lonlat", "check_spec",
           "from_spec", "from_state", "parse_spec", "sampling_classes", "sampling_names", "spec_params"]
