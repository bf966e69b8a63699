"""The ``graphsphere`` command line.

Each sub-command lives next to the code it drives, in a module that defines
``register(subparsers)``; this file only lists those modules, so that adding a
command never means editing a long if/else here, and ``graphsphere --help``
stays fast (modules are imported, heavy libraries are not).

    graphsphere --help
    graphsphere demo --out out/demo
    graphsphere info
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that define ``register(subparsers)``; missing optional ones are skipped.
COMMAND_MODULES = [
    "graphsphere.commands.demo",
    "graphsphere.commands.info",
    "graphsphere.commands.equivariance",
    "graphsphere.commands.spectral",
    "graphsphere.commands.train",
    "graphsphere.commands.data",
    "graphsphere.commands.experiment",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphsphere", description="DeepSphere for modern PyTorch: graph-based spherical CNNs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command not written yet / removed
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
