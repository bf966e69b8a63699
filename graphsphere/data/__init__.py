"""Data: datasets by name for the training engine, users' own maps, files in
and out, and the data sets of the experiments. Submodules load on first use
(the registry needs the ``train`` extra, the cosmology maps the ``cosmology`` one).

>>> from graphsphere.data import register_dataset, Splits   # your own data set for `graphsphere train`
>>> from graphsphere.data import cosmology                   # physics-generated convergence maps
"""

import importlib

_SUBMODULES = ("cosmology", "maps", "io", "synthetic", "datasets", "registry", "regrid", "climate", "sources",
               "meshes", "stations", "station_tasks", "climate_tasks", "climate_datasets", "skymaps", "shapes")
_FROM_REGISTRY = ("Splits", "register_dataset", "build_splits", "dataset_names")

__all__ = [*_FROM_REGISTRY, *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FROM_REGISTRY:
        return getattr(importlib.import_module(".registry", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
