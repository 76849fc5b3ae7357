"""The study folder, results/<study>: its name, its runs' labels and folder names, the lock held by
the one process using it, the plan (study.json) and the runs read through it."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import unicodedata
from contextlib import contextmanager
from pathlib import Path

from benchmarks.store.rundir import (
    CONFIG,
    LOCK,
    NEXT,
    PLAN,
    Run,
    Unreadable,
    next_dir,
    read_json,
    read_run,
    write_json,
)
from benchmarks.store.schemas import NAME, PLAN_SCHEMA
from shared_data.errors import UserError


# ------------------------------------------------------------------------------------ the study
def check_name(name: str, what: str = "--study") -> str:
    """Study names are plain folder names: no separators, no '..', nothing hidden."""
    if not isinstance(name, str) or not NAME.match(name) or len(name) > 120:
        raise UserError(f"{what} {name!r}: a study name is a plain folder name (letters, digits and . _ = + , -, "
                        "not starting with . or -); it always lives under --results-dir")
    return name


# a run's folder at its largest: 4-13 MB finished on the embedded dataset (seed000's runs), while training
# up to three weight files more (the epoch's best, the checkpoint and its optimizer state); Flickr8k's larger
# vocabulary grows the output layer about tenfold
RUN_DISK_BYTES = 64 << 20


LABEL_MAX = 100  # characters; with "-s<seed>" a run folder's name stays far below a file system's 255 bytes


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._=+,@:()/-]*$")


def check_label(label: object, where: str = "") -> str:
    """A configuration's label names its rows and folders: one line of at most LABEL_MAX characters of
    letters, digits, spaces and . _ = + , @ : ( ) / - (after Unicode normalisation: NFKC, outer spaces
    dropped), so that a report's tables and a run's folder name stay what they say."""
    text = unicodedata.normalize("NFKC", label).strip() if isinstance(label, str) else label
    if not isinstance(text, str) or not _LABEL.match(text) or len(text) > LABEL_MAX:
        shown = json.dumps(label)[:60] if isinstance(label, str) else repr(label)[:60]
        raise UserError(f"{where}label {shown}: a label is at most {LABEL_MAX} characters of letters, digits, "
                        "spaces and . _ = + , @ : ( ) / -, starting with a letter or digit")
    return text


def slug(label: str) -> str:
    """A label as a folder name: readable, and nothing a shell or a filesystem trips over."""
    out = "".join(c if c.isalnum() or c in "._=+-" else "-" for c in label)
    return out.lstrip(".-") or "run"


def run_folder(study_dir: Path, label: str, seed: int) -> Path:
    return study_dir / f"{slug(label)}-s{seed}"


class StudyFolder:
    """results/<study>: created under --results-dir, locked by its user, read through its plan."""

    def __init__(self, results_dir: Path, name: str):
        self.results_dir = Path(results_dir)
        self.name = check_name(name)
        self.path = self.results_dir / self.name

    @classmethod
    def at(cls, path: Path) -> StudyFolder:
        """An existing folder, whatever its name (`report` reads any folder it is given)."""
        folder = cls.__new__(cls)
        folder.path, folder.results_dir, folder.name = Path(path), Path(path).parent, Path(path).name
        return folder

    def create(self) -> Path:
        if self.path.is_symlink():
            raise UserError(f"{self.path} is a symbolic link; a study folder is a real folder under --results-dir: "
                            "remove the link, or pass the folder it points to as --results-dir")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"--results-dir {self.results_dir}: {self.path} cannot be a folder (a file is in the "
                            "way); choose another --results-dir") from None
        except OSError as e:
            raise UserError(f"cannot create {self.path} ({e.strerror or e}); choose another --results-dir") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UserError(f"{self.path} is not writable; make it writable or choose another --results-dir")
        return self.path

    def check_space(self, runs: int) -> None:
        """Refuse a study the disk cannot hold before it starts, rather than fail it hours later."""
        need, free = runs * RUN_DISK_BYTES, shutil.disk_usage(self.path).free
        if free < need:
            raise UserError(f"the runs to go ({runs}) need about {need >> 20} MiB in {self.path} and {free >> 20} MiB "
                            "are free; "
                            "free some space or choose another --results-dir")

    @contextmanager
    def lock(self):
        """Exclusive use of the folder while a study runs in it. flock, so that a killed holder (kill -9)
        releases it with its last file descriptor; the file keeps the holder's PID for the message."""
        import fcntl

        path = self.path / LOCK
        try:  # O_NOFOLLOW: a planted link would make the truncate below empty another file
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise UserError(f"cannot use {path} ({e.strerror or e}); "
                            + ("remove the link and run the command again" if e.errno == errno.ELOOP
                               else "check the folder's permissions or choose another --results-dir")) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
                raise UserError(f"study {self.name} is in use by PID {holder} ({path}); wait for it to finish, "
                                "or use another --study") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def write_plan(self, jobs: list[dict]) -> None:
        """jobs: the config.json of every run of the study command now running, with its "folder"."""
        write_json(self.path / PLAN, {"study": self.name, "jobs": jobs})

    def plan(self) -> list[dict] | None:
        """The plan's jobs; None without a study.json. A damaged one is a one-line error: the runs
        cannot be told current from stale without it."""
        if not (self.path / PLAN).exists() and not (self.path / PLAN).is_symlink():
            return None
        try:
            jobs = read_json(self.path / PLAN, PLAN_SCHEMA)["jobs"]
            folders = [j["folder"] for j in jobs]
            twice = next((f for f in folders if folders.count(f) > 1), None)
            if twice:
                raise Unreadable(f"{PLAN} lists {twice} twice")
            return jobs
        except Unreadable as e:
            raise UserError(f"{self.path}: {e}; the study command that ran here rewrites it "
                            f"(python -m benchmarks study/run/ablate ... --study {self.name})") from None

    def runs(self) -> tuple[list[Run], list[Run]]:
        """(the plan's runs, in its order; stale runs). A planned run is its folder if that ran the
        planned configuration, else its attempt in <run>.next/ (failed or unfinished), else an
        unstarted placeholder; a finished run of another configuration is stale: kept, listed, never
        mixed into a row. Without a plan (a folder written by hand), every run folder is current."""
        folders = sorted(p for p in self.path.iterdir() if p.is_dir() and not p.is_symlink()
                         and (p / CONFIG).exists() and not p.name.endswith((NEXT, ".old"))) \
            if self.path.is_dir() else []
        plan = self.plan()
        if plan is None:
            runs = [read_run(p) for p in folders]
            for r in runs:
                r.config = r.config or {"label": r.dir.name, "settings": {}}
            return sorted(runs, key=lambda r: (r.config.get("order", 0), r.seed, str(r.dir))), []
        current = []
        for job in plan:
            config = {k: v for k, v in job.items() if k != "folder"}
            d = self.path / job["folder"]
            run = read_run(d)
            if run.config_hash != job["config_hash"]:
                attempt = read_run(next_dir(d))
                if attempt.config_hash == job["config_hash"]:
                    run = attempt
                elif not (run.problem and run.config is None):  # unreadable config.json: the row says so
                    run = Run(d)  # not started yet
            run.config = run.config or config
            current.append(run)
        stale = [r for r in (read_run(p) for p in folders) if r.finished
                 and not any(r.dir == c.dir and r.config_hash == c.config_hash for c in current)]
        return current, stale
