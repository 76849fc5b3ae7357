"""Command line: `python -m benchmarks {prepare,list,run,ablate,study,report,export,perf}`.

Every user-fixable problem arrives here as a UserError and leaves as one line on stderr with exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.parser import build_parser
from shared_data.dataset import DEFAULT_DATASET
from shared_data.errors import UserError


def cmd_prepare(args: argparse.Namespace) -> int:
    from benchmarks.data.options import PrepareOptions
    from benchmarks.data.prepare import prepare

    prepare(PrepareOptions(dataset=args.dataset, size=args.size, extractor=args.extractor,
                           weights=args.weights, images=args.images, captions=args.captions,
                           karpathy_json=args.karpathy_json, data_dir=args.data_dir, name=args.name,
                           min_freq=args.min_freq, seed=args.seed, batch_size=args.batch_size,
                           feature_dtype=args.feature_dtype, global_dim=args.global_dim, grid=args.grid,
                           vocab=args.vocab))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from benchmarks.data.extractors import EXTRACTORS
    from shared_data.dataset import load_dataset
    from shared_data.dataset_location import default_data_dir

    print("Feature extractors")
    print(tabulate([(s.name, s.framework, s.image_size, s.description) for s in EXTRACTORS.values()],
                   headers=["name", "framework", "input px", "what"]))
    data_dir = args.data_dir or default_data_dir()
    spec, spec_from = None, ""
    try:
        from plugins.registry import ModelSpec

        ds = load_dataset(args.dataset or DEFAULT_DATASET, args.data_dir, verify=False)
        f = ds.features(ds.default_extractor)
        spec = ModelSpec.of(ds, f)
        spec_from = f"{ds.name}, {f.extractor} features: V={len(ds.vocab)}, D={f.global_.shape[1]}"
    except (UserError, IndexError) as e:
        if args.dataset is not None:  # asked for by name: its parameter counts are what the user wants
            raise e if isinstance(e, UserError) else UserError(f"--dataset {args.dataset} has no features") from None
    rows = []
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if data_dir.is_dir() else []
    for folder in folders:
        try:
            m = load_dataset(str(folder), verify=False).manifest
        except UserError as e:
            rows.append((folder.name, "unusable: " + str(e), "", "", ""))
            continue
        sp = m["splits"]
        rows.append((m["name"], m["source"]["kind"], "/".join(str(sp[s]["images"]) for s in sp),
                     m["vocab"]["size"], ", ".join(sorted(m["features"]))))
    print(f"\nDatasets in {data_dir}")
    if rows:
        print(tabulate(rows, headers=["name", "source", "train/val/test images", "vocab", "features"]))
    else:
        print("none yet; create the default one with: python -m benchmarks prepare")
    print("\nPlugins" + (f" (parameters on {spec_from})" if spec_from else
                         " (parameter counts need a prepared dataset: python -m benchmarks prepare)"))
    print(tabulate(_plugin_rows(spec), headers=["name", "framework", "family", "parameters", "what"]))
    return 0


def _plugin_rows(spec) -> list[tuple]:
    """Each plugin built once on the dataset's shapes: the parameter count is measured, not quoted."""
    import backends
    from plugins.registry import available_names, get_plugin, native_logs_silenced

    rows = []
    for name in available_names():
        p = get_plugin(name)
        count = ""
        if spec is not None and not (p.needs_spatial and spec.spatial_shape is None):
            with native_logs_silenced():
                model = p.build(spec)
            n = backends.load(p.framework).Runner.count_parameters(model)["total"]
            count = f"{n:,}"
        rows.append((name, p.framework, p.family, count, p.description))
    return rows


def cmd_export(args: argparse.Namespace) -> int:
    from shared_data.dataset import load_dataset
    from shared_data.flickr_export import export_flickr8k
    from shared_data.sources import SPLITS, SourceImage

    ds = load_dataset(args.dataset, args.data_dir, verify=args.verify)
    images = [SourceImage(i, s, [" ".join(c) for c in caps], ds.image_path(i))
              for s in SPLITS for i, caps in zip(ds.splits[s].image_ids, ds.splits[s].captions, strict=True)]
    out = export_flickr8k(images, args.out_dir)
    print(f"wrote {len(images)} images in Flickr8k's Kaggle layout to {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from benchmarks.run.plan import plugin_variants
    from benchmarks.run.study_file import parse_overrides
    from plugins.registry import parse_plugin_list

    refs = parse_plugin_list(args.plugins)
    variants = plugin_variants(refs, parse_overrides(args.overrides, refs))
    return _finish_study(_study_options(args, variants, "_".join(str(r).replace("@", "-") for r in refs)))


def _study_options(args: argparse.Namespace, variants, default_name: str, defaults: dict | None = None,
                   aa_control: bool = False):
    from benchmarks.run.plan import StudyOptions, with_aa_control
    from benchmarks.settings import from_args

    settings = from_args(args, defaults=defaults)
    if args.aa_control or aa_control:
        variants = with_aa_control(variants, settings)
    return StudyOptions(variants=variants, settings=settings, study=args.study or default_name,
                        results_dir=args.results_dir, dataset=args.dataset, data_dir=args.data_dir,
                        extractor=args.extractor, verify=args.verify, force=args.force, executor=args.executor,
                        jobs=args.jobs, threads=args.threads, address=args.address, tensorboard=args.tensorboard)


def _finish_study(opts) -> int:
    from benchmarks.report.document import summary
    from benchmarks.run.study import run_study

    result = run_study(opts)
    expected = len(opts.variants) * opts.settings.seeds
    failed = [r for r in result.rows if r["status"] in ("failed", "diverged")]
    print("\n" + summary(result.report.parent))
    print(f"\nreport: {result.report}")
    if result.interrupted is not None:
        raise result.interrupted
    if failed or len(result.rows) < expected:
        print(f"{len(failed)} run(s) failed or diverged, {expected - len(result.rows)} not run", file=sys.stderr)
        return 1
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from benchmarks.run.study_file import load_study_file

    study = load_study_file(args.name)
    if args.overrides:
        raise UserError("--set does not apply to study files: put the hyperparameters in the file's rows")
    return _finish_study(_study_options(args, study.variants, study.name, study.settings, study.aa_control))


def cmd_ablate(args: argparse.Namespace) -> int:
    from benchmarks.run.ablate import variants
    from benchmarks.run.study_file import parse_overrides
    from benchmarks.settings import from_args
    from plugins.registry import PluginRef

    ref = PluginRef.parse(args.plugin)
    base = parse_overrides(args.overrides, [ref])
    base = base.get(str(ref), base.get(ref.name, {}))
    vs = variants(ref, args.vary, base, factorial=args.factorial, base_settings=from_args(args))
    return _finish_study(_study_options(args, vs, f"ablate_{str(ref).replace('@', '-')}"))


def cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.report.document import write_report

    if not args.study.is_dir():
        raise UserError(f"{args.study} is not a study folder; studies live in results/<study>")
    print(f"report: {write_report(args.study, args.half)}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from benchmarks.report.publish import publish

    publish(args.study, args.to)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from benchmarks.report.significance import aa_calibration

    print(aa_calibration(args.study, args.label, args.group, args.splits))
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from benchmarks.caption import KNOBS, caption, decoder

    decoding = decoder(args.beam_size, args.sample, args.seed, **{k: getattr(args, k) for k in KNOBS})
    rows = caption(args.run_dir, args.images, decoding, args.out, args.attention)
    if args.out is None:
        print(tabulate([(r["image"], r["caption"], r["log_prob"]) for r in rows], headers=["image", "caption",
                                                                                           "log-prob"]))
    else:
        print(f"wrote {len(rows)} captions ({rows[0]['decoding'] if rows else 'none'}) to {args.out}")
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    from benchmarks.perf import measure as perf

    return perf.main(args)


COMMANDS = {"prepare": cmd_prepare, "list": cmd_list, "export": cmd_export, "run": cmd_run, "caption": cmd_caption,
            "ablate": cmd_ablate, "study": cmd_study, "report": cmd_report, "publish": cmd_publish,
            "calibrate": cmd_calibrate,
            "perf": cmd_perf}


STUDY_COMMANDS = ("run", "ablate", "study")


def one_line(text: str) -> str:
    """A message as one printable line: a file name or caption from disk may hold a line break or a
    NUL byte, which would split the error or end up raw in a terminal."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, docker stop, Slurm, systemd): stopped as Ctrl-C stops, with SIGTERM's exit code."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        done = "finished runs are kept" if args.command in STUDY_COMMANDS else "what was finished is kept"
        print(f"interrupted: {done}, and the same command resumes the rest", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
