"""``graphsphere shapes``: the 3D-shapes experiment (SHREC'17-style retrieval on real meshes), end to end.

    graphsphere shapes                                          # the quick run (embedded defaults)
    graphsphere shapes experiments/shapes_table.yaml            # a config file
    graphsphere shapes data.task=instance deepsphere.epochs=4   # overrides
"""

from __future__ import annotations


def run(args) -> int:
    from ..experiments.shapes import load_config
    from ..experiments.shapes import run as run_experiment

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config:
        config, overrides = None, [config, *overrides]
    run_experiment(load_config(config, overrides))
    return 0


def register(sub) -> None:
    p = sub.add_parser("shapes", help="3D shapes on the sphere: DeepSphere against an SHT CNN (SHREC'17 metrics)")
    p.add_argument("config", nargs="?", help="YAML config (default: the quick run)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.task=instance")
    p.set_defaults(func=run)
