"""The cosmology experiment's configuration (one :mod:`graphsphere.config` schema).

>>> cfg = ExperimentConfig(noise_levels=[0.0], methods=["svm_histogram"])
>>> cfg.data.nside, cfg.data.orders
(64, [1])
>>> ExperimentConfig.model_validate({"data": {"nside": 128, "order": 4}}).data.orders
[4]
>>> load_config(None, ["data.nside=64", "noise_levels=[0, 1]"]).noise_levels
[0.0, 1.0]
>>> load_config({"data": {"nsid": 64}})
Traceback (most recent call last):
...
graphsphere.config.ConfigError: config error:
  data.nsid: unknown field (value 64); did you mean 'nside'? ...
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from ...config import Section
from ..config import ExperimentBase
from ..config import config_error as _error

__all__ = ["METHODS", "LABELS", "ExperimentConfig", "load_config"]

METHODS = ("deepsphere_fcn", "deepsphere_cnn", "convnet2d", "svm_histogram", "svm_psd")
LABELS = {"deepsphere_fcn": "DeepSphere FCN", "deepsphere_cnn": "DeepSphere CNN", "convnet2d": "2D ConvNet",
          "svm_histogram": "SVM on histograms", "svm_psd": "SVM on power spectra"}


class DataSection(Section):
    """Which maps (see :func:`graphsphere.data.cosmology.make_dataset`)."""

    nside: PositiveInt = 64
    #: patch orders: each sample is 1/(12 o^2) of the sky, (nside/o)^2 pixels (the paper: 1, 2, 4)
    orders: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    n_maps_per_class: PositiveInt = 24
    #: scales the lognormal shift of both models; < 1: more skewed maps (docs/cosmology_data.md)
    shift_scale: PositiveFloat = 1.0
    #: whole maps per class held out for testing and validation (the rest trains)
    test_fraction: float = Field(0.4, gt=0, lt=1)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    cache_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _order_alias(cls, v):
        # `data.order=4` (one order) reads as orders=[4]
        if isinstance(v, dict) and "order" in v:
            if "orders" in v:
                raise _error("data.order", ": give data.orders (a list) or data.order (one order), not both")
            v = {k: val for k, val in v.items() if k != "order"} | {"orders": [v["order"]]}
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.nside & (self.nside - 1):
            raise _error("data.nside", f" = {self.nside}: must be a power of 2 (HEALPix)")
        for o in self.orders:
            if o & (o - 1) or o > self.nside:
                raise _error("data.orders", f": order {o} must be a power of 2 and at most nside "
                                                   f"({self.nside})")
        return self


class DeepSphereSection(Section):
    """The DeepSphere models and their training (through graphsphere.train)."""

    #: one graph convolution + pooling (by 4) per entry; the paper (65k-pixel patches): [16, 32, 64, 64, 64]
    channels: list[PositiveInt] = Field(default_factory=lambda: [8, 16, 32, 32], min_length=1)
    K: PositiveInt = 5
    #: "avg": as accurate as "max" on these maps and steadier in the first epochs (measured); the paper: "max"
    pool: Literal["avg", "max"] = "avg"
    epochs: PositiveInt = 8
    #: pixels per batch: a batch holds batch_pixels / (nside/o)^2 patches, so the number of steps per epoch
    #: does not depend on the order (the paper: 16 o^2 patches of (1024/o)^2 pixels, i.e. 2^24 pixels)
    batch_pixels: PositiveInt = 32768
    lr: PositiveFloat = 3e-4
    #: learning-rate decay per step (the paper: 2e-4 decayed by 0.999 per step over ~80 epochs)
    lr_decay: PositiveFloat = 1.0
    #: standardise inputs with the training patches' mean and std (see StandardizedSphericalCNN)
    standardize: bool = True
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"


class ConvNetSection(Section):
    """The 2D ConvNet baseline: 3x3 conv - batch norm - ReLU - 2x2 max pool per entry."""

    #: about the parameter count of the DeepSphere FCN (a 3x3 kernel has 9 weights, a K=5 filter 5);
    #: the paper size is [16, 32, 46, 46, 46]
    channels: list[PositiveInt] = Field(default_factory=lambda: [8, 16, 23, 23], min_length=1)
    #: twice DeepSphere's by default: its training loss falls more slowly, and an epoch costs ~1/3
    epochs: PositiveInt = 16
    batch_pixels: PositiveInt = 32768
    lr: PositiveFloat = 3e-4
    lr_decay: PositiveFloat = 1.0
    #: "auto": the GPU when there is one
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ExperimentConfig(ExperimentBase):
    """Everything the experiment does; the defaults are the quick run (about a minute on 2 cores)."""

    output_dir: str = "out/cosmology"
    data: DataSection = Field(default_factory=DataSection)
    noise_levels: list[NonNegativeFloat] = Field(default_factory=lambda: [0.0, 2.0], min_length=1)
    #: one replication per seed: its own maps, split, noise draw and initialisation
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    methods: list[Literal[METHODS]] = Field(default_factory=lambda: list(METHODS), min_length=1)  # type: ignore
    deepsphere: DeepSphereSection = Field(default_factory=DeepSphereSection)
    convnet: ConvNetSection = Field(default_factory=ConvNetSection)
    #: power-spectrum features: "anafast" (the paper's, one full-sky transform per patch) or "fft" (fast)
    psd_features: Literal["anafast", "fft"] = "fft"
    progress: bool = True

    @model_validator(mode="after")
    def _check_depth(self):
        # Fail before any map is made: every patch must survive the poolings.
        for o in self.data.orders:
            side = self.data.nside // o
            uses = [("deepsphere", len(self.deepsphere.channels), 2)] if any(
                m.startswith("deepsphere") for m in self.methods) else []
            if "convnet2d" in self.methods:
                uses.append(("convnet", len(self.convnet.channels), 1))
            for name, depth, coarsest in uses:
                if side < coarsest * 2**depth:
                    raise _error(
                        f"{name}.channels", f": {depth} poolings by 2x2 need patches of at least "
                        f"{coarsest * 2 ** depth}x{coarsest * 2 ** depth} pixels, but order {o} at nside "
                        f"{self.data.nside} gives {side}x{side}; use fewer channels, a smaller order or a larger nside")
        return self


load_config = ExperimentConfig.load
