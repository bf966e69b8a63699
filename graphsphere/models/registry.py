"""Model classes by name: what configs and checkpoints may build.

A checkpoint names its model's class; only classes known here are rebuilt
from it: the built-in ones (listed by import path, loaded on first use, so
that an experiment's model does not import the experiment), and classes
registered at run time with :func:`register_model`. Any other class is code
a file would choose to run: :func:`model_class` refuses a ``"module:Class"``
path unless the caller passes ``trust_code=True`` (``--trust-code`` on the
command line), the user's explicit opt-in.

>>> model_class("SphericalCNN").__name__
'SphericalCNN'
>>> model_class("os:system")
Traceback (most recent call last):
...
ValueError: model type 'os:system' is code outside graphsphere: it is imported and run only when you trust its source; pass trust_code=True (the command line: --trust-code) ...
"""

from __future__ import annotations

import importlib

__all__ = ["register_model", "model_class", "model_names", "BUILTIN_MODELS"]

#: The models graphsphere ships, by name: "module:attribute".
BUILTIN_MODELS = {
    "SphericalCNN": "graphsphere.models.cnn:SphericalCNN",
    "SphericalUNet": "graphsphere.models.unet:SphericalUNet",
    "ConvNet2D": "graphsphere.experiments.cosmology.baselines:ConvNet2D",
    "StationGCN": "graphsphere.experiments.stations.models:StationGCN",
    "SHTCNN": "graphsphere.experiments.shapes.sht_cnn:SHTCNN",
    "PixelNet": "graphsphere.experiments.climate.baselines:PixelNet",
}

_REGISTERED: dict[str, type] = {}


def register_model(cls=None, *, name: str | None = None):
    """Register a model class (decorator) so that configs can name it
    (``model.type: NAME``) and checkpoints of it load without ``trust_code``.

    The class takes ``sampling`` (and, where it has them, ``in_channels``,
    ``out_features`` or ``out_channels`` and ``task``) as the built-in models do.
    """
    def deco(c):
        key = name or c.__name__
        if key in BUILTIN_MODELS:
            raise ValueError(f"{key!r} is a built-in model name; register yours under another name")
        _REGISTERED[key] = c
        return c
    return deco(cls) if cls is not None else deco


def model_names() -> list[str]:
    """Names :func:`model_class` accepts without ``trust_code``."""
    return sorted({*BUILTIN_MODELS, *_REGISTERED})


def _import(path: str, what: str):
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what}: cannot import {path!r} ({e})") from None


def model_class(name: str, trust_code: bool = False) -> type:
    """The class a model name stands for: built-in, registered, or (only
    with ``trust_code``) a ``"package.module:Class"`` import path."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in BUILTIN_MODELS:
        return _import(BUILTIN_MODELS[name], f"model type {name!r}")
    if ":" in name:
        if not trust_code:
            raise ValueError(
                f"model type {name!r} is code outside graphsphere: it is imported and run only when you trust its "
                "source; pass trust_code=True (the command line: --trust-code) or register the class with "
                "graphsphere.models.register_model")
        return _import(name, f"model type {name!r}")
    raise ValueError(f"unknown model type {name!r}; known: {model_names()} (or 'package.module:Class' for your "
                     "own, with trust_code)")
