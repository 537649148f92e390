"""Image files, as the model sees them: any size or mode, converted and resized one way for
--dataset folder, evaluation and predict alike; a decompression bomb or a damaged file is one
line naming it."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from pytorch_cli.data.catalog import SQUASH
from pytorch_cli.data.readers import read_bytes
from pytorch_cli.platform.errors import PtrainError

# The largest image predict decodes: PIL's default warning threshold (1 GiB / 4 bytes / 3, about
# 89.5 megapixels, a 256 MiB RGBA decode). The models see 28 or 32 px, so a bigger file is more
# likely a decompression bomb than a photo; held here, not in PIL's global, which stays as it is.
MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def _too_big(path: Path, pixels: int) -> PtrainError:
    return PtrainError(f"{path} is {pixels:,} pixels, over ptrain's limit of "
                       f"{MAX_IMAGE_PIXELS:,} (a possible decompression bomb); scale it down")


# PIL's modes of gray images; those of more than 8 bits PIL's convert("L") would clip at 255
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_WIDE = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def _open(path: Path, f):
    """PIL's image of the file `f` holds (path names it), its header read, its size checked."""
    from PIL import Image, UnidentifiedImageError  # torchvision's dependency: no import of it
    try:
        img = Image.open(f)
    except Image.DecompressionBombError as e:  # over twice PIL's limit: it says the size
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise (_too_big(path, int(found[1])) if found else PtrainError(
            f"{path} is over {MAX_IMAGE_PIXELS:,} pixels; scale it down")) from None
    except UnidentifiedImageError:
        raise PtrainError(f"{path} is not an image file PIL can read (PNG, JPEG, BMP, "
                          "...)") from None
    if img.width * img.height > MAX_IMAGE_PIXELS:
        raise _too_big(path, img.width * img.height)
    return img


def image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (width, height)) of an image file, from its header."""
    with io.BytesIO(read_bytes(path, "give an image file")) as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open(path, f) as img:
            return img.mode, img.size


def _convert(img, mode: str):
    """img in mode L or RGB; a 16-bit or float gray image scaled to 8 bits, not clipped."""
    from PIL import Image
    if img.mode in _WIDE:
        a = np.asarray(img, dtype=np.float64)
        top = 1.0 if img.mode == "F" and a.max() <= 1 else 255.0 if img.mode == "F" else 65535.0
        img = Image.fromarray(np.clip(a * (255 / top), 0, 255).round().astype(np.uint8), "L")
    return img.convert(mode)


def _fit(img, size: tuple[int, int], resize: str):
    """img at size = (width, height), bilinear (antialiased when shrinking): squashed to it,
    cropped (its shorter side to the size, the centre kept) or padded (its longer side to the
    size, black bars). A crop is PIL's ImageOps.fit, the crop being the resize's box: one
    resampling. A pad is ImageOps.pad's, but the image keeps a pixel at least on its short side
    (PIL's rounds a 1000x10 image padded to 24x24 to nothing: all black). An image of the
    size's aspect ratio comes out the same all three ways."""
    from PIL import Image, ImageOps
    if resize == "crop":
        return ImageOps.fit(img, size, Image.BILINEAR)
    if resize == "pad":
        scale = min(size[0] / img.width, size[1] / img.height)
        inner = tuple(max(1, min(side, round(n * scale))) for n, side in zip(img.size, size))
        canvas = Image.new(img.mode, size)  # black
        canvas.paste(img.resize(inner, Image.BILINEAR),
                     tuple(round((side - n) / 2) for n, side in zip(inner, size)))
        return canvas
    return img.resize(size, Image.BILINEAR)


def read_image(path: Path, channels: int, size: tuple[int, int],
               resize: str = SQUASH) -> torch.Tensor:
    """An image file of any size or mode (L, LA, RGB, RGBA, P, CMYK, I;16...) as the model sees
    its data, in training (--dataset folder), evaluation and predict alike: converted to
    grayscale or RGB, resized to size = (height, width) as `resize` says (_fit), uint8
    (C, H, W)."""
    with io.BytesIO(read_bytes(path, "give an image file")) as f:
        try:
            with warnings.catch_warnings():
                # PIL's own warnings (a decompression bomb, palette transparency) are two raw
                # lines on stderr; the size limit says what matters in one
                warnings.simplefilter("ignore")
                with _open(path, f) as img:
                    # a JPEG shrinking to half its size or less decodes at 1/2, 1/4 or 1/8
                    # scale (libjpeg's DCT scaling, as PIL's thumbnail does), never below the
                    # size asked for: 1.45-2.2x faster on 0.16-0.44 MP photos at 224-32 px
                    # (benchmarks/jpeg_decode.py)
                    img.draft(None, (size[1], size[0]))
                    img = _convert(img, "L" if channels == 1 else "RGB")
                    if img.size != (size[1], size[0]):  # PIL's sizes are (width, height)
                        img = _fit(img, (size[1], size[0]), resize)
        except PtrainError:
            raise
        except Exception as e:  # "image file is truncated", broken PNG chunks, bad JPEG data
            raise PtrainError(f"{path} could not be decoded ({type(e).__name__}: "
                              f"{' '.join(str(e).split())}); it may be damaged or truncated: "
                              "give an intact copy") from None
    array = np.asarray(img)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())
