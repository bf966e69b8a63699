"""Loaders for training: seeded, sharded between processes, resumable mid-epoch.

The data module's state in a checkpoint is where the epoch was (epoch,
batches done, samples per global batch); a resumed run builds its training
sampler to skip exactly those samples (see :mod:`graphsphere.train.sampler`).
"""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from .sampler import EpochSampler

__all__ = ["SphereDataModule"]


class SphereDataModule(pl.LightningDataModule):
    def __init__(self, splits, batch_size: int, seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.splits, self.batch_size, self.seed, self.num_workers = splits, int(batch_size), int(seed), num_workers
        self._resume: dict | None = None

    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, ds, shuffle: bool, drop_last: bool, resume=None) -> DataLoader:
        rank, world = self._rank_world()
        sampler = EpochSampler(len(ds), self.batch_size, self.seed, shuffle, rank, world, drop_last, resume)
        # A generator of its own: creating the iterator then draws no global random number,
        # so the model's random stream (dropout) is the same with or without a restart.
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          generator=g, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        resume = None
        if self._resume:
            s, self._resume = self._resume, None
            _, world = self._rank_world()
            if s["batches_done"] >= s["n_batches"]:
                resume = (s["epoch"] + 1, 0)
            else:
                done = s["batches_done"] * s["samples_per_batch"]
                if s["samples_per_batch"] != self.batch_size * world:
                    warnings.warn(f"resuming with {self.batch_size * world} samples per step instead of "
                                  f"{s['samples_per_batch']}: the rest of epoch {s['epoch']} is approximate",
                                  stacklevel=2)
                resume = (s["epoch"], done // world)
        return self._loader(self.splits.train, shuffle=True, drop_last=True, resume=resume)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.splits.val, False, False) if self.splits.val is not None else []

    def test_dataloader(self) -> DataLoader | list:
        return self._loader(self.splits.test, False, False) if self.splits.test is not None else []

    # -- where the epoch was, saved with every checkpoint -----------------------------------------
    def state_dict(self) -> dict:
        t = self.trainer
        if t is None or t.state.fn != "fit":
            return {}
        _, world = self._rank_world()
        return {"epoch": int(t.current_epoch),
                "batches_done": int(t.fit_loop.epoch_loop.batch_progress.current.processed),
                "n_batches": int(t.num_training_batches),
                "samples_per_batch": self.batch_size * world}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state) if state else None
