"""Image decoding: any file Pillow reads, as RGB uint8 [H, W, 3]. NumPy and Pillow only."""
from __future__ import annotations

import numpy as np

from detector.datasets.common import PathLike
from detector.errors import DetectionError

# The suffixes of the image files that folder inputs take (Pillow decodes each).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def read_image(path: PathLike, apply_exif: bool = False) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3], in its stored pixel grid.

    Every Pillow mode becomes RGB: alpha and palette transparency are dropped, 16-bit samples
    keep their high byte (``value >> 8``), 32-bit integer and float samples are clipped to
    0..255, CMYK and YCbCr go through Pillow's conversion. EXIF orientation is NOT applied by
    default: VOC, COCO and ILSVRC boxes, and their recorded width/height, refer to the stored
    pixels, so rotating the pixels would misplace every box. ``apply_exif=True`` rotates to the
    display orientation (`PIL.ImageOps.exif_transpose`), for images without annotations.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()  # decode here, so a truncated file fails inside this try
            return _to_rgb(ImageOps.exif_transpose(im) if apply_exif else im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DetectionError(f"cannot decode image {path}: {e}; re-download or remove it") from e


def _to_rgb(im) -> np.ndarray:
    """A loaded PIL image as RGB uint8 [H, W, 3]."""
    if im.mode.startswith("I;16"):
        # 16-bit: the high byte is the 8-bit image of the same dynamic range.
        gray = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
    elif im.mode in ("I", "F"):
        # 32-bit int/float samples have no fixed range; read them as 8-bit values.
        gray = np.clip(np.nan_to_num(np.asarray(im, np.float64)), 0, 255).round().astype(np.uint8)
    else:
        if im.mode in ("P", "PA", "LA", "La", "RGBa") or "transparency" in im.info:
            im = im.convert("RGBA")  # Pillow's supported path for alpha and transparency
        return np.array(im.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
