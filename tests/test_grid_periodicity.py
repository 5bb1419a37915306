"""The block-grid measure (benchmarks/grid_periodicity.py): a nearest-neighbour upscale shows its block edges,
noise and smooth pictures show none."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from benchmarks.common import merge_rows
from benchmarks.grid_periodicity import edge_profile, grid_excess


def test_block_edges_of_a_nearest_upscale_stand_out_at_their_position():
    g = torch.Generator().manual_seed(0)
    blocks = F.interpolate(torch.rand(2, 3, 8, 10, generator=g), scale_factor=4, mode="nearest")
    profile = edge_profile([blocks], period=4)
    assert profile[:3] == [0.0, 0.0, 0.0] and profile[3] == 4.0  # all edges between pixels 3 and 4 of a block
    assert grid_excess(profile) == 3.0
    shifted = edge_profile([blocks[..., 1:, 1:]], period=4)  # the same grid, one pixel earlier
    assert shifted.index(max(shifted)) == 2


def test_noise_has_no_grid_and_the_profile_averages_to_one():
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(1, 3, 96, 128, generator=g)
    profile = edge_profile([noise, noise.flip(-1)], period=8)
    assert abs(sum(profile) / len(profile) - 1.0) < 1e-3
    assert grid_excess(profile) < 0.05


def test_a_new_run_replaces_its_own_rows_and_keeps_the_others():
    kept = [
        {"spec": "a", "period": 4, "v": 1},
        {"spec": "b", "period": 4, "v": 2},
        {"spec": "a", "period": 8, "v": 3},
    ]
    new = [{"spec": "c", "period": 2, "v": 4}, {"spec": "a", "period": 4, "v": 5}]
    assert merge_rows(kept, new, key=("spec", "period")) == [
        {"spec": "a", "period": 4, "v": 5},
        {"spec": "b", "period": 4, "v": 2},
        {"spec": "a", "period": 8, "v": 3},
        {"spec": "c", "period": 2, "v": 4},
    ]
    assert merge_rows([], new, key=("spec", "period")) == new
    # by spec alone (the exposure decomposition's files, one row per model)
    assert merge_rows([{"spec": "a", "v": 1}, {"spec": "b", "v": 2}], [{"spec": "a", "v": 6}]) == [
        {"spec": "a", "v": 6},
        {"spec": "b", "v": 2},
    ]


def test_probe_inputs_are_flat_noisy_and_ramped_and_the_probe_reads_absolute_differences():
    from benchmarks.grid_periodicity import probe, probe_inputs

    inputs = probe_inputs(size=16)
    assert list(inputs) == ["flat", "flat + noise", "ramp"]
    assert inputs["flat"].unique().numel() == 1 and inputs["flat"].shape == (1, 3, 16, 16)
    assert torch.equal(inputs["flat + noise"], probe_inputs(size=16)["flat + noise"])  # seeded
    assert inputs["flat + noise"].std() > 0.005
    ramp = inputs["ramp"][0, 0, 0]
    assert bool((ramp.diff() > 0).all()) and torch.equal(inputs["ramp"][0, :, 5], inputs["ramp"][0, :, 9])
    rows = probe("lolisrflow-x1")
    assert [r["input"] for r in rows] == list(inputs) and all(len(r["profile"]) == 2 for r in rows)
    flat, noisy = rows[0]["mean_diff"], rows[1]["mean_diff"]
    assert 0.0 < flat < noisy  # the model leaves some of the noise: larger neighbour differences
