"""`python -m benchmarks publish results/<study>`: a study's finished runs as a reference result that
outlives the machine: copied (no weights, no checkpoints) into results/reference/<study>/, which git
tracks, so that `report`, `calibrate` and `study` (resuming: a published run is not trained again)
work on it from a fresh clone.

A long study is finished over several sittings or machines: run it, publish, commit; on the next
machine the same `study` command takes the published runs as finished and trains the rest. Runs are
published once and never replaced: a publication only grows. The test references, the same for every
run, are stored once per study (references.json) instead of in every run's captions.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

from benchmarks.store import rundir, study_folder
from shared_data.errors import UserError

SIZE_LIMIT_MB = 30  # a reference lives in git: every clone carries it


def publish(study_dir: Path, target: Path | None = None, log=print) -> Path:
    """Copy the study's finished runs that are not published yet into `target` (default
    results/reference/<study>), then write its report there; returns the target."""
    study_dir = Path(study_dir)
    folder = study_folder.StudyFolder.at(study_dir)
    if not (study_dir / rundir.PLAN).is_file() or folder.plan() is None:
        raise UserError(f"{study_dir} is not a study folder (no readable {rundir.PLAN}); publish a folder that "
                        "a study command wrote, e.g. results/seed000")
    target = Path(target) if target is not None else rundir.REFERENCE_DIR / study_dir.name
    if target.resolve() == study_dir.resolve():
        raise UserError(f"{study_dir} is already the published copy; publish the study's working folder "
                        f"(results/{study_dir.name}) into it")
    _check_target(target, study_dir.name)
    # no lock: a study may go on while its finished runs are published (a run is finished once its
    # metrics.json, written last and atomically, is there; runs in flight are left for the next publish)
    current, _ = folder.runs()
    finished = [r for r in current if r.finished]
    if not finished:
        raise UserError(f"{study_dir} has no finished run to publish yet ({len(current)} planned); run the study "
                        "first")
    references = _references(finished)
    new, kept = [], 0
    for run in finished:
        out = target / run.dir.name
        published = rundir.read_run(out)
        if published.finished and published.config_hash == run.config_hash:
            kept += 1
            continue
        if published.config is not None:
            raise UserError(f"{out} holds another configuration ({published.config_hash}) than {run.dir} "
                            f"({run.config_hash}); published runs are never replaced: publish with --to "
                            "a new folder")
        new.append(run)
    target.mkdir(parents=True, exist_ok=True)
    if references is not None:
        rundir.write_json(target / rundir.REFERENCES, references)
    for run in new:
        _copy_run(run, target / run.dir.name, strip_references=references is not None)
    for name in rundir.PUBLISHED_STUDY_FILES:
        if name != rundir.REPORT and (study_dir / name).is_file():
            shutil.copyfile(study_dir / name, target / name)
    rundir.write_json(target / rundir.PUBLISHED, {
        "study": study_dir.name, "source": str(study_dir.resolve()),
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "runs": sum(1 for p in target.iterdir() if (p / rundir.METRICS).is_file()), "planned": len(current)})
    from benchmarks.report.document import write_report

    write_report(target)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 2**20
    unfinished = len(current) - len(finished)
    log(f"published {len(new)} new run(s) of {study_dir.name} into {target} ({kept} published earlier"
        + (f"; {unfinished} of {len(current)} planned not finished yet" if unfinished else "") + f"), {size:.1f} MB")
    if size > SIZE_LIMIT_MB:
        log(f"warning: {target} is {size:.1f} MB, over the {SIZE_LIMIT_MB} MB a reference should stay under "
            "(every clone carries it)")
    return target


def _check_target(target: Path, study: str) -> None:
    """A target is new, or an earlier publication of the same study; anything else is refused."""
    if not target.exists():
        return
    if not target.is_dir() or target.is_symlink():
        raise UserError(f"{target} exists and is not a folder; publish with --to a new folder")
    try:
        record = json.loads((target / rundir.PUBLISHED).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not isinstance(record, dict) or record.get("study") != study:
        raise UserError(f"{target} exists and is not a publication of {study}; publish with --to a new folder, or "
                        "move that one away")


def _references(runs: list[rundir.Run]) -> dict | None:
    """The test references, when every run scored against the same ones (else None: each run keeps its own)."""
    shared: dict = {}
    for run in runs:
        for image, entry in rundir.read_captions(run.dir).items():
            if shared.setdefault(image, entry["references"]) != entry["references"]:
                return None
    return shared


def _copy_run(run: rundir.Run, out: Path, strip_references: bool) -> None:
    """A run's published files into out/, built beside it and renamed into place: a publication
    interrupted half-way has no half-copied run."""
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in rundir.PUBLISHED_RUN_FILES:
        src = run.dir / name
        if not src.is_file():
            continue
        if name == rundir.CAPTIONS:
            captions = rundir.read_captions(run.dir)
            if strip_references:
                captions = {i: {"generated": c["generated"]} for i, c in captions.items()}
            _write_compact(tmp / name, captions)
        elif name == rundir.PER_IMAGE:  # the largest file of a run: the same numbers without indentation
            _write_compact(tmp / name, rundir.read_json(src))
        else:
            shutil.copyfile(src, tmp / name)
    os.replace(tmp, out)



def _write_compact(path: Path, data: dict) -> None:
    rundir.write_text(path, json.dumps(data, separators=(",", ":")))
