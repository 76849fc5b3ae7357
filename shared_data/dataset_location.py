"""Where prepared datasets are (the data dir; --dataset as a name in it or a folder) and the prepare
command that makes, repairs or extends one: what every dataset error message ends with.

shared_data never imports benchmarks: the extractor names in those commands come from the
benchmarks.data.extractors registry only when it is loaded (the CLI always loads it).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from shared_data.errors import UserError
from shared_data.schema import is_int

DATA_DIR_ENV = "CAPBENCH_DATA_DIR"
DEFAULT_DATASET = "synthetic"


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "datasets"


def resolve_dataset_path(name: str, data_dir: Path | None = None) -> Path:
    p = Path(name)
    try:
        if p.is_absolute() or (p.exists() and (p / "manifest.json").exists()):
            return p
        (data_dir or default_data_dir()).joinpath(name).exists()  # a name the file system refuses fails here
    except OSError as e:
        raise UserError(f"--dataset {name[:40]!r}...: not a dataset name or folder ({e.strerror or e}); "
                        "python -m benchmarks list shows the prepared ones") from None
    return (data_dir or default_data_dir()) / name


def prepare_data_dir(path: Path, data_dir: Path | None) -> Path | None:
    """The --data-dir a prepare command for the dataset at `path` needs: the one the user gave, or
    the folder the dataset is in; none when that is the default data dir and the user gave none."""
    if data_dir is None and path.parent.resolve() == default_data_dir().resolve():
        return None
    return path.parent


def _synthetic_size(name: str, source: dict) -> str | None:
    """synthetic's --size for a dataset: from the manifest's image count, else from its default name."""
    from shared_data.synthetic import SIZES  # lazily: the generator is not needed to load a dataset

    for size, count in SIZES.items():
        if source.get("images") == count:
            return size
    for size in SIZES:
        if name == (DEFAULT_DATASET if size == "full" else f"{DEFAULT_DATASET}-{size}"):
            return size
    return None


def prepare_hint(name: str, data_dir: Path | None = None, manifest: dict | None = None,
                 extractor: str | None = None) -> str:
    """The prepare command that creates dataset `name` in `data_dir` (None: the default data dir),
    from what its manifest records of the source when there is one; with `extractor`, the command
    that adds (or redoes a deleted file of) that extractor's features to the existing dataset.

    The manifest may be damaged: everything read from it is checked, and unknowns stay placeholders.
    """
    manifest = manifest if isinstance(manifest, dict) else {}
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    kind = source.get("kind") if isinstance(source.get("kind"), str) else None
    seed_value = source.get("seed")
    seed = ["--seed", str(seed_value)] if is_int(seed_value) and seed_value != 0 else []
    args: list[str] = []
    size = _synthetic_size(name, source) if kind in (None, "synthetic") else None
    if extractor is not None:
        args = ["--name", name, "--extractor", extractor]
    elif size is not None:
        args = (["--size", size] if size != "full" else []) + seed
        if name != (DEFAULT_DATASET if size == "full" else f"{DEFAULT_DATASET}-{size}"):
            args += ["--name", name]
    elif kind == "flickr8k":
        args = ["flickr8k", "--images", _text(source.get("images_dir"), "DIR")]
        if isinstance(source.get("captions_file"), str):
            args += ["--captions", source["captions_file"]]
        args += seed + (["--name", name] if name != "flickr8k" else [])
    elif kind is not None and kind.startswith("karpathy-"):
        args = ["karpathy", "--karpathy-json", _text(source.get("json_file"), "FILE"),
                "--images", _text(source.get("images_dir"), "DIR"), "--name", name]
    else:
        args = ["DATASET", "--name", name]
    if extractor is None:
        vocab = manifest.get("vocab") if isinstance(manifest.get("vocab"), dict) else {}
        min_freq = vocab.get("min_freq")
        if is_int(min_freq) and min_freq != 1:
            args += ["--min-freq", str(min_freq)]
        features = manifest.get("features") if isinstance(manifest.get("features"), dict) else {}
        first = next(iter(features), None)
        if isinstance(first, str) and _extractor_known(first):
            args += ["--extractor", first]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    command = " ".join(["python -m benchmarks prepare", *(shlex.quote(a) for a in args)])
    if "DATASET" in args or extractor == "NAME":
        command += " (see python -m benchmarks prepare --help and python -m benchmarks list)"
    return command


def _text(value: object, placeholder: str) -> str:
    return value if isinstance(value, str) and value else placeholder


def known_extractors() -> list[str] | None:
    """The extractor names of benchmarks.data.extractors when that registry is loaded (the CLI always
    loads it). shared_data never imports benchmarks: without the registry, messages stay generic."""
    registry = getattr(sys.modules.get("benchmarks.data.extractors"), "EXTRACTORS", None)
    return list(registry) if isinstance(registry, dict) else None


def _extractor_known(name: str) -> bool:
    known = known_extractors()
    return known is not None and name in known


def not_a_dataset(path: Path, data_dir: Path | None, hint_dir: Path | None) -> UserError:
    """What to do when `path` has no manifest. --dataset takes a name in the data dir or a dataset's
    folder; `--dataset /` or a raw Flickr8k folder was answered "move or delete that folder"."""
    from shared_data.importers import import_command  # lazily: loading a dataset needs no importer

    home = data_dir or default_data_dir()
    takes = (f"--dataset takes the name of a dataset prepared in {home} (python -m benchmarks list shows "
             f"them) or the folder of one")
    source = import_command(path)
    if source is not None:
        args, name = source
        command = " ".join(["python -m benchmarks prepare", *map(shlex.quote, args)]
                           + ([] if data_dir is None else ["--data-dir", shlex.quote(str(data_dir))]))
        return UserError(f"{path} is a caption source, not a prepared dataset; {takes}; import it first: "
                         f"{command}, then pass --dataset {name}")
    if path.exists() and not path.is_dir():
        return UserError(f"{path} is a file, not a prepared dataset; {takes}")
    if not _non_empty_dir(path):
        return UserError(f"no prepared dataset at {path}; create it with: {prepare_hint(path.name, hint_dir)}")
    if os.path.realpath(path.parent) != os.path.realpath(home):
        return UserError(f"{path} is not a prepared dataset (it has no manifest.json); {takes}; "
                         "python -m benchmarks prepare --help shows how to make one")
    return UserError(f"{path} has no manifest.json, so it is not a prepared dataset (an unfinished build, or "
                     f"the manifest was deleted); move or delete that folder, then run: "
                     f"{prepare_hint(path.name, hint_dir)}")


def _non_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return True  # unreadable: something is there
