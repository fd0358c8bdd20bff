"""The broken-config corpus: every rule and every data failure, one case (at least) each.

Each file in tests/cases/ says in its header what it must produce:

    # expect: RULE-ID     the finding it must contain
    # exit: N             the exit status of `pipeline check` on it
    # args: ...           extra arguments (--strict, --gpu T4, --gpu-mem 16GiB, --device cpu)
    # also: RULE-ID ...   other findings it may produce (nothing else may appear)

The checks run in-process through the real command line (`pipeline.cli.main`), from the repository root
as `nox -s check` runs them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import ROOT

from pipeline import cli
from pipeline.checks import registry, rules  # noqa: F401 - registers every config rule

CASES = sorted((ROOT / "tests" / "cases").glob("*.yaml"))
#: rules reported by the config loader, which `pipeline check` also runs
OTHER_RULES = {"yaml-syntax"}


def header(path: Path) -> dict[str, str]:
    found = dict(re.findall(r"^# (expect|exit|args|also): (.*)$", path.read_text(), flags=re.M))
    return {k: v.strip() for k, v in found.items()}


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = cli.main(["check", *args, "--format", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.fixture(autouse=True)
def _from_the_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "cases" / "plugins"))  # the cases' own plugin package
    # an empty Hugging Face cache: the cases do not depend on what this machine happens to hold
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_every_rule_has_a_case() -> None:
    covered = {header(p)["expect"] for p in CASES}
    assert set(registry.RULES) <= covered, sorted(set(registry.RULES) - covered)
    assert covered - set(registry.RULES) <= OTHER_RULES


@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_case(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    want = header(case)
    code, report = run_check(capsys, str(case.relative_to(ROOT)), *want.get("args", "").split())
    findings = report["configs"][0]["findings"]
    got = {f["rule"] for f in findings}
    assert want["expect"] in got, findings
    assert got <= {want["expect"], *want.get("also", "").split()}, findings
    assert code == int(want["exit"]) == report["exit_code"], findings
    severity = registry.RULES.get(want["expect"], ("error",))[0]
    assert {f["severity"] for f in findings if f["rule"] == want["expect"]} == {severity}


def test_data_json_names_the_line_in_the_data_file(capsys: pytest.CaptureFixture[str]) -> None:
    _, report = run_check(capsys, "tests/cases/data-json.yaml")
    (f,) = [f for f in report["configs"][0]["findings"] if f["rule"] == "data-json"]
    assert (f["path"], f["line"]) == ("tests/cases/rows/bad_json.jsonl", 2)


def test_config_findings_name_the_line_of_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "tests/cases/unknown-key.yaml").read_text().splitlines()
    _, report = run_check(capsys, "tests/cases/unknown-key.yaml")
    (f,) = report["configs"][0]["findings"]
    assert text[f["line"] - 1].startswith("lora_dropuot:")
    assert "did you mean 'lora_dropout'?" in f["message"]


def test_axolotl_message_folded_into_ours(capsys: pytest.CaptureFixture[str]) -> None:
    _, report = run_check(capsys, "tests/cases/eval-without-data-eval-steps.yaml")
    assert [f["rule"] for f in report["configs"][0]["findings"]] == ["eval-without-data"]


def test_missing_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_check(capsys, "configs/nope.yaml")
    assert code == 2
    assert report["configs"][0]["findings"][0]["rule"] == "config-missing"


def test_strict_turns_warnings_into_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(capsys, "tests/cases/data-duplicate.yaml")[0] == 0
    assert run_check(capsys, "tests/cases/data-duplicate.yaml", "--strict")[0] == 1
