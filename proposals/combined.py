"""The proposal stage: selective search, optionally plus the top MultiBox boxes (GoogLeNet's).

GoogLeNet's detection entry doubled selective search's superpixel size (half the boxes) and
added the 200 most confident MultiBox boxes after NMS. `Proposer` is that stage for one image;
its ``method`` / ``params`` are what a proposal cache's manifest and a detector checkpoint
record, so proposals can be recomputed exactly (`proposer_for`) or a stale cache refused
(`check_cache_matches`). The MultiBox network is named there by a digest of its content, never
by a path; a classifier checkpoint carries the network itself (`proposal_record`), so the one
file is the whole model, wherever it is copied.

Merging: the MultiBox boxes come first (they are ranked by confidence), then the selective
search boxes that are not near-duplicates of one of them (IoU >= ``NEAR_DUPLICATE_IOU``, the
threshold selective search applies within its own boxes).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from eval.errors import DetectionError
from eval.boxes import box_iou
from proposals.cache import ProposalCache, normalise_params
from proposals.config import ProposalConfig, SelectiveSearchConfig
from proposals.defaults import MULTIBOX_NMS, MULTIBOX_TOP
from proposals.selective_search import ALGORITHM_VERSION, NEAR_DUPLICATE_IOU, selective_search

SELECTIVE_SEARCH = "selective_search"
COMBINED = "selective_search+multibox"
MULTIBOX = "multibox"


@dataclass(frozen=True)
class MultiBoxSource:
    """Where a process finds a proposer's MultiBox network: small, so that a `Proposer`
    pickles cheaply for worker processes. Each process reads the network once from ``path``,
    checks it against ``digest`` and keeps it (`multibox_model`)."""

    path: str         # absolute path of the file that holds the network
    embedded: bool    # True: in a classifier checkpoint's proposal record; False: a MultiBox one
    digest: str       # proposals.multibox.network_digest of the network


@dataclass(frozen=True)
class Proposer:
    """Proposals of one image: ``proposer(image [H, W, 3] uint8) -> float32 [N, 4]`` in pixels.

    ``selective_search``: its settings (None: MultiBox boxes alone); ``multibox``: the MultiBox
    network to add its top ``multibox_top`` boxes from, after NMS at ``multibox_nms`` (None:
    selective search alone). Picklable (worker processes): the network itself stays out of
    the pickle. `build_proposer` makes one from a config's ``proposals`` section.
    """

    selective_search: SelectiveSearchConfig | None = SelectiveSearchConfig()
    multibox: MultiBoxSource | None = None
    multibox_top: int = MULTIBOX_TOP
    multibox_nms: float = MULTIBOX_NMS

    def __post_init__(self) -> None:
        if self.selective_search is None and self.multibox is None:
            raise DetectionError("proposals: selective_search_on is false and there is no "
                                 "multibox checkpoint: no proposals at all; set one of them")

    @property
    def method(self) -> str:
        if self.multibox is None:
            return SELECTIVE_SEARCH
        return COMBINED if self.selective_search is not None else MULTIBOX

    @property
    def params(self) -> dict:
        """The cache manifest's params: selective search's config as it always was, or both;
        the MultiBox network is named by its content digest, never by a path."""
        ss = asdict(self.selective_search) if self.selective_search is not None else None
        if self.multibox is None:
            return ss
        multibox = {"network_sha256": self.multibox.digest, "top_n": self.multibox_top,
                    "nms_iou": self.multibox_nms}
        if ss is None:
            return {"multibox": multibox}
        return {"selective_search": ss, "multibox": multibox}

    @property
    def version(self) -> int:
        return ALGORITHM_VERSION

    def __call__(self, image: np.ndarray) -> np.ndarray:
        ss = (selective_search(image, self.selective_search)
              if self.selective_search is not None else np.zeros((0, 4), np.float32))
        if self.multibox is None:
            return ss
        from proposals.multibox import predict

        boxes, _ = predict(multibox_model(self.multibox), image, top_n=self.multibox_top,
                           nms_iou=self.multibox_nms)
        return merge_proposals(boxes.numpy(), ss)


def build_proposer(config: ProposalConfig) -> Proposer:
    """The proposer of ``config``. Its MultiBox checkpoint, if any, is read and checked here
    (a MultiBox checkpoint of a readable format whose weights fit its spec), so a wrong file is
    one error before any image."""
    search = config.selective_search if config.selective_search_on else None
    if config.multibox is None:
        return Proposer(search)
    from proposals.checkpoint import load_checkpoint
    from proposals.multibox import CHECKPOINT_KIND, network_of

    payload = load_checkpoint(config.multibox, kind=CHECKPOINT_KIND)
    network = _register(network_of(payload), config.multibox, embedded=False)
    return Proposer(search, network, config.multibox_top, config.multibox_nms)


def proposer_for(method: str, params: dict, where: str,
                 network: MultiBoxSource | None = None) -> Proposer:
    """The proposer that a cache manifest's or a checkpoint's (method, params) describe.

    ``where`` names the checkpoint or cache in messages. ``network``: the MultiBox network the
    checkpoint carries (`embedded_multibox`), needed by the methods with MultiBox boxes.
    """
    try:
        if method == SELECTIVE_SEARCH:
            config = ProposalConfig(SelectiveSearchConfig(**params))
        elif method in (COMBINED, MULTIBOX):
            mb = params["multibox"]
            ss = SelectiveSearchConfig(**params.get("selective_search", {}))
            config = ProposalConfig(ss, None, mb["top_n"], mb["nms_iou"],
                                    selective_search_on=method == COMBINED)
        else:
            raise DetectionError(f"{where}: unknown proposal method {method!r}; pass a proposal "
                                 "cache with --proposals")
    except (TypeError, KeyError, ValueError) as e:  # ValueError: a value out of range
        raise DetectionError(f"{where}: unreadable {method} proposal parameters {params} ({e}); "
                             "pass a proposal cache with --proposals") from None
    if method == SELECTIVE_SEARCH:
        return Proposer(config.selective_search)
    if network is None:
        raise DetectionError(f"{where}: its {method} proposals need a MultiBox network that it "
                             "does not carry (an older checkpoint, which stored the network's "
                             "path); retrain it with this version, or pass a proposal cache "
                             "with --proposals")
    if network.digest != params["multibox"].get("network_sha256"):
        raise DetectionError(f"{where}: the MultiBox network inside it is not the one its "
                             "proposal record names; the checkpoint is corrupt: retrain it")
    return Proposer(config.selective_search if config.selective_search_on else None, network,
                    config.multibox_top, config.multibox_nms)


def embedded_multibox(path: str | os.PathLike, record: dict | None) -> MultiBoxSource | None:
    """The MultiBox network inside a classifier checkpoint at ``path`` whose proposal record
    is ``record`` (None when it carries none), checked: its weights fit its spec."""
    if not record or "multibox" not in record:
        return None
    if not isinstance(record["multibox"], dict):
        raise DetectionError(f"{path}: malformed MultiBox network in its proposal record; "
                             "the checkpoint is corrupt: retrain it")
    return _register(record["multibox"], path, embedded=True)


def proposal_record(cache: ProposalCache, multibox: str | os.PathLike | None = None) -> dict:
    """What a classifier checkpoint stores about the proposals it was trained on (``cache``'s),
    so that detection recomputes the same ones for new images (`proposer_for`): the cache's
    method and params and, for MultiBox proposals, the MultiBox network itself, read from the
    checkpoint ``multibox`` (the training config's ``proposals.multibox``) and checked to be
    the network that made the cache. The checkpoint then works from any folder or machine."""
    record = {"method": cache.method, "params": cache.params}
    uses_multibox = cache.method in (COMBINED, MULTIBOX)
    if not uses_multibox:
        if multibox is not None:
            raise DetectionError(f"{cache.root}: holds {cache.method} proposals, without "
                                 f"MultiBox boxes, but proposals.multibox names {multibox}; "
                                 "fill a new cache with tools/propose.py --config CONFIG, or "
                                 "drop proposals.multibox")
        return record
    if multibox is None:
        raise DetectionError(f"{cache.root}: holds {cache.method} proposals; a classifier "
                             "trained on them carries their MultiBox network: name its "
                             "checkpoint in the training config's proposals.multibox")
    wanted = cache.params.get("multibox", {}).get("network_sha256")
    if wanted is None:
        raise DetectionError(f"{cache.root}: made by an older version, which recorded the "
                             "MultiBox checkpoint's path rather than its network; fill a new "
                             "cache with tools/propose.py --config CONFIG")
    from proposals.checkpoint import load_checkpoint
    from proposals.multibox import CHECKPOINT_KIND, network_digest, network_of

    network = network_of(load_checkpoint(multibox, kind=CHECKPOINT_KIND))
    if network_digest(network) != wanted:
        raise DetectionError(f"{multibox}: not the MultiBox network that made the proposals in "
                             f"{cache.root}; set proposals.multibox to that one, or fill a new "
                             "cache with tools/propose.py --config CONFIG")
    return {**record, "multibox": network}


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


_MODELS: dict[str, object] = {}  # per process: MultiBox networks (CPU, eval) by digest


def multibox_model(source: MultiBoxSource):
    """The `proposals.multibox.MultiBox` network of ``source`` in this process (read from its
    file on first use, e.g. in a worker process, and checked against its digest)."""
    if source.digest not in _MODELS:
        from proposals.checkpoint import load_checkpoint
        from proposals.multibox import CHECKPOINT_KIND, network_of

        if source.embedded:
            network = (load_checkpoint(source.path).get("proposals") or {}).get("multibox")
        else:
            network = network_of(load_checkpoint(source.path, kind=CHECKPOINT_KIND))
        if not isinstance(network, dict) or _register(network, source.path,
                                                      source.embedded).digest != source.digest:
            raise DetectionError(f"{source.path}: changed since its MultiBox network was read "
                                 "(another file at that path); keep the file while proposals "
                                 "are computed")
    return _MODELS[source.digest]


def _register(network: dict, path: str | os.PathLike, embedded: bool) -> MultiBoxSource:
    """Build ``network`` (its weights must fit its spec), keep it in this process, and say where
    other processes find it."""
    from proposals.multibox import multibox_from_payload, network_digest

    where = f"{path} (its proposals' MultiBox network)" if embedded else str(path)
    model = multibox_from_payload(network, where).eval()
    digest = network_digest(network)
    _MODELS.setdefault(digest, model)
    return MultiBoxSource(os.path.abspath(path), embedded, digest)
