"""Training on PyTorch Lightning: configs, the engine, checkpoints, metrics.

Needs the ``train`` extra (lightning, torchmetrics, pydantic, pyyaml). Names
are imported on first use, so ``import graphsphere.train`` is cheap.

>>> import graphsphere.train as gt
>>> cfg = gt.load_config({"task": "classification", "sampling": {"type": "HEALPix", "nside": 4}})
>>> cfg.trainer.batch_size
32

    result = gt.fit("experiments/example_synthetic.yaml", ["trainer.max_epochs=3"])
    gt.evaluate(result.best_checkpoint)            # {"acc": ..., "f1": ..., "map": ..., "loss": ...}
    gt.predict(result.best_checkpoint, maps)       # [n, classes] probabilities
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "fit": "engine", "evaluate": "engine", "predict": "engine", "FitResult": "engine",
    "read_inputs": "engine", "write_predictions": "engine",
    "Config": "config", "ConfigError": "config", "load_config": "config",
    "register_dataset": "datasets", "Splits": "datasets",
    "SphereTask": "module", "CheckpointError": "module",
    "make_metrics": "metrics", "make_synthetic": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
