"""The figures people look at, readable without the report's text: the forest plot of a study's
effects and the time-to-target distribution. matplotlib (Agg) is imported only when one is drawn."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.scoring.comparisons import METRIC_NAMES, Comparison, groups_of
from benchmarks.scoring.stats import ALPHA
from benchmarks.store import rundir


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

