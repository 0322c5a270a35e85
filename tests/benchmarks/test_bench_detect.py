"""benchmarks/bench_detect.py runs the detection path and prints its time per image."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_prints_seconds_per_image(capsys):
    spec = importlib.util.spec_from_file_location("bench_detect",
                                                  ROOT / "benchmarks" / "bench_detect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--members", "1", "--proposals", "6", "--size", "32",
                        "--repeats", "1"]) == 0
    # The line's form and settings, not the time itself: a fast machine prints 0.000.
    out = capsys.readouterr().out
    assert re.search(r"detect: [0-9]+\.[0-9]{3} s per image \(1 members, 6 proposals, 32 px\)",
                     out), out
