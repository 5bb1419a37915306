"""SSFlow (issue 13): the OAtt-UNet encoder's layers, the self-supervised losses and target-free training.

What must hold: the orthogonal-attention filters are orthonormal and persisted; the memory-bounded FAC equals
the unfold reference; the paper-size encoder has the released network's live parameter count; the flow with
this encoder stays exactly invertible; neighbour pseudo-pairs are adjacent pixels; every self-supervised term
is finite and sends gradient to the model; a run on withheld targets trains without ever holding one; the
known shake kernel travels with its crop through flips and rotations; tiles agree with the whole image under
context pooling, and the released per-input pooling refuses tiles.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from nightflow import inference
from nightflow.data import degrade as deg
from nightflow.data.datasets import TARGET_KEYS, DataConfig, build_dataset
from nightflow.data.transforms import augment
from nightflow.errors import UserError
from nightflow.flow.subnets import ZeroConv2d
from nightflow.layers.attention import OrthogonalChannelAttention, gram_schmidt_filters
from nightflow.layers.fac import FilterAdaptiveConv, filter_adaptive_conv, filter_adaptive_conv_unfold
from nightflow.losses import LOSSES, LossSet, LossSpec, MissingBatchKeyError
from nightflow.losses.selfsup import blur_batch, neighbour_pair
from nightflow.models import build_any, zoo
from nightflow.models.config import SELF_SUPERVISED_X1
from nightflow.train.run import train_run

SELF_SUPERVISED = list(SELF_SUPERVISED_X1)  # every self-supervised term (models.config)


def _dark(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(1, h // 8), max(1, w // 8), generator=g)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.08 * smooth + 0.01 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


def _perturbed(name: str, std: float = 0.001) -> torch.nn.Module:
    """ActNorm initialised on pseudo-pairs, zero-initialised last convs set to N(0, std): a non-trivial model."""
    model = build_any(zoo.get_config(name))
    model.initialize({"lq": _dark(2, 32, 32)})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, ZeroConv2d):
                mod.conv.weight.normal_(0, std, generator=g)
                mod.conv.bias.normal_(0, std, generator=g)
    return model.eval()


# ----------------------------------------------------------------------------------------------------- layers
def test_orthogonal_attention_filters_are_orthonormal_fixed_and_persisted():
    filters = gram_schmidt_filters(64, 64)
    flat = filters.double().reshape(64, -1)
    assert float((flat @ flat.T - torch.eye(64, dtype=torch.float64)).abs().max()) < 1e-5
    block = OrthogonalChannelAttention(32, size=16)
    assert "filters" in block.state_dict() and not any(p is block.filters for p in block.parameters())
    with pytest.raises(ValueError, match="size²"):
        gram_schmidt_filters(32, 4)  # 16 dimensions cannot hold 32 orthonormal filters


def test_orthogonal_attention_gate_replayed_from_a_store_equals_the_gate_of_the_map_it_was_taken_on():
    from nightflow.context import AttentionStore

    block = OrthogonalChannelAttention(16, size=8, reduction=2, norm="none").eval()
    x = torch.randn(2, 16, 24, 24)
    rec = AttentionStore()
    direct = block(x, rec)
    assert len(rec.maps) == 1 and rec.maps[0].shape == (2, 16, 1, 1)
    assert torch.allclose(block(x, AttentionStore(rec.maps)), direct) and torch.allclose(block(x), direct)
    # the gate is global: replaying it on a crop is what keeps crops consistent with the whole map
    crop = x[..., 4:20, 4:20]
    assert not torch.allclose(block(crop), block(crop, AttentionStore(rec.maps)))


@pytest.mark.parametrize("k", [3, 5])
def test_filter_adaptive_conv_equals_the_unfold_reference_values_and_gradients(k):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    kern = torch.randn(2, 4 * k * k, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    a, b = filter_adaptive_conv(x, kern, k), filter_adaptive_conv_unfold(x, kern, k)
    assert torch.allclose(a, b, atol=1e-12)
    ga = torch.autograd.grad(a.square().sum(), (x, kern))
    gb = torch.autograd.grad(b.square().sum(), (x, kern))
    assert all(torch.allclose(p, q, atol=1e-10) for p, q in zip(ga, gb))
    # one pixel's output is the correlation of its replicate-padded neighbourhood with its own kernel
    r = k // 2
    pad = F.pad(x.detach(), (r, r, r, r), mode="replicate")
    patch = pad[1, 2, 3 : 3 + k, 0:k]
    assert torch.allclose(a[1, 2, 3, 0], (patch.reshape(-1) * kern[1, 2 * k * k : 3 * k * k, 3, 0]).sum())


def test_fac_module_never_materialising_kernels_equals_its_unfold_path():
    torch.manual_seed(0)
    fac = FilterAdaptiveConv(6, k=5, hidden_layers=2).double()
    x, guide = torch.randn(1, 6, 10, 12, dtype=torch.float64), torch.randn(1, 6, 10, 12, dtype=torch.float64)
    assert torch.allclose(fac(x, guide), fac(x, guide, unfold=True), atol=1e-12)
    assert fac.kernels(guide).shape == (1, 6 * 25, 10, 12)


def test_paper_encoder_has_the_released_networks_live_parameter_count():
    """6,381,777 = the live OAtt-UNet modules + conv_first of the official SSFlow (reference fact sheet §6)."""
    model = build_any(zoo.get_config("ssflow-paper"))
    assert sum(p.numel() for p in model.encoder.parameters()) == 6_381_777
    out = model.encoder(_dark(1, 64, 96))
    assert [tuple(f.shape[1:]) for f in out.features] == [(64, 32, 48), (64, 16, 24), (64, 8, 12)]
    assert out.color_map.shape == (1, 3, 64, 96)


def test_ssflow_tiny_flow_is_exactly_invertible_and_its_loss_terms_are_registered():
    model = _perturbed("ssflow-tiny").double()
    lq = _dark(1, 24, 40).double()
    hq = (lq * 6).clamp(0, 1)
    latents, _ = model.encode(hq, lq)
    assert torch.allclose(model.decode(latents, lq), hq, atol=1e-9)
    assert set(SELF_SUPERVISED) <= set(LOSSES.names())


# ----------------------------------------------------------------------------------------------------- losses
def test_neighbour_pairs_are_edge_adjacent_pixels_of_one_cell():
    h, w = 8, 10
    rows = torch.arange(h).view(1, 1, h, 1).expand(1, 1, h, w).float()
    cols = torch.arange(w).view(1, 1, 1, w).expand(1, 1, h, w).float()
    a, b = neighbour_pair(torch.cat([rows, cols, rows * 0], 1), torch.Generator().manual_seed(0))
    assert a.shape == (1, 3, 4, 5)
    dist = (a[:, 0] - b[:, 0]).abs() + (a[:, 1] - b[:, 1]).abs()
    assert torch.equal(dist, torch.ones_like(dist))
    assert torch.equal(a[:, 0] // 2, torch.arange(4).view(1, 4, 1).expand(1, 4, 5).float())
    assert torch.equal(b[:, 1] // 2, torch.arange(5).view(1, 1, 5).expand(1, 4, 5).float())
    with pytest.raises(ValueError, match="even"):
        neighbour_pair(torch.zeros(1, 3, 5, 4))


def test_blur_batch_matches_the_degradation_blur_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 20, generator=g)
    k1 = deg.motion_blur_kernel(g, (6.0, 6.0))[0].float()
    side = 15
    kernels = torch.stack([deg.centred_kernel(k1, side), deg.centred_kernel(None, side)])
    out = blur_batch(x, kernels)
    interior = (slice(None), slice(8, 12), slice(8, 12))  # away from the edges, where padding modes differ
    assert torch.allclose(out[0][interior], deg.blur(x[0], k1)[interior], atol=1e-5)
    assert torch.allclose(out[1], x[1], atol=1e-6)  # the delta kernel leaves the image alone


def test_kernel_turned_with_its_crop_still_explains_the_blur():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 24, 24, generator=g)
    k = deg.motion_blur_kernel(g, (8.0, 8.0))[0].float()
    kk = deg.centred_kernel(k, 21)
    blurred = blur_batch(x[None], kk[None])[0]
    for seed in range(6):  # every flip/rotation combination augment draws
        aug_x, aug_b, aug_k = augment([x, blurred, kk], torch.Generator().manual_seed(seed))
        assert torch.allclose(blur_batch(aug_x[None], aug_k[None])[0], aug_b, atol=1e-5)


def _selfsup_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    k = deg.centred_kernel(deg.motion_blur_kernel(g, (5.0, 5.0))[0].float(), 15)
    lq = _dark(2, 32, 32, seed=4)
    from nightflow.context import thumbnail

    return {"lq": lq, "ctx_thumb": thumbnail(lq), "blur_kernel": torch.stack([k, k.flip(-1)])}


def test_every_self_supervised_term_is_finite_and_sends_gradient_to_the_model():
    model = _perturbed("ssflow-tiny").train()
    batch = _selfsup_batch()
    for name in SELF_SUPERVISED:
        model.zero_grad()
        terms = LossSet([LossSpec(name, 1.0)])(
            model.loss_outputs(batch, torch.Generator().manual_seed(0)), batch
        )
        assert torch.isfinite(terms["total"]), name
        terms["total"].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(gr).all() for gr in grads), name
        assert sum(float(gr.abs().sum()) for gr in grads) > 0, name


def test_supervised_terms_are_refused_on_a_batch_without_targets():
    model = _perturbed("ssflow-tiny").train()
    with pytest.raises(MissingBatchKeyError, match="'hq'"):
        LossSet([LossSpec("nll", 1.0)])(model.loss_outputs(_selfsup_batch()), _selfsup_batch())
    batch = _selfsup_batch()
    del batch["blur_kernel"]  # unpaired real photos: no known kernel, so reblur must be dropped, not guessed
    with pytest.raises(MissingBatchKeyError, match="blur_kernel"):
        LossSet([LossSpec("reblur", 1.0)]).check_batch(batch)


# ------------------------------------------------------------------------------------------ training, tiling
@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from nightflow.data.io import write_image

    root = tmp_path_factory.mktemp("photos")
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for i in range(2):
            coarse = torch.rand(1, 3, 6, 6, generator=gen)
            img = F.interpolate(coarse, size=(64, 64), mode="bilinear")[0].clamp(0, 1)
            write_image(root / split / f"p{i}.png", img)
    return root


def test_withheld_items_carry_no_target_and_the_shake_kernel_of_their_crop(photos):
    cfg = DataConfig(
        format="synthetic",
        root=str(photos),
        split="train",
        scale=1,
        patch_size=32,
        length=3,
        preset="lol-blur",
        targets="withhold",
        scene_size=64,
    )
    item = build_dataset(cfg, train=True)[1]
    assert not set(TARGET_KEYS) & set(item) and {"lq", "ctx_thumb", "blur_kernel"} <= set(item)
    side = deg.motion_kernel_side(deg.get_preset("lol-blur"))
    assert item["blur_kernel"].shape == (side, side) and abs(float(item["blur_kernel"].sum()) - 1) < 1e-5
    with pytest.raises(Exception, match="targets"):
        DataConfig(format="synthetic", root=str(photos), targets="hide")


def test_self_supervised_run_trains_on_withheld_targets_without_ever_holding_one(
    tmp_path, photos, monkeypatch
):
    """Two steps of the shipped recipe; every batch the losses see is checked for target keys."""
    import nightflow.losses.base as loss_base

    seen: list[set[str]] = []
    original = loss_base.LossSet.__call__

    def spy(self, out, batch):
        seen.append(set(batch))
        return original(self, out, batch)

    monkeypatch.setattr(loss_base.LossSet, "__call__", spy)
    recipe = yaml.safe_load((zoo.CONFIG_DIR / "train" / "ssflow-tiny-lolblur-selfsup.yaml").read_text())
    recipe["data"].update(root=str(photos), patch_size=32, length=4, scene_size=64)
    recipe["val"].update(root=str(photos), patch_size=32, length=1, scene_size=64)
    recipe["train"].update(
        max_steps=2, batch_size=2, val_every=2, log_every=1, checkpoint_every=2, warmup_steps=0
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    train_run(path, out=tmp_path / "run")
    assert len(seen) == 2 and all(not keys & set(TARGET_KEYS) for keys in seen)
    log = (tmp_path / "run" / "log.csv").read_text()
    assert "pseudo_nll" in log and "reblur" in log


def test_context_pooled_tiles_agree_with_the_whole_image_and_released_pooling_refuses_tiles():
    model = _perturbed("ssflow-tiny")
    spec = model.tiling
    assert spec.tileable and spec.grid == 8
    lq = _dark(1, 2 * spec.min_tile, spec.min_tile // 2 * 2, seed=7)[..., : spec.min_tile + 64, :]
    whole = inference.restore(model, lq, tile=0)
    tiled = inference.restore(model, lq, tile=spec.min_tile)
    assert float(whole.std()) > 0.01 and float(((whole == 0) | (whole == 1)).float().mean()) < 0.05
    assert float((whole - tiled).abs().max()) * 255 <= 1.0
    paper = build_any(zoo.get_config("ssflow-paper")).eval()
    assert not paper.tiling.tileable
    with pytest.raises(UserError, match="til"):
        inference.restore(paper, _dark(1, 16, 16), tile=8)


def test_fresh_encoder_carries_the_image_into_the_conditioning_whatever_its_darkness():
    """The failure that flattened the first runs: with default init the conditioning ignored the input. Now a
    fresh ssflow-tiny's features differ between two photos by a good share of their spread, at 0.05 and 0.5
    brightness alike (input gain + signal-preserving init), and each FAC starts as the identity."""
    model = build_any(zoo.get_config("ssflow-tiny")).eval()
    a, b = _dark(1, 64, 64, seed=1) / 0.09, _dark(1, 64, 64, seed=2) / 0.09
    spreads = []
    for level in (0.05, 0.5):
        with torch.no_grad():
            fa = model.condition(a * level, model.context(a * level)).features
            fb = model.condition(b * level, model.context(b * level)).features
        for x, y in zip(fa, fb):
            assert float((x - y).std()) > 0.1 * float(x.std()), level
        spreads.append(float(fa[0].std()))
    assert 0.5 < spreads[0] / spreads[1] < 2.0  # 10× darker input, about the same feature scale
    fac = model.encoder.fac1
    x = torch.randn(1, fac.predictor[0].in_channels, 8, 8)
    ref = F.leaky_relu(x, 0.2)
    assert float((fac(x, torch.randn_like(x)) - ref).abs().mean()) < 0.05 * float(ref.abs().mean())


def test_classical_restoration_steps_do_what_they_say():
    from nightflow.baselines import get_baseline
    from nightflow.context import linear_luminance

    g = torch.Generator().manual_seed(0)
    clean = F.interpolate(
        torch.rand(1, 3, 6, 6, generator=g), size=(48, 48), mode="bilinear", align_corners=False
    )
    dark = clean * 0.05
    bright = get_baseline("auto", scale=1).restore(dark)
    assert abs(float(linear_luminance(bright).mean()) - 0.18) < 0.02  # metered to 18 % grey
    noisy = (clean + 0.08 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    denoised = get_baseline("nlm", scale=1).restore(noisy)
    assert float((denoised - clean).abs().mean()) < 0.7 * float((noisy - clean).abs().mean())
    edge = torch.zeros(1, 3, 32, 32)
    edge[..., 16:] = 0.8
    blurred = blur_batch(edge, deg.centred_kernel(torch.tensor(_gauss(1.5), dtype=torch.float32), 15)[None])
    sharper = get_baseline("rl", scale=1).restore(blurred)
    assert float((sharper - edge).abs().mean()) < float((blurred - edge).abs().mean())


def _gauss(sigma: float) -> list:
    from nightflow.baselines.restore import gaussian_psf

    return gaussian_psf(sigma).tolist()


def test_bundled_ssflow_loads_by_alias_restores_a_sample_and_tiles_like_the_whole_image(tmp_path):
    """`--model ssflow` is the bundled, self-supervised ssflow-tiny; two tiles of its smallest tile size agree
    with the whole image within 1/255 (measured margin 96 LR px); the CLI restores a bundled sample with it."""
    import nightflow
    from nightflow.cli import main
    from nightflow.data.io import read_image, to_tensor
    from nightflow.demo import EXAMPLES

    model = nightflow.load("ssflow").restorer.eval()
    assert model.cfg.name == "ssflow-tiny" and (zoo.WEIGHTS_DIR / "ssflow-tiny.md").is_file()
    spec = model.tiling
    dark = to_tensor(read_image(EXAMPLES / "mate-ladybird_dark.png")).float()  # 100×160
    row = torch.cat([dark, dark.flip(-1), dark], -1)
    lq = torch.cat([row, row.flip(-2), row, row.flip(-2)], -2)[None][..., : spec.min_tile, :448].contiguous()
    whole = inference.restore(model, lq, tile=0)
    tiled = inference.restore(model, lq, tile=spec.min_tile)
    assert float((whole - tiled).abs().max()) * 255 <= 1.0
    assert float(whole.mean()) > 2 * float(lq.mean())  # it brightens
    out = tmp_path / "out"
    assert (
        main(["enhance", str(EXAMPLES / "mate-ladybird_dark.png"), "-o", str(out), "--model", "ssflow"]) == 0
    )
    assert len(list(out.glob("*.png"))) == 1


def test_the_full_size_reverse_pass_runs_once_for_all_the_terms_that_read_it(monkeypatch):
    model = _perturbed("ssflow-tiny").train()
    calls = []
    original = model._mean_path
    monkeypatch.setattr(
        model, "_mean_path", lambda c, lq_p, like: calls.append(lq_p.shape) or original(c, lq_p, like)
    )
    batch = _selfsup_batch()
    specs = [LossSpec(n, 1.0) for n in ("neighbour_consistency", "color_consistency", "reblur")]
    LossSet(specs)(model.loss_outputs(batch, torch.Generator().manual_seed(0)), batch)
    full = [s for s in calls if s[-2:] == batch["lq"].shape[-2:]]
    assert len(full) == 1 and len(calls) == 2  # one full-size pass, one on the half-size pseudo input
