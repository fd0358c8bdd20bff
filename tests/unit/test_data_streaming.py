"""`pipeline check` streams a dataset: memory does not grow with the file, and what the streamed checks find
(duplicates and leakage by 64-bit digests, matched by sorting; token lengths in batches) is what holding
every row found."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline.checks import data
from pipeline.core import config


def row(i: int, answer: str = "a") -> dict:
    return {"messages": [{"role": "user", "content": f"Rewrite: passage {i}"},
                         {"role": "assistant", "content": f"{answer} {i}"}]}


def project(tmp_path: Path, train: list[dict], test: list[dict]) -> config.LoadedConfig:
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        base_model: pipeline://tiny-llama
        datasets:
          - path: {tmp_path / 'train.jsonl'}
            type: chat_template
        test_datasets:
          - path: {tmp_path / 'test.jsonl'}
            type: chat_template
        """))
    return config.load(str(cfg))


def test_duplicates_and_leakage_name_the_lines_holding_every_row_found(tmp_path):
    train = [row(i) for i in range(10)] + [row(3), row(7), row(3)]  # lines 11-13 repeat lines 4, 8, 4
    test = [row(100), row(5), row(6, answer="other")]  # line 2 is a training row, line 3 a training prompt
    loaded = project(tmp_path, train, test)
    sets, found = data.check(loaded, loaded.data)
    dup = [(f.line, f.message.split(";")[0]) for f in found if f.rule == "data-duplicate"]
    assert dup == [(11, "same row as line 4"), (12, "same row as line 8"), (13, "same row as line 4")]
    leaks = [(f.line, f.message.split(" (")[0]) for f in found if f.rule == "data-leakage"]
    assert leaks == [(2, "the same row is in training"), (3, "the same prompt is in training")]
    assert [f.message.split("(")[1].split(")")[0] for f in found if f.rule == "data-leakage"] == [
        f"{sets[0].shown}:6", f"{sets[0].shown}:7"]
    assert [s.count for s in sets] == [13, 3] and list(sets[0].lines) == list(range(1, 14))


def test_rows_are_read_again_from_the_file_not_held(tmp_path):
    loaded = project(tmp_path, [row(i) for i in range(3)], [row(9)])
    sets, _ = data.check(loaded, loaded.data)
    assert not hasattr(sets[0], "rows") or callable(sets[0].rows)
    assert [r["messages"][1]["content"] for _, r in sets[0].rows()] == ["a 0", "a 1", "a 2"]


def test_memory_does_not_grow_with_the_dataset(tmp_path):
    """30 MiB of rows: holding them (before this) raised the row checks' peak by 108 MiB, and the token
    lengths' by far more (about 70 times the file in all); streamed, the row checks add 16 MiB. In a child
    process, whose peak is its own."""
    rows = tmp_path / "big.jsonl"
    with rows.open("w") as fh:
        i = 0
        while fh.tell() < 30 * 2**20:
            fh.write(json.dumps(row(i, answer="word " * 150)) + "\n")
            i += 1
    loaded = project(tmp_path, [], [row(0)])
    loaded.path.write_text(loaded.path.read_text().replace(str(tmp_path / "train.jsonl"), str(rows)))
    probe = textwrap.dedent(f"""\
        import resource, sys
        from pipeline.checks import data
        from pipeline.core import config
        loaded = config.load({str(loaded.path)!r})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sets, found = data.check(loaded, loaded.data)
        assert sets[0].count == {i}, sets[0].count
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    grew_mib = int(done.stdout.split()[-1])
    assert grew_mib < 50, f"the check's peak memory grew by {grew_mib} MiB for a 30 MiB file"
