from pathlib import Path

import pytest

from pipeline.core import config
from pipeline.core.errors import UserError


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_lines_of_nested_keys(tmp_path):
    p = write(tmp_path, "base_model: x\ndatasets:\n  - path: a.jsonl\n    type: chat_template\nlora_r: 8\n")
    loaded = config.load(p)
    assert loaded.line("base_model") == 1
    assert loaded.line("datasets", 0, "path") == 3
    assert loaded.line("datasets", 0, "type") == 4
    assert loaded.line("lora_r") == 5
    # a key that is not there falls back to its nearest parent
    assert loaded.line("datasets", 0, "missing") == 3


def test_missing_config_is_one_clear_error(tmp_path):
    with pytest.raises(UserError) as exc:
        config.load(tmp_path / "nope.yaml")
    assert str(exc.value) == f"{tmp_path / 'nope.yaml'}: config-missing: config file not found; check the path"


def test_malformed_yaml_names_the_line(tmp_path):
    p = write(tmp_path, "base_model: x\nlora_r: 8\ndatasets:\n  - path: [unclosed\n")
    with pytest.raises(UserError) as exc:
        config.load(p)
    (finding,) = exc.value.findings
    assert finding.rule == "yaml-syntax"
    assert finding.line in (4, 5)
    assert str(finding).startswith(f"{p}:{finding.line}: yaml-syntax: ")


def test_a_list_is_not_a_config(tmp_path):
    with pytest.raises(UserError, match="yaml-not-mapping"):
        config.load(write(tmp_path, "- a\n- b\n"))


def test_overrides_parse_yaml_values_and_reach_into_lists():
    ov = config.parse_overrides(["learning_rate=2e-4", "bf16=false", "datasets.0.path=x.jsonl", "name=abc"])
    assert ov == {"learning_rate": 2e-4, "bf16": False, "datasets.0.path": "x.jsonl", "name": "abc"}
    data = {"datasets": [{"path": "a"}], "bf16": True}
    out = config.apply_overrides(data, ov)
    assert out["datasets"][0]["path"] == "x.jsonl" and out["bf16"] is False
    assert data["datasets"][0]["path"] == "a", "the loaded config must not be mutated"


def test_override_without_equals_is_a_usage_error():
    with pytest.raises(UserError, match="override-syntax"):
        config.parse_overrides(["learning_rate"])


def test_resolve_makes_data_paths_absolute_and_strips_pipeline_section(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.jsonl").write_text("{}\n")
    (tmp_path / "configs").mkdir()
    p = write(tmp_path / "configs", "base_model: /x\ndatasets:\n  - path: data/t.jsonl\n    type: chat_template\n"
                                    "pipeline:\n  bounds:\n    final_loss: 3\n")
    monkeypatch.chdir(tmp_path / "configs")  # not the project root: the file is found one folder up
    r = config.resolve(config.load(p), build_models=False)
    assert r.axolotl["datasets"][0]["path"] == str((tmp_path / "data" / "t.jsonl").resolve())
    assert "pipeline" not in r.axolotl
    assert r.settings == {"bounds": {"final_loss": 3}}
    assert r.data_files == [(tmp_path / "data" / "t.jsonl").resolve()]


def test_missing_dataset_is_reported_at_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write(tmp_path, "base_model: /x\ndatasets:\n  - type: chat_template\n    path: nowhere.jsonl\n")
    with pytest.raises(UserError) as exc:
        config.resolve(config.load(p), build_models=False)
    (finding,) = exc.value.findings
    assert (finding.rule, finding.line) == ("data-missing", 4)


def test_hub_dataset_ids_are_left_for_axolotl(tmp_path):
    p = write(tmp_path, "base_model: org/model\ndatasets:\n  - path: org/some-dataset\n    type: alpaca\n")
    r = config.resolve(config.load(p), build_models=False)
    assert r.axolotl["datasets"][0]["path"] == "org/some-dataset"
    assert r.offline is False


def test_builtin_model_reference_resolves_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    p = write(tmp_path, "base_model: pipeline://tiny-llama\n")
    r = config.resolve(config.load(p), build_models=False)
    assert Path(r.axolotl["base_model"]).parent == tmp_path / "cache" / "models"
    assert r.offline is True


def test_unknown_builtin_model_is_a_user_error(tmp_path):
    p = write(tmp_path, "base_model: pipeline://giant\n")
    with pytest.raises(UserError, match="model-unknown"):
        config.resolve(config.load(p), build_models=False)
