"""Write a zoo model's weight facts (``zoo.WEIGHT_FACTS``: bf16_inference, tile_margin, sample_temperature) from its
YAML into its bundled weights file, tensors untouched.

Why: the facts are measured on the weights after they are bundled (``pytest -s tests/test_precision.py``,
``scripts/measure_tiling.py``, the temperature suites), then written into ``configs/<name>.yaml``; the file must
store the same config, because ``nightflow.load`` builds the model from the file (``tests/test_models.py`` checks
that they agree). Any other difference between the two configs is an error: that would be another architecture.

    python scripts/store_weight_facts.py uptflow-tiny
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from safetensors.torch import load_file, save_file

from nightflow.config import to_dict
from nightflow.errors import ConfigError
from nightflow.models import zoo
from nightflow.models.checkpoint import CONFIG_KEY, load_config, read_metadata


def store_facts(name: str) -> list[str]:
    """Rewrite ``name``'s bundled file with its zoo config's weight facts; the facts that changed, sorted."""
    path = zoo.weights_path(name)
    if not path.is_file():
        raise ConfigError(f"{name}: no bundled weights at {path}")
    stored = to_dict(load_config(path))
    try:
        stamped = zoo.with_weight_facts(stored, name)
    except ConfigError as exc:
        raise ConfigError(
            f"{path}: {exc}, which are not weight facts; bundle the weights again instead"
        ) from None
    differ = sorted(k for k in stamped if stamped[k] != stored.get(k))
    if differ:
        meta = dict(read_metadata(path))
        meta[CONFIG_KEY] = json.dumps(stamped)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(load_file(str(path)), str(tmp), metadata=meta)
        os.replace(tmp, path)
    return differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", help="zoo name or alias with bundled weights, e.g. uptflow-tiny")
    args = parser.parse_args(argv)
    try:
        changed = store_facts(zoo.canonical(args.name))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        f"{args.name}: {', '.join(changed) + ' written' if changed else 'the file already stores these facts'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
