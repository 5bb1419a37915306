"""Public API wrapper: same kind/dtype out as in, grey/RGBA/16-bit/PIL handling, bad input, sampling, spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nightflow.api import Model, image_to_tensor
from standin_restorer import StandInRestorer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> Model:
    return Model(StandInRestorer(scale=2), info={"name": "stand-in"}, device="auto")


def _rgb8(h: int = 21, w: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_attributes(model):
    assert model.scale == 2
    assert isinstance(model.restorer, torch.nn.Module)
    assert model.info["name"] == "stand-in"
    assert model.device.type in ("cpu", "cuda")
    assert "stand-in" in repr(model) and "scale=2" in repr(model)
    assert not model.restorer.training


@pytest.mark.parametrize(
    ("img", "shape", "dtype"),
    [
        (_rgb8(), (42, 60, 3), np.uint8),
        (_rgb8().astype(np.uint16) * 257, (42, 60, 3), np.uint16),
        (_rgb8()[..., 0], (42, 60), np.uint8),
        (_rgb8()[..., :1], (42, 60, 1), np.uint8),
        (_rgb8().astype(np.float32) / 255, (42, 60, 3), np.float32),
        (_rgb8()[..., 0].astype(np.float64) / 255, (42, 60), np.float64),
    ],
    ids=["rgb8", "rgb16", "grey8", "grey8-hw1", "float32", "grey-float64"],
)
def test_same_kind_out(model, img, shape, dtype):
    out = model.restore(img)
    assert isinstance(out, np.ndarray)
    assert out.shape == shape and out.dtype == dtype
    if np.issubdtype(dtype, np.floating):
        assert 0 <= out.min() and out.max() <= 1


def test_bit_depths_agree(model):
    img8 = _rgb8()
    out8 = model.restore(img8).astype(np.float64) / 255
    out16 = model.restore(img8.astype(np.uint16) * 257).astype(np.float64) / 65535
    outf = model.restore(img8.astype(np.float32) / 255).astype(np.float64)
    assert np.abs(out8 - outf).max() <= 0.51 / 255  # only 8-bit rounding apart
    assert np.abs(out16 - outf).max() <= 1e-4
    assert np.abs(out16 - outf).mean() < np.abs(out8 - outf).mean()  # 16-bit keeps more precision


def test_rgba_drops_alpha_with_warning(model):
    rgba = np.concatenate([_rgb8(), np.full((21, 30, 1), 128, np.uint8)], axis=-1)
    with pytest.warns(UserWarning, match="alpha"):
        out = model.restore(rgba)
    assert out.shape == (42, 60, 3)
    np.testing.assert_array_equal(out, model.restore(rgba[..., :3]))


def test_grey_is_luma_of_colour_result(model):
    grey = _rgb8()[..., 1]
    colour = model.restore(np.repeat(grey[..., None], 3, axis=-1)).astype(np.float64)
    expected = colour @ np.array([0.299, 0.587, 0.114])
    assert np.abs(model.restore(grey).astype(np.float64) - expected).max() <= 1.0


@pytest.mark.parametrize(
    ("mode", "out_mode", "warns"),
    [
        ("RGB", "RGB", False),
        ("L", "L", False),
        ("I;16", "I;16", False),
        ("RGBA", "RGB", True),
        ("P", "RGB", False),
    ],
)
def test_pil_in_pil_out(model, mode, out_mode, warns):
    base = Image.fromarray(_rgb8())
    if mode == "I;16":
        img = Image.fromarray(_rgb8()[..., 0].astype(np.uint16) * 257)
        assert img.mode == "I;16"
    else:
        img = base.convert(mode)
    if warns:
        with pytest.warns(UserWarning, match="alpha"):
            out = model.restore(img)
    else:
        out = model.restore(img)
    assert isinstance(out, Image.Image)
    assert out.mode == out_mode and out.size == (60, 42)
    if mode == "I;16":
        assert np.asarray(out).dtype == np.uint16 and np.asarray(out).max() > 255


@pytest.mark.parametrize(
    ("img", "match"),
    [
        (np.zeros((1, 1, 3), np.uint8), "1×1"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((7, 1), np.uint8), "1 pixels|7×1"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 2), np.uint8), "2 channels"),
        (np.zeros((8, 8, 5), np.uint8), "channels"),
        (np.zeros((3, 8, 8), np.uint8), "channels-first"),
        (np.zeros((2, 8, 8, 3), np.uint8), "channels"),
        (np.zeros((8, 8, 3), np.int32), "dtype"),
        (np.full((8, 8, 3), 200.0, np.float32), r"\[0, 1\]"),
        (torch.zeros(3, 8, 8), "torch.Tensor"),
        ([[0, 1], [1, 0]], "numpy array or PIL"),
    ],
    ids=["1x1", "empty", "1-wide", "nan", "2ch", "5ch", "chw", "4d", "int32", "float255", "tensor", "list"],
)
def test_bad_input_is_a_one_line_value_error(model, img, match):
    with pytest.raises(ValueError, match=match) as info:
        model.restore(img)
    assert "\n" not in str(info.value)


def test_samples_differ_and_repeat_with_seed(model):
    img = _rgb8()
    samples = model.sample(img, n=4, temperature=0.8, seed=0)
    assert len(samples) == 4 and all(s.shape == (42, 60, 3) and s.dtype == np.uint8 for s in samples)
    diffs = [
        np.abs(samples[i].astype(int) - samples[j].astype(int)).mean() for i in range(4) for j in range(i)
    ]
    assert min(diffs) > 1.0
    again = model.sample(img, n=4, temperature=0.8, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(samples, again))
    other = model.sample(img, n=1, temperature=0.8, seed=1)[0]
    assert not np.array_equal(other, samples[0])


def test_samples_and_spreads_without_a_temperature_use_the_models_own():
    """``temperature=None`` (the default of sample/uncertainty) is the restorer's ``sample_temperature``, measured
    on its weights, not one number for every model."""
    own = Model(StandInRestorer(scale=2, sample_temperature=0.3), info={"name": "stand-in"}, device="cpu")
    img = _rgb8()
    assert own.sample_temperature == 0.3
    default = own.sample(img, n=2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(default, own.sample(img, n=2, temperature=0.3, seed=0)))
    assert not np.array_equal(default[0], own.sample(img, n=1, temperature=0.4, seed=0)[0])
    np.testing.assert_array_equal(own.uncertainty(img, n=3), own.uncertainty(img, n=3, temperature=0.3))


def test_temperature_zero_restore_is_deterministic_and_seeded_sampling_via_restore(model):
    img = _rgb8()
    np.testing.assert_array_equal(model.restore(img), model.restore(img))
    hot_a = model.restore(img, temperature=0.8, seed=3)
    hot_b = model.restore(img, temperature=0.8, seed=3)
    np.testing.assert_array_equal(hot_a, hot_b)
    assert not np.array_equal(hot_a, model.restore(img))


def test_uncertainty(model):
    img = _rgb8()
    u0 = model.uncertainty(img, n=4, temperature=0.0)
    assert u0.shape == (42, 60) and u0.dtype == np.float32 and not u0.any()
    u = model.uncertainty(img, n=6, temperature=0.8, seed=0)
    assert u.shape == (42, 60) and u.min() >= 0 and 0.01 < u.mean() < 0.2
    np.testing.assert_array_equal(u, model.uncertainty(img, n=6, temperature=0.8, seed=0))


def test_tiled_api_matches_untiled(model):
    img = _rgb8(70, 90)
    full = model.restore(img, tile=0).astype(int)
    tiled = model.restore(img, tile=24).astype(int)
    assert np.abs(full - tiled).max() <= 2


def test_image_to_tensor_layout():
    img = _rgb8(5, 6)
    x, kind = image_to_tensor(img)
    assert x.shape == (1, 3, 5, 6) and x.dtype == torch.float32
    assert torch.allclose(x[0, :, 2, 3] * 255, torch.tensor(img[2, 3], dtype=torch.float32))
    assert kind.dtype == np.uint8 and not kind.grey and kind.pil_mode is None


def test_load_real_checkpoint_and_restore_odd_sizes(tmp_path):
    import nightflow
    from nightflow.models import build_model
    from nightflow.models.checkpoint import save_model
    from nightflow.models.zoo import get_config

    cfg = get_config("lolisrflow-x2-tiny")
    path = save_model(build_model(cfg), tmp_path / "x2.safetensors", cfg)
    m = nightflow.load(path, device="auto")
    assert isinstance(m, Model) and m.scale == 2 and m.info["path"] == str(path)
    out = m.restore(np.random.default_rng(0).integers(0, 60, (37, 53, 3), dtype=np.uint8))
    assert out.shape == (74, 106, 3) and out.dtype == np.uint8
    u = m.uncertainty(np.zeros((9, 11), np.uint16) + 3000, n=2, temperature=0.0)
    assert u.shape == (18, 22) and not u.any()


def test_a_classical_baseline_works_through_the_api_and_runs_whole(monkeypatch):
    from nightflow.baselines import get_baseline
    from nightflow.errors import SettingError

    m = Model(get_baseline("gamma+bicubic", 2), {"name": "baseline:gamma+bicubic"})
    img = _rgb8(20, 30)
    out = m.restore(img)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    samples = m.sample(img, n=3, temperature=0.8, seed=1)
    assert len(samples) == 3 and all(np.array_equal(s, out) for s in samples)  # no distribution: copies
    samples[0][:] = 0
    assert samples[1].any() and not np.shares_memory(samples[0], samples[1])
    assert not m.uncertainty(img, n=2).any()
    with pytest.raises(SettingError, match="cannot be tiled") as info:
        m.restore(img, tile=64)
    assert "\n" not in str(info.value)
    # auto mode never tiles a whole-image method, even when memory is short
    monkeypatch.setattr("nightflow.inference.available_memory", lambda device: 1)
    np.testing.assert_array_equal(m.restore(img), out)
    np.testing.assert_array_equal(m.restore(img, tile=0), out)
