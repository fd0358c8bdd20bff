"""`pipeline train`: a config through axolotl in a new run folder, or `--resume` of one (stage: pipeline/stages/train.py)."""

from __future__ import annotations

import argparse

from pipeline.commands._shared import (
    Subparsers,
    add_command,
    add_nodes,
    add_overrides,
    add_runs_dir,
    default_train_config,
    telling_the_nodes,
    topology,
)


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = add_command(subparsers, "train", help="train a config through axolotl; --resume continues an interrupted run",
                    description="Train CONFIG through axolotl in a new run folder (checkpoints in "
                                "RUN/output). With no CONFIG: configs/lora_style_transfer.yaml where CUDA "
                                "answers, else configs/smollm2_cpu.yaml (the real SmolLM2-135M-Instruct). "
                                "--resume continues the newest "
                                "unfinished train run (or RUN) from its last complete checkpoint, in the "
                                "same folder.",
                    examples=[
                        ("the real SmolLM2-135M-Instruct on the CPU (the default without CUDA)",
                         "pipeline train configs/smollm2_cpu.yaml"),
                        ("the 8B LoRA config on two GPUs, run folders on a bigger disk",
                         "pipeline train configs/lora_style_transfer.yaml --gpus 2 --runs-dir /data/runs"),
                        ("after Ctrl-C, a kill or an OOM: continue the newest unfinished run from its last checkpoint",
                         "pipeline train --resume"),
                    ])
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG", help="axolotl YAML file")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN",
                   help="continue RUN (a name under the runs folder, or a path); without RUN: the newest "
                        "unfinished train run (of CONFIG, if given)")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs, through axolotl's torchrun launcher (default 1; a resumed run: as before)")
    add_overrides(p, lasting="run")
    add_runs_dir(p, folders="creates")
    add_nodes(p)
    p.set_defaults(func=run, check_gpus=True)
    return p


def run(args: argparse.Namespace) -> int:
    from pipeline.core import config, runs
    from pipeline.stages import train as stage

    cfg = args.config if args.config or args.resume is not None else default_train_config()
    nodes = topology(args)
    with telling_the_nodes(nodes):
        return stage.main(cfg, resume=args.resume, overrides=config.parse_overrides(args.overrides),
                          runs_dir=runs.runs_root(args.runs_dir), gpus=args.gpus, nodes=nodes)
