"""A spherical CNN: one output vector per map (classification or regression).

>>> import torch, graphsphere as gs
>>> s = gs.sampling.HEALPix(nside=8)
>>> model = gs.models.SphericalCNN(s, in_channels=1, out_features=2, channels=(8, 16), K=3)
>>> model(torch.randn(4, s.npix, 1)).shape
torch.Size([4, 2])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.conv import ChebConv
from ..nn.pool import GlobalPool, Pool
from ..sampling import Sampling
from .base import TASKS, Block, SphereModel, check_channels, check_choice, positive, positive_float

__all__ = ["SphericalCNN", "HEADS", "batch_hard_triplet_loss"]

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
    triplet_margin : float or None
        Classification only: add ``triplet_weight`` times a batch-hard triplet margin loss on the
        outputs (:func:`batch_hard_triplet_loss`, Euclidean distances) to the cross-entropy, as the
        SHREC'17 model of the 2020 paper; None (the default): cross-entropy alone.
    triplet_weight : float
        The triplet loss's weight (positive).

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
                 triplet_margin: float | None = None, triplet_weight: float = 1.0):
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
        triplet_weight = positive_float(triplet_weight, "triplet_weight")
        if triplet_margin is not None:
            triplet_margin = positive_float(triplet_margin, "triplet_margin")
            if task != "classification":
                raise ValueError(f"triplet_margin is for classification (labels say which outputs should be near), "
                                 f"not task={task!r}; leave it None")
        super().__init__(sampling, dict(
            in_channels=in_channels, out_features=out_features, channels=list(channels), K=K, pool=pool, head=head,
            global_pool=global_pool, task=task, k=int(k), kernel_width=kernel_width, laplacian=laplacian,
            batchnorm=bool(batchnorm), dropout=float(dropout), triplet_margin=triplet_margin,
            triplet_weight=triplet_weight))
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
        """Cross-entropy on logits plus :meth:`auxiliary_loss` (classification), or mean squared
        error (regression)."""
        if self.config["task"] == "classification":
            return F.cross_entropy(output, target) + self.auxiliary_loss(output, target)
        return F.mse_loss(output, target.reshape(output.shape).to(output.dtype))

    def auxiliary_loss(self, output: torch.Tensor, target: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
        """What this model adds to its task's loss: ``triplet_weight`` times
        :func:`batch_hard_triplet_loss` of the outputs with margin ``triplet_margin`` (0 without a
        margin). Samples of weight 0 or label < 0 are left out. The training engine adds it to its
        cross-entropy."""
        margin = self.config.get("triplet_margin")
        if margin is None:
            return output.new_zeros(())
        target = target.reshape(-1)
        keep = target >= 0 if weight is None else (target >= 0) & (weight.reshape(-1) > 0)
        return self.config["triplet_weight"] * batch_hard_triplet_loss(output[keep], target[keep], margin)


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """The batch-hard triplet margin loss (Hermans et al. 2017) of embeddings ``[n, d]`` with labels ``[n]``.

    Every sample with another sample of its label (a positive) and one of another label (a negative)
    is an anchor ``a``; its triplet takes its farthest positive ``p`` and its nearest negative ``n``,
    by Euclidean distance (the distance of the SHREC'17 ranking by descriptors,
    :func:`graphsphere.experiments.shapes.retrieval.retrieval_lists` with ``metric="euclidean"``).
    The loss is the mean over anchors of ``max(0, |a - p| - |a - n| + margin)``
    (``torch.nn.functional.triplet_margin_loss``); 0, with a gradient of 0, when no sample is an
    anchor (one class only, or every class a singleton).

    >>> e = torch.tensor([[0.0], [1.0], [3.0]])
    >>> batch_hard_triplet_loss(e, torch.tensor([0, 0, 1]), margin=3.0)   # ((1 - 3 + 3) + (1 - 2 + 3)) / 2
    tensor(1.5000)
    >>> batch_hard_triplet_loss(e, torch.tensor([0, 0, 1]), margin=0.5)   # the margin is met
    tensor(0.)
    """
    labels = labels.reshape(-1)
    same = labels[:, None] == labels[None, :]
    negatives = ~same
    same.fill_diagonal_(False)
    anchors = same.any(1) & negatives.any(1)
    if not anchors.any():
        return embeddings.sum() * 0.0
    e = embeddings.float()
    with torch.no_grad():                        # which triplets: no gradient through the choice
        d = torch.cdist(e, e)
    positive = d.masked_fill(~same, -math.inf).argmax(1)[anchors]
    negative = d.masked_fill(~negatives, math.inf).argmin(1)[anchors]
    return F.triplet_margin_loss(e[anchors], e[positive], e[negative], margin=margin)
