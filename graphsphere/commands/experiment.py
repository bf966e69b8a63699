"""``graphsphere cosmology``: the 2019 cosmology experiment, end to end.

    graphsphere cosmology                                  # the quick run (embedded defaults)
    graphsphere cosmology experiments/cosmology_paper.yaml # a config file
    graphsphere cosmology noise_levels=[0,2] seeds=[0,1]   # overrides
"""

from __future__ import annotations


def _load(path, overrides):
    import yaml

    from ..experiments.cosmology import ExperimentConfig
    from ..train.config import apply_overrides

    raw = {}
    if path:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    raw = apply_overrides(raw, overrides)
    try:
        return ExperimentConfig.model_validate(raw)
    except Exception as e:  # pydantic's message names the field, the value and what is allowed
        raise SystemExit(f"config error{f' in {path}' if path else ''}:\n{e}") from None


def run(args) -> int:
    from ..experiments.cosmology import run as run_experiment

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config:
        config, overrides = None, [config, *overrides]
    run_experiment(_load(config, overrides))
    return 0


def register(sub) -> None:
    p = sub.add_parser("cosmology", help="tell two cosmologies apart from convergence maps (2019 paper)")
    p.add_argument("config", nargs="?", help="YAML config (default: the quick run)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.nside=256")
    p.set_defaults(func=run)
