import json
import os

import pytest

from pipeline.core import provenance, runs
from pipeline.core.errors import UserError


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
    assert on_disk["data"][str(data)] == provenance.sha256_file(data)
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


def test_result_files_written_in_the_same_second_never_collide(tmp_path):
    paths = [runs.write_new(tmp_path, "smoke-20260101-000000", ".json", f'{{"n": {i}}}\n') for i in range(3)]
    assert [p.name for p in paths] == ["smoke-20260101-000000.json", "smoke-20260101-000000-1.json",
                                       "smoke-20260101-000000-2.json"]
    assert [json.loads(p.read_text())["n"] for p in paths] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporaries


def test_a_damaged_manifest_is_skipped_in_lists_and_one_line_by_name(tmp_path, capsys):
    good = runs.create(tmp_path, "cfg", "train")
    runs.write_json(good.manifest_path, {"run": good.name, "stage": "train", "status": "succeeded"})
    for name, text in (("20990101-000000-cut-train", '{"run": "x", "sta'), ("20990102-000000-list-train", "[1]"),
                       ("20990103-000000-binary-train", "\udcff")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert [r.name for r in runs.all_runs(tmp_path)] == [good.name]
    err = capsys.readouterr().err
    assert err.count("manifest-corrupt") == 3 and "skipped" in err
    with pytest.raises(UserError) as exc:
        runs.find(tmp_path, "20990101-000000-cut-train").manifest()
    assert exc.value.findings[0].rule == "manifest-corrupt"


def test_a_run_folder_that_cannot_be_set_up_is_removed(tmp_path):
    run = runs.create(tmp_path, "cfg", "smoke")
    assert (run.path / runs.RESERVE).stat().st_size == runs.RESERVE_BYTES
    with pytest.raises(UserError) as exc, runs.setting_up(run):
        raise OSError(28, "No space left on device")
    assert exc.value.findings[0].rule == "runs-unwritable" and "No space left" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "dir", "zero"])
def test_metrics_that_are_not_a_file_are_one_line_or_skipped_for_a_run_that_just_ended(tmp_path, kind, capsys):
    run = runs.Run(tmp_path)
    if kind == "fifo":
        os.mkfifo(run.metrics_path)
    elif kind == "dir":
        run.metrics_path.mkdir()
    else:
        run.metrics_path.symlink_to("/dev/zero")
    with pytest.raises(runs.DamagedRun) as exc:
        run.metrics()
    assert exc.value.findings[0].rule == "metrics-not-file"
    assert run.metrics(strict=False) == []  # the run that just ended still records how
    assert "metrics-not-file" in capsys.readouterr().err
