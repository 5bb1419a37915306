"""Whole-image context (nightflow.context): global statistics computed once, shared by tiles and training crops;
exposure estimated, controllable and learned from oracle gains."""

from __future__ import annotations

import pytest
import torch

import nightflow
from nightflow import inference
from nightflow.api import Model
from nightflow.baselines import get_baseline
from nightflow.context import (
    AttentionStore,
    apply_gain,
    apply_lut,
    histogram_lut,
    linear_luminance,
    oracle_log2_gain,
    thumbnail,
)
from nightflow.data.datasets import SyntheticDataset
from nightflow.data.io import write_image
from nightflow.errors import UserError
from nightflow.layers import ChannelAttention
from nightflow.maps import histogram_equalize
from nightflow.models import build_model
from nightflow.models.zoo import get_config


def _dark(n: int = 1, h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, h, w, generator=g) ** 2 * 0.25).contiguous()


def _initialised(name: str) -> torch.nn.Module:
    model = build_model(get_config(name))
    lq = _dark(2, 16, 16)
    s = model.scale
    model.initialize({"lq": lq, "hq": torch.rand(2, 3, 16 * s, 16 * s)})
    return model.eval()


def test_thumbnail_is_an_area_average_of_fixed_size_for_any_input():
    x = torch.rand(2, 3, 96, 144)
    t = thumbnail(x, 48)
    assert t.shape == (2, 3, 48, 48)
    assert torch.allclose(t.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-5)  # 96 and 144 divide by 48
    assert thumbnail(torch.rand(3, 10, 7), 48).shape == (3, 48, 48)  # small images are replicated up


def test_histogram_table_of_an_image_equalises_that_image_exactly_as_histogram_equalize():
    x = _dark(2, 23, 31)
    assert torch.equal(apply_lut(x, histogram_lut(x)), histogram_equalize(x))


def test_oracle_gain_makes_the_input_as_bright_as_the_target():
    lq = _dark(3)
    hq = torch.rand(3, 3, 80, 112) * 0.6
    gain = oracle_log2_gain(lq, hq)
    assert gain.shape == (3,) and bool((gain > 1).all())
    brightened = apply_gain(lq, gain)
    ratio = linear_luminance(brightened).mean(dim=(1, 2, 3)) / linear_luminance(hq).mean(dim=(1, 2, 3))
    assert torch.allclose(ratio, torch.ones(3), atol=0.05)  # up to clipping at 1


def test_channel_attention_replays_the_map_recorded_on_another_image():
    torch.manual_seed(0)
    layer = ChannelAttention(8, 2)
    thumb, image = torch.randn(1, 8, 12, 12), torch.randn(1, 8, 20, 28)
    store = AttentionStore()
    layer(thumb, store)
    assert len(store.maps) == 1 and store.maps[0].shape == (1, 2, 4, 4)
    replay = layer(image, AttentionStore(store.maps))
    own = layer(image)
    assert not torch.allclose(replay, own)  # the map really came from the thumbnail
    q, k, v = (t.reshape(1, 2, 4, -1) for t in layer.qkv(image))
    expected = layer.proj((store.maps[0] @ v).reshape(1, 8, 20, 28))
    assert torch.allclose(replay, expected, atol=1e-6)
    with pytest.raises(RuntimeError, match="fewer maps"):
        layer(image, AttentionStore([]))


def test_a_crop_restored_with_the_whole_images_context_matches_the_whole_image_inside():
    """The encoder's global parts see the whole image, not the crop: away from the crop's border (receptive
    field) the crop's output equals the whole image's output."""
    model = nightflow.load("lolisrflow-x2").restorer  # trained: the conditioning matters
    lq = _dark(1, 64, 64)
    with torch.no_grad():
        ctx = model.context(lq)
        whole = model.restore(lq, context=ctx)
        crop = model.restore(lq[..., :32, :32], context=ctx)
        own = model.restore(lq[..., :32, :32])  # the crop's own statistics: different
    inner = (slice(None), slice(None), slice(0, 24), slice(0, 24))
    shared_err = float((crop[inner] - whole[inner]).abs().max())
    own_err = float((own[inner] - whole[inner]).abs().max())
    assert shared_err < own_err / 4, (shared_err, own_err)


@pytest.mark.parametrize("name", ["lolisrflow-x1", "lolisrflow-x1-jpeg", "lolisrflow-x2", "lolisrflow-x4"])
def test_bundled_weights_tiled_output_equals_the_whole_image_within_one_level(name):
    model = nightflow.load(name).restorer
    lq = nightflow.data.io.to_tensor(nightflow.data.io.read_image(_example())).unsqueeze(0)
    lq = lq[..., :160, :160].float().contiguous()
    whole = inference.restore(model, lq, tile=0)
    tiled = inference.restore(model, lq, tile=64)
    assert float((whole - tiled).abs().max()) * 255 <= 1.0


def _example():
    from nightflow.demo import EXAMPLES

    return sorted(EXAMPLES.glob("*_dark.png"))[0]


def test_exposure_shift_moves_the_gain_the_encoder_applies_to_its_input():
    model = _initialised("lolisrflow-x1-tiny")
    assert model.has_exposure
    lq = _dark(1, 32, 32)
    with torch.no_grad():
        ctxs = [model.context(lq, exposure=ev) for ev in (-1.0, 0.0, 1.0)]
        shown = [float(model.encoder._inputs(lq, c)[0][:, :3].mean()) for c in ctxs]
    assert shown[0] < shown[1] < shown[2], shown
    assert torch.allclose(ctxs[2].log2_gain, ctxs[1].log2_gain + 1.0)
    assert torch.equal(ctxs[1].log2_gain, ctxs[1].estimate)  # no shift: the head's own estimate


def test_exposure_on_a_model_without_exposure_control_is_a_clear_error():
    model = _initialised("llflow-small")
    assert not model.has_exposure
    with pytest.raises(UserError, match="no exposure control"):
        inference.restore(model, _dark(1, 16, 16), tile=0, exposure=1.0)
    with pytest.raises(UserError, match="no exposure control"):
        inference.restore(get_baseline("gamma"), _dark(1, 16, 16), tile=0, exposure=1.0)


def test_api_exposure_is_validated():
    m = Model(_initialised("lolisrflow-x1-tiny"))
    img = (_dark(1, 16, 16)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
    assert m.restore(img, exposure=1.0).shape == img.shape
    for bad in (float("nan"), 20.0, "bright"):
        with pytest.raises(UserError, match="exposure"):
            m.restore(img, exposure=bad)


def test_training_items_carry_the_context_of_the_scene_they_were_cut_from(tmp_path):
    torch.manual_seed(0)
    for split in ("train", "val"):
        for i in range(2):
            write_image(tmp_path / split / f"p{i}.png", torch.rand(3, 96, 128))
    ds = SyntheticDataset(tmp_path, split="train", scale=2, patch_size=32, scene_size=96, length=4)
    item = ds[0]
    assert item["lq"].shape == (3, 16, 16) and item["ctx_thumb"].shape == (3, 48, 48)
    assert item["log2_gain"].shape == () and float(item["log2_gain"]) > 1.0  # dark input, bright target
    assert not torch.allclose(item["ctx_thumb"], thumbnail(item["lq"]))  # the scene's, not the crop's
    # every photo is drawn over consecutive epochs, even with length < number of photos
    ds.length = 1
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        seen.add(ds[0]["name"].split("#")[0])
    assert seen == {"p0", "p1"}


def test_loss_trains_the_exposure_head_on_the_oracle_gain():
    model = _initialised("lolisrflow-x2-tiny")
    model.train()
    lq = _dark(2, 16, 16)
    hq = torch.rand(2, 3, 32, 32) * 0.5
    batch = {"lq": lq, "hq": hq, "ctx_thumb": thumbnail(lq), "log2_gain": oracle_log2_gain(lq, hq)}
    terms = model.loss(batch)
    assert {"nll", "l1", "exposure", "total"} <= set(terms)
    terms["total"].backward()
    head = model.encoder.exposure_head
    assert head.mlp[-1].weight.grad is not None and float(head.mlp[-1].weight.grad.abs().sum()) > 0
    assert head.log2_level.grad is not None


def test_exposure_head_from_precomputed_features_is_its_forward():
    from nightflow.encoders.exposure import ExposureHead, exposure_features

    head = ExposureHead()
    with torch.no_grad():
        head.mlp[-1].weight.normal_(generator=torch.Generator().manual_seed(0))  # a non-zero correction
    thumbs = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        assert torch.equal(head.from_features(*exposure_features(thumbs)), head(thumbs))
        assert not torch.equal(head(thumbs), head(thumbs * 0.5))  # the estimate does depend on the thumbnail


def _fit_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "fit_exposure_head.py"
    spec = importlib.util.spec_from_file_location("fit_exposure_head", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exposure_refit_cross_validation_holds_whole_photos_out():
    """Each photo has its own brightness offset, readable only from a one-hot 'which photo' feature: a fit that
    saw the photo learns it, one that held the photo out cannot. So the in-sample error must be far below the
    cross-validated one, and the fit must beat the plain auto-gain start."""
    from nightflow.encoders.exposure import ExposureHead

    fit_script = _fit_module()
    g = torch.Generator().manual_seed(0)
    photos, per_photo = 12, 20
    photo = torch.arange(photos).repeat_interleave(per_photo)
    offset = torch.randn(photos, generator=g) * 1.5
    feats = torch.zeros(photos * per_photo, ExposureHead.n_features)
    feats[torch.arange(len(photo)), photo] = 1.0  # the histogram slots carry the photo's identity here
    log_mean = torch.randn(len(photo), generator=g) * 2 - 6
    head = ExposureHead()
    gains = head.log2_level.detach() - log_mean + offset[photo]
    before = fit_script.errors(head, (feats, log_mean), gains)
    fitted = fit_script.fit(head, (feats, log_mean), gains, steps=400, lr=1e-2)
    after = fit_script.errors(fitted, (feats, log_mean), gains)
    held_out = fit_script.held_out_estimates(
        head, (feats, log_mean), gains, photo, folds=4, steps=400, lr=1e-2
    )
    cv = fit_script.error_summary(held_out - gains)
    assert after["rms_ev"] < 0.2 * before["rms_ev"]
    assert cv["rms_ev"] > 0.7 * before["rms_ev"]  # held-out photos: their offsets are unknowable
    assert torch.equal(head.mlp[-1].weight, torch.zeros_like(head.mlp[-1].weight))  # fit() works on a copy


def test_exposure_refit_scene_cache_is_reused_when_its_shares_match_up_to_float32_rounding():
    fit_script = _fit_module()
    wanted = {"jpeg_prob": 0.0, "tone_curve_prob": 0.5, "power_curve_prob": 0.3}
    old_cache = {key: torch.tensor(value) for key, value in wanted.items()}  # float32, as caches were written
    assert float(old_cache["power_curve_prob"]) != 0.3  # 0.30000001192...: why exact equality refused it
    assert fit_script.same_shares(fit_script.cached_shares(old_cache), wanted)
    assert not fit_script.same_shares(
        fit_script.cached_shares(old_cache), {**wanted, "power_curve_prob": 0.31}
    )
    older = {"jpeg_prob": torch.tensor(0.5)}  # written before the other shares existed: their defaults
    assert fit_script.cached_shares(older) == {**fit_script.SHARE_DEFAULTS, "jpeg_prob": 0.5}
