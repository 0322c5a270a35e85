"""Every corpus image through read_image and selective_search: it works, or one DetectionError
naming the file. Nothing else escapes (no OSError, no OpenCV error, no crash)."""
import warnings

import numpy as np
import pytest
from corpus import EXPECTED, write_corpus

from eval.datasets.images import TruncatedImageWarning, read_image
from eval.errors import DetectionError
from proposals.config import SelectiveSearchConfig
from proposals.selective_search import selective_search


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_read_image(corpus, name):
    path = corpus[name]
    if EXPECTED[name] == "error":
        with pytest.raises(DetectionError) as error:
            read_image(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    truncation = [w for w in caught if issubclass(w.category, TruncatedImageWarning)]
    assert len(truncation) == (name == "truncated")
    assert all(str(path) in str(w.message) for w in truncation)


EXTREME_SHAPES = {"one_by_one": (1, 1), "tall": (2000, 1), "wide": (1, 2000)}


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e == "ok"))
def test_selective_search(corpus, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedImageWarning)
        image = read_image(corpus[name])
    if name in EXTREME_SHAPES:
        assert image.shape[:2] == EXTREME_SHAPES[name]
    try:
        boxes = selective_search(image, SelectiveSearchConfig())
    except DetectionError as e:  # the clear "no proposals" outcome
        assert "proposal" in str(e)
        return
    height, width = image.shape[:2]
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert len(boxes) > 0 and np.isfinite(boxes).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all()
    assert (boxes[:, 3] <= height).all() and (boxes[:, 2:] > boxes[:, :2]).all()
