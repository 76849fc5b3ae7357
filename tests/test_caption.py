"""`python -m benchmarks caption`: a finished run captions image files as it captioned its own test split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.caption import caption, decoder
from benchmarks.cli import main
from tests.conftest import CAPTION_PLUGINS as PLUGINS


@pytest.fixture(scope="module")
def runs(caption_runs) -> Path:
    return caption_runs


def _test_images(small_dataset: Path) -> list[Path]:
    ids = [e["image_id"] for e in json.loads((small_dataset / "captions.json").read_text())["test"]]
    return [small_dataset / "images" / i for i in ids[:20]]


@pytest.mark.parametrize("plugin", PLUGINS[:2])
def test_greedy_captions_equal_the_runs_own(plugin, runs, small_dataset):
    """Same features (the dataset's extractor on the same files), same weights: the run's captions."""
    run = runs / f"{plugin}-s0"
    rows = caption(run, _test_images(small_dataset), decoder())
    own = json.loads((run / "captions.json").read_text())
    assert [r["caption"] for r in rows] == [own[Path(r["image"]).name]["generated"] for r in rows]
    assert all(r["log_prob"] <= 0 and r["decoding"] == "greedy" for r in rows)


def test_sampling_and_files(runs, small_dataset, tmp_path, capsys):
    images = _test_images(small_dataset)[:5]
    rows = caption(runs / "torch_merge-s0", images, decoder(sample=3, temperature=0.8, top_p=0.9, seed=1))
    assert [r["image"] for r in rows] == [str(p) for p in images for _ in range(3)]
    again = caption(runs / "torch_merge-s0", images, decoder(sample=3, temperature=0.8, top_p=0.9, seed=1))
    assert rows == again  # a seed fixes the draws
    diverse = caption(runs / "torch_merge-s0", images, decoder(beam_size=6, groups=3, diversity=2.0))
    assert [r["image"] for r in diverse] == [str(p) for p in images for _ in range(3)]
    assert all(r["decoding"] == "beam 6 (length alpha 0.6, 3 groups, diversity 2)" for r in diverse)
    # the penalty keeps one image's three captions apart
    assert all(len({r["caption"] for r in diverse[k * 3:k * 3 + 3]}) > 1 for k in range(len(images)))
    folder = tmp_path / "mine"
    folder.mkdir()
    for p in images[:2]:
        Image.open(p).resize((300, 170)).save(folder / (p.stem + ".png"))  # any size, png too
    (folder / "notes.txt").write_text("not an image: not listed")
    (folder / "broken.jpg").write_text("not an image: skipped and counted")
    assert main(["caption", str(runs / "torch_merge-s0"), str(folder), "--beam-size", "3", "--out",
                 str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 file(s) that are not readable images" in out and "wrote 2 captions (beam 3" in out
    assert [r["image"] for r in csv.DictReader(open(tmp_path / "c.csv"))] == \
        [str(folder / (p.stem + ".png")) for p in sorted(images[:2], key=lambda p: p.stem)]


@pytest.mark.parametrize("engine", ["jax", "torch"])
def test_a_keras_run_on_another_engine_captions_on_that_engine(engine, small_dataset, data_dir, tmp_path):
    """A Keras run trained on JAX or PyTorch reloads on its own engine (caption runs in a fresh process, as
    Keras picks its engine at its first import) and captions the test images as the run did."""
    import subprocess
    import sys

    pytest.importorskip(engine)
    run = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--plugins", f"keras_merge@{engine}",
                          "--dataset", "synthetic-small", "--steps", "5", "--no-meteor", "--study", "e",
                          "--data-dir", str(data_dir)], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    run_dir = next((tmp_path / "results" / "e").glob("keras_merge*-s0"))
    assert json.loads((run_dir / "metrics.json").read_text())["versions"]["keras_backend"] == engine
    images = _test_images(small_dataset)[:8]
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "caption", str(run_dir), *map(str, images), "--out",
                           str(tmp_path / "c.json")], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((tmp_path / "c.json").read_text())
    own = json.loads((run_dir / "captions.json").read_text())
    assert [r["caption"] for r in rows] == [own[p.name]["generated"] for p in images]


def test_attention_maps_for_each_image(runs, small_dataset, tmp_path):
    images = _test_images(small_dataset)[:3]
    rows = caption(runs / "torch_show_attend_tell-s0", images, decoder(), attention=tmp_path / "att")
    assert sorted(p.name for p in (tmp_path / "att").iterdir()) == sorted(p.stem + ".png" for p in images)
    assert len(rows) == 3 and all(Image.open(tmp_path / "att" / (p.stem + ".png")).width > 100 for p in images)


def _published(runs: Path, tmp: Path) -> Path:
    import shutil

    copy = tmp / "published-s0"
    shutil.copytree(runs / "torch_merge-s0", copy)
    for w in copy.glob("weights*"):
        w.unlink()
    return copy


def _bomb(tmp: Path) -> Path:
    Image.new("1", (12_000, 12_000)).save(tmp / "bomb.png")  # 144 Mpixel in a few kB
    return tmp / "bomb.png"


CASES = [
    (lambda runs, tmp, img: [runs / "nothing", img], "is not a finished run"),
    (lambda runs, tmp, img: [_published(runs, tmp), img], "has no weights file"),
    (lambda runs, tmp, img: [runs / "torch_merge-s0", tmp / "nowhere.jpg"], "no such file or folder"),
    (lambda runs, tmp, img: [runs / "torch_merge-s0", tmp], "no images (.jpg, .jpeg, .png) in"),
    (lambda runs, tmp, img: [runs / "torch_merge-s0", _bomb(tmp)], "none of the 1 file(s) is a readable image"),
    (lambda runs, tmp, img: [runs / "torch_merge-s0", img, "--sample", "2", "--beam-size", "3"],
     "--sample and --beam-size are two ways to decode"),
    (lambda runs, tmp, img: [runs / "torch_merge-s0", img, "--top-p", "0"],
     "--top-p 0: expected a finite number in (0, 1]"),
    (lambda runs, tmp, img: [runs / "torch_merge-s0", img, "--temperature", "-1"], "--temperature -1: expected"),
    (lambda runs, tmp, img: [runs / "torch_merge-s0", img, "--beam-size", "3", "--groups", "2"],
     "--groups 2: the beam (3) must split into equal groups"),
    (lambda runs, tmp, img: [runs / "torch_merge-s0", img, "--out", tmp / "x.txt"], "write a .csv or a .json"),
    (lambda runs, tmp, img: [runs / "torch_merge-s0", img, "--attention", tmp / "att"],
     "--attention: torch_merge does not attend over the image"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[m[:30] for _, m in CASES])
def test_bad_caption_input_is_one_line(argv, message, runs, small_dataset, tmp_path, capsys):
    args = argv(runs, tmp_path, _test_images(small_dataset)[0])
    try:
        code = main(["caption", *map(str, args)])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
