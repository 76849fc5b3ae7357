"""The figures people look at, readable without the report's text: the forest plot of a study's
effects and the time-to-target distribution. matplotlib (Agg) is imported only when one is drawn."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.scoring.comparisons import (
    METRIC_NAMES,
    Comparison,
    groups_of,
    label_of,
)
from benchmarks.scoring.stats import ALPHA
from benchmarks.store import rundir
from shared_data.errors import UserError


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forest(study_dir: Path, comparisons: list[Comparison]) -> Path | None:
    """Each comparison's Δ with its seed-level 95% interval, one panel per headline metric: filled
    where the Holm-adjusted p is below α, an arrow at the label for the direction the hypothesis
    expects, and the A/A row's interval as a grey band: the spread that seeds alone produce."""
    if not comparisons:
        return None
    plt = pyplot()
    rows = list(reversed(comparisons))  # the first comparison on top
    fig, axes = plt.subplots(1, len(METRIC_NAMES), figsize=(12, 0.42 * len(rows) + 1.6), sharey=True)
    for ax, (m, name) in zip(axes, METRIC_NAMES.items(), strict=True):
        for c in rows:
            if c.aa:
                lo, hi = c.tests[m]["ci"]
                ax.axvspan(lo, hi, color="0.85", zorder=0, label="A/A interval (seeds alone)")
        for y, c in enumerate(rows):
            t, adj = c.tests[m], c.adjusted[m]
            significant = adj is not None and adj < ALPHA
            colour = "0.4" if c.aa else ("tab:green" if significant and c.verdict == "supported" else
                                         "tab:red" if significant and c.verdict == "contradicted" else "tab:blue")
            lo, hi = t["ci"]
            ax.errorbar(t["diff"], y, xerr=[[t["diff"] - lo], [hi - t["diff"]]], fmt="o", color=colour, capsize=3,
                        markerfacecolor=colour if significant else "white")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"Δ {name} against {comparisons[0].base}")
        ax.set_xlabel(f"{name} difference, 95% seed-level interval")
        ax.grid(axis="x", alpha=0.3)
    arrow = {"higher": " →", "lower": " ←"}
    axes[0].set_yticks(range(len(rows)), [c.label + arrow.get(c.expect or "", "") for c in rows])
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles[:1], labels[:1], loc="lower left", fontsize=8)
    fig.suptitle("Filled: significant after Holm's adjustment; → / ←: the direction the hypothesis expects; "
                 "green supported, red contradicted", fontsize=9)
    fig.tight_layout()
    path = Path(study_dir) / rundir.FOREST
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def time_to_target(study_dir: Path, done: list[dict]) -> Path | None:
    """Per configuration, each seed's training seconds to the target; runs that never reached it are
    crosses at the right edge."""
    groups = {label: [r["metrics"].get("target") for r in g] for label, g in groups_of(done).items()}
    groups = {label: t for label, t in groups.items() if any(t)}
    if not groups:
        return None
    reached = [x["train_time_s"] for t in groups.values() for x in t if x and x["reached"]]
    edge = max(reached) * 1.1 if reached else 1.0
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(groups) + 1.5))
    for y, targets in enumerate(reversed(list(groups.values()))):
        times = [x["train_time_s"] if x and x["reached"] else math.inf for x in targets]
        ax.plot([t for t in times if t != math.inf], [y] * sum(t != math.inf for t in times), "o", color="tab:blue")
        missed = sum(t == math.inf for t in times)
        if missed:
            ax.plot([edge] * missed, [y] * missed, "x", color="tab:red")
    ax.set_yticks(range(len(groups)), list(reversed(list(groups))))
    ax.set_xlabel("training seconds to the target (x: not reached)")
    ax.set_title(f"Time to target ({next(t for ts in groups.values() for t in ts if t)['target']})")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(study_dir) / rundir.TIME_TO_TARGET
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def attention_words(image, title: str, words: list[str], alphas, path: Path, most: int = 7) -> bool:
    """The image, then each of the caption's first words (up to <end>, at most `most`) with its
    attention map drawn over the image, as Show, Attend and Tell does; False (nothing written) when
    the maps are not a square grid."""
    side = int(round(alphas.shape[-1] ** 0.5))
    if side * side != alphas.shape[-1]:
        return False
    n = min(most, next((k + 1 for k, w in enumerate(words) if w == "<end>"), len(words)))
    plt = pyplot()
    fig, axes = plt.subplots(1, n + 1, figsize=(2.2 * (n + 1), 2.5))
    axes[0].imshow(image)
    axes[0].set_title(title, fontsize=8)
    for ax, k in zip(axes[1:], range(n), strict=True):
        ax.imshow(image)
        ax.imshow(alphas[k].reshape(side, side), cmap="gray", alpha=0.6, extent=(0, image.width, image.height, 0),
                  interpolation="bilinear")
        ax.set_title(words[k], fontsize=10)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def figure_section(study_dir: Path, done: list[dict], ds, name, comparisons: list) -> list[str]:
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


def _plot_history(study_dir: Path, runs: list[dict], name) -> Path | None:
    """Train loss, val loss and val BLEU-4 per epoch: one line per run, one colour and one legend entry per
    configuration (a study's 65 runs would not fit a legend of their own)."""
    runs = [r for r in runs if r.get("history")]
    if not runs:
        return None
    plt = pyplot()
    labels = list(dict.fromkeys(label_of(r) for r in runs))
    several = len(labels) < len(runs)
    colours = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    seen = set()
    for r in runs:
        h, label = r["history"], label_of(r)
        colour = colours(labels.index(label) % colours.N)
        legend = None if label in seen else (label if several else name(r))
        seen.add(label)
        epochs = [x["epoch"] for x in h]
        style = {"color": colour, "marker": "o", "markersize": 3 if several else 5, "linewidth": 1}
        axes[0].plot(epochs, [x["train_loss"] for x in h], label=legend, **style)
        axes[1].plot(epochs, [x["val_loss"] for x in h], **style)
        axes[2].plot(epochs, [x["val_bleu4"] for x in h], **style)
    for ax, title in zip(axes, ["train loss", "val loss", "val BLEU-4 (greedy)"], strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.legend(loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    path = study_dir / rundir.CURVES
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def training_text(mode: str) -> str:
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
