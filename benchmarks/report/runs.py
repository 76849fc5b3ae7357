"""The study's runs as the report reads them: finished ones with their captions and per-image
scores, unfinished ones with their state, and stale ones (other configurations) kept apart."""
from __future__ import annotations

from pathlib import Path

from benchmarks.store import rundir, study_folder
from benchmarks.store.schemas import PER_IMAGE_SCHEMA


def study_runs(study_dir: Path) -> tuple[list[dict], list[dict], list[rundir.Run]]:
    """(finished runs of the study's plan, with their captions and per-image scores; the plan's other
    runs, each with its state; finished runs of other configurations: stale, listed, never tabled)."""
    current, stale = study_folder.StudyFolder.at(study_dir).runs()
    done, other = [], []
    for run in current:
        row = {"dir": run.dir, "config": run.config, "metrics": run.metrics, "history": run.history,
               "state": run.state()}
        if run.finished:
            try:  # the per-image files the tables and samples need, read once
                captions = rundir.read_captions(run.dir)
                row["per_image"] = rundir.read_json(run.dir / rundir.PER_IMAGE, PER_IMAGE_SCHEMA)
                row["captions"] = captions  # last: a row with captions is a row of the tables
            except rundir.Unreadable as e:
                row["state"] = f"unreadable: {e}"
        (done if "captions" in row else other).append(row)
    return done, other, stale
