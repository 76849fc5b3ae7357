"""Where a study's runs execute: worker subprocesses on this machine (one per slot, one GPU each
when there are several), or Ray tasks on a cluster; each run's log followed and its outcome read."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.run.plan import Job, StudyOptions, local_gpus
from benchmarks.run.worker.state import DIVERGED_EXIT, PROGRESS
from benchmarks.settings import RunSettings, describe
from benchmarks.store import rundir
from shared_data.errors import UserError


def run_local(pending: list[Job], opts: StudyOptions, total: int, log):
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

    gpus = local_gpus()
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


def run_on_ray(pending: list[Job], opts: StudyOptions, total: int, log):
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
    # the worker's parent PID: it exits when the study process dies (benchmarks/run/worker/)
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


def outcome(job: Job, code: int, wall: float, log) -> dict:
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
