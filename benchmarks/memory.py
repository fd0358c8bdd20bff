#!/usr/bin/env python3
"""Measure the peak-VRAM estimate against real runs, in one device call.

Every row is a real 2-step `pipeline smoke` of a shipped config (or `benchmarks/configs/full_finetune.yaml`)
with a few `--set` overrides, on `pipeline://random/<architecture>` (random bf16 weights in the real
model's shape) and synthetic chat rows long enough to fill every micro-batch (packing, or padding to
sequence_len). Each smoke records its whole-run peak of allocated memory; `benchmarks/memory_probe.py`
records where the memory stood at each phase of each step (what was loaded, what the forward kept, the
step's forward/backward and optimizer peaks), so a gap between estimate and measurement can be placed.

    python benchmarks/memory.py                  # every row; results/memory-<card>.json
    python benchmarks/memory.py --rows lora-r64-s4096 qlora-r64-s4096

Rows run side by side on the one GPU while their estimated peaks (with room to spare) fit the card:
peaks are per process (`torch.cuda.max_memory_allocated`), so neighbours do not change them, only the
time the steps take. A row that runs out of memory beside others is run again alone at the end. The
results file is rewritten after every row, so a call cut short keeps what it measured.
`tests/unit/test_estimate_measured.py` holds the estimate to the rows of the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import synthetic  # noqa: E402
from pipeline.checks import estimate, shapes  # noqa: E402
from pipeline.core import cache, config, models, provenance, runs  # noqa: E402

LORA = "configs/lora_style_transfer.yaml"
QLORA = "configs/qlora_style_transfer.yaml"
FULL = "benchmarks/configs/full_finetune.yaml"
PROBE = "benchmarks.memory_probe.MemoryProbe"
STEPS = 2
#: every row: 2 micro-batches a step, so gradients are kept between micro-batches as in the shipped configs
COMMON = ["gradient_accumulation_steps=2"]
NO_KERNELS = ["lora_qkv_kernel=false", "lora_o_kernel=false", "lora_mlp_kernel=false"]


@dataclass(frozen=True)
class Row:
    id: str
    config: str
    model: str
    overrides: list[str] = field(default_factory=list)
    #: free disk the row needs (a full fine-tune writes the whole model at its end)
    disk_gib: float = 0.0
    #: measured only after the estimate was settled on the other rows
    held_out: bool = False


ROWS = [
    # Llama-3.1-8B, LoRA (the shipped config: r64 all-linear, dropout 0.05, Liger FLCE/RMSNorm/RoPE, axolotl's
    # LoRA kernels, packing to 4096, checkpointing)
    Row("lora-r64-s4096", LORA, "llama-3.1-8b"),
    Row("lora-qv-r16-s2048-b2-ce", LORA, "llama-3.1-8b",
        ["lora_target_linear=false", "lora_target_modules=[q_proj,v_proj]", "lora_r=16", "sequence_len=2048",
         "micro_batch_size=2", "liger_fused_linear_cross_entropy=false"]),
    Row("lora-r128-s8192", LORA, "llama-3.1-8b", ["lora_r=128", "sequence_len=8192"]),
    Row("lora-nockpt-s1024-b8", LORA, "llama-3.1-8b",
        ["gradient_checkpointing=false", "sequence_len=1024", "micro_batch_size=8"]),
    Row("lora-save-embed-head", LORA, "llama-3.1-8b", ["lora_modules_to_save=[embed_tokens,lm_head]"]),
    Row("lora-r256-s16384", LORA, "llama-3.1-8b", ["lora_r=256", "sequence_len=16384"]),
    Row("lora-r8-s4096-b2-nopack-nodrop", LORA, "llama-3.1-8b",
        ["lora_r=8", "sample_packing=false", "micro_batch_size=2", "lora_dropout=0"]),
    Row("lora-nockpt-s4096-ce", LORA, "llama-3.1-8b",
        ["gradient_checkpointing=false", "liger_fused_linear_cross_entropy=false"]),
    # Llama-3.1-8B, QLoRA
    Row("qlora-r64-s4096", QLORA, "llama-3.1-8b"),
    Row("qlora-r32-s2048-b4-ce", QLORA, "llama-3.1-8b",
        ["lora_r=32", "sequence_len=2048", "micro_batch_size=4", "liger_fused_linear_cross_entropy=false"]),
    Row("qlora-s8192", QLORA, "llama-3.1-8b", ["sequence_len=8192"]),
    Row("qlora-nockpt-s2048-b2", QLORA, "llama-3.1-8b",
        ["gradient_checkpointing=false", "sequence_len=2048", "micro_batch_size=2"]),
    Row("qlora-r16-s1024", QLORA, "llama-3.1-8b", ["lora_r=16", "sequence_len=1024"]),
    # two other architectures
    Row("qwen7b-lora-r64-s4096", LORA, "qwen2.5-7b"),
    Row("qwen7b-qlora-nockpt-s2048-b2", QLORA, "qwen2.5-7b",
        ["gradient_checkpointing=false", "sequence_len=2048", "micro_batch_size=2"]),
    Row("mistral7b-lora-r32-s4096-b4-nopack", LORA, "mistral-7b",
        ["lora_r=32", "sample_packing=false", "micro_batch_size=4"]),
    Row("mistral7b-qlora-s8192-ce", QLORA, "mistral-7b",
        ["sequence_len=8192", "liger_fused_linear_cross_entropy=false"]),
    # full fine-tuning
    Row("qwen1.5b-full-s4096", FULL, "qwen2.5-1.5b", disk_gib=8),
    Row("qwen1.5b-full-nockpt-s2048-b4", FULL, "qwen2.5-1.5b",
        ["gradient_checkpointing=false", "sequence_len=2048", "micro_batch_size=4"], disk_gib=8),
    Row("qwen1.5b-full-s8192-b2-ce", FULL, "qwen2.5-1.5b",
        ["sequence_len=8192", "micro_batch_size=2", "liger_fused_linear_cross_entropy=false"], disk_gib=8),
    # held out: shapes first measured after the model was settled on the rows above
    Row("mistral7b-full-s2048", FULL, "mistral-7b", ["sequence_len=2048"], disk_gib=24, held_out=True),
    Row("lora-r32-s2048-b4-nopack", LORA, "llama-3.1-8b",
        ["lora_r=32", "sequence_len=2048", "micro_batch_size=4", "sample_packing=false"], held_out=True),
    Row("lora-nockpt-r16-s2048-b2-nodrop", LORA, "llama-3.1-8b",
        ["gradient_checkpointing=false", "sequence_len=2048", "micro_batch_size=2", "lora_r=16", "lora_dropout=0"],
        held_out=True),
    Row("qlora-r128-s16384", QLORA, "llama-3.1-8b", ["lora_r=128", "sequence_len=16384"], held_out=True),
    Row("lora-nokernels-s4096", LORA, "llama-3.1-8b", [*NO_KERNELS], held_out=True),
    Row("lora-nokernels-nockpt-s2048", LORA, "llama-3.1-8b",
        [*NO_KERNELS, "gradient_checkpointing=false", "sequence_len=2048"], held_out=True),
    Row("mistral7b-qlora-nockpt-s4096", QLORA, "mistral-7b", ["gradient_checkpointing=false"], held_out=True),
    Row("mistral7b-lora-save-embed-head", LORA, "mistral-7b", ["lora_modules_to_save=[embed_tokens,lm_head]"],
        held_out=True),
    Row("qwen1.5b-full-nockpt-s4096-ce", FULL, "qwen2.5-1.5b",
        ["gradient_checkpointing=false", "liger_fused_linear_cross_entropy=false"], disk_gib=8, held_out=True),
    Row("qwen1.5b-full-8bit-s2048-b4", FULL, "qwen2.5-1.5b",
        ["optimizer=adamw_bnb_8bit", "sequence_len=2048", "micro_batch_size=4"], disk_gib=8, held_out=True),
]
BY_ID = {r.id: r for r in ROWS}


def resolved(row: Row) -> dict[str, Any]:
    """The row's config as the smoke resolves it (its overrides applied), base model still the hub-free name."""
    loaded = config.load(ROOT / row.config)
    overrides = config.parse_overrides([*COMMON, *row.overrides])
    return config.apply_overrides(loaded.data, overrides)


def tokens_per_micro_batch(cfg: dict[str, Any]) -> int:
    # every row packs or pads to sequence_len: the micro-batch is exactly micro_batch_size x sequence_len
    assert cfg.get("sample_packing") or cfg.get("pad_to_sequence_len"), "rows must pack or pad"
    return int(cfg.get("micro_batch_size") or 1) * int(cfg["sequence_len"])


def estimate_row(row: Row) -> estimate.Estimate:
    cfg = resolved(row)
    s = shapes.shape(models.architecture_config(row.model))
    return estimate.peak_vram(s, cfg, cfg.get("adapter") or "full", tokens_per_micro_batch(cfg))


def plugins_override(row: Row) -> str:
    plugins = list(config.load(ROOT / row.config).data.get("plugins") or [])
    return "plugins=[" + ",".join([*plugins, PROBE]) + "]"


def command(row: Row, data: Path, runs_dir: Path) -> list[str]:
    sets = [f"base_model=pipeline://random/{row.model}", f"datasets.0.path={data}",
            f"dataset_prepared_path={runs_dir / ('prepared-' + row.id)}", *COMMON, plugins_override(row),
            *row.overrides]
    return [sys.executable, "-m", "pipeline", "smoke", row.config, "--max-steps", str(STEPS),
            "--runs-dir", str(runs_dir), "--json", str(runs_dir / f"smoke-{row.id}.json"),
            *[a for kv in sets for a in ("--set", kv)]]


def build(model: str) -> subprocess.Popen[bytes]:
    code = f"from pipeline.core import models; models.resolve('pipeline://random/{model}')"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def probe_summary(path: Path) -> dict[str, Any]:
    """The probe's records, and what they say: loaded, forward-kept, peaks by phase (GiB)."""
    recs = runs.read_jsonl(path) if path.is_file() else []
    by = {(r["at"], r.get("step")): r for r in recs}
    last = max((r.get("step") or 0 for r in recs), default=0)
    out: dict[str, Any] = {"records": recs}
    if (begin := next((r for r in recs if r["at"] == "train_begin"), None)) is not None:
        out["loaded_gib"], out["load_peak_gib"] = begin["alloc"], begin["max"]
    if last:
        fwd = [r["alloc"] for r in recs if r["at"] == "forward_end" and r.get("step") == last]
        pre, opt = by.get(("pre_optimizer", last)), by.get(("optimizer", last))
        begin_last = by.get(("step_begin", last))
        if fwd and begin_last:
            out["forward_kept_gib"] = round(max(fwd) - begin_last["alloc"], 4)
            out["step_start_gib"] = begin_last["alloc"]
        if pre:
            out["fwd_bwd_peak_gib"], out["with_grads_gib"] = pre["max"], pre["alloc"]
        if opt:
            out["optimizer_peak_gib"], out["after_optimizer_gib"] = opt["max"], opt["alloc"]
    return out


def finish(row: Row, cmd: list[str], proc: subprocess.Popen[bytes], started: float, runs_dir: Path,
           est: estimate.Estimate) -> dict[str, Any]:
    smoke_json = runs_dir / f"smoke-{row.id}.json"
    result = json.loads(smoke_json.read_text())["results"][0] if smoke_json.is_file() else {}
    run_dir = runs_dir / result["run"] if result.get("run") else None
    log = (run_dir / "axolotl.log").read_text(errors="replace") if run_dir and (run_dir / "axolotl.log").is_file() else ""
    record = {
        "id": row.id, "held_out": row.held_out, "config": row.config, "model": f"pipeline://random/{row.model}",
        "overrides": [*COMMON, *row.overrides], "max_steps": STEPS,
        "command": " ".join(["pipeline", *cmd[3:]]), "exit_code": proc.returncode,
        "out_of_memory": "OutOfMemoryError" in log or "CUDA out of memory" in log,
        "wall_s": round(time.perf_counter() - started, 1),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "peak_allocated_gib": result.get("peak_memory_gib"),
        "peak_reserved_gib": result.get("peak_vram_reserved_gib"),
        "trainable_params": result.get("trainable_params"),
        "final_loss": result.get("final_loss"),
        "estimate_at_measurement": est.as_dict(),
        "probe": probe_summary(runs_dir / f"probe-{row.id}.jsonl"),
    }
    if proc.returncode not in (0, 1) and log:
        record["log_tail"] = log[-3000:]
    if run_dir and (run_dir / "output").is_dir():  # adapters are small, full models are not: keep the disk
        shutil.rmtree(run_dir / "output", ignore_errors=True)
    return record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=[r.id for r in ROWS], choices=list(BY_ID))
    ap.add_argument("--parallel", type=int, default=4, help="rows running at once, at most")
    ap.add_argument("--budget-gib", type=float, default=0.0,
                    help="GPU memory the rows side by side may take (default: the card's, less 8 GiB)")
    ap.add_argument("--deadline-s", type=float, default=480.0, help="start no row after this many seconds")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "memory")
    ap.add_argument("--results", type=Path, default=None, help="default: benchmarks/results/memory-<card>.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    import torch

    card_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0.0
    budget = args.budget_gib or max(card_gib - 8.0, 0.0)
    hw = provenance.hardware()
    out = args.results or ROOT / "benchmarks" / "results" / f"memory-{hw['accelerator'].replace(' ', '-')}.json"
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    data = synthetic(args.runs_dir / "synthetic-400.jsonl", rows=400)
    rows = [BY_ID[r] for r in args.rows]
    estimates = {r.id: estimate_row(r) for r in rows}
    # room beside each estimate while rows share the card: the estimate may be low, and each process
    # has its own CUDA context and allocator reserve
    need = {r.id: estimates[r.id].peak_gib * 1.2 + 3.0 for r in rows}

    builds = {m: build(m) for m in dict.fromkeys(r.model for r in rows)
              if not (cache.cache_dir() / "models" / f"random-{m}-r{models.RANDOM_RECIPE}-seed0" / "config.json").is_file()}
    pending = sorted(rows, key=lambda r: -need[r.id])  # large rows first; small ones fill the gaps
    running: dict[str, tuple[Row, list[str], subprocess.Popen[bytes], float]] = {}
    retry: list[Row] = []
    alone: set[str] = set()
    results: list[dict[str, Any]] = []

    # rows of earlier calls stay, each with the call that measured it
    previous = json.loads(out.read_text()) if out.is_file() else {}
    calls = list(previous.get("calls", []))
    calls.append({"command": " ".join(["python", "benchmarks/memory.py", *sys.argv[1:]]),
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "hardware": hw,
                  "versions": provenance.versions()})
    kept = [r for r in previous.get("rows", []) if r["id"] not in {x.id for x in rows} and r["id"] in BY_ID]

    def save() -> None:
        order = [x.id for x in ROWS]
        runs.write_json(out, {
            "card": hw["accelerator"], "card_memory_gib": round(card_gib, 2), "steps": STEPS,
            "data": "400 synthetic chat rows of 300-3,000 tokens (benchmarks/run.py synthetic)",
            "calls": calls,
            "rows": sorted([*kept, *({**r, "call": len(calls) - 1} for r in results)], key=lambda r: order.index(r["id"])),
        })

    def building_gib() -> float:
        return 20.0 * sum(1 for p in builds.values() if p.poll() is None)  # random init on the GPU

    while pending or running or retry:
        for rid, (row, cmd, proc, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[rid]
            rec = finish(row, cmd, proc, started, args.runs_dir, estimates[rid])
            rec["alone"] = rid in alone
            if rec["out_of_memory"] and rid not in alone:
                retry.append(row)
                rec["note"] = "out of memory beside other rows: run again alone"
            results = [r for r in results if r["id"] != rid] + [rec]
            save()
            print(f"[memory] {rid}: exit {proc.returncode}, peak {rec['peak_allocated_gib']} GiB, "
                  f"estimate {estimates[rid].peak_gib:.2f} GiB, {rec['wall_s']} s", flush=True)
        late = time.perf_counter() - t0 > args.deadline_s
        if late:
            pending.clear()
            retry.clear()
        if not pending and retry and not running:
            pending.append(retry.pop(0))
            alone.add(pending[0].id)
            need[pending[0].id] = budget
        for row in list(pending):
            if len(running) >= args.parallel:
                break
            if row.model in builds and builds[row.model].poll() is None:
                continue
            used = sum(need[r] for r in running) + building_gib()
            if used + need[row.id] > budget and running:
                continue
            if row.disk_gib and shutil.disk_usage(args.runs_dir).free / 2**30 < row.disk_gib:
                print(f"[memory] {row.id}: skipped, less than {row.disk_gib} GiB of disk free", flush=True)
                pending.remove(row)
                continue
            pending.remove(row)
            cmd = command(row, data, args.runs_dir)
            env = {**os.environ, "PIPELINE_MEMORY_PROBE": str(args.runs_dir / f"probe-{row.id}.jsonl"),
                   "OMP_NUM_THREADS": "4"}
            log = (args.runs_dir / f"stdout-{row.id}.log").open("wb")
            running[row.id] = (row, cmd, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                                          stderr=subprocess.STDOUT), time.perf_counter())
            print(f"[memory] {row.id}: started (estimate {estimates[row.id].peak_gib:.2f} GiB; "
                  f"{len(running)} running)", flush=True)
        time.sleep(1.0)
    save()
    print(f"\n{'row':<36} {'estimate':>9} {'measured':>9} {'error':>7}")
    for r in json.loads(out.read_text())["rows"]:
        m, e = r.get("peak_allocated_gib"), estimate_row(BY_ID[r["id"]]).peak_gib
        err = f"{100 * (e - m) / m:+.1f}%" if m else "-"
        print(f"{r['id']:<36} {e:>9.2f} {m or 0:>9.2f} {err:>7}  exit {r['exit_code']}")
    print(f"wrote {out}")
    return 0 if all(r["exit_code"] in (0, 1) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
