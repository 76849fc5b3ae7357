"""Read real caption datasets into a `Source`, and write one back out in Flickr8k's layout.

Two formats come in:

* Flickr8k as distributed on Kaggle: `<root>/Images/*.jpg` and `<root>/captions.txt`, a CSV with
  the header `image,caption` and one row per caption; or in its original layout:
  `Flickr8k_Dataset/Flicker8k_Dataset/*.jpg` (sic) and `Flickr8k_text/Flickr8k.token.txt`, one
  `<image>.jpg#<k><TAB><caption>` line per caption. The original split files
  (`Flickr_8k.{train,dev,test}Images.txt`) are used when they lie beside the captions file; otherwise
  the split is a seeded shuffle in Karpathy's 6000/1000/1000 proportions.
* Karpathy's `dataset_{flickr8k,flickr30k,coco}.json`, which carries its own split.

`export_flickr8k` writes any list of `SourceImage` in the Kaggle layout (with split files), so a
subset or the synthetic set can be handed to tools that only read Flickr8k.

Every problem a user can fix is a one-line `UserError` naming the file and the line or entry at
fault; images that are listed but have no file are skipped and counted in `Source.warnings`. An image
id or Karpathy path that is not a plain relative path, or whose file is a link out of --images, is
such a problem (not a skip): nothing outside the folder the user named is read
(shared_data.dataset's docstring has the rules).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .dataset import first_outside, path_problem
from .errors import UserError
from .sources import SPLIT_FRACTIONS, SPLITS, Source, SourceImage

# Flag names used in messages; kept here so the CLI and the messages cannot drift apart silently.
IMAGES_FLAG = "--images"
CAPTIONS_FLAG = "--captions"
KARPATHY_FLAG = "--karpathy-json"

CAPTIONS_HEADER = ("image", "caption")
TOKEN_FILE = "Flickr8k.token.txt"  # the original archive's captions
ORIGINAL_IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset")  # the archive's spelling first
_TOKEN_LINE = re.compile(r"([^\t#]+)#(\d+)\t(.*)")
# Our split name -> the original Flickr8k file naming it ("dev" is Flickr8k's word for val).
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
KARPATHY_SPLITS = {"train": "train", "val": "val", "test": "test", "restval": "train"}


# ------------------------------------------------------------------------------------------ helpers
def _check_images_dir(images_dir: Path) -> Path:
    images_dir = Path(images_dir)
    if not images_dir.exists():
        raise UserError(f"{IMAGES_FLAG} {images_dir}: no such directory; pass the folder that holds the "
                        f"image files")
    if not images_dir.is_dir():
        raise UserError(f"{IMAGES_FLAG} {images_dir}: is a file, not a directory; pass the folder that "
                        f"holds the image files")
    return images_dir


def _read_text(path: Path, what_to_do: str) -> str:
    """Whole file as text; a bad byte is reported with its line, which a streaming decoder cannot do."""
    data = path.read_bytes()
    try:
        # utf-8-sig: files saved by Excel or Notepad start with a BOM that would break the header check.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text ({e.reason}); {what_to_do}") from None


def _id_problem(image_id: str) -> str | None:
    why = path_problem(image_id)
    return None if why is None else (f"image {image_id!r} {why}; name a file inside {IMAGES_FLAG} (e.g. "
                                     f"1000268201_693b08cb0e.jpg)")


def _check_inside(candidates: list[SourceImage], images_dir: Path, listed_in: Path) -> None:
    """Refuse an image whose file is a link out of images_dir: the user named that folder, not the disk."""
    outside = first_outside(images_dir, (im.path for im in candidates))
    if outside is not None:
        raise UserError(f"{listed_in}: image {outside} is a link to {os.path.realpath(outside)}, outside "
                        f"{IMAGES_FLAG} {images_dir}; put the file itself there, or pass the folder it is in")


def import_command(path: Path) -> tuple[list[str], str] | None:
    """(prepare's arguments, the dataset name they give) when `path` is a caption source that prepare
    imports (a Flickr8k folder, a Karpathy JSON) rather than a prepared dataset; else None."""
    path = Path(path)
    markers = ("Images", "captions.txt", TOKEN_FILE, "Flickr8k_text", *ORIGINAL_IMAGE_DIRS)
    try:
        if path.is_file() and path.name.startswith("dataset_") and path.suffix == ".json":
            return (["karpathy", KARPATHY_FLAG, str(path), IMAGES_FLAG, "DIR"],
                    "karpathy-" + path.stem.removeprefix("dataset_"))
        if path.is_dir() and any((path / m).exists() for m in markers):
            return ["flickr8k", IMAGES_FLAG, str(path)], "flickr8k"
    except OSError:  # unreadable: not recognisably a source
        pass
    return None


def _first(names: list[str]) -> str:
    return f" (first: {names[0]})" if names else ""


def _skip_missing(candidates: list[SourceImage], listed_in: str, images_dir: Path,
                  warnings: list[str]) -> list[SourceImage]:
    """Drop images without a file, counting them: a partial download should work, but visibly."""
    kept, missing = [], []
    for im in candidates:
        (kept if im.path.is_file() else missing).append(im)
    missing = [im.image_id for im in missing]
    if missing and not kept:
        raise UserError(f"none of the {len(candidates)} images listed in {listed_in} has a file in "
                        f"{images_dir}{_first(missing)}; check {IMAGES_FLAG}")
    if missing:
        warnings.append(f"{len(missing)} images listed in {listed_in} have no file in {images_dir} and "
                        f"were skipped{_first(missing)}")
    return kept


def _split_counts(images: list[SourceImage]) -> dict[str, int]:
    return {s: sum(im.split == s for im in images) for s in SPLITS}


# ----------------------------------------------------------------------------------------- Flickr8k
def _locate_flickr8k(images_dir: Path, captions_file: Path | None) -> tuple[Path, Path]:
    """Accept the Kaggle root (with Images/) or the Images folder itself; or the original archive's
    root (Flickr8k_Dataset/ and Flickr8k_text/ side by side), its image folder, or one above it."""
    images_dir = _check_images_dir(images_dir)
    inner = [images_dir / d / sub for d in ("Flickr8k_Dataset", "") for sub in ORIGINAL_IMAGE_DIRS]
    if (images_dir / "Images").is_dir():
        image_folder, candidates = images_dir / "Images", [images_dir / "captions.txt"]
    elif any(d.is_dir() for d in inner):
        image_folder = next(d for d in inner if d.is_dir())
        candidates = []
    else:
        image_folder = images_dir
        candidates = [images_dir / "captions.txt", images_dir.parent / "captions.txt"]
    # the original layout: Flickr8k_text/ beside Flickr8k_Dataset/, or beside the image folder
    for root in (image_folder.parent, image_folder.parent.parent, images_dir):
        candidates += [root / "Flickr8k_text" / TOKEN_FILE, root / TOKEN_FILE]
    if captions_file is not None:
        captions_file = Path(captions_file)
        if not captions_file.is_file():
            what = "is a directory, not a file" if captions_file.is_dir() else "no such file"
            raise UserError(f"{CAPTIONS_FLAG} {captions_file}: {what}; pass Flickr8k's captions.txt")
        return image_folder, captions_file
    for candidate in candidates:
        if candidate.is_file():
            return image_folder, candidate
    looked = " or ".join(dict.fromkeys(str(c) for c in candidates))
    raise UserError(f"no captions.txt or {TOKEN_FILE} for {IMAGES_FLAG} {images_dir} (looked for {looked}); put "
                    f"Kaggle's captions.txt there or pass {CAPTIONS_FLAG} PATH")


def _is_token_file(path: Path) -> bool:
    """The original Flickr8k.token.txt (`image.jpg#0<TAB>caption`), by its first line, whatever its name."""
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", errors="replace")
    return _TOKEN_LINE.fullmatch(first.rstrip("\r\n")) is not None


def _read_token_txt(captions_file: Path) -> dict[str, list[str]]:
    """Flickr8k.token.txt: one `<image>#<k><TAB><caption>` line per caption, in any order."""
    captions: dict[str, list[str]] = {}
    text = _read_text(captions_file, "re-save the file as UTF-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        m = _TOKEN_LINE.fullmatch(raw)
        if m is None:
            raise UserError(f"{captions_file}:{number}: expected '<image>.jpg#<n><TAB><caption>', got "
                            f"{raw[:60]!r}; fix or delete that line")
        image_id, caption = m.group(1).strip(), m.group(3).strip()
        if not caption:
            raise UserError(f"{captions_file}:{number}: empty caption for {image_id}; delete the line or add the "
                            "caption")
        if problem := _id_problem(image_id):
            raise UserError(f"{captions_file}:{number}: {problem}")
        captions.setdefault(image_id, []).append(caption)
    if not captions:
        raise UserError(f"{captions_file}: no caption lines; pass the full {TOKEN_FILE}")
    return captions


def _read_captions_txt(captions_file: Path) -> dict[str, list[str]]:
    captions: dict[str, list[str]] = {}  # insertion order = first-seen image order
    text = _read_text(captions_file, "re-save the file as UTF-8")
    line = 1
    try:
        # newline="" keeps line ends as they are, which csv needs for quoted multi-line fields.
        with io.StringIO(text, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            found = tuple(field.strip() for field in header) if header is not None else None
            if found != CAPTIONS_HEADER:
                hint = ""
                if header and "\t" in ",".join(header) and "#" in ",".join(header):
                    hint = (" (this looks like the original Flickr8k.token.txt, but its first line is not "
                            "'<image>#<n><TAB><caption>')")
                # Cut short: a wrong file's first line can be anything, and the message is one line.
                shown = "the file is empty" if header is None else f"header is {','.join(header)[:80]!r}"
                raise UserError(f"{captions_file}:1: {shown}, expected header 'image,caption'{hint}; "
                                f"pass Flickr8k's captions.txt from Kaggle")
            while True:
                line = reader.line_num + 1  # where the next record starts; a quoted one may span lines
                row = next(reader, None)
                if row is None:
                    break
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank lines (a trailing newline, hand edits) carry nothing
                if any("\n" in part or "\r" in part for part in row):
                    # A field that opens with a quote runs until the next quote, however many lines
                    # that is: one stray '"' would merge the rows after it into one caption, silently.
                    # No Flickr8k caption spans lines, so a record that does is that mistake.
                    raise UserError(f"{captions_file}:{line}: unclosed quote: a '\"' opens a caption that "
                                    f"runs on over the next line(s); fix that line (close or remove the quote)")
                image_id = row[0].strip()
                # Some Kaggle copies leave captions containing commas unquoted, so the caption is
                # everything after the first comma, rejoined.
                caption = ",".join(row[1:]).strip()
                if not image_id:
                    raise UserError(f"{captions_file}:{line}: empty image field; every row must be "
                                    f"'<file name>,<caption>'")
                if not caption:
                    raise UserError(f"{captions_file}:{line}: empty caption for {image_id}; every row must "
                                    f"be '<file name>,<caption>' (delete the row or add the caption)")
                if problem := _id_problem(image_id):
                    raise UserError(f"{captions_file}:{line}: {problem}")
                captions.setdefault(image_id, []).append(caption)
    except csv.Error as e:
        raise UserError(f"{captions_file}:{line}: unreadable CSV ({e}); fix or delete that row") from None
    if not captions:
        raise UserError(f"{captions_file}: has a header but no caption rows; pass the full captions.txt")
    return captions


def _read_split_files(folder: Path, ids: dict[str, list[str]], warnings: list[str]) -> dict[str, str] | None:
    """Image id -> split from the original Flickr8k split files, or None when there are none."""
    present = {split: folder / name for split, name in SPLIT_FILES.items() if (folder / name).is_file()}
    if not present:
        return None
    if len(present) < len(SPLIT_FILES):
        absent = ", ".join(name for split, name in SPLIT_FILES.items() if split not in present)
        found = ", ".join(p.name for p in present.values())
        # A partial set would silently put a whole split into train; better to stop.
        raise UserError(f"{folder}: found {found} but not {absent}; add the missing split files or remove "
                        f"them all to use the seeded split")
    assigned: dict[str, str] = {}
    where: dict[str, tuple[Path, int]] = {}
    unknown: dict[str, None] = {}  # ordered set, for the "first:" in the warning
    for split, path in present.items():
        lines = _read_text(path, "re-save the file as UTF-8").splitlines()
        for number, text in enumerate(lines, start=1):
            image_id = text.strip()
            if not image_id:
                continue
            if image_id in assigned and assigned[image_id] != split:
                other, other_line = where[image_id]
                raise UserError(f"{path}:{number}: {image_id} is also in {other.name}:{other_line}; an image "
                                f"can be in one split only, delete one of the two lines")
            if image_id not in ids:
                unknown[image_id] = None
                continue
            assigned.setdefault(image_id, split)
            where.setdefault(image_id, (path, number))
    if unknown:
        warnings.append(f"{len(unknown)} images named in the Flickr_8k.*Images.txt split files are not in "
                        f"captions.txt and were ignored{_first(list(unknown))}")
    return assigned


def _seeded_split(ids: list[str], seed: int) -> dict[str, str]:
    """Sorted ids shuffled by `seed`: independent of file order, reproducible from the seed alone."""
    order = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(order))
    n_train = round(len(order) * SPLIT_FRACTIONS[0])
    n_val = round(len(order) * SPLIT_FRACTIONS[1])
    split = {}
    for rank, index in enumerate(perm):
        split[order[index]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return split


def load_flickr8k(images_dir: Path, captions_file: Path | None = None, seed: int = 0) -> Source:
    """Flickr8k in Kaggle's layout or the original one; `images_dir` is a root or the image folder itself
    (see _locate_flickr8k)."""
    image_folder, captions_file = _locate_flickr8k(images_dir, captions_file)
    captions = _read_token_txt(captions_file) if _is_token_file(captions_file) else _read_captions_txt(captions_file)
    warnings: list[str] = []
    info: dict = {"images_dir": str(image_folder.resolve()), "captions_file": str(captions_file.resolve())}

    split_of = _read_split_files(captions_file.parent, captions, warnings)
    if split_of is None:
        # Split over every id in captions.txt, before dropping missing files, so that a missing
        # image never moves other images between splits.
        split_of = _seeded_split(list(captions), seed)
        info["split_rule"] = (f"seeded: sorted image ids shuffled with np.random.default_rng({seed}), first "
                              f"75% train, next 12.5% val, rest test (Karpathy's 6000/1000/1000 proportions)")
        info["seed"] = seed
    else:
        info["split_rule"] = ("original Flickr8k split files beside captions.txt (dev -> val); images in "
                              "none of them -> train")
        info["split_files"] = [str((captions_file.parent / name).resolve()) for name in SPLIT_FILES.values()]

    candidates = [SourceImage(image_id=image_id, split=split_of.get(image_id, "train"), captions=caps,
                              path=image_folder / image_id) for image_id, caps in captions.items()]
    _check_inside(candidates, image_folder, captions_file)
    images = _skip_missing(candidates, captions_file.name, image_folder, warnings)
    if "split_files" in info:
        unassigned = [im.image_id for im in images if im.image_id not in split_of]
        if unassigned:
            warnings.append(f"{len(unassigned)} images in captions.txt are in none of the "
                            f"Flickr_8k.*Images.txt split files and were put in train{_first(unassigned)}")
    info["split_counts"] = _split_counts(images)
    return Source(name="flickr8k", images=images, warnings=warnings, info=info)


# ------------------------------------------------------------------------------------------ Karpathy
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
    images_dir = _check_images_dir(images_dir)
    try:
        data = json.loads(_read_text(json_file, "re-download the file"))
    except json.JSONDecodeError as e:
        raise UserError(f"{json_file}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); re-download the file "
                        f"or fix it there") from None
    except RecursionError:
        raise UserError(f"{json_file}: nested far deeper than Karpathy's files; re-download the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{json_file}: no top-level \"images\" list; this is not one of Karpathy's "
                        f"dataset_<name>.json files")

    dataset = data.get("dataset")
    info: dict = {"json_file": str(json_file.resolve()), "images_dir": str(images_dir.resolve())}
    if not isinstance(dataset, str) or not dataset.strip():
        # Some hand-trimmed copies drop the key; the file name still says which dataset it is.
        dataset = json_file.stem.removeprefix("dataset_")
        info["dataset_name_from"] = "file name (no \"dataset\" key)"
    info["dataset"] = dataset

    candidates: list[SourceImage] = []
    first_index: dict[str, int] = {}
    restval = 0
    for index, entry in enumerate(data["images"]):
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
        path = images_dir / image_id
        if image_id in first_index:
            raise UserError(f"{where}: duplicate image id {image_id!r}, already in "
                            f"images[{first_index[image_id]}]; delete one of the two entries")
        first_index[image_id] = index
        restval += split == "restval"
        captions = [_karpathy_caption(s, where, i) for i, s in enumerate(sentences)]
        candidates.append(SourceImage(image_id=image_id, split=KARPATHY_SPLITS[split], captions=captions,
                                      path=path))
    if not candidates:
        raise UserError(f"{json_file}: the \"images\" list is empty; pass the full dataset_<name>.json")

    _check_inside(candidates, images_dir, json_file)
    warnings: list[str] = []
    images = _skip_missing(candidates, json_file.name, images_dir, warnings)
    info["split_rule"] = (f"Karpathy's split from the JSON; 'restval' ({restval} images) counted as train, "
                          f"as is standard practice")
    info["split_counts"] = _split_counts(images)
    return Source(name=f"karpathy-{dataset}", images=images, warnings=warnings, info=info)


# ---------------------------------------------------------------------------------------------- export
def _one_line(caption: str) -> str:
    """A caption as captions.txt holds it: stripped, on one line (line breaks become a space, which
    tokenize splits on anyway), so that load_flickr8k, which refuses multi-line records, reads it back."""
    return re.sub(r"[\r\n]+", " ", caption).strip()


def _check_exportable(images: list[SourceImage]) -> None:
    """Everything is checked before anything is written, so bad input costs no partial copy."""
    if not images:
        raise UserError("nothing to export: the image list is empty")
    seen: set[str] = set()
    for index, im in enumerate(images):
        where = f"image {index} ({im.image_id!r})"
        if not im.image_id or im.image_id in (".", "..") or "/" in im.image_id or "\\" in im.image_id:
            raise UserError(f"{where}: not a plain file name; the Flickr8k layout keeps every image in one "
                            f"Images/ folder, so ids with folders (e.g. COCO's) cannot be exported this way")
        if im.image_id in seen:
            raise UserError(f"{where}: duplicate image id; each image can be exported once")
        seen.add(im.image_id)
        if im.split not in SPLITS:
            raise UserError(f"{where}: unknown split {im.split!r}; expected one of {', '.join(SPLITS)}")
        if not im.captions or not all(isinstance(c, str) and c.strip() for c in im.captions):
            raise UserError(f"{where}: has no captions or an empty caption; every image needs non-empty "
                            f"captions")
        if not Path(im.path).is_file():
            raise UserError(f"{where}: image file {im.path} does not exist; nothing was exported")


def export_flickr8k(images: list[SourceImage], out_dir: Path) -> Path:
    """Write `images` as Kaggle Flickr8k (Images/, captions.txt, split files) that load_flickr8k reads back.

    Captions are written stripped and on one line each, as load_flickr8k reads them.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir}: already exists and is not an empty folder; remove it or choose another "
                        f"output folder")
    _check_exportable(images)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # A sibling, so the final rename stays on one file system and is atomic.
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as e:
        raise UserError(f"{out_dir}: cannot create the output folder ({e.strerror}); check the path and its "
                        f"permissions") from None
    try:
        (tmp / "Images").mkdir()
        for im in images:
            shutil.copyfile(im.path, tmp / "Images" / im.image_id)
        with open(tmp / "captions.txt", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(CAPTIONS_HEADER)
            for im in images:
                writer.writerows((im.image_id, _one_line(c)) for c in im.captions)
        for split, name in SPLIT_FILES.items():
            ids = [im.image_id for im in images if im.split == split]
            (tmp / name).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above; rename cannot replace a folder on every platform
        os.replace(tmp, out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{out_dir}: export failed ({e.strerror or e}: {e.filename}); nothing was written, "
                        f"fix the cause and run again") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
