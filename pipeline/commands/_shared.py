"""What several commands share: `--set`, `--runs-dir`, the help formatter and epilog, smoke's and train's defaults."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeAlias

#: what `add_subparsers` returns, and every command's `register` takes
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: `--set`'s help, by what the overrides last for: a run (smoke, train) or one check
OVERRIDES_HELP = {
    "run": "override a config key for this run only (YAML value; dotted keys reach into lists: "
           "datasets.0.path=x.jsonl); the user's file is not edited",
    "check": "override a config key for this check only",
}
#: `--runs-dir`'s help, by whether the command creates run folders (smoke, train) or reads existing ones
RUNS_DIR_HELP = {
    "creates": "where run folders go (default: $PIPELINE_RUNS_DIR or ./runs)",
    "reads": "where run folders are (default: $PIPELINE_RUNS_DIR or ./runs)",
}

CPU_DEFAULT = ["configs/tiny_cpu.yaml"]
#: training without a GPU: the real 135M model (smoke keeps the tiny one: seconds, nothing to fetch; see README)
CPU_TRAIN_DEFAULT = "configs/smollm2_cpu.yaml"
GPU_DEFAULT = ["configs/lora_style_transfer.yaml", "configs/qlora_style_transfer.yaml"]


def default_configs() -> list[str]:
    """The real configs where CUDA answers, else the embedded tiny one."""
    from pipeline.core.gpus import cuda_answers

    return GPU_DEFAULT if cuda_answers() else CPU_DEFAULT


def default_train_config() -> str:
    """The LoRA 8B config where CUDA answers, else the real small model's CPU config."""
    from pipeline.core.gpus import cuda_answers

    return GPU_DEFAULT[0] if cuda_answers() else CPU_TRAIN_DEFAULT


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's own layout, except that the epilog's examples are printed as written.

    A one-paragraph text (a description) is wrapped to the terminal as argparse's default formatter wraps
    it; a text of several lines (the epilog) keeps its lines, as RawDescriptionHelpFormatter keeps them.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def examples_epilog(examples: Sequence[tuple[str, str]]) -> str:
    """torchtune's layout: `examples:`, then per example a `# what it does` line and a `$ pipeline ...` line."""
    if not 1 <= len(examples) <= 3:
        raise ValueError(f"give 1 to 3 examples, not {len(examples)}")
    blocks = [f"  # {what}\n  $ {command}" for what, command in examples]
    return "examples:\n" + "\n\n".join(blocks)


def add_command(subparsers: Subparsers, name: str, *, help: str, description: str,
                examples: Sequence[tuple[str, str]]) -> argparse.ArgumentParser:
    """The command's parser: one-line help for `pipeline --help`, its description, and its examples."""
    return subparsers.add_parser(name, help=help, description=description, epilog=examples_epilog(examples),
                                 formatter_class=HelpFormatter)


def add_overrides(parser: argparse.ArgumentParser, *, lasting: Literal["run", "check"]) -> None:
    """`--set KEY=VALUE`, repeatable, into `args.overrides` (parsed by `core.config.parse_overrides`)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=OVERRIDES_HELP[lasting])


def add_runs_dir(parser: argparse.ArgumentParser, *, folders: Literal["creates", "reads"]) -> None:
    """`--runs-dir`, into `args.runs_dir` (None: `core.runs.runs_root` picks $PIPELINE_RUNS_DIR or ./runs)."""
    parser.add_argument("--runs-dir", type=Path, default=None, help=RUNS_DIR_HELP[folders])


def add_nodes(parser: argparse.ArgumentParser) -> None:
    """torchrun's own flags for a run over several nodes (pipeline.core.topology reads them, else the env)."""
    group = parser.add_argument_group("several nodes (torchrun's flags; default: torchrun's or SLURM's environment)")
    group.add_argument("--nnodes", type=int, default=None, metavar="N",
                       help="nodes in the run (default: $PET_NNODES, else $SLURM_NNODES, else 1)")
    group.add_argument("--node-rank", type=int, default=None, metavar="R",
                       help="this node's rank, 0..N-1; node 0 keeps the run's record (default: $PET_NODE_RANK, "
                            "else $SLURM_NODEID)")
    group.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                       help="node 0's host and a free port (default: $PET_RDZV_ENDPOINT, else "
                            "$MASTER_ADDR:$MASTER_PORT, else the first host of $SLURM_JOB_NODELIST:29500)")
    group.add_argument("--rdzv-id", default=None, metavar="ID",
                       help="the run's rendezvous id, the same on every node (default: $PET_RDZV_ID, else "
                            "$SLURM_JOB_ID, else derived from the endpoint)")


def topology(args: argparse.Namespace):  # noqa: ANN201 - a Topology or None (imported lazily)
    """The node topology `add_nodes`' flags and the environment give (None: one node)."""
    from pipeline.core import topology as nodes

    return nodes.resolve(args.nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_id)


@contextmanager
def telling_the_nodes(nodes: object) -> Iterator[None]:
    """A node that stops before it met the others (its checks refused the config, a bad flag) tells them, so
    they end at once with its reason rather than at the join timeout (pipeline.core.agreement.tell_others)."""
    try:
        yield
    except BaseException as exc:
        from pipeline.core import agreement

        if nodes is not None and not isinstance(exc, agreement.NodeLost):  # a lost node: nobody left to tell
            from pipeline.core.errors import UserError

            why = str(exc.findings[0]) if isinstance(exc, UserError) and exc.findings else (
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            agreement.tell_others(nodes, why)  # type: ignore[arg-type]
        raise
