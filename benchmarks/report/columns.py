"""Every per-run number a report or results.csv shows, declared once: its name, its header and how
to read it from a run's metrics.json. The quality tables, the human-ceiling row and results.csv are
built from these lists, so a column cannot drift out of line with its header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str  # results.csv's column
    header: str  # the report's column
    get: Callable[[dict], float | None]  # metrics.json -> the value (None where the run has none)
    headline: bool = False  # in the report's headline quality table (else in its details table)
    ceiling: str | None = None  # the human ceiling's key, for columns scored like it (against references 2-5)


def _q(key: str) -> Callable[[dict], float | None]:
    return lambda m: m["quality"].get(key)


def _grounded(key: str) -> Callable[[dict], float | None]:
    return lambda m: (m.get("grounding") or {}).get(key)


def _refs4(key: str) -> Callable[[dict], float | None]:
    return lambda m: (m.get("quality_4refs") or {}).get(key)


QUALITY = [
    Column("bleu1", "BLEU-1", _q("BLEU-1")),
    Column("bleu2", "BLEU-2", _q("BLEU-2")),
    Column("bleu3", "BLEU-3", _q("BLEU-3")),
    Column("bleu4", "BLEU-4", _q("BLEU-4"), headline=True),
    Column("meteor", "METEOR", _q("METEOR"), headline=True),
    Column("rouge_l", "ROUGE-L", _q("ROUGE-L"), headline=True),
    Column("cider", "CIDEr-D", _q("CIDEr"), headline=True),
    Column("nltk_bleu4", "nltk BLEU-4", _q("nltk_BLEU-4")),
    Column("beam_bleu4", "beam BLEU-4", lambda m: m["beam"]["BLEU-4"], headline=True),
    Column("beam_cider", "beam CIDEr-D", lambda m: m["beam"]["CIDEr"]),
    Column("shuffled_bleu4", "shuffled BLEU-4", lambda m: m["shuffled_control"]["BLEU-4"]),
    Column("image_gap_bleu4", "image gap BLEU-4", lambda m: m["quality"]["BLEU-4"] - m["shuffled_control"]["BLEU-4"],
           headline=True),
    Column("image_gap_cider", "image gap CIDEr-D", lambda m: m["quality"]["CIDEr"] - m["shuffled_control"]["CIDEr"]),
    Column("colour_acc", "colour acc", _grounded("colour_acc")),
    Column("shape_precision", "shape prec", _grounded("shape_precision")),
    Column("relation_acc", "relation acc", _grounded("relation_acc")),
    Column("hallucination_rate", "halluc.", _grounded("hallucination_rate")),
    Column("bleu4_refs2_5", "BLEU-4 vs refs 2-5", _refs4("BLEU-4"), headline=True, ceiling="BLEU-4"),
    Column("cider_refs2_5", "CIDEr-D vs refs 2-5", _refs4("CIDEr"), headline=True, ceiling="CIDEr"),
]
HEADLINE = [c for c in QUALITY if c.headline]
DETAILS = [c for c in QUALITY if not c.headline]

# the rest of a run's record in results.csv
OTHER = [
    Column("train_tokens_per_s", "train tokens/s", lambda m: m["speed"]["train_tokens_per_s"]),
    Column("train_captions_per_s", "train captions/s", lambda m: m["speed"]["train_captions_per_s"]),
    Column("time_to_first_step_s", "first step s", lambda m: m["speed"]["time_to_first_step_s"]),
    Column("decode_greedy_captions_per_s", "greedy captions/s", lambda m: m["speed"]["decode_greedy_captions_per_s"]),
    Column("decode_beam_captions_per_s", "beam captions/s", lambda m: m["speed"]["decode_beam_captions_per_s"]),
    Column("peak_memory_mb", "peak memory MB", lambda m: m["speed"]["peak_memory_mb"]),
    Column("params", "parameters", lambda m: m["params"]["total"]),
    Column("epochs", "epochs", lambda m: m["training"]["epochs"]),
    Column("best_epoch", "best epoch", lambda m: m["overfitting"]["best_epoch"]),
    Column("train_time_s", "train s", lambda m: m["training"]["train_time_s"]),
    Column("wall_s", "wall s", lambda m: m["speed"].get("finished_at", float("nan"))
           - m["speed"].get("started_at", float("nan"))),
    Column("final_val_loss", "final val loss", lambda m: m["overfitting"]["final_val_loss"]),
    Column("train_bleu4", "train BLEU-4", lambda m: m["overfitting"]["train_bleu4"]),
]


def value(column: Column, metrics: dict) -> float | None:
    """The column's value for a run, None where the run's record lacks it (an older or partial record)."""
    try:
        v = column.get(metrics)
    except (KeyError, TypeError):
        return None
    return None if v is None else float(v)


def fmt(x, digits=3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"
