"""`python -m benchmarks prepare`: turn a caption source into a prepared dataset in shared_data/.

A dataset is built in `<data_dir>/.<name>.partial/` and renamed into place only when complete, so
a failed or interrupted prepare never leaves something that looks like a dataset; running the same
command again resumes (images already generated and feature rows already written are kept). An
existing dataset is reused, and a new extractor is added to it without touching the rest.

Nothing finished is ever deleted: a folder in the dataset's place without a manifest, or a finished
partial build of another command, is refused with what to do, and so is a link in the place of the
dataset (without a manifest) or of its build folder, through which the build would be written
elsewhere. Options are checked before any work starts, and a disk that fails during the build (full,
read-only) is one line naming the path, with the partial build kept for the resume.
"""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path

from benchmarks.data.build import add_features, build
from benchmarks.data.extractors import default_extractor, get_extractor
from benchmarks.data.options import PrepareOptions
from shared_data import stress
from shared_data.dataset import load_dataset
from shared_data.dataset_location import default_data_dir
from shared_data.errors import UserError
from shared_data.features import DEFAULT_FEATURE_DTYPE
from shared_data.sources import SPLITS


def prepare(opts: PrepareOptions, log=print) -> Path:
    opts.check()
    if opts.dataset == "random":
        opts.extractor, spec = stress.EXTRACTOR, None  # features from the generator, not from images
    else:
        if opts.extractor is None:
            opts.extractor = default_extractor(opts.dataset)
        spec = get_extractor(opts.extractor)
    data_dir = Path(opts.data_dir) if opts.data_dir else default_data_dir()
    _ensure_writable(data_dir)
    target = data_dir / opts.dataset_name()
    try:
        return _prepare(opts, spec, data_dir, target, log)
    except OSError as e:
        # the one place where a failing disk becomes a message; the partial build stays for a resume
        raise UserError(_os_error_message(e, data_dir, target)) from None


def _prepare(opts: PrepareOptions, spec, data_dir: Path, target: Path, log) -> Path:
    t0 = time.perf_counter()
    built = False
    if not (target / "manifest.json").exists():
        _check_target(target)
        build(opts, spec, data_dir, target, log)
        built = True
    ds = load_dataset(str(target), verify=False)
    if not built:
        _check_reuse(target, ds.manifest, opts)
    have_file = (target / "features" / f"{opts.extractor}.h5").is_file()
    if opts.extractor in ds.manifest["features"] and have_file:
        if built:
            _log_prepared(target, ds.manifest, t0, log)
        else:
            log(f"{target} already has '{opts.extractor}' features: reusing it")
        return target
    if spec is None:
        raise UserError(f"{target}/features/{opts.extractor}.h5 is missing; delete {target} and run the same "
                        "command again")
    if opts.extractor in ds.manifest["features"]:
        log(f"{target}: features/{opts.extractor}.h5 is missing, extracting it again")
    add_features(target, ds.manifest, spec, opts, log)
    log(f"added '{opts.extractor}' features to {target} in {time.perf_counter() - t0:.1f}s")
    return target


def _check_reuse(target: Path, manifest: dict, opts: PrepareOptions) -> None:
    """An existing dataset is reused only for the command that made it: an option given that
    contradicts how it was made (another seed, vocabulary threshold, size or feature dtype) is
    refused, not silently ignored. Options left at their defaults are not a contradiction:
    `prepare --name X --extractor E` adds features to X whatever X was made with."""
    made_by = manifest.get("prepare")
    if isinstance(made_by, dict):
        wanted, default = opts.identity(), PrepareOptions().identity()
        # what decides the content; the source's paths may be spelled differently from another folder
        keys = [k for k in wanted if wanted[k] != default.get(k)
                and (k not in ("images", "captions", "karpathy_json") or opts.dataset == "random")]
        diff = [k for k in keys if k in made_by and made_by[k] != wanted[k]]
        if diff:
            key = diff[0]
            raise UserError(f"{target} was prepared with {key} {made_by[key]}, this command asks for {wanted[key]}; "
                            f"use another --name (or --data-dir) for the new dataset, or delete {target} first")
    have = manifest["features"].get(opts.extractor)
    if (isinstance(have, dict) and opts.feature_dtype != DEFAULT_FEATURE_DTYPE
            and have.get("dtype", DEFAULT_FEATURE_DTYPE) != opts.feature_dtype):
        raise UserError(f"{target} has '{opts.extractor}' features stored as {have.get('dtype', 'float32')}, this "
                        f"command asks for {opts.feature_dtype}; delete {target}/features/{opts.extractor}.h5 to "
                        "extract them again, or drop --feature-dtype")


def _check_target(target: Path) -> None:
    """A folder in the dataset's place without a manifest is not ours to replace: it may be a
    finished build whose manifest was deleted, or something else entirely."""
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_symlink():  # a build would be written, and later renamed, through it
        raise UserError(f"{target} is a link (to {os.path.realpath(target)}) without a manifest.json; nothing was "
                        f"changed: remove the link, or choose another --name or --data-dir")
    if not target.is_dir():
        raise UserError(f"{target} exists and is not a dataset folder; move it away, or choose another "
                        f"--name or --data-dir")
    if any(target.iterdir()):
        raise UserError(f"{target} exists but has no manifest.json (an unfinished or damaged dataset, or "
                        f"another folder); nothing was changed: move or delete it, or choose another --name "
                        f"or --data-dir")


def _log_prepared(target: Path, manifest: dict, t0: float, log) -> None:
    log(f"prepared {target} in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{s} {manifest['splits'][s]['images']} images" for s in SPLITS)
        + f", vocabulary {manifest['vocab']['size']}, human ceiling BLEU-4 "
        f"{manifest.get('human_ceiling_test', {}).get('BLEU-4', float('nan')):.3f}")
    for w in manifest.get("warnings", []):
        log(f"warning: {w}")


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def _os_error_message(e: OSError, data_dir: Path, target: Path) -> str:
    """One line for an OSError during a build: the path, the cause, what to do, and that a resume
    keeps the work done so far."""
    code = e.errno
    if code is None:  # h5py puts the errno in its message only
        found = re.search(r"errno = (\d+)", str(e))
        code = int(found.group(1)) if found else None
    work = data_dir / f".{target.name}.partial"
    where = e.filename or (work if work.exists() else target)
    reason = e.strerror or " ".join(str(e).split()) or type(e).__name__
    if code in _NO_SPACE:
        todo = f"free some space on that disk or choose another --data-dir than {data_dir}"
    elif code in _READ_ONLY:
        todo = f"make it writable or choose another --data-dir than {data_dir}"
    else:
        todo = "fix the cause"
    return (f"prepare failed on {where} ({reason}); {todo}, then run the same command again "
            f"(the work done so far is kept and resumed)")


def _ensure_writable(data_dir: Path) -> None:
    how = "choose another with --data-dir or the CAPBENCH_DATA_DIR environment variable"
    blocker = next((p for p in (data_dir, *data_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "it" if blocker == data_dir else str(blocker)
        raise UserError(f"data dir {data_dir} is not writable: {what} is a file, not a folder; {how}")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or " ".join(str(e).split())
        raise UserError(f"data dir {data_dir} is not writable ({reason}); make it writable or {how}") from None


