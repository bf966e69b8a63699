"""Configuration files: YAML, overrides, validation, one error style.

Every configuration of the package (the training engine's, each
experiment's) is a pydantic schema built from :class:`Section` and read with
:func:`load_config`: YAML (or a dict), then ``key.path=value`` overrides
merged by OmegaConf (values parsed as YAML: ``3`` is an int, ``[8, 16]`` a
list, ``null`` None; ``${other.key}`` interpolates), then validated by
pydantic. All problems are reported at once, each with its dotted name, the
value given and what is allowed::

    config error in run.yaml:
      trainer.max_epoch: unknown field (value 3); did you mean 'max_epochs'? Allowed: [...]
      optim.lr = -1: Input should be greater than 0

>>> class Train(Section):
...     epochs: int = 10
...     lr: float = 1e-3
>>> load_config(Train, {"epochs": 5}, ["lr=0.01"])
Train(epochs=5, lr=0.01)
>>> load_config(Train, {"epoch": 5})
Traceback (most recent call last):
...
graphsphere.config.ConfigError: config error:
  epoch: unknown field (value 5); did you mean 'epochs'? Allowed: ['epochs', 'lr']
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ConfigError", "Section", "load_config", "apply_overrides", "read_yaml", "issues_from", "did_you_mean"]

S = TypeVar("S", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration problem; ``issues`` is a list of ``(dotted field, message)``."""

    def __init__(self, issues: list[tuple[str, str]], source: str | None = None):
        self.issues, self.source = list(issues), source
        head = f"config error in {source}:" if source else "config error:"
        super().__init__("\n  ".join([head] + [f"{loc}{msg}" for loc, msg in self.issues]))


class Section(BaseModel):
    """A strict part of a configuration: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (what goes into YAML and checkpoints)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def did_you_mean(key: str, allowed) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    return f"; did you mean {close[0]!r}?" if close else "."


def _fields_at(schema, loc: tuple) -> list[str]:
    """Field names of the section at ``loc`` (for 'allowed: ...' hints)."""
    cls = schema
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cand = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not cand:
            return []
        cls = cand[0]
    return list(getattr(cls, "model_fields", {}))


def issues_from(err: ValidationError, schema, prefix: tuple = ()) -> list[tuple[str, str]]:
    """pydantic's errors as ``(dotted field, message)`` pairs, phrased for people."""
    issues = []
    for e in err.errors(include_url=False):
        loc = prefix + tuple(str(p) for p in e["loc"])
        ctx_err = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_err, ConfigError):  # raised by a section's own check: already phrased
            issues.extend(ctx_err.issues)
            continue
        name = ".".join(loc)
        if e["type"] == "extra_forbidden":
            allowed = _fields_at(schema, loc[len(prefix):-1])
            issues.append((name, f": unknown field (value {e['input']!r}){did_you_mean(loc[-1], allowed)} "
                                 f"Allowed: {allowed}"))
        elif e["type"] == "missing":
            issues.append((name, ": required field missing"))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            issues.append((name, f" = {e['input']!r}: {msg}"))
    return issues


def read_yaml(path) -> dict[str, Any]:
    """A YAML file's top-level mapping, with clear errors for a missing file,
    a folder, bad YAML or a top level that is not a mapping."""
    import yaml

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"config file not found: {p.resolve()} (see the experiments/ folder for examples)")
    if p.is_dir():
        raise ConfigError([(str(p), ": is a folder; give the path of a YAML file")])
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError([(str(p), f": not valid YAML: {e}")]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([(str(p), f": the top level must be a mapping of sections, got {type(raw).__name__}")])
    return raw


def apply_overrides(raw: dict[str, Any], overrides) -> dict[str, Any]:
    """``raw`` with ``["a.b=value", ...]`` merged in (OmegaConf; values read
    as YAML), as a new plain dict; ``raw`` is not modified."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [str(o) for o in overrides or []]
    for item in overrides:
        key, eq, _ = item.partition("=")
        parts = key.strip().split(".")
        if not eq or not key.strip() or any(not part for part in parts):
            raise ConfigError([(item, ": an override looks like section.field=value, e.g. trainer.max_epochs=3")])
        node = raw
        for i, part in enumerate(parts[:-1]):  # OmegaConf would silently replace a value by a section
            node = node.get(part) if isinstance(node, dict) else None
            if node is not None and not isinstance(node, dict):
                where = ".".join(parts[:i + 1])
                raise ConfigError([(key, f": cannot set a field inside {where!r}, which is {node!r}, not a section")])
    try:
        merged = OmegaConf.merge(OmegaConf.create(raw), OmegaConf.from_dotlist(overrides))
        return OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError([(getattr(e, "full_key", None) or "overrides", f": {str(e).splitlines()[0]}")]) from None


def load_config(schema: type[S], source=None, overrides=None, context: dict[str, Any] | None = None) -> S:
    """A validated ``schema`` from a YAML path, a dict, an instance or None
    (the defaults), with ``overrides`` merged in (``context`` is passed to
    pydantic's validators). Raises :class:`ConfigError` listing every
    problem, before any work starts."""
    name = None
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, BaseModel):
        if not overrides:
            return source
        raw = source.model_dump(mode="json")
    elif isinstance(source, dict):
        raw = source
    else:
        name = str(source)
        raw = read_yaml(source)
    try:
        return schema.model_validate(apply_overrides(raw, overrides), context=context)
    except ValidationError as e:
        raise ConfigError(issues_from(e, schema), source=name) from None
    except ConfigError as e:
        raise ConfigError(e.issues, source=name) from None
