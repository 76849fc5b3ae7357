"""What the files of a prepared dataset must hold: the schema version, the caption bounds, the
checksums and identity the manifest records, and the structure `load_dataset` requires of
manifest.json, captions.json and objects.json (shared_data.dataset has the layout).

Each check returns what is wrong in words, or None; the caller names the file and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from shared_data.safe_paths import first_outside, path_problem, plain_name
from shared_data.schema import Each, Optional, is_int, json_type
from shared_data.schema import problem as schema_problem
from shared_data.sources import SPLITS

SCHEMA_VERSION = 1
# Every batch is padded to the longest caption, so one 10,000-word caption (a pasted paragraph) made
# a run hang without a word; real captions are tens of words (the random dataset's longest is 40).
MAX_CAPTION_WORDS = 100
MAX_LENGTH = MAX_CAPTION_WORDS + 2  # <start> and <end>: a manifest that asks for more was edited


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# not part of a dataset's identity: the feature files' own checksums (float32 kernels sum in an order
# that depends on the CPU, so the same images and weights give features that differ in their last
# bits on another machine: recorded per run, as the training's own CPU-dependent bits are), and where
# the prepare command found its inputs and what it skipped there (paths of one machine)
NOT_IDENTITY = ("prepare", "warnings")


def dataset_identity(manifest: dict) -> str:
    """sha256 of what a dataset is, the same on every machine that prepared it from the same sources
    with the same extractor weights: the manifest without NOT_IDENTITY and the feature files' bytes,
    whose extractors stay identified by their manifest entries (weights' sha256, shapes, dtype). A
    run's configuration hash includes it, so a study resumed on another machine reuses its runs."""
    kept = {k: v for k, v in manifest.items() if k not in NOT_IDENTITY}
    kept["files"] = {f: h for f, h in (manifest.get("files") or {}).items() if not f.startswith("features/")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------- structure checks
def _shape(value: object) -> bool:
    return isinstance(value, list) and all(is_int(v) and v > 0 for v in value)


# Everything that load_dataset, its callers (list, run, report, prepare) and the feature loader index
# in a manifest: checked once here, so that a damaged manifest is one line, not a KeyError later.
_MANIFEST = {
    "name": str,
    "image_dir": str,
    "max_length": int,
    "source": {"kind": str},
    "splits": {s: {"images": int, "captions": int} for s in SPLITS},
    "vocab": {"size": int},
    "features": Each({"global_dim": int, "spatial_shape": Optional(_shape)}),
    "files": Each(str),
    "human_ceiling_test": Optional(Each(float)),
}
# objects.json (the embedded dataset's scenes), read by the grounding scores after training: checked
# whenever it is read, and by the worker before training
_OBJECTS = Each({"objects": [{"shape": str, "colour": str, "size": str, "x": float, "y": float, "radius": float,
                              "depth": int, "bbox": [float]}]})


def manifest_problem(manifest: dict, path: Path) -> str | None:
    """What is wrong with a manifest's structure, names, paths or bounds; None when nothing is."""
    problem = schema_problem(manifest, _MANIFEST)
    if problem:
        return problem
    name = next((k for k in manifest["features"] if not plain_name(k)), None)
    if name is not None:
        return f"features key {name!r} is not a plain extractor name"
    rel = next((k for k in manifest["files"] if path_problem(k)), None)
    if rel is not None:
        return f"'files' key {rel!r} {path_problem(rel)}"
    image_dir = manifest["image_dir"]
    if not os.path.isabs(image_dir):  # absolute: an imported dataset's --images (see shared_data.dataset)
        why = path_problem(image_dir) or (first_outside(path, [path / image_dir]) and "leads outside the dataset")
        if why:
            return f"'image_dir' {image_dir!r} {why}"
    if not 2 <= manifest["max_length"] <= MAX_LENGTH:
        return (f"'max_length' is {manifest['max_length']}, outside [2, {MAX_LENGTH}] (prepare cuts captions to "
                f"{MAX_CAPTION_WORDS} words)")
    return None


def objects_problem(objects: object) -> str | None:
    """What is wrong with objects.json's structure; None when nothing is."""
    return schema_problem(objects, _OBJECTS)


def captions_problem(captions: object, max_words: int) -> str | None:
    """What is wrong with captions.json: its structure, an image id, an image without captions, a
    caption longer than `max_words`; None when nothing is."""
    if not isinstance(captions, dict):
        return f"is {json_type(captions)}, expected an object with the splits {', '.join(SPLITS)}"
    for s in SPLITS:
        entries = captions.get(s)
        if not isinstance(entries, list):
            return f"split '{s}' is {'missing' if s not in captions else json_type(entries)}, expected a list"
        for k, e in enumerate(entries):
            problem = _entry_problem(e, max_words)
            if problem:
                return f"{s}[{k}] {problem}"
    return None


def _entry_problem(e: object, max_words: int) -> str | None:
    if not (isinstance(e, dict) and isinstance(e.get("image_id"), str)
            and isinstance(e.get("captions"), list) and all(isinstance(c, str) for c in e["captions"])):
        return 'is not {"image_id": "...", "captions": ["...", ...]}'
    image_id = e["image_id"]
    why = path_problem(image_id)
    if why:
        return f"image id {image_id!r} {why}"
    if not e["captions"]:
        return (f"({image_id}) has no captions; every image needs at least one (val and test images are scored "
                "against theirs)")
    # words are joined by one space: counting spaces is cheap for COCO's 616k captions, split only to be sure
    if any(c.count(" ") >= max_words and len(c.split()) > max_words for c in e["captions"]):
        return f"({image_id}) has a caption longer than the manifest's max_length allows ({max_words} words)"
    return None
