"""Inference engine: tile plans, blending weights, tiled == untiled, seamless samples, spread, memory bound."""

from __future__ import annotations

import math

import pytest
import torch

from nightflow import inference
from nightflow.errors import SettingError, UserError
from nightflow.models.base import TilingSpec
from standin_restorer import StandInRestorer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "multiple"),
    [
        (64, 64, 32, 8, 8),
        (200, 136, 48, 12, 8),
        (96, 40, 64, 16, 4),
        (37 + 3, 53 + 3, 16, 8, 8),
        (24, 24, 100, 8, 8),
    ],
)
def test_plan_covers_image_on_grid_with_overlap(height, width, tile, overlap, multiple):
    height, width = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    plan = inference.plan_tiles(height, width, tile, overlap, multiple)
    for starts, size, length in ((plan.ys, plan.tile_h, height), (plan.xs, plan.tile_w, width)):
        assert size % multiple == 0 and size <= length
        assert all(s % multiple == 0 for s in starts)
        assert starts[0] == 0 and starts[-1] + size == length
        assert list(starts) == sorted(set(starts))
        for a, b in zip(starts, starts[1:]):
            assert a + size - b >= min(overlap, size - multiple)  # consecutive tiles overlap enough


def test_plan_shrinks_tiles_to_avoid_wasted_overlap():
    plan = inference.plan_tiles(500, 500, 256, 32, 4)
    assert (plan.tile_h, plan.ys) == (188, (0, 156, 312))  # 3 tiles of 188, not 3 of 256
    assert plan.tile_h <= 256 and plan.count == 9
    assert inference.plan_tiles(2048, 1024, 256, 32, 4).tile_h == 256  # exact fit keeps the asked size


def test_plan_zero_tile_is_one_piece():
    plan = inference.plan_tiles(48, 80, 0, 8, 8)
    assert plan.count == 1 and (plan.tile_h, plan.tile_w) == (48, 80)


@pytest.mark.parametrize("margin", [0, 2, 12])
@pytest.mark.parametrize("starts", [(0, 24, 48), (0, 16, 40, 56), (0, 8, 16), (0,)])
def test_axis_weights_are_a_raised_cosine_partition_of_unity(starts, margin):
    tile, scale = 32 if len(starts) > 1 else 40, 2
    length = starts[-1] + tile
    weights = inference.axis_weights(starts, tile, length, scale, margin=margin)
    total = torch.zeros(length * scale)
    for s, w in zip(starts, weights):
        assert w.min() >= 0
        total[s * scale : s * scale + tile * scale] += w
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)
    assert torch.all(weights[0][:4] == 1)  # image border: no ramp
    if starts == (0, 24, 48):
        lead = (starts[0] + tile - starts[1]) * scale  # 16 output px shared by tiles 0 and 1
        cut = min(margin * scale, (lead - 1) // 2)
        mid = lead - 2 * cut
        k = torch.arange(mid, dtype=torch.float64)
        expected = torch.sin(0.5 * math.pi * (k + 0.5) / mid) ** 2
        torch.testing.assert_close(weights[1][cut : lead - cut].double(), expected, atol=1e-6, rtol=0)
        assert torch.all(weights[1][:cut] == 0)  # a tile's own border pixels are not used
        assert torch.all(weights[0][tile * scale - cut :] == 0)


def _lq(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 4 + 1, w // 4 + 1, generator=g)
    smooth = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize(("scale", "h", "w"), [(1, 64, 80), (2, 37, 53), (4, 45, 30)])
def test_tiled_matches_untiled(scale, h, w):
    model = StandInRestorer(scale=scale)
    lq = _lq(h, w)
    full = inference.restore(model, lq, tile=0)
    assert full.shape == (1, 3, scale * h, scale * w)
    model.calls.clear()
    tiled = inference.restore(model, lq, tile=16, overlap=8)
    assert len(model.calls) > 2  # really tiled
    assert all(c[-2:] == model.calls[0][-2:] for c in model.calls)  # one tile size
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max().item() < 2 / 255
    hard = inference.restore(model, lq, tile=16, overlap=0)
    assert (hard - full).abs().max() > (tiled - full).abs().max()  # blending really hides the seams


def test_tile_batch_gives_the_same_result_and_fewer_calls():
    model = StandInRestorer(scale=2)
    lq = _lq(48, 64)
    one = inference.restore(model, lq, tile=16, overlap=8, tile_batch=1)
    calls_one = len(model.calls)
    model.calls.clear()
    four = inference.restore(model, lq, tile=16, overlap=8, tile_batch=4)
    assert len(model.calls) == math.ceil(calls_one / 4)
    torch.testing.assert_close(one, four, atol=1e-6, rtol=0)


def test_batch_of_images_and_training_flag_kept():
    model = StandInRestorer(scale=2).train()
    lq = torch.cat([_lq(40, 40, seed=1), _lq(40, 40, seed=2)])
    out = inference.restore(model, lq, tile=16, overlap=8)
    assert out.shape == (2, 3, 80, 80)
    assert model.training
    single = inference.restore(model, lq[1:], tile=0)
    assert (out[1:] - single).abs().max() < 2 / 255
    assert out.min() >= 0 and out.max() <= 1


def test_samples_are_seamless_reproducible_and_different():
    model = StandInRestorer(scale=2)
    lq = _lq(40, 56)
    untiled = inference.sample(
        model, lq, n=3, temperature=0.8, generator=torch.Generator().manual_seed(5), tile=0
    )
    tiled = inference.sample(
        model, lq, n=3, temperature=0.8, generator=torch.Generator().manual_seed(5), tile=16
    )
    assert untiled.shape == (3, 1, 3, 80, 112)
    assert (tiled - untiled).abs().max() < 2 / 255
    assert (untiled[0] - untiled[1]).abs().mean() > 0.01
    again = inference.sample(
        model, lq, n=3, temperature=0.8, generator=torch.Generator().manual_seed(5), tile=0
    )
    torch.testing.assert_close(again, untiled, atol=0, rtol=0)


def test_temperature_zero_is_deterministic_and_refuses_noise_free_sampling():
    model = StandInRestorer(scale=2)
    lq = _lq(24, 24)
    a = inference.restore(model, lq, 0.0, tile=0)
    b = inference.restore(model, lq, 0.0, tile=0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="noise"):
        inference.restore(model, lq, 0.5, tile=0)
    with pytest.raises(ValueError, match="shape"):
        inference.restore(model, lq, 0.5, noise=torch.zeros(1, 3, 10, 10), tile=0)


def test_uncertainty_zero_at_temperature_zero_and_grows_with_temperature():
    model = StandInRestorer(scale=2)
    lq = _lq(24, 32)
    zero = inference.uncertainty(model, lq, n=3, temperature=0.0, tile=0)
    assert zero.shape == (1, 48, 64) and torch.count_nonzero(zero) == 0
    g = torch.Generator().manual_seed(0)
    warm = inference.uncertainty(model, lq, n=6, temperature=0.5, generator=g, tile=16)
    hot = inference.uncertainty(
        model, lq, n=6, temperature=1.0, generator=torch.Generator().manual_seed(0), tile=16
    )
    assert 0.005 < warm.mean() < hot.mean()
    with pytest.raises(ValueError):
        inference.uncertainty(model, lq, n=1)


def test_spread_accumulator_matches_std_of_stacked_samples():
    g = torch.Generator().manual_seed(3)
    xs = torch.rand(5, 2, 3, 6, 7, generator=g)
    acc = inference.SpreadAccumulator()
    for x in xs:
        acc.add(x)
    expected = xs.std(dim=0, unbiased=True).mean(dim=1)
    torch.testing.assert_close(acc.spread(), expected, atol=1e-6, rtol=1e-5)


def test_auto_tile_follows_available_memory(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(inference, "available_memory", lambda device: 64 << 30)
    assert inference.auto_tile(2, 256, 256, 1, cpu, 8) == 0  # fits: one piece
    monkeypatch.setattr(inference, "available_memory", lambda device: 16 << 30)
    tile = inference.auto_tile(4, 1024, 1024, 1, cpu, 8)
    assert 0 < tile < 1024 and tile % 8 == 0
    budget = (16 << 30) * inference.MEMORY_FRACTION_CPU
    assert (tile * 4) ** 2 * inference.BYTES_PER_OUTPUT_PIXEL <= budget  # the tile fits the budget...
    assert (
        (tile + 8) * 4
    ) ** 2 * inference.BYTES_PER_OUTPUT_PIXEL > budget  # ...and is the largest that does
    monkeypatch.setattr(inference, "available_memory", lambda device: 1 << 20)
    assert inference.auto_tile(4, 1024, 1024, 1, cpu, 8) == inference.MIN_AUTO_TILE  # floor
    model = StandInRestorer(scale=2)
    monkeypatch.setattr(inference, "available_memory", lambda device: 8 << 20)
    inference.restore(model, _lq(160, 160), tile=None)
    assert len(model.calls) > 1  # auto tiling kicked in under a small budget


def test_resolve_device():
    assert inference.resolve_device("cpu").type == "cpu"
    assert inference.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA"):
            inference.resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        inference.resolve_device("quantum")


def test_pad_to_multiple_replicates_and_handles_tiny_images():
    x = torch.rand(1, 3, 3, 5)
    y = inference.pad_to_multiple(x, 8)
    assert y.shape == (1, 3, 8, 8)
    torch.testing.assert_close(y[..., :3, :5], x)
    torch.testing.assert_close(y[..., 7, :5], x[..., 2, :])  # edge row replicated
    assert inference.pad_to_multiple(y, 8) is y  # already a multiple: no copy


@pytest.fixture(scope="module")
def real_x2():
    """The real FlowRestorer, lolisrflow-x2-tiny at random init."""
    from nightflow.models import build_model
    from nightflow.models.zoo import get_config

    return build_model(get_config("lolisrflow-x2-tiny")).eval()


def test_tiles_below_the_models_minimum_are_refused_and_auto_never_goes_below_it(real_x2, monkeypatch):
    least = real_x2.tiling.min_tile
    with pytest.raises(SettingError, match=f"needs tiles of at least {least} px"):
        inference.restore(real_x2, _lq(96, 128), tile=least - real_x2.tiling.grid)

    class BigTiles(StandInRestorer):
        @property
        def tiling(self):
            return TilingSpec(tileable=True, grid=8, margin=12, min_tile=256)

    monkeypatch.setattr(inference, "measure_memory", lambda *a, **k: inference.ASSUMED)
    model = BigTiles(scale=2)
    budget = 700 << 20  # less than 64 px tiles' worth beside the image buffers
    assert inference.auto_tile(2, 3000, 2000, 1, torch.device("cpu"), 8, budget=budget - (648 << 20)) < 256
    plan = inference.plan_for(model, 3000, 2000, None, max_memory=budget)
    assert plan.tile_h >= 256 and plan.tile_w >= 256


def test_real_model_tiled_matches_untiled_and_samples_are_seamless(real_x2):
    lq = (_lq(96, 128, seed=4) * 0.3).clamp(0, 1)
    tile = real_x2.tiling.min_tile
    plan = inference.plan_tiles(96, 128, tile, tile // 2, real_x2.pad_multiple)
    assert plan.count == 6
    full = inference.restore(real_x2, lq, tile=0)
    assert full.shape == (1, 3, 192, 256)
    torch.testing.assert_close(full, real_x2.restore(lq), atol=1e-6, rtol=0)  # one piece == the model itself
    tiled = inference.restore(real_x2, lq, tile=tile, overlap=tile // 2)
    assert (tiled - full).abs().max() < 2 / 255
    untiled_s = inference.sample(real_x2, lq, 2, 0.8, generator=torch.Generator().manual_seed(1), tile=0)
    tiled_s = inference.sample(
        real_x2, lq, 2, 0.8, generator=torch.Generator().manual_seed(1), tile=tile, overlap=tile // 2
    )
    assert (tiled_s - untiled_s).abs().max() < 2 / 255
    assert (untiled_s[0] - untiled_s[1]).abs().mean() > 0.05  # and they really are different samples


_MEMORY_SCRIPT = r"""
import json, sys, time
import torch
sys.path.insert(0, sys.argv[1])
from nightflow import inference


{factory}
torch.manual_seed(0)
lq = torch.rand(1, 3, 1024, 1024)
def kib(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak-RSS mark: measure restoring only
base = kib("VmRSS")
start = time.perf_counter()
out = inference.restore(model, lq, tile=128, overlap=16)
seconds = time.perf_counter() - start
print(json.dumps({{"shape": list(out.shape), "growth": (kib("VmHWM") - base) * 1024, "seconds": seconds,
                  "finite": bool(torch.isfinite(out).all())}}))
"""

_STANDIN_FACTORY = (
    "from standin_restorer import StandInRestorer\nmodel = StandInRestorer(scale=4, hr_width=16)"
)


def test_4096_output_tiled_stays_within_memory_bound():
    """×4 from 1024×1024 with 128-px tiles: peak RSS growth far below full-resolution features."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    script = _MEMORY_SCRIPT.format(factory=_STANDIN_FACTORY)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tests)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tests,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, 3, 4096, 4096] and result["finite"]
    full_features = 64 * 4096 * 4096 * 4  # one 64-channel float32 map at the output grid: 4 GiB
    output = 3 * 4096 * 4096 * 4  # the result itself: 192 MiB
    print(f"4096² tiled: peak RSS growth {result['growth'] / 2**20:.0f} MiB in {result['seconds']:.1f} s")
    assert result["growth"] < full_features / 8  # < 512 MiB
    assert result["growth"] >= output * 0.9  # the measurement sees at least the output it must hold
