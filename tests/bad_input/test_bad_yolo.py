"""A bad YOLO label line, given to the commands: one error line naming the label file and the
line, exit 2, no traceback (the reader's cases: tests/eval/test_yolo.py)."""
import pytest

from _check import assert_one_line_error
from _yolo import tiny_yolo
from detector.cli.evaluate import main as evaluate_main
from detector.cli.propose import main as propose_main


@pytest.mark.parametrize("line, named", [("0 0.5 0.5 0.2", "4 fields"),
                                         ("7 0.5 0.5 0.2 0.2", "class 7 is not a class index")])
def test_bad_label_line_is_one_error_line(tmp_path, capsys, line, named):
    data = tiny_yolo(tmp_path)
    label = tmp_path / "labels" / "val" / "val1.txt"
    label.write_text(label.read_text() + line + "\n")
    (tmp_path / "dets.json").write_text("[]")
    assert_one_line_error(capsys, evaluate_main, ["--gt", data, "--split", "val", "--detections",
                                                  tmp_path / "dets.json"],
                          f"{label} line 3", named)
    assert_one_line_error(capsys, propose_main, ["--gt", data, "--split", "val", "--out",
                                                 tmp_path / "cache"], f"{label} line 3", named)
