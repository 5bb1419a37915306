"""One seed derivation for every random draw at inference and evaluation time.

Why one: the API, the CLI, the web UI, evaluation and validation each used to turn a seed into a generator their
own way (the seed itself, a SeedSequence of (seed, index), one generator for a whole validation set), so the
same image and seed could give different samples depending on the front end. Here:

- ``derive(seed)`` is the seed itself, so ``seed=3`` in the API, ``--seed 3`` in the CLI and the web UI's seed 3
  draw the very same noise (``torch.Generator().manual_seed(3)``);
- ``derive(seed, *keys)`` (e.g. the image index in a dataset) mixes the keys in with NumPy's ``SeedSequence``, so
  the noise of item ``i`` depends on (seed, i) only, never on the order items are processed in;
- ``generator(seed, *keys, device=)`` is a generator seeded with ``derive(seed, *keys)``; noise is drawn on the CPU
  by default, so a seed means the same samples on every device.

Nothing here touches the global RNGs (training data loading seeds those per item: see ``train/sampling.py``).
"""

from __future__ import annotations

import numpy as np
import torch

SEED_MAX = 2**64 - 1  # what torch.Generator.manual_seed accepts


def derive(seed: int, *keys: int) -> int:
    """A seed in 0..2**63-1 that depends on (seed, keys) only; without keys, ``seed`` itself."""
    seed = int(seed)
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be in 0..{SEED_MAX}, got {seed}")
    if not keys:
        return seed
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seed keys must be >= 0, got {keys}")
    state = np.random.SeedSequence([seed, *(int(k) for k in keys)]).generate_state(2)
    return int(state[0]) << 31 | int(state[1]) >> 1


def generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (CPU by default) seeded with ``derive(seed, *keys)``."""
    return torch.Generator(device=device).manual_seed(derive(seed, *keys))
