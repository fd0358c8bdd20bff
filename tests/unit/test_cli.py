"""The command line's layout: one module per command (pipeline/commands/), shared arguments defined once."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

from pipeline import cli, commands
from pipeline.commands import _shared

NAMES = ["check", "smoke", "train", "merge", "evaluate", "runs", "build-model"]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser, flag: str) -> list[argparse.Action]:
    return [a for a in parser._actions if flag in a.option_strings]


def test_every_command_has_a_module_a_func_and_an_epilog_of_examples():
    parsers = subparsers()
    assert list(parsers) == NAMES  # the order `pipeline --help` lists them
    assert [m.__name__.rsplit(".", 1)[1] for m in commands.COMMANDS] == [n.replace("-", "_") for n in NAMES]
    for name, parser in parsers.items():
        assert callable(parser.get_default("func")), name
        assert parser.formatter_class is _shared.HelpFormatter, name
        assert parser.epilog and parser.epilog.startswith("examples:\n"), name
        examples = [line.strip()[2:] for line in parser.epilog.splitlines() if line.strip().startswith("$ ")]
        assert 1 <= len(examples) <= 3 and all(e.startswith(f"pipeline {name}") for e in examples), examples
        assert "examples:\n" in parser.format_help(), name


@pytest.mark.parametrize("name", NAMES)
def test_every_example_parses_into_its_command(name):
    parser = cli.build_parser()
    epilog = subparsers()[name].epilog or ""
    for line in epilog.splitlines():
        if line.strip().startswith("$ pipeline "):
            args = parser.parse_args(shlex.split(line.strip()[len("$ pipeline "):]))
            assert args.command == name, line


def test_shared_arguments_come_from_the_one_helper():
    parsers = subparsers()
    have = {flag: sorted(n for n, p in parsers.items() if options(p, flag)) for flag in ("--set", "--runs-dir")}
    assert have == {"--set": ["check", "smoke", "train"], "--runs-dir": ["evaluate", "merge", "runs", "smoke", "train"]}
    for name, parser in parsers.items():
        for action in options(parser, "--set"):
            assert (action.dest, action.metavar, action.default, type(action)) == (
                "overrides", "KEY=VALUE", [], argparse._AppendAction), name
            assert action.help == _shared.OVERRIDES_HELP["check" if name == "check" else "run"], name
        for action in options(parser, "--runs-dir"):
            assert (action.dest, action.type, action.default, action.metavar) == ("runs_dir", Path, None, None), name
            assert action.help == _shared.RUNS_DIR_HELP["creates" if name in ("smoke", "train") else "reads"], name
    # and nowhere else is either option written out
    defined = re.compile(r"""add_argument\(\s*["'](--set|--runs-dir)["']""")
    for path in [ROOT / "pipeline" / "cli.py", *sorted((ROOT / "pipeline" / "commands").glob("*.py"))]:
        hits = defined.findall(path.read_text())
        assert hits == (["--set", "--runs-dir"] if path.name == "_shared.py" else []), path


def test_no_command_prints_the_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert capsys.readouterr().out.startswith("usage: pipeline ")


HELP_EVERYWHERE = """
import sys
from pipeline import cli
for argv in (["--help"], *([name, "--help"] for name in sys.argv[1:])):
    try:
        cli.main(argv)
    except SystemExit:
        pass
heavy = ("torch", "axolotl", "transformers", "pipeline.stages.check", "pipeline.stages.smoke", "pipeline.stages.train", "pipeline.stages.merge",
         "pipeline.stages.evaluate", "pipeline.stages.runs", "pipeline.core.models")
print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)
"""


def test_help_imports_no_stage_and_no_torch():
    """Each command imports its stage inside `run`: `pipeline --help` and `pipeline CMD --help` stay fast."""
    proc = subprocess.run([sys.executable, "-c", HELP_EVERYWHERE, *NAMES], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert proc.stderr.strip() == "[]"


@pytest.fixture
def calls(monkeypatch):
    """Every stage's main replaced by a recorder; the --gpus check recorded too."""
    from pipeline.core import engine

    seen: list[tuple[str, tuple, dict]] = []
    for module in ("check", "smoke", "train", "merge", "evaluate", "runs"):
        def record(*args, _module=module, **kwargs):
            seen.append((_module, args, kwargs))
            return 0

        monkeypatch.setattr(f"pipeline.stages.{module}.main", record)
    monkeypatch.setattr(engine, "check_gpus", lambda gpus: seen.append(("check_gpus", (gpus,), {})))
    monkeypatch.setattr("pipeline.core.gpus.cuda_answers", lambda: False)
    monkeypatch.delenv("PIPELINE_RUNS_DIR", raising=False)
    return seen


def test_each_command_calls_its_stage_as_parsed(calls, tmp_path):
    runs = tmp_path / "runs"
    assert cli.main(["check", "a.yaml", "b.yaml", "--format", "json", "--strict", "--gpu-mem", "24GB", "--gpu", "T4",
                     "--device", "gpu", "--set", "lora_r=16"]) == 0
    assert cli.main(["smoke", "--max-steps", "2", "--set", "datasets.0.path=x.jsonl", "--runs-dir", str(runs),
                     "--gpus", "2", "--profile-step", "1"]) == 0
    assert cli.main(["train"]) == 0
    assert cli.main(["train", "--resume"]) == 0
    assert cli.main(["merge", "RUN", "--force"]) == 0
    assert cli.main(["evaluate", "--runs-dir", str(runs)]) == 0
    assert cli.main(["runs", "--format", "json"]) == 0
    assert calls == [
        ("check", (["a.yaml", "b.yaml"],), dict(output="json", strict=True, gpu_mem="24GB", gpu="T4", device="gpu",
                                                overrides={"lora_r": 16}, gpus=1, nnodes=1)),
        ("check_gpus", (2,), {}),
        ("smoke", (["configs/tiny_cpu.yaml"],), dict(max_steps=2, overrides={"datasets.0.path": "x.jsonl"},
                                                     runs_dir=runs, json_path=None, gpus=2, profile_step=1,
                                                     nodes=None)),
        ("check_gpus", (None,), {}),
        ("train", ("configs/smollm2_cpu.yaml",), dict(resume=None, overrides={}, runs_dir=Path("runs"), gpus=None,
                                                      nodes=None)),
        ("check_gpus", (None,), {}),
        ("train", (None,), dict(resume="", overrides={}, runs_dir=Path("runs"), gpus=None, nodes=None)),
        ("merge", ("RUN",), dict(auto=False, force=True, runs_dir=Path("runs"))),
        ("evaluate", (None,), dict(runs_dir=runs)),
        ("runs", (), dict(runs_dir=Path("runs"), output="json")),
    ]


@pytest.mark.parametrize(("argv", "line"), [
    (["evaluate", "RUN", "--latest"], "<command line>: evaluate-which: name a RUN or pass --latest, not both"),
    (["build-model", "hf://x"], "<command line>: model-unknown: 'hf://x' is not a pipeline:// model; use "
                                "pipeline://tiny-llama or pipeline://smollm2-135m-instruct"),
    (["smoke", "--set", "lr"], "<command line>: override-syntax: override 'lr' is not key=value; write e.g. --set "
                                    "learning_rate=2e-4"),
])
def test_bad_input_is_one_line_and_exit_2(calls, capsys, argv, line):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [line]
    assert [c for c in calls if c[0] != "check_gpus"] == []
