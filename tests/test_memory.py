"""Automatic tiling from measured memory (issue 15 item 4): the probe, the plan it gives, the user's bound."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch

from nightflow import inference, memory
from nightflow.api import Model
from nightflow.commands._args import memory_size
from nightflow.errors import SettingError
from nightflow.memory import MemoryModel
from standin_restorer import StandInRestorer

pytestmark = pytest.mark.usefixtures("one_thread")
LINUX = sys.platform.startswith("linux")
CPU = torch.device("cpu")


@pytest.mark.skipif(not LINUX, reason="peak RSS is read from /proc")
def test_peak_rss_can_be_reset_and_follows_an_allocation():
    assert memory.trim_heap()
    assert memory.reset_peak_rss()
    base = memory.rss_bytes()
    block = torch.ones(64 << 18)  # 64 MiB, touched
    assert memory.peak_rss_bytes() - base > 60 << 20
    del block


@pytest.mark.skipif(not LINUX, reason="peak RSS is read from /proc")
def test_probe_measures_a_model_whose_memory_grows_with_the_output_and_caches_it():
    light, heavy = StandInRestorer(scale=2), StandInRestorer(scale=2, hr_width=64)
    m_light = inference.measure_memory(light, CPU)
    m_heavy = inference.measure_memory(heavy, CPU)
    assert m_light.source == m_heavy.source == "measured (peak RSS)"
    # a 64-channel float32 map on the output grid is 256 B/px, live beside another one: heavy costs more
    assert m_heavy.per_pixel > m_light.per_pixel + 200
    assert m_heavy.per_pixel < inference.BYTES_PER_OUTPUT_PIXEL * 4  # and is not an absurd figure
    calls = len(heavy.calls)
    assert inference.measure_memory(heavy, CPU) is m_heavy and len(heavy.calls) == calls  # cached
    assert len(heavy.calls) == 2  # one warm-up tile, one measured tile
    assert inference.measure_memory(heavy, CPU, batch=2) is not m_heavy  # per batch


def test_probe_says_assumed_where_the_peak_cannot_be_read(monkeypatch):
    monkeypatch.setattr(inference, "reset_peak_rss", lambda: False)
    assert inference.measure_memory(StandInRestorer(scale=2), CPU) is memory.ASSUMED


def test_auto_tile_is_the_largest_whose_measured_need_fits_the_budget():
    model = MemoryModel(per_pixel=1000.0, source="measured (peak RSS)")
    budget = 400e6
    tile = inference.auto_tile(2, 4096, 4096, 1, CPU, 8, memory=model, budget=budget)
    assert tile % 8 == 0 and model.need((2 * tile) ** 2) <= budget < model.need((2 * (tile + 8)) ** 2)
    assert inference.auto_tile(2, 100, 100, 1, CPU, 8, memory=model, budget=budget) == 0  # fits whole
    heavier = MemoryModel(4000.0, "measured (peak RSS)")  # 4× the bytes per pixel: about half the side
    assert abs(inference.auto_tile(2, 4096, 4096, 1, CPU, 8, memory=heavier, budget=budget) - tile / 2) <= 8


def test_plan_follows_max_memory_and_small_images_skip_the_probe(monkeypatch):
    monkeypatch.setattr(inference, "available_memory", lambda device: 64 << 30)
    model = StandInRestorer(scale=2)
    assert inference.plan_for(model, 200, 200, None).count == 1 and model.calls == []  # no probe
    measured = MemoryModel(2000.0, "measured (peak RSS)")
    monkeypatch.setattr(inference, "measure_memory", lambda *a, **k: measured)
    wide = inference.plan_for(model, 3000, 2000, None, max_memory=8 << 30)
    tight = inference.plan_for(model, 3000, 2000, None, max_memory=1 << 30)
    assert wide.count < tight.count
    budget = (1 << 30) - inference.image_buffers(1, 3000, 2000, 2)  # the image buffers come off the bound
    assert budget > 0
    assert measured.need((2 * tight.tile_h) * (2 * tight.tile_w)) <= budget


def test_restore_under_a_memory_bound_tiles_and_matches_the_whole_image(monkeypatch):
    model = StandInRestorer(scale=2)
    lq = torch.rand(1, 3, 160, 192, generator=torch.Generator().manual_seed(0))
    whole = inference.restore(model, lq, tile=0)
    monkeypatch.setattr(inference, "measure_memory", lambda *a, **k: MemoryModel(3000.0, "measured"))
    model.calls.clear()
    tiled = inference.restore(model, lq, tile=None, max_memory=2 << 20)
    assert len(model.calls) > 1
    assert (tiled - whole).abs().max().item() < 1 / 255


def test_max_memory_is_checked_in_the_api_and_parsed_on_the_command_line():
    m = Model(StandInRestorer(scale=2))
    img = np.zeros((16, 16, 3), np.uint8)
    assert m.restore(img, max_memory=64 << 20).shape == (32, 32, 3)
    with pytest.raises(SettingError, match="max_memory must be None or a number of bytes"):
        m.restore(img, max_memory=100)
    assert memory_size("2G") == 2 << 30 and memory_size("1500M") == 1500 << 20 and memory_size("auto") is None
    assert memory_size("1.5GiB") == int(1.5 * (1 << 30))
    for bad in ("lots", "-1G", "10K"):
        with pytest.raises(argparse.ArgumentTypeError):
            memory_size(bad)
