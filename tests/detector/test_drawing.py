"""detector.drawing: draw order, labels whole inside the image, sizes that follow the image,
contrast and distinct class colours, all checked on the pixels or the layout that paints them."""
from __future__ import annotations

import itertools

import numpy as np
import PIL
import pytest
from PIL import Image, ImageDraw, ImageFont

from detector import drawing

CLASSES = ("cat", "dog", "potted plant") + tuple(f"class {k}" for k in range(4, 81))


def _annotate(size, boxes, scores, labels, background=0):
    width, height = size
    image = np.full((height, width, 3), background, np.uint8)
    return np.asarray(drawing.annotate(image, CLASSES, np.asarray(boxes, np.float32),
                                       np.asarray(scores), np.asarray(labels)))


def _layout(size, boxes, scores, labels):
    text, _ = drawing.label_size(*size)
    return drawing.layout_labels(drawing.label_font(text), max(2, round(text / 5)), CLASSES,
                                 np.asarray(boxes, np.float32), np.asarray(scores),
                                 np.asarray(labels), size)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB uint8 colours [N, 3], the textbook formulas."""
    c = rgb / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                        [0.0193, 0.1192, 0.9505]]).T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def _contrast(a, b) -> float:
    """WCAG 2 contrast ratio of two sRGB colours."""
    def luminance(rgb):
        c = np.asarray(rgb) / 255.0
        c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return float(c @ [0.2126, 0.7152, 0.0722])
    hi, lo = sorted([luminance(a), luminance(b)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("best_first", [True, False])
def test_the_best_box_is_on_top_where_outlines_cross(best_first):
    """Two boxes whose outlines cross at (299, 151) and (201, 299): the better one's colour
    shows there, whichever order the detections come in."""
    boxes, scores, labels = [[50, 100, 300, 300], [200, 150, 350, 350]], [0.4, 0.9], [1, 2]
    if best_first:
        boxes, scores, labels = boxes[::-1], scores[::-1], labels[::-1]
    pixels = _annotate((400, 400), boxes, scores, labels)
    for x, y in ((299, 151), (201, 299)):
        assert tuple(pixels[y, x]) == drawing.class_colour(2)
    # Where only the worse box runs, its own colour: the check above could fail.
    assert tuple(pixels[250, 51]) == drawing.class_colour(1)


def test_no_outline_crosses_a_label():
    """A better box whose outline runs through a worse box's tab: the tab is painted after
    every outline, so its pixels are the same as with the worse box alone."""
    alone = _annotate((400, 300), [[100, 100, 300, 250]], [0.3], [1])
    tab = _layout((400, 300), [[100, 100, 300, 250]], [0.3], [1])[0].tab
    crossing = [[tab[0] + 10, 20, 380, tab[3] - 4]]  # left edge through the tab; label elsewhere
    both = _annotate((400, 300), [[100, 100, 300, 250]] + crossing, [0.3, 0.9], [1, 2])
    x1, y1, x2, y2 = tab
    np.testing.assert_array_equal(both[y1:y2, x1:x2], alone[y1:y2, x1:x2])


EDGE_BOXES = {
    "top-left corner": [0, 0, 60, 40],
    "top-right corner": [580, 0, 640, 40],
    "bottom-left corner": [0, 440, 60, 480],
    "bottom-right corner": [580, 440, 640, 480],
    "top edge": [300, 0, 360, 50],
    "right edge": [600, 200, 640, 260],
    "bottom edge": [300, 470, 360, 480],
    "left edge": [0, 200, 8, 260],
    "beyond the image": [-50, -30, 700, 520],
    "a point at the bottom-right": [640, 480, 640, 480],
}


@pytest.mark.parametrize("where", EDGE_BOXES)
def test_labels_stay_whole_inside_the_image(where):
    """The tab lies inside the image, the text's ink inside the tab, and the painted tab is
    pixel for pixel the one painted in the middle of the image: nothing cut off."""
    size, box = (640, 480), EDGE_BOXES[where]
    label = _layout(size, [box], [0.87], [3])[0]
    x1, y1, x2, y2 = label.tab
    assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
    pen = ImageDraw.Draw(Image.new("RGB", size))
    left, top, right, bottom = pen.textbbox(label.origin, label.text,
                                            font=drawing.label_font(drawing.label_size(*size)[0]))
    assert x1 <= left and right <= x2 and y1 <= top and bottom <= y2
    assert label.text == "potted plant 0.87"

    middle = [[250, 200, 400, 300]]
    reference = _layout(size, middle, [0.87], [3])[0].tab
    w, h = x2 - x1, y2 - y1
    assert (reference[2] - reference[0], reference[3] - reference[1]) == (w, h)
    painted = _annotate(size, [box], [0.87], [3])[y1:y2, x1:x2]
    rx, ry = reference[:2]
    centred = _annotate(size, middle, [0.87], [3])[ry:ry + h, rx:rx + w]
    np.testing.assert_array_equal(painted, centred)


def test_a_label_sits_above_its_box_where_there_is_room_else_inside():
    (above,) = _layout((640, 480), [[100, 200, 300, 400]], [0.5], [1])
    assert above.tab[3] == 200 and above.tab[0] == 100  # on the top edge, outside
    (inside,) = _layout((640, 480), [[100, 5, 300, 400]], [0.5], [1])
    assert inside.tab[1] == 5 and inside.tab[0] == 100  # no room above: just inside the box


def test_labels_of_boxes_at_one_place_move_apart():
    """Three boxes with the same top-left corner: each label finds its own place (the best
    takes the first choice), so none hides another."""
    boxes = [[100, 100, 400, 300], [100, 100, 380, 280], [100, 100, 360, 260]]
    marks = _layout((640, 480), boxes, [0.5, 0.9, 0.7], [1, 2, 3])
    assert marks[1].tab[:2] == (100, 100 - (marks[1].tab[3] - marks[1].tab[1]))
    for a, b in itertools.combinations([m.tab for m in marks], 2):
        assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])


def test_text_and_lines_grow_with_the_image():
    sizes = [drawing.label_size(w, h) for w, h in ((300, 200), (640, 480), (1600, 1200),
                                                   (4000, 3000))]
    assert sizes[0] == (12, 2)  # the floor: small images keep readable text
    assert sizes[-1] == (66, 9)  # 0.022 of 3000 px
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(sizes[1:], sizes[2:]))
    heights = [_layout(s, [[10, 100, 200, 190]], [0.5], [1])[0].tab for s in
               ((640, 480), (4000, 3000))]
    assert heights[1][3] - heights[1][1] > 4 * (heights[0][3] - heights[0][1])


@pytest.mark.skipif(tuple(int(v) for v in PIL.__version__.split(".")[:2]) < (10, 1),
                    reason="a sized default font needs Pillow >= 10.1")
def test_the_font_is_scalable():
    font = drawing.label_font(40)
    assert isinstance(font, ImageFont.FreeTypeFont) and font.size == 40


def test_80_class_colours_stay_apart():
    """Minimum pairwise CIE76 distance: >= 38 among the first 20 (VOC's classes), >= 19
    among all 80 (COCO's); just noticeable is ~2.3."""
    lab = _lab(np.array([drawing.class_colour(k) for k in range(1, 81)], float))
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(80) * 1e9
    assert d[:20, :20].min() >= 38 and d.min() >= 19
    assert len(set(drawing.PALETTE)) == 80
    assert drawing.class_colour(81) == drawing.class_colour(1)  # repeats past 80, by index


def test_label_text_contrasts_with_its_tab():
    """The chosen text colour meets WCAG AA (4.5:1) on every palette colour; plain cases."""
    for colour in drawing.PALETTE:
        assert _contrast(drawing.text_colour(colour), colour) >= 4.5
    assert drawing.text_colour((255, 255, 0)) == (0, 0, 0)
    assert drawing.text_colour((0, 0, 160)) == (255, 255, 255)


def test_the_text_is_painted_in_the_contrasting_colour():
    """Inside the tab of a pale class (index 15, #dddd99) the text is black; of a dark one
    (index 1, #5500ff), white."""
    for label, ink in ((15, (0, 0, 0)), (1, (255, 255, 255))):
        tab = _layout((400, 300), [[50, 100, 300, 250]], [0.5], [label])[0].tab
        pixels = _annotate((400, 300), [[50, 100, 300, 250]], [0.5], [label], background=128)
        crop = pixels[tab[1]:tab[3], tab[0]:tab[2]].reshape(-1, 3)
        colours = {tuple(p) for p in crop}
        assert ink in colours and drawing.class_colour(label) in colours


def test_draw_writes_what_annotate_paints(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
    args = (CLASSES, np.array([[10, 20, 100, 90]], np.float32), np.array([0.6]), np.array([2]))
    drawing.draw(image, *args, tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")),
                                  np.asarray(drawing.annotate(image, *args)))
    drawing.draw(image, *args, tmp_path / "a.jpg")
    assert Image.open(tmp_path / "a.jpg").format == "JPEG"
    empty = (CLASSES, np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, np.int64))
    np.testing.assert_array_equal(np.asarray(drawing.annotate(image, *empty)), image)


@pytest.mark.skipif(not hasattr(ImageFont, "load_default_imagefont"),
                    reason="Pillow's bitmap font by name needs Pillow >= 10.1")
def test_without_a_scalable_font_labels_are_still_whole(monkeypatch):
    """Pillow < 10.1 (load_default takes no size) on a system without DejaVu Sans: the fixed
    bitmap font, and the labels still fit their tabs inside the image."""
    bitmap = ImageFont.load_default_imagefont()

    def old_load_default(size=None):
        if size is not None:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return bitmap

    def no_truetype(*args, **kwargs):
        raise OSError("cannot open resource")

    monkeypatch.setattr(ImageFont, "load_default", old_load_default)
    monkeypatch.setattr(ImageFont, "truetype", no_truetype)
    assert drawing.label_font(30) is bitmap
    (label,) = _layout((640, 480), [EDGE_BOXES["top-right corner"]], [0.87], [3])
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (640, 480))).textbbox(
        label.origin, label.text, font=bitmap)
    x1, y1, x2, y2 = label.tab
    assert 0 <= x1 <= left and right <= x2 <= 640 and 0 <= y1 <= top and bottom <= y2 <= 480
    pixels = _annotate((640, 480), [EDGE_BOXES["top-right corner"]], [0.87], [3])
    assert pixels.shape == (480, 640, 3)
