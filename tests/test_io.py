"""nightflow.data.io: exact 16-bit I/O, EXIF orientation, grey/alpha, one-line errors, atomic writes, listing."""

from __future__ import annotations

import warnings
import zlib

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageOps

from nightflow.data.io import (
    AlphaDroppedWarning,
    ImageReadError,
    from_tensor,
    list_images,
    read_image,
    read_image_size,
    to_tensor,
    write_image,
)
from nightflow.errors import UserError


def _rng_image(h: int, w: int, dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max + 1, size=(h, w, 3), dtype=np.uint64).astype(dtype)


def test_16bit_png_round_trip_is_exact(tmp_path):
    img = _rng_image(7, 9, np.uint16)
    img[0, 0] = [1, 257, 65535]  # low bytes that 8-bit truncation would lose
    path = write_image(tmp_path / "a.png", img)
    back = read_image(path)
    assert back.dtype == np.uint16 and back.shape == (7, 9, 3)
    np.testing.assert_array_equal(back, img)
    # Pillow alone would not give this: it reads 16-bit RGB PNG as 8-bit
    assert np.asarray(Image.open(path)).dtype == np.uint8


def test_16bit_tiff_and_float_tiff_round_trip_are_exact(tmp_path):
    img16 = _rng_image(5, 6, np.uint16, seed=1)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "a.tif", img16)), img16)
    imgf = np.random.default_rng(2).random((5, 6, 3), dtype=np.float32)
    back = read_image(write_image(tmp_path / "f.tiff", imgf, bit_depth=32))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, imgf)


def test_8bit_png_round_trip_and_written_by_other_tools(tmp_path):
    img = _rng_image(4, 5, np.uint8, seed=3)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "a.png", img)), img)
    cv2.imwrite(str(tmp_path / "cv.png"), img[:, :, ::-1].copy())
    np.testing.assert_array_equal(read_image(tmp_path / "cv.png"), img)


def test_jpeg_is_read_as_rgb_uint8(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 200  # red
    write_image(tmp_path / "a.jpg", img)
    back = read_image(tmp_path / "a.jpg")
    assert back.dtype == np.uint8 and back.shape == (16, 16, 3)
    assert abs(int(back[8, 8, 0]) - 200) <= 3 and back[8, 8, 2] <= 3


def test_is_jpeg_reads_the_bytes_not_the_name(tmp_path):
    from nightflow.data.io import is_jpeg

    img = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.png", format="JPEG")  # a JPEG under a PNG name
    Image.fromarray(img).save(tmp_path / "real.jpg", format="PNG")  # and the other way round
    assert is_jpeg(tmp_path / "photo.png") and not is_jpeg(tmp_path / "real.jpg")
    assert not is_jpeg(tmp_path / "missing.jpg") and not is_jpeg(tmp_path)  # unreadable: not a JPEG


def test_grey_becomes_rgb_8_and_16_bit(tmp_path):
    g8 = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(g8, "L").save(tmp_path / "g8.png")
    out = read_image(tmp_path / "g8.png")
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[..., 1], g8)
    g16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000 + 3).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    out16 = read_image(tmp_path / "g16.png")
    assert out16.dtype == np.uint16
    np.testing.assert_array_equal(out16[..., 2], g16)
    tifffile.imwrite(tmp_path / "g.tif", g16)
    np.testing.assert_array_equal(read_image(tmp_path / "g.tif")[..., 0], g16)


def test_alpha_is_dropped_with_a_warning(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = [10, 20, 30]
    rgba[..., 3] = 0  # fully transparent: the colour must still come through, not a composite
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with pytest.warns(AlphaDroppedWarning, match="a.png"):
        out = read_image(tmp_path / "a.png")
    assert out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    img = _rng_image(3, 5, np.uint8, seed=orientation)
    im = Image.fromarray(img)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    out = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(out, expected)
    assert read_image_size(tmp_path / "o.png") == out.shape[:2]
    if orientation >= 5:
        assert out.shape[:2] == (5, 3)


def _with_exif_chunk(png: bytes, orientation: int) -> bytes:
    """Insert a PNG eXIf chunk (after IHDR) carrying an EXIF orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()[6:]  # drop the b"Exif\0\0" prefix: PNG stores the TIFF structure itself
    chunk = len(body).to_bytes(4, "big") + b"eXIf" + body + zlib.crc32(b"eXIf" + body).to_bytes(4, "big")
    return png[:33] + chunk + png[33:]


def test_exif_orientation_is_applied_to_16bit_png(tmp_path):
    img = _rng_image(2, 3, np.uint16)
    png = write_image(tmp_path / "a.png", img).read_bytes()
    (tmp_path / "rot.png").write_bytes(_with_exif_chunk(png, 6))
    out = read_image(tmp_path / "rot.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, np.rot90(img, -1))
    assert read_image_size(tmp_path / "rot.png") == (3, 2)


def _assert_one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, msg


def test_truncated_png_gives_one_line_error(tmp_path):
    img = _rng_image(64, 64, np.uint8)
    data = (write_image(tmp_path / "full.png", img)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "cut.png")
    _assert_one_line(exc, "cut.png", "truncated")
    assert isinstance(exc.value, UserError)


def test_truncated_16bit_png_gives_one_line_error(tmp_path):
    data = write_image(tmp_path / "full.png", _rng_image(32, 32, np.uint16)).read_bytes()
    (tmp_path / "cut16.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "cut16.png")
    _assert_one_line(exc, "cut16.png", "truncated")


def test_empty_missing_folder_and_non_image_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("this is text, not pixels\nsecond line")
    (tmp_path / "dir.png").mkdir()
    cases = {
        "empty.png": "empty",
        "notes.png": "not a recognised image",
        "dir.png": "folder",
        "nope.png": "not found",
    }
    for name, cause in cases.items():
        with pytest.raises(ImageReadError) as exc:
            read_image(tmp_path / name)
        _assert_one_line(exc, name, cause)


def test_write_is_atomic_and_keeps_existing_files(tmp_path):
    img = _rng_image(4, 4, np.uint8)
    path = write_image(tmp_path / "sub" / "a.png", img)
    before = path.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        write_image(path, np.zeros_like(img))
    assert path.read_bytes() == before
    write_image(path, np.zeros_like(img), overwrite=True)
    assert read_image(path).max() == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.png"]  # no temporary files left


def test_write_rejects_bad_requests(tmp_path):
    img = _rng_image(4, 4, np.uint16)
    with pytest.raises(UserError, match="JPEG is 8-bit"):
        write_image(tmp_path / "a.jpg", img)
    with pytest.raises(UserError, match="unsupported extension"):
        write_image(tmp_path / "a.gif", img)
    assert list(tmp_path.iterdir()) == []


def test_bit_depth_conversions_and_tensor_input(tmp_path):
    t = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1).expand(3, 2, 2).contiguous()
    out8 = read_image(write_image(tmp_path / "t8.png", t))
    assert out8.dtype == np.uint8 and out8[0, 0].tolist() == [0, 128, 255]
    out16 = read_image(write_image(tmp_path / "t16.png", t, bit_depth=16))
    assert out16.dtype == np.uint16 and out16[0, 0].tolist() == [0, 32768, 65535]
    down = read_image(write_image(tmp_path / "d.png", out16, bit_depth=8))
    assert down[0, 0].tolist() == [0, 128, 255]
    up = read_image(write_image(tmp_path / "u.png", out8, bit_depth=16))
    assert up[0, 0].tolist() == [0, 128 * 257, 65535]


def test_tensor_conversions_round_trip():
    a8 = _rng_image(3, 4, np.uint8)
    t = to_tensor(a8)
    assert t.shape == (3, 3, 4) and t.dtype == torch.float32 and 0.0 <= t.min() and t.max() <= 1.0
    np.testing.assert_array_equal(from_tensor(t, np.uint8), a8)
    a16 = _rng_image(3, 4, np.uint16)
    np.testing.assert_array_equal(from_tensor(to_tensor(a16), np.uint16), a16)
    np.testing.assert_array_equal(from_tensor(to_tensor(a8).unsqueeze(0)), a8)
    # one policy with the API: a hair of overshoot is clipped, values beyond [0, 1] and NaN/inf are refused
    assert to_tensor(np.full((2, 2, 3), 1.0005, np.float32)).max() == 1.0
    for bad in (1.5, np.nan, np.inf):
        with pytest.raises(UserError, match=r"\[0, 1\]|NaN"):
            to_tensor(np.full((2, 2, 3), bad, np.float32))


def test_list_images_sorting_filtering_and_errors(tmp_path):
    for name in ["img10.PNG", "img2.jpg", "img1.tif", ".hidden.png", "._img3.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "img0.jpeg").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["img1.tif", "img2.jpg", "img10.PNG"]
    assert [p.name for p in list_images(tmp_path, recursive=True)][-1] == "img0.jpeg"
    assert [p.name for p in list_images(str(tmp_path / "img*"))] == ["img1.tif", "img2.jpg", "img10.PNG"]
    assert list_images(tmp_path / "img2.jpg") == [tmp_path / "img2.jpg"]
    assert len(list_images([tmp_path / "img2.jpg", tmp_path / "img1.tif"])) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(UserError, match="no such file"):
        list_images(tmp_path / "missing")
    with pytest.raises(UserError, match="not a supported image type"):
        list_images(tmp_path / "notes.txt")


def test_no_warning_for_plain_rgb(tmp_path):
    write_image(tmp_path / "a.png", _rng_image(2, 2, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "a.png")


def test_truncated_jpeg_and_tiff_give_one_line_errors(tmp_path):
    img = _rng_image(64, 64, np.uint8)
    for ext in ("jpg", "tif"):
        data = write_image(tmp_path / f"full.{ext}", img).read_bytes()
        (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageReadError) as exc:
            read_image(tmp_path / f"cut.{ext}")
        _assert_one_line(exc, f"cut.{ext}", "truncated")


def test_16bit_rgba_png_and_planar_tiff_keep_exact_colours(tmp_path):
    bgra = _rng_image(4, 5, np.uint16)
    bgra = np.concatenate([bgra, bgra[..., :1]], axis=2)
    cv2.imwrite(str(tmp_path / "rgba16.png"), bgra)
    with pytest.warns(AlphaDroppedWarning):
        out = read_image(tmp_path / "rgba16.png")
    np.testing.assert_array_equal(out, bgra[..., [2, 1, 0]])
    planar = _rng_image(4, 5, np.uint16, seed=4).transpose(2, 0, 1).copy()
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), planar.transpose(1, 2, 0))
