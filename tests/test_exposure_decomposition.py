"""benchmarks.exposure_decomposition: measuring one model again replaces its row and keeps the other models'."""

from __future__ import annotations

import json

import benchmarks.common as common
import benchmarks.exposure_decomposition as decomposition


def test_re_measuring_one_model_keeps_the_other_models_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(decomposition, "RESULTS", tmp_path)

    def fake_decompose(spec, root, suite):  # the restoration itself is not what this checks
        return {
            "spec": spec,
            "psnr": float(len(spec)),
            "psnr_oracle_exposure": 0.0,
            "ssim": 0.0,
            "ssim_oracle_exposure": 0.0,
            "mean_head_error_ev": 0.0,
            "mean_abs_head_error_ev": 0.0,
        }

    monkeypatch.setattr(decomposition, "decompose", fake_decompose)
    assert decomposition.main(["x1", "upt"]) == 0
    monkeypatch.setattr(decomposition, "decompose", lambda *a: {**fake_decompose(*a), "psnr": 99.0})
    assert decomposition.main(["upt"]) == 0
    rows = json.loads((tmp_path / "exposure_decomposition.json").read_text())["models"]
    assert [(r["spec"], r["psnr"]) for r in rows] == [("x1", 2.0), ("upt", 99.0)]
