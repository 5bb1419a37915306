"""Measure ``nightflow convert`` against the official code, and (re)make the fixtures of tests/test_convert.py.

The official code is never part of this repository. Point the options at folders holding snapshots of the
releases (LLFlow: a folder with the release's ``code/``, e.g. ``git clone https://github.com/wyf0912/LLFlow``;
SSFlow: the repository root of shibaoshun/SSFlow). Their imports of packages the networks never call
(torchvision, natsort, cv2, skimage, einops) are replaced by in-memory stubs when those packages are missing.

For each architecture the official network is built with random init and a fixed seed, its zero-initialised
layers (Conv2dZeros, ActNorm) are perturbed so the outputs are non-trivial, its state dict is saved as the authors'
.pth would be, converted with ``nightflow.convert``, and both run on the same inputs (the official code gets
nightflow's padded input, the 8-bit HE of the unpadded image, as test.py computes it):

- the reverse pass at the prior mean (LLFlow: z = squeeze(colour map), heat 0; SSFlow: z = squeeze(U-Net RGB
  output), whatever the heat), raw and clamped to [0, 1];
- the forward NLL: official bits per *pixel* (−(logdet + log N(z; μ, I)) / (ln 2 · H·W), no dequantisation),
  nightflow bits per *dimension* (the same log-likelihood / (ln 2 · 3·H·W)); compared as official / 3.

    python scripts/make_convert_fixtures.py measure --llflow /work/official/llflow --ssflow /work/official/ssflow \
        --uptflow /work/official/uptflow/UPT-Flow [--json out.json]
    python scripts/make_convert_fixtures.py fixtures --llflow /work/official/llflow --ssflow /work/official/ssflow \
        --uptflow /work/official/uptflow/UPT-Flow

UPT-Flow (NJUPT-IPR-XuLintao/UPT-Flow; ``timm.models.layers`` is stubbed with its three helpers, einops must be
importable: ``pip install --target DIR einops`` and put DIR on PYTHONPATH) has no colour-map prior (z = 0 at
heat 0), takes the padded image and the unbalanced-point map computed from it as test.py does, and has no NLL
of its own (``normal_flow`` is empty): its flow's forward pass (``FlowUpsamplerNet.encode``, correct; only the
reverse log-det has the double-subtracted scale) gives the continuous log-likelihood, compared in bits per
dimension with nightflow's (whose ``quant`` 32 adds log2 32 = 5 bits/dim). Its transformer's LayerNorms,
temperatures and Linear biases are perturbed too (they start at exactly 1 or 0).

SSFlow's network also has BatchNorm (in eval mode: its running statistics, weights and biases are perturbed too,
and so are all PReLU slopes, so that a misplaced activation or normalisation shows) and the fixed Gram–Schmidt
``constant_filter`` buffers, which the converter copies.

Fixtures are reduced-width networks (weights stored float16; the official output is computed with exactly those
rounded weights), one input, the official output and NLL: a few hundred kB each.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import random
import re
import sys
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "convert"
SEED = 0


# ----------------------------------------------------------------------------------------------- stubs, loading
def _stub(name: str, attrs: dict | None = None) -> None:
    """An in-memory module ``name`` (and parents) unless the real package is installed."""
    top = name.split(".")[0]
    if top in sys.modules and name in sys.modules:
        return
    if top not in sys.modules and importlib.util.find_spec(top) is not None:
        return
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[sub])
    for k, v in (attrs or {}).items():
        setattr(sys.modules[name], k, v)


def _unused(*_a, **_k):
    raise RuntimeError("stub: not available")


def _stubs() -> None:
    _stub("torchvision.utils", {"save_image": _unused, "make_grid": _unused})
    _stub("natsort", {"natsorted": sorted})
    _stub("cv2", {})
    _stub("skimage.restoration", {"denoise_tv_chambolle": _unused})
    _stub("einops", {"rearrange": _unused})


@contextlib.contextmanager
def _on_path(folder: Path):
    """Import the release's top-level packages (models, options, utils…) from ``folder``, then forget them."""
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            if not name.startswith(("torch", "numpy", "yaml", "scipy", "nightflow")):
                del sys.modules[name]


def equalize_u8(u8: np.ndarray) -> np.ndarray:
    """cv2.equalizeHist of one uint8 channel (what the releases' test.py applies), in numpy."""
    hist = np.bincount(u8.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    cdf_min = cdf[np.nonzero(hist)[0][0]]
    if cdf_min == u8.size:
        return u8.copy()
    lut = np.clip(np.round((cdf - cdf_min) * (255.0 / (u8.size - cdf_min))), 0, 255).astype(np.uint8)
    return lut[u8]


def dark_image(h: int, w: int, seed: int) -> torch.Tensor:
    """A reproducible 8-bit low-light test image 1×3×h×w in [0, 1]: smooth colour blobs, noise, a dark range."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, max(2, h // 6), max(2, w // 6), generator=g)
    smooth = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    img = 0.25 * smooth + 0.03 * torch.rand(1, 3, h, w, generator=g)
    return torch.round(img.clamp(0, 1) * 255) / 255


def bright_image(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    base = torch.rand(1, 3, max(2, h // 5), max(2, w // 5), generator=g)
    img = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return torch.round(img.clamp(0, 1) * 255) / 255


def perturb(net: torch.nn.Module, seed: int) -> None:
    """Give the zero-initialised layers small random values so the outputs are non-trivial: ActNorm bias/logs
    N(0, 0.05²); Conv2dZeros weight, bias and logs N(0, 0.02²), its raw-scale (odd) output channels biased by +3
    (coupling scales ≈ sigmoid(5) instead of sigmoid(2): a deep untrained flow's reverse pass then stays finite)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in net.named_modules():
            kind = type(mod).__name__
            params = dict(mod.named_parameters(recurse=False))
            if "ActNorm" in kind:
                for p in params.values():
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif kind == "Conv2dZeros":
                for p in params.values():
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
                params["bias"][1::2] += 3.0
            else:
                for p in params.values():
                    if bool((p == 0).all()) and p.dim() > 1:
                        p.copy_(0.02 * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------------------------------------------ LLFlow
LLFLOW_CONFS = {"llflow-small": "LOL_smallNet.yml", "llflow": "LOL-pc.yml"}


def build_llflow(root: Path, arch: str, reduced: bool = False):
    """The official LLFlow network (random init, seed SEED, perturbed) and its options."""
    _stubs()
    code = root / "code"
    with _on_path(code):
        from models.modules.LLFlow_arch import LLFlow
        from options import options

        opt = options.dict_to_nonedict(options.parse(str(code / "confs" / LLFLOW_CONFS[arch]), is_train=True))
        g = opt["network_G"]
        if reduced:  # a small network of the same structure for the committed fixture
            g["nf"], g["nb"] = 8, 2
            g["flow"]["K"] = 1
            g["flow"]["stackRRDB"]["blocks"] = [1]
            g["flow"]["conditionInFeaDim"] = 16
            g["flow"]["CondAffineSeparatedAndCond"] = options.dict_to_nonedict({"hidden_channels": 8})
        opt["train_gt_ratio"] = 0.0  # the NLL's prior mean is the encoder's colour map (not a GT coin toss)
        torch.manual_seed(SEED)
        np.random.seed(SEED)
        random.seed(SEED)
        net = LLFlow(
            in_nc=g["in_nc"], out_nc=g["out_nc"], nf=g["nf"], nb=g["nb"], gc=g["nf"] if reduced else 32,
            scale=opt["scale"], K=g["flow"]["K"], opt=opt,
        )  # fmt: skip
    perturb(net, SEED + 1)
    return net.eval(), opt


def llflow_input(lq: torch.Tensor, multiple: int) -> torch.Tensor:
    """The release's 6-channel input of nightflow's padded LR: log(x + 1e-3) and the unpadded image's HE."""
    from nightflow.models.sizes import pad_to_multiple

    u8 = (lq[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    he = np.stack([equalize_u8(u8[..., c]) for c in range(3)], axis=0)
    he_t = torch.from_numpy(he).float().unsqueeze(0) / 255
    lq_p, _ = pad_to_multiple(lq, multiple)
    he_p, _ = pad_to_multiple(he_t, multiple)
    return torch.cat([torch.log(torch.clamp(lq_p + 1e-3, min=1e-3)), he_p], dim=1)


def run_llflow_official(net, lq: torch.Tensor, hq: torch.Tensor, multiple: int) -> tuple[torch.Tensor, float]:
    from nightflow.models.sizes import pad_to_multiple

    lr = llflow_input(lq, multiple)
    hq_p, _ = pad_to_multiple(hq, multiple, "hq")
    with torch.no_grad():
        out, _ = net(lr=lr, z=None, eps_std=0.0, reverse=True)
        _, nll, _ = net(gt=hq_p, lr=lr, reverse=False)
    return out[..., : lq.shape[-2], : lq.shape[-1]], float(nll[0])


# ------------------------------------------------------------------------------------------------------ SSFlow
SSFLOW_REDUCED = [8, 16, 16, 16]  # the fixture's U-Net widths; conditioning 16, orthogonal filters 8×8


def perturb_ssflow(net: torch.nn.Module, seed: int) -> None:
    """Beyond :func:`perturb`: every PReLU slope 0.25 + N(0, 0.1²); BatchNorm weight 1 + N(0, 0.1²), bias and
    running mean N(0, 0.1²), running variance U(0.5, 1.5), num_batches_tracked 7 (eval mode uses the stats)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, mod in net.named_modules():
            if isinstance(mod, torch.nn.PReLU):
                mod.weight.copy_(0.25 + 0.1 * torch.randn(mod.weight.shape, generator=g))
            elif isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                mod.bias.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
                mod.num_batches_tracked.fill_(7)


def rescale_ssflow_encoder(net, multiple: int = 8) -> None:
    """Make the random-init U-Net depend on its input (LSUV-style, data-dependent): with PyTorch's default init
    the official encoder's output hardly changes with the input (measured: another image moved the output by
    7.6e-6), so a comparison would not see its early layers. On a fixed dark image (40×56), every conv,
    transposed conv and Linear of ``RRDB`` that runs is rescaled, in execution order, so that its output minus
    bias has std 1; the FAC kernel predictors' last convs 0.2 (a 5×5 FAC sums 25 taps, so its output keeps std
    ≈ 1), the U-Net's RGB output (the flow's prior mean) 0.3; the excitation's Linears (one vector per image)
    RMS 1, with the first one's rows signed so that every hidden unit is active on that image (the reduced
    network has a single one: inactive, the gate would be a constant ½ and the Gram–Schmidt filters would not
    matter). Weights only; biases are kept."""
    enc = net.RRDB
    lr = llflow_input(dark_image(40, 56, 99), multiple)
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    order: list[str] = []
    mods = dict(enc.named_modules())

    def record(name):
        return lambda _m, _i, _o: order.append(name) if name not in order else None

    hooks = [mod.register_forward_hook(record(n)) for n, mod in mods.items() if isinstance(mod, kinds)]
    with torch.no_grad():
        enc(lr, get_steps=True)
    for h in hooks:
        h.remove()
    for name in order:
        mod = mods[name]
        got: dict[str, torch.Tensor] = {}

        def keep(_m, _i, o, got=got) -> None:  # a copy: an in-place activation may follow; returns None
            got.setdefault("out", o.detach().clone())

        hook = mod.register_forward_hook(keep)
        with torch.no_grad():
            enc(lr, get_steps=True)
        hook.remove()
        target = 0.3 if name == "denoise.D_block0.1" else 0.2 if name.endswith(".6") else 1.0
        with torch.no_grad():
            out = got["out"]
            if mod.bias is not None:
                out = out - mod.bias.view((1, -1) + (1,) * (out.dim() - 2))
            if isinstance(mod, torch.nn.Linear):  # the excitation: one vector per image, RMS instead of std
                if name.endswith("_excitation.0"):
                    # every hidden unit active (ReLU > 0) on this image, so the gate follows the summary
                    mod.weight.mul_(torch.where(out[0] < 0, -1.0, 1.0)[:, None])
                std = float(out.pow(2).mean().sqrt())
            else:
                std = float(out.std())
            if std > 0:
                mod.weight.mul_(target / std)


def build_ssflow(root: Path, reduced: bool = False):
    """The official SSFlow network (LLFlow class + ConEncoder1 + ns_model2.SSFlow; random init, seed SEED,
    perturbed) and its options. ``reduced``: the fixture's narrow network. Its U-Net is the official class
    built with ``channels=SSFLOW_REDUCED``; the modules whose widths the release hard-codes (the first conv's 32
    inputs, the 64-channel orthogonal block, conv22/conv33 128 → 64) are replaced by the same official classes
    at the narrow widths, and the official forward runs unchanged."""
    _stubs()
    with _on_path(root):
        from models import ns_model2
        from models.modules.LLFlow_arch import LLFlow
        from options import options

        opt = options.dict_to_nonedict(options.parse(str(root / "confs" / "LOL_smallNet.yml"), is_train=True))
        g = opt["network_G"]
        if reduced:
            g["nf"], g["nb"] = SSFLOW_REDUCED[0], 1
            g["flow"]["K"] = 1
            # one transition per level (the release has 2): 75 kB less
            g["flow"]["additionalFlowNoAffine"] = 1
            g["flow"]["conditionInFeaDim"] = SSFLOW_REDUCED[1]
            g["flow"]["CondAffineSeparatedAndCond"] = options.dict_to_nonedict({"hidden_channels": 8})
        opt["train_gt_ratio"] = 0.0  # the NLL's prior mean is the U-Net's output (not a GT coin toss)
        torch.manual_seed(SEED)
        np.random.seed(SEED)
        random.seed(SEED)
        net = LLFlow(
            in_nc=g["in_nc"], out_nc=g["out_nc"], nf=g["nf"], nb=g["nb"], scale=opt["scale"], K=g["flow"]["K"],
            opt=opt,
        )  # fmt: skip
        if reduced:
            c1, c2, c3, c4 = SSFLOW_REDUCED
            u = ns_model2.SSFlow(channels=SSFLOW_REDUCED)
            u.E_block1[0] = torch.nn.Conv2d(c1, c1, 3, stride=1, padding=1)
            u.BasicBlock = ns_model2.BasicBlock(inplanes=c2, planes=c2, height=8, stride=1, downsample=None)
            u.conv22 = torch.nn.Sequential(ns_model2.single_conv(c3, c2))
            u.conv33 = torch.nn.Sequential(ns_model2.single_conv(c4, c2))
            net.RRDB.denoise = u
    perturb(net, SEED + 1)
    perturb_ssflow(net, SEED + 2)
    net.eval()
    rescale_ssflow_encoder(net)
    return net, opt


def run_ssflow_official(net, lq: torch.Tensor, hq: torch.Tensor, multiple: int) -> tuple[torch.Tensor, float]:
    """(reverse pass at the prior mean, forward NLL in bits/pixel) on nightflow's padded input, in fp32 (on CPU
    the release's CUDA autocast is off)."""
    from nightflow.models.sizes import pad_to_multiple

    lr = llflow_input(lq, multiple)  # log(x + 1e-3) and HE (which SSFlow's encoder ignores)
    hq_p, _ = pad_to_multiple(hq, multiple, "hq")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _ = net(lr=lr, z=None, eps_std=0.0, reverse=True)
        _, nll, _ = net(gt=hq_p, lr=lr, reverse=False)
    return out[..., : lq.shape[-2], : lq.shape[-1]].float(), float(nll[0])


def ssflow_fixture_state(net) -> dict[str, torch.Tensor]:
    """The reduced network's state dict for the fixture: live tensors float16 (integers as they are); every dead
    tensor, which the converter skips by name whatever its shape, cut to its first element (the OrthoNet-18
    backbone alone is 11.6 M parameters)."""
    from nightflow.convert import ssflow

    dead = [re.compile(p) for p in ssflow.DEAD]
    out = {}
    for k, v in net.state_dict().items():
        if any(d.fullmatch(k) for d in dead):
            v = v.reshape(-1)[:1] if v.dim() else v
        out[k] = (v.half() if v.is_floating_point() else v).contiguous()
    return out


# ----------------------------------------------------------------------------------------------------- UPT-Flow
# the fixture's reduced MSFormer (official class, its own arguments): width 4, 2 blocks at the outer levels (a
# shifted window runs), 1 elsewhere, 1 refinement block, window 5 (every level pads); the flow: K 1, 1 transition,
# hidden 16 (CBAM's reduction 16 leaves 1 unit; at 8 it would leave none), and the hard-coded 288 conditioning channels set to the narrow encoder's 6·4 = 24
# std of the subnets' shift weights (perturb_uptflow): the full-size flow (hidden 64, K 8) diverges at 0.5
UPTFLOW_SHIFT_STD = {"reduced": 0.5, "full": 0.1}
UPTFLOW_REDUCED = {"dim": 4, "depths": [2, 1, 1, 1, 1, 1, 2], "num_refinement_blocks": 1, "win_size": 5}


def _timm_stub() -> None:
    class DropPath(torch.nn.Module):  # identity in eval mode (the only mode the comparison runs)
        def __init__(self, p: float = 0.0) -> None:
            super().__init__()
            self.p = p

        def forward(self, x):
            if self.training and self.p > 0:
                raise RuntimeError("stub DropPath: eval only")
            return x

    _stub(
        "timm.models.layers",
        {
            "DropPath": DropPath,
            "to_2tuple": lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x),
            "trunc_normal_": lambda t, std=1.0, **k: torch.nn.init.trunc_normal_(t, std=std, a=-2, b=2),
        },
    )


def perturb_uptflow(net: torch.nn.Module, seed: int, shift_std: float) -> None:
    """Beyond :func:`perturb`: every encoder parameter that starts constant (LayerNorm weights and biases,
    attention temperatures, Linear and conv biases) + N(0, 0.1²), so a swapped or missing one shows; the
    subnets' shift outputs (even channels of each Conv2dZeros) get weights N(0, shift_std²), so that the
    conditioning, and so the encoder, moves the output (reduced fixture: with 0.02 another input moved it by 6e-3, with 0.5 by 0.16)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in net.RRDB.named_parameters():
            if p.numel() == 1 or bool((p == p.reshape(-1)[0]).all()):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for _, mod in net.flowUpsamplerNet.named_modules():
            if type(mod).__name__ == "Conv2dZeros":
                w = mod.weight[0::2]
                w.copy_(shift_std * torch.randn(w.shape, generator=g))


def build_uptflow(root: Path, reduced: bool = False):
    """The official UPT-Flow network (random init, seed SEED, perturbed) and its options."""
    _stubs()
    _timm_stub()
    with _on_path(root):
        from models.modules import FlowUpsamplerNet as fun
        from models.modules.Lowlight_Encoder import MSFormer
        from models.modules.UPTFlow_arch import UPTFlow
        from options import options

        opt = options.dict_to_nonedict(options.parse(str(root / "confs" / "UPT-Flow.yml"), is_train=True))
        g = opt["network_G"]
        patched = {}
        if reduced:
            g["flow"]["K"] = 1
            g["flow"]["additionalFlowNoAffine"] = 1
            g["flow"]["CondAffineSeparatedAndCond"] = options.dict_to_nonedict({"hidden_channels": 16})
            cond = 6 * UPTFLOW_REDUCED["dim"]
            cls = fun.FlowUpsamplerNet
            for name in ("arch_FlowStep", "arch_additionalFlowAffine"):  # the hard-coded 288 → cond
                orig = getattr(cls, name)
                patched[name] = orig
                setattr(
                    cls,
                    name,
                    lambda self, *a, _o=orig, **k: _o(self, *a, **{**k, "fFeatures_firstConv": cond}),
                )
        torch.manual_seed(SEED)
        np.random.seed(SEED)
        random.seed(SEED)
        try:
            net = UPTFlow(
                in_nc=g["in_nc"], out_nc=g["out_nc"], nf=g["nf"], nb=g["nb"], scale=opt["scale"], K=g["flow"]["K"],
                opt=opt,
            )  # fmt: skip
            if reduced:
                net.RRDB = MSFormer(**UPTFLOW_REDUCED)
        finally:
            for name, orig in patched.items():
                setattr(fun.FlowUpsamplerNet, name, orig)
    perturb(net, SEED + 1)
    perturb_uptflow(net, SEED + 2, UPTFLOW_SHIFT_STD["reduced" if reduced else "full"])
    return net.eval(), opt


def official_upm(x: torch.Tensor) -> torch.Tensor:
    """test.py's zero_map: channel shares c / (R + G + B + 1e-4), a share ≤ 0.1 zeroed, 1 where the product ≠ 0."""
    total = x[:, 0:1] + x[:, 1:2] + x[:, 2:3] + 0.0001
    shares = [c / total for c in x.split(1, dim=1)]
    for share in shares:
        share[share <= 0.1] = 0
    return (shares[0] * shares[1] * shares[2] != 0).float()


def run_uptflow_official(
    net, lq: torch.Tensor, hq: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, float]:
    """(reverse pass at z = 0, forward NLL in continuous bits/dim) on nightflow's padded input, fp32 (on CPU the
    release's CUDA autocast is off). The NLL: −(log-det + log N(z; 0, I)) / (ln 2 · 3·H·W) from the official
    flow's forward pass."""
    import math

    from nightflow.models.sizes import pad_to_multiple

    lr, _ = pad_to_multiple(lq, multiple)
    hq_p, _ = pad_to_multiple(hq, multiple, "hq")
    zc = official_upm(lr)
    n, _, h, w = lr.shape
    z = torch.zeros(n, 3 * 4**3, h // 8, w // 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _ = net(lr=lr, zc=zc, z=z, eps_std=0.0, reverse=True, add_gt_noise=False)
        enc = net.rrdbPreprocessing(lr, zc)
        zf, logdet = net.flowUpsamplerNet(gt=hq_p, rrdbResults=enc, logdet=0.0, reverse=False)
    log_p = logdet + (-0.5 * (zf**2 + math.log(2 * math.pi))).sum(dim=(1, 2, 3))
    nll = float(-log_p[0]) / (math.log(2.0) * 3 * h * w)
    return out[..., : lq.shape[-2], : lq.shape[-1]].float(), nll


def uptflow_quant_bits(model) -> float:
    """nightflow's discretisation term in bits/dim (log2 quant), added to the official continuous NLL."""
    import math

    return math.log2(model.cfg.quant) if model.cfg.quant > 0 else 0.0


# ----------------------------------------------------------------------------------------------- comparison
def nightflow_outputs(model, lq: torch.Tensor, hq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(raw mean path, clamped restore, NLL bits/dim) of a converted nightflow model."""
    from nightflow.models.sizes import crop_to

    with torch.no_grad():
        lq_p, size = model._pad_lq(lq)
        cond = model.condition(lq_p, model.context(lq))
        raw = crop_to(model._mean_path(cond, lq_p, None), size, model.scale)
        restored = model.restore(lq)
        nll = float(model.nll_bits_per_dim(hq, lq)[0])
    return raw, restored, nll


def convert_official(net, arch: str, folder: Path):
    from nightflow.convert import convert_state_dict, read_state_dict

    pth = folder / f"{arch}.pth"
    torch.save(net.state_dict(), pth)
    model, cfg, rows, skipped = convert_state_dict(read_state_dict(pth), arch, str(pth))
    return model, rows, skipped


def measure(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    sizes = [(37, 53), (64, 96)]
    todo = []
    if args.llflow:
        for a in ("llflow-small", "llflow"):
            todo.append((a, lambda a=a: build_llflow(Path(args.llflow), a)[0], run_llflow_official))
    if args.ssflow:
        todo.append(("ssflow", lambda: build_ssflow(Path(args.ssflow))[0], run_ssflow_official))
    if args.uptflow:
        todo.append(("uptflow", lambda: build_uptflow(Path(args.uptflow))[0], run_uptflow_official))
    for arch, build, run_official in todo:
        net = build()
        with tempfile.TemporaryDirectory() as tmp:
            model, rows, skipped = convert_official(net, arch, Path(tmp))
        for i, (h, w) in enumerate(sizes):
            lq, hq = dark_image(h, w, SEED + i), bright_image(h, w, SEED + i)
            off, off_nll = run_official(net, lq, hq, model.pad_multiple)
            raw, restored, nll = nightflow_outputs(model, lq, hq)
            if (
                arch == "uptflow"
            ):  # official: continuous bits/dim; nightflow adds log2(quant); compared as bits/pixel/3
                off_nll = 3 * (off_nll + uptflow_quant_bits(model))
            # how much the official output moves for another input of the same size: the comparison is only
            # meaningful if this is far above the errors
            other, _ = run_official(net, dark_image(h, w, SEED + 7), hq, model.pad_multiple)
            row = {
                "arch": arch,
                "size": f"{h}x{w}",
                "padded": f"{h + (-h) % model.pad_multiple}x{w + (-w) % model.pad_multiple}",
                "max_abs_raw": float((raw - off).abs().max()),
                "max_abs_clamped": float((restored - off.clamp(0, 1)).abs().max()),
                "output_range": [float(off.min()), float(off.max())],
                "official_change_other_input": float((other - off).abs().max()),
                "nll_official_bits_per_pixel": off_nll,
                "nll_nightflow_bits_per_dim": nll,
                "nll_diff_bits_per_dim": abs(off_nll / 3 - nll),
                "tensors_mapped": len(rows),
                "dead_skipped": len(skipped),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def fixtures(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    FIXTURES.mkdir(parents=True, exist_ok=True)
    if args.llflow:
        net, _ = build_llflow(Path(args.llflow), "llflow-small", reduced=True)
        with torch.no_grad():  # store float16; run the official code with exactly those rounded weights
            for t in net.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
        lq, hq = dark_image(21, 30, SEED), bright_image(21, 30, SEED)
        out, nll = run_llflow_official(net, lq, hq, 8)
        state = {k: v.half().contiguous() for k, v in net.state_dict().items()}
        # the dead FlowUpsamplerNet.f is 384×128×3×3 whatever the width (0.9 MB): truncated to its first output
        # channel here (the converter skips it by name, so its shape does not matter)
        for k in ("flowUpsamplerNet.f.0.weight", "flowUpsamplerNet.f.0.bias"):
            state[k] = state[k][:1].contiguous()
        meta = {
            "arch": "llflow-small",
            "official_code": "wyf0912/LLFlow@115da161a96d",
            "reduced": "nf 8, nb 2, gc 8, blocks [1], K 1, hidden 8",
            "nll_bits_per_pixel": repr(nll),
        }
        save_file(state, str(FIXTURES / "llflow_state.safetensors"), metadata=meta)
        save_file(
            {"lq": lq.contiguous(), "hq": hq.contiguous(), "out": out.contiguous()},
            str(FIXTURES / "llflow_io.safetensors"),
            metadata=meta,
        )
        print(f"wrote {FIXTURES}/llflow_*.safetensors (official NLL {nll:.6f} bits/pixel)")
    if args.ssflow:
        net, _ = build_ssflow(Path(args.ssflow), reduced=True)
        state = ssflow_fixture_state(net)
        with torch.no_grad():  # run the official code with exactly the stored (float16-rounded) live weights
            live = net.state_dict()
            for k, v in state.items():
                if live[k].is_floating_point() and live[k].shape == v.shape:
                    live[k].copy_(v.float())
        lq, hq = dark_image(21, 30, SEED), bright_image(21, 30, SEED)
        out, nll = run_ssflow_official(net, lq, hq, 8)
        meta = {
            "arch": "ssflow",
            "official_code": "shibaoshun/SSFlow@1a8778e39d2f",
            "reduced": f"channels {SSFLOW_REDUCED}, cond 16, ortho 8x8, nb 1, K 1, 1 transition, hidden 8; dead cut",
            "nll_bits_per_pixel": repr(nll),
        }
        save_file(state, str(FIXTURES / "ssflow_state.safetensors"), metadata=meta)
        save_file(
            {"lq": lq.contiguous(), "hq": hq.contiguous(), "out": out.contiguous()},
            str(FIXTURES / "ssflow_io.safetensors"),
            metadata=meta,
        )
        print(f"wrote {FIXTURES}/ssflow_*.safetensors (official NLL {nll:.6f} bits/pixel)")
    if args.uptflow:
        uptflow_fixture(Path(args.uptflow))


def uptflow_fixture(root: Path) -> None:
    from safetensors.torch import save_file

    net, _ = build_uptflow(root, reduced=True)
    with torch.no_grad():  # store float16; run the official code with exactly those rounded weights
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    lq, hq = dark_image(21, 30, SEED), bright_image(21, 30, SEED)
    out, nll = run_uptflow_official(net, lq, hq, 8)
    # floats as float16; the 14 relative-position index buffers (int64, < 625) as int16: 53 kB less
    state = {
        k: (v.half() if v.is_floating_point() else v.short()).contiguous()
        for k, v in net.state_dict().items()
    }
    meta = {
        "arch": "uptflow",
        "official_code": "NJUPT-IPR-XuLintao/UPT-Flow@7432b6b84344",
        "reduced": f"MSFormer {UPTFLOW_REDUCED}, cond 24, K 1, 1 transition, hidden 16; index buffers int16",
        "nll_continuous_bits_per_dim": repr(nll),
    }
    save_file(state, str(FIXTURES / "uptflow_state.safetensors"), metadata=meta)
    save_file(
        {"lq": lq.contiguous(), "hq": hq.contiguous(), "out": out.contiguous()},
        str(FIXTURES / "uptflow_io.safetensors"),
        metadata=meta,
    )
    print(f"wrote {FIXTURES}/uptflow_*.safetensors (official NLL {nll:.6f} continuous bits/dim)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["measure", "fixtures"])
    parser.add_argument("--llflow", type=Path, help="folder holding the LLFlow release's code/")
    parser.add_argument(
        "--ssflow", type=Path, help="the SSFlow release's repository root (confs/, models/, …)"
    )
    parser.add_argument(
        "--uptflow", type=Path, help="the UPT-Flow release's repository root (confs/UPT-Flow.yml, models/, …)"
    )
    parser.add_argument("--json", type=Path, help="measure: also write the rows here")
    args = parser.parse_args(argv)
    if args.mode == "measure":
        rows = measure(args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1) + "\n")
    else:
        fixtures(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
