"""One run, in its own process: `python -m benchmarks.run.worker RUN_DIR` (RUN_DIR/config.json given).

Own process, so that TensorFlow and PyTorch never share one, timings and peak memory belong to one
model, and a crash is one failed row. The protocol is the same for every plugin: the same batches
from shared_data's iterator, the same budget, the same evaluation schedule (loss and decoded BLEU-4
on val after every epoch, best epoch by val BLEU-4, then test decoding and metrics).
Writes metrics.json last (atomically): a run folder without it did not finish.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backends.decoding import GREEDY, Decoder

WARMUP_STEPS = 5  # excluded from throughput: graph building, allocator warm-up, caches
PROGRESS = "@progress "  # lines the study turns into a progress bar instead of logging them
ATTENTION_IMAGES = 4  # test images whose attention maps are saved (plugins with attention_step)
# Decoding batches are sized by memory, not by image count: 500 images x beam 3 of a 14x14x2048 grid
# is 2.4 GB of features alone. A beam row's features exist a few times over while it decodes (the
# batch read, its repeat per beam, the model's projections of it): DECODE_COPIES.
DECODE_BYTES = 256 << 20  # measured: 512 put keras_show_attend_tell over 4 GiB on a Flickr8k-shaped set
DECODE_COPIES = 4
DECODE_MAX_IMAGES = 500  # the embedded dataset's batch (its features are small): its numbers stay as they were


def decode_batch_images(feats, beam: int) -> int:
    """Images per decoding batch for these features and beam width."""
    per_image = feats.row_bytes() * max(beam, 1) * DECODE_COPIES
    return max(1, min(DECODE_MAX_IMAGES, DECODE_BYTES // max(per_image, 1)))


class _Progress:
    """At most a few lines a second on stdout: `@progress {"phase", "done", "total"}`."""

    def __init__(self, phase: str, total: int):
        self.phase, self.total, self.last = phase, total, 0.0

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last > 0.25:
            self.last = now
            print(PROGRESS + json.dumps({"phase": self.phase, "done": done, "total": self.total}), flush=True)


def _decode_split(runner, ds, split: str, feats, max_len: int, limit: int | None = None,
                  permutation: np.ndarray | None = None, decoder: Decoder = GREEDY,
                  phase: str | None = None) -> tuple[dict, dict, float, dict]:
    """A split's images decoded: (first caption per image, references, captions/s, every caption per
    image when the decoder gives several)."""
    from shared_data.batches import prefetch

    sp = ds.splits[split]
    batch = decode_batch_images(feats, decoder.rows_per_image())
    rows = sp.feature_rows[:limit] if limit else sp.feature_rows
    src = rows[permutation] if permutation is not None else rows  # shuffled-feature control
    ids = sp.image_ids[: len(rows)]
    hyps: dict[str, str] = {}
    every: dict[str, list[str]] = {}
    progress = _Progress(phase or f"decode {split}", len(rows))
    t0 = time.perf_counter()

    def read():  # in prefetch's thread: the next batch is read from disk while this one decodes
        for start in range(0, len(rows), batch):
            r = src[start:start + batch]
            yield start, feats.global_[r], None if feats.spatial is None else feats.spatial[r]

    for start, g, s in prefetch(read()):
        progress(start)
        out = decoder(runner, g, s, max_len, start)
        for k, i in enumerate(ids[start:start + batch]):
            texts = [" ".join(ds.vocab.decode(seq)) for seq in out[k * decoder.n:(k + 1) * decoder.n]]
            hyps[i] = texts[0]
            if decoder.n > 1:
                every[i] = texts
    runner.sync()
    rate = len(rows) * decoder.n / (time.perf_counter() - t0)
    refs = {i: list(caps) for i, caps in zip(ids, sp.texts, strict=False)}
    return hyps, refs, rate, every


@dataclass
class LoopState:
    """Everything the training loop carries from epoch to epoch: what a checkpoint saves."""

    epoch: int = 0
    step: int = 0
    train_time: float = 0.0
    first_step_s: float | None = None
    val_eval_s: float = 0.0  # per-epoch validation (loss and decoded BLEU-4)
    steady_tokens: int = 0  # after WARMUP_STEPS: the throughput figures
    steady_captions: int = 0
    steady_time: float = 0.0
    history: list = field(default_factory=list)  # one row per epoch
    best_bleu4: float = -1.0
    best_epoch: int = 0
    best_file: str | None = None  # weights of the best epoch so far, in the run folder
    patience_left: float = math.inf
    tokens: int = 0  # target tokens trained on, all steps
    reached: dict | None = None  # time to target: training time, epoch, step, tokens when first met


class Diverged(Exception):
    """A NaN/inf loss before any epoch could be evaluated: a row marked diverged, not a crash."""


DIVERGED_EXIT = 3
NOT_REACHED = "not reached"  # the status of a time-to-target run that hit its cap first


def _save_attention(runner, ds, feats, run_dir: Path) -> None:
    """attention.npz: the first test images' greedy captions and each word's attention over positions."""
    from benchmarks.store.rundir import ATTENTION

    sp = ds.splits["test"]
    rows = sp.feature_rows[:ATTENTION_IMAGES]
    tokens, alphas = runner.greedy_attention(feats.global_[rows], feats.spatial[rows], ds.max_length)
    np.savez_compressed(run_dir / ATTENTION, image_ids=np.array(sp.image_ids[:ATTENTION_IMAGES]),
                        tokens=tokens, alphas=alphas.astype(np.float32),
                        words=np.array([ds.vocab.itos[t] for t in tokens.ravel()]).reshape(tokens.shape))


@dataclass
class Context:
    """What a run's phases share: its configuration, data, model and the set-up timings."""

    run_dir: Path
    cfg: dict
    settings: object  # benchmarks.run.settings.RunSettings
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
    from shared_data.dataset import DATA_DIR_ENV

    path = cfg.get("dataset_path")
    if path and not Path(path).exists() and os.environ.get(DATA_DIR_ENV):
        return str(Path(os.environ[DATA_DIR_ENV]) / Path(path).name), None
    return path or cfg["dataset"], Path(cfg["data_dir"]) if cfg.get("data_dir") else None


def load_run_dataset(cfg: dict):
    """The run's dataset, found by dataset_location, and refused when it is not the study's."""
    from shared_data.dataset import dataset_identity, load_dataset
    from shared_data.errors import UserError

    ds = load_dataset(*dataset_location(cfg), verify=cfg.get("verify", True))
    if cfg.get("dataset_identity") and dataset_identity(ds.manifest) != cfg["dataset_identity"]:
        # a node's own copy that is not the study's dataset (another seed, size, vocabulary, extractor
        # weights): its numbers would be filed under the study's configuration
        raise UserError(f"the dataset at {ds.path} is not the one the study used (its manifest.json differs); "
                        f"prepare it on this machine with the same command as on the study's")
    return ds


def setup(run_dir: Path) -> Context:
    from benchmarks.run.settings import RunSettings
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
    if cfg.get("threads"):  # set by the study when runs share the machine
        backend.Runner.set_threads(int(cfg["threads"]))
    t_build = time.perf_counter()
    runner = backend.Runner(plugin, ModelSpec.of(ds, feats), cfg["hparams"], settings.seed, settings.optim(),
                            settings.execution())
    return Context(run_dir, cfg, settings, ds, plugin, feats, backend, runner, import_s,
                   time.perf_counter() - t_build)


def _train_batches(ctx: Context):
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


def _hold_for_test(ctx: Context) -> None:
    """Tests stop a study while a run is in flight at a point they control, not after a sleep: with
    CAPBENCH_TEST_HOLD=<label>, that run waits here, after training, until a signal ends it."""
    if os.environ.get("CAPBENCH_TEST_HOLD") == ctx.cfg["label"]:
        print(f"held for the test (pid {os.getpid()})", flush=True)
        while True:
            time.sleep(1)


def train(ctx: Context) -> tuple[LoopState, LoopState, str, int]:
    """The training loop under the budget, with per-epoch validation, best-epoch weights and
    checkpoints: (final state, state it resumed from, status, steps per epoch)."""
    from benchmarks.run.settings import target_met
    from benchmarks.scoring.metrics import coco_scores
    from benchmarks.store import rundir
    from benchmarks.store.scalars import open_scalars
    from shared_data.batches import CaptionTable, iterate_batches, num_batches
    from shared_data.errors import UserError

    ds, feats, runner, s, run_dir = ctx.ds, ctx.feats, ctx.runner, ctx.settings, ctx.run_dir
    digest = ctx.cfg.get("config_hash")
    table, train_batches = _train_batches(ctx)
    val_table = CaptionTable(ds.splits["val"], ds.vocab, ds.max_length)
    steps_per_epoch = (sum(1 for _ in train_batches(0)) if s.training == "prefix"
                       else num_batches(len(table), s.batch_size))
    budget = s.budget()
    max_epochs = budget["epochs"] or math.inf
    max_steps = budget["steps"] or math.inf
    time_budget = budget["time_budget"] or math.inf
    patience = s.patience or math.inf

    st = LoopState(patience_left=patience)
    ckpt = rundir.read_checkpoint(run_dir, digest)
    if ckpt is not None:
        try:
            runner.load_checkpoint(run_dir / ckpt["file"])
            st = LoopState(**ckpt["loop"])
        except Exception as e:  # a checkpoint the runner cannot read: say which, and how to go on
            first = str(e).splitlines()[0] if str(e) else ""
            raise UserError(f"checkpoint {run_dir / ckpt['file']} cannot be loaded ({type(e).__name__}: {first}); "
                            "delete it or rerun with --force") from None
        print(f"resumed from the checkpoint after epoch {st.epoch} (step {st.step})", flush=True)
    resumed = LoopState(**asdict(st))  # the earlier attempts' share, kept out of this process's time split
    status = "ok"
    scalars = ctx.scalars = open_scalars(run_dir, ctx.cfg.get("tensorboard", False),
                                         resume_step=st.step if ckpt else None)
    # patience_left is part of the state: a run killed after its early-stop epoch does not train on
    while (st.patience_left > 0 and st.epoch < max_epochs and st.step < max_steps and st.train_time < time_budget
           and st.reached is None):
        losses = []
        progress = _Progress(f"train epoch {st.epoch + 1}", steps_per_epoch)
        batches = iter(train_batches(st.epoch))
        for i in itertools.count():
            progress(i)
            # the wait for the batch counts: with features read from disk, input is part of training
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            loss = runner.train_step(batch)
            runner.sync()
            dt = time.perf_counter() - t0
            st.train_time += dt
            st.step += 1
            if st.first_step_s is None:
                st.first_step_s = dt
            if st.step > WARMUP_STEPS:
                st.steady_time += dt
                st.steady_tokens += batch.num_tokens
                st.steady_captions += len(batch.lengths)
            if not math.isfinite(loss):
                status = "diverged"
                break
            scalars.add("train/loss", loss, st.step)
            losses.append(loss)
            st.tokens += batch.num_tokens
            if st.step >= max_steps or st.train_time >= time_budget:
                break
        if status == "diverged":
            break
        st.epoch += 1
        t_val = time.perf_counter()
        val_loss = runner.eval_loss(iterate_batches(ds, "val", feats, s.batch_size, 0, 0, shuffle=False,
                                                    table=val_table, pad_to_max=ctx.backend.Runner.FIXED_SHAPES))
        if not math.isfinite(val_loss):  # finite training losses can still leave weights whose outputs overflow
            print(f"diverged: non-finite validation loss after epoch {st.epoch}", flush=True)
            status = "diverged"
            break
        hyps, refs, _, _ = _decode_split(runner, ds, "val", feats, ds.max_length)
        val_bleu4 = coco_scores(refs, hyps, meteor=False)[0]["BLEU-4"]
        st.val_eval_s += time.perf_counter() - t_val
        row = {"epoch": st.epoch, "step": st.step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "val_loss": val_loss, "val_bleu4": val_bleu4, "train_time_s": st.train_time}
        st.history.append(row)
        for tag, value in (("val/loss", val_loss), ("val/BLEU-4", val_bleu4)):
            scalars.add(tag, value, st.step)
        if st.steady_time:
            scalars.add("train/tokens_per_s", st.steady_tokens / st.steady_time, st.step)
        if s.target is not None and target_met(s.target, val_bleu4, val_loss):
            # the training time up to the end of this epoch's training: its evaluation is off the clock
            st.reached = {"train_time_s": st.train_time, "epochs": st.epoch, "steps": st.step, "tokens": st.tokens}
            print(f"target {s.target} reached after epoch {st.epoch} ({st.train_time:.1f}s of training)", flush=True)
        if val_bleu4 > st.best_bleu4:
            # the best epoch's weights go to disk at once, named by epoch, so that the checkpoint written
            # next always points at the file of its own best epoch, whenever the process is killed
            st.best_bleu4, st.best_epoch = val_bleu4, st.epoch
            st.best_file = Path(runner.save(run_dir / f"{rundir.EPOCH_WEIGHTS}{st.epoch}")).name
            st.patience_left = patience
        else:
            st.patience_left -= 1
        rundir.write_checkpoint(runner, run_dir, digest, st)
        for old in run_dir.glob(f"{rundir.EPOCH_WEIGHTS}*"):  # earlier bests, no longer pointed at
            if old.name != st.best_file:
                old.unlink(missing_ok=True)
        scalars.flush()
        print(json.dumps(row), flush=True)
        if st.patience_left <= 0:
            print(f"early stop after epoch {st.epoch}", flush=True)
    rundir.write_history(run_dir, st.history)
    if s.target is not None and st.reached is None and status == "ok":
        status = NOT_REACHED
    if status == "diverged" and st.best_file is None:
        scalars.close()
        unverified = "" if ctx.cfg.get("verify", True) else "; or the features hold NaN: run without --no-verify"
        raise Diverged(f"diverged: non-finite loss at step {st.step}, before any epoch finished "
                       f"(lower --lr or --clip-norm{unverified})")
    return st, (resumed if ckpt is not None else None), status, steps_per_epoch


def evaluate(ctx: Context, st: LoopState, status: str) -> dict:
    """The best epoch's weights on the test split: greedy and beam captions, the shuffled-feature
    control, train BLEU-4 (overfitting), attention maps, grounding and the metrics."""
    from benchmarks.scoring.grounding import grounded_scores
    from benchmarks.scoring.metrics import coco_scores, nltk_bleu4, start_meteor
    from benchmarks.store import rundir

    ds, feats, runner, s, run_dir = ctx.ds, ctx.feats, ctx.runner, ctx.settings, ctx.run_dir
    if st.best_epoch != st.epoch or status == "diverged":
        runner.load_file(run_dir / st.best_file)
    weights_file = run_dir / (rundir.WEIGHTS + Path(st.best_file).suffix)  # the run's weights: its best epoch's
    shutil.copyfile(run_dir / st.best_file, weights_file)  # a copy: the checkpoint still points at the original

    t_eval = time.perf_counter()
    # the headline decoding (greedy unless the settings say otherwise); the image gap and the train
    # split's BLEU-4 decode the same way, so that each compares like with like
    headline = Decoder.of(s)
    hyps, refs, greedy_rate, every = _decode_split(runner, ds, "test", feats, ds.max_length, decoder=headline,
                                                   phase=f"decode test ({headline})")
    beam = Decoder("beam", s.beam_size, s.length_alpha)
    beam_hyps, _, beam_rate, _ = _decode_split(runner, ds, "test", feats, ds.max_length, decoder=beam,
                                               phase=f"decode test ({beam})")
    # no speed figure is measured after this point: METEOR's JVM loads its tables (~5 s) meanwhile
    meteor = start_meteor() if s.meteor else False
    beam_quality, _ = coco_scores(refs, beam_hyps, meteor=False)
    one = dataclasses.replace(headline, n=1)
    perm = np.random.default_rng(s.seed).permutation(len(ds.splits["test"].image_ids))
    sh_hyps, _, _, _ = _decode_split(runner, ds, "test", feats, ds.max_length, permutation=perm, decoder=one,
                                     phase="decode test (shuffled features)")
    shuffled, _ = coco_scores(refs, sh_hyps, meteor=False)
    n_train_eval = min(1000, len(ds.splits["train"].image_ids))
    tr_hyps, tr_refs, _, _ = _decode_split(runner, ds, "train", feats, ds.max_length, limit=n_train_eval,
                                           decoder=one)
    train_bleu4 = coco_scores(tr_refs, tr_hyps, meteor=False)[0]["BLEU-4"]
    if feats.spatial is not None and runner.has_attention():
        _save_attention(runner, ds, feats, run_dir)
    objects = ds.objects()
    quality, per_image = coco_scores(refs, hyps, meteor=meteor, spice=True)
    quality["nltk_BLEU-4"] = nltk_bleu4(refs, hyps)
    # like for like with the human ceiling, which scores caption 1 against captions 2-5
    four = {i: r[1:] for i, r in refs.items() if len(r) > 1}
    quality_4refs = coco_scores(four, {i: hyps[i] for i in four}, meteor=False)[0] if four else None
    return {"hyps": hyps, "refs": refs, "per_image": per_image, "quality": quality, "quality_4refs": quality_4refs,
            "greedy_rate": greedy_rate,
            "beam_rate": beam_rate, "beam_quality": beam_quality, "shuffled": shuffled, "train_bleu4": train_bleu4,
            "grounding": grounded_scores(hyps, objects) if objects else None, "weights_file": weights_file,
            "decoding": str(headline), "every": every,
            "eval_s": time.perf_counter() - t_eval}


def record(ctx: Context, st: LoopState, resumed: LoopState | None, status: str, steps_per_epoch: int,
           ev: dict, t_start: float, started_at: float) -> dict:
    """metrics.json and the caption files, metrics.json last: the run is finished once it exists."""
    from backends import runner as contract
    from benchmarks.scoring.metrics import spice_missing
    from benchmarks.store import rundir

    runner, s, q = ctx.runner, ctx.settings, ev["quality"]
    before = resumed or LoopState()
    peak, peak_kind = runner.peak_memory()
    metrics = {
        "status": status,
        "plugin": ctx.cfg["plugin"], "framework": ctx.plugin.framework, "family": ctx.plugin.family,
        "device": runner.device_name(), "versions": runner.versions(), "execution": s.execution().to_json(),
        "environment": environment(),
        # where this machine found the dataset (a cluster node may have its own copy) and how features
        # came in: read from disk by batch, the arrays the model reads and the dtype each is stored as
        "data": {"path": str(ctx.ds.path), "features": "read from disk by batch",
                 "stored_dtype": ctx.feats.read_from_file(),
                 # the features' bytes on this machine and the weights that made them (both in the report)
                 "features_sha256": ctx.ds.manifest["files"].get(f"features/{ctx.cfg['extractor']}.h5"),
                 "weights_sha256": ctx.ds.manifest["features"][ctx.cfg["extractor"]].get("weights_sha256")},
        "quality": q,
        "quality_4refs": ev["quality_4refs"],  # against references 2-5 only, as the human ceiling is scored
        "spice_note": spice_missing(),
        "shuffled_control": {"BLEU-4": ev["shuffled"]["BLEU-4"], "CIDEr": ev["shuffled"]["CIDEr"]},
        "beam": {"size": s.beam_size, "length_alpha": s.length_alpha, "BLEU-4": ev["beam_quality"]["BLEU-4"],
                 "CIDEr": ev["beam_quality"]["CIDEr"]},
        "grounding": ev["grounding"],
        "decoding": {"method": ev["decoding"], "captions_per_image": Decoder.of(s).n},
        "target": None if s.target is None else {"target": s.target, "reached": st.reached is not None,
                                                 **(st.reached or {})},
        "params": runner.parameters(),
        "weights_file": ev["weights_file"].name, "weights_bytes": ev["weights_file"].stat().st_size,
        "speed": {
            "train_tokens_per_s": st.steady_tokens / st.steady_time if st.steady_time else float("nan"),
            "train_captions_per_s": st.steady_captions / st.steady_time if st.steady_time else float("nan"),
            "time_to_first_step_s": st.first_step_s, "build_s": ctx.build_s, "framework_import_s": ctx.import_s,
            "decode_greedy_captions_per_s": ev["greedy_rate"], "decode_beam_captions_per_s": ev["beam_rate"],
            "peak_memory_mb": peak, "peak_memory_kind": peak_kind,
            # prefix batches are never cut by a backend (their pads come first): the harness's padding
            "fixed_shapes": ctx.backend.Runner.FIXED_SHAPES,
            "batch_width": (ctx.runner.batch_width() if ctx.settings.training == "sequence"
                            else contract.Runner.batch_width(ctx.runner)),
            "threads": ctx.cfg.get("threads"),
            "started_at": started_at, "finished_at": time.time(),
        },
        "training": {"epochs": st.epoch, "steps": st.step, "steps_per_epoch": steps_per_epoch,
                     "train_time_s": st.train_time, "eval_time_s": ev["eval_s"], "val_eval_time_s": st.val_eval_s,
                     # in-process time outside training and evaluation: the framework's import, data
                     # loading, model building, checkpoints and saving (interpreter start is not counted)
                     "other_time_s": time.perf_counter() - t_start - (st.train_time - before.train_time)
                     - ev["eval_s"] - (st.val_eval_s - before.val_eval_s),
                     "resumed_after_epoch": resumed.epoch if resumed is not None else None},
        "overfitting": {
            "best_epoch": st.best_epoch,
            "final_train_loss": st.history[-1]["train_loss"] if st.history else None,
            "final_val_loss": st.history[-1]["val_loss"] if st.history else None,
            "train_bleu4": ev["train_bleu4"], "test_bleu4": q["BLEU-4"],
        },
    }
    for tag, value in (("test/BLEU-4", q["BLEU-4"]), ("test/CIDEr", q["CIDEr"])):
        ctx.scalars.add(tag, value, st.step)
    ctx.scalars.close()
    every = ev["every"]  # several captions per image: all of them, for mBLEU-4
    rundir.write_json(ctx.run_dir / rundir.CAPTIONS,
                      {i: {"generated": ev["hyps"][i], "references": ev["refs"][i],
                           **({"all": every[i]} if every else {})} for i in ev["hyps"]})
    rundir.write_json(ctx.run_dir / rundir.PER_IMAGE, ev["per_image"])
    rundir.write_json(ctx.run_dir / rundir.METRICS, metrics)
    rundir.remove_checkpoint(ctx.run_dir)  # finished: metrics.json is the record now
    return metrics


# what picks a CPU kernel's code path, and so the last bits of every float a run computes
NUMERICS_ENV = ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY",
                "TF_ENABLE_ONEDNN_OPTS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS", "KERAS_BACKEND", "CUDA_VISIBLE_DEVICES")
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def environment() -> dict:
    """What determines a run's numbers besides its configuration: the CPU and the instruction sets its
    libraries dispatch on (oneDNN, MKL and Eigen choose AVX2, AVX-512 or AMX kernels at run time, which
    sum in different orders), core and thread counts, and the variables that steer them."""
    import platform

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    try:  # a VM's host name is often generic ("vm"): the boot id tells two sittings apart
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = None
    # host and boot: which machine ran the run (seeds are blocks: the report shows each seed's machine)
    return {"host": platform.node(), "boot": boot, "cpu": cpu, "isa": [f for f in ISA_FLAGS if f in flags],
            "cores": os.cpu_count(), "env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}}


def run(run_dir: Path) -> dict:
    """One run: set up, train under the budget, evaluate the best epoch, record."""
    t_start, started_at = time.perf_counter(), time.time()
    ctx = setup(run_dir)
    st, resumed, status, steps_per_epoch = train(ctx)
    _hold_for_test(ctx)
    ev = evaluate(ctx, st, status)
    return record(ctx, st, resumed, status, steps_per_epoch, ev, t_start, started_at)


def _die_with_study() -> None:
    """A worker never outlives its study (kill -9 of the study included): Linux sends it SIGTERM when
    the study process dies (PR_SET_PDEATHSIG); a study that died before that was set up is caught by
    the parent check."""
    parent = os.environ.get("CAPBENCH_STUDY_PID")
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != int(parent):
        os._exit(1)


def main() -> int:
    run_dir = Path(sys.argv[1])
    _die_with_study()
    from shared_data.errors import UserError

    try:
        run(run_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return DIVERGED_EXIT
    except OSError as e:  # a full disk or a folder made read-only while training: say so, leave no temporaries
        for tmp in run_dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        traceback.print_exc()
        print(f"error: cannot write in {run_dir} ({e.strerror or e}): "
              + ("free some disk space" if e.errno == errno.ENOSPC else "check the folder's permissions")
              + "; the next study command resumes from the last epoch's checkpoint", file=sys.stderr)
        return 1
    except Exception:  # a crash is one failed row: its traceback goes to the run's log
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    # every file is written and closed by now (metrics.json last; METEOR's JVM was stopped when its
    # scorer was freed): skip the interpreter's teardown, which takes 0.7-0.9 s with TensorFlow or
    # PyTorch loaded, about 1% of a default run for its two runs
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
