"""The error report: one self-contained HTML page (inline CSS, no script, no outside URL) and
its thumbnails, from an `eval.analysis.Analysis`.

    OUT/index.html      per-class AP, false positives by kind and what each costs, missed
                        objects by size, and per class the thumbnails of the worst of each
    OUT/thumbs/*.jpg    referenced relatively (`eval.thumbnails`)

Every name that comes from the data (class names, file names, the ground truth's path) is
escaped with `html.escape`: they may hold any text. Numbers are shown in percent with two
decimals, and each AP cell carries its exact value in ``data-value``.
"""
from __future__ import annotations

import html
import math
import os
from pathlib import Path

from eval import thumbnails
from eval.analysis import KINDS, SIZES, Analysis, ClassErrors
from eval.datasets.images import IMAGE_SUFFIXES
from eval.errors import DetectionError
from eval.outputs import Input, check_not_an_input, check_output_dir, write_atomic

PAGE = "index.html"

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1330px;padding:0 16px;
color:#1d2330;background:#fbfbfd}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ccd}
h3{font-size:16px;margin:28px 0 4px}h4{font-size:14px;margin:14px 0 6px;color:#445}
.meta{color:#556;margin:0 0 12px}.figures{font-size:16px}
.name{overflow-wrap:anywhere;max-width:260px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 8px;border-bottom:1px solid #e3e4ea;
text-align:right;vertical-align:top}th{background:#eef0f5;font-weight:600}
td.name,th.name{text-align:left;min-width:8em;max-width:18em}th.group{text-align:center}
tr:hover td{background:#f3f5fb}
.bar{display:inline-block;height:10px;background:#5b7bd5;vertical-align:middle}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:204px;background:#fff;border:1px solid #dde;padding:2px}
figure img{display:block;margin:0 auto;max-width:200px;max-height:200px}
figcaption{font-size:12px;line-height:1.3;color:#334;padding:3px 2px;overflow-wrap:anywhere}
.missing{height:60px;display:flex;align-items:center;justify-content:center;color:#a33;
font-size:12px;text-align:center}
.key span{display:inline-block;width:12px;height:12px;border:2px solid;margin:0 4px 0 12px;
vertical-align:middle}
dt{font-weight:600}dd{margin:0 0 6px 16px}
"""


def check_report_dir(path: str | os.PathLike, flag: str, inputs: list[Input]) -> Path:
    """The report folder, checked before any work (`eval.outputs.check_output_dir`): created
    if missing, writable, neither it nor its page or thumbnail folder one of ``inputs``, and
    not a folder of images (a data set's, named or found by the reader, such as a VOC root's
    JPEGImages/: the report would be written among its images)."""
    _check_not_an_image_folder(Path(path), flag)
    out = check_output_dir(path, flag, inputs)
    check_not_an_input(out / PAGE, flag, inputs)
    check_output_dir(out / thumbnails.FOLDER, flag, inputs)
    return out


def _check_not_an_image_folder(folder: Path, flag: str) -> None:
    try:
        with os.scandir(folder) as entries:
            image = min((e.name for e in entries if not e.is_dir()
                         and Path(e.name).suffix.lower() in IMAGE_SUFFIXES), default=None)
    except OSError:
        return  # missing (it is made) or unreadable (check_output_dir names the problem)
    if image is not None:
        raise DetectionError(f"{flag} {folder}: holds images ({image!r}...), a data set's "
                             "folder, not a report's; choose a new or empty folder")


def write_report(analysis: Analysis, out_dir: str | os.PathLike,
                 per_section: int = thumbnails.PER_SECTION) -> Path:
    """Write the report of ``analysis`` into ``out_dir`` (checked beforehand with
    `check_report_dir`): the thumbnails, then the page. Returns the page's path."""
    out = check_report_dir(out_dir, str(out_dir), [])  # the thumbnails' folder exists
    thumbs = thumbnails.choose(analysis, per_section)
    failed = thumbnails.draw_all(analysis, thumbs, out)
    page = out / PAGE
    write_atomic(page, render_page(analysis, thumbs, failed))
    return page


def render_page(analysis: Analysis, thumbs: list[thumbnails.Thumb],
                failed: dict[str, str]) -> str:
    """The page's HTML text (see the module docstring)."""
    title = f"Error analysis: {analysis.protocol} on {analysis.dataset.source or 'the dataset'}"
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>Error analysis</h1><p class=\"meta\">{_e(_summary_line(analysis))}</p>",
             _overall(analysis), _class_table(analysis), _definitions(analysis),
             _class_sections(analysis, thumbs, failed), "</body></html>\n"]
    return "\n".join(parts)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _ap_cell(value: float | None) -> str:
    exact = "" if value is None else f" data-value=\"{value!r}\""
    return f"<td class=\"ap\"{exact}>{_pct(value)}</td>"


def _summary_line(a: Analysis) -> str:
    objects = sum(c.num_objects for c in a.classes)
    extra = (f" ({a.uncounted:,} more not counted: blacklisted, or past 100 per image)"
             if a.uncounted else "")
    return (f"Protocol {a.protocol}; ground truth {a.dataset.source or '(in memory)'}: "
            f"{len(a.dataset.images):,} images, {len(a.classes)} classes, {objects:,} objects "
            f"that count; {len(a.detections) - a.uncounted:,} detections{extra}. Errors are "
            f"judged at {a.threshold}.")


def _overall(a: Analysis) -> str:
    """mAP, then what each kind of false positive costs, then the missed objects by size."""
    figures = (f"<p class=\"figures\">mAP ({_e(a.protocol)}): <b class=\"ap\" "
               f"data-value=\"{a.result.mAP!r}\">{_pct(a.result.mAP)}</b>")
    if a.protocol == "coco":
        figures += f" · AP50, the baseline of the costs below: <b>{_pct(a.mean_ap_at)}</b>"
    gains = [a.mean_gain[k] for k in KINDS if not math.isnan(a.mean_gain[k])]
    top = max(gains + [1e-9])
    rows = []
    for kind in (*KINDS, "all"):
        gain, count = a.mean_gain[kind], sum(a.false_positives.values())
        if kind != "all":
            count = a.false_positives[kind]
        width = 0 if math.isnan(gain) or kind == "all" else max(0.0, gain) / top * 160
        rows.append(f"<tr><th class=\"name\">{'all' if kind == 'all' else kind}</th>"
                    f"<td>{count:,}</td><td>{_pct(gain, signed=True)}</td><td class=\"name\">"
                    f"<span class=\"bar\" style=\"width:{width:.0f}px\"></span></td></tr>")
    missed = " · ".join(f"{size} {a.missed[size]:,}" for size in SIZES)
    return ("<h2>Summary</h2>" + figures + "</p><table><tr><th class=\"name\">false positives"
            "</th><th>count</th><th colspan=\"2\">mAP gained without them</th></tr>"
            + "".join(rows) + "</table>"
            f"<p>Missed objects: {sum(a.missed.values()):,} ({missed}).</p>")


def _class_table(a: Analysis) -> str:
    """One row per class, best AP first (classes without objects last)."""
    ranked = sorted(a.classes, key=lambda c: (c.ap is None, -(c.ap or 0.0), c.label))
    first = ("class", "AP", *(["AP50"] if a.protocol == "coco" else []), "objects",
             "detections", "TP")
    short = {"localisation": "loc.", "confusion": "conf.", "duplicate": "dup.",
             "background": "bg.", "all": "all"}
    head = ("<tr><th rowspan=\"2\" class=\"name\">class</th>"
            + "".join(f"<th rowspan=\"2\">{n}</th>" for n in first[1:])
            + f"<th colspan=\"{len(KINDS)}\" class=\"group\">false positives</th>"
            + f"<th colspan=\"{len(KINDS) + 1}\" class=\"group\">+AP without them</th>"
            + f"<th colspan=\"{len(SIZES)}\" class=\"group\">missed</th></tr><tr>"
            + "".join(f"<th title=\"{k}\">{short[k]}</th>" for k in KINDS)
            + "".join(f"<th title=\"{k}\">{short[k]}</th>" for k in (*KINDS, "all"))
            + "".join(f"<th>{s}</th>" for s in SIZES) + "</tr>")
    rows = [_class_row(a, c) for c in ranked]
    return ("<h2>Per class</h2><p>AP in percent; <em>+AP</em>: AP gained without that kind of "
            "false positive (at the threshold above). Class names link to their examples.</p>"
            f"<table class=\"classes\">{head}{''.join(rows)}</table>")


def _class_row(a: Analysis, c: ClassErrors) -> str:
    at = f"<td>{_pct(c.ap_at)}</td>" if a.protocol == "coco" else ""
    return (f"<tr><td class=\"name\"><a href=\"#class-{c.label}\">{_e(c.name)}</a></td>"
            + _ap_cell(c.ap) + at + f"<td>{c.num_objects:,}</td><td>{c.num_detections:,}</td>"
            f"<td>{c.true_positives:,}</td>"
            + "".join(f"<td>{c.false_positives[k]:,}</td>" for k in KINDS)
            + "".join(f"<td>{_pct(c.gain[k], signed=True)}</td>" for k in (*KINDS, "all"))
            + "".join(f"<td>{c.missed[s]:,}</td>" for s in SIZES) + "</tr>")


def _definitions(a: Analysis) -> str:
    """What the kinds mean, in the order they are tested (TIDE's), and the box colours."""
    t = "t"
    items = {
        "confusion": f"IoU ≥ {t} with an object of another class, or else (after the two "
                     "below) IoU in [0.1, t) with one: the class is wrong.",
        "duplicate": f"IoU ≥ {t} with an object of its class that a higher-ranked detection "
                     "already took.",
        "localisation": "IoU in [0.1, t) with an object of its class: the right object, "
                        "badly boxed.",
        "background": "IoU < 0.1 with every object.",
    }
    listed = "".join(f"<dt>{k}</dt><dd>{_e(v)}</dd>" for k, v in items.items())
    key = "".join(f"<span style=\"border-color:rgb{c}\"></span>{_e(n)}"
                  for c, n in ((thumbnails.DETECTION, "detection"),
                               (thumbnails.OWN_OBJECT, "object of its class"),
                               (thumbnails.OTHER_OBJECT, "object of another class")))
    return (f"<h2>The kinds of false positive</h2><p>t: {_e(a.threshold)}. Each false "
            "positive of the protocol's own matching gets the first kind that fits, tested "
            "in TIDE's order (confusion, duplicate, localisation, confusion, background); "
            "removing a kind's false positives from the ranking gives the AP gains above. "
            "Missed objects count and are not difficult or crowd, and no detection took them; "
            "sizes by area: small &lt; 32², medium &lt; 96², large.</p>"
            f"<dl>{listed}</dl><p class=\"key\">Boxes:{key}</p>")


def _class_sections(a: Analysis, thumbs: list[thumbnails.Thumb], failed: dict[str, str]) -> str:
    """Per class (label order) its examples: the worst false positives of each kind, then the
    largest missed objects."""
    by_section: dict[tuple[int, str], list[thumbnails.Thumb]] = {}
    for thumb in thumbs:
        by_section.setdefault((thumb.label, thumb.section), []).append(thumb)
    out = ["<h2>Examples per class</h2>"]
    for c in a.classes:
        head = (f"<h3 id=\"class-{c.label}\" class=\"name\">{_e(c.name)}</h3><p class=\"meta\">"
                f"AP {_pct(c.ap)} · {c.num_objects:,} objects · {c.num_detections:,} "
                f"detections · {c.true_positives:,} true positives</p>")
        body = []
        for section in (*KINDS, "missed"):
            group = by_section.get((c.label, section), [])
            if group:
                count = c.false_positives.get(section, sum(c.missed.values()))
                which = "largest" if section == "missed" else "highest-scoring"
                shown = "" if len(group) == count else f"; the {len(group)} {which} shown"
                body.append(f"<h4>{section} ({count:,}{shown})</h4>"
                            f"<div class=\"grid\">{''.join(_figure(t, failed) for t in group)}"
                            "</div>")
        out.append(head + ("".join(body) or "<p>No false positive and no missed object.</p>"))
    return "\n".join(out)


def _figure(thumb: thumbnails.Thumb, failed: dict[str, str]) -> str:
    caption = "<br>".join(_e(line) for line in thumb.caption)
    if thumb.file in failed:
        picture = f"<div class=\"missing\">image not read:<br>{_e(failed[thumb.file][:200])}</div>"
    else:
        picture = f"<img src=\"{_e(thumb.file)}\" alt=\"{_e(thumb.caption[0])}\" loading=\"lazy\">"
    return f"<figure>{picture}<figcaption>{caption}</figcaption></figure>"
