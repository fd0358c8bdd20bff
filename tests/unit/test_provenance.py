"""What a record says produced a result: the content of the data, and whether it still holds."""

import os

from pipeline.core import provenance


def test_data_is_hashed_once_and_a_change_is_seen(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"a": 1}\n')
    hashes = provenance.data_hashes([rows])
    assert provenance.changed_data(hashes) == []
    stat = rows.stat()
    rows.write_text('{"a": 2}\n')  # the same size, and the same modification time below
    os.utime(rows, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert provenance.changed_data(hashes) == [str(rows)]
