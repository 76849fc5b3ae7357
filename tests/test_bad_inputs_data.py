"""Bad input and faults for prepare, the importers and dataset loading: one table, one test.

Every case sets up one bad input in tmp_path, next to a finished dataset (`keep`, a copy of the
session's synthetic-small), runs the command in-process through benchmarks.cli.main (two cases in a
subprocess, to show there is no traceback end to end) and checks the exit code, that stderr is one
`error:` line naming what is wrong, and that every file that was in the data dir before is still
there byte for byte (or, for the cases that build, that only new files appeared).
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

import benchmarks.prepare as prepare_mod
from benchmarks.cli import main
from benchmarks.prepare import PrepareOptions, prepare
from shared_data import dataset as dataset_mod
from shared_data.dataset import load_dataset

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Env:
    tmp: Path
    dd: Path  # the data dir of the case
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
    env.monkeypatch.setattr(prepare_mod, "write_features", raise_on_write(errno.ENOSPC, "No space left on device"))
    return prep(env, "flickr8k", "--images", env.kaggle(), "--name", "f8k")


def h5py_disk_full(env: Env) -> list:
    def fail(*args, **kwargs):  # how h5py reports it: no errno attribute, the number in the text
        raise OSError("Unable to synchronously create file (unable to open file: name = 'x.h5', errno = 28, "
                      "error message = 'No space left on device', flags = 13, o_flags = 242)")
    env.monkeypatch.setattr(prepare_mod, "write_features", fail)
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
    env.monkeypatch.setattr(dataset_mod, "write_json_atomic", raise_on_write(errno.EROFS, "Read-only file system"))
    return prep(env, "flickr8k", "--images", env.kaggle(), "--name", "f8k")


def read_only_dataset(env: Env) -> list:
    """Adding an extractor to a finished dataset whose folder cannot be written."""
    import benchmarks.extractors as ex

    spec = ex.ExtractorSpec("grid2", "numpy", 128, "shared_data.grid:extract", "a copy of grid", needs_weights=False)
    env.monkeypatch.setitem(ex.EXTRACTORS, "grid2", spec)
    env.monkeypatch.setattr(prepare_mod, "write_features", raise_on_write(errno.EACCES, "Permission denied"))
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
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, small_dataset, monkeypatch, capsys):
    env = Env(tmp_path, tmp_path / "dd", small_dataset, monkeypatch)
    env.dd.mkdir()
    keep = env.copy("keep")
    keep_manifest = (keep / "manifest.json").read_bytes()
    argv = env.saved["argv"] = [str(a) for a in case.setup(env)]
    before = snapshot(env.dd)
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
    assert not (env.tmp / "out").exists() and not (env.tmp / "results").exists()
    if case.check:
        case.check(env, err if case.code == 2 else out)
