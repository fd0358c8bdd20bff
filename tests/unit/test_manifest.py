"""The manifest's schema and its one writer (pipeline.core.manifest)."""

import json

import pytest

from pipeline.core import manifest, runs

START = ["run", "stage", "status", "started", "command", "config", "data", "versions", "git", "hardware"]


def started(tmp_path, root, **extra):
    run = runs.create(tmp_path, "cfg", "smoke")
    data = tmp_path / "d.jsonl"
    data.write_text('{"a": 1}\n')
    runs.start_manifest(run, stage="smoke", config_path=root / "configs" / "tiny_cpu.yaml", config_sha256="abc",
                        resolved_sha256="def", data_files=[data], argv=["pipeline", "smoke"], **extra)
    return run


def test_the_writers_keep_the_order_and_the_values_on_disk(tmp_path, root):
    run = started(tmp_path, root, offline=True, overrides={"lr": 0.1}, bounds={}, max_steps=3, world_size=1,
                  compute={"summary": "as written"})
    run.update_manifest(status="running", pid=12, host="h", finished=None, attempts=[{"pid": 12}])
    runs.finish_manifest(run, "succeeded", exit_code=0, runtime_s=1.5, summary={"steps": 3}, problem="p")
    text = run.manifest_path.read_text()
    on_disk = json.loads(text)
    assert list(on_disk) == [*START, "offline", "overrides", "bounds", "max_steps", "world_size", "compute", "pid",
                             "host", "finished", "attempts", "exit_code", "runtime_s", "summary", "problem"]
    assert on_disk["status"] == "succeeded" and on_disk["finished"] and on_disk["command"] == ["pipeline", "smoke"]
    assert on_disk["config"]["path"] == str(root / "configs" / "tiny_cpu.yaml")
    assert text == json.dumps(on_disk, indent=2) + "\n"  # the same layout as runs.write_json has always written
    manifest.check(on_disk)  # what the writers wrote is what the schema declares


@pytest.mark.parametrize("fields", [{"exitcode": 0}, {"status": 1}, {"pid": "12"}, {"offline": 1}, {"pid": True},
                                    {"attempts": {}}, {"command": ["x", 1]}, {"data": {"f": 3}},
                                    {"merge": None}, {"finished": 5}])
def test_a_write_of_an_unknown_field_or_a_wrong_type_raises_and_writes_nothing(tmp_path, root, fields):
    run = started(tmp_path, root)
    before = run.manifest_path.read_bytes()
    with pytest.raises(manifest.SchemaError, match=next(iter(fields))):
        run.update_manifest(**fields)
    with pytest.raises(manifest.SchemaError):
        runs.finish_manifest(run, "succeeded", **fields)
    assert run.manifest_path.read_bytes() == before


def test_a_start_with_an_unknown_field_raises_and_writes_nothing(tmp_path, root):
    with pytest.raises(manifest.SchemaError, match="max_step"):
        started(tmp_path, root, max_step=3)
    (folder,) = tmp_path.glob("*-cfg-smoke")
    assert not (folder / runs.MANIFEST).exists()


def test_the_config_record_is_checked_field_by_field():
    manifest.check({"config": {"path": "a", "sha256": "b", "resolved_sha256": "c"}})
    for bad in ({"path": "a", "sha256": "b"}, {"path": "a", "sha256": "b", "resolved_sha256": None}):
        with pytest.raises(manifest.SchemaError, match="config"):
            manifest.check({"config": bad})


def test_an_int_is_a_float_but_a_bool_is_no_int():
    manifest.check({"runtime_s": 3, "exit_code": 0, "last_checkpoint": None})
    with pytest.raises(manifest.SchemaError):
        manifest.check({"runtime_s": True})


def test_every_field_has_a_type_a_reader_can_rely_on():
    assert set(manifest.READ_KINDS) == set(manifest.FIELDS)
    assert set(manifest.READ_KINDS.values()) <= {str, int, float, bool, dict, list}
    assert manifest.READ_KINDS["config"] is dict and manifest.READ_KINDS["finished"] is str


def test_an_older_manifest_reads_as_it_was_written(tmp_path):
    """Fewer fields, and one no longer written (`accelerator`), read as they are; a run it names works."""
    old = {"run": "20251101-000000-cfg-train", "stage": "train", "status": "succeeded", "started": "2025-11-01",
           "finished": "2025-11-01", "command": ["pipeline", "train"], "config": {"path": "c.yaml", "sha256": "x"},
           "exit_code": 0, "runtime_s": 12, "accelerator": "cpu", "summary": {"steps": 2}}
    path = tmp_path / runs.MANIFEST
    path.write_text(json.dumps(old))
    assert runs.read_manifest(path) == old


@pytest.mark.parametrize("field,value", [("summary", []), ("attempts", None), ("pid", "12"), ("offline", "yes"),
                                         ("runtime_s", "1"), ("compute", 3), ("command", "pipeline")])
def test_a_field_of_another_type_reads_as_absent(tmp_path, field, value):
    path = tmp_path / runs.MANIFEST
    path.write_text(json.dumps({"status": "failed", field: value, "unknown": [1]}))
    assert runs.read_manifest(path) == {"status": "failed", "unknown": [1]}


def test_null_reads_as_null_where_pipeline_writes_scalars(tmp_path):
    path = tmp_path / runs.MANIFEST
    path.write_text(json.dumps({"finished": None, "exit_code": None, "last_checkpoint": None}))
    assert runs.read_manifest(path) == {"finished": None, "exit_code": None, "last_checkpoint": None}
