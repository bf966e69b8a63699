"""Graph spectral analysis and graph filters on the sphere (NumPy/SciPy/healpy).

Two modules: :mod:`.basis` (the graph Fourier basis against the spherical
harmonics) and :mod:`.filters` (filter design and application); their names
are all here.

Why DeepSphere works: the Laplacian of a well-built sphere graph has
eigenvalues in plateaus of 2l + 1 (one per spherical-harmonic degree l), with
plateau values close to c l(l+1), and the eigenvectors of plateau l are close
to the spherical harmonics of degree l. A polynomial of the Laplacian is then
close to an isotropic spherical convolution, at O(K |E|) = O(npix) cost.

This module measures that (``fourier_basis``, ``harmonic_degree_groups``,
``alignment_matrix``, ``graph_spectrum_vs_ll1``, ``fit_ll1_scale``) and designs
filters (``chebyshev_coefficients`` of any response g(lambda), ``heat_kernel``,
``gaussian_beam``), applied with ``apply_filter`` (NumPy; on torch tensors,
``graphsphere.nn.functional.chebyshev_filter`` runs the kernel of ``ChebConv``)
or exactly with ``spectral_filter`` (small graphs). NumPy and SciPy only.

Example: smooth a map like ``healpy.smoothing`` with a 5-term graph filter

>>> import numpy as np, graphsphere as gs
>>> from graphsphere import spectral
>>> g = gs.SphereGraph(gs.sampling.HEALPix(nside=16), k=8)
>>> c = spectral.fit_ll1_scale(g)                 # lambda_l ~ c l(l+1)
>>> response = spectral.gaussian_beam(np.radians(10), scale=c)
>>> coeffs = spectral.filter_coefficients(g, response, K=5)
>>> x = np.random.default_rng(0).standard_normal(g.npix)
>>> y = spectral.apply_filter(g, x, coeffs)
>>> bool(y.std() < x.std())
True
"""

from .basis import (
                    DENSE_LIMIT,
                    DegreeGroups,
                    SpectrumFit,
                    alignment_matrix,
                    degree_slices,
                    fit_ll1_scale,
                    fourier_basis,
                    graph_spectrum_vs_ll1,
                    harmonic_degree_groups,
                    harmonic_rayleigh_quotients,
)
from .filters import (
                    apply_filter,
                    chebyshev_coefficients,
                    chebyshev_order,
                    chebyshev_response,
                    filter_coefficients,
                    gaussian_beam,
                    heat_kernel,
                    smooth,
                    spectral_filter,
                    transfer_function,
)

__all__ = ["DegreeGroups", "SpectrumFit", "alignment_matrix", "apply_filter", "chebyshev_coefficients",
           "chebyshev_order", "chebyshev_response", "degree_slices", "filter_coefficients", "fit_ll1_scale",
           "fourier_basis", "gaussian_beam", "graph_spectrum_vs_ll1", "harmonic_degree_groups",
           "harmonic_rayleigh_quotients", "heat_kernel", "smooth", "spectral_filter", "transfer_function",
           "DENSE_LIMIT"]
