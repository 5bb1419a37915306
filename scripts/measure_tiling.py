"""Tile consistency of a model: tiled vs whole-image output, and how far a tile edge disturbs the output.

The edge profile restores one interior crop with the whole image's context and compares it with the whole
image's output, by distance (LR px) from the crop's edge: what ``nightflow.inference.TILE_MARGIN`` must cover.

    python scripts/measure_tiling.py lolisrflow-x2 [--tile 64]
    python scripts/measure_tiling.py uptflow --tile 384 --crop 192   # wide receptive field: a larger mosaic
"""

from __future__ import annotations

import argparse

import torch

import nightflow
from nightflow import inference
from nightflow.data.io import read_image, to_tensor
from nightflow.demo import EXAMPLES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--crop", type=int, default=64, help="side of the interior crop (LR px)")
    args = parser.parse_args()
    model = nightflow.load(args.model).restorer.eval()
    s = model.scale
    lq = to_tensor(read_image(sorted(EXAMPLES.glob("*_dark.png"))[0])).unsqueeze(0).float().contiguous()
    if args.crop > 64:  # a mirrored mosaic of the 100×160 sample (real dark content) with room for the crop
        row = torch.cat([lq, lq.flip(-1), lq], -1)
        lq = torch.cat([row, row.flip(-2), row, row.flip(-2)], -2)[..., :384, :448].contiguous()
    whole = inference.restore(model, lq, tile=0)
    tiled = inference.restore(model, lq, tile=args.tile)
    diff = (whole - tiled).abs() * 255
    print(
        f"{args.model}, {lq.shape[-1]}×{lq.shape[-2]} input, tile {args.tile}: tiled vs whole max "
        f"{float(diff.max()):.2f}/255, mean {float(diff.mean()):.3f}/255"
    )
    grid = model.tiling.grid  # crops start on the model's tile grid, as tiles do
    y0, x0 = -(-16 // grid) * grid, -(-32 // grid) * grid
    c = min(args.crop, lq.shape[-2] - y0) // grid * grid  # an interior crop
    with torch.no_grad():
        ctx = model.context(lq)
        crop = model.restore(lq[..., y0 : y0 + c, x0 : x0 + c], context=ctx)
        ref = model.restore(lq, context=ctx)[..., s * y0 : s * (y0 + c), s * x0 : s * (x0 + c)]
    err = (crop - ref).abs().amax(1)[0] * 255
    pos = torch.arange(c * s, dtype=torch.float32) / s
    edge = torch.minimum(pos, c - pos)
    dist = torch.minimum(edge[:, None], edge[None, :])
    profile = [
        f"{r} px: {float(err[(dist >= r) & (dist < r + 2)].max()):.2f}"
        for r in range(0, c // 2, 8 if c > 64 else 4)
    ]
    print("max error (/255) by distance from a crop edge: " + ", ".join(profile))


if __name__ == "__main__":
    main()
