"""The rescaled Laplacian L~ of one graph as a module of non-persistent buffers.

A :class:`GraphOperator` holds the three CSR tensors of L~ as buffers that are
*not* saved in the state_dict: they follow ``.to(device, dtype)`` with the
module that owns them, and are rebuilt from the graph (never read from a
checkpoint). Models own one per pyramid level and hand the same instance to
every layer of that level, so the operator is held, and moved, once.

>>> import graphsphere as gs
>>> op = GraphOperator(gs.SphereGraph(gs.sampling.HEALPix(nside=2), k=8))
>>> op
GraphOperator(vertices=48, nnz=456, dtype=torch.float32)
>>> list(op.state_dict())
[]
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import nn

from ..graph import SphereGraph
from .functional.chebyshev import SparseOperator, as_operator

__all__ = ["GraphOperator"]


class GraphOperator(nn.Module):
    """L~ = (2a / lambda_max) L - I of ``graph`` (a :class:`~graphsphere.SphereGraph`),
    or an already rescaled operator (a SciPy sparse matrix or a
    :class:`~graphsphere.nn.functional.SparseOperator`), as buffers.

    The tensors are kept in the graph's own cache, one set per (a, dtype), so modules built on one
    graph share them; they are made from the Laplacian's arrays in ``dtype`` (no float64 copy of the
    operator: :func:`~graphsphere.nn.functional.as_operator`).
    """

    def __init__(self, graph: SphereGraph | sp.spmatrix | SparseOperator, a: float = 1.0,
                 dtype: torch.dtype | None = None):
        super().__init__()
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if isinstance(graph, SphereGraph):
            # Checked once per graph, a, dtype: every layer and model on this graph shares the tensors
            # (buffers are replaced, never written in place, by .to() and load_state_dict).
            g = graph
            op = g.derived(("torch operator", float(a), dtype), lambda: as_operator(g, dtype=dtype, a=a))
        else:
            op = as_operator(graph, dtype=dtype)
        self.register_buffer("indptr", op.indptr, persistent=False)
        self.register_buffer("indices", op.indices, persistent=False)
        self.register_buffer("values", op.values, persistent=False)

    @property
    def vertices(self) -> int:
        return self.indptr.numel() - 1

    @property
    def operator(self) -> SparseOperator:
        """The operator as the kernels take it (views of the buffers, no copy)."""
        return SparseOperator(self.indptr, self.indices, self.values)

    def extra_repr(self) -> str:
        return f"vertices={self.vertices}, nnz={self.values.numel()}, dtype={self.values.dtype}"
