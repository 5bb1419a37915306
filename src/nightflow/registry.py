"""One registry mechanism for everything nightflow looks up by name (as BasicSR and timm do).

Encoders, model kinds, losses, metrics, baselines, degradation presets and dataset formats each live in a
:class:`Registry`; a new one is a file plus one ``@REGISTRY.register("name")`` line. Lookups of unknown names
raise a one-line :class:`~nightflow.errors.ConfigError` that lists the known names, so a misspelling in a YAML
file or on the command line is never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object (a class, a builder, a (config, builder) pair …) for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what a name names, for error messages: "encoder", "loss", …
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; registering a name twice is a programming error."""
        if not name or name != name.strip():
            raise ValueError(
                f"{self.kind} name must be a non-empty string without surrounding spaces: {name!r}"
            )
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@ENCODERS.register("mpct")``."""

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def get(self, name: str, where: str = "") -> T:
        """The item named ``name``, or a ConfigError naming the key (``where``) and every known name."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            prefix = f"{where}: " if where else ""
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"{prefix}unknown {self.kind} '{name}'; choose one of: {known}") from None

    def __getitem__(self, name: str) -> T:
        """``REGISTRY[name]``: :meth:`get` without a key path (unknown names: the same one-line ConfigError)."""
        return self.get(name)

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
