"""The training configuration: YAML, validated with pydantic before any work starts.

Every section forbids unknown keys; a bad field is reported with its dotted
name, the value given and what is allowed, all problems at once::

    config error in run.yaml:
      trainer.max_epoch: unknown field (value 3); did you mean 'max_epochs'? Allowed: [...]
      optim.lr = -1: Input should be greater than 0

Overrides on the command line (``trainer.max_epochs=3``) are parsed with
``yaml.safe_load`` for the value, so ``3`` is an int, ``[8, 16]`` a list and
``null`` None.

>>> cfg = load_config({"task": "classification", "sampling": {"type": "HEALPix", "nside": 4}},
...                   overrides=["trainer.max_epochs=2", "model.channels=[4, 8]"])
>>> cfg.trainer.max_epochs, cfg.model.extra["channels"]
(2, [4, 8])
>>> load_config({"task": "classification", "trainer": {"max_epoch": 2}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
graphsphere.train.config.ConfigError: config error:
  trainer.max_epoch: unknown field (value 2); did you mean 'max_epochs'? ...
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      PrivateAttr, ValidationError, field_validator, model_validator)

__all__ = ["Config", "ConfigError", "load_config", "apply_overrides", "DataConfig", "SamplingConfig",
           "ModelConfig", "OptimConfig", "TrainerConfig", "resolve_model_class", "AUTOMATIC_MODEL_ARGS"]

TASKS = ("classification", "regression", "segmentation")


class ConfigError(ValueError):
    """A configuration problem; ``issues`` is a list of ``(dotted field, message)``."""

    def __init__(self, issues: list[tuple[str, str]], source: str | None = None):
        self.issues, self.source = list(issues), source
        head = f"config error in {source}:" if source else "config error:"
        super().__init__("\n  ".join([head] + [f"{loc}{msg}" for loc, msg in self.issues]))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# -- sections --------------------------------------------------------------------------------------
class SamplingConfig(BaseModel):
    """``type`` (HEALPix, Equiangular, GaussLegendre, Icosahedral, Points) and its
    constructor arguments. HEALPix ``indices`` (a partial sky) may be a list of
    pixel ids or the path of an ``.npy`` file holding them."""

    model_config = ConfigDict(extra="allow")
    type: str = "HEALPix"
    _built: Any = PrivateAttr(default=None)

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def build(self):
        """The :class:`graphsphere.sampling.Sampling` (built once, then cached)."""
        if self._built is None:
            self._built = _build_sampling(self.type, self.args)
        return self._built

    @model_validator(mode="after")
    def _check(self):
        self.build()
        return self


def _build_sampling(type_: str, args: dict[str, Any]):
    import numpy as np

    from ..sampling import base

    registry = base._REGISTRY
    canon = {k.lower(): k for k in registry}
    name = canon.get(str(type_).lower())
    if name is None:
        raise ConfigError([("sampling.type", f" = {type_!r}: unknown sampling; allowed: {sorted(registry)}")])
    cls = registry[name]
    params = inspect.signature(cls).parameters
    for key in args:
        if key not in params:
            allowed = [p for p in params if p != "self"]
            raise ConfigError([(f"sampling.{key}", f": unknown argument of {name} (value {args[key]!r}); "
                                f"allowed: {allowed}")])
    args = dict(args)
    if isinstance(args.get("indices"), str):
        p = Path(args["indices"]).expanduser()
        if not p.exists():
            raise ConfigError([("sampling.indices", f" = {args['indices']!r}: file not found ({p.resolve()}); "
                                "save pixel ids with numpy.save(path, ids)")])
        args["indices"] = np.load(p)
    try:
        return cls(**args)
    except (TypeError, ValueError) as e:
        raise ConfigError([("sampling", f" ({name}): {e}")]) from None


class DataConfig(BaseModel):
    """``name`` of a registered dataset builder (``synthetic``, ``npy``,
    ``cosmology``, or your own, see ``graphsphere.train.datasets.register_dataset``)
    and its parameters, checked by the builder's own schema."""

    model_config = ConfigDict(extra="allow")
    name: str = "synthetic"
    num_workers: NonNegativeInt = 0
    seed: int | None = None
    _params: Any = PrivateAttr(default=None)

    @property
    def params(self):
        """The builder's parameters, validated (a pydantic model)."""
        return self._params

    @model_validator(mode="after")
    def _check(self):
        from .datasets import dataset_entry

        entry = dataset_entry(self.name)  # ConfigError naming the known ones
        self._params = _validate_params(entry.params, dict(self.model_extra or {}), "data", f"dataset {self.name!r}")
        return self


#: Model arguments filled in from the data and the task, never from the config.
AUTOMATIC_MODEL_ARGS = ("sampling", "in_channels", "out_features", "out_channels", "task")
BUILTIN_MODELS = ("SphericalCNN", "SphericalUNet")


def resolve_model_class(name: str):
    """``SphericalCNN`` / ``SphericalUNet`` (``graphsphere.models``) or ``"package.module:Class"``."""
    import importlib

    if ":" in name:
        mod, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError([("model.type", f" = {name!r}: cannot import it ({e})")]) from None
    if name not in BUILTIN_MODELS:
        raise ConfigError([("model.type", f" = {name!r}: unknown model; allowed: {list(BUILTIN_MODELS)} or "
                            "'package.module:Class' for your own")])
    from .. import models

    return getattr(models, name)


class ModelConfig(BaseModel):
    """``type`` (``SphericalCNN``, ``SphericalUNet`` or ``"package.module:Class"``)
    and its constructor arguments. The sampling, the number of input channels,
    outputs and the task are filled in from the data."""

    model_config = ConfigDict(extra="allow")
    type: str = "SphericalCNN"

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check(self):
        cls = resolve_model_class(self.type)
        issues = []
        sig = inspect.signature(cls)
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        allowed = [p for p in sig.parameters if p not in AUTOMATIC_MODEL_ARGS and not p.startswith("_")]
        for key, value in self.extra.items():
            if key in AUTOMATIC_MODEL_ARGS:
                issues.append((f"model.{key}", f" = {value!r}: set automatically from the data and the task; "
                               "remove it"))
            elif (key not in allowed) and not takes_kwargs:
                issues.append((f"model.{key}", f": unknown argument of {self.type} (value {value!r})"
                               f"{_did_you_mean(key, allowed)} Allowed: {allowed}"))
        if issues:
            raise ConfigError(issues)
        return self


class OptimConfig(_Section):
    """Optimizer and learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    momentum: NonNegativeFloat = 0.9
    scheduler: Literal["none", "cosine", "step", "exponential", "plateau"] = "none"
    #: step: multiply by gamma every step_size intervals; exponential: by gamma each interval
    #: (the 2019 cosmology run: gamma 0.999 per step); plateau: by gamma after step_size bad epochs.
    step_size: PositiveInt = 10
    gamma: PositiveFloat = 0.1
    interval: Literal["epoch", "step"] = "epoch"


class TrainerConfig(_Section):
    """How to train: epochs, batches, hardware, precision, checkpoints, logs."""

    max_epochs: PositiveInt = 10
    max_steps: int = Field(-1, ge=-1)
    batch_size: PositiveInt = 32
    seed: int = 0
    precision: Literal["32", "64", "16-mixed", "bf16-mixed"] = "32"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: PositiveInt | list[NonNegativeInt] | Literal["auto"] = 1
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"] = "auto"
    num_nodes: PositiveInt = 1
    #: Convert batch norms to SyncBatchNorm under DDP (needs a GPU backend: torch's SyncBatchNorm
    #: does not run on CPU).
    sync_batchnorm: bool = False
    #: Also write last.ckpt every this many optimizer steps (0: only at epoch ends).
    checkpoint_every_n_steps: NonNegativeInt = 50
    early_stopping_patience: PositiveInt | None = None
    monitor: str = "val_loss"
    monitor_mode: Literal["min", "max"] = "min"
    gradient_clip_val: PositiveFloat | None = None
    log_every_n_steps: PositiveInt = 10
    val_every_n_epochs: PositiveInt = 1
    limit_train_batches: PositiveInt | PositiveFloat = 1.0
    limit_val_batches: NonNegativeInt | NonNegativeFloat = 1.0
    progress_bar: bool = True
    loggers: list[Literal["csv", "tensorboard"]] = ["csv", "tensorboard"]
    deterministic: bool = False
    #: Resume from output_dir/checkpoints/last.ckpt when it exists.
    resume: bool = True

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_str(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class Config(_Section):
    """A whole run. See ``experiments/example_*.yaml``."""

    task: Literal["classification", "regression", "segmentation"]
    output_dir: str = "runs/default"
    data: DataConfig = Field(default_factory=DataConfig)
    sampling: SamplingConfig | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @model_validator(mode="after")
    def _model_fits_task(self):
        per_vertex = {"SphericalCNN": False, "SphericalUNet": True}.get(self.model.type)
        if per_vertex is False and self.task == "segmentation":
            raise ConfigError([("model.type", " = 'SphericalCNN': it outputs one vector per map; segmentation "
                                "needs one per pixel: use SphericalUNet")])
        if per_vertex is True and self.task == "classification":
            raise ConfigError([("model.type", " = 'SphericalUNet': it outputs one vector per pixel; "
                                "classification of whole maps needs SphericalCNN (or task: segmentation)")])
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (what goes into YAML and checkpoints)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# -- validation helpers ----------------------------------------------------------------------------
def _did_you_mean(key: str, allowed) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    return f"; did you mean {close[0]!r}?" if close else "."


def _model_fields(model_cls, loc: tuple) -> list[str]:
    """Field names of the section at ``loc`` (for 'allowed: ...' hints)."""
    cls = model_cls
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cand = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not cand:
            return []
        cls = cand[0]
    return list(getattr(cls, "model_fields", {}))


def _issues_from(err: ValidationError, root_cls, prefix: tuple = ()) -> list[tuple[str, str]]:
    issues = []
    for e in err.errors(include_url=False):
        loc = prefix + tuple(str(p) for p in e["loc"])
        ctx_err = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_err, ConfigError):  # raised by a section's own check: already phrased
            issues.extend(ctx_err.issues)
            continue
        name = ".".join(loc)
        if e["type"] == "extra_forbidden":
            allowed = _model_fields(root_cls, loc[len(prefix):-1])
            issues.append((name, f": unknown field (value {e['input']!r}){_did_you_mean(loc[-1], allowed)} "
                                 f"Allowed: {allowed}"))
        elif e["type"] == "missing":
            issues.append((name, ": required field missing"))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            issues.append((name, f" = {e['input']!r}: {msg}"))
    return issues


def _validate_params(schema, values: dict[str, Any], section: str, what: str):
    """Validate a builder's parameters against its pydantic ``schema``."""
    try:
        return schema.model_validate(values)
    except ValidationError as e:
        raise ConfigError(_issues_from(e, schema, (section,))) from None


def _set_path(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        if d.get(k) is None:
            d[k] = {}
        if not isinstance(d[k], dict):
            raise ConfigError([(dotted, f": cannot set a field inside {k!r}, which is {d[k]!r}, not a section")])
        d = d[k]
    d[keys[-1]] = value


def apply_overrides(d: dict, overrides) -> dict:
    """Apply ``["a.b=value", ...]`` to a nested dict (values parsed as YAML)."""
    import yaml

    d = _deepcopy(d)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError([(item, ": an override must look like section.field=value, e.g. trainer.max_epochs=3")])
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError([(item, ": bad field name in override")])
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError([(key, f" = {raw!r}: not valid YAML ({e.problem})")]) from None
        _set_path(d, key, value)
    return d


def _deepcopy(d):
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def load_config(source, overrides=None) -> Config:
    """A validated :class:`Config` from a YAML path, a dict or a Config.

    Raises :class:`ConfigError` listing every problem, before any work starts.
    """
    import yaml

    name = None
    if isinstance(source, Config):
        if not overrides:
            return source
        raw = source.to_dict()
    elif isinstance(source, dict):
        raw = source
    else:
        path = Path(source).expanduser()
        name = str(source)
        if not path.exists():
            raise FileNotFoundError(f"config file not found: {path.resolve()} (see experiments/example_*.yaml)")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError([(str(path), f": not valid YAML: {e}")]) from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError([(str(path), f": the top level must be a mapping of sections, got {type(raw).__name__}")])
    try:
        raw = apply_overrides(raw, overrides)
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_issues_from(e, Config), source=name) from None
    except ConfigError as e:
        raise ConfigError(e.issues, source=name) from None
