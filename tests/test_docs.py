"""The docs (issue 14 item 6): `make docs` builds the API reference offline and the zoo page from the model cards;
the tutorial's commands and flags exist; the metrics page names every metric; the README links them all."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nightflow.cli import build_parser
from nightflow.metrics import list_metrics
from nightflow.models.zoo import WEIGHTS_DIR, config_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _api_modules() -> list[str]:
    """The module list of the Makefile's docs target (so this test checks what `make docs` runs)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("API_MODULES"))
    return line.split(":=", 1)[1].split()


@pytest.mark.slow
def test_api_reference_builds_offline_with_the_makefile_modules(tmp_path):
    modules = _api_modules()
    assert {"nightflow", "nightflow.api", "nightflow.export", "nightflow.ui"} <= set(modules)
    cmd = [sys.executable, "-m", "pdoc", "--no-search", "--no-show-source", "-o", str(tmp_path), *modules]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "NO_PROXY": "*"}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    api = (tmp_path / "nightflow" / "api.html").read_text()
    assert "Restored image" in api and "nightflow.load" in api  # Model.restore's docstring, rendered
    assert (tmp_path / "nightflow" / "export.html").is_file() and (tmp_path / "index.html").is_file()
    assert "onnx" in (tmp_path / "nightflow" / "export.html").read_text().lower()


def test_zoo_page_is_made_from_the_cards():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from write_zoo_doc import zoo_markdown
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    page = zoo_markdown()
    assert all(f"`{name}`" in page for name in config_names())
    cards = sorted(WEIGHTS_DIR.glob("*.md"))
    assert cards
    for card in cards:
        body = [l for l in card.read_text(encoding="utf-8").splitlines() if l and not l.startswith("#")]
        assert body[0] in page  # the card's own text, under a shifted heading
        assert f"## {card.stem}" in page
    committed = (DOCS / "zoo.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in committed for name in config_names())


def _commands(markdown: str) -> list[list[str]]:
    """``nightflow ...`` command lines in the code blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)
    out = []
    for line in "\n".join(b.replace("\\\n", " ") for b in blocks).splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("nightflow "):
            out.append(line.split())
    return out


def test_tutorial_commands_and_flags_exist():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    commands = _commands((DOCS / "tutorial.md").read_text(encoding="utf-8"))
    assert len(commands) >= 15
    seen = set()
    for words in commands:
        name = words[1]
        if name.startswith("-"):
            assert name in parser._option_string_actions, words
            continue
        assert name in subparsers, f"tutorial uses unknown command {name}"
        flags = {w.split("=")[0] for w in words[2:] if w.startswith("-")}
        unknown = flags - set(subparsers[name]._option_string_actions)
        assert not unknown, f"`nightflow {name}` has no {unknown}"
        seen.add(name)
    assert {"enhance", "train", "eval", "export", "demo", "ui", "synth"} <= seen


def test_metrics_page_names_every_metric_and_gt_mean():
    page = (DOCS / "metrics.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in page for name in list_metrics())
    assert "--gt-mean" in page and "mean path" in page


def test_readme_links_the_docs_and_the_screenshot():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in ("docs/tutorial.md", "docs/zoo.md", "docs/metrics.md", "docs/ui.png"):
        assert f"({target})" in readme and (ROOT / target).is_file(), target
    assert "make docs" in readme
