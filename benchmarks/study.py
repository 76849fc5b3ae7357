"""`python -m benchmarks run`: one study = several plugins under one budget, each run in its own
subprocess (benchmarks/worker.py), then one report.

A failing run becomes a failed row carrying its error while the others go on; Ctrl-C stops the
study, keeps the finished runs and writes the report of what finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from backends.common import EAGER_FP32, Execution, OptimConfig
from plugins.registry import get_plugin
from shared_data.dataset import DEFAULT_DATASET, load_dataset, resolve_dataset_path, sha256_file, write_json_atomic
from shared_data.errors import UserError

from .worker import DIVERGED_EXIT, PROGRESS, read_checkpoint

DEFAULT_EPOCHS = 3


# run-level keys a variant may change
SETTINGS = ("batch_size", "training", "lr", "adam_eps", "clip_norm", "precision", "compile")


@dataclass
class Variant:
    """One configuration of a study: a plugin, hyperparameter overrides and run-setting overrides.
    `run` makes one per plugin (label = plugin name); `ablate` makes a base and its variations."""

    label: str
    plugin: str  # registry name, optionally with @keras_backend
    hparams: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # keys from SETTINGS
    note: str = ""  # what the variant tests, shown in the report (a study file's hypothesis)


@dataclass
class StudyOptions:
    plugins: list[str]
    study: str = "default"
    results_dir: Path = Path("results")
    dataset: str = DEFAULT_DATASET
    data_dir: Path | None = None
    extractor: str | None = None  # None: the dataset's first extractor
    epochs: int | None = None
    steps: int | None = None
    time_budget: float | None = None
    batch_size: int = 64
    training: str = "sequence"
    seed: int = 0
    seeds: int = 1  # runs per plugin, with seeds seed, seed + 1, ...
    patience: int | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    overrides: dict[str, dict] = field(default_factory=dict)  # plugin -> {hparam: value}
    meteor: bool = True
    verify: bool = True
    force: bool = False  # redo runs that already finished with the same configuration
    beam_size: int = 3
    length_alpha: float = 0.6
    variants: list[Variant] | None = None  # None: one per plugin, with `overrides`
    executor: str = "local"  # local: subprocesses on this machine; ray: tasks on a Ray cluster
    jobs: int = 1  # runs at a time (local); with ray, the share of this machine's cores a run asks for
    threads: int | None = None  # CPU threads per run; None: all cores for one run at a time, else cores // jobs
    address: str | None = None  # Ray cluster address; None starts a local Ray instance for the study
    tensorboard: bool = False  # TensorBoard scalars in every run folder
    precision: str = "fp32"  # fp32, or bf16 mixed precision (backends.common.Execution)
    compile: bool = False  # torch.compile / Keras jit_compile=True

    def all_variants(self) -> list[Variant]:
        if self.variants is not None:
            return self.variants
        return [Variant(name, name, dict(self.overrides.get(name, {}))) for name in self.plugins]

    def budget(self) -> dict:
        for name, v in (("--epochs", self.epochs), ("--steps", self.steps), ("--time-budget", self.time_budget)):
            if v is not None and v <= 0:
                raise UserError(f"{name} must be positive, got {v}")
        if self.beam_size < 1:
            raise UserError(f"--beam-size must be positive, got {self.beam_size}")
        if self.seeds < 1:
            raise UserError(f"--seeds must be positive, got {self.seeds}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be positive, got {self.batch_size}")
        if self.jobs < 1 or (self.threads is not None and self.threads < 1):
            raise UserError(f"--jobs and --threads must be positive, got {self.jobs} and {self.threads}")
        epochs = self.epochs if (self.epochs or self.steps or self.time_budget) else DEFAULT_EPOCHS
        return {"epochs": epochs, "steps": self.steps, "time_budget": self.time_budget}


STUDIES_DIR = Path(__file__).parent / "studies"


def load_study_file(name_or_path: str) -> tuple[str, list[Variant]]:
    """A shipped study (benchmarks/studies/NAME.json) or a file: (study name, [base, *variants])."""
    path = Path(name_or_path)
    if not path.suffix:
        path = STUDIES_DIR / f"{name_or_path}.json"
    if not path.exists():
        shipped = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.json")))
        raise UserError(f"no study '{name_or_path}': give a .json study file or one of: {shipped}")
    try:
        spec = json.loads(path.read_text())
        rows = [spec["base"], *spec["variants"]]
        variants = [Variant(label=r["label"], plugin=r["plugin"], hparams=r.get("hparams", {}),
                            settings=r.get("settings", {}), note=r.get("hypothesis", "")) for r in rows]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a study file ({e}); it needs 'base' and 'variants' with label and plugin") \
            from None
    return path.stem, variants


def parse_overrides(items: list[str], plugins: list[str]) -> dict[str, dict]:
    """`plugin.key=value` -> {plugin: {key: value}}; values parsed as JSON when they can be."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        plugin, dot, hp = key.partition(".")
        if not eq or not dot or not hp:
            raise UserError(f"--set {item!r}: write PLUGIN.KEY=VALUE, e.g. torch_merge.dropout=0.5")
        if plugin not in plugins:
            raise UserError(f"--set {item!r}: {plugin} is not among --plugins ({', '.join(plugins)})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(plugin, {})[hp] = value
    return out


KERAS_BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}  # backend -> module it needs


def _check_keras_backend(name: str, framework: str) -> None:
    import importlib.util

    base, at, backend = name.partition("@")
    if not at:
        return
    if framework != "keras":
        raise UserError(f"{name}: '@backend' picks the Keras backend, and {base} is not a Keras plugin")
    if backend not in KERAS_BACKENDS:
        raise UserError(f"{name}: unknown Keras backend '{backend}'; use one of {', '.join(KERAS_BACKENDS)}")
    if importlib.util.find_spec(KERAS_BACKENDS[backend]) is None:
        raise UserError(f"{name}: the Keras backend '{backend}' needs the {KERAS_BACKENDS[backend]} package "
                        f"(pip install {KERAS_BACKENDS[backend]})")


def _check(opts: StudyOptions) -> dict:
    import importlib.util

    budget = opts.budget()
    if opts.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard")
    if opts.executor not in EXECUTORS:
        raise UserError(f"unknown executor '{opts.executor}'; use one of {', '.join(EXECUTORS)}")
    if opts.address and opts.executor != "ray":
        raise UserError("--address is the Ray cluster's: use it with --executor ray")
    if opts.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise UserError("--executor ray needs Ray: pip install 'ray>=2.9' (or use --executor local --jobs N)")
    for v in opts.all_variants():
        plugin = get_plugin(v.plugin.split("@", 1)[0])
        _check_keras_backend(v.plugin, plugin.framework)
        for hp in v.hparams:
            if hp not in plugin.defaults:
                raise UserError(f"{v.plugin} has no hyperparameter {hp}; it has: {', '.join(sorted(plugin.defaults))}")
        for key in v.settings:
            if key not in SETTINGS:
                raise UserError(f"{v.label}: unknown run setting {key}; settings are {', '.join(SETTINGS)}")
    return budget


def ensure_dataset(opts: StudyOptions, log=print) -> str:
    """Prepare the default dataset if missing, check the requested one; returns its manifest's sha256."""
    path = resolve_dataset_path(opts.dataset, opts.data_dir)
    if not (path / "manifest.json").exists():
        if opts.dataset != DEFAULT_DATASET:
            load_dataset(opts.dataset, opts.data_dir)  # raises with the prepare command
        from .prepare import PrepareOptions, prepare

        log(f"the default dataset is missing: preparing it first ({path})")
        prepare(PrepareOptions(data_dir=opts.data_dir), log=log)
    ds = load_dataset(opts.dataset, opts.data_dir, verify=opts.verify)
    if opts.extractor is None:
        if ds.default_extractor is None:
            raise UserError(f"{ds.path} has no features; add some with: python -m benchmarks prepare --extractor grid")
        opts.extractor = ds.default_extractor
    ds.features(opts.extractor)  # missing extractor / corrupt file: fail before any run starts
    return sha256_file(ds.path / "manifest.json")


# where the data lives, whether checksums were verified, how many threads ran it and whether it
# logged scalars do not change what a run measures (thread counts can move the last float bits)
NOT_HASHED = ("data_dir", "dataset_path", "verify", "config_hash", "threads", "tensorboard")


def config_hash(config: dict, manifest_sha: str) -> str:
    """What identifies a run: everything that can change its numbers, and the exact dataset.
    Where the data lives and whether checksums were verified do not."""
    keep = {k: v for k, v in config.items() if k not in NOT_HASHED}
    blob = json.dumps(keep, sort_keys=True) + manifest_sha
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finished_with(run_dir: Path, digest: str) -> dict | None:
    try:
        old = json.loads((run_dir / "config.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if old.get("config_hash") == digest else None


@dataclass
class Job:
    """One run of a study: a variant with a seed, its folder and its config.json."""

    number: int  # 1-based position in the study, for the log
    who: str  # the variant's label (and seed when there are several)
    run_dir: Path
    config: dict


def run_study(opts: StudyOptions, log=print) -> tuple[Path, list[dict]]:
    budget = _check(opts)
    manifest_sha = ensure_dataset(opts, log)
    study_dir = Path(opts.results_dir) / opts.study
    study_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    jobs = _plan(opts, budget, manifest_sha, study_dir)
    pending = []
    for job in jobs:
        done = None if opts.force else _finished_with(job.run_dir, job.config["config_hash"])
        if done is not None:
            log(f"[{job.number}/{len(jobs)}] {job.who}: finished earlier with the same configuration "
                f"({job.config['config_hash']}), reused (--force redoes it)")
            rows.append({"plugin": job.config["label"], "status": done["status"], "wall_s": 0.0, "reused": True})
            continue
        job.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.json", "error.txt", *(["checkpoint.json"] if opts.force else [])):
            (job.run_dir / stale).unlink(missing_ok=True)
        if opts.force:
            shutil.rmtree(job.run_dir / "tensorboard", ignore_errors=True)
        write_json_atomic(job.run_dir / "config.json", job.config)
        pending.append(job)
    try:
        run = _run_on_ray if opts.executor == "ray" else _run_local
        for job, code, wall in run(pending, opts, len(jobs), log):
            rows.append(_outcome(job.config["label"], job.run_dir, code, wall, log))
    except KeyboardInterrupt:
        log("interrupted: writing the report of the runs that finished")
    from .report import write_report

    report = write_report(study_dir)
    return report, rows


def _plan(opts: StudyOptions, budget: dict, manifest_sha: str, study_dir: Path) -> list[Job]:
    variants = opts.all_variants()
    pairs = [(k, v, seed) for k, v in enumerate(variants) for seed in range(opts.seed, opts.seed + opts.seeds)]
    threads = opts.threads or (None if opts.jobs == 1 else max(1, (os.cpu_count() or 1) // opts.jobs))
    jobs = []
    for i, (order, v, seed) in enumerate(pairs, 1):
        hparams = {**get_plugin(v.plugin.split("@", 1)[0]).defaults, **v.hparams}
        st = {"batch_size": opts.batch_size, "training": opts.training, "lr": opts.optim.lr,
              "adam_eps": opts.optim.eps, "clip_norm": opts.optim.clip_norm, "precision": opts.precision,
              "compile": opts.compile, **v.settings}
        optim = replace(opts.optim, lr=float(st["lr"]), eps=float(st["adam_eps"]), clip_norm=float(st["clip_norm"]))
        execution = _execution(v.label, st["precision"], st["compile"])
        config = {"label": v.label, "note": v.note, "order": order, "plugin": v.plugin, "hparams": hparams,
                  "seed": seed, "dataset": opts.dataset,
                  # absolute: a run may start in another folder (a Ray worker's)
                  "data_dir": str(Path(opts.data_dir).resolve()) if opts.data_dir else None,
                  "extractor": opts.extractor, "budget": budget, "batch_size": int(st["batch_size"]),
                  "training": st["training"], "optim": optim.to_json(),
                  "patience": opts.patience, "meteor": opts.meteor,
                  # ensure_dataset has just checked the checksums here; a Ray node checks its own copy
                  "verify": opts.verify and opts.executor == "ray",
                  "beam_size": opts.beam_size, "length_alpha": opts.length_alpha,
                  "threads": threads, "tensorboard": opts.tensorboard,
                  # where the dataset is, absolute: a run may start in another folder (a Ray worker's)
                  "dataset_path": str(resolve_dataset_path(opts.dataset, opts.data_dir).resolve())}
        if execution != EAGER_FP32:  # absent when default: the hashes of earlier fp32 eager runs stay valid
            config["execution"] = execution.to_json()
        config["config_hash"] = config_hash(config, manifest_sha)
        who = v.label if opts.seeds == 1 else f"{v.label} (seed {seed})"
        run_dir = study_dir / f"{_slug(v.label)}-s{seed}"
        if any(j.run_dir == run_dir for j in jobs):
            raise UserError(f"'{v.label}' appears twice in the study; each configuration needs its own label")
        jobs.append(Job(i, who, run_dir, config))
    return jobs


def _execution(label: str, precision, compile) -> Execution:
    try:
        return Execution(precision, compile)
    except ValueError as e:
        raise UserError(f"{label}: {e}") from None


def _slug(label: str) -> str:
    """A label as a folder name: readable, and nothing a shell or a filesystem trips over."""
    return "".join(c if c.isalnum() or c in "._=+-" else "-" for c in label)


def _budget_text(budget: dict) -> str:
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in budget.items() if v]
    return ", ".join(parts)


# ------------------------------------------------------------------------------------- executors
EXECUTORS = ("local", "ray")


def _resumes(job: Job) -> bool:
    return read_checkpoint(job.run_dir, job.config["config_hash"]) is not None


def _start_line(job: Job, total: int, where: str = "") -> str:
    resumed = " resuming from its last epoch checkpoint," if _resumes(job) and "Ray" not in where else ""
    return (f"[{job.number}/{total}] {job.who}: training ({_budget_text(job.config['budget'])}){where},{resumed} "
            f"log in {job.run_dir / 'stdout.log'}")


def _run_local(pending: list[Job], opts: StudyOptions, total: int, log):
    """Subprocesses on this machine: one at a time with progress bars, or `opts.jobs` at once, each
    with its share of the cores (threads pinned) and, where there are GPUs, one GPU per slot."""
    if opts.jobs == 1:
        for job in pending:
            log(_start_line(job, total))
            t0 = time.perf_counter()
            code = _spawn(job.run_dir, log)
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
            code = _spawn(job.run_dir, log, env=env, prefix=f"{job.who}:", started=started)
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
            write_json_atomic(job.run_dir / "config.json", job.config)
            log(_start_line(job, total, f" as a Ray task ({cpus} CPUs)"))
            refs[task.remote(job.config)] = job
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            job = refs.pop(done[0])
            try:
                code, files, wall = ray.get(done[0])
            except ray.exceptions.RayError as e:  # the task itself died (node lost, out of memory): a failed row
                message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                code, files, wall = 1, {"stdout.log": f"error: Ray task failed: {message}\n".encode()}, 0.0
            for rel, data in files.items():
                (job.run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (job.run_dir / rel).write_bytes(data)
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
        write_json_atomic(run_dir / "config.json", config)
        t0 = time.perf_counter()
        code = _spawn(run_dir, log=lambda *_: None, prefix="")
        wall = time.perf_counter() - t0
        files = {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*")
                 if p.is_file() and p.name != "config.json"}
    return code, files, wall


def _spawn(run_dir: Path, log, env: dict | None = None, prefix: str | None = None, started=None) -> int:
    """The worker as a subprocess. prefix None: progress bars and short epoch lines (one run at a
    time); a prefix: no bars, epoch lines prefixed (runs side by side)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    config = json.loads((run_dir / "config.json").read_text())
    if config.get("threads"):  # for the libraries' own pools too, before they start (the worker pins the rest)
        n = str(config["threads"])
        env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n)
    resumes = read_checkpoint(run_dir, config.get("config_hash")) is not None
    with open(run_dir / "stdout.log", "a" if resumes else "w", buffering=1) as logf:  # line-buffered: tail -f
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker", str(run_dir)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        if started is not None:
            started(proc)
        try:
            _follow(proc, logf, log, prefix)
        except KeyboardInterrupt:  # stop the run in flight too; its folder stays, marked unfinished
            proc.terminate()
            proc.wait()
            raise
        return proc.wait()


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


def _outcome(name: str, run_dir: Path, code: int, wall: float, log) -> dict:
    metrics = run_dir / "metrics.json"
    if code == 0 and metrics.exists():
        m = json.loads(metrics.read_text())
        q = m["quality"]
        log(f"    {name}: done in {wall:.0f}s: test BLEU-4 {q['BLEU-4']:.3f}, CIDEr {q['CIDEr']:.3f}"
            + ("" if m["status"] == "ok" else f" ({m['status']})"))
        return {"plugin": name, "status": m["status"], "wall_s": wall}
    lines = [ln for ln in (run_dir / "stdout.log").read_text().splitlines() if ln.strip()]
    error = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "no output")
    (run_dir / "error.txt").write_text(error + "\n")
    status = "diverged" if code == DIVERGED_EXIT else "failed"
    log(f"    {name}: {status.upper()} ({error}); the study goes on")
    return {"plugin": name, "status": status, "error": error, "wall_s": wall}
