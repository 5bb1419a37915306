"""Issue 16 (reliability), items 1-4, 6-10, 12, 13: one test (or a few) per item, each failing before its fix.

Faults injected at the file level (corrupt inputs, tampered weights, full disks, signals) live in
tests/test_faults.py; docs/reliability.md maps every fault to its test.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import nightflow
from nightflow.api import Model
from nightflow.cli import main
from nightflow.data import io as nio
from nightflow.errors import NonFiniteOutputError, SettingError, UserError, WeightsError
from nightflow.train.checkpoint import CheckpointManager, load_state
from standin_restorer import StandInRestorer
from test_faults import install_fake_load, one_line_error, tiny_train_cfg, tiny_trainer, write_png

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_load(monkeypatch) -> list[str]:
    return install_fake_load(monkeypatch)


@pytest.fixture(scope="module")
def real_x2(tmp_path_factory) -> Path:
    """Weights file of the real (random-init) tiny ×2 LoLiSRFlow."""
    from nightflow.models import build_model
    from nightflow.models.checkpoint import save_model
    from nightflow.models.zoo import get_config

    cfg = get_config("lolisrflow-x2-tiny")
    torch.manual_seed(0)
    return save_model(build_model(cfg), tmp_path_factory.mktemp("w") / "x2.safetensors", cfg)


def _record(path: Path) -> dict:
    return json.loads(nio.read_png_text(path)["nightflow"])


# --------------------------------------------------------------------------------------------- 1 stale outputs
def test_1_same_file_name_from_another_folder_is_refused_not_reported_done(tmp_path, fake_load, capsys):
    """Every camera's IMG_0001: the second card's photo must not be 'kept' as the first card's result."""
    first = write_png(tmp_path / "card1" / "IMG_0001.png", seed=1)
    second = write_png(tmp_path / "card2" / "IMG_0001.png", seed=2)
    out = tmp_path / "out"
    assert main(["enhance", str(first), "-o", str(out)]) == 0
    before = (out / "IMG_0001_x2.png").read_bytes()
    capsys.readouterr()
    err = one_line_error(capsys, ["enhance", str(second), "-o", str(out)])
    assert "IMG_0001_x2.png" in err and "from another input" in err and "--overwrite" in err
    assert (out / "IMG_0001_x2.png").read_bytes() == before
    assert main(["enhance", str(second), "-o", str(out), "--overwrite"]) == 0
    assert _record(out / "IMG_0001_x2.png")["input_sha256"] == nio.file_sha256(second)


def test_1_jpg_then_png_with_one_stem_is_refused(tmp_path, fake_load, capsys):
    jpg = tmp_path / "a.jpg"
    cv2.imwrite(str(jpg), cv2.imread(str(write_png(tmp_path / "src.png", seed=4))))
    png = write_png(tmp_path / "a.png", seed=5)
    assert main(["enhance", str(jpg), "-o", str(tmp_path / "o")]) == 0
    assert "from another input (a.jpg" in one_line_error(
        capsys, ["enhance", str(png), "-o", str(tmp_path / "o")]
    )


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        (["--temperature", "0.6"], "temperature 0.5 (now 0.6)"),
        (["--seed", "2"], "seed 1 (now 2)"),
        (["--exposure", "1.5"], "exposure 0.0 (now 1.5)"),
        (["--model", "other-x2"], "with another model (first-x2)"),
    ],
    ids=["temperature", "seed", "exposure", "model"],
)
def test_1_other_settings_into_the_same_folder_are_refused_same_settings_kept(
    tmp_path, fake_load, capsys, changed, why
):
    src = write_png(tmp_path / "a.png")
    base = ["enhance", str(src), "-o", str(tmp_path / "o"), "--temperature", "0.5", "--seed", "1"]
    assert main([*base, "--model", "first-x2"]) == 0
    assert main([*base, "--model", "first-x2"]) == 0
    assert "kept 1 already done" in capsys.readouterr().out  # same input, same settings: really done
    settings = dict(zip(base[4::2], base[5::2])) | {"--model": "first-x2"}
    settings.update(dict(zip(changed[::2], changed[1::2])))
    argv = ["enhance", str(src), "-o", str(tmp_path / "o"), *[x for kv in settings.items() for x in kv]]
    assert why in one_line_error(capsys, argv)


def test_1_record_holds_input_weights_and_settings_and_the_summary_says_what_was_refused(
    tmp_path, real_x2, capsys
):
    src = write_png(tmp_path / "in" / "a.png", h=12, w=16)
    write_png(tmp_path / "in" / "b.png", h=12, w=16, seed=3)
    out = tmp_path / "o"
    argv = ["enhance", str(tmp_path / "in"), "-o", str(out), "--model", str(real_x2)]
    assert main([*argv, "--samples", "2", "--temperature", "0.7", "--seed", "3"]) == 0
    rec = _record(out / "a_x2_s01.png")
    assert rec["input_sha256"] == nio.file_sha256(src) and rec["weights_sha256"] == nio.file_sha256(real_x2)
    assert rec["model"] == str(real_x2) and rec["role"] == "sample" and rec["index"] == 1
    assert (rec["temperature"], rec["seed"], rec["samples"], rec["exposure"], rec["scale"]) == (
        0.7,
        3,
        2,
        0.0,
        2,
    )
    capsys.readouterr()
    assert main([*argv, "--samples", "2", "--temperature", "0.7", "--seed", "4"]) == 2
    captured = capsys.readouterr()
    assert "refused 2 whose outputs were made from another input or with other settings" in captured.out
    assert "seed 3 (now 4)" in captured.err


def test_1_samples_without_a_temperature_are_drawn_at_the_weights_own_and_recorded_so(tmp_path):
    """A weights file whose config sets ``sample_temperature`` (a fact measured on its weights, as uptflow-tiny's
    0.2): --samples without --temperature draws at it, records it, and gives --temperature's own pixels."""
    import dataclasses

    from nightflow.models import build_model
    from nightflow.models.checkpoint import save_model
    from nightflow.models.zoo import get_config

    cfg = dataclasses.replace(get_config("lolisrflow-x2-tiny"), sample_temperature=0.6)
    torch.manual_seed(0)
    weights = save_model(build_model(cfg), tmp_path / "x2-t06.safetensors", cfg)
    src = write_png(tmp_path / "in" / "a.png", h=12, w=16)
    argv = ["enhance", str(src), "--model", str(weights), "--samples", "2", "--seed", "3", "--quiet"]
    assert main([*argv, "-o", str(tmp_path / "own")]) == 0
    assert main([*argv, "-o", str(tmp_path / "set"), "--temperature", "0.6"]) == 0
    rec = _record(tmp_path / "own" / "a_x2_s01.png")
    assert (rec["role"], rec["temperature"], rec["seed"]) == ("sample", 0.6, 3)
    assert _record(tmp_path / "own" / "a_x2.png")["temperature"] == 0.0  # the main output stays the mean path
    for i in range(2):
        own, pinned = (nio.read_image(tmp_path / d / f"a_x2_s0{i}.png") for d in ("own", "set"))
        np.testing.assert_array_equal(own, pinned)


# --------------------------------------------------------------------------------------------- 2 best survives
def test_2_best_survives_extending_a_finished_run(tmp_path, monkeypatch):
    """A finished run whose last checkpoint was written before its last validation, extended with more steps:
    a worse later score must not replace checkpoints/best (15.53 → 11.26 dB was seen)."""
    scores = {6: 20.0, 9: 10.0}

    def fake_validate(model, dataset, device, **kwargs):
        return {"psnr": scores[trainer.step], "ssim": 0.5, "images": 1.0}

    monkeypatch.setattr("nightflow.train.trainer.validate", fake_validate)
    trainer = tiny_trainer(tmp_path / "run", tiny_train_cfg(max_steps=6, checkpoint_every=3, val_every=100))
    trainer.fit()
    state = load_state(trainer.checkpoints.latest())
    assert state["step"] == 6 and state["best"]["value"] == 20.0  # the last state knows the final score

    trainer = tiny_trainer(tmp_path / "run", tiny_train_cfg(max_steps=9, checkpoint_every=3, val_every=100))
    trainer.load_checkpoint(trainer.checkpoints.latest())
    assert trainer.best["value"] == 20.0 and trainer.best["step"] == 6
    trainer.fit()
    best = json.loads((tmp_path / "run" / "checkpoints" / "best" / "best.json").read_text())
    assert best["step"] == 6 and best["value"] == 20.0


def test_2_best_on_disk_wins_over_an_old_state_that_says_none(tmp_path, monkeypatch):
    """States written by older nightflow versions (best = None) resume with the score best/ actually holds."""
    monkeypatch.setattr(
        "nightflow.train.trainer.validate", lambda *a, **k: {"psnr": 15.5, "ssim": 0.5, "images": 1.0}
    )
    first = tiny_trainer(tmp_path / "run", tiny_train_cfg(max_steps=3, checkpoint_every=3, val_every=3))
    first.fit()
    step = first.checkpoints.latest()
    doc = json.loads((step / "state.json").read_text())
    doc["state"]["best"] = {"metric": "psnr", "value": None, "step": None}
    (step / "state.json").write_text(json.dumps(doc))
    resumed = tiny_trainer(tmp_path / "run", tiny_train_cfg(max_steps=3))
    resumed.load_checkpoint(step)
    assert resumed.best == {"metric": "psnr", "value": 15.5, "step": 3}


# --------------------------------------------------------------------------------------------- 3 temperature, NaN
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e6, -0.1, 2.5])
def test_3_api_refuses_non_finite_or_absurd_temperatures(bad):
    model = Model(StandInRestorer(scale=2))
    img = np.full((16, 16, 3), 40, np.uint8)
    for call in (
        lambda: model.restore(img, temperature=bad),
        lambda: model.sample(img, n=2, temperature=bad),
        lambda: model.uncertainty(img, n=2, temperature=bad),
    ):
        with pytest.raises(SettingError, match=r"temperature must be a finite number in \[0, 2.0\]"):
            call()
    assert model.restore(img, temperature=2.0).shape == (32, 32, 3)  # the maximum itself is allowed


@pytest.mark.parametrize("bad", ["nan", "inf", "1e6", "-1"])
def test_3_cli_refuses_bad_temperatures_before_loading(tmp_path, fake_load, capsys, bad):
    src = write_png(tmp_path / "a.png")
    assert "--temperature must be a finite number" in one_line_error(
        capsys, ["enhance", str(src), "--temperature", bad]
    )
    assert fake_load == [] and not (tmp_path / "nightflow_out").exists()


class _NaNRestorer(StandInRestorer):
    def restore(self, lq, temperature=0.0, noise=None, generator=None, **kwargs):
        out = super().restore(lq, temperature, noise, generator)
        out[..., 0, 0] = float("nan")
        return out


def test_3_non_finite_output_is_never_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nightflow, "load", lambda name, device="cpu": Model(_NaNRestorer(), {"name": name}))
    src = write_png(tmp_path / "a.png")
    err = one_line_error(capsys, ["enhance", str(src), "--uncertainty"])
    assert "NaN/inf" in err and "nothing was written" in err
    assert not (tmp_path / "nightflow_out").exists() or not list((tmp_path / "nightflow_out").iterdir())
    with pytest.raises(NonFiniteOutputError):
        Model(_NaNRestorer()).restore(np.zeros((16, 16, 3), np.uint8))


def test_3_nan_weights_are_refused_at_load(tmp_path, real_x2):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(real_x2), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(real_x2))
    name = sorted(k for k in tensors if k.startswith("encoder.") and tensors[k].is_floating_point())[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(WeightsError, match=rf"tensor {name} holds 1 NaN/inf"):
        nightflow.load(tmp_path / "nan.safetensors")


def test_3_nan_in_a_checkpoint_is_not_resumed(tmp_path):
    from safetensors.torch import load_file, save_file

    trainer = tiny_trainer(tmp_path / "run", tiny_train_cfg(max_steps=2))
    trainer.fit()
    step = trainer.checkpoints.latest()
    weights = load_file(str(step / "model.safetensors"))
    weights["body.2.bias"][0] = float("inf")
    save_file(weights, str(step / "model.safetensors"))
    with pytest.raises(UserError, match="holds NaN/inf values in body.2.bias"):
        CheckpointManager.load(step)


# --------------------------------------------------------------------------------------------- 4 tile minimum
def test_4_tiles_below_the_models_need_are_refused(tmp_path, real_x2, capsys):
    model = nightflow.load(real_x2)
    least = nightflow.api.minimum_tile(model.restorer)
    assert least >= 2 * nightflow.inference.default_overlap(0)  # a full blended overlap on both sides
    img = np.full((40, 40, 3), 30, np.uint8)
    for bad in (1, -3, least // 2, least - 1):
        with pytest.raises(SettingError, match=f"needs tiles of at least {least} px"):
            model.restore(img, tile=bad)
    assert model.restore(img, tile=least).shape == (80, 80, 3)
    assert model.restore(img, tile=0).shape == (80, 80, 3)
    src = write_png(tmp_path / "a.png")
    err = one_line_error(capsys, ["enhance", str(src), "--model", str(real_x2), "--tile", "1"])
    assert "--tile 1 is too small" in err and f"at least {least} px" in err


# --------------------------------------------------------------------------------------------- 6 pixel limit
def test_6_pixel_limit_is_checked_from_the_header_and_named(tmp_path, fake_load, capsys):
    src = write_png(tmp_path / "wide.png", h=200, w=300)
    err = one_line_error(capsys, ["enhance", str(src), "--max-pixels", "50000"])
    assert "300×200 = 0.1 MP is above the limit of 0.1 MP" in err and "--max-pixels" in err
    assert main(["enhance", str(src), "--max-pixels", "0.06M"]) == 0  # 60,000 px allowed


def test_6_tiff_above_the_limit_is_refused(tmp_path, fake_load, capsys):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((300, 400, 3), np.uint8), photometric="rgb")
    assert "400×300" in one_line_error(capsys, ["enhance", str(path), "--max-pixels", "100000"])


def test_6_default_limit_is_sized_to_the_machine_and_the_scale(monkeypatch):
    monkeypatch.setattr(nio, "machine_memory", lambda: 16 << 30)
    x2, x4 = nio.default_max_pixels(2), nio.default_max_pixels(4)
    assert 40e6 < x2 < 60e6 and x4 < x2 / 3  # 16 GB: ~45 MP at ×2; ×4 outputs are 4× larger
    monkeypatch.setattr(nio, "machine_memory", lambda: 4 << 30)
    assert nio.default_max_pixels(2) < x2 / 3


# --------------------------------------------------------------------------------------------- 7 per-image faults
def test_7_unwritable_output_is_checked_before_the_model_is_loaded(tmp_path, fake_load, capsys, monkeypatch):
    import errno

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(nio, "_write_file", read_only)
    src = write_png(tmp_path / "a.png")
    err = one_line_error(capsys, ["enhance", str(src), "-o", str(tmp_path / "out")])
    assert "the filesystem is read-only" in err and fake_load == []


# --------------------------------------------------------------------------------------------- 9 resume state
def test_9_state_is_json_and_safetensors_and_garbage_is_one_line(tmp_path):
    trainer = tiny_trainer(tmp_path / "run", tiny_train_cfg(max_steps=2))
    trainer.fit()
    step = trainer.checkpoints.latest()
    assert sorted(p.name for p in step.iterdir()) == ["model.safetensors", "state.json", "state.safetensors"]
    assert json.loads((step / "state.json").read_text())["state"]["step"] == 2
    (step / "state.json").write_text("garbage")
    with pytest.raises(UserError) as info:
        CheckpointManager.load(step)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


# --------------------------------------------------------------------------------------------- 10 seed, photos, signals
@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_10_out_of_range_seed_is_one_line(tmp_path, fake_load, capsys, seed):
    src = write_png(tmp_path / "a.png")
    assert "--seed must be in 0..18446744073709551615" in one_line_error(
        capsys, ["enhance", str(src), "--seed", seed]
    )
    with pytest.raises(SettingError):
        Model(StandInRestorer()).sample(np.zeros((8, 8, 3), np.uint8), n=1, seed=int(seed))


def test_10_corrupt_photo_stops_the_cli_run_before_training(tmp_path, capsys):
    import yaml

    photos = tmp_path / "photos"
    for i in range(3):
        write_png(photos / f"p{i}.png", h=48, w=48, seed=i)
    (photos / "p1.png").write_bytes((photos / "p1.png").read_bytes()[:80])
    data = dict(format="synthetic", root=str(photos), scale=2, patch_size=16, length=4, seed=0)
    train = dict(max_steps=2, batch_size=2, num_workers=2, device="cpu", progress=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "lolisrflow-x2-tiny", "data": data, "train": train}))
    err = one_line_error(capsys, ["train", str(recipe), "--out", str(tmp_path / "run")], command="train")
    assert "p1.png" in err and "truncated" in err
    assert not (tmp_path / "run").exists()


def test_10_sigterm_from_the_cli_saves_and_exits_143(tmp_path, monkeypatch, capsys):
    """`nightflow train` receiving SIGTERM at step 2 of 6: one line, exit 143, checkpoint step 2 saved."""
    import os

    from nightflow.train import run as run_mod

    original = run_mod.train_run

    def with_signal(*args, **kwargs):
        def kill(trainer, step, losses):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        return original(*args, **kwargs, callbacks=[kill])

    monkeypatch.setattr(run_mod, "train_run", with_signal)
    import yaml

    photos = tmp_path / "photos"
    for i in range(2):
        write_png(photos / f"p{i}.png", h=48, w=48, seed=i)
    data = dict(format="synthetic", root=str(photos), scale=2, patch_size=16, length=4, seed=0)
    train = dict(max_steps=6, batch_size=2, checkpoint_every=100, val_every=100, device="cpu", progress=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "lolisrflow-x2-tiny", "data": data, "train": train}))
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nightflow train: interrupted: SIGTERM at step 2: saved") and "--resume" in err
    assert CheckpointManager(tmp_path / "run", 5).steps() == [2]


# --------------------------------------------------------------------------------------------- 12 CLI = API
def test_12_grey_stays_grey_in_the_cli_as_in_the_api(tmp_path, fake_load):
    src = write_png(tmp_path / "g.png", grey=True)
    assert main(["enhance", str(src), "-o", str(tmp_path / "o")]) == 0
    cli = cv2.imread(str(tmp_path / "o" / "g_x2.png"), cv2.IMREAD_UNCHANGED)
    api = Model(StandInRestorer(scale=2)).restore(cv2.imread(str(src), cv2.IMREAD_UNCHANGED))
    assert cli.shape == api.shape == (40, 56) and cli.dtype == np.uint8
    np.testing.assert_array_equal(cli, api)


def test_12_exif_rotation_applies_to_pil_input_as_to_files(tmp_path, fake_load):
    arr = np.random.default_rng(0).integers(0, 80, (20, 28, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "r.png"
    Image.fromarray(arr).save(path, exif=exif)
    assert main(["enhance", str(path), "-o", str(tmp_path / "o")]) == 0
    cli = cv2.imread(str(tmp_path / "o" / "r_x2.png"))[:, :, ::-1]
    api = np.asarray(Model(StandInRestorer(scale=2)).restore(Image.open(path)))
    assert cli.shape == api.shape == (56, 40, 3)
    np.testing.assert_array_equal(cli, api)


def test_12_missing_checkpoint_is_a_file_not_found_error_and_unknown_name_a_value_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        nightflow.load(str(tmp_path / "runs" / "missing.safetensors"))
    with pytest.raises(ValueError, match="unknown model 'lolisrflow-x3'"):
        nightflow.load("lolisrflow-x3")
    with pytest.raises(UserError):
        nightflow.load(str(tmp_path / "runs" / "missing.safetensors"))


# --------------------------------------------------------------------------------------------- 13 progress, pages
def test_13_large_untiled_image_announces_itself(tmp_path, fake_load, capsys, monkeypatch):
    monkeypatch.setattr("nightflow.commands.enhance.ANNOUNCE_PIXELS", 100)
    src = write_png(tmp_path / "a.png")
    assert main(["enhance", str(src), "--tile", "0"]) == 0
    err = capsys.readouterr().err
    assert "enhancing" in err and "28×20 → 56×40, one piece" in err and "done in" in err


def test_13_multi_page_tiff_says_only_page_one_is_used(tmp_path, fake_load, capsys):
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(path, np.ones((16, 16, 3), np.uint8), photometric="rgb", append=True)
    assert main(["enhance", str(path)]) == 0
    assert "2 pages/frames, only the first is used" in capsys.readouterr().err


def test_13_subfolders_are_announced_or_walked_with_recursive(tmp_path, fake_load, capsys):
    write_png(tmp_path / "card" / "top.png")
    write_png(tmp_path / "card" / "DCIM" / "100" / "deep.png", seed=2)
    out = tmp_path / "out"
    assert main(["enhance", str(tmp_path / "card"), "-o", str(out)]) == 0
    assert "1 subfolder(s) that were not searched; add --recursive" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["top_x2.png"]
    assert main(["enhance", str(tmp_path / "card"), "-o", str(out), "--recursive"]) == 0
    assert (out / "DCIM" / "100" / "deep_x2.png").is_file()
    assert "kept 1 already done" in capsys.readouterr().out
    # without -o the outputs land in nightflow_out/ folders, which a later recursive run does not re-enhance
    assert main(["enhance", str(tmp_path / "card"), "--recursive"]) == 0
    assert main(["enhance", str(tmp_path / "card"), "--recursive"]) == 0
    assert "wrote 0 file(s) for 0 image(s), kept 2 already done" in capsys.readouterr().out.splitlines()[-1]


def test_13_folder_with_only_subfolders_says_to_recurse(tmp_path, fake_load, capsys):
    write_png(tmp_path / "card" / "sub" / "a.png")
    err = one_line_error(capsys, ["enhance", str(tmp_path / "card")])
    assert "no images" in err and "add --recursive" in err


def test_settings_validators_accept_the_documented_ranges():
    assert nightflow.api.check_temperature(0) == 0.0 and nightflow.api.check_seed(2**64 - 1) == 2**64 - 1
    assert math.isclose(nightflow.api.check_temperature(0.8), 0.8)
    with pytest.raises(SettingError):
        nightflow.api.check_seed(1.5)  # type: ignore[arg-type]
