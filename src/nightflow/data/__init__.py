"""Data layer: image files (``io``), low-light synthesis (``degrade``, ``synth``), datasets (``datasets``).

Submodules are imported on use so that ``import nightflow.data.io`` stays light.
"""

from __future__ import annotations

__all__ = ["datasets", "degrade", "io", "synth", "transforms"]
