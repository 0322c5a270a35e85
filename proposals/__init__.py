"""Region proposals: selective search, MultiBox, their combination and the per-image cache, and
what the detector shares with them (the GoogLeNet trunk, checkpoints, devices, defaults).

    from proposals import ProposalConfig, build_proposer, folder_jobs, propose_to_cache
    jobs, skipped = folder_jobs("photos/")
    if __name__ == "__main__":  # worker processes re-import this script
        propose_to_cache(jobs, "cache/ss_x2", ProposalConfig(), workers=2)

The names below are imported on first use (module ``__getattr__``): `proposals.config` and
`proposals.defaults` stay readable without OpenCV and torch (the commands' ``--help``, the
training config), which the rest needs.
"""
from __future__ import annotations

from eval.lazy import lazy_attributes

# The public face: name -> the module that defines it.
_PUBLIC = {
    "ProposalConfig": "proposals.config",
    "SelectiveSearchConfig": "proposals.config",
    "ProposalCache": "proposals.cache",
    "Proposer": "proposals.combined",
    "build_proposer": "proposals.combined",
    "selective_search": "proposals.selective_search",
    "folder_jobs": "proposals.extract",
    "dataset_jobs": "proposals.extract",
    "propose_to_cache": "proposals.extract",
    "convert_proposals": "proposals.formats",
    "evaluate_caches": "proposals.report",
}
__all__ = sorted(_PUBLIC)
__getattr__ = lazy_attributes(__name__, _PUBLIC)
