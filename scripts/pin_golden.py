"""Pin the bundled weights' outputs (tests/golden/*.png): rerun after deliberately retraining a bundled model.

Each bundled model restores the same 48×48 LR crop of a bundled sample at temperature 0, untiled, in float32;
tests/test_golden.py compares a fresh run with the PNG within 1/255 (one 8-bit level: float rounding differs
between CPUs), so a refactor that changes results fails a test.

    python scripts/pin_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"


def golden_input() -> torch.Tensor:
    from nightflow.data.io import read_image, to_tensor
    from nightflow.demo import EXAMPLES

    lq = to_tensor(read_image(EXAMPLES / "mate-ladybird_dark.png")).unsqueeze(0).float()
    return lq[..., 20:68, 40:88].contiguous()


def golden_output(name: str) -> np.ndarray:
    import nightflow
    from nightflow import inference

    torch.set_num_threads(1)
    model = nightflow.load(name).restorer.eval()
    with torch.no_grad():
        y = inference.restore(model, golden_input(), tile=0)
    return (y[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)


def bundled_names() -> list[str]:
    from nightflow.models import zoo

    return [n for n in zoo.config_names() if zoo.weights_path(n).is_file()]


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name in bundled_names():
        out = GOLDEN / f"{name}.png"
        Image.fromarray(golden_output(name)).save(out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
