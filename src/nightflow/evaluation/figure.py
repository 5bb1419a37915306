"""The benchmark figure: one PNG per dataset of side-by-side centre crops with labels, composed with numpy.

Why numpy + OpenCV text rather than a plotting library: it needs no extra dependency and gives exact pixels
(crops are shown 1:1, never resampled). Columns: the input (pixel-replicated to the target grid, so the
darkness and the resolution loss are both visible), each model, the ground truth; one row per image, with each
model's PSNR on that image under its crop when PSNR was measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

GAP = 4
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4
LINE = 14  # pixels per text line
BACKGROUND = 255


@dataclass(frozen=True)
class CropBox:
    """A square in target pixels whose corner and size divide by the scale (so the input crop aligns)."""

    y: int
    x: int
    size: int

    def cut(self, img: torch.Tensor) -> torch.Tensor:
        return img[..., self.y : self.y + self.size, self.x : self.x + self.size]


def crop_box(height: int, width: int, scale: int, side: int) -> CropBox:
    """The centred box of ``side`` (at most the image, rounded down to a multiple of ``scale``)."""
    size = max(scale, min(side, height, width) // scale * scale)
    y = (height - size) // 2 // scale * scale
    x = (width - size) // 2 // scale * scale
    return CropBox(y, x, size)


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return text.replace("×", "x").replace("–", "-").encode("ascii", "replace").decode()


def wrap(text: str, width: int, max_lines: int = 2) -> list[str]:
    """Greedy word wrap to ``width`` pixels; the last line is cut with '..' if the text does not fit."""
    words, lines, line = _ascii(text).split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if cv2.getTextSize(trial, FONT, FONT_SCALE, 1)[0][0] <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1 :])]
    return [_fit(line, width) for line in lines]


def _fit(line: str, width: int) -> str:
    """Cut ``line`` with '..' until it fits ``width`` pixels (or only '..' is left)."""
    while len(line) > 2 and cv2.getTextSize(line, FONT, FONT_SCALE, 1)[0][0] > width:
        line = line[:-3] + ".." if len(line) > 3 else ".."
    return line


def _put(canvas: np.ndarray, lines: list[str], x: int, y: int) -> None:
    for k, line in enumerate(lines):
        cv2.putText(canvas, line, (x, y + (k + 1) * LINE - 3), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    a = img.detach().to("cpu", torch.float32).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.round(a * 255).astype(np.uint8)


def compose(
    headers: list[str],
    tiles: list[list[torch.Tensor | np.ndarray | None]],
    captions: list[list[str]],
) -> np.ndarray:
    """Grid of ``tiles[row][column]`` (3×c×c tensors in [0, 1] or c×c×3 uint8; None = blank) under ``headers``.

    Returns an H×W×3 uint8 RGB image; every tile of one figure must have the same size.
    """
    if not tiles or not tiles[0]:
        raise ValueError("a figure needs at least one row and one column")
    first = next(t for row in tiles for t in row if t is not None)
    c = int(first.shape[-1]) if isinstance(first, torch.Tensor) else int(first.shape[1])
    cols = len(headers)
    header_lines = [wrap(h, c) for h in headers]
    head_h = LINE * max(len(lines) for lines in header_lines) + GAP
    cap_h = LINE * max([1] + [len(wrap(t, c)) for row in captions for t in row if t])
    row_h = c + cap_h + GAP
    canvas = np.full((head_h + row_h * len(tiles) + GAP, GAP + cols * (c + GAP), 3), BACKGROUND, np.uint8)
    for j, lines in enumerate(header_lines):
        _put(canvas, lines, GAP + j * (c + GAP), 0)
    for i, row in enumerate(tiles):
        top = head_h + i * row_h
        for j, tile in enumerate(row):
            left = GAP + j * (c + GAP)
            if tile is not None:
                arr = _to_uint8(tile) if isinstance(tile, torch.Tensor) else tile
                if arr.shape[:2] != (c, c):
                    raise ValueError(f"tile ({i}, {j}) is {arr.shape[1]}×{arr.shape[0]}, expected {c}×{c}")
                canvas[top : top + c, left : left + c] = arr
            text = captions[i][j] if i < len(captions) and j < len(captions[i]) else ""
            if text:
                _put(canvas, wrap(text, c), left, top + c)
    return canvas
