"""What every graphsphere model shares: its sampling, its configuration, its
pyramid of graph operators, and saving and loading.

A model is rebuilt from its *state*: the class name, the sampling's state,
the constructor's arguments and the weights (:meth:`SphereModel.to_state`).
Graphs and pooling indices are not state: the model rebuilds them from the
sampling (through :func:`graphsphere.graph.cached_graph`, which keeps large
graphs on disk), so a checkpoint holds weights only and loads on any device
and dtype.

>>> import torch, graphsphere as gs
>>> m = gs.models.SphericalCNN(gs.sampling.HEALPix(nside=4), 1, 2, channels=(4, 8), K=3)
>>> state = m.to_state()
>>> state["class"], state["sampling"], sorted(state["config"])[:3]
('SphericalCNN', {'type': 'HEALPix', 'nside': 4, 'nest': True}, ['K', 'batchnorm', 'channels'])
>>> m2 = gs.models.from_state(state)
>>> x = torch.randn(2, 192, 1)
>>> torch.equal(m.eval()(x), m2.eval()(x))
True
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..graph import cached_graph
from ..nn.conv import ChebConv
from ..nn.functional.pooling import check_vertices
from ..nn.norm import VertexBatchNorm
from ..nn.operator import GraphOperator
from ..sampling import Sampling, from_state

__all__ = ["SphereModel", "Block", "MODEL_FORMAT", "ModelFileError", "read_model_file"]

#: Version of the saved state (1: operators and pooling indices in the state_dict, before 0.2).
MODEL_FORMAT = 2
TASKS = ("classification", "regression")


class ModelFileError(ValueError):
    """A model file or state that is not ours, is damaged, or holds another model."""


class Block(nn.Module):
    """ChebConv, then batch norm (optional), then ReLU.

    ``check_finite``: the first block of a model checks its input for NaN/Inf (bad data fail where
    they enter, naming the input); inner blocks do not (a NaN there means the training diverged,
    which the training engine reports as such)."""

    def __init__(self, cin: int, cout: int, K: int, operator: GraphOperator, batchnorm: bool,
                 check_finite: bool = False):
        super().__init__()
        # No conv bias before batch norm: the norm's shift replaces it.
        self.conv = ChebConv(cin, cout, K, operator=operator, bias=not batchnorm, check_finite=check_finite)
        self.norm = VertexBatchNorm(cout) if batchnorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.norm, nn.Identity):
            return torch.relu(self.conv(x))
        return self.norm(self.conv(x), relu=True)  # one pass over memory for both


class SphereModel(nn.Module):
    """Base class of the graphsphere models.

    Subclasses call ``super().__init__(sampling, config)`` with ``config``
    the constructor's other arguments (plain JSON types): that and the
    weights are what :meth:`to_state` saves and :meth:`from_state` gives
    back to the constructor. :meth:`pyramid` builds the level samplings and
    one shared :class:`~graphsphere.nn.GraphOperator` per level.
    """

    def __init__(self, sampling: Sampling, config: dict[str, Any]):
        super().__init__()
        if not isinstance(sampling, Sampling):
            raise TypeError(f"sampling must be a graphsphere Sampling, got {type(sampling).__name__}")
        self.sampling = sampling
        self.config = dict(config)

    # -- the pyramid ----------------------------------------------------------
    def pyramid(self, levels: int, graph_levels, k: int, kernel_width, laplacian: str, why: str):
        """Per level ``i = 0..levels``: ``(sampling, assign, operator)``, where
        ``assign`` produced level i from level i - 1 (None at 0) and
        ``operator`` is level i's :class:`GraphOperator` (None where no
        graph is needed). The operators become ``self.operators[str(i)]``."""
        out = []
        self.operators = nn.ModuleDict()
        for i, (s, assign) in enumerate(self.sampling.pyramid(levels, why=why)):
            op = None
            if i in graph_levels:
                op = self.operators[str(i)] = self.level_operator(i, s, k, kernel_width, laplacian)
            out.append((s, assign, op))
        self.npix_levels = [s.npix for s, _, _ in out]
        return out

    def level_operator(self, level: int, sampling: Sampling, k: int, kernel_width, laplacian: str) -> GraphOperator:
        """The graph operator of one pyramid level, from its graph (through the graph cache). A hook:
        a model on a patch of a sky takes the full sky's operators instead (:mod:`.patches`)."""
        with warnings.catch_warnings():
            # Coarse levels of small partial skies may split; they still pool correctly.
            warnings.simplefilter("ignore", UserWarning)
            # Coarse levels can have fewer than k + 1 vertices: connect them completely.
            g = cached_graph(sampling, k=min(int(k), sampling.npix - 1), kernel_width=kernel_width, laplacian=laplacian)
        return GraphOperator(g)

    def check_input(self, x: torch.Tensor) -> None:
        """A clear error when x is not ``[batch, sampling.npix, in_channels]``."""
        cin = self.config["in_channels"]
        if x.dim() == 2 and cin == 1:
            raise ValueError(f"{type(self).__name__} expects [batch, vertices, channels], got shape "
                             f"{tuple(x.shape)}; add the channel axis with x[..., None]")
        check_vertices(x, self.sampling.npix, type(self).__name__)
        if x.shape[2] != cin:
            raise ValueError(f"{type(self).__name__} expects {cin} input channel(s), got {x.shape[2]} "
                             f"(input shape {tuple(x.shape)})")

    # -- predictions ------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax over the last axis), in eval mode."""
        if self.config.get("task", "classification") != "classification":
            raise ValueError(f"predict_proba is for classification; this {type(self).__name__} does regression: "
                             "use predict")
        return self._eval(x).softmax(dim=-1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Classes (classification: the argmax of the outputs) or values
        (regression), in eval mode, as scikit-learn's ``predict``."""
        out = self._eval(x)
        return out.argmax(dim=-1) if self.config.get("task", "classification") == "classification" else out

    def _eval(self, x: torch.Tensor) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            return self(x)
        finally:
            self.train(was)

    # -- state -----------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Everything to rebuild the model: class, sampling state, constructor
        arguments and weights (tensors and plain types only: loadable with
        ``torch.load(weights_only=True)``)."""
        return {"format": MODEL_FORMAT, "class": type(self).__name__, "sampling": self.sampling.to_state(),
                "config": dict(self.config), "state_dict": self.state_dict()}

    @classmethod
    def from_state(cls, state: dict[str, Any], map_location=None) -> "SphereModel":
        """Rebuild a model from :meth:`to_state` (this class or, called on
        ``SphereModel``, the registered class the state names)."""
        from .registry import model_class

        state = _upgrade(state)
        name = state["class"]
        target = model_class(name) if cls is SphereModel else cls
        if target.__name__ != name:
            raise ModelFileError(f"the state holds a {name}, not a {cls.__name__}; use graphsphere.models.load "
                                 f"(or {name}.load)")
        model = target(from_state(state["sampling"]), **state["config"])
        try:
            model.load_state_dict(state["state_dict"], strict=True)
        except RuntimeError as e:
            raise ModelFileError(f"the saved weights do not fit a {name} built from the saved configuration: "
                                 f"{str(e)[:400]}") from None
        return model if map_location is None else model.to(map_location)

    def save(self, path: str | os.PathLike) -> None:
        """Save :meth:`to_state` to one file, atomically."""
        from ..files import atomic_write

        with atomic_write(path) as f:
            torch.save(self.to_state(), f)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location="cpu") -> "SphereModel":
        """Load a model saved with :meth:`save` (graphs are rebuilt, or read
        from the graph cache; the weights land on ``map_location``)."""
        return cls.from_state(read_model_file(path), map_location=map_location)


def read_model_file(path) -> dict[str, Any]:
    """The state in a model file, loaded safely (``weights_only``), with a clear error otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path.resolve()}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not one of ours"
        raise ModelFileError(f"{path} is not a readable graphsphere model file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or "class" not in state or "state_dict" not in state:
        raise ModelFileError(f"{path} is not a graphsphere model file (saved with model.save)")
    return state


# -- files of earlier versions --------------------------------------------------------------
#: Buffers that format-1 files stored and that are now rebuilt from the sampling.
_V1_BUFFERS = ("op_indptr", "op_indices", "op_values", "index", "weights", "rows", "cols", "parent", "area",
               "_extra_state")


def _upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A format-1 state (graphsphere 0.1: operators and pooling indices in the
    state_dict, the sampling's arrays as tensors) as a format-2 one."""
    fmt = state.get("format")
    if fmt == MODEL_FORMAT:
        return state
    if fmt != 1:
        raise ModelFileError(f"model format {fmt!r} is not supported: this graphsphere reads formats 1 and "
                             f"{MODEL_FORMAT}; re-save the model with the graphsphere version that wrote it")
    sampling = {k: (v.numpy().tolist() if isinstance(v, torch.Tensor) else v) for k, v in state["sampling"].items()}
    config = {k: v for k, v in state["config"].items() if not k.startswith("_")}
    weights = {k: v for k, v in state["state_dict"].items() if k.rsplit(".", 1)[-1] not in _V1_BUFFERS}
    return {"format": MODEL_FORMAT, "class": state["class"], "sampling": sampling, "config": config,
            "state_dict": weights}


def positive(v, name: str) -> int:
    """``v`` as an int, or a clear error if it is not a positive integer."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or int(v) != v or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def positive_float(v, name: str) -> float:
    """``v`` as a float, or a clear error if it is not a finite positive number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
        raise ValueError(f"{name} must be a positive number, got {v!r}")
    return float(v)


def check_channels(channels) -> tuple[int, ...]:
    """``channels`` (one feature count per level) as a tuple, or a clear error."""
    if isinstance(channels, int):
        raise ValueError(f"channels is a sequence of feature counts, one per level, got the int {channels}; "
                         f"write channels=({channels},)")
    channels = tuple(channels)
    if not channels:
        raise ValueError("channels must name at least one level, e.g. channels=(16, 32, 64)")
    return tuple(positive(c, "every entry of channels") for c in channels)


def check_choice(value, name: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value
