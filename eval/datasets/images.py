"""Image decoding (any file Pillow reads, as RGB uint8 [H, W, 3]) and folder listings.
NumPy and Pillow only."""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

from eval.datasets.common import PathLike
from eval.errors import DetectionError
from eval.inputs import open_input

# The suffixes of the image files that folder inputs take (Pillow decodes each). GIF is not
# among them: it is animation or 256-colour graphics, not photos (read_image still reads one).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# A truncated file is read if at most this fraction of its rows is missing (else refused).
MAX_MISSING_ROWS = 0.1
# Pillow's LOAD_TRUNCATED_IMAGES is a module global: held only under this lock, for one decode.
_TRUNCATED_LOCK = threading.Lock()


class TruncatedImageWarning(UserWarning):
    """A truncated image file was read with its missing end filled in by the decoder."""


def read_image(path: PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3], in its stored pixel grid.

    Every Pillow mode becomes RGB: alpha and palette transparency are dropped, 16-bit samples
    keep their high byte (``value >> 8``), 32-bit integer and float samples are clipped to
    0..255, CMYK and YCbCr go through Pillow's conversion. EXIF orientation is NOT applied by
    default: VOC, COCO and ILSVRC boxes, and their recorded width/height, refer to the stored
    pixels, so rotating the pixels would misplace every box.

    Damaged files: a slightly truncated one (a photo copied while it was written, a download
    cut short: at most `MAX_MISSING_ROWS` of its rows lost) is read with a
    `TruncatedImageWarning` naming it; one missing more, or not decodable at all, is a
    DetectionError naming it. So is a decompression bomb (a small file declaring more than
    twice Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``): raise that limit to read it if trusted.
    """
    from PIL import Image

    try:
        return _decode(path)
    except Image.DecompressionBombError as e:
        raise DetectionError(
            f"image {path} is refused as a possible decompression bomb ({e}); if you trust "
            "it, raise Pillow's limit before reading (in Python: PIL.Image.MAX_IMAGE_PIXELS = "
            "a larger number of pixels, or None)") from None
    except Image.UnidentifiedImageError:
        raise DetectionError(f"cannot decode image {path}: not an image file Pillow can "
                             "identify; re-download or remove it") from None
    except OSError as e:
        if not _truncated(e):
            raise DetectionError(f"cannot decode image {path}: {e}; re-download or remove "
                                 "it") from None
    except (SyntaxError, ValueError) as e:
        raise DetectionError(f"cannot decode image {path}: {e}; re-download or remove it") from None
    return _read_truncated(path)


def _decode(path: PathLike) -> np.ndarray:
    """Decode through the input door: a FIFO or device named like an image is one error, unread,
    never a hang."""
    from PIL import Image

    with open_input(path, "image", "re-download or remove it") as f, Image.open(f) as im:
        im.load()  # decode here, so a truncated file fails inside the caller's try
        return _to_rgb(im)


def _truncated(error: OSError) -> bool:
    """Whether Pillow's error says the file ended early (rather than holding bad data)."""
    return "truncated" in str(error) or "broken data stream" in str(error)


def _read_truncated(path: PathLike) -> np.ndarray:
    """Decode a truncated file with Pillow's LOAD_TRUNCATED_IMAGES set for this decode only;
    refuse it if too much is missing, else warn and return it."""
    from PIL import ImageFile

    with _TRUNCATED_LOCK:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            image = _decode(path)
        except (OSError, SyntaxError, ValueError) as e:
            raise DetectionError(f"cannot decode image {path}: it is truncated ({e}); "
                                 "re-download or remove it") from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved
    missing = _missing_rows(image)
    height = image.shape[0]
    if missing > MAX_MISSING_ROWS * height:
        raise DetectionError(f"cannot decode image {path}: it is truncated, {missing} of its "
                             f"{height} rows are missing; re-download or remove it")
    warnings.warn(f"image {path} is truncated (the file ends early; {missing} of {height} rows "
                  "filled in by the decoder); read anyway: re-download it to be safe",
                  TruncatedImageWarning, stacklevel=3)
    return image


def _missing_rows(image: np.ndarray) -> int:
    """How many bottom rows of ``image`` [H, W, 3] the decoder filled in: the run of identical
    single-colour rows that ends the image (decoders fill what is missing with one value)."""
    rows = image.reshape(image.shape[0], -1)
    uniform = (rows == rows[-1, 0]).all(axis=1)
    varied = np.flatnonzero(~uniform)
    return len(rows) - 1 - int(varied[-1]) if len(varied) else len(rows)


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


def list_image_files(root: PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files below folder ``root``, and every entry skipped with the reason.

    Returns ``(files, skipped)``: ``files`` are the regular files (or links to them) whose
    suffix (any case) is in `IMAGE_SUFFIXES` -- JPEG, PNG, BMP, TIFF, WebP, PPM/PGM -- sorted
    by their path relative to ``root``; ``skipped`` lists ``(path, reason)`` for every other
    entry below it, in the same order: files of other types (GIF is not accepted: convert it
    to PNG), folders named like images (``x.jpg/``, whose contents are listed as usual),
    broken symbolic links, and links to folders (not followed, so no loops). A folder that is
    missing, or not a folder, is a DetectionError naming it.
    """
    root = Path(root)
    if not root.is_dir():
        raise DetectionError(f"{root}: not a folder of images; check the path")
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for folder, dirs, names in os.walk(root, followlinks=False, onerror=_raise_walk_error):
        dirs.sort()
        for name in dirs:
            path = Path(folder) / name
            if path.is_symlink():
                skipped.append((path, "a symbolic link to a folder (not followed)"))
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                skipped.append((path, "a folder, not an image file (its contents are listed)"))
        for name in names:
            path = Path(folder) / name
            reason = _skip_reason(path)
            if reason is None:
                files.append(path)
            else:
                skipped.append((path, reason))
    order = lambda entry: entry.relative_to(root).as_posix()  # noqa: E731
    files.sort(key=order)
    skipped.sort(key=lambda item: order(item[0]))
    return files, skipped


def _skip_reason(path: Path) -> str | None:
    """Why a non-folder entry is not an accepted image file, or None if it is one."""
    if not path.exists():
        return "a broken symbolic link (its target does not exist)"
    if not path.is_file():
        return "not a regular file"
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return "GIF is not accepted (animation or 256-colour graphics); convert it to PNG"
    if suffix not in IMAGE_SUFFIXES:
        return f"not an image suffix ({', '.join(sorted(IMAGE_SUFFIXES))})"
    return None


def _raise_walk_error(error: OSError) -> None:
    raise DetectionError(f"{error.filename}: cannot list this folder ({error.strerror}); "
                         "check its permissions")
