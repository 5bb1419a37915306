"""`nightflow synth` and scripts/fetch_photos.py: RELLISUR layout, determinism, resume, no overwrites."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nightflow.cli import main
from nightflow.data.datasets import RellisurDataset
from nightflow.data.degrade import downscale, linear_to_srgb, srgb_to_linear
from nightflow.data.io import read_image, read_image_size, to_tensor, write_image
from nightflow.data.layouts import parse_rellisur_name

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def photos(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    src = tmp_path / "photos"
    for name, (h, w) in {"b.png": (34, 41), "a.jpg": (32, 32), "c.png": (24, 36)}.items():
        write_image(src / name, rng.integers(20, 230, size=(h, w, 3), dtype=np.uint8))
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def synth(*args: str) -> int:
    return main(["synth", *map(str, args), "--no-progress"])


def test_synth_twice_with_one_seed_gives_identical_files(photos, tmp_path):
    assert synth(photos, tmp_path / "a", "--seed", "7", "--ev", "-4.5,-2.5") == 0
    assert synth(photos, tmp_path / "b", "--seed", "7", "--ev", "-4.5,-2.5") == 0
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 3 * (1 + 3 + 3) and a == b
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert ma == mb
    assert synth(photos, tmp_path / "c", "--seed", "8", "--ev", "-4.5,-2.5") == 0
    c = _files(tmp_path / "c")
    assert c.keys() != a.keys() or any(c[k] != a[k] for k in a if k.startswith("LLLR"))


def test_rellisur_layout_sizes_and_manifest(photos, tmp_path):
    out = tmp_path / "out"
    assert synth(photos, out, "--scales", "1,2,4", "--ev", "-4.5,-2.5", "--seed", "1") == 0
    lllr = sorted((out / "LLLR").iterdir())
    assert [p.name.split("-")[0] for p in lllr] == ["00001", "00002", "00003"]  # a.jpg, b.png, c.png
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"] == {"00001": "a.jpg", "00002": "b.png", "00003": "c.png"}
    for path in lllr:
        scene, _, ev = parse_rellisur_name(path.stem)
        assert -4.5 <= ev <= -2.5
        h, w = read_image_size(path)
        for s in (1, 2, 4):
            target = out / "NLHR" / f"X{s}" / f"{scene}.png"
            assert read_image_size(target) == (h * s, w * s)
            assert (out / "NLHR-Duplicates" / f"X{s}" / path.name).read_bytes() == target.read_bytes()
        entry = manifest["items"][scene]["lllr"][0]
        assert entry["name"] == path.name and isinstance(entry["seed"], int)
        params = entry["params"]
        assert (
            params["ev"] == ev
            and params["scale"] == 4
            and params["shot_noise"] > 0
            and params["seed"] == entry["seed"]
        )
    # b.png is 34×41: cropped to 32×40 (multiple of 4) → LLLR 8×10
    assert read_image_size(out / "LLLR" / lllr[1].name) == (8, 10)
    x4 = to_tensor(read_image(out / "NLHR" / "X4" / "00002.png"))
    np.testing.assert_array_equal(
        read_image(out / "NLHR" / "X4" / "00002.png"), read_image(photos / "b.png")[:32, :40]
    )
    x1 = to_tensor(read_image(out / "NLHR" / "X1" / "00002.png"))
    expected = linear_to_srgb(downscale(srgb_to_linear(x4), 4))
    assert (x1 - expected).abs().max() <= 0.5 / 255 + 1e-6  # area-downscaled in linear light, 8-bit rounded
    # the RELLISUR loader reads the result at every scale
    for s in (1, 2, 4):
        ds = RellisurDataset(out, "train", s)
        item = ds[1]
        assert item["hq"].shape[-2:] == tuple(s * n for n in item["lq"].shape[-2:])
        assert item["lq"].mean() < item["hq"].mean()


def test_rerun_skips_finished_work_and_resumes_missing_files(photos, tmp_path):
    out = tmp_path / "out"
    assert synth(photos, out, "--scales", "2,4", "--seed", "3") == 0
    before = _files(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert synth(photos, out, "--scales", "2,4", "--seed", "3") == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes  # nothing rewritten
    victim = sorted((out / "LLLR").iterdir())[1]
    regen = out / "NLHR" / "X2" / "00003.png"
    victim.unlink()
    regen.unlink()
    untouched = {p: t for p, t in mtimes.items() if p not in (victim, regen)}
    assert synth(photos, out, "--scales", "2,4", "--seed", "3") == 0
    assert _files(out) == before  # the missing files come back bit-identical
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # the others are kept as they were


def test_other_settings_need_overwrite(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert synth(photos, out, "--seed", "1", "--scales", "1,2") == 0
    old = _files(out)
    assert synth(photos, out, "--seed", "2", "--scales", "1,2") == 2
    err = capsys.readouterr().err.strip()
    assert "different settings" in err and "--overwrite" in err and "\n" not in err
    assert _files(out) == old
    assert synth(photos, out, "--seed", "2", "--scales", "1,2", "--overwrite") == 0
    assert json.loads((out / "manifest.json").read_text())["settings"]["seed"] == 2


def test_a_folder_made_before_a_preset_field_existed_resumes(photos, tmp_path):
    out = tmp_path / "out"
    assert synth(photos, out, "--scales", "1", "--seed", "4") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("jpeg_prob", "jpeg_quality"):  # what an older nightflow wrote
        del manifest["settings"]["preset"][key]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert synth(photos, out, "--scales", "1", "--seed", "4") == 0  # same settings: resumed, not refused
    assert synth(photos, out, "--scales", "1", "--seed", "4", "--preset", "dfsr-lle-jpeg") == 2


def test_jpeg_preset_writes_jpeg_qualities_to_the_manifest(photos, tmp_path):
    out = tmp_path / "jpeg"
    assert synth(photos, out, "--scales", "1", "--preset", "dfsr-lle-jpeg") == 0
    items = json.loads((out / "manifest.json").read_text())["items"]
    qualities = [lq["params"]["jpeg_quality"] for item in items.values() for lq in item["lllr"]]
    assert len(qualities) == 3 and all(60 <= q <= 95 for q in qualities)


def test_bad_arguments_are_one_line_errors(photos, tmp_path, capsys):
    cases = [
        ([photos, photos], "must not be or contain"),
        ([photos, tmp_path / "o", "--scales", "3"], "--scales"),
        ([photos, tmp_path / "o", "--ev", "1,2"], "negative"),
        ([photos, tmp_path / "o", "--preset", "lol-blur", "--scales", "2"], "supports scales"),
        ([tmp_path / "nope", tmp_path / "o"], "not a folder"),
    ]
    for args, text in cases:
        assert synth(*args) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and err.count("\n") == 0, err
    assert not (photos / "LLLR").exists()


def test_per_image_exposures_are_stratified_and_lol_blur_works(photos, tmp_path):
    out = tmp_path / "blur"
    assert synth(photos, out, "--preset", "lol-blur", "--ev", "-4,-2", "--per-image", "4", "--seed", "2") == 0
    names = sorted(p.stem for p in (out / "LLLR").iterdir())
    assert len(names) == 12
    evs = sorted(parse_rellisur_name(n)[2] for n in names if n.startswith("00001"))
    for k, ev in enumerate(evs):  # one EV in each quarter of [-4, -2]
        assert -4 + 0.5 * k - 0.005 <= ev <= -4 + 0.5 * (k + 1) + 0.005
    manifest = json.loads((out / "manifest.json").read_text())
    params = manifest["items"]["00001"]["lllr"][0]["params"]
    assert params["motion_length"] is not None and params["scale"] == 1
    assert read_image_size(out / "LLLR" / f"{names[0]}.png") == read_image_size(
        out / "NLHR" / "X1" / "00001.png"
    )


def test_fixed_ev_with_several_exposures_keeps_every_file(photos, tmp_path):
    out = tmp_path / "fixed"
    assert synth(photos, out, "--ev", "-3", "--per-image", "2", "--scales", "1") == 0
    names = sorted(p.name for p in (out / "LLLR").iterdir() if p.name.startswith("00001"))
    assert names == ["00001-3.00.png", "00001-3.00_1.png"]


# ---------------------------------------------------------------------------------------------------- fetch_photos


def _fetch_module():
    spec = importlib.util.spec_from_file_location("fetch_photos", ROOT / "scripts" / "fetch_photos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_photo_split_is_valid():
    fetch = _fetch_module()
    photos = fetch.load_split(ROOT / "scripts" / "photo_split.json")
    splits = {p["split"] for p in photos}
    assert splits == {"train", "val"}
    by_source = {}
    for p in photos:
        by_source.setdefault(p["source"], []).append(p)
    assert set(by_source) == {
        "mate-backgrounds",
        "plasma-workspace-wallpapers",
        "lomiri-wallpapers-16.04",
        "lomiri-wallpapers-20.04",
        "scikit-image",
    }
    assert len(by_source["mate-backgrounds"]) == 12 and len(by_source["plasma-workspace-wallpapers"]) == 11
    # the lomiri photos were added later, to train only, so the validation pairs of the suites stay the same
    assert {
        p["split"] for p in by_source["lomiri-wallpapers-16.04"] + by_source["lomiri-wallpapers-20.04"]
    } == {"train"}
    assert all(2 <= p["factor"] <= 4 for p in photos if p["source"] != "scikit-image")
    motorcycles = {p["split"] for p in photos if "motorcycle" in p["name"]}
    assert motorcycles == {"train"}  # a stereo pair of one scene must not straddle the split


def test_fetch_reads_author_and_licence_from_a_debian_copyright_file():
    fetch = _fetch_module()
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: warty.png\nCopyright: 2004, Someone\nLicense: CC-BY-SA-3.0\n\n"
        "Files: 16.04/seeding_by_C.jpg\nCopyright: C, 2018\nLicense: CC0-1.0\n\n"
        "License: CC0-1.0\n Long licence text: with a colon\n"
    )
    assert fetch.debian_file_credit(text, "seeding_by_C.jpg") == {"author": "C, 2018", "license": "CC0-1.0"}
    assert fetch.debian_file_credit(text, "warty.png")["license"] == "CC-BY-SA-3.0"
    assert fetch.debian_file_credit(text, "missing.jpg") == {}


def test_fetch_downscaling_is_area_in_linear_light():
    fetch = _fetch_module()
    flat = torch.full((3, 31, 45), 0.6)
    out = fetch.downscale_photo(flat, 3)
    assert out.shape == (3, 10, 15)
    assert torch.allclose(out, flat[:, :10, :15], atol=1e-6)
    checker = torch.zeros(3, 4, 4)
    checker[:, ::2, ::2] = 1.0
    checker[:, 1::2, 1::2] = 1.0
    mid = fetch.downscale_photo(checker, 2)
    assert torch.allclose(mid, linear_to_srgb(torch.tensor(0.5)).expand_as(mid), atol=1e-6)  # not 0.5
