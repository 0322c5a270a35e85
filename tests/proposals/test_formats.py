"""proposals.formats: each format round-trips, puts the pixels where its toolkit's reader
expects them (checked against that reader's own expression), ranks by score, takes images by
id or by position, validates what it reads, and an imported cache names its source."""
import hashlib
import io
import json
import pickle

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from eval import inputs
from eval.datasets import load_dataset
from eval.errors import DetectionError
from proposals.cache import ProposalCache
from proposals.formats import (FORMATS, Proposals, convert_proposals, read_proposals,
                               write_proposals)
from proposals.formats.common import dataset_ids, rank_scores

IDS = ["000005", "000007", "2008_000001"]
SUFFIX = {"cache": "", "detectron2": ".pkl", "detectron": ".pkl", "mmdet": ".pkl",
          "fast-rcnn": ".mat"}


def _proposals(whole_pixels: bool = True) -> Proposals:
    rng = np.random.default_rng(0)
    boxes = []
    for count in (5, 0, 3):
        corner = rng.uniform(0, 50, (count, 2))
        size = rng.uniform(0, 40, (count, 2))
        box = np.concatenate([corner, corner + size], axis=1)
        boxes.append((np.round(box) if whole_pixels else box).astype(np.float32))
    return Proposals(list(IDS), boxes, "test")


def _write(tmp_path, proposals, fmt):
    path = tmp_path / f"out_{fmt}{SUFFIX[fmt]}"
    write_proposals(proposals, path, fmt)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips(tmp_path, fmt):
    written = _proposals(whole_pixels=fmt in ("detectron", "fast-rcnn"))
    path = _write(tmp_path, written, fmt)
    read = read_proposals(path, ids=IDS)  # the format found from the content
    assert read.ids == IDS
    for got, want in zip(read.boxes, written.boxes):
        assert got.dtype == np.float32 and np.array_equal(got, want)


def test_fast_rcnn_rounds_to_the_pixel_and_detectron_keeps_fractions(tmp_path):
    written = _proposals(whole_pixels=False)
    mat = read_proposals(_write(tmp_path, written, "fast-rcnn"))
    detectron = read_proposals(_write(tmp_path, written, "detectron"), ids=IDS)
    for got, exact, want in zip(mat.boxes, detectron.boxes, written.boxes):
        assert np.array_equal(got, np.rint(want)) and np.allclose(exact, want, atol=1e-5)


def test_the_pixels_are_where_each_reader_expects_them(tmp_path):
    # One box covering pixel columns 2..9 and rows 3..19 (0-based): continuous [2, 3, 10, 20].
    box = np.array([[2, 3, 10, 20]], np.float32)
    proposals = Proposals(["a"], [box], "test")
    inclusive = [[2, 3, 9, 19]]  # Detectron's and Fast R-CNN's roidb: 0-based inclusive
    raw = loadmat(_write(tmp_path, proposals, "fast-rcnn"))["boxes"].ravel()
    assert raw[0].tolist() == [[4, 3, 20, 10]]  # (y1, x1, y2, x2), 1-based inclusive
    assert (raw[0][:, (1, 0, 3, 2)] - 1).tolist() == inclusive  # Fast R-CNN's own expression
    detectron = pickle.loads(_write(tmp_path, proposals, "detectron").read_bytes())
    assert detectron["boxes"][0].tolist() == inclusive and detectron["indexes"] == ["a"]
    detectron2 = pickle.loads(_write(tmp_path, proposals, "detectron2").read_bytes(),
                              encoding="latin1")
    assert detectron2["boxes"][0].tolist() == box.tolist() and detectron2["bbox_mode"] == 0
    mmdet = pickle.loads(_write(tmp_path, proposals, "mmdet").read_bytes())
    assert mmdet[0].tolist() == [[2, 3, 10, 20, 0]] and mmdet[0].dtype == np.float32


def test_written_scores_keep_the_rank_under_detectron2_s_unstable_sort(tmp_path):
    assert rank_scores(4).tolist() == [0, -1, -2, -3]
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [2, 2, 3, 3], [9, 9, 9, 9]], np.float32)
    data = pickle.loads(_write(tmp_path, Proposals([7], [boxes], "t"), "detectron2").read_bytes())
    logits = data["objectness_logits"][0]
    assert logits.dtype == np.float32 and data["ids"] == ["7"]
    order = logits.argsort()[::-1]  # detectron2's load_proposals_into_dataset
    assert np.array_equal(data["boxes"][0][order], boxes)


def _pickle_file(tmp_path, value, name="in.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(value, protocol=2))
    return path


def test_read_files_are_ranked_by_score_ties_in_file_order(tmp_path):
    boxes = np.arange(16, dtype=np.float32).reshape(4, 4)
    logits = np.array([0.1, 0.9, 0.5, 0.9], np.float32)
    expected = boxes[[1, 3, 2, 0]]
    detectron2 = _pickle_file(tmp_path, {"ids": [1], "boxes": [boxes], "objectness_logits":
                                         [logits], "bbox_mode": 0}, "d2.pkl")
    assert np.array_equal(read_proposals(detectron2).boxes[0], expected)
    mmdet = _pickle_file(tmp_path, [np.concatenate([boxes, logits[:, None]], 1)], "mm.pkl")
    assert np.array_equal(read_proposals(mmdet, ids=["x"]).boxes[0], expected)
    # Detectron's own converter writes zero scores: the file's order stays.
    detectron = _pickle_file(tmp_path, {"boxes": [boxes], "scores": [np.zeros(4, np.float32)],
                                        "indexes": [1]}, "d1.pkl")
    assert np.array_equal(read_proposals(detectron).boxes[0], boxes + [0, 0, 1, 1])


def test_detectron2_xywh_boxes_and_detectron_integer_ids(tmp_path):
    xywh = _pickle_file(tmp_path, {"ids": ["a"], "boxes": [np.array([[1., 2, 3, 4]])],
                                   "objectness_logits": [np.zeros(1)], "bbox_mode": 1})
    assert read_proposals(xywh).boxes[0].tolist() == [[1, 2, 4, 6]]
    # wetectron looks VOC's '000005' up as the integer 5: written so, and matched so.
    written = _write(tmp_path, _proposals(), "detectron")
    assert pickle.loads(written.read_bytes())["indexes"] == [5, 7, "2008_000001"]
    assert read_proposals(written).ids == [5, 7, "2008_000001"]
    assert read_proposals(written, ids=["000007"]).ids == ["000007"]


BOX = np.array([[0, 0, 5, 5]], np.float32)


@pytest.mark.parametrize("value, problem", [
    ({"ids": ["a"], "boxes": [np.array([[0, 0, np.nan, 5]])], "objectness_logits": [
        np.zeros(1)]}, "NaN"),
    ({"ids": ["a"], "boxes": [np.array([[5, 0, 4, 5.]])], "objectness_logits": [np.zeros(1)]},
     "x2 < x1"),
    ({"ids": ["a"], "boxes": [np.zeros((2, 3))], "objectness_logits": [np.zeros(2)]},
     r"shape \[2, 3\]"),
    ({"ids": ["a", "b"], "boxes": [BOX], "objectness_logits": [np.zeros(1)]}, "2 ids, 1 boxes"),
    ({"ids": ["a", "a"], "boxes": [BOX, BOX.copy()], "objectness_logits": [np.zeros(1)] * 2},
     "listed twice"),
    ({"ids": ["a"], "boxes": [BOX], "objectness_logits": [np.zeros(2)]}, "2 scores for 1 boxes"),
    ({"ids": ["a"], "boxes": [BOX], "objectness_logits": [np.zeros(1)], "bbox_mode": 2},
     "bbox_mode 2"),
    ({"ids": [1.5], "boxes": [BOX], "objectness_logits": [np.zeros(1)]}, "not a string"),
    ({"ids": ["a"], "boxes": ["0 0 5 5"], "objectness_logits": [np.zeros(1)]},
     "not a NumPy array"),
    ({"ids": ["a", "b"], "boxes": [BOX] * 2, "objectness_logits": [np.zeros(1)] * 2},
     "one and the same array"),
    ({"ids": ["a"], "boxes": [BOX]}, "boxes and ids without scores.*--from"),
    ({"rois": [BOX]}, "not a proposal file of detectron2"),
    ("boxes", "not a proposal file of detectron2"),
])
def test_bad_files_are_one_error_naming_the_file_and_the_problem(tmp_path, value, problem):
    path = _pickle_file(tmp_path, value)
    with pytest.raises(DetectionError, match=problem) as info:
        read_proposals(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_matlab_files_v73_compression_bombs_and_missing_images(tmp_path):
    v73 = tmp_path / "v73.mat"
    v73.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512) + b"\x89HDF\r\n\x1a\n")
    with pytest.raises(DetectionError, match="v7.3.*'-v7'"):
        read_proposals(v73)
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = np.zeros((400_000, 4))  # 12.8 MB of zeros: a few KB compressed
    bomb = tmp_path / "bomb.mat"
    buffer = io.BytesIO()
    savemat(buffer, {"boxes": cells}, do_compression=True)
    bomb.write_bytes(buffer.getvalue())
    assert bomb.stat().st_size < 100_000
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(inputs.LIMITS, "proposals", 10_000_000)
        with pytest.raises(DetectionError, match="inflate to over"):
            read_proposals(bomb, ids=["a"])
    assert read_proposals(bomb, ids=["a"]).boxes[0].shape == (400_000, 4)  # compressed is fine
    with pytest.raises(DetectionError, match="by position.*--gt"):  # no 'images' variable
        read_proposals(bomb)
    with pytest.raises(DetectionError, match="holds 1 images by position, but 2 are listed"):
        read_proposals(bomb, ids=["a", "b"])


def test_an_imported_cache_names_its_source_and_resumes_only_the_same_import(tmp_path):
    source = _write(tmp_path, _proposals(), "detectron2")
    done = convert_proposals(source, tmp_path / "cache", ids=IDS[:2])
    assert (done.source_format, done.target_format, done.images, done.left_out) == (
        "detectron2", "cache", 2, 1)
    cache = ProposalCache.open(tmp_path / "cache")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert (cache.method, cache.params) == ("imported", {"format": "detectron2",
                                                         "sha256": digest})
    assert convert_proposals(source, tmp_path / "cache").already_there == 2  # resumed: + 1
    assert cache.image_ids() == sorted(IDS)
    other = _write(tmp_path, _proposals(whole_pixels=False), "detectron2")
    before = {p.name: p.read_bytes() for p in (tmp_path / "cache" / "boxes").iterdir()}
    with pytest.raises(DetectionError, match="not imported .* with .*sha256"):
        convert_proposals(other, tmp_path / "cache")
    after = {p.name: p.read_bytes() for p in (tmp_path / "cache" / "boxes").iterdir()}
    assert after == before
    with pytest.raises(DetectionError, match="is also an input"):
        convert_proposals(tmp_path / "cache", tmp_path / "cache")


def test_a_positional_import_records_the_order_it_was_given(tmp_path):
    mmdet = _write(tmp_path, _proposals(), "mmdet")
    convert_proposals(mmdet, tmp_path / "a", ids=IDS)
    with pytest.raises(DetectionError, match="order_sha256"):
        convert_proposals(mmdet, tmp_path / "a", ids=IDS[::-1])  # another order: other boxes
    with pytest.raises(DetectionError, match="by position"):
        convert_proposals(mmdet, tmp_path / "b")
    with pytest.raises(DetectionError, match="read by position"):
        convert_proposals(tmp_path / "a", tmp_path / "c.pkl", to="mmdet")


def test_coco_images_go_by_position_in_the_json_s_order(tmp_path):
    images = [{"id": i, "width": 64, "height": 48, "file_name": f"{i}.jpg"} for i in (30, 10, 20)]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "categories": [{"id": 1, "name": "a"}],
                              "annotations": []}))
    dataset = load_dataset(gt)
    assert dataset_ids(dataset, by_position=False) == [10, 20, 30]
    assert dataset_ids(dataset, by_position=True) == [30, 10, 20]  # as pycocotools lists them
    cache = ProposalCache.create(tmp_path / "cache", "selective_search", {})
    for i in (10, 20, 30):
        cache.save(i, np.full((1, 4), i, np.float32))
    convert_proposals(tmp_path / "cache", tmp_path / "mm.pkl", to="mmdet", dataset=dataset)
    assert [a[0, 0] for a in pickle.loads((tmp_path / "mm.pkl").read_bytes())] == [30, 10, 20]
    convert_proposals(tmp_path / "cache", tmp_path / "d2.pkl", to="detectron2", dataset=dataset)
    assert pickle.loads((tmp_path / "d2.pkl").read_bytes())["ids"] == ["10", "20", "30"]


def test_a_cache_s_failed_images_are_named_when_listed(tmp_path):
    cache = ProposalCache.create(tmp_path / "cache", "selective_search", {})
    cache.save("a", BOX)
    cache.record_failure("b", "b.jpg", "cannot decode image")
    with pytest.raises(DetectionError, match="'b' is recorded as failed .cannot decode image"):
        convert_proposals(tmp_path / "cache", tmp_path / "x.mat", ids=["a", "b"])
    with pytest.warns(UserWarning, match="1 image.* recorded as failed"):
        done = convert_proposals(tmp_path / "cache", tmp_path / "x.pkl", to="detectron2")
    assert done.images == 1
