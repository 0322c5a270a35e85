"""Hierarchical grouping of selective search (Uijlings et al., IJCV 2013, section 3).

Starting from an over-segmentation (a label map of the working image), the two most similar
adjacent regions are merged, over and over, until one region covers the image; every region
on the way (the initial ones included) is a proposal. Similarity is a sum of up to four terms,
each in [0, 1]: colour and texture histogram intersection, a size term that merges small
regions first, and a fill term that prefers pairs whose union fills its bounding box.

Coordinates here are those of the working image (the resized copy that selective search
segments): region boxes are inclusive integer pixel bounds ``(xmin, ymin, xmax, ymax)``.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import cv2
import numpy as np

COLOUR_BINS = 25  # per channel, the paper's choice
TEXTURE_ORIENTATIONS = 8  # 4 directions x 2 signs of the Gaussian derivative
TEXTURE_BINS = 10  # per orientation and channel, the paper's choice
TEXTURE_SIGMA = 1.0  # of the Gaussian derivative filters, the paper's choice
# Half-width of the derivative kernel: 3 sigma holds 99.7% of the Gaussian's mass.
_KERNEL_RADIUS = int(np.ceil(3 * TEXTURE_SIGMA))


@dataclass(frozen=True)
class Strategy:
    """Which similarity terms are summed (the paper's C, T, S, F)."""

    colour: bool
    texture: bool
    size: bool
    fill: bool


@dataclass(frozen=True, eq=False)
class PixelBins:
    """Per-pixel histogram bins of one image in one colour space, shared by all its
    segmentations. ``colour`` uint8 [C, H*W] in 0..24; ``texture`` uint8 [C * 8, H*W] in 0..9
    (plane c * 8 + o: channel c, orientation o)."""

    colour: np.ndarray
    texture: np.ndarray


@dataclass(frozen=True, eq=False)
class Regions:
    """The initial regions of one segmentation, with everything grouping needs.

    ``colour`` float32 [n, C * 25] and ``texture`` float32 [n, C * 80]: per-region histograms,
    each L1-normalised (rows sum to 1). ``size`` float64 [n]: pixel counts. ``boxes`` int64
    [n, 4]: inclusive bounds (xmin, ymin, xmax, ymax) in working-image pixels. ``pairs`` int64
    [E, 2]: 4-adjacent region pairs (a < b), each once. ``image_size``: pixels of the image.
    """

    colour: np.ndarray
    texture: np.ndarray
    size: np.ndarray
    boxes: np.ndarray
    pairs: np.ndarray
    image_size: int


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """int64 [H, W] labels renumbered 0..n-1 (in order of their old values), no gaps."""
    labels = np.asarray(labels, dtype=np.int64)
    present = np.bincount(labels.ravel()) > 0
    if present.all():
        return labels
    new_id = np.cumsum(present) - 1
    return new_id[labels]


def pixel_bins(image: np.ndarray) -> PixelBins:
    """The colour and texture bins of every pixel of ``image`` (uint8 [H, W, C], the colour
    space that the histograms describe)."""
    colour = (image.reshape(-1, image.shape[2]).T.astype(np.uint16) * COLOUR_BINS) >> 8
    return PixelBins(colour=colour.astype(np.uint8), texture=_texture_bins(image))


def region_features(bins: PixelBins, labels: np.ndarray) -> Regions:
    """Features of the regions of ``labels`` (int64 [H, W], 0..n-1, no gaps); ``bins`` are
    those of the same image."""
    n = int(labels.max()) + 1
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)
    return Regions(colour=_histograms(bins.colour, COLOUR_BINS, flat, n, size),
                   texture=_histograms(bins.texture, TEXTURE_BINS, flat, n, size),
                   size=size, boxes=_region_boxes(labels, n), pairs=_adjacent_pairs(labels, n),
                   image_size=labels.size)


def _histograms(planes: np.ndarray, nbins: int, flat: np.ndarray, n: int,
                size: np.ndarray) -> np.ndarray:
    """float32 [n, P * nbins]: per region, the bin counts of each of the P planes (uint8
    [P, H*W]) side by side, L1-normalised over all of them. One plane at a time, so memory
    stays at a few [H*W] arrays."""
    hist = np.empty((n, len(planes) * nbins), np.float32)
    base = flat * nbins
    for p, plane in enumerate(planes):
        hist[:, p * nbins:(p + 1) * nbins] = np.bincount(
            base + plane, minlength=n * nbins).reshape(n, nbins)
    return hist / (size[:, None] * len(planes)).astype(np.float32)


def _gaussian_kernels() -> tuple[np.ndarray, np.ndarray]:
    """float32 1-D Gaussian [2r+1] (sums to 1) and its derivative (odd, d/dx)."""
    x = np.arange(-_KERNEL_RADIUS, _KERNEL_RADIUS + 1, dtype=np.float64)
    g = np.exp(-x ** 2 / (2 * TEXTURE_SIGMA ** 2))
    g /= g.sum()
    return g.astype(np.float32), (-x / TEXTURE_SIGMA ** 2 * g).astype(np.float32)


def _texture_bins(image: np.ndarray) -> np.ndarray:
    """uint8 [C * 8, H*W]: per channel and orientation (0, 45, 90, 135 degrees, positive and
    negative responses), the bin (0..9) of the Gaussian derivative's magnitude scaled by its
    maximum over the image, so that the bins follow the image's contrast."""
    g, dg = _gaussian_kernels()
    channels = image.shape[2]
    out = np.empty((channels * TEXTURE_ORIENTATIONS, image.shape[0] * image.shape[1]), np.uint8)
    for c in range(channels):
        plane = image[:, :, c].astype(np.float32)
        gx = cv2.sepFilter2D(plane, cv2.CV_32F, dg, g, borderType=cv2.BORDER_REFLECT).ravel()
        gy = cv2.sepFilter2D(plane, cv2.CV_32F, g, dg, borderType=cv2.BORDER_REFLECT).ravel()
        for d, angle in enumerate(np.deg2rad([0.0, 45.0, 90.0, 135.0])):
            response = np.float32(np.cos(angle)) * gx + np.float32(np.sin(angle)) * gy
            out[c * TEXTURE_ORIENTATIONS + 2 * d] = _magnitude_bins(response)
            out[c * TEXTURE_ORIENTATIONS + 2 * d + 1] = _magnitude_bins(-response)
    return out


def _magnitude_bins(response: np.ndarray) -> np.ndarray:
    """uint8 [H*W]: max(response, 0) / its image maximum in 10 bins (all 0 on a flat image)."""
    positive = np.maximum(response, np.float32(0))
    peak = float(positive.max())
    if peak <= 0:
        return np.zeros(len(response), np.uint8)
    positive *= np.float32(TEXTURE_BINS / peak)
    return np.minimum(positive, TEXTURE_BINS - 1).astype(np.uint8)


def _region_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """int64 [n, 4] inclusive bounds (xmin, ymin, xmax, ymax) of each label."""
    h, w = labels.shape
    flat = labels.ravel()
    xs = np.tile(np.arange(w, dtype=np.int64), h)
    ys = np.repeat(np.arange(h, dtype=np.int64), w)
    boxes = np.empty((n, 4), np.int64)
    boxes[:, :2] = np.iinfo(np.int64).max
    boxes[:, 2:] = -1
    np.minimum.at(boxes[:, 0], flat, xs)
    np.minimum.at(boxes[:, 1], flat, ys)
    np.maximum.at(boxes[:, 2], flat, xs)
    np.maximum.at(boxes[:, 3], flat, ys)
    return boxes


def _adjacent_pairs(labels: np.ndarray, n: int) -> np.ndarray:
    """int64 [E, 2] sorted unique pairs (a < b) of labels that touch horizontally or
    vertically. 4-adjacency suffices: the pixel grid is 4-connected, so the region graph is
    connected and grouping always ends with the whole image."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    differ = a != b
    lo, hi = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
    keys = np.unique(lo * n + hi)
    return np.stack([keys // n, keys % n], axis=1)


class _Hierarchy:
    """Feature arrays for all 2n - 1 regions a grouping can create, preallocated, so that the
    similarity of a new region to all its neighbours is one vectorised call."""

    def __init__(self, regions: Regions, strategy: Strategy):
        total = 2 * len(regions.size) - 1
        self.strategy = strategy
        self.image_size = float(regions.image_size)
        # Colour and texture intersections add up, so one array holds both side by side.
        used = [h for h, on in ((regions.colour, strategy.colour),
                                (regions.texture, strategy.texture)) if on]
        self.hist = _grow(np.concatenate(used, axis=1), total) if used else None
        self.size = _grow(regions.size, total)
        self.lo = _grow(regions.boxes[:, :2], total)  # (xmin, ymin), inclusive
        self.hi = _grow(regions.boxes[:, 2:], total)  # (xmax, ymax), inclusive

    def similarity(self, a: np.ndarray | int, b: np.ndarray) -> np.ndarray:
        """float64 [len(b)]: the strategy's similarity of region(s) ``a`` to regions ``b``."""
        st = self.strategy
        if self.hist is None:
            total = np.zeros(len(b))
        else:
            total = np.minimum(self.hist[a], self.hist[b]).sum(axis=1, dtype=np.float64)
        both = self.size[a] + self.size[b]
        if st.size:  # small regions merge first, so that sizes stay balanced
            total += 1.0 - both / self.image_size
        if st.fill:  # the part of the pair's bounding box that neither fills, as a gap
            span = np.maximum(self.hi[a], self.hi[b]) - np.minimum(self.lo[a], self.lo[b]) + 1
            total += 1.0 - (span[:, 0] * span[:, 1] - both) / self.image_size
        return total

    def merge(self, i: int, j: int, t: int) -> None:
        """Region t := the union of regions i and j (histograms size-weighted)."""
        si, sj = self.size[i], self.size[j]
        if self.hist is not None:
            self.hist[t] = (self.hist[i] * si + self.hist[j] * sj) / (si + sj)
        self.size[t] = si + sj
        self.lo[t] = np.minimum(self.lo[i], self.lo[j])
        self.hi[t] = np.maximum(self.hi[i], self.hi[j])

    def boxes(self, count: int) -> np.ndarray:
        """int64 [count, 4] inclusive (xmin, ymin, xmax, ymax) of the first count regions."""
        return np.concatenate([self.lo[:count], self.hi[:count]], axis=1)


def _grow(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` copied into the first rows of a new array of ``rows`` rows."""
    out = np.empty((rows, *array.shape[1:]), array.dtype)
    out[:len(array)] = array
    return out


def group(regions: Regions, strategy: Strategy) -> np.ndarray:
    """Greedy hierarchical grouping of ``regions`` under ``strategy``.

    Returns int64 [m, 4] inclusive boxes (working-image pixels) of every region in creation
    order: the n initial regions, then one per merge; the last covers the whole image
    (m = 2n - 1). Deterministic: the heap orders equal similarities by region ids. Stale heap
    entries (a region already merged away) are skipped when popped instead of being removed.
    """
    hier = _Hierarchy(regions, strategy)
    n = len(regions.size)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for a, b in regions.pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    a, b = regions.pairs[:, 0], regions.pairs[:, 1]
    heap = list(zip((-hier.similarity(a, b)).tolist(), a.tolist(), b.tolist()))
    heapq.heapify(heap)
    alive = [True] * n
    t = n
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        hier.merge(i, j, t)
        alive[i] = alive[j] = False
        alive.append(True)
        merged = (neighbours[i] | neighbours[j]) - {i, j}
        for k in merged:
            neighbours[k] -= {i, j}
            neighbours[k].add(t)
        neighbours.append(merged)
        if merged:
            ks = np.fromiter(sorted(merged), np.int64, len(merged))
            for s, k in zip((-hier.similarity(t, ks)).tolist(), ks.tolist()):
                heapq.heappush(heap, (s, k, t))
        t += 1
    return hier.boxes(t)
