"""The cosmology experiment of DeepSphere (2019): tell two cosmologies apart
from partial-sky convergence maps, against SVM and 2D-ConvNet baselines.

    graphsphere cosmology                                   # the quick run
    graphsphere cosmology experiments/cosmology_table.yaml  # the README's table

Modules: :mod:`.config` (the settings), :mod:`.runner` (the sweep, the table,
the pictures), :mod:`.baselines` (SVMs, ConvNet2D). The data come from
:mod:`graphsphere.data.cosmology`.
"""

from .config import LABELS, METHODS, ExperimentConfig, load_config
from .runner import PAPER_ORDER4, format_table, run

__all__ = ["ExperimentConfig", "load_config", "run", "format_table", "METHODS", "LABELS", "PAPER_ORDER4"]
