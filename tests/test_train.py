"""Trainer tests: exact resume, NaN handling, checkpoints (last N + best), schedules, EMA, logs, config.

The model and data here are small stand-ins honouring the FlowRestorer / dataset contracts (the trainer must
work with any module exposing ``loss(hq, lq, generator)``, ``restore(lq)`` and optionally
``initialize(hq, lq)``). They exercise every source of randomness the trainer must control: data-dependent
init, dequantisation noise through the generator, augmentation through the global RNG.
tests/test_train_ddp.py imports them too.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import nightflow
from nightflow.cli import main
from nightflow.config import from_dict
from nightflow.errors import ConfigError, UserError
from nightflow.models.base import SizeSpec, TilingSpec
from nightflow.train.checkpoint import CheckpointManager
from nightflow.train.config import TrainConfig
from nightflow.train.ema import EMA
from nightflow.train.logging import read_log
from nightflow.train.run import train_run
from nightflow.train.sampling import PerItemSeeded
from nightflow.train.schedule import lr_factor
from nightflow.train.trainer import Trainer, TrainingDiverged


class StandInRestorer(nn.Module):
    """×scale restorer with ActNorm-style data-dependent init and a Gaussian NLL on the residual."""

    # the restorer contract (nightflow.models.base) that validation reads through the evaluation engine
    stochastic = needs_target = has_exposure = False
    sizes, tiling, dtypes, precisions = SizeSpec(), TilingSpec(), (torch.float32,), ("fp32",)
    sample_temperature = 0.4

    def context(self, lq: torch.Tensor, exposure: float = 0.0) -> None:
        return None

    def __init__(self, scale: int = 2, dequantize: bool = True) -> None:
        super().__init__()
        self.scale, self.levels, self.pad_multiple = scale, 1, 1
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.an_bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.an_logs = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.register_buffer("an_initialized", torch.tensor(False))
        self.dequantize = dequantize
        self.poisoned = False  # tests flip this to make the next loss NaN

    def _mean(self, lq: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lq, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return up + self.body(up)

    @torch.no_grad()
    def initialize(self, batch: dict) -> None:
        hq, lq = batch["hq"], batch["lq"]
        r = hq - self._mean(lq)
        self.an_bias.copy_(-r.mean(dim=(0, 2, 3), keepdim=True))
        self.an_logs.copy_(-torch.log(r.std(dim=(0, 2, 3), keepdim=True) + 1e-6))
        self.an_initialized.fill_(True)

    def loss(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        hq, lq = batch["hq"], batch["lq"]
        if self.dequantize:
            hq = hq + (torch.rand(hq.shape, generator=generator, device=hq.device) - 0.5) / 255.0
        mean = self._mean(lq)
        z = (hq - mean + self.an_bias) * torch.exp(self.an_logs)
        nll = (0.5 * z.pow(2) - self.an_logs).mean()
        l1 = (mean - hq).abs().mean()
        total = nll + l1
        if self.poisoned:
            total = total * float("nan")
        return {"total": total, "nll": nll, "l1": l1}

    @torch.no_grad()
    def restore(self, lq, temperature: float = 0.0, noise=None, generator=None, **kwargs) -> torch.Tensor:
        return self._mean(lq).clamp(0, 1)


class StandInPairs(torch.utils.data.Dataset):
    """Deterministic synthetic pairs; ``global_rng_flip`` adds a flip drawn from the global torch RNG."""

    def __init__(self, n: int = 12, size: int = 16, scale: int = 2, seed: int = 0, global_rng_flip=False):
        self.n, self.size, self.scale, self.seed, self.flip = n, size, scale, seed, global_rng_flip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 10_000 + self.epoch * 100 + index)
        coarse = torch.rand(3, self.size // 4, self.size // 4, generator=g)
        hq = F.interpolate(coarse[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        if self.flip and torch.rand(()) < 0.5:
            hq = hq.flip(-1)
        lq = F.avg_pool2d(hq[None], self.scale)[0] * 0.3
        return {"hq": hq.clamp(0, 1), "lq": lq.clamp(0, 1), "name": f"img{index:02d}.png"}


# --------------------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors on a shared 2-core machine: two intra-op threads measured ~9x slower than one under load."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(
        seed=3,
        max_steps=10,
        batch_size=4,
        lr=2e-3,
        schedule="cosine",
        warmup_steps=2,
        grad_clip=1.0,
        ema_decay=0.9,
        log_every=1,
        val_every=4,
        val_max_images=2,
        val_save_images=1,
        checkpoint_every=3,
        keep_last=5,
        device="cpu",
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def make_trainer(run_dir: Path, cfg: TrainConfig, init_seed: int = 0, callbacks=(), **data_kw) -> Trainer:
    torch.manual_seed(init_seed)
    model = StandInRestorer()
    torch.manual_seed(cfg.seed)
    train = StandInPairs(n=12, **{"global_rng_flip": True, **data_kw})
    val = StandInPairs(n=2, seed=99)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(model, train, cfg, run_dir, val_set=val, callbacks=callbacks)


class Killed(Exception):
    pass


def kill_at(step: int):
    def callback(trainer, s, losses):
        if s == step:
            raise Killed

    return callback


def losses_by_step(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_log(run_dir, "train")}


# --------------------------------------------------------------------------------------------- exact resume
def test_killed_and_resumed_run_reproduces_the_uninterrupted_loss_curve(tmp_path):
    """Kill at step 7 (checkpoint at 6), scramble every global RNG, rebuild with another init, resume: the
    loss curve, validation scores and final weights equal the uninterrupted run's (data order across an epoch
    boundary, generator noise, global-RNG flips, warm-up + cosine lr, EMA and ActNorm init all take part)."""
    cfg = tiny_cfg()
    full = make_trainer(tmp_path / "full", cfg)
    full.fit()

    killed = make_trainer(tmp_path / "split", cfg, callbacks=[kill_at(7)])
    with pytest.raises(Killed):
        killed.fit()
    assert CheckpointManager(tmp_path / "split", 5).steps() == [3, 6]
    assert max(losses_by_step(tmp_path / "split")) == 7  # step 7 was logged, then lost with the process

    torch.manual_seed(12345), np.random.seed(7), random.seed(7)
    resumed = make_trainer(tmp_path / "split", cfg, init_seed=777)
    resumed.load_checkpoint(resumed.checkpoints.latest())
    resumed.logger.truncate_after(resumed.step)
    assert resumed.step == 6
    resumed.fit()

    a, b = losses_by_step(tmp_path / "full"), losses_by_step(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 11))
    for step in a:
        for key in ("total", "nll", "l1", "lr", "grad_norm"):
            assert abs(a[step][key] - b[step][key]) <= 1e-6, (step, key, a[step][key], b[step][key])
    assert len({round(a[s]["total"], 6) for s in a}) > 5  # the curve actually moves
    val_a, val_b = read_log(tmp_path / "full", "val"), read_log(tmp_path / "split", "val")
    assert [v["step"] for v in val_a] == [v["step"] for v in val_b] == [4, 8, 10]
    assert all(abs(x["psnr"] - y["psnr"]) <= 1e-6 for x, y in zip(val_a, val_b))
    for (name, p), q in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-6, rtol=0), name
    for name in full.ema.shadow:
        assert torch.allclose(full.ema.shadow[name].float(), resumed.ema.shadow[name].float(), atol=1e-6)


def test_resume_with_dataloader_workers_is_exact(tmp_path):
    """num_workers > 0, with an augmentation drawn from the global RNG inside the workers: items are seeded from
    (seed, epoch, index), so the resumed run still matches although batches land on other workers."""
    cfg = tiny_cfg(num_workers=2, max_steps=5, checkpoint_every=2, val_every=100, ema_decay=None)
    make_trainer(tmp_path / "full", cfg).fit()
    killed = make_trainer(tmp_path / "split", cfg, callbacks=[kill_at(3)])
    with pytest.raises(Killed):
        killed.fit()
    resumed = make_trainer(tmp_path / "split", cfg, init_seed=5)
    resumed.load_checkpoint(resumed.checkpoints.latest())
    resumed.logger.truncate_after(resumed.step)
    resumed.fit()
    a, b = losses_by_step(tmp_path / "full"), losses_by_step(tmp_path / "split")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
    assert all(abs(a[s]["total"] - b[s]["total"]) <= 1e-6 for s in a)


def test_items_are_seeded_per_index_and_loading_leaves_global_rng_alone():
    data = PerItemSeeded(StandInPairs(n=4, global_rng_flip=True), seed=1)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = [data[i]["hq"] for i in range(4)]
    assert torch.equal(torch.get_rng_state(), before)
    flips = [data[i]["hq"] for i in (3, 2, 1, 0)][::-1]  # another order, another RNG history
    assert all(torch.equal(x, y) for x, y in zip(first, flips))
    data.set_epoch(1)
    assert data.dataset.epoch == 1 and not torch.equal(data[0]["hq"], first[0])


# --------------------------------------------------------------------------------------------- NaN handling
def test_nan_loss_stops_with_one_line_message_and_keeps_last_good_checkpoint(tmp_path):
    def poison(trainer, step, losses):
        if step == 5:
            trainer.model.poisoned = True

    cfg = tiny_cfg(checkpoint_every=2, val_every=100)
    trainer = make_trainer(tmp_path / "run", cfg, callbacks=[poison])
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    msg = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in msg
    assert "step 6" in msg and "step_0000004" in msg and "--resume" in msg
    manager = CheckpointManager(tmp_path / "run", 5)
    assert manager.steps() == [2, 4]  # nothing saved at or after the bad step
    weights, state = manager.load(manager.latest())
    assert state["step"] == 4 and all(torch.isfinite(w).all() for w in weights.values())
    assert max(losses_by_step(tmp_path / "run")) == 5


# --------------------------------------------------------------------------------------------- checkpoints
def test_keeps_last_n_checkpoints_and_the_best_one(tmp_path):
    cfg = tiny_cfg(max_steps=8, checkpoint_every=2, keep_last=2, val_every=2, ema_decay=None)
    trainer = make_trainer(tmp_path / "run", cfg)
    summary = trainer.fit()
    manager = CheckpointManager(tmp_path / "run", 2)
    assert manager.steps() == [6, 8]
    assert not [p for p in manager.root.iterdir() if p.name.startswith(".")]  # no temp leftovers
    vals = read_log(tmp_path / "run", "val")
    best = max(vals, key=lambda v: v["psnr"])
    info = json.loads((manager.root / "best" / "best.json").read_text())
    assert info["step"] == best["step"] and info["value"] == pytest.approx(best["psnr"])
    assert summary["best"]["step"] == best["step"]
    weights, _ = manager.load(manager.latest())
    model = StandInRestorer()
    model.load_state_dict(weights)  # the step's model.safetensors is a complete state dict
    assert torch.equal(model.body[0].weight, trainer.model.body[0].weight)
    run = tmp_path / "run"
    samples = sorted(p.relative_to(run).as_posix() for p in (run / "samples").rglob("*.png"))
    assert samples == [f"samples/step_{s:07d}/000_img00.png" for s in (2, 4, 6, 8)]


def test_checkpoint_stores_ema_as_inference_weights_and_raw_weights_in_state(tmp_path):
    cfg = tiny_cfg(max_steps=3, checkpoint_every=3, val_every=100, ema_decay=0.5)
    trainer = make_trainer(tmp_path / "run", cfg)
    trainer.fit()
    weights, state = CheckpointManager.load(trainer.checkpoints.latest())
    assert torch.equal(weights["body.0.weight"], trainer.ema.shadow["body.0.weight"])
    assert torch.equal(state["raw_model"]["body.0.weight"], trainer.model.body[0].weight.detach())
    assert not torch.equal(weights["body.0.weight"], state["raw_model"]["body.0.weight"])


def test_damaged_checkpoint_gives_one_line_user_error(tmp_path):
    step = tmp_path / "checkpoints" / "step_0000002"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes(b"not a safetensors file")
    (step / "state.pt").write_bytes(b"junk")
    with pytest.raises(UserError) as info:
        CheckpointManager.load(step)
    assert "\n" not in str(info.value) and "step_0000002" in str(info.value)


# --------------------------------------------------------------------------------------------- logs
def test_logs_every_logged_step_as_csv_and_json_lines(tmp_path):
    cfg = tiny_cfg(max_steps=6, log_every=2, val_every=3, checkpoint_every=6)
    make_trainer(tmp_path / "run", cfg).fit()
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"step", "epoch", "total", "nll", "l1", "lr", "grad_norm", "samples_per_s"} <= set(header)
    assert [int(r.split(",")[0]) for r in rows[1:]] == [2, 4, 6]
    train = read_log(tmp_path / "run", "train")
    assert [r["step"] for r in train] == [2, 4, 6] and all(r["samples_per_s"] > 0 for r in train)
    assert (tmp_path / "run" / "val.csv").read_text().splitlines()[0].startswith("step,psnr")


# ------------------------------------------------------------------------------------ schedule, EMA, config
def test_warmup_multistep_and_cosine_schedules():
    cfg = TrainConfig(max_steps=100, warmup_steps=4, schedule="multistep", milestones=[0.5, 0.75], gamma=0.5)
    assert [lr_factor(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(49, cfg) == 1.0 and lr_factor(50, cfg) == 0.5 and lr_factor(75, cfg) == 0.25
    cos = TrainConfig(max_steps=104, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(4, cos) == pytest.approx(1.0)
    assert lr_factor(54, cos) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(104, cos) == pytest.approx(0.1)
    factors = [lr_factor(s, cos) for s in range(4, 105)]
    assert all(x >= y for x, y in zip(factors, factors[1:]))


def test_ema_averages_parameters_and_copies_buffers():
    net = nn.BatchNorm1d(2)
    ema = EMA(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(2.0)
    net.running_mean.fill_(5.0)
    ema.update(net, step=1000)  # decay warm-up long over: d = 0.9
    assert torch.allclose(ema.shadow["weight"], torch.full((2,), 0.9 * 1.0 + 0.1 * 2.0))
    assert torch.equal(ema.shadow["running_mean"], torch.full((2,), 5.0))
    with ema.applied(net):
        assert torch.allclose(net.weight, torch.full((2,), 1.1))
    assert torch.equal(net.weight, torch.full((2,), 2.0))


def test_train_config_is_strict_and_validated():
    with pytest.raises(ConfigError, match=r"train\.lrr.*did you mean 'lr'"):
        from_dict(TrainConfig, {"lrr": 1e-3}, "train")
    with pytest.raises(ConfigError, match="milestones"):
        TrainConfig(milestones=[20000, 30000])
    cfg = from_dict(TrainConfig, {"lr": "1e-4", "betas": [0.9, 0.999], "amp": "bf16"}, "train")
    assert cfg.lr == 1e-4 and cfg.betas == [0.9, 0.999]
    with pytest.raises(ConfigError, match="betas"):
        from_dict(TrainConfig, {"betas": [0.9]}, "train")
    with pytest.raises(ConfigError, match="amp"):
        from_dict(TrainConfig, {"amp": "fp8"}, "train")
    assert from_dict(TrainConfig, {"amp": "auto"}, "train").amp == "auto"


class TickClock:
    """A clock that moves one second per reading: one training step then takes exactly one second."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_time_budget_stops_after_the_budgeted_training_time_then_validates_saves_and_resumes(tmp_path):
    """train.time_budget_s counts training-step time only, stops mid-schedule, validates and saves like the end of
    a run, and the spent time survives a resume (a resumed run cannot restart its budget)."""
    with pytest.raises(ConfigError, match="time_budget_s"):
        TrainConfig(time_budget_s=0)
    cfg = tiny_cfg(max_steps=50, time_budget_s=3.5, val_every=100, checkpoint_every=100)
    trainer = make_trainer(tmp_path / "run", cfg)
    trainer.clock = TickClock()
    summary = trainer.fit()
    assert (
        summary["stopped_by"] == "time_budget_s" and summary["step"] == 4 and summary["train_seconds"] == 4.0
    )
    assert [v["step"] for v in read_log(tmp_path / "run", "val")] == [4]  # validated where it stopped
    assert CheckpointManager(tmp_path / "run", 5).steps() == [4]

    again = make_trainer(tmp_path / "run", cfg)
    again.load_checkpoint(again.checkpoints.latest())
    assert again.train_seconds == 4.0
    assert again.fit()["steps"] == 0  # the budget is spent: nothing more to do

    more = make_trainer(tmp_path / "run", tiny_cfg(max_steps=50, time_budget_s=6.5, val_every=100))
    more.load_checkpoint(more.checkpoints.latest())
    more.clock = TickClock()
    summary = more.fit()
    assert summary["step"] == 7 and summary["train_seconds"] == 7.0  # 4 s spent before + 3 steps of 1 s

    unbounded = make_trainer(tmp_path / "plain", tiny_cfg(max_steps=5))
    unbounded.clock = TickClock()
    assert unbounded.fit()["stopped_by"] == "max_steps" and unbounded.step == 5


def test_time_budget_clock_is_wall_time_or_this_process_cpu_time(tmp_path):
    """time_budget_clock: cpu counts the process's CPU seconds (time.process_time), which a busy second core
    inflates far less than the wall clock; anything else is a config error."""
    assert make_trainer(tmp_path / "w", tiny_cfg()).clock is time.perf_counter
    assert make_trainer(tmp_path / "c", tiny_cfg(time_budget_clock="cpu")).clock is time.process_time
    with pytest.raises(ConfigError, match="time_budget_clock"):
        from_dict(TrainConfig, {"time_budget_clock": "gpu"}, "train")


def test_batch_size_must_split_over_ranks_and_fit_the_dataset(tmp_path):
    with pytest.raises(UserError, match="fewer than one batch"):
        make_trainer(tmp_path / "a", tiny_cfg(batch_size=16))


def test_bf16_amp_runs_on_cpu_and_fp16_falls_back_to_float32(tmp_path, capsys, monkeypatch):
    from nightflow import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))  # no AMX
    monkeypatch.setattr(precision, "cpu_vendor", lambda: "GenuineIntel")  # where that measured slower
    trainer = make_trainer(tmp_path / "bf16", tiny_cfg(amp="bf16", max_steps=1))
    assert trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None  # as asked, with a note
    assert "without AMX" in capsys.readouterr().err
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    trainer = make_trainer(tmp_path / "bf16-amx", tiny_cfg(amp="bf16", max_steps=1))
    assert trainer.amp_dtype == torch.bfloat16 and "AMX" not in capsys.readouterr().err
    assert math.isfinite(trainer.fit()["losses"]["total"])
    trainer = make_trainer(tmp_path / "fp16", tiny_cfg(amp="fp16", max_steps=1))
    assert trainer.amp_dtype is None and trainer.scaler is None
    assert "needs CUDA" in capsys.readouterr().err
    assert math.isfinite(trainer.fit()["losses"]["total"])


def test_a_fine_tuning_run_scores_its_starting_weights_at_step_0_without_changing_training(tmp_path):
    """train.init_weights: val.csv gets the starting weights' score (the score to beat) at step 0; it never
    becomes best/ and draws nothing from the training RNG streams, so the run trains exactly as without it."""
    plain = make_trainer(tmp_path / "plain", tiny_cfg(max_steps=4))
    plain.fit()
    # the weights are loaded by train_run before the trainer exists; here both start from the same init seed
    tuned = make_trainer(tmp_path / "tuned", tiny_cfg(max_steps=4, init_weights="same-start"))
    tuned.fit()
    steps = [r["step"] for r in read_log(tmp_path / "tuned", "val")]
    assert steps == [0, 4] and [r["step"] for r in read_log(tmp_path / "plain", "val")] == [4]
    assert (tmp_path / "tuned" / "samples" / "step_0000000").is_dir()
    assert tuned.best["step"] == 4
    for a, b in zip(plain.model.state_dict().values(), tuned.model.state_dict().values()):
        assert torch.equal(a, b)
    assert read_log(tmp_path / "tuned", "val")[1] == read_log(tmp_path / "plain", "val")[0]


def _recorded_amp(trainer: Trainer) -> str:
    from safetensors import safe_open

    path = trainer.run_dir / "checkpoints" / "step_0000001" / "model.safetensors"
    with safe_open(str(path), "pt") as fh:
        return json.loads(fh.metadata()["nightflow"])["amp"]


def test_auto_amp_is_bf16_only_where_bf16_is_faster_and_checkpoints_record_the_choice(
    tmp_path, capsys, monkeypatch
):
    from nightflow import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))  # no AMX
    monkeypatch.setattr(precision, "cpu_vendor", lambda: "GenuineIntel")  # where that measured slower
    trainer = make_trainer(tmp_path / "no-amx", tiny_cfg(amp="auto", max_steps=1))
    err = capsys.readouterr().err
    assert trainer.amp_dtype is None and "train.amp=auto: float32" in err and "without AMX" not in err
    trainer.fit()
    assert _recorded_amp(trainer) == "none"
    monkeypatch.setattr(precision, "cpu_vendor", lambda: "AuthenticAMD")  # Zen 4: a step measured 1.3x faster
    trainer = make_trainer(tmp_path / "amd", tiny_cfg(amp="auto", max_steps=1))
    assert trainer.amp_dtype == torch.bfloat16 and "without AMX" not in capsys.readouterr().err
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    trainer = make_trainer(tmp_path / "amx", tiny_cfg(amp="auto", max_steps=1))
    assert trainer.amp_dtype == torch.bfloat16 and "train.amp=auto: bf16 autocast" in capsys.readouterr().err
    assert math.isfinite(trainer.fit()["losses"]["total"])
    assert _recorded_amp(trainer) == "bf16"


def test_bundled_recipes_choose_their_precision_per_machine():
    from nightflow.train.config import load_run_config

    recipes = sorted((Path(nightflow.__file__).parent / "configs" / "train").glob("*.yaml"))
    amps = {p.stem: load_run_config(p).train.amp for p in recipes}
    assert "bf16" not in amps.values(), amps  # a forced bf16 runs 1.16x slower on CPUs without AMX
    assert amps["lolisrflow-x2-tiny-synthetic"] == "auto"


# ------------------------------------------------------------------------------------ the real model, CLI
@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three smooth 48×48 photos for the on-the-fly synthetic dataset."""
    from nightflow.data.io import write_image

    root = tmp_path_factory.mktemp("photos")
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        coarse = torch.rand(1, 3, 6, 6, generator=gen)
        write_image(root / f"p{i}.png", F.interpolate(coarse, size=(48, 48), mode="bilinear")[0].clamp(0, 1))
    return root


def write_recipe(path: Path, photos: Path, **train) -> Path:
    settings = dict(max_steps=3, batch_size=2, log_every=1, val_every=2, val_max_images=1, val_save_images=1)
    settings.update(checkpoint_every=2, ema_decay=0.9, grad_clip=5.0, device="cpu", progress=False, **train)
    data = dict(format="synthetic", root=str(photos), scale=2, patch_size=16, length=4, seed=0)
    recipe = {"model": "lolisrflow-x2-tiny", "data": data, "val": {**data, "length": 1, "seed": 1}}
    path.write_text(yaml.safe_dump({**recipe, "train": settings}))
    return path


def test_cli_train_kill_resume_then_enhance_with_the_real_model(tmp_path, photos):
    """LoLiSRFlow x2 tiny on synthetic pairs (dequantisation noise, GT colour-map coin flips, ActNorm init and
    per-epoch data all live): killed after the step-2 checkpoint and resumed with `nightflow train --resume`,
    it logs the same losses as an uninterrupted run; `nightflow enhance` then uses the run's checkpoint."""
    recipe = write_recipe(tmp_path / "recipe.yaml", photos)
    train_run(recipe, out=tmp_path / "full")
    with pytest.raises(Killed):
        train_run(recipe, out=tmp_path / "split", callbacks=[kill_at(3)])
    assert main(["train", "--resume", str(tmp_path / "split")]) == 0
    a, b = losses_by_step(tmp_path / "full"), losses_by_step(tmp_path / "split")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        for key in ("total", "nll", "l1", "grad_norm"):
            assert abs(a[step][key] - b[step][key]) <= 1e-6, (step, key)
    saved = yaml.safe_load((tmp_path / "split" / "config.yaml").read_text())
    assert saved["model"]["name"] == "lolisrflow-x2-tiny" and saved["model"]["flow"]["levels"] == 3

    model = nightflow.load(str(tmp_path / "split" / "checkpoints" / "step_0000003"))
    assert model.restorer.scale == 2
    from nightflow.data.io import read_image, write_image

    write_image(tmp_path / "dark.png", torch.rand(3, 10, 14) * 0.2)
    out_dir = tmp_path / "out"
    assert (
        main(["enhance", str(tmp_path / "dark.png"), "-o", str(out_dir), "--model", str(tmp_path / "split")])
        == 0
    )
    (result,) = out_dir.glob("*.png")
    assert read_image(result).shape[:2] == (20, 28)


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nightflow train: error:") and "\n" not in err, err
    return err


def test_cli_user_errors_give_one_line_and_exit_code_2(tmp_path, photos, capsys):
    recipe = str(write_recipe(tmp_path / "recipe.yaml", photos))
    assert "recipe not found" in _one_line_error(capsys, ["train", str(tmp_path / "nope.yaml")])
    err = _one_line_error(capsys, ["train", recipe, "--set", "train.lrr=1"])
    assert "train.lrr" in err and "did you mean 'lr'" in err
    err = _one_line_error(capsys, ["train", recipe, "--set", "data.scale=4", "--out", str(tmp_path / "r")])
    assert "data.scale is 4" in err and "x2" in err
    assert not (tmp_path / "r").exists()  # nothing created for a recipe that cannot run
    err = _one_line_error(
        capsys, ["train", recipe, "--set", "train.batch_size=64", "--out", str(tmp_path / "r")]
    )
    assert "fewer than one batch" in err and not (tmp_path / "r").exists()
    err = _one_line_error(capsys, ["train", recipe, "--set", "data.root=", "--out", str(tmp_path / "r")])
    assert "data.root" in err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert "already exists and is not empty" in _one_line_error(capsys, ["train", recipe, "--out", str(busy)])
    assert "not a run directory" in _one_line_error(capsys, ["train", "--resume", str(busy)])
    assert "--resume RUN_DIR" in _one_line_error(capsys, ["train"])
    (busy / "config.yaml").write_text(
        (tmp_path / "recipe.yaml").read_text().replace("max_steps: 3", "max_steps: 9")
    )
    err = _one_line_error(capsys, ["train", recipe, "--resume", str(busy)])
    assert "differs" in err and "train.max_steps" in err
    assert (busy / "keep.txt").read_text() == "x"


def test_set_model_to_a_zoo_name_replaces_the_recipes_model_before_other_overrides():
    """README: ``nightflow train RECIPE --set model=lolisrflow-x4-tiny`` (a zoo name resolved after --set)."""
    from nightflow.train.run import load_recipe

    cfg = load_recipe("lolisrflow-x2-tiny-synthetic", ["model=lolisrflow-x4-tiny", "model.flow.hidden=48"])
    assert cfg.model.name == "lolisrflow-x4-tiny" and cfg.model.scale == 4 and cfg.model.flow.hidden == 48
    with pytest.raises(ConfigError, match="no-such-model"):
        load_recipe("lolisrflow-x2-tiny-synthetic", ["model=no-such-model"])


def test_init_weights_copies_every_tensor_and_refuses_a_model_that_does_not_fit(tmp_path):
    """train.init_weights (fine-tuning): the run starts from the given weights, settings without tensors (the
    scale floor) may differ, a different shape is one line naming the tensor."""
    import dataclasses

    from nightflow.models import build_any
    from nightflow.models.checkpoint import save_model
    from nightflow.models.zoo import get_config
    from nightflow.train.run import load_initial_weights

    cfg = get_config("lolisrflow-x2-tiny")
    torch.manual_seed(1)
    donor = build_any(cfg)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(0.01)  # away from any fresh initialisation
    path = save_model(donor, tmp_path / "donor.safetensors", cfg)
    floored = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, scale_floor=0.1))
    torch.manual_seed(2)
    model = build_any(floored)
    load_initial_weights(model, str(path))
    for (name, a), b in zip(donor.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    wider = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, hidden=48))
    with pytest.raises(UserError, match="does not fit.*shape differs"):
        load_initial_weights(build_any(wider), str(path))


def test_train_trainable_trains_only_the_matching_parameters_and_refuses_a_pattern_that_matches_none(
    tmp_path,
):
    """train.trainable: the matching tensors move, every other one keeps its value bit for bit, and a pattern
    that matches nothing is one line naming it."""
    from nightflow.train.freeze import freeze_except

    cfg = tiny_cfg(max_steps=3, ema_decay=None, trainable=["body.2.*"], val_every=100)
    trainer = make_trainer(tmp_path / "run", cfg)
    trainer.model.initialize = lambda batch: None  # as loaded weights: no data-dependent init moves a tensor
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    after = dict(trainer.model.named_parameters())
    moved = sorted(n for n in before if not torch.equal(before[n], after[n].detach()))
    assert moved == ["body.2.bias", "body.2.weight"]
    with pytest.raises(UserError, match="'body.9.\\*' matches no parameter"):
        freeze_except(trainer.model, ["body.2.*", "body.9.*"])
    with pytest.raises(ConfigError, match="train.trainable"):
        tiny_cfg(trainable=[])


def test_checkpoints_record_the_device_and_thread_count_the_run_trained_with(tmp_path):
    from safetensors import safe_open

    before = torch.get_num_threads()
    torch.set_num_threads(
        before + 1
    )  # not the process's default, so a count read from anywhere else would fail
    try:
        trainer = make_trainer(tmp_path / "run", tiny_cfg(max_steps=1))
        trainer.fit()
    finally:
        torch.set_num_threads(before)
    path = trainer.run_dir / "checkpoints" / "step_0000001" / "model.safetensors"
    with safe_open(str(path), "pt") as fh:
        recorded = json.loads(fh.metadata()["nightflow"])
    assert recorded["threads"] == before + 1 and recorded["device"] == "cpu"
