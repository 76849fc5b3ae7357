"""The rules for a name or path read from an untrusted file (a dataset folder, an importer's input).

A name is `plain_name`; a path taken from a file is a plain relative path (`path_problem`) that,
links followed, stays inside its folder (`first_outside`). shared_data.dataset's docstring says
where each rule applies.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def plain_name(name: str) -> bool:
    """A single folder or file name that is not hidden: dataset names and extractor names."""
    return (bool(name) and name == name.strip() and not name.startswith(".") and len(name) <= 200
            and not any(c in name for c in "/\\\0"))


def path_problem(rel: str) -> str | None:
    """Why `rel` is not a plain relative path (names joined by '/'), in words; None when it is one."""
    if rel.startswith("/"):
        return "is an absolute path"
    if not rel.isprintable():
        return "contains a control character (a line break, a tab, a NUL byte)"
    if "\\" in rel or "\0" in rel:
        return "contains a backslash or a NUL byte"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return "is not a plain relative path (it has an empty, '.' or '..' part)"
    return None


def first_outside(root: Path, paths: Iterable[Path]) -> Path | None:
    """The first of `paths` that, links followed, is not inside `root`; None when all are."""
    real_root = os.path.realpath(root)
    prefix = real_root.rstrip(os.sep) + os.sep
    for path in paths:
        real = os.path.realpath(path)
        if real != real_root and not real.startswith(prefix):
            return path
    return None
