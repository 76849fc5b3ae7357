"""Flickr8k, read into a `Source`: Kaggle's layout or the original archive's.

* Kaggle: `<root>/Images/*.jpg` and `<root>/captions.txt`, a CSV with the header `image,caption`
  and one row per caption.
* The original archive: `Flickr8k_Dataset/Flicker8k_Dataset/*.jpg` (sic) and
  `Flickr8k_text/Flickr8k.token.txt`, one `<image>.jpg#<k><TAB><caption>` line per caption.

The original split files (`Flickr_8k.{train,dev,test}Images.txt`) are used when they lie beside the
captions file; otherwise the split is a seeded shuffle in Karpathy's 6000/1000/1000 proportions.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from shared_data.errors import UserError
from shared_data.importer_input import (
    CAPTIONS_FLAG,
    IMAGES_FLAG,
    check_images_dir,
    check_inside,
    first_of,
    id_problem,
    read_text,
    skip_missing,
    split_counts,
)
from shared_data.sources import SPLIT_FRACTIONS, Source, SourceImage

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


def _locate_flickr8k(images_dir: Path, captions_file: Path | None) -> tuple[Path, Path]:
    """Accept the Kaggle root (with Images/) or the Images folder itself; or the original archive's
    root (Flickr8k_Dataset/ and Flickr8k_text/ side by side), its image folder, or one above it."""
    images_dir = check_images_dir(images_dir)
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
    text = read_text(captions_file, "re-save the file as UTF-8")
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
        if problem := id_problem(image_id):
            raise UserError(f"{captions_file}:{number}: {problem}")
        captions.setdefault(image_id, []).append(caption)
    if not captions:
        raise UserError(f"{captions_file}: no caption lines; pass the full {TOKEN_FILE}")
    return captions


def _read_captions_txt(captions_file: Path) -> dict[str, list[str]]:
    captions: dict[str, list[str]] = {}  # insertion order = first-seen image order
    text = read_text(captions_file, "re-save the file as UTF-8")
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
                if problem := id_problem(image_id):
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
        lines = read_text(path, "re-save the file as UTF-8").splitlines()
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
                        f"captions.txt and were ignored{first_of(list(unknown))}")
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
    check_inside(candidates, image_folder, captions_file)
    images = skip_missing(candidates, captions_file.name, image_folder, warnings)
    if "split_files" in info:
        unassigned = [im.image_id for im in images if im.image_id not in split_of]
        if unassigned:
            warnings.append(f"{len(unassigned)} images in captions.txt are in none of the "
                            f"Flickr_8k.*Images.txt split files and were put in train{first_of(unassigned)}")
    info["split_counts"] = split_counts(images)
    return Source(name="flickr8k", images=images, warnings=warnings, info=info)
