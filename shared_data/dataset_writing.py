"""How prepare writes a dataset's text files and, last, its manifest (shared_data.dataset has the layout).

Every file is written atomically (shared_data.files): a build killed mid-write leaves whole files,
and prepare resumes it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from shared_data.dataset_format import MAX_CAPTION_WORDS, SCHEMA_VERSION, sha256_file
from shared_data.errors import UserError
from shared_data.files import write_json
from shared_data.sources import SPLITS, Source
from shared_data.text import SPECIALS, Vocab, tokenize_all

# Warned at prepare, not refused: a tiny vocabulary or many unknown words is legal but makes every
# score meaningless (--min-freq 1000000 left the 4 special tokens and every test word unknown). 20
# words is far below any real vocabulary (synthetic: 172, Flickr8k: 8,485); 5% unknown is one word in
# twenty, where the synthetic dataset has none.
MIN_VOCAB_WORDS = 20
MAX_UNK_RATE = 0.05


def write_text_files(source: Source, out_dir: Path, name: str, image_dir: Path, min_freq: int = 1,
                     tokenizer: str = "capbench") -> dict:
    """vocab.json, captions.json (and objects.json) for a source; returns the manifest's body.

    Every image's file is `image_dir / image_id`, which holds for all sources. The captions are
    tokenised here, once (shared_data.text.TOKENIZERS): training, the vocabulary and the metrics all
    see these tokens.
    """
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for im in source.images:
        by_split[im.split].append(im)
    empty = [s for s in SPLITS if not by_split[s]]
    if empty:
        raise UserError(f"{source.name}: split(s) {', '.join(empty)} would be empty; "
                        "the dataset needs train, val and test images")
    bare = next((im for im in source.images if not im.captions), None)
    if bare is not None:
        raise UserError(f"{source.name}: image {bare.image_id} ({bare.split}) has no captions; every image "
                        "needs at least one (val and test images are scored against theirs)")
    flat = tokenize_all([c for s in SPLITS for im in by_split[s] for c in im.captions], tokenizer)
    cut = sum(len(t) > MAX_CAPTION_WORDS for t in flat)
    flat = [t[:MAX_CAPTION_WORDS] for t in flat]
    tokenised, k = {}, 0
    for s in SPLITS:
        tokenised[s] = []
        for im in by_split[s]:
            tokenised[s].append(flat[k:k + len(im.captions)])
            k += len(im.captions)
    vocab = Vocab.build((t for caps in tokenised["train"] for t in caps), min_freq=min_freq)
    captions = {s: [{"image_id": im.image_id, "captions": [" ".join(t) for t in caps]}
                    for im, caps in zip(by_split[s], tokenised[s], strict=True)] for s in SPLITS}
    write_json(out_dir / "vocab.json", vocab.to_json())
    write_json(out_dir / "captions.json", captions)
    if any(im.objects is not None for im in source.images):
        write_json(out_dir / "objects.json", {im.image_id: im.objects for im in source.images})

    lengths = [len(t) for s in SPLITS for caps in tokenised[s] for t in caps]
    train_lengths = [len(t) for caps in tokenised["train"] for t in caps]
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "source": {"kind": source.name, **source.info},
        # relative when the images live inside the dataset, so the folder can be moved as a whole
        "image_dir": str(image_dir.relative_to(out_dir) if image_dir.is_relative_to(out_dir) else image_dir),
        "splits": {s: {"images": len(by_split[s]), "captions": sum(map(len, tokenised[s]))} for s in SPLITS},
        "tokenizer": tokenizer,
        "vocab": {"size": len(vocab), "min_freq": min_freq, "built_from": "train",
                  "unk_rate_test": _unk_rate(vocab, tokenised["test"])},
        # <start> and <end> included: the padded length every batch and decoder must fit
        "max_length": max(lengths) + 2,
        "caption_words": {"mean": round(statistics.fmean(train_lengths), 3), "max": max(lengths),
                          "min": min(lengths), "median": statistics.median(train_lengths)},
        "features": {},
        "warnings": list(source.warnings) + _bound_warnings(cut, vocab, tokenised),
    }


def _bound_warnings(cut: int, vocab: Vocab, tokenised: dict[str, list]) -> list[str]:
    """What is legal but makes a dataset's scores meaningless or its captions shorter than given."""
    warnings = []
    if cut:
        warnings.append(f"{cut} caption(s) longer than {MAX_CAPTION_WORDS} words were cut to {MAX_CAPTION_WORDS}")
    words = len(vocab) - len(SPECIALS)
    if words < MIN_VOCAB_WORDS:
        warnings.append(f"the vocabulary has {words} words besides the special tokens (fewer than "
                        f"{MIN_VOCAB_WORDS}), all a model can write captions with; lower --min-freq "
                        f"(now {vocab.min_freq}) or use more training captions")
    for s in ("val", "test"):
        rate = _unk_rate(vocab, tokenised[s])
        if rate > MAX_UNK_RATE:
            warnings.append(f"{rate:.1%} of the {s} captions' words are not in the vocabulary (more than "
                            f"{MAX_UNK_RATE:.0%}), which caps every model's score; lower --min-freq (now "
                            f"{vocab.min_freq}) or check that the splits share a vocabulary")
    return warnings


def _unk_rate(vocab: Vocab, tokenised: list[list[list[str]]]) -> float:
    words = [w for caps in tokenised for t in caps for w in t]
    return round(sum(w not in vocab.stoi for w in words) / max(len(words), 1), 5)


def finalize_manifest(out_dir: Path, manifest: dict) -> dict:
    """Hash every data file and write manifest.json last: a dataset without one is not a dataset."""
    files = ["vocab.json", "captions.json"]
    if (out_dir / "objects.json").exists():
        files.append("objects.json")
    files += [f"features/{name}.h5" for name in sorted(manifest["features"])]
    manifest["files"] = {f: sha256_file(out_dir / f) for f in files}
    write_json(out_dir / "manifest.json", manifest)
    return manifest
