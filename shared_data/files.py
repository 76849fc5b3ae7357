"""The one way CapBench writes a file: to a temporary name beside it, then a rename over the old one.

A kill -9 or a full disk mid-write leaves the previous file (or none), never half of one; everything
that reads results, datasets or weights relies on that. A failed write leaves no temporary file
behind and raises its OSError, for the caller to say what to do (prepare: run it again, it resumes;
the worker: the next study resumes from the last checkpoint); given `fix`, it is a UserError that
names the file and ends with `fix`.
"""
from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

from shared_data.errors import UserError

TMP_SUFFIX = ".tmp"  # a leftover of a killed write; readers ignore it and writers replace it


def write_atomic(path: Path | str, write: Callable[[Path], object], fix: str | None = None) -> Path:
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
        if fix is None:
            raise
        raise UserError(f"cannot write {path} ({e.strerror or e}); "
                        + ("free some disk space and run the command again" if e.errno == errno.ENOSPC
                           else fix)) from None
    return path


def write_json(path: Path | str, data: object, fix: str | None = None) -> Path:
    """JSON with one-space indents; numpy scalars are written as floats."""
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, default=float)), fix)


def write_text(path: Path | str, text: str, fix: str | None = None) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text), fix)
