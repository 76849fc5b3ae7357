"""results/<study>/report.md from the saved runs: header, four tables, plots, sample captions.

Only reads run folders (through benchmarks/store/rundir.py), so `python -m benchmarks report results/<study>`
rebuilds the same report at any time. The rows are the runs of the study's last command: a run that
failed, did not finish or cannot be read is listed with its state, and a finished run of another
configuration (a stale one) is listed but never averaged into a row.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
import subprocess
from pathlib import Path

import numpy as np
from tabulate import tabulate

from backends.common import api_engine
from backends.runner import LONGEST, MAX_LENGTH
from benchmarks.report.answer import answer
from benchmarks.report.figures import attention_words, pyplot
from benchmarks.run.settings import BUDGET_KEYS, RunSettings, describe
from benchmarks.scoring.comparisons import (
    EFFECTS,
    METRIC_NAMES,
    compare,
    format_p,
    groups_of,
    label_of,
    per_run,
    seed_of,
)
from benchmarks.scoring.stats import mean_ci
from benchmarks.store import rundir
from shared_data.dataset import sha256_file
from shared_data.errors import UserError


def _runs(study_dir: Path) -> tuple[list[dict], list[dict], list[rundir.Run]]:
    """(finished runs of the study's plan, with their captions and per-image scores; the plan's other
    runs, each with its state; finished runs of other configurations: stale, listed, never tabled)."""
    current, stale = rundir.StudyFolder.at(study_dir).runs()
    done, other = [], []
    for run in current:
        row = {"dir": run.dir, "config": run.config, "metrics": run.metrics, "history": run.history,
               "state": run.state()}
        if run.finished:
            try:  # the per-image files the tables and samples need, read once
                captions = rundir.read_captions(run.dir)
                row["per_image"] = rundir.read_json(run.dir / rundir.PER_IMAGE, rundir.PER_IMAGE_SCHEMA)
                row["captions"] = captions  # last: a row with captions is a row of the tables
            except rundir.Unreadable as e:
                row["state"] = f"unreadable: {e}"
        (done if "captions" in row else other).append(row)
    return done, other, stale


def _f(x, digits=3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    from benchmarks.run.worker.environment import environment  # the one reader of the CPU's model and flags

    return environment()["cpu"] or "unknown CPU"


HALVES = rundir.HALVES


def write_report(study_dir: Path, half: int | None = None) -> Path:
    """report.md (and its PNG figures) from the study's saved runs, written atomically. half 1 or 2:
    report-half<N>.md, tables only, from the first ceil(n/2) of every configuration's n seeds (in
    seed order) or from the rest: two disjoint halves whose verdicts should agree (issue 13)."""
    study_dir = Path(study_dir)
    done, other, stale = _runs(study_dir)
    if not done and not other:
        raise UserError(f"{study_dir} holds no runs; start a study with: python -m benchmarks run --plugins ...")
    if half is not None:
        keep = _half(done + other, half)  # one split over every run of the plan, finished or not
        done, other = [r for r in done if id(r) in keep], [r for r in other if id(r) in keep]
        if not done:
            raise UserError(f"--half {half}: {study_dir} has no finished runs in that half; a configuration needs "
                            "at least 2 finished seeds to be split")
    try:
        return _write_report(study_dir, done, other, stale, half)
    except OSError as e:  # the figures (matplotlib writes them itself): a full disk, a read-only folder
        raise UserError(f"cannot write the report in {study_dir} ({e.strerror or e}); free some space or fix "
                        "the folder's permissions, then run: python -m benchmarks report " + str(study_dir)) from None


def _half(rows: list[dict], half: int) -> set[int]:
    """ids of the rows in that half: per configuration with 2+ seeds, the first ceil(n/2) by seed, or the rest."""
    if half not in HALVES:
        raise UserError(f"--half {half}: use {' or '.join(map(str, HALVES))}")
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(label_of(r), []).append(r)
    keep: set[int] = set()
    for group in by_label.values():
        group = sorted(group, key=seed_of)
        cut = (len(group) + 1) // 2
        if len(group) > 1:
            keep |= {id(r) for r in (group[:cut] if half == 1 else group[cut:])}
    return keep


def _dataset(cfg: dict):
    """(the dataset or None, its manifest hash for the header, its human ceiling)."""
    from shared_data.dataset import load_dataset

    try:
        ds = load_dataset(cfg.get("dataset_path") or cfg["dataset"],
                          Path(cfg["data_dir"]) if cfg.get("data_dir") else None, verify=False)
        return ds, sha256_file(ds.path / "manifest.json")[:12], ds.manifest.get("human_ceiling_test", {})
    except (UserError, KeyError, OSError, TypeError):
        return None, "dataset missing", {}


def _header(study_dir: Path, done: list[dict], other: list[dict], stale: list[rundir.Run],
            manifest_hash: str) -> list[str]:
    """Date, commit, machine, versions, dataset, and what every row ran: the settings all rows share,
    then each row's own (from RunSettings, as config.json records them)."""
    rows = done + other
    full = [r for r in rows if "plugin" in r["config"]] or rows  # configs that could be read
    cfg = full[0]["config"]
    versions: dict[str, str] = {}
    for r in done:
        versions.update(r["metrics"]["versions"])
    devices = sorted({r["metrics"]["device"] for r in done})
    per_label: dict[str, dict] = {}
    for r in full:
        per_label.setdefault(label_of(r), dict(r["config"].get("settings") or {}))
    seeds = {label: sorted({seed_of(r) for r in rows if label_of(r) == label}) for label in per_label}
    keys = [k for k in per_label[next(iter(per_label))] if k != "seed"]
    common = {k: v for k, v in per_label[next(iter(per_label))].items()
              if k in keys and all(s.get(k) == v for s in per_label.values())}
    try:
        budget = RunSettings(**{k: v for k, v in common.items() if k in BUDGET_KEYS}).budget()
    except (TypeError, UserError):  # rows of different budgets: each row's line says its own
        budget = {}
    seed_text = "; ".join(f"{label} {_seed_text(v)}" for label, v in seeds.items()) \
        if len({tuple(v) for v in seeds.values()}) > 1 else _seed_text(next(iter(seeds.values())))
    lines = [
        f"# CapBench report: {study_dir.name}",
        "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}; git commit: {_git_commit()}",
        f"- machine: {_machines(done)}; devices: {', '.join(devices) or 'n/a'}",
        f"- versions: python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        f"- dataset: {cfg.get('dataset')} (manifest sha256 {manifest_hash}), features: {cfg.get('extractor')}"
        + _features_text(done),
        f"- budget: {describe(budget) or 'see each row'}; seeds: {seed_text}",
        f"- settings of every row: {describe({k: v for k, v in common.items() if k not in budget})}",
        "- optimizer: Adam (betas 0.9, 0.999; lr, eps and clipping above); loss: token-level masked cross-entropy; "
        "model selection: best val BLEU-4 (greedy decoding)",
        f"- training: {_training_text(common.get('training', 'several modes: see each row'))}",
        f"- execution: {'; '.join(sorted({_execution_text(r['metrics']) for r in done})) or 'n/a'} "
        "(fp32/bf16 mixed precision; compiled = torch.compile or Keras jit_compile, eager/graph otherwise)",
    ]
    differ = {label: {k: v for k, v in st.items() if k in keys and k not in common} for label, st in per_label.items()}
    if any(differ.values()):
        lines.append("- what each row changes: " + "; ".join(f"{label}: {describe(d)}" for label, d in differ.items()
                                                                if d))
    lines.append("")
    if other:
        lines += ["**Failed or unfinished runs:** " + "; ".join(f"{_who(r, seeds)}: {r['state']}" for r in other), ""]
    if stale:
        lines += ["**Stale runs, not in any table** (finished with another configuration than this study's last "
                  "command; kept on disk, replaced when their configuration finishes again): "
                  + ", ".join(f"{r.dir.name} ({r.config_hash})" for r in stale), ""]
    return lines


def _machines(done: list[dict]) -> str:
    """Where the runs ran, and which seeds each machine ran (seeds are blocks: a machine should run
    whole seeds): CPU and the instruction sets its kernels dispatch on (they move the last float bits,
    which training amplifies), host and boot id; this machine's CPU for runs that did not record theirs."""
    seeds: dict[str, set[int]] = {}
    for r in done:
        e = r["metrics"].get("environment")
        if not e:
            continue
        where = " ".join(x for x in (e.get("host"), e.get("boot") and f"boot {e['boot']}") if x)
        env = ", ".join(f"{k}={v}" for k, v in e["env"].items())
        key = f"{e['cpu']} ({', '.join(e['isa']) or 'no AVX2'}{'; ' + env if env else ''})" \
            + (f" [{where}]" if where else "")
        seeds.setdefault(key, set()).add(seed_of(r))
    if not seeds:
        return _cpu_model()
    if len(seeds) == 1:
        return next(iter(seeds))
    return "; ".join(f"{key}: seeds {_seed_text(sorted(s))}" for key, s in seeds.items())


def _features_text(done: list[dict]) -> str:
    """Which weights made the features, and the features' sha256 on each machine (the same weights
    give other last bits on another CPU's float32 kernels: shared_data.dataset.dataset_identity)."""
    data = [r["metrics"].get("data") or {} for r in done]
    weights = sorted({d["weights_sha256"][:12] for d in data if d.get("weights_sha256")})
    features = sorted({d["features_sha256"][:12] for d in data if d.get("features_sha256")})
    if not weights and not features:
        return ""
    return (f" (weights sha256 {', '.join(weights) or 'not recorded'}; "
            f"features sha256 {', '.join(features) or 'not recorded'})")


def _who(r: dict, seeds: dict) -> str:
    """A run's label, and its seed where its configuration has several."""
    seed = seed_of(r)
    return label_of(r) + (f" (seed {seed})" if len(seeds.get(label_of(r), [])) > 1 else "")


def _seed_text(seeds: list[int]) -> str:
    return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} ({len(seeds)})" \
        if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))


def _write_report(study_dir: Path, done: list[dict], other: list[dict], stale: list[rundir.Run],
                  half: int | None = None) -> Path:
    for png in study_dir.glob("*.png"):  # matplotlib writes through a link: the report's figures are its own
        if png.is_symlink():
            png.unlink()
    ds, manifest_hash, ceiling = _dataset(next((r["config"] for r in done + other if "dataset" in r["config"]), {}))
    seeds = {label: sorted(seed_of(r) for r in done + other if label_of(r) == label)
             for label in map(label_of, done + other)}

    def name(r: dict) -> str:  # a row of the per-run tables: its label, and its seed where there are several
        return _who(r, seeds)

    lines = _header(study_dir, done, other, stale, manifest_hash)
    groups = groups_of(done)
    comparisons = compare(groups)
    lines += answer(groups, comparisons)
    lines += _quality(done, ceiling, comparisons)
    lines += _time_to_target(done)
    lines += _size(done, name) + _speed(done, name) + _overfitting(done, name) + _details(done)
    lines += _diversity(groups, ds)
    if half is None:  # the figures are the whole study's; a half report is its tables
        lines += _figures(study_dir, done, ds, name, comparisons)
        from benchmarks.store import export

        export.write(study_dir, done, groups, comparisons)
    else:
        lines = [lines[0], "", f"Half {half} of every configuration's seeds (`python -m benchmarks report "
                 f"{study_dir} --half {half}`); the whole study: {rundir.REPORT}.", ""] + lines[1:]
    out = study_dir / (rundir.REPORT if half is None else rundir.HALF_REPORT.format(half))
    rundir.write_text(out, "\n".join(lines) + "\n")
    return out


def _quality_table(groups: dict[str, list[dict]], columns: list, ceiling: dict | None = None) -> str:
    """One row per configuration (mean ± 95% t-interval half-width over seeds), the human ceiling last
    where it is comparable (its own columns only)."""
    from benchmarks.report.columns import value

    multi = any(len(g) > 1 for g in groups.values())

    def agg(group: list[dict], column) -> str:
        values = [value(column, r["metrics"]) for r in group]
        if any(v is None for v in values):
            return "n/a"
        if len(values) == 1:
            return _f(values[0])
        mean, half = mean_ci(values)
        return _f(mean) if half != half else f"{_f(mean)} ± {_f(half)}"

    rows = []
    for label, group in groups.items():
        status = ",".join(sorted({r["metrics"]["status"] for r in group}))
        rows.append([label + (f" (n={len(group)})" if multi else ""), status] + [agg(group, c) for c in columns])
    if ceiling and any(c.ceiling for c in columns):  # caption 1 against captions 2-5
        rows.append(["human ceiling (caption 1 vs 2-5)", ""]
                    + [_f(ceiling.get(c.ceiling)) if c.ceiling else "—" for c in columns])
    return tabulate(rows, headers=["configuration", "status", *(c.header for c in columns)], tablefmt="github")


def _quality(done: list[dict], ceiling: dict, comparisons: list) -> list[str]:
    """Table 1: the headline quality table, then the differences."""
    from benchmarks.report.columns import HEADLINE

    groups = groups_of(done)
    beam_note = ", ".join(sorted({f"beam {r['metrics']['beam']['size']}, alpha {r['metrics']['beam']['length_alpha']}"
                                  for r in done}))
    lines = [f"## 1. Quality (test split; greedy decoding unless marked beam: {beam_note or 'n/a'})", "",
             _quality_table(groups, HEADLINE, ceiling), "",
             "Image gap: the score minus that of the same model with test image features permuted across images, "
             "how much the score owes to the image. The human ceiling scores each image's first caption against "
             "the other four, so it is compared like for like with the models' scores against those same four "
             "references (the last two columns); the other columns score models against all five. Every other "
             "quality column is in the details table (section 5).", ""]
    if any(len(g) > 1 for g in groups.values()):
        lines += ["With several seeds: mean ± half-width of the 95% t-interval over seeds (n runs each).", ""]
    lines += _significance(groups, comparisons)
    spice = [r["metrics"]["quality"]["SPICE"] for r in done if "SPICE" in r["metrics"]["quality"]]
    notes = sorted({r["metrics"].get("spice_note") for r in done} - {None})
    if spice:
        lines += ["SPICE: " + ", ".join(f"{r['metrics']['plugin']} {_f(r['metrics']['quality'].get('SPICE'))}"
                                        for r in done), ""]
    elif notes:
        lines += [notes[0] + ".", ""]
    return lines


def _details(done: list[dict]) -> list[str]:
    """Section 5: the quality columns the headline table leaves out."""
    from benchmarks.report.columns import DETAILS

    return ["## 5. Quality details (test split, greedy decoding unless marked beam)", "",
            _quality_table(groups_of(done), DETAILS), "",
            "Shuffled: the same model with test image features permuted across images. Grounded columns parse "
            "captions against the synthetic ground truth (benchmarks/scoring/grounding.py): colour accuracy, shape "
            "precision, relation accuracy and the share of hallucinated objects.", ""]


def _diversity(groups: dict[str, list[dict]], ds) -> list[str]:
    """How varied each configuration's test captions are (benchmarks/scoring/diversity.py), mean over seeds,
    with the human references (first of each image) as the ceiling row."""
    from benchmarks.scoring.diversity import HEADERS, METRICS, diversity, first_references, mbleu4

    if not groups:
        return []
    train, objects = None, None
    if ds is not None:
        train = {c for caps in ds.splits["train"].texts for c in caps}
        try:
            objects = ds.objects()
        except UserError:
            objects = None

    def scores(captions: dict[str, str]) -> dict:
        try:
            return diversity(captions, train, objects)
        except (KeyError, TypeError, ValueError):  # a damaged objects.json: everything but the object counts
            return diversity(captions, train)

    def cells(values: list[dict]) -> list[str]:
        means = [float(np.mean([v[m] for v in values])) for m in METRICS]
        return [f"{x:,.0f}" if m == "vocabulary" else _f(x, 2 if m.startswith("objects") or m == "mean_length" else 3)
                for m, x in zip(METRICS, means, strict=True)]

    def several(group: list[dict]) -> str:  # mBLEU-4 where the runs kept several captions per image
        values = [mbleu4({i: c["all"] for i, c in r["captions"].items() if "all" in c}) for r in group]
        values = [v for v in values if not math.isnan(v)]
        return _f(float(np.mean(values)), 3) if values else "—"

    rows = [[label, *cells([scores({i: c["generated"] for i, c in r["captions"].items()}) for r in group]),
             several(group)] for label, group in groups.items()]
    first = next(iter(groups.values()))[0]["captions"]
    refs = {i: c["references"] for i, c in first.items() if c.get("references")}
    rows.append(["human (first reference)", *cells([scores(first_references(first))]), _f(mbleu4(refs), 3)])
    methods = sorted({(r["metrics"].get("decoding") or {}).get("method", "greedy") for g in groups.values()
                      for r in g})
    return [f"### Diversity (test split, {'; '.join(methods)} captions)", "",
            tabulate(rows, headers=["configuration", *HEADERS, "mBLEU-4"], tablefmt="github",
                     disable_numparse=True), "",
            "Vocabulary: distinct words over the split; distinct-1/2: distinct unigrams/bigrams over all of them; "
            "unique: captions no other image got; novel: captions that are not a training caption word for word "
            "(n/a without the dataset); objects named: shape nouns per caption, against the objects its image "
            "has (the embedded dataset's scenes); mBLEU-4: with several captions per image "
            "(--captions-per-image), each one's BLEU-4 against the image's others, lower is more varied (the "
            "human row: each reference against the other four). Mean over seeds.", ""]


def _time_to_target(done: list[dict]) -> list[str]:
    """Per configuration: how long training took to first meet the target (median over seeds, runs that
    never met it counted as slower than every run that did), how many never did, epochs and tokens."""
    from benchmarks.scoring.stats import median_interval

    rows = []
    for label, group in groups_of(done).items():
        targets = [r["metrics"].get("target") for r in group]
        if not any(targets):
            continue
        times = [t["train_time_s"] if t and t["reached"] else math.inf for t in targets]
        med, lo, hi, coverage = median_interval(times)
        reached = [t for t in targets if t and t["reached"]]

        typical = [f"{float(np.median([t[key] for t in reached])):,.0f}" if reached else "n/a"
                   for key in ("epochs", "tokens")]
        rows.append([label, targets[0]["target"], f"{len(group) - len(reached)} of {len(group)}",
                     "not reached" if math.isinf(med) else f"{med:.1f}",
                     f"[{lo:.1f}, {'not reached' if math.isinf(hi) else f'{hi:.1f}'}] ({coverage:.0%})", *typical])
    if not rows:
        return []
    return ["### Time to target", "", tabulate(rows, headers=["configuration", "target", "not reached",
                                                               "median training s", "interval (coverage)",
                                                               "median epochs", "median tokens"],
                                                tablefmt="github", disable_numparse=True), "",
            "Training time is wall clock, device-synchronised, evaluation excluded, up to the end of the epoch "
            "whose validation first met the target (greedy val BLEU-4, or val loss); a run that hit its cap first "
            "counts as slower than every run that reached the target (the median is 'not reached' when half of "
            "the runs did not). Interval: order statistics of the seeds, distribution-free, with its coverage; "
            "epochs and tokens: median over the runs that reached.", ""]


def _size(done: list[dict], name) -> list[str]:
    rows = []
    for r in done:
        p = r["metrics"]["params"]
        comps = ", ".join(f"{k} {v:,}" for k, v in p["components"].items())
        rows.append([name(r), f"{p['total']:,}", f"{p['trainable']:,}", comps,
                     f"{r['metrics']['weights_bytes'] / 2**20:.2f} MiB"])
    return ["## 2. Size", "", tabulate(rows, headers=["run", "total", "trainable", "per component", "weights file"],
                                       tablefmt="github"), ""]


def _speed(done: list[dict], name) -> list[str]:
    rows = []
    for r in done:
        m = r["metrics"]
        s = m["speed"]
        rows.append([name(r), api_engine(m["framework"], m["versions"]), f"{s['train_tokens_per_s']:,.0f}",
                     f"{s['train_captions_per_s']:,.0f}",
                     _f(s["time_to_first_step_s"], 2), f"{s['decode_greedy_captions_per_s']:,.0f}",
                     f"{s['decode_beam_captions_per_s']:,.0f}",
                     f"{s['peak_memory_mb']:,.0f} ({s['peak_memory_kind']})", m["device"], _execution_text(m),
                     # runs from before batch_width: the harness's padding was all there was
                     s.get("batch_width") or (MAX_LENGTH if s["fixed_shapes"] else LONGEST),
                     _time_split(m)])
    lines = ["## 3. Speed", "", tabulate(rows, headers=["run", "API@engine", "train tokens/s", "train captions/s",
                                                         "first step s",
                                                         "greedy captions/s", "beam captions/s", "peak MiB",
                                                         "device", "execution", "batch padded to",
                                                         "s: train / val / test / other"], tablefmt="github"), "",
             "API@engine: the API the plugin is written in and the engine that ran it (Keras runs on TensorFlow, "
             "JAX or PyTorch; `study engines` separates the two). "
             "Throughput excludes the first 5 steps (warm-up, graph building); timings are device-synchronised. "
             "Time split: training, per-epoch validation, final test evaluation, and the rest of the worker "
             "(the framework's import, data loading, model building, checkpoints, saving; the interpreter's "
             "start is not included).", ""]
    shared = sorted({r["metrics"]["speed"].get("threads") for r in done} - {None})
    if shared:
        lines += [f"**Runs shared the machine** (`--jobs`/Ray, {'/'.join(map(str, shared))} CPU thread(s) each): "
                  "their speed figures measure that setting and are not comparable with one run at a time.", ""]
    return lines


def _overfitting(done: list[dict], name) -> list[str]:
    rows = []
    for r in done:
        o, t = r["metrics"]["overfitting"], r["metrics"]["training"]
        rows.append([name(r), f"{o['best_epoch']}/{t['epochs']}", _f(o["final_train_loss"]),
                     _f(o["final_val_loss"]), _f((o["final_val_loss"] or 0) - (o["final_train_loss"] or 0)),
                     _f(o["train_bleu4"]), _f(o["test_bleu4"]), f"{t['train_time_s']:.0f}"])
    return ["## 4. Overfitting", "", tabulate(rows, headers=["run", "best epoch", "final train loss", "final val loss",
                                                               "val - train", "train BLEU-4", "test BLEU-4",
                                                               "train time s"], tablefmt="github"), ""]


def _figures(study_dir: Path, done: list[dict], ds, name, comparisons: list) -> list[str]:
    """The PNGs next to the report: the effects (forest plot), time to target, training curves, sample
    images with captions, attention maps."""
    from benchmarks.report.figures import forest, time_to_target

    lines = []
    for path, what in ((forest(study_dir, comparisons), "effects against the base (forest plot)"),
                       (time_to_target(study_dir, done), "time to target"),
                       (_plot_history(study_dir, done, name), "training curves")):
        if path:
            lines += [f"![{what}]({path.name})", ""]
    return lines + _samples(study_dir, done, ds, name) + _attention(study_dir, done, ds, name)


def _execution_text(m: dict) -> str:
    e = m.get("execution") or {"precision": "fp32", "compile": False}  # runs from before the setting existed
    return e["precision"] + (", compiled" if e["compile"] else "")


def _time_split(m: dict) -> str:
    t = m["training"]
    if "other_time_s" not in t:
        return "n/a"
    return " / ".join(f"{t[k]:.0f}" for k in ("train_time_s", "val_eval_time_s", "eval_time_s", "other_time_s"))


def _difference_over_seeds(a: list[dict], b: list[dict], get, relative: bool = False) -> str:
    """Runs of the same seed paired (mean ± t-interval of the differences); configurations with
    disjoint seeds (an A/A row) compared unpaired (difference of means, Welch interval)."""
    by_seed = {seed_of(r): get(r["metrics"]) for r in a}
    pairs = [(by_seed[seed_of(r)], get(r["metrics"])) for r in b if by_seed.get(seed_of(r)) is not None]
    pairs = [(x, y) for x, y in pairs if y is not None]

    def scale(x, y):
        return 100 * (y - x) / x if relative else y - x

    digits, unit = (1, "%") if relative else (3, "")
    if pairs:
        mean, half = mean_ci([scale(x, y) for x, y in pairs])
    else:
        xa = [v for v in (get(r["metrics"]) for r in a) if v is not None]
        xb = [v for v in (get(r["metrics"]) for r in b) if v is not None]
        if not xa or not xb:
            return "n/a"
        ma = float(np.mean(xa))
        mean = scale(ma, float(np.mean(xb)))
        half = math.nan
        if len(xa) > 1 and len(xb) > 1:
            from benchmarks.scoring.stats import t_critical

            va, vb = np.var(xa, ddof=1) / len(xa), np.var(xb, ddof=1) / len(xb)
            df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1)) if va + vb > 0 else math.inf
            half = t_critical(df) * math.sqrt(va + vb) * (100 / ma if relative else 1)
    return f"{mean:+.{digits}f}{unit}" + ("" if half != half else f" ± {half:.{digits}f}{unit}")


def _significance(groups: dict[str, list[dict]], comparisons: list, samples: int = 1000) -> list[str]:
    """Each configuration against the first: seed-level tests (stats.seed_level_test) with
    Holm-adjusted p-values across the rows, a verdict per hypothesis, the smallest effect each row
    could detect, the variance components and the seeds a given effect would need."""
    from benchmarks.scoring.stats import ALPHA, POWER, seeds_needed

    if not comparisons:
        return []
    base = comparisons[0].base
    tests = {c.label: c.tests for c in comparisons}
    single = any(c.single for c in comparisons)
    rows = []
    for c in comparisons:
        row = [f"{c.label} − {base}" + (f" ({c.note})" if c.note else "")]
        for m in METRIC_NAMES:
            d, adj = c.tests[m], c.adjusted[m]
            mark = " *" if adj is not None and adj < ALPHA else ""
            row += [f"{d['diff']:+.3f}{mark}", f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]", format_p(d["p"]),
                    format_p(adj)]
        row += [c.verdict, " / ".join("n/a" if c.tests[m]["mde"] is None else f"{c.tests[m]['mde']:.3f}"
                                      for m in METRIC_NAMES),
                _difference_over_seeds(groups[base], groups[c.label], lambda m: m["overfitting"]["final_val_loss"]),
                _difference_over_seeds(groups[base], groups[c.label], lambda m: m["speed"]["train_tokens_per_s"],
                                       relative=True)]
        rows.append(row)
    n_seeds = sorted({n for t in tests.values() for n in t["BLEU-4"]["seeds"]})
    lines = [f"### Differences against {base} (seed-level: between seeds and between test images)", ""]
    if single:
        lines += ["**One seed per configuration on at least one side: no between-seed inference is possible.** "
                  "Those rows' intervals cover test-image sampling only (they say whether these trained models "
                  "differ on other images, not whether the configuration trains better models); they get no p, "
                  "no star and no verdict. Run with --seeds 3 or more.", ""]
    lines += [tabulate(rows, headers=["comparison", "Δ BLEU-4", "95% interval", "p", "p (Holm)", "Δ CIDEr-D",
                                      "95% interval", "p", "p (Holm)", "verdict",
                                      f"detectable at {POWER:.0%} power (BLEU-4 / CIDEr-D)", "Δ final val loss",
                                      "Δ train tokens/s"], tablefmt="github", disable_numparse=True), "",
              f"Δ: the difference of seed-averaged corpus scores (seeds per configuration: "
              f"{', '.join(map(str, n_seeds))}). Its standard error adds the between-seed variance (of per-seed "
              f"corpus scores, within each configuration) and the between-image variance (a paired bootstrap of "
              f"the seed-averaged difference over the same test images, {samples} resamples); interval and p from "
              f"a Welch t with Satterthwaite's degrees of freedom. p (Holm): adjusted across this table's rows, "
              f"per metric; * marks p (Holm) < {ALPHA}. Verdict: supported when an adjusted-significant effect "
              f"goes the way the hypothesis expects (and none the other way), contradicted when one goes against "
              f"it, inconclusive otherwise. Detectable: the smallest true effect this row would find with "
              f"{POWER:.0%} power at its seeds. Val loss and throughput: differences between runs of the same "
              f"seed, mean ± 95% t-interval (throughput in percent); unpaired where the seeds differ.", ""]
    lines += _variance_components(groups, tests, base, seeds_needed)
    return lines


def aa_calibration(study_dir: Path, label: str | None, group: int, splits: int) -> str:
    """`calibrate`: the A/A false-positive rate of the report's test, unpaired and paired by seed, on one
    configuration's saved runs (the base with its A/A row: the same configuration on other seeds); then,
    on the study's comparisons whose sides ran the same seeds, how the paired test's power compares."""
    from benchmarks.run.plan import AA_LABEL
    from benchmarks.scoring.stats import ALPHA, aa_false_positive_rate

    if not Path(study_dir).is_dir():
        raise UserError(f"{study_dir} is not a study folder; studies live in results/<study>")
    done, _, _ = _runs(Path(study_dir))
    groups = groups_of(done)
    if not groups:
        raise UserError(f"{study_dir} has no finished runs")
    label = label or next(iter(groups))
    if label not in groups:
        raise UserError(f"--label {label}: not in {study_dir}; its configurations are {', '.join(groups)}")
    runs = groups[label] + (groups.get(AA_LABEL, []) if label == next(iter(groups)) else [])
    if group < 2 or len(runs) < 2 * group or splits < 1:
        raise UserError(f"--group {group}: {label} has {len(runs)} finished seeds; A/A splits need at "
                        f"least 2 x --group of them, --group at least 2 and --splits at least 1")
    _, scores = per_run(runs)
    also = f" (with its {AA_LABEL} row)" if len(runs) > len(groups[label]) else ""
    lines = [f"A/A splits of {label}{also}: {len(runs)} seeds, {group} vs {group}, {splits} random disjoint "
             f"splits, seed-level test at α {ALPHA}:"]
    for m, name in METRIC_NAMES.items():
        for paired in (False, True):
            r = aa_false_positive_rate(m, scores[m], group, splits, paired=paired)
            lines.append(f"  {name}, {'paired by seed' if paired else 'unpaired'}: false-positive rate "
                         f"{r['rate']:.3f} ({r['rejections']} of {r['splits']})")
    return "\n".join(lines + _paired_power(groups))


def _paired_power(groups: dict[str, list[dict]]) -> list[str]:
    """On the comparisons whose two sides ran the same seeds: how many each test finds at α, and the
    paired interval's width against the unpaired one (below 1: the paired test is sharper)."""
    from benchmarks.scoring.stats import ALPHA, paired_seed_level_test, seed_level_test

    labels = list(groups)
    base = labels[0]
    base_seeds = sorted(seed_of(r) for r in groups[base])
    _, a = per_run(groups[base])
    lines = []
    for m, name in METRIC_NAMES.items():
        found, ratios, n = {"unpaired": 0, "paired": 0}, [], 0
        for label in labels[1:]:
            if sorted(seed_of(r) for r in groups[label]) != base_seeds or len(base_seeds) < 2:
                continue
            _, b = per_run(groups[label])
            u, p = seed_level_test(m, a[m], b[m]), paired_seed_level_test(m, a[m], b[m])
            found["unpaired"] += u["p"] < ALPHA
            found["paired"] += p["p"] < ALPHA
            ratios.append((p["ci"][1] - p["ci"][0]) / (u["ci"][1] - u["ci"][0]))
            n += 1
        if n:
            lines.append(f"  {name}, {n} comparisons on the same seeds: unpaired finds {found['unpaired']}, paired "
                         f"{found['paired']} at α {ALPHA} (unadjusted); paired interval width / unpaired: median "
                         f"{float(np.median(ratios)):.2f}")
    return (["Power on the study's comparisons:"] + lines) if lines else []


def _variance_components(groups: dict, tests: dict, base: str, seeds_needed) -> list[str]:
    """Per comparison and metric, the standard error of Δ from each source, so that a reader sees
    which dominates; and the seeds a given effect needs at the base's measured variances."""
    from benchmarks.scoring.stats import run_scores

    def se(v):
        return "n/a" if v is None else _f(math.sqrt(v))

    rows = [[f"{label} − {base}"] + [x for m in METRIC_NAMES for x in (se(t[m]["var_seeds"]), se(t[m]["var_images"]))]
            for label, t in tests.items()]
    lines = ["Where the uncertainty comes from: the standard error of each Δ from differences between training "
             "seeds and from the choice of test images.", "",
             tabulate(rows, headers=["comparison", "BLEU-4 SE: seeds", "BLEU-4 SE: images", "CIDEr-D SE: seeds",
                                     "CIDEr-D SE: images"], tablefmt="github", disable_numparse=True), ""]
    _, base_scores = per_run(groups[base])
    needed = []
    for m, effect in EFFECTS.items():
        per_seed = run_scores(m, base_scores[m])
        if len(per_seed) < 2:
            continue
        v_images = float(np.median([t[m]["var_images"] for t in tests.values()]))
        n = seeds_needed(effect, float(np.var(per_seed, ddof=1)), v_images)
        needed.append(f"{effect} {METRIC_NAMES[m]}: " + (f"{n} seeds per configuration" if n else
                                                           "not reachable on this test set (its image variance "
                                                           "alone exceeds it)"))
    if needed:
        lines += [f"Seeds needed to detect an effect (two-sided α 0.05, 80% power, {base}'s between-seed variance, "
                  "the median image variance of the rows above): " + "; ".join(needed) + ".", ""]
    return lines


def summary(study_dir: Path) -> str:
    """The one-screen end of a study: a line per run of its plan, the numbers people look at first."""
    done, other, stale = _runs(Path(study_dir))
    rows = []
    for r in sorted(done + other, key=lambda r: (r["config"].get("order", 0), seed_of(r))):
        if r not in done:
            rows.append([r["dir"].name, r["state"][:70]])
            continue
        m = r["metrics"]
        q, sp = m["quality"], m["speed"]
        rows.append([r["dir"].name, m["status"], f"{q['BLEU-4']:.3f}",
                     f"{m['shuffled_control']['BLEU-4']:.3f}", f"{q['CIDEr']:.3f}",
                     f"{m['params']['total']:,}", f"{sp['train_tokens_per_s']:,.0f}",
                     f"{m['training']['train_time_s']:.0f}"])
    rows += [[r.dir.name, f"stale (another configuration: {r.config_hash}), not in the report's tables"]
             for r in stale]
    return tabulate(rows, headers=["run", "status", "BLEU-4", "shuffled", "CIDEr", "params", "train tok/s",
                                   "train s"])


def _plot_history(study_dir: Path, runs: list[dict], name) -> Path | None:
    runs = [r for r in runs if r.get("history")]
    if not runs:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for r in runs:
        h, label = r["history"], name(r)
        epochs = [x["epoch"] for x in h]
        axes[0].plot(epochs, [x["train_loss"] for x in h], marker="o", label=label)
        axes[1].plot(epochs, [x["val_loss"] for x in h], marker="o", label=label)
        axes[2].plot(epochs, [x["val_bleu4"] for x in h], marker="o", label=label)
    for ax, title in zip(axes, ["train loss", "val loss", "val BLEU-4 (greedy)"], strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path = study_dir / rundir.CURVES
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _training_text(mode: str) -> str:
    if mode == "prefix":
        return ("prefix expansion (the Keras recipe: one sample per caption prefix, batches of whole images; "
                "Keras pre-padded and masked, PyTorch post-padded)")
    return "whole-sequence teacher forcing (every prefix of a caption in one pass)"


def _load_image(ds, image_id: str):
    from PIL import Image

    try:
        with Image.open(ds.image_path(image_id)) as im:
            return im.convert("RGB").copy()
    except (OSError, AttributeError, UserError):  # no image in the figure, and the report still written
        return None


def _samples(study_dir: Path, runs: list[dict], ds, name, n: int = 4) -> list[str]:
    if not runs:
        return []
    caps = {name(r): r["captions"] for r in runs}
    ids = sorted(next(iter(caps.values())))[:n]
    lines = ["## Sample captions (test)", ""]
    images = [_load_image(ds, i) for i in ids] if ds is not None else []
    if images and all(im is not None for im in images):
        plt = pyplot()
        fig, axes = plt.subplots(1, len(ids), figsize=(3 * len(ids), 3.2))
        for ax, i, im in zip(list(getattr(axes, "flat", [axes])), ids, images, strict=True):
            ax.imshow(im)
            ax.set_title(i, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(study_dir / rundir.SAMPLES, dpi=80)
        plt.close(fig)
        lines += [f"![sample test images]({rundir.SAMPLES})", ""]
    for i in ids:
        first = next(iter(caps.values()))[i]
        lines.append(f"**{i}**: reference: _{first['references'][0]}_")
        for plugin, c in caps.items():
            lines.append(f"- {plugin}: {c[i]['generated']}")
        lines.append("")
    return lines


def _attention(study_dir: Path, runs: list[dict], ds, name, words: int = 7) -> list[str]:
    """For plugins that attend: each word of the first test image's caption with its attention map
    drawn over the image (as Show, Attend and Tell does)."""
    lines = []
    for r in runs:
        path = r["dir"] / rundir.ATTENTION
        if not path.exists() or ds is None:
            continue
        try:  # allow_pickle stays off: a damaged or foreign file is skipped, never executed
            with np.load(path) as data:
                image_id, ws, alphas = str(data["image_ids"][0]), [str(w) for w in data["words"][0]], data["alphas"][0]
        except (OSError, ValueError, KeyError, IndexError):
            continue
        im = _load_image(ds, image_id) if rundir.image_id_ok(image_id) else None
        figure = rundir.attention_figure(r["dir"])
        if im is None or not attention_words(im, image_id, ws, alphas, study_dir / figure, words):
            continue
        lines += [f"![{name(r)} attention]({figure})", ""]
    return (["## Attention (first test image, greedy caption, one map per word)", ""] + lines) if lines else []
