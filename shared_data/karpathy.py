"""Karpathy's `dataset_{flickr8k,flickr30k,coco}.json`, read into a `Source`: the captions, image
paths and split of Flickr8k, Flickr30k or COCO, as the captioning literature uses them.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared_data.errors import UserError
from shared_data.importer_input import (
    IMAGES_FLAG,
    KARPATHY_FLAG,
    check_images_dir,
    check_inside,
    read_text,
    skip_missing,
    split_counts,
)
from shared_data.safe_paths import path_problem
from shared_data.sources import Source, SourceImage

# Karpathy's split -> ours: "restval" (COCO's val images outside Karpathy's val and test) trains
KARPATHY_SPLITS = {"train": "train", "val": "val", "test": "test", "restval": "train"}


def _karpathy_caption(sentence: object, where: str, index: int) -> str:
    if not isinstance(sentence, dict):
        raise UserError(f"{where}: sentences[{index}] is not an object; expected "
                        f"{{\"raw\": ..., \"tokens\": [...]}}")
    raw = sentence.get("raw")
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    tokens = sentence.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens) and " ".join(tokens).strip():
        return " ".join(tokens).strip()
    raise UserError(f"{where}: sentences[{index}] has neither 'raw' text nor 'tokens'; fix or delete that "
                    f"sentence")


def load_karpathy(json_file: Path, images_dir: Path) -> Source:
    """Karpathy's dataset_*.json; image paths are images_dir/[filepath/]filename."""
    json_file = Path(json_file)
    if not json_file.is_file():
        what = "is a directory, not a file" if json_file.is_dir() else "no such file"
        raise UserError(f"{KARPATHY_FLAG} {json_file}: {what}; pass Karpathy's dataset_<name>.json")
    images_dir = check_images_dir(images_dir)
    data = _read_karpathy_json(json_file)

    dataset = data.get("dataset")
    info: dict = {"json_file": str(json_file.resolve()), "images_dir": str(images_dir.resolve())}
    if not isinstance(dataset, str) or not dataset.strip():
        # Some hand-trimmed copies drop the key; the file name still says which dataset it is.
        dataset = json_file.stem.removeprefix("dataset_")
        info["dataset_name_from"] = "file name (no \"dataset\" key)"
    info["dataset"] = dataset

    candidates, restval = _karpathy_images(data["images"], json_file, images_dir)
    if not candidates:
        raise UserError(f"{json_file}: the \"images\" list is empty; pass the full dataset_<name>.json")

    check_inside(candidates, images_dir, json_file)
    warnings: list[str] = []
    images = skip_missing(candidates, json_file.name, images_dir, warnings)
    info["split_rule"] = (f"Karpathy's split from the JSON; 'restval' ({restval} images) counted as train, "
                          f"as is standard practice")
    info["split_counts"] = split_counts(images)
    return Source(name=f"karpathy-{dataset}", images=images, warnings=warnings, info=info)


def _read_karpathy_json(json_file: Path) -> dict:
    """The file's top-level object, which has an "images" list."""
    try:
        data = json.loads(read_text(json_file, "re-download the file"))
    except json.JSONDecodeError as e:
        raise UserError(f"{json_file}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); re-download the file "
                        f"or fix it there") from None
    except RecursionError:
        raise UserError(f"{json_file}: nested far deeper than Karpathy's files; re-download the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{json_file}: no top-level \"images\" list; this is not one of Karpathy's "
                        f"dataset_<name>.json files")
    return data


def _karpathy_images(entries: list, json_file: Path, images_dir: Path) -> tuple[list[SourceImage], int]:
    """Every entry of "images" as a SourceImage, in file order, and how many were in 'restval'."""
    candidates: list[SourceImage] = []
    first_index: dict[str, int] = {}
    restval = 0
    for index, entry in enumerate(entries):
        where, split, image_id, sentences = _karpathy_entry(entry, index, json_file, images_dir)
        path = images_dir / image_id
        if image_id in first_index:
            raise UserError(f"{where}: duplicate image id {image_id!r}, already in "
                            f"images[{first_index[image_id]}]; delete one of the two entries")
        first_index[image_id] = index
        restval += split == "restval"
        captions = [_karpathy_caption(s, where, i) for i, s in enumerate(sentences)]
        candidates.append(SourceImage(image_id=image_id, split=KARPATHY_SPLITS[split], captions=captions,
                                      path=path))
    return candidates, restval


def _karpathy_entry(entry: object, index: int, json_file: Path, images_dir: Path) -> tuple[str, str, str, list]:
    """(where it is, in messages; Karpathy's split; image id; sentences) of images[index], everything
    checked but the sentences themselves and whether the id repeats an earlier one."""
    if not isinstance(entry, dict):
        raise UserError(f"{json_file}: images[{index}] is not an object; fix or delete that entry")
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        raise UserError(f"{json_file}: images[{index}] has no \"filename\"; fix or delete that entry")
    where = f"{json_file}: images[{index}] ({filename})"
    if "split" not in entry:
        raise UserError(f"{where} has no \"split\"; expected one of {', '.join(KARPATHY_SPLITS)}")
    split = entry["split"]
    if split not in KARPATHY_SPLITS:
        raise UserError(f"{where}: unknown split {split!r}; expected one of {', '.join(KARPATHY_SPLITS)}")
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        raise UserError(f"{where} has no \"sentences\" list; every image needs its captions")
    if not sentences:
        raise UserError(f"{where} has an empty \"sentences\" list; every image needs at least one "
                        f"caption, fix or delete that entry")
    filepath = entry.get("filepath")
    image_id = f"{filepath}/{filename}" if isinstance(filepath, str) and filepath.strip() else filename
    if why := path_problem(image_id):  # filepath "../..", or an absolute filename that would replace the folder
        raise UserError(f"{where}: image path {image_id!r} (\"filepath\"/\"filename\") {why}; it must name a "
                        f"file inside {IMAGES_FLAG} {images_dir}")
    return where, split, image_id, sentences
