"""nightflow: restore photos taken in the dark with conditional normalizing flows."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
