"""The shapes experiment's configuration (one :mod:`graphsphere.config` schema).

>>> cfg = ExperimentConfig()
>>> cfg.data.task, cfg.data.protocols, cfg.methods
('category', ['SO3/SO3', 'z/SO3'], ['deepsphere', 'sht_cnn'])
>>> cfg.sht_cnn.grid(cfg.deepsphere.nside).npix == 12 * cfg.deepsphere.nside ** 2   # equal pixel counts
True
>>> load_config(None, ["data.task=instance", "tta_copies=1"]).data.task
'instance'
>>> load_config({"data": {"sample_per_mesh": 4}})
Traceback (most recent call last):
...
graphsphere.config.ConfigError: config error:
  data.sample_per_mesh: unknown field (value 4); did you mean 'samples_per_mesh'? ...
>>> load_config({"data": {"scale_range": [1.2, 1.0]}})         # the dataset's own checks
Traceback (most recent call last):
...
graphsphere.config.ConfigError: config error:
  data.scale_range = [1.2, 1.0]: low must not exceed high
>>> cfg = load_config(None, ["data.seed=[0,1,2]"])              # several seeds: one run each, summarised
>>> cfg.data.seeds, cfg.for_seed(1) == load_config(None, ["data.seed=1"])
([0, 1, 2], True)
>>> load_config(None, ["data.seed=[0,0]"])
Traceback (most recent call last):
...
graphsphere.config.ConfigError: config error:
  data.seed = [0, 0]: a seed is listed twice; give an int or a non-empty list of distinct ints, e.g. 0 or [0, 1, 2]
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from ...config import Section
from ...data.shapes import ShapesParams
from ..config import ExperimentBase, config_error, data_section

__all__ = ["METHODS", "LABELS", "ExperimentConfig", "load_config"]

METHODS = ("deepsphere", "sht_cnn")
LABELS = {"deepsphere": "DeepSphere (graph, HEALPix)", "sht_cnn": "SHT CNN (Gauss-Legendre)"}


class DataSection(data_section(ShapesParams, drop=("protocol", "cache", "engine", "progress"),
                               defaults={"samples_per_mesh": 6, "meshes_per_category": 6, "workers": 2})):
    """Which samples (see :func:`graphsphere.data.shapes.plan_splits`): the ``shapes`` data set's parameters
    (:class:`graphsphere.data.shapes.ShapesParams` documents and checks them) with the quick run's defaults,
    but one ``protocol``: the experiment runs each of ``protocols``."""

    #: "SO3/SO3": every split rotated in SO(3); "z/SO3": training rotated about z only, tested in SO(3)
    protocols: list[Literal["SO3/SO3", "z/SO3"]] = Field(default_factory=lambda: ["SO3/SO3", "z/SO3"],
                                                          min_length=1)
    #: the split and every perturbation; a list of distinct seeds runs the experiment once per seed (the run
    #: of seed s is the run of ``seed: s``, same folder) and reports the mean and spread over seeds
    seed: int | list[int] = 0

    @field_validator("seed", mode="before")
    @classmethod
    def _check_seed(cls, value):
        def bad(why):
            return config_error("data.seed", f" = {value!r}: {why}; give an int or a non-empty list of distinct "
                                             "ints, e.g. 0 or [0, 1, 2]")

        if isinstance(value, (list, tuple)):
            if not value:
                raise bad("the list of seeds is empty")
            if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                raise bad("a seed is not an int")
            if len(set(value)) != len(value):
                raise bad("a seed is listed twice")
            return list(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("not an int")
        return value

    @property
    def seeds(self) -> list[int]:
        """The seeds to run, as a list (one for a scalar ``seed``)."""
        return list(self.seed) if isinstance(self.seed, list) else [self.seed]

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.protocols)) != len(self.protocols):
            raise config_error("data.protocols", f" = {self.protocols}: a protocol is listed twice")
        return self


class TrainingSection(Section):
    """How a network trains (through :func:`graphsphere.train.fit`)."""

    epochs: PositiveInt = 8
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 0.01
    weight_decay: NonNegativeFloat = 0.0
    #: Adam's epsilon (the paper: 0.1 with lr 0.05; torch's default 1e-8)
    adam_eps: PositiveFloat = 1e-8
    #: "cosine": anneal the learning rate to 0 over the epochs; "none": constant
    scheduler: Literal["none", "cosine"] = "cosine"
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    #: the epoch kept (and tested): "val_loss", the lowest validation loss; "val_acc", the highest validation
    #: accuracy (the loss rises as soon as a network grows confident, which its accuracy need not follow)
    select: Literal["val_loss", "val_acc"] = "val_loss"
    #: dropout on the pooled features before the last layer (0: none), against overfitting ~100 objects
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class DeepSphereSection(TrainingSection):
    """The paper's model: ``SphericalCNN(HEALPix(nside), 6, classes, channels, K, head="global",
    global_pool="mean")``: a graph convolution, batch norm, ReLU and pooling per entry of channels."""

    nside: PositiveInt = 16
    #: the paper: [16, 32, 64, 128, 256] at nside 32
    channels: list[PositiveInt] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=1)
    K: PositiveInt = 4
    #: neighbours per pixel of the graph (8: the paper; 20 or 40: closer to rotation equivariance, see
    #: docs/equivariance.md, at 1.5-3x the cost of each sparse product)
    k: PositiveInt = 8
    pool: Literal["max", "avg"] = "max"
    global_pool: Literal["mean", "max"] = "mean"
    #: the paper's triplet loss: the loss is cross-entropy + triplet_weight x a batch-hard triplet margin loss
    #: on the network's outputs (Euclidean distances; SphericalCNN's triplet_margin); null: cross-entropy only
    triplet_margin: PositiveFloat | None = None
    triplet_weight: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _check(self):
        if self.nside & (self.nside - 1):
            raise config_error("deepsphere.nside", f" = {self.nside}: must be a power of 2 (HEALPix NESTED pooling)")
        if 2 ** (len(self.channels) - 1) > self.nside:
            raise config_error("deepsphere.channels", f": {len(self.channels)} poolings need nside >= "
                                                     f"{2 ** (len(self.channels) - 1)}, got nside {self.nside}; "
                                                     "use fewer levels or a larger nside")
        return self


class SHTSection(TrainingSection):
    """The SHT-based baseline (:class:`graphsphere.experiments.shapes.sht_cnn.SHTCNN`) on a Gauss-Legendre
    grid, by default the one with HEALPix's pixel count (``nlat = 2 nside``, ``nlon = 6 nside``)."""

    nlat: PositiveInt | None = None
    nlon: PositiveInt | None = None
    channels: list[PositiveInt] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=1)
    #: learned values per filter, interpolated over degrees (DeepSphere's K)
    anchors: PositiveInt = 4

    def grid(self, nside: int):
        """The Gauss-Legendre grid of the model, given DeepSphere's nside (for the default size)."""
        from ...sampling import GaussLegendre

        return GaussLegendre(self.nlat or 2 * nside, self.nlon or 6 * nside)


class ExperimentConfig(ExperimentBase):
    """Everything the experiment does; the defaults are the quick run (minutes on 2 cores)."""

    output_dir: str = "out/shapes"
    data: DataSection = Field(default_factory=DataSection)
    methods: list[Literal[METHODS]] = Field(default_factory=lambda: list(METHODS), min_length=1)  # type: ignore
    deepsphere: DeepSphereSection = Field(default_factory=DeepSphereSection)
    sht_cnn: SHTSection = Field(default_factory=SHTSection)
    #: test-time augmentation: class probabilities averaged over this many copies of every test sample (same
    #: rotation, other translation and scale; the paper: 3); 1: no augmentation
    tta_copies: PositiveInt = 3
    #: the copies get a random rotation of their own too (as the test split's: any rotation), so that the
    #: probabilities are averaged over rotations; False: the paper's translated copies
    tta_rotations: bool = False
    #: measure inference time per sample (batch 1 and 32) of every trained model, in this process
    timing: bool = True
    #: the mesh drawn beside its maps in mesh_maps.png (another one when it is not in the data)
    picture_mesh: str = "meshes/cow.off"
    progress: bool = True

    @model_validator(mode="after")
    def _check_methods(self):
        if len(set(self.methods)) != len(self.methods):
            raise config_error("methods", f" = {self.methods}: a method is listed twice")
        if "sht_cnn" in self.methods:
            g = self.sht_cnn.grid(self.deepsphere.nside)
            f = 2 ** len(self.sht_cnn.channels)
            if g.nlat % f or g.nlon % f:
                raise config_error("sht_cnn.channels", f": {len(self.sht_cnn.channels)} poolings by 2x2 need nlat and "
                                                        f"nlon divisible by {f}, the grid is {g.nlat} x {g.nlon}; use "
                                                        "fewer levels or another grid")
        return self

    def for_seed(self, seed: int) -> ExperimentConfig:
        """This config with the scalar ``data.seed = seed`` (validated again): what one seed of a list of
        seeds runs, identical to the config written with that seed alone."""
        if seed not in self.data.seeds:
            raise ValueError(f"seed {seed} is not among data.seed = {self.data.seed}")
        raw = self.model_dump(mode="json")
        return type(self).model_validate({**raw, "data": {**raw["data"], "seed": seed}})


load_config = ExperimentConfig.load
