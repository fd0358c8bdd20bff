"""`pipeline check`: config and data mistakes in seconds, with no GPU and no weights (stage: pipeline/stages/check.py)."""

from __future__ import annotations

import argparse

from pipeline.commands._shared import Subparsers, add_command, add_overrides


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = add_command(subparsers, "check", help="find config and data mistakes in seconds, before any GPU time",
                    description="Check each config and the data it names against axolotl's own schema and "
                                "pipeline's rules, with no GPU and no model weights: one line per finding "
                                "(path:line: rule-id: what is wrong; what to change), then rows, steps, "
                                "trainable parameters and a peak-VRAM estimate. Exit 0 clean, 1 warnings "
                                "with --strict, 2 errors. The rules: docs/check.md.",
                    examples=[
                        ("every shipped config, its memory judged against a 32 GiB card (LoRA or QLoRA?)",
                         "pipeline check configs/*.yaml --gpu-mem 32GiB"),
                        ("in CI: findings as JSON, and warnings fail too (exit 1)",
                         "pipeline check configs/lora_style_transfer.yaml --format json --strict"),
                        ("the 8B config with twice the batch, on a 24 GB RTX 4090",
                         'pipeline check configs/lora_style_transfer.yaml --set micro_batch_size=2 '
                         '--gpu "RTX 4090" --gpu-mem 24GB'),
                    ])
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="axolotl YAML files")
    p.add_argument("--format", choices=("table", "json"), default="table", help="table for people, json for CI")
    p.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    p.add_argument("--gpu-mem", default=None, metavar="SIZE",
                   help="the card's memory (32GiB, 24GB): judge the estimate against it, recommend LoRA or QLoRA")
    p.add_argument("--gpu", default=None, metavar="NAME", help="the card (T4, A100, RTX 4090, sm_86): judges bf16")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where the run happens (auto: pipeline://tiny-llama without CUDA here is a CPU run, "
                        "any other model a GPU run)")
    p.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="GPUs per node of the run: axolotl's multi-GPU validation, and with FSDP the peak per rank")
    p.add_argument("--nnodes", type=int, default=1, metavar="M",
                   help="nodes of the run: with FSDP the weights shard over --gpus x --nnodes ranks")
    add_overrides(p, lasting="check")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pipeline.core import config
    from pipeline.stages import check as stage

    return stage.main(args.configs, output=args.format, strict=args.strict, gpu_mem=args.gpu_mem, gpu=args.gpu,
                      device=args.device, overrides=config.parse_overrides(args.overrides), gpus=args.gpus,
                      nnodes=args.nnodes)
