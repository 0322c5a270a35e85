"""From per-region class probabilities to detections: R-CNN's test-time post-processing.

Per class: keep regions scoring above a threshold, (move each box by its class's regression
deltas), clip to the image, drop empty boxes, greedy NMS at IoU 0.3; then the top-k over all
classes. Boxes are ``(x1, y1, x2, y2)`` in pixels of the original image; labels are 1..C.

NMS threshold semantics (torchvision's): a box is suppressed by a higher-scoring box of its class
when their IoU is *strictly greater* than ``nms_iou``. The IoU is computed in float32 and compared
with ``nms_iou`` as a double, so a pair built at IoU 0.3 exactly (e.g. 30 / 100) computes as
0.30000001 > 0.3 and is suppressed, while at a threshold that float32 represents exactly (0.25,
0.5) an IoU equal to the threshold is kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from detector.box_coder import decode
from eval.errors import DetectionError
from proposals.defaults import MAX_PER_IMAGE, NMS_IOU, SCORE_THRESHOLD
# A box clipped to the image can collapse to zero width or height (it lay outside): such boxes
# are dropped. 0.01 px as torchvision's RoIHeads.
MIN_SIDE = 1e-2


@dataclass(frozen=True)
class PostProcess:
    """R-CNN's test-time post-processing with its settings, checked when made (as DETR's
    ``PostProcess``): ``PostProcess(score_threshold=0.05)(boxes, probs, deltas, (h, w))``.

    score_threshold: keep (region, class) pairs with probability strictly above this
        (`SCORE_THRESHOLD`: low, so that mAP sees the whole precision-recall curve).
    nms_iou: suppress boxes whose IoU with a higher-scoring box of the same class is strictly
        above this (R-CNN's 0.3; see the module docstring).
    max_per_image: keep the highest-scoring detections over all classes (COCO's maxDets);
        None keeps all.
    """

    score_threshold: float = SCORE_THRESHOLD
    nms_iou: float = NMS_IOU
    max_per_image: int | None = MAX_PER_IMAGE

    def __post_init__(self) -> None:
        if not (_is_real(self.score_threshold) and 0 <= self.score_threshold <= 1):
            raise DetectionError(_named("score_threshold", self.score_threshold,
                                        "must be in [0, 1] (a softmax probability)"))
        if not (_is_real(self.nms_iou) and 0 < self.nms_iou <= 1):
            raise DetectionError(_named("nms_iou", self.nms_iou, "must be in (0, 1]"))
        count = self.max_per_image
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                                  or count < 1):
            raise DetectionError(_named("max_per_image", count, "must be a whole number of at "
                                        "least 1 (or None for all)"))

    def __call__(self, boxes: Tensor, scores: Tensor, box_deltas: Tensor | None,
                 image_size: tuple[int, int], background: bool = True,
                 box_stds: Sequence[float] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """`postprocess` with these settings."""
        return postprocess(boxes, scores, box_deltas, image_size, self.score_threshold,
                           self.nms_iou, self.max_per_image, background, box_stds)


def _named(keyword: str, value: object, rule: str) -> str:
    """An error naming the command's flag and the keyword, e.g. ``--nms-iou 2.0 (nms_iou=2.0):
    must be in (0, 1]``: the same check serves `detector.Detector.load` and the commands."""
    return f"--{keyword.replace('_', '-')} {value} ({keyword}={value!r}): {rule}"


def _is_real(value: object) -> bool:
    """A finite int or float (not a boolean)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def postprocess(boxes: Tensor, scores: Tensor, box_deltas: Tensor | None,
                image_size: tuple[int, int], score_threshold: float, nms_iou: float,
                max_per_image: int | None, background: bool = True,
                box_stds: Sequence[float] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Detections of one image from its regions' class probabilities (the settings as
    `PostProcess` checks them; call that instead where the values come from a user).

    Args:
        boxes: ``Tensor[N, 4]`` proposals, pixels of the original image.
        scores: ``Tensor[N, C + 1]`` class probabilities with column 0 = background (softmax,
            averaged over an ensemble); with ``background=False``, ``Tensor[N, C]`` (the
            1,000-class ImageNet classifier).
        box_deltas: ``Tensor[N, C, 4]`` class-specific regression deltas in
            ``detector.box_coder`` units (encoded with ``box_stds``), or None to keep proposals.
        image_size: ``(height, width)`` of the original image, to clip boxes to.
        score_threshold: keep (region, class) pairs with probability strictly above this.
        nms_iou: suppress boxes whose IoU with a higher-scoring box of the same class is
            strictly above this (see the module docstring).
        max_per_image: keep the highest-scoring detections over all classes; None keeps all.
    Returns:
        ``boxes [M, 4]`` float32, ``scores [M]`` float32, ``labels [M]`` int64 in 1..C, sorted by
        score descending, then label, then proposal order (deterministic on CPU; on CUDA,
        torchvision's NMS may keep a different one of two overlapping boxes with equal scores).
    """
    class_scores = _class_scores(boxes, scores, box_deltas, background)
    # Candidates in (class, proposal) order, so that the stable sort by score below breaks ties
    # by label, then proposal.
    labels, index = torch.nonzero(class_scores.T > score_threshold, as_tuple=True)
    cand_scores = class_scores[index, labels].float()
    if box_deltas is None:
        cand_boxes = boxes[index].float()
    else:
        cand_boxes = decode(box_deltas[index, labels], boxes[index], box_stds)
    cand_boxes = clip_boxes_to_image(cand_boxes, image_size)

    keep = remove_small_boxes(cand_boxes, MIN_SIDE)
    keep = keep[torch.sort(cand_scores[keep], descending=True, stable=True).indices]
    cand_boxes, cand_scores, labels = cand_boxes[keep], cand_scores[keep], labels[keep]
    # batched_nms runs NMS per label at once; its output order is by score with ties unspecified,
    # so sort the kept positions to get back the deterministic order built above.
    keep = batched_nms(cand_boxes, cand_scores, labels, nms_iou).sort().values
    keep = keep[:max_per_image]
    return cand_boxes[keep], cand_scores[keep], labels[keep] + 1


def _class_scores(boxes: Tensor, scores: Tensor, box_deltas: Tensor | None,
                  background: bool) -> Tensor:
    """Check the shapes agree and return the object classes' columns ``[N, C]``."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectionError(f"boxes have shape {tuple(boxes.shape)}; expected [N, 4]")
    if scores.ndim != 2 or scores.shape[0] != boxes.shape[0]:
        raise DetectionError(f"scores have shape {tuple(scores.shape)} for {boxes.shape[0]} boxes; "
                             "expected [N, C + 1] (or [N, C] with background=False)")
    class_scores = scores[:, 1:] if background else scores
    num_classes = class_scores.shape[1]
    if box_deltas is not None and box_deltas.shape != (boxes.shape[0], num_classes, 4):
        raise DetectionError(f"box_deltas have shape {tuple(box_deltas.shape)}; expected "
                             f"[{boxes.shape[0]}, {num_classes}, 4] for {num_classes} classes")
    return class_scores
