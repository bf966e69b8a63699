"""``graphsphere climate``: the climate experiment (wind extremes and next-month winds), end to end.

    graphsphere climate                                        # the quick run (embedded defaults)
    graphsphere climate experiments/climate_table.yaml         # a config file
    graphsphere climate tasks=[forecast] seeds=[0,1]           # overrides
"""

from __future__ import annotations


def run(args) -> int:
    from ..experiments.climate import load_config
    from ..experiments.climate import run as run_experiment

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config:
        config, overrides = None, [config, *overrides]
    run_experiment(load_config(config, overrides))
    return 0


def register(sub) -> None:
    p = sub.add_parser("climate", help="real winds on the sphere: segment wind extremes, forecast next month")
    p.add_argument("config", nargs="?", help="YAML config (default: the quick run)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sampling.nside=32")
    p.set_defaults(func=run)
