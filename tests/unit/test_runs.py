import json

from pipeline.core import runs


def test_run_folders_are_unique_and_sortable(tmp_path):
    a = runs.create(tmp_path, "cfg", "smoke")
    b = runs.create(tmp_path, "cfg", "smoke")
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()
    assert a.name.endswith("-cfg-smoke") and b.name.startswith(a.name)


def test_manifest_records_versions_git_hashes_and_hardware(tmp_path, root):
    run = runs.create(tmp_path, "cfg", "smoke")
    data = tmp_path / "d.jsonl"
    data.write_text('{"a": 1}\n')
    m = runs.start_manifest(run, stage="smoke", config_path=root / "configs" / "tiny_cpu.yaml",
                            config_sha256="abc", resolved_sha256="def", data_files=[data], argv=["x"])
    on_disk = json.loads(run.manifest_path.read_text())
    assert on_disk == json.loads(json.dumps(m, default=str))
    for pkg in ("python", "torch", "transformers", "peft", "axolotl"):
        assert on_disk["versions"][pkg], pkg
    assert len(on_disk["git"]["commit"]) == 40  # the project's own revision, found from the config's folder
    assert on_disk["data"][str(data)] == runs.sha256_file(data)
    assert on_disk["hardware"]["accelerator"]
    assert on_disk["status"] == "running"
    done = runs.finish_manifest(run, "succeeded", exit_code=0)
    assert done["status"] == "succeeded" and done["finished"] and done["stage"] == "smoke"


def test_write_atomic_leaves_no_temporary(tmp_path):
    target = tmp_path / "f.json"
    runs.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_jsonl_reader_skips_a_line_cut_short_by_a_crash(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"kind": "train", "step": 1}\n{"kind": "train", "st')
    assert runs.read_jsonl(p) == [{"kind": "train", "step": 1}]
    assert runs.read_jsonl(tmp_path / "absent.jsonl") == []


def test_all_runs_lists_only_folders_with_a_manifest(tmp_path):
    a = runs.create(tmp_path, "x", "smoke")
    runs.write_json(a.manifest_path, {"run": a.name})
    (tmp_path / "stray").mkdir()
    assert [r.name for r in runs.all_runs(tmp_path)] == [a.name]


def test_newest_skips_runs_with_a_problem(tmp_path):
    from pipeline.core import runs

    for name in ("20260101-000000-a-train", "20260102-000000-b-train", "20260103-000000-c-smoke"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    problem = {"20260103-000000-c-smoke": "a smoke run"}.get
    assert runs.newest(tmp_path, lambda r: problem(r.name)).name == "20260102-000000-b-train"
    assert runs.newest(tmp_path, lambda r: "never") is None
    assert runs.newest(tmp_path / "missing", lambda r: None) is None
