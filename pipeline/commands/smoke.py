"""`pipeline smoke`: each config for a few steps through axolotl, judged against its bounds (stage: pipeline/stages/smoke.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands._shared import (
    Subparsers,
    add_command,
    add_nodes,
    add_overrides,
    add_runs_dir,
    default_configs,
    telling_the_nodes,
    topology,
)


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = add_command(subparsers, "smoke", help="run each config for a few steps and check its bounds",
                    description="Run each config for --max-steps optimizer steps through axolotl and print "
                                "Config | Runtime | Peak VRAM (RSS on CPU) | Trainable Params | Throughput | MFU | "
                                "Final Loss. With no CONFIG: the shipped GPU configs where CUDA answers, "
                                "else configs/tiny_cpu.yaml (a tiny model built locally; no download).",
                    examples=[
                        ("the shipped GPU configs where CUDA answers, else configs/tiny_cpu.yaml",
                         "pipeline smoke"),
                        ("the 8B config's memory and speed on its exact shape, with random weights (no hub)",
                         "pipeline smoke configs/lora_style_transfer.yaml --max-steps 2 "
                         "--set base_model=pipeline://random/llama-3.1-8b"),
                        ("two GPUs (DDP), with torch's profiler over the second step",
                         "pipeline smoke configs/lora_style_transfer.yaml --gpus 2 --profile-step 2"),
                    ])
    p.add_argument("configs", nargs="*", metavar="CONFIG", help="axolotl YAML files")
    p.add_argument("--max-steps", type=int, default=0,
                   help="optimizer steps per config (default: the config's pipeline.smoke.max_steps, else 3)")
    p.add_argument("--json", type=Path, default=None, help="write the results here (default: RUNS/smoke-<time>.json)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per run (DDP, or FSDP/DeepSpeed as the config says), "
                                                       "through axolotl's torchrun launcher")
    p.add_argument("--profile-step", type=int, default=0, metavar="N",
                   help="run torch's profiler over optimizer step N and write RUN/profile.txt (kernels by "
                        "device time) and RUN/profile.json (time by group: matmul, attention, ...)")
    add_overrides(p, lasting="run")
    add_runs_dir(p, folders="creates")
    add_nodes(p)
    p.set_defaults(func=run, check_gpus=True)
    return p


def run(args: argparse.Namespace) -> int:
    from pipeline.core import config, runs
    from pipeline.stages import smoke as stage

    nodes = topology(args)
    with telling_the_nodes(nodes):
        return stage.main(args.configs or default_configs(), max_steps=args.max_steps,
                          overrides=config.parse_overrides(args.overrides), runs_dir=runs.runs_root(args.runs_dir),
                          json_path=args.json, gpus=args.gpus, profile_step=args.profile_step, nodes=nodes)
