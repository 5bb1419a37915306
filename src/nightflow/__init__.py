"""nightflow: restore photos taken in the dark with conditional normalizing flows.

>>> import nightflow
>>> nightflow.list_models()                  # the zoo
>>> m = nightflow.load("lolisrflow-x2")      # zoo name or checkpoint path
>>> out = m.restore(img)                     # numpy/PIL in, same kind out
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "list_models", "load"]


def load(name_or_path, device="cpu"):
    """Load a zoo model (bundled weights) or a checkpoint; returns a :class:`nightflow.api.Model`."""
    from .models.zoo import load as _load

    return _load(name_or_path, device)


def list_models(count_params: bool = True) -> list[dict]:
    """The zoo: name, aliases, scale, task, params, bundled, description."""
    from .models.zoo import list_models as _list

    return _list(count_params)
