"""Ready models: a spherical CNN (classification/regression of whole maps)
and a spherical U-Net (one output per vertex).

Both build the pyramid of samplings and graphs once, at construction
(``sampling.pyramid`` and one :class:`~graphsphere.SphereGraph` per level),
hold every graph operator and pooling index as buffers, and save and load
with them: ``model.save(path)`` then ``SphericalCNN.load(path)`` restores
the model without recomputing a single graph.

Example
-------
>>> import torch, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=8)
>>> model = gs.models.SphericalCNN(s, in_channels=1, out_features=2, channels=(8, 16), K=3)
>>> model(torch.randn(4, s.npix, 1)).shape
torch.Size([4, 2])
>>> unet = gs.models.SphericalUNet(s, in_channels=2, out_channels=3, channels=(8, 16), K=3)
>>> unet(torch.randn(4, s.npix, 2)).shape
torch.Size([4, 768, 3])
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .graph import SphereGraph
from .nn.conv import ChebConv
from .nn.functional.chebyshev import as_operator
from .nn.functional.pooling import check_vertices
from .nn.pool import GlobalPool, Pool, Unpool
from .sampling.base import Sampling, from_dict

__all__ = ["SphericalCNN", "SphericalUNet", "build_pyramid"]

HEADS = ("conv", "global", "fc")
TASKS = ("classification", "regression")
_FORMAT = 1  # version of the saved file layout


def build_pyramid(sampling: Sampling, levels: int, why: str = "") -> list[tuple[Sampling, Any]]:
    """``sampling.pyramid(levels)``, with an error that says how many levels
    the sampling supports when it cannot be coarsened that often."""
    out: list[tuple[Sampling, Any]] = [(sampling, None)]
    for i in range(levels):
        try:
            out.append(out[-1][0].coarsen())
        except (ValueError, NotImplementedError) as e:
            raise ValueError(
                f"{sampling.describe()} can be pooled {i} time(s), but {why or 'this model'} needs {levels} "
                f"pooling levels; use fewer levels (shorter channels) or a finer sampling. "
                f"At level {i}: {e}") from None
    return out


def _graph(sampling: Sampling, k: int, kernel_width, laplacian: str) -> SphereGraph:
    # Coarse levels can have fewer than k + 1 vertices (an equiangular 2x4
    # grid): connect them completely rather than fail.
    k = min(int(k), sampling.npix - 1)
    with warnings.catch_warnings():
        # Tuned widths exist per level for HEALPix only; "auto" falls back quietly.
        warnings.simplefilter("ignore", UserWarning)
        return SphereGraph(sampling, k=k, kernel_width=kernel_width, laplacian=laplacian)


class _VertexBatchNorm(nn.BatchNorm1d):
    """Batch norm over the channels of [batch, vertices, channels] signals
    (statistics over batch and vertices)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class _Block(nn.Module):
    """ChebConv, then batch norm (optional), then ReLU."""

    def __init__(self, cin: int, cout: int, K: int, operator, batchnorm: bool):
        super().__init__()
        # No conv bias before batch norm: the norm's shift replaces it.
        self.conv = ChebConv(cin, cout, K, operator=operator, bias=not batchnorm)
        self.norm = _VertexBatchNorm(cout) if batchnorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


def _to_plain(d: dict[str, Any]) -> dict[str, Any]:
    """A sampling dict with arrays as tensors: loadable with weights_only=True."""
    return {k: torch.from_numpy(np.array(v)) if np.ndim(v) > 0 else (v.item() if isinstance(v, np.generic) else v)
            for k, v in d.items()}


def _from_plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in d.items()}


class _SphereModel(nn.Module):
    """Shared machinery: input checks, the level pyramid, save and load."""

    def _init_common(self, sampling: Sampling, config: dict[str, Any], levels: int, graph_levels: list[int],
                     build: bool, why: str) -> list:
        """Build (or, when loading, skip) the pyramid; returns per-level
        ``(sampling, assign, operator)`` with ``None`` where not built."""
        if not isinstance(sampling, Sampling):
            raise TypeError(f"sampling must be a graphsphere Sampling, got {type(sampling).__name__}")
        self.sampling = sampling
        self.config = config
        if not build:  # load(): every operator and index comes from the state_dict
            self.npix_levels = list(config["_npix_levels"])
            return [(None, None, None)] * (levels + 1)
        pyramid = build_pyramid(sampling, levels, why)
        self.npix_levels = [s.npix for s, _ in pyramid]
        config["_npix_levels"] = self.npix_levels
        out = []
        for i, (s, assign) in enumerate(pyramid):
            op = None
            if i in graph_levels:
                g = _graph(s, config["k"], config["kernel_width"], config["laplacian"])
                op = as_operator(g, dtype=torch.get_default_dtype())
            out.append((s, assign, op))
        return out

    def _check_input(self, x: torch.Tensor) -> None:
        cin = self.config["in_channels"]
        if x.dim() == 2 and cin == 1:
            raise ValueError(f"{type(self).__name__} expects [batch, vertices, channels], got shape "
                             f"{tuple(x.shape)}; add the channel axis with x[..., None]")
        check_vertices(x, self.npix_levels[0], type(self).__name__)
        if x.shape[2] != cin:
            raise ValueError(f"{type(self).__name__} expects {cin} input channel(s), got {x.shape[2]} "
                             f"(input shape {tuple(x.shape)})")

    # -- persistence --------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save the configuration, the sampling and the state (weights, graph
        operators, pooling indices) to one file, atomically."""
        path = Path(path)
        cfg = dict(self.config)
        payload = {"format": _FORMAT, "class": type(self).__name__,
                   "sampling": {"type": type(self.sampling).__name__, **_to_plain(self.sampling.to_dict())},
                   "config": cfg, "state_dict": self.state_dict()}
        fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location="cpu"):
        """Load a model saved with :meth:`save`; no graph is rebuilt."""
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or "class" not in payload or "state_dict" not in payload:
            raise ValueError(f"{path} is not a graphsphere model file (saved with model.save)")
        if payload["class"] != cls.__name__:
            raise ValueError(f"{path} holds a {payload['class']}, not a {cls.__name__}; "
                             f"use graphsphere.models.{payload['class']}.load")
        sampling = from_dict(_from_plain(payload["sampling"]))
        cfg = dict(payload["config"])
        model = cls(sampling, **{k: v for k, v in cfg.items() if not k.startswith("_")}, _build=False,
                    _npix_levels=cfg["_npix_levels"])
        if isinstance(map_location, (str, torch.device)):
            model.to(map_location)  # the empty modules were made on the CPU
        model.load_state_dict(payload["state_dict"])
        return model


class SphericalCNN(_SphereModel):
    """A DeepSphere CNN: one output vector per map.

    Level ``i`` (``i = 0 .. len(channels) - 1``) is a Chebyshev convolution
    to ``channels[i]`` features on the graph of that level, batch norm, ReLU,
    then pooling to the next coarser level. The ``head`` turns the coarsest
    level into ``out_features`` numbers:

    * ``"conv"``: a last graph convolution to ``out_features`` on the
      coarsest level, then global pooling (``global_pool``, mean or max). The
      2019 paper's "FCN" variant; invariant to rotations as far as the graph
      convolutions are equivariant.
    * ``"global"``: global pooling then a linear layer (SHREC'17 model).
    * ``"fc"``: flatten the coarsest level then a linear layer (the paper's
      "CNN" variant; needs the same footprint at test time, not invariant).

    Parameters
    ----------
    sampling : Sampling
        The input sampling; must coarsen ``len(channels)`` times.
    in_channels, out_features : int
    channels : sequence of int
        Features per level; ``len(channels)`` poolings.
    K : int
        Chebyshev coefficients per filter (polynomial order K - 1).
    pool : "max" | "avg"
    head : "conv" | "global" | "fc"
    global_pool : "mean" | "max" | "meanvar"
        Global pooling of the ``conv`` and ``global`` heads (``meanvar`` only
        for ``global``: means and variances feed the linear layer).
        Area-weighted on samplings whose pixels differ in area.
    task : "classification" | "regression"
        What :meth:`loss` and :meth:`predict` do with the outputs (logits
        for cross-entropy, or values for mean squared error).
    k, kernel_width, laplacian :
        Graph construction at every level (``SphereGraph``); ``k`` is capped
        at ``npix - 1`` on tiny coarse levels. ``"auto"`` widths use the
        tuned HEALPix widths where they exist, the mean heuristic elsewhere.
    batchnorm : bool
        Batch norm after every convolution but the head's.
    dropout : float
        Dropout before the head.

    The published architectures (REFERENCE.md section 5)::

        # Cosmology FCN: GC16-P4, GC32-P4, 3 x (GC64-P4), GC2, mean
        SphericalCNN(s, 1, 2, channels=(16, 32, 64, 64, 64), K=5, head="conv", global_pool="mean")
        # Cosmology CNN: same convolutions, then a fully connected layer
        SphericalCNN(s, 1, 2, channels=(16, 32, 64, 64, 64), K=5, head="fc")
        # SHREC'17: GC16,P,GC32,P,GC64,P,GC128,P,GC256,P, global mean, FC
        SphericalCNN(s, 6, 55, channels=(16, 32, 64, 128, 256), K=4, head="global", global_pool="mean")

    >>> import torch, graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=16)
    >>> fcn = gs.models.SphericalCNN(s, 1, 2, channels=(8, 16, 16), K=3, head="conv")
    >>> fcn(torch.randn(3, s.npix, 1)).shape
    torch.Size([3, 2])
    """

    def __init__(self, sampling: Sampling, in_channels: int, out_features: int, channels=(16, 32, 64), K: int = 5,
                 pool: str = "max", head: str = "global", global_pool: str = "mean",
                 task: str = "classification", k: int = 8, kernel_width: str | float = "auto",
                 laplacian: str = "normalized", batchnorm: bool = True, dropout: float = 0.0,
                 *, _build: bool = True, _npix_levels=None):
        super().__init__()
        channels = _check_channels(channels)
        in_channels = _positive(in_channels, "in_channels")
        out_features, K = _positive(out_features, "out_features"), _positive(K, "K")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if global_pool not in ("mean", "max", "meanvar"):
            raise ValueError(f"global_pool must be 'mean', 'max' or 'meanvar', got {global_pool!r}")
        if head == "conv" and global_pool == "meanvar":
            raise ValueError("head='conv' outputs the global pooling of its last convolution: use global_pool "
                             "'mean' (rotation-invariant FCN) or 'max'; 'meanvar' needs head='global'")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        config = dict(in_channels=in_channels, out_features=out_features, channels=list(channels), K=K, pool=pool,
                      head=head, global_pool=global_pool, task=task, k=int(k), kernel_width=kernel_width,
                      laplacian=laplacian, batchnorm=bool(batchnorm), dropout=float(dropout))
        if _npix_levels is not None:
            config["_npix_levels"] = list(_npix_levels)
        L = len(channels)
        graph_levels = list(range(L + 1 if head == "conv" else L))
        levels = self._init_common(sampling, config, L, graph_levels, _build,
                                   why=f"channels={tuple(channels)} ({L} poolings)")
        self.blocks = nn.ModuleList()
        self.pools = nn.ModuleList()
        cin = in_channels
        for i, cout in enumerate(channels):
            self.blocks.append(_Block(cin, cout, K, levels[i][2], batchnorm))
            self.pools.append(Pool(mode=pool, assign=levels[i + 1][1]))
            cin = cout
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        coarsest = levels[L][0]
        if head == "conv":
            self.head_conv = ChebConv(cin, out_features, K, operator=levels[L][2])
            self.global_pool = GlobalPool(global_pool, sampling=coarsest)
        elif head == "global":
            self.global_pool = GlobalPool(global_pool, sampling=coarsest)
            self.fc = nn.Linear(cin * (2 if global_pool == "meanvar" else 1), out_features)
        else:
            self.fc = nn.Linear(cin * self.npix_levels[L], out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The coarsest level's features, [batch, npix_levels[-1], channels[-1]]."""
        self._check_input(x)
        for block, pool in zip(self.blocks, self.pools):
            x = pool(block(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, sampling.npix, in_channels] -> [batch, out_features]."""
        x = self.dropout(self.features(x))
        head = self.config["head"]
        if head == "conv":
            return self.global_pool(self.head_conv(x))
        if head == "global":
            return self.fc(self.global_pool(x))
        return self.fc(x.reshape(x.shape[0], -1))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on logits (classification) or mean squared error (regression)."""
        if self.config["task"] == "classification":
            return nn.functional.cross_entropy(output, target)
        return nn.functional.mse_loss(output, target.reshape(output.shape).to(output.dtype))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (classification) or values (regression), in eval mode."""
        was = self.training
        self.eval()
        try:
            out = self(x)
        finally:
            self.train(was)
        return out.softmax(dim=-1) if self.config["task"] == "classification" else out


class SphericalUNet(_SphereModel):
    """A spherical U-Net: one output vector per vertex, ``[B, V, in] -> [B, V, out]``.

    Encoder: at level ``i`` a graph convolution to ``channels[i]`` (batch
    norm, ReLU), then pooling, down to level ``len(channels) - 1``. Decoder:
    unpool to level ``i``, concatenate the encoder's level-``i`` features
    (skip connection), graph convolution back to ``channels[i]``. A last graph
    convolution maps to ``out_channels``. Encoder and decoder convolutions of
    a level share one graph operator (one copy in memory and on disk).

    Parameters are those of :class:`SphericalCNN`, plus ``unpool``
    (``"repeat"``, or ``"max"`` to put values back where ``pool="max"``
    found them, after a linear map to that level's channel count) and
    ``skip`` (``False`` drops the skip connections, a plain encoder-decoder,
    for ablations). ``task="classification"`` makes
    :meth:`loss` a per-vertex cross-entropy (segmentation), ``"regression"``
    a mean squared error.

    >>> import torch, graphsphere as gs
    >>> s = gs.sampling.HEALPix(nside=8)
    >>> unet = gs.models.SphericalUNet(s, 1, 4, channels=(8, 16, 32), K=3)
    >>> unet(torch.randn(2, s.npix, 1)).shape
    torch.Size([2, 768, 4])
    """

    def __init__(self, sampling: Sampling, in_channels: int, out_channels: int, channels=(16, 32, 64), K: int = 5,
                 pool: str = "max", unpool: str = "repeat", skip: bool = True, task: str = "classification", k: int = 8,
                 kernel_width: str | float = "auto", laplacian: str = "normalized", batchnorm: bool = True,
                 dropout: float = 0.0, *, _build: bool = True, _npix_levels=None):
        super().__init__()
        channels = _check_channels(channels)
        if len(channels) < 2:
            raise ValueError(f"a U-Net needs at least two levels (len(channels) >= 2), got channels={channels}")
        in_channels, out_channels, K = (_positive(in_channels, "in_channels"), _positive(out_channels, "out_channels"),
                                        _positive(K, "K"))
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        if unpool not in ("repeat", "max"):
            raise ValueError(f"unpool must be 'repeat' or 'max', got {unpool!r}")
        if unpool == "max" and pool != "max":
            raise ValueError("unpool='max' puts values back where max pooling found them: it needs pool='max'")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        config = dict(in_channels=in_channels, out_channels=out_channels, channels=list(channels), K=K, pool=pool,
                      unpool=unpool, skip=bool(skip), task=task, k=int(k), kernel_width=kernel_width,
                      laplacian=laplacian, batchnorm=bool(batchnorm), dropout=float(dropout))
        if _npix_levels is not None:
            config["_npix_levels"] = list(_npix_levels)
        L = len(channels) - 1
        levels = self._init_common(sampling, config, L, list(range(L + 1)), _build,
                                   why=f"channels={tuple(channels)} ({L} poolings)")
        self.encoder = nn.ModuleList()
        self.pools = nn.ModuleList()
        self.unpools = nn.ModuleList()
        self.projections = nn.ModuleList()
        self.decoder = nn.ModuleList()
        cin = in_channels
        for i, cout in enumerate(channels):
            self.encoder.append(_Block(cin, cout, K, levels[i][2], batchnorm))
            cin = cout
        for i in range(L):
            assign = levels[i + 1][1]
            self.pools.append(Pool(mode=pool, return_indices=unpool == "max", assign=assign))
            self.unpools.append(Unpool(mode=unpool, assign=assign))
            cskip = channels[i] if skip else 0
            # Max-unpooling puts channel c back where channel c of the
            # encoder's level-i features peaked: project to channels[i] first.
            cup = channels[i] if unpool == "max" else channels[i + 1]
            self.projections.append(nn.Linear(channels[i + 1], cup) if unpool == "max" else nn.Identity())
            self.decoder.append(_Block(cup + cskip, channels[i], K, levels[i][2], batchnorm))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = ChebConv(channels[0], out_channels, K, operator=levels[0][2])
        self._tie_operators()
        # Loading a state_dict gives every conv its own operator tensors: tie them again.
        self.register_load_state_dict_post_hook(lambda module, _: module._tie_operators())

    def _level_convs(self) -> list[list[ChebConv]]:
        """The convolutions of each level (encoder, decoder, head)."""
        convs = [[b.conv] for b in self.encoder]
        for i, d in enumerate(self.decoder):
            convs[i].append(d.conv)
        convs[0].append(self.head)
        return convs

    def _tie_operators(self) -> None:
        for group in self._level_convs():
            first = group[0]
            for conv in group[1:]:
                if conv.vertices == first.vertices and torch.equal(conv.op_values, first.op_values) \
                        and torch.equal(conv.op_indices, first.op_indices):
                    for name in ("op_indptr", "op_indices", "op_values"):
                        setattr(conv, name, getattr(first, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, sampling.npix, in_channels] -> [batch, sampling.npix, out_channels]."""
        self._check_input(x)
        skips, indices = [], []
        L = len(self.pools)
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < L:
                skips.append(x)
                out = self.pools[i](x)
                x, idx = out if isinstance(out, tuple) else (out, None)
                indices.append(idx)
        for i in reversed(range(L)):
            up = self.unpools[i]
            x = up(self.projections[i](x), indices[i]) if up.mode == "max" else up(x)
            if self.config["skip"]:
                x = torch.cat([x, skips[i]], dim=2)
            x = self.decoder[i](x)
        return self.head(self.dropout(x))

    def loss(self, output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Classification: per-vertex cross-entropy, ``output`` [B, V, classes],
        ``target`` [B, V] class indices, ``weight`` [classes] for imbalanced
        classes. Regression: mean squared error against ``target`` [B, V, out]."""
        if self.config["task"] == "regression":
            return nn.functional.mse_loss(output, target.reshape(output.shape).to(output.dtype))
        return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), weight=weight)


def _positive(v, name: str) -> int:
    if isinstance(v, bool) or int(v) != v or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _check_channels(channels) -> tuple[int, ...]:
    if isinstance(channels, int):
        raise ValueError(f"channels is a sequence of feature counts, one per level, got the int {channels}; "
                         f"write channels=({channels},)")
    channels = tuple(channels)
    if not channels:
        raise ValueError("channels must name at least one level, e.g. channels=(16, 32, 64)")
    for c in channels:
        _positive(c, "every entry of channels")
    return tuple(int(c) for c in channels)
