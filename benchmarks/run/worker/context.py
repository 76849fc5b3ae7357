"""A run's set-up: its configuration, dataset and features, the plugin's model on its backend, and
the training batches, shared by the phases as one Context."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Context:
    """What a run's phases share: its configuration, data, model and the set-up timings."""

    run_dir: Path
    cfg: dict
    settings: object  # benchmarks.settings.RunSettings
    ds: object
    plugin: object
    feats: object
    backend: object
    runner: object
    import_s: float
    build_s: float
    scalars: object = None  # TensorBoard scalars (benchmarks/store/scalars.py), open from training to the record


def dataset_location(cfg: dict) -> tuple[str, Path | None]:
    """Where this machine has the run's dataset, as load_dataset's (name or path, data dir).

    The study's absolute path, when it exists here: one machine, a shared file system, or the same
    path on every node of a cluster. Otherwise, on a node started with its own $CAPBENCH_DATA_DIR
    (a path per node), the dataset of the same folder name in there. Failing both, the path the study
    used, whose error names the prepare command to run on this node."""
    from shared_data.dataset_location import DATA_DIR_ENV

    path = cfg.get("dataset_path")
    if path and not Path(path).exists() and os.environ.get(DATA_DIR_ENV):
        return str(Path(os.environ[DATA_DIR_ENV]) / Path(path).name), None
    return path or cfg["dataset"], Path(cfg["data_dir"]) if cfg.get("data_dir") else None


def load_run_dataset(cfg: dict):
    """The run's dataset, found by dataset_location, and refused when it is not the study's."""
    from shared_data.dataset import load_dataset
    from shared_data.dataset_format import dataset_identity
    from shared_data.errors import UserError

    ds = load_dataset(*dataset_location(cfg), verify=cfg.get("verify", True))
    if cfg.get("dataset_identity") and dataset_identity(ds.manifest) != cfg["dataset_identity"]:
        # a node's own copy that is not the study's dataset (another seed, size, vocabulary, extractor
        # weights): its numbers would be filed under the study's configuration
        raise UserError(f"the dataset at {ds.path} is not the one the study used (its manifest.json differs); "
                        f"prepare it on this machine with the same command as on the study's")
    return ds


def setup(run_dir: Path, alone: bool = False) -> Context:
    """The run's context: its configuration, dataset, features and a Runner with the plugin built.
    alone: the caller has the machine to itself (`caption`), so the thread cap the study gave the run
    while runs shared the machine does not apply."""
    from benchmarks.settings import RunSettings
    from benchmarks.store import rundir
    from plugins.registry import DEFAULT_KERAS_BACKEND, ModelSpec, PluginRef

    cfg = rundir.read_json(run_dir / rundir.CONFIG)
    ref = PluginRef.parse(cfg["plugin"])
    if ref.plugin.framework == "keras":  # before keras is first imported: the reference, not the environment
        os.environ["KERAS_BACKEND"] = ref.keras_backend or DEFAULT_KERAS_BACKEND
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import backends

    settings = RunSettings.from_run(cfg["settings"])
    ds = load_run_dataset(cfg)
    ds.objects()  # checked now: the grounding scores read it only after training
    plugin = ref.plugin
    # a plugin that reads the pooled vector only gets no grid: its batches would gather it for nothing
    feats = ds.features(cfg["extractor"], spatial=plugin.needs_spatial, global_=plugin.needs_global)
    t_import = time.perf_counter()
    backend = backends.load(plugin.framework)  # the framework's import
    import_s = time.perf_counter() - t_import
    if cfg.get("threads") and not alone:  # set by the study when runs share the machine
        backend.Runner.set_threads(int(cfg["threads"]))
    t_build = time.perf_counter()
    runner = backend.Runner(plugin, ModelSpec.of(ds, feats), cfg["hparams"], settings.seed, settings.optim(),
                            settings.execution())
    return Context(run_dir, cfg, settings, ds, plugin, feats, backend, runner, import_s,
                   time.perf_counter() - t_build)


def training_batches(ctx: Context):
    """(the train captions' table, epoch -> that epoch's batches): the same for every framework."""
    from shared_data.batches import CaptionTable, iterate_batches, iterate_prefix_batches

    ds, feats, s, fixed = ctx.ds, ctx.feats, ctx.settings, ctx.backend.Runner.FIXED_SHAPES
    table = CaptionTable(ds.splits["train"], ds.vocab, ds.max_length)
    if s.training == "prefix":
        padding = ctx.backend.Runner.PREFIX_PADDING
        return table, lambda epoch: iterate_prefix_batches(ds, "train", feats, s.batch_size, s.seed, epoch,
                                                          padding=padding, pad_to_max=fixed, table=table)
    return table, lambda epoch: iterate_batches(ds, "train", feats, s.batch_size, s.seed, epoch, table=table,
                                               pad_to_max=fixed)


def hold_for_test(ctx: Context) -> None:
    """Tests stop a study while a run is in flight at a point they control, not after a sleep: with
    CAPBENCH_TEST_HOLD=<label>, that run waits here, after training, until a signal ends it."""
    if os.environ.get("CAPBENCH_TEST_HOLD") == ctx.cfg["label"]:
        print(f"held for the test (pid {os.getpid()})", flush=True)
        while True:
            time.sleep(1)
