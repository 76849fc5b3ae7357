"""`python -m benchmarks run`: one study = several plugins under one budget, each run in its own
subprocess (benchmarks/run/worker.py), then one report.

A failing run becomes a failed row carrying its error while the others go on; Ctrl-C stops the
study, keeps the finished runs and writes the report of what finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.run import preflight
from benchmarks.run.settings import RunSettings, describe
from benchmarks.run.worker.state import DIVERGED_EXIT, PROGRESS
from benchmarks.scoring.stats import EXPECTATIONS
from benchmarks.store import rundir
from plugins.registry import DEFAULT_KERAS_BACKEND, KERAS_BACKENDS, PluginRef
from shared_data.dataset import DEFAULT_DATASET, dataset_identity, load_dataset, prepare_hint, resolve_dataset_path
from shared_data.errors import UserError


@dataclass
class Variant:
    """One configuration of a study: a plugin, hyperparameter overrides and run-setting changes.
    `run` makes one per plugin (label = plugin name); `ablate` makes a base and its variations; a study
    file lists them with their hypotheses."""

    label: str
    plugin: PluginRef
    hparams: dict = field(default_factory=dict)  # checked against the plugin's declarations
    settings: dict = field(default_factory=dict)  # RunSettings keys a variant may change (variant_keys())
    note: str = ""  # what the variant tests, shown in the report (a study file's hypothesis)
    expect: str | None = None  # the hypothesis' direction (stats.EXPECTATIONS) against the base, for its verdict


@dataclass
class StudyOptions:
    """A study: its variants, the run settings they share, and where and how they run."""

    variants: list[Variant]
    settings: RunSettings = field(default_factory=RunSettings)
    study: str = "default"
    results_dir: Path = Path("results")
    dataset: str = DEFAULT_DATASET
    data_dir: Path | None = None
    extractor: str | None = None  # None: the dataset's first extractor
    verify: bool = True
    force: bool = False  # redo runs that already finished with the same configuration
    executor: str = "local"  # local: subprocesses on this machine; ray: tasks on a Ray cluster
    jobs: int | None = None  # runs at a time (local; None: default_jobs); with ray, the share of cores a run asks for
    threads: int | None = None  # CPU threads per run; None: all cores for one run at a time, else cores // jobs
    address: str | None = None  # Ray cluster address; None starts a local Ray instance for the study
    tensorboard: bool = False  # TensorBoard scalars in every run folder


def plugin_variants(refs: list[PluginRef], overrides: dict[str, dict]) -> list[Variant]:
    """`run`'s variants: one per plugin, labelled by it, with its --set overrides."""
    return [Variant(str(ref), ref, dict(overrides.get(str(ref), overrides.get(ref.name, {})))) for ref in refs]


AA_LABEL = "aa-control"


def with_aa_control(variants: list[Variant], settings: RunSettings) -> list[Variant]:
    """The variants and an A/A row: the first (the base) again with seeds disjoint from its own. Both
    rows train the same configuration, so the test comparing them should find nothing: how often it
    does is its false-positive rate."""
    base = variants[0]
    first = int(base.settings.get("seed", settings.seed)) + settings.seeds
    aa = Variant(AA_LABEL, base.plugin, dict(base.hparams), {**base.settings, "seed": first},
                 f"A/A control: {base.label} again with seeds {first}-{first + settings.seeds - 1}; should not differ")
    return [*variants, aa]


STUDIES_DIR = Path(__file__).parent / "studies"


@dataclass
class StudyFile:
    """A study file: its rows, and how the study runs unless the command line says otherwise."""

    name: str
    variants: list[Variant]  # [base, *variants]
    settings: dict = field(default_factory=dict)  # study-wide RunSettings (a budget, seeds, patience)
    aa_control: bool = False  # add the A/A row (as --aa-control does)


STUDY_FILE_BYTES = 256 << 10  # a study file is a page of rows; the shipped ones are under 4 KiB
STUDY_FILE_DEPTH = 8  # file > variants > row > settings > value is 5: much deeper is not a study file
NOTE_MAX = 500  # characters of a row's note or hypothesis (a sentence, printed in the report)


def _depth(value: object) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return 1 + max((_depth(c) for c in children), default=0)


def _one_line_text(value: object) -> bool:
    return isinstance(value, str) and value.isprintable() and len(value) <= NOTE_MAX


def load_study_file(name_or_path: str) -> StudyFile:
    """A shipped study (benchmarks/run/studies/NAME.json) or a file, every row checked (plugin,
    hyperparameters, settings) with the file and row in the message."""
    path = Path(name_or_path)
    if not path.suffix:
        path = STUDIES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.json")))
        raise UserError(f"no study '{name_or_path}': give a .json study file or one of: {shipped}")
    try:
        if path.stat().st_size > STUDY_FILE_BYTES:
            raise TypeError(f"over {STUDY_FILE_BYTES >> 10} KiB")
        spec = json.loads(path.read_text())
        if _depth(spec) > STUDY_FILE_DEPTH:
            raise TypeError(f"nested deeper than {STUDY_FILE_DEPTH} levels")
        rows = [spec["base"], *spec["variants"]]
        if not isinstance(spec.get("settings", {}), dict) or not isinstance(spec.get("aa_control", False), bool):
            raise TypeError("'settings' is not an object or 'aa_control' not true/false")
        if not all(isinstance(r, dict) and isinstance(r["label"], str) and isinstance(r["plugin"], str)
                   and isinstance(r.get("hparams", {}), dict) and isinstance(r.get("settings", {}), dict)
                   for r in rows):
            raise TypeError("a row is not an object with text label and plugin")
    except RecursionError:
        raise UserError(f"{path}: not a study file (nested deeper than {STUDY_FILE_DEPTH} levels)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a study file ({e}); it needs 'base' and 'variants' with label and plugin") \
            from None
    variants = []
    for r in rows:
        r["label"] = rundir.check_label(r["label"], f"{path.name}: ")
        where = f"{path.name}, row '{r['label']}'"
        for key in ("note", "hypothesis"):
            if not _one_line_text(r.get(key, "")):
                raise UserError(f"{where}: '{key}' is one line of printable text of at most {NOTE_MAX} characters")
        ref = _in(where, PluginRef.parse, r["plugin"])
        hparams = ref.plugin.check_hparams(r.get("hparams", {}), f"{where}: ")
        RunSettings().changed(r.get("settings", {}), f"{where}: settings")  # checked now, applied per study
        expect = r.get("expect")
        if expect is not None and expect not in EXPECTATIONS:
            raise UserError(f"{where}: expect {expect!r}: use one of {', '.join(EXPECTATIONS)} (how the row should "
                            "score against the base if its hypothesis holds), or leave it out")
        variants.append(Variant(r["label"], ref, hparams, dict(r.get("settings", {})), r.get("hypothesis", ""),
                                expect))
    given = RunSettings().changed(spec.get("settings", {}), f"{path.name}: settings", per_variant=False)
    return StudyFile(path.stem, variants, {k: getattr(given, k) for k in spec.get("settings", {})},
                     spec.get("aa_control", False))


def _in(where: str, fn, *args):
    try:
        return fn(*args)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def parse_overrides(items: list[str], refs: list[PluginRef]) -> dict[str, dict]:
    """`plugin.key=value` -> {plugin: {key: value}}, each value checked against the plugin's declaration."""
    by_name = {str(r): r for r in refs} | {r.name: r for r in refs}
    out: dict[str, dict] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        plugin, dot, hp = key.partition(".")
        if not eq or not dot or not hp:
            raise UserError(f"--set {item!r}: write PLUGIN.KEY=VALUE, e.g. torch_merge.dropout=0.5")
        if plugin not in by_name:
            raise UserError(f"--set {item!r}: {plugin} is not among --plugins ({', '.join(map(str, refs))})")
        out.setdefault(plugin, {}).update(by_name[plugin].plugin.check_hparams({hp: raw}, "--set "))
    return out


EXECUTORS = ("local", "ray")
MAX_RUNS = 5000  # seed000 is 65 runs (about 6 h on 2 cores): thousands more is a typo, not a plan


def check(opts: StudyOptions) -> None:
    """Everything about a study that can be checked without the dataset, before anything is written."""
    import importlib.util

    rundir.check_name(opts.study)
    if (opts.jobs is not None and opts.jobs < 1) or (opts.threads is not None and opts.threads < 1):
        raise UserError(f"--jobs and --threads must be positive, got {opts.jobs} and {opts.threads}")
    cores = os.cpu_count() or 1
    if opts.executor == "local" and opts.threads is not None and opts.threads > cores:
        raise UserError(f"--threads {opts.threads}: this machine has {cores} cores; give at most {cores}")
    if opts.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard")
    if opts.executor not in EXECUTORS:
        raise UserError(f"unknown executor '{opts.executor}'; use one of {', '.join(EXECUTORS)}")
    if opts.address and opts.executor != "ray":
        raise UserError("--address is the Ray cluster's: use it with --executor ray")
    if opts.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise UserError("--executor ray needs Ray: pip install 'ray>=2.9' (or use --executor local --jobs N)")
    if not opts.variants:
        raise UserError("the study has no configurations to run")
    runs = len(opts.variants) * opts.settings.seeds
    if runs > MAX_RUNS:
        raise UserError(f"the study asks for {runs:,} runs ({len(opts.variants)} configurations x "
                        f"{opts.settings.seeds} seeds), more than {MAX_RUNS:,}: split it into several studies")
    if opts.settings.meteor and opts.executor == "local":
        from benchmarks.scoring.metrics import java_missing

        if java_missing():
            raise UserError(java_missing())
    for v in opts.variants:
        v.label = rundir.check_label(v.label)
    labels = [v.label for v in opts.variants]
    for v in opts.variants:
        clash = [w for w in labels if rundir.slug(w) == rundir.slug(v.label)]
        if len(clash) > 1:
            also = f" (as the folder name {rundir.slug(v.label)}, with {' and '.join(clash)})" \
                if len(set(clash)) > 1 else ""
            raise UserError(f"'{v.label}' appears twice in the study{also}; each configuration needs its own label")
        v.plugin.plugin.check_hparams(v.hparams, f"{v.label}: ")
        opts.settings.changed(v.settings, f"{v.label}: settings")
    env = os.environ.get("KERAS_BACKEND")
    for v in opts.variants:  # the worker runs a Keras plugin on its reference's engine, never on $KERAS_BACKEND's
        engine = v.plugin.keras_backend or DEFAULT_KERAS_BACKEND
        if v.plugin.plugin.framework == "keras" and env and env != engine:
            other = f"write {v.plugin.name}@{env} to run it on {env}, or " if env in KERAS_BACKENDS else ""
            raise UserError(f"KERAS_BACKEND={env} is set, but {v.plugin} runs on {engine}: {other}unset KERAS_BACKEND")
    by_precision: dict[str, list] = {}
    for v in opts.variants:
        precision = opts.settings.changed(v.settings, f"{v.label}: settings").precision
        by_precision.setdefault(precision, []).append((v.plugin, v.plugin.plugin.check_hparams(v.hparams)))
    for precision, plugins in by_precision.items():
        preflight.check_precision(plugins, precision)


RUN_MEMORY = 2 * 2**30  # bytes a run may take: the embedded dataset's runs peak at 1.2-1.4 GB RSS (README)


def default_jobs(opts: StudyOptions) -> int:
    """--jobs when it is not given. With Ray, 1 (each run asks for all of a node's CPUs). Here: one run
    per GPU where there are GPUs; on CPUs, one single-thread run per core, as many as memory holds at
    RUN_MEMORY each, when the study has at least two runs per slot: on a 2-core machine two one-thread
    runs side by side finish more runs an hour than one two-thread run (README, seed 000's first
    seed), but a study of a few runs of unequal length ends when its slowest run does, which a second
    thread nearly halves for Keras (the main job: keras_merge and torch_concat)."""
    if opts.executor == "ray":
        return 1
    runs = len(opts.variants) * opts.settings.seeds
    gpus = _local_gpus()
    if gpus:
        return max(1, min(len(gpus), runs))
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = RUN_MEMORY
    return max(1, min(os.cpu_count() or 1, memory // RUN_MEMORY, runs // 2))


def ensure_dataset(opts: StudyOptions, log=print) -> str:
    """Prepare the default dataset if missing, check the requested one; returns its identity
    (shared_data.dataset.dataset_identity: the same on every machine that prepared the same data)."""
    path = resolve_dataset_path(opts.dataset, opts.data_dir)
    if not (path / "manifest.json").exists():
        if opts.dataset != DEFAULT_DATASET:
            load_dataset(opts.dataset, opts.data_dir)  # raises with the prepare command
        from benchmarks.data.prepare import PrepareOptions, prepare

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


HASHED = ("plugin", "hparams", "settings", "extractor")


def config_hash(config: dict, dataset_id: str) -> str:
    """What identifies a run: everything that can change its numbers (plugin, hyperparameters, run
    settings with its seed, features) and the dataset (its identity). Where the data lives, labels,
    thread counts, logging and the machine do not: a machine is recorded with each run instead."""
    blob = json.dumps({k: config[k] for k in HASHED}, sort_keys=True) + dataset_id
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Job:
    """One run of a study: a variant with a seed, its folder, where its attempt trains, its config."""

    number: int  # 1-based position in the study, for the log
    who: str  # the variant's label (and seed when there are several)
    run_dir: Path
    config: dict
    work_dir: Path | None = None  # run_dir, or run_dir.next when a finished result is there

    @property
    def label(self) -> str:
        return self.config["label"]


@dataclass
class StudyResult:
    report: Path
    rows: list[dict]
    interrupted: KeyboardInterrupt | None = None  # Ctrl-C or SIGTERM (cli.Terminated) stopped it


def run_study(opts: StudyOptions, log=print) -> StudyResult:
    check(opts)
    if opts.jobs is None:
        opts.jobs = default_jobs(opts)
    folder = rundir.StudyFolder(opts.results_dir, opts.study)
    dataset_id = ensure_dataset(opts, log)
    folder.create()
    with folder.lock():
        jobs = _plan(opts, dataset_id, folder.path)
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
            run = _run_on_ray if opts.executor == "ray" else _run_local
            for job, code, wall in run(pending, opts, len(jobs), log):
                rows.append(_outcome(job, code, wall, log))
        except KeyboardInterrupt as e:
            interrupted = e
            log("interrupted: writing the report of the runs that finished")
        from benchmarks.report.document import write_report

        return StudyResult(write_report(folder.path), rows, interrupted)


def _plan(opts: StudyOptions, dataset_id: str, study_dir: Path) -> list[Job]:
    threads = opts.threads or (None if opts.jobs == 1 else max(1, (os.cpu_count() or 1) // opts.jobs))
    # absolute: a run may start in another folder (a Ray worker's)
    data_dir = str(Path(opts.data_dir).resolve()) if opts.data_dir else None
    dataset_path = str(resolve_dataset_path(opts.dataset, opts.data_dir).resolve())
    jobs: list[Job] = []
    pairs = []
    for order, v in enumerate(opts.variants):
        settings = opts.settings.changed(v.settings, f"{v.label}: settings")
        pairs += [(k, order, v, settings, seed) for k, seed in enumerate(settings.seed_list())]
    # seed by seed: every row's k-th seed before any row's (k+1)-th, so that a study stopped part-way (a
    # sitting's end) holds whole seeds, each a block of comparable runs from one machine
    pairs.sort(key=lambda p: (p[0], p[1]))
    for i, (_, order, v, settings, seed) in enumerate(pairs, 1):
        config = {"label": v.label, "note": v.note, "expect": v.expect, "order": order, "plugin": str(v.plugin),
                  "hparams": {**v.plugin.plugin.defaults, **v.hparams}, "settings": settings.for_run(seed),
                  "dataset": opts.dataset, "extractor": opts.extractor, "data_dir": data_dir,
                  "dataset_path": dataset_path, "dataset_identity": dataset_id,
                  # ensure_dataset has just checked the checksums here; a Ray node checks its own copy
                  "verify": opts.verify and opts.executor == "ray",
                  "threads": threads, "tensorboard": opts.tensorboard}
        config["config_hash"] = config_hash(config, dataset_id)
        who = v.label if opts.settings.seeds == 1 else f"{v.label} (seed {seed})"
        jobs.append(Job(i, who, rundir.run_folder(study_dir, v.label, seed), config))
    return jobs


# ------------------------------------------------------------------------------------- executors
def _resumes(job: Job) -> bool:
    return rundir.read_checkpoint(job.work_dir, job.config["config_hash"]) is not None


def _start_line(job: Job, total: int, where: str = "") -> str:
    resumed = " resuming from its last epoch checkpoint," if _resumes(job) and "Ray" not in where else ""
    beside = ", beside the finished run of another configuration (kept until this one finishes)" \
        if job.work_dir != job.run_dir else ""
    budget = describe(RunSettings.from_run(job.config["settings"]).budget())
    return (f"[{job.number}/{total}] {job.who}: training ({budget}){where}{beside},{resumed} "
            f"log in {job.work_dir / rundir.LOG}")


def _run_local(pending: list[Job], opts: StudyOptions, total: int, log):
    """Subprocesses on this machine: one at a time with progress bars, or `opts.jobs` at once, each
    with its share of the cores (threads pinned) and, where there are GPUs, one GPU per slot."""
    if opts.jobs == 1:
        for job in pending:
            log(_start_line(job, total))
            t0 = time.perf_counter()
            code = _spawn(job.work_dir, log)
            yield job, code, time.perf_counter() - t0
        return

    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor, as_completed

    gpus = _local_gpus()
    slots: queue.Queue = queue.Queue()
    for k in range(opts.jobs):
        slots.put(k)
    procs: set[subprocess.Popen] = set()
    lock, stop = threading.Lock(), threading.Event()

    def started(proc: subprocess.Popen) -> None:
        with lock:  # with the stop check: a run starting while Ctrl-C is handled is stopped too
            procs.add(proc)
            if stop.is_set():
                proc.terminate()

    def one(job: Job) -> tuple[Job, int, float]:
        slot = slots.get()
        try:
            env = {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} if gpus else {}
            where = f" in slot {slot}" + (f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else "")
            with lock:
                log(_start_line(job, total, where))
            t0 = time.perf_counter()
            code = _spawn(job.work_dir, log, env=env, prefix=f"{job.who}:", started=started)
            return job, code, time.perf_counter() - t0
        finally:
            slots.put(slot)

    pool = ThreadPoolExecutor(opts.jobs)
    futures = [pool.submit(one, job) for job in pending]
    try:
        for f in as_completed(futures):
            yield f.result()
    except KeyboardInterrupt:  # stop the runs in flight and the queued ones; finished folders stay
        for f in futures:
            f.cancel()
        with lock:
            stop.set()
            for p in procs:
                p.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _local_gpus() -> list[str]:
    """GPU ids this study may hand out: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists.
    Asked without importing a framework into the study process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def _run_on_ray(pending: list[Job], opts: StudyOptions, total: int, log):
    """Each run a Ray task asking for its threads' CPUs (and a GPU when the cluster has any). The task
    runs the worker in a temporary folder on its node and returns the run folder's files, which land
    in this study's results folder exactly as with the local executor. Every node needs this package
    installed and the dataset prepared (the config hash pins the dataset's manifest)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=opts.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot start or reach Ray{f' at {opts.address}' if opts.address else ''}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    refs: dict = {}
    try:
        res = ray.cluster_resources()
        # a task runs on one node: never ask for more CPUs than the largest node has
        largest = max((n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")), default=1)
        cpus = opts.threads or max(1, int(min(res.get("CPU", 1) // opts.jobs, largest)))
        task = ray.remote(_ray_run).options(num_cpus=cpus, num_gpus=1 if res.get("GPU", 0) >= 1 else 0,
                                            max_retries=0)
        for job in pending:
            job.config["threads"] = cpus
            rundir.write_json(job.work_dir / rundir.CONFIG, job.config)
            log(_start_line(job, total, f" as a Ray task ({cpus} CPUs)"))
            refs[task.remote(job.config)] = job
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            job = refs.pop(done[0])
            try:
                code, files, wall = ray.get(done[0])
            except ray.exceptions.RayError as e:  # the task itself died (node lost, out of memory): a failed row
                message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                code, files, wall = 1, {rundir.LOG: f"error: Ray task failed: {message}\n".encode()}, 0.0
            # metrics.json last: until it is there, the folder is an unfinished run
            for rel, data in sorted(files.items(), key=lambda kv: kv[0] == rundir.METRICS):
                (job.work_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (job.work_dir / rel).write_bytes(data)
            yield job, code, wall
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _ray_run(config: dict) -> tuple[int, dict[str, bytes], float]:
    """On a Ray worker: one run in a temporary folder; returns (exit code, {relative path: bytes}, wall s)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="capbench-run-") as tmp:
        run_dir = Path(tmp)
        rundir.write_json(run_dir / rundir.CONFIG, config)
        t0 = time.perf_counter()
        code = _spawn(run_dir, log=lambda *_: None, prefix="")
        wall = time.perf_counter() - t0
        files = {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*")
                 if p.is_file() and p.name != rundir.CONFIG}
    return code, files, wall


def _spawn(run_dir: Path, log, env: dict | None = None, prefix: str | None = None, started=None) -> int:
    """The worker as a subprocess. prefix None: progress bars and short epoch lines (one run at a
    time); a prefix: no bars, epoch lines prefixed (runs side by side)."""
    # the worker's parent PID: it exits when the study process dies (benchmarks/run/worker.py)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CAPBENCH_STUDY_PID": str(os.getpid()),
           **(env or {})}
    config = rundir.read_json(run_dir / rundir.CONFIG)
    if config.get("threads"):  # for the libraries' own pools too, before they start (the worker pins the rest)
        n = str(config["threads"])
        env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n)
    resumes = rundir.read_checkpoint(run_dir, config.get("config_hash")) is not None
    with open(run_dir / rundir.LOG, "a" if resumes else "w", buffering=1) as logf:  # line-buffered: tail -f
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.run.worker", str(run_dir)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        if started is not None:
            started(proc)
        try:
            _follow(proc, logf, log, prefix)
        except KeyboardInterrupt:  # stop the run in flight too; its folder stays, marked unfinished
            stop_worker(proc)
            raise
        return proc.wait()


STOP_WAIT_S = 30  # how long a stopped worker gets to exit before it is killed


def stop_worker(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_WAIT_S: a stop never hangs on a worker."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _follow(proc: subprocess.Popen, logf, log, prefix: str | None = None) -> None:
    """Worker output -> the run's log, per-epoch lines echoed short, progress lines -> a progress bar."""
    from tqdm import tqdm

    bar, phase, shown = None, None, 0
    for line in proc.stdout:
        if line.startswith(PROGRESS):  # a bar on a terminal (none when not a tty), nothing in the log
            if prefix is not None:
                continue
            p = json.loads(line[len(PROGRESS):])
            if p["phase"] != phase:
                if bar is not None:
                    bar.close()
                phase, shown = p["phase"], 0
                bar = tqdm(total=p["total"], desc=f"    {phase}", leave=False, disable=None)
            bar.update(p["done"] - shown)
            shown = p["done"]
            continue
        logf.write(line)
        if line.startswith("{"):
            try:
                row = json.loads(line)
                if bar is not None:
                    bar.close()
                    bar, phase = None, None
                log(f"    {prefix + ' ' if prefix else ''}epoch {row['epoch']}: train loss {row['train_loss']:.3f}, "
                    f"val loss {row['val_loss']:.3f}, val BLEU-4 {row['val_bleu4']:.3f}")
            except (json.JSONDecodeError, KeyError):
                pass
    if bar is not None:
        bar.close()


def _outcome(job: Job, code: int, wall: float, log) -> dict:
    """A finished worker's row; a finished attempt beside an older result replaces it now."""
    name, work = job.label, job.work_dir
    run = rundir.read_run(work)
    if code == 0 and run.finished:
        rundir.promote(work, job.run_dir)
        m = run.metrics
        q = m["quality"]
        log(f"    {name}: done in {wall:.0f}s: test BLEU-4 {q['BLEU-4']:.3f}, CIDEr {q['CIDEr']:.3f}"
            + ("" if m["status"] == "ok" else f" ({m['status']})"))
        return {"plugin": name, "status": m["status"], "wall_s": wall}
    try:
        lines = [ln for ln in (work / rundir.LOG).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    error = next((ln for ln in reversed(lines) if ln.startswith("error:")), None)
    if error is None and code < 0:  # killed: its last line is whatever it printed before, not a reason
        name = signal.Signals(-code).name if -code in {s.value for s in signal.Signals} else f"signal {-code}"
        error = f"error: the worker was killed by {name}" + (" (out of memory, or kill -9)"
                                                             if -code == signal.SIGKILL else "")
    error = error or (lines[-1] if lines else "no output")
    if code == 0:  # exited cleanly without a usable metrics.json
        error = f"error: {run.problem or 'the worker wrote no metrics.json'}"
    rundir.write_text(work / rundir.ERROR, error + "\n")
    status = "diverged" if code == DIVERGED_EXIT else "failed"
    kept = " (the finished run of the earlier configuration is kept)" if work != job.run_dir else ""
    log(f"    {name}: {status.upper()} ({error}){kept}; the study goes on")
    return {"plugin": name, "status": status, "error": error, "wall_s": wall}
