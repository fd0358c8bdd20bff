"""`pipeline merge`: fold a finished run's adapter into its base model, atomically, then check the logits.

    pipeline merge RUN [--force]        RUN: a run name under the runs folder, or its path
    pipeline merge --auto [--force]     the newest finished training run

Axolotl does the merge (`python -m axolotl.cli.merge_lora RUN/config.yaml --lora_model_dir=RUN/output`,
its memory-efficient merge that streams one safetensors shard at a time) into `RUN/.merging-<pid>/merged`.
Only a merge that finished and passed the check below is renamed to `RUN/merged/` (a rename within one
folder is atomic), so a killed merge never leaves a `merged/` that looks complete: at worst a
`.merging-<pid>` folder, removed by the next merge. An existing `RUN/merged/` is kept unless `--force`.

The check: on the run's validation prompts (at most 4, 512 tokens each) the merged model's logits are
compared with the base model plus the adapter, loaded through peft:

- LoRA: the merged weights are W + s·BA, stored in the base model's dtype. In float32 the two models differ
  only by rounding: max |logit difference| <= 1e-4 * max(1, max |logit|). In bf16/fp16 the merged weights
  are rounded to the dtype's 8/11-bit mantissa, so the bound is 3e-2 * max(1, max |logit|) with top-1
  agreement >= 98% (bf16 rounding is 2^-9 relative per weight; see docs/train-merge-evaluate.md).
- QLoRA: QLoRA trains the adapter on an NF4-quantized base, and axolotl's merge round-trips *every* 2-D
  base tensor through NF4 before adding the adapter, embed_tokens and lm_head included (QLoRA training
  leaves those two unquantized), and in axolotl 0.19.0 without the double quantization training used.
  So two comparisons: (1) against the base with exactly that round trip applied (its double-quantization
  setting read off an untouched tensor of the merged model) plus the adapter: the same tight bound as
  LoRA, which proves the merge arithmetic; (2) against the model as trained (4-bit base as axolotl loads
  it, plus the adapter): the NF4 differences remain, so it is judged on behaviour: validation loss within
  2% and top-1 agreement >= 95%, with the logit difference reported.

The outcome goes to `RUN/merge.json`, `RUN/merged/pipeline-merge.json` and the run manifest's `merge` entry.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.core import inference, run_outputs, runs, safeio, staging
from pipeline.core.errors import SIGNALLED, ExitCode, UserError, printable
from pipeline.core.proc import sigterm_as_interrupt

TMP_PREFIX = ".merging-"
MAX_EXAMPLES = 4
MAX_TOKENS = 512
#: bound on max |logit difference| / max(1, max |logit|) by the merged weights' dtype
LOGIT_TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 3e-2}
#: merged vs the QLoRA model as trained: relative validation-loss difference and top-1 agreement
QLORA_LOSS_TOLERANCE = 0.02
QLORA_MIN_TOP1 = 0.95
LOWP_MIN_TOP1 = 0.98


def main(run_ref: str | None, *, auto: bool, force: bool, runs_dir: Path) -> int:
    """Merge RUN's adapter (or, with --auto, the newest finished run's) and verify it.

    run_ref: a run name under `runs_dir` or a run folder path
    auto: pick the newest training run that finished (status succeeded)
    force: replace an existing RUN/merged
    runs_dir: where run folders are
    """
    run = pick(runs_dir, run_ref, auto)
    run.take_lock()  # one writer: a second merge or an evaluation of this run waits its turn
    if (why := unmergeable(run)) is not None:  # it may have changed while we waited to look
        raise UserError.at(str(run.path), None, "merge-not-ready", why)
    target = run.path / "merged"
    if target.exists() and not force:
        print(printable(f"{run.name}: already merged into {target}; not overwriting it (pass --force to merge again)"),
              file=sys.stderr)
        return int(ExitCode.OK)
    cfg = runs.run_config(run)
    inference.offline_for(cfg["base_model"])  # before transformers is imported

    from pipeline.core import engine  # light: it launches axolotl in a child process and never imports it

    stage = staging.Staging(target, TMP_PREFIX)  # axolotl writes into stage.path/merged
    record: dict[str, Any] = {"status": "running", "started": runs.now(), "pid": os.getpid(), "command": sys.argv}
    try:
        stage.open()  # removing the folder a merge that was killed outright left
        run.update_manifest(merge=record)
    except OSError as exc:
        stage.discard()
        raise runs.unwritable(run.path, exc) from None
    # SIGTERM outside axolotl's run (during the check) stops like Ctrl-C: cleaned up, exit 130
    sigterm_as_interrupt()
    print(printable(f"==> merge: {run.output_dir} into {cfg['base_model']} -> {target}"), file=sys.stderr)
    started = time.perf_counter()
    assert run.lock is not None
    with stage:  # whatever is left in it when this ends goes with it
        try:
            code = engine.run(
                engine.command("merge_lora", run.path / "config.yaml",
                               args=[f"--lora_model_dir={run.output_dir}", f"--output_dir={stage.path}"]),
                engine.environment(stage.path / "metrics.jsonl", bool(run.manifest().get("offline", True))),
                run.path / "merge.log", pass_fds=(run.lock.fd,))
            if code != 0:
                return finish(run, record, "interrupted" if code in SIGNALLED else "failed",
                              int(ExitCode.INTERRUPTED) if code in SIGNALLED else int(ExitCode.ENGINE),
                              f"axolotl's merge exited with status {code}; see {run.path / 'merge.log'}")
            merged = stage.path / "merged"
            if (why := safeio.merged_problem(merged)) is not None:
                return finish(run, record, "failed", int(ExitCode.ENGINE),
                              f"axolotl's merge exited 0 but its output is not whole: {why}")
            record["merge_runtime_s"] = round(time.perf_counter() - started, 2)
            print("==> verify: merged logits vs base + adapter on the validation prompts", file=sys.stderr)
            result = verify(cfg, run.output_dir, merged)
            runs.write_json(merged / "pipeline-merge.json", result)
            runs.write_json(run.path / "merge.json", result)
            for line in describe(result):
                print(line, file=sys.stderr)
            if not result["ok"]:
                rejected = run.path / "merge-rejected"
                shutil.rmtree(rejected, ignore_errors=True)
                os.rename(merged, rejected)
                return finish(run, record, "failed-verification", int(ExitCode.FAILED),
                              f"the merged model does not match base + adapter; kept for inspection in {rejected}",
                              verification=result)
            stage.commit(merged)  # over an earlier merged/ only with --force (main returned before, without)
            record["path"] = str(target)
            return finish(run, record, "verified", int(ExitCode.OK), f"merged model: {target}",
                          verification=result)
        except KeyboardInterrupt:
            return finish(run, record, "interrupted", int(ExitCode.INTERRUPTED), "interrupted")
        except OSError as exc:  # a full or read-only disk while writing the merged model or its record
            return finish(run, record, "failed", int(ExitCode.ENGINE), f"cannot write ({exc.strerror or exc})")


def finish(run: runs.Run, record: dict[str, Any], status: str, code: int, message: str,
           verification: dict[str, Any] | None = None) -> int:
    record.update(status=status, finished=runs.now(), exit_code=code)
    if verification is not None:
        record["verification"] = {k: v for k, v in verification.items() if k != "checks"}
        record["checks"] = [{k: v for k, v in c.items() if k != "per_example"} for c in verification["checks"]]
    try:
        run.update_manifest(merge=record)
    except OSError as exc:
        message += f" (and the manifest cannot be written: {exc.strerror})"
        code = code or int(ExitCode.ENGINE)
    print(printable(f"{run.name}: merge {status}: {message}"), file=sys.stderr)
    return code


# --- which run --------------------------------------------------------------------------------------------

def pick(runs_dir: Path, ref: str | None, auto: bool) -> runs.Run:
    if ref:
        return runs.find_eligible(runs_dir, ref, unmergeable, "merge-not-ready")
    if not auto:
        raise UserError.at("<command line>", None, "merge-which",
                           "name the run to merge, or pass --auto for the newest finished training run")
    if (newest := runs.newest(runs_dir, unmergeable)) is not None:
        return newest
    raise UserError.at(str(runs_dir), None, "merge-none",
                       "no finished training run with an adapter here; train one with `pipeline train`")


def unmergeable(run: runs.Run) -> str | None:
    m = run.manifest()
    if m.get("stage") != "train":
        return f"{run.name} is a {m.get('stage')} run; merge takes a training run"
    if m.get("status") != "succeeded":
        return (f"{run.name} did not finish training (status {m.get('status')}); "
                f"`pipeline train --resume {run.path}` first")
    if (why := run_outputs.adapter_problem(run.output_dir)) is not None:
        return f"{run.name}: {why}"
    return None


# --- the check --------------------------------------------------------------------------------------------

def verify(cfg: dict[str, Any], adapter: Path, merged: Path) -> dict[str, Any]:
    """Compare the merged model's logits with base + adapter (see the module docstring for the bounds)."""
    tok = inference.tokenizer(merged)
    encoded = [inference.encode(tok, ex.messages, MAX_TOKENS) for ex in inference.examples(cfg, MAX_EXAMPLES)]
    if not encoded:
        raise UserError.at(str(cfg.get("base_model")), None, "merge-no-prompts",
                           "the config names no validation or training rows to check the merge on")
    dtype = merged_dtype(merged)
    dtype_name = str(dtype).replace("torch.", "")
    base, qlora = cfg["base_model"], cfg.get("adapter") == "qlora"

    # one model in memory at a time: an 8B model in bf16 is 16 GB
    model = inference.load(merged, dtype=dtype)
    out = logits(model, encoded)
    probe = model.get_input_embeddings().weight.detach().to("cpu", copy=True) if qlora else None
    del model
    inference.release()

    checks = []
    if not qlora:
        model = inference.load(base, adapter=adapter, dtype=dtype)
        checks.append(compare("base + adapter (peft)", logits(model, encoded), out, encoded, dtype_name))
        del model
    else:
        settings = nf4_settings(cfg)
        model = inference.load(base, adapter=adapter, dtype=dtype)
        double_quant = detect_double_quant(model, probe, settings["blocksize"])
        nf4_round_trip(model, blocksize=settings["blocksize"], double_quant=double_quant)
        checks.append(compare("NF4-round-tripped base + adapter (the merge's arithmetic)",
                              logits(model, encoded), out, encoded, dtype_name))
        del model, probe
        inference.release()
        model = inference.load(base, adapter=adapter, dtype=inference.training_dtype(cfg),
                               four_bit=settings["bnb"])
        checks.append(compare("4-bit base + adapter (the model as trained)", logits(model, encoded), out,
                              encoded, dtype_name, behaviour_only=True))
        del model
    inference.release()
    result = {
        "ok": all(c["ok"] for c in checks),
        "adapter_type": "qlora" if qlora else "lora",
        "merged_dtype": dtype_name,
        "examples": len(encoded),
        "tokens": sum(int(ids.shape[1]) for ids, _ in encoded),
        "device": inference.device(),
        "checks": checks,
        "checked_at": runs.now(),
    }
    if qlora:
        result["merge_double_quant"] = double_quant
        result["training_double_quant"] = settings["bnb"].get("bnb_4bit_use_double_quant", True)
    return result


def logits(model: Any, encoded: list[tuple[Any, Any]]) -> list[Any]:
    import torch

    dev = next(model.parameters()).device
    with torch.no_grad():
        return [model(input_ids=ids.to(dev)).logits.float().cpu() for ids, _ in encoded]


def masked_loss(all_logits: list[Any], encoded: list[tuple[Any, Any]]) -> float:
    """Mean next-token NLL over the assistant tokens (what axolotl's chat_template trains on)."""
    import torch

    total, count = 0.0, 0
    for lg, (ids, mask) in zip(all_logits, encoded, strict=True):
        logp = torch.log_softmax(lg[0, :-1], dim=-1)
        nll = -logp.gather(1, ids[0, 1:, None])[:, 0]
        keep = mask[0, 1:].bool()
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return total / max(count, 1)


def compare(name: str, ref: list[Any], got: list[Any], encoded: list[tuple[Any, Any]], dtype: str,
            behaviour_only: bool = False) -> dict[str, Any]:
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, got, strict=True))
    scale = max(float(a.abs().max()) for a in ref)
    positions = sum(int(a.shape[1]) for a in ref)
    top1 = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(ref, got, strict=True)) / positions
    loss_ref, loss_got = masked_loss(ref, encoded), masked_loss(got, encoded)
    rel_loss = abs(loss_got - loss_ref) / max(abs(loss_ref), 1e-12)
    row: dict[str, Any] = {"reference": name, "max_abs_logit_diff": diff, "max_abs_logit": scale,
                           "relative_logit_diff": diff / max(1.0, scale), "top1_agreement": top1,
                           "validation_loss_reference": loss_ref, "validation_loss_merged": loss_got,
                           "relative_loss_diff": rel_loss}
    if behaviour_only:
        row["tolerance"] = (f"|validation loss difference| <= {QLORA_LOSS_TOLERANCE:.0%} and top-1 agreement "
                            f">= {QLORA_MIN_TOP1:.0%} (logit difference reported, not bounded: NF4)")
        row["ok"] = rel_loss <= QLORA_LOSS_TOLERANCE and top1 >= QLORA_MIN_TOP1
    else:
        tol = LOGIT_TOLERANCE.get(dtype, LOGIT_TOLERANCE["bfloat16"])
        row["tolerance"] = f"max |logit diff| <= {tol:g} * max(1, max |logit|)"
        row["ok"] = diff <= tol * max(1.0, scale)
        if dtype != "float32":
            row["tolerance"] += f" and top-1 agreement >= {LOWP_MIN_TOP1:.0%}"
            row["ok"] = row["ok"] and top1 >= LOWP_MIN_TOP1
    return row


def describe(result: dict[str, Any]) -> list[str]:
    lines = []
    for c in result["checks"]:
        state = "ok" if c["ok"] else "FAILED"
        lines.append(f"    {state}: merged vs {c['reference']}: max |logit diff| {c['max_abs_logit_diff']:.3g} "
                     f"(max |logit| {c['max_abs_logit']:.3g}), top-1 agreement {c['top1_agreement']:.1%}, "
                     f"validation loss {c['validation_loss_merged']:.5f} vs {c['validation_loss_reference']:.5f}; "
                     f"bound: {c['tolerance']}")
    return lines


def merged_dtype(merged: Path) -> Any:
    meta = safeio.read_json(merged / "config.json", what="merged/config.json", follow=False)
    meta = meta if isinstance(meta, dict) else {}
    return inference.dtype_of(meta.get("dtype") or meta.get("torch_dtype") or "float32")


def nf4_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """Block size of the merge's NF4 simulation and the BitsAndBytesConfig axolotl trained with."""
    extra = dict(cfg.get("bnb_config_kwargs") or {})
    bnb = {k: v for k, v in extra.items() if k.startswith(("bnb_4bit_", "llm_int8_"))}
    return {"blocksize": extra.get("blocksize"), "bnb": bnb}


def _round_trip(tensor: Any, blocksize: int | None, double_quant: bool) -> Any:
    import bitsandbytes.functional as bnb_f
    import torch

    flat = tensor.reshape(-1).to(torch.float32).contiguous()
    kwargs: dict[str, Any] = {"quant_type": "nf4", "compress_statistics": double_quant}
    if blocksize:
        kwargs["blocksize"] = blocksize
    q, state = bnb_f.quantize_4bit(flat, **kwargs)
    return bnb_f.dequantize_4bit(q, state, quant_type="nf4").reshape(tensor.shape).to(tensor.dtype)


def detect_double_quant(model: Any, probe: Any, blocksize: int | None) -> bool:
    """Which NF4 round trip the merge applied (with or without double quantization), read off the input
    embeddings, which the adapter does not change: the one closest to the merged model's embeddings."""
    original = model.get_input_embeddings().weight.detach()
    errors = {dq: float((_round_trip(original, blocksize, dq).cpu() - probe).abs().max()) for dq in (False, True)}
    return min(errors, key=lambda dq: errors[dq])


def nf4_round_trip(model: Any, *, blocksize: int | None, double_quant: bool) -> None:
    """Round-trip every 2-D base weight (not the adapter's) through NF4 in place, as the merge does."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "lora_" not in name:
                param.copy_(_round_trip(param.data, blocksize, double_quant))
