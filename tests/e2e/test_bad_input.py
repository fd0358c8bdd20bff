"""Bad input: one clear line, exit 2, and no run folder left behind."""

from __future__ import annotations

from pathlib import Path

import pytest


def assert_clean_failure(proc, runs_dir: Path, expected_prefix: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(expected_prefix), lines
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "a run folder was left behind"


def test_missing_config(cli, runs_dir):
    proc = cli("smoke", "configs/nope.yaml", "--runs-dir", str(runs_dir))
    assert_clean_failure(proc, runs_dir, "configs/nope.yaml: config-missing: config file not found")


def test_malformed_yaml(cli, runs_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: pipeline://tiny-llama\nlora_r: 8\ndatasets:\n  - path: [oops\n")
    proc = cli("smoke", str(bad), "--runs-dir", str(runs_dir))
    assert_clean_failure(proc, runs_dir, f"{bad}:")
    assert "yaml-syntax" in proc.stderr


def test_dataset_path_that_does_not_exist(cli, runs_dir, tmp_path, root):
    text = (root / "configs" / "tiny_cpu.yaml").read_text().replace(
        "data/processed/validation.jsonl", "data/processed/validaton.jsonl")
    bad = tmp_path / "typo.yaml"
    bad.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "validaton" in s)
    proc = cli("smoke", str(bad), "--runs-dir", str(runs_dir))
    assert_clean_failure(proc, runs_dir, f"{bad}:{line}: data-missing: test_datasets[0].path")


def test_one_bad_config_among_good_ones_stops_before_any_run(cli, runs_dir):
    proc = cli("smoke", "configs/tiny_cpu.yaml", "configs/nope.yaml", "--runs-dir", str(runs_dir))
    assert_clean_failure(proc, runs_dir, "configs/nope.yaml: config-missing")


@pytest.mark.parametrize("args", [["--set", "learning_rate"], ["--max-steps", "x"]])
def test_bad_arguments(cli, runs_dir, args):
    proc = cli("smoke", "configs/tiny_cpu.yaml", *args, "--runs-dir", str(runs_dir))
    assert proc.returncode == 2
    assert not runs_dir.exists()


def test_help_explains_commands_and_exit_codes(cli):
    proc = cli("--help")
    assert proc.returncode == 0
    assert "smoke" in proc.stdout and "exit" in proc.stdout.lower() and "130" in proc.stdout
    assert cli("--version").stdout.startswith("pipeline ")


@pytest.mark.parametrize("step", ["4", "-1"])
def test_a_profile_step_the_run_never_reaches(cli, runs_dir, step):
    proc = cli("smoke", "configs/tiny_cpu.yaml", "--profile-step", step, "--runs-dir", str(runs_dir))
    assert_clean_failure(proc, runs_dir, f"<command line>: profile-step: --profile-step {step} is outside "
                                         "configs/tiny_cpu.yaml's 3 steps; pick 1..3")
