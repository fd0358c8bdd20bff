"""`pipeline train`: a full training run through axolotl, with checkpoints, and `--resume` after a stop.

    pipeline train [CONFIG] [--set KEY=VALUE] [--runs-dir DIR]
    pipeline train --resume [RUN]        continue the newest unfinished run (or RUN) from its last
                                         complete checkpoint, in the same run folder

A run folder `RUNS/<time>-<config>-train/` holds the resolved config, the manifest and metrics.jsonl (see
`pipeline.core.runs`); axolotl writes its checkpoints (`checkpoint-<step>/`, as the config's
`saves_per_epoch`/`save_steps` say; once per epoch by default) and, at the end, the adapter into
`RUN/output/`. Axolotl's own progress bars stream to the terminal and a one-line status is printed at every
epoch and evaluation.

Interruptions. SIGINT and SIGTERM reach axolotl through `pipeline.core.engine`. Axolotl dies on SIGTERM and,
on SIGINT, saves the adapter as it stands and exits 0, which the engine reports as the signal it forwarded.
A run counts as finished only when the metrics recorder wrote its `end` record at the last step; anything
less is `interrupted` (exit 130, a signal) or `failed` (exit 3: axolotl crashed, was killed, ran out of
memory or disk, or stopped short of its steps with no signal). Both can be resumed. The run folder is
locked for the whole attempt (`pipeline.core.lock`): a second `--resume` of the same run is refused.
A data file that changed while the run read it fails the run; one that changed since it started refuses
`--resume` (the manifest holds the sha256 of the data that trained).

Resuming. The newest *complete* checkpoint is the one whose `trainer_state.json` (written last by the
trainer) parses and names its own step; later, half-written ones are deleted. Axolotl continues from it
with `--resume-from-checkpoint` (optimizer, scheduler, RNG and data position are restored), on the run's
own config.yaml, unchanged. The metrics of steps after that checkpoint are moved to
`metrics.attempt-<n>.jsonl` before the resumed process re-logs them, so metrics.jsonl always reads as one
run. Every attempt is listed in the manifest under `attempts`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from pipeline import checks
from pipeline.core import cache, config, lock, outcome, provenance, runs, safeio, summary
from pipeline.core import nodes as several
from pipeline.core.errors import ExitCode, UserError, printable
from pipeline.core.proc import recorded_alive, sigterm_as_interrupt
from pipeline.core.run_outputs import (  # noqa: F401 - checkpoints, is_complete: train's API, read by the tests
    checkpoint_step,
    checkpoints,
    discard_after,
    is_complete,
    last_complete_checkpoint,
)
from pipeline.stages.progress import Progress  # noqa: F401 - train's API too: the tests tail through it

STAGE = "train"


def main(config_path: str | None, *, resume: str | None, overrides: dict[str, Any], runs_dir: Path,
         gpus: int | None = None, nodes: several.Topology | None = None) -> int:
    """Train CONFIG in a new run folder, or (with `resume`) continue an unfinished run.

    config_path: the axolotl YAML (required unless resuming)
    resume: None for a new run; "" for the newest unfinished run (of CONFIG, if given); else a run name/path
    overrides: `--set` values, applied to this run's resolved config only (not allowed with resume)
    runs_dir: where run folders are
    gpus: processes, one per GPU, through axolotl's torchrun launcher (default 1; resumed: as before)
    nodes: this node's place in a run over several nodes (pipeline.core.nodes), None for one node
    """
    cache.require_writable()  # prepared data and built models live there
    if resume is not None:
        if overrides:
            raise UserError.at("<command line>", None, "resume-overrides",
                               "--set cannot be combined with --resume: a run continues with its own "
                               "config.yaml; start a new run to change settings")
        run = find_resumable(runs_dir, several.resume_ref(runs_dir, resume, nodes), config_path)
        return resume_run(run, gpus=gpus, nodes=nodes)

    assert config_path is not None
    gpus = gpus or 1
    cfg, resolved, reach = load(config_path, overrides)
    from pipeline.checks import compute_plan
    from pipeline.core import run_start

    resolved.axolotl.update(several.cpu_settings(nodes, gpus))
    resolved, chosen = compute_plan.plan(resolved, reach)
    run = run_start.start_run(STAGE, resolved, runs_dir, compute=chosen, world_size=gpus, attempts=[])
    print(printable(f"==> train: {cfg.path} -> {run.path}"), file=sys.stderr)
    return attempt(run, gpus=gpus, offline=resolved.offline, checkpoint=None, nodes=nodes)


def load(config_path: str, overrides: dict[str, Any]) -> tuple[config.LoadedConfig, config.ResolvedConfig, Any]:
    """The config after the overrides, checked (the same entry as `pipeline check`) and resolved, and the check's
    compute.Reach; bad input raises UserError before anything is written."""
    cfg, warnings, reach = checks.for_run(config_path, overrides)
    for warning in warnings:
        print(printable(f"warning: {warning}"), file=sys.stderr)
    return cfg, config.resolve(cfg), reach


# --- one attempt: launch axolotl, watch it, record how it ended -------------------------------------------

def attempt(run: runs.Run, *, gpus: int, offline: bool, checkpoint: Path | None, nodes: several.Topology | None = None) -> int:
    """Run axolotl once on the run's config.yaml (from `checkpoint` if given); finish the manifest."""
    from pipeline.core import engine  # light: it launches axolotl in a child process and never imports it

    run.take_lock()
    assert run.lock is not None
    checkpoint = several.join(run, nodes, gpus=gpus, checkpoint=checkpoint)  # every node the same, or none
    manifest = run.manifest()
    attempts = list(manifest.get("attempts") or [])
    this: dict[str, Any] = {
        "started": runs.now(), "pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
        "from_checkpoint": checkpoint.name if checkpoint else None,
        "from_step": checkpoint_step(checkpoint) if checkpoint else 0,
    }
    try:
        run.update_manifest(status="running", pid=os.getpid(), host=socket.gethostname(), finished=None,
                            attempts=[*attempts, this])
    except OSError as exc:
        raise runs.unwritable(run.path, exc) from None

    # SIGTERM outside axolotl's run (loading, recording) ends the attempt like Ctrl-C: recorded, exit 130
    sigterm_as_interrupt()
    args = [f"--resume-from-checkpoint={checkpoint}"] if checkpoint else []
    cmd = engine.command("train", run.path / "config.yaml", gpus=gpus, args=args, nodes=nodes)
    progress = Progress(run.metrics_path, sys.stderr)
    progress.start()
    started = time.perf_counter()
    try:
        code = engine.run(cmd, engine.environment(run.metrics_path, offline, gpus=gpus, extra=several.environment(
            nodes, gpus)), run.path / "axolotl.log", pass_fds=(run.lock.fd,))
    except KeyboardInterrupt:  # a second Ctrl-C while axolotl was already stopping
        code = 130
    finally:
        progress.stop()
    runtime = time.perf_counter() - started
    several.say_lost(run, code, nodes)

    records = run.metrics(strict=False)
    s = summarize(run)
    ended = outcome.judge(run, code, records, stage=STAGE, subject=run.path, planned=s.get("max_steps"),
                          reached=finished_at(records), hashes=manifest.get("data") or {},
                          keep_prepared=checkpoint is not None)
    ended.say()

    last = last_complete_checkpoint(run.output_dir)
    this.update(finished=runs.now(), exit_code=code, status=ended.status, runtime_s=round(runtime, 2),
                reached_step=s.get("steps"))
    fields: dict[str, Any] = {
        "exit_code": ended.exit_code, "axolotl_exit_code": code, "runtime_s": round(runtime, 2),
        "attempts": [*attempts, this], "last_checkpoint": last.name if last else None,
        "summary": {k: v for k, v in s.items() if k != "losses"},
    }
    if ended.ok:
        fields["adapter"] = str(run.output_dir)
    if not outcome.record(run, ended, then=f"; after freeing space: pipeline train --resume {run.path}", **fields):
        return ended.exit_code if ended.exit_code != int(ExitCode.OK) else int(ExitCode.ENGINE)

    print(closing(run, ended, code, s, last), file=sys.stderr)
    return ended.exit_code


def closing(run: runs.Run, ended: outcome.Outcome, child: int, s: dict[str, Any], last: Path | None) -> str:
    """What an attempt ends by saying: the result and where to go from there."""
    if ended.ok:
        return f"{printable(report_line(run.name, s))}\n" + printable(f"adapter: {run.output_dir}") + "\n" + \
            printable(f"next: pipeline merge {run.path}")
    if ended.status == outcome.INTERRUPTED:
        where = f"its last complete checkpoint is {last.name}" if last else "no checkpoint was complete yet"
        return printable(f"{run.name}: interrupted at step {s.get('steps', 0)}; {where}. Continue with: "
                         f"pipeline train --resume {run.path}")
    return printable(f"{run.name}: axolotl exited with status {child}; see {run.path / 'axolotl.log'}. "
                     f"After fixing the cause: pipeline train --resume {run.path}")


def finished_at(records: list[dict[str, Any]]) -> bool:
    """True when the recorder saw training end at its last planned step (not a SIGINT save)."""
    starts = [r for r in records if r.get("kind") == "start"]
    ends = [r for r in records if r.get("kind") == "end"]
    if not starts or not ends:
        return False
    planned = starts[-1].get("max_steps")
    return planned is None or ends[-1].get("step") == planned


def summarize(run: runs.Run) -> dict[str, Any]:
    """The core summary, with memory peaks over every attempt (each process has its own peak)."""
    records = run.metrics(strict=False)
    s = summary.summarize(records)
    earlier = [r for p in sorted(run.path.glob("metrics.attempt-*.jsonl")) for r in runs.read_jsonl(p, strict=False)]
    for key in ("peak_rss_gib", "peak_vram_allocated_gib", "peak_vram_reserved_gib"):
        values = [r.get(key) or 0.0 for r in [*records, *earlier] if r.get("kind") in ("train", "end")]
        if values:
            s[key] = max(values)
    start = next((r for r in records if r.get("kind") == "start"), {})
    s["max_steps"] = start.get("max_steps")
    return s


def report_line(name: str, s: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    line = f"{name}: {s.get('steps')} steps, train loss {f(s.get('first_loss'))} -> {f(s.get('final_loss'))}"
    if s.get("eval_loss") is not None:
        line += f", validation loss {f(s.get('first_eval_loss'))} -> {f(s.get('eval_loss'))}"
    return line


# --- resuming -----------------------------------------------------------------------------------------------

def find_resumable(runs_dir: Path, ref: str, config_path: str | None) -> runs.Run:
    """The run `ref` names, or the newest unfinished train run (of `config_path`, if given)."""
    if ref and ref.endswith((".yaml", ".yml")) and Path(ref).is_file() and config_path is None:
        ref, config_path = "", ref  # `pipeline train --resume CONFIG`: argparse gave the config to --resume
    if ref:
        run = runs.find(runs_dir, ref)
        path = run.path
        m = run.manifest()
        if m.get("stage") != STAGE:
            raise UserError.at(str(path), None, "resume-not-train",
                               f"{run.name} is a {m.get('stage')} run; only train runs can be resumed")
        if finished(run, m):
            raise UserError.at(str(path), None, "resume-finished",
                               f"{run.name} finished already ({(m.get('summary') or {}).get('steps')} steps); "
                               f"nothing to resume")
        if is_alive(m):
            raise UserError.at(str(path), None, "resume-running",
                               f"{run.name} is still running (pid {m.get('pid')}); stop it first")
        return run
    wanted = str(Path(config_path).resolve()) if config_path else None
    for run in reversed(runs.all_runs(runs_dir)):
        m = run.manifest()
        if m.get("stage") != STAGE or is_alive(m) or lock.holder(run.path) or finished(run, m, quiet=True):
            continue
        if wanted and (m.get("config") or {}).get("path") != wanted:
            continue
        return run
    scope = f" of {config_path}" if config_path else ""
    raise UserError.at(str(runs_dir), None, "resume-none",
                       f"no unfinished train run{scope} to resume; start one with `pipeline train`")


def finished(run: runs.Run, manifest: dict[str, Any], quiet: bool = False) -> bool:
    """Whether the run trained to its end: its manifest says so, or, whatever the manifest's status holds
    (hand-edited, damaged, or a disk that filled while it was recorded), its metrics show training ended
    at the planned step. Damaged metrics: DamagedRun, or (quiet, when scanning) not finished."""
    if manifest.get("status") == "succeeded":
        return True
    try:
        return finished_at(run.metrics())
    except runs.DamagedRun:
        if quiet:
            return False
        raise


def is_alive(manifest: dict[str, Any]) -> bool:
    """A `running` manifest of another process that still exists on this host (proc.recorded_alive's rule)."""
    return (manifest.get("status") == "running" and manifest.get("pid") != os.getpid()
            and recorded_alive(manifest) is True)


def resume_run(run: runs.Run, *, gpus: int | None, nodes: several.Topology | None = None) -> int:
    run.take_lock()  # from here on no other command writes this folder
    m = run.manifest()
    several.check_resume(run, m, nodes)
    if finished(run, m):  # it may have finished while we waited to look
        raise UserError.at(str(run.path), None, "resume-finished", f"{run.name} finished already; nothing to resume")
    check_config(run, m)
    if changed := provenance.changed_data(m.get("data") or {}):
        raise UserError.at(str(run.path), None, "resume-data-changed",
                           f"{', '.join(changed)} changed since the run started (its sha256 is in the manifest); "
                           f"restore it to resume, or start a new run on the new data")
    checkpoint = last_complete_checkpoint(run.output_dir, say=True)
    step = checkpoint_step(checkpoint) if checkpoint else 0
    if (folder := runs.prepared_data(run)) is not None:  # a disk that filled while axolotl saved it
        from pipeline.core import prepared

        for cut in prepared.drop_incomplete_prepared(folder):
            print(printable(f"note: removed {cut}: prepared data the last attempt left cut short"), file=sys.stderr)
    try:
        discarded = discard_after(run.output_dir, step)
        archived = rewind_metrics(run, step)
    except OSError as exc:
        raise runs.unwritable(run.path, exc) from None
    if checkpoint:
        print(printable(f"==> train --resume: {run.path} from {checkpoint.name} (step {step})"), file=sys.stderr)
    else:
        print(printable(f"==> train --resume: {run.path} has no complete checkpoint; starting again from step 0"),
              file=sys.stderr)
    for path in discarded:
        print(printable(f"    deleted the incomplete {path.name}"), file=sys.stderr)
    resumes = list(m.get("resumes") or [])
    resumes.append({"at": runs.now(), "from_checkpoint": checkpoint.name if checkpoint else None,
                    "from_step": step,
                    "discarded_checkpoints": [p.name for p in discarded],
                    "archived_metrics": archived.name if archived else None})
    try:
        run.update_manifest(resumes=resumes)
    except OSError as exc:
        raise runs.unwritable(run.path, exc) from None
    return attempt(run, gpus=gpus or several.gpus_per_node(m), offline=bool(m.get("offline", True)),
                   checkpoint=checkpoint, nodes=nodes)


def check_config(run: runs.Run, manifest: dict[str, Any]) -> None:
    """The run's config.yaml, as axolotl will get it again: read bounded and parsed with bounded YAML (an
    alias bomb or a FIFO in its place is one line), and byte for byte the one the run started with (the
    manifest holds its sha256): `resume-config-changed` otherwise."""
    path = run.path / "config.yaml"
    runs.run_config(run)  # missing, not a file, too large, not YAML, no base_model: one line
    wanted = (manifest.get("config") or {}).get("resolved_sha256")
    try:
        now = hashlib.sha256(safeio.read_bytes(path, "run-config", safeio.MAX_CONFIG_BYTES, follow=False)).hexdigest()
    except safeio.BadFile as exc:
        raise exc.user_error(path) from None
    if isinstance(wanted, str) and now != wanted:
        raise UserError.at(str(path), None, "resume-config-changed",
                           "the run's config.yaml is not the one it started with (its sha256 is in the manifest); "
                           "restore it, or start a new run with `pipeline train`")


def rewind_metrics(run: runs.Run, step: int) -> Path | None:
    """Keep metrics.jsonl up to `step`; the rest (re-logged by the resumed process) moves to an archive.

    The kept part is written first, so a full disk leaves metrics.jsonl as it was, not missing."""
    if not run.metrics_path.exists():
        return None
    n = len(list(run.path.glob("metrics.attempt-*.jsonl"))) + 1
    archive = run.path / f"metrics.attempt-{n}.jsonl"
    kept = [] if step == 0 else [
        r for r in runs.read_jsonl(run.metrics_path)
        if r.get("kind") == "start" or (r.get("kind") in ("train", "eval") and (r.get("step") or 0) <= step)]
    rewound = run.path / ".metrics.rewound"
    runs.write_atomic(rewound, "".join(json.dumps(r) + "\n" for r in kept))
    os.replace(run.metrics_path, archive)
    os.replace(rewound, run.metrics_path)
    return archive
