"""The run folder and the study folder: every file name in them, how they are written, read back and
replaced. Nothing else in the harness names a file of a run.

    results/<study>/
        study.json               the plan of the last study command: every run's folder and config hash
        study.lock               held (flock) by the one process using the folder
        report.md, *.png         the report (benchmarks/report/document.py)
        results.csv, summary.json   the report's numbers for programs (benchmarks/report/export.py)
        references.json, published.json   a published study's (benchmarks/report/publish.py)
        <label>-s<seed>/         one run: the last one that finished, or the first attempt
            config.json          what it runs (written by the study before the worker starts)
            stdout.log           the worker's output
            checkpoint.json + checkpoint.{pt,npz}, weights-epoch<N>.*   while training (resume)
            history.csv, captions.json, per_image.json, attention.npz, weights.*, tensorboard/
            metrics.json         written last: a run without it did not finish
            error.txt            why it failed
        <label>-s<seed>.next/    a new attempt where a finished run already is: it replaces the
                                 finished one only once it has finished itself

Rules: every file is written atomically (temporary file, then rename); a finished result is only ever
replaced by a finished result; a report only uses runs whose configuration hash is the one the plan
gives (others are listed as stale, never averaged in); one process uses a study folder at a time.

Everything in a results folder is untrusted input (it may be damaged, hand-edited or copied from
elsewhere), checked here, where it is read:
- paths: a run folder is a plain name inside its study folder (study.json's "folder" included), never
  a symbolic link, and so is each of its files; image ids in captions.json are relative paths without
  "..". A study that finds a link where it would write refuses before it writes anything.
- types: config.json, metrics.json, captions.json, per_image.json and study.json are checked against
  the schemas of benchmarks/store/schemas.py, history.csv for complete rows of plausible numbers. A run
  file that fails is an "unreadable: <file> <what is wrong>" row of the report; a damaged study.json
  is a one-line error, since without it current runs cannot be told from stale ones.
- environment: the study folder must be writable, and the disk must hold RUN_DISK_BYTES per run to go.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.store.schemas import CAPTIONS_SCHEMA, CHECKPOINT_SCHEMA, CONFIG_SCHEMA, METRICS_SCHEMA
from shared_data import files
from shared_data.errors import UserError
from shared_data.safe_paths import path_problem
from shared_data.schema import Each, problem

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
CAPTIONS = "captions.json"
PER_IMAGE = "per_image.json"
ERROR = "error.txt"
LOG = "stdout.log"
ATTENTION = "attention.npz"
TENSORBOARD = "tensorboard"
CHECKPOINT = "checkpoint"  # checkpoint.json (loop state) + checkpoint.{pt,npz} (model, optimizer)
WEIGHTS = "weights"  # weights.{pt,npz}: the best epoch's
EPOCH_WEIGHTS = "weights-epoch"  # weights-epoch<N>.*: the best epoch so far, while training
NEXT = ".next"
PLAN = "study.json"
LOCK = "study.lock"
REPORT = "report.md"
HALVES = (1, 2)  # report --half: two disjoint halves of every configuration's seeds
HALF_REPORT = "report-half{}.md"  # `report --half 1|2`: the same tables from half of every configuration's seeds
RESULTS = "results.csv"  # beside every report: one row per finished run (benchmarks/report/export.py)
SUMMARY = "summary.json"  # beside every report: every comparison it makes (benchmarks/report/export.py)
FOREST = "forest.png"  # the comparisons' effects with their intervals
TIME_TO_TARGET = "time_to_target.png"  # each configuration's seeds' time to a --target
CURVES = "curves.png"
SAMPLES = "samples.png"
# a published study (`python -m benchmarks publish`): what reports need, tracked in git, no weights
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"
PUBLISHED = "published.json"  # when, from where and at which commit; marks the folder as a publication
REFERENCES = "references.json"  # the test references, once for all runs (their captions.json omit them)
PUBLISHED_RUN_FILES = (CONFIG, HISTORY, CAPTIONS, PER_IMAGE, LOG, METRICS)  # metrics.json last: it marks a run done
PUBLISHED_STUDY_FILES = (PLAN, REPORT, RESULTS, SUMMARY, *(HALF_REPORT.format(h) for h in HALVES))
HISTORY_FIELDS = ["epoch", "step", "train_loss", "val_loss", "val_bleu4", "train_time_s"]
HISTORY_BOUND = 1e12  # no loss, score, step count or second count of a run comes near; a larger value is damage


# -------------------------------------------------------------------------------------- writing
RESULTS_FIX = "check the folder's permissions or choose another --results-dir"


def _write_atomic(path: Path, write) -> None:
    files.write_atomic(path, write, RESULTS_FIX)


def write_json(path: Path, data: object) -> None:
    files.write_json(path, data, RESULTS_FIX)


def write_text(path: Path, text: str) -> None:
    files.write_text(path, text, RESULTS_FIX)


def write_history(run_dir: Path, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            w.writeheader()
            w.writerows(rows)

    _write_atomic(run_dir / HISTORY, write)


# -------------------------------------------------------------------------------------- reading
LINKED = "the run folder is a symbolic link (run folders are real folders inside their study folder)"


class Unreadable(Exception):
    """A run file that exists but cannot be used; the message says which and why."""


def _read_json(path: Path, spec: object = dict) -> dict:
    if path.is_symlink():
        raise Unreadable(f"{path.name} is a symbolic link (a run's files are its own)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, RecursionError):
        raise Unreadable(f"{path.name} is not valid JSON") from None
    except (OSError, UnicodeDecodeError) as e:
        raise Unreadable(f"{path.name} cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(data, dict):
        raise Unreadable(f"{path.name} is not a JSON object")
    wrong = problem(data, spec)
    if wrong:
        raise Unreadable(f"{path.name} {wrong}")
    return data


def read_json(path: Path, spec: object = dict) -> dict:
    """A run's JSON object, checked against `spec` (a schema, shared_data/schema.py); Unreadable if
    it does not match."""
    return _read_json(Path(path), spec)


def image_id_ok(name: str) -> bool:
    """Image ids name files under the dataset's image folder: plain relative paths, printable."""
    return name.isprintable() and path_problem(name) is None


def read_captions(run_dir: Path) -> dict:
    """A run's captions.json as {image id: {"generated", "references"}}; a published run's captions
    take their references from the study's references.json. Unreadable if either is not one."""
    captions = _read_json(Path(run_dir) / CAPTIONS, CAPTIONS_SCHEMA)
    shared = None
    for image, entry in captions.items():
        if not image_id_ok(image):
            raise Unreadable(f"{CAPTIONS}: {image[:60]!r} is not an image id (a path inside the image folder)")
        if "references" not in entry:
            if shared is None:
                shared = _read_json(Path(run_dir).parent / REFERENCES, Each([str]))
            entry["references"] = shared.get(image)
        if not entry["references"]:
            raise Unreadable(f"{CAPTIONS}: image {image[:60]!r} has no references (a list of captions)")
    return captions


def _read_history(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        history = [{k: float(r[k]) for k in HISTORY_FIELDS} for r in rows]
    except (OSError, csv.Error, KeyError, TypeError, ValueError):
        raise Unreadable(f"{path.name} is not a complete history ({', '.join(HISTORY_FIELDS)})") from None
    for row in history:  # NaN is a diverged epoch's loss; anything else must be a plausible value
        if any(abs(v) > HISTORY_BOUND for v in row.values() if v == v):
            raise Unreadable(f"{path.name} has a value beyond ±{HISTORY_BOUND:g} (epoch {row['epoch']:g})")
    return history


@dataclass
class Run:
    """One run folder as read back. `problem` says why it cannot be used (unreadable files)."""

    dir: Path
    config: dict | None = None
    metrics: dict | None = None
    history: list = field(default_factory=list)
    error: str | None = None
    problem: str | None = None

    @property
    def finished(self) -> bool:
        return self.metrics is not None and self.problem is None

    @property
    def config_hash(self) -> str | None:
        return (self.config or {}).get("config_hash")

    @property
    def label(self) -> str:
        return (self.config or {}).get("label") or self.dir.name

    @property
    def seed(self) -> int:
        return ((self.config or {}).get("settings") or {}).get("seed", 0)

    def state(self) -> str:
        """What the run is, in a few words: ok/diverged, failed (why), unfinished, unreadable (why)."""
        if self.problem:
            return f"unreadable: {self.problem}"
        if self.metrics is not None:
            return self.metrics["status"]
        if self.error:
            return self.error
        return f"no {METRICS} (unfinished)"


def read_run(run_dir: Path) -> Run:
    """A run folder, validated: a truncated or foreign file makes a Run with a `problem`, never an
    exception (so `report` lists it as a row)."""
    run = Run(Path(run_dir))
    if run.dir.is_symlink():
        run.problem = LINKED
        return run
    linked = _linked_file(run.dir)
    if linked:
        run.problem = f"{linked} is a symbolic link (a run's files are its own)"
        return run
    if not (run.dir / CONFIG).exists():
        return run  # not started
    try:
        run.config = _read_json(run.dir / CONFIG, CONFIG_SCHEMA)
        if (run.dir / ERROR).exists():
            run.error = (run.dir / ERROR).read_text(errors="replace").strip() or "failed"
        if (run.dir / METRICS).exists():
            run.metrics = _read_json(run.dir / METRICS, METRICS_SCHEMA)
            if (run.dir / HISTORY).exists():
                run.history = _read_history(run.dir / HISTORY)
    except Unreadable as e:
        run.problem = str(e)
    except OSError as e:
        run.problem = f"cannot be read ({e.strerror or e})"
    return run


def finished_with(run_dir: Path, digest: str) -> Run | None:
    """The finished run in this folder if it ran exactly this configuration."""
    if not (run_dir / METRICS).exists():
        return None
    run = read_run(run_dir)
    return run if run.finished and run.config_hash == digest else None


# ------------------------------------------------------------------------------------- attempts
def next_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + NEXT)


def _linked_file(folder: Path) -> str | None:
    """The name of a symbolic link among a folder's entries, if there is one."""
    try:
        return next((p.name for p in folder.iterdir() if p.is_symlink()), None)
    except OSError:
        return None


def check_real(run_dirs: list[Path]) -> None:
    """Before a study touches its run folders: none of them (nor an attempt or a replaced result
    beside it) may be a symbolic link, which would make the study delete and write another folder."""
    for d in run_dirs:
        for p in (d, next_dir(d), d.with_name(d.name + ".old")):
            if p.is_symlink():
                raise UserError(f"{p} is a symbolic link; run folders are real folders inside their study "
                                "folder: remove the link (its target is left alone) and run the command again")
            linked = _linked_file(p) if p.is_dir() else None
            if linked:  # stdout.log, a checkpoint: the worker would write through it
                raise UserError(f"{p / linked} is a symbolic link; a run's files are its own: remove the link "
                                "(its target is left alone) and run the command again")


def attempt_dir(run_dir: Path) -> Path:
    """Where a new attempt at this run trains: the run's own folder, unless a finished result is there
    (another configuration's, or the same one redone with --force): then beside it, in <run>.next/."""
    return next_dir(run_dir) if read_run(run_dir).finished else run_dir


def begin_attempt(work: Path, config: dict, force: bool) -> None:
    """Ready a folder for an attempt: a config.json of this configuration, no stale outcome. A checkpoint
    of the same configuration stays (the attempt resumes from it) unless --force."""
    work.mkdir(parents=True, exist_ok=True)
    old = read_run(work)
    stale = [METRICS, ERROR]
    if force or old.config_hash != config["config_hash"]:
        remove_checkpoint(work)
        shutil.rmtree(work / TENSORBOARD, ignore_errors=True)
    for name in stale:
        (work / name).unlink(missing_ok=True)
    write_json(work / CONFIG, config)


def promote(work: Path, run_dir: Path) -> None:
    """A finished attempt in <run>.next/ takes the run folder's place; the result it replaces goes
    only after the new one is in place (a kill in between leaves both, and the next study promotes)."""
    if work == run_dir:
        return
    old = run_dir.with_name(run_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(work, run_dir)
    shutil.rmtree(old, ignore_errors=True)


def published_run(study_dir: Path, run_dir: Path, digest: str) -> Run | None:
    """The published copy of this very run (results/reference/<study>/<run>), if there is one."""
    copy = REFERENCE_DIR / Path(study_dir).name / Path(run_dir).name
    if copy.resolve() == Path(run_dir).resolve():
        return None
    return finished_with(copy, digest)


def adopt(published: Path, run_dir: Path) -> None:
    """A published run becomes this study's finished run: its files copied in (metrics.json last),
    beside a finished run of another configuration until complete (as a new attempt would be)."""
    work = attempt_dir(run_dir)
    work.mkdir(parents=True, exist_ok=True)
    remove_checkpoint(work)
    for name in (ERROR, METRICS):
        (work / name).unlink(missing_ok=True)
    for name in PUBLISHED_RUN_FILES:
        if (published / name).is_file():
            shutil.copyfile(published / name, work / name)
    references = published.parent / REFERENCES
    if references.is_file() and not (run_dir.parent / REFERENCES).is_file():
        shutil.copyfile(references, run_dir.parent / REFERENCES)
    promote(work, run_dir)


def recover(run_dir: Path) -> None:
    """Finish a promotion a kill interrupted: a finished <run>.next/ whose run folder is gone or older."""
    work, old = next_dir(run_dir), run_dir.with_name(run_dir.name + ".old")
    if read_run(work).finished and not run_dir.exists():
        os.replace(work, run_dir)
    if old.exists() and run_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists():
        os.replace(old, run_dir)


# ----------------------------------------------------------------------------------- checkpoints
def write_checkpoint(runner, run_dir: Path, config_hash: str | None, loop: object) -> None:
    """After every epoch: the runner's state first, then the json that points at it, each atomically,
    so a kill at any moment leaves the previous epoch's checkpoint or this one, never half of one."""
    file = Path(runner.save_checkpoint(run_dir / CHECKPOINT)).name
    write_json(run_dir / f"{CHECKPOINT}.json", {"config_hash": config_hash, "file": file, "loop": asdict(loop)})


def read_checkpoint(run_dir: Path, config_hash: str | None) -> dict | None:
    """The last epoch's checkpoint of this very configuration, or None (none, or another config's)."""
    try:
        ckpt = _read_json(run_dir / f"{CHECKPOINT}.json", CHECKPOINT_SCHEMA)
    except Unreadable:
        return None
    if ckpt["config_hash"] != config_hash or not (run_dir / str(ckpt["file"])).exists():
        return None
    return ckpt


def remove_checkpoint(run_dir: Path) -> None:
    for f in [*run_dir.glob(f"{CHECKPOINT}.*"), *run_dir.glob(f"{EPOCH_WEIGHTS}*")]:
        f.unlink(missing_ok=True)


def attention_figure(run_dir: Path) -> str:
    """The report's attention figure of a run, named after its folder."""
    return f"attention_{Path(run_dir).name}.png"


