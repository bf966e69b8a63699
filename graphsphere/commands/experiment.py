"""The reproduced experiments, one command each, end to end: ``graphsphere cosmology``, ``shapes``,
``climate`` and ``stations``. Every one takes an optional YAML config and ``key=value`` overrides:

    graphsphere cosmology                                  # the quick run (embedded defaults)
    graphsphere cosmology experiments/cosmology_paper.yaml # a config file
    graphsphere climate tasks=[forecast] seeds=[0,1]       # overrides (a config file first, if any)

Each experiment is a package ``graphsphere.experiments.<name>`` with ``load_config(path, overrides)``
and ``run(config)``; adding one here is one line of :data:`EXPERIMENTS`.
"""

from __future__ import annotations

import importlib

#: name: (help, an example override)
EXPERIMENTS = {
    "cosmology": ("tell two cosmologies apart from convergence maps (2019 paper)", "data.nside=256"),
    "shapes": ("3D shapes on the sphere: DeepSphere against an SHT CNN (SHREC'17 metrics)", "data.task=instance"),
    "climate": ("real winds on the sphere: segment wind extremes, forecast next month", "sampling.nside=32"),
    "stations": ("weather stations: next-month temperature and the month of the year on a k-NN graph of "
                 "stations, against per-station baselines", "seeds=[0,1,2]"),
}


def run(args) -> int:
    # imported on use: an experiment's dependencies load only when it runs
    experiment = importlib.import_module(f"graphsphere.experiments.{args.experiment}")
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config:  # no config file, only overrides
        config, overrides = None, [config, *overrides]
    experiment.run(experiment.load_config(config, overrides))
    return 0


def register(sub) -> None:
    for name, (text, example) in EXPERIMENTS.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("config", nargs="?", help="YAML config (default: the quick run)")
        p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                       help=f"config overrides, e.g. {example}")
        p.set_defaults(func=run, experiment=name)
