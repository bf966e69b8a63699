"""The training configuration: sections of :mod:`graphsphere.config`, validated before any work starts.

Validation checks names and values (the sampling's type and arguments, the
dataset's name and parameters, the model's type and arguments, every trainer
option); it builds nothing: :mod:`graphsphere.train.engine` builds the
sampling, the data and the model from a validated :class:`Config`.

>>> cfg = load_train_config({"task": "classification", "sampling": {"type": "HEALPix", "nside": 4}},
...                         overrides=["trainer.max_epochs=2", "model.channels=[4, 8]"])
>>> cfg.trainer.max_epochs, cfg.model.args["channels"]
(2, [4, 8])
>>> load_train_config({"task": "classification", "trainer": {"max_epoch": 2}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
graphsphere.config.ConfigError: config error:
  trainer.max_epoch: unknown field (value 2); did you mean 'max_epochs'? ...
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..config import ConfigError, Section, did_you_mean, load_config
from ..data.registry import validate_params
from ..models.registry import model_class
from ..sampling import check_spec, from_spec, spec_params

__all__ = ["Config", "ConfigError", "load_train_config", "DataConfig", "SamplingConfig", "ModelConfig",
           "OptimConfig", "TrainerConfig", "AUTOMATIC_MODEL_ARGS", "TASKS"]

TASKS = ("classification", "regression", "segmentation")
#: Model arguments filled in from the data and the task, never from the config.
AUTOMATIC_MODEL_ARGS = ("sampling", "in_channels", "out_features", "out_channels", "task")


class SamplingConfig(BaseModel):
    """``type`` (HEALPix, Equiangular, GaussLegendre, Icosahedral, Points) and
    its constructor arguments (:func:`graphsphere.sampling.from_spec`). Array
    arguments (HEALPix ``indices``, Points ``lon``/``lat``) may be the path of
    an ``.npy`` file. Validation checks the name and the arguments
    (:func:`graphsphere.sampling.check_spec`) without building; the engine
    builds with :meth:`build`, which checks the arrays' contents.

    A string is the command line's short form (``sampling: "healpix:8"`` in
    YAML, ``sampling=healpix:8`` as an override, as ``--sampling``), read by
    :func:`graphsphere.sampling.spec_params` into the mapping form, without building
    (``healpix:8`` is ``{type: HEALPix, nside: 8}``)."""

    model_config = ConfigDict(extra="allow")
    type: str = "HEALPix"

    @model_validator(mode="before")
    @classmethod
    def _from_short_form(cls, data):
        if not isinstance(data, str):
            return data
        try:  # only the arguments written: the same config (and resumable run) as the mapping form
            name, params = spec_params(data)
            check_spec(name, **params)
        except (TypeError, ValueError, FileNotFoundError) as e:
            raise ConfigError([("sampling", f" = {data!r}: {e}")]) from None
        return {"type": name, **params}

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def build(self):
        """The :class:`graphsphere.sampling.Sampling` (for the engine)."""
        return self._errors_named(from_spec)

    def _errors_named(self, action):
        try:
            return action(self.type, **self.args)
        except (TypeError, ValueError, FileNotFoundError) as e:
            raise ConfigError([("sampling", f" ({self.type}): {e}")]) from None

    @model_validator(mode="after")
    def _check(self):
        self._errors_named(check_spec)  # names and values, without building
        return self


class DataConfig(BaseModel):
    """``name`` of a registered dataset builder (``synthetic``, ``npy``,
    ``patches``, ``maps``, ``cosmology``, ``shapes``, or yours: registered with
    :func:`graphsphere.data.register_dataset`, or ``"package.module:function"``
    with ``trust_code``) and its parameters, checked by the builder's own
    schema; plus how the engine feeds the data."""

    model_config = ConfigDict(extra="allow")
    name: str = "synthetic"
    num_workers: NonNegativeInt = 0
    seed: int | None = None
    #: Standardise each input channel with the mean and std of the training set (kept in the checkpoint).
    standardize_inputs: bool = True
    #: Regression: standardise each target the same way; predictions and metrics are in the data's units.
    standardize_targets: bool = True
    #: NaN in the inputs (missing pixels): "error", "fill" (with the training mean), or "flag" (fill, and add
    #: one channel per input channel: 1 where observed, 0 where filled).
    missing_inputs: Literal["error", "fill", "flag"] = "error"
    #: Classification and segmentation: weigh each class in the loss, "none", "balanced" (n / (C n_c) from the
    #: training split's label counts, kept in the checkpoint) or one weight per class.
    class_weights: Literal["none", "balanced"] | list[PositiveFloat] = "none"
    _params: Any = PrivateAttr(default=None)

    @property
    def params(self) -> dict[str, Any]:
        """The builder's parameters, validated."""
        return dict(self._params)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo):
        trust = bool((info.context or {}).get("trust_code"))
        self._params = validate_params(self.name, dict(self.model_extra or {}), trust)
        # The defaults join the given values: config.yaml and checkpoints then say every parameter the
        # data were made with (a default changed later is not mistaken for the same run).
        self.__pydantic_extra__.update(self._params.model_dump(mode="json"))
        return self


class ModelConfig(BaseModel):
    """``type`` (a registered model: ``SphericalCNN``, ``SphericalUNet``, ...,
    or, with ``trust_code``, ``"package.module:Class"``) and its constructor
    arguments. The sampling, the number of input channels, outputs and the
    task are filled in from the data."""

    model_config = ConfigDict(extra="allow")
    type: str = "SphericalCNN"

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo):
        trust = bool((info.context or {}).get("trust_code"))
        try:
            cls = model_class(self.type, trust_code=trust)
        except ValueError as e:
            raise ConfigError([("model.type", f" = {self.type!r}: {e}")]) from None
        issues = []
        sig = inspect.signature(cls)
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        allowed = [p for p in sig.parameters if p not in AUTOMATIC_MODEL_ARGS]
        for key, value in self.args.items():
            if key in AUTOMATIC_MODEL_ARGS:
                issues.append((f"model.{key}", f" = {value!r}: set automatically from the data and the task; "
                               "remove it"))
            elif key not in allowed and not takes_kwargs:
                issues.append((f"model.{key}", f": unknown argument of {self.type} (value {value!r})"
                               f"{did_you_mean(key, allowed)} Allowed: {allowed}"))
        if issues:
            raise ConfigError(issues)
        return self


class OptimConfig(Section):
    """Optimizer and learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = Field(1e-3, allow_inf_nan=False)
    weight_decay: NonNegativeFloat = Field(0.0, allow_inf_nan=False)
    momentum: NonNegativeFloat = 0.9
    #: Adam's and AdamW's epsilon (torch's default 1e-8); large values (the SHREC'17 paper: 0.1) make small
    #: gradients take plain momentum steps of lr / eps times the gradient
    eps: PositiveFloat = Field(1e-8, allow_inf_nan=False)
    scheduler: Literal["none", "cosine", "step", "exponential", "plateau"] = "none"
    #: step: multiply by gamma every step_size intervals; exponential: by gamma each interval
    #: (the 2019 cosmology run: gamma 0.999 per step); plateau: by gamma after step_size bad epochs.
    step_size: PositiveInt = 10
    gamma: PositiveFloat = 0.1
    interval: Literal["epoch", "step"] = "epoch"


class TrainerConfig(Section):
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
    #: A progress bar on a terminal; redirected output gets one plain line per epoch instead.
    progress_bar: bool = True
    #: Print the table of the model's layers at the start (else one line).
    verbose: bool = False
    loggers: list[Literal["csv", "tensorboard"]] = ["csv", "tensorboard"]
    deterministic: bool = False
    #: Resume from output_dir/checkpoints/last.ckpt when it exists.
    resume: bool = True
    #: Stop ("the loss diverged at step N") when a training loss exceeds this many times the run's first loss
    #: (null: never; a NaN/Inf loss or weight always stops). 1e6 is safe: an ordinary run lowers its first,
    #: untrained loss, and a diverging one passes 1e6 within steps (see DivergenceGuard).
    divergence_factor: float | None = Field(1e6, gt=1, allow_inf_nan=False)

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_str(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class Config(Section):
    """A whole run. See ``experiments/example_*.yaml``."""

    task: Literal["classification", "regression", "segmentation"]
    output_dir: str = "out/runs/default"
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


def load_train_config(source, overrides=None, trust_code: bool = False) -> Config:
    """A validated :class:`Config` from a YAML path, a dict or a Config, with
    ``overrides`` (``["trainer.max_epochs=3", ...]``). ``trust_code`` allows
    ``model.type: "package.module:Class"`` (code outside graphsphere)."""
    return load_config(Config, source, overrides, context={"trust_code": trust_code})
