"""The one way CapBench writes a file: to a temporary name beside it, then a rename over the old one.

A kill -9 or a full disk mid-write leaves the previous file (or none), never half of one; everything
that reads results, datasets or weights relies on that. A failed write is a UserError naming the
file and what to do, and leaves no temporary file behind.
"""
from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

from shared_data.errors import UserError

TMP_SUFFIX = ".tmp"  # a leftover of a killed write; readers ignore it and writers replace it


def write_atomic(path: Path | str, write: Callable[[Path], object],
                 fix: str = "check the folder's permissions") -> Path:
    """`write(tmp)`, then rename tmp to `path`. `fix` ends the error message when the disk is not full."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        tmp.unlink(missing_ok=True)  # a leftover, or a planted link the write would follow
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise UserError(f"cannot write {path} ({e.strerror or e}); "
                        + ("free some disk space and run the command again" if e.errno == errno.ENOSPC
                           else fix)) from None
    return path


def write_json(path: Path | str, data: object, fix: str = "check the folder's permissions") -> Path:
    """JSON with one-space indents; numpy scalars are written as floats."""
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, default=float)), fix)


def write_text(path: Path | str, text: str, fix: str = "check the folder's permissions") -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text), fix)
