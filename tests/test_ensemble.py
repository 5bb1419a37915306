"""Self-ensemble (nightflow.ensemble): the eight orientations, their inverses, the averaged mean path through the
inference engine, and the settings every front end (API, CLI, eval, suites, UI) checks."""

from __future__ import annotations

import pytest
import torch

from nightflow import ensemble, inference
from nightflow.errors import ConfigError, SettingError, UserError
from standin_restorer import StandInRestorer

pytestmark = pytest.mark.usefixtures("one_thread")


def _lq(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g)


def test_members_are_the_eight_distinct_orientations_and_inverse_undoes_each():
    x = _lq(6, 8)
    seen = []
    for k in range(8):
        turned = ensemble.forward(x, k)
        sides = (6, 8) if k % 2 == 0 else (8, 6)  # odd rotations swap the sides
        pad = 1 if ensemble.shifted(k) else 0  # even sides: odd members get one pixel at the top and the left
        assert turned.shape[-2:] == (sides[0] + pad, sides[1] + pad)
        torch.testing.assert_close(ensemble.inverse(turned, k, (6, 8)), x, atol=0, rtol=0)
        assert not any(t.shape == turned.shape and torch.equal(t, turned) for t in seen)
        seen.append(turned)
    torch.testing.assert_close(ensemble.forward(x, 2), torch.rot90(x, 2, dims=(-2, -1)))  # rotations first
    torch.testing.assert_close(ensemble.forward(x, 4), torch.flip(x, dims=(-1,)))
    for bad in (-1, 8):
        with pytest.raises(ValueError, match="0..7"):
            ensemble.forward(x, bad)


@pytest.mark.parametrize("size", [(6, 8), (5, 7), (6, 7), (5, 8)])
def test_inverse_undoes_forward_on_the_input_and_the_output_grid(size):
    h, w = size
    x, target = _lq(h, w), _lq(2 * h, 2 * w, seed=1)
    for k in range(8):
        torch.testing.assert_close(ensemble.inverse(ensemble.forward(x, k), k, size), x, atol=0, rtol=0)
        on_output_grid = ensemble.forward(target, k, scale=2)  # padded by 2 of its own pixels per input pixel
        top, left = ensemble.padding(k, size)
        rows, cols = (h, w) if k % 2 == 0 else (w, h)
        assert on_output_grid.shape[-2:] == (2 * (rows + top), 2 * (cols + left))
        torch.testing.assert_close(ensemble.inverse(on_output_grid, k, size, 2), target, atol=0, rtol=0)


def test_padding_reflects_and_a_one_pixel_side_repeats_its_edge():
    x = _lq(6, 8)
    one = ensemble.forward(x, 1)
    turned = torch.rot90(x, 1, dims=(-2, -1))
    torch.testing.assert_close(one[..., 1:, 1:], turned, atol=0, rtol=0)
    torch.testing.assert_close(one[..., 0, 1:], turned[..., 1, :], atol=0, rtol=0)  # reflected, not repeated
    tiny = _lq(1, 1)
    for k in range(8):
        top, left = ensemble.padding(k, (1, 1))
        out = ensemble.forward(tiny, k)
        assert torch.equal(out, tiny.expand(1, 3, 1 + top, 1 + left))


def _block_errors(seed: int):
    """A stand-in restorer whose error is constant over 2×2 blocks counted from its own input's origin, new
    for every call: the flows' block grid (benchmarks/grid_periodicity.py), each member with its own errors."""
    g = torch.Generator().manual_seed(seed)

    def run(t: torch.Tensor, _target: object, _turned: object = None) -> torch.Tensor:
        h, w = t.shape[-2:]
        blocks = torch.randn(1, 1, (h + 1) // 2, (w + 1) // 2, generator=g)
        return t + 0.1 * blocks.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w]

    return run


def _edges_within_and_between_blocks(y: torch.Tensor) -> list[tuple[float, float]]:
    """Mean |neighbour difference| inside the identity's 2-pixel blocks and across their edges, for each axis."""
    out = []
    for dim in (-2, -1):
        d = y.diff(dim=dim).abs().movedim(dim, 0)
        out.append((float(d[0::2].mean()), float(d[1::2].mean())))
    return out


@pytest.mark.parametrize("size", [(16, 24), (15, 23), (16, 23)])
def test_even_members_keep_the_identity_block_grid_and_odd_members_fall_between_its_edges(size):
    """Whatever the sides' parity (a turn that reverses an odd side moves the grid by a pixel on its own)."""
    x = torch.zeros(1, 1, *size)
    run = _block_errors(0)

    def mean_of(members):
        outputs = [ensemble.inverse(run(ensemble.forward(x, k), None), k, size) for k in members]
        return sum(outputs) / len(outputs)

    for within, between in _edges_within_and_between_blocks(mean_of([0, 2, 4, 6])):
        assert within == 0.0 and between > 0.01
    for within, between in _edges_within_and_between_blocks(mean_of([1, 3, 5, 7])):
        assert between == 0.0 and within > 0.01


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("size", [(16, 24), (15, 23)])
def test_the_ensemble_averages_out_a_block_grid_that_turned_copies_keep(n, size):
    """Turned copies alone keep every block edge on the grid (even sides) or move it by chance (odd sides); the
    ensemble's average has edges at both positions, of similar strength."""
    x = torch.zeros(1, 1, *size)
    for within, between in _edges_within_and_between_blocks(ensemble.average(_block_errors(0), x, n)):
        assert within > 0.6 * between and between > 0.6 * within
    if size[0] % 2 == 0 and size[1] % 2 == 0:
        run = _block_errors(1)
        turned_only = (
            sum(torch.rot90(run(torch.rot90(x, k % 4, (-2, -1)), None), -(k % 4), (-2, -1)) for k in range(n))
            / n
        )
        for within, between in _edges_within_and_between_blocks(turned_only):
            assert within == 0.0 and between > 0.01  # without the offset: a pure grid


@pytest.mark.parametrize("bad", [0, 3, 16, True, 2.0, "4"])
def test_sizes_other_than_1_2_4_8_are_refused(bad):
    with pytest.raises(ValueError, match="1, 2, 4, 8"):
        ensemble.check_size(bad)


def test_average_is_the_mean_of_the_members_turned_back():
    x = _lq(6, 10)
    calls = []

    def run(t, target, turned):
        calls.append(tuple(t.shape))
        assert target is None and tuple(turned.shape[-2:]) in ((6, 10), (10, 6))
        return (
            t * 2 + t.mean()
        )  # the mean of a padded member is not the others': each is turned back on its own

    out = ensemble.average(run, x, 4)
    expected = (
        sum(
            ensemble.inverse(run(ensemble.forward(x, k), None, torch.rot90(x, k, (-2, -1))), k, (6, 10))
            for k in range(4)
        )
        / 4
    )
    torch.testing.assert_close(out, expected)
    assert calls[:2] == [(1, 3, 6, 10), (1, 3, 11, 7)]  # the second is turned and padded by one pixel


def test_average_hands_each_member_its_turned_target():
    x, target = _lq(4, 6), _lq(8, 12, seed=1)

    def run(t, turned_target, _turned):
        assert turned_target.shape[-2:] == (2 * t.shape[-2], 2 * t.shape[-1])
        return turned_target  # an oracle that returns the target: the average is the target itself

    torch.testing.assert_close(ensemble.average(run, x, 8, target, scale=2), target)


def test_restore_ensemble_of_one_is_the_plain_restore_and_others_average_the_orientations():
    model = StandInRestorer(scale=2)
    lq = _lq(24, 40, seed=2)
    plain = inference.restore(model, lq, tile=0)
    torch.testing.assert_close(inference.restore(model, lq, tile=0, ensemble=1), plain, atol=0, rtol=0)
    members = [
        ensemble.inverse(inference.restore(model, ensemble.forward(lq, k), tile=0), k, (24, 40), 2)
        for k in range(4)
    ]
    four = inference.restore(model, lq, tile=0, ensemble=4)
    torch.testing.assert_close(four, torch.stack(members).mean(0), atol=1e-6, rtol=0)
    assert four.is_contiguous() and four.shape == plain.shape
    assert (four - plain).abs().mean() > 1e-3  # the conv net is not rotation-equivariant: it really averages


def test_each_member_uses_the_statistics_of_the_turned_photo_without_its_padding(monkeypatch, real_x2):
    """Members must differ in geometry only: a padded pixel row would move the exposure estimate of a small
    photo (measured at x4: 0.2 dB of raw PSNR), so the context comes from the turned, unpadded input."""
    model = real_x2.restorer
    lq = _lq(24, 40, seed=4) * 0.2
    seen, members = [], []
    context_of, restore = inference.image_context, inference.restore

    def spy_context(restorer, x, exposure=0.0):
        seen.append((tuple(x.shape[-2:]), exposure))
        return context_of(restorer, x, exposure)

    def spy_restore(restorer, x, *args, **kwargs):
        if kwargs.get("ensemble", 1) == 1:
            members.append(tuple(x.shape[-2:]))
        return restore(restorer, x, *args, **kwargs)

    monkeypatch.setattr(inference, "image_context", spy_context)
    monkeypatch.setattr(inference, "restore", spy_restore)
    inference.restore(model, lq, tile=0, ensemble=4, exposure=0.5)
    assert seen == [((24, 40), 0.5), ((40, 24), 0.5), ((24, 40), 0.5), ((40, 24), 0.5)]
    assert members == [(24, 40), (41, 25), (24, 40), (41, 25)]  # the odd members are padded


def test_restore_ensemble_refuses_samples_and_a_given_context():
    model = StandInRestorer(scale=2)
    lq = _lq(16, 16)
    noise = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="mean path"):
        inference.restore(model, lq, 0.8, noise=noise, ensemble=2)
    with pytest.raises(ValueError, match="context=None"):
        inference.restore(model, lq, ensemble=2, context=object())
    with pytest.raises(ValueError, match="1, 2, 4, 8"):
        inference.restore(model, lq, ensemble=3)


def test_restore_ensemble_leaves_room_for_its_running_sum_in_a_memory_bound(monkeypatch):
    """--max-memory bounds the whole restore: each member plans its tiles with one float32 output less."""
    model = StandInRestorer(scale=2)
    lq = _lq(40, 48)
    seen = []
    plan_for = inference.plan_for

    def spy(*args, **kwargs):
        seen.append(args[7])  # plan_for(restorer, h, w, tile, overlap, batch, device, max_memory, precision)
        return plan_for(*args, **kwargs)

    monkeypatch.setattr(inference, "plan_for", spy)
    budget = 64 << 20
    inference.restore(model, lq, max_memory=budget, ensemble=2)
    assert seen == [budget - 3 * 4 * 80 * 96] * 2
    seen.clear()
    inference.restore(model, lq, max_memory=budget)
    assert seen == [budget]


@pytest.fixture(scope="module")
def real_x2():
    import nightflow

    return nightflow.load("lolisrflow-x2")


def test_real_model_ensemble_tiles_like_the_whole_image_on_a_non_square_input(real_x2):
    """Odd rotations give the tile planner a W×H image; tiled members must still agree with whole ones."""
    restorer = real_x2.restorer
    lq = (_lq(72, 136, seed=3) * 0.2).clamp(0, 1)
    whole = inference.restore(restorer, lq, tile=0, ensemble=2)
    tile = restorer.tiling.min_tile
    tiled = inference.restore(restorer, lq, tile=tile, overlap=tile // 2, ensemble=2)
    assert whole.shape == (1, 3, 144, 272)
    assert (tiled - whole).abs().max() <= 1 / 255


def test_api_restore_ensemble_matches_the_engine_and_refuses_bad_settings(real_x2):
    import numpy as np

    rng = np.random.default_rng(0)
    img = (rng.random((24, 32, 3)) * 0.2).astype(np.float32)
    out = real_x2.restore(img, ensemble=4)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    engine = inference.restore(real_x2.restorer, x, ensemble=4)[0].permute(1, 2, 0).numpy()
    assert np.abs(out - engine).max() < 1e-6
    assert np.abs(out - real_x2.restore(img)).mean() > 1e-4
    with pytest.raises(SettingError, match="1, 2, 4, 8"):
        real_x2.restore(img, ensemble=5)
    with pytest.raises(SettingError, match="temperature 0"):
        real_x2.restore(img, ensemble=2, temperature=0.5)


def test_pipeline_ensemble_changes_only_the_main_output():
    from nightflow import pipeline

    model = StandInRestorer(scale=2)
    lq = _lq(16, 24, seed=5)
    plain = list(pipeline.stream(model, lq, pipeline.Request(samples=(0,), sample_temperature=0.5, seed=3)))
    ens = list(
        pipeline.stream(model, lq, pipeline.Request(samples=(0,), sample_temperature=0.5, seed=3, ensemble=4))
    )
    assert [o.role for o in ens] == ["main", "sample"]
    torch.testing.assert_close(ens[1].value, plain[1].value, atol=0, rtol=0)  # samples: untouched
    torch.testing.assert_close(ens[0].value, inference.restore(model, lq, ensemble=4), atol=0, rtol=0)
    with pytest.raises(SettingError, match="temperature 0"):
        list(pipeline.stream(model, lq, pipeline.Request(temperature=0.5, ensemble=2)))


def test_eval_options_and_suites_check_the_ensemble():
    from nightflow.evaluation.engine import EvalOptions
    from nightflow.evaluation.suite import parse_suite

    assert EvalOptions(ensemble=4).ensemble == 4
    with pytest.raises(UserError, match="ensemble must be one of"):
        EvalOptions(ensemble=3)
    with pytest.raises(UserError, match="temperature 0"):
        EvalOptions(ensemble=2, temperature=0.8)
    base = {
        "name": "t",
        "datasets": [{"label": "d", "data": {"format": "paired", "root": "x", "scale": 2}}],
    }
    suite = parse_suite({**base, "models": [{"spec": "lolisrflow-x2", "ensemble": 8}]})
    assert suite.models[0].ensemble == 8
    with pytest.raises(ConfigError, match=r"models\[0\].ensemble must be one of"):
        parse_suite({**base, "models": [{"spec": "lolisrflow-x2", "ensemble": 6}]})
    with pytest.raises(ConfigError, match=r"models\[0\].ensemble 2 averages the mean path"):
        parse_suite({**base, "models": [{"spec": "lolisrflow-x2", "ensemble": 2, "temperature": 0.8}]})


def test_cells_without_an_ensemble_keep_their_fingerprint_and_an_ensemble_changes_it(tmp_path, monkeypatch):
    """Suites scored before the option existed must not be recomputed: with ensemble 1 the hashed payload holds no
    ensemble key at all (as before the option existed); any other size is part of it."""
    from nightflow.evaluation import runner
    from nightflow.evaluation.suite import parse_suite, plan_suite

    (tmp_path / "x").mkdir()
    base = {
        "name": "t",
        "data_root": str(tmp_path),
        "datasets": [{"label": "d", "data": {"format": "paired", "root": "x", "scale": 2}}],
    }
    payloads = []
    dumps = runner.json.dumps
    monkeypatch.setattr(runner.json, "dumps", lambda obj, **kw: payloads.append(obj) or dumps(obj, **kw))
    prints = {}
    for size in (1, 4):
        suite = parse_suite({**base, "models": [{"spec": "baseline:gamma+bicubic", "ensemble": size}]})
        (cell,) = plan_suite(suite, tmp_path / "suite.yaml")
        prints[size] = runner.fingerprint(suite, cell)
    one, four = payloads
    assert "ensemble" not in one["model"] and "ensemble" not in one["options"]
    assert four["model"]["ensemble"] == 4 and four["options"]["ensemble"] == 4
    assert four["ensemble_scheme"] == ensemble.SCHEME and "ensemble_scheme" not in one  # members, not only N
    assert prints[1] != prints[4]
    assert cell.model.ensemble == 4  # the entry itself is not changed by hashing it


def test_cli_ensemble_is_recorded_in_the_main_output_and_a_change_is_refused(tmp_path, monkeypatch, capsys):
    import cv2
    import numpy as np

    import nightflow
    from nightflow.api import Model
    from nightflow.cli import main
    from nightflow.commands.enhance import read_record

    monkeypatch.setattr(
        nightflow, "load", lambda name, device="cpu": Model(StandInRestorer(scale=2), {"name": name})
    )
    src = tmp_path / "dark.png"
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(src), rng.integers(0, 60, size=(20, 28, 3)).astype(np.uint8))
    plain, ens = tmp_path / "plain.png", tmp_path / "ens.png"
    assert main(["enhance", str(src), "-o", str(plain), "-q"]) == 0
    assert main(["enhance", str(src), "-o", str(ens), "--ensemble", "4", "--samples", "2", "-q"]) == 0
    assert read_record(plain)["ensemble"] is None  # off is recorded as older records read: no ensemble
    assert read_record(ens)["ensemble"] == 4
    assert (
        read_record(ens)["ensemble_scheme"] == ensemble.SCHEME
        and read_record(plain)["ensemble_scheme"] is None
    )
    assert "ensemble" not in read_record(tmp_path / "ens_s00.png")  # samples are not averaged
    rgb = cv2.imread(str(src))[..., ::-1].copy()
    expected = Model(StandInRestorer(scale=2), {}).restore(rgb, ensemble=4)
    assert np.array_equal(cv2.imread(str(ens))[..., ::-1], expected)  # the CLI's pixels are the API's
    assert not np.array_equal(cv2.imread(str(plain))[..., ::-1], expected)
    capsys.readouterr()
    assert main(["enhance", str(src), "-o", str(ens), "--ensemble", "2", "--samples", "2"]) == 2
    assert "made with ensemble 4 (now 2)" in capsys.readouterr().err
    assert main(["enhance", str(src), "-o", str(ens), "--ensemble", "4", "--samples", "2"]) == 0  # kept
    for argv, message in (
        (["--ensemble", "3"], "--ensemble must be one of 1, 2, 4, 8"),
        (["--ensemble", "2", "--temperature", "0.5"], "averages the mean path"),
    ):
        assert main(["enhance", str(src), "-o", str(tmp_path / "x.png"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_a_record_written_before_the_ensemble_existed_still_counts_as_done():
    from nightflow.commands.enhance import record_difference

    new = {
        "role": "main",
        "input_sha256": "a",
        "model_id": "m",
        "scale": 2,
        "exposure": 0.0,
        "index": None,
        "backend": None,
        "precision": None,
        "temperature": 0.0,
        "seed": None,
        "ensemble": None,
        "ensemble_scheme": None,
    }
    old = {k: v for k, v in new.items() if not k.startswith("ensemble")}
    assert record_difference(old, new) is None
    assert record_difference(old, {**new, "ensemble": 4}) == "with ensemble None (now 4)"
    # an output of the first ensemble (rotations and flips, no shifted members) is not today's
    four = {**new, "ensemble": 4, "ensemble_scheme": ensemble.SCHEME}
    assert (
        record_difference({**old, "ensemble": 4}, four)
        == f"with ensemble scheme None (now {ensemble.SCHEME})"
    )
    assert record_difference(four, four) is None


def test_ui_passes_its_ensemble_to_the_cli_parse():
    from nightflow.ui import Runner

    runner = Runner.__new__(Runner)  # enhance_args reads nothing of the runner's state
    args = runner.enhance_args("in.png", 0.0, 0.0, 0, 0, False, 4)
    assert args.ensemble == 4
    assert runner.enhance_args("in.png", 0.0, 0.0, 0, 0, False).ensemble == 1
