"""What every experiment's configuration shares (each one a :mod:`graphsphere.config` schema).

* :class:`ExperimentBase`: the top of an experiment's schema; ``ExperimentConfig.load(source, overrides)``
  reads a YAML path, a dict or ``None`` (the quick run) plus ``key=value`` overrides, and reports every
  problem at once as a :class:`~graphsphere.config.ConfigError` naming the key;
* :func:`data_section`: an experiment's ``data`` section made from its dataset's parameter schema (the
  ``Params`` of :mod:`graphsphere.data`), so each data setting has one owner: its type, bounds, default and
  checks are the dataset's, and the experiment only leaves out what it sets itself and changes defaults;
* :func:`config_error`: the error a section's own check raises.

>>> from pydantic import BaseModel, Field
>>> class Params(BaseModel):
...     n: int = Field(3, ge=1)
...     path: str | None = None
...     cache: bool = True
>>> Data = data_section(Params, drop=("cache",), defaults={"n": 5})
>>> data = Data(path="x")
>>> data.n, data.dataset_params(cache=False)
(5, {'n': 5, 'path': 'x', 'cache': False})
>>> from graphsphere.config import load_config
>>> load_config(Data, {"n": 0, "cache": False})
Traceback (most recent call last):
...
graphsphere.config.ConfigError: config error:
  n = 0: Input should be greater than or equal to 1
  cache: unknown field (value False). Allowed: ['n', 'path']
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo

from ..config import ConfigError, Section, issues_from
from ..config import load_config as _load

__all__ = ["DatasetSection", "ExperimentBase", "config_error", "data_section"]


def config_error(field: str, message: str) -> ConfigError:
    """A ConfigError naming ``field`` (pydantic passes it through as the validator's error)."""
    return ConfigError([(field, message)])


class ExperimentBase(Section):
    """The top of an experiment's configuration."""

    @classmethod
    def load(cls, source=None, overrides: Iterable[str] = ()):
        """The validated configuration from a YAML path, a dict or ``None`` (the quick run), plus
        ``key=value`` overrides; every problem is reported at once, naming the key."""
        return _load(cls, source, list(overrides))


class DatasetSection(Section):
    """A ``data`` section made by :func:`data_section`: the dataset's fields it keeps, and its
    experiment's own (the dataset's checks run on every validation)."""

    #: The dataset's parameter schema.
    dataset: ClassVar[type[BaseModel]]

    def dataset_params(self, **fixed: Any) -> dict[str, Any]:
        """The dataset's parameters (JSON types): this section's values of the dataset's fields, then
        ``fixed`` (what the experiment sets itself)."""
        values = self.model_dump(mode="json")
        return {k: values[k] for k in self.dataset.model_fields if k in values} | fixed

    @model_validator(mode="after")
    def _dataset_checks(self):
        try:
            self.dataset.model_validate(self.dataset_params())
        except ValidationError as e:
            raise ConfigError(issues_from(e, self.dataset, prefix=("data",))) from None
        return self


def data_section(params: type[BaseModel], *, drop: Iterable[str] = (), defaults: Mapping[str, Any] | None = None,
                 name: str = "DataSection", doc: str | None = None, module: str | None = None) -> type[DatasetSection]:
    """A :class:`DatasetSection` with the fields of ``params`` (types, bounds, defaults) but those in
    ``drop`` (the experiment sets them, or does not offer them), with other ``defaults``. Subclass it to
    add the experiment's own fields and checks. ``module``: where the section is defined (default: the
    caller's module)."""
    drop, defaults = set(drop), dict(defaults or {})
    unknown = sorted((drop | set(defaults)) - set(params.model_fields))
    if unknown:
        raise ValueError(f"{params.__name__} has no field(s) {unknown}")
    fields: dict[str, Any] = {}
    for key, info in params.model_fields.items():
        if key in drop:
            continue
        if key in defaults:
            info = FieldInfo.merge_field_infos(info, default=defaults[key], default_factory=None)
        fields[key] = (info.annotation, info)
    doc = doc or f"The parameters of {params.__module__}.{params.__name__}, but {sorted(drop)}."
    module = module or sys._getframe(1).f_globals["__name__"]
    section = create_model(name, __base__=DatasetSection, __module__=module, __doc__=doc, **fields)
    section.dataset = params
    return section
