"""Pictures: maps on the sphere, spectra, equivariance curves, training curves.

matplotlib is imported inside the functions (it is an optional extra).
"""
