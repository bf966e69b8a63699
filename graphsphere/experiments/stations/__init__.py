"""The weather-station experiment (issue 12): graphs on an irregular network, end to end.

    graphsphere stations                                   # the quick run
    graphsphere stations experiments/stations_table.yaml   # the README's table

Modules: :mod:`.config` (the settings), :mod:`.runner` (the runs, the tables), :mod:`.graphs` (the
paper's kernel width, the spectral check), :mod:`.models` (StationGCN, registered on import),
:mod:`.baselines` (climatology, per-station linear, per-station naive Bayes, metrics),
:mod:`.pictures`. The data come from :mod:`graphsphere.data.station_tasks` (data set ``stations``).
"""

from .config import ExperimentConfig, load_config
from .runner import format_tables, run

__all__ = ["ExperimentConfig", "format_tables", "load_config", "run"]
