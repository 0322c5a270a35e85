"""The propose command on bad input: the bad-image corpus as a folder (every image cached or
recorded as failed, skipped entries reported, exit 1 with a summary) and every flag that does
not apply or cannot work (one error line naming it, before any work, no partial file)."""
from pathlib import Path

import numpy as np
import pytest
from _check import assert_no_partial_files, assert_one_line_error, files_below
from corpus import EXPECTED, SKIPPED_IN_FOLDERS, write_corpus
from PIL import Image

from detector.cli.propose import main
from proposals.cache import ProposalCache

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "raccoon_cpu.yaml"


def test_corpus_folder(tmp_path, capsys):
    paths = write_corpus(tmp_path / "corpus")
    assert main(["--images", str(tmp_path / "corpus"), "--out", str(tmp_path / "c")]) == 1
    out = capsys.readouterr().out
    cache = ProposalCache.open(tmp_path / "c")
    read = {n for n in EXPECTED if n not in SKIPPED_IN_FOLDERS}
    ok = {paths[n].stem for n in read if EXPECTED[n] == "ok"}
    bad = {paths[n].stem for n in read if EXPECTED[n] == "error"}
    assert set(cache.image_ids()) == ok
    assert set(cache.failed_ids()) == bad
    for stem in bad:
        assert str(tmp_path / "corpus") in cache.failure(stem)  # names the file
    for name in SKIPPED_IN_FOLDERS:
        assert f"skipped {paths[name]}: " in out
    assert f"computed {len(ok)} images, {len(bad)} failed" in out
    assert ("1 images were read with a warning (truncated files); e.g. image "
            f"{paths['truncated']} is truncated") in out
    assert f"{len(ok)}/{len(read)} images have proposals" in out
    assert not list((tmp_path / "c").rglob("*.tmp"))


def write_folder(root: Path) -> Path:
    (root / "imgs").mkdir(parents=True)
    Image.fromarray(np.full((40, 50, 3), 100, np.uint8)).save(root / "imgs" / "a.png")
    return root / "imgs"


# argv (with IMGS, OUT and FILE standing for a folder of images, the output folder and an
# existing plain file) and what the error line must name.
FLAG_CASES = {
    "config_with_multibox": (["--config", CONFIG, "--multibox", "mb.pt"], ["--multibox"]),
    "config_with_no_ss": (["--config", CONFIG, "--no-selective-search"],
                          ["--no-selective-search"]),
    "config_with_gt": (["--config", CONFIG, "--gt", "IMGS"], ["--gt"]),
    "config_with_images": (["--config", CONFIG, "--images", "IMGS"], ["--images"]),
    "config_with_mode": (["--config", CONFIG, "--mode", "quality"], ["--mode"]),
    "config_with_scale": (["--config", CONFIG, "--superpixel-scale", "1"],
                          ["--superpixel-scale"]),
    "config_bad_set_key": (["--config", CONFIG, "--set", "proposals.nope=1"], [CONFIG, "nope"]),
    "config_missing": (["--config", "nope.yaml"], ["nope.yaml"]),
    "config_multibox_task": (["--config", REPO / "configs" / "raccoon_multibox_cpu.yaml"],
                             ["multibox", "--config"]),
    "set_without_config": (["--images", "IMGS", "--out", "OUT", "--set", "a=1"], ["--set"]),
    "classes_without_gt": (["--images", "IMGS", "--out", "OUT", "--classes", "c.txt"],
                           ["--classes", "--gt"]),
    "split_without_gt": (["--images", "IMGS", "--out", "OUT", "--split", "test"],
                         ["--split", "--gt"]),
    "workers_0": (["--images", "IMGS", "--out", "OUT", "--workers", "0"], ["--workers"]),
    "scale_0": (["--images", "IMGS", "--out", "OUT", "--superpixel-scale", "0"],
                ["--superpixel-scale"]),
    "scale_negative": (["--images", "IMGS", "--out", "OUT", "--superpixel-scale", "-1"],
                       ["--superpixel-scale"]),
    "scale_nan": (["--images", "IMGS", "--out", "OUT", "--superpixel-scale", "nan"],
                  ["--superpixel-scale"]),
    "max_side_negative": (["--images", "IMGS", "--out", "OUT", "--max-side", "-1"],
                          ["--max-side"]),
    "max_boxes_negative": (["--images", "IMGS", "--out", "OUT", "--max-boxes", "-1"],
                           ["--max-boxes"]),
    "min_box_side_negative": (["--images", "IMGS", "--out", "OUT", "--min-box-side", "-2"],
                              ["--min-box-side"]),
    "seed_negative": (["--images", "IMGS", "--out", "OUT", "--seed", "-1"], ["--seed"]),
    "multibox_top_0": (["--images", "IMGS", "--out", "OUT", "--multibox", "mb.pt",
                        "--multibox-top", "0"], ["--multibox-top"]),
    "multibox_nms_2": (["--images", "IMGS", "--out", "OUT", "--multibox", "mb.pt",
                        "--multibox-nms", "2"], ["--multibox-nms"]),
    "multibox_top_without_multibox": (["--images", "IMGS", "--out", "OUT", "--multibox-top",
                                       "5"], ["--multibox-top", "--multibox"]),
    "no_ss_without_multibox": (["--images", "IMGS", "--out", "OUT", "--no-selective-search"],
                               ["--no-selective-search", "--multibox"]),
    "multibox_missing_file": (["--images", "IMGS", "--out", "OUT", "--multibox", "mb.pt"],
                              ["mb.pt"]),
    "no_out": (["--images", "IMGS"], ["--out"]),
    "no_input": (["--out", "OUT"], ["--gt", "--images"]),
    "out_is_a_file": (["--images", "IMGS", "--out", "FILE"], ["--out", "FILE"]),
    "images_not_a_folder": (["--images", "FILE", "--out", "OUT"], ["FILE"]),
    "images_without_images": (["--images", "EMPTY", "--out", "OUT"], ["EMPTY"]),
    "ids_collide": (["--images", "TWINS", "--out", "OUT"], ["a.jpg", "a.png"]),
    "gt_missing": (["--gt", "nothing.json", "--out", "OUT"], ["nothing.json"]),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_flag_is_refused(tmp_path, capsys, case):
    argv, names = FLAG_CASES[case]
    images = write_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "anim.gif").write_bytes(b"GIF89a")
    (tmp_path / "twins").mkdir()
    for name in ("a.jpg", "a.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "twins" / name)
    (tmp_path / "file").write_text("x")
    where = {"IMGS": images, "OUT": tmp_path / "out", "FILE": tmp_path / "file",
             "EMPTY": tmp_path / "empty", "TWINS": tmp_path / "twins"}
    argv = [where.get(str(a), a) for a in argv]
    names = [where.get(str(n), n) for n in names]
    before = files_below(tmp_path)
    assert_one_line_error(capsys, main, argv, *names)
    assert_no_partial_files(before, tmp_path)
