"""How a trained flow behaves off its training distribution: smallest coupling scale and round-trip error of
encode → decode for real and synthetic inputs, and the range of decoded samples (issue 16, item 5).

    python scripts/flow_stability.py lolisrflow-x2
    python scripts/flow_stability.py lolisrflow-x2 --nll   # + mean NLL on the synthetic suite's 10 pairs
    python scripts/flow_stability.py lolisrflow-x2 --seeds 20   # sample ranges over 20 noise draws
    python scripts/flow_stability.py lolisrflow-x2 --seeds 20 --example   # ... of tests/test_flow_stability's crop
"""

from __future__ import annotations

import argparse

import torch

import nightflow
from nightflow.data.datasets import SyntheticDataset
from nightflow.flow import coupling


def example_crop() -> torch.Tensor:
    """The top-left 32×32 of examples/plasma-path_dark.png, as tests/test_flow_stability.py cuts it."""
    from nightflow.data.io import read_image, to_tensor
    from nightflow.demo import EXAMPLES

    return to_tensor(read_image(EXAMPLES / "plasma-path_dark.png"))[None, :, :32, :32].float().contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--photos", default="data/photos")
    parser.add_argument(
        "--nll", action="store_true", help="also the mean NLL (bits/dim) on the synthetic suite's 10 pairs"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="noise draws per temperature for the sample range and the share outside [-0.5, 1.5] (default 1)",
    )
    parser.add_argument(
        "--example",
        action="store_true",
        help="sample from the 32 px LR crop of a bundled dark sample that tests/test_flow_stability.py uses",
    )
    args = parser.parse_args()
    model = nightflow.load(args.model).restorer.eval()
    scales: list[float] = []
    original = coupling.shift_and_scale

    def recording(h: torch.Tensor, eps: float, floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale = original(h, eps, floor)
        scales.append(float(scale.min()))
        return shift, scale

    coupling.shift_and_scale = recording  # the layers look it up at call time
    item = SyntheticDataset(
        args.photos, split="val", scale=model.scale, patch_size=128, length=1, train=False
    )[0]
    lq, hq = item["lq"][None], item["hq"][None]
    h, w = hq.shape[-2:]
    checker = ((torch.arange(w)[None, :] + torch.arange(h)[:, None]) % 2).float().expand_as(hq).contiguous()
    inputs = {
        "real photo": hq,
        "uniform noise": torch.rand(hq.shape, generator=torch.Generator().manual_seed(0)),
        "flat 0.5": torch.full_like(hq, 0.5),
        "checkerboard": checker,
        "saturated": torch.ones_like(hq),
        "black": torch.zeros_like(hq),
    }
    with torch.no_grad():
        ctx = model.context(lq)
        for name, x in inputs.items():
            scales.clear()
            z, _ = model.encode(x, lq, ctx)
            smallest = min(scales)
            err = float((model.decode(z, lq, ctx) - x).abs().max())
            print(f"{name:14s} smallest scale {smallest:.2e}   round-trip max error {err:.2e}")
        shape = hq.shape
        if args.example:  # the test's input: its context comes from the crop itself
            lq = example_crop()
            ctx = model.context(lq)
            shape = (1, 3, model.scale * lq.shape[2], model.scale * lq.shape[3])
        cond = model.condition(model._pad_lq(lq)[0], ctx)
        for t in (0.0, 0.8, 0.9, 1.0):
            scales.clear()
            low, high, outside, total = float("inf"), float("-inf"), 0, 0
            for seed in range(args.seeds):
                noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
                raw = model.flow.sample(cond.features, model._prior(cond.color_map), t, noise=noise)
                low, high = min(low, float(raw.min())), max(high, float(raw.max()))
                outside += int(((raw < -0.5) | (raw > 1.5)).sum())
                total += raw.numel()
            print(
                f"T = {t}: smallest scale {min(scales):.2e}, decoded range [{low:.3f}, {high:.3f}] over "
                f"{args.seeds} seed(s), {outside / total:.4%} outside [-0.5, 1.5]"
            )
    coupling.shift_and_scale = original
    if args.nll:  # the pairs of benchmarks/suites/synthetic.yaml at this scale
        pairs = SyntheticDataset(
            args.photos, split="val", scale=model.scale, patch_size=384, length=10, seed=0, train=False
        )
        with torch.no_grad():
            nll = [float(model.nll_bits_per_dim(p["hq"][None], p["lq"][None])) for p in pairs]
        print(f"NLL on the synthetic suite's x{model.scale} pairs: {sum(nll) / len(nll):.4f} bits/dim")


if __name__ == "__main__":
    main()
