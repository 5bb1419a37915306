"""NIQE against the official MATLAB release's values and BasicSR's port, on IQA-PyTorch's calibration images.

Needs the cached assets (``python -m nightflow.metrics.assets``); without them these tests fail with the
message that says how to fetch them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nightflow.errors import UserError
from nightflow.metrics import niqe
from nightflow.metrics.assets import CALIBRATION_IMAGES, calibration_file, require


def _dist(name: str) -> np.ndarray:
    return np.asarray(Image.open(require(calibration_file("dist", name))).convert("RGB"))


def test_niqe_matches_the_official_matlab_release():
    """Source: IQA-PyTorch ResultsCalibra/calibration_summary.csv, row ``niqe`` (the official MATLAB release,
    utlive/niqe, rgb2gray) and row ``niqe(ours)`` (IQA-PyTorch's Python port), on the distorted images.

    The pristine parameters in BasicSR 1.4.2 are the release's: they reproduce this row (to 0.02 on four
    images). The row ``niqe_matlab`` (7.2, 2.99, 3.17, 3.71, 7.69) is MATLAB's built-in ``niqe()``, whose
    default model is a different one, so it is not a target here. Tolerance (as the evaluation reference
    sets it): within 0.25 of MATLAB, or at least as close to MATLAB as IQA-PyTorch's own port (I19 is
    numerically fragile: float32 vs float64 arithmetic alone moves it by 0.3).
    """
    official = [15.7536, 3.6549, 3.2355, 3.184, 8.6352]
    pyiqa_port = [15.6538, 3.6549, 3.2342, 3.1921, 9.0722]
    values = [float(niqe(_dist(n))) for n in CALIBRATION_IMAGES]
    for name, ours, ref, port in zip(CALIBRATION_IMAGES, values, official, pyiqa_port):
        assert abs(ours - ref) <= max(0.25, abs(port - ref)), (name, ours, ref)
    close = sum(abs(o - r) < 0.02 for o, r in zip(values, official))
    assert close >= 4, values


def test_niqe_y_channel_matches_basicsr():
    """Source: BasicSR 1.4.2 ``calculate_niqe(img, 0, convert_to='y')`` run on I04, I06, I08 (3.793151,
    3.188397, 3.139858). BasicSR computes in float32, which moves the fragile I03/I19 by 0.04/0.3, so only
    these three are compared (tolerance 0.01)."""
    basicsr = {"I04": 3.793151, "I06": 3.188397, "I08": 3.139858}
    for name, expected in basicsr.items():
        assert float(niqe(_dist(name), channel="y")) == pytest.approx(expected, abs=0.01), name


def test_niqe_is_per_image_and_honours_crop_border():
    img = torch.from_numpy(_dist("I04").transpose(2, 0, 1).copy()).float() / 255
    batch = torch.stack([img, img.flip(-1)])
    values = niqe(batch)
    assert values.shape == (2,)
    cropped = float(niqe(img, crop_border=8))
    assert cropped == pytest.approx(float(niqe(img[:, 8:-8, 8:-8])), abs=1e-12)
    assert cropped != pytest.approx(float(values[0]), abs=1e-6)


def test_niqe_needs_two_blocks():
    with pytest.raises(UserError, match="96"):
        niqe(torch.rand(3, 96, 150))
