"""Our proposal cache (`proposals.cache.ProposalCache`) as one end of a conversion.

Read image by image (only the images asked for); written image by image into a cache whose
manifest says where the boxes came from. An import of another toolkit's file gets method
`IMPORTED` and params naming the file's format and SHA-256 (and, for a file whose images go by
position, the SHA-256 of the order they were given), so it is never taken for selective search
output: `detector.api` notes the difference, training records it in its checkpoints, and
detection without this cache says the proposals cannot be recomputed. Writing into an existing
cache resumes the same import (images already there are skipped) and refuses anything else.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

from tqdm import tqdm

from eval.errors import DetectionError
from proposals.cache import ProposalCache
from proposals.formats.common import Proposals

IMPORTED = "imported"  # the method of a cache made from another toolkit's proposal file
IMPORT_VERSION = 1      # of the conversion: a changed conversion must not resume an old import


def read_cache(root: str | os.PathLike, ids: Sequence | None = None,
               progress: bool = False) -> Proposals:
    """The proposals of ``ids`` (default: every image with boxes, sorted) in the cache
    ``root``. An image recorded as failed, or never computed, is one error before any is read;
    without ``ids``, failed images are left out with a warning."""
    cache = ProposalCache.open(root)
    if ids is None:
        ids = cache.image_ids()
        failed = cache.failed_ids()
        if failed:
            warnings.warn(f"{root}: {len(failed)} image(s) recorded as failed (such as "
                          f"{failed[0]!r}) have no proposals and are left out")
    else:
        _check_held(cache, ids)
    boxes = [cache.load(image_id) for image_id in tqdm(ids, desc="reading", unit="img",
                                                       disable=not progress)]
    return Proposals(list(ids), boxes, str(root))


def _check_held(cache: ProposalCache, ids: Sequence) -> None:
    failed, missing = cache.partition(ids)
    if failed:
        raise DetectionError(f"{cache.root}: image {failed[0]!r} is recorded as failed "
                             f"({cache.failure(failed[0])}), {len(failed)} image(s) in all, and "
                             "has no proposals; recompute them with tools/propose.py, or list "
                             "the images without them (--ids)")
    if missing:
        raise DetectionError(f"{cache.root}: no proposals for image {missing[0]!r} "
                             f"({len(missing)} of the {len(ids)} images listed); is it the cache "
                             "of this dataset? Fill it with tools/propose.py")


def write_cache(proposals: Proposals, root: str | os.PathLike, method: str, params: dict,
                version: int | None, progress: bool = False) -> int:
    """Save ``proposals`` (with ids) into the cache ``root`` of ``method``/``params``/
    ``version``, created if missing; an existing one must have that manifest (one made
    otherwise is refused before anything is written). Images already there are kept (a
    resumed import). Returns how many were already there."""
    cache = ProposalCache.create(root, method, params, version)
    todo = [k for k, image_id in enumerate(proposals.ids) if image_id not in cache]
    for k in tqdm(todo, desc="writing", unit="img", disable=not progress):
        cache.save(proposals.ids[k], proposals.boxes[k])
    return len(proposals.ids) - len(todo)
