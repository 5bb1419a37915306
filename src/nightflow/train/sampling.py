"""Data order for training: which items each rank loads in which step, and with which random draws.

Why: an exactly resumed run, and a DDP run equal to a single-process one, need the batch of global step k to be
the same samples with the same augmentation whatever the number of ranks or loader workers, and whether or not
the run was interrupted.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A seed that depends only on (run seed, epoch, item index)."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + index) % (2**63 - 1)


class PerItemSeeded(Dataset):
    """Wraps a dataset so each item is produced with the global RNGs seeded from (seed, epoch, index).

    Augmentations drawn from the global torch/numpy/python RNGs then no longer depend on which process or worker
    loads the item, or on what it loaded before; the caller's RNG states are restored afterwards, so loading
    data never disturbs the training stream.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
        s = item_seed(self.seed, self.epoch, int(index))
        torch.default_generator.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(torch_state)
            np.random.set_state(np_state)
            random.setstate(py_state)


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch.

    Why: an exactly resumed run must continue with the very next batch of the interrupted epoch without
    loading (and paying for) the batches it skips. The permutation depends only on (seed, epoch), and rank r
    takes every world_size-th index, so a global batch covers the same samples for any number of ranks.
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of this rank's share for the current epoch only."""
        self.start = start

    def __iter__(self):  # type: ignore[override]
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start
