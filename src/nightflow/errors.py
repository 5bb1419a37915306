"""Error types for user mistakes: the CLI prints their message on one line and exits with code 2.

Why the double bases: Python callers catch the standard kind (``FileNotFoundError``, ``ValueError``, ``OSError``)
without knowing nightflow's types, while the CLI catches every ``UserError`` and prints it on one line.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad path, bad config key, wrong scale): never shown as a traceback."""


class ConfigError(UserError, ValueError):
    """A config file or override names an unknown key or a value of the wrong type."""


class ImageValueError(UserError, ValueError):
    """An image of the wrong shape, size or values (NaN, wrong channel count): a ValueError with one line."""


class SettingError(UserError, ValueError):
    """A setting out of range (temperature, seed, tile, pixel limit): a ValueError naming the allowed range."""


class ModelNotFoundError(UserError, FileNotFoundError):
    """A checkpoint path that does not exist, or a zoo name without weights: a FileNotFoundError."""


class UnknownModelError(UserError, ValueError):
    """A model name that is neither in the zoo nor a path: a ValueError listing where to look."""


class WeightsError(UserError, ValueError):
    """A weights or checkpoint file that is corrupt, tampered with or does not match its config."""


class OutputError(UserError, OSError):
    """An output that cannot be written (unwritable folder, full disk, read-only filesystem): an OSError."""


class StaleOutputError(UserError):
    """An existing output was made from another input or with other settings; kept, and this image refused."""


class NonFiniteOutputError(UserError, ArithmeticError):
    """The model produced NaN/inf for an image: nothing is written rather than a black or garbage image."""


class ResourceLimitError(UserError, MemoryError):
    """An image too large for the pixel limit or for the memory left: refused before or instead of the work."""
