"""The climate experiment: real monthly winds (FNOC 1982-1992, Debian ``ferret-datasets``) regridded
onto a sampling of the sphere, wind extremes segmented by a graph U-Net against a per-pixel
network, and next month's winds forecast against persistence and climatology, on held-out years.

    graphsphere climate                                   # the quick run
    graphsphere climate experiments/climate_table.yaml    # the README's tables

Modules: :mod:`.config` (the settings), :mod:`.runner` (training, scores, tables),
:mod:`.baselines` (the per-pixel network), :mod:`.figures` (the pictures). The data sets are
``climate_segmentation`` and ``climate_forecast`` of :mod:`graphsphere.data.climate_datasets`.
"""

from .config import FORECAST_METHODS, LABELS, SEGMENTATION_METHODS, ExperimentConfig, load_config
from .runner import PAPER, forecast_scores, format_tables, run, segmentation_scores

__all__ = ["ExperimentConfig", "load_config", "run", "format_tables", "segmentation_scores", "forecast_scores",
           "SEGMENTATION_METHODS", "FORECAST_METHODS", "LABELS", "PAPER"]
