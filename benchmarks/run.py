#!/usr/bin/env python3
"""Benchmark the shipped LoRA and QLoRA configs against an axolotl-defaults baseline, on one card.

Every variant runs the real `pipeline smoke` command (so its wall time is the smoke's whole wall time)
on `pipeline://random/llama-3.1-8b` (random weights in Llama-3.1-8B's exact shape) and a synthetic
chat set long enough to fill sequence_len 4096 with packing, for `--steps` optimizer steps:

    python benchmarks/run.py --steps 8 --variants baseline_lora lora baseline_qlora qlora

Figures per variant, from the run's metrics.jsonl:
- steady-state total tokens/s: tokens of steps `warmup+1..steps` over those steps' summed times
  (the first `--warmup` steps carry allocator growth and kernel autotuning and are left out);
- MFU against the card's dense bf16 ceiling (`--peak-tflops`, default the card's entry in
  pipeline/core/cards.py: 798 on the H100 and H200, measured on the lent H100 with an 8192^3 bf16 matmul).
  Model FLOPs per token, recomputation not counted (pipeline/checks/flops.py, as the smoke table's MFU):
      4 * N_base            forward and input-gradient matmuls of the frozen base (no weight gradients)
    + 6 * N_adapter         forward, input and weight gradients of the LoRA matrices
    + 8 * L * S * d         attention scores and values at sequence length S, forward and backward
  with N_base the base's linear-layer parameters (embeddings excluded, lm_head included);
- peak allocated and reserved VRAM over the whole run;
- the smoke command's whole wall time (imports, data, model load, steps).
Results merge into benchmarks/results/<card>.json with the versions and the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.checks import flops, shapes  # noqa: E402
from pipeline.core import (  # noqa: E402
    cards,  # noqa: E402
    models,
    provenance,
    runs,
)

LORA, QLORA = ROOT / "configs" / "lora_style_transfer.yaml", ROOT / "configs" / "qlora_style_transfer.yaml"
FASTEST = ["pipeline.compute=fastest"]
#: stands for `pipeline.compute_gpu_mem=<the GPU here>`: the shipped configs choose for a 32 or 24 GiB card
CARD = "pipeline.compute_gpu_mem=CARD"
#: name -> (config, overrides). The shipped configs, their pre-tuning baselines, and candidates that
#: change only how the same training is computed (micro batch x accumulation keeps the global batch)
VARIANTS: dict[str, tuple[Path, list[str], int]] = {
    "baseline_lora": (ROOT / "benchmarks" / "configs" / "baseline_lora.yaml", [], 1),
    "lora": (LORA, [], 1),
    "lora_mbs2": (LORA, ["micro_batch_size=2", "gradient_accumulation_steps=2"], 1),
    "lora_compile": (LORA, ["torch_compile=true"], 1),
    "lora_fused_adamw": (LORA, ["optimizer=adamw_torch_fused"], 1),
    # axolotl's activation offloading: `true` replaces recomputation by offloading every saved activation
    # to pinned CPU memory; `hidden_states` keeps recomputation and offloads only the checkpointed layer
    # inputs, which frees the memory a second packed sequence per micro-batch needs
    "lora_offload": (LORA, ["activation_offloading=true"], 1),
    "lora_mbs2_hs": (LORA, ["micro_batch_size=2", "gradient_accumulation_steps=2",
                            "activation_offloading=hidden_states"], 1),
    "lora_2gpu": (LORA, [], 2),
    "baseline_qlora": (ROOT / "benchmarks" / "configs" / "baseline_qlora.yaml", [], 1),
    "qlora": (QLORA, [], 1),
    "qlora_mbs2": (QLORA, ["micro_batch_size=2", "gradient_accumulation_steps=2"], 1),
    "qlora_compile": (QLORA, ["torch_compile=true"], 1),
    "qlora_offload": (QLORA, ["activation_offloading=true"], 1),
    "qlora_mbs2_hs": (QLORA, ["micro_batch_size=2", "gradient_accumulation_steps=2",
                              "activation_offloading=hidden_states"], 1),
    # `pipeline.compute: fastest` (pipeline/checks/compute.py) chooses how the shipped configs compute for the card
    # here, or as for a 32 GiB card (the seed's RTX 5090); the config's peak bound is raised to the card, which
    # the choice keeps
    "fastest_lora": (LORA, [*FASTEST, CARD, "pipeline.bounds.peak_vram_gib=140"], 1),
    "fastest_qlora": (QLORA, [*FASTEST, CARD, "pipeline.bounds.peak_vram_gib=140"], 1),
    "fastest_lora_32g": (LORA, [*FASTEST, "pipeline.compute_gpu_mem=32GiB", "pipeline.bounds.peak_vram_gib=30"], 1),
    # the split of the global batch a large card allows, set by hand: the proof that it trains the same
    "lora_4x1": (LORA, ["pipeline.compute=as_written", "micro_batch_size=4", "gradient_accumulation_steps=1",
                        "multipack_real_batches=true", "pipeline.bounds.peak_vram_gib=140"], 1),
    # NeMo AutoModel's published Llama-3.1-8B LoRA recipe in the settings axolotl expresses (rank 16, alpha 32,
    # every linear layer, seq 4096, micro batch 2, no recomputation, a global batch of 32 sequences), computed
    # the fastest way for the card
    "peer_nemo_lora": (LORA, [*FASTEST, CARD, "pipeline.bounds.peak_vram_gib=140", "lora_r=16", "lora_alpha=32",
                              "micro_batch_size=2", "gradient_accumulation_steps=16",
                              "gradient_checkpointing=false"], 1),
    # levers the choice does not take, measured on top of it: torch.compile, and a larger micro batch of the same
    # packed sequences (multipack_real_batches: 4,096-token bins, as at micro batch 1), which weights tokens differently
    "fastest_lora_compile": (LORA, [*FASTEST, CARD, "pipeline.bounds.peak_vram_gib=140", "torch_compile=true"], 1),
    "fastest_qlora_compile": (QLORA, [*FASTEST, CARD, "pipeline.bounds.peak_vram_gib=140", "torch_compile=true"], 1),
}
#: what a plain `benchmarks/run.py` measures: the shipped configs beside their baselines, and the fastest
#: computation of each shipped config (for this card, and as for a 32 GiB one)
STANDARD = ("baseline_lora", "lora", "baseline_qlora", "qlora")
FASTEST_VARIANTS = ("fastest_lora", "fastest_qlora", "fastest_lora_32g", "peer_nemo_lora")
#: environment a variant needs beyond the smoke's own (torch.compile breaks its graph on packed attention's
#: Tensor.item() unless scalar outputs are captured)
VARIANT_ENV = {name: {"TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS": "1"} for name in ("fastest_lora_compile",
                                                                               "fastest_qlora_compile")}
MODEL = "pipeline://random/llama-3.1-8b"

WORDS = ["river", "stone", "light", "signal", "forest", "engine", "market", "harbour", "lantern", "meadow", "copper", "voice", "circuit", "garden", "storm", "bridge", "archive", "orchard", "compass", "tide", "ember", "glacier", "thread", "beacon", "valley", "station", "keeper", "ridge", "hollow", "canopy", "furnace"]


def synthetic(path: Path, rows: int = 1500, seed: int = 0) -> Path:
    """Chat rows of 150-1,400 words (roughly 300-3,000 tokens of the tiny tokenizer): packing has work."""
    if path.is_file():
        return path
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        user = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 300)))
        reply = " ".join(rng.choice(WORDS) for _ in range(rng.randint(100, 1100)))
        lines.append(json.dumps({"messages": [{"role": "user", "content": user},
                                              {"role": "assistant", "content": reply}]}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(name: str, steps: int, warmup: int, data: Path, runs_dir: Path, extra: list[str],
            profile: bool = False, shared_prepared: bool = False) -> dict:
    cfg_path, overrides, gpus = VARIANTS[name]
    if CARD in overrides:
        local = cards.local_card()
        here = f"pipeline.compute_gpu_mem={local[1]:.1f}GiB" if local else "pipeline.compute=as_written"
        overrides = [here if o == CARD else o for o in overrides]
    out_json = runs_dir / f"bench-{name}.json"
    # a fresh prepared-dataset folder per variant: every smoke wall time is a cold one (unless shared,
    # when only the first variant tokenises)
    prepared = runs_dir / ("prepared-shared" if shared_prepared else "prepared-" + name)
    cmd = [sys.executable, "-m", "pipeline", "smoke", str(cfg_path), "--max-steps", str(steps),
           "--set", f"base_model={MODEL}", "--set", f"datasets.0.path={data}", "--runs-dir", str(runs_dir),
           "--set", f"dataset_prepared_path={prepared}", "--json", str(out_json),
           "--gpus", str(gpus), *[a for kv in overrides for a in ("--set", kv)], *extra,
           *(["--profile-step", str(steps)] if profile else [])]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **VARIANT_ENV.get(name, {})})
    wall = time.perf_counter() - started
    result = json.loads(out_json.read_text())["results"][0] if out_json.is_file() else {}
    run = runs.Run(runs_dir / result["run"]) if result.get("run") else None
    train = [r for r in (run.metrics() if run else []) if r.get("kind") == "train"]
    # a profiled last step runs slower under the profiler: it is left out of the steady window
    steady = train[warmup:-1] if profile else train[warmup:]
    row = {"variant": name, "config": str(cfg_path.relative_to(ROOT)), "overrides": overrides, "gpus": gpus,
           "machine": f"{os.uname().nodename} ({provenance.hardware()['accelerator']} x{len(provenance.hardware()['gpus'])})",
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "exit_code": proc.returncode, "prepared_data": "shared" if shared_prepared else "fresh",
           "command": " ".join(cmd[1:]), "smoke_wall_s": round(wall, 1), "steps": len(train)}
    if steady and all(r.get("step_time_s") for r in steady):
        tokens = steady[-1]["tokens_total"] - train[warmup - 1]["tokens_total"]
        profiled = run.path / "profile.json" if run else None
        seconds = sum(r["step_time_s"] for r in steady)
        import yaml

        resolved = yaml.safe_load((run.path / "config.yaml").read_text()) if run else {}
        adapter = resolved.get("adapter") if resolved.get("adapter") in ("lora", "qlora") else None
        fpt = flops.per_token(shapes.shape(models.architecture_config("llama-3.1-8b")), resolved, adapter).per_token
        row.update({
            "steady_tokens_per_s": round(tokens / seconds, 1),
            "steady_tokens_per_s_per_gpu": round(tokens / seconds / gpus, 1),
            "per_rank_peak_allocated_gib": result.get("per_rank_peak_vram_gib"),
            "steady_steps": len(steady),
            "step_time_s": [round(r["step_time_s"], 3) for r in train],
            "flops_per_token": fpt,
            "peak_allocated_gib": round(result.get("peak_memory_gib") or 0, 2),
            "peak_reserved_gib": round(result.get("peak_vram_reserved_gib") or 0, 2),
            "trainable_params": result.get("trainable_params"),
            "final_loss": result.get("final_loss"),
            "losses": result.get("losses"),
            "compute": (run.manifest().get("compute") if run else None),
            "phases_s": result.get("phases_s"),
            "profile": json.loads(profiled.read_text()) if profiled and profiled.is_file() else None,
            "settings": {k: resolved.get(k) for k in ("micro_batch_size", "gradient_accumulation_steps",
                                                      "gradient_checkpointing", "gradient_checkpointing_kwargs",
                                                      "multipack_real_batches", "sdp_attention", "flash_attention",
                                                      "plugins", "liger_fused_linear_cross_entropy",
                                                      "liger_rms_norm", "torch_compile", "sample_packing",
                                                      "optimizer")},
        })
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=[*STANDARD, *FASTEST_VARIANTS], choices=list(VARIANTS),
                    help=f"default: {' '.join([*STANDARD, *FASTEST_VARIANTS])} (the others are candidates and the "
                         f"2-GPU run)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the card's dense bf16 ceiling (default: its entry in pipeline/core/cards.py)")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "benchmarks")
    ap.add_argument("--results", type=Path, default=None, help="default: benchmarks/results/<card>.json")
    ap.add_argument("--profile", action="store_true",
                    help="profile each variant's last step (left out of the steady window); groups go in the JSON")
    ap.add_argument("--shared-prepared", action="store_true",
                    help="one prepared-dataset folder for all variants: only the first smoke tokenises (saves "
                         "device time; the others' wall times are then warm-data ones)")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="passed on to every smoke")
    args = ap.parse_args()

    hw = provenance.hardware()
    card = hw["accelerator"].replace(" ", "-")
    peak = args.peak_tflops or cards.dense_bf16_tflops(hw["accelerator"])
    if peak is None:
        ap.error(f"no dense bf16 ceiling is known for {hw['accelerator']}; give --peak-tflops")
    data = synthetic(args.runs_dir / "synthetic-1500.jsonl")
    models.resolve(MODEL)  # build once, outside any timed smoke
    extra = [a for kv in args.extra for a in ("--set", kv)]
    out = args.results or ROOT / "benchmarks" / "results" / f"{card}.json"
    rows = []
    for variant in args.variants:  # results are written after every variant: a cut-off call keeps them
        row = measure(variant, args.steps, args.warmup, data, args.runs_dir, extra, args.profile,
                      args.shared_prepared)
        if "steady_tokens_per_s" in row:
            row["mfu"] = round(flops.mfu(row["steady_tokens_per_s_per_gpu"], row["flops_per_token"], peak), 4)
        rows.append(row)
        previous = json.loads(out.read_text()) if out.is_file() else {}
        by_variant = {r["variant"]: r for r in previous.get("results", [])}
        by_variant.update({r["variant"]: r for r in rows})
        payload = {
            "card": hw["accelerator"], "hardware": hw, "versions": provenance.versions(),
            "peak_bf16_tflops": peak, "model": MODEL,
            "data": "synthetic 1,500 chat rows (benchmarks/run.py)",
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "results": [by_variant[k] for k in VARIANTS if k in by_variant],
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        runs.write_json(out, payload)
    print(f"\n{'variant':<21} {'tok/s':>8} {'MFU':>6} {'alloc GiB':>9} {'resv GiB':>9} {'smoke s':>8} "
          f"{'final loss':>10} exit")
    for r in payload["results"]:
        print(f"{r['variant']:<21} {r.get('steady_tokens_per_s', 0):>8.0f} {r.get('mfu', 0):>6.1%} "
              f"{r.get('peak_allocated_gib', 0):>9.2f} {r.get('peak_reserved_gib', 0):>9.2f} {r['smoke_wall_s']:>8.1f} "
              f"{r.get('final_loss') or 0:>10.4f} {r['exit_code']}")
    print(f"wrote {out}")
    return 0 if all(r["exit_code"] in (0, 1) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
