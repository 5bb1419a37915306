"""`pip install .` without the Makefile (issue 14 item 4): a wheel with the weights, configs and samples, that
installs into a fresh venv offline and works from a folder outside the repository.

Offline: the wheel is built with ``--no-build-isolation`` (setuptools from this venv) and installed
``--no-deps --no-index``; the fresh venv sees this venv's site-packages (torch, numpy, …) through one ``.pth``
line, which adds that folder to ``sys.path`` without running its editable-install hook, so ``import nightflow``
can only find the installed wheel.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TESTED_EXTRAS = ("dev", "onnx", "docs", "ui")  # what the Makefile installs for the tests


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    env["PIP_NO_INDEX"] = "1"  # never the network
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Build the wheel from a clean copy of the sources and install it into a fresh venv."""
    base = tmp_path_factory.mktemp("pkg")
    src = base / "source"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    # a copy: an in-tree build/ folder could carry stale modules into the wheel
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.tmp")
    )
    dist = base / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), str(src)],
        base,
    )
    (wheel,) = dist.glob("nightflow-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base
        ).stdout.strip()
    )
    deps = [sysconfig.get_paths()["purelib"], *(p for p in sys.path if p.endswith("site-packages"))]
    (site / "project-deps.pth").write_text(
        "\n".join(dict.fromkeys(deps)) + "\n"
    )  # never src/: the wheel only
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)], base)
    work = base / "elsewhere"  # not the repository, not below it
    work.mkdir()
    return {"wheel": wheel, "venv": venv, "python": python, "bin": venv / "bin", "work": work}


def test_wheel_holds_weights_configs_samples_and_tested_bounds(installed):
    with zipfile.ZipFile(installed["wheel"]) as whl:
        names = set(whl.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = whl.read(meta_name).decode()
    repo_weights = {p.name for p in (ROOT / "src/nightflow/weights").glob("*.safetensors")}
    assert repo_weights and all(f"nightflow/weights/{n}" in names for n in repo_weights)
    assert all(f"nightflow/weights/{Path(n).stem}.md" in names for n in repo_weights)
    samples = {p.name for p in (ROOT / "src/nightflow/examples").glob("*.png")}
    assert samples and all(f"nightflow/examples/{n}" in names for n in samples)
    assert "nightflow/configs/lolisrflow-x2-tiny.yaml" in names
    assert "nightflow/configs/train/lolisrflow-x2-tiny-synthetic.yaml" in names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
    requires = [
        line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")
    ]
    torch_req = next(r for r in requires if r.startswith("torch"))
    assert "<2.14" in torch_req and ">=2.13" in torch_req


def test_declared_bounds_hold_the_versions_the_tests_run_on(installed):
    """Every runtime requirement of the wheel is satisfied by what this (tested) venv has installed."""
    from pip._vendor.packaging.requirements import Requirement

    with zipfile.ZipFile(installed["wheel"]) as whl:
        meta = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    checked = 0
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        extra = req.marker is not None and "extra" in str(req.marker)
        if extra and not any(req.marker.evaluate({"extra": e}) for e in TESTED_EXTRAS):
            continue
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            assert extra, f"runtime dependency {req.name} is not installed"
            continue  # an extra this venv does without (CI's `make install` has them all)
        assert req.specifier.contains(version, prereleases=True), f"{req} does not admit the tested {version}"
        checked += 1
    assert checked >= 9 + 3 + 2 + 1  # every runtime bound, and at least the dev, onnx and docs extras


def test_installed_cli_works_from_outside_the_repository(installed):
    bin_, work = installed["bin"], installed["work"]
    where = _run([str(installed["python"]), "-c", "import nightflow; print(nightflow.__file__)"], work).stdout
    assert Path(where.strip()).is_relative_to(installed["venv"])  # the wheel, not the checkout
    version = _run([str(bin_ / "nightflow"), "--version"], work).stdout.strip()
    assert version == f"nightflow {md.version('nightflow')}"
    rows = json.loads(_run([str(bin_ / "nightflow"), "models", "--json"], work).stdout)
    bundled = {r["name"] for r in rows if r["bundled"]}
    assert {p.stem for p in (ROOT / "src/nightflow/weights").glob("*.safetensors")} <= bundled

    script = (
        "import sys, nightflow, nightflow.demo as d\n"
        "from nightflow.data.io import read_image, write_image\n"
        "s = d.samples()[0]\n"
        "print(s)\n"
        "write_image('api.png', nightflow.load('lolisrflow-x2').restore(read_image(s)))\n"
    )
    sample = Path(_run([str(installed["python"]), "-c", script], work).stdout.strip())
    assert sample.is_relative_to(installed["venv"]) and sample.name.endswith("_dark.png")
    out = _run(
        [str(bin_ / "nightflow"), "enhance", str(sample), "-o", "restored.png", "--json", "--quiet"], work
    )
    doc = json.loads(out.stdout)
    assert doc["images"][0]["written"] == ["restored.png"]
    from nightflow.data.io import read_image

    restored, api = read_image(work / "restored.png"), read_image(work / "api.png")
    assert restored.shape == (2 * read_image(sample).shape[0], 2 * read_image(sample).shape[1], 3)
    assert np.array_equal(restored, api)  # the CLI and the API of the installed package agree


def test_installed_demo_runs_from_anywhere(installed):
    work = installed["work"] / "demo"
    work.mkdir()
    proc = _run([str(installed["bin"] / "nightflow"), "demo"], work)
    made = sorted(p.name for p in (work / "demo_out").iterdir())
    assert "before_after.png" in made and any(n.endswith("_x4.png") for n in made), proc.stdout
    # the hint lets enhance choose per file (a JPEG gets the JPEG variant), so it must not force --model
    hint = next(line for line in proc.stdout.splitlines() if line.startswith("try it on your photos"))
    assert "nightflow enhance PHOTO.jpg" in hint and "--model" not in hint
    proc = _run([str(installed["python"]), "-m", "nightflow.demo", "-o", "again"], work)
    assert (work / "again" / "before_after.png").is_file() and "before/after figure: again" in proc.stdout
