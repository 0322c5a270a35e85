"""What a training run writes besides its weights' payload: checkpoint names, ``metrics.csv``
(one row per epoch) and, where tensorboard is installed, its event files."""
from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from pathlib import Path

from eval.errors import DetectionError
from eval.outputs import append_text


def write_checkpoint(out: Path, save: Callable[..., None], **payload) -> None:
    """``epoch_NNN.pt`` and ``last.pt`` under ``out``; ``save(path, **payload)`` writes one
    (atomically: a run killed mid-write leaves the previous file whole)."""
    save(out / f"epoch_{payload['epoch']:03d}.pt", **payload)
    save(out / "last.pt", **payload)


def run_files(out: Path) -> list[Path]:
    """What a training run leaves in its folder ``out`` (sorted; none if it holds no run)."""
    if not out.is_dir():
        return []
    names = {"last.pt", "config.yaml", "metrics.csv", "tensorboard"}
    return sorted(p for p in out.iterdir() if p.name in names
                  or (p.name.startswith("epoch_") and p.name.endswith(".pt")))


def check_fresh_output(out: Path, overwrite: bool) -> list[Path]:
    """A new run's folder must not hold another run, unless ``overwrite`` (then its files are
    returned, for `clear_run`): replacing ``last.pt`` and ``metrics.csv`` while the old
    ``epoch_NNN.pt`` stay would mix two runs."""
    found = run_files(out)
    if found and not overwrite:
        shown = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise DetectionError(f"output {out}: holds a training run ({shown}); continue it with "
                             f"--resume {out / 'last.pt'}, replace it with --overwrite "
                             "(overwrite=True), or set output=ANOTHER_FOLDER")
    return found


def clear_run(files: list[Path]) -> None:
    """Delete an old run's files (`check_fresh_output` with ``overwrite``)."""
    for path in files:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


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
