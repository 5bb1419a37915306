"""Error types for user mistakes: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad path, bad config key, wrong scale): never shown as a traceback."""


class ConfigError(UserError, ValueError):
    """A config file or override names an unknown key or a value of the wrong type."""


class ImageValueError(UserError, ValueError):
    """An image of the wrong shape, size or values (NaN, wrong channel count): a ValueError with one line."""
