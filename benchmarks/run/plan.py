"""A study's plan before any work: its variants and seeds, every run's configuration hash (the
name under which its results are kept), the checks that refuse it up front, and the job slots."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.run import preflight
from benchmarks.scoring.comparisons import AA_LABEL
from benchmarks.settings import RunSettings
from benchmarks.store import study_folder
from plugins.registry import DEFAULT_KERAS_BACKEND, KERAS_BACKENDS, PluginRef
from shared_data.dataset import DEFAULT_DATASET, resolve_dataset_path
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




def with_aa_control(variants: list[Variant], settings: RunSettings) -> list[Variant]:
    """The variants and an A/A row: the first (the base) again with seeds disjoint from its own. Both
    rows train the same configuration, so the test comparing them should find nothing: how often it
    does is its false-positive rate."""
    base = variants[0]
    first = int(base.settings.get("seed", settings.seed)) + settings.seeds
    aa = Variant(AA_LABEL, base.plugin, dict(base.hparams), {**base.settings, "seed": first},
                 f"A/A control: {base.label} again with seeds {first}-{first + settings.seeds - 1}; should not differ")
    return [*variants, aa]


EXECUTORS = ("local", "ray")


MAX_RUNS = 5000  # seed000 is 65 runs (about 6 h on 2 cores): thousands more is a typo, not a plan


def check(opts: StudyOptions) -> None:
    """Everything about a study that can be checked without the dataset, before anything is written."""
    import importlib.util

    study_folder.check_name(opts.study)
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
        v.label = study_folder.check_label(v.label)
    labels = [v.label for v in opts.variants]
    for v in opts.variants:
        clash = [w for w in labels if study_folder.slug(w) == study_folder.slug(v.label)]
        if len(clash) > 1:
            also = f" (as the folder name {study_folder.slug(v.label)}, with {' and '.join(clash)})" \
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
    gpus = local_gpus()
    if gpus:
        return max(1, min(len(gpus), runs))
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = RUN_MEMORY
    return max(1, min(os.cpu_count() or 1, memory // RUN_MEMORY, runs // 2))


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


def plan_jobs(opts: StudyOptions, dataset_id: str, study_dir: Path) -> list[Job]:
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
        jobs.append(Job(i, who, study_folder.run_folder(study_dir, v.label, seed), config))
    return jobs


def local_gpus() -> list[str]:
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
