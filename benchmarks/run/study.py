"""`python -m benchmarks run`: one study = several plugins under one budget, each run in its own
subprocess (benchmarks/run/worker/), then one report.

A failing run becomes a failed row carrying its error while the others go on; Ctrl-C stops the
study, keeps the finished runs and writes the report of what finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.run.executors import outcome, run_local, run_on_ray
from benchmarks.run.plan import StudyOptions, check, default_jobs, plan_jobs
from benchmarks.store import rundir, study_folder
from shared_data.dataset import DEFAULT_DATASET, load_dataset, prepare_hint, resolve_dataset_path
from shared_data.dataset_format import dataset_identity
from shared_data.errors import UserError


def ensure_dataset(opts: StudyOptions, log=print) -> str:
    """Prepare the default dataset if missing, check the requested one; returns its identity
    (shared_data.dataset.dataset_identity: the same on every machine that prepared the same data)."""
    path = resolve_dataset_path(opts.dataset, opts.data_dir)
    if not (path / "manifest.json").exists():
        if opts.dataset != DEFAULT_DATASET:
            load_dataset(opts.dataset, opts.data_dir)  # raises with the prepare command
        from benchmarks.data.options import PrepareOptions
        from benchmarks.data.prepare import prepare

        log(f"the default dataset is missing: preparing it first ({path})")
        prepare(PrepareOptions(data_dir=opts.data_dir), log=log)
    ds = load_dataset(opts.dataset, opts.data_dir, verify=opts.verify)
    if opts.extractor is None:
        if ds.default_extractor is None:
            raise UserError(f"{ds.path} has no features; add some with: "
                            f"{prepare_hint(ds.path.name, ds.hint_dir, ds.manifest, 'grid')}")
        opts.extractor = ds.default_extractor
    ds.features(opts.extractor)  # missing extractor / corrupt file: fail before any run starts
    for v in opts.variants:
        if v.plugin.plugin.needs_spatial and ds.manifest["features"][opts.extractor].get("spatial_shape") is None:
            raise UserError(f"{v.plugin} needs spatial features, and '{opts.extractor}' has none; use an extractor "
                            "with a grid (--extractor grid, resnet101 or regnetx400mf)")
    return dataset_identity(ds.manifest)


@dataclass
class StudyResult:
    report: Path
    rows: list[dict]
    interrupted: KeyboardInterrupt | None = None  # Ctrl-C or SIGTERM (cli.Terminated) stopped it


def run_study(opts: StudyOptions, log=print) -> StudyResult:
    check(opts)
    if opts.jobs is None:
        opts.jobs = default_jobs(opts)
    folder = study_folder.StudyFolder(opts.results_dir, opts.study)
    dataset_id = ensure_dataset(opts, log)
    folder.create()
    with folder.lock():
        jobs = plan_jobs(opts, dataset_id, folder.path)
        rundir.check_real([j.run_dir for j in jobs])
        for job in jobs:
            rundir.recover(job.run_dir)
        folder.check_space(sum(opts.force or rundir.finished_with(j.run_dir, j.config["config_hash"]) is None
                               for j in jobs))
        folder.write_plan([{"folder": j.run_dir.name, **j.config} for j in jobs])
        rows, pending = [], []
        for job in jobs:
            digest = job.config["config_hash"]
            done = None if opts.force else rundir.finished_with(job.run_dir, digest)
            published = None if opts.force or done else rundir.published_run(folder.path, job.run_dir, digest)
            if published is not None:
                rundir.adopt(published.dir, job.run_dir)
                log(f"[{job.number}/{len(jobs)}] {job.who}: published in {published.dir.parent} with the same "
                    f"configuration ({digest}), taken from there (--force redoes it)")
                rows.append({"plugin": job.label, "status": published.metrics["status"], "wall_s": 0.0,
                             "reused": True})
                continue
            if done is not None:
                log(f"[{job.number}/{len(jobs)}] {job.who}: finished earlier with the same configuration "
                    f"({job.config['config_hash']}), reused (--force redoes it)")
                rows.append({"plugin": job.label, "status": done.metrics["status"], "wall_s": 0.0, "reused": True})
                continue
            pending.append(job)
        for job in pending:
            job.work_dir = rundir.attempt_dir(job.run_dir)
            rundir.begin_attempt(job.work_dir, job.config, opts.force)
        interrupted = None
        try:
            run = run_on_ray if opts.executor == "ray" else run_local
            for job, code, wall in run(pending, opts, len(jobs), log):
                rows.append(outcome(job, code, wall, log))
        except KeyboardInterrupt as e:
            interrupted = e
            log("interrupted: writing the report of the runs that finished")
        from benchmarks.report.document import write_report

        return StudyResult(write_report(folder.path), rows, interrupted)


