"""The launcher's part of the resolved config, and what the launching process must not import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import ROOT

from pipeline.core import bytecode, engine, run_start


def test_small_data_is_prepared_in_one_process(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"messages": []}\n' * 40)
    cfg = run_start.prepare({"sequence_len": 64}, tmp_path / "out", tmp_path / "cache", [data])
    assert cfg["dataset_num_proc"] == 1


def test_large_data_and_an_explicit_setting_keep_their_process_count(tmp_path):
    data = tmp_path / "rows.jsonl"
    with data.open("wb") as f:
        f.truncate(run_start.SMALL_DATA_BYTES + 1)
    assert "dataset_num_proc" not in run_start.prepare({}, tmp_path / "out", tmp_path / "cache", [data])
    small = tmp_path / "small.jsonl"
    small.write_text("{}\n")
    assert run_start.prepare({"dataset_num_proc": 8}, tmp_path, tmp_path, [small])["dataset_num_proc"] == 8
    assert "dataset_num_proc" not in run_start.prepare({"dataset_processes": 8}, tmp_path, tmp_path, [small])


def test_the_launching_process_does_not_import_axolotl_or_torch():
    """The child pays for axolotl's imports (seconds); the stages that launch it must not pay twice."""
    code = ("import sys; import pipeline.cli, pipeline.stages.smoke, pipeline.stages.train, pipeline.core.engine; "
            "print(sorted(m for m in ('axolotl', 'torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_the_phase_line_takes_differences_and_ends_with_the_exit():
    from pipeline.core import summary

    line = summary.phase_line({"configured": 5.0, "data_ready": 6.5, "model_loaded": 16.5, "training": 18.0,
                               "first_step": 30.0, "trained": 36.0, "saved": 38.5}, 40.0)
    assert line == ("startup 5.0s | data 1.5s | model 10.0s | trainer 1.5s | first step 12.0s | steps 6.0s | "
                    "save 2.5s | exit 1.5s")
    assert summary.phase_line({}) == ""


def test_kernel_names_fall_into_groups():
    from pipeline.in_axolotl.profiling import group_of, grouped

    assert group_of("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "matmul"
    assert group_of("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>") == "attention"
    assert group_of("ncclDevKernel_AllReduce_Sum_bf16_RING_LL") == "communication"
    assert group_of("_rms_norm_forward_kernel") == "triton"
    assert group_of("Memcpy DtoD (Device -> Device)") == "copies"
    g = grouped([("gemm_a", 3000.0), ("gemm_b", 1000.0), ("weird", 1000.0)])
    assert g == {"matmul": {"ms": 4.0, "share": 0.8}, "other": {"ms": 1.0, "share": 0.2}}


def _package_without_bytecode(root: Path, name: str = "somepkg") -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 7\n")
    return pkg


def _clean_bytecode_settings(monkeypatch) -> None:
    """Start from no bytecode settings; whatever use_bytecode_cache() sets is undone after the test."""
    for var in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", bytecode.PYCACHE_ENV):
        monkeypatch.setenv(var, "")  # recorded, so the undo restores the variable as it was
        monkeypatch.delenv(var)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)


def test_bytecode_goes_to_the_cache_where_the_environment_forbids_writing_it(tmp_path, monkeypatch):
    _package_without_bytecode(tmp_path / "src")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setattr(bytecode, "BYTECODE_PROBES", ("somepkg",))
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path))
    _clean_bytecode_settings(monkeypatch)
    bytecode.use_bytecode_cache()
    assert sys.pycache_prefix is None  # bytecode is written beside the sources as usual
    assert "PYTHONPYCACHEPREFIX" not in engine.environment(tmp_path / "m.jsonl", offline=True)

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # as CUDA images set it
    bytecode.use_bytecode_cache()
    assert sys.pycache_prefix == str(tmp_path / "pycache")
    env = engine.environment(tmp_path / "m.jsonl", offline=True)
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "pycache")
    assert "PYTHONDONTWRITEBYTECODE" not in env

    _clean_bytecode_settings(monkeypatch)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv(bytecode.PYCACHE_ENV, "0")
    assert bytecode.bytecode_cache() is None
    monkeypatch.delenv(bytecode.PYCACHE_ENV)
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path / "mine"))  # the user's own prefix wins
    bytecode.use_bytecode_cache()
    assert engine.environment(tmp_path / "m.jsonl", offline=True)["PYTHONPYCACHEPREFIX"] == str(tmp_path / "mine")


def test_installed_bytecode_is_used_as_it_is(tmp_path, monkeypatch):
    """A pip-installed stack has its .pyc: a prefix would make every fresh container compile it again."""
    pkg = _package_without_bytecode(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(pkg)], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"})
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setattr(bytecode, "BYTECODE_PROBES", ("somepkg",))
    _clean_bytecode_settings(monkeypatch)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    assert bytecode.bytecode_cache() is None


def test_a_child_under_the_bytecode_cache_writes_there_and_not_beside_its_sources(tmp_path, monkeypatch):
    pkg = _package_without_bytecode(tmp_path / "src")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setattr(bytecode, "BYTECODE_PROBES", ("somepkg",))
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    _clean_bytecode_settings(monkeypatch)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    bytecode.use_bytecode_cache()
    env = engine.environment(tmp_path / "m.jsonl", offline=True)
    subprocess.run([sys.executable, "-c", "import somepkg"], cwd=tmp_path / "src", env=env, check=True)
    assert not (pkg / "__pycache__").exists()
    assert list((tmp_path / "cache" / "pycache").rglob("__init__*.pyc"))


def test_prepared_data_is_keyed_by_the_content_of_data_and_tokenizer(tmp_path):
    rows, tok = tmp_path / "rows.jsonl", tmp_path / "tok"
    rows.write_text('{"messages": []}\n')
    tok.mkdir()
    (tok / "tokenizer.json").write_text('{"v": 1}')
    cfg = {"base_model": str(tok), "datasets": [{"path": str(rows), "type": "chat_template"}], "sequence_len": 64}

    def folder(**changes) -> str:
        from pipeline.core import provenance

        prepared = run_start.prepare({**cfg, **changes}, tmp_path / "out", tmp_path / "cache", [rows],
                                  provenance.data_hashes([rows]))
        return prepared["dataset_prepared_path"]

    first = folder()
    assert first.startswith(str(tmp_path / "cache" / "prepared")) and folder() == first
    assert folder(max_steps=3, learning_rate=0.1) == first  # settings that do not touch the data share it
    assert folder(sequence_len=128) != first
    rows.write_text('{"messages": [] }\n')  # the same path and tokenizer name, other bytes
    assert folder() != first
    edited = folder()
    (tok / "tokenizer.json").write_text('{"v": 2}')  # a tokenizer rebuilt under the same path
    assert folder() != edited
    assert folder(dataset_prepared_path=str(tmp_path / "mine")).startswith(str(tmp_path / "mine") + os.sep)


def test_a_child_that_exits_0_after_a_forwarded_signal_is_reported_as_interrupted(tmp_path):
    """axolotl saves and exits 0 on SIGINT: the launcher must not call that a success."""
    import signal
    import threading

    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGINT, lambda *a: sys.exit(0))\n"
              "print('re' + 'ady', flush=True)\n"  # the command line in the log must not match too
              "time.sleep(60)\n")
    log = tmp_path / "child.log"

    def interrupt_when_ready() -> None:
        while "ready" not in (log.read_text() if log.exists() else ""):
            threading.Event().wait(0.02)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does to pipeline; engine.run forwards it

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    with open(os.devnull, "w") as quiet:
        code = engine.run([sys.executable, "-c", script], dict(os.environ), log, echo=quiet)
        assert code == 128 + signal.SIGINT
        assert engine.run([sys.executable, "-c", "pass"], dict(os.environ), log, echo=quiet) == 0


def test_a_child_that_hangs_in_its_interrupt_handler_is_killed_after_the_grace(tmp_path, monkeypatch, capsys):
    """axolotl 0.19's SIGINT handler logs through a tee holding a plain lock: a signal during a log line
    deadlocks it. The launcher kills such a child after the grace and still reports the interrupt."""
    import signal
    import threading

    monkeypatch.setenv(engine.GRACE_ENV, "1")
    script = ("import signal, threading, time\n"
              "lock = threading.Lock(); lock.acquire()\n"
              "signal.signal(signal.SIGINT, lambda *a: lock.acquire())\n"  # the deadlock, as in axolotl's tee
              "print('re' + 'ady', flush=True)\n"
              "time.sleep(60)\n")
    log = tmp_path / "child.log"

    def interrupt_when_ready() -> None:
        while "ready" not in (log.read_text() if log.exists() else ""):
            threading.Event().wait(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    with open(os.devnull, "w") as quiet:
        code = engine.run([sys.executable, "-c", script], dict(os.environ), log, echo=quiet)
    assert code == 128 + signal.SIGINT  # not the sleep's end (0 -> 130 too): the line below says it was killed
    assert "axolotl did not end within 1 s of the interrupt (set PIPELINE_INTERRUPT_GRACE_S to wait longer): " \
           "killed" in capsys.readouterr().err
