"""The one flag vocabulary of the ``graphsphere`` commands.

Every command spells the same thing the same way:

==================  =====================================================================
``--sampling SPEC``   a sampling, as :func:`graphsphere.sampling.parse_spec` reads it
                      (``healpix:64``, ``equiangular:32x64``, ``gl:48``, ``icosahedral:5``);
                      repeated where a command takes several
``--neighbours N``    neighbours per vertex of a k-NN graph
``--cheb-terms K``    terms of the Chebyshev polynomial of a filter (degree K - 1)
``--out DIR``         the output folder, ``out/<command>`` unless given
``--device D``        ``auto`` (a GPU if there is one), ``cpu`` or ``cuda``
``key=value``         config overrides, positional, anywhere after the config
==================  =====================================================================

Old spellings (``-k``, ``--k``, ``--K``, ``--nside``, ``--samplings``) still
work for one release and print a deprecation line naming the new one.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_sampling(p, "healpix:8")
>>> add_neighbours(p)
>>> args = p.parse_args(["--sampling", "healpix:4", "--neighbours", "20"])
>>> samplings(args.sampling)[0].npix, args.neighbours
(192, 20)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_sampling", "add_neighbours", "add_cheb_terms", "add_out", "add_device", "add_overrides",
           "samplings", "resolve_device", "output_path", "deprecated"]


def samplings(specs) -> list:
    """The samplings of ``--sampling`` values (one spec or a list), built by
    :func:`graphsphere.sampling.parse_spec`; a bad spec is a ``ValueError``
    (one ``error:`` line from the command line, exit status 2).

    >>> [s.npix for s in samplings(["healpix:2", "gl:4"])]
    [48, 32]
    """
    from graphsphere.sampling import parse_spec

    return [parse_spec(s) for s in ([specs] if isinstance(specs, str) else specs)]


def deprecated(old: str, new: str, convert=None):
    """An argparse action for an old spelling: stores into the new option's ``dest``
    (through ``convert`` if given) after one ``warning:`` line on stderr."""

    class _Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"warning: {option_string or old} is deprecated and will be removed in the next release; "
                  f"use {new}", file=sys.stderr)
            setattr(namespace, self.dest, convert(values) if convert else values)

    return _Deprecated


def _nside_to_spec(value) -> str:
    return f"healpix:{value}"


def add_sampling(p, default: str | None, multiple: bool = False, help: str | None = None) -> None:
    """``--sampling SPEC`` (``multiple``: repeatable and ``nargs="+"``, collected into a list),
    and the deprecated ``--nside N`` (``healpix:N``) and ``--samplings SPEC ...``. The values stay
    strings: the command builds them with :func:`samplings`, so that a bad spec takes the command
    line's one error path and ``--help`` imports nothing heavy."""
    what = help or "sampling, e.g. healpix:64, equiangular:32x64, gl:48, icosahedral:5"
    what += f" (default {default})" if default else ""
    if multiple:  # a list; None when not given (argparse's "extend" would append to a list default)
        p.add_argument("--sampling", nargs="+", action="extend", metavar="SPEC", default=None,
                       help=f"{what}; several: list them or repeat the flag")
        p.add_argument("--samplings", dest="sampling", nargs="+", action=deprecated("--samplings", "--sampling"),
                       help=argparse.SUPPRESS)
        return
    p.add_argument("--sampling", default=default, metavar="SPEC", help=what)
    p.add_argument("--nside", dest="sampling", action=deprecated("--nside", "--sampling healpix:N", _nside_to_spec),
                   help=argparse.SUPPRESS)


def add_neighbours(p, default: int | None = 8, multiple: bool = False, help: str | None = None) -> None:
    """``--neighbours N`` (``multiple``: one or more), and the deprecated ``-k`` and ``--k``."""
    nargs = "+" if multiple else None
    p.add_argument("--neighbours", type=int, nargs=nargs, default=default, metavar="N",
                   help=help or "neighbours per vertex of the k-NN graph" + (f" (default {default})" if default else ""))
    p.add_argument("-k", "--k", dest="neighbours", type=int, nargs=nargs, action=deprecated("-k", "--neighbours"),
                   help=argparse.SUPPRESS)


def add_cheb_terms(p, default: int | None = None, help: str | None = None) -> None:
    """``--cheb-terms K`` (terms of the Chebyshev polynomial), and the deprecated ``--K``."""
    p.add_argument("--cheb-terms", type=int, default=default, metavar="K",
                   help=help or f"terms of the Chebyshev polynomial, degree K - 1 (default {default})")
    p.add_argument("--K", dest="cheb_terms", type=int, action=deprecated("--K", "--cheb-terms"),
                   help=argparse.SUPPRESS)


def add_out(p, command: str) -> None:
    """``--out DIR``, default ``out/<command>``."""
    p.add_argument("--out", default=f"out/{command}", metavar="DIR",
                   help=f"output folder (default out/{command})")


def output_path(out: str, name: str) -> Path:
    """Where a command writes ``name``: ``out/name``, the folder made. An ``--out`` that ends in
    ``.png`` (the old meaning: the picture itself) is still honoured this release, with a warning."""
    o = Path(out)
    if o.suffix.lower() == ".png":
        print(f"warning: --out {out}: --out now names a folder (the picture is written as DIR/{name}); "
              f"writing {o} this release", file=sys.stderr)
        o.parent.mkdir(parents=True, exist_ok=True)
        return o
    o.mkdir(parents=True, exist_ok=True)
    return o / name


def add_device(p, default: str = "auto") -> None:
    """``--device auto|cpu|cuda``."""
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=default,
                   help=f"auto: a GPU if there is one (default {default})")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error.

    >>> resolve_device("cpu")
    'cpu'
    """
    if device == "cpu":
        return "cpu"
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no GPU here (torch.cuda.is_available() is False); "
                         "use --device cpu or --device auto")
    if device not in ("auto", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_overrides(p) -> None:
    """Positional ``key=value`` overrides (values read as YAML), after the config."""
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. data.nside=128")
