"""Samplings by name: the one way from a name (a config, a command line, a
checkpoint, a cache) to a :class:`~graphsphere.sampling.Sampling`.

* :func:`from_spec` takes a class name (any case, or an alias such as ``gl``)
  and the constructor's arguments, and checks every name before building;
* :func:`check_spec` checks the same name and arguments without building
  (what configs do: they validate, the engine builds);
* :func:`from_state` takes what :meth:`Sampling.to_state` wrote;
* :func:`parse_spec` reads the short form of the command line,
  ``healpix:64``, ``equiangular:32x64,poles=SOFT``, ``gl:48``, ``icosahedral:5``.

>>> from_spec("healpix", nside=8).npix
768
>>> parse_spec("equiangular:8x16,poles=SOFT")
Equiangular(nlat=8, nlon=16, poles=SOFT) [npix=128]
>>> from_spec("HEALPix", nsid=8)
Traceback (most recent call last):
...
ValueError: HEALPix has no argument 'nsid' (did you mean 'nside'?); its arguments: nside, nest, indices, ranges
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

import numpy as np

from .base import Sampling, sampling_classes

__all__ = ["check_spec", "from_spec", "from_state", "parse_spec", "sampling_names", "spec_params"]

#: Other names of the samplings (lower case).
ALIASES = {"gl": "GaussLegendre", "gauss-legendre": "GaussLegendre", "gauss_legendre": "GaussLegendre",
           "ico": "Icosahedral", "icosahedron": "Icosahedral", "points": "Points", "equiangular-soft": "Equiangular",
           "equiangular-dh": "Equiangular"}
#: The argument a bare value sets in ``parse_spec`` ("healpix:64" is nside=64).
_MAIN = {"HEALPix": "nside", "Equiangular": "nlat", "GaussLegendre": "nlat", "Icosahedral": "level"}


def sampling_names() -> list[str]:
    """Every name :func:`from_spec` accepts (class names, then aliases)."""
    return sorted(sampling_classes()) + sorted(ALIASES)


def _resolve(name: str) -> type[Sampling]:
    classes = sampling_classes()
    by_lower = {k.lower(): v for k, v in classes.items()}
    key = str(name).strip().lower()
    cls = by_lower.get(key) or classes.get(ALIASES.get(key, ""))
    if cls is None:
        close = difflib.get_close_matches(key, list(by_lower) + list(ALIASES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown sampling {name!r}{hint}; known: {', '.join(sorted(classes))}")
    return cls


def _arguments(cls: type[Sampling]) -> list[str]:
    return [p for p in inspect.signature(cls).parameters if p != "self"] + list(getattr(cls, "STATE_KEYS", ()))


def _check_names(cls: type[Sampling], params: dict[str, Any]) -> None:
    allowed = _arguments(cls)
    for key in params:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{cls.__name__} has no argument {key!r}{hint}; its arguments: {', '.join(allowed)}")


def _is_array_file(value) -> bool:
    return isinstance(value, (str, Path)) and str(value).endswith(".npy")


def check_spec(name: str, **params: Any) -> type[Sampling]:
    """Check what :func:`from_spec` would be given, without building the
    sampling: the name, every argument's name, that the required arguments
    are there, that array files exist, and each scalar argument with the
    constructor's own check (``Sampling.ARG_CHECKS``). The contents of arrays
    (pixel ids, coordinates) are checked when the sampling is built. Returns
    the sampling class.

    >>> check_spec("healpix", nside=8).__name__
    'HEALPix'
    >>> check_spec("healpix", nside=6)
    Traceback (most recent call last):
    ...
    ValueError: nside must be a power of two (1, 2, 4, ..., 8192), got 6; nearest: 4 or 8
    >>> check_spec("equiangular", nlat=8)
    Traceback (most recent call last):
    ...
    TypeError: Equiangular needs the argument(s) nlon
    """
    cls = _resolve(name)
    _check_names(cls, params)
    required = [p.name for p in inspect.signature(cls).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    alternatives = set(getattr(cls, "STATE_KEYS", ()))  # e.g. HEALPix ranges stand for indices
    missing = [p for p in required if p not in params and not (alternatives & params.keys())]
    if missing:
        raise TypeError(f"{cls.__name__} needs the argument(s) {', '.join(missing)}")
    for key, value in params.items():
        if _is_array_file(value):
            _array_file(value, f"{cls.__name__} {key}")
        elif key in cls.ARG_CHECKS:
            cls.ARG_CHECKS[key](value)
    return cls


def from_spec(name: str, **params: Any) -> Sampling:
    """Build a sampling from its name and constructor arguments.

    Array arguments (HEALPix ``indices``, Points ``lon`` / ``lat``) may be
    given as the path of an ``.npy`` file. Unknown names and arguments are
    errors that list what exists.

    >>> from_spec("gl", nlat=4)
    GaussLegendre(nlat=4, nlon=8) [npix=32]
    """
    cls = _resolve(name)
    _check_names(cls, params)
    params = {k: _load_array(v, f"{cls.__name__} {k}") if _is_array_file(v) else v for k, v in params.items()}
    if str(name).strip().lower() == "equiangular-soft":
        params.setdefault("poles", "SOFT")
    return cls._from_params(params)


def from_state(state: dict[str, Any]) -> Sampling:
    """Rebuild a sampling from :meth:`Sampling.to_state` (arrays may come as
    lists, NumPy arrays or torch tensors).

    >>> import graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=4, indices=range(16))
    >>> from_state(s.to_state()) == s
    True
    """
    if not isinstance(state, dict) or "type" not in state:
        raise ValueError(f"a sampling state is a dict with a 'type' entry, got {state!r:.200}")
    params = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items() if k != "type"}
    return from_spec(state["type"], **params)


def _array_file(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what}: file not found: {p.resolve()} (save the array with numpy.save)")
    return p


def _load_array(path, what: str) -> np.ndarray:
    return np.load(_array_file(path, what), allow_pickle=False)


def _value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_spec(text: str) -> Sampling:
    """A sampling from the command line's short form ``NAME[:ARGS]``.

    ARGS are comma-separated: a bare value sets the main argument (HEALPix
    ``nside``, grids ``nlat`` or ``NLATxNLON``, Icosahedral ``level``), and
    ``key=value`` any other.

    >>> parse_spec("healpix:16").npix, parse_spec("ico:2").npix, parse_spec("healpix:nside=4,nest=false").nest
    (3072, 162, False)
    """
    name, params = spec_params(text)
    try:
        return from_spec(name, **params)
    except TypeError as e:  # a required argument is missing
        raise ValueError(f"{text!r}: {e}; e.g. healpix:64, equiangular:32x64, gl:48, icosahedral:5") from None


def spec_params(text: str) -> tuple[str, dict[str, Any]]:
    """The class name and arguments a short form ``NAME[:ARGS]`` stands for, without building anything
    (configs validate them with :func:`check_spec`).

    >>> spec_params("gl:48"), spec_params("equiangular:16")
    (('GaussLegendre', {'nlat': 48}), ('Equiangular', {'nlat': 16, 'nlon': 32}))
    """
    name, _, args = str(text).partition(":")
    cls = _resolve(name)
    params: dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        if eq:
            params[key.strip()] = _value(value)
            continue
        main = _MAIN.get(cls.__name__)
        if main is None:
            raise ValueError(f"{text!r}: {cls.__name__} takes key=value arguments only")
        if main == "nlat" and "x" in item.lower():
            nlat, _, nlon = item.lower().partition("x")
            params["nlat"], params["nlon"] = _value(nlat), _value(nlon)
        else:
            params[main] = _value(item)
    if cls.__name__ == "Equiangular" and "nlon" not in params and isinstance(params.get("nlat"), int):
        params["nlon"] = 2 * params["nlat"]
    if name.strip().lower() == "equiangular-soft":  # the alias's own default, as in from_spec
        params.setdefault("poles", "SOFT")
    return cls.__name__, params
