"""eval.datasets.images: truncated files, EXIF orientation, folder listings."""
import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from eval.datasets.images import TruncatedImageWarning, list_image_files, read_image
from eval.errors import DetectionError


def photo(height: int = 96, width: int = 128) -> np.ndarray:
    """A gradient with noise, RGB uint8 [H, W, 3] (enough entropy that a JPEG has many rows
    of data)."""
    yy, xx = np.mgrid[:height, :width]
    noise = np.random.default_rng(0).integers(0, 40, size=(height, width))
    return np.stack([xx * 2, yy * 2, noise], axis=-1).clip(0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90, **save_args)
    return buffer.getvalue()


def test_slightly_truncated_jpeg_reads_with_a_warning_naming_it(tmp_path):
    path = tmp_path / "cut.jpg"
    whole = jpeg_bytes(photo())
    path.write_bytes(whole[:-20])
    with pytest.warns(TruncatedImageWarning, match="cut.jpg"):
        image = read_image(path)
    (tmp_path / "whole.jpg").write_bytes(whole)
    reference = read_image(tmp_path / "whole.jpg")
    assert image.shape == reference.shape
    assert np.abs(image.astype(int) - reference).mean() < 2  # nearly all of it decoded
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # Pillow's global is not left set


def test_jpeg_cut_in_half_is_refused_naming_it(tmp_path):
    path = tmp_path / "half.jpg"
    whole = jpeg_bytes(photo())
    path.write_bytes(whole[: len(whole) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not read with a warning
        with pytest.raises(DetectionError, match=r"half\.jpg.*truncated.*rows are missing"):
            read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_handled_too(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(photo()).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DetectionError, match="p.png"):
        read_image(path)


def test_exif_orientation_is_never_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "r.jpg"
    path.write_bytes(jpeg_bytes(photo(40, 60), exif=exif.tobytes()))
    assert read_image(path).shape == (40, 60, 3)
    from PIL import ImageOps  # the EXIF really says to rotate it for display
    assert ImageOps.exif_transpose(Image.open(path)).size == (40, 60)  # (width, height)


def test_list_image_files_reports_what_it_skips(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "x.jpg").mkdir()
    for name in ("b/2.PNG", "a.jpg", "x.jpg/inner.webp", "c.tiff", "anim.gif", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "link.png").symlink_to(tmp_path / "a.jpg")
    files, skipped = list_image_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [
        "a.jpg", "b/2.PNG", "c.tiff", "link.png", "x.jpg/inner.webp"]
    reasons = {p.name: why for p, why in skipped}
    assert set(reasons) == {"anim.gif", "notes.txt", "gone.jpg", "loop", "x.jpg"}
    assert "GIF" in reasons["anim.gif"] and "broken" in reasons["gone.jpg"]
    assert "folder" in reasons["x.jpg"] and "not followed" in reasons["loop"]


def test_list_image_files_of_a_missing_folder(tmp_path):
    with pytest.raises(DetectionError, match="nowhere"):
        list_image_files(tmp_path / "nowhere")
