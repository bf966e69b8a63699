"""``graphsphere cosmology``: the 2019 cosmology experiment, end to end.

    graphsphere cosmology                                  # the quick run (embedded defaults)
    graphsphere cosmology experiments/cosmology_paper.yaml # a config file
    graphsphere cosmology noise_levels=[0,2] seeds=[0,1]   # overrides
"""

from __future__ import annotations


def run(args) -> int:
    from ..experiments.cosmology import load_config
    from ..experiments.cosmology import run as run_experiment

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config:
        config, overrides = None, [config, *overrides]
    run_experiment(load_config(config, overrides))
    return 0


def register(sub) -> None:
    p = sub.add_parser("cosmology", help="tell two cosmologies apart from convergence maps (2019 paper)")
    p.add_argument("config", nargs="?", help="YAML config (default: the quick run)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.nside=256")
    p.set_defaults(func=run)
