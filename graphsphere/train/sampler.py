"""A resumable, distributed, seeded sampler: the order of the samples is a
pure function of (seed, epoch, rank), so a run killed mid-epoch can skip
exactly the batches it had consumed and go on as if nothing happened.

Why not ``torch.utils.data.DistributedSampler``: it cannot start in the middle
of an epoch, and Lightning prefetches one batch before it calls
``set_epoch`` on a restart, so the epoch must already be right when the
loader is built. This sampler is told ``(epoch, samples_done)`` at
construction (from the checkpoint) and keeps that skip for as long as it is
in that epoch, however many times the loader is re-iterated.

>>> s = EpochSampler(10, batch_size=2, seed=0, shuffle=True)
>>> first = list(s)
>>> s.set_epoch(0); list(s) == first                 # same seed and epoch, same order
True
>>> r = EpochSampler(10, batch_size=2, seed=0, shuffle=True, resume=(0, 4))
>>> list(r) == first[4:]                             # 2 batches of 2 already consumed
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler"]


class EpochSampler(Sampler[int]):
    """Indices ``0 .. n-1`` in a seeded order, split between ``world_size`` ranks.

    Parameters
    ----------
    n : int
        Number of samples.
    batch_size : int
        Per-rank batch size (with ``drop_last``, each rank gets whole batches).
    seed : int
        The order of epoch ``e`` is ``randperm(n)`` drawn from a generator
        seeded with ``(seed, e)``: the same on every rank and every run.
    shuffle : bool
        False keeps ``0 .. n-1`` (validation, test).
    rank, world_size : int
        Rank ``r`` gets positions ``r, r + W, r + 2W, ...`` of the global order,
        so that its ``k``-th batch together with the other ranks' ``k``-th
        batches are exactly the ``k``-th batch of one process with ``W`` times
        the batch size.
    drop_last : bool
        Drop the tail so that every rank gets the same whole number of batches
        (training); otherwise the order is padded by wrapping around so that
        all ranks get the same count (evaluation under DDP needs equal counts).
    resume : (epoch, samples_done), optional
        Start at ``epoch``, skipping this rank's first ``samples_done`` samples.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, resume: tuple[int, int] | None = None):
        if n < 1:
            raise ValueError(f"a sampler needs at least one sample, got n={n}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.n, self.batch_size, self.seed, self.shuffle = int(n), int(batch_size), int(seed), bool(shuffle)
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        if drop_last:
            per_rank = (self.n // (self.world_size * self.batch_size)) * self.batch_size
            if per_rank == 0:
                raise ValueError(
                    f"{self.n} samples are fewer than one batch of {self.batch_size} on each of "
                    f"{self.world_size} process(es); lower trainer.batch_size or add data")
        else:
            per_rank = math.ceil(self.n / self.world_size)
        self.per_rank = per_rank
        self.epoch, self._resume = 0, None
        if resume is not None:
            epoch, done = int(resume[0]), int(resume[1])  # done: samples of this rank
            self.epoch = epoch
            self._resume = (epoch, done) if done > 0 else None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = int(epoch)
        if self._resume is not None and self._resume[0] != self.epoch:
            self._resume = None  # the resumed epoch is over

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's indices for a whole ``epoch`` (no skipping)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        total = self.per_rank * self.world_size
        if total > self.n:  # pad by wrapping (evaluation only)
            perm = torch.cat([perm, perm[: total - self.n]])
        return perm[:total][self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        idx = self.order(self.epoch)
        if self._resume is not None and self._resume[0] == self.epoch:
            idx = idx[self._resume[1]:]
        return iter(idx.tolist())

    def __len__(self) -> int:
        # Lightning sizes the epoch from len(loader); a resumed epoch is shorter, but
        # Lightning counts the batches already done itself, so report the full length.
        return self.per_rank
