"""The stations experiment's configuration (one :mod:`graphsphere.config` schema).

The defaults are the quick run (about a minute on two cores); ``experiments/stations_table.yaml``
is the README's table.

>>> cfg = ExperimentConfig()
>>> cfg.graph.neighbours, cfg.graph.kernel_width, cfg.regression.K, sorted(cfg.regression.networks)
(5, 'paper', [1, 5], ['filter'])
>>> load_config(None, ["regression.K=[1,3,5]", "seeds=[0,1,2]"]).regression.K
[1, 3, 5]
>>> load_config({"graph": {"neighbors": 5}})
Traceback (most recent call last):
...
graphsphere.config.ConfigError: config error:
  graph.neighbors: unknown field (value 5); did you mean 'neighbours'? ...
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from ...config import ConfigError, Section
from ...data.station_tasks import StationsParams
from ..config import ExperimentBase, data_section

__all__ = [
    "REGRESSION_BASELINES",
    "DataSection",
    "ExperimentConfig",
    "GraphSection",
    "MonthSection",
    "NetworkSection",
    "RegressionSection",
    "TrainingSection",
    "load_config",
]

REGRESSION_BASELINES = ("climatology", "per_station_linear", "per_station_linear_tv")


#: Which stations, which years, which inputs: the ``stations`` data set's parameters
#: (:class:`graphsphere.data.station_tasks.StationsParams`, which documents them), but ``neighbours`` (set
#: by ``graph.neighbours``) and the explicit year lists (the experiment holds out the last years).
DataSection = data_section(StationsParams, drop=("neighbours", "test_years", "val_years"),
                           doc="Which stations, which years, which inputs (the ``stations`` data set's parameters).")


class GraphSection(Section):
    """The k-NN graph of the stations."""

    #: neighbours per station (the paper: 5)
    neighbours: PositiveInt = 5
    #: "paper": t = mean(d)^2 / (4 ln 2) (sigma = the mean neighbour distance); "mean": graphsphere's 2019
    #: heuristic t = mean(d^2) / 2; or t itself
    kernel_width: Literal["paper", "mean"] | PositiveFloat = "paper"
    laplacian: Literal["normalized", "combinatorial"] = "normalized"
    #: eigenpairs of the spectral check
    spectrum: PositiveInt = 20


class TrainingSection(Section):
    """How a network trains (Adam, cosine schedule per step; the engine keeps the best epoch)."""

    epochs: PositiveInt = 100
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    dropout: float = Field(0.0, ge=0, lt=1)


class NetworkSection(TrainingSection):
    """One StationGCN architecture and its training; the experiment trains it at every K."""

    #: hidden graph convolutions (each with batch norm and ReLU); [] is one linear Chebyshev filter
    channels: list[PositiveInt] = Field(default_factory=list)
    lr: PositiveFloat = 1e-2
    batchnorm: bool = True


def _default_networks() -> dict[str, NetworkSection]:
    return {"filter": NetworkSection()}


class RegressionSection(Section):
    """Next month at every station: Chebyshev models at each K against the baselines."""

    enabled: bool = True
    #: Chebyshev coefficients per filter (K = 1: per station, shared weights)
    K: list[PositiveInt] = Field(default_factory=lambda: [1, 5], min_length=1)
    #: name -> architecture, each trained at every K and seed ("filter": one linear Chebyshev layer;
    #: the paper's network: channels [50, 100, 100])
    networks: dict[str, NetworkSection] = Field(default_factory=_default_networks)
    #: per_station_linear: fitted on the training years (as the networks' weights); _tv: on training +
    #: validation years (the networks use those only to choose their epoch)
    baselines: list[Literal[REGRESSION_BASELINES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(REGRESSION_BASELINES))


class MonthSection(TrainingSection):
    """The month of the year from one snapshot: a pooled graph CNN against per-station naive Bayes."""

    enabled: bool = True
    K: list[PositiveInt] = Field(default_factory=lambda: [5], min_length=1)
    #: one graph convolution and one pooling (balanced clusters of 4 stations) per entry
    channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32], min_length=1)
    pool: Literal["avg", "max"] = "avg"
    #: "fc": a linear layer on the coarsest level (no area weights: see the tutorial on regional networks);
    #: "global": area-weighted global pooling then a linear layer
    head: Literal["fc", "global", "conv"] = "fc"
    #: SphericalCNN takes one width rule for every level: "mean" is recomputed per level ("paper" exists
    #: only as a computed number, right for the finest level alone)
    kernel_width: Literal["mean"] | PositiveFloat = "mean"
    #: also score scikit-learn's shrinkage LDA on all stations at once (a reference, not per station)
    lda: bool = True


class ExperimentConfig(ExperimentBase):
    """Everything the experiment does; the defaults are the quick run."""

    output_dir: str = "out/stations"
    data: DataSection = Field(default_factory=DataSection)
    graph: GraphSection = Field(default_factory=GraphSection)
    regression: RegressionSection = Field(default_factory=RegressionSection)
    month: MonthSection = Field(default_factory=MonthSection)
    #: one training per seed (initialisation and batch order; the data and the split are the same)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    #: torch threads: the graphs are small (about a hundred vertices), one thread is as fast as several
    #: and never fights other work for the cores; null leaves torch's default
    threads: PositiveInt | None = 1
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "cpu"
    #: one line per run (and the table at the end); epoch_progress adds the engine's line per epoch
    progress: bool = True
    epoch_progress: bool = False
    pictures: bool = True
    #: re-use finished runs of the same settings (re-tested from their best checkpoint)
    reuse: bool = True

    @model_validator(mode="after")
    def _check(self):
        if not self.regression.enabled and not self.month.enabled:
            raise ConfigError([("regression.enabled", ": both tasks are off (month.enabled too); enable one")])
        if self.regression.enabled and not self.regression.networks and not self.regression.baselines:
            raise ConfigError([("regression.networks", ": no network and no baseline to run; name one")])
        return self


load_config = ExperimentConfig.load
