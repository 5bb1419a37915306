"""Fault injection: corrupt inputs, tampered weights, damaged resume state, unwritable and full outputs, signals.

Every fault must end in one of two ways: a one-line error (exit code 2 from the CLI, a ``UserError`` from Python)
that names the file or tensor, or a documented recovery (a batch goes on, a signal saves the step). Never a
traceback, never exit 0 with a wrong or black image. docs/reliability.md lists each fault with its test here.
Output faults are injected through ``nightflow.data.io._write_file`` (the single place bytes reach the disk), so
no test needs a real full disk or a read-only mount.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import nightflow
from nightflow.api import Model
from nightflow.cli import main
from nightflow.data import io as nio
from nightflow.errors import UserError, WeightsError
from nightflow.models.base import SizeSpec, TilingSpec
from nightflow.models.checkpoint import CONFIG_KEY, _expected_tensors, load_config, load_model, save_model
from nightflow.train.checkpoint import CheckpointManager
from nightflow.train.config import TrainConfig
from nightflow.train.logging import read_log
from nightflow.train.trainer import Trainer, TrainingInterrupted
from standin_restorer import StandInRestorer

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------- helpers
def install_fake_load(monkeypatch) -> list[str]:
    """Make nightflow.load return a ×2 stand-in (×4 when the name says x4); returns the names asked for."""
    calls: list[str] = []

    def load(name_or_path, device="cpu"):
        calls.append(str(name_or_path))
        scale = 4 if "x4" in str(name_or_path) else 2
        return Model(StandInRestorer(scale=scale), {"name": str(name_or_path)})

    monkeypatch.setattr(nightflow, "load", load, raising=False)
    return calls


@pytest.fixture
def fake_load(monkeypatch) -> list[str]:
    return install_fake_load(monkeypatch)


def write_png(path: Path, h: int = 20, w: int = 28, seed: int = 0, grey: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 64, size=(h, w) if grey else (h, w, 3)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def header_only_png(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width``×``height``, no pixel data: 33 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


def one_line_error(capsys, argv: list[str], command: str = "enhance") -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("nightflow enhance: note:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"nightflow {command}: error:"), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------------------------- corrupt inputs
def _corrupt(kind: str, folder: Path) -> Path:
    good = folder / "source.png"
    write_png(good, seed=9)
    data = good.read_bytes()
    path = folder / f"{kind}.png"
    if kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(500))
    elif kind == "truncated-png":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "header-only-huge-png":
        path.write_bytes(header_only_png(30000, 30000))
    elif kind == "header-only-small-png":
        path.write_bytes(header_only_png(64, 64))
    elif kind == "bad-crc-idat":
        i = data.index(b"IDAT") + 8
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif kind == "truncated-jpeg":
        path = folder / "truncated.jpg"
        cv2.imwrite(str(path), cv2.imread(str(good)))
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "truncated-tiff":
        path = folder / "truncated.tif"
        tifffile.imwrite(path, np.zeros((20, 28, 3), np.uint8), photometric="rgb")
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "nan-float-tiff":
        path = folder / "nan.tif"
        arr = np.full((20, 28, 3), 0.2, np.float32)
        arr[3, 4, 1] = np.nan
        tifffile.imwrite(path, arr, photometric="rgb")
    elif kind == "text-named-png":
        path.write_text("hello, I am not an image\n")
    else:
        raise AssertionError(kind)
    good.unlink()
    return path


CORRUPT = [
    "zero-bytes",
    "random-bytes",
    "truncated-png",
    "header-only-huge-png",
    "header-only-small-png",
    "bad-crc-idat",
    "truncated-jpeg",
    "truncated-tiff",
    "nan-float-tiff",
    "text-named-png",
]


@pytest.mark.parametrize("kind", CORRUPT)
def test_corrupt_input_is_one_line_error_and_the_batch_goes_on(tmp_path, fake_load, capsys, kind):
    bad = _corrupt(kind, tmp_path / "in")
    write_png(tmp_path / "in" / "zz_good.png")
    assert main(["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("nightflow enhance: error:")]
    assert len(errors) == 2 and bad.name in errors[0] and "1 of 2 images failed" in errors[1], captured.err
    assert "Traceback" not in captured.err
    assert (tmp_path / "out" / "zz_good_x2.png").is_file()  # the good image after the bad one was done
    assert not any(p.name.startswith(bad.stem) for p in (tmp_path / "out").iterdir())


def test_huge_header_is_refused_before_decoding(tmp_path, monkeypatch):
    """A 33-byte file claiming 30000×30000 is refused from its header: no decoder is ever called."""
    path = tmp_path / "bomb.png"
    path.write_bytes(header_only_png(30000, 30000))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image above the pixel limit")

    monkeypatch.setattr(nio, "_decode_pillow", no_decoding)
    monkeypatch.setattr(nio, "_decode_png16", no_decoding)
    with pytest.raises(nio.ImageTooLargeError, match=r"30000×30000 = 900\.0 MP") as info:
        nio.read_image(path, max_pixels=100_000_000)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, UserError)


# --------------------------------------------------------------------------------------------- tampered weights
@pytest.fixture(scope="module")
def x2_weights(tmp_path_factory) -> Path:
    """Self-describing weights of the real (random-init) tiny ×2 model."""
    from nightflow.models import build_model
    from nightflow.models.zoo import get_config

    cfg = get_config("lolisrflow-x2-tiny")
    torch.manual_seed(0)
    return save_model(build_model(cfg), tmp_path_factory.mktemp("w") / "x2.safetensors", cfg)


def _tamper(src: Path, dst: Path, kind: str) -> str:
    """Write a tampered copy of ``src``; returns a fragment the error must contain."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(src))
    cfg = json.loads(meta[CONFIG_KEY])
    enc = next(k for k in tensors if k.startswith("encoder.") and tensors[k].ndim == 4)
    expect = enc
    if kind == "wrong-shape":
        tensors[enc] = torch.zeros(tensors[enc].shape[0] + 1, *tensors[enc].shape[1:])
    elif kind == "scale-4-config":
        cfg["scale"] = 4
        meta[CONFIG_KEY] = json.dumps(cfg)
        expect = "do not match the stored config"
    elif kind == "metadata-not-json":
        meta[CONFIG_KEY] = "{'scale': 2,"
        expect = "not valid JSON"
    elif kind == "nan-in-encoder":
        tensors[enc] = tensors[enc].clone()
        tensors[enc].view(-1)[3] = float("nan")
        expect = f"{enc} holds 1 NaN/inf"
    elif kind == "inf-in-flow":
        name = next(k for k in tensors if k.startswith("flow.") and tensors[k].is_floating_point())
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("inf")
        expect = f"{name} holds 1 NaN/inf"
    elif kind == "hidden-100000":
        dims = cfg["encoder_config"]["dims"]
        cfg["encoder_config"]["dims"] = [100000, *dims[1:]]
        meta[CONFIG_KEY] = json.dumps(cfg)
        expect = "needs ["
    elif kind == "int32-floats":
        tensors[enc] = tensors[enc].to(torch.int32)
        expect = f"{enc} is stored as I32"
    elif kind == "renamed-tensor":
        tensors["encoder.not_a_layer.weight"] = tensors.pop(enc)
        expect = "1 missing, 1 unexpected"
    elif kind == "unknown-config-key":
        cfg["hiddden"] = 3
        meta[CONFIG_KEY] = json.dumps(cfg)
        expect = "hiddden"
    elif kind == "truncated-file":
        dst.write_bytes(src.read_bytes()[:5000])
        return "not a readable safetensors"
    else:
        raise AssertionError(kind)
    save_file(tensors, str(dst), metadata=meta)
    return expect


TAMPERED = [
    "wrong-shape",
    "scale-4-config",
    "metadata-not-json",
    "nan-in-encoder",
    "inf-in-flow",
    "hidden-100000",
    "int32-floats",
    "renamed-tensor",
    "unknown-config-key",
    "truncated-file",
]


@pytest.mark.parametrize("kind", TAMPERED)
def test_tampered_weights_are_refused_in_one_line_before_the_model_is_built(
    tmp_path, x2_weights, monkeypatch, kind
):
    bad = tmp_path / f"{kind}.safetensors"
    expect = _tamper(x2_weights, bad, kind)
    _expected_tensors(load_config(x2_weights))  # the meta build works, so "hidden 100000" never allocates
    built: list[str] = []  # the device each model build ran on
    from nightflow import models

    build = models.build_any  # every model build (the meta-device check and the real one) goes through it
    record = lambda c: built.append(torch.get_default_device().type) or build(c)  # noqa: E731
    monkeypatch.setattr(models, "build_any", record)
    with pytest.raises(WeightsError) as info:
        load_model(bad)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and expect in msg, msg
    assert isinstance(info.value, ValueError)
    assert "cpu" not in built  # refused before any real (memory-allocating) model was built


def test_every_zoo_model_builds_on_the_meta_device():
    """The pre-load check builds each model on "meta" (no memory); if a layer stops supporting that, the check
    is skipped silently, so every shipped config is held to it here."""
    from nightflow.models.zoo import config_names, get_config

    for name in config_names():
        expected = _expected_tensors(get_config(name))
        assert len(expected) > 10, name  # raising inside the meta build is the failure this guards


def test_tampered_weights_through_the_cli_exit_2(tmp_path, x2_weights, capsys):
    bad = tmp_path / "nan.safetensors"
    expect = _tamper(x2_weights, bad, "nan-in-encoder")
    write_png(tmp_path / "a.png")
    err = one_line_error(capsys, ["enhance", str(tmp_path / "a.png"), "--model", str(bad)])
    assert expect in err
    assert not (tmp_path / "nightflow_out").exists()


def test_untampered_weights_still_load_and_restore(x2_weights):
    model = load_model(x2_weights)
    out = model.restore(torch.rand(1, 3, 12, 12) * 0.2)
    assert out.shape == (1, 3, 24, 24) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------- outputs
def _raise(code: int):
    def writer(path: Path, data: bytes) -> None:
        raise OSError(code, os.strerror(code), str(path))

    return writer


@pytest.mark.parametrize(
    ("code", "text"),
    [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied"), (errno.ENOSPC, "disk is full")],
    ids=["read-only", "no-permission", "full-disk-at-start"],
)
def test_unwritable_output_fails_before_the_model_is_loaded(
    tmp_path, fake_load, capsys, monkeypatch, code, text
):
    write_png(tmp_path / "a.png")
    monkeypatch.setattr(nio, "_write_file", _raise(code))
    err = one_line_error(capsys, ["enhance", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")])
    assert text in err and str(tmp_path / "out") in err
    assert fake_load == []  # no model work was done
    assert not (tmp_path / "out").exists()


def test_output_below_a_file_fails_before_the_model_is_loaded(tmp_path, fake_load, capsys):
    write_png(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    err = one_line_error(
        capsys, ["enhance", str(tmp_path / "a.png"), "-o", str(tmp_path / "notes.txt" / "out")]
    )
    assert "is a file, not a folder" in err and fake_load == []


def test_disk_full_midway_reports_each_image_and_goes_on(tmp_path, fake_load, capsys, monkeypatch):
    """The disk fills up while writing the first image: it is reported in one line, no half-written file or
    temp file is left, and the next image is still done; exit 2."""
    for name in ("a", "b", "c"):
        write_png(tmp_path / "in" / f"{name}.png", seed=ord(name))
    real = nio._write_file
    calls = {"n": 0}

    def flaky(path: Path, data: bytes) -> None:
        if data:  # the empty probe file passes: the disk fills only once work has started
            calls["n"] += 1
            if calls["n"] == 1:
                with open(path, "wb") as fh:
                    fh.write(data[: len(data) // 2])  # part of the file reached the disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(nio, "_write_file", flaky)
    out = tmp_path / "out"
    assert main(["enhance", str(tmp_path / "in"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        "a.png" in err and "disk is full" in err and "1 of 3 images failed" in err and "Traceback" not in err
    )
    assert sorted(p.name for p in out.iterdir()) == ["b_x2.png", "c_x2.png"]  # nothing of a, no temp files
    # the next run, with space again, completes the batch and keeps what was done
    monkeypatch.setattr(nio, "_write_file", real)
    assert main(["enhance", str(tmp_path / "in"), "-o", str(out)]) == 0
    assert "wrote 1 file(s) for 1 image(s), kept 2 already done" in capsys.readouterr().out


class _MemoryHungry(StandInRestorer):
    """Raises MemoryError (or torch's CPU allocator RuntimeError) for inputs wider than 30 px."""

    def __init__(self, kind: str) -> None:
        super().__init__(scale=2)
        self.kind = kind

    def restore(self, lq, temperature=0.0, noise=None, generator=None, **kwargs):
        if lq.shape[-1] > 30:
            if self.kind == "python":
                raise MemoryError
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory"
            )
        return super().restore(lq, temperature, noise, generator)


@pytest.mark.parametrize("kind", ["python", "torch-cpu"])
def test_out_of_memory_on_one_image_is_reported_and_the_batch_goes_on(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.setattr(
        nightflow, "load", lambda name, device="cpu": Model(_MemoryHungry(kind), {"name": name})
    )
    write_png(tmp_path / "in" / "big.png", w=60)
    write_png(tmp_path / "in" / "small.png", w=20)
    assert main(["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--tile", "0"]) == 2
    err = capsys.readouterr().err
    assert "big.png: out of memory" in err and "--tile" in err and "Traceback" not in err
    assert (tmp_path / "out" / "small_x2.png").is_file() and not (tmp_path / "out" / "big_x2.png").exists()


# --------------------------------------------------------------------------------------------- resume state
class TinyTrainable(nn.Module):
    """×2 stand-in for the trainer: bilinear + a conv residual, Gaussian NLL with generator noise.

    ``loss`` accepts the batch dict (current contract) or (hq, lq) (older one), so it outlives the change.
    """

    # the restorer contract (nightflow.models.base) that validation reads through the evaluation engine
    stochastic = needs_target = has_exposure = False
    sizes, tiling, dtypes, precisions = SizeSpec(), TilingSpec(), (torch.float32,), ("fp32",)
    sample_temperature = 0.4

    def context(self, lq: torch.Tensor, exposure: float = 0.0) -> None:
        return None

    def __init__(self) -> None:
        super().__init__()
        self.scale, self.levels, self.pad_multiple = 2, 1, 1
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def _mean(self, lq: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lq, scale_factor=2, mode="bilinear", align_corners=False)
        return up + self.body(up)

    def loss(self, batch, lq=None, generator=None) -> dict:
        hq, lq = (batch["hq"], batch["lq"]) if isinstance(batch, dict) else (batch, lq)
        hq = hq + (torch.rand(hq.shape, generator=generator) - 0.5) / 255.0
        mean = self._mean(lq)
        nll = 0.5 * (hq - mean).pow(2).mean() * 100
        l1 = (mean - hq).abs().mean()
        return {"total": nll + l1, "nll": nll, "l1": l1}

    @torch.no_grad()
    def restore(self, lq, temperature: float = 0.0, noise=None, generator=None, **kwargs) -> torch.Tensor:
        return self._mean(lq).clamp(0, 1)


class TinyPairs(torch.utils.data.Dataset):
    """Deterministic 16×16 / 8×8 pairs; ``photos`` lists files the trainer must check up front."""

    def __init__(self, n: int = 8, seed: int = 0, photos: list[Path] | None = None) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.photos = list(photos or [])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch * 100 + index)
        hq = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(16, 16), mode="bilinear")[0]
        return {"hq": hq, "lq": F.avg_pool2d(hq[None], 2)[0] * 0.3, "name": f"p{index}.png"}


def tiny_train_cfg(**kw) -> TrainConfig:
    base = dict(
        seed=1, max_steps=8, batch_size=4, lr=1e-3, warmup_steps=1, grad_clip=1.0, log_every=1,
        val_every=100, val_max_images=1, val_save_images=0, checkpoint_every=100, keep_last=3,
        device="cpu", progress=False,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def tiny_trainer(run_dir: Path, cfg: TrainConfig, callbacks=(), photos=None) -> Trainer:
    torch.manual_seed(0)
    return Trainer(
        TinyTrainable(),
        TinyPairs(photos=photos),
        cfg,
        run_dir,
        val_set=TinyPairs(n=1, seed=9),
        callbacks=callbacks,
    )


def _finished_run(tmp_path: Path) -> Path:
    trainer = tiny_trainer(tmp_path / "run", tiny_train_cfg(max_steps=2))
    trainer.fit()
    return trainer.checkpoints.latest()


@pytest.mark.parametrize(
    "damage",
    [
        "garbage-json",
        "garbage-tensors",
        "missing-key",
        "nan-in-optimizer",
        "nan-in-weights",
        "garbage-legacy-pt",
    ],
)
def test_damaged_resume_state_is_one_line_and_never_suggests_unsafe_loading(tmp_path, damage):
    step = _finished_run(tmp_path)
    assert (step / "state.json").is_file() and not (step / "state.pt").exists()  # no pickle is written
    expect = "unreadable state"
    if damage == "garbage-json":
        (step / "state.json").write_bytes(os.urandom(300))
    elif damage == "garbage-tensors":
        (step / "state.safetensors").write_bytes(b"\x00" * 64)
    elif damage == "missing-key":
        doc = json.loads((step / "state.json").read_text())
        del doc["state"]["optimizer"]
        (step / "state.json").write_text(json.dumps(doc))
        expect = "incomplete state (no optimizer)"
    elif damage == "nan-in-optimizer":
        tensors = load_file(str(step / "state.safetensors"))
        name = max(tensors, key=lambda k: tensors[k].numel() if tensors[k].is_floating_point() else -1)
        tensors[name].view(-1)[0] = float("nan")
        save_file(tensors, str(step / "state.safetensors"))
        expect = "NaN/inf values in"
    elif damage == "nan-in-weights":
        tensors = load_file(str(step / "model.safetensors"))
        tensors["body.0.weight"].view(-1)[0] = float("nan")
        save_file(tensors, str(step / "model.safetensors"))
        expect = "NaN/inf values in body.0.weight"
    else:  # an old-format run whose state.pt is garbage: torch's message advises weights_only=False
        (step / "state.json").unlink()
        (step / "state.safetensors").unlink()
        (step / "state.pt").write_bytes(b"\x80\x02garbage that is not a pickle" + os.urandom(100))
    resumed = tiny_trainer(tmp_path / "run", tiny_train_cfg(max_steps=4))
    with pytest.raises(UserError) as info:
        resumed.load_checkpoint(step)
    msg = str(info.value)
    assert "\n" not in msg and str(step) in msg and expect in msg, msg
    assert "weights_only" not in msg and "pickle" not in msg.lower()


def test_legacy_state_pt_still_resumes(tmp_path):
    """Runs written before the JSON + safetensors state (state.pt, weights-only pickle) still continue."""
    from nightflow.train.checkpoint import load_state

    step = _finished_run(tmp_path)
    state = load_state(step)
    torch.save(state, step / "state.pt")
    (step / "state.json").unlink()
    (step / "state.safetensors").unlink()
    assert CheckpointManager(tmp_path / "run", 3).steps() == [2]
    resumed = tiny_trainer(tmp_path / "run", tiny_train_cfg(max_steps=3))
    resumed.load_checkpoint(step)
    assert resumed.step == 2 and resumed.fit()["step"] == 3


# --------------------------------------------------------------------------------------------- signals
def _signal_at(step: int, signum: int):
    def callback(trainer, s, losses):
        if s == step:
            os.kill(os.getpid(), signum)

    return callback


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_training_saves_that_step_and_resume_matches(tmp_path, signum):
    """No checkpoint is due before step 8, yet a signal at step 5 saves step 5; resuming from it reproduces the
    uninterrupted run's losses exactly, and the previous handlers are back afterwards."""
    cfg = tiny_train_cfg(max_steps=8)
    tiny_trainer(tmp_path / "full", cfg).fit()
    before = signal.getsignal(signum)
    trainer = tiny_trainer(tmp_path / "split", cfg, callbacks=[_signal_at(5, signum)])
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    assert info.value.signum == signum and "step 5" in str(info.value) and "--resume" in str(info.value)
    assert isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signum) is before
    manager = CheckpointManager(tmp_path / "split", 3)
    assert manager.steps() == [5]
    resumed = tiny_trainer(tmp_path / "split", cfg)
    resumed.load_checkpoint(manager.latest())
    resumed.logger.truncate_after(resumed.step)
    resumed.fit()
    a = {r["step"]: r["total"] for r in read_log(tmp_path / "full", "train")}
    b = {r["step"]: r["total"] for r in read_log(tmp_path / "split", "train")}
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert all(abs(a[s] - b[s]) <= 1e-6 for s in a)


def test_cli_reports_a_signal_in_one_line_with_exit_128_plus_signal(tmp_path, monkeypatch, capsys):
    """The CLI turns TrainingInterrupted into one line saying what was saved, exit code 143 for SIGTERM."""
    from nightflow.commands import train as train_cmd

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("SIGTERM at step 5: saved runs/x/checkpoints/step_0000005", signal.SIGTERM)

    monkeypatch.setattr("nightflow.train.run.train_run", interrupted)
    assert train_cmd is not None
    assert main(["train", "--resume", str(tmp_path)]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip()
    assert err == "nightflow train: interrupted: SIGTERM at step 5: saved runs/x/checkpoints/step_0000005"


def test_corrupt_training_photo_fails_before_the_first_step(tmp_path):
    """A truncated photo stops the run in one line naming it when the trainer is built, even with workers."""
    good, bad = write_png(tmp_path / "p" / "good.png"), write_png(tmp_path / "p" / "bad.png", seed=3)
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(nio.ImageReadError) as info:
        tiny_trainer(tmp_path / "run", tiny_train_cfg(num_workers=2), photos=[good, bad])
    assert "bad.png" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing was created for a run that cannot start
