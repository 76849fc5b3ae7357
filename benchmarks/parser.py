"""The command line's flags: one parser per command of `python -m benchmarks`, and the flag groups that
several commands share (run settings, study placement, data location)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.store.rundir import HALVES
from shared_data.dataset import DEFAULT_DATASET
from shared_data.dataset_location import DATA_DIR_ENV


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"where prepared datasets live (default: ${DATA_DIR_ENV} or shared_data/datasets/)")


def _add_verify_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the sha256 checks of the dataset's files (the manifest and the shapes are still checked)")


def _add_study_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by run, ablate and study: the run settings (benchmarks/settings.py), then where
    and how the runs go."""
    from benchmarks import settings

    settings.add_arguments(p)
    p.add_argument("--study", default=None, help="study name, a plain folder name under --results-dir "
                   "(default: the plugin names joined)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--extractor", default=None,
                   help="features to train on (default: the dataset's first, the one it was prepared with)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PLUGIN.KEY=VALUE",
                   help="hyperparameter override, e.g. torch_merge.dropout=0.5 (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="redo runs that already finished with the same configuration (default: reuse them); "
                        "the finished result stays until the new one has finished")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: runs as subprocesses here (default); ray: each run a task on a Ray cluster")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time (local), each with cores/jobs threads and a GPU of its own where there "
                        "are GPUs; with ray, each run asks for the cluster's CPUs / jobs (default: one per GPU, "
                        "else one per core as memory allows at 2 GiB a run; 1 with ray)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (Ray: CPUs) per run, instead of cores/jobs")
    p.add_argument("--address", default=None,
                   help="Ray cluster address, e.g. ray://head:10001 (default: a local Ray instance for the study)")
    p.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard scalars (losses, BLEU-4, throughput) to each run's tensorboard/ folder")
    p.add_argument("--aa-control", action="store_true",
                   help="add an A/A row: the first configuration again with disjoint seeds, to calibrate the "
                        "significance test (it should find no difference)")
    _add_data_args(p)
    _add_verify_arg(p)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error (not usage + message)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m benchmarks",
        description="CapBench: is it the framework or the architecture? Train image-captioning plugins "
                    "in Keras and PyTorch under one budget and compare them.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_prepare, _dataset_commands, _study_commands, _caption, _result_commands, _perf):
        add(sub)
    return parser


def _prepare(sub) -> None:
    from benchmarks.data.extractors import DEFAULT_EXTRACTOR, EXTRACTORS
    from benchmarks.data.options import DATASETS
    from shared_data.features import DEFAULT_FEATURE_DTYPE, FEATURE_DTYPES

    p = sub.add_parser("prepare", help="build a dataset (default: the embedded synthetic one) with features",
                       description="Build a prepared dataset: captions, vocabulary, splits and features.")
    p.add_argument("dataset", nargs="?", default="synthetic", metavar="DATASET",
                   help=f"one of {', '.join(DATASETS)} (default: synthetic)")
    p.add_argument("--size", default="full", help="synthetic only: full (8,000 images) or small (400)")
    p.add_argument("--extractor", default=None,
                   help=f"feature extractor, one of {', '.join(EXTRACTORS)} (default: synthnet for the "
                        f"synthetic dataset, {DEFAULT_EXTRACTOR} otherwise)")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet (from the library's weights cache), none (random, for testing) or a file")
    p.add_argument("--images", type=Path, help="flickr8k/karpathy: the image folder; random: how many images "
                                                "(default 8091, Flickr8k's)")
    p.add_argument("--captions", type=Path, help="flickr8k: Kaggle's captions.txt or the original Flickr8k.token.txt "
                                                 "(default: found next to the images)")
    p.add_argument("--karpathy-json", type=Path, help="karpathy: dataset_{flickr8k,flickr30k,coco}.json")
    p.add_argument("--name", help="folder name of the prepared dataset (default: from the source)")
    p.add_argument("--min-freq", type=int, default=1,
                   help="keep words seen at least this often in train (1 as in the Keras recipe, "
                        "5 as in the attention recipes)")
    p.add_argument("--seed", type=int, default=0, help="generator seed / split seed")
    p.add_argument("--batch-size", type=int, default=64, help="images per extraction batch")
    p.add_argument("--feature-dtype", default=DEFAULT_FEATURE_DTYPE, metavar="|".join(FEATURE_DTYPES),
                   help=f"how feature files store numbers (default {DEFAULT_FEATURE_DTYPE}: exact; float16 halves "
                        "the disk of a large dataset); training always computes in float32")
    p.add_argument("--global-dim", help="random: global feature size (default 2048, ResNet-101's)")
    p.add_argument("--grid", help="random: spatial grid HxWxC, or none (default 14x14x2048, Show, Attend and Tell's)")
    p.add_argument("--vocab", help="random: words in the Zipf vocabulary (default 8485, Flickr8k's)")
    _add_data_args(p)



def _dataset_commands(sub) -> None:
    p = sub.add_parser("list", help="list plugins, datasets and feature extractors")
    p.add_argument("--dataset", default=None,
                   help=f"dataset whose shapes give the parameter counts (default: {DEFAULT_DATASET} if prepared)")
    _add_data_args(p)

    p = sub.add_parser("export", help="write a prepared dataset in Flickr8k's Kaggle layout")
    p.add_argument("out_dir", type=Path, help="folder to create (Images/ + captions.txt)")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="prepared dataset to export")
    _add_data_args(p)
    _add_verify_arg(p)



def _study_commands(sub) -> None:
    from benchmarks.settings import variant_keys

    p = sub.add_parser("run", help="train and evaluate plugins under one budget, write a report",
                       description="Train every plugin under the same budget, batches and optimizer, evaluate "
                                   "on the test split and write results/<study>/report.md.")
    p.add_argument("--plugins", required=True, help="comma-separated plugin names (see `list`); "
                   "keras_merge@jax picks another Keras backend")
    _add_study_args(p)

    p = sub.add_parser("ablate", help="a base configuration and variations of it under one budget, with effects",
                       description="Train a plugin's base configuration and each --vary value (one factor at a time, "
                                   "or all combinations with --factorial) under one budget and seeds; the report "
                                   "attributes each change's effect on BLEU-4, CIDEr, val loss and throughput.")
    p.add_argument("plugin", help="the plugin to ablate (see `list`)")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2", required=True,
                   help=f"a hyperparameter, a run setting ({', '.join(variant_keys())}) or keras_backend, "
                        "and its values (repeatable)")
    p.add_argument("--factorial", action="store_true", help="every combination instead of one factor at a time")
    _add_study_args(p)

    p = sub.add_parser("study", help="a ready-made study from a study file (seed000: seed 000's hypotheses)",
                       description="Run a shipped study (benchmarks/run/studies/NAME.json) or a study file of your "
                                   "own: a base configuration and variants, each with the hypothesis it tests.")
    p.add_argument("name", help="seed000, or a path to a study .json file")
    _add_study_args(p)



def _caption(sub) -> None:
    from benchmarks import settings
    from benchmarks.caption import KNOBS as caption_knobs

    p = sub.add_parser("caption", help="caption your own images with a finished run",
                       description="Caption image files or folders of them with a finished run's weights, its "
                                   "dataset's vocabulary and extractor: greedy, beam search or sampling.")
    p.add_argument("run_dir", type=Path, help="a finished run, e.g. results/<study>/torch_concat-s0")
    p.add_argument("images", type=Path, nargs="+", help="image files (jpg, png) or folders of them")
    p.add_argument("--beam-size", type=int, default=1, help="beam search with this many hypotheses (1: greedy)")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="sample N captions per image instead")
    p.add_argument("--seed", type=int, default=0, help="sampling: the draws' seed")
    settings.add_arguments(p, caption_knobs)
    p.add_argument("--out", type=Path, default=None, help="write the rows to FILE.csv or FILE.json")
    p.add_argument("--attention", type=Path, default=None, metavar="DIR",
                   help="plugins with attention: one PNG per image in DIR, each word of its greedy caption "
                        "with its attention map over the image")



def _result_commands(sub) -> None:
    p = sub.add_parser("report", help="rebuild a study's report from its saved runs")
    p.add_argument("study", type=Path, help="results/<study>")
    p.add_argument("--half", type=int, choices=HALVES, default=None,
                   help="report-half1.md / report-half2.md: the tables from the first or the second half of every "
                        "configuration's seeds, to check that two disjoint halves reach the same verdicts")

    p = sub.add_parser("publish", help="copy a study's finished runs (no weights) into results/reference/<study>",
                       description="Publish a study as a reference result that git tracks: report, calibrate and "
                                   "study (resuming) then work on it from a fresh clone. Run it again as the study "
                                   "grows: published runs are kept, new ones added.")
    p.add_argument("study", type=Path, help="results/<study>")
    p.add_argument("--to", type=Path, default=None, help="where (default: results/reference/<study>)")

    p = sub.add_parser("calibrate", help="the significance test's false-positive rate on A/A splits of real runs",
                       description="Split the seeds of one configuration of a study into two disjoint groups, many "
                                   "times, and count how often the report's test calls them different at 0.05.")
    p.add_argument("study", type=Path, help="results/<study> with at least 2 x --group finished seeds of --label")
    p.add_argument("--label", default=None, help="the configuration (default: the study's first)")
    p.add_argument("--group", type=int, default=3, help="seeds per side (default 3)")
    p.add_argument("--splits", type=int, default=500, help="random disjoint splits (default 500)")



def _perf(sub) -> None:
    from benchmarks.perf import measure as perf  # argparse only: perf imports no framework in this process

    p = sub.add_parser("perf", help="speed-ups over the recipes' ways (training, decoding) and MFU",
                       description=(perf.__doc__ or "").strip().split("\n")[0])
    perf.add_arguments(p)
