"""images.py: image files of any mode and size as the model sees them; files that are no
image, or too large, are one line naming them."""

import io
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pytorch_cli.data import images
from pytorch_cli.platform.errors import PtrainError


def read_fails(path, *fragments) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PtrainError) as e:
            images.read_image(path, 1, (28, 28))
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)
    assert not caught  # no PIL warning reaches the user


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height (and whose checksum agrees)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    return bytes(raw)


def test_fifo_directory_and_missing_file_fail_at_once(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")  # opening it would block until a writer came
    read_fails(tmp_path / "pipe.png", "is not a regular file (a FIFO)")
    read_fails(tmp_path, "is not a regular file (a directory)")
    read_fails(tmp_path / "nope.png", "cannot read", "No such file")


def test_non_image_empty_and_truncated_images(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    read_fails(tmp_path / "notes.png", "is not an image file PIL can read")
    (tmp_path / "empty.jpg").write_bytes(b"")
    read_fails(tmp_path / "empty.jpg", "is empty (0 bytes)")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:3000])
    read_fails(tmp_path / "cut.png", "could not be decoded", "image file is truncated")


@pytest.mark.parametrize("side", [10_000, 20_000])  # over PIL's warning, over its error limit
def test_decompression_bomb_is_refused_in_one_line(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(png_claiming(side, side))
    pil_limit = Image.MAX_IMAGE_PIXELS
    read_fails(tmp_path / "bomb.png", f"is {side * side:,} pixels",
               f"limit of {images.MAX_IMAGE_PIXELS:,}")
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's global left as it was


def test_read_image_converts_mode_and_size(tmp_path):
    from PIL import Image
    Image.new("RGB", (50, 40), (255, 0, 0)).save(tmp_path / "red.png")
    gray = images.read_image(tmp_path / "red.png", 1, (28, 28))
    assert gray.shape == (1, 28, 28) and gray.dtype == torch.uint8 and int(gray[0, 0, 0]) == 76
    rgb = images.read_image(tmp_path / "red.png", 3, (32, 32))
    assert rgb.shape == (3, 32, 32) and rgb[:, 5, 5].tolist() == [255, 0, 0]


def mode_file(tmp_path, mode: str):
    """An 8x8 file of `mode` whose pixel (2, 3) is set, as PIL reads it back."""
    if mode == "I;16":
        a = np.zeros((8, 8), np.uint16)
        a[2, 3], a[0, 0] = 65535, 32896
        img = Image.fromarray(a)
    elif mode == "1":
        img = Image.new("1", (8, 8), 0)
        img.putpixel((3, 2), 1)
    elif mode == "P":
        img = Image.new("P", (8, 8), 0)
        img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
        img.putpixel((3, 2), 1)
    else:
        value = {"L": 77, "LA": (77, 10), "RGB": (255, 0, 0), "RGBA": (0, 255, 0, 0),
                 "CMYK": (255, 0, 0, 0)}[mode]  # CMYK: pure cyan
        img = Image.new(mode, (8, 8), 0)
        img.putpixel((3, 2), value)
    path = tmp_path / f"{mode.replace(';', '')}.{'tif' if mode == 'CMYK' else 'png'}"
    img.save(path)
    with Image.open(path) as back:
        assert back.mode == mode
    return path


# mode -> (pixel (2, 3) read with 1 channel, with 3); alpha is dropped, as torchvision's loader
MODES = {"L": (77, [77, 77, 77]), "LA": (77, [77, 77, 77]), "RGB": (76, [255, 0, 0]),
         "RGBA": (150, [0, 255, 0]), "P": (18, [10, 20, 30]), "CMYK": (179, [0, 255, 255]),
         "I;16": (255, [255, 255, 255]), "1": (255, [255, 255, 255])}


@pytest.mark.parametrize("mode", MODES)
def test_read_image_of_each_mode(tmp_path, mode):
    path = mode_file(tmp_path, mode)
    assert images.image_header(path) == (mode, (8, 8))
    assert (mode in images.GRAY_MODES) == (mode in ("L", "LA", "I;16", "1"))
    gray, rgb = MODES[mode]
    one, three = images.read_image(path, 1, (8, 8)), images.read_image(path, 3, (8, 8))
    assert one.shape == (1, 8, 8) and three.shape == (3, 8, 8)
    assert one.dtype == three.dtype == torch.uint8
    assert int(one[0, 2, 3]) == gray and three[:, 2, 3].tolist() == rgb
    background = 255 if mode == "CMYK" else 0  # CMYK 0 is white paper
    assert int(one[0, 7, 7]) == background and three[:, 7, 7].tolist() == [background] * 3
    if mode == "I;16":
        assert int(one[0, 0, 0]) == 128  # 32896 / 65535 x 255, scaled, not clipped at 255
    assert images.read_image(path, 1, (16, 16)).shape == (1, 16, 16)


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 257, 1000, 32896, 65535]], np.uint16)
    Image.fromarray(a).save(tmp_path / "wide.png")
    x = images.read_image(tmp_path / "wide.png", 1, (5, 5))  # resized 5x1 -> 5x5: rows repeat
    assert x[0, 2].tolist() == [0, 1, 4, 128, 255]


def _photo(path, size=(640, 480), mode="RGB"):
    """A photo-like JPEG: smooth shading with grain, as a camera's file is."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 64], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    (img if mode == "RGB" else img.convert(mode)).save(path, quality=90)
    return path


def _full_decode(path, channels, size):
    """What read_image gave before JPEG draft mode: the whole file decoded, then resized."""
    with Image.open(path) as img:
        img = images._convert(img, "L" if channels == 1 else "RGB")
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    a = np.asarray(img)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_a_jpeg_shrunk_is_decoded_at_a_reduced_scale_and_looks_the_same(tmp_path, mode):
    path = _photo(tmp_path / f"{mode}.jpg", mode=mode)
    with Image.open(path) as img:  # the precondition: libjpeg scales this file's decode
        assert img.mode == mode and img.draft(None, (80, 60)) is not None and img.size == (80, 60)
    for channels, size in ((3, (32, 32)), (1, (28, 28)), (3, (96, 128)), (3, (60, 80))):
        got = images.read_image(path, channels, size)
        assert got.shape == (channels, *size) and got.dtype == torch.uint8
        diff = np.abs(got.numpy().astype(int) - _full_decode(path, channels, size).astype(int))
        # not the full decode (it was scaled), yet as close as on real photos (1.5-1.9)
        assert 0 < diff.mean() < 3, (channels, size, diff.mean())
    own = images.read_image(path, 3, (480, 640))  # its own size: nothing to scale
    assert np.array_equal(own.numpy(), _full_decode(path, 3, (480, 640)))


def _wide(path, h=40, w=80):
    """A red image twice as wide as high, its left quarter green: what --resize treats apart."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = (255, 0, 0)
    a[:, : w // 4] = (0, 255, 0)
    Image.fromarray(a).save(path)
    return path


def test_resize_squashes_crops_or_pads_an_image_of_another_shape(tmp_path):
    """--resize: squash stretches the 80x40 image (its green quarter stays a quarter), crop
    keeps its centre 40x40 (no green left), pad fits it whole as 32x16 between black bars."""
    wide = _wide(tmp_path / "wide.png")
    squash, crop, pad = (images.read_image(wide, 3, (32, 32), how) for how in
                         ("squash", "crop", "pad"))
    green = lambda x: (x[1] > 128) & (x[0] < 128)  # noqa: E731
    assert green(squash)[:, :7].all() and not green(squash)[:, 9:].any()
    assert not green(crop).any() and (crop[0, :, 1:] > 250).all()  # (column 0: the filter's
    # reach over the box's edge, as torchvision's resize of the whole has it)
    assert (pad[:, :8] == 0).all() and (pad[:, 24:] == 0).all()
    assert green(pad)[8:24, :7].all() and not green(pad)[8:24, 9:].any()
    gray = images.read_image(wide, 1, (16, 24), "pad")  # 24x12, bars above and below
    assert gray.shape == (1, 16, 24) and (gray[0, :2] == 0).all() and (gray[0, 14:] == 0).all()
    Image.new("RGB", (1000, 10), (255, 255, 255)).save(tmp_path / "line.png")  # 100:1: a row
    line = images.read_image(tmp_path / "line.png", 3, (24, 24), "pad")  # of it stays, not black
    assert (line[:, 12] == 255).all() and line.sum() == 255 * 3 * 24
    rng = np.random.default_rng(0)  # an image of the size's shape: the same every way
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "r.png")
    same = [images.read_image(tmp_path / "r.png", 3, (24, 32), how) for how in
            ("squash", "crop", "pad")]
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], same[2])


@pytest.mark.parametrize("h,w,size", [(60, 100, (32, 32)), (100, 60, (24, 40)),
                                      (37, 91, (32, 32))])
def test_resize_crop_is_torchvisions_resize_then_centre_crop(tmp_path, h, w, size):
    """crop: within 3 of 255 of torchvision's Resize (the shorter side) + CenterCrop on a smooth
    image (PIL resamples the centre box in one step; torchvision the whole, then cuts)."""
    from torchvision.transforms.v2 import functional as F
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "g.png")
    scale = max(size[0] / h, size[1] / w)
    expected = F.center_crop(F.resize(torch.from_numpy(a).permute(2, 0, 1),
                                      [round(h * scale), round(w * scale)], antialias=True),
                             list(size))
    got = images.read_image(tmp_path / "g.png", 3, size, "crop")
    assert (got.int() - expected.int()).abs().max() <= 3
