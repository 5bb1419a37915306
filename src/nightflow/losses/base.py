"""The loss-term interface: what a term needs from the batch, what it reads from the model, how terms combine.

A training loss is a list of registered terms with weights (``losses:`` in a model config). The model computes
a :class:`ForwardOutputs` for the batch, whose fields (NLL, the mean-path image, the predicted colour map, the
exposure estimate, …) are computed *lazily*: only the fields a selected term reads are ever computed, so a
config without an ``l1`` term never runs the flow's reverse pass, and one without ``nll`` never runs the
forward one. :class:`LossSet` checks the batch keys every term needs (one-line error naming the key and the
term), evaluates the terms in the listed order and sums ``weight · value`` into ``total``.

Weight 0 means *monitored*: the term is computed without gradient and logged, but adds nothing to ``total``
(the sequential cascade's end-to-end ``l1`` is one: what evaluation sees, not what trains it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import Registry

# every field a model may fill in ForwardOutputs, with what it means (models list the ones they compute)
OUTPUT_FIELDS: dict[str, str] = {
    "nll": "mean negative log-likelihood of the target given the input, bits/dim, dequantised (flows)",
    "prediction": "the deterministic restoration on the target's grid, unclamped (flows: the reverse pass at "
    "the prior mean; regression: the head's output; sequential: the cascade)",
    "target": "the HR target on the grid the model compares against (flows: replicate-padded as the input)",
    "color_map": "the predicted HR colour-ratio map on the target's grid (None: the encoder predicts none)",
    "exposure_estimate": "the exposure head's estimate in EV per image (None: no exposure head)",
    "log2_gain": "the exposure gain in EV applied to the input (training: the batch's oracle gain)",
    "input": "the low-light input on the grid the model restores it on (flows: replicate-padded)",
    "auto_log2_gain": "the scene's target-free auto exposure in EV per image (context.auto_log2_gain)",
    "pseudo_nll": "NLL, bits/dim, of a brightened neighbour sub-image of the input given the other one "
    "(losses.selfsup: self-supervised pseudo-pairs)",
    "pseudo_prediction": "the mean-path restoration of the first neighbour sub-image (padded grid)",
    "pseudo_target": "the second neighbour sub-image brightened by the auto exposure (padded grid)",
    "pseudo_gap": "the full-size restoration's difference between the pseudo-pair's two cell choices",
    "enhanced": "sequential: the enhancement net's LR output",
    "enhance_target": "sequential: the area-downscaled target the enhancement net learns",
    "sr_of_target": "sequential: the SR net applied to the clean downscaled target",
}


class ForwardOutputs:
    """What a model computed for one batch; each field is computed on first access, then kept.

    A model builds it from one zero-argument function per field it can compute (names in ``OUTPUT_FIELDS``);
    fields it cannot compute are absent (reading one is a programming error). ``batch`` is the batch itself.
    """

    def __init__(self, batch: Mapping[str, Any], producers: Mapping[str, Callable[[], Any]]) -> None:
        unknown = sorted(set(producers) - set(OUTPUT_FIELDS))
        if unknown:
            raise TypeError(f"unknown forward output(s) {unknown}; known: {', '.join(OUTPUT_FIELDS)}")
        self.batch = batch
        self._producers = dict(producers)
        self._values: dict[str, Any] = {}

    def provides(self, name: str) -> bool:
        """Whether the model can compute field ``name`` (it may still be None on this model)."""
        return name in self._producers

    def computed(self, name: str) -> bool:
        """Whether field ``name`` has been computed already (for tests and for sharing work)."""
        return name in self._values

    def get(self, name: str) -> Any:
        if name not in self._values:
            if name not in self._producers:
                raise KeyError(
                    f"this model computes no '{name}' output (it computes: {', '.join(self._producers)})"
                )
            self._values[name] = self._producers[name]()
        return self._values[name]

    @property
    def nll(self) -> Tensor:
        """Mean NLL in bits/dim of the (dequantised) target given the input (flows)."""
        return self.get("nll")

    @property
    def prediction(self) -> Tensor:
        """The model's deterministic restoration on the target's grid, unclamped."""
        return self.get("prediction")

    @property
    def target(self) -> Tensor:
        """The HR target on the grid the model compares against."""
        return self.get("target")

    @property
    def color_map(self) -> Tensor | None:
        """The predicted HR colour-ratio map on the target's grid, or None."""
        return self.get("color_map")

    @property
    def exposure_estimate(self) -> Tensor | None:
        """The exposure head's estimate (EV, one per image), or None without a head."""
        return self.get("exposure_estimate")

    @property
    def log2_gain(self) -> Tensor | None:
        """The exposure gain (EV, one per image) applied to the input: the oracle gain in training."""
        return self.get("log2_gain")

    @property
    def enhanced(self) -> Tensor:
        return self.get("enhanced")

    @property
    def enhance_target(self) -> Tensor:
        return self.get("enhance_target")

    @property
    def sr_of_target(self) -> Tensor:
        return self.get("sr_of_target")


class LossTerm:
    """One registered loss term (``@LOSSES.register("name")`` on a subclass).

    ``key``: the name it is logged under (``log.csv`` column; the registry name unless set);
    ``needs``: batch keys it needs, each a key or a tuple of alternatives (any one of them suffices);
    ``reads``: the :class:`ForwardOutputs` fields it reads (a model kind that computes none of them cannot use it);
    ``optional``: skipped (neither logged nor added) on a model whose output it reads is None on this model
    (``exposure`` without an exposure head, ``color_map_l1`` without a predicted colour map).
    """

    key: ClassVar[str | None] = None
    needs: ClassVar[tuple[str | tuple[str, ...], ...]] = ()
    reads: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def log_key(self) -> str:
        return self.key or self.name

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor | None:
        """A scalar tensor (None only for an optional term whose input this model lacks)."""
        raise NotImplementedError

    def available(self, out: ForwardOutputs) -> bool:
        """Whether this model instance computes everything the term reads (always true of non-optional terms)."""
        return all(out.get(name) is not None for name in self.reads)

    def missing_keys(self, batch: Mapping[str, Any]) -> list[str | tuple[str, ...]]:
        return [need for need in self.needs if not _has(batch, need)]

    def __repr__(self) -> str:
        return f"<loss term {self.name}>"


LOSSES: Registry[type[LossTerm]] = Registry("loss term")


def _has(batch: Mapping[str, Any], need: str | tuple[str, ...]) -> bool:
    keys = (need,) if isinstance(need, str) else need
    return any(batch.get(k) is not None for k in keys)


def _describe(need: str | tuple[str, ...]) -> str:
    if isinstance(need, str):
        return f"batch key '{need}'"
    return "batch key " + " or ".join(f"'{k}'" for k in need)


class MissingBatchKeyError(ConfigError):
    """A selected loss term needs a batch key the data does not provide (e.g. ``hq`` on unpaired data)."""


@dataclass
class LossSpec:
    """One entry of a model config's ``losses:`` list: a registered term and its weight (0 = logged only)."""

    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        LOSSES.get(self.name, "losses")  # ConfigError listing the known terms
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight < 0:
            raise ConfigError(
                f"losses: weight of '{self.name}' must be a finite number >= 0, got {self.weight!r}"
            )
        self.weight = float(self.weight)


def check_losses(specs: Sequence[LossSpec], provides: Sequence[str], kind: str) -> None:
    """Config-time checks of a ``losses`` list for a model kind computing the outputs ``provides``: each term
    at most once, every term readable by this kind, at least one weighted term (one-line ConfigErrors)."""
    seen: set[str] = set()
    usable = [n for n, cls in LOSSES.items() if set(cls.reads) <= set(provides)]
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"losses: '{spec.name}' is listed twice; give each term once with its weight")
        seen.add(spec.name)
        cls = LOSSES.get(spec.name, "losses")
        lacking = [r for r in cls.reads if r not in provides]
        if lacking:
            raise ConfigError(
                f"losses: term '{spec.name}' reads the model's {', '.join(lacking)}, which a {kind} model does "
                f"not compute; terms for {kind} models: {', '.join(usable)}"
            )
    if not any(spec.weight > 0 for spec in specs):
        raise ConfigError(
            f"losses: no term has a weight > 0, so nothing would train; terms for {kind} models: {', '.join(usable)}"
        )


def weighted(specs: Sequence[LossSpec], *names: str) -> bool:
    """Whether any of the terms ``names`` is listed with a weight > 0."""
    return any(spec.name in names and spec.weight > 0 for spec in specs)


class LossSet:
    """The bound terms of a ``losses`` list: checks a batch, evaluates the terms, sums the weighted total."""

    def __init__(self, specs: Sequence[LossSpec]) -> None:
        self.terms: list[tuple[LossTerm, float]] = [
            (LOSSES.get(spec.name, "losses")(spec.name), float(spec.weight)) for spec in specs
        ]

    @property
    def names(self) -> list[str]:
        return [term.name for term, _ in self.terms]

    def check_batch(self, batch: Mapping[str, Any], out: ForwardOutputs | None = None) -> None:
        """One-line MissingBatchKeyError for the first term lacking a batch key. Optional terms are checked
        only where they apply (with ``out``: on this model; without: not at all, the loss checks them)."""
        for term, _ in self.terms:
            missing = term.missing_keys(batch)
            if not missing:
                continue
            if term.optional and (out is None or not term.available(out)):
                continue
            have = ", ".join(sorted(k for k, v in batch.items() if v is not None)) or "none"
            raise MissingBatchKeyError(
                f"loss term '{term.name}' needs {_describe(missing[0])}, which this batch lacks (it has: {have}); "
                f"train on data that provides it (paired data has 'hq'), or drop '{term.name}' from model.losses"
            )

    def __call__(self, out: ForwardOutputs, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """{logged key: value} in the listed order, then ``total`` = Σ weight·value over the weighted terms
        (monitored weight-0 terms are computed after them, without gradient)."""
        self.check_batch(batch, out)
        values: dict[str, Tensor] = {}
        total: Tensor | None = None
        for term, weight in self.terms:
            if weight > 0:
                value = self._value(term, out, batch)
                if value is not None:
                    values[term.name] = value
                    total = weight * value if total is None else total + weight * value
        with torch.no_grad():
            for term, weight in self.terms:
                if weight == 0:
                    value = self._value(term, out, batch)
                    if value is not None:
                        values[term.name] = value.detach()
        if total is None:
            raise ConfigError(
                f"none of the weighted loss terms ({', '.join(t.name for t, w in self.terms if w > 0)}) applies "
                "to this model; add one it computes to model.losses"
            )
        terms = {term.log_key: values[term.name] for term, _ in self.terms if term.name in values}
        terms["total"] = total
        return terms

    @staticmethod
    def _value(term: LossTerm, out: ForwardOutputs, batch: Mapping[str, Any]) -> Tensor | None:
        if term.optional and not term.available(out):
            return None
        return term(out, batch)


def check_batch_for(model: Any, batch: Mapping[str, Any]) -> None:
    """The batch-key check of ``model``'s configured losses (models without a ``losses`` list: nothing), for
    callers that want the one-line error before any work (the trainer, on its first batch)."""
    specs = getattr(getattr(model, "cfg", None), "losses", None)
    if specs:
        LossSet(specs).check_batch(batch)


# ----------------------------------------------------------------------------------------------- legacy keys
# (term, retired key or None for a fixed weight, default weight, keep the entry when its weight is 0)
LegacyRule = tuple[str, str | None, float, bool]


def upgrade_loss_weights(
    data: Mapping[str, Any], path: str, rules: Sequence[LegacyRule]
) -> Mapping[str, Any]:
    """A stored config written before ``losses`` existed (``l1_weight: 1.5``, …) with its retired weight keys
    replaced by the equivalent ``losses`` list; configs without retired keys are returned unchanged.

    The list reproduces what the hard-wired losses computed: a term whose weight was 0 was skipped unless
    ``keep`` (then it is a logged, weight-0 entry, as the old code logged it)."""
    retired = [old for _, old, _, _ in rules if old is not None and old in data]
    if not retired:
        return data
    where = f"{path}: " if path else ""
    if "losses" in data:
        raise ConfigError(
            f"{where}give either 'losses' or the retired {', '.join(retired)} (converted to losses on load), "
            "not both"
        )
    losses = []
    for term, old, default, keep in rules:
        weight = default if old is None else data.get(old, default)
        if isinstance(weight, str):
            try:
                weight = float(weight)
            except ValueError:
                pass
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{where}{old}: expected a number, got {weight!r}")
        if weight < 0:
            raise ConfigError(f"{where}{old} must be >= 0, got {weight}")
        if weight > 0 or keep:
            losses.append({"name": term, "weight": float(weight)})
    out = {k: v for k, v in data.items() if k not in retired}
    out["losses"] = losses
    return out
