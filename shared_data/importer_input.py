"""What every importer does with its input before it trusts it: the --images folder, text files
decoded with the line of a bad byte, image ids and the links behind them (shared_data.safe_paths),
and listed images that have no file (skipped, counted in the warnings).
"""

from __future__ import annotations

import os
from pathlib import Path

from shared_data.errors import UserError
from shared_data.safe_paths import first_outside, path_problem
from shared_data.sources import SPLITS, SourceImage

# Flag names used in messages; kept here so the CLI and the messages cannot drift apart silently.
IMAGES_FLAG = "--images"
CAPTIONS_FLAG = "--captions"
KARPATHY_FLAG = "--karpathy-json"


def check_images_dir(images_dir: Path) -> Path:
    images_dir = Path(images_dir)
    if not images_dir.exists():
        raise UserError(f"{IMAGES_FLAG} {images_dir}: no such directory; pass the folder that holds the "
                        f"image files")
    if not images_dir.is_dir():
        raise UserError(f"{IMAGES_FLAG} {images_dir}: is a file, not a directory; pass the folder that "
                        f"holds the image files")
    return images_dir


def read_text(path: Path, what_to_do: str) -> str:
    """Whole file as text; a bad byte is reported with its line, which a streaming decoder cannot do."""
    data = path.read_bytes()
    try:
        # utf-8-sig: files saved by Excel or Notepad start with a BOM that would break the header check.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text ({e.reason}); {what_to_do}") from None


def id_problem(image_id: str) -> str | None:
    why = path_problem(image_id)
    return None if why is None else (f"image {image_id!r} {why}; name a file inside {IMAGES_FLAG} (e.g. "
                                     f"1000268201_693b08cb0e.jpg)")


def check_inside(candidates: list[SourceImage], images_dir: Path, listed_in: Path) -> None:
    """Refuse an image whose file is a link out of images_dir: the user named that folder, not the disk."""
    outside = first_outside(images_dir, (im.path for im in candidates))
    if outside is not None:
        raise UserError(f"{listed_in}: image {outside} is a link to {os.path.realpath(outside)}, outside "
                        f"{IMAGES_FLAG} {images_dir}; put the file itself there, or pass the folder it is in")


def first_of(names: list[str]) -> str:
    return f" (first: {names[0]})" if names else ""


def skip_missing(candidates: list[SourceImage], listed_in: str, images_dir: Path,
                  warnings: list[str]) -> list[SourceImage]:
    """Drop images without a file, counting them: a partial download should work, but visibly."""
    kept, missing = [], []
    for im in candidates:
        (kept if im.path.is_file() else missing).append(im)
    missing = [im.image_id for im in missing]
    if missing and not kept:
        raise UserError(f"none of the {len(candidates)} images listed in {listed_in} has a file in "
                        f"{images_dir}{first_of(missing)}; check {IMAGES_FLAG}")
    if missing:
        warnings.append(f"{len(missing)} images listed in {listed_in} have no file in {images_dir} and "
                        f"were skipped{first_of(missing)}")
    return kept


def split_counts(images: list[SourceImage]) -> dict[str, int]:
    return {s: sum(im.split == s for im in images) for s in SPLITS}
