"""Golden outputs: every bundled model's output on one bundled sample is pinned (tests/golden/, written by
scripts/pin_golden.py), so a refactor that changes results fails here. Tolerance: one 8-bit level."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pin_golden", ROOT / "scripts" / "pin_golden.py")
pin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pin)  # type: ignore[union-attr]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_bundled_model_has_a_golden_output():
    names = pin.bundled_names()
    assert names
    missing = [n for n in names if not (pin.GOLDEN / f"{n}.png").is_file()]
    assert not missing, f"no golden output for {missing}: run python scripts/pin_golden.py"


@pytest.mark.parametrize("name", pin.bundled_names())
def test_bundled_output_matches_the_golden_one(name):
    want = np.asarray(Image.open(pin.GOLDEN / f"{name}.png")).astype(np.int16)
    got = pin.golden_output(name).astype(np.int16)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    assert int(diff.max()) <= 1, f"{name}: output moved by up to {int(diff.max())}/255 from the golden one"
