"""A spherical CNN: one output vector per map (classification or regression).

>>> import torch, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=8)
>>> model = gs.models.SphericalCNN(s, in_channels=1, out_features=2, channels=(8, 16), K=3)
>>> model(torch.randn(4, s.npix, 1)).shape
torch.Size([4, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.conv import ChebConv
from ..nn.pool import GlobalPool, Pool
from ..sampling import Sampling
from .base import TASKS, Block, SphereModel, check_channels, check_choice, positive

__all__ = ["SphericalCNN", "HEADS"]

HEADS = ("conv", "global", "fc")


class SphericalCNN(SphereModel):
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
        What :meth:`loss`, :meth:`predict` and :meth:`predict_proba` do with
        the outputs (logits for cross-entropy, or values for mean squared error).
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
                 laplacian: str = "normalized", batchnorm: bool = True, dropout: float = 0.0):
        channels = check_channels(channels)
        in_channels = positive(in_channels, "in_channels")
        out_features, K = positive(out_features, "out_features"), positive(K, "K")
        check_choice(pool, "pool", ("max", "avg"))
        check_choice(head, "head", HEADS)
        check_choice(global_pool, "global_pool", ("mean", "max", "meanvar"))
        if head == "conv" and global_pool == "meanvar":
            raise ValueError("head='conv' outputs the global pooling of its last convolution: use global_pool "
                             "'mean' (rotation-invariant FCN) or 'max'; 'meanvar' needs head='global'")
        check_choice(task, "task", TASKS)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__(sampling, dict(
            in_channels=in_channels, out_features=out_features, channels=list(channels), K=K, pool=pool, head=head,
            global_pool=global_pool, task=task, k=int(k), kernel_width=kernel_width, laplacian=laplacian,
            batchnorm=bool(batchnorm), dropout=float(dropout)))
        L = len(channels)
        levels = self.pyramid(L, range(L + 1 if head == "conv" else L), k, kernel_width, laplacian,
                              why=f"channels={tuple(channels)} needs {L} poolings")
        self.blocks = nn.ModuleList()
        self.pools = nn.ModuleList()
        cin = in_channels
        for i, cout in enumerate(channels):
            self.blocks.append(Block(cin, cout, K, levels[i][2], batchnorm, check_finite=i == 0))
            self.pools.append(Pool(mode=pool, assign=levels[i + 1][1]))
            cin = cout
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        coarsest = levels[L][0]
        if head == "conv":
            self.head_conv = ChebConv(cin, out_features, K, operator=levels[L][2], check_finite=False)
            self.global_pool = GlobalPool(global_pool, sampling=coarsest)
        elif head == "global":
            self.global_pool = GlobalPool(global_pool, sampling=coarsest)
            self.fc = nn.Linear(cin * (2 if global_pool == "meanvar" else 1), out_features)
        else:
            self.fc = nn.Linear(cin * self.npix_levels[L], out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The coarsest level's features, [batch, npix_levels[-1], channels[-1]]."""
        self.check_input(x)
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
