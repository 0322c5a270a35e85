"""The bad-image corpus: every kind of image file a user's folder can hold, generated at test time.

    from corpus import EXPECTED, SKIPPED_IN_FOLDERS, write_corpus
    paths = write_corpus(tmp_path / "images")     # name -> path, all in that folder

``EXPECTED[name]`` says what reading the file (`eval.datasets.read_image`) and proposing on
it must do: "ok" (decoded, proposals computed or a clear "no proposals" outcome) or "error"
(refused with one DetectionError naming the file). ``SKIPPED_IN_FOLDERS`` holds the entries a
folder listing (`eval.datasets.images.list_image_files`) skips and reports instead of
reading: the GIF (not accepted), the folder named ``x.jpg`` and the broken symlink ``gone.jpg``.

Small images (at most 2000 pixels on a side, one row or column for the extreme ones), fixed
seeds: the same bytes on every run, written in well under a second.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXPECTED: dict[str, str] = {
    "corrupt": "error",         # random bytes named .jpg
    "truncated": "ok",          # a JPEG missing its last 20 bytes: read, with a warning
    "half": "error",            # a JPEG cut in half: half the picture is missing
    "empty": "error",           # zero bytes
    "cmyk": "ok",               # CMYK JPEG
    "png16": "ok",              # 16-bit grayscale PNG
    "rgba": "ok",               # RGBA PNG
    "palette": "ok",            # palette (P mode) PNG
    "one_by_one": "ok",         # 1 x 1
    "tall": "ok",               # 1 wide, 2000 tall
    "wide": "ok",               # 2000 wide, 1 tall
    "exif_rotated": "ok",       # JPEG with EXIF orientation 6
    "gif": "ok",                # read_image reads it; folder listings skip it
    "webp": "ok",
    "tiff": "ok",
    "bomb": "error",            # a few bytes declaring 40000 x 40000 pixels
    "folder": "error",          # a folder named x.jpg
    "broken_link": "error",     # a symlink gone.jpg to a file that does not exist
}

SKIPPED_IN_FOLDERS: set[str] = {"gif", "folder", "broken_link"}

FILE_NAMES: dict[str, str] = {
    "corrupt": "corrupt.jpg", "truncated": "truncated.jpg", "half": "half.jpg",
    "empty": "empty.jpg", "cmyk": "cmyk.jpg", "png16": "png16.png", "rgba": "rgba.png",
    "palette": "palette.png", "one_by_one": "one_by_one.png", "tall": "tall_1x2000.png",
    "wide": "wide_2000x1.png", "exif_rotated": "exif6.jpg", "gif": "anim.gif",
    "webp": "webp_photo.webp", "tiff": "tiff_photo.tiff", "bomb": "bomb.png", "folder": "x.jpg",
    "broken_link": "gone.jpg",
}


def photo(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A textured RGB uint8 [H, W, 3] picture with a few flat regions (selective search finds
    boxes in it quickly)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([xx * 255 // max(width, 1), yy * 255 // max(height, 1),
                      ((xx // 16 + yy // 16) % 2) * 200], axis=-1)
    image[height // 4: height // 2, width // 4: width // 2] = (220, 40, 40)
    noise = rng.integers(-12, 13, size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray, **save_args) -> bytes:
    """``image`` (RGB uint8 [H, W, 3]) encoded as a JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90, **save_args)
    return buffer.getvalue()


def bomb_png(width: int = 40000, height: int = 40000) -> bytes:
    """A valid PNG signature and header declaring ``width`` x ``height`` RGB pixels, with one
    empty data chunk: far beyond Pillow's decompression-bomb limit, about 70 bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def write_corpus(folder: Path) -> dict[str, Path]:
    """Write every corpus entry into ``folder`` (created); returns name -> path, one per
    `EXPECTED` name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / file_name for name, file_name in FILE_NAMES.items()}
    picture = photo()
    jpeg = jpeg_bytes(picture)

    paths["corrupt"].write_bytes(np.random.default_rng(1).bytes(4096))
    paths["truncated"].write_bytes(jpeg[:-20])
    paths["half"].write_bytes(jpeg[: len(jpeg) // 2])
    paths["empty"].write_bytes(b"")
    Image.fromarray(picture).convert("CMYK").save(paths["cmyk"], "JPEG", quality=90)
    grey16 = (picture[:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(grey16).save(paths["png16"])  # mode I;16
    alpha = np.full(picture.shape[:2] + (1,), 128, np.uint8)
    Image.fromarray(np.concatenate([picture, alpha], axis=2), "RGBA").save(paths["rgba"])
    Image.fromarray(picture).quantize(colors=16).save(paths["palette"])
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(paths["one_by_one"])
    Image.fromarray(photo(2000, 1, seed=2)).save(paths["tall"])
    Image.fromarray(photo(1, 2000, seed=3)).save(paths["wide"])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    paths["exif_rotated"].write_bytes(jpeg_bytes(picture, exif=exif.tobytes()))
    frames = [Image.fromarray(photo(seed=s)).quantize(colors=32) for s in (4, 5)]
    frames[0].save(paths["gif"], save_all=True, append_images=frames[1:], duration=100)
    Image.fromarray(picture).save(paths["webp"], "WEBP", quality=80)
    Image.fromarray(picture).save(paths["tiff"], "TIFF")
    paths["bomb"].write_bytes(bomb_png())
    paths["folder"].mkdir(exist_ok=True)
    if not paths["broken_link"].is_symlink():
        paths["broken_link"].symlink_to(folder / "no_such_file.jpg")
    return paths
