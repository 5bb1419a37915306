"""Which parameters a run trains (``train.trainable``): glob patterns on parameter names, the rest frozen.

Why: a layer added to trained weights (``flow.straddle``'s couplings start as the identity) can be trained on its
own, so what the rest of the model computed stays exactly as it was and any change is the new layer's.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from ..errors import UserError


def freeze_except(model: nn.Module, patterns: Sequence[str]) -> tuple[int, int]:
    """Leave ``requires_grad`` on only for parameters whose name matches one of ``patterns`` (fnmatch, case
    sensitive); returns (trainable, frozen) tensor counts. A pattern that matches nothing is a one-line error,
    so a typo never trains nothing (or everything) in silence."""
    names = [name for name, _ in model.named_parameters()]
    unused = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unused:
        example = next((n for n in names if "." in n), names[0] if names else "")
        raise UserError(
            f"train.trainable: {unused[0]!r} matches no parameter of the model (names look like {example!r})"
        )
    trainable = 0
    for name, param in model.named_parameters():
        keep = any(fnmatchcase(name, p) for p in patterns)
        param.requires_grad_(keep)
        trainable += keep
    return trainable, len(names) - trainable
