"""Datasets by name: the registry that configs' ``data.name`` reads.

A *builder* turns a config's ``data`` section into :class:`Splits`
(train/val/test datasets of ``(x [npix, C], y)`` and the sampling they live
on). Built in (imported on first use): ``synthetic``, ``npy``, ``patches``,
``maps``, ``cosmology``, and the experiments' ``shapes``, ``stations``, ``climate_*``. Add your own with :func:`register_dataset`; its parameters come
from a pydantic model or, by default, from the builder's keyword arguments::

    @register_dataset("mine", hint="make it with: python make_mine.py")
    def build_mine(sampling, task, seed, *, path: str, scale: float = 1.0) -> Splits:
        ...

    # config:  data: {name: mine, path: x.npy, scale: 2}

>>> {"synthetic", "npy", "maps"} <= set(dataset_names())
True
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..config import ConfigError, issues_from

__all__ = ["Splits", "DatasetEntry", "register_dataset", "dataset_entry", "dataset_names", "validate_params",
           "build_splits", "BUILTIN_DATASETS"]

#: The data sets graphsphere ships, by name: the module whose import registers them.
BUILTIN_DATASETS = {"synthetic": "graphsphere.data.datasets", "npy": "graphsphere.data.datasets",
                    "patches": "graphsphere.data.datasets", "cosmology": "graphsphere.data.datasets",
                    "shapes": "graphsphere.data.shapes", "maps": "graphsphere.data.skymaps",
                    "stations": "graphsphere.data.station_tasks",
                    "climate_segmentation": "graphsphere.data.climate_datasets",
                    "climate_forecast": "graphsphere.data.climate_datasets"}


@dataclass
class Splits:
    """What a dataset builder returns.

    ``n_out``: classes (classification, segmentation) or regression outputs.
    """

    train: Any
    val: Any
    test: Any
    sampling: Any
    in_channels: int
    n_out: int
    class_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetEntry:
    name: str
    builder: Callable[..., Splits]
    params: type[BaseModel]
    hint: str | None = None


_DATASETS: dict[str, DatasetEntry] = {}


class Params(BaseModel):
    """Base of builders' parameter schemas: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def _params_from_signature(name: str, fn: Callable, skip=("sampling", "task", "seed")) -> type[BaseModel]:
    fields = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if p.annotation is not inspect.Parameter.empty else Any
        if isinstance(ann, str):  # postponed annotations: validate loosely
            ann = Any
        fields[p.name] = (ann, ... if p.default is inspect.Parameter.empty else p.default)
    return create_model(f"{name}_params", __base__=Params, **fields)


def register_dataset(name: str, params: type[BaseModel] | None = None, hint: str | None = None):
    """Decorator: register ``builder(sampling, task, seed, **params) -> Splits``
    under ``name``. ``hint`` says how to make or fetch the data (shown when a
    file is missing)."""

    def deco(builder):
        # A built-in name registers only from its own module: a user's "stations" silently replacing the
        # built-in one would change what every config naming it trains on.
        if name in BUILTIN_DATASETS and builder.__module__ != BUILTIN_DATASETS[name]:
            raise ValueError(f"{name!r} is a built-in dataset name; register yours under another name")
        schema = params or _params_from_signature(name, builder)
        _DATASETS[name] = DatasetEntry(name, builder, schema, hint)
        return builder

    return deco


def dataset_names() -> list[str]:
    """Every name ``data.name`` accepts."""
    return sorted({*BUILTIN_DATASETS, *_DATASETS})


def dataset_entry(name: str, trust_code: bool = False) -> DatasetEntry:
    """The registered builder of ``name`` (importing a built-in's module on first use), or, with
    ``trust_code``, a builder function given as ``"package.module:function"`` (code outside
    graphsphere: a config names it, so it runs only when the user says the config is trusted)."""
    if name not in _DATASETS and name in BUILTIN_DATASETS:
        importlib.import_module(BUILTIN_DATASETS[name])
    if name not in _DATASETS and ":" in name:
        if not trust_code:
            raise ConfigError([("data.name", f" = {name!r}: a builder outside graphsphere runs only when you trust "
                                "the config: pass --trust-code (trust_code=True in Python), or register it with "
                                "graphsphere.data.register_dataset")])
        module, _, attr = name.partition(":")
        try:
            builder = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError([("data.name", f" = {name!r}: cannot import it ({e})")]) from None
        register_dataset(name)(builder)
    if name not in _DATASETS:
        raise ConfigError([("data.name", f" = {name!r}: unknown dataset; allowed: {dataset_names()} "
                            "(or register one with graphsphere.data.register_dataset)")])
    return _DATASETS[name]


def validate_params(name: str, values: dict[str, Any], trust_code: bool = False) -> BaseModel:
    """The builder parameters of dataset ``name``, validated by its schema."""
    schema = dataset_entry(name, trust_code).params
    try:
        return schema.model_validate(values)
    except ValidationError as e:
        raise ConfigError(issues_from(e, schema, ("data",))) from None


def build_splits(name: str, params: dict[str, Any], sampling, task: str, seed: int, trust_code: bool = False) -> Splits:
    """Build the datasets of ``name`` with (validated) ``params``; ``sampling``
    is the configured one, or None when the data bring their own."""
    entry = dataset_entry(name, trust_code)
    try:
        splits = entry.builder(sampling, task, seed, **params)
    except FileNotFoundError as e:
        if entry.hint and entry.hint not in str(e):  # say how to make or fetch the data
            raise FileNotFoundError(f"{e}\n  {entry.hint}") from None
        raise
    if sampling is not None and splits.sampling is not sampling and splits.sampling != sampling:
        raise ConfigError([("sampling", f": the config says {sampling!r} but dataset {name!r} is on "
                            f"{splits.sampling!r}; fix the sampling section or remove it")])
    if splits.train is None or len(splits.train) == 0:
        raise ValueError(f"dataset {name!r} has no training samples")
    return splits
