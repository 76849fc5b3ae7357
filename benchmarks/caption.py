"""Caption your own images with a finished run: `python -m benchmarks caption RUN_DIR IMAGE_OR_FOLDER...`.

The run's weights, its dataset's vocabulary and the extractor (with the very weights the dataset was
prepared with) make features for the given images, which are decoded as the options say: greedy,
beam search, or sampling (n captions per image, temperature, top-k, top-p; backends/decoding.py).
One row per caption: image, caption, the model's log-probability of it, the decoding settings, the run.
Every check is made before the first image is read; an image that does not decode is skipped and counted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from backends.decoding import GREEDY, Decoder
from benchmarks.store import rundir
from shared_data.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
OUT_SUFFIXES = (".csv", ".json")
EXTRACT_BATCH = 64  # images per extraction batch (decoding batches are the harness's: decode_batch_images)
FIELDS = ["image", "caption", "log_prob", "decoding", "run"]


# the decoding knobs `caption` shares with RunSettings (flags, defaults, intervals and messages from there)
KNOBS = ("length_alpha", "groups", "diversity", "temperature", "top_k", "top_p", "block_trigrams")


def decoder(beam_size: int = 1, sample: int = 0, seed: int = 0, **knobs) -> Decoder:
    """The decoding `caption`'s flags ask for: greedy, beam search with `beam_size` > 1 (diverse with
    groups > 1: then the `groups` best hypotheses of each image), or `sample` captions per image;
    every value checked as RunSettings checks it."""
    from benchmarks.settings import RunSettings

    if sample and beam_size != 1:
        raise UserError("--sample and --beam-size are two ways to decode: give one of them")
    if not 0 <= sample <= 100:
        raise UserError(f"--sample {sample}: give 1 to 100 captions per image")
    knobs = {k: v for k, v in knobs.items() if v is not None}
    method = "sample" if sample else "beam" if beam_size != 1 else "greedy"
    n = sample if sample else int(knobs.get("groups", 1)) if method == "beam" else 1
    return Decoder.of(RunSettings(decoding=method, beam_size=beam_size, seed=seed, captions_per_image=n, **knobs))


def find_images(inputs: list[Path]) -> list[Path]:
    """The image files given, and those in the folders given (recursively), in a stable order."""
    found: list[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or folder; give image files (jpg, png) or folders of them")
    if not found:
        raise UserError(f"no images (.jpg, .jpeg, .png) in {', '.join(map(str, inputs))}")
    return found


def _finished_run(run_dir: Path) -> tuple[rundir.Run, Path]:
    run = rundir.read_run(run_dir)
    if not run.finished:
        raise UserError(f"{run_dir} is not a finished run: {run.state()}; give the folder of a run that finished, "
                        "such as results/<study>/<label>-s0")
    weights = run_dir / str(run.metrics.get("weights_file") or "")
    if not weights.is_file() or weights.is_symlink() or weights.parent != run_dir:
        raise UserError(f"{run_dir} has no weights file (a published run keeps none): train it again with "
                        f"the same command, then caption with that run")
    return run, weights


def _load(path: Path, size: int) -> np.ndarray | None:
    """The image as extraction reads it, or None if it does not decode (a decompression bomb included)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning):
        return None


def caption(run_dir: Path, inputs: list[Path], decoding: Decoder = GREEDY, out: Path | None = None,
            attention: Path | None = None, log=print) -> list[dict]:
    """Caption the images; write `out` (.csv or .json) when given, and for a plugin with attention, one
    PNG per image in `attention` (each word of its greedy caption with its map); return the rows."""
    from tqdm import tqdm

    from benchmarks.run.worker.context import setup
    from benchmarks.run.worker.evaluate import decode_batch_images

    if out is not None and Path(out).suffix not in OUT_SUFFIXES:
        raise UserError(f"--out {out}: write a .csv or a .json file")
    run_dir = Path(run_dir)
    run, weights = _finished_run(run_dir)
    images = find_images(inputs)
    keras_backend = os.environ.get("KERAS_BACKEND")
    ctx = setup(run_dir, alone=True)  # sets KERAS_BACKEND for importing Keras, done by now: put it back
    if keras_backend is None:
        os.environ.pop("KERAS_BACKEND", None)
    else:
        os.environ["KERAS_BACKEND"] = keras_backend
    if attention is not None:
        if not ctx.runner.has_attention():
            raise UserError(f"--attention: {ctx.cfg['plugin']} does not attend over the image; the plugins with "
                            "attention are the show_attend_tell and transformer ones")
        try:
            Path(attention).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--attention {attention}: cannot be a folder ({e.strerror or e})") from None
    spec, extract = _extractor(ctx)
    ctx.runner.load_file(weights)
    batch = decode_batch_images(ctx.feats, decoding.rows_per_image(), ctx.runner.state_bytes(ctx.feats))
    rows, skipped = [], []
    with tqdm(total=len(images), desc="caption", unit="image", leave=False) as bar:
        for start in range(0, len(images), batch):
            loaded = [(p, _load(p, spec.image_size)) for p in images[start:start + batch]]
            skipped += [p for p, im in loaded if im is None]
            loaded = [(p, im) for p, im in loaded if im is not None]
            if loaded:
                features = _extract(extract, [im for _, im in loaded])
                rows += _decode(ctx, [p for p, _ in loaded], features, decoding, run_dir, start)
                if attention is not None:
                    _draw_attention(ctx, [p for p, _ in loaded], features, Path(attention))
            bar.update(min(batch, len(images) - start))
    if skipped and not rows:
        raise UserError(f"none of the {len(images)} file(s) is a readable image (jpg, png), e.g. {skipped[0]}")
    if skipped:
        log(f"skipped {len(skipped)} file(s) that are not readable images, e.g. {skipped[0]}")
    if out is not None:
        rundir.write_text(Path(out), _as_json(rows) if Path(out).suffix == ".json" else _as_csv(rows))
    return rows


def _extract(extract, images: list[np.ndarray]) -> tuple:
    """(global, spatial or None) features of the images, extracted EXTRACT_BATCH at a time."""
    parts = [extract(np.stack(images[i:i + EXTRACT_BATCH])) for i in range(0, len(images), EXTRACT_BATCH)]
    return tuple(None if arrays[0] is None else np.concatenate([np.asarray(a) for a in arrays])
                 for arrays in zip(*parts, strict=True))


def _extractor(ctx):
    """(the dataset's extractor spec, its model built with the weights the dataset was prepared with)."""
    from benchmarks.data.extractors import get_extractor

    entry = ctx.ds.manifest["features"][ctx.cfg["extractor"]]
    spec = get_extractor(ctx.cfg["extractor"])
    try:
        extract = spec.build(entry.get("weights", "imagenet")) if spec.needs_weights else spec.build()
    except (OSError, ImportError) as e:
        raise UserError(f"the extractor '{spec.name}' of dataset {ctx.ds.name} cannot be built here ({e}); its "
                        f"weights ({entry.get('weights')}) must be on this machine, as when the dataset was "
                        "prepared") from None
    made_with, have = entry.get("weights_sha256"), getattr(extract, "weights_sha256", None)
    if made_with and have and made_with != have:
        raise UserError(f"the '{spec.name}' weights here (sha256 {have[:12]}) are not those dataset {ctx.ds.name} "
                        f"was prepared with ({made_with[:12]}): its features would not match the model's")
    return spec, extract


def _decode(ctx, paths: list[Path], features: tuple, decoding: Decoder, run_dir: Path, offset: int) -> list[dict]:
    """One row per caption of these images; `offset`, the first one's index among the inputs, seeds
    sampling (backends.decoding.Decoder)."""
    g, s = features
    g = np.asarray(g, np.float32)  # a plugin that reads only the grid ignores it, as in training
    s = np.asarray(s, np.float32) if ctx.plugin.needs_spatial and s is not None else None
    tokens = decoding(ctx.runner, g, s, ctx.ds.max_length, offset)
    n = decoding.n
    logp = ctx.runner.log_prob(np.repeat(g, n, 0), None if s is None else np.repeat(s, n, 0), tokens)
    return [{"image": str(p), "caption": " ".join(ctx.ds.vocab.decode(t)), "log_prob": round(float(lp), 4),
             "decoding": str(decoding), "run": str(run_dir)}
            for p, t, lp in zip([p for p in paths for _ in range(n)], tokens, logp, strict=True)]


def _draw_attention(ctx, paths: list[Path], features: tuple, folder: Path) -> None:
    from PIL import Image

    from benchmarks.report.figures import attention_words

    g, s = (np.asarray(f, np.float32) for f in features)
    tokens, alphas = ctx.runner.greedy_attention(g, s, ctx.ds.max_length)
    for path, seq, alpha in zip(paths, tokens, alphas, strict=True):
        with Image.open(path) as im:
            image = im.convert("RGB")
        attention_words(image, path.name, [ctx.ds.vocab.itos[t] for t in seq], alpha,
                        folder / f"{path.stem}.png", most=len(seq))


def _as_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _as_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=1) + "\n"
