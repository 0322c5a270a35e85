"""The propose command (detector.cli.propose): cache contents, resumption after kill -9,
failures, sharding, recall, long names, flags."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proposals.cache import ProposalCache
from detector.cli.propose import main

REPO = Path(__file__).resolve().parents[2]


def write_images(folder: Path, count: int, size=(96, 128)) -> list[Path]:
    """Flat coloured rectangles on a noisy background: quick for selective search."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        image = rng.integers(90, 110, size=size + (3,), dtype=np.uint8)
        image[10 + i % 20:50 + i % 20, 20:70] = (200, 30, 30)
        image[60:90, 80:120] = (20, 40, 220)
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def write_voc_xml(folder: Path, images: list[Path]) -> None:
    """One 'red' object per image (VOC 1-based inclusive coordinates)."""
    for i, path in enumerate(images):
        y1 = 10 + i % 20
        (folder / f"{path.stem}.xml").write_text(
            f"<annotation><filename>{path.name}</filename><size><width>128</width><height>96</height>"
            f"</size><object><name>red</name><bndbox><xmin>21</xmin><ymin>{y1 + 1}</ymin>"
            f"<xmax>70</xmax><ymax>{y1 + 40}</ymax></bndbox></object></annotation>")


def cached(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "boxes").glob("*.npy"))}


def test_folder_to_cache_and_summary(tmp_path, capsys):
    write_images(tmp_path / "imgs", 3)
    assert main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "c")]) == 0
    cache = ProposalCache.open(tmp_path / "c", "selective_search")
    assert cache.image_ids() == ["img000", "img001", "img002"]
    boxes = cache.load("img001")
    assert boxes.dtype == np.float32 and len(boxes) > 0
    assert (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
    out = capsys.readouterr().out
    assert "computed 3 images, 0 failed" in out and "boxes per image" in out
    # A second run finds everything cached and computes nothing.
    assert main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "c")]) == 0
    assert "3 already cached, 0 to compute" in capsys.readouterr().out


def test_dataset_prints_recall(tmp_path, capsys):
    images = write_images(tmp_path / "voc", 4)
    write_voc_xml(tmp_path / "voc", images)
    assert main(["--gt", str(tmp_path / "voc"), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("recall@0.5"))
    assert float(line.split()[1]) == 1.0  # flat rectangles are always found


def test_undecodable_image_is_recorded_and_fails_the_run(tmp_path, capsys):
    write_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "c")]) == 1
    cache = ProposalCache.open(tmp_path / "c")
    assert cache.image_ids() == ["img000", "img001"]
    assert "broken.jpg" in cache.failure("broken")
    out = capsys.readouterr().out
    assert "computed 2 images, 1 failed" in out and "failed broken" in out


def test_other_parameters_on_the_same_cache_are_refused(tmp_path, capsys):
    write_images(tmp_path / "imgs", 1)
    assert main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "c")]) == 0
    code = main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "c"), "--superpixel-scale", "1"])
    assert code == 2
    assert "superpixel_scale" in capsys.readouterr().err


def test_two_workers_and_two_shards_give_the_same_cache(tmp_path, monkeypatch):
    write_images(tmp_path / "imgs", 4)
    assert main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "one")]) == 0
    assert main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        assert main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "shards")]) == 0
        if rank == "1":  # rank 1 took images 1 and 3 only
            assert sorted(cached(tmp_path / "shards")) == ["img001.npy", "img003.npy"]
    assert cached(tmp_path / "one") == cached(tmp_path / "two") == cached(tmp_path / "shards")


def test_resumes_after_kill_9(tmp_path):
    """Kill the tool mid-run; the re-run keeps every finished file and computes only the rest.
    The verdict is on the files alone, wherever the kill lands; waiting for the first file
    makes a kill part-way the likely case (12 images take seconds, the poll looks every 20 ms)."""
    write_images(tmp_path / "imgs", 12, size=(240, 320))
    command = [sys.executable, "-m", "tools.propose", "--images", str(tmp_path / "imgs"),
               "--out", str(tmp_path / "c")]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    boxes = tmp_path / "c" / "boxes"
    deadline = time.monotonic() + 600  # a wait before acting, not a verdict
    while proc.poll() is None and not list(boxes.glob("*.npy")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # nothing if the run has already ended
    proc.wait()
    before = cached(tmp_path / "c")
    for name in before:  # every file that has its final name is whole
        assert np.load(boxes / name).shape[1] == 4
    mtimes = {name: (boxes / name).stat().st_mtime_ns for name in before}
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"{len(before)} already cached, {12 - len(before)} to compute" in run.stdout
    after = cached(tmp_path / "c")
    assert len(after) == 12
    assert all((boxes / name).stat().st_mtime_ns == mtimes[name] for name in before)


def test_any_file_name_works_end_to_end(tmp_path, capsys):
    """A 245-character name and a 94-byte CJK one (its percent-encoded key: 270 characters)."""
    long, cjk = "n" * 245, "猫" * 30  # + ".png": 249 and 94 bytes
    folder = tmp_path / "imgs"
    for stem, path in zip((long, cjk), write_images(folder, 2)):
        path.rename(folder / f"{stem}.png")
    (folder / f"{'b' * 240}.jpg").write_bytes(b"not a jpeg")
    assert main(["--images", str(folder), "--out", str(tmp_path / "c")]) == 1
    cache = ProposalCache.open(tmp_path / "c")
    assert cache.image_ids() == sorted([long, cjk])
    assert cache.failed_ids() == ["b" * 240]
    assert len(cache.load(cjk)) > 0
    assert "computed 2 images, 1 failed" in capsys.readouterr().out
    # Resumed: the long ids are found in the cache, nothing is computed again.
    assert main(["--images", str(folder), "--out", str(tmp_path / "c")]) == 1
    assert "2 already cached, 1 to compute" in capsys.readouterr().out


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 1)", "(default: fast)", "(default: 2.0)", "(default: 500)",
                    "(default: 20.0)", "(default: 200, GoogLeNet's)", "(default: 0.7)"):
        assert default in text


def test_config_with_set_and_split(tmp_path, capsys):
    images = write_images(tmp_path / "voc", 3)
    write_voc_xml(tmp_path / "voc", images)
    (tmp_path / "ids.txt").write_text("img000\nimg002\n")
    (tmp_path / "train.yaml").write_text(
        f"data:\n  gt: {tmp_path / 'voc'}\n  proposals: {tmp_path / 'c'}\n"
        "model:\n  input_size: 32\n  context_pad: 2\n  weights: null\n")
    argv = ["--config", str(tmp_path / "train.yaml"), "--split", str(tmp_path / "ids.txt"),
            "--set", "proposals.selective_search.min_box_side=4"]
    assert main(argv) == 0
    cache = ProposalCache.open(tmp_path / "c")
    assert cache.params["min_box_side"] == 4 and cache.image_ids() == ["img000", "img002"]
    assert "recall@0.5" in capsys.readouterr().out


def test_propose_to_cache_is_the_commands_library(tmp_path):
    """The library call with its defaults fills the same cache as the command."""
    from proposals.config import ProposalConfig
    from proposals.extract import folder_jobs, propose_to_cache

    write_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "anim.gif").write_bytes(b"GIF89a")
    jobs, skipped = folder_jobs(tmp_path / "imgs")
    assert [j.image_id for j in jobs] == ["img000", "img001"]
    assert [p.name for p, _ in skipped] == ["anim.gif"]
    outcomes = propose_to_cache(jobs, tmp_path / "lib", ProposalConfig(), progress=False)
    assert sorted(o.image_id for o in outcomes if not o.error) == ["img000", "img001"]
    assert main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "cli")]) == 0
    assert cached(tmp_path / "lib") == cached(tmp_path / "cli")
