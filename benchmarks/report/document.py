"""results/<study>/report.md from the saved runs: header, four tables, plots, sample captions.

Only reads run folders (through benchmarks/store/rundir.py), so `python -m benchmarks report results/<study>`
rebuilds the same report at any time. The rows are the runs of the study's last command: a run that
failed, did not finish or cannot be read is listed with its state, and a finished run of another
configuration (a stale one) is listed but never averaged into a row.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from pathlib import Path

from tabulate import tabulate

from benchmarks.report.answer import answer
from benchmarks.report.figures import figure_section, training_text
from benchmarks.report.runs import study_runs
from benchmarks.report.tables import (
    details_table,
    diversity_table,
    execution_text,
    overfitting_table,
    quality_tables,
    size_table,
    speed_table,
    time_to_target_table,
)
from benchmarks.scoring.comparisons import (
    compare,
    groups_of,
    label_of,
    seed_of,
)
from benchmarks.settings import BUDGET_KEYS, RunSettings, describe
from benchmarks.store import rundir
from shared_data.dataset import sha256_file
from shared_data.errors import UserError


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
    from benchmarks.machine import environment  # the one reader of the CPU's model and flags

    return environment()["cpu"] or "unknown CPU"


HALVES = rundir.HALVES


def write_report(study_dir: Path, half: int | None = None) -> Path:
    """report.md (and its PNG figures) from the study's saved runs, written atomically. half 1 or 2:
    report-half<N>.md, tables only, from the first ceil(n/2) of every configuration's n seeds (in
    seed order) or from the rest: two disjoint halves whose verdicts should agree."""
    study_dir = Path(study_dir)
    done, other, stale = study_runs(study_dir)
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
        f"- training: {training_text(common.get('training', 'several modes: see each row'))}",
        f"- execution: {'; '.join(sorted({execution_text(r['metrics']) for r in done})) or 'n/a'} "
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
    lines += quality_tables(done, ceiling, comparisons)
    lines += time_to_target_table(done)
    lines += size_table(done, name) + speed_table(done, name) + overfitting_table(done, name) + details_table(done)
    lines += diversity_table(groups, ds)
    if half is None:  # the figures are the whole study's; a half report is its tables
        lines += figure_section(study_dir, done, ds, name, comparisons)
        from benchmarks.report import export

        export.write(study_dir, done, groups, comparisons)
    else:
        lines = [lines[0], "", f"Half {half} of every configuration's seeds (`python -m benchmarks report "
                 f"{study_dir} --half {half}`); the whole study: {rundir.REPORT}.", ""] + lines[1:]
    out = study_dir / (rundir.REPORT if half is None else rundir.HALF_REPORT.format(half))
    rundir.write_text(out, "\n".join(lines) + "\n")
    return out


def summary(study_dir: Path) -> str:
    """The one-screen end of a study: a line per run of its plan, the numbers people look at first."""
    done, other, stale = study_runs(Path(study_dir))
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


