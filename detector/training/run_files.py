"""What a training run writes besides its weights' payload: checkpoint names, ``metrics.csv``
(one row per epoch) and, where tensorboard is installed, its event files."""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from eval.outputs import append_text


def write_checkpoint(out: Path, save: Callable[..., None], **payload) -> None:
    """``epoch_NNN.pt`` and ``last.pt`` under ``out``; ``save(path, **payload)`` writes one
    (atomically: a run killed mid-write leaves the previous file whole)."""
    save(out / f"epoch_{payload['epoch']:03d}.pt", **payload)
    save(out / "last.pt", **payload)


class MetricsLog:
    """metrics.csv (one row per epoch) and, where tensorboard is installed, its event files.

    ``enabled`` is False on every DDP rank but 0; ``fresh`` (a run from epoch 0) drops the rows
    of an earlier run in the same folder, a resumed run appends to them.
    """

    def __init__(self, folder: Path, columns: tuple[str, ...], enabled: bool, fresh: bool):
        self.enabled, self.path, self.writer = enabled, folder / "metrics.csv", None
        self.columns = ("epoch",) + columns
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if fresh:  # a new run in an old folder: its rows must not follow the old run's
            self.path.unlink(missing_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(folder / "tensorboard"))
        except ImportError:
            pass

    def write(self, epoch: int, metrics: dict) -> None:
        """Append one epoch's row (columns not in ``metrics`` stay empty)."""
        if not self.enabled:
            return
        row = io.StringIO()
        writer = csv.DictWriter(row, fieldnames=self.columns, extrasaction="ignore")
        if not self.path.exists():
            writer.writeheader()
        writer.writerow({"epoch": epoch, **{k: f"{v:.6g}" for k, v in metrics.items()}})
        append_text(self.path, row.getvalue())
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, epoch)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
