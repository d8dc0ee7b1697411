"""Result files appear whole or not at all, readable like any other new file."""

import os
import stat

import pytest

from sieve.io_utils import atomic_path, write_text


def test_written_file_has_the_usual_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        write_text(tmp_path / "r.md", "x\n")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "r.md").stat().st_mode) == 0o644
    assert (tmp_path / "r.md").read_text() == "x\n"


def test_failure_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.onnx") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
