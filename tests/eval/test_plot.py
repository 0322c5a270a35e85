"""eval.plot: PR figures that name their IoU, stay readable with many classes (mean, best and
worst curves and a table of every AP) and label every class when there are few."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from eval.results import EvalResult

pytest.importorskip("matplotlib")
from eval import plot  # noqa: E402  (needs matplotlib, the `plot` extra)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")


@pytest.fixture
def figures():
    """Figures made in a test, closed after it."""
    import matplotlib.pyplot as plt

    made = []
    yield lambda result: made.append(plot.curves_figure(result)) or made[-1]
    for fig in made:
        plt.close(fig)


def voc_result(count: int, protocol: str = "voc", seed: int = 0) -> EvalResult:
    """``count`` classes with distinct APs and random VOC-style (recall, precision) curves;
    one class more without ground truth (AP None, no curve)."""
    rng = np.random.default_rng(seed)
    per_class, curves = {}, {}
    for k, ap in enumerate(rng.permutation(count) / count):
        name = f"class{k:02d}"
        hits = rng.random(30) < ap + 0.05
        recall = np.cumsum(hits) / 40
        curves[name] = (recall, np.cumsum(hits) / np.arange(1, 31))
        per_class[name] = float(ap)
    per_class["no_gt"] = None
    return EvalResult(protocol, float(np.mean([v for v in per_class.values() if v is not None])),
                      per_class, curves=curves)


def pr_axes(fig):
    return fig.axes[0]


def legend_labels(fig) -> list[str]:
    return [t.get_text() for t in pr_axes(fig).get_legend().get_texts()]


def table_rows(fig) -> list[tuple[str, ...]]:
    """The table panel's class rows as (name, AP[, AP@[.5:.95]]) strings, headers left out."""
    texts = [t.get_text() for ax in fig.axes[1:] for t in ax.texts]
    rows = [re.fullmatch(r"\s*\d+ (.*?)\s+(n/a|[\d.]+)(?:\s+([\d.]+))?", line)
            for text in texts for line in text.splitlines()]
    return [tuple(g for g in row.groups() if g is not None) for row in rows if row]


def test_seventy_classes_show_mean_best_and_worst_and_a_table_of_all(figures):
    result = voc_result(70)
    fig = figures(result)
    assert len(pr_axes(fig).lines) == 7  # mean + 3 best + 3 worst, not 70
    ranked = sorted((n for n in result.per_class if result.per_class[n] is not None),
                    key=lambda n: -result.per_class[n])
    labels = legend_labels(fig)
    assert labels[0] == "mean of 70 classes"
    assert [label.split(" (")[0] for label in labels[1:]] == (
        [f"best {n}" for n in ranked[:3]] + [f"worst {n}" for n in ranked[-3:]])
    assert labels[1].endswith(f"(AP {100 * result.per_class[ranked[0]]:.1f})")

    rows = table_rows(fig)
    assert len(rows) == 71  # every class, the one without ground truth too
    assert [name for name, _ in rows[:70]] == ranked  # best first
    for name, shown in rows[:70]:
        assert shown == f"{100 * result.per_class[name]:.1f}"
    assert rows[70] == ("no_gt", "n/a")
    assert "IoU 0.5" in pr_axes(fig).get_title() and "mAP" in pr_axes(fig).get_title()


@pytest.mark.parametrize("count", [1, 4, 10])
def test_up_to_ten_classes_each_gets_a_labelled_curve(figures, count):
    result = voc_result(count, protocol="voc07")
    fig = figures(result)
    assert len(fig.axes) == 1  # no table: the legend says it all
    labels = legend_labels(fig)
    for name, (recall, precision) in result.curves.items():
        assert f"{name} (AP {100 * result.per_class[name]:.1f})" in labels
    assert len(pr_axes(fig).lines) == count + (count > 1)  # and the mean, from two classes
    assert "IoU 0.5" in pr_axes(fig).get_title() and "11-point" in pr_axes(fig).get_title()


@pytest.mark.parametrize("protocol, words", [("voc", "IoU 0.5 (VOC, all-point AP)"),
                                             ("ilsvrc", "IoU 0.5, lower for boxes under ~24 px"),
                                             ("coco", "IoU 0.5 (COCO")])
def test_the_title_names_the_iou(figures, protocol, words):
    result = voc_result(3, protocol)
    if protocol == "coco":
        result.stats = [0.25, 0.5] + [0.0] * 10
    title = pr_axes(figures(result)).get_title()
    assert words in title and "curves at" not in title
    if protocol == "coco":
        assert "AP@[.5:.95] 25.00, AP50 50.00" in title


def test_interpolated_is_the_precision_envelope_at_101_recall_points():
    """A hand-made curve: the best precision at any recall >= r, 0 past the last recall."""
    curve = plot.interpolated(np.array([0.25, 0.5, 0.5, 0.75]), np.array([1.0, 0.5, 0.7, 0.6]))
    expected = np.zeros(101)
    expected[:26], expected[26:51], expected[51:76] = 1.0, 0.7, 0.6
    np.testing.assert_allclose(curve, expected)
    np.testing.assert_array_equal(plot.interpolated(np.zeros(0), np.zeros(0)), np.zeros(101))


@needs_shared
def test_coco_curves_are_at_iou_half_and_their_mean_is_ap50(figures):
    """cocoapi's evaluation vector (80 categories): the drawn mean curve's area is
    pycocotools' AP50 (stats[1]), each class's label and table row give its AP50 from its
    curve, and the table also gives its AP@[.5:.95]."""
    from eval.evaluate import evaluate_files

    result = evaluate_files(SHARED / "coco_eval/instances_val2014_100.json",
                            SHARED / "coco_eval/instances_val2014_fakebbox100_results.json")
    fig = figures(result)
    mean = pr_axes(fig).lines[0].get_ydata()
    assert abs(np.mean(mean) - result.stats[1]) < 1e-12
    assert len(pr_axes(fig).lines) == 7 and "IoU 0.5 (COCO" in pr_axes(fig).get_title()
    rows = table_rows(fig)
    assert sorted(row[0] for row in rows) == sorted(result.per_class)
    for name, *shown in rows:
        if result.per_class[name] is None:
            assert shown == ["n/a"]
        else:
            assert shown == [f"{100 * np.mean(result.curves[name][1]):.1f}",
                             f"{100 * result.per_class[name]:.1f}"]
    assert sum(label.startswith("best ") and "AP50" in label for label in legend_labels(fig)) == 3


def test_plot_curves_writes_the_figure(tmp_path):
    plot.plot_curves(voc_result(30), tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot.plot_curves(EvalResult("voc", float("nan"), {"a": None}), tmp_path / "empty.svg")
    assert b"no class has ground truth" in (tmp_path / "empty.svg").read_bytes()
