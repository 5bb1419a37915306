"""Datasets for training and evaluation: RELLISUR, LOL, LOL-v2, LOL-Blur, paired/unpaired folders, synthetic.

Why one class for all: every paired format reduces to a list of (low-quality file, high-quality file, name)
records found by its own folder rules (``layouts``); one ``PairedImageDataset`` then loads them, checks sizes
against the scale, crops aligned patches and augments. Items are dicts ``{"lq": 3×h×w, "hq": 3×(s·h)×(s·w), "name": str}`` (unpaired:
no "hq") plus the whole-image context keys. Random crops and flips come from a generator seeded by (seed, epoch,
index): call ``set_epoch`` every epoch, and a resumed run is exact. Formats are a registry (``DATASET_FORMATS``):
a new one is its folder rule (``layouts``) plus one registration line at the end of this file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import check_literals
from ..context import oracle_log2_gain, thumbnail
from ..errors import ConfigError, UserError
from ..registry import Registry
from . import degrade as deg
from .io import list_images, read_image, read_image_size, to_tensor
from .layouts import (
    PairRecord,
    lol_records,
    lolblur_records,
    lolv2_records,
    paired_records,
    rellisur_records,
    require_root,
    split_dir,
    unpaired_records,
)
from .transforms import augment, check_patch_size, crop_to_multiple, item_generator, paired_crop

# format name → builder(cfg, train) of its dataset; registered at the end of this file, one line each
DATASET_FORMATS: Registry[Callable[[DataConfig, bool], Dataset]] = Registry("dataset format")


@dataclass
class DataConfig:
    """Where the data is and how items are cut; loaded strictly with ``nightflow.config.from_dict``."""

    format: str = (
        "paired"  # a name in DATASET_FORMATS: rellisur, lol, lolv2, lolblur, paired, unpaired, synthetic
    )
    root: str = ""
    split: str = "train"  # train | val | test (folder names matched case-insensitively; LOL: test = eval15)
    scale: int = 1  # 1, 2 or 4: the HQ image is scale× the LQ image
    patch_size: int | None = None  # HR crop side in training; None = whole images
    crop_multiple: int = 8  # the flow's 2^L: HR crops divide by lcm(scale, crop_multiple)
    augment: bool = True  # random flips and 90° rotations (training only)
    preset: str = "dfsr-lle"  # synthetic: degradation preset
    ev_range: list[float] | None = None  # synthetic: [low, high] EV, overrides the preset's range
    jpeg_prob: float | None = None  # synthetic: share of scenes saved as JPEG, overrides the preset's (0 … 1)
    # synthetic: [low, high] JPEG quality (1 … 95), overrides the preset's
    jpeg_quality: list[int] | None = None
    # synthetic: share of scenes developed with the tone curve (the rest: the plain sRGB curve, so the dark
    # image is the target darkened in linear light), overrides the preset's (0 … 1)
    tone_curve_prob: float | None = None
    # synthetic: share of scenes encoded with a power law (display gamma 2.0-2.4) instead of the sRGB curve,
    # overrides the preset's (0 … 1)
    power_curve_prob: float | None = None
    length: int | None = None  # synthetic: items per epoch (default: one per photo)
    seed: int = 0
    lq_dir: str | None = None  # paired/unpaired/lolblur: LQ folder name (lolblur default low_blur_noise)
    hq_dir: str | None = None  # paired/lolblur: HQ folder name (lolblur default high_sharp_scaled)
    subset: Literal["real", "synthetic"] = "real"  # lolv2: Real_captured or Synthetic
    crop_lq: int | None = None  # square top-left crop of every LQ image (RELLISUR practice: 624); HQ matched
    check_sizes: bool = True  # read all headers up front so a size mismatch fails before training starts
    # keep decoded images in memory; None = the format's default: image files are re-read, synthetic photos are
    # always kept (each is re-read for every crop), so ``cache: false`` is refused for synthetic data
    cache: bool | None = None
    recursive: bool = True  # look into subfolders (paired/unpaired/synthetic)
    # withhold: items carry no normal-light target (no "hq", no oracle "log2_gain"): self-supervised training on
    # paired or synthetic data, with the targets provably out of reach of the losses
    targets: Literal["keep", "withhold"] = "keep"
    scene_size: int = (
        384  # synthetic: side (HR px) of the "whole image" each crop is cut from and degraded with
    )
    scene_scale: list[float] = dataclasses.field(
        default_factory=lambda: [0.5, 1.0]
    )  # synthetic: photos are resized by a factor drawn from this range before the scene is cut (training)

    # removed keys that old run configs (config.yaml) still hold: tolerated with the value that is now the only
    # behaviour, refused with their reason otherwise (``nightflow.config.from_dict``)
    retired_keys: ClassVar[dict[str, tuple[object, str]]] = {
        "hist_eq": (
            False,
            "no model reads the 'lq_he' item (the encoders equalise from the whole-image context)",
        ),
    }

    def __post_init__(self) -> None:
        DATASET_FORMATS.get(self.format, "data.format")
        check_literals(self, "data")
        if self.cache is False and self.format == "synthetic":
            raise ConfigError(
                "data.cache: synthetic data always keeps its photos decoded (each is re-read for every crop), "
                "so 'cache: false' cannot be honoured; remove the key"
            )
        if self.scale not in (1, 2, 4):
            raise ConfigError(f"data.scale must be 1, 2 or 4, got {self.scale}")
        if self.crop_multiple < 1:
            raise ConfigError(f"data.crop_multiple must be >= 1, got {self.crop_multiple}")
        if self.ev_range is not None:
            if len(self.ev_range) != 2:
                raise ConfigError(f"data.ev_range must be [low, high], got {self.ev_range}")
            self.ev_range = [float(min(self.ev_range)), float(max(self.ev_range))]
        for key in ("jpeg_prob", "tone_curve_prob", "power_curve_prob"):
            if getattr(self, key) is not None:
                setattr(self, key, deg.check_share(getattr(self, key), f"data.{key}"))
        if self.jpeg_quality is not None:
            self.jpeg_quality = list(deg.check_jpeg_quality(self.jpeg_quality, "data.jpeg_quality"))
        if len(self.scene_scale) != 2 or not 0 < min(self.scene_scale) <= max(self.scene_scale) <= 1:
            raise ConfigError(f"data.scene_scale must be [low, high] within (0, 1], got {self.scene_scale}")
        if self.scene_size < 16:
            raise ConfigError(f"data.scene_size must be >= 16, got {self.scene_size}")
        deg.PRESETS.get(self.preset, "data.preset")


# ---------------------------------------------------------------------------------------------------- datasets


class _Loader:
    """Reads images as tensors, optionally keeping the decoded arrays (native dtype, so 2–4× smaller)."""

    def __init__(self, cache: bool) -> None:
        self.cache: dict[Path, np.ndarray] | None = {} if cache else None

    def __call__(self, path: Path) -> torch.Tensor:
        if self.cache is None:
            return to_tensor(read_image(path))
        arr = self.cache.get(path)
        if arr is None:
            arr = self.cache[path] = read_image(path)
        return to_tensor(arr)


class PairedImageDataset(Dataset):
    """Loads (LQ, HQ) records, checks HQ = scale × LQ, cuts aligned patches and augments them alike."""

    def __init__(
        self,
        records: list[PairRecord],
        *,
        scale: int = 1,
        patch_size: int | None = None,
        crop_multiple: int = 8,
        train: bool = False,
        augment: bool = True,
        seed: int = 0,
        crop_lq: int | None = None,
        check_sizes: bool = True,
        cache: bool = False,
    ) -> None:
        if not records:
            raise UserError("the dataset is empty: no image pairs were found; check data.root")
        if patch_size is not None:
            check_patch_size(patch_size, scale, crop_multiple)
        self.records = records
        self.scale, self.patch_size, self.train, self.seed = scale, patch_size, train, seed
        self.augment = augment and train
        self.crop_lq = crop_lq
        self.epoch = 0
        self._load = _Loader(cache)
        if check_sizes:
            for r in records:
                self._check_header_sizes(r)

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops/flips of ``epoch`` (deterministic per (seed, epoch, index))."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _expected_hq(self, lq_hw: tuple[int, int]) -> tuple[int, int]:
        h, w = lq_hw
        if self.crop_lq is not None:
            h, w = min(h, self.crop_lq), min(w, self.crop_lq)
        return h * self.scale, w * self.scale

    def _size_error(self, r: PairRecord, lq_hw: tuple[int, ...], hq_hw: tuple[int, ...]) -> UserError:
        return UserError(
            f"{r.name}: low-quality image {r.lq.name} is {lq_hw[1]}×{lq_hw[0]}, so ×{self.scale} needs "
            f"{lq_hw[1] * self.scale}×{lq_hw[0] * self.scale}, but {r.hq} is {hq_hw[1]}×{hq_hw[0]}; "
            f"check data.scale and the folders"
        )

    def _check_header_sizes(self, r: PairRecord) -> None:
        if r.hq is None:
            return
        lq_hw, hq_hw = read_image_size(r.lq), read_image_size(r.hq)
        want = self._expected_hq(lq_hw)
        if self.crop_lq is not None:
            ok = hq_hw[0] >= want[0] and hq_hw[1] >= want[1]
        else:
            ok = hq_hw == want
        if not ok:
            raise self._size_error(r, lq_hw, hq_hw)

    def _load_pair(self, r: PairRecord) -> tuple[torch.Tensor, torch.Tensor | None]:
        lq = self._load(r.lq)
        hq = self._load(r.hq) if r.hq is not None else None
        if self.crop_lq is not None:
            n = self.crop_lq
            lq = lq[:, :n, :n]
            if hq is not None:
                hq = hq[:, : n * self.scale, : n * self.scale]
        if hq is not None and tuple(hq.shape[-2:]) != tuple(s * self.scale for s in lq.shape[-2:]):
            raise self._size_error(r, tuple(lq.shape[-2:]), tuple(hq.shape[-2:]))
        return lq, hq

    def __getitem__(self, index: int) -> dict[str, Any]:
        r = self.records[index]
        lq, hq = self._load_pair(r)
        return self._finish(lq, hq, r.name, index)

    def _finish(self, lq: torch.Tensor, hq: torch.Tensor | None, name: str, index: int) -> dict[str, Any]:
        """Whole-image context, aligned crop, augmentation; build the item dict."""
        context = whole_image_context(lq, hq)
        gen = item_generator(self.seed, self.epoch, index) if self.train else None
        if self.patch_size is not None:
            lq, hq = paired_crop(lq, hq, self.patch_size, self.scale, gen, name)
        if self.augment and gen is not None:
            square = lq.shape[-1] == lq.shape[-2]
            parts = [t for t in (lq, hq) if t is not None]
            out = iter(augment(parts, gen, rotate=square))
            lq = next(out)
            hq = next(out) if hq is not None else None
        item: dict[str, Any] = {"lq": lq.contiguous(), "name": name, **context}
        if hq is not None:
            item["hq"] = hq.contiguous()
        return item


def whole_image_context(lq: torch.Tensor, hq: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """What a crop needs to know of the whole image it is cut from (``nightflow.context``): the LQ thumbnail
    (``ctx_thumb``) and, for pairs, the exposure that matches the target (``log2_gain``, EV). Flips and
    rotations of the crop leave both unchanged."""
    out = {"ctx_thumb": thumbnail(lq)}
    if hq is not None:
        out["log2_gain"] = oracle_log2_gain(lq, hq).reshape(())
    return out


class RellisurDataset(PairedImageDataset):
    """RELLISUR (Aakerberg et al., 2021): real LLLR → NLHR pairs at ×1/×2/×4; ``crop_lq=624`` as usual."""

    def __init__(self, root: str | Path, split: str = "train", scale: int = 2, **kwargs: Any) -> None:
        super().__init__(rellisur_records(require_root(str(root)), split, scale), scale=scale, **kwargs)


class LOLDataset(PairedImageDataset):
    """LOL (Wei et al., 2018): our485 (train) / eval15 (test), low → high, ×1."""

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        super().__init__(lol_records(require_root(str(root)), split), scale=1, **kwargs)


class LOLv2Dataset(PairedImageDataset):
    """LOL-v2 (Yang et al., 2021): Real_captured or Synthetic, Train/Test, Low → Normal, ×1."""

    def __init__(self, root: str | Path, split: str = "train", subset: str = "real", **kwargs: Any) -> None:
        super().__init__(lolv2_records(require_root(str(root)), split, subset), scale=1, **kwargs)


class LOLBlurDataset(PairedImageDataset):
    """LOL-Blur (Zhou et al., 2022): low_blur_noise → high_sharp_scaled by default, per sequence/frame, ×1."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        lq_dir: str | None = None,
        hq_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(lolblur_records(require_root(str(root)), split, lq_dir, hq_dir), scale=1, **kwargs)


class PairedFolderDataset(PairedImageDataset):
    """Two folders of same-named images (``lq_dir``, ``hq_dir`` under ``root``) at a given scale."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        lq_dir: str | None = None,
        hq_dir: str | None = None,
        recursive: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(paired_records(require_root(str(root)), split, lq_dir, hq_dir, recursive), **kwargs)


class UnpairedFolderDataset(PairedImageDataset):
    """A folder of low-light images without targets; items have no "hq" (for no-reference metrics)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        lq_dir: str | None = None,
        recursive: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("check_sizes", False)
        super().__init__(unpaired_records(require_root(str(root)), split, lq_dir, recursive), **kwargs)


class SyntheticDataset(Dataset):
    """Fresh (LQ, HQ) pairs every epoch: a scene cut from a photo is degraded as a whole by a preset
    (``nightflow.data.degrade``), then an aligned patch is cropped from the pair.

    Why whole scenes: the model's global statistics (exposure, histogram, attention pools) must come from the
    whole image, in training as at inference (``nightflow.context``), so each item carries the thumbnail and
    oracle exposure of the degraded scene its crop was cut from. A scene is a ``scene_size``² region of the
    photo resized by a random factor in ``scene_scale`` (training; the native resolution in evaluation).
    Item ``index`` of epoch ``e`` depends only on (seed, e, index): resuming reproduces it exactly; epochs walk
    through all photos in turn even when ``length`` is smaller than their number. In evaluation mode
    (``train=False``) the epoch is fixed at 0 and crops are central, so the set never changes.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        scale: int = 2,
        preset: str | deg.DegradeConfig = "dfsr-lle",
        patch_size: int | None = 160,
        crop_multiple: int = 8,
        length: int | None = None,
        seed: int = 0,
        train: bool = True,
        augment: bool = True,
        ev_range: tuple[float, float] | list[float] | None = None,
        jpeg_prob: float | None = None,
        jpeg_quality: tuple[int, int] | list[int] | None = None,
        tone_curve_prob: float | None = None,
        power_curve_prob: float | None = None,
        recursive: bool = True,
        cache: bool = True,
        scene_size: int = 384,
        scene_scale: tuple[float, float] | list[float] = (0.5, 1.0),
    ) -> None:
        folder = split_dir(require_root(str(root)), split, None)
        self.photos = list_images(folder, recursive=recursive)
        self.preset = deg.get_preset(preset)
        if ev_range is not None:
            self.preset = dataclasses.replace(self.preset, ev_range=(min(ev_range), max(ev_range)))
        if jpeg_prob is not None:
            self.preset = dataclasses.replace(self.preset, jpeg_prob=deg.check_share(jpeg_prob, "jpeg_prob"))
        if jpeg_quality is not None:
            quality = deg.check_jpeg_quality(jpeg_quality, "jpeg_quality")
            self.preset = dataclasses.replace(self.preset, jpeg_quality=quality)
        for key, share in (("tone_curve_prob", tone_curve_prob), ("power_curve_prob", power_curve_prob)):
            if share is not None:
                self.preset = dataclasses.replace(self.preset, **{key: deg.check_share(share, key)})
        if scale not in self.preset.scales:
            raise UserError(
                f"preset '{self.preset.name}' supports scales {list(self.preset.scales)}, not ×{scale}"
            )
        if patch_size is not None:
            check_patch_size(patch_size, scale, crop_multiple)
            if patch_size > scene_size:
                raise UserError(f"patch_size {patch_size} is larger than scene_size {scene_size}")
        if length is not None and length < 1:
            raise UserError(f"data.length must be >= 1, got {length}")
        self.scale, self.patch_size, self.seed, self.train = scale, patch_size, seed, train
        self.crop_multiple = crop_multiple
        self.scene_size = int(scene_size)
        self.scene_scale = (float(min(scene_scale)), float(max(scene_scale)))
        self.length = length or len(self.photos)
        self.augment = augment and train
        self.epoch = 0
        self._load = _Loader(cache)

    def set_epoch(self, epoch: int) -> None:
        """Select the crops and degradations of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _scene(self, photo: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """A ``scene_size``² (at most) region, resized by a random factor in training; divisible by the scale."""
        h, w = photo.shape[-2:]
        factor = 1.0
        if gen is not None:
            lo, hi = self.scene_scale
            factor = lo + (hi - lo) * float(torch.rand((), generator=gen))
            if self.patch_size is not None:  # never shrink a photo below the patch
                factor = min(1.0, max(factor, (self.patch_size + self.scale) / min(h, w)))
        side = max(1, round(self.scene_size / factor))
        rh, rw = min(h, side), min(w, side)
        if gen is None:
            y, x = (h - rh) // 2, (w - rw) // 2
        else:
            y = int(torch.randint(0, h - rh + 1, (), generator=gen))
            x = int(torch.randint(0, w - rw + 1, (), generator=gen))
        region = photo[:, y : y + rh, x : x + rw]
        if factor < 1.0:
            size = (max(1, round(rh * factor)), max(1, round(rw * factor)))
            region = F.interpolate(
                region[None], size=size, mode="bilinear", antialias=True, align_corners=False
            )[0].clamp(0.0, 1.0)
        return crop_to_multiple(region, self.scale)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        epoch = self.epoch if self.train else 0
        photo = self.photos[(epoch * self.length + index) % len(self.photos)]
        gen = item_generator(self.seed, epoch, index)
        crop_gen = gen if self.train else None
        hq = self._scene(self._load(photo), crop_gen)
        lq, params = deg.degrade(hq, self.scale, self.preset, gen)
        context = whole_image_context(lq, hq)
        if self.patch_size is not None:
            lq, hq = paired_crop(lq, hq, self.patch_size, self.scale, crop_gen, photo.name)
            assert hq is not None
        parts = [lq, hq]
        if self.preset.motion_blur_prob > 0:  # the known shake kernel, for re-blur losses (identity if none)
            parts.append(deg.centred_kernel(params.motion_kernel, deg.motion_kernel_side(self.preset)))
        if self.augment:  # the kernel is flipped and turned with the images: blur(T x, T k) = T blur(x, k)
            parts = augment(parts, gen, rotate=hq.shape[-1] == hq.shape[-2])
        lq, hq = parts[0], parts[1]
        item: dict[str, Any] = {"lq": lq.contiguous(), "hq": hq.contiguous(), "name": f"{photo.stem}#{index}"}
        if len(parts) > 2:
            item["blur_kernel"] = parts[2].contiguous()
        item.update(context)
        return item


# ---------------------------------------------------------------------------------------------------- factory


def _common(cfg: DataConfig, train: bool) -> dict[str, Any]:
    return {
        "patch_size": cfg.patch_size,
        "crop_multiple": cfg.crop_multiple,
        "train": train,
        "augment": cfg.augment,
        "seed": cfg.seed,
    }


def _files(cfg: DataConfig, train: bool) -> dict[str, Any]:
    """Keyword arguments of every image-file dataset."""
    files = {"crop_lq": cfg.crop_lq, "check_sizes": cfg.check_sizes, "cache": bool(cfg.cache)}
    return {**_common(cfg, train), **files}


def _same_size(cfg: DataConfig) -> None:
    if cfg.scale != 1:
        raise UserError(f"{cfg.format} pairs are the same size (×1); set data.scale to 1, not {cfg.scale}")


def _lol(cfg: DataConfig, train: bool) -> Dataset:
    _same_size(cfg)
    return LOLDataset(cfg.root, cfg.split, **_files(cfg, train))


def _lolv2(cfg: DataConfig, train: bool) -> Dataset:
    _same_size(cfg)
    return LOLv2Dataset(cfg.root, cfg.split, cfg.subset, **_files(cfg, train))


def _lolblur(cfg: DataConfig, train: bool) -> Dataset:
    _same_size(cfg)
    return LOLBlurDataset(cfg.root, cfg.split, cfg.lq_dir, cfg.hq_dir, **_files(cfg, train))


def _unpaired(cfg: DataConfig, train: bool) -> Dataset:
    kw = {**_files(cfg, train), "check_sizes": False}
    return UnpairedFolderDataset(cfg.root, cfg.split, cfg.lq_dir, cfg.recursive, scale=cfg.scale, **kw)


def _synthetic(cfg: DataConfig, train: bool) -> Dataset:
    return SyntheticDataset(
        cfg.root,
        split=cfg.split,
        scale=cfg.scale,
        preset=cfg.preset,
        length=cfg.length,
        ev_range=cfg.ev_range,
        jpeg_prob=cfg.jpeg_prob,
        jpeg_quality=cfg.jpeg_quality,
        tone_curve_prob=cfg.tone_curve_prob,
        power_curve_prob=cfg.power_curve_prob,
        recursive=cfg.recursive,
        cache=True,  # photos are re-read for every crop: always keep them decoded (DataConfig refuses cache)
        scene_size=cfg.scene_size,
        scene_scale=cfg.scene_scale,
        **_common(cfg, train),
    )


DATASET_FORMATS.add("rellisur", lambda c, t: RellisurDataset(c.root, c.split, c.scale, **_files(c, t)))
DATASET_FORMATS.add("lol", _lol)
DATASET_FORMATS.add("lolv2", _lolv2)
DATASET_FORMATS.add("lolblur", _lolblur)
DATASET_FORMATS.add(
    "paired",
    lambda c, t: PairedFolderDataset(
        c.root, c.split, c.lq_dir, c.hq_dir, c.recursive, scale=c.scale, **_files(c, t)
    ),
)
DATASET_FORMATS.add("unpaired", _unpaired)
DATASET_FORMATS.add("synthetic", _synthetic)


TARGET_KEYS = (
    "hq",
    "log2_gain",
)  # what an item knows of the normal-light target (log2_gain is derived from it)


class WithheldTargets(Dataset):
    """A dataset whose items lose every key derived from the normal-light target (``TARGET_KEYS``): what a
    self-supervised run trains on (``data.targets: withhold``), so no loss term or trainer step can read one."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.inner[index]
        return {k: v for k, v in item.items() if k not in TARGET_KEYS}

    def __getattr__(self, name: str) -> Any:  # records, photos, scale, …: the inner dataset's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def build_dataset(cfg: DataConfig, train: bool) -> Dataset:
    """The dataset ``cfg`` describes; ``train`` turns on random crops and augmentation (else central/whole);
    ``targets: withhold`` drops the normal-light targets from every item."""
    dataset = DATASET_FORMATS.get(cfg.format, "data.format")(cfg, train)
    return WithheldTargets(dataset) if cfg.targets == "withhold" else dataset
