#!/usr/bin/env python3
"""Measure which shipped architecture x adapter starts under axolotl, on this GPU, and what avoids a crash.

For every architecture in pipeline/architectures/ it builds the reduced-depth shape
(`pipeline://random/<arch>?layers=N`, N = models.min_layers: every width, every kind of layer) and runs a
2-step `pipeline smoke` of the shipped LoRA and QLoRA configs (and a full fine-tune with `--full`) with
their kernels and plugins as shipped. A run that crashes is run again with one candidate change at a time
(REMEDIES, the one the traceback points at first) until one runs. Trials run side by side, as many as
`--parallel` and the GPU memory (the check's own peak estimates) allow; each architecture's model is
deleted when its trials are done, so the disk holds a few at a time.

    python benchmarks/startup_matrix.py --parallel 10            # everything, about 8 minutes on an H200
    python benchmarks/startup_matrix.py --only phi-3.5-mini      # one architecture
    python benchmarks/startup_matrix.py --from-results --ship --results F  # table and shipped matrix from F

Every trial is recorded as it ends in benchmarks/results/compat-<card>.json (card, versions, command,
per trial: overrides, exit code, status, axolotl's error and where it was raised, tokens/s, peak VRAM,
the check's projection of the settings and the settings axolotl's process reported); a call cut off
keeps what ended, and `--resume` skips it. The shipped matrix, pipeline/architectures/compat.json, is
written from the results under the axolotl version (`--ship`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core import models, provenance, runs, startup_matrix  # noqa: E402

CONFIGS = {"lora": ROOT / "configs" / "lora_style_transfer.yaml",
           "qlora": ROOT / "configs" / "qlora_style_transfer.yaml",
           "full": ROOT / "configs" / "lora_style_transfer.yaml"}
#: a full fine-tune is the LoRA config without its adapter
ADAPTER_SETS = {"lora": [], "qlora": [], "full": ["adapter=", "lora_r=", "lora_alpha=", "lora_dropout=",
                                                  "lora_target_linear="]}
#: settings every trial takes: bounds that judge a random model's training on the card, not the 8B's
ALWAYS = ["pipeline.bounds.peak_vram_gib=140", "pipeline.bounds.final_loss=1000"]
#: candidate changes after a crash, each one setting group; tried in the order the traceback suggests
REMEDIES: dict[str, list[str]] = {
    # naming one kernel stops axolotl switching on the others: those kept are named too
    "lora_qkv_kernel": ["lora_qkv_kernel=false", "lora_o_kernel=true", "lora_mlp_kernel=true",
                        "lora_embedding_kernel=true"],
    "lora_kernels": ["lora_qkv_kernel=false", "lora_o_kernel=false", "lora_mlp_kernel=false"],
    # without the plugin its settings are keys axolotl does not know: they go too
    "liger": ["plugins=[]", "liger_rope=", "liger_rms_norm=", "liger_glu_activation=",
              "liger_fused_linear_cross_entropy="],
    "sample_packing": ["sample_packing=false"],
    "eager_attention": ["sdp_attention=false", "eager_attention=true"],
}
#: which remedies a traceback's text points at first
HINTS = [(r"lora_kernels|QKV|lora_o|apply_lora", ["lora_qkv_kernel", "lora_kernels"]),
         (r"liger", ["liger"]),
         (r"multipack|packing|cu_seqlens|position_ids", ["sample_packing"]),
         (r"sdpa|attention|attn", ["eager_attention"])]
ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)\b.*$")
FRAME = re.compile(r'File "([^"]+)", line (\d+)')
#: where a frame's file is named from: the package folder, wherever the packages are installed
PACKAGES = re.compile(r"/((?:axolotl|transformers|peft|liger_kernel|bitsandbytes|torch|accelerate|trl|pipeline)/.*)$")


def layers_for(arch: str) -> int:
    return models.min_layers(models.architecture_config(arch))


def crash_of(log: Path) -> tuple[str | None, str | None]:
    """Axolotl's error (the last exception line of its log) and the innermost frame of its traceback."""
    if not log.is_file():
        return None, None
    lines = log.read_text(errors="replace").splitlines()
    error = next((ln.strip() for ln in reversed(lines) if ERROR_LINE.match(ln.strip())), None)
    frames = [m for ln in lines if (m := FRAME.search(ln))]
    where = None
    if frames:
        found = PACKAGES.search(frames[-1][1])
        where = f"{found[1] if found else frames[-1][1]}:{frames[-1][2]}"
    return (error[:300] if error else None), where


class Matrix:
    """The trials, their results file and the GPU memory they may take together."""

    def __init__(self, args: argparse.Namespace, results: Path) -> None:
        self.args = args
        self.results = results
        self.lock = threading.Lock()
        self.memory = threading.Condition()
        self.free_gib = args.mem_gib
        self.tickets = self.serving = 0
        previous = json.loads(results.read_text()) if results.is_file() and args.resume else {}
        self.trials: list[dict[str, Any]] = previous.get("trials", [])
        self.runs = Path(tempfile.mkdtemp(prefix="compat-runs-"))
        self.empty = self.runs / "no-compat.json"
        self.empty.write_text("{}\n")  # the shipped matrix must not refuse what is being measured again
        self.data = _synthetic(self.runs / "synthetic.jsonl")
        self.hw = provenance.hardware()

    def done(self, arch: str, adapter: str, name: str) -> dict[str, Any] | None:
        return next((t for t in self.trials if (t["architecture"], t["adapter"], t["trial"]) == (arch, adapter, name)),
                    None)

    def settled(self, arch: str, adapter: str) -> bool:
        """Every trial this architecture and adapter needs has ended: it ran, or a remedy did, or none is left."""
        shipped = self.done(arch, adapter, "shipped")
        if shipped is None:
            return False
        if shipped["status"] != startup_matrix.CRASHES:
            return True
        tried = [self.done(arch, adapter, n) for n in _remedies(shipped, adapter)]
        return any(t and t["status"] == startup_matrix.RAN for t in tried) or all(tried)

    def record(self, trial: dict[str, Any]) -> None:
        with self.lock:
            self.trials = [t for t in self.trials if (t["architecture"], t["adapter"], t["trial"]) !=
                           (trial["architecture"], trial["adapter"], trial["trial"])] + [trial]
            payload = {"card": self.hw["accelerator"], "hardware": self.hw, "versions": provenance.versions(),
                       "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "command": " ".join(["benchmarks/startup_matrix.py", *sys.argv[1:]]),
                       "trials": sorted(self.trials, key=lambda t: (t["architecture"], t["adapter"], t["order"]))}
            runs.write_json(self.results, payload)

    def projection(self, adapter: str, sets: list[str]) -> tuple[dict[str, Any], float | None, list[str]]:
        """The check's projection of a trial's settings, its peak estimate, and the check's errors."""
        from pipeline import checks
        from pipeline.core import config

        with self.lock:
            report = checks.run(str(CONFIGS[adapter]), overrides=config.parse_overrides(sets), device="gpu",
                                gpu=None, gpu_mem_gib=None)
        facts = report.facts
        kind = adapter if adapter in ("lora", "qlora") else "full"
        peak = ((facts.get("memory") or {}).get(kind) or {}).get("peak_gib")
        return facts.get("compat", {}).get("settings", {}), peak, [str(f) for f in report.errors]

    def smoke(self, arch: str, ref: str, adapter: str, name: str, changes: list[str], order: int) -> dict[str, Any]:
        if (old := self.done(arch, adapter, name)) is not None:
            return old
        sets = [f"base_model={ref}", f"datasets.0.path={self.data}", *ALWAYS, *ADAPTER_SETS[adapter], *changes,
                f"dataset_prepared_path={self.runs / 'prepared' / f'{arch}-{adapter}-{name}'}"]
        settings, estimate, refused = self.projection(adapter, sets)
        need = max(4.0, 1.3 * (estimate or 20.0) + 2)
        row: dict[str, Any] = {"architecture": arch, "adapter": adapter, "trial": name, "order": order,
                               "model": ref, "changes": changes, "settings": settings,
                               "estimate_gib": estimate}
        if need > self.args.mem_gib:
            return {**row, "status": "skipped", "why": f"estimated {estimate} GiB does not fit beside the others"}
        with self.memory:  # first come, first served: a wide model is not starved by narrow ones
            ticket = self.tickets
            self.tickets += 1
            self.memory.wait_for(lambda: self.serving == ticket and self.free_gib >= need)
            self.free_gib -= need
            self.serving += 1
            self.memory.notify_all()
        say(f"{arch} {adapter} {name}: started ({need:.0f} GiB held, {self.free_gib:.0f} free)")
        runs_dir = self.runs / arch / adapter / name
        out_json = runs_dir / "smoke.json"
        cmd = [sys.executable, "-m", "pipeline", "smoke", str(CONFIGS[adapter]), "--max-steps", str(self.args.steps),
               "--runs-dir", str(runs_dir), "--json", str(out_json), *[a for kv in sets for a in ("--set", kv)]]
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=self.args.trial_timeout,
                                  env={**os.environ, startup_matrix.DATA_ENV: str(self.empty)})
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess(cmd, 124, "", f"no end within {self.args.trial_timeout} s")
        finally:
            with self.memory:
                self.free_gib += need
                self.memory.notify_all()
        wall = time.perf_counter() - started
        result = json.loads(out_json.read_text())["results"][0] if out_json.is_file() else {}
        folder = runs_dir / result["run"] if result.get("run") else None
        row.update({"exit_code": proc.returncode, "wall_s": round(wall, 1),
                    "command": "pipeline " + " ".join(cmd[3:]).replace(str(self.runs), "$RUNS")})
        if folder and (folder / "axolotl-settings.json").is_file():
            row["axolotl_settings"] = json.loads((folder / "axolotl-settings.json").read_text())
        if proc.returncode in (0, 1) and result.get("steps"):
            row.update({"status": startup_matrix.RAN, "tokens_per_s": result.get("throughput_tok_s"),
                        "peak_gib": result.get("peak_memory_gib"), "final_loss": result.get("final_loss")})
        elif proc.returncode == 124:
            row.update({"status": "timeout", "error": proc.stderr})
        elif proc.returncode == 2:
            lines = [ln for ln in proc.stderr.splitlines() if ": " in ln]
            row.update({"status": "refused", "error": (lines[0] if lines else proc.stderr[-300:])[:300]})
        else:
            error, where = crash_of(folder / "axolotl.log") if folder else (None, None)
            row.update({"status": startup_matrix.CRASHES, "error": error or proc.stderr.strip()[-300:], "where": where})
        if folder:
            shutil.rmtree(folder, ignore_errors=True)  # a full fine-tune saves the whole model
        shutil.rmtree(self.runs / "prepared" / f"{arch}-{adapter}-{name}", ignore_errors=True)
        self.record(row)
        say(f"{arch} {adapter} {name}: {row['status']} in {wall:.0f} s {row.get('error') or ''}")
        return row

    def architecture(self, arch: str, layers: int) -> None:
        ref = f"pipeline://random/{arch}?layers={layers}"
        if all(self.settled(arch, a) for a in self.args.adapters):
            return
        say(f"{arch}: building {ref}")
        build = subprocess.run([sys.executable, "-m", "pipeline", "build-model", ref], cwd=ROOT, capture_output=True,
                               text=True)
        say(f"{arch}: built (exit {build.returncode})")
        if build.returncode != 0:
            for adapter in self.args.adapters:
                self.record({"architecture": arch, "adapter": adapter, "trial": "shipped", "order": 0, "model": ref,
                             "status": "unbuilt", "error": build.stderr.strip()[-300:]})
            return
        try:
            for adapter in self.args.adapters:
                row = self.smoke(arch, ref, adapter, "shipped", [], 0)
                if row["status"] != startup_matrix.CRASHES:
                    continue
                for order, name in enumerate(_remedies(row, adapter), start=1):
                    if self.smoke(arch, ref, adapter, name, REMEDIES[name], order)["status"] == startup_matrix.RAN:
                        break
        finally:
            shutil.rmtree(models.resolve(ref, build=False), ignore_errors=True)


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _remedies(row: dict[str, Any], adapter: str) -> list[str]:
    text = f"{row.get('error')} {row.get('where')}"
    first = [n for pattern, names in HINTS if re.search(pattern, text, re.I) for n in names]
    order = list(dict.fromkeys([*first, *REMEDIES]))
    return [n for n in order if adapter != "full" or "kernel" not in n]


def _synthetic(path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.synthetic(path, rows=120))


def ship(results: dict[str, Any], out: Path) -> None:
    """Write the results under their axolotl version into the shipped matrix (other versions are kept)."""
    shipped = json.loads(out.read_text()) if out.is_file() else {}
    shapes: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for t in results["trials"]:
        if t.get("status") not in (startup_matrix.RAN, startup_matrix.CRASHES):
            continue
        keep = {k: t[k] for k in ("trial", "status", "settings", "changes", "error", "where", "tokens_per_s",
                                  "peak_gib") if t.get(k) is not None}
        keep["model"] = t["model"].removeprefix(models.SCHEME)
        shapes.setdefault(t["architecture"], {}).setdefault(t["adapter"], []).append(keep)
    versions = results["versions"]
    shipped[versions.get("axolotl", "unknown")] = {
        "measured_on": {"card": results["card"], "date": results["measured_at"][:10],
                        "versions": {k: versions.get(k) for k in ("axolotl", "torch", "transformers", "peft",
                                                                  "liger-kernel", "bitsandbytes") if versions.get(k)},
                        "command": results["command"], "results": "benchmarks/results/" + f"compat-{_card(results['card'])}.json"},
        "shapes": dict(sorted(shapes.items())),
    }
    runs.write_json(out, shipped)


def _card(name: str) -> str:
    return name.replace(" ", "-")


def table(results: dict[str, Any]) -> str:
    """The docs' table: one row per architecture x adapter (the shipped settings, and the change that ran)."""
    rows = ["| architecture | adapter | shipped config | what to change | tokens/s | peak GiB |",
            "|---|---|---|---|---|---|"]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in results["trials"]:
        by.setdefault((t["architecture"], t["adapter"]), []).append(t)
    for (arch, adapter), trials in sorted(by.items()):
        shipped = next((t for t in trials if t["trial"] == "shipped"), trials[0])
        fixed = next((t for t in trials if t["trial"] != "shipped" and t.get("status") == startup_matrix.RAN), None)
        shown = fixed or shipped
        status = {startup_matrix.CRASHES: f"crashes: `{(shipped.get('error') or '')[:90]}`",
                  "unbuilt": "not measured: the model could not be built there"}.get(shipped["status"], shipped["status"])
        change = f"`{' '.join(fixed['changes'])}`" if fixed else ("none found" if shipped["status"] == startup_matrix.CRASHES
                                                                  else "")
        tok = f"{shown['tokens_per_s']:,.0f}" if shown.get("tokens_per_s") else "-"
        peak = f"{shown['peak_gib']:.1f}" if shown.get("peak_gib") else "-"
        rows.append(f"| {arch} | {adapter} | {status} | {change} | {tok} | {peak} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=None, help="these architectures (default: every shipped one)")
    ap.add_argument("--adapters", nargs="+", default=["lora", "qlora"], choices=list(CONFIGS))
    ap.add_argument("--full", action="store_true", help="also a full fine-tune of each")
    ap.add_argument("--parallel", type=int, default=8, help="architectures measured at once")
    ap.add_argument("--mem-gib", type=float, default=120.0, help="GPU memory the trials may take together")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--trial-timeout", type=float, default=300, help="seconds a trial may take before it counts as hung")
    ap.add_argument("--results", type=Path, default=None, help="default: benchmarks/results/compat-<card>.json")
    ap.add_argument("--resume", action="store_true", help="keep the results file's trials and skip them")
    ap.add_argument("--ship", action="store_true", help="write pipeline/architectures/compat.json from the results")
    ap.add_argument("--from-results", action="store_true",
                    help="run nothing: print the docs' table from the results file (and --ship it)")
    args = ap.parse_args()
    if args.full:
        args.adapters = [*args.adapters, "full"]
    card = _card(provenance.hardware()["accelerator"]) if args.results is None else ""
    results = args.results or ROOT / "benchmarks" / "results" / f"compat-{card}.json"
    if args.from_results:
        data = json.loads(results.read_text())
        if args.ship:
            ship(data, startup_matrix.DATA)
        print(table(data))
        return 0
    matrix = Matrix(args, results)
    archs = args.only or models.known_architectures()
    # the widest first: they wait longest for memory, the small ones fill in around them
    archs = sorted(archs, key=lambda a: -models.architecture_config(a).get("hidden_size", 0))
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        # transformers' lazy imports are not safe across threads: every shape's depth is settled here first
        depth = {a: layers_for(a) for a in archs}
        for future in [pool.submit(matrix.architecture, a, depth[a]) for a in archs]:
            future.result()
    shutil.rmtree(matrix.runs, ignore_errors=True)
    data = json.loads(results.read_text())
    if args.ship:
        ship(data, startup_matrix.DATA)
    print(table(data))
    print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
