"""scripts/make_foreign_pairs.py: the independent degradation behind benchmarks/suites/foreign.yaml.

The suite is only worth having if its pipeline really is another one (it must not call nightflow's synthesis)
and does what its docstring says: a pure exposure in linear light with a 2.2 power, blur + decimation, the same
draws at every scale.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make_foreign_pairs.py"


def _module():
    spec = importlib.util.spec_from_file_location("make_foreign_pairs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    m = _module()
    source = tmp_path_factory.mktemp("source")
    rng = np.random.default_rng(0)
    for i, name in enumerate(m.PHOTOS):
        side = 800 if i == 1 else 400  # one photo large enough to be box-downscaled first
        base = rng.uniform(60, 220, size=(side // 8, side // 8, 3))
        img = np.kron(base, np.ones((8, 8, 1))).astype(np.uint8)  # blocks: blur and decimation show
        Image.fromarray(img).save(source / name)
    out = tmp_path_factory.mktemp("foreign")
    assert m.main(["--source", str(source), "--out", str(out)]) == 0
    return m, out


def test_the_pipeline_imports_nothing_from_nightflow():
    imports = [
        line.split()[1] for line in SCRIPT.read_text().splitlines() if line.startswith(("import ", "from "))
    ]
    assert "numpy" in imports and not any(name.split(".")[0] == "nightflow" for name in imports)


def test_pairs_have_the_sizes_and_shared_targets(made):
    m, out = made
    for name in m.PHOTOS:
        stem = Path(name).stem
        high = {s: np.asarray(Image.open(out / f"x{s}" / "high" / f"{stem}.png")) for s in m.SCALES}
        for s in m.SCALES:
            low = np.asarray(Image.open(out / f"x{s}" / "low" / f"{stem}.png"))
            assert high[s].shape == (m.CROP, m.CROP, 3) and low.shape == (m.CROP // s, m.CROP // s, 3)
            assert np.array_equal(high[s], high[1])  # one target per photo
    meta = json.loads((out / "SOURCES.json").read_text())
    assert [p["name"] for p in meta["photos"]] == [Path(n).stem for n in m.PHOTOS]
    evs = [p["ev"] for p in meta["photos"]]
    assert all(m.EV_RANGE[0] <= ev <= m.EV_RANGE[1] for ev in evs) and len(set(evs)) == len(evs)


def test_the_dark_input_is_the_target_darkened_in_linear_light(made):
    m, out = made
    meta = {p["name"]: p for p in json.loads((out / "SOURCES.json").read_text())["photos"]}
    for stem, draw in meta.items():
        low, high = (
            (np.asarray(Image.open(out / "x1" / sub / f"{stem}.png")) / 255.0) ** m.GAMMA
            for sub in ("low", "high")
        )
        ratio = low.mean() / high.mean()
        # zero-mean noise on ~147k pixels: the mean keeps the exposure within a few per cent
        assert ratio == pytest.approx(2.0 ** draw["ev"], rel=0.08), stem


def test_the_blur_is_a_normalised_symmetric_gaussian():
    m = _module()
    assert m.gaussian_blur(np.ones((9, 9, 3)), 1.0) == pytest.approx(np.ones((9, 9, 3)))  # kernel sums to 1
    step = np.zeros((1, 20, 3))
    step[:, 10:] = 1.0
    blurred = m.gaussian_blur(np.repeat(step, 5, axis=0), 1.0)[2, :, 0]
    assert 0.0 < blurred[9] < 0.5 < blurred[10] < 1.0  # a blurred step, symmetric about the edge
    assert blurred[9] + blurred[10] == pytest.approx(1.0)
