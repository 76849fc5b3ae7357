"""Evaluating the best epoch: decode the test split (greedy, beam, the run's decoding), score it,
the shuffled-features control, the train split's BLEU-4 and the attention maps."""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

from backends.decoding import GREEDY, Decoder
from benchmarks.run.worker.context import Context
from benchmarks.run.worker.state import LoopState, Progress

ATTENTION_IMAGES = 4  # test images whose attention maps are saved (plugins with attention_step)


# Decoding batches are sized by memory, not by image count: 500 images x beam 3 of a 14x14x2048 grid
# is 2.4 GB of features alone. A beam row's features exist a few times over while it decodes (the
# batch read, its repeat per beam, the model's projections of it): DECODE_COPIES.
DECODE_BYTES = 256 << 20  # measured: 512 put keras_show_attend_tell over 4 GiB on a Flickr8k-shaped set


DECODE_COPIES = 4


DECODE_MAX_IMAGES = 500  # the embedded dataset's batch (its features are small): its numbers stay as they were


# ... and by the decoder's own state, which every step reads and rewrites: past a few tens of MB it
# leaves the CPU's caches. Show, Attend and Tell carries encoder_att(feats), [P, A] floats per row:
# on the embedded set (P 64, A 512) its sampling ran 1.3x faster at 48 images x 5 rows than at 64 x 5.
DECODE_STATE_BYTES = 32 << 20


def decode_batch_images(feats, rows_per_image: int, state_bytes: int = 0) -> int:
    """Images per decoding batch for these features, `rows_per_image` rows each (beam width, captions
    per image), and `state_bytes` of decoder state per row (Runner.state_bytes)."""
    rows = max(rows_per_image, 1)
    per_image = feats.row_bytes() * rows * DECODE_COPIES
    by_state = DECODE_STATE_BYTES // (state_bytes * rows) if state_bytes else DECODE_MAX_IMAGES
    return max(1, min(DECODE_MAX_IMAGES, DECODE_BYTES // max(per_image, 1), by_state))


def decode_split(runner, ds, split: str, feats, max_len: int, limit: int | None = None,
                  permutation: np.ndarray | None = None, decoder: Decoder = GREEDY,
                  phase: str | None = None) -> tuple[dict, dict, float, dict]:
    """A split's images decoded: (first caption per image, references, captions/s, every caption per
    image when the decoder gives several)."""
    from shared_data.batches import prefetch

    sp = ds.splits[split]
    batch = decode_batch_images(feats, decoder.rows_per_image(), runner.state_bytes(feats))
    rows = sp.feature_rows[:limit] if limit else sp.feature_rows
    src = rows[permutation] if permutation is not None else rows  # shuffled-feature control
    ids = sp.image_ids[: len(rows)]
    hyps: dict[str, str] = {}
    every: dict[str, list[str]] = {}
    progress = Progress(phase or f"decode {split}", len(rows))
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


def save_attention(runner, ds, feats, run_dir: Path) -> None:
    """attention.npz: the first test images' greedy captions and each word's attention over positions."""
    from benchmarks.store.rundir import ATTENTION

    sp = ds.splits["test"]
    rows = sp.feature_rows[:ATTENTION_IMAGES]
    tokens, alphas = runner.greedy_attention(feats.global_[rows], feats.spatial[rows], ds.max_length)
    np.savez_compressed(run_dir / ATTENTION, image_ids=np.array(sp.image_ids[:ATTENTION_IMAGES]),
                        tokens=tokens, alphas=alphas.astype(np.float32),
                        words=np.array([ds.vocab.itos[t] for t in tokens.ravel()]).reshape(tokens.shape))


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
    hyps, refs, greedy_rate, every = decode_split(runner, ds, "test", feats, ds.max_length, decoder=headline,
                                                   phase=f"decode test ({headline})")
    beam = Decoder("beam", s.beam_size, s.length_alpha)
    beam_hyps, _, beam_rate, _ = decode_split(runner, ds, "test", feats, ds.max_length, decoder=beam,
                                               phase=f"decode test ({beam})")
    # no speed figure is measured after this point: METEOR's JVM loads its tables (~5 s) meanwhile
    meteor = start_meteor() if s.meteor else False
    beam_quality, _ = coco_scores(refs, beam_hyps, meteor=False)
    one = dataclasses.replace(headline, n=1)
    perm = np.random.default_rng(s.seed).permutation(len(ds.splits["test"].image_ids))
    sh_hyps, _, _, _ = decode_split(runner, ds, "test", feats, ds.max_length, permutation=perm, decoder=one,
                                     phase="decode test (shuffled features)")
    shuffled, _ = coco_scores(refs, sh_hyps, meteor=False)
    n_train_eval = min(1000, len(ds.splits["train"].image_ids))
    tr_hyps, tr_refs, _, _ = decode_split(runner, ds, "train", feats, ds.max_length, limit=n_train_eval,
                                           decoder=one)
    train_bleu4 = coco_scores(tr_refs, tr_hyps, meteor=False)[0]["BLEU-4"]
    if feats.spatial is not None and runner.has_attention():
        save_attention(runner, ds, feats, run_dir)
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
