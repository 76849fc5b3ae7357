"""Metadata at COCO's scale (pytest-benchmark): Karpathy's JSON importer, tokenising and the vocabulary,
captions.json, the caption table and a whole epoch of the batch iterator, on generated text.

CAPBENCH_SCALE_IMAGES sets the image count (5 captions each): 2,000 by default, so that the quick
mode CI runs stays quick; 123287 is COCO (616,435 captions; Karpathy's has 616,767). Each benchmark
also records its Python-heap peak (tracemalloc) in extra_info, and prints one line with its time and
memory when run with `-s`:

    CAPBENCH_SCALE_IMAGES=123287 python -m pytest -s -q tests/perf/test_data_scale.py

No features are involved (tests/test_streaming.py and `prepare random` cover those): the question is
whether the text side, which every run loads whole, becomes the next wall.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from shared_data import stress
from shared_data.dataset import Dataset, Split
from shared_data.dataset_writing import write_text_files
from shared_data.karpathy import load_karpathy
from shared_data.text import Vocab

IMAGES = int(os.environ.get("CAPBENCH_SCALE_IMAGES", "2000"))


def _measured(benchmark, name, fn):
    """Run fn under the benchmark once per round; record (and print) time and Python-heap peak of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    benchmark.extra_info.update(images=IMAGES, seconds=seconds, python_heap_peak_mb=peak / 2**20)
    print(f"\n{name} at {IMAGES:,} images: {seconds:.2f} s, Python heap peak {peak / 2**20:,.0f} MiB")
    benchmark.pedantic(fn, rounds=1, iterations=1)
    return result


@pytest.fixture(scope="module")
def source():
    return stress.build_source(IMAGES, 10000, seed=0)


@pytest.fixture(scope="module")
def karpathy_json(source, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("coco")
    images = root / "images" / "train2014"
    images.mkdir(parents=True)
    entries = []
    for k, im in enumerate(source.images):
        name = f"COCO_train2014_{k:012d}.jpg"
        (images / name).touch()  # the importer checks that each file exists, not what is in it
        split = {"train": "train" if k % 3 else "restval", "val": "val", "test": "test"}[im.split]
        entries.append({"filepath": "train2014", "filename": name, "split": split, "cocoid": k,
                        "sentences": [{"raw": c, "tokens": c.split()} for c in im.captions]})
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": entries}))
    return path, root / "images"


def test_karpathy_importer(benchmark, karpathy_json):
    path, images = karpathy_json
    src = _measured(benchmark, "load_karpathy", lambda: load_karpathy(path, images))
    assert len(src.images) == IMAGES and sum(len(im.captions) for im in src.images) == 5 * IMAGES


def test_tokenise_vocabulary_and_captions_json(benchmark, source, tmp_path):
    manifest = _measured(benchmark, "write_text_files (tokenise, vocabulary, captions.json)",
                         lambda: write_text_files(source, tmp_path, "coco", tmp_path / "images"))
    assert sum(manifest["splits"][s]["captions"] for s in manifest["splits"]) == 5 * IMAGES


def test_caption_table_and_one_epoch_of_batches(benchmark, source, tmp_path):
    from shared_data.batches import CaptionTable, iterate_batches
    from shared_data.dataset import Features

    write_text_files(source, tmp_path, "coco", tmp_path / "images")
    vocab = Vocab.from_json(json.loads((tmp_path / "vocab.json").read_text()))
    captions = json.loads((tmp_path / "captions.json").read_text())["train"]
    split = Split("train", [e["image_id"] for e in captions], [e["captions"] for e in captions],
                  np.arange(len(captions)))
    ds = Dataset(tmp_path, {"max_length": stress.MAX_WORDS + 2}, vocab, {"train": split})
    feats = Features("none", np.zeros((len(captions), 1), np.float32), None)

    def epoch():
        table = CaptionTable(split, vocab, ds.max_length)
        return sum(1 for _ in iterate_batches(ds, "train", feats, 64, seed=0, epoch=0, table=table))

    batches = _measured(benchmark, "caption table + one epoch of batches (64 captions)", epoch)
    assert batches == -(-split.num_captions // 64)


def test_ptb_tokenizer(benchmark, source):
    """What an imported dataset adds at prepare time: every caption through the PTB tokenizer (Java)."""
    from shared_data.text import tokenize_all

    captions = [c for im in source.images for c in im.captions]
    tokens = _measured(benchmark, "PTB tokenizer (Java)", lambda: tokenize_all(captions, "ptb"))
    assert len(tokens) == len(captions) and tokens[0] == captions[0].split()
