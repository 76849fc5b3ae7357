"""shared_data/files.py: the one atomic write. A failed write leaves the old file and no temporary."""

from __future__ import annotations

import errno
import json

import pytest

from shared_data import files
from shared_data.errors import UserError


def _full(tmp):
    tmp.write_text("half")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_keeps_the_old_file_and_raises_its_oserror(tmp_path):
    path = files.write_json(tmp_path / "a.json", {"v": 1})
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(path, _full)
    assert json.loads(path.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_with_a_fix_it_is_one_line_that_says_what_to_do(tmp_path):
    with pytest.raises(UserError, match=r"cannot write .*b\.txt \(No space left on device\); free some disk space"):
        files.write_atomic(tmp_path / "b.txt", _full, fix="choose another folder")
    with pytest.raises(UserError, match="choose another folder$"):
        files.write_atomic(tmp_path / "b.txt", lambda tmp: (_ for _ in ()).throw(PermissionError(13, "denied")),
                           fix="choose another folder")
    assert list(tmp_path.iterdir()) == []


def test_a_leftover_temporary_is_replaced(tmp_path):
    (tmp_path / f"c.txt{files.TMP_SUFFIX}").write_text("from a killed write")
    files.write_text(tmp_path / "c.txt", "whole")
    assert [p.name for p in tmp_path.iterdir()] == ["c.txt"] and (tmp_path / "c.txt").read_text() == "whole"
