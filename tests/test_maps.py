"""Image priors on known values; histogram equalisation against OpenCV's and scikit-image's conventions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage.exposure import equalize_hist

from nightflow.errors import UserError
from nightflow.maps import (
    color_ratio_map,
    histogram_equalize,
    log_input,
    noise_map,
    unbalanced_point_map,
)


def pixels(*rgb: tuple[float, float, float]) -> torch.Tensor:
    """A 1×3×1×K image from K RGB triples."""
    return torch.tensor(rgb, dtype=torch.float32).T.reshape(1, 3, 1, len(rgb))


# --- colour-ratio map ---------------------------------------------------------------------------------------


def test_color_ratio_of_grey_is_one_third():
    x = torch.full((2, 3, 4, 5), 0.4)
    cr = color_ratio_map(x)
    assert cr.shape == x.shape
    torch.testing.assert_close(cr, torch.full_like(x, 0.4 / (1.2 + 1e-4)))
    assert abs(float(cr[0, 0, 0, 0]) - 1 / 3) < 1e-4


def test_color_ratio_known_pixel_black_pixel_and_single_image():
    x = pixels((0.2, 0.3, 0.5), (0.0, 0.0, 0.0))
    cr = color_ratio_map(x)
    torch.testing.assert_close(cr[0, :, 0, 0], torch.tensor([0.2, 0.3, 0.5]) / (1.0 + 1e-4))
    assert torch.equal(cr[0, :, 0, 1], torch.zeros(3))
    torch.testing.assert_close(color_ratio_map(x[0]), cr[0])  # 3×H×W works too


def test_color_ratio_is_exposure_invariant():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 8, 8, generator=g) * 0.5 + 0.1
    torch.testing.assert_close(color_ratio_map(0.05 * x), color_ratio_map(x), atol=2e-3, rtol=0)


# --- unbalanced-point map -----------------------------------------------------------------------------------


def test_unbalanced_point_map_known_pixels():
    x = pixels(
        (1.0, 0.0, 0.0),  # pure red: green and blue shares 0 → unbalanced
        (0.5, 0.5, 0.5),  # grey → balanced
        (0.0, 0.0, 0.0),  # black → unbalanced
        (0.1, 0.45, 0.45),  # red share just below 0.1 (eps in the sum) → unbalanced
        (0.15, 0.4, 0.45),  # all shares > 0.1 → balanced
    )
    upm = unbalanced_point_map(x)
    assert upm.shape == (1, 1, 1, 5)
    assert upm.flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert unbalanced_point_map(x, threshold=0.2).flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert unbalanced_point_map(x[0]).shape == (1, 1, 5)


# --- noise map ----------------------------------------------------------------------------------------------


def test_noise_map_is_zero_on_constant_map_including_borders():
    cm = torch.full((1, 3, 5, 6), 1 / 3)
    assert torch.equal(noise_map(cm), torch.zeros_like(cm))


def test_noise_map_on_ramps_uses_central_differences():
    w = torch.arange(6, dtype=torch.float32)
    cm = torch.zeros(1, 3, 4, 6)
    cm[:, 0] = 0.1 * w  # horizontal ramp in channel 0
    cm[:, 1] = 0.3 * torch.arange(4, dtype=torch.float32)[:, None]  # vertical ramp in channel 1
    nm = noise_map(cm)
    assert nm.shape == (1, 3, 4, 6)
    torch.testing.assert_close(nm[0, 0, :, 1:-1], torch.full((4, 4), 0.1))
    torch.testing.assert_close(nm[0, 0, :, 0], torch.full((4,), 0.05))  # one-sided half difference
    torch.testing.assert_close(nm[0, 1, 1:-1, :], torch.full((2, 6), 0.3))
    assert torch.equal(nm[0, 2], torch.zeros(4, 6))


def test_noise_map_takes_max_of_both_directions():
    cm = torch.zeros(1, 3, 3, 3)
    cm[0, 0, 1, 2] = 1.0  # right neighbour of the centre
    cm[0, 0, 2, 1] = 0.4  # lower neighbour of the centre
    assert float(noise_map(cm)[0, 0, 1, 1]) == pytest.approx(0.5)  # max(|1−0|/2, |0.4−0|/2)


# --- histogram equalisation ---------------------------------------------------------------------------------


def test_he_of_full_ramp_is_identity():
    ramp = (torch.arange(256, dtype=torch.float32) / 255).reshape(1, 1, 16, 16).repeat(1, 3, 1, 1)
    torch.testing.assert_close(histogram_equalize(ramp), ramp, atol=1e-6, rtol=0)


def test_he_stretches_a_dark_ramp_to_full_range():
    ramp = (torch.arange(64, dtype=torch.float32) / 255).reshape(1, 8, 8).repeat(3, 1, 1)  # 0 … 63/255
    out = histogram_equalize(ramp)
    assert out.shape == (3, 8, 8)
    torch.testing.assert_close(out, torch.arange(64, dtype=torch.float32).reshape(8, 8).expand(3, 8, 8) / 63)


def test_he_two_levels_and_constant_channel():
    x = torch.zeros(1, 3, 2, 4)
    x[0, 0, :, :2], x[0, 0, :, 2:] = 0.2, 0.6  # two levels → 0 and 1
    x[0, 1] = 0.4  # constant → unchanged (quantised), as cv2 does
    out = histogram_equalize(x)
    assert out[0, 0, :, :2].eq(0).all() and out[0, 0, :, 2:].eq(1).all()
    torch.testing.assert_close(out[0, 1], torch.full((2, 4), round(0.4 * 255) / 255))
    assert out[0, 2].eq(0).all()


def test_he_matches_opencv_per_channel_and_per_image():
    rng = np.random.default_rng(0)
    imgs = rng.integers(10, 120, size=(2, 3, 17, 23), dtype=np.uint8)  # dark-ish, odd size
    imgs[1, 2] = rng.integers(0, 256, size=(17, 23), dtype=np.uint8)
    out = histogram_equalize(torch.from_numpy(imgs.astype(np.float32) / 255))
    ref = np.stack([[cv2.equalizeHist(c) for c in img] for img in imgs]).astype(np.float32) / 255
    assert np.abs(out.numpy() - ref).max() <= 0.5 / 255 + 1e-6
    # batched == one image at a time
    torch.testing.assert_close(out[1], histogram_equalize(torch.from_numpy(imgs[1].astype(np.float32) / 255)))


def test_he_matches_skimage_up_to_the_darkest_level_shift():
    rng = np.random.default_rng(1)
    img = rng.integers(5, 200, size=(19, 21), dtype=np.uint8)
    ours = histogram_equalize(torch.from_numpy(img.astype(np.float32) / 255)[None]).numpy()[0]
    sk = equalize_hist(img)  # cdf(q)/N on integer data
    c0 = np.count_nonzero(img == img.min()) / img.size
    np.testing.assert_allclose(ours, (sk - c0) / (1 - c0), atol=1e-5)


def test_he_with_fewer_bins():
    x = (torch.arange(16, dtype=torch.float32) / 15).reshape(1, 1, 4, 4)
    torch.testing.assert_close(histogram_equalize(x, bins=16), x, atol=1e-6, rtol=0)
    out = histogram_equalize(x, bins=2)  # levels 0 (x < 0.5) and 1
    assert set(out.unique().tolist()) == {0.0, 1.0}


def test_he_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        histogram_equalize(torch.tensor([[[0.1, float("nan")]]]))
    with pytest.raises(UserError, match="N×C×H×W"):
        histogram_equalize(torch.rand(4, 4))
    with pytest.raises(ValueError, match="empty"):
        histogram_equalize(torch.rand(1, 3, 0, 4))


def test_log_input_is_finite_at_zero():
    out = log_input(torch.tensor([0.0, 1.0, -0.5]))
    torch.testing.assert_close(out, torch.log(torch.tensor([1e-3, 1.001, 1e-3])))


def test_color_map_l1_is_zero_for_the_image_own_map_and_positive_otherwise():
    from nightflow.maps import color_map_l1, color_ratio_map

    img = torch.rand(2, 3, 5, 5) + 0.1
    assert float(color_map_l1(color_ratio_map(img), img)) == 0.0
    assert float(color_map_l1(torch.full_like(img, 1 / 3), img)) > 0.01
