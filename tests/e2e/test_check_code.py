"""Code that a run would execute is named before it runs, and the check itself runs none of it: a plugin
outside axolotl (read from source, its package's `__init__` never imported), and `trust_remote_code` with
the Python a model's config.json names in its auto_map. The checks run in-process through the real command
line (`pipeline.cli.main`): code that ran would show in this process (a mark file, a module imported, a
SystemExit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, TINY

from pipeline import cli

PLUGINS = ROOT / "tests" / "cases" / "plugins"


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """check(*args) -> (exit code, the JSON report of the one config), from the repository root."""
    monkeypatch.chdir(ROOT)

    def run(*args: str) -> tuple[int, dict]:
        code = cli.main(["check", *args, "--format", "json"])
        return code, json.loads(capsys.readouterr().out)["configs"][0]

    return run


def test_a_plugin_is_named_and_never_imported(tmp_path: Path, check, monkeypatch: pytest.MonkeyPatch) -> None:
    mark = tmp_path / "imported"
    monkeypatch.setenv("CASE_PLUGIN_MARK", str(mark))
    monkeypatch.syspath_prepend(str(PLUGINS))
    env = {"CASE_PLUGIN_MARK": str(mark), "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(ROOT)])}
    code, report = check("tests/cases/code-will-run.yaml")
    assert not mark.exists() and "case_plugin" not in sys.modules, "the check ran the plugin's package"
    (f,) = report["findings"]
    assert (f["rule"], f["severity"], code) == ("code-will-run", "warning", 0)
    for name in ("case_plugin/__init__.py", "case_plugin/plugin.py"):
        assert name in f["message"]
    # the control: importing the plugin, as axolotl's load_plugin does, leaves the mark
    subprocess.run([sys.executable, "-c", "import case_plugin"], env={**os.environ, **env}, check=True)
    assert mark.read_text() == "imported\n"


@pytest.fixture
def model_with_code(tmp_path: Path) -> Path:
    """A local model folder whose config.json maps the Auto classes to its own modeling file."""
    from pipeline.core import models

    folder = tmp_path / "model"
    folder.mkdir()
    cfg = {**models.TINY_CONFIG, "vocab_size": models.TINY_VOCAB,
           "auto_map": {"AutoConfig": "configuration_shout.ShoutConfig",
                        "AutoModelForCausalLM": "modeling_shout.ShoutForCausalLM"}}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_shout.py").write_text("raise SystemExit('this must never run')\n")
    (folder / "configuration_shout.py").write_text("raise SystemExit('this must never run')\n")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_trust_remote_code_names_the_files_it_would_run(model_with_code: Path, check) -> None:
    code, report = check(TINY, "--set", f"base_model={model_with_code}", "--set", "trust_remote_code=true",
                         "--device", "cpu")
    found = [f for f in report["findings"] if f["rule"] == "code-will-run"]
    assert len(found) == 1 and found[0]["severity"] == "warning", report["findings"]
    assert "modeling_shout.py" in found[0]["message"] and "configuration_shout.py" in found[0]["message"]


def test_an_architecture_that_exists_only_in_its_own_code_needs_trust_remote_code(model_with_code: Path,
                                                                                 check) -> None:
    cfg = json.loads((model_with_code / "config.json").read_text())
    (model_with_code / "config.json").write_text(json.dumps({**cfg, "model_type": "shout"}))
    code, report = check(TINY, "--set", f"base_model={model_with_code}", "--device", "cpu")
    (f,) = [f for f in report["findings"] if f["rule"] == "model-unavailable"]
    assert code == 2 and "trust_remote_code: true" in f["message"] and "modeling_shout.py" in f["message"]


def test_trust_remote_code_on_a_model_without_code_is_said_to_be_needless(model_with_code: Path, check) -> None:
    cfg = json.loads((model_with_code / "config.json").read_text())
    (model_with_code / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "auto_map"}))
    code, report = check(TINY, "--set", f"base_model={model_with_code}", "--set", "trust_remote_code=true",
                         "--device", "cpu")
    (f,) = [f for f in report["findings"] if f["rule"] == "code-will-run"]
    assert "ships no code of its own" in f["message"]
