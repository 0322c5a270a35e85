"""The proposal cache: round trip, parameter check, missing images, atomic files, odd ids."""
import json
import os

import numpy as np
import pytest

from eval.errors import DetectionError
from proposals.cache import ProposalCache

PARAMS = {"mode": "fast", "superpixel_scale": 2.0, "max_side": 500, "max_boxes": None}


def test_round_trip_and_listing(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    boxes = np.array([[0, 0, 10, 20], [1.5, 2.5, 3.5, 4.5]], np.float64)
    cache.save("2007_000027", boxes)
    cache.save(42, np.zeros((0, 4)))
    got = ProposalCache.open(tmp_path / "c", "selective_search", PARAMS).load("2007_000027")
    assert got.dtype == np.float32 and np.array_equal(got, boxes.astype(np.float32))
    assert ProposalCache.open(tmp_path / "c").load(42).shape == (0, 4)
    assert cache.image_ids() == ["2007_000027", "42"]
    assert 42 in cache and "nope" not in cache


def test_other_parameters_are_refused(tmp_path):
    ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    other = dict(PARAMS, superpixel_scale=1.0)
    with pytest.raises(DetectionError, match="superpixel_scale"):
        ProposalCache.create(tmp_path / "c", "selective_search", other)
    with pytest.raises(DetectionError, match="another cache folder"):
        ProposalCache.open(tmp_path / "c", "multibox", PARAMS)


def test_missing_image_and_missing_cache(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    with pytest.raises(DetectionError, match="no proposals for image 'x'.*tools/propose.py"):
        cache.load("x")
    cache.record_failure("x", "/data/x.jpg", "cannot decode image")
    with pytest.raises(DetectionError, match="it failed: cannot decode image"):
        cache.load("x")
    cache.save("x", np.ones((1, 4)))  # a later success clears the failure
    assert cache.failure("x") is None
    with pytest.raises(DetectionError, match="not a proposal cache"):
        ProposalCache.open(tmp_path / "elsewhere")


def test_ids_with_slashes_and_dots_stay_inside_the_cache(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    for image_id in ("n01440764/n01440764_10026", "../escape", ".hidden"):
        cache.save(image_id, np.ones((2, 4)))
        assert cache.box_path(image_id).parent == tmp_path / "c" / "boxes"
        assert not cache.box_path(image_id).name.startswith(".")
        assert cache.load(image_id).shape == (2, 4)
    assert set(cache.image_ids()) == {"n01440764/n01440764_10026", "../escape", ".hidden"}


def test_writes_leave_no_temporary_files(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    cache.save("a", np.ones((3, 4)))
    cache.record_failure("b", "b.jpg", "bad")
    files = sorted(p.relative_to(tmp_path / "c").as_posix() for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert files == ["boxes/a.npy", "failed/b.json", "manifest.json"]
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["params"]["superpixel_scale"] == 2.0


def test_corrupt_box_file_is_a_clear_error(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    cache.box_path("a").write_bytes(b"not an npy file")
    with pytest.raises(DetectionError, match="a.npy.*recompute"):
        cache.load("a")


def test_bad_shape_is_refused_on_save(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    with pytest.raises(ValueError):
        cache.save("a", np.ones((3, 5)))


def test_an_algorithm_version_change_is_refused(tmp_path):
    ProposalCache.create(tmp_path / "c", "selective_search", PARAMS, version=1)
    assert ProposalCache.open(tmp_path / "c").version == 1
    with pytest.raises(DetectionError, match="version 1.*version 2"):
        ProposalCache.create(tmp_path / "c", "selective_search", PARAMS, version=2)
    ProposalCache.create(tmp_path / "d", "selective_search", PARAMS)  # unversioned still opens
    assert ProposalCache.open(tmp_path / "d", "selective_search", PARAMS).version is None


LONG = "a" * 245  # a 245-character image name
CJK = "猫の写真" * 8 + "ab"  # 98 bytes of UTF-8; percent-encoded: 290 characters


# A file name's undecodable bytes arrive as surrogate escapes (os.fsdecode).
RAW = os.fsdecode(b"\xff\xfe raw")


@pytest.mark.parametrize("image_id", [LONG, CJK, "p" * 250 + "/x1", RAW, RAW * 60])
def test_long_ids_fit_the_file_system_and_list_back(tmp_path, image_id):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    cache.save(image_id, np.ones((2, 4)))
    cache.record_failure(image_id, "img.jpg", "why")
    for path in (cache.box_path(image_id), cache.failure_path(image_id)):
        assert len(path.name.encode()) <= 255
    assert cache.image_ids() == [image_id] and cache.failed_ids() == [image_id]
    assert ProposalCache.open(tmp_path / "c").load(image_id).shape == (2, 4)


def test_long_ids_sharing_a_prefix_do_not_collide(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    first, second = "q" * 250 + "1", "q" * 250 + "2"
    cache.save(first, np.ones((1, 4)))
    cache.save(second, np.zeros((3, 4)))
    assert cache.box_path(first) != cache.box_path(second)
    assert len(cache.load(first)) == 1 and len(cache.load(second)) == 3
    assert cache.image_ids() == [first, second]


def test_short_keys_are_unchanged(tmp_path):
    """Caches written before shortened keys existed keep reading."""
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    assert cache.box_path("dir/img 1").name == "dir%2Fimg%201.npy"
    assert cache.box_path("b" * 200).name == "b" * 200 + ".npy"
    assert "%%" in cache.box_path("b" * 201).name


def test_failed_ids_and_failure(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    cache.record_failure(7, "/data/7.jpg", "cannot decode image /data/7.jpg")
    cache.record_failure("x/y", "/data/x/y.png", "no proposals")
    assert cache.failed_ids() == ["7", "x/y"]
    assert cache.failure(7) == "cannot decode image /data/7.jpg"
    cache.save(7, np.ones((1, 4)))  # a later success clears the failure
    assert cache.failed_ids() == ["x/y"] and cache.failure(7) is None


def test_partition_splits_failed_from_never_computed(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    cache.save(1, np.ones((1, 4)))
    cache.record_failure(2, "/data/2.jpg", "cannot decode")
    cache.record_failure("long" * 80, "/data/long.jpg", "cannot decode")  # a shortened key
    ids = [3, "long" * 80, 1, 2, "never"]
    assert cache.partition(ids) == (["long" * 80, 2], [3, "never"])  # in the given order


def test_unreadable_manifest_is_a_clear_error(tmp_path):
    ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    (tmp_path / "c" / "manifest.json").write_text("{not json")
    for call in (lambda: ProposalCache.open(tmp_path / "c"),
                 lambda: ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)):
        with pytest.raises(DetectionError, match="manifest.json: invalid JSON.*compute it again"):
            call()


@pytest.mark.parametrize("text, said", [
    ("[" * 200_000, "nested too deeply"),
    ('{"a":' * 150_000, "nested too deeply"),
    ('{"format": 1, "method": "selective_search", "params": {}, "version": ' + "9" * 5000 + "}",
     "more than 4300 digits"),
    ('{"format": 1, "method": ["selective_search"], "params": {}}', "not a cache manifest"),
    ('{"format": 1, "method": "selective_search", "params": "fast"}', "not a cache manifest"),
    ("[]", "not a cache manifest"),
])
def test_a_hostile_manifest_is_one_error(tmp_path, text, said):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text(text)
    with pytest.raises(DetectionError, match=f"manifest.json: .*{said}.*compute it again"):
        ProposalCache.open(tmp_path / "c")


def npy_header(shape, descr="<f4") -> bytes:
    """The first bytes of a version 1.0 .npy file declaring ``shape`` (data not included)."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


@pytest.mark.parametrize("data, said", [
    (b"", "not a readable .npy file"),
    (npy_header((100_000_000_000, 4)) + bytes(64), "says 100000000000 boxes"),
    (npy_header((2, 4)) + bytes(16), "says 2 boxes"),  # cut short
    (npy_header((2, 4), "<f8") + bytes(64), "expected float32 \\[N, 4\\].*float64"),
    (npy_header((2, 5)) + bytes(40), "expected float32 \\[N, 4\\]"),
    (npy_header((8,)) + bytes(32), "expected float32 \\[N, 4\\]"),
    (npy_header((1, 4), "|O") + bytes(8), "expected float32"),
    (npy_header((-1, 4)), "negative shape"),
])
def test_a_damaged_box_file_is_one_error_before_allocation(tmp_path, data, said):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    cache.box_path("a").write_bytes(data)
    with pytest.raises(DetectionError, match=f"a.npy: .*{said}.*tools/propose.py"):
        cache.load("a")


def test_rows_that_are_not_boxes_are_dropped_with_one_warning(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    nan, inf = float("nan"), float("inf")
    boxes = np.array([[0, 0, 5, 5], [nan, 0, 5, 5], [0, 0, inf, 5], [5, 0, 1, 5], [0, 5, 5, 1],
                      [1, 1, 1, 1], [2, 2, 8, 9]], np.float32)
    cache.save("a", boxes)
    with pytest.warns(UserWarning, match=r"a.npy: 4 of 7 cached boxes .* dropped") as record:
        got = cache.load("a")
    assert len(record) == 1
    np.testing.assert_array_equal(got, boxes[[0, 5, 6]])


def test_a_fortran_order_file_reads_as_its_rows(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    boxes = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(cache.box_path("a"), boxes)
    np.testing.assert_array_equal(cache.load("a"), boxes)


def test_a_corrupt_failure_record_or_id_file_names_the_file(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    cache.failure_path("a").write_text('{"reason": ["no"]}')
    with pytest.raises(DetectionError, match="a.json: not a failure record"):
        cache.load("a")
    cache.failure_path("a").write_text('[' * 100_000)
    with pytest.raises(DetectionError, match="a.json: JSON nested too deeply"):
        cache.failure("a")


def _create_after_barrier(roots, scale, barrier, results):
    """One of two racers: for each root, wait for the other, then try to create the cache."""
    for root in roots:
        barrier.wait(timeout=120)  # a guard: the other racer died
        try:
            ProposalCache.create(root, "selective_search", dict(PARAMS, superpixel_scale=scale))
            results.put((root.name, "ok"))
        except DetectionError:
            results.put((root.name, "refused"))


def test_concurrent_creation_with_other_parameters_has_one_winner(tmp_path):
    """Two processes released together on a new cache: exactly one may create it, every time."""
    import multiprocessing

    # forkserver: the racers fork from a fresh server process, never from this one, which may
    # hold torch's and OpenCV's threads (a fork copies their locks, held or not). The two
    # racers meet at a barrier before each of the 10 caches.
    context = multiprocessing.get_context("forkserver")
    roots = [tmp_path / f"c{trial}" for trial in range(10)]  # the old check: both won ~40%
    barrier, results = context.Barrier(2), context.Queue()
    racers = [context.Process(target=_create_after_barrier, args=(roots, scale, barrier, results))
              for scale in (1.0, 2.0)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(300)  # a guard against a hang; the verdict is on what they did
    assert [racer.exitcode for racer in racers] == [0, 0]
    outcomes = {root.name: [] for root in roots}
    for _ in range(2 * len(roots)):
        name, outcome = results.get(timeout=60)
        outcomes[name].append(outcome)
    assert all(sorted(both) == ["ok", "refused"] for both in outcomes.values()), outcomes


def test_boxes_past_the_image_they_are_used_with_are_one_error(tmp_path):
    """A photo replaced under a cached id: its old boxes reach past the new, smaller image."""
    cache = ProposalCache.create(tmp_path / "c", "selective_search", PARAMS)
    cache.save("a", np.array([[0, 0, 500, 375], [10, 10, 60, 40]], np.float32))
    assert cache.load("a", image_size=(500, 375)).shape == (2, 4)  # exactly the image: fits
    assert cache.load("a").shape == (2, 4)  # no image to check against
    with pytest.raises(DetectionError, match=r"a.npy: its boxes span \(0, 0\) to \(500, 375\), "
                                             r"past the 64 x 48 image.*tools/propose.py"):
        cache.load("a", image_size=(64, 48))
    cache.save("b", np.array([[-8, 0, 20, 20]], np.float32))
    with pytest.raises(DetectionError, match="b.npy: its boxes span \\(-8, 0\\)"):
        cache.load("b", image_size=(64, 48))
