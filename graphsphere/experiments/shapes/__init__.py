"""The 3D-shapes experiment (SHREC'17-style retrieval on real meshes).

    graphsphere shapes                                   # the quick run
    graphsphere shapes experiments/shapes_table.yaml     # the README's table

Meshes are projected onto the sphere (:mod:`graphsphere.data.meshes`, :mod:`graphsphere.data.shapes`),
classified by a DeepSphere model and by an SHT-based spherical CNN (:mod:`.sht_cnn`), and scored with
the SHREC'17 retrieval metrics (:mod:`.retrieval`). Modules: :mod:`.config` (the settings),
:mod:`.runner` (training, testing, the table, the pictures).
"""

from .config import LABELS, METHODS, ExperimentConfig, load_config
from .runner import PAPER_SHREC17, format_table, precision_recall_curve, run

__all__ = ["ExperimentConfig", "load_config", "run", "format_table", "precision_recall_curve", "METHODS", "LABELS",
           "PAPER_SHREC17"]
