"""The training loop: one code path for a single process and for torchrun DDP.

Why it is written this way: every source of randomness (data order, worker seeds, the model's own draws
through an explicit ``torch.Generator``, global RNGs) is either a pure function of (seed, epoch, step) or
saved in the checkpoint, so a run killed at step k and resumed reproduces the uninterrupted loss curve exactly
on CPU. The trainer needs only ``loss(batch, generator) -> {"total": ..., ...}`` and ``restore(lq,
temperature)`` from the model (plus ``initialize(batch)`` when it has data-dependent ActNorm), so non-flow
baselines reuse it.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..losses import check_batch_for
from ..precision import fast_bf16, training_amp
from .checkpoint import CheckpointManager, capture_rng_state, restore_rng_state, step_dir_name
from .config import TrainConfig
from .distributed import DistContext
from .ema import EMA
from .freeze import freeze_except
from .logging import RunLogger, message, progress_bar
from .sampling import PerItemSeeded, ResumableDistributedSampler
from .schedule import LRSchedule
from .validation import validate

StepCallback = Callable[["Trainer", int, dict[str, float]], None]


class TrainingDiverged(UserError):
    """The loss or the gradient became NaN/inf: the run stops without saving the bad state."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM: the run saved the state after its last finished step and stopped; ``--resume`` continues.

    A KeyboardInterrupt, so callers that stop on Ctrl-C still do; ``signum`` gives the exit code 128 + signum.
    """

    def __init__(self, text: str, signum: int) -> None:
        super().__init__(text)
        self.signum = signum


class _StopSignals:
    """Turns the first SIGINT/SIGTERM into a flag checked between steps (so the step in flight finishes and is
    saved); a second one interrupts at once. Installed only in the main thread, restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool = True) -> None:
        self.signum: int | None = None
        self.announce = announce
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # asked twice: stop now, the last checkpoint stays the resume point
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            sys.stderr.write(
                f"\n{signal.Signals(signum).name}: saving after this step (again to stop at once)\n"
            )

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def dataset_files(dataset: Any) -> list[Path]:
    """Image files a dataset reads (synthetic photos, or the LQ/HQ files of paired records), in order, unique."""
    files: dict[Path, None] = {}
    for photo in getattr(dataset, "photos", None) or []:
        files.setdefault(Path(photo), None)
    for record in getattr(dataset, "records", None) or []:
        for path in (getattr(record, "lq", None), getattr(record, "hq", None)):
            if path is not None:
                files.setdefault(Path(path), None)
    return list(files)


def check_dataset_files(*datasets: Any) -> int:
    """Decode every image of the datasets once, failing in one line on the first unreadable file.

    Why up front: a corrupt photo otherwise stops training at the step that first draws it, possibly hours in,
    and inside a DataLoader worker as a multi-line traceback.
    """
    from ..data.io import check_images

    files: dict[Path, None] = {}
    for ds in datasets:
        if ds is not None:
            files.update(dict.fromkeys(dataset_files(ds)))
    return check_images(files, max_pixels=0) if files else 0


class _LossModule(nn.Module):
    """Routes ``model.loss`` through ``forward`` so DistributedDataParallel can hook gradient averaging."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None) -> Any:
        return self.model.loss(batch, generator=generator)


@contextlib.contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Run a block (validation) without disturbing the global torch/numpy/python RNG streams of training."""
    np_state, py_state = np.random.get_state(), random.getstate()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Trainer:
    """Trains ``model`` on ``train_set`` as ``cfg`` says, writing logs and checkpoints to ``run_dir``.

    ``model_config`` (a ModelConfig) makes the saved weights self-describing for ``nightflow.load``;
    ``run_config`` (plain data) goes into every checkpoint; ``callbacks`` run after each step on every rank.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        cfg: TrainConfig,
        run_dir: str | Path,
        val_set: Dataset | None = None,
        model_config: Any | None = None,
        run_config: dict[str, Any] | None = None,
        ctx: DistContext | None = None,
        callbacks: Sequence[StepCallback] = (),
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx or DistContext()
        self.device = self.ctx.device
        self.run_dir = Path(run_dir)
        self.model = model.to(self.device)
        self.train_set = PerItemSeeded(train_set, cfg.seed)
        self.val_set = val_set
        self.model_config = model_config
        self.run_config = run_config or {}
        self.callbacks = list(callbacks)
        # before anything is created: a bad photo leaves no run behind
        check_dataset_files(train_set, val_set)
        if cfg.batch_size % self.ctx.world_size:
            raise UserError(
                f"train.batch_size {cfg.batch_size} is not divisible by the {self.ctx.world_size} processes; "
                "set it to a multiple with --set train.batch_size=N"
            )
        self.local_batch = cfg.batch_size // self.ctx.world_size
        self.sampler = ResumableDistributedSampler(
            train_set, num_replicas=self.ctx.world_size, rank=self.ctx.rank, seed=cfg.seed
        )
        self.steps_per_epoch = self.sampler.num_samples // self.local_batch
        if self.steps_per_epoch < 1:
            raise UserError(
                f"the training set has {len(train_set)} items, fewer than one batch of {cfg.batch_size}; "  # type: ignore[arg-type]
                "lower train.batch_size or add data"
            )
        if cfg.trainable is not None:
            trained, frozen = freeze_except(self.model, cfg.trainable)
            message(
                f"train.trainable: {trained} parameter tensors train, {frozen} are frozen", self.ctx.is_main
            )
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = opt_cls(
            params, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
        self.schedule = LRSchedule(self.optimizer, cfg)
        self.amp = self._resolve_amp()  # none | bf16 | fp16: what this run asks autocast for
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.ema: EMA | None = None
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed * 1_000_003 + 7919 * (self.ctx.rank + 1))
        self.step = 0
        self.initialized = False
        self.best: dict[str, Any] = {"metric": "psnr", "value": None, "step": None}
        if self.ctx.is_main:  # only now: a trainer that cannot start leaves no directory behind
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = CheckpointManager(self.run_dir, cfg.keep_last)
        self.logger = RunLogger(self.run_dir, enabled=self.ctx.is_main)
        self.wrapped: nn.Module | None = None
        self.last_saved_step: int | None = None
        self.last_val_step: int | None = None
        self.train_seconds = 0.0  # time spent in training steps, summed over resumes (train.time_budget_s)
        # what train_seconds is measured with (train.time_budget_clock; a test steps it by hand)
        self.clock = time.process_time if cfg.time_budget_clock == "cpu" else time.perf_counter

    # ------------------------------------------------------------------------------------------- setup
    def _resolve_amp(self) -> str:
        """``train.amp`` with ``auto`` decided for this device: ``bf16`` where bf16 runs faster than float32
        (:func:`~nightflow.precision.fast_bf16`), else ``none``; said once, and stored in every checkpoint's
        metadata (``amp``) so that a model card can tell how the weights were computed."""
        amp = training_amp(self.cfg.amp, self.device)
        if self.cfg.amp != "auto":
            return amp
        why = "runs faster than float32 here" if amp == "bf16" else "is not faster than float32 on this CPU"
        if self.device.type == "cuda":
            why = "is supported by this GPU" if amp == "bf16" else "is not supported by this GPU"
        shown = "bf16 autocast" if amp == "bf16" else "float32"
        message(f"train.amp=auto: {shown} on {self.device.type} (bf16 {why})", self.ctx.is_main)
        return amp

    def _amp_dtype(self) -> torch.dtype | None:
        if self.amp == "none":
            return None
        if self.amp == "bf16" and self.device.type == "cpu":
            if not fast_bf16(self.device):
                message(
                    "train.amp=bf16 on a CPU without AMX (nor AMD avx512_bf16): bf16 runs here at best at the "
                    "float32 rate (a lolisrflow-x2-tiny step measured 1.16x slower on such a Xeon: "
                    "benchmarks/profile_train_step.py); train.amp=none or auto trains faster",
                    self.ctx.is_main,
                )
            return torch.bfloat16  # AMX CPUs: convolutions several times faster; AMD avx512_bf16: 1.3x a step
        if self.device.type != "cuda":
            message(
                f"train.amp={self.amp} needs CUDA; training in float32 on {self.device}", self.ctx.is_main
            )
            return None
        return torch.bfloat16 if self.amp == "bf16" else torch.float16

    def _wrap(self) -> None:
        """Build the (DDP-)wrapped loss module once the weights are final (after ActNorm init or a resume)."""
        module = _LossModule(self.model)
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(
                module, device_ids=ids, find_unused_parameters=self.cfg.ddp_find_unused_parameters
            )
        self.wrapped = module
        if self.cfg.ema_decay is not None and self.ema is None:
            self.ema = EMA(self.model, self.cfg.ema_decay)

    @torch.no_grad()
    def _initialize(self, batch: dict[str, Any]) -> None:
        """Data-dependent init on the first *global* batch: identical on every rank and to one process."""
        init = getattr(self.model, "initialize", None)
        if callable(init):
            self.model.train()
            init({k: self.ctx.all_gather_cat(v) for k, v in batch.items() if torch.is_tensor(v)})
        self.initialized = True

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        """Loader for one epoch, starting at batch ``start_batch``; worker seeds derive from (seed, epoch)."""
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(start_batch * self.local_batch)
        gen = torch.Generator()
        gen.manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return DataLoader(
            self.train_set,
            batch_size=self.local_batch,
            sampler=self.sampler,
            num_workers=self.cfg.num_workers,
            drop_last=True,
            generator=gen,
            pin_memory=self.device.type == "cuda",
        )

    # ------------------------------------------------------------------------------------------- one step
    def _train_step(self, batch: dict[str, Any]) -> tuple[dict[str, float], float]:
        batch = {
            k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
        }
        if not self.initialized:
            # the batch keys every configured loss term needs (one line naming the key and the term), before the
            # data-dependent init reads the batch: e.g. an hq-reading term on unpaired data
            check_batch_for(self.model, batch)
            self._initialize(batch)
        if self.wrapped is None:
            self._wrap()
        assert self.wrapped is not None
        lr = self.schedule.apply(self.step)
        self.model.train()
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            out = self.wrapped(batch, self.generator)
        total = out["total"]
        keys = [k for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1]
        local = torch.stack([out[k].detach().float().reshape(()) for k in keys])
        flag = torch.tensor([0.0 if torch.isfinite(total.detach()).item() else 1.0], device=local.device)
        reduced = self.ctx.all_reduce_mean(torch.cat([local, flag]))
        losses = {k: float(v) for k, v in zip(keys, reduced[:-1].tolist())}
        if reduced[-1].item() > 0:
            bad = losses.get("total", float("nan"))
            raise TrainingDiverged(self._diverged_message(f"loss is {bad}"))
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the update itself when fp16 gradients overflowed
            self.scaler.update()
        else:
            if not math.isfinite(grad_norm):
                raise TrainingDiverged(self._diverged_message(f"gradient norm is {grad_norm}"))
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        losses["lr"] = lr
        return losses, grad_norm

    def _stop_if_signalled(self, stop: _StopSignals) -> None:
        """After a finished step: if any rank got SIGINT/SIGTERM, save that step and raise TrainingInterrupted."""
        signum = stop.signum
        if self.ctx.distributed:  # every rank must agree, or the collective save below would hang
            flag = torch.tensor([0.0 if signum is None else 1.0], device=self.device)
            if self.ctx.all_reduce_mean(flag).item() > 0:
                signum = signum or int(signal.SIGTERM)
        if signum is None:
            return
        if self.last_saved_step != self.step:
            self.save_checkpoint()
        name = signal.Signals(signum).name
        raise TrainingInterrupted(
            f"{name} at step {self.step}: saved {self.checkpoints.root / step_dir_name(self.step)}; "
            f"continue with --resume {self.run_dir}",
            int(signum),
        )

    def _diverged_message(self, what: str) -> str:
        last = self.checkpoints.latest()
        keep = f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
        return (
            f"{what} at step {self.step + 1}; stopped without saving that state ({keep}); "
            f"lower train.lr or set train.grad_clip, then continue with --resume {self.run_dir}"
        )

    # ------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything but the inference weights: resuming from it continues the run bit-for-bit on CPU."""
        rng = capture_rng_state({"loss": self.generator})
        if self.ctx.distributed:
            gathered: list[Any] = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng_per_rank = gathered
        else:
            rng_per_rank = [rng]
        return {
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "world_size": self.ctx.world_size,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_per_rank,
            "best": dict(self.best),
            "train_seconds": self.train_seconds,
            # a copy: the live tensors hold the EMA weights while the checkpoint is written
            "raw_model": _copy_state(self.model) if self.ema is not None else None,
            "config": self.run_config,
        }

    @contextlib.contextmanager
    def inference_weights(self) -> Iterator[nn.Module]:
        """The weights to validate and export: the EMA copy when EMA is on, else the raw model."""
        if self.ema is not None:
            with self.ema.applied(self.model) as m:
                yield m
        else:
            yield self.model

    def _metadata(self) -> dict[str, Any]:
        # amp: the autocast dtype actually used (float32 = "none"), also where the recipe said auto
        amp = "none" if self.amp_dtype is None else ("bf16" if self.amp_dtype == torch.bfloat16 else "fp16")
        # threads and device: what the run trained on, for the model card (bundling reads them from here, not
        # from the machine that bundles)
        return {
            "step": self.step,
            "ema": self.ema is not None,
            "run_dir": str(self.run_dir),
            "amp": amp,
            "device": self.device.type,
            "threads": torch.get_num_threads(),
        }

    def save_checkpoint(self) -> Path | None:
        state = self.state_dict()  # collective in DDP: every rank contributes its RNG state
        path = None
        if self.ctx.is_main:
            with self.inference_weights() as m:
                path = self.checkpoints.save(self.step, m, state, self.model_config, self._metadata())
        self.last_saved_step = self.step
        self.ctx.barrier()
        return path

    def load_checkpoint(self, step_dir: Path) -> None:
        """Restore weights, EMA, optimiser, schedule, step and RNG states from ``step_dir``."""
        weights, state = CheckpointManager.load(Path(step_dir))  # one-line UserError if damaged or NaN
        try:
            self._load_weights_and_optimizer(weights, state)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            text = " ".join(str(exc).split())[:200]
            raise UserError(
                f"checkpoint {step_dir} does not fit this model or recipe ({text}); resume with the recipe it was "
                "written with, or delete that folder to resume from an earlier one"
            ) from None
        rngs = state["rng"]
        if len(rngs) != self.ctx.world_size:
            message(
                f"resuming a {len(rngs)}-process run on {self.ctx.world_size}: data order is kept, "
                "random draws are not bit-identical",
                self.ctx.is_main,
            )
        restore_rng_state(rngs[self.ctx.rank % len(rngs)], {"loss": self.generator})
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.best = self._resumed_best(state.get("best"))
        self.initialized = True
        self.last_saved_step = self.step
        self._wrap()

    def _load_weights_and_optimizer(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        if state.get("raw_model") is not None:  # saved with EMA: weights file = EMA, state = raw weights
            self.model.load_state_dict(state["raw_model"])
            if self.cfg.ema_decay is not None:
                self.ema = EMA(self.model, self.cfg.ema_decay)
                self.ema.load_state_dict(weights)
        else:  # EMA switched on at resume starts from the current weights (in _wrap)
            self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def _resumed_best(self, saved: dict[str, Any] | None) -> dict[str, Any]:
        """The best score to beat after a resume: what checkpoints/best holds on disk, whatever the state says.

        Why: a state written before the last validation (or by an older nightflow) can say ``value = None``,
        and the next validation would then replace a better ``best`` with a worse one.
        """
        metric = (saved or {}).get("metric") or self.best["metric"]
        on_disk = self.checkpoints.read_best()
        if on_disk is not None and on_disk.get("metric", metric) == metric:
            return {"metric": metric, "value": on_disk["value"], "step": on_disk["step"]}
        return {"metric": metric, "value": None, "step": None}  # no best/ yet: the next validation writes it

    # ------------------------------------------------------------------------------------------- validation
    def validate(self, update_best: bool = True) -> dict[str, float] | None:
        """Scores of the inference weights on the fixed validation set (rank 0); updates checkpoints/best unless
        ``update_best`` is False (the step-0 score of a fine-tuning run, which only logs)."""
        self.last_val_step = self.step
        if self.val_set is None or not self.ctx.is_main:
            return None
        samples_dir = self.run_dir / "samples" / step_dir_name(self.step)
        with isolated_rng(self.device), self.inference_weights() as m:
            metrics = validate(
                m,
                self.val_set,
                self.device,
                max_images=self.cfg.val_max_images,
                save_images=self.cfg.val_save_images,
                samples_dir=samples_dir,
                temperature=self.cfg.val_temperature,
                seed=self.cfg.seed,
            )
            value = metrics.get(self.best["metric"]) if update_best else None
            if value is not None and math.isfinite(value):
                if self.best["value"] is None or value > self.best["value"]:
                    self.best.update(value=value, step=self.step)
                    self.checkpoints.save_best(
                        self.step, self.best["metric"], value, m, self.model_config, self._metadata()
                    )
        self.logger.log("val", {"step": self.step, **metrics})
        return metrics

    # ------------------------------------------------------------------------------------------- the loop
    def budget_spent(self) -> bool:
        """Whether train.time_budget_s is used up (rank 0's clock decides, so that every rank stops together)."""
        if self.cfg.time_budget_s is None:
            return False
        spent = self.train_seconds >= self.cfg.time_budget_s
        return bool(self.ctx.broadcast_object(spent)) if self.ctx.distributed else spent

    def fit(self) -> dict[str, Any]:
        """Train until ``cfg.max_steps`` (or ``cfg.time_budget_s``); return a summary (steps, last losses, best
        score, throughput, why it stopped)."""
        cfg, main = self.cfg, self.ctx.is_main
        if self.step >= cfg.max_steps or self.budget_spent():
            limit = (
                f"train.max_steps={cfg.max_steps}; raise it with --set train.max_steps=N"
                if self.step >= cfg.max_steps
                else f"train.time_budget_s={cfg.time_budget_s} ({self.train_seconds:.0f} s trained); raise it "
                "with --set train.time_budget_s=S"
            )
            message(f"run already at step {self.step}, at {limit} to continue", main)
            return {"steps": 0, "step": self.step, "best": self.best, "run_dir": str(self.run_dir)}
        if self.step == 0 and cfg.init_weights:
            # the score to beat: the weights this fine-tuning run starts from, as val.csv's step 0 (never best/)
            self.validate(update_best=False)
        start_step, t_start = self.step, time.perf_counter()
        bar = progress_bar(cfg.max_steps, self.step, main and cfg.progress)
        last: dict[str, float] = {}
        t_log, steps_since_log = time.perf_counter(), 0
        stop = _StopSignals(announce=main)
        stopped_by = "max_steps"
        try:
            stop.__enter__()
            t_mark = self.clock()
            while self.step < cfg.max_steps and stopped_by == "max_steps":
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                for batch in self._loader(epoch, offset):
                    losses, grad_norm = self._train_step(batch)
                    self.train_seconds += self.clock() - t_mark
                    steps_since_log += 1
                    last = losses
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        now = time.perf_counter()
                        rate = steps_since_log * cfg.batch_size / max(now - t_log, 1e-9)
                        record = {"step": self.step, "epoch": epoch, **losses, "grad_norm": grad_norm}
                        record.update(samples_per_s=rate, elapsed_s=now - t_start)
                        self.logger.log("train", record)
                        bar.set_postfix(
                            loss=f"{losses['total']:.4f}", lr=f"{losses['lr']:.2e}", refresh=False
                        )
                        t_log, steps_since_log = now, 0
                    bar.update(1)
                    if self.step % cfg.val_every == 0:
                        self.validate()
                    if self.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                    for callback in self.callbacks:
                        callback(self, self.step, losses)
                    self._stop_if_signalled(stop)
                    if self.step >= cfg.max_steps:
                        break
                    if self.budget_spent():
                        stopped_by = "time_budget_s"
                        message(
                            f"train.time_budget_s={cfg.time_budget_s} reached at step {self.step} "
                            f"({self.train_seconds:.0f} s of training steps)",
                            main,
                        )
                        break
                    t_mark = self.clock()
            if self.last_val_step != self.step:
                self.validate()
                self.last_saved_step = None  # the state must record this validation's best: save again
            if self.last_saved_step != self.step:
                self.save_checkpoint()
            sync = self.ctx.max_param_difference(self.model)
            if self.ctx.distributed:
                self.logger.log("ddp_sync", {"step": self.step, "max_param_diff": sync})
        except Exception:
            if stop.signum is not None and not self.ctx.distributed:  # e.g. workers ended by the same Ctrl-C
                self._stop_if_signalled(stop)
            raise
        finally:
            stop.__exit__()
            bar.close()
        elapsed = time.perf_counter() - t_start
        done = self.step - start_step
        return {
            "steps": done,
            "step": self.step,
            "losses": last,
            "best": self.best,
            "samples_per_s": done * cfg.batch_size / max(elapsed, 1e-9),
            "elapsed_s": elapsed,
            "train_seconds": self.train_seconds,
            "stopped_by": stopped_by,
            "run_dir": str(self.run_dir),
            "max_param_diff": sync,
        }
