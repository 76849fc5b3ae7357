"""Study files: a base configuration and variants, each with the hypothesis it tests (shipped ones in
benchmarks/run/studies/, or a user's own), read as untrusted input."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.run.plan import Variant
from benchmarks.scoring.stats import EXPECTATIONS
from benchmarks.settings import RunSettings
from benchmarks.store import study_folder
from plugins.registry import PluginRef
from shared_data.errors import UserError

STUDIES_DIR = Path(__file__).parent / "studies"


@dataclass
class StudyFile:
    """A study file: its rows, and how the study runs unless the command line says otherwise."""

    name: str
    variants: list[Variant]  # [base, *variants]
    settings: dict = field(default_factory=dict)  # study-wide RunSettings (a budget, seeds, patience)
    aa_control: bool = False  # add the A/A row (as --aa-control does)


STUDY_FILE_BYTES = 256 << 10  # a study file is a page of rows; the shipped ones are under 4 KiB


STUDY_FILE_DEPTH = 8  # file > variants > row > settings > value is 5: much deeper is not a study file


NOTE_MAX = 500  # characters of a row's note or hypothesis (a sentence, printed in the report)


def _depth(value: object) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return 1 + max((_depth(c) for c in children), default=0)


def _one_line_text(value: object) -> bool:
    return isinstance(value, str) and value.isprintable() and len(value) <= NOTE_MAX


def load_study_file(name_or_path: str) -> StudyFile:
    """A shipped study (benchmarks/run/studies/NAME.json) or a file, every row checked (plugin,
    hyperparameters, settings) with the file and row in the message."""
    path = Path(name_or_path)
    if not path.suffix:
        path = STUDIES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.json")))
        raise UserError(f"no study '{name_or_path}': give a .json study file or one of: {shipped}")
    try:
        if path.stat().st_size > STUDY_FILE_BYTES:
            raise TypeError(f"over {STUDY_FILE_BYTES >> 10} KiB")
        spec = json.loads(path.read_text())
        if _depth(spec) > STUDY_FILE_DEPTH:
            raise TypeError(f"nested deeper than {STUDY_FILE_DEPTH} levels")
        rows = [spec["base"], *spec["variants"]]
        if not isinstance(spec.get("settings", {}), dict) or not isinstance(spec.get("aa_control", False), bool):
            raise TypeError("'settings' is not an object or 'aa_control' not true/false")
        if not all(isinstance(r, dict) and isinstance(r["label"], str) and isinstance(r["plugin"], str)
                   and isinstance(r.get("hparams", {}), dict) and isinstance(r.get("settings", {}), dict)
                   for r in rows):
            raise TypeError("a row is not an object with text label and plugin")
    except RecursionError:
        raise UserError(f"{path}: not a study file (nested deeper than {STUDY_FILE_DEPTH} levels)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a study file ({e}); it needs 'base' and 'variants' with label and plugin") \
            from None
    variants = []
    for r in rows:
        r["label"] = study_folder.check_label(r["label"], f"{path.name}: ")
        where = f"{path.name}, row '{r['label']}'"
        for key in ("note", "hypothesis"):
            if not _one_line_text(r.get(key, "")):
                raise UserError(f"{where}: '{key}' is one line of printable text of at most {NOTE_MAX} characters")
        ref = _in(where, PluginRef.parse, r["plugin"])
        hparams = ref.plugin.check_hparams(r.get("hparams", {}), f"{where}: ")
        RunSettings().changed(r.get("settings", {}), f"{where}: settings")  # checked now, applied per study
        expect = r.get("expect")
        if expect is not None and expect not in EXPECTATIONS:
            raise UserError(f"{where}: expect {expect!r}: use one of {', '.join(EXPECTATIONS)} (how the row should "
                            "score against the base if its hypothesis holds), or leave it out")
        variants.append(Variant(r["label"], ref, hparams, dict(r.get("settings", {})), r.get("hypothesis", ""),
                                expect))
    given = RunSettings().changed(spec.get("settings", {}), f"{path.name}: settings", per_variant=False)
    return StudyFile(path.stem, variants, {k: getattr(given, k) for k in spec.get("settings", {})},
                     spec.get("aa_control", False))


def _in(where: str, fn, *args):
    try:
        return fn(*args)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def parse_overrides(items: list[str], refs: list[PluginRef]) -> dict[str, dict]:
    """`plugin.key=value` -> {plugin: {key: value}}, each value checked against the plugin's declaration."""
    by_name = {str(r): r for r in refs} | {r.name: r for r in refs}
    out: dict[str, dict] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        plugin, dot, hp = key.partition(".")
        if not eq or not dot or not hp:
            raise UserError(f"--set {item!r}: write PLUGIN.KEY=VALUE, e.g. torch_merge.dropout=0.5")
        if plugin not in by_name:
            raise UserError(f"--set {item!r}: {plugin} is not among --plugins ({', '.join(map(str, refs))})")
        out.setdefault(plugin, {}).update(by_name[plugin].plugin.check_hparams({hp: raw}, "--set "))
    return out
