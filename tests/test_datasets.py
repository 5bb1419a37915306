"""nightflow.data.datasets: every loader on tiny fixtures with the real folder and file names of its dataset.

Fixture pairs are built so that alignment is checkable: the LQ image is the HQ image area-downscaled by the
scale and darkened by an integer factor, from random pixels, so a wrong pair or a one-pixel shift shows at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nightflow.config import from_dict
from nightflow.data.datasets import (
    DataConfig,
    LOLBlurDataset,
    PairedFolderDataset,
    RellisurDataset,
    SyntheticDataset,
    build_dataset,
)
from nightflow.data.degrade import downscale
from nightflow.data.io import read_image, to_tensor, write_image
from nightflow.data.layouts import pair_key, parse_rellisur_name
from nightflow.errors import ConfigError, UserError

DARK = 4  # LQ = HQ // DARK (after downscaling)


def _block_mean(a: np.ndarray, s: int) -> np.ndarray:
    h, w = a.shape[0] // s, a.shape[1] // s
    return a[: h * s, : w * s].reshape(h, s, w, s, 3).astype(np.float64).mean(axis=(1, 3))


def make_pair(lq_path: Path, hq_path: Path, h: int, w: int, scale: int, seed: int) -> None:
    """Random HQ of (scale·h)×(scale·w) and its aligned LQ (h×w, area-downscaled, darkened ÷DARK)."""
    hq = np.random.default_rng(seed).integers(0, 256, size=(h * scale, w * scale, 3), dtype=np.uint8)
    lq = (np.round(_block_mean(hq, scale)) // DARK).astype(np.uint8)
    write_image(hq_path, hq)
    write_image(lq_path, lq)


def assert_aligned(item: dict, scale: int) -> None:
    """LQ must equal the HQ crop area-downscaled by ``scale`` and darkened, to within 8-bit rounding."""
    lq, hq = item["lq"], item["hq"]
    assert hq.shape[-2:] == tuple(scale * s for s in lq.shape[-2:])
    expected = downscale(hq, scale) * 255 / DARK
    diff = (expected - lq * 255).abs()
    assert diff.max() <= 1.01 and diff.mean() < 0.75, (item["name"], diff.max().item())


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rellisur_root(tmp_path_factory) -> Path:
    """Train/LLLR/<scene>-<exp>.png, NLHR/X{1,2,4}/<scene>.png, NLHR-Duplicates/X{s}/<LLLR name> (13×13 LLLR)."""
    root = tmp_path_factory.mktemp("RELLISUR")
    n = 13  # stands for 625: odd, so ×2/×4 crops need the 624-style crop
    for split in ("Train", "Val"):
        base = root / split
        for k, scene in enumerate(("00001", "00002", "00010")):
            x4 = np.random.default_rng(100 + k).integers(0, 256, size=(4 * n, 4 * n, 3), dtype=np.uint8)
            targets = {4: x4, 2: np.round(_block_mean(x4, 2)).astype(np.uint8)}
            targets[1] = np.round(_block_mean(x4, 4)).astype(np.uint8)
            for s, t in targets.items():
                write_image(base / "NLHR" / f"X{s}" / f"{scene}.png", t)
            for tag in ("2.5", "4.5"):
                name = f"{scene}-{tag}.png"
                write_image(base / "LLLR" / name, targets[1] // DARK)
                for s, t in targets.items():
                    write_image(base / "NLHR-Duplicates" / f"X{s}" / name, t)
    return root


@pytest.fixture()
def lol_root(tmp_path) -> Path:
    for split, names in (("our485", ["1", "2", "10"]), ("eval15", ["5"])):
        for i, name in enumerate(names):
            make_pair(
                tmp_path / split / "low" / f"{name}.png",
                tmp_path / split / "high" / f"{name}.png",
                12,
                16,
                1,
                i,
            )
    return tmp_path


# ---------------------------------------------------------------------------------------------------- RELLISUR


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rellisur_pairs_by_name_at_each_scale(rellisur_root, scale):
    ds = RellisurDataset(rellisur_root, "train", scale)
    assert len(ds) == 6
    assert [r.name for r in ds.records][:3] == ["00001-2.5", "00001-4.5", "00002-2.5"]
    assert ds.records[1].hq.parent.name == "X" + str(
        scale
    )  # 00001-4.5 goes with the ×s target of scene 00001
    for i in range(len(ds)):
        item = ds[i]
        assert item["lq"].shape == (3, 13, 13) and item["hq"].shape == (3, 13 * scale, 13 * scale)
        assert_aligned(item, scale)


def test_rellisur_624_crop_and_random_patches(rellisur_root):
    ds = RellisurDataset(rellisur_root, "val", 4, crop_lq=12)
    item = ds[0]
    assert item["lq"].shape == (3, 12, 12) and item["hq"].shape == (3, 48, 48)
    assert_aligned(item, 4)
    train = RellisurDataset(
        rellisur_root, "train", 2, crop_lq=12, patch_size=16, crop_multiple=8, train=True, seed=1
    )
    crops = []
    for epoch in range(3):
        train.set_epoch(epoch)
        item = train[0]
        assert item["lq"].shape == (3, 8, 8) and item["hq"].shape == (3, 16, 16)
        assert_aligned(item, 2)
        crops.append(item["lq"])
    assert not torch.equal(crops[0], crops[1]) or not torch.equal(crops[1], crops[2])


def test_rellisur_falls_back_to_nlhr_by_scene(tmp_path, rellisur_root):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(rellisur_root / "Val", root / "Val")
    shutil.rmtree(root / "Val" / "NLHR-Duplicates")
    ds = RellisurDataset(root, "val", 2)
    assert len(ds) == 6 and ds.records[0].hq.name == "00001.png"
    assert_aligned(ds[5], 2)
    # a split folder can be given directly
    assert len(RellisurDataset(root / "Val", "val", 2)) == 6


def test_rellisur_missing_target_and_wrong_scale_are_clear(tmp_path, rellisur_root):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(rellisur_root / "Train", root / "Train")
    (root / "Train" / "NLHR-Duplicates" / "X2" / "00002-4.5.png").unlink()
    (root / "Train" / "NLHR" / "X2" / "00002.png").unlink()
    with pytest.raises(UserError, match=r"no ×2 target for LLLR/00002-4\.5\.png"):
        RellisurDataset(root, "train", 2)
    # a ×4 folder holding ×2-sized images: the size check names the scale
    shutil.rmtree(root / "Train" / "NLHR-Duplicates" / "X4")
    shutil.copytree(root / "Train" / "NLHR-Duplicates" / "X1", root / "Train" / "NLHR-Duplicates" / "X4")
    with pytest.raises(UserError, match="check data.scale"):
        RellisurDataset(root, "train", 4)


def test_parse_rellisur_name_is_lenient():
    assert parse_rellisur_name("00001-2.5") == ("00001", "2.5", -2.5)
    assert parse_rellisur_name("00012-ev-3_5") == ("00012", "ev-3_5", -3.5)
    assert parse_rellisur_name("00003") == ("00003", "", None)
    assert parse_rellisur_name("00004-dark") == ("00004", "dark", None)


# ---------------------------------------------------------------------------------------------------- LOL family


def test_lol_train_and_test_splits(lol_root):
    train = build_dataset(DataConfig(format="lol", root=str(lol_root), split="train"), train=False)
    assert [train[i]["name"] for i in range(len(train))] == ["1", "2", "10"]
    for i in range(3):
        assert_aligned(train[i], 1)
    test = build_dataset(DataConfig(format="lol", root=str(lol_root), split="test"), train=False)
    assert len(test) == 1 and test[0]["name"] == "5" and test[0]["lq"].shape == (3, 12, 16)


def test_lol_missing_pair_names_the_file(lol_root):
    (lol_root / "our485" / "high" / "2.png").unlink()
    with pytest.raises(UserError, match=r"1 of 3 images .* no partner .*first: 2\.png"):
        build_dataset(DataConfig(format="lol", root=str(lol_root)), train=False)


def test_lol_rejects_scale_other_than_1(lol_root):
    with pytest.raises(UserError, match="set data.scale to 1"):
        build_dataset(DataConfig(format="lol", root=str(lol_root), scale=2), train=False)


def test_lolv2_real_and_synthetic_case_insensitive(tmp_path):
    real = tmp_path / "LOL-v2" / "Real_captured"
    make_pair(
        real / "Train" / "Low" / "low00001.png", real / "Train" / "Normal" / "normal00001.png", 8, 12, 1, 1
    )
    make_pair(
        real / "Train" / "Low" / "low00002.png", real / "Train" / "Normal" / "normal00002.png", 8, 12, 1, 2
    )
    make_pair(real / "Test" / "low" / "low00690.png", real / "Test" / "high" / "normal00690.png", 8, 12, 1, 3)
    syn = tmp_path / "LOL-v2" / "Synthetic"
    make_pair(syn / "Train" / "Low" / "r0001a.png", syn / "Train" / "Normal" / "r0001a.png", 8, 8, 1, 4)
    make_pair(syn / "Test" / "Low" / "r0002b.png", syn / "Test" / "Normal" / "r0002b.png", 8, 8, 1, 5)
    root = str(tmp_path / "LOL-v2")
    train = build_dataset(DataConfig(format="lolv2", root=root, split="train"), train=False)
    assert [train[i]["name"] for i in range(2)] == ["low00001", "low00002"]
    assert_aligned(train[1], 1)
    test = build_dataset(DataConfig(format="lolv2", root=root, split="test"), train=False)
    assert len(test) == 1 and test.records[0].hq.name == "normal00690.png"
    assert_aligned(test[0], 1)
    s_test = build_dataset(
        DataConfig(format="lolv2", root=root, split="test", subset="synthetic"), train=False
    )
    assert s_test[0]["name"] == "r0002b"
    assert_aligned(s_test[0], 1)


def test_lolblur_pairs_sequence_frames_and_configurable_folders(tmp_path):
    seed = 0
    for split in ("train", "test"):
        for seq in ("0001", "0012"):
            for frame in ("0000", "0001"):
                seed += 2
                b = tmp_path / split
                make_pair(
                    b / "low_blur_noise" / seq / f"{frame}.png",
                    b / "high_sharp_scaled" / seq / f"{frame}.png",
                    8,
                    8,
                    1,
                    seed,
                )
                make_pair(
                    b / "low_blur" / seq / f"{frame}.png",
                    b / "high_sharp_original" / seq / f"{frame}.png",
                    8,
                    8,
                    1,
                    seed + 1,
                )
    ds = build_dataset(DataConfig(format="lolblur", root=str(tmp_path), split="train"), train=False)
    assert [ds[i]["name"] for i in range(4)] == ["0001/0000", "0001/0001", "0012/0000", "0012/0001"]
    assert all(r.lq.parent.parent.name == "low_blur_noise" for r in ds.records)
    for i in range(4):
        assert_aligned(ds[i], 1)
    other = LOLBlurDataset(tmp_path, "test", lq_dir="low_blur", hq_dir="high_sharp_original")
    assert other.records[0].hq.parts[-3] == "high_sharp_original"
    assert_aligned(other[3], 1)


# ---------------------------------------------------------------------------------------------------- folders


def test_paired_folders_at_scale_2_with_batches(tmp_path):
    for i in range(4):
        make_pair(tmp_path / "low" / f"img{i}.png", tmp_path / "high" / f"img{i}.png", 12, 12, 2, i)
    cfg = DataConfig(format="paired", root=str(tmp_path), scale=2, patch_size=16, crop_multiple=8, seed=5)
    ds = build_dataset(cfg, train=True)
    batch = next(iter(DataLoader(ds, batch_size=2, shuffle=False)))
    assert batch["lq"].shape == (2, 3, 8, 8) and batch["hq"].shape == (2, 3, 16, 16)
    assert batch["name"] == ["img0", "img1"]
    for i in range(4):
        assert_aligned(ds[i], 2)
    # validation: central crop, no augmentation, identical across epochs
    val = build_dataset(cfg, train=False)
    first = val[0]["lq"].clone()
    val.set_epoch(3)
    assert torch.equal(val[0]["lq"], first)
    full = to_tensor(read_image(tmp_path / "low" / "img0.png"))
    assert torch.equal(first, full[:, 2:10, 2:10])


def test_augmentation_is_deterministic_per_seed_epoch_index(tmp_path):
    make_pair(tmp_path / "low" / "a.png", tmp_path / "high" / "a.png", 16, 16, 2, 0)
    kwargs = {"scale": 2, "patch_size": 16, "crop_multiple": 8, "train": True, "seed": 9}
    a, b = PairedFolderDataset(tmp_path, **kwargs), PairedFolderDataset(tmp_path, **kwargs)
    seen = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        ia, ib = a[0], b[0]
        assert torch.equal(ia["lq"], ib["lq"]) and torch.equal(ia["hq"], ib["hq"])
        assert_aligned(ia, 2)
        seen.add(ia["lq"].numpy().tobytes())
    assert len(seen) >= 6  # crops, flips and rotations really vary across epochs


def test_size_mismatch_and_empty_folder_and_bad_patch(tmp_path):
    make_pair(tmp_path / "low" / "a.png", tmp_path / "high" / "a.png", 8, 8, 2, 0)
    with pytest.raises(UserError, match=r"a\.png is 8×8, so ×4 needs 32×32.*16×16; check data.scale"):
        PairedFolderDataset(tmp_path, scale=4)
    with pytest.raises(UserError, match="multiple of 8"):
        PairedFolderDataset(tmp_path, scale=2, patch_size=12)
    with pytest.raises(UserError, match="smaller than the 16×16 crop"):
        PairedFolderDataset(tmp_path, scale=2, patch_size=32, train=True)[0]
    (tmp_path / "empty" / "low").mkdir(parents=True)
    (tmp_path / "empty" / "high").mkdir()
    with pytest.raises(UserError, match="no images"):
        PairedFolderDataset(tmp_path / "empty")
    with pytest.raises(UserError, match="not a folder"):
        PairedFolderDataset(tmp_path / "missing")


def test_pair_key_drops_low_normal_prefixes():
    assert pair_key(Path("low00001.png")) == pair_key(Path("normal00001.png")) == "00001"
    assert pair_key(Path("seq/High_3.png")) == "seq/3"
    assert pair_key(Path("low.png")) == "low"  # nothing would be left: keep the name


def test_unpaired_folder_items_have_no_target(tmp_path):
    for i in range(3):
        write_image(tmp_path / "DICM" / f"{i:02d}.jpg", np.full((10, 14, 3), 20 * i, np.uint8))
    ds = build_dataset(DataConfig(format="unpaired", root=str(tmp_path / "DICM")), train=False)
    items = [ds[i] for i in range(len(ds))]
    assert [it["name"] for it in items] == ["00", "01", "02"]
    assert all("hq" not in it and it["lq"].shape == (3, 10, 14) for it in items)
    cropped = build_dataset(
        DataConfig(format="unpaired", root=str(tmp_path / "DICM"), patch_size=8, crop_multiple=4), train=True
    )
    assert cropped[1]["lq"].shape == (3, 8, 8)


def test_removed_hist_eq_key_is_tolerated_as_false_and_refused_otherwise():
    """Old run folders' config.yaml spell out ``hist_eq: false``; it loads. ``true`` asked for an item no model
    reads: a one-line error naming the key."""
    assert from_dict(DataConfig, {"format": "paired", "hist_eq": False}, "data").format == "paired"
    with pytest.raises(ConfigError, match="data.hist_eq: this setting was removed") as info:
        from_dict(DataConfig, {"hist_eq": True}, "data")
    assert "\n" not in str(info.value)


def test_cache_false_is_refused_for_synthetic_data():
    with pytest.raises(ConfigError, match="data.cache"):
        DataConfig(format="synthetic", cache=False)
    assert DataConfig(format="synthetic").cache is None and DataConfig(format="synthetic", cache=True).cache


# ---------------------------------------------------------------------------------------------------- synthetic


@pytest.fixture()
def photos(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(2):
            write_image(
                tmp_path / split / f"p{i}.png", rng.integers(30, 220, size=(40, 48, 3), dtype=np.uint8)
            )
    return tmp_path


def test_synthetic_dataset_is_deterministic_per_seed_epoch_index(photos):
    cfg = DataConfig(format="synthetic", root=str(photos), scale=2, patch_size=16, length=5, seed=3)
    a, b = build_dataset(cfg, train=True), build_dataset(cfg, train=True)
    assert len(a) == 5
    first = a[3]
    assert first["lq"].shape == (3, 8, 8) and first["hq"].shape == (3, 16, 16) and first["name"] == "p1#3"
    assert torch.equal(b[3]["lq"], first["lq"]) and torch.equal(b[3]["hq"], first["hq"])
    a.set_epoch(1)
    assert not torch.equal(a[3]["lq"], first["lq"])
    a.set_epoch(0)
    assert torch.equal(a[3]["lq"], first["lq"])
    assert first["lq"].mean() < first["hq"].mean()
    batch = next(iter(DataLoader(a, batch_size=5)))
    assert batch["lq"].shape == (5, 3, 8, 8)


def test_synthetic_hq_is_a_crop_of_the_photo_and_val_is_fixed(photos):
    cfg = DataConfig(
        format="synthetic",
        root=str(photos),
        split="val",
        scale=4,
        patch_size=16,
        augment=False,
        seed=1,
        scene_scale=[1.0, 1.0],  # no resizing: the crop must be found verbatim in the photo
    )
    train = build_dataset(cfg, train=True)
    photo = to_tensor(read_image(photos / "val" / "p0.png"))
    hq = train[0]["hq"]
    windows = photo.unfold(1, 16, 1).unfold(2, 16, 1)  # 3 × 25 × 33 × 16 × 16
    match = (windows - hq[:, None, None]).abs().amax(dim=(0, 3, 4)) == 0
    assert match.sum() == 1
    val = build_dataset(cfg, train=False)
    before = val[1]["lq"].clone()
    val.set_epoch(5)
    assert torch.equal(val[1]["lq"], before) and val[1]["lq"].shape == (3, 4, 4)


def test_synthetic_rejects_bad_settings(photos):
    with pytest.raises(UserError, match="supports scales"):
        build_dataset(
            DataConfig(format="synthetic", root=str(photos), preset="lol-blur", scale=2), train=True
        )
    lolblur = build_dataset(
        DataConfig(format="synthetic", root=str(photos), preset="lol-blur", scale=1, patch_size=16),
        train=True,
    )
    assert lolblur[0]["lq"].shape == (3, 16, 16)
    with pytest.raises(UserError, match="no 'test' folder .* has train, val"):
        build_dataset(DataConfig(format="synthetic", root=str(photos), split="test"), train=False)
    darker = build_dataset(
        DataConfig(format="synthetic", root=str(photos), ev_range=[-2.0, -1.5]), train=True
    )
    assert darker.preset.ev_range == (-2.0, -1.5) and darker.preset.name == "dfsr-lle"


def test_synthetic_jpeg_share_overrides_the_preset(photos):
    cfg = dict(format="synthetic", root=str(photos), patch_size=16, length=6, augment=False)
    plain, mixed = (build_dataset(DataConfig(**cfg, jpeg_prob=p), train=False) for p in (None, 1.0))
    assert plain.preset.jpeg_prob == 0.0 and mixed.preset.jpeg_prob == 1.0
    # evaluation crops are central and JPEG is the last step: same target, JPEG-compressed input
    assert torch.equal(plain[3]["hq"], mixed[3]["hq"]) and not torch.equal(plain[3]["lq"], mixed[3]["lq"])
    # a zero share turns the preset's JPEG off exactly, random crops included
    plain_t = build_dataset(DataConfig(**cfg), train=True)
    off = build_dataset(DataConfig(**cfg, preset="dfsr-lle-jpeg", jpeg_prob=0.0), train=True)
    assert torch.equal(off[3]["lq"], plain_t[3]["lq"]) and torch.equal(off[3]["hq"], plain_t[3]["hq"])
    with pytest.raises(ConfigError, match=r"jpeg_prob must be within \[0, 1\]"):
        DataConfig(**cfg, jpeg_prob=1.5)


def test_synthetic_tone_curve_share_overrides_the_preset(photos):
    cfg = dict(format="synthetic", root=str(photos), patch_size=16, length=6, augment=False)
    plain, flat = (build_dataset(DataConfig(**cfg, tone_curve_prob=p), train=False) for p in (None, 0.0))
    assert plain.preset.tone_curve_prob == 1.0 and flat.preset.tone_curve_prob == 0.0
    # the same target; without the curve the dark input keeps its shadows (brighter on average)
    assert torch.equal(plain[1]["hq"], flat[1]["hq"])
    assert flat[1]["lq"].mean() > plain[1]["lq"].mean()
    with pytest.raises(ConfigError, match=r"tone_curve_prob must be within \[0, 1\]"):
        DataConfig(**cfg, tone_curve_prob=-0.1)
    # the dataset, built directly (scripts/fit_exposure_head.py does), checks both shares the same way
    for key in ("jpeg_prob", "tone_curve_prob", "power_curve_prob"):
        for bad in (1.5, True):
            with pytest.raises(ConfigError, match=rf"{key} must be within \[0, 1\]"):
                SyntheticDataset(photos, patch_size=16, **{key: bad})


def test_synthetic_power_curve_share_overrides_the_preset(photos):
    cfg = dict(format="synthetic", root=str(photos), patch_size=16, length=6, augment=False)
    plain, power = (build_dataset(DataConfig(**cfg, power_curve_prob=p), train=False) for p in (None, 1.0))
    assert plain.preset.power_curve_prob == 0.0 and power.preset.power_curve_prob == 1.0
    assert torch.equal(plain[1]["hq"], power[1]["hq"]) and not torch.equal(plain[1]["lq"], power[1]["lq"])
    with pytest.raises(ConfigError, match=r"data.power_curve_prob must be within \[0, 1\]"):
        DataConfig(**cfg, power_curve_prob=2)


def test_synthetic_jpeg_quality_overrides_the_preset_and_changes_only_the_jpeg(photos):
    cfg = dict(
        format="synthetic", root=str(photos), patch_size=16, length=6, augment=False, preset="dfsr-lle-jpeg"
    )
    low, high = (build_dataset(DataConfig(**cfg, jpeg_quality=[q, q]), train=False) for q in (20, 95))
    assert low.preset.jpeg_quality == (20, 20) and high.preset.jpeg_quality == (95, 95)
    assert build_dataset(DataConfig(**cfg), train=False).preset.jpeg_quality == (60, 95)  # the preset's
    # one quality draw per scene whatever the range, so both share every other draw: same target and exposure
    assert torch.equal(low[2]["hq"], high[2]["hq"])
    assert not torch.equal(low[2]["lq"], high[2]["lq"])  # a coarser JPEG of the same dark input
    assert DataConfig(**cfg, jpeg_quality=[90, 70]).jpeg_quality == [70, 90]  # [high, low] is read as a range
    for bad in ([0, 50], [60, 96], [70], [60.5, 80]):
        with pytest.raises(ConfigError, match="data.jpeg_quality must"):
            DataConfig(**cfg, jpeg_quality=bad)


# ---------------------------------------------------------------------------------------------------- config


def test_data_config_is_strict():
    cfg = from_dict(
        DataConfig, {"format": "rellisur", "root": "x", "scale": 4, "patch_size": 160, "ev_range": [-4, -3]}
    )
    assert cfg.scale == 4 and cfg.ev_range == [-4.0, -3.0]
    with pytest.raises(ConfigError, match="unknown config key 'data.patchsize'.*did you mean 'patch_size'"):
        from_dict(DataConfig, {"patchsize": 160}, "data")
    with pytest.raises(ConfigError, match=r"ev_range must be \[low, high\]"):
        from_dict(DataConfig, {"ev_range": [-4]})
    with pytest.raises(ConfigError, match="scale must be 1, 2 or 4"):
        from_dict(DataConfig, {"scale": 3})
    with pytest.raises(ConfigError, match="format"):
        from_dict(DataConfig, {"format": "lol3"})
    with pytest.raises(UserError, match="data.root is empty"):
        build_dataset(DataConfig(format="lol"), train=False)
