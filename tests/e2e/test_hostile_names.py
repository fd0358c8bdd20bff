"""A name from outside never becomes code: the file-name-to-`trust_remote_code` case, end to end.

A config copied to a file named `x` + newline + `trust_remote_code: true` + newline + `#.yaml` once made that
line a key of the run's config.yaml (the file name was written raw into its first comment), and axolotl then ran
the Python of a model folder whose config.json maps the Auto classes to its own code. The model folder here is
the tiny Llama with such a map and a modeling file that leaves a mark when imported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from support import ROOT, TINY, run_ok

HOSTILE = "x\ntrust_remote_code: true\n#.yaml"


def model_with_marking_code(tmp_path: Path) -> tuple[Path, Path]:
    from pipeline.core import models

    folder = tmp_path / "model"
    shutil.copytree(models.resolve("pipeline://tiny-llama"), folder)
    mark = tmp_path / "code-ran"
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_mark.MarkForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_mark.py").write_text(
        f"import pathlib\npathlib.Path({str(mark)!r}).write_text('ran')\n"
        "from transformers import LlamaForCausalLM as MarkForCausalLM  # noqa: F401\n")
    return folder, mark


def test_a_file_name_never_turns_on_trust_remote_code(tmp_path: Path, cli, runs_dir: Path) -> None:
    model, mark = model_with_marking_code(tmp_path)
    text = (ROOT / TINY).read_text().replace("base_model: pipeline://tiny-llama", f"base_model: {model}")
    text = text.replace("path: data/", f"path: {ROOT}/data/")
    (tmp_path / HOSTILE).write_text(text)

    run = run_ok(cli, runs_dir, "smoke", str(tmp_path / HOSTILE))

    assert not mark.exists(), "the model folder's own Python ran"
    resolved = (run / "config.yaml").read_text()
    assert "trust_remote_code" not in yaml.safe_load(resolved)
    assert resolved.splitlines()[0].endswith("x\\ntrust_remote_code: true\\n#.yaml")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["trust_remote_code"] == {"value": False, "from": None}
    assert manifest["config"]["path"] == str(tmp_path / HOSTILE)
    assert run.name.endswith("-x_trust_remote_code__true-smoke")
