"""Train's progress lines: one status line per epoch and per evaluation, read from the run's metrics.jsonl while
axolotl writes it. A helper of `pipeline.stages.train`, not a stage."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, TextIO

from pipeline.core import runs, safeio


class Progress(threading.Thread):
    """Prints one status line per epoch and per evaluation by tailing metrics.jsonl (cheap: 1 poll/s)."""

    def __init__(self, path: Path, out: TextIO, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.path, self.out, self.interval = path, out, interval
        self.offset = path.stat().st_size if path.exists() else 0
        self.done = threading.Event()
        self.max_steps: int | None = None
        self.epochs: float | None = None
        self.last_epoch: int | None = None

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.poll()
        self.poll()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)

    def poll(self) -> None:
        try:  # bytes: a damaged line must not end the thread; bounded: nor a FIFO or /dev/zero in its place
            with safeio.open_regular(self.path, "metrics", safeio.MAX_METRICS_BYTES, follow=False) as fh:
                fh.seek(self.offset)
                chunk = fh.read(safeio.MAX_METRICS_BYTES)
        except (safeio.BadFile, OSError):
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self.offset += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            try:
                if (record := runs.parse_record(line)) is not None:
                    self.show(record)
            except (ValueError, TypeError, OverflowError):  # a null loss, an epoch of 1e999: no status line
                continue

    def show(self, r: dict[str, Any]) -> None:
        kind = r.get("kind")
        if kind == "start":
            self.max_steps = r.get("max_steps")
            return
        of = f"/{self.max_steps}" if self.max_steps else ""
        if kind == "train" and r.get("epoch") is not None:
            epoch = math.floor(float(r["epoch"]) + 1e-6)
            if self.last_epoch is None and abs(float(r["epoch"]) - epoch) > 1e-6:
                self.last_epoch = epoch  # the first step seen (of a fresh or a resumed run) ends no epoch
            elif epoch > (self.last_epoch or 0):
                self.last_epoch = epoch
                self.emit(f"[train] epoch {epoch} done: step {r['step']}{of}, loss {r.get('loss'):.4f}, "
                          f"lr {r.get('learning_rate') or 0:.2e}, {r.get('elapsed_s') or 0:.0f}s")
        elif kind == "eval" and r.get("eval_loss") is not None:
            self.emit(f"[train] eval at step {r['step']}{of}: validation loss {r['eval_loss']:.4f}")

    def emit(self, text: str) -> None:
        try:
            self.out.write("\n" + text + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass
