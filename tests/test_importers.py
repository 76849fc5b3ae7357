"""Tests for shared_data.importers on tiny handmade Flickr8k and Karpathy data made in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from shared_data import flickr8k, flickr_export, importers
from shared_data.errors import UserError
from shared_data.flickr8k import load_flickr8k
from shared_data.flickr_export import export_flickr8k
from shared_data.karpathy import load_karpathy
from shared_data.sources import SourceImage

SPLIT_FILE_NAMES = ("Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt", "Flickr_8k.testImages.txt")


# ------------------------------------------------------------------------------------------ helpers
def make_jpeg(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade % 256, 100, 200)).save(path, "JPEG")
    return path


def make_kaggle(root: Path, captions_text: str, images: list[str] | None = None) -> Path:
    """A Kaggle-layout root; `images` are the files to create (default: none)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "captions.txt").write_text(captions_text, encoding="utf-8")
    for i, name in enumerate(images or []):
        make_jpeg(root / "Images" / name, i)
    (root / "Images").mkdir(exist_ok=True)
    return root


def captions_csv(rows: list[tuple[str, str]]) -> str:
    return "image,caption\n" + "".join(f"{i},{c}\n" for i, c in rows)


def write_splits(folder: Path, train: list[str], dev: list[str], test: list[str]) -> None:
    for name, ids in zip(SPLIT_FILE_NAMES, (train, dev, test), strict=True):
        (folder / name).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip(), message
    return message


def as_tuples(source) -> list[tuple[str, str, list[str]]]:
    return [(im.image_id, im.split, im.captions) for im in source.images]


STANDARD_ROWS = [
    ("b.jpg", "A dog runs ."),
    ("a.jpg", "A child climbs ."),
    ("b.jpg", "The dog is running fast ."),
    ("c.jpg", "Two birds ."),
    ("a.jpg", "A girl on stairs ."),
    ("d.jpg", "A man on a bike ."),
]


# ------------------------------------------------------------------------------------------ Flickr8k
def test_flickr8k_order_captions_and_split_files(tmp_path):
    root = make_kaggle(tmp_path / "f8k", captions_csv(STANDARD_ROWS), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    write_splits(root, ["a.jpg", "b.jpg"], ["c.jpg"], ["d.jpg"])
    src = load_flickr8k(root)
    assert src.name == "flickr8k"
    assert as_tuples(src) == [
        ("b.jpg", "train", ["A dog runs .", "The dog is running fast ."]),
        ("a.jpg", "train", ["A child climbs .", "A girl on stairs ."]),
        ("c.jpg", "val", ["Two birds ."]),
        ("d.jpg", "test", ["A man on a bike ."]),
    ]
    assert src.images[0].path == root / "Images" / "b.jpg"
    assert src.warnings == []
    assert "split files" in src.info["split_rule"] and "dev -> val" in src.info["split_rule"]
    assert src.info["split_counts"] == {"train": 2, "val": 1, "test": 1}


def test_flickr8k_accepts_the_images_folder_and_an_explicit_captions_file(tmp_path):
    root = make_kaggle(tmp_path / "f8k", captions_csv(STANDARD_ROWS), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    from_root = as_tuples(load_flickr8k(root))
    assert as_tuples(load_flickr8k(root / "Images")) == from_root
    elsewhere = tmp_path / "elsewhere.csv"
    shutil.copyfile(root / "captions.txt", elsewhere)
    assert as_tuples(load_flickr8k(root / "Images", captions_file=elsewhere)) == from_root


def test_a_linked_images_folder_is_followed_but_not_a_link_out_of_it(tmp_path):
    """--images may itself be a link (the data on another disk); a file in it may not lead out of it."""
    real = make_kaggle(tmp_path / "disk" / "f8k", captions_csv(STANDARD_ROWS), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    (tmp_path / "f8k").symlink_to(real)
    assert len(load_flickr8k(tmp_path / "f8k").images) == 4
    make_jpeg(tmp_path / "secret.jpg")
    (real / "Images" / "d.jpg").unlink()
    (real / "Images" / "d.jpg").symlink_to(tmp_path / "secret.jpg")
    msg = one_line_error(load_flickr8k, tmp_path / "f8k")
    assert "d.jpg is a link to" in msg and "outside --images" in msg


@pytest.mark.parametrize("image_id", ["../x.jpg", "/abs/x.jpg", "a//x.jpg", "./x.jpg", "a\\x.jpg"])
def test_ids_that_leave_the_images_folder_are_refused_at_their_line(tmp_path, image_id):
    root = make_kaggle(tmp_path / "f8k", captions_csv([*STANDARD_ROWS, (image_id, "A secret .")]), ["a.jpg"])
    msg = one_line_error(load_flickr8k, root)
    assert f"captions.txt:8: image {image_id!r}" in msg and "name a file inside --images" in msg


def test_import_command_recognises_sources_only(tmp_path, small_dataset):
    root = make_kaggle(tmp_path / "f8k", captions_csv(STANDARD_ROWS))
    assert importers.import_command(root) == (["flickr8k", "--images", str(root)], "flickr8k")
    json_file = write_json(tmp_path / "dataset_coco.json", {"images": []})
    assert importers.import_command(json_file)[1] == "karpathy-coco"
    assert importers.import_command(small_dataset) is None and importers.import_command(tmp_path / "none") is None


def test_flickr8k_kaggle_quirk_unquoted_commas(tmp_path):
    text = ("image,caption\n"
            "a.jpg,A dog, a cat, and a bird play .\n"
            'a.jpg,"A quoted caption, with a comma ."\n'
            "a.jpg,Plain caption .\n")
    root = make_kaggle(tmp_path / "f8k", text, ["a.jpg"])
    src = load_flickr8k(root)
    assert src.images[0].captions == [
        "A dog, a cat, and a bird play .", "A quoted caption, with a comma .", "Plain caption ."]


def test_flickr8k_bom_and_blank_lines_are_tolerated(tmp_path):
    root = make_kaggle(tmp_path / "f8k", "", ["a.jpg"])
    (root / "captions.txt").write_bytes("\ufeffimage,caption\r\na.jpg,One .\r\n\r\na.jpg,Two .\r\n".encode())
    assert load_flickr8k(root).images[0].captions == ["One .", "Two ."]


def test_flickr8k_round_trip_through_export(tmp_path):
    rows = STANDARD_ROWS + [("c.jpg", 'He said "hi", then left .'), ("e.jpg", "A, B, C .")]
    root = make_kaggle(tmp_path / "f8k", captions_csv(rows), ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    write_splits(root, ["a.jpg", "e.jpg"], ["b.jpg", "c.jpg"], ["d.jpg"])
    first = load_flickr8k(root)
    out = export_flickr8k(first.images, tmp_path / "export")
    assert out == tmp_path / "export"
    again = load_flickr8k(out)
    assert as_tuples(again) == as_tuples(first)
    assert again.warnings == []
    assert (out / "captions.txt").read_text(encoding="utf-8").splitlines()[0] == "image,caption"
    assert (out / "Images" / "a.jpg").read_bytes() == (root / "Images" / "a.jpg").read_bytes()
    # nothing but the export itself is left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "f8k"]


def test_round_trip_of_a_seeded_split_keeps_the_splits(tmp_path):
    names = [f"img{i:02d}.jpg" for i in range(16)]
    root = make_kaggle(tmp_path / "f8k", captions_csv([(n, f"caption {n} .") for n in names]), names)
    first = load_flickr8k(root, seed=3)
    again = load_flickr8k(export_flickr8k(first.images, tmp_path / "out"))
    assert as_tuples(again) == as_tuples(first)
    assert "split files" in again.info["split_rule"]


def test_seeded_split_is_deterministic_and_proportioned(tmp_path):
    names = [f"img{i:02d}.jpg" for i in range(16)]
    rows = [(n, f"caption {n} .") for n in names]
    root = make_kaggle(tmp_path / "f8k", captions_csv(rows), names)
    a = load_flickr8k(root, seed=0)
    b = load_flickr8k(root, seed=0)
    c = load_flickr8k(root, seed=1)
    split = {im.image_id: im.split for im in a.images}
    assert split == {im.image_id: im.split for im in b.images}
    assert split != {im.image_id: im.split for im in c.images}
    assert a.info["split_counts"] == {"train": 12, "val": 2, "test": 2}
    assert a.info["seed"] == 0 and "default_rng(0)" in a.info["split_rule"] and "75%" in a.info["split_rule"]
    assert [im.image_id for im in a.images] == names  # the split never reorders images
    # the split depends on the ids, not on the order of captions.txt
    (root / "captions.txt").write_text(captions_csv(rows[::-1]), encoding="utf-8")
    assert {im.image_id: im.split for im in load_flickr8k(root, seed=0).images} == split


def test_seeded_split_has_karpathy_proportions_at_full_size():
    split = flickr8k._seeded_split([f"{i}.jpg" for i in range(8000)], seed=0)
    counts = {s: list(split.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 6000, "val": 1000, "test": 1000}


def test_missing_files_are_skipped_and_counted(tmp_path):
    root = make_kaggle(tmp_path / "f8k", captions_csv(STANDARD_ROWS), ["a.jpg", "d.jpg"])
    src = load_flickr8k(root)
    assert [im.image_id for im in src.images] == ["a.jpg", "d.jpg"]
    assert len(src.warnings) == 1
    w = src.warnings[0]
    assert w.startswith("2 images listed in captions.txt have no file in ") and "(first: b.jpg)" in w


def test_no_file_at_all_is_an_error(tmp_path):
    root = make_kaggle(tmp_path / "f8k", captions_csv(STANDARD_ROWS), [])
    msg = one_line_error(load_flickr8k, root)
    assert "none of the 4 images" in msg and "captions.txt" in msg and "--images" in msg


def test_split_files_unassigned_and_unknown_images_are_counted(tmp_path):
    root = make_kaggle(tmp_path / "f8k", captions_csv(STANDARD_ROWS), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    write_splits(root, ["a.jpg", "zz.jpg"], ["c.jpg", "yy.jpg"], ["xx.jpg"])
    src = load_flickr8k(root)
    assert {im.image_id: im.split for im in src.images} == {
        "b.jpg": "train", "a.jpg": "train", "c.jpg": "val", "d.jpg": "train"}
    assert any(w.startswith("3 images named in the Flickr_8k.*Images.txt split files are not in captions.txt")
               and "(first: zz.jpg)" in w for w in src.warnings), src.warnings
    assert any(w.startswith("2 images in captions.txt are in none of the") and "put in train" in w
               and "(first: b.jpg)" in w for w in src.warnings), src.warnings


def test_partial_split_files_are_an_error(tmp_path):
    root = make_kaggle(tmp_path / "f8k", captions_csv(STANDARD_ROWS), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    (root / "Flickr_8k.trainImages.txt").write_text("a.jpg\n", encoding="utf-8")
    msg = one_line_error(load_flickr8k, root)
    assert "Flickr_8k.devImages.txt" in msg and "Flickr_8k.testImages.txt" in msg


def test_image_in_two_split_files_is_an_error(tmp_path):
    root = make_kaggle(tmp_path / "f8k", captions_csv(STANDARD_ROWS), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    write_splits(root, ["a.jpg", "b.jpg"], ["c.jpg"], ["d.jpg", "b.jpg"])
    msg = one_line_error(load_flickr8k, root)
    assert "Flickr_8k.testImages.txt:2" in msg and "b.jpg" in msg and "Flickr_8k.trainImages.txt:2" in msg


# --------------------------------------------------------------------------------- Flickr8k: bad input
def test_images_dir_missing(tmp_path):
    msg = one_line_error(load_flickr8k, tmp_path / "nope")
    assert "--images" in msg and str(tmp_path / "nope") in msg and "no such directory" in msg


def test_images_dir_is_a_file(tmp_path):
    f = tmp_path / "file.jpg"
    f.write_text("x")
    msg = one_line_error(load_flickr8k, f)
    assert "--images" in msg and str(f) in msg and "not a directory" in msg


def test_captions_file_missing(tmp_path):
    (tmp_path / "root" / "Images").mkdir(parents=True)
    msg = one_line_error(load_flickr8k, tmp_path / "root")
    assert "captions.txt" in msg and str(tmp_path / "root") in msg and "--captions" in msg
    msg = one_line_error(load_flickr8k, tmp_path / "root", captions_file=tmp_path / "gone.txt")
    assert "--captions" in msg and "gone.txt" in msg and "no such file" in msg


@pytest.mark.parametrize("header", ["image,text", "caption,image", "image\tcaption", ""])
def test_captions_header_wrong(tmp_path, header):
    root = make_kaggle(tmp_path / "f8k", f"{header}\na.jpg,A dog .\n" if header else "", ["a.jpg"])
    msg = one_line_error(load_flickr8k, root)
    assert "captions.txt:1" in msg and "expected header 'image,caption'" in msg
    assert (f"header is {header!r}" in msg) if header else ("file is empty" in msg)


def test_a_token_file_is_read_whatever_its_name(tmp_path):
    root = make_kaggle(tmp_path / "f8k", "a.jpg#0\tA dog .\na.jpg#1\tA cat .\n", ["a.jpg"])
    assert as_tuples(load_flickr8k(root, seed=0))[0][::2] == ("a.jpg", ["A dog .", "A cat ."])


def make_original(root: Path, lines: list[str], images: list[str]) -> Path:
    """The original archive's layout: Flickr8k_Dataset/Flicker8k_Dataset/*.jpg, Flickr8k_text/."""
    for i, name in enumerate(images):
        make_jpeg(root / "Flickr8k_Dataset" / "Flicker8k_Dataset" / name, i)
    text = root / "Flickr8k_text"
    text.mkdir(parents=True, exist_ok=True)
    (text / importers.TOKEN_FILE).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return root


TOKEN_LINES = [f"{image}#{k}\t{caption}" for k, (image, caption) in enumerate(STANDARD_ROWS)]


@pytest.mark.parametrize("where", ["root", "dataset folder", "image folder"])
def test_flickr8k_original_layout(tmp_path, where):
    root = make_original(tmp_path / "orig", TOKEN_LINES, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    write_splits(root / "Flickr8k_text", ["b.jpg", "a.jpg"], ["c.jpg"], ["d.jpg"])
    given = {"root": root, "dataset folder": root / "Flickr8k_Dataset",
             "image folder": root / "Flickr8k_Dataset" / "Flicker8k_Dataset"}[where]
    source = load_flickr8k(given)
    assert as_tuples(source) == [
        ("b.jpg", "train", ["A dog runs .", "The dog is running fast ."]),
        ("a.jpg", "train", ["A child climbs .", "A girl on stairs ."]),
        ("c.jpg", "val", ["Two birds ."]),
        ("d.jpg", "test", ["A man on a bike ."]),
    ]
    assert source.info["captions_file"].endswith("Flickr8k_text/Flickr8k.token.txt")
    assert source.info["split_rule"].startswith("original Flickr8k split files")


def test_flickr8k_token_file_bad_line_names_it(tmp_path):
    root = make_original(tmp_path / "orig", [*TOKEN_LINES[:2], "b.jpg A dog without a tab", *TOKEN_LINES[2:]],
                         ["a.jpg", "b.jpg"])
    msg = one_line_error(load_flickr8k, root)
    assert "Flickr8k.token.txt:3:" in msg and "<TAB>" in msg


@pytest.mark.parametrize("bad_row, what", [
    (",A caption with no image .", "empty image field"),
    ("c.jpg,", "empty caption for c.jpg"),
    ("c.jpg", "empty caption for c.jpg"),
    ("c.jpg,   ", "empty caption for c.jpg"),
    (",", "empty image field"),
])
def test_empty_field_names_the_line(tmp_path, bad_row, what):
    text = "image,caption\na.jpg,One .\nb.jpg,Two .\n" + bad_row + "\nd.jpg,Four .\n"
    root = make_kaggle(tmp_path / "f8k", text, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    msg = one_line_error(load_flickr8k, root)
    assert "captions.txt:4:" in msg and what in msg


def test_a_record_spanning_lines_is_refused_at_its_first_line(tmp_path):
    """csv lets a quoted field run over lines; one stray quote would then merge the rows after it
    into one caption. No Flickr8k caption spans lines, so that is an error, never a merge."""
    text = 'image,caption\na.jpg,"One, quoted ."\nb.jpg,"Two\nlines ."\nc.jpg,Three .\n'
    root = make_kaggle(tmp_path / "f8k", text, ["a.jpg", "b.jpg", "c.jpg"])
    assert "captions.txt:3: unclosed quote" in one_line_error(load_flickr8k, root)


def test_header_only_is_an_error(tmp_path):
    root = make_kaggle(tmp_path / "f8k", "image,caption\n", ["a.jpg"])
    assert "no caption rows" in one_line_error(load_flickr8k, root)


def test_not_utf8_names_the_line(tmp_path):
    root = make_kaggle(tmp_path / "f8k", "", ["a.jpg"])
    (root / "captions.txt").write_bytes(b"image,caption\na.jpg,One .\na.jpg,caf\xe9 .\n")
    msg = one_line_error(load_flickr8k, root)
    assert "captions.txt:3:" in msg and "UTF-8" in msg


# ------------------------------------------------------------------------------------------ Karpathy
def karpathy_entry(filename: str, split: str, *raws: str, filepath: str | None = None) -> dict:
    entry = {"filename": filename, "split": split, "imgid": 0,
             "sentences": [{"raw": r, "tokens": r.lower().rstrip(" .").split()} for r in raws]}
    if filepath is not None:
        entry["filepath"] = filepath
    return entry


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def test_karpathy_flickr8k_style(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        make_jpeg(tmp_path / "imgs" / name)
    data = {"dataset": "flickr8k", "images": [
        karpathy_entry("b.jpg", "train", "A dog runs .", "The dog is fast ."),
        karpathy_entry("a.jpg", "restval", "A child climbs ."),
        karpathy_entry("c.jpg", "val", "Two birds ."),
        karpathy_entry("d.jpg", "test", "A man on a bike ."),
    ]}
    data["images"][2]["sentences"].append({"tokens": ["no", "raw", "here"]})
    src = load_karpathy(write_json(tmp_path / "dataset_flickr8k.json", data), tmp_path / "imgs")
    assert src.name == "karpathy-flickr8k"
    assert as_tuples(src) == [
        ("b.jpg", "train", ["A dog runs .", "The dog is fast ."]),
        ("a.jpg", "train", ["A child climbs ."]),
        ("c.jpg", "val", ["Two birds .", "no raw here"]),
        ("d.jpg", "test", ["A man on a bike ."]),
    ]
    assert src.images[0].path == tmp_path / "imgs" / "b.jpg"
    assert "restval" in src.info["split_rule"] and "(1 images)" in src.info["split_rule"]
    assert src.info["split_counts"] == {"train": 2, "val": 1, "test": 1}
    assert src.warnings == []


def test_karpathy_coco_style_filepath(tmp_path):
    make_jpeg(tmp_path / "coco" / "train2014" / "COCO_train2014_1.jpg")
    make_jpeg(tmp_path / "coco" / "val2014" / "COCO_val2014_2.jpg")
    make_jpeg(tmp_path / "coco" / "val2014" / "COCO_val2014_3.jpg")
    data = {"dataset": "coco", "images": [
        karpathy_entry("COCO_train2014_1.jpg", "train", "A cat .", filepath="train2014"),
        karpathy_entry("COCO_val2014_2.jpg", "restval", "A bus .", filepath="val2014"),
        karpathy_entry("COCO_val2014_3.jpg", "test", "A kite .", filepath="val2014"),
    ]}
    src = load_karpathy(write_json(tmp_path / "dataset_coco.json", data), tmp_path / "coco")
    assert src.name == "karpathy-coco"
    assert [(im.image_id, im.split) for im in src.images] == [
        ("train2014/COCO_train2014_1.jpg", "train"), ("val2014/COCO_val2014_2.jpg", "train"),
        ("val2014/COCO_val2014_3.jpg", "test")]
    assert src.images[1].path == tmp_path / "coco" / "val2014" / "COCO_val2014_2.jpg"
    # COCO ids hold a folder, which the flat Flickr8k layout cannot
    msg = one_line_error(export_flickr8k, src.images, tmp_path / "out")
    assert "train2014/COCO_train2014_1.jpg" in msg and "plain file name" in msg
    assert not (tmp_path / "out").exists()


def test_karpathy_missing_files_are_skipped_and_counted(tmp_path):
    make_jpeg(tmp_path / "imgs" / "a.jpg")
    data = {"dataset": "flickr30k", "images": [karpathy_entry(n, "train", "x .") for n in
                                               ("gone1.jpg", "a.jpg", "gone2.jpg")]}
    src = load_karpathy(write_json(tmp_path / "k.json", data), tmp_path / "imgs")
    assert [im.image_id for im in src.images] == ["a.jpg"]
    assert src.warnings[0].startswith("2 images listed in k.json have no file in ")
    assert "(first: gone1.jpg)" in src.warnings[0]
    (tmp_path / "imgs" / "a.jpg").unlink()
    assert "none of the 3 images" in one_line_error(load_karpathy, tmp_path / "k.json", tmp_path / "imgs")


def test_karpathy_not_json(tmp_path):
    (tmp_path / "imgs").mkdir()
    bad = tmp_path / "dataset_flickr8k.json"
    bad.write_text('{"dataset": "flickr8k",\n  "images": [\n    {"filename": "a.jpg",,}\n]}\n')
    msg = one_line_error(load_karpathy, bad, tmp_path / "imgs")
    assert "dataset_flickr8k.json:3:" in msg and "not valid JSON" in msg


def test_karpathy_json_file_missing(tmp_path):
    (tmp_path / "imgs").mkdir()
    msg = one_line_error(load_karpathy, tmp_path / "nope.json", tmp_path / "imgs")
    assert "nope.json" in msg and "no such file" in msg


def test_karpathy_images_dir_missing(tmp_path):
    data = {"dataset": "x", "images": [karpathy_entry("a.jpg", "train", "x")]}
    path = write_json(tmp_path / "k.json", data)
    msg = one_line_error(load_karpathy, path, tmp_path / "nope")
    assert "--images" in msg and "nope" in msg


@pytest.mark.parametrize("data", [{"dataset": "coco"}, [1, 2], {"images": {"a": 1}}])
def test_karpathy_without_images(tmp_path, data):
    (tmp_path / "imgs").mkdir()
    msg = one_line_error(load_karpathy, write_json(tmp_path / "k.json", data), tmp_path / "imgs")
    assert "k.json" in msg and '"images"' in msg


@pytest.mark.parametrize("mutate, expected", [
    (lambda e: e.pop("filename"), ['images[1] has no "filename"']),
    (lambda e: e.pop("split"), ["images[1] (b.jpg)", '"split"']),
    (lambda e: e.update(split="dev"), ["images[1] (b.jpg)", "unknown split 'dev'", "restval"]),
    (lambda e: e.pop("sentences"), ["images[1] (b.jpg)", '"sentences"']),
    (lambda e: e.update(sentences=[]), ["images[1] (b.jpg)", "empty", "at least one caption"]),
    (lambda e: e.update(sentences=[{"raw": "ok"}, {"imgid": 1}]), ["images[1] (b.jpg)", "sentences[1]"]),
])
def test_karpathy_bad_entry_names_index_and_file(tmp_path, mutate, expected):
    (tmp_path / "imgs").mkdir()
    entries = [karpathy_entry("a.jpg", "train", "x ."), karpathy_entry("b.jpg", "train", "y ."),
               karpathy_entry("c.jpg", "train", "z .")]
    mutate(entries[1])
    path = write_json(tmp_path / "k.json", {"dataset": "flickr8k", "images": entries})
    msg = one_line_error(load_karpathy, path, tmp_path / "imgs")
    assert "k.json" in msg
    for part in expected:
        assert part in msg, (part, msg)


def test_karpathy_duplicate_ids(tmp_path):
    (tmp_path / "imgs").mkdir()
    entries = [karpathy_entry("a.jpg", "train", "x", filepath="val2014"),
               karpathy_entry("b.jpg", "train", "y", filepath="val2014"),
               karpathy_entry("a.jpg", "test", "z", filepath="val2014")]
    path = write_json(tmp_path / "k.json", {"dataset": "coco", "images": entries})
    msg = one_line_error(load_karpathy, path, tmp_path / "imgs")
    assert "duplicate image id 'val2014/a.jpg'" in msg and "images[2]" in msg and "images[0]" in msg


# ------------------------------------------------------------------------------------------ export
def test_export_refuses_a_non_empty_output_folder(tmp_path):
    img = SourceImage("a.jpg", "train", ["x ."], make_jpeg(tmp_path / "src" / "a.jpg"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    msg = one_line_error(export_flickr8k, [img], tmp_path / "out")
    assert str(tmp_path / "out") in msg and "already exists" in msg
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    (tmp_path / "out" / "keep.txt").unlink()
    assert load_flickr8k(export_flickr8k([img], tmp_path / "out")).images[0].captions == ["x ."]


def test_export_checks_input_before_writing(tmp_path):
    good = SourceImage("a.jpg", "train", ["x ."], make_jpeg(tmp_path / "src" / "a.jpg"))
    cases = [
        (SourceImage("b.jpg", "train", ["y ."], tmp_path / "src" / "gone.jpg"), "gone.jpg"),
        (SourceImage("a.jpg", "test", ["y ."], good.path), "duplicate"),
        (SourceImage("b.jpg", "dev", ["y ."], good.path), "unknown split 'dev'"),
        (SourceImage("b.jpg", "val", [], good.path), "no captions"),
    ]
    for bad, expected in cases:
        msg = one_line_error(export_flickr8k, [good, bad], tmp_path / "out")
        assert "image 1 " in msg and expected in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_export_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    images = [SourceImage(f"{i}.jpg", "train", ["x ."], make_jpeg(tmp_path / "src" / f"{i}.jpg"))
              for i in range(3)]
    real_copy = shutil.copyfile
    calls = []

    def failing_copy(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(dst))
        return real_copy(src, dst)

    monkeypatch.setattr(flickr_export.shutil, "copyfile", failing_copy)
    msg = one_line_error(export_flickr8k, images, tmp_path / "out")
    assert "No space left on device" in msg and "nothing was written" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# ------------------------------------------------------------------------------ PTB tokenisation
def test_imported_datasets_are_tokenised_and_scored_as_the_coco_evaluation_does(tmp_path):
    """An imported dataset's captions go through pycocoevalcap's PTB tokenizer at prepare time, so the
    human ceiling (and every model score) equals the COCO toolkit's own pipeline on the raw text."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from benchmarks.data.prepare import PrepareOptions, prepare
    from shared_data.dataset import load_dataset

    raw = {f"{k}.jpg": [f"A man's dog in a t-shirt runs {k} times .", "The dog, wearing a T-shirt, runs!",
                        f"Two people's kites fly {k % 3} times high .", "It's a well-known park ."]
           for k in range(8)}
    lines = [f"{image}#{j}\t{c}" for image, caps in raw.items() for j, c in enumerate(caps)]
    root = make_original(tmp_path / "orig", lines, list(raw))
    path = prepare(PrepareOptions(dataset="flickr8k", images=root, extractor="grid", data_dir=tmp_path / "data"),
                   log=lambda *_: None)
    ds = load_dataset(str(path))
    assert ds.manifest["tokenizer"] == "ptb"
    first = ds.splits["train"].captions[0]
    assert first[0][:5] == ["a", "man", "'s", "dog", "in"] and "t-shirt" in first[0]
    assert "," not in first[1] and "!" not in first[1] and "t-shirt" in first[1]

    test_ids = ds.splits["test"].image_ids
    tokenised = PTBTokenizer().tokenize({i: [{"caption": c} for c in raw[i]] for i in test_ids})
    gts = {i: tokenised[i][1:] for i in test_ids}
    res = {i: tokenised[i][:1] for i in test_ids}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    ceiling = ds.manifest["human_ceiling_test"]
    assert ceiling["BLEU-4"] == round(bleu[3], 4) and ceiling["CIDEr"] == round(cider, 4)


def test_generated_datasets_keep_their_own_tokenizer(small_dataset):
    from shared_data.dataset import load_dataset

    assert load_dataset(str(small_dataset)).manifest["tokenizer"] == "capbench"
