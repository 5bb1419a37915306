"""DDP: `torchrun --standalone --nproc_per_node=2 ... nightflow train` with gloo on CPU trains LoLiSRFlow x2 tiny
in lock-step and equals `nightflow train` in one process with the same global batch.

The model's own randomness is switched off by config (model.quant=0: no dequantisation noise;
model.train_gt_ratio=0: no GT colour-map coin flips), since each rank draws it from its own generator. Adam's
eps is raised to 1e-3: with the default 1e-8 Adam turns rounding-level gradients into full-lr steps of random
sign, amplifying the harmless difference in summation order between an all-reduce and one big batch (measured:
weights then differ by up to 1.1e-4, half an lr step; with 1e-3 by 1.2e-7). Data augmentation, EMA, gradient
clipping and validation stay on. This file is also the torchrun worker script (see ``__main__``): it runs the
real `nightflow train` entry point and, as instrumentation, saves each rank's final weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from nightflow.cli import main
from nightflow.models import build_model
from nightflow.models.zoo import get_config
from nightflow.train import trainer as trainer_module
from nightflow.train.logging import read_log

SETS = ["model.quant=0", "model.train_gt_ratio=0", "train.eps=1e-3"]


def dump_weights_after_fit(dump_dir: Path) -> None:
    """Instrument Trainer.fit so every rank saves its raw weights when training ends."""
    fit = trainer_module.Trainer.fit

    def fit_and_dump(self):
        summary = fit(self)
        torch.save(self.model.state_dict(), dump_dir / f"{self.run_dir.name}-rank{self.ctx.rank}.pt")
        return summary

    trainer_module.Trainer.fit = fit_and_dump


def write_recipe(tmp_path: Path) -> Path:
    from nightflow.data.io import write_image

    gen = torch.Generator().manual_seed(0)
    for i in range(2):
        coarse = torch.rand(1, 3, 6, 6, generator=gen)
        image = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear")[0]
        write_image(tmp_path / "photos" / f"p{i}.png", image.clamp(0, 1))
    data = f"{{format: synthetic, root: {tmp_path / 'photos'}, scale: 2, patch_size: 16, length: 4}}"
    train = (
        "{max_steps: 3, batch_size: 2, log_every: 1, checkpoint_every: 2, val_every: 2, val_max_images: 1,"
        " ema_decay: 0.8, grad_clip: 5.0, device: cpu, progress: false}"
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(f"model: lolisrflow-x2-tiny\ndata: {data}\nval: {data}\ntrain: {train}\n")
    return path


def test_torchrun_two_gloo_ranks_match_each_other_and_one_process(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path)
    args = ["train", str(recipe), *[a for s in SETS for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__]
    ddp = subprocess.run(
        [*torchrun, str(tmp_path), *args, "--out", str(tmp_path / "ddp")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    monkeypatch.setattr(trainer_module.Trainer, "fit", trainer_module.Trainer.fit)  # undone after the test
    dump_weights_after_fit(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the ranks (and far faster than 2 threads on a loaded 2-core machine)
    try:
        assert main([*args, "--out", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)

    rank0, rank1, single = (
        torch.load(tmp_path / n) for n in ("ddp-rank0.pt", "ddp-rank1.pt", "single-rank0.pt")
    )
    assert set(rank0) == set(rank1) == set(single)
    floats = [k for k in single if single[k].is_floating_point()]
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # replicas bit-identical
    worst = max((rank0[k] - single[k]).abs().max().item() for k in floats)
    assert worst < 1e-5, worst  # measured 1.2e-7
    initial = build_model(get_config("lolisrflow-x2-tiny")).state_dict()
    changed = [k for k in floats if not torch.equal(single[k], initial[k])]
    assert len(changed) > len(floats) // 2  # the comparison is about trained weights

    a, b = read_log(tmp_path / "ddp"), read_log(tmp_path / "single")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for x, y in zip(a, b):  # rank 0 logs the mean over ranks = the global-batch loss
        assert (
            abs(x["total"] - y["total"]) < 1e-4
            and abs(x["grad_norm"] - y["grad_norm"]) < 1e-3 * y["grad_norm"]
        )
    assert read_log(tmp_path / "ddp", "ddp_sync")[0]["max_param_diff"] == 0.0
    assert [v["step"] for v in read_log(tmp_path / "ddp", "val")] == [2, 3]
    ckpts = sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir())
    assert ckpts == ["best", "step_0000002", "step_0000003"]  # written once, by rank 0


if __name__ == "__main__":  # torchrun worker: DUMP_DIR, then `nightflow` arguments
    dump_weights_after_fit(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
