"""Command-line conventions (issue 14 item 5): -o FILE, --quiet, --json, exit codes in --help, --version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import nightflow
from nightflow.api import Model
from nightflow.cli import SUBCOMMANDS, build_parser, main
from nightflow.data.io import read_image, read_image_text
from standin_restorer import StandInRestorer

SRC = str(Path(__file__).resolve().parents[1] / "src")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_load(monkeypatch):
    """nightflow.load returning a ×2 stand-in model; records the calls (an empty list = never loaded)."""
    calls = []

    def load(name_or_path, device="cpu"):
        calls.append(str(name_or_path))
        return Model(StandInRestorer(scale=2), {"name": str(name_or_path)})

    monkeypatch.setattr(nightflow, "load", load, raising=False)
    return calls


def _write(path: Path, dtype=np.uint8, seed: int = 0) -> Path:
    top = 255 if dtype == np.uint8 else 65535
    img = np.random.default_rng(seed).integers(0, top // 4, size=(20, 28, 3)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("nightflow enhance: error:"), err
    return err


def test_o_file_writes_that_file_with_the_same_pixels_as_the_folder_output(tmp_path, fake_load):
    src = _write(tmp_path / "in.png")
    out = tmp_path / "out.png"
    assert main(["enhance", str(src), "-o", str(out)]) == 0
    assert out.is_file()
    assert main(["enhance", str(src), "-o", str(tmp_path / "folder")]) == 0
    folder_out = tmp_path / "folder" / "in_x2.png"
    assert np.array_equal(read_image(out), read_image(folder_out))
    assert read_image(out).shape == (40, 56, 3)


@pytest.mark.parametrize(
    ("ext", "dtype", "expected"),
    [
        (".png", np.uint16, np.uint16),
        (".tif", np.uint16, np.uint16),
        (".tiff", np.uint8, np.uint8),
        (".jpg", np.uint16, np.uint8),  # JPEG holds 8 bits: the 16-bit result is written at 8
        (".jpeg", np.uint8, np.uint8),
    ],
)
def test_extension_picks_the_format_and_16_bit_is_kept_where_it_can_be(
    tmp_path, fake_load, ext, dtype, expected
):
    src = _write(tmp_path / "in.png", dtype=dtype)
    out = tmp_path / f"result{ext}"
    assert main(["enhance", str(src), "-o", str(out)]) == 0
    head = out.read_bytes()[:4]
    magic = {
        ".png": b"\x89PNG",
        ".tif": b"II*\x00",
        ".tiff": b"II*\x00",
        ".jpg": b"\xff\xd8\xff",
        ".jpeg": b"\xff\xd8\xff",
    }
    assert head[: len(magic[ext])] == magic[ext]
    assert read_image(out).dtype == expected
    record = json.loads(read_image_text(out)["nightflow"])
    assert record["role"] == "main" and record["input"] == "in.png"


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_o_file_keeps_stale_output_records(tmp_path, fake_load, capsys, ext):
    src = _write(tmp_path / "in.png")
    out = tmp_path / f"out{ext}"
    assert main(["enhance", str(src), "-o", str(out), "--temperature", "0.5", "--seed", "1"]) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert main(["enhance", str(src), "-o", str(out), "--temperature", "0.5", "--seed", "1"]) == 0
    assert "kept 1 already done" in capsys.readouterr().out
    assert main(["enhance", str(src), "-o", str(out), "--temperature", "0.5", "--seed", "2"]) == 2
    assert "seed 1 (now 2)" in _one_error_line(capsys)
    other = _write(tmp_path / "other.png", seed=5)
    assert main(["enhance", str(other), "-o", str(out), "--temperature", "0.5", "--seed", "1"]) == 2
    assert "from another input (in.png" in _one_error_line(capsys)
    assert out.read_bytes() == first  # refused outputs are kept as they were
    assert main(["enhance", str(other), "-o", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != first


def test_o_file_puts_samples_and_heat_maps_beside_it(tmp_path, fake_load):
    src = _write(tmp_path / "in.png", dtype=np.uint16)
    out = tmp_path / "sub" / "night.tif"
    argv = ["enhance", str(src), "-o", str(out), "--samples", "2", "--uncertainty", "--uncertainty-raw"]
    assert main(argv) == 0
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == [
        "night.tif",
        "night_s00.tif",
        "night_s01.tif",
        "night_uncertainty.tif",
        "night_uncertainty16.tif",
    ]
    assert read_image(out.parent / "night_s01.tif").dtype == np.uint16
    assert not np.array_equal(
        read_image(out.parent / "night_s00.tif"), read_image(out.parent / "night_s01.tif")
    )


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("out.bmp", "cannot write '.bmp' files; use .png, .tif or .jpg"),
        ("out.gif", "cannot write '.gif' files"),
        ("in.png", "is a file that is also the input"),
    ],
)
def test_o_file_refusals_are_one_line_before_loading(tmp_path, fake_load, capsys, monkeypatch, out, message):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "in.png")
    before = (tmp_path / "in.png").read_bytes()
    assert main(["enhance", "in.png", "-o", out]) == 2
    assert message in _one_error_line(capsys)
    assert fake_load == [] and (tmp_path / "in.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_o_file_with_several_inputs_is_refused(tmp_path, fake_load, capsys):
    _write(tmp_path / "a.png")
    _write(tmp_path / "b.png", seed=1)
    assert (
        main(["enhance", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "o.png")])
        == 2
    )
    assert "names one file but 2 images were given; use -o FOLDER" in _one_error_line(capsys)
    assert main(["enhance", str(tmp_path), "-o", str(tmp_path / "o.jpg")]) == 2  # a folder of two
    assert "2 images" in _one_error_line(capsys)
    assert fake_load == [] and not (tmp_path / "o.png").exists()


def test_trailing_separator_and_existing_folder_mean_a_folder(tmp_path, fake_load):
    src = _write(tmp_path / "in.png")
    assert main(["enhance", str(src), "-o", str(tmp_path / "out.png") + os.sep]) == 0
    assert (tmp_path / "out.png" / "in_x2.png").is_file()
    (tmp_path / "shots.tif").mkdir()
    assert main(["enhance", str(src), "-o", str(tmp_path / "shots.tif")]) == 0
    assert (tmp_path / "shots.tif" / "in_x2.png").is_file()


def test_quiet_prints_nothing_on_success_and_the_error_on_failure(tmp_path, fake_load, capsys):
    src = _write(tmp_path / "in.png")
    (tmp_path / "sub").mkdir()  # a subfolder would normally print a note
    assert main(["enhance", str(tmp_path), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert (tmp_path / "out" / "in_x2.png").is_file()
    assert main(["enhance", str(src), "-o", str(tmp_path / "x.webp"), "--quiet"]) == 2
    assert "cannot write '.webp'" in _one_error_line(capsys)


def test_json_summary_on_stdout(tmp_path, fake_load, capsys):
    src = _write(tmp_path / "in.png")
    out = tmp_path / "out.png"
    assert main(["enhance", str(src), "-o", str(out), "--samples", "1", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["ok"] is True and doc["scale"] == 2 and doc["written"] == 1 and doc["files_written"] == 2
    (image,) = doc["images"]
    assert image["input"] == str(src) and image["status"] == "written"
    assert image["written"] == [str(out), str(tmp_path / "out_s00.png")]
    assert all(Path(p).is_file() for p in image["written"])
    assert "wrote 2 file(s)" in captured.err  # the human line moves to stderr
    assert main(["enhance", str(src), "-o", str(out), "--samples", "1", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert again["images"][0]["status"] == "kept" and again["files_written"] == 0 and captured.err == ""


def test_json_reports_failed_and_refused_images_and_exits_2(tmp_path, fake_load, capsys):
    good = _write(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad.png").write_bytes(b"not an image")
    assert main(["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "--quiet"]) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    status = {Path(i["input"]).name: i for i in doc["images"]}
    assert status["good.png"]["status"] == "written" and status["bad.png"]["status"] == "failed"
    assert "bad.png" in status["bad.png"]["error"] and doc["ok"] is False and doc["failed"] == 1
    assert "1 of 2 images failed" in captured.err
    assert (
        main(
            [
                "enhance",
                str(good),
                "-o",
                str(tmp_path / "out"),
                "--seed",
                "3",
                "--temperature",
                "0.5",
                "--json",
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["refused"] == 1 and doc["images"][0]["status"] == "refused"
    assert captured.err.strip().splitlines()[-1].startswith("nightflow enhance: error:")


def test_every_help_documents_the_exit_codes(capsys):
    parser = build_parser()
    assert SUBCOMMANDS
    for argv in [["--help"], *[[name, "--help"] for name in sorted(SUBCOMMANDS)]]:
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert "exit codes:" in text, argv
        for code in ("0    success", "2    user error", "1    internal error"):
            assert code in text, (argv, code)


def test_version_and_exit_codes_of_the_installed_entry_points(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC)
    run = dict(capture_output=True, text=True, env=env, timeout=120)
    version = subprocess.run([sys.executable, "-m", "nightflow", "--version"], **run)
    assert version.returncode == 0 and version.stdout.strip() == f"nightflow {nightflow.__version__}"
    user = subprocess.run(
        [sys.executable, "-m", "nightflow", "enhance", str(tmp_path / "x.png"), "-o", "y.png"], **run
    )
    assert user.returncode == 2 and len(user.stderr.strip().splitlines()) == 1
    crash = (
        "import sys, nightflow.commands.models as m\n"
        "def boom(args): raise RuntimeError('a bug')\n"
        "m.run = boom\n"
        "from nightflow.cli import main\n"
        "sys.exit(main(['models']))\n"
    )
    internal = subprocess.run([sys.executable, "-c", crash], **run)
    assert internal.returncode == 1 and "RuntimeError: a bug" in internal.stderr
