"""`caption`'s speed (pytest-benchmark): images captioned per second, feature extraction included,
and batched sampling and diverse beam search against a loop over one image at a time.

By default the session's caption runs (tests/conftest.py: 30 steps on the small embedded dataset,
torch_merge standing in for torch_concat) caption 40 test images (the quick mode CI runs: each call
once, untimed). For the figures, point it at finished runs on the full embedded dataset and
caption its 1,000 test images:

    CAPBENCH_CAPTION_RUNS=results/<study> CAPBENCH_CAPTION_IMAGES=1000 \
        python -m pytest -q -s tests/perf/test_caption_speed.py --benchmark-enable

(the folder holds torch_concat-s0 and torch_show_attend_tell-s0). Whatever the mode, the checks are
real: captions of test images equal the run's own greedy captions, and batched diverse beam search
equals the one-image loop.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

RUNS = os.environ.get("CAPBENCH_CAPTION_RUNS")
# the figures: seed 000's model and the attention model; the quick mode reuses the session's runs
PLUGINS = ("torch_concat" if RUNS else "torch_merge", "torch_show_attend_tell")
IMAGES = int(os.environ.get("CAPBENCH_CAPTION_IMAGES", "40"))
LOOP_IMAGES = 20  # the one-image loop's share: its rate does not depend on how many
REPEATS = 3 if RUNS else 1  # the figures: each rate the best of 3, the loop's as much as the batch's
pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis:UserWarning")


@pytest.fixture(scope="module")
def runs(request) -> Path:
    if RUNS:
        return Path(RUNS)
    return request.getfixturevalue("caption_runs")


def _pad(tokens: np.ndarray, max_len: int) -> np.ndarray:
    """Token rows padded to max_len - 1 columns, so that batches of different lengths stack."""
    return np.pad(tokens, ((0, 0), (0, max_len - 1 - tokens.shape[1])))


def _context(run_dir: Path):
    """The run's worker context (dataset, runner) with its weights loaded."""
    from benchmarks.run.worker.context import setup
    from benchmarks.store import rundir

    ctx = setup(run_dir, alone=True)  # every core, as `caption` uses them
    ctx.runner.load_file(run_dir / rundir.read_json(run_dir / rundir.METRICS)["weights_file"])
    return ctx


@pytest.mark.parametrize("plugin", PLUGINS)
def test_caption_images_per_second(plugin, runs, benchmark):
    from benchmarks.caption import caption

    run = runs / f"{plugin}-s0"
    ctx = _context(run)
    ids = ctx.ds.splits["test"].image_ids[:IMAGES]
    images = [ctx.ds.image_path(i) for i in ids]
    rows = benchmark.pedantic(caption, args=(run, images), kwargs={"log": lambda *_: None}, rounds=1, iterations=1)
    own = json.loads((run / "captions.json").read_text())
    assert [r["caption"] for r in rows] == [own[i]["generated"] for i in ids]  # the run's greedy captions
    t0 = time.perf_counter()
    caption(run, images, log=lambda *_: None)
    rate = len(images) / (time.perf_counter() - t0)
    benchmark.extra_info.update(images=len(images), images_per_s=round(rate, 1))
    print(f"\n{plugin}: caption {len(images)} images, extraction included: {rate:.1f} images/s")


def _best_rate(images: int, decode, *args) -> tuple[float, object]:
    """(images per second of the fastest of REPEATS calls of `decode(*args)`, its output)."""
    best = 0.0
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        out = decode(*args)
        best = max(best, images / (time.perf_counter() - t0))
    return best, out


@pytest.mark.parametrize("plugin", PLUGINS)
def test_batched_decoding_against_one_image_at_a_time(plugin, runs, benchmark):
    from benchmarks.run.worker.evaluate import decode_batch_images

    ctx = _context(runs / f"{plugin}-s0")
    feats, runner, L = ctx.feats, ctx.runner, ctx.ds.max_length
    rows = ctx.ds.splits["test"].feature_rows[:IMAGES]
    g = np.asarray(feats.global_[rows], np.float32)
    s = None if feats.spatial is None else np.asarray(feats.spatial[rows], np.float32)

    def one(i):
        return g[i:i + 1], None if s is None else s[i:i + 1]

    def batched_decode(decode, batch):
        return np.concatenate([_pad(decode(g[i:i + batch], None if s is None else s[i:i + batch]), L)
                               for i in range(0, len(rows), batch)])

    def looped_decode(decode):
        return [decode(*one(i)) for i in range(loop_n)]

    ways = {  # name: (decode, rows each image takes in the batch)
        "sample 5": (lambda g, s: runner.sample(g, s, L, 0, n=5, top_p=0.9)[0], 5),
        "diverse beam 6, 3 groups": (lambda g, s: runner.beam(g, s, L, 6, 0.6, groups=3, diversity=0.5, top=3), 6),
    }
    benchmark.pedantic(ways["sample 5"][0], args=(g, s), rounds=1, iterations=1)
    loop_n = min(LOOP_IMAGES, len(rows))
    for name, (decode, per_image) in ways.items():
        batch = decode_batch_images(feats, per_image, runner.state_bytes(feats))  # as caption and the harness
        batched_rate, batched = _best_rate(len(rows), batched_decode, decode, batch)
        loop_rate, looped = _best_rate(loop_n, looped_decode, decode)
        if name.startswith("diverse"):  # deterministic: batching changes no caption
            for i, out in enumerate(looped):
                width = min(out.shape[1], batched.shape[1])
                np.testing.assert_array_equal(batched[i * 3:i * 3 + 3, :width], out[:, :width])
        benchmark.extra_info[f"{name}: batched images/s"] = round(batched_rate, 1)
        benchmark.extra_info[f"{name}: one-image loop images/s"] = round(loop_rate, 1)
        print(f"\n{plugin}, {name}: batched {batched_rate:.1f} images/s ({len(rows)} images), one image at a "
              f"time {loop_rate:.1f} images/s ({loop_n} images): {batched_rate / loop_rate:.1f}x")
