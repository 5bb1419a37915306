"""Official LLFlow-small (wyf0912/LLFlow, ``code/confs/LOL_smallNet.yml``) vs nightflow ``llflow-small``, side by side.

Both random-init (time does not depend on the weights), one 400×600 low-light input, the same torch thread count,
in one process: one untimed warm-up call each, then ``rounds`` interleaved A/B rounds (the order alternates, ABBA,
so drift of a shared machine hits both alike), each round also timing a 64→64 3×3 conv (1×64×256², the
``benchmarks.common`` probe) for this run's reference conv rate. FLOPs of one call each are counted with
``torch.utils.flop_counter.FlopCounterMode``; achieved GFLOP/s = FLOPs / median time.

Timed calls: official = its test.py preprocessing (log(x + 1e-3), per-channel histogram equalisation, concat) +
``LLFlow(lr=…, reverse=True)`` (decode at the colour-map prior mean, heat 0); nightflow = ``model.restore(lq)``
(its own preprocessing included, temperature 0).

The official code is never part of this repository: point ``NIGHTFLOW_LLFLOW_OFFICIAL`` at a folder holding the
release's ``code/`` directory (default ``/work/official/llflow``), e.g. ``git clone
https://github.com/wyf0912/LLFlow /work/official/llflow``. Its ``torchvision.utils`` and ``natsort`` imports are
only for saving images and listing files: when those packages are missing they are replaced by in-memory stubs.
Without the folder the official row is skipped with a message and the nightflow row still runs.

``python -m benchmarks.bench_llflow_official [--rounds 3] [--threads N] [--size 400x600]``
(``make bench`` runs it with the other benchmarks; ``--quick`` there means one round).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import conv_throughput_gflops, count_params, machine, save, table
from nightflow.flow import count_free_params
from nightflow.flow.fold import folded

ENV = "NIGHTFLOW_LLFLOW_OFFICIAL"
DEFAULT_DIR = Path("/work/official/llflow")
CONF = "LOL_smallNet.yml"
SIZE = (400, 600)  # H×W, as LLFlow's paper reports its cost (and a multiple of 8, which both models need)
# modules the release builds but never calls in the forward or reverse pass (dead weights, not reproduced by
# nightflow): ConEncoder1 HRconv, downconv3, conv_last, awb_para; FlowUpsamplerNet.f
DEAD_ENCODER = ("HRconv", "downconv3", "conv_last", "awb_para")


def official_dir() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_DIR)


def _stub_missing(name: str, attrs: dict) -> None:
    """Insert an in-memory module ``name`` (dotted: parents too) if the real package is not installed."""
    top = name.split(".")[0]
    if top in sys.modules or importlib.util.find_spec(top) is not None:
        return
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[sub])
    for k, v in attrs.items():
        setattr(sys.modules[name], k, v)


def _unused(*_a, **_k):
    raise RuntimeError("stub: not available in this benchmark")


def load_official(root: Path):
    """(LLFlow network, its parsed options) built from the release at ``root`` with random init, or raise
    FileNotFoundError / ImportError with the reason."""
    code = root / "code"
    for rel in (f"confs/{CONF}", "models/modules/LLFlow_arch.py", "options/options.py"):
        if not (code / rel).is_file():
            raise FileNotFoundError(f"{code / rel} not found")
    _stub_missing("torchvision.utils", {"save_image": _unused, "make_grid": _unused})
    _stub_missing("natsort", {"natsorted": sorted})
    _stub_missing("cv2", {})  # utils.util imports it at module level; the network never calls it
    sys.path.insert(0, str(code))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            from models.modules.LLFlow_arch import LLFlow
            from options import options

            opt = options.dict_to_nonedict(options.parse(str(code / "confs" / CONF), is_train=True))
            torch.manual_seed(0)
            np.random.seed(0)
            g = opt["network_G"]
            net = LLFlow(
                in_nc=g["in_nc"], out_nc=g["out_nc"], nf=g["nf"], nb=g["nb"], scale=opt["scale"],
                K=g["flow"]["K"], opt=opt,
            )  # fmt: skip
    finally:
        sys.path.remove(str(code))
    return net.eval(), opt


def official_live_params(net) -> int:
    dead = sum(count_params(getattr(net.RRDB, n)) for n in DEAD_ENCODER)
    return count_params(net) - dead - count_params(net.flowUpsamplerNet.f)


def _equalize(u8: np.ndarray) -> np.ndarray:
    """cv2.equalizeHist on one uint8 channel (LLFlow's test.py), in numpy: LUT round((cdf − cdf_min)·255 /
    (N − cdf_min))."""
    hist = np.bincount(u8.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    cdf_min = cdf[np.nonzero(hist)[0][0]]
    denom = max(int(cdf[-1] - cdf_min), 1)
    lut = np.clip(np.round((cdf - cdf_min) * 255.0 / denom), 0, 255).astype(np.uint8)
    return lut[u8]


def official_call(net, img_u8: np.ndarray):
    """LLFlow test.py's path from an H×W×3 uint8 image: t() → log → concat HE → reverse at heat 0."""

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))[None].astype(np.float32)) / 255

    def call():
        his = np.stack([_equalize(img_u8[..., c]) for c in range(3)], axis=-1)
        lr = torch.log(torch.clamp(t(img_u8) + 1e-3, min=1e-3))
        lr = torch.cat([lr, t(his)], dim=1)
        with warnings.catch_warnings():  # its forward is decorated with torch.cuda.amp.autocast (no-op here)
            warnings.simplefilter("ignore")
            sr, _ = net(lr=lr, z=None, eps_std=0, reverse=True)
        return sr

    return call


def nightflow_model():
    from benchmarks.bench_inference import build_restorer

    return build_restorer("llflow-small")


def _flops(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(quick: bool = False, rounds: int | None = None, threads: int | None = None, size=SIZE) -> dict:
    rounds = rounds or (1 if quick else 3)
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    h, w = size
    rng = np.random.default_rng(0)
    img_u8 = (rng.random((h, w, 3)) ** 2 * 80).astype(np.uint8)  # a dark image (values 0..79)
    lq = torch.from_numpy(img_u8.transpose(2, 0, 1).copy())[None].float() / 255

    contenders = {}
    skipped = None
    root = official_dir()
    try:
        net, _ = load_official(root)
        contenders["official LLFlow-small"] = {
            "fn": official_call(net, img_u8),
            "params": count_params(net),
            "params_used": official_live_params(net),
        }
    except FileNotFoundError as exc:
        skipped = (
            f"official LLFlow-small skipped: {exc} (set {ENV} to a folder holding the release's code/, "
            f"e.g. git clone https://github.com/wyf0912/LLFlow)"
        )
    except Exception as exc:  # a broken or different release: say why, and still time nightflow
        skipped = (
            f"official LLFlow-small skipped: could not build it from {root} ({type(exc).__name__}: {exc})"
        )
    if skipped:
        print(skipped)
    model = nightflow_model()
    contenders["nightflow llflow-small"] = {
        "fn": lambda: model.restore(lq),
        "params": count_params(model),
        "params_used": count_free_params(model),
    }
    fast = folded(
        model
    )  # as `nightflow enhance` runs it: ActNorm folded into its convs (nightflow.flow.fold)
    contenders["nightflow llflow-small, folded"] = {
        "fn": lambda: fast.restore(lq),
        "params": count_params(model),
        "params_used": count_free_params(model),
    }

    fast_cl = folded(model).to(memory_format=torch.channels_last)
    lq_cl = lq.contiguous(memory_format=torch.channels_last)
    contenders["nightflow llflow-small, folded + channels_last"] = {
        "fn": lambda: fast_cl.restore(lq_cl),
        "params": count_params(model),
        "params_used": count_free_params(model),
    }

    names = list(contenders)
    with torch.no_grad():
        for c in contenders.values():
            c["fn"]()  # warm-up (nightflow caches its 1×1-conv inverses on the first call)
            c["flops"] = _flops(c["fn"])
            c["times"] = []
        conv_rates = []
        for r in range(rounds):
            conv_rates.append(conv_throughput_gflops(channels=64, size=256, repeats=1))
            for name in names if r % 2 == 0 else names[::-1]:
                contenders[name]["times"].append(_timed(contenders[name]["fn"]))
    conv = statistics.median(conv_rates)
    rows = []
    for name, c in contenders.items():
        med = statistics.median(c["times"])
        gfs = c["flops"] / med / 1e9
        rows.append(
            {
                "model": name,
                "params_M": c["params"] / 1e6,
                "params_used_M": c["params_used"] / 1e6,
                "gflops": c["flops"] / 1e9,
                "seconds": " / ".join(f"{t:.2f}" for t in c["times"]),
                "median_s": med,
                "gflop_per_s": gfs,
                "pct_of_conv_rate": 100 * gfs / conv,
            }
        )
    if skipped:
        rows.insert(0, {"model": "official LLFlow-small", "seconds": "skipped (see message)"})
    ratio = ratio_folded = ratio_cl = None
    with torch.no_grad():
        reference = model.restore(lq)
        max_diff = float((fast.restore(lq) - reference).abs().max()) * 255
        max_diff_cl = float((fast_cl.restore(lq_cl) - reference).abs().max()) * 255
    if "official LLFlow-small" in contenders:
        t_off, t_ours, t_fold, t_cl = (statistics.median(contenders[n]["times"]) for n in names)
        ratio, ratio_folded, ratio_cl = t_off / t_ours, t_off / t_fold, t_off / t_cl
    print(
        f"\nLLFlow-small, official vs nightflow: {h}×{w} input, {threads} thread(s), {rounds} interleaved round(s); "
        f"3×3 conv 64→64 this run: {conv:.1f} GFLOP/s (rounds: {', '.join(f'{x:.1f}' for x in conv_rates)})"
    )
    cols = [
        "model",
        "params_M",
        "params_used_M",
        "gflops",
        "seconds",
        "median_s",
        "gflop_per_s",
        "pct_of_conv_rate",
    ]
    print(table(rows, cols))
    if ratio is not None:
        print(
            f"nightflow speed-up over official (median time ratio official/nightflow): {ratio:.2f}× "
            f"(folded: {ratio_folded:.2f}×; folded + channels_last: {ratio_cl:.2f}×; max output difference from "
            f"unfolded: folded {max_diff:.5f}/255, folded + channels_last {max_diff_cl:.5f}/255)"
        )
    payload = {
        "benchmark": "llflow_official",
        "size": [h, w],
        "rounds": rounds,
        "threads": threads,
        "conv_gflops": conv,
        "conv_gflops_rounds": conv_rates,
        "official_dir": str(root),
        "skipped": skipped,
        "speedup_official_over_nightflow": ratio,
        "speedup_official_over_nightflow_folded": ratio_folded,
        "speedup_official_over_nightflow_folded_channels_last": ratio_cl,
        "folded_max_diff_255": max_diff,
        "folded_channels_last_max_diff_255": max_diff_cl,
        "rows": rows,
        "machine": machine(),
    }
    print(f"saved {save('llflow_official', payload)}")
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved A/B rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--size", default="400x600", help="input H×W (default 400x600)")
    args = parser.parse_args()
    hh, ww = (int(v) for v in args.size.lower().split("x"))
    run(quick=args.quick, rounds=args.rounds, threads=args.threads, size=(hh, ww))
