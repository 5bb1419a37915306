"""``nightflow convert``: the authors' checkpoints become nightflow weights that compute what the official code does.

The fixtures (tests/fixtures/convert/, made once by ``scripts/make_convert_fixtures.py fixtures`` from snapshots
of the official code, which is not in this repository) hold, per architecture (LLFlow-small, SSFlow), a
reduced-width official network's random-init, perturbed state dict (float16), an input and the official code's
output and NLL on it. The input (21×30) is
padded to 24×32: not a multiple of 16.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from nightflow.cli import main
from nightflow.convert import ConversionError, convert_state_dict, lu_factors, read_state_dict
from nightflow.encoders.rrdb import RRDBConfig, RRDBEncoder
from nightflow.flow import InvConv1x1
from nightflow.models.checkpoint import load_model, read_metadata
from nightflow.models.sizes import crop_to

FIXTURES = Path(__file__).parent / "fixtures" / "convert"


def _official(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    state = {k: v.float() for k, v in load_file(str(FIXTURES / f"{name}_state.safetensors")).items()}
    io = load_file(str(FIXTURES / f"{name}_io.safetensors"))
    with safe_open(str(FIXTURES / f"{name}_io.safetensors"), framework="pt") as f:
        meta = dict(f.metadata())
    return state, io, meta


@pytest.fixture()
def llflow_pth(tmp_path: Path) -> Path:
    state, _, _ = _official("llflow")
    path = tmp_path / "LOL_smallNet.pth"
    torch.save(state, path)
    return path


def test_llflow_convert_and_restore_reproduce_the_official_output(llflow_pth: Path, tmp_path: Path, capsys):
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(llflow_pth), "--arch", "llflow-small", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    _, io, meta = _official("llflow")
    model = load_model(out)
    lq, hq, official = io["lq"], io["hq"], io["out"]
    with torch.no_grad():
        restored = model.restore(lq)
        lq_p, size = model._pad_lq(lq)
        assert tuple(lq_p.shape[-2:]) == (24, 32)  # padded size not a multiple of 16
        raw = crop_to(model._mean_path(model.condition(lq_p, model.context(lq)), lq_p, None), size)
        nll = float(model.nll_bits_per_dim(hq, lq)[0])
    assert float(official.std()) > 0.1  # the perturbed network's output is not trivial
    assert float((raw - official).abs().max()) < 1e-4
    assert float((restored - official.clamp(0, 1)).abs().max()) < 1e-4
    # the official NLL is bits per pixel of the same log-likelihood (3 dimensions per pixel)
    assert abs(float(meta["nll_bits_per_pixel"]) / 3 - nll) < 1e-4


def test_converted_file_records_source_hash_mapping_and_dead_weights(llflow_pth: Path, tmp_path: Path):
    import hashlib

    out = tmp_path / "c.safetensors"
    assert main(["convert", str(llflow_pth), "--arch", "llflow-small", "-o", str(out), "-q"]) == 0
    record = json.loads(read_metadata(out)["nightflow_conversion"])
    assert record["source_sha256"] == hashlib.sha256(llflow_pth.read_bytes()).hexdigest()
    assert record["official_code"] == "wyf0912/LLFlow@115da161a96d"
    assert set(record["dead_tensors_skipped"]) == {
        f"{m}.{p}"
        for m in ("RRDB.HRconv", "RRDB.downconv3", "RRDB.conv_last", "RRDB.awb_para", "flowUpsamplerNet.f.0")
        for p in ("weight", "bias")
    }
    mapped = {row[0] for row in record["mapping"]}
    state = read_state_dict(llflow_pth)
    assert mapped | set(record["dead_tensors_skipped"]) == set(
        state
    )  # every tensor is mapped or skipped by name
    assert ["RRDB.RRDB_trunk.1.RDB3.conv5.weight", ["encoder.trunk.1.body.2.last.weight"], "copy"] in record[
        "mapping"
    ]
    # an existing output is kept unless --overwrite
    assert main(["convert", str(llflow_pth), "--arch", "llflow-small", "-o", str(out), "-q"]) == 2


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_checkpoint_that_needs_pickled_code_is_refused(tmp_path: Path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"net": Path("anything")}, path)  # a pickled object, not a tensor
    assert main(["convert", str(path), "--arch", "llflow-small", "-o", str(tmp_path / "o.safetensors")]) == 2
    err = _one_error_line(capsys)
    assert "weights_only=True" in err and "pickled" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_a_wrong_shaped_or_foreign_tensor_is_refused_by_name(tmp_path: Path, capsys):
    state, _, _ = _official("llflow")
    state["RRDB.trunk_conv.weight"] = torch.zeros(8, 7, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    assert main(["convert", str(path), "--arch", "llflow-small", "-o", str(tmp_path / "o.safetensors")]) == 2
    err = _one_error_line(capsys)
    assert "RRDB.trunk_conv.weight" in err and "[8, 7, 3, 3]" in err and "[8, 8, 3, 3]" in err
    state, _, _ = _official("llflow")
    state["RRDB.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match="RRDB.extra_head.weight"):
        convert_state_dict(state, "llflow-small")
    state, _, _ = _official("llflow")
    del state["flowUpsamplerNet.layers.3.affine.fAffine.4.logs"]
    with pytest.raises(
        ConversionError, match=r"lacks tensor flowUpsamplerNet\.layers\.3\.affine\.fAffine\.4\.logs"
    ):
        convert_state_dict(state, "llflow-small")


def test_lu_factors_rebuild_the_plain_weight():
    w = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(0)))[0] * 1.3
    conv = InvConv1x1(12)
    conv.load_state_dict(
        {**conv.state_dict(), **{k.split(".", 1)[1]: v for k, v in lu_factors(w, "c").items()}}
    )
    assert torch.allclose(conv.weight().float(), w, atol=1e-6)
    with pytest.raises(ConversionError, match="singular"):
        lu_factors(torch.zeros(4, 4), "c", "flowUpsamplerNet.layers.1.invconv.weight")


def test_released_he_table_is_cv2_equalize_hist_of_the_whole_image():
    rng = np.random.default_rng(0)
    u8 = (rng.random((37, 53, 3)) ** 3 * 90).astype(np.uint8)
    lq = torch.from_numpy(u8).permute(2, 0, 1).unsqueeze(0).float() / 255
    enc = RRDBEncoder(RRDBConfig.released(nf=8, nb=1, gc=8, stack_blocks=[0]), 1, 3)
    he = enc._inputs(lq, enc.make_context(lq))[:, 3:6]
    want = np.stack([cv2.equalizeHist(np.ascontiguousarray(u8[..., c])) for c in range(3)], axis=0) / 255.0
    assert float((he[0] - torch.from_numpy(want).float()).abs().max()) < 1e-6
    assert not enc.onnx_exportable
    # the defaults are nightflow's own encoder (thumbnail HE, exportable)
    assert RRDBEncoder(RRDBConfig(nf=8, nb=1, gc=8, stack_blocks=[0]), 1, 3).onnx_exportable


# ------------------------------------------------------------------------------------------------------ SSFlow
# The fixture is a reduced official SSFlow (U-Net widths 8/16/16/16, conditioning 16, 8×8 Gram–Schmidt filters,
# K 1, one transition, hidden 8; its dead tensors cut to one element: the converter skips them by name), made
# input-sensitive by the fixture script (BatchNorm statistics, PReLU slopes and the U-Net's weights rescaled).


@pytest.fixture()
def ssflow_pth(tmp_path: Path) -> Path:
    state = load_file(str(FIXTURES / "ssflow_state.safetensors"))
    path = tmp_path / "best_psnr_G.pth"
    torch.save(state, path)
    return path


def test_ssflow_convert_and_restore_reproduce_the_official_output(ssflow_pth: Path, tmp_path: Path, capsys):
    out = tmp_path / "ssflow.safetensors"
    assert main(["convert", str(ssflow_pth), "--arch", "ssflow", "-o", str(out)]) == 0
    assert "channels [8, 16, 16, 16]" in capsys.readouterr().out
    _, io, meta = _official("ssflow")
    model = load_model(out)
    lq, hq, official = io["lq"], io["hq"], io["out"]
    with torch.no_grad():
        restored = model.restore(lq)
        lq_p, size = model._pad_lq(lq)
        assert tuple(lq_p.shape[-2:]) == (24, 32)  # padded size not a multiple of 16
        raw = crop_to(model._mean_path(model.condition(lq_p, model.context(lq)), lq_p, None), size)
        nll = float(model.nll_bits_per_dim(hq, lq)[0])
        other = crop_to(
            model._mean_path(model.condition(lq_p.flip(-1), model.context(lq.flip(-1))), lq_p, None), size
        )
    assert float(official.std()) > 0.1 and float((other - raw).abs().max()) > 0.05  # input-dependent output
    assert float((raw - official).abs().max()) < 1e-4
    assert float((restored - official.clamp(0, 1)).abs().max()) < 1e-4
    # the official NLL is bits per pixel of the same log-likelihood (3 dimensions per pixel)
    assert abs(float(meta["nll_bits_per_pixel"]) / 3 - nll) < 1e-4


def test_ssflow_record_copies_buffers_and_skips_every_dead_group_by_name(ssflow_pth: Path, tmp_path: Path):
    out = tmp_path / "c.safetensors"
    assert main(["convert", str(ssflow_pth), "--arch", "ssflow", "-o", str(out), "-q"]) == 0
    record = json.loads(read_metadata(out)["nightflow_conversion"])
    assert record["official_code"] == "shibaoshun/SSFlow@1a8778e39d2f"
    state = read_state_dict(ssflow_pth)
    dead = set(record["dead_tensors_skipped"])
    # every tensor is mapped or skipped by name
    assert {row[0] for row in record["mapping"]} | dead == set(state)
    for group in (
        "RRDB.denoise.OrthoNet.", "RRDB.denoise.conv_1c.", "RRDB.denoise.attn3.", "RRDB.denoise.norm2.",
        "RRDB.denoise.side_out.", "RRDB.RRDB_trunk.", "RRDB.fine_tune_color_map.", "RRDB.conv_fac_k3.",
        "flowUpsamplerNet.f.",
    ):  # fmt: skip
        assert any(name.startswith(group) for name in dead), group
    assert not any(name.startswith("RRDB.denoise.BasicBlock.") for name in dead)
    rows = {row[0]: row[1] for row in record["mapping"]}
    assert rows["RRDB.denoise.BasicBlock.F_C_A.constant_filter"] == ["encoder.ortho.filters"]
    assert rows["RRDB.denoise.D_block0.1.weight"] == ["encoder.out_conv.weight"]
    model = load_model(out)
    sd = model.state_dict()
    # the Gram–Schmidt filters and the BatchNorm statistics are the checkpoint's, not re-drawn or reset
    assert torch.equal(
        sd["encoder.ortho.filters"], state["RRDB.denoise.BasicBlock.F_C_A.constant_filter"].float()
    )
    assert torch.equal(
        sd["encoder.ortho.bn2.running_var"], state["RRDB.denoise.BasicBlock._process.4.running_var"].float()
    )
    assert int(sd["encoder.ortho.bn1.num_batches_tracked"]) == 7
    assert not model.encoder.tileable  # released pooling: each input pools itself


def test_ssflow_refusals_name_the_tensor(ssflow_pth: Path, tmp_path: Path, capsys):
    state = read_state_dict(ssflow_pth)
    bad = dict(state)
    bad["RRDB.denoise.PPM2.fuse.0.weight"] = torch.zeros(16, 31, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    assert main(["convert", str(path), "--arch", "ssflow", "-o", str(tmp_path / "o.safetensors")]) == 2
    err = _one_error_line(capsys)
    assert "RRDB.denoise.PPM2.fuse.0.weight" in err and "[16, 31, 3, 3]" in err and "[16, 32, 3, 3]" in err
    with pytest.raises(ConversionError, match=r"RRDB\.denoise\.extra\.weight"):
        convert_state_dict({**state, "RRDB.denoise.extra.weight": torch.zeros(3)}, "ssflow")
    missing = {k: v for k, v in state.items() if k != "RRDB.denoise.D_block2.body2.1.weight"}
    with pytest.raises(ConversionError, match=r"lacks tensor RRDB\.denoise\.D_block2\.body2\.1\.weight"):
        convert_state_dict(missing, "ssflow")
    # a refusal found while inferring the config names the file first (this used to recurse without end)
    with pytest.raises(ConversionError, match=r"^bad\.pth: the checkpoint lacks tensor RRDB\.denoise"):
        convert_state_dict({"RRDB.conv_first.weight": torch.zeros(32, 3, 3, 3)}, "ssflow", source="bad.pth")
    floats = {**state, "RRDB.denoise.BasicBlock._process.1.num_batches_tracked": torch.zeros(())}
    with pytest.raises(ConversionError, match="num_batches_tracked is torch.float32, not an integer"):
        convert_state_dict(floats, "ssflow")
    with pytest.raises(ConversionError, match="not needed for --arch ssflow"):
        convert_state_dict(state, "ssflow", config=Path("LOL_smallNet.yml"))
    # the wrong --arch either way: one line
    with pytest.raises(ConversionError, match="takes 3 channels"):
        convert_state_dict(state, "llflow-small")
    llflow, _, _ = _official("llflow")
    with pytest.raises(
        ConversionError, match=r"^tensor RRDB\.conv_first\.weight takes 12 channels.*--arch llflow"
    ):
        convert_state_dict(llflow, "ssflow")
