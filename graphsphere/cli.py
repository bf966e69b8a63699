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


_REQUIRED = "the following arguments are required: "
#: How a missing positional is named in the one-line error of a sub-command.
_NEEDS = {"CONFIG": "a CONFIG file (a YAML config, e.g. experiments/example_synthetic.yaml)",
          "CHECKPOINT": "a CHECKPOINT file (e.g. out/runs/<run>/checkpoints/best.ckpt)",
          "INPUT": "one or more INPUT map files (.npy, .fits, .nc)", "ACTION": "an ACTION (see --help)"}


class CommandParser(argparse.ArgumentParser):
    """The parser of a sub-command: a mistake prints that command's usage (not the top-level one),
    ``key=value`` overrides may come anywhere after the config (before or after flags), a missing
    config or checkpoint is said in words, and ``--debug`` is accepted after the command too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not any("--debug" in a.option_strings for a in self._actions):
            self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and isinstance(getattr(namespace, "overrides", None), list):
            late = [a for a in extras if "=" in a and not a.startswith("-")]
            namespace.overrides = [*namespace.overrides, *late]
            extras = [a for a in extras if a not in late]
        if extras:  # here, not in the top-level parser: the usage shown is this command's
            self.error("unrecognized arguments: " + " ".join(extras))
        return namespace, extras

    def error(self, message):
        if message.startswith(_REQUIRED):
            names = message[len(_REQUIRED):].split(", ")
            message = f"{self.prog.partition(' ')[2] or self.prog} needs " + " and ".join(
                _NEEDS.get(n, n) for n in names)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="graphsphere", description="DeepSphere for modern PyTorch: graph-based spherical CNNs.")
    parser.add_argument("--version", action="version", version=f"graphsphere {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
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
