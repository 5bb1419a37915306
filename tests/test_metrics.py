"""PSNR, SSIM, LR-PSNR, GT-mean, resizing and the metric registry against independent references.

References: scikit-image (PSNR, SSIM skimage convention), a MATLAB-convention SSIM written here with scipy
(``ssim.m``: 11×11 Gaussian σ 1.5, 'valid' region), Pillow (bicubic/Lanczos/box resampling), and the values
IQA-PyTorch publishes for its five calibration pairs (``ResultsCalibra/calibration_summary.csv``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from nightflow.errors import UserError
from nightflow.metrics import compute_metrics, gt_mean_rescale, imresize, list_metrics, lr_psnr, psnr, ssim
from nightflow.metrics.assets import CALIBRATION_IMAGES, calibration_file, require


def _pair(h: int = 48, w: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth float64 RGB image in [0, 1] and a noisy, slightly shifted copy (H×W×3)."""
    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.random((h, w, 3)), sigma=(3, 3, 0))
    a = (a - a.min()) / (a.max() - a.min())
    b = np.clip(0.9 * a + 0.05 + rng.normal(0, 0.04, a.shape), 0, 1)
    return a, b


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.transpose(2, 0, 1)).unsqueeze(0)


def _load_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(require(path)).convert("RGB"))


# ---------------------------------------------------------------- PSNR


def test_psnr_matches_skimage_on_float_and_uint8():
    a, b = _pair()
    assert float(psnr(_t(b), _t(a))) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)
    a8, b8 = (a * 255).round().astype(np.uint8), (b * 255).round().astype(np.uint8)
    assert float(psnr(b8, a8)) == pytest.approx(peak_signal_noise_ratio(a8, b8), abs=1e-9)


def test_psnr_y_and_crop_border_match_a_direct_computation():
    a, b = _pair(seed=1)

    def y(x):  # BasicSR / MATLAB rgb2ycbcr luma on [0, 255]
        return 16 + x[..., 0] * 65.481 + x[..., 1] * 128.553 + x[..., 2] * 24.966

    c = 4
    ya, yb = y(a)[c:-c, c:-c], y(b)[c:-c, c:-c]
    expected = 10 * np.log10(255.0**2 / np.mean((ya - yb) ** 2))
    assert float(psnr(_t(b), _t(a), channel="y", crop_border=c)) == pytest.approx(expected, abs=1e-9)


def test_psnr_is_per_image_and_infinite_for_identical_images():
    a, b = _pair()
    batch = torch.cat([_t(a), _t(b)])
    values = psnr(batch, torch.cat([_t(a), _t(a)]))
    assert values.shape == (2,)
    assert torch.isinf(values[0]) and torch.isfinite(values[1])


# ---------------------------------------------------------------- SSIM


def test_ssim_skimage_convention_matches_skimage_grey_and_rgb():
    a, b = _pair(seed=2)
    rgb_ref = structural_similarity(a, b, channel_axis=2, data_range=1.0)
    assert float(ssim(_t(b), _t(a), convention="skimage")) == pytest.approx(rgb_ref, abs=1e-4)
    ga = a @ np.array([0.299, 0.587, 0.114])
    gb = b @ np.array([0.299, 0.587, 0.114])
    grey_ref = structural_similarity(ga, gb, data_range=1.0)
    assert float(ssim(_t(b), _t(a), convention="skimage", channel="gray")) == pytest.approx(
        grey_ref, abs=1e-4
    )


def _matlab_ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s ssim.m on one [0, 255] channel: gaussian_filter truncated to an 11×11 window, 'valid'."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def f(t):
        return gaussian_filter(t, sigma=1.5, truncate=5 / 1.5)[5:-5, 5:-5]

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    return float(np.mean(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


def test_ssim_matlab_convention_matches_an_independent_reference():
    a, b = _pair(seed=3)
    rgb_ref = np.mean([_matlab_ssim_reference(a[..., c] * 255, b[..., c] * 255) for c in range(3)])
    assert float(ssim(_t(b), _t(a), convention="matlab")) == pytest.approx(rgb_ref, abs=1e-4)

    def y(x):
        return 16 + x[..., 0] * 65.481 + x[..., 1] * 128.553 + x[..., 2] * 24.966

    y_ref = _matlab_ssim_reference(y(a), y(b))
    assert float(ssim(_t(b), _t(a), convention="matlab", channel="y")) == pytest.approx(y_ref, abs=1e-4)
    # the conventions really differ on this pair: the name matters
    assert abs(float(ssim(_t(b), _t(a), convention="skimage")) - rgb_ref) > 1e-3


def test_ssim_rejects_tiny_images_and_unknown_conventions():
    a, b = _pair(8, 8)
    with pytest.raises(UserError, match="11"):
        ssim(_t(b), _t(a), convention="matlab")
    with pytest.raises(UserError, match="convention"):
        ssim(_t(b), _t(a), convention="opencv")


# ---------------------------------------------------------------- published calibration values


def test_psnr_and_ssim_reproduce_iqa_pytorch_published_values():
    """IQA-PyTorch's ResultsCalibra/calibration_summary.csv, rows ``psnr`` and ``ssim`` (official implementations).

    PSNR: RGB, skimage convention, published to 2 decimals. SSIM: the published column is reproduced by the
    MATLAB convention on the 8-bit BT.601 grey image (registry name ``ssim_pyiqa``), to 1e-4; MATLAB-style Y
    of YCbCr and the skimage convention are both visibly off (checked below for I03).
    """
    published_psnr = [21.11, 20.99, 27.01, 23.3, 21.62]
    published_ssim = [0.6993, 0.9978, 0.9989, 0.9669, 0.6519]
    for name, p_psnr, p_ssim in zip(CALIBRATION_IMAGES, published_psnr, published_ssim):
        ref, dist = _load_rgb(calibration_file("ref", name)), _load_rgb(calibration_file("dist", name))
        values = compute_metrics(dist, ref, ["psnr", "ssim_pyiqa"])
        assert values["psnr"] == pytest.approx(p_psnr, abs=0.006), name
        assert values["ssim_pyiqa"] == pytest.approx(p_ssim, abs=1e-4), name
        if name == "I03":
            others = compute_metrics(dist, ref, ["ssim_matlab_y", "ssim"])
            assert abs(others["ssim_matlab_y"] - p_ssim) > 0.01
            assert abs(others["ssim"] - p_ssim) > 0.01


# ---------------------------------------------------------------- LR-PSNR and GT-mean


def test_lr_psnr_against_gt_and_against_low_res_reference_agree():
    a, _ = _pair(64, 64, seed=4)
    texture = np.random.default_rng(4).random(a.shape)
    gt = _t(0.6 * a + 0.4 * texture)  # fine detail that a ×2 bicubic round trip cannot keep
    lr = imresize(gt, scale=0.5)
    sr = imresize(lr, scale=2).clamp(0, 1)  # a bicubic SR output
    via_gt = float(lr_psnr(sr, gt, 2))
    via_lr = float(lr_psnr(sr, lr.clamp(0, 1), 2))
    assert via_gt == pytest.approx(via_lr, abs=1e-9)
    assert via_gt > float(psnr(sr, gt)) + 3  # SR loses detail, but is consistent with its input
    assert torch.isinf(lr_psnr(gt, gt, 2)).all()
    with pytest.raises(UserError, match="scale"):
        lr_psnr(sr, imresize(gt, scale=0.25), 2)


def test_gt_mean_rescale_matches_the_grey_mean_and_llflow_variant_swaps_weights():
    a, _ = _pair(seed=5)
    gt = _t(a)
    dark = gt * 0.3
    out = gt_mean_rescale(dark, gt)
    assert torch.allclose(out, gt, atol=1e-12)  # a global exposure error is removed exactly
    pred = _t(np.clip(a * np.array([0.2, 0.4, 0.6]), 0, 1))
    w = np.array([0.114, 0.587, 0.299])  # cv2 BGR2GRAY applied to RGB data, as LLFlow's evaluation does
    factor = (a @ w).mean() / ((a * np.array([0.2, 0.4, 0.6])) @ w).mean()
    expected = np.clip(a * np.array([0.2, 0.4, 0.6]) * factor, 0, 1)
    assert np.allclose(gt_mean_rescale(pred, gt, variant="llflow")[0].numpy().transpose(1, 2, 0), expected)
    assert not torch.allclose(gt_mean_rescale(pred, gt, variant="llflow"), gt_mean_rescale(pred, gt))


def test_compute_metrics_reports_gt_mean_in_separate_columns_only_when_asked():
    a, _ = _pair(seed=6)
    gt, dark = _t(a), _t(a) * 0.5
    plain = compute_metrics(dark, gt, "psnr,ssim_matlab_y")
    assert set(plain) == {"psnr", "ssim_matlab_y"}
    both = compute_metrics(dark, gt, ["psnr", "ssim_matlab_y"], gt_mean=True)
    assert both["psnr"] == plain["psnr"] < 20
    assert both["psnr_gtmean"] > 60 and both["ssim_matlab_y_gtmean"] > 0.999


def test_compute_metrics_errors_are_one_line_user_errors():
    a, b = _pair()
    with pytest.raises(UserError, match="unknown metric 'psnrr'") as exc:
        compute_metrics(_t(b), _t(a), ["psnrr"])
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="needs ground truth"):
        compute_metrics(_t(b), None, ["psnr"])
    with pytest.raises(UserError, match="differ in shape"):
        compute_metrics(_t(b), _t(a)[..., :-2], ["psnr"])
    with pytest.raises(UserError, match="divide 0-255"):
        psnr(_t(b) * 255, _t(a) * 255)
    assert all(list_metrics().values()) and {"psnr", "ssim", "lpips", "niqe", "lr_psnr"} <= set(
        list_metrics()
    )


# ---------------------------------------------------------------- resizing (used by LR-PSNR, NIQE, baselines)


@pytest.mark.parametrize(
    "kernel,pil",
    [
        ("cubic", Image.Resampling.BICUBIC),
        ("lanczos3", Image.Resampling.LANCZOS),
        ("box", Image.Resampling.BOX),
    ],
)
@pytest.mark.parametrize("size", [(120, 160), (30, 40), (37, 53)])
def test_imresize_matches_pillow_away_from_the_border(kernel, pil, size):
    """Pillow uses the same kernels (cubic a = -0.5) and the same antialiasing; only border handling differs."""
    a = np.random.default_rng(7).random((60, 80)).astype(np.float32)
    ours = imresize(torch.from_numpy(a).double()[None, None], size=size, kernel=kernel)[0, 0].numpy()
    ref = np.asarray(Image.fromarray(a).resize(size[::-1], pil))
    b = 8
    assert ours.shape == size
    assert np.abs(ours - ref)[b:-b, b:-b].max() < 1e-6


def test_area_resize_is_block_mean_down_and_replication_up():
    x = torch.rand(1, 3, 8, 12, dtype=torch.float64)
    down = imresize(x, scale=0.5, kernel="area")
    assert torch.allclose(down, torch.nn.functional.avg_pool2d(x, 2))
    up = imresize(x, scale=2, kernel="area")
    assert torch.equal(up, x.repeat_interleave(2, 2).repeat_interleave(2, 3))
