"""`pipeline check`: find in seconds, with no GPU and no model weights, what axolotl would accept silently.

    pipeline check CONFIG... [--format table|json] [--strict] [--gpu-mem 32GiB] [--gpu NAME]
                             [--device auto|cpu|gpu] [--set KEY=VALUE]

For every config: every finding as one line, `path:line: rule-id: what is wrong; what to change`
(data findings point into the data file), then what the config will do (rows, token lengths, steps,
warmup, trainable parameters, peak-VRAM estimate for LoRA and QLoRA, and with --gpu-mem which one to
use), then one summary table. `--format json` prints the same as one JSON document for CI.

Exit status: 0 clean (warnings allowed), 1 warnings with --strict, 2 errors. The rules live in
`pipeline.checks` (smoke and train run the same entry first); docs/check.md lists them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import checks
from pipeline.checks import hub_rows
from pipeline.checks.context import Report
from pipeline.core import cards
from pipeline.core.errors import ExitCode, Finding, UserError, printable
from pipeline.core.table import pipe_table


def main(paths: list[str], *, output: str = "table", strict: bool = False, gpu_mem: str | None = None,
         gpu: str | None = None, device: str = "auto", overrides: dict[str, Any] | None = None,
         gpus: int = 1, nnodes: int = 1) -> int:
    memory = _memory(gpu_mem)
    for flag, n in (("gpus", gpus), ("nnodes", nnodes)):
        if n < 1:
            raise UserError.at("<command line>", None, flag, f"--{flag} {n}: give 1 or more")
    reports = [check_one(p, device=device, gpu=gpu, memory=memory, overrides=overrides or {}, gpus=gpus,
                         nnodes=nnodes) for p in paths]
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    code = ExitCode.USAGE if errors else ExitCode.FAILED if strict and warnings else ExitCode.OK
    if output == "json":
        print(json.dumps({"configs": [_as_json(r) for r in reports],
                          "summary": {"configs": len(reports), "errors": errors, "warnings": warnings},
                          "exit_code": int(code)}, indent=2, default=str))
    else:  # paths come from the command line and the file system: any byte, any control character
        print("\n".join(printable(line) for line in render(reports).split("\n")))
    return int(code)


def check_one(path: str, *, device: str, gpu: str | None, memory: float | None,
              overrides: dict[str, Any], gpus: int = 1, nnodes: int = 1) -> Report:
    """Findings and facts for one config after the overrides (a config that does not load is a report
    with its one finding): the same entry smoke and train use, without the remembered results."""
    return checks.run(path, overrides=overrides, device=device, gpu=gpu, gpu_mem_gib=memory, gpus=gpus,
                      nnodes=nnodes)


def _memory(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return cards.parse_memory(text)
    except ValueError as exc:
        raise UserError.at("<command line>", None, "gpu-mem", f"--gpu-mem {exc}") from None


# --- output -------------------------------------------------------------------------------------------

def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.path, f.line or 0))


def render(reports: list[Report]) -> str:
    out: list[str] = []
    for r in reports:
        out += [f"{f} [{f.severity}]" if f.severity != "error" else str(f) for f in _sorted(r.findings)]
    if out:
        out.append("")
    for r in reports:
        if r.facts:
            out += facts_block(r)
            out.append("")
    out.append(summary_table(reports))
    return "\n".join(out)


def facts_block(r: Report) -> list[str]:
    f = r.facts
    lines = [f"{r.path}  (checked for {f['target']['described']})"]
    for d in f.get("data", []):
        desc = f"{d['entry']} {d['path']}: {d['rows']} rows"
        if d.get("resolved") and Path(d["path"]).resolve() != Path(d["resolved"]):
            desc += f" (found at {d['resolved']})"
        if t := d.get("tokens"):
            desc += f", {t['min']}-{t['max']} tokens (median {t['median']})"
        elif t := d.get("tokens_at_most"):
            desc += f", at most {t['max']} tokens a row (tokenizer not available)"
        lines.append(("  data       " if len(lines) == 1 else "             ") + desc)
    for h in f.get("hub_data", []):
        lines.append(("  data       " if len(lines) == 1 else "             ") + hub_rows.Rows(**h).described())
    s = f.get("schedule") or {}
    if s.get("total_steps") is not None:
        le = "" if s.get("exact", True) else "<= "
        le_total = "" if s.get("total_exact", True) else "<= "
        seqs = f", {le}{s['sequences']} packed sequences" if s.get("note", "").startswith(("packed", "upper")) else ""
        per_epoch = f"{le}{s['steps_per_epoch']} steps/epoch, " if s.get("steps_per_epoch") is not None else ""
        lines.append(f"  schedule   batch {s['batch']}{seqs}, {per_epoch}{le_total}{s['total_steps']} optimizer steps, "
                     f"{le_total}{s['warmup_steps']} warmup")
    elif s.get("note"):
        lines.append(f"  schedule   {s['note']}")
    if w := f.get("loss"):
        lines.append(f"  loss       {loss_line(w)}")
    if p := f.get("params"):
        extra = f" (LoRA {p['lora']:,} + saved modules {sum(p['modules_to_save'].values()):,})" \
            if p["modules_to_save"] else ""
        if f.get("adapter") == "full fine-tune":
            extra = " (full fine-tune: no adapter, every weight trains)"
        lines.append(f"  params     {p['trainable']:,} trainable of {p['total']:,} ({p['trainable_percent']}%){extra}")
    if m := f.get("memory"):
        lora, qlora, full = m["lora"], m["qlora"], m["full"]
        lines.append(f"  peak VRAM  LoRA ~{_gib(lora['peak_gib'])} GiB, QLoRA ~{_gib(qlora['peak_gib'])} GiB, full "
                     f"fine-tune ~{_gib(full['peak_gib'])} GiB (estimate, {m.get('per', 'one GPU')}, "
                     f"{lora['tokens_per_micro_batch']:,} tokens a micro-batch)")
        if m.get("recommendation"):
            lines.append(f"  advice     {m['recommendation']}")
    if (k := f.get("compat")) and k.get("architecture"):
        lines.append(f"  start-up   {compat_line(k)}")
    if c := f.get("compute"):
        what = "with pipeline.compute: fastest" if c.get("asked") else "pipeline.compute: fastest would choose"
        lines.append(f"  compute    {what} {c['summary']}")
    return lines


def loss_line(w: dict[str, Any]) -> str:
    """How the run weighs its tokens, in a few words (pipeline.in_axolotl.loss)."""
    split = f"micro batch {w['micro_batch']} x accumulation {w['accumulation']}"
    if w["weighting"] == "per-token":
        return f"weighted per token over each step ({split}; another split trains the same)"
    return f"a mean per micro batch ({split}; another split trains differently: pipeline.loss_weighting)"


def compat_line(k: dict[str, Any]) -> str:
    """The measured matrix's verdict in a few words (pipeline/core/startup_matrix.py): the status, and the card and
    versions it was measured with. Its tokens/s and peak are a reduced-depth stand-in's (2 or 6 layers), not
    the model's, so they stay in facts.compat and are not printed here."""
    if k["status"] not in ("ran", "crashes"):
        return f"untested: {k.get('why', 'not measured')}"
    on = k.get("measured_on") or {}
    versions = on.get("versions") or {"axolotl": k.get("axolotl")}
    seen = ", ".join(f"{name} {v}" for name, v in versions.items() if v)
    where = " on ".join(x for x in (seen, on.get("card")) if x) + (f", {on['date']}" if on.get("date") else "")
    what = f"{k['architecture']} with {k['adapter']} and these settings"
    if k["status"] == "ran":
        return f"ran: {what} started and trained (a reduced-depth stand-in, measured with {where})"
    return f"crashes: {what} crash at start-up (measured with {where}): see compat-crashes above"


def _gib(x: float) -> str:
    return f"{x:.2f}" if x < 1 else f"{x:.1f}"


def summary_table(reports: list[Report]) -> str:
    header = ["Config", "Target", "Errors", "Warnings", "Trainable", "Steps", "Peak LoRA/QLoRA"]
    rows = []
    for r in reports:
        f = r.facts
        s = f.get("schedule") or {}
        steps = "-" if s.get("total_steps") is None else \
            f"{'' if s.get('total_exact', True) else '<='}{s['total_steps']}"
        mem = f.get("memory")
        rows.append([
            Path(r.path).name,
            (f.get("target") or {}).get("device", "-"),
            str(len(r.errors)),
            str(len(r.warnings)),
            f"{f['params']['trainable']:,}" if f.get("params") else "-",
            steps,
            f"{_gib(mem['lora']['peak_gib'])}/{_gib(mem['qlora']['peak_gib'])} GiB" if mem else "-",
        ])
    return pipe_table(header, rows)


def _as_json(r: Report) -> dict[str, Any]:
    return {"path": r.path, "errors": len(r.errors), "warnings": len(r.warnings),
            "findings": [f.as_dict() for f in _sorted(r.findings)], "facts": r.facts}

