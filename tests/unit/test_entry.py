"""pipeline.in_axolotl.entry: axolotl's CLI entry, with the interpreter's teardown skipped only after success."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import ROOT

FAKE_CLI = '''
import atexit, sys
from pathlib import Path

class Finalised:
    """Writes its file when the interpreter tears down the module (not when it leaves with os._exit)."""
    path = None

    def __del__(self):
        if self.path is not None:
            self.path.write_text("torn down")


LEFT_BEHIND = Finalised()


def do_cli(config, **kwargs):
    marker = Path(config)
    LEFT_BEHIND.path = marker.with_suffix(".teardown")
    atexit.register(lambda: marker.with_suffix(".atexit").write_text("ran"))
    marker.write_text(repr(sys.argv[1:]) + " " + repr(sorted(kwargs)))
    if kwargs.get("fail") == "raise":
        raise RuntimeError("engine broke")
    if kwargs.get("fail") == "exit":
        sys.exit(3)
    if kwargs.get("fail") == "clean":  # what axolotl's SIGINT handler does after saving the model
        sys.exit(0)
'''


def launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "fake_cli.py").write_text(FAKE_CLI)
    code = "import sys; from pipeline.in_axolotl import entry as launch; launch.run('fake_cli', sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}, cwd=tmp_path)


def test_success_runs_the_exit_handlers_and_exits_zero(tmp_path):
    out = tmp_path / "cfg.txt"
    proc = launch(tmp_path, str(out), "--max_steps=3")
    assert proc.returncode == 0, proc.stderr
    # axolotl parses sys.argv too: it sees the arguments as `python -m axolotl.cli.train ...` gives them
    assert out.read_text() == f"[{str(out)!r}, '--max_steps=3'] ['max_steps']"
    assert (tmp_path / "cfg.atexit").read_text() == "ran"  # logging's flush, wandb's finish, ...


def test_failures_keep_their_status_and_traceback(tmp_path):
    proc = launch(tmp_path, str(tmp_path / "cfg.txt"), "--fail=raise")
    assert proc.returncode == 1 and "RuntimeError: engine broke" in proc.stderr
    proc = launch(tmp_path, str(tmp_path / "cfg.txt"), "--fail=exit")
    assert proc.returncode == 3


def test_only_axolotl_cli_modules_are_launched():
    proc = subprocess.run([sys.executable, "-m", "pipeline.in_axolotl.entry", "os.path", "x"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 1 and "usage: python -m pipeline.in_axolotl.entry axolotl.cli." in proc.stderr


def test_a_clean_sys_exit_leaves_as_success_does_without_teardown(tmp_path):
    proc = launch(tmp_path, str(tmp_path / "cfg.txt"), "--fail=clean")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cfg.atexit").read_text() == "ran"
    assert not (tmp_path / "cfg.teardown").exists()
    proc = launch(tmp_path, str(tmp_path / "cfg.txt"), "--fail=exit")  # a failing status still tears down
    assert proc.returncode == 3 and (tmp_path / "cfg.teardown").read_text() == "torn down"
