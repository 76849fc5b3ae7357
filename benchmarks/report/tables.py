"""The report's tables: the headline quality table, then details, diversity, time to target, size,
speed and overfitting, each a function of the finished runs."""
from __future__ import annotations

import math

import numpy as np
from tabulate import tabulate

from backends.common import api_engine
from backends.runner import LONGEST, MAX_LENGTH
from benchmarks.report.columns import fmt
from benchmarks.report.significance import significance_section
from benchmarks.scoring.comparisons import (
    groups_of,
)
from benchmarks.scoring.stats import mean_ci
from shared_data.errors import UserError


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
            return fmt(values[0])
        mean, half = mean_ci(values)
        return fmt(mean) if half != half else f"{fmt(mean)} ± {fmt(half)}"

    rows = []
    for label, group in groups.items():
        status = ",".join(sorted({r["metrics"]["status"] for r in group}))
        rows.append([label + (f" (n={len(group)})" if multi else ""), status] + [agg(group, c) for c in columns])
    if ceiling and any(c.ceiling for c in columns):  # caption 1 against captions 2-5
        rows.append(["human ceiling (caption 1 vs 2-5)", ""]
                    + [fmt(ceiling.get(c.ceiling)) if c.ceiling else "—" for c in columns])
    return tabulate(rows, headers=["configuration", "status", *(c.header for c in columns)], tablefmt="github")


def quality_tables(done: list[dict], ceiling: dict, comparisons: list) -> list[str]:
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
    lines += significance_section(groups, comparisons)
    spice = [r["metrics"]["quality"]["SPICE"] for r in done if "SPICE" in r["metrics"]["quality"]]
    notes = sorted({r["metrics"].get("spice_note") for r in done} - {None})
    if spice:
        lines += ["SPICE: " + ", ".join(f"{r['metrics']['plugin']} {fmt(r['metrics']['quality'].get('SPICE'))}"
                                        for r in done), ""]
    elif notes:
        lines += [notes[0] + ".", ""]
    return lines


def details_table(done: list[dict]) -> list[str]:
    """Section 5: the quality columns the headline table leaves out."""
    from benchmarks.report.columns import DETAILS

    return ["## 5. Quality details (test split, greedy decoding unless marked beam)", "",
            _quality_table(groups_of(done), DETAILS), "",
            "Shuffled: the same model with test image features permuted across images. Grounded columns parse "
            "captions against the synthetic ground truth (benchmarks/scoring/grounding.py): colour accuracy, shape "
            "precision, relation accuracy and the share of hallucinated objects.", ""]


def diversity_table(groups: dict[str, list[dict]], ds) -> list[str]:
    """How varied each configuration's test captions are (benchmarks/scoring/diversity.py), mean over seeds,
    with the human references (first of each image) as the ceiling row."""
    from benchmarks.scoring.diversity import HEADERS, METRICS, diversity, first_references, mbleu4, self_cider

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
        return [f"{x:,.0f}" if m == "vocabulary" else fmt(x, 2 if m.startswith("objects") or m == "mean_length" else 3)
                for m, x in zip(METRICS, means, strict=True)]

    def several(group: list[dict]) -> list[str]:  # where the runs kept several captions per image
        out = []
        for measure in (mbleu4, self_cider):
            values = [measure({i: c["all"] for i, c in r["captions"].items() if "all" in c}) for r in group]
            values = [v for v in values if not math.isnan(v)]
            out.append(fmt(float(np.mean(values)), 3) if values else "—")
        return out

    rows = [[label, *cells([scores({i: c["generated"] for i, c in r["captions"].items()}) for r in group]),
             *several(group)] for label, group in groups.items()]
    first = next(iter(groups.values()))[0]["captions"]
    refs = {i: c["references"] for i, c in first.items() if c.get("references")}
    rows.append(["human (first reference)", *cells([scores(first_references(first))]), fmt(mbleu4(refs), 3),
                 fmt(self_cider(refs), 3)])
    methods = sorted({(r["metrics"].get("decoding") or {}).get("method", "greedy") for g in groups.values()
                      for r in g})
    return [f"### Diversity (test split, {'; '.join(methods)} captions)", "",
            tabulate(rows, headers=["configuration", *HEADERS, "mBLEU-4", "Self-CIDEr"], tablefmt="github",
                     disable_numparse=True), "",
            "Vocabulary: distinct words over the split; distinct-1/2: distinct unigrams/bigrams over all of them; "
            "unique: captions no other image got; novel: captions that are not a training caption word for word "
            "(n/a without the dataset); objects named: shape nouns per caption, against the objects its image "
            "has (the embedded dataset's scenes); mBLEU-4: with several captions per image "
            "(--captions-per-image), each one's BLEU-4 against the image's others, lower is more varied (the "
            "human row: each reference against the other four); Self-CIDEr: from the eigenvalues of the CIDEr "
            "similarities between an image's captions, 0 when they say one thing, 1 when they share no n-gram. "
            "Mean over seeds.", ""]


def time_to_target_table(done: list[dict]) -> list[str]:
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


def size_table(done: list[dict], name) -> list[str]:
    rows = []
    for r in done:
        p = r["metrics"]["params"]
        comps = ", ".join(f"{k} {v:,}" for k, v in p["components"].items())
        rows.append([name(r), f"{p['total']:,}", f"{p['trainable']:,}", comps,
                     f"{r['metrics']['weights_bytes'] / 2**20:.2f} MiB"])
    return ["## 2. Size", "", tabulate(rows, headers=["run", "total", "trainable", "per component", "weights file"],
                                       tablefmt="github"), ""]


def speed_table(done: list[dict], name) -> list[str]:
    rows = []
    for r in done:
        m = r["metrics"]
        s = m["speed"]
        rows.append([name(r), api_engine(m["framework"], m["versions"]), f"{s['train_tokens_per_s']:,.0f}",
                     f"{s['train_captions_per_s']:,.0f}",
                     fmt(s["time_to_first_step_s"], 2), f"{s['decode_greedy_captions_per_s']:,.0f}",
                     f"{s['decode_beam_captions_per_s']:,.0f}",
                     f"{s['peak_memory_mb']:,.0f} ({s['peak_memory_kind']})", m["device"], execution_text(m),
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


def overfitting_table(done: list[dict], name) -> list[str]:
    rows = []
    for r in done:
        o, t = r["metrics"]["overfitting"], r["metrics"]["training"]
        rows.append([name(r), f"{o['best_epoch']}/{t['epochs']}", fmt(o["final_train_loss"]),
                     fmt(o["final_val_loss"]), fmt((o["final_val_loss"] or 0) - (o["final_train_loss"] or 0)),
                     fmt(o["train_bleu4"]), fmt(o["test_bleu4"]), f"{t['train_time_s']:.0f}"])
    return ["## 4. Overfitting", "", tabulate(rows, headers=["run", "best epoch", "final train loss", "final val loss",
                                                               "val - train", "train BLEU-4", "test BLEU-4",
                                                               "train time s"], tablefmt="github"), ""]


def execution_text(m: dict) -> str:
    e = m.get("execution") or {"precision": "fp32", "compile": False}  # runs from before the setting existed
    return e["precision"] + (", compiled" if e["compile"] else "")


def _time_split(m: dict) -> str:
    t = m["training"]
    if "other_time_s" not in t:
        return "n/a"
    return " / ".join(f"{t[k]:.0f}" for k in ("train_time_s", "val_eval_time_s", "eval_time_s", "other_time_s"))
