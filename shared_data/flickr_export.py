"""Write any list of `SourceImage` in Kaggle's Flickr8k layout (Images/, captions.txt and the split
files), which `load_flickr8k` reads back: a subset or the synthetic set can be handed to tools that
only read Flickr8k.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
from pathlib import Path

from shared_data.errors import UserError
from shared_data.flickr8k import CAPTIONS_HEADER, SPLIT_FILES
from shared_data.sources import SPLITS, SourceImage


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
