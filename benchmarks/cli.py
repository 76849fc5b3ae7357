"""Command line: `python -m benchmarks {prepare,list,run,report,export}`.

Every user-fixable problem arrives here as a UserError and leaves as one line on stderr with exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared_data.dataset import DATA_DIR_ENV, DEFAULT_DATASET
from shared_data.errors import UserError


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"where prepared datasets live (default: ${DATA_DIR_ENV} or shared_data/datasets/)")


def _add_verify_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the sha256 checks of the dataset's files (shapes and NaN are still checked)")


def build_parser() -> argparse.ArgumentParser:
    from .extractors import DEFAULT_EXTRACTOR, EXTRACTORS
    from .prepare import DATASETS

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="CapBench: is it the framework or the architecture? Train image-captioning plugins "
                    "in Keras and PyTorch under one budget and compare them.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="build a dataset (default: the embedded synthetic one) with features",
                       description="Build a prepared dataset: captions, vocabulary, splits and features.")
    p.add_argument("dataset", nargs="?", default="synthetic", metavar="DATASET",
                   help=f"one of {', '.join(DATASETS)} (default: synthetic)")
    p.add_argument("--size", default="full", help="synthetic only: full (8,000 images) or small (400)")
    p.add_argument("--extractor", default=DEFAULT_EXTRACTOR,
                   help=f"feature extractor, one of {', '.join(EXTRACTORS)} (default: {DEFAULT_EXTRACTOR})")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet (from the library's weights cache), none (random, for testing) or a file")
    p.add_argument("--images", type=Path, help="flickr8k/karpathy: the image folder")
    p.add_argument("--captions", type=Path, help="flickr8k: captions.txt (default: next to the images)")
    p.add_argument("--karpathy-json", type=Path, help="karpathy: dataset_{flickr8k,flickr30k,coco}.json")
    p.add_argument("--name", help="folder name of the prepared dataset (default: from the source)")
    p.add_argument("--min-freq", type=int, default=1,
                   help="keep words seen at least this often in train (1 as in the Keras recipe, "
                        "5 as in the attention recipes)")
    p.add_argument("--seed", type=int, default=0, help="generator seed / split seed")
    p.add_argument("--batch-size", type=int, default=64, help="images per extraction batch")
    _add_data_args(p)

    p = sub.add_parser("list", help="list plugins, datasets and feature extractors")
    _add_data_args(p)

    p = sub.add_parser("export", help="write a prepared dataset in Flickr8k's Kaggle layout")
    p.add_argument("out_dir", type=Path, help="folder to create (Images/ + captions.txt)")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="prepared dataset to export")
    _add_data_args(p)
    _add_verify_arg(p)

    p = sub.add_parser("run", help="train and evaluate plugins under one budget, write a report")
    p.add_argument("--plugins", help="comma-separated plugin names")
    _add_data_args(p)

    p = sub.add_parser("report", help="rebuild a study's report from its saved runs")
    p.add_argument("study", type=Path, help="results/<study>")
    return parser


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import PrepareOptions, prepare

    prepare(PrepareOptions(dataset=args.dataset, size=args.size, extractor=args.extractor,
                           weights=args.weights, images=args.images, captions=args.captions,
                           karpathy_json=args.karpathy_json, data_dir=args.data_dir, name=args.name,
                           min_freq=args.min_freq, seed=args.seed, batch_size=args.batch_size))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from shared_data.dataset import default_data_dir, load_dataset

    from .extractors import EXTRACTORS

    print("Feature extractors")
    print(tabulate([(s.name, s.framework, s.image_size, s.description) for s in EXTRACTORS.values()],
                   headers=["name", "framework", "input px", "what"]))
    data_dir = args.data_dir or default_data_dir()
    rows = []
    for path in sorted(data_dir.glob("*/manifest.json")) if data_dir.exists() else []:
        try:
            m = load_dataset(str(path.parent), verify=False).manifest
        except UserError as e:
            rows.append((path.parent.name, "unusable: " + str(e), "", "", ""))
            continue
        sp = m["splits"]
        rows.append((m["name"], m["source"]["kind"], "/".join(str(sp[s]["images"]) for s in sp),
                     m["vocab"]["size"], ", ".join(sorted(m["features"]))))
    print(f"\nDatasets in {data_dir}")
    if rows:
        print(tabulate(rows, headers=["name", "source", "train/val/test images", "vocab", "features"]))
    else:
        print("none yet; create the default one with: python -m benchmarks prepare")
    print("\nPlugins\nnone registered yet: the model plugins arrive with the comparison harness")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from shared_data.dataset import load_dataset
    from shared_data.importers import export_flickr8k
    from shared_data.sources import SPLITS, SourceImage

    ds = load_dataset(args.dataset, args.data_dir, verify=args.verify)
    images = [SourceImage(i, s, [" ".join(c) for c in caps], ds.image_dir / i)
              for s in SPLITS for i, caps in zip(ds.splits[s].image_ids, ds.splits[s].captions, strict=True)]
    out = export_flickr8k(images, args.out_dir)
    print(f"wrote {len(images)} images in Flickr8k's Kaggle layout to {out}")
    return 0


def cmd_not_yet(args: argparse.Namespace) -> int:
    raise UserError(f"'{args.command}' is not implemented yet: the comparison harness has not landed; "
                    "only prepare, list and export work for now")


COMMANDS = {"prepare": cmd_prepare, "list": cmd_list, "export": cmd_export, "run": cmd_not_yet,
            "report": cmd_not_yet}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and the same command resumes", file=sys.stderr)
        return 130
