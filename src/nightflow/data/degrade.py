"""Synthesis of low-light (low-resolution, blurred) images from normal photos, as a camera would make them.

Why: real paired low-light data is scarce, so training pairs are made from any folder of photos (the DFSR-LLE
idea of the LoLiSRFlow paper). The physics decides the order: the optics blur the scene and the sensor samples
it (blur, decimation) in *linear* light, then the short exposure darkens it, then the sensor adds
signal-dependent noise and the ADC quantises it. Only this module works in linear light; every function says so
in its argument names. All functions are pure, work on 3×H×W or N×3×H×W float32 tensors and take a
``torch.Generator`` wherever they draw random numbers.

Default ranges (the ``DegradeConfig`` fields, all overridable):

- exposure: EV ~ U(−5, −2.5) (RELLISUR's range); intensity × 2^EV in linear light.
- unprocessing (Brooks et al., CVPR 2019): inverse tone curve 0.5 − sin(asin(1 − 2x)/3), inverse sRGB curve,
  colour-correction matrix = random convex combination of four cameras' XYZ→camera matrices, inverse white
  balance with red gain ~ U(1.9, 2.4), blue gain ~ U(1.5, 1.9), overall gain ~ 1/N(0.8, 0.1). Re-processing
  with the same camera inverts it exactly (so greys stay grey), and the noise added in between becomes
  correlated, coloured noise as in a real camera's output.
- tone curve (``tone_curve_prob``, 1 in every preset): the share of scenes whose camera applies Brooks et al.'s
  tone curve. Applied after the darkening, that S-curve crushes the dark image's shadows (a pixel at 1.5 %
  linear comes out about 2 EV darker than the plain sRGB curve makes it). The other scenes skip it both ways,
  so their dark image is the target darkened in linear light, as a raw file developed with the plain sRGB
  curve or a pipeline that scales the decoded photo (the quality issue's independent one) makes it.
- transfer curve (``power_curve_prob``, 0 in every preset): the share of scenes whose camera encodes with a pure
  power law (display gamma γ ~ U(2.0, 2.4), as "gamma 2.2" pipelines and many synthetic low-light sets do)
  instead of the sRGB curve, both ways. The two differ most in the deep shadows, where a dark image lives: read
  with the sRGB curve, a power-law image's dark colours lose most of their saturation in linear light (a 10:1
  channel ratio at 1 % and 0.1 % linear reads as about 4:1), so a model that only saw the sRGB curve restores
  such photos pale.
- noise: variance = shot·x + read² (heteroscedastic Gaussian approximation of Poisson–Gaussian noise), with
  log(shot) ~ U(log 1e-4, log 0.012) and log(read²) = 2.18·log(shot) + 1.20 + N(0, 0.26) — in Brooks et al.
  the sampled "read" quantity is the read-noise *variance*, so ``read`` here is its square root (the std).
  Optional row (banding) noise: with probability 0.25, one offset per row of std U(0.1, 0.5)·read.
- quantisation of the linear signal (the ADC) to U{10..14} bits.
- resolution (×2/×4 only): Gaussian blur, isotropic or (half the time) anisotropic with a random angle,
  σ ~ U(0.2, 1.2)·scale in high-resolution pixels, then area decimation by the scale.
- JPEG (``dfsr-lle-jpeg``; off in ``dfsr-lle``): the dark sRGB image saved as a JPEG of quality U{60..95} with
  4:2:0 chroma subsampling, as a phone or a messaging app stores it; brightening it later amplifies the blocks
  and chroma smearing of its shadows, so a model that will see JPEGs has to learn them.
- camera shake (``lol-blur``): a random-walk trajectory with inertia and occasional jerks, length U(3, 25) px,
  rendered into a normalised kernel centred on its centroid (so the blur does not shift the image).
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError
from ..registry import Registry

# ---------------------------------------------------------------------------------------------------- helpers


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64))


def _normal(generator: torch.Generator, mean: float, std: float) -> float:
    return float(mean + std * torch.randn((), generator=generator, dtype=torch.float64))


def _check_image(x: torch.Tensor) -> None:
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected a 3×H×W or N×3×H×W tensor, got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------------- curves


def srgb_to_linear(srgb: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer curve inverted (IEC 61966-2-1): display values → linear light; negatives clamp to 0."""
    x = srgb.clamp(min=0.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Linear light → sRGB display values (negatives clamp to 0; values above 1 are not clipped)."""
    x = linear.clamp(min=0.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055)


def tone_curve(x: torch.Tensor) -> torch.Tensor:
    """Brooks et al.'s global tone curve (smoothstep 3x² − 2x³) on [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return 3.0 * x**2 - 2.0 * x**3


def inverse_tone_curve(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``tone_curve``: 0.5 − sin(asin(1 − 2x)/3) on [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * x) / 3.0)


# ---------------------------------------------------------------------------------------------------- Brooks unprocessing

# XYZ → camera matrices of four cameras and the sRGB (D65) → XYZ matrix, as used by Brooks et al. (2019).
_XYZ2CAMS = torch.tensor(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]],
    ],
    dtype=torch.float64,
)
_RGB2XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    dtype=torch.float64,
)


@dataclass
class UnprocessParams:
    """One camera's colour pipeline: sRGB→camera matrix (rows sum to 1) and white-balance gains."""

    rgb2cam: list[list[float]]
    rgb_gain: float
    red_gain: float
    blue_gain: float
    tone_curve: bool = True  # Brooks et al.'s tone curve, inverted by unprocess and re-applied by reprocess
    gamma: float | None = None  # a pure power-law transfer curve (display gamma); None: the sRGB curve


def decode_transfer(srgb: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """Display-encoded → linear: the sRGB curve (``gamma`` None) or a pure power law x^gamma."""
    return srgb_to_linear(srgb) if gamma is None else srgb.clamp(min=0.0) ** gamma


def encode_transfer(linear: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """Linear → display-encoded, the inverse of :func:`decode_transfer` on [0, 1]."""
    return linear_to_srgb(linear) if gamma is None else linear.clamp(min=0.0) ** (1.0 / gamma)


def random_unprocess_params(
    generator: torch.Generator,
    red_range: tuple[float, float] = (1.9, 2.4),
    blue_range: tuple[float, float] = (1.5, 1.9),
    rgb_gain_mean_std: tuple[float, float] = (0.8, 0.1),
) -> UnprocessParams:
    """Draw a colour matrix (random convex mix of four cameras) and gains, as Brooks et al. do."""
    weights = torch.rand(4, generator=generator, dtype=torch.float64)
    xyz2cam = (_XYZ2CAMS * weights[:, None, None]).sum(0) / weights.sum()
    rgb2cam = xyz2cam @ _RGB2XYZ
    rgb2cam = rgb2cam / rgb2cam.sum(dim=-1, keepdim=True)
    # 1/N(0.8, 0.1); the draw is kept away from 0 (an 8-sigma event) so the gain stays finite
    rgb_gain = 1.0 / max(_normal(generator, *rgb_gain_mean_std), 0.3)
    red = _uniform(generator, *red_range)
    blue = _uniform(generator, *blue_range)
    return UnprocessParams(rgb2cam=rgb2cam.tolist(), rgb_gain=rgb_gain, red_gain=red, blue_gain=blue)


def apply_ccm(x: torch.Tensor, ccm: torch.Tensor | list[list[float]]) -> torch.Tensor:
    """Apply a 3×3 colour matrix to the channel axis (out_c = Σ_k ccm[c, k] · in_k)."""
    m = torch.as_tensor(ccm, dtype=x.dtype, device=x.device)
    return torch.einsum("ck,...khw->...chw", m, x)


def _gains(p: UnprocessParams, x: torch.Tensor) -> torch.Tensor:
    g = torch.tensor([p.red_gain, 1.0, p.blue_gain], dtype=x.dtype, device=x.device) * p.rgb_gain
    return g.view(3, 1, 1)


def unprocess(srgb: torch.Tensor, params: UnprocessParams) -> torch.Tensor:
    """sRGB → linear camera space: inverse tone curve, inverse transfer curve (sRGB, or the camera's power law),
    sRGB→camera matrix, inverse WB.

    The white balance is inverted exactly (divide by the gains, clip at 1). Brooks et al.'s
    highlight-preserving variant is deliberately not used: here the image is darkened before it is
    re-processed, so highlights are no longer clipped and re-applying the gains would turn them magenta.
    """
    _check_image(srgb)
    x = decode_transfer(inverse_tone_curve(srgb) if params.tone_curve else srgb, params.gamma)
    x = apply_ccm(x, params.rgb2cam)
    return (x / _gains(params, x)).clamp(0.0, 1.0)


def reprocess(linear_cam: torch.Tensor, params: UnprocessParams) -> torch.Tensor:
    """Linear camera space → sRGB, the exact inverse of ``unprocess`` away from clipped highlights.

    Unlike Brooks et al.'s ``process`` the overall gain is re-applied too, so brightness changes come only from
    the explicit exposure step (``darken_ev``).
    """
    _check_image(linear_cam)
    x = (linear_cam * _gains(params, linear_cam)).clamp(0.0, 1.0)
    cam2rgb = torch.linalg.inv(torch.tensor(params.rgb2cam, dtype=torch.float64))
    x = apply_ccm(x, cam2rgb).clamp(0.0, 1.0)
    srgb = encode_transfer(x, params.gamma)
    return tone_curve(srgb) if params.tone_curve else srgb


# ---------------------------------------------------------------------------------------------------- exposure, noise, ADC


def darken_ev(linear: torch.Tensor, ev: float | torch.Tensor) -> torch.Tensor:
    """Change exposure by ``ev`` stops: linear intensity × 2^ev (−3 EV → exactly × 1/8).

    ``ev`` is a number or a tensor of shape (N,) for a batch.
    """
    if isinstance(ev, torch.Tensor):
        factor = torch.pow(2.0, ev.to(torch.float64)).to(linear.dtype)
        return linear * factor.view(-1, *([1] * (linear.ndim - 1)))
    return linear * (2.0 ** float(ev))


def sample_noise_levels(
    generator: torch.Generator,
    shot_range: tuple[float, float] = (1e-4, 0.012),
    read_slope: float = 2.18,
    read_intercept: float = 1.20,
    read_log_std: float = 0.26,
) -> tuple[float, float]:
    """Brooks et al.'s joint draw of (shot, read): log shot uniform, log read² linear in log shot plus noise.

    Returns ``shot`` (variance per unit linear signal) and ``read`` (std of the signal-independent noise).
    """
    log_shot = _uniform(generator, math.log(shot_range[0]), math.log(shot_range[1]))
    log_read_var = read_slope * log_shot + read_intercept + _normal(generator, 0.0, read_log_std)
    return math.exp(log_shot), math.exp(0.5 * log_read_var)


def poisson_gaussian_noise(
    linear: torch.Tensor,
    shot: float,
    read: float,
    generator: torch.Generator,
    row: float = 0.0,
) -> torch.Tensor:
    """Add sensor noise in linear light: Gaussian with variance ``shot``·x + ``read``² per pixel and channel.

    ``row`` > 0 adds banding: one N(0, row²) offset per image row, shared by its pixels and channels. The
    result is not clipped (clip after quantisation, as the ADC does).
    """
    _check_image(linear)
    std = (shot * linear.clamp(min=0.0) + read**2).sqrt()
    noisy = linear + std * torch.randn(linear.shape, generator=generator, dtype=linear.dtype)
    if row > 0.0:
        shape = (*linear.shape[:-3], 1, linear.shape[-2], 1)
        noisy = noisy + row * torch.randn(shape, generator=generator, dtype=linear.dtype)
    return noisy


def quantise(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Clip to [0, 1] and round to 2^bits − 1 levels (what an ADC or a file format does)."""
    levels = float(2**bits - 1)
    return torch.round(x.clamp(0.0, 1.0) * levels) / levels


def jpeg_compress(srgb: torch.Tensor, quality: int) -> torch.Tensor:
    """A 3×H×W sRGB image in [0, 1] after a JPEG round trip at ``quality`` (1–95, 4:2:0 chroma subsampling, as
    cameras and messaging apps store photos); 8-bit, like the file it stands for. Pillow's encoder, so a quality
    means what it means in every image tool."""
    if srgb.ndim != 3 or srgb.shape[0] != 3:
        raise ValueError(f"jpeg_compress expects one 3×H×W image, got shape {tuple(srgb.shape)}")
    if not 1 <= int(quality) <= 95:
        raise ValueError(f"JPEG quality must be in 1..95, got {quality}")
    a = (srgb.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="JPEG", quality=int(quality), subsampling=2)
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out.copy()).permute(2, 0, 1).contiguous().to(srgb.device)


def check_share(value: float, key: str) -> float:
    """A share of scenes (``jpeg_prob``, ``tone_curve_prob``, ``power_curve_prob``) as a float within [0, 1]; anything else is a
    ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} must be within [0, 1], got {value}")
    return float(value)


def check_jpeg_quality(quality: tuple[int, int] | list[int], key: str) -> tuple[int, int]:
    """A ``[low, high]`` JPEG quality range as ``(low, high)``, both within 1–95 (what :func:`jpeg_compress`
    takes); anything else is a ConfigError naming ``key``."""
    values = list(quality)
    if len(values) != 2 or not all(isinstance(q, int) and not isinstance(q, bool) for q in values):
        raise ConfigError(f"{key} must be [low, high], two whole numbers, got {quality}")
    low, high = min(values), max(values)
    if low < 1 or high > 95:
        raise ConfigError(f"{key} must lie within 1 … 95, got {quality}")
    return low, high


# ---------------------------------------------------------------------------------------------------- blur, resolution


def gaussian_kernel(
    sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, size: int | None = None
) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel (size×size, odd): std ``sigma_x`` along angle ``theta`` (radians),
    ``sigma_y`` across it (isotropic when None). Default size covers ±3σ."""
    sy = sigma_x if sigma_y is None else sigma_y
    if size is None:
        size = 2 * math.ceil(3.0 * max(sigma_x, sy)) + 1
    size = max(3, size | 1)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sy) ** 2))
    return (k / k.sum()).to(torch.float32)


def random_gaussian_kernel(
    generator: torch.Generator,
    sigma_range: tuple[float, float],
    isotropic_prob: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Draw an isotropic or anisotropic Gaussian kernel; returns it and the drawn (sigma_x, sigma_y, theta)."""
    sx = _uniform(generator, *sigma_range)
    if _uniform(generator, 0.0, 1.0) < isotropic_prob:
        sy, theta = sx, 0.0
    else:
        sy = _uniform(generator, *sigma_range)
        theta = _uniform(generator, 0.0, math.pi)
    return gaussian_kernel(sx, sy, theta), {"sigma_x": sx, "sigma_y": sy, "theta": theta}


def motion_blur_kernel(
    generator: torch.Generator,
    length_range: tuple[float, float] = (3.0, 25.0),
    steps: int = 64,
    inertia: float = 0.85,
    jerk_prob: float = 0.05,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Random camera-shake kernel: a 2-D random walk of the velocity (``inertia`` keeps it smooth, rare jerks
    turn it sharply), scaled to a path length ~ U(``length_range``) pixels, rendered with bilinear splatting
    and centred on its centroid so it blurs without shifting the image. Returns (kernel, {length, size})."""
    length = _uniform(generator, *length_range)
    angle = _uniform(generator, 0.0, 2.0 * math.pi)
    vel = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
    pos = [torch.zeros(2, dtype=torch.float64)]
    for _ in range(steps - 1):
        vel = inertia * vel + (1.0 - inertia) * torch.randn(2, generator=generator, dtype=torch.float64)
        if _uniform(generator, 0.0, 1.0) < jerk_prob:
            vel = vel + 1.5 * torch.randn(2, generator=generator, dtype=torch.float64)
        pos.append(pos[-1] + vel)
    path = torch.stack(pos)
    seg = (path[1:] - path[:-1]).norm(dim=1)
    total = float(seg.sum())
    path = path * (length / total) if total > 0 else path
    # resample evenly in arc length (4 samples per pixel) so every part of the exposure weighs the same
    cum = torch.cat(
        [torch.zeros(1, dtype=torch.float64), torch.cumsum(seg * (length / max(total, 1e-12)), 0)]
    )
    n = max(2, int(math.ceil(length * 4)))
    t = torch.linspace(0.0, float(cum[-1]), n, dtype=torch.float64)
    idx = torch.searchsorted(cum, t, right=True).clamp(1, len(cum) - 1)
    w = ((t - cum[idx - 1]) / (cum[idx] - cum[idx - 1]).clamp(min=1e-12)).unsqueeze(1)
    pts = path[idx - 1] * (1.0 - w) + path[idx] * w
    pts = pts - pts.mean(dim=0)
    half = int(math.ceil(float(pts.abs().max()))) + 1
    size = 2 * half + 1
    pts = pts + half
    x0, y0 = pts[:, 0].floor(), pts[:, 1].floor()
    fx, fy = pts[:, 0] - x0, pts[:, 1] - y0
    k = torch.zeros(size, size, dtype=torch.float64)
    for dx, dy, wt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        k.index_put_(((y0 + dy).long(), (x0 + dx).long()), wt, accumulate=True)
    return (k / k.sum()).to(torch.float32), {"length": length, "size": float(size)}


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with a 2-D kernel (true convolution, reflect padding; same size out)."""
    _check_image(x)
    batch = x if x.ndim == 4 else x.unsqueeze(0)
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    h, w = batch.shape[-2:]
    mode = "reflect" if ph < h and pw < w else "replicate"
    padded = F.pad(batch, (pw, pw, ph, ph), mode=mode)
    weight = torch.flip(kernel, (0, 1)).to(batch.dtype).expand(3, 1, kh, kw)
    out = F.conv2d(padded, weight, groups=3)
    return out if x.ndim == 4 else out.squeeze(0)


def downscale(linear: torch.Tensor, factor: int) -> torch.Tensor:
    """Area (box) downscaling by an integer ``factor``; H and W must be divisible by it.

    Powers of two are done as repeated pairwise means, which keeps a constant image exactly constant.
    """
    _check_image(linear)
    if factor == 1:
        return linear
    h, w = linear.shape[-2:]
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"image {h}×{w} is not divisible by the downscale factor {factor}")
    if factor & (factor - 1) == 0:
        x = linear
        for _ in range(int(math.log2(factor))):
            x = 0.5 * (x[..., 0::2, :] + x[..., 1::2, :])
            x = 0.5 * (x[..., :, 0::2] + x[..., :, 1::2])
        return x
    batch = linear if linear.ndim == 4 else linear.unsqueeze(0)
    out = F.avg_pool2d(batch, factor)
    return out if linear.ndim == 4 else out.squeeze(0)


# ---------------------------------------------------------------------------------------------------- presets


@dataclass
class DegradeConfig:
    """Ranges of one synthesis recipe (see the module docstring for what each step does and why)."""

    name: str = "dfsr-lle"
    scales: tuple[int, ...] = (1, 2, 4)
    ev_range: tuple[float, float] = (-5.0, -2.5)
    unprocess_prob: float = 1.0
    # share of unprocessed scenes whose camera applies the tone curve; 1 draws nothing, so presets that keep it
    # make the same pairs as before the option existed
    tone_curve_prob: float = 1.0
    # share of unprocessed scenes whose camera encodes with a power law of gamma ~ U(power_gamma) instead of the
    # sRGB curve; 0 draws nothing, so presets without it make the same pairs as before the option existed
    power_curve_prob: float = 0.0
    power_gamma: tuple[float, float] = (2.0, 2.4)
    shot_range: tuple[float, float] = (1e-4, 0.012)
    row_noise_prob: float = 0.25
    row_noise_ratio: tuple[float, float] = (0.1, 0.5)
    quant_bits: tuple[int, int] = (10, 14)
    blur_sigma_per_scale: tuple[float, float] = (0.2, 1.2)
    isotropic_prob: float = 0.5
    motion_blur_prob: float = 0.0
    motion_length: tuple[float, float] = (3.0, 25.0)
    # 0 draws nothing, so presets without JPEG make the same pairs as before the JPEG step existed
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 95)


# name → recipe; a new preset is one line here
PRESETS: Registry[DegradeConfig] = Registry("degradation preset")
PRESETS.add("dfsr-lle", DegradeConfig(name="dfsr-lle"))
PRESETS.add("lol-blur", DegradeConfig(name="lol-blur", scales=(1,), motion_blur_prob=1.0))
PRESETS.add("dfsr-lle-jpeg", DegradeConfig(name="dfsr-lle-jpeg", jpeg_prob=1.0))


def get_preset(preset: str | DegradeConfig) -> DegradeConfig:
    """A preset by name (``dfsr-lle``, ``lol-blur``) or a ready ``DegradeConfig`` (a copy, so callers may replace
    fields); unknown names → a one-line ConfigError (a ValueError) listing the presets."""
    if isinstance(preset, DegradeConfig):
        return preset
    return dataclasses.replace(PRESETS.get(preset))


@dataclass
class DegradationParams:
    """Every value drawn for one synthesised image, so the manifest can explain (and reproduce) it."""

    preset: str
    scale: int
    seed: int | None = None
    ev: float = 0.0
    unprocess: UnprocessParams | None = None
    motion_length: float | None = None
    motion_kernel_size: int | None = None
    blur: dict[str, float] | None = None
    shot_noise: float = 0.0
    read_noise: float = 0.0
    row_noise: float = 0.0
    quant_bits: int | None = None
    jpeg_quality: int | None = None  # None: not saved as a JPEG
    # the camera-shake kernel itself (linear light, sums to 1), for losses that re-blur through the known
    # degradation (losses.selfsup ``reblur``); not part of the manifest
    motion_kernel: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(dataclasses.replace(self, motion_kernel=None))
        out.pop("motion_kernel")
        return out


def motion_kernel_side(cfg: DegradeConfig) -> int:
    """The side every camera-shake kernel of preset ``cfg`` fits in (``motion_blur_kernel`` centres a path of
    length L within ±L px, plus one px of interpolation on each side)."""
    return 2 * (math.ceil(max(cfg.motion_length)) + 2) + 1


def centred_kernel(kernel: torch.Tensor | None, side: int) -> torch.Tensor:
    """``kernel`` (odd square) zero-padded to side×side around its centre; None → the identity (a delta)."""
    out = torch.zeros(side, side, dtype=torch.float32)
    if kernel is None:
        out[side // 2, side // 2] = 1.0
        return out
    k = kernel.shape[-1]
    if k > side or k % 2 == 0 or kernel.shape[-2] != k:
        raise ValueError(f"kernel {tuple(kernel.shape)} does not fit a centred {side}×{side} square")
    o = (side - k) // 2
    out[o : o + k, o : o + k] = kernel
    return out


def degrade(
    hq_srgb: torch.Tensor,
    scale: int,
    preset: str | DegradeConfig,
    generator: torch.Generator,
    *,
    ev: float | None = None,
    seed: int | None = None,
) -> tuple[torch.Tensor, DegradationParams]:
    """Make a low-light (×``scale`` smaller, possibly shaken) sRGB image from a normal-light 3×H×W sRGB one.

    Order: sRGB → linear (Brooks unprocessing, with or without its tone curve, with the sRGB curve or a power
    law; or the sRGB curve alone) → camera
    shake → Gaussian blur + area decimation (×2/×4) → darken by ``ev`` (drawn from the preset when None) → Poisson–Gaussian (+row) noise →
    ADC quantisation → back to sRGB with the same camera → clip to [0, 1] → JPEG round trip (with the preset's
    ``jpeg_prob``). ``seed`` is only recorded.
    """
    cfg = get_preset(preset)
    if hq_srgb.ndim != 3 or hq_srgb.shape[0] != 3:
        raise ValueError(f"degrade expects one 3×H×W image, got shape {tuple(hq_srgb.shape)}")
    if scale not in cfg.scales:
        raise ValueError(f"preset '{cfg.name}' supports scales {list(cfg.scales)}, not ×{scale}")
    h, w = hq_srgb.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image {h}×{w} is not divisible by the scale {scale}; crop it first")
    params = DegradationParams(preset=cfg.name, scale=scale, seed=seed)
    x = hq_srgb.to(torch.float32)

    if _uniform(generator, 0.0, 1.0) < cfg.unprocess_prob:
        params.unprocess = random_unprocess_params(generator)
        if cfg.tone_curve_prob < 1.0:
            params.unprocess.tone_curve = _uniform(generator, 0.0, 1.0) < cfg.tone_curve_prob
        if cfg.power_curve_prob > 0 and _uniform(generator, 0.0, 1.0) < cfg.power_curve_prob:
            params.unprocess.gamma = _uniform(generator, *cfg.power_gamma)
        linear = unprocess(x, params.unprocess)
    else:
        linear = srgb_to_linear(x)

    if _uniform(generator, 0.0, 1.0) < cfg.motion_blur_prob:
        kernel, info = motion_blur_kernel(generator, cfg.motion_length)
        params.motion_length, params.motion_kernel_size = info["length"], int(info["size"])
        params.motion_kernel = kernel.to(torch.float32)
        linear = blur(linear, kernel)

    if scale > 1:
        lo, hi = cfg.blur_sigma_per_scale
        kernel, params.blur = random_gaussian_kernel(generator, (lo * scale, hi * scale), cfg.isotropic_prob)
        linear = downscale(blur(linear, kernel), scale)

    params.ev = float(ev) if ev is not None else _uniform(generator, *cfg.ev_range)
    linear = darken_ev(linear, params.ev)

    params.shot_noise, params.read_noise = sample_noise_levels(generator, cfg.shot_range)
    if _uniform(generator, 0.0, 1.0) < cfg.row_noise_prob:
        params.row_noise = params.read_noise * _uniform(generator, *cfg.row_noise_ratio)
    linear = poisson_gaussian_noise(linear, params.shot_noise, params.read_noise, generator, params.row_noise)

    lo_bits, hi_bits = cfg.quant_bits
    params.quant_bits = int(torch.randint(lo_bits, hi_bits + 1, (), generator=generator))
    linear = quantise(linear, params.quant_bits)

    out = reprocess(linear, params.unprocess) if params.unprocess is not None else linear_to_srgb(linear)
    out = out.clamp(0.0, 1.0)
    # no draw at all when the preset has no JPEG: the random stream (and every pair made so far) stays the same
    if cfg.jpeg_prob > 0 and _uniform(generator, 0.0, 1.0) < cfg.jpeg_prob:
        lo_q, hi_q = cfg.jpeg_quality
        params.jpeg_quality = int(torch.randint(lo_q, hi_q + 1, (), generator=generator))
        out = jpeg_compress(out, params.jpeg_quality)
    return out.contiguous(), params
