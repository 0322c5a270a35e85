"""The proposal stage: selective search, optionally plus the top MultiBox boxes (GoogLeNet's).

GoogLeNet's detection entry doubled selective search's superpixel size (half the boxes) and
added the 200 most confident MultiBox boxes after NMS. `Proposer` is that stage for one image;
its ``method`` / ``params`` are what a proposal cache's manifest and a detector checkpoint
record, so proposals can be recomputed exactly (`proposer_for`) or a stale cache refused
(`check_cache_matches`).

Merging: the MultiBox boxes come first (they are ranked by confidence), then the selective
search boxes that are not near-duplicates of one of them (IoU >= ``NEAR_DUPLICATE_IOU``, the
threshold selective search applies within its own boxes).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from detector.errors import DetectionError
from eval.recall import box_iou
from proposals.cache import ProposalCache, normalise_params
from proposals.selective_search import (ALGORITHM_VERSION, NEAR_DUPLICATE_IOU,
                                        SelectiveSearchConfig, selective_search)

SELECTIVE_SEARCH = "selective_search"
COMBINED = "selective_search+multibox"
MULTIBOX = "multibox"


@dataclass(frozen=True)
class ProposalConfig:
    """How proposals are made (the ``proposals`` section of a training config)."""

    selective_search: SelectiveSearchConfig = field(default_factory=SelectiveSearchConfig)
    multibox: str | None = None    # a MultiBox checkpoint (tools/train.py, task: multibox); null: none
    multibox_top: int = 200        # GoogLeNet's 200 boxes, after NMS
    multibox_nms: float = 0.7      # IoU of the NMS among MultiBox boxes
    selective_search_on: bool = True  # false: MultiBox boxes alone (for comparisons)


@dataclass(frozen=True)
class Proposer:
    """Proposals of one image: ``proposer(image [H, W, 3] uint8) -> float32 [N, 4]`` in pixels.

    Picklable (worker processes): the MultiBox network is loaded on first use in each process,
    on the CPU, and checked against ``multibox_sha256``.
    """

    config: ProposalConfig
    multibox_sha256: str | None = None

    @property
    def method(self) -> str:
        if self.config.multibox is None:
            return SELECTIVE_SEARCH
        return COMBINED if self.config.selective_search_on else MULTIBOX

    @property
    def params(self) -> dict:
        """The cache manifest's params: selective search's config as it always was, or both."""
        ss = asdict(self.config.selective_search)
        if self.config.multibox is None:
            return ss
        multibox = {"checkpoint": self.config.multibox, "sha256": self.multibox_sha256,
                    "top_n": self.config.multibox_top, "nms_iou": self.config.multibox_nms}
        if not self.config.selective_search_on:
            return {"multibox": multibox}
        return {"selective_search": ss, "multibox": multibox}

    @property
    def version(self) -> int:
        return ALGORITHM_VERSION

    def __call__(self, image: np.ndarray) -> np.ndarray:
        ss = (selective_search(image, self.config.selective_search)
              if self.config.selective_search_on else np.zeros((0, 4), np.float32))
        if self.config.multibox is None:
            return ss
        boxes = multibox_boxes(self.config.multibox, self.multibox_sha256, image,
                               self.config.multibox_top, self.config.multibox_nms)
        return merge_proposals(boxes, ss)


def build_proposer(config: ProposalConfig) -> Proposer:
    """The proposer of ``config`` (reads the MultiBox checkpoint's digest, if any)."""
    if config.multibox is None and not config.selective_search_on:
        raise DetectionError("proposals: selective_search_on is false and there is no multibox "
                             "checkpoint: no proposals at all; set one of them")
    if config.multibox_top < 1 or not 0 < config.multibox_nms <= 1:
        raise DetectionError(f"proposals: multibox_top {config.multibox_top} must be >= 1 and "
                             f"multibox_nms {config.multibox_nms} in (0, 1]")
    from proposals.multibox import file_digest

    digest = file_digest(config.multibox) if config.multibox is not None else None
    return Proposer(config, digest)


def proposer_for(method: str, params: dict, where: str) -> Proposer:
    """The proposer that a cache manifest's or a checkpoint's (method, params) describe.

    ``where`` names the checkpoint or cache in messages. A MultiBox checkpoint must still be at
    its recorded path with the same content; otherwise the way out is a proposal cache.
    """
    try:
        if method == SELECTIVE_SEARCH:
            config = ProposalConfig(SelectiveSearchConfig(**params))
        elif method in (COMBINED, MULTIBOX):
            mb = params["multibox"]
            ss = SelectiveSearchConfig(**params.get("selective_search", {}))
            config = ProposalConfig(ss, mb["checkpoint"], mb["top_n"], mb["nms_iou"],
                                    selective_search_on=method == COMBINED)
        else:
            raise DetectionError(f"{where}: unknown proposal method {method!r}; pass a proposal "
                                 "cache with --proposals")
    except (TypeError, KeyError) as e:
        raise DetectionError(f"{where}: unreadable {method} proposal parameters {params} ({e}); "
                             "pass a proposal cache with --proposals") from None
    proposer = build_proposer(config)
    if method != SELECTIVE_SEARCH and proposer.multibox_sha256 != params["multibox"]["sha256"]:
        raise DetectionError(f"{where}: {config.multibox} changed since these proposals were "
                             "made (another file at that path); pass a proposal cache with "
                             "--proposals, or restore that MultiBox checkpoint")
    return proposer


def proposal_record(cache: ProposalCache) -> dict:
    """What a detector checkpoint stores about the proposals it was trained on (``cache``'s),
    so that detection recomputes the same ones for new images (`proposer_for`)."""
    return {"method": cache.method, "params": cache.params}


def check_cache_matches(cache: ProposalCache, config: ProposalConfig, where: str) -> None:
    """Refuse a cache that was not made with ``config`` (``where`` names it in the message)."""
    wanted = build_proposer(config)
    if (cache.method, cache.params) != (wanted.method, normalise_params(wanted.params)):
        raise DetectionError(f"{where}: this cache holds {cache.method} proposals {cache.params}, "
                             f"but the config asks for {wanted.method} {wanted.params}; fill a new "
                             "cache with tools/propose.py --config CONFIG")


def merge_proposals(multibox: np.ndarray, selective: np.ndarray,
                    near_duplicate_iou: float = NEAR_DUPLICATE_IOU) -> np.ndarray:
    """MultiBox boxes ``[M, 4]``, then the selective search boxes ``[S, 4]`` that are not
    near-duplicates of any of them; float32 ``[N, 4]``, N <= M + S."""
    multibox = np.asarray(multibox, np.float32).reshape(-1, 4)
    selective = np.asarray(selective, np.float32).reshape(-1, 4)
    if len(multibox) and len(selective):
        selective = selective[box_iou(selective, multibox).max(axis=1) < near_duplicate_iou]
    return np.concatenate([multibox, selective])


_MODELS: dict[str, object] = {}  # per process: MultiBox networks by checkpoint digest


def multibox_boxes(path: str, digest: str | None, image: np.ndarray, top_n: int,
                   nms_iou: float) -> np.ndarray:
    """The top-N MultiBox boxes of ``image`` in pixels (CPU; the network cached per process)."""
    from proposals.multibox import load_multibox, predict

    key = digest or path
    if key not in _MODELS:
        _MODELS[key] = load_multibox(path, "cpu")
    boxes, _ = predict(_MODELS[key], image, top_n=top_n, nms_iou=nms_iou)
    return boxes.numpy()
