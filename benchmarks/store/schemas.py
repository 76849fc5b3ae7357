"""What each JSON file of a run or study folder must hold, as types (shared_data/schema.py): a file that
does not match is read as "unreadable: <file> <what is wrong>", a row of the report, never a traceback."""
from __future__ import annotations

import re

from shared_data.schema import FINITE, Each, Optional, problem

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$")


def _file_name(name: object) -> bool:
    """A plain name inside its folder: what run folders and the files a checkpoint names must be."""
    return isinstance(name, str) and bool(NAME.match(name)) and len(name) <= 255


def _line(text: object) -> bool:
    """One line of printable text that cannot break a markdown table (labels, statuses, devices)."""
    return isinstance(text, str) and text.isprintable() and "|" not in text and len(text) <= 200


_line.expected = "one line of printable text without '|'"

def _target(target: object) -> bool:
    """A --target record: a met target carries the time, epochs and tokens the report tables."""
    met = {"train_time_s": float, "epochs": float, "tokens": float}
    return (not problem(target, {"target": str, "reached": bool})
            and (not target["reached"] or not problem(target, met)))


_target.expected = "{target, reached} and, when reached, train_time_s, epochs and tokens"


# What the report and the study read from a run's files, as types (shared_data/schema.py): a file that
# does not match is "unreadable: <file> <what is wrong>", a row of the report, never a traceback.
_SCORES = Each(float)  # metric -> value (NaN where a metric has no value on this test set)
METRICS_SCHEMA = {
    "status": _line, "plugin": _line, "framework": _line, "device": _line, "versions": Each(_line),
    "quality": Each(float, {"BLEU-4": FINITE, "CIDEr": FINITE}), "quality_4refs": Optional(_SCORES),
    "grounding": Optional(_SCORES), "shuffled_control": {"BLEU-4": FINITE, "CIDEr": FINITE},
    "beam": {"BLEU-4": FINITE, "CIDEr": FINITE},
    "params": {"total": int, "trainable": int, "components": Each(int)}, "weights_bytes": int,
    "speed": {"train_tokens_per_s": float, "train_captions_per_s": float, "time_to_first_step_s": float,
              "decode_greedy_captions_per_s": float, "decode_beam_captions_per_s": float, "peak_memory_mb": float,
              "peak_memory_kind": str, "fixed_shapes": bool, "threads": Optional(int),
              "batch_width": Optional(str), "started_at": Optional(float), "finished_at": Optional(float)},
    "training": {"epochs": int, "train_time_s": float, "val_eval_time_s": Optional(float),
                 "eval_time_s": Optional(float), "other_time_s": Optional(float)},
    "overfitting": {"best_epoch": int, "final_train_loss": Optional(float), "final_val_loss": Optional(float),
                    "train_bleu4": Optional(float), "test_bleu4": Optional(float)},
    "execution": Optional({"precision": str, "compile": bool}),
    "environment": Optional({"cpu": str, "isa": [str], "env": Each(str), "host": Optional(str),
                             "boot": Optional(str)}),
    "data": Optional({"weights_sha256": Optional(str), "features_sha256": Optional(str)}),
    "target": Optional(_target),
    "spice_note": Optional(str),
    "decoding": Optional({"method": _line, "captions_per_image": int}),
}
CONFIG_SCHEMA = {"label": _line, "plugin": _line, "hparams": dict, "settings": {"seed": Optional(int)}, "dataset": str,
                 "extractor": str, "config_hash": str, "order": Optional(int), "note": Optional(str),
                 "expect": Optional(str)}
PLAN_SCHEMA = {"jobs": [{"folder": _file_name, "config_hash": str,
                         **{k: Optional(v) for k, v in CONFIG_SCHEMA.items() if k != "config_hash"}}]}
CHECKPOINT_SCHEMA = {"config_hash": Optional(str), "file": _file_name, "loop": {"best_file": Optional(_file_name)}}
CAPTIONS_SCHEMA = Each({"generated": str, "references": Optional([str]), "all": Optional([str])})
PER_IMAGE_SCHEMA = Each(_SCORES)
