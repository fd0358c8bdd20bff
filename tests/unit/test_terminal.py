"""What pipeline prints: escaped (core/errors.printable, core/table), and guarded (core/terminal) so that a
terminal that cannot take it is one line, never a traceback, and the command still ends as it would."""

from __future__ import annotations

import errno
import io
import json

import pytest
from support import TINY, run_here

from pipeline import cli
from pipeline.core import terminal
from pipeline.core.errors import printable
from pipeline.core.table import pipe_table

HOSTILE = "a\x1b[31mred\x1b[0m\rover\nrow\x85c1\u202eevil\u2066x\u2069\x7f\udcff|col"


def test_printable_escapes_every_control_and_bidi_character():
    out = printable(HOSTILE)
    assert out == "a\\x1b[31mred\\x1b[0m\\rover\\nrow\\x85c1\\u202eevil\\u2066x\\u2069\\x7f\\udcff|col"
    assert out.isprintable()


def test_a_table_cell_can_add_neither_a_row_nor_a_column():
    table = pipe_table(("Run", "Status"), [[HOSTILE, "ok"], ["plain", "ok"]])
    lines = table.split("\n")
    assert len(lines) == 4  # header, rule, two rows
    assert all(line.count(" | ") == 1 for line in lines[2:]), table  # `|` in a name is `\|`
    assert "\\|col" in lines[2] and all(line.isprintable() for line in lines)


class Refusing(io.StringIO):
    """A stream on a full disk (/dev/full), or one whose reader went away."""

    def __init__(self, err: int = errno.ENOSPC) -> None:
        super().__init__()
        self.err = err

    def write(self, s: str) -> int:
        raise OSError(self.err, "No space left on device" if self.err == errno.ENOSPC else "Broken pipe")


def test_the_guard_escapes_but_keeps_line_breaks_tabs_and_carriage_returns():
    raw = io.StringIO()
    guard = terminal.Guarded(raw, "standard output")
    guard.write("a\tb\rc\n\x1b[2J\u202e\x85\n")
    assert raw.getvalue() == "a\tb\rc\n\\x1b[2J\\u202e\\x85\n"


def test_the_guard_writes_what_an_ascii_stream_cannot_hold_as_escapes():
    raw = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    guard = terminal.Guarded(raw, "standard output")
    guard.write("caf\u00e9 \udcff\n")
    raw.flush()
    assert raw.buffer.getvalue() == b"caf\\xe9 \\udcff\n"  # type: ignore[attr-defined]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EPIPE])
def test_a_stream_that_refuses_is_noted_not_raised(err):
    guard = terminal.Guarded(Refusing(err), "standard output")
    guard.write("one\n")
    guard.write("two\n")  # dropped, not retried
    guard.flush()
    assert guard.failure is not None


def test_a_command_whose_stdout_is_full_ends_in_one_line_and_exit_3(monkeypatch, tmp_path):
    err = io.StringIO()
    monkeypatch.setattr("sys.stdout", Refusing())
    monkeypatch.setattr("sys.stderr", err)
    code = cli.main(["runs", "--runs-dir", str(tmp_path)])
    assert code == 3
    assert err.getvalue() == ("<standard output>: output-unwritable: cannot write to standard output (No space left "
                              "on device); what was not shown is in the run folder's manifest and log, where the "
                              "command made one\n")


def test_a_command_whose_stdout_and_stderr_are_closed_still_exits(monkeypatch, tmp_path):
    monkeypatch.setattr("sys.stdout", None)
    monkeypatch.setattr("sys.stderr", None)
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 3


def test_a_refusal_keeps_its_code_when_stdout_is_also_lost(monkeypatch, tmp_path):
    err = io.StringIO()
    monkeypatch.setattr("sys.stdout", Refusing())
    monkeypatch.setattr("sys.stderr", err)
    assert cli.main(["check", str(tmp_path / "absent.yaml")]) == 2  # the refusal's code, not the stream's
    assert "output-unwritable" in err.getvalue()  # check's findings went to the lost stdout: said so


def test_a_run_name_with_a_line_break_makes_no_row_of_the_runs_table(tmp_path):
    runs = tmp_path / "runs"
    for name in ("20260101-000000-a-train", "20260101-000001-x\n| forged | row | \x1b[31m-train"):
        (runs / name).mkdir(parents=True)
        (runs / name / "manifest.json").write_text(json.dumps(
            {"run": name, "stage": "train\n| forged", "status": "succeeded\u202e",
             "config": {"path": f"/p/{name}\n| forged |.yaml"}}))
    out = run_here("runs", "--runs-dir", str(runs)).stdout
    lines = out.rstrip("\n").split("\n")
    assert len(lines) == 4, out  # header, rule and one row per run
    assert all(line.isprintable() for line in lines) and "forged" in lines[3]
    assert all(line.count(" | ") == 8 for line in lines[2:]), out  # nine columns each, whatever the names hold


def test_an_undecodable_or_overlong_config_path_is_one_printable_line():
    for path in ("configs/\udcff\x1b[31m.yaml", "configs/" + "x" * 300 + ".yaml", TINY + "\udcff/" + "y" * 5000):
        proc = run_here("check", path)  # check prints its findings on stdout, with its table
        assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
        (line,) = [line for line in proc.stdout.split("\n") if ": config-missing: " in line]
        assert line.isprintable() and all(row.isprintable() for row in proc.stdout.split("\n")), proc.stdout
