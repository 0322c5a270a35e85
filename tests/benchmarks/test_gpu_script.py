"""benchmarks/gpu.py --small end to end on CPU: every section present, positive figures that
agree with each other, and the run's description in the JSON."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RACCOON = ROOT.parent / "shared" / "data" / "raccoon"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load(name: str, path: Path):
    """A module from a file (benchmarks/ is not a package), registered under ``name``:
    dataclasses look their module up while it is executed, and gpu.py imports gpu_sections."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu():
    """The script as a module, with its sections module."""
    load("gpu_sections", ROOT / "benchmarks" / "gpu_sections.py")
    yield load("gpu_benchmark", ROOT / "benchmarks" / "gpu.py")
    del sys.modules["gpu_benchmark"], sys.modules["gpu_sections"]


@pytest.fixture(scope="module")
def report(gpu, tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu") / "figures.json"
    # --workers 0: two worker pools would start here, ~15 s on a busy 2-core machine; the pool
    # itself is tested in tests/detector/test_prefetch.py.
    assert gpu.main(["--small", "--workers", "0", "--peak-tflops", "1", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def rows(report: dict, section: str) -> dict[str, dict]:
    return {r["setting"]: r for r in report["sections"][section]}


def test_every_section_has_positive_figures(gpu, report):
    expected = set(gpu.SECTIONS) if RACCOON.is_dir() else {"classification", "ensemble",
                                                           "training", "compile"}
    assert set(report["sections"]) == expected
    assert report["sections"]["compile"] == []  # skipped with --small: minutes on a CPU
    assert any("compile: skipped" in note for note in report["notes"])
    for section in expected - {"compile"}:
        assert report["sections"][section], f"{section} is empty: {report['notes']}"
        assert all(r["value"] > 0 for r in report["sections"][section]), section
    meta = report["meta"]
    assert meta["small"] and meta["torch"] and meta["date"] and meta["device"].startswith("CPU")
    assert meta["peak_tflops"] == 1 and meta["peak_source"] == "--peak-tflops"


def test_classification_rows_cover_modes_and_batches_with_consistent_flops(gpu, report):
    got = rows(report, "classification")
    size = gpu.SMALL.input_size
    assert set(got) == {f"{mode} b{batch}" for mode in gpu.MODES[:-1]
                        for batch in gpu.SMALL.batches}
    for r in got.values():  # 3.0 GFLOP per 224 px region, scaled by area; peak is 1 TFLOP/s
        assert r["tflops"] == pytest.approx(r["value"] * 3.0 * (size / 224) ** 2 / 1e3)
        assert r["peak_share"] == pytest.approx(r["tflops"])


def test_ensemble_paths_agree_and_training_has_both_precisions(report):
    sections = sys.modules["gpu_sections"]
    modes = {setting.split(" b")[0] for setting in rows(report, "ensemble")}
    assert modes == set(sections.ENSEMBLE_PATHS)
    gaps = [n for n in report["notes"] if "mean softmax within" in n]
    assert len(gaps) == len(modes)
    assert all(float(n.split("within ")[1].split()[0]) < 0.05 for n in gaps)  # bf16 rounding
    assert {setting.split(",")[0] for setting in rows(report, "training")} == {
        "fp32", "bf16 autocast (tools/train.py on CUDA)"}


@pytest.mark.skipif(not RACCOON.is_dir(), reason=f"{RACCOON} not found")
def test_pipeline_ratio_is_the_pipeline_over_its_slower_part(report):
    got = list(rows(report, "pipeline").values())
    proposals, classification, pipeline, ratio = (r["value"] for r in got)
    assert ratio == pytest.approx(pipeline / min(proposals, classification))
    agreement = rows(report, "parity")
    assert {s.split(": ")[1] for s in agreement} == set(sys.modules["gpu_sections"].PARITY_PATHS)
    assert all(0 < r["value"] <= 100 and r["unit"] == "%" for r in agreement.values())


@pytest.mark.skipif(not RACCOON.is_dir(), reason=f"{RACCOON} not found")
def test_held_out_images_read_a_given_proposal_cache(gpu, tmp_path):
    from proposals.cache import ProposalCache

    sections = sys.modules["gpu_sections"]
    probe = sections.HeldOut(RACCOON.parent, 2, None, 0, str(tmp_path / "unused"))
    first = probe.dataset.images[0].image_id
    cache = ProposalCache.create(tmp_path / "given", "selective_search", {})
    cache.save(first, np.array([[1, 2, 30, 40]], np.float32))
    test = sections.HeldOut(RACCOON.parent, 2, None, 0, str(tmp_path / "unused"),
                            str(tmp_path / "given"))
    assert test.proposals(first).tolist() == [[1, 2, 30, 40]]  # read, not computed
    assert not (tmp_path / "unused").exists()
