"""Training losses as registered terms (``LOSSES``), each naming the batch keys it needs.

A model config lists its terms and weights::

    losses:
      - {name: nll, weight: 1.0}
      - {name: l1, weight: 1.5}       # 0 = logged only
      - {name: exposure, weight: 0.1}

The model fills a lazy :class:`ForwardOutputs` for the batch and :class:`LossSet` evaluates the listed terms
(see ``docs/design.md``, "Losses"). Stored configs from before ``losses`` existed (``l1_weight``,
``color_weight``, ``exposure_weight``, ``enhance_weight``, ``sr_weight``) are converted on load
(:func:`upgrade_loss_weights`).
"""

from __future__ import annotations

from . import selfsup as _selfsup  # noqa: F401  (registers the self-supervised terms)
from . import terms as _terms  # noqa: F401  (registers the built-in terms)
from .base import (
    LOSSES,
    OUTPUT_FIELDS,
    ForwardOutputs,
    LossSet,
    LossSpec,
    LossTerm,
    MissingBatchKeyError,
    check_batch_for,
    check_losses,
    upgrade_loss_weights,
    weighted,
)

__all__ = [
    "LOSSES",
    "OUTPUT_FIELDS",
    "ForwardOutputs",
    "LossSet",
    "LossSpec",
    "LossTerm",
    "MissingBatchKeyError",
    "check_batch_for",
    "check_losses",
    "upgrade_loss_weights",
    "weighted",
]
