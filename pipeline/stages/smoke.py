"""`pipeline smoke`: run each config for a few steps and judge it against its bounds.

The seed's quick test, made repeatable: every config runs `--max-steps` optimizer steps (3 by default)
through axolotl in its own run folder, and the command prints the table people read it for:

    Config | Runtime | Peak VRAM (RSS on CPU) | Trainable Params | Throughput (tok/s) | MFU | Final Loss

Runtime is the whole axolotl process (imports, data preparation, model load, steps); a line under the
table splits it into phases (see pipeline.in_axolotl.recorder), after the time this process spent checking
and resolving the config before it launched axolotl. Throughput is
steady-state tokens per second (all tokens, first step left out); MFU is that throughput per GPU times the
model's FLOPs per token (pipeline.checks.flops) over the card's dense bf16 ceiling (pipeline.core.cards),
where the card's ceiling is known (`-` on a CPU). Peak memory is the whole-run peak of
allocated GPU memory, or the process's peak resident memory on a CPU. The same figures go to
`smoke.json` in each run folder and to one combined JSON file. A broken bound fails the command (exit 1)
with one line naming the bound, the limit and the value.

Smoke runs never save checkpoints or evaluate between steps: they measure training, not I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline import checks
from pipeline.checks import compute_plan, flops
from pipeline.core import bounds, cache, config, engine, outcome, provenance, run_start, runs, safeio, section, summary
from pipeline.core import nodes as several
from pipeline.core.errors import SIGNALLED, ExitCode, Finding, UserError, printable
from pipeline.core.table import pipe_table
from pipeline.core.topology import Topology

SMOKE_OVERRIDES: dict[str, Any] = {"save_strategy": "no", "eval_strategy": "no"}
SMOKE_DROPS = ("evals_per_epoch", "saves_per_epoch", "eval_steps", "save_steps", "save_total_limit",
               "resume_from_checkpoint", "auto_resume_from_checkpoints")


@dataclass
class Result:
    config: str
    run: str
    exit_code: int
    runtime_s: float
    summary: dict[str, Any]
    verdicts: list[bounds.Verdict] = field(default_factory=list)
    #: seconds this process spent on the config before axolotl started (checks, resolving, run folder)
    launch_s: float = 0.0
    #: model FLOPs per token and the card's dense bf16 TFLOP/s, where both are known (the MFU's basis)
    flops_per_token: int | None = None
    peak_tflops: float | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and all(v.ok for v in self.verdicts)

    @property
    def mfu(self) -> float | None:
        """The steady throughput's model FLOPs utilisation of each GPU, where the card's ceiling is known."""
        tok_s = self.summary.get("throughput_tok_s")
        if not (tok_s and self.flops_per_token and self.peak_tflops):
            return None
        per_gpu = tok_s / (self.summary.get("world_size") or 1)
        return round(flops.mfu(per_gpu, self.flops_per_token, self.peak_tflops), 4)

    def as_dict(self) -> dict[str, Any]:
        s = self.summary
        on_gpu = summary.used_gpu(s)
        return {
            "config": self.config,
            "run": self.run,
            "exit_code": self.exit_code,
            "runtime_s": round(self.runtime_s, 2),
            "launch_s": round(self.launch_s, 2),
            "device": "gpu" if on_gpu else "cpu",
            "peak_memory_gib": s.get("peak_vram_allocated_gib") if on_gpu else s.get("peak_rss_gib"),
            "peak_memory_kind": "vram_allocated" if on_gpu else "rss",
            "peak_vram_reserved_gib": s.get("peak_vram_reserved_gib") if on_gpu else None,
            "trainable_params": s.get("trainable_params"),
            "throughput_tok_s": s.get("throughput_tok_s"),
            "trainable_tok_s": s.get("trainable_tok_s"),
            "mfu": self.mfu,
            "first_loss": s.get("first_loss"),
            "final_loss": s.get("final_loss"),
            "losses": s.get("losses"),
            "steps": s.get("steps"),
            "world_size": s.get("world_size", 1),
            "per_rank_peak_vram_gib": s.get("per_rank_peak_vram_gib"),
            "per_rank_peak_rss_gib": s.get("per_rank_peak_rss_gib"),
            "phases_s": s.get("phases"),
            "bounds": [v.as_dict() for v in self.verdicts],
            "ok": self.ok,
        }


def prepare_all(paths: list[str], overrides: dict[str, Any]) -> list[checks.Checked]:
    """Load every config, apply the overrides and check it (the same entry as `pipeline check`) before
    running any, so bad input fails before a GPU-minute is spent. Returns each config as the run will
    see it (overrides applied) with its warnings."""
    loaded, problems = [], []
    for p in paths:
        try:
            loaded.append(checks.for_run(p, overrides))
        except UserError as exc:
            problems += exc.findings
    if problems:
        raise UserError(*problems)
    return loaded


def steps_of(cfg: config.LoadedConfig, max_steps: int) -> int:
    """The optimizer steps a smoke of `cfg` runs: --max-steps, else the config's smoke.max_steps, else 3."""
    return max_steps or section.smoke_steps(cfg) or 3


def run_one(cfg: config.LoadedConfig, *, max_steps: int, runs_dir: Path, gpus: int = 1, profile_step: int = 0,
            since: float | None = None, reach: Any = None, nodes: Topology | None = None) -> Result:
    since = time.perf_counter() if since is None else since
    steps = steps_of(cfg, max_steps)
    merged = {**SMOKE_OVERRIDES, "max_steps": steps, **cfg.overrides}  # the user's --set wins
    resolved = config.resolve(cfg, merged)
    for key in SMOKE_DROPS:
        if key not in cfg.overrides:
            resolved.axolotl.pop(key, None)

    resolved.axolotl.update(several.cpu_settings(nodes, gpus))
    resolved, chosen = compute_plan.plan(resolved, replace(reach, planned_steps=steps) if reach else None)
    run = run_start.start_run("smoke", resolved, runs_dir, compute=chosen, max_steps=steps, world_size=gpus)
    several.join(run, nodes, gpus=gpus, subject=str(cfg.path))  # every node trains the same, or none starts
    hashes = dict(run.manifest().get("data") or {})  # what start_run hashed, once

    started = time.perf_counter()
    launch = started - since
    assert run.lock is not None
    extra = {engine.PROFILE_ENV: str(profile_step)} if profile_step else {}
    code = engine.run(engine.command("train", run.path / "config.yaml", gpus=gpus, nodes=nodes),
                      engine.environment(run.metrics_path, resolved.offline, gpus=gpus,
                                         extra={**extra, **several.environment(nodes, gpus)}),
                      run.path / "axolotl.log", pass_fds=(run.lock.fd,))
    runtime = time.perf_counter() - started
    several.say_lost(run, code, nodes)

    records = run.metrics(strict=False)
    s = summary.summarize(records)
    ended = outcome.judge(run, code, records, stage="smoke", subject=cfg.path, planned=steps,
                          reached=(s.get("steps") or 0) >= steps, hashes=hashes)
    ended.say()
    code = code or ended.exit_code  # the table shows axolotl's own status where it gave one
    verdicts = bounds.evaluate(section.bounds(cfg), s) if code == 0 else []
    result = Result(str(cfg.path), run.name, code, runtime, s, verdicts, launch_s=launch)
    if summary.used_gpu(s):
        result.flops_per_token, result.peak_tflops = mfu_basis(cfg, resolved.axolotl, run.manifest())
    if ended.ok and not result.ok:  # a bound broke
        ended = replace(ended, status=outcome.FAILED)
    elif code in SIGNALLED:  # as a smoke has always recorded it: stopped is interrupted, changed data or not
        ended = replace(ended, status=outcome.INTERRUPTED)
    try:
        run.write_json(run.path / "smoke.json", result.as_dict())
    except OSError as exc:
        result.exit_code = code = code if code not in (0, 1) else int(ExitCode.ENGINE)
        ended = replace(ended, status=outcome.FAILED)
        print(printable(f"{run.path / 'smoke.json'}: run-unwritable: cannot write the result ({exc.strerror}); the run is "
              f"marked failed"), file=sys.stderr)
    if not outcome.record(run, ended, exit_code=code, runtime_s=round(runtime, 2),
                          summary={k: v for k, v in s.items() if k != "losses"}):
        result.exit_code = code if code not in (0, 1) else int(ExitCode.ENGINE)
    run.lock.release()
    return result


def mfu_basis(cfg: config.LoadedConfig, axolotl_cfg: dict[str, Any],
              manifest: dict[str, Any]) -> tuple[int | None, float | None]:
    """(model FLOPs per token, the run's card's dense bf16 TFLOP/s); None for what is not known (the model's
    shape, a card not in pipeline.core.cards)."""
    from pipeline.checks import architecture, shapes
    from pipeline.core import cards

    peak = cards.dense_bf16_tflops(str((manifest.get("hardware") or {}).get("accelerator") or "cpu"))
    if peak is None:
        return None, None
    # the model as the user named it (a pipeline:// model is known by name before it is built), else as resolved
    named = {k: cfg.data[k] for k in ("base_model", "base_model_config") if cfg.data.get(k)}
    arch, _ = architecture.architecture(cfg, {**axolotl_cfg, **named})
    if arch is None:
        arch, _ = architecture.architecture(cfg, axolotl_cfg)
    if arch is None:
        return None, peak
    adapter = axolotl_cfg.get("adapter")
    try:
        fpt = flops.per_token(shapes.shape(arch), axolotl_cfg, adapter if adapter in ("lora", "qlora") else None)
    except Exception:  # noqa: BLE001 - a model transformers cannot build (the check has said so): no MFU
        return None, peak
    return fpt.per_token, peak


def _memory(d: dict[str, Any]) -> str:
    mem = d["peak_memory_gib"]
    return "-" if mem is None else f"{mem:.2f} GiB" + (" RSS" if d["device"] == "cpu" else "")


#: the smoke table, one entry a column: its header and how a result's row (Result.as_dict) shows in it
COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("Config", lambda d: Path(d["config"]).stem + ("" if d["exit_code"] == 0 else f" (exit {d['exit_code']})")),
    ("Runtime", lambda d: f"{d['runtime_s']:.0f}s"),
    ("Peak VRAM (RSS on CPU)", _memory),
    ("Trainable Params", lambda d: summary.human_count(d["trainable_params"])),
    ("Throughput (tok/s)", lambda d: "-" if d["throughput_tok_s"] is None else f"{d['throughput_tok_s']:,.0f}"),
    ("MFU", lambda d: "-" if d["mfu"] is None else f"{d['mfu']:.1%}"),
    ("Final Loss", lambda d: "-" if d["final_loss"] is None else f"{d['final_loss']:.3f}"),
]


def table(results: list[Result]) -> str:
    rows = [r.as_dict() for r in results]
    return pipe_table([h for h, _ in COLUMNS], [[show(d) for _, show in COLUMNS] for d in rows])


def main(paths: list[str], *, max_steps: int, overrides: dict[str, Any], runs_dir: Path,
         json_path: Path | None, gpus: int = 1, profile_step: int = 0, nodes: Topology | None = None) -> int:
    since = time.perf_counter()  # the first config's launch time includes checking every config
    if max_steps < 0:
        raise UserError.at("<command line>", None, "max-steps",
                           f"--max-steps {max_steps} is negative; give a number of steps, at least 1")
    cache.require_writable()
    loaded = prepare_all(paths, overrides)
    if profile_step:  # a step the run never reaches would profile nothing, silently
        late = [(c, steps_of(c, max_steps)) for c, *_ in loaded if not 1 <= profile_step <= steps_of(c, max_steps)]
        if late:
            raise UserError(*(Finding("<command line>", None, "profile-step",
                                      f"--profile-step {profile_step} is outside {c.path}'s {n} steps; "
                                      f"pick 1..{n}") for c, n in late))
    if json_path is not None:
        check_json_target(json_path, [c for c, *_ in loaded])
    for _cfg, warnings, _ in loaded:
        for w in warnings:
            print(printable(f"warning: {w}"), file=sys.stderr)
    results = []
    for cfg, _, reach in loaded:
        print(printable(f"==> smoke: {cfg.path} ({max_steps or 'config default'} steps)"), file=sys.stderr)
        result = run_one(cfg, max_steps=max_steps, runs_dir=runs_dir, gpus=gpus,
                         profile_step=profile_step, since=since, reach=reach, nodes=nodes)
        since = time.perf_counter()
        results.append(result)
        if result.exit_code in SIGNALLED:
            break
    print()
    print(table(results))
    for r in results:
        if line := summary.phase_line(r.summary.get("phases") or {}, r.runtime_s):
            print(printable(f"{Path(r.config).stem}: checks {r.launch_s:.1f}s | {line}"))
        if line := summary.rank_line(r.summary):
            print(printable(f"{Path(r.config).stem}: {line}"))
    payload = {
        "created": runs.now(),
        **provenance.record(loaded[0][0].path if loaded else None),  # git: the (first) config's folder
        "command": sys.argv,
        "results": [r.as_dict() for r in results],
    }
    text = json.dumps(payload, indent=2, default=str) + "\n"
    code = 0
    try:
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            runs.write_atomic(json_path, text)
            out = json_path
        else:  # two smokes ending in the same second each keep their own file
            out = runs.write_new(runs_dir, f"smoke-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}", ".json", text)
        print("\n" + printable(f"wrote {out}"))
    except OSError as exc:
        print(printable(f"{json_path or runs_dir}: results-unwritable: cannot write the smoke results ({exc.strerror}); each "
              f"run folder keeps its own smoke.json where it could be written"), file=sys.stderr)
        code = int(ExitCode.ENGINE)
    for r in results:
        for v in r.verdicts:
            if not v.ok:
                print(printable(v.line(r.config)), file=sys.stderr)
                code = max(code, int(ExitCode.FAILED))
        if r.exit_code != 0:
            print(printable(f"{r.config}: axolotl exited with status {r.exit_code}; see {runs_dir / r.run / 'axolotl.log'}"),
                  file=sys.stderr)
            code = int(ExitCode.INTERRUPTED) if r.exit_code in SIGNALLED else max(code, int(ExitCode.ENGINE))
    return code


def check_json_target(path: Path, configs: list[config.LoadedConfig]) -> None:
    """--json may name a new file or an earlier smoke result, never a config, a data file or a folder."""
    inputs = [c.path for c in configs]
    for c in configs:
        try:
            inputs += config.resolve(c, build_models=False).data_files
        except UserError:
            pass
    if path.is_dir():
        raise UserError.at(str(path), None, "json-target", f"--json names a folder; name a file in it "
                                                           f"(e.g. {path / 'smoke.json'})")
    if path.exists() or path.is_symlink():
        if any(_same(path, p) for p in inputs):
            raise UserError.at(str(path), None, "json-target", "--json names an input of this smoke (a config or a "
                                                               "data file); name a new file for the results")
        try:
            earlier = safeio.json_loads(safeio.read_text(path, "json", safeio.MAX_RECORD_BYTES, what="--json file"))
        except safeio.BadFile as exc:
            raise UserError.at(str(path), None, "json-target", f"{exc.message}; --json must name a new file or "
                                                               f"an earlier smoke result") from None
        except ValueError:
            earlier = None
        if not (isinstance(earlier, dict) and isinstance(earlier.get("results"), list)):
            raise UserError.at(str(path), None, "json-target", "exists and is not an earlier smoke result; name a "
                                                               "new file (the results would replace it)")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
