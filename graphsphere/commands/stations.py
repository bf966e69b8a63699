"""``graphsphere stations``: the weather-station experiment (issue 12), end to end.

    graphsphere stations                                     # the quick run (embedded defaults)
    graphsphere stations experiments/stations_table.yaml     # a config file
    graphsphere stations seeds=[0,1,2] regression.K=[1,3,5]  # overrides
"""

from __future__ import annotations


def run(args) -> int:
    from ..experiments.stations import load_config
    from ..experiments.stations import run as run_experiment

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config:
        config, overrides = None, [config, *overrides]
    run_experiment(load_config(config, overrides))
    return 0


def register(sub) -> None:
    p = sub.add_parser("stations", help="weather stations: next-month temperature and the month of the year on a "
                                        "k-NN graph of stations, against per-station baselines")
    p.add_argument("config", nargs="?", help="YAML config (default: the quick run)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. seeds=[0,1,2] data.source=synthetic")
    p.set_defaults(func=run)
