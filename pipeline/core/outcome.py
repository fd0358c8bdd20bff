"""How an axolotl run ended, judged in one place for the stages that train (smoke and train).

Axolotl's exit status alone does not say it. Axolotl exits 0 when the metrics recorder never loaded
(nothing was measured), and when training stopped short of its planned steps; after a SIGINT it saves
and exits 0 too, which `pipeline.core.engine.run` reports as the signal it forwarded. A data file that
changed while the run read it fails the run whatever the status: the manifest's sha256 may not be what
trained. `judge` weighs these, in that order, into the manifest's status, the exit code and the one line
that says what went wrong; `record` writes that end into the manifest, and says in one line when a full
disk refuses even that. What a stage judges beyond this (smoke's bounds, train's checkpoints) stays in
the stage.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import provenance, runs
from pipeline.core.errors import SIGNALLED, ExitCode, printable

SUCCEEDED, INTERRUPTED, FAILED = "succeeded", "interrupted", "failed"

#: each stage's words for a run that stopped short and for data that changed under it (as they always read)
STEPS_SHORT = {
    "smoke": "axolotl exited 0 after {steps} of {planned} steps",
    "train": "axolotl exited 0 at step {steps} of {planned}",
}
DATA_CHANGED = {
    "smoke": "changed while the run read it, so the manifest's hashes may not be what trained; the run is "
             "marked failed, smoke it again",
    "train": "changed during the run, so the manifest's hashes may not be what trained; the run is marked "
             "failed: train again",
}


@dataclass(frozen=True)
class Outcome:
    """How one run ended: the manifest's status, the exit code it stands for, and what went wrong."""

    status: str
    exit_code: int
    #: the one line that says what went wrong where axolotl's exit status does not (`path: rule-id: ...`)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def say(self) -> None:
        if self.problem:
            print(printable(self.problem), file=sys.stderr)


def judge(run: runs.Run, child: int, records: list[dict[str, Any]], *, stage: str, subject: Path,
          planned: int | None, reached: bool, hashes: Mapping[str, str], keep_prepared: bool = False) -> Outcome:
    """How the run ended, from axolotl's exit status `child` and what the recorder wrote (`records`).

    stage: "smoke" or "train" (the words of its lines)
    subject: what the line names first: the config of a smoke, the folder of a training run
    planned: the optimizer steps the run set out to do; reached: whether it did, by the stage's measure
    hashes: the data files' sha256 as the manifest holds them, compared with the files now
    keep_prepared: keep the prepared rows of changed data (a resumed run prepared them before the change)
    """
    log = run.path / "axolotl.log"
    problem = None
    if child == 0 and not any(r.get("kind") == "start" for r in records):
        problem = (f"{subject}: metrics-missing: axolotl ran but the metrics recorder did not load (see {log}); "
                   f"is the pipeline package importable there?")
        status, code = FAILED, int(ExitCode.ENGINE)
    elif child == 0 and reached:
        status, code = SUCCEEDED, int(ExitCode.OK)
    elif child in SIGNALLED:  # engine.run reports a signal we forwarded even where axolotl then exited 0
        status, code = INTERRUPTED, int(ExitCode.INTERRUPTED)
    elif child == 0:  # it stopped short of its steps with no signal: never a success
        steps = next((r.get("step") for r in reversed(records) if r.get("kind") == "train"), 0) or 0
        problem = f"{subject}: steps-short: {STEPS_SHORT[stage].format(steps=steps, planned=planned)}; see {log}"
        status, code = FAILED, int(ExitCode.ENGINE)
    else:
        status, code = FAILED, int(ExitCode.ENGINE)
    if changed := provenance.changed_data(dict(hashes)):
        problem = f"{subject}: data-changed: {', '.join(changed)} {DATA_CHANGED[stage]}"
        if not keep_prepared and (prepared := runs.prepared_data(run)) is not None:
            shutil.rmtree(prepared, ignore_errors=True)  # it may hold the new rows under the old content's key
        status, code = FAILED, code if code != int(ExitCode.OK) else int(ExitCode.FAILED)
    return Outcome(status, code, problem)


def record(run: runs.Run, ended: Outcome, *, then: str = "", **fields: Any) -> bool:
    """Finish the manifest with `ended` (its status, its problem line) and `fields`; False, after one line
    that says so (`then` appended), when the disk refuses even that and the manifest still says running."""
    if ended.problem:
        fields["problem"] = ended.problem
    try:
        runs.finish_manifest(run, ended.status, **fields)
    except OSError as exc:
        print(printable(f"{run.manifest_path}: run-unwritable: cannot record how the run ended ({exc.strerror}); "
              f"`pipeline runs` shows it as killed{then}"), file=sys.stderr)
        return False
    return True
