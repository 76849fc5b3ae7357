"""Bad input and faults for prepare, the importers and dataset loading: one table, one test.

Every case sets up one bad input in tmp_path, next to a finished dataset (`keep`, a copy of the
session's synthetic-small), runs the command in-process through benchmarks.cli.main (two cases in a
subprocess, to show there is no traceback end to end) and checks the exit code, that stderr is one
`error:` line naming what is wrong, and that every file that was in the data dir before is still
there byte for byte (or, for the cases that build, that only new files appeared), and so is every
file in `outside`, a folder beside the data dir that links and tampered files point into. Those
links and tampered HDF5 files are made here, never committed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import benchmarks.data.build as build_mod
import benchmarks.data.extractors as extractors
from benchmarks.cli import main
from benchmarks.data.prepare import PrepareOptions, prepare
from shared_data import dataset_writing
from shared_data.dataset import load_dataset, sha256_file
from shared_data.dataset_format import MAX_CAPTION_WORDS, MAX_LENGTH

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Env:
    tmp: Path
    dd: Path  # the data dir of the case
    outside: Path  # beside the data dir: where links lead and tampered files point, checked unchanged
    small: Path  # the session's prepared synthetic-small
    monkeypatch: pytest.MonkeyPatch
    saved: dict = field(default_factory=dict)  # what a setup hands to its check

    def copy(self, name: str) -> Path:
        return Path(shutil.copytree(self.small, self.dd / name))

    def edit_json(self, path: Path, change: Callable[[object], object]) -> None:
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    def truncate(self, path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def kaggle(self, captions: str | None = None, n: int = 8) -> Path:
        """A tiny Flickr8k in Kaggle's layout: n noise JPEGs (so that half a file is half the scan)."""
        root = self.tmp / "kaggle"
        (root / "Images").mkdir(parents=True)
        rng = np.random.default_rng(0)
        names = [f"{k}.jpg" for k in range(n)]
        for name in names:
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / "Images" / name)
        if captions is None:
            captions = "image,caption\n" + "".join(f"{name},a picture number {k} .\n" for k, name in enumerate(names))
        (root / "captions.txt").write_text(captions)
        return root

    def rehash(self, root: Path, rel: str) -> None:
        """Record a tampered file's sha256 in the manifest, as a careful tamperer would: what refuses
        it must then be the check under test, not the checksum."""
        self.edit_json(root / "manifest.json", lambda m: {**m, "files": {**m["files"], rel: sha256_file(root / rel)}})

    def link_out(self, root: Path, rel: str) -> None:
        """Move a dataset's file or folder to `outside` and leave a link to it: same bytes, same sha256."""
        moved = Path(shutil.move(root / rel, self.outside / Path(rel).name))
        (root / rel).symlink_to(moved)

    def f8k(self, name: str = "f8k") -> Path:
        """A prepared tiny Flickr8k dataset in the data dir."""
        prepare(PrepareOptions(dataset="flickr8k", images=self.kaggle(), name=name, data_dir=self.dd),
                log=lambda *_: None)
        return self.dd / name


@dataclass
class Case:
    id: str
    setup: Callable[[Env], list]  # makes the bad input, returns the command line
    message: str | Callable[[Env], str]  # in stderr (exit 2) or stdout (exit 0)
    code: int = 2
    keeps: str = "all"  # all: the data dir is unchanged; old: what was there is unchanged; none: not checked
    check: Callable[[Env, str], None] | None = None  # more checks, given the output
    subprocess: bool = False


def snapshot(root: Path) -> dict[str, str]:
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def cli(env: Env, *argv) -> int:
    return main([str(a) for a in argv])


def prep(env: Env, *argv) -> list:
    return ["prepare", *argv, "--data-dir", env.dd]


def export(env: Env, dataset: str, *flags) -> list:
    return ["export", env.tmp / "out", "--dataset", dataset, "--data-dir", env.dd, *flags]


def run(env: Env, dataset: str, *flags) -> list:
    """run fails in its dataset check, before any results folder or training."""
    return ["run", "--plugins", "torch_merge", "--study", "s", "--epochs", "1", "--dataset", dataset,
            "--data-dir", env.dd, "--results-dir", env.tmp / "results", *flags]


def steps(*fns: Callable[[Env], object]) -> Callable[[Env], list]:
    """A setup made of steps; the last one returns the command line."""
    def setup(env: Env) -> list:
        for fn in fns[:-1]:
            fn(env)
        return fns[-1](env)
    return setup


def bad_manifest(change: Callable[[dict], object]) -> Callable[[Env], None]:
    return lambda env: env.edit_json(env.copy("bad") / "manifest.json", change)


def without(key: str) -> Callable[[dict], dict]:
    return lambda m: {k: v for k, v in m.items() if k != key}


# ------------------------------------------------------------------------- setups and checks
def raise_on_write(code: int, text: str):
    def fail(path, *args, **kwargs):
        raise OSError(code, text, str(path))
    return fail


def disk_full(env: Env) -> list:
    env.monkeypatch.setattr(build_mod, "write_features", raise_on_write(errno.ENOSPC, "No space left on device"))
    return prep(env, "flickr8k", "--images", env.kaggle(), "--name", "f8k")


def h5py_disk_full(env: Env) -> list:
    def fail(*args, **kwargs):  # how h5py reports it: no errno attribute, the number in the text
        raise OSError("Unable to synchronously create file (unable to open file: name = 'x.h5', errno = 28, "
                      "error message = 'No space left on device', flags = 13, o_flags = 242)")
    env.monkeypatch.setattr(build_mod, "write_features", fail)
    return prep(env, "flickr8k", "--images", env.kaggle(), "--name", "f8k")


def resumes_after_disk_full(env: Env, output: str) -> None:
    partial = env.dd / ".f8k.partial"
    assert (partial / "captions.json").is_file() and (partial / "prepare.json").is_file()
    assert not (env.dd / "f8k").exists()
    env.monkeypatch.undo()  # space is back: the same command finishes the kept build
    assert cli(env, *env.saved["argv"]) == 0
    assert load_dataset("f8k", env.dd).features("grid").global_.shape == (8, 192)
    assert not partial.exists()


def read_only_build(env: Env) -> list:
    env.monkeypatch.setattr(dataset_writing, "write_json", raise_on_write(errno.EROFS, "Read-only file system"))
    return prep(env, "flickr8k", "--images", env.kaggle(), "--name", "f8k")


def read_only_dataset(env: Env) -> list:
    """Adding an extractor to a finished dataset whose folder cannot be written."""
    import benchmarks.data.extractors as ex

    spec = ex.ExtractorSpec("grid2", "numpy", 128, "shared_data.grid:extract", "a copy of grid", needs_weights=False)
    env.monkeypatch.setitem(ex.EXTRACTORS, "grid2", spec)
    env.monkeypatch.setattr(build_mod, "write_features", raise_on_write(errno.EACCES, "Permission denied"))
    return prep(env, "--name", "keep", "--extractor", "grid2")


def read_only_data_dir(env: Env) -> list:
    real = pathlib.Path.write_text

    def write_text(self, *args, **kwargs):  # root ignores chmod, so the write-probe is made to fail
        if self.name.startswith(".write-test-"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    env.monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    return prep(env, "--size", "small", "--extractor", "grid")


def a_file(env: Env) -> Path:
    (env.tmp / "afile").write_text("not a folder")
    return env.tmp / "afile"


def manifest_deleted(env: Env) -> list:
    (env.copy("synthetic-small") / "manifest.json").unlink()
    return prep(env, "--size", "small", "--extractor", "grid")


def finished_partial(with_identity: bool) -> Callable[[Env], list]:
    def setup(env: Env) -> list:
        partial = env.copy(".synthetic-small.partial")
        if with_identity:
            opts = PrepareOptions(size="small", extractor="grid", data_dir=env.dd)
            (partial / "prepare.json").write_text(json.dumps(opts.identity()))
            env.saved["files"] = {k: v for k, v in snapshot(partial).items() if k != "prepare.json"}
        return prep(env, "--size", "small", "--extractor", "grid")
    return setup


def moved_into_place(env: Env, output: str) -> None:
    assert not (env.dd / ".synthetic-small.partial").exists()
    assert snapshot(env.dd / "synthetic-small") == env.saved["files"]  # renamed as it was, nothing rebuilt
    load_dataset("synthetic-small", env.dd).features("grid")


def hint_recreates_it(env: Env, output: str) -> None:
    """The command in the message, run as it is, rebuilds the dataset (same --data-dir, same source)."""
    command = output.split("prepare it again: python -m benchmarks ")[1].strip()
    shutil.rmtree(env.dd / "f8k")
    assert f"--data-dir {env.dd}" in command and "--images" in command
    assert cli(env, *shlex.split(command)) == 0
    assert len(load_dataset("f8k", env.dd).splits["train"].image_ids) == 6


def features_hint_repairs_them(env: Env, output: str) -> None:
    """Deleting the named file and running the named command extracts the features again."""
    path, command = output.split("delete ")[1].split(" and run: python -m benchmarks ")
    assert f"--data-dir {env.dd}" in command
    Path(path).unlink()
    assert cli(env, *shlex.split(command)) == 0
    assert load_dataset("bad", env.dd).features("grid").global_.shape == (400, 192)


def contains(text: str) -> Callable[[Env, str], None]:
    def check(env: Env, output: str) -> None:
        assert text in output, output
    return check


def no_suggestion_of_unknown_extractor(env: Env, output: str) -> None:
    assert "--extractor clip" not in output and "choose one of: grid, synthnet" in output


def truncated_jpeg(env: Env) -> list:
    root = env.kaggle()
    env.truncate(root / "Images" / "3.jpg")
    return prep(env, "flickr8k", "--images", root, "--name", "f8k")


def skipped_and_counted(env: Env, output: str) -> None:
    ds = load_dataset("f8k", env.dd)
    assert sum(len(s.image_ids) for s in ds.splits.values()) == 7
    assert "3.jpg" not in ds.splits["train"].image_ids + ds.splits["val"].image_ids + ds.splits["test"].image_ids
    assert any("could not be decoded and were skipped" in w for w in ds.manifest["warnings"])


def unclosed_quote(env: Env) -> list:
    text = "image,caption\n0.jpg,A dog runs .\n1.jpg,\"A cat sleeps .\n2.jpg,A bird sings .\n3.jpg,A fish swims .\n"
    return prep(env, "flickr8k", "--images", env.kaggle(captions=text), "--name", "f8k")


def vocab_as_list(env: Env) -> list:
    (env.copy("bad") / "vocab.json").write_text(json.dumps(["<pad>", "<start>", "<end>", "<unk>", "a"]))
    return export(env, "bad", "--no-verify")


def truncated_file(rel: str, command: Callable[[Env], list], name: str = "bad") -> Callable[[Env], list]:
    def setup(env: Env) -> list:
        root = env.f8k(name) if name == "f8k" else env.copy(name)
        env.truncate(root / rel)
        return command(env)
    return setup


def first_entry_captions_a_string(captions: dict) -> dict:
    captions["train"][0]["captions"] = "a dog"
    return captions


def edit_file(rel: str, change: Callable[[object], object], *flags) -> Callable[[Env], list]:
    def setup(env: Env) -> list:
        env.edit_json(env.copy("bad") / rel, change)
        return export(env, "bad", *flags)
    return setup


def corrupt_h5(env: Env) -> list:
    with h5py.File(env.copy("bad") / "features/grid.h5", "r+") as f:
        f["global"][0, 0] = 7.0
    return run(env, "bad")


def tampered_captions(change: Callable[[dict], None], *flags) -> Callable[[Env], list]:
    """captions.json edited (its sha256 updated), then a run that must refuse it at load."""
    def setup(env: Env) -> list:
        root = env.copy("bad")
        captions = json.loads((root / "captions.json").read_text())
        change(captions)
        (root / "captions.json").write_text(json.dumps(captions))
        env.rehash(root, "captions.json")
        return run(env, "bad", *flags)
    return setup


def first_id(split: str, image_id: str) -> Callable[[dict], None]:
    def change(captions: dict) -> None:
        captions[split][0]["image_id"] = image_id
    return change


def no_captions(split: str) -> Callable[[dict], None]:
    def change(captions: dict) -> None:
        captions[split][0]["captions"] = []
    return change


def long_caption(captions: dict) -> None:
    captions["train"][0]["captions"][0] = " ".join(["dog"] * 60)  # max_length is 37


def features_key_escapes(env: Env) -> list:
    """A features key that climbs out of features/ to an outside copy with the right sha256."""
    root = env.copy("bad")
    shutil.copy(root / "features/grid.h5", env.outside / "x.h5")
    key = "../../../outside/x"
    env.edit_json(root / "manifest.json", lambda m: {
        **m, "features": {**m["features"], key: m["features"]["grid"]},
        "files": {**m["files"], f"features/{key}.h5": m["files"]["features/grid.h5"]}})
    return run(env, "bad", "--extractor", key)


def linked_out(rel: str, command: Callable[[Env], list]) -> Callable[[Env], list]:
    def setup(env: Env) -> list:
        env.link_out(env.copy("bad"), rel)
        return command(env)
    return setup


def tampered_h5(how: Callable[[Env, h5py.File, np.ndarray], None]) -> Callable[[Env], list]:
    """features/grid.h5 whose 'global' reads from outside the file (the same numbers, so a model would
    train on them without a sign), its sha256 updated in the manifest."""
    def setup(env: Env) -> list:
        root = env.copy("bad")
        with h5py.File(root / "features/grid.h5", "r+") as f:
            rows = f["global"][:]
            del f["global"]
            how(env, f, rows)
        env.rehash(root, "features/grid.h5")
        return run(env, "bad")
    return setup


def external_storage(env: Env, f: h5py.File, rows: np.ndarray) -> None:
    raw = env.outside / "rows.bin"
    raw.write_bytes(rows.tobytes())
    f.create_dataset("global", shape=rows.shape, dtype=rows.dtype, external=[(str(raw), 0, rows.nbytes)])


def other_h5(env: Env, rows: np.ndarray) -> Path:
    path = env.outside / "other.h5"
    with h5py.File(path, "w") as g:
        g["global"] = rows
    return path


def external_link(env: Env, f: h5py.File, rows: np.ndarray) -> None:
    f["global"] = h5py.ExternalLink(str(other_h5(env, rows)), "/global")


def soft_link(env: Env, f: h5py.File, rows: np.ndarray) -> None:
    f["hidden"] = rows
    f["global"] = h5py.SoftLink("/hidden")


def virtual_dataset(env: Env, f: h5py.File, rows: np.ndarray) -> None:
    layout = h5py.VirtualLayout(shape=rows.shape, dtype=rows.dtype)
    layout[:] = h5py.VirtualSource(str(other_h5(env, rows)), "global", shape=rows.shape)
    f.create_virtual_dataset("global", layout)


def image_linked_out_at_extract(env: Env) -> list:
    """Adding an extractor reads every image: one of them a link out of the dataset's images/."""
    spec = extractors.ExtractorSpec("grid2", "numpy", 128, "shared_data.grid:extract", "a copy of grid",
                                    needs_weights=False)
    env.monkeypatch.setitem(extractors.EXTRACTORS, "grid2", spec)
    env.link_out(env.copy("bad"), "images/synth_00001.jpg")
    return prep(env, "--name", "bad", "--extractor", "grid2")


def kaggle_with(row: Callable[[Env], str]) -> Callable[[Env], list]:
    """Kaggle's captions.txt with one more row, made by `row` (it may put files in `outside`)."""
    def setup(env: Env) -> list:
        Image.new("RGB", (8, 8)).save(env.outside / "secret.jpg")
        text = "image,caption\n" + "".join(f"{k}.jpg,a picture number {k} .\n" for k in range(8)) + row(env)
        return prep(env, "flickr8k", "--images", env.kaggle(captions=text), "--name", "f8k")
    return setup


def token_file_climbing(env: Env) -> list:
    root = env.kaggle()
    Image.new("RGB", (8, 8)).save(env.outside / "secret.jpg")
    token = env.tmp / "Flickr8k.token.txt"
    token.write_text("0.jpg#0\ta picture .\n../../outside/secret.jpg#0\ta secret .\n")
    return prep(env, "flickr8k", "--images", root, "--captions", token, "--name", "f8k")


def image_linked_out_of_images(env: Env) -> list:
    root = env.kaggle()
    Image.new("RGB", (8, 8)).save(env.outside / "secret.jpg")
    (root / "Images/3.jpg").unlink()
    (root / "Images/3.jpg").symlink_to(env.outside / "secret.jpg")
    return prep(env, "flickr8k", "--images", root, "--name", "f8k")


def karpathy_with(**entry) -> Callable[[Env], list]:
    """Karpathy's JSON over the tiny Kaggle images, its first entry changed by `entry`."""
    def setup(env: Env) -> list:
        root = env.kaggle()
        Image.new("RGB", (8, 8)).save(env.outside / "secret.jpg")
        images = [{"filename": f"{k}.jpg", "split": ["train", "val", "test"][min(k // 3, 2)],
                   "sentences": [{"raw": f"a picture number {k} ."}]} for k in range(8)]
        images[0].update(entry)
        (env.tmp / "dataset_k.json").write_text(json.dumps({"dataset": "k", "images": images}))
        return prep(env, "karpathy", "--karpathy-json", env.tmp / "dataset_k.json", "--images", root / "Images")
    return setup


def caption_cut(env: Env, output: str) -> None:
    ds = load_dataset("f8k", env.dd)
    assert ds.max_length == MAX_LENGTH
    assert max(len(c) for caps in ds.splits["train"].captions + ds.splits["val"].captions
               + ds.splits["test"].captions for c in caps) == MAX_CAPTION_WORDS


def warned_in_manifest(*texts: str) -> Callable[[Env, str], None]:
    def check(env: Env, output: str) -> None:
        warnings = " | ".join(load_dataset("f8k", env.dd).manifest["warnings"])
        assert all(t in warnings and t in output for t in texts), warnings
    return check


def import_hint_works(env: Env, output: str) -> None:
    """The command in the message, run as it is, imports the folder; the named dataset then loads."""
    command, name = output.split("import it first: python -m benchmarks ")[1].strip().split(", then pass --dataset ")
    assert cli(env, *shlex.split(command)) == 0
    assert len(load_dataset(name, env.dd).splits["train"].image_ids) == 6


def outside_folder(env: Env) -> Path:
    (env.outside / "folder").mkdir()
    return env.outside / "folder"


CASES = [
    # 1. options, refused before any image is generated (the data dir stays as it was)
    Case("batch-size-0", lambda e: prep(e, "--size", "small", "--batch-size", "0"),
         "--batch-size must be at least 1, got 0"),
    Case("batch-size-negative", lambda e: prep(e, "--size", "small", "--batch-size", "-1"),
         "--batch-size must be at least 1, got -1"),
    Case("seed-negative", lambda e: prep(e, "--size", "small", "--seed", "-1"), "--seed must be at least 0, got -1"),
    Case("min-freq-negative", lambda e: prep(e, "--min-freq", "-2"), "--min-freq must be at least 1, got -2"),
    Case("size-unknown", lambda e: prep(e, "--size", "medium"), "unknown size 'medium'; choose one of: full, small"),
    Case("feature-dtype-unknown", lambda e: prep(e, "--size", "small", "--feature-dtype", "bf16"),
         "--feature-dtype 'bf16' is not one of: float32, float16"),
    Case("random-grid-malformed", lambda e: prep(e, "random", "--images", "40", "--grid", "14x14"),
         "--grid '14x14' is not HxWxC with positive whole numbers"),
    Case("random-images-not-a-number", lambda e: prep(e, "random", "--images", "many"),
         "--images many: expected a whole number in [3, inf)"),
    Case("random-only-option-elsewhere", lambda e: prep(e, "--size", "small", "--vocab", "100"),
         "--vocab does not apply to dataset synthetic"),
    Case("images-for-synthetic", lambda e: prep(e, "--size", "small", "--images", e.tmp),
         "--images does not apply to dataset synthetic"),
    Case("size-for-flickr8k", lambda e: prep(e, "flickr8k", "--size", "small", "--images", e.kaggle()),
         "--size does not apply to dataset flickr8k"),
    # 2. dataset names are plain folder names, refused before the build
    Case("name-with-folder", lambda e: prep(e, "--size", "small", "--name", "sub/ds"),
         "--name 'sub/ds' is not a plain folder name", subprocess=True),
    Case("name-dotdot", lambda e: prep(e, "--size", "small", "--name", ".."), "--name '..' is not a plain folder name"),
    Case("name-absolute", lambda e: prep(e, "--size", "small", "--name", e.tmp / "abs"), "is not a plain folder name"),
    Case("name-empty", lambda e: prep(e, "--size", "small", "--name", ""), "--name '' is not a plain folder name"),
    Case("name-hidden", lambda e: prep(e, "--size", "small", "--name", ".ds"),
         "--name '.ds' is not a plain folder name"),
    # 3. the data dir and the disk
    Case("data-dir-is-a-file", lambda e: ["prepare", "--size", "small", "--data-dir", a_file(e)],
         lambda e: f"data dir {e.tmp / 'afile'} is not writable: it is a file, not a folder; choose another with "
                   f"--data-dir"),
    Case("data-dir-under-a-file", lambda e: ["prepare", "--size", "small", "--data-dir", a_file(e) / "sub"],
         lambda e: f"is not writable: {e.tmp / 'afile'} is a file, not a folder"),
    Case("data-dir-read-only", read_only_data_dir,
         "is not writable (Permission denied); make it writable or choose another with --data-dir"),
    Case("read-only-during-build", read_only_build,
         lambda e: f"prepare failed on {e.dd / '.f8k.partial' / 'vocab.json'} (Read-only file system); make it "
                   f"writable or choose another --data-dir", keeps="old"),
    Case("read-only-dataset-adding-features", read_only_dataset,
         lambda e: f"prepare failed on {e.dd / 'keep/features/grid2.h5'} (Permission denied); make it writable"),
    Case("disk-full-during-features", disk_full,
         lambda e: f"prepare failed on {e.dd / '.f8k.partial/features/grid.h5'} (No space left on device); free "
                   f"some space", keeps="old", check=resumes_after_disk_full),
    Case("disk-full-h5py-style", h5py_disk_full, "errno = 28, error message = 'No space left on device'",
         keeps="old", check=contains("free some space")),
    # 4. what is in the dataset's place: never replaced, never deleted
    Case("manifest-deleted-then-retry", manifest_deleted,
         "synthetic-small exists but has no manifest.json (an unfinished or damaged dataset"),
    Case("target-is-a-file",
         steps(lambda e: (e.dd / "synthetic-small").write_text(""), lambda e: prep(e, "--size", "small")),
         "synthetic-small exists and is not a dataset folder"),
    Case("finished-partial-of-another-command", finished_partial(with_identity=False),
         ".synthetic-small.partial holds a finished build, not made by this command"),
    Case("finished-partial-is-moved-into-place", finished_partial(with_identity=True),
         "is a finished build of the same command: moving it into place", code=0, keeps="none",
         check=moved_into_place),
    Case("load-folder-without-manifest",
         steps(lambda e: (e.copy("bad") / "manifest.json").unlink(), lambda e: export(e, "bad")),
         "bad has no manifest.json, so it is not a prepared dataset"),
    # 5. a damaged dataset, with and without --no-verify: one line naming the file
    Case("manifest-without-vocab", steps(bad_manifest(without("vocab")), lambda e: export(e, "bad", "--no-verify")),
         "manifest.json: has no 'vocab' (damaged or edited); delete", subprocess=True),
    Case("manifest-without-vocab-verified", steps(bad_manifest(without("vocab")), lambda e: export(e, "bad")),
         "manifest.json: has no 'vocab'"),
    Case("manifest-without-splits", steps(bad_manifest(without("splits")), lambda e: export(e, "bad")),
         "manifest.json: has no 'splits'"),
    Case("manifest-without-features", steps(bad_manifest(without("features")), lambda e: export(e, "bad")),
         "manifest.json: has no 'features'"),
    Case("manifest-splits-a-list", steps(bad_manifest(lambda m: {**m, "splits": [1, 2]}), lambda e: export(e, "bad")),
         "manifest.json: 'splits' is a list, expected an object"),
    Case("manifest-dim-a-string",
         steps(bad_manifest(lambda m: {**m, "features": {"grid": {**m["features"]["grid"], "global_dim": "192"}}}),
               lambda e: export(e, "bad")), "'features.grid.global_dim' is a string, expected an integer"),
    Case("manifest-truncated", truncated_file("manifest.json", lambda e: export(e, "bad")),
         "manifest.json is not valid JSON"),
    Case("captions-truncated-no-verify", truncated_file("captions.json", lambda e: export(e, "bad", "--no-verify")),
         "captions.json is not valid JSON"),
    Case("captions-truncated-verified", truncated_file("captions.json", lambda e: export(e, "bad")),
         "captions.json does not match its sha256 in the manifest"),
    Case("captions-a-list", edit_file("captions.json", lambda c: [c], "--no-verify"),
         "captions.json: is a list, expected an object with the splits train, val, test"),
    Case("captions-entry-wrong-shape", edit_file("captions.json", first_entry_captions_a_string, "--no-verify"),
         "captions.json: train[0] is not {\"image_id\""),
    Case("vocab-a-list", vocab_as_list, "vocab.json is malformed (expected an object"),
    Case("list-survives-manifest-without-vocab",
         steps(bad_manifest(without("vocab")), lambda e: ["list", "--data-dir", e.dd]),
         "unusable: ", code=0, check=contains("manifest.json: has no 'vocab'")),
    Case("features-truncated-no-verify", truncated_file("features/grid.h5", lambda e: run(e, "bad", "--no-verify")),
         "grid.h5 cannot be read (Unable to", check=features_hint_repairs_them),
    Case("features-corrupt-verified", corrupt_h5, "grid.h5 does not match its sha256 in the manifest"),
    # 6. hints: the same --data-dir, a command that works, no unknown extractor
    Case("missing-dataset-hint-has-data-dir", lambda e: export(e, "synthetic-small"),
         lambda e: f"create it with: python -m benchmarks prepare --size small --data-dir {e.dd}"),
    Case("damaged-flickr8k-hint-recreates-it",
         truncated_file("captions.json", lambda e: export(e, "f8k", "--no-verify"), name="f8k"),
         "captions.json is not valid JSON", keeps="none", check=hint_recreates_it),
    Case("unknown-extractor-not-suggested",
         steps(lambda e: e.copy("bad"), lambda e: run(e, "bad", "--extractor", "clip")),
         "unknown extractor 'clip'", check=no_suggestion_of_unknown_extractor),
    # 7. captions.txt: one stray quote never merges lines
    Case("captions-unclosed-quote", unclosed_quote, "captions.txt:3: unclosed quote"),
    # 8. an image cut in half is skipped and counted, not a crash in the feature extraction
    Case("truncated-jpeg-skipped", truncated_jpeg, "1 image(s) could not be decoded and were skipped", code=0,
         keeps="old", check=skipped_and_counted),
    # 9. paths read from a dataset stay inside it: names, relative paths, no link out
    Case("features-key-climbs-out", features_key_escapes,
         "manifest.json: features key '../../../outside/x' is not a plain extractor name"),
    Case("files-key-absolute",
         steps(bad_manifest(lambda m: {**m, "files": {**m["files"], "/etc/hostname": "0" * 64}}),
               lambda e: export(e, "bad")), "manifest.json: 'files' key '/etc/hostname' is an absolute path"),
    Case("manifest-links-out", linked_out("manifest.json", lambda e: export(e, "bad")),
         lambda e: f"manifest.json leads outside {e.dd / 'bad'} (a link to {e.outside / 'manifest.json'})"),
    Case("captions-link-out", linked_out("captions.json", lambda e: export(e, "bad")),
         lambda e: f"captions.json leads outside {e.dd / 'bad'} (a link to {e.outside / 'captions.json'})"),
    Case("features-file-links-out", linked_out("features/grid.h5", lambda e: run(e, "bad")),
         "grid.h5 leads outside", check=contains("and run: python -m benchmarks prepare --name bad --extractor grid")),
    Case("features-folder-links-out", linked_out("features", lambda e: run(e, "bad")),
         lambda e: f"leads outside {e.dd / 'bad'} (a link to {e.outside / 'features' / 'grid.h5'})"),
    Case("image-dir-climbs-out",
         steps(bad_manifest(lambda m: {**m, "image_dir": "../../outside"}), lambda e: export(e, "bad")),
         "manifest.json: 'image_dir' '../../outside' is not a plain relative path"),
    Case("images-folder-links-out", linked_out("images", lambda e: export(e, "bad")),
         "manifest.json: 'image_dir' 'images' leads outside the dataset"),
    Case("image-id-absolute", tampered_captions(first_id("train", "/etc/hostname")),
         "captions.json: train[0] image id '/etc/hostname' is an absolute path"),
    Case("image-id-climbs-out", tampered_captions(first_id("test", "../../outside/secret.jpg")),
         "captions.json: test[0] image id '../../outside/secret.jpg' is not a plain relative path"),
    Case("image-file-links-out-at-extract", image_linked_out_at_extract,
         lambda e: f"image {e.dd / 'bad/images/synth_00001.jpg'} leads outside {e.dd / 'bad/images'} (a link to "
                   f"{e.outside / 'synth_00001.jpg'})"),
    Case("data-partial-build-links-out",
         steps(lambda e: (e.dd / ".synthetic-small.partial").symlink_to(outside_folder(e)),
               lambda e: prep(e, "--size", "small", "--extractor", "grid")),
         ".synthetic-small.partial is a link (to ", check=contains("delete the link and run again")),
    Case("dataset-folder-links-to-a-non-dataset",
         steps(lambda e: (e.dd / "synthetic-small").symlink_to(outside_folder(e)),
               lambda e: prep(e, "--size", "small", "--extractor", "grid")),
         "synthetic-small is a link (to ", check=contains("without a manifest.json; nothing was changed")),
    # 10. importers: ids and Karpathy paths name files inside --images
    Case("captions-txt-id-climbs-out", kaggle_with(lambda e: "../../outside/secret.jpg,a secret .\n"),
         "captions.txt:10: image '../../outside/secret.jpg' is not a plain relative path"),
    Case("captions-txt-id-absolute", kaggle_with(lambda e: f"{e.outside / 'secret.jpg'},a secret .\n"),
         lambda e: f"captions.txt:10: image '{e.outside / 'secret.jpg'}' is an absolute path; name a file inside "
                   f"--images"),
    Case("token-file-id-climbs-out", token_file_climbing,
         "Flickr8k.token.txt:2: image '../../outside/secret.jpg' is not a plain relative path"),
    Case("image-links-out-of-images", image_linked_out_of_images,
         lambda e: f"captions.txt: image {e.tmp / 'kaggle/Images/3.jpg'} is a link to {e.outside / 'secret.jpg'}, "
                   f"outside --images {e.tmp / 'kaggle/Images'}"),
    Case("karpathy-filepath-climbs-out", karpathy_with(filepath="../../outside", filename="secret.jpg"),
         "images[0] (secret.jpg): image path '../../outside/secret.jpg' (\"filepath\"/\"filename\") is not a "
         "plain relative path"),
    Case("karpathy-filename-absolute", karpathy_with(filename="/etc/hostname"),
         "images[0] (/etc/hostname): image path '/etc/hostname' (\"filepath\"/\"filename\") is an absolute path"),
    # 11. features files whose rows live elsewhere: refused where every features file is opened
    Case("h5-external-storage", tampered_h5(external_storage),
         lambda e: f"grid.h5: 'global' keeps its rows in an external file ({e.outside / 'rows.bin'})",
         check=contains("and run: python -m benchmarks prepare --name bad --extractor grid --data-dir")),
    Case("h5-external-link", tampered_h5(external_link),
         lambda e: f"grid.h5: 'global' is an external link to {e.outside / 'other.h5'}"),
    Case("h5-soft-link", tampered_h5(soft_link), "grid.h5: 'global' is a soft link"),
    Case("h5-virtual-dataset", tampered_h5(virtual_dataset),
         "grid.h5: 'global' is a virtual dataset (its rows live in other files)"),
    # 12. bounds: what prepare cuts or warns about, what load refuses
    Case("caption-of-10000-words-is-cut", kaggle_with(lambda e: "7.jpg," + "dog " * 10_000 + "\n"),
         f"1 caption(s) longer than {MAX_CAPTION_WORDS} words were cut to {MAX_CAPTION_WORDS}", code=0, keeps="old",
         check=caption_cut),
    Case("min-freq-huge-warns", lambda e: prep(e, "flickr8k", "--images", e.kaggle(), "--name", "f8k",
                                               "--min-freq", "1000000"),
         "warning: the vocabulary has 0 words besides the special tokens", code=0, keeps="old",
         check=warned_in_manifest("100.0% of the val captions' words", "100.0% of the test captions' words")),
    Case("manifest-max-length-absurd",
         steps(bad_manifest(lambda m: {**m, "max_length": 100_000}), lambda e: run(e, "bad")),
         f"manifest.json: 'max_length' is 100000, outside [2, {MAX_LENGTH}]"),
    Case("caption-longer-than-max-length", tampered_captions(long_caption),
         "captions.json: train[0] (synth_00000.jpg) has a caption longer than the manifest's max_length allows"),
    Case("test-image-without-captions", tampered_captions(no_captions("test")),
         "captions.json: test[0] (synth_00350.jpg) has no captions; every image needs at least one"),
    Case("val-image-without-captions-no-verify",
         steps(lambda e: e.edit_json(e.copy("bad") / "captions.json", lambda c: {**c, "val": [
             {**c["val"][0], "captions": []}, *c["val"][1:]]}), lambda e: run(e, "bad", "--no-verify")),
         "captions.json: val[0] (synth_00300.jpg) has no captions"),
    # 13. --dataset given something that is not a prepared dataset: what it is, and what to run
    Case("dataset-is-the-root-folder", lambda e: run(e, "/"),
         lambda e: f"/ is not a prepared dataset (it has no manifest.json); --dataset takes the name of a dataset "
                   f"prepared in {e.dd}"),
    Case("dataset-is-a-flickr8k-folder", lambda e: run(e, e.kaggle()),
         lambda e: f"{e.tmp / 'kaggle'} is a caption source, not a prepared dataset; --dataset takes the name",
         keeps="none", check=import_hint_works),
    Case("dataset-is-a-karpathy-json",
         steps(lambda e: (e.tmp / "dataset_coco.json").write_text("{}"),
               lambda e: export(e, e.tmp / "dataset_coco.json")),
         lambda e: f"import it first: python -m benchmarks prepare karpathy --karpathy-json "
                   f"{e.tmp / 'dataset_coco.json'} --images DIR --data-dir {e.dd}, then pass --dataset karpathy-coco"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, small_dataset, monkeypatch, capsys):
    env = Env(tmp_path, tmp_path / "dd", tmp_path / "outside", small_dataset, monkeypatch)
    env.dd.mkdir()
    env.outside.mkdir()
    (env.outside / "secret.txt").write_text("nothing CapBench may read or change")
    keep = env.copy("keep")
    keep_manifest = (keep / "manifest.json").read_bytes()
    argv = env.saved["argv"] = [str(a) for a in case.setup(env)]
    before, outside_before = snapshot(env.dd), snapshot(env.outside)
    capsys.readouterr()  # the setup's own output
    if case.subprocess:
        done = subprocess.run([sys.executable, "-m", "benchmarks", *argv], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code = main(argv)
        out, err = capsys.readouterr()
    expected = case.message(env) if callable(case.message) else case.message
    assert code == case.code, err
    assert "Traceback" not in out + err
    if case.code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert expected in err, err
    else:
        assert "error" not in err, err
        assert expected in out, out
    after = snapshot(env.dd)
    if case.keeps == "all":
        assert after == before
    elif case.keeps == "old":
        assert {k: after.get(k) for k in before} == before
    assert (keep / "manifest.json").read_bytes() == keep_manifest
    assert snapshot(env.outside) == outside_before
    assert not (env.tmp / "out").exists() and not (env.tmp / "results").exists()
    if case.check:
        case.check(env, err if case.code == 2 else out)
