"""The ``graphsphere`` command line.

Each sub-command lives next to the code it drives, in a module that defines
``register(subparsers)``; this file only lists those modules, so that adding a
command never means editing a long if/else here, and ``graphsphere --help``
stays fast (modules are imported, heavy libraries are not).

Every command shares one error path: a mistake of the user (a bad config, a
missing file, a damaged checkpoint) prints one ``error: ...`` line naming the
problem and the fix, and exits with status 2; ``--debug`` shows the traceback.

    graphsphere --help
    graphsphere --version
    graphsphere demo --out out/demo
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that define ``register(subparsers)``; each must import (a broken one is an error, not skipped).
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
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="graphsphere", description="DeepSphere for modern PyTorch: graph-based spherical CNNs.")
    parser.add_argument("--version", action="version", version=f"graphsphere {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a mistake of the user, not a bug: printed as one line."""
    from .config import ConfigError

    return (ConfigError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
            TypeError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as e:
        if args.debug:
            raise
        print(f"error: this command needs the package {e.name!r}; install graphsphere with its extras "
              "(bash setup.sh, or pip install -e '.[all]' in the repository)", file=sys.stderr)
        return 2
    except user_errors() as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
