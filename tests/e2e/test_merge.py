"""`pipeline merge` for real on the tiny model: LoRA and QLoRA adapters trained by axolotl on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from support import copy_run, wait_until

from pipeline.core import inference

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_evaluated) -> Path:
    """The session's trained, merged (`pipeline merge --auto`) and evaluated tiny LoRA run, copied: these
    tests merge it again."""
    return copy_run(tiny_evaluated, tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_qlora_trained) -> Path:
    """The session's trained tiny QLoRA run (one epoch), copied: these tests merge it."""
    return copy_run(tiny_qlora_trained, tmp_path_factory.mktemp("qlora"))


def validation_logits(model, run: Path) -> list[torch.Tensor]:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    tok = inference.tokenizer(run / "output")
    with torch.no_grad():
        return [model(input_ids=inference.encode(tok, ex.messages)[0]).logits.float()
                for ex in inference.examples(cfg)]


#: the LoRA merge tests read the session's merged run (conftest's `tiny_evaluated`, `pipeline merge --auto`
#: as `nox -s merge` runs it): on the worker that makes it, so no other worker waits for it
LORA_MERGES = pytest.mark.xdist_group("evaluated")


@LORA_MERGES
def test_lora_merge_is_atomic_verified_and_matches_the_adapter(tiny_evaluated):
    run = tiny_evaluated  # read only
    merged = run / "merged"
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    assert not list(run.glob(".merging-*"))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["merge"]["status"] == "verified" and manifest["status"] == "succeeded"
    (check,) = json.loads((run / "merge.json").read_text())["checks"]
    assert check["ok"] and check["top1_agreement"] == 1.0

    # independently of merge.json: the merged model against base + adapter through peft, fp32 on the CPU
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    merged_logits = validation_logits(inference.load(merged), run)
    adapter_logits = validation_logits(inference.load(cfg["base_model"], adapter=run / "output"), run)
    base_logits = validation_logits(inference.load(cfg["base_model"]), run)
    for m, a, b in zip(merged_logits, adapter_logits, base_logits, strict=True):
        scale = max(1.0, float(a.abs().max()))
        assert float((m - a).abs().max()) <= 1e-4 * scale  # the stated LoRA fp32 bound
        assert float((b - a).abs().max()) > 100 * 1e-4 * scale  # and the adapter does change the logits


def start_merge(run: Path) -> tuple[subprocess.Popen, int]:
    log = run / "merge.log"
    offset = log.stat().st_size if log.exists() else 0  # the log is appended to by every merge
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "merge", str(run), "--force"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    return proc, offset


def wait_for_shards(run: Path, proc: subprocess.Popen, offset: int, timeout: float = 300) -> None:
    """Until axolotl announces, in this merge's part of the log, that it is about to write the shards."""
    def announced() -> bool:
        try:
            with (run / "merge.log").open("rb") as fh:
                fh.seek(offset)
                return b"Copying non-model files" in fh.read()
        except FileNotFoundError:  # this run's first merge has not opened its log yet
            return False

    wait_until(announced, what="the merge starting to write its shards", timeout=timeout, proc=proc, every=0.01)


@LORA_MERGES
def test_a_killed_merge_leaves_no_complete_looking_merged_folder(cli, cli_here, lora_run):
    merged, earlier = lora_run / "merged", lora_run / "merged-earlier"
    # a second merge keeps the first (the end of this test shows --force replacing it)
    before = (merged / "model.safetensors").stat().st_mtime_ns
    proc = cli_here("merge", str(lora_run))  # refused before anything starts: in this process
    assert proc.returncode == 0 and "--force" in proc.stderr
    assert (merged / "model.safetensors").stat().st_mtime_ns == before
    os.rename(merged, earlier)  # the killed merges are of a run without a merge

    # SIGTERM: forwarded to axolotl; the temporary folder is removed
    proc, offset = start_merge(lora_run)
    wait_for_shards(lora_run, proc, offset)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert not merged.exists() and not list(lora_run.glob(".merging-*"))
    assert json.loads((lora_run / "manifest.json").read_text())["merge"]["status"] == "interrupted"

    # SIGKILL of pipeline and axolotl: nothing can clean up, yet no merged/ appears
    proc, offset = start_merge(lora_run)
    wait_for_shards(lora_run, proc, offset)
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in family:
        p.kill()
    psutil.wait_procs(family, timeout=60)
    proc.communicate(timeout=60)
    assert not merged.exists()
    (tmp,) = lora_run.glob(".merging-*")  # the half-written merge stays out of the way

    # the next merge removes it and completes; with --force it replaces the merge already there
    os.rename(earlier, merged)
    before = (merged / "model.safetensors").stat().st_mtime_ns
    proc = cli("merge", str(lora_run), "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not tmp.exists() and not list(lora_run.glob(".merging-*"))
    assert (merged / "model.safetensors").stat().st_mtime_ns != before
    assert json.loads((lora_run / "manifest.json").read_text())["merge"]["status"] == "verified"


#: the QLoRA tests share one worker's copy of the run: the drift test reads the merge the first one makes
QLORA_MERGES = pytest.mark.xdist_group("qlora-merges")


@QLORA_MERGES
def test_qlora_merge_matches_the_nf4_base_and_the_trained_model_within_its_bounds(cli, qlora_run):
    proc = cli("merge", str(qlora_run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((qlora_run / "merge.json").read_text())
    arithmetic, trained = result["checks"]
    assert result["adapter_type"] == "qlora" and result["ok"]
    # the merge's own arithmetic: tight, as for LoRA
    assert arithmetic["relative_logit_diff"] <= 1e-4
    # against the model as trained, NF4 differences remain: larger than rounding, small in behaviour
    assert trained["relative_logit_diff"] > 100 * arithmetic["relative_logit_diff"]
    assert trained["relative_loss_diff"] <= 0.02 and trained["top1_agreement"] >= 0.95
    # axolotl 0.19.0 simulates NF4 without the double quantization QLoRA trained with
    assert result["merge_double_quant"] is False and result["training_double_quant"] is True


@QLORA_MERGES
def test_qlora_drift_comes_from_what_the_merge_round_trips_differently(cli, qlora_run):
    """The trained QLoRA model is the base with its linear layers NF4-quantized as bitsandbytes' Linear4bit
    does it (the 2-D weight, double quantization) and embed_tokens/lm_head untouched, plus the adapter. The
    merge round-trips every 2-D tensor, embed_tokens and lm_head included, flattened and without double
    quantization; that, and nothing else, is the drift the behaviour check allows for."""
    import bitsandbytes.functional as bnb_f

    from pipeline.stages import merge

    if not (qlora_run / "merged").exists():
        assert cli("merge", str(qlora_run)).returncode == 0
    cfg = yaml.safe_load((qlora_run / "config.yaml").read_text())
    base, adapter = cfg["base_model"], qlora_run / "output"
    trained = inference.load(base, adapter=adapter, four_bit={})
    trained_logits = validation_logits(trained, qlora_run)

    def as_linear4bit(w: torch.Tensor) -> torch.Tensor:  # what Params4bit._quantize does: the 2-D tensor
        q, state = bnb_f.quantize_4bit(w.contiguous(), quant_type="nf4", compress_statistics=True)
        return bnb_f.dequantize_4bit(q, state).reshape(w.shape)

    def simulated(skip: tuple[str, ...], round_trip) -> list[torch.Tensor]:
        model = inference.load(base, adapter=adapter)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.ndim == 2 and "lora_" not in name and not any(s in name for s in skip):
                    param.copy_(round_trip(param.data))
        return validation_logits(model, qlora_run)

    def worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))

    as_trained = simulated(("embed_tokens", "lm_head"), as_linear4bit)
    as_merged = simulated((), lambda w: merge._round_trip(w, None, False))
    scale = max(float(t.abs().max()) for t in trained_logits)
    assert worst(as_trained, trained_logits) <= 1e-4 * scale  # the simulation is the trained model
    assert worst(as_merged, trained_logits) > 100 * max(worst(as_trained, trained_logits), 1e-6)
    merged = validation_logits(inference.load(qlora_run / "merged"), qlora_run)
    assert worst(as_merged, merged) <= 1e-4 * scale  # and that simulation is the merged model
