"""Normalisation on the sphere's ``[batch, vertices, channels]`` layout.

* :class:`VertexBatchNorm`: batch norm over the channels, statistics over
  batch and vertices. It reads the vertex-major memory the Chebyshev
  convolution returns in place (no transpose copy) and returns the same layout;
  ``bn(x, relu=True)`` applies the ReLU that follows in the same pass (one
  compiled kernel on CPU: :func:`~graphsphere.nn.functional.normalization.batch_norm_relu`).
* :func:`convert_sync_batchnorm`: the same, synchronised across processes (DDP on GPUs).
* :class:`Standardize`: fixed per-channel ``(x - mean) / std`` with constants
  kept in the state_dict (the training engine fits them on the training set).

>>> import torch
>>> bn = VertexBatchNorm(4)
>>> y = bn(torch.randn(8, 100, 4) * 3 + 1)
>>> bool(y.mean((0, 1)).abs().max() < 1e-5), bool((y.std((0, 1)) - 1).abs().max() < 1e-2)
(True, True)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .functional.normalization import batch_norm_relu

__all__ = ["VertexBatchNorm", "VertexSyncBatchNorm", "convert_sync_batchnorm", "Standardize"]


def _rows(x: torch.Tensor, what: str) -> tuple[torch.Tensor, bool]:
    """``x`` [B, V, C] as a [rows, C] view without a copy where possible;
    True if the rows are vertex-major (x is the transpose of [V, B, C] memory)."""
    if x.dim() != 3:
        raise ValueError(f"{what} expects [batch, vertices, channels], got shape {tuple(x.shape)}")
    vm = x.transpose(0, 1)
    if vm.is_contiguous():
        return vm.reshape(-1, x.shape[2]), True
    return x.reshape(-1, x.shape[2]), False


def _unrows(y: torch.Tensor, x: torch.Tensor, vertex_major: bool) -> torch.Tensor:
    B, V, C = x.shape
    return y.view(V, B, C).transpose(0, 1) if vertex_major else y.view(B, V, C)


class VertexBatchNorm(nn.BatchNorm1d):
    """Batch norm of ``[batch, vertices, channels]`` signals: per channel,
    statistics over batch and vertices (as DeepSphere normalises feature maps).

    The same parameters, running statistics and results as ``nn.BatchNorm1d(C)`` on ``x.transpose(1, 2)``.
    ``relu=True`` also applies ReLU, in the same pass over memory (the models' blocks use it: batch norm and
    ReLU as separate torch calls cost more than the convolution in a training step, ``docs/performance.md``)."""

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__} expects [batch, vertices, channels], got shape {tuple(x.shape)}")
        # nn.BatchNorm1d's bookkeeping: momentum None means a cumulative average of the batch statistics.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_running = not self.training or self.track_running_stats
        return batch_norm_relu(x, self.weight, self.bias, self.running_mean if use_running else None,
                               self.running_var if use_running else None, self.training or self.running_mean is None,
                               factor, self.eps, relu=relu)


class VertexSyncBatchNorm(nn.SyncBatchNorm):
    """:class:`VertexBatchNorm` with statistics synchronised across processes."""

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        rows, vertex_major = _rows(x, type(self).__name__)
        y = _unrows(super().forward(rows), x, vertex_major)
        return torch.relu(y) if relu else y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Swap batch norms for synchronised ones (DDP on GPUs), in place.

    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` would turn a
    :class:`VertexBatchNorm` into a plain SyncBatchNorm that normalises axis
    1 (the vertices); here it becomes a :class:`VertexSyncBatchNorm`.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.SyncBatchNorm):
            continue
        if isinstance(child, VertexBatchNorm):
            new = VertexSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.train(child.training))
        elif isinstance(child, _BatchNorm):
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        else:
            convert_sync_batchnorm(child)
    return module


class Standardize(nn.Module):
    """``(x - mean) / std`` per channel of ``[..., channels]``, and back with :meth:`inverse`.

    ``mean`` and ``std`` (one value, or one per channel) are buffers in the
    state_dict: a trained model carries the statistics of its training data.

    >>> import torch
    >>> z = Standardize(mean=[1.0, 10.0], std=[2.0, 5.0])
    >>> z(torch.tensor([[3.0, 20.0]])).tolist(), z.inverse(torch.tensor([[1.0, 2.0]])).tolist()
    ([[1.0, 2.0]], [[3.0, 20.0]])
    """

    def __init__(self, mean=0.0, std=1.0):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.get_default_dtype()).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.get_default_dtype()).reshape(-1)
        if mean.shape != std.shape:
            raise ValueError(f"mean and std need one value per channel each, got {mean.numel()} and {std.numel()}")
        if not torch.isfinite(mean).all() or not torch.isfinite(std).all() or not (std > 0).all():
            raise ValueError(f"std must be positive and both finite, got mean {mean.tolist()}, std {std.tolist()}")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std.to(y.dtype) + self.mean.to(y.dtype)

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}"
