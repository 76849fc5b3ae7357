"""Bad input to run, ablate, study and report, as a new user types it: every case is refused in one line
(exit 2, no traceback) that says what is accepted, before any run starts, and a finished study in the
same results folder is left exactly as it was. `report` on damaged runs lists them as rows instead.

The prepare / importer / dataset cases are in tests/test_bad_inputs_data.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cli import main

STUDY = "done"  # the finished study every case runs next to


@pytest.fixture(scope="module")
def finished(small_dataset, data_dir, tmp_path_factory) -> Path:
    """A finished two-run study (torch_merge, seeds 0 and 1, 2 steps): the results no bad input may touch."""
    cwd = tmp_path_factory.mktemp("finished")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--plugins", "torch_merge", "--dataset",
                           "synthetic-small", "--steps", "2", "--seeds", "2", "--no-meteor", "--study", STUDY,
                           "--data-dir", str(data_dir)], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd / "results"


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "study.lock"}


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def study_file(tmp: Path, **row_changes) -> Path:
    """A one-variant study file whose variant row is torch_merge with `row_changes`."""
    path = tmp / "s.json"
    row = {"label": "v", "plugin": "torch_merge", **row_changes}
    path.write_text(json.dumps({"base": {"label": "base", "plugin": "torch_merge"}, "variants": [row]}))
    return path


RUN = ["run", "--plugins", "torch_merge"]
ABLATE = ["ablate", "torch_merge"]
# (argv after the command, what stderr must say); {tmp} is the case's own folder
CASES = [
    (RUN + ["--clip-norm", "-1"], "--clip-norm -1: expected a finite number in (0, inf)"),
    (RUN + ["--clip-norm", "0"], "--clip-norm 0: expected a finite number in (0, inf)"),
    (RUN + ["--decoding", "nucleus"], "--decoding nucleus: expected one of greedy, beam, sample"),
    (RUN + ["--top-p", "0"], "--top-p 0: expected a finite number in (0, 1]"),
    (RUN + ["--groups", "2"], "--groups 2: the beam (3) must split into equal groups"),
    (RUN + ["--decoding", "beam", "--captions-per-image", "4"],
     "--captions-per-image 4: beam search keeps 3 hypotheses an image"),
    (RUN + ["--lr", "nan"], "--lr nan: expected a finite number in (0, inf)"),
    (RUN + ["--lr", "fast"], "--lr fast: expected a finite number"),
    (RUN + ["--adam-eps", "2"], "--adam-eps 2: expected a finite number in (0, 1)"),
    (RUN + ["--time-budget", "nan"], "--time-budget nan: expected a finite number in (0, inf)"),
    (RUN + ["--time-budget", "-5"], "--time-budget -5: expected a finite number in (0, inf)"),
    (RUN + ["--patience", "-1"], "--patience -1: expected a whole number in [1, inf)"),
    (RUN + ["--patience", "0"], "--patience 0: expected a whole number in [1, inf)"),
    (RUN + ["--batch-size", "abc"], "--batch-size abc: expected a whole number in [1, inf)"),
    (RUN + ["--batch-size", "0"], "--batch-size 0: expected a whole number in [1, inf)"),
    (RUN + ["--epochs", "1.5"], "--epochs 1.5: expected a whole number in [1, inf)"),
    (RUN + ["--steps", "0"], "--steps 0: expected a whole number in [1, inf)"),
    (RUN + ["--training", "bogus"], "--training bogus: expected one of sequence, prefix"),
    (RUN + ["--precision", "fp16"], "--precision fp16: expected one of fp32, bf16"),
    (RUN + ["--seeds", "0"], "--seeds 0: expected a whole number in [1, 1000]"),
    (RUN + ["--seeds", "1000000000"], "--seeds 1000000000: expected a whole number in [1, 1000]"),
    (ABLATE + ["--vary", "units=" + ",".join(map(str, range(1, 1200))), "--seeds", "5"],
     "the study asks for 5,995 runs (1199 configurations x 5 seeds), more than 5,000"),
    (RUN + ["--seed", "-1"], "--seed -1: expected a whole number in [0, 4294967295]"),
    (RUN + ["--beam-size", "0"], "--beam-size 0: expected a whole number in [1, 100]"),
    (RUN + ["--length-alpha", "-1"], "--length-alpha -1: expected a finite number in [0, 10]"),
    (RUN + ["--set", "torch_merge.dropout=abc"], "--set torch_merge.dropout=abc: expected a finite number in [0, 1)"),
    (RUN + ["--set", "torch_merge.dropout=1.5"], "--set torch_merge.dropout=1.5: expected a finite number in [0, 1)"),
    (RUN + ["--set", "torch_merge.units=0"], "--set torch_merge.units=0: expected a whole number in [1, inf)"),
    (RUN + ["--set", "torch_merge.fusion=mul"], "--set torch_merge.fusion=mul: expected one of add, concat"),
    (RUN + ["--set", "torch_merge.units=true"], "--set torch_merge.units=true: expected a whole number"),
    (RUN + ["--set", "torch_merge=3"], "write PLUGIN.KEY=VALUE"),
    (RUN + ["--study", "../x"], "--study '../x': a study name is a plain folder name"),
    (RUN + ["--study", "/tmp/abs"], "--study '/tmp/abs': a study name is a plain folder name"),
    (RUN + ["--study", "a/b"], "--study 'a/b': a study name is a plain folder name"),
    (RUN + ["--study", ".hidden"], "--study '.hidden': a study name is a plain folder name"),
    (RUN + ["--results-dir", "{tmp}/file/results"], "cannot be a folder (a file is in the way)"),
    (RUN + ["--jobs", "0"], "--jobs and --threads must be positive"),
    (RUN + ["--threads", "0"], "--jobs and --threads must be positive"),
    (RUN + ["--threads", "10000"], "--threads 10000: this machine has"),
    (RUN + ["--seed", "4294967295", "--seeds", "2"], "the last seed, 4294967296, is past [0, 4294967295]"),
    (RUN + ["--executor", "dask"], "argument --executor: invalid choice: 'dask'"),
    (RUN + ["--bogus"], "unrecognized arguments: --bogus"),
    (["run", "--plugins", ","], "--plugins is empty"),
    (["run", "--plugins", "torch_concatt"], "unknown plugin 'torch_concatt' (did you mean torch_concat?)"),
    (["run", "--plugins", "torch_merge@jax"], "'@backend' picks the Keras backend"),
    (["run", "--plugins", "torch_merge,torch_merge"], "'torch_merge' appears twice in the study"),
    (ABLATE + ["--vary", "batch_size=abc"], "--vary batch_size=abc: expected a whole number in [1, inf)"),
    (ABLATE + ["--vary", "lr=fast"], "--vary lr=fast: expected a finite number in (0, inf)"),
    (ABLATE + ["--vary", "training=bogus"], "--vary training=bogus: expected one of sequence, prefix"),
    (ABLATE + ["--vary", "clip_norm=-1"], "--vary clip_norm=-1: expected a finite number in (0, inf)"),
    (ABLATE + ["--vary", "epochs=3,4"], "--vary: epochs is the study's own setting"),
    (ABLATE + ["--vary", "fusion=mul"], "--vary torch_merge.fusion=mul: expected one of add, concat"),
    (ABLATE + ["--vary", "units=0,8"], "--vary torch_merge.units=0: expected a whole number in [1, inf)"),
    (ABLATE + ["--vary", "keras_backend=jax"], "cannot vary keras_backend: torch_merge is not a Keras plugin"),
    (ABLATE + ["--vary", "fusoin=add"], "cannot vary fusoin"),
    (["study", "{file:settings.batch_size=big}"], "row 'v': settings.batch_size big: expected a whole number"),
    (["study", "{file:settings.lr=-1}"], "row 'v': settings.lr -1: expected a finite number in (0, inf)"),
    (["study", "{file:settings.epochs=2}"], "row 'v': settings: epochs is the study's own setting"),
    (["study", "{file:settings.bogus=1}"], "row 'v': settings: unknown run setting 'bogus'"),
    (["study", "{file:hparams.dropout=big}"], "row 'v': torch_merge.dropout=big: expected a finite number"),
    (["study", "{file:plugin=torch_mrege}"], "row 'v': unknown plugin 'torch_mrege'"),
    (["study", "{file:label=base}"], "'base' appears twice in the study"),
    (["study", "{file:not json}"], "not a study file"),
    (["study", "seed000", "--set", "torch_concat.units=8"], "--set does not apply to study files"),
    (["study", "seed999"], "no study 'seed999'"),
    (["study", "bad\nname\x00"], "no study 'bad\\nname\\x00'"),  # printed escaped: still one line
    (["report", "{tmp}/nowhere"], "is not a study folder"),
    (["report", "{tmp}"], "holds no runs"),
    (["calibrate", "{tmp}/nowhere"], "is not a study folder"),
    (["calibrate", "{finished}/done", "--group", "2"], "torch_merge has 2 finished seeds; A/A splits need"),
    (["calibrate", "{finished}/done", "--label", "x"], "--label x: not in"),
    (["report", "{finished}/done", "--half", "3"], "--half: invalid choice: 3 (choose from 1, 2)"),
    (["run", "--plugins", "torch_merge", "--target", "val_loss=2", "--epochs", "2", "--target", "bleu=1"],
     "--target bleu=1: write METRIC=VALUE"),
    (["run", "--plugins", "torch_merge", "--target", "val_bleu4=0.3"], "give a cap too"),
    (["run", "--plugins", "torch_merge", "--target", "val_loss=nan", "--epochs", "2"],
     "--target val_loss=nan: the value must be a finite number"),
    (["study", "{file:expect=better}"], "row 'v': expect 'better': use one of higher, lower"),
    (["publish", "{tmp}/nowhere"], "is not a study folder"),
    (["publish", "{tmp}"], "is not a study folder (no readable study.json)"),
    (["publish", "{unfinished}"], "has no finished run to publish yet (1 planned)"),
    (["publish", "{finished}/done", "--to", "{tmp}/file"], "exists and is not a folder"),
    (["publish", "{finished}/done", "--to", "{tmp}"], "exists and is not a publication of done"),
    (["publish", "{finished}/done", "--to", "{finished}/done"], "is already the published copy"),
    (["study", "{file:settings at the top=5}"], "not a study file ('settings' is not an object"),
]


def _materialise(argv: list[str], tmp: Path, finished: Path) -> list[str]:
    out = []
    for a in argv:
        if a.startswith("{file:"):
            spec = a[len("{file:"):-1]
            if spec == "not json":
                (tmp / "s.json").write_text("{not json")
                out.append(str(tmp / "s.json"))
                continue
            if spec == "settings at the top=5":
                out.append(str(study_file(tmp)))
                Path(out[-1]).write_text(json.dumps({**json.loads(Path(out[-1]).read_text()), "settings": 5}))
                continue
            key, _, value = spec.partition("=")
            value = int(value) if value.lstrip("-").isdigit() else value
            part, _, sub = key.partition(".")
            out.append(str(study_file(tmp, **({part: {sub: value}} if sub else {part: value}))))
        elif a == "{unfinished}":  # a study that planned a run and finished none
            (tmp / "unfinished").mkdir()
            (tmp / "unfinished" / "study.json").write_text(json.dumps({"study": "unfinished", "jobs": [
                {"folder": "x-s0", "label": "x", "plugin": "torch_merge", "config_hash": "0" * 16, "settings": {}}]}))
            out.append(str(tmp / "unfinished"))
        else:
            out.append(a.replace("{tmp}", str(tmp)).replace("{finished}", str(finished)))
    return out


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(c[0][1:])[:60] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(argv, message, finished, data_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("a file where a folder would go")
    before = snapshot(finished)
    argv = _materialise(argv, tmp_path, finished)
    if argv[0] not in ("report", "calibrate", "publish"):
        budget = [] if "--target" in argv else ["--steps", "2"]  # a target case brings its own cap, or none
        argv += ["--dataset", "synthetic-small", "--data-dir", data_dir, *budget, "--no-meteor",
                 *([] if "--results-dir" in argv else ["--results-dir", finished]),
                 *([] if "--study" in argv or argv[0] == "study" else ["--study", STUDY])]
        if argv.count("--steps") > 1:  # the case's own budget wins
            i = len(argv) - 1 - argv[::-1].index("--steps")
            del argv[i:i + 2]
    code, out, err = cli(argv, capsys)
    assert code == 2, out + err
    assert message in err, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert snapshot(finished) == before
    assert not list(finished.parent.glob("x")) and not Path("/tmp/abs").exists()


def test_report_lists_damaged_runs_as_rows(finished, tmp_path, capsys):
    """A truncated metrics.json, config.json or history.csv is a row saying so, never a traceback."""
    study = tmp_path / STUDY
    shutil.copytree(finished / STUDY, study)
    s0, s1 = study / "torch_merge-s0", study / "torch_merge-s1"
    (s0 / "metrics.json").write_text((s0 / "metrics.json").read_text()[:40])
    (s1 / "history.csv").write_text("epoch,step\n1,")
    code, out, err = cli(["report", study], capsys)
    assert code == 0, err
    report = (study / "report.md").read_text()
    assert "torch_merge (seed 0): unreadable: metrics.json is not valid JSON" in report
    assert "torch_merge (seed 1): unreadable: history.csv is not a complete history" in report
    (s1 / "config.json").write_text("{")
    code, out, err = cli(["report", study], capsys)
    assert code == 0, err
    assert "unreadable: config.json is not valid JSON" in (study / "report.md").read_text()


def test_half_reports_split_every_configurations_seeds(finished, tmp_path, capsys):
    """report --half 1|2: the same tables from disjoint halves of the seeds; report.md is left alone."""
    study = tmp_path / STUDY
    shutil.copytree(finished / STUDY, study)
    whole = (study / "report.md").read_bytes()
    halves = []
    for half in (1, 2):
        code, out, err = cli(["report", study, "--half", str(half)], capsys)
        assert code == 0, err
        halves.append((study / f"report-half{half}.md").read_text())
    assert "seeds: 0\n" in halves[0] + "\n" and "seeds: 0;" not in halves[1]
    assert [h.split("; seeds: ")[1].split("\n")[0] for h in halves] == ["0", "1"]
    assert all("Half" in h and "curves.png" not in h for h in halves)
    assert (study / "report.md").read_bytes() == whole


def test_report_on_a_full_disk_is_one_line_and_leaves_no_temporary_file(finished, tmp_path, capsys, monkeypatch):
    study = tmp_path / STUDY
    shutil.copytree(finished / STUDY, study)
    old = (study / "report.md").read_bytes()

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    code, out, err = cli(["report", study], capsys)
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in err and err.strip().count("\n") == 0
    assert (study / "report.md").read_bytes() == old and not list(study.glob("*.tmp"))


def test_keras_backend_in_the_environment_never_decides_a_run_silently(finished, data_dir, capsys, monkeypatch):
    """$KERAS_BACKEND is not in a run's configuration: a plain keras_merge runs on TensorFlow, so an
    environment that says otherwise is refused before anything runs (it would file a Keras@torch result
    under keras_merge's configuration)."""
    from benchmarks.run.plan import StudyOptions, Variant, check
    from plugins.registry import PluginRef

    before = snapshot(finished)
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    code, out, err = cli(["run", "--plugins", "keras_merge", "--dataset", "synthetic-small", "--data-dir", data_dir,
                          "--steps", "2", "--results-dir", finished, "--study", STUDY], capsys)
    assert code == 2
    assert "KERAS_BACKEND=torch is set, but keras_merge runs on tensorflow: write keras_merge@torch" in err
    assert err.strip().count("\n") == 0 and snapshot(finished) == before
    check(StudyOptions(variants=[Variant("k", PluginRef.parse("keras_merge@torch")),
                                 Variant("t", PluginRef.parse("torch_merge"))]))  # agrees: accepted


# ------------------------------------------------------------------------ study files, labels and plans
def _deep(levels: int) -> dict:
    value: object = 1
    for _ in range(levels):
        value = {"x": value}
    return value


ROW = {"label": "v", "plugin": "torch_merge"}
# (a study file's content, or a function of the case folder that writes it; what stderr must say)
STUDY_FILES = [
    ({"base": {**ROW, "label": "a\nb"}, "variants": []}, 'label "a\\nb": a label is at most 100 characters'),
    ({"base": {**ROW, "label": "a\x00b"}, "variants": []}, 'label "a\\u0000b": a label is at most 100'),
    ({"base": {**ROW, "label": "x" * 101}, "variants": []}, "a label is at most 100 characters"),
    ({"base": {**ROW, "label": "é" * 200}, "variants": []}, "a label is at most 100 characters"),
    ({"base": {**ROW, "label": "-rf"}, "variants": []}, "starting with a letter or digit"),
    ({"base": {**ROW, "label": "a|b"}, "variants": []}, "a label is at most 100 characters"),
    ({"base": {**ROW, "label": 7}, "variants": []}, "not a study file"),
    ({"base": ROW, "variants": [{**ROW, "label": "w", "hypothesis": "two\nlines"}]}, "'hypothesis' is one line"),
    ({"base": ROW, "variants": [{**ROW, "label": "w", "settings": _deep(20)}]}, "nested deeper than 8 levels"),
    ("[" * 100_000 + "]" * 100_000, "not a study file"),
    ({"base": ROW, "variants": [{**ROW, "label": f"w{i}", "hypothesis": "h" * 400} for i in range(800)]},
     "not a study file (over 256 KiB)"),
]


@pytest.mark.parametrize("content, message", STUDY_FILES, ids=[m[:40] for _, m in STUDY_FILES])
def test_bad_study_file_is_one_line(content, message, finished, data_dir, tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    before = snapshot(finished)
    code, out, err = cli(["study", path, "--dataset", "synthetic-small", "--data-dir", data_dir, "--steps", "2",
                          "--no-meteor", "--results-dir", tmp_path / "results"], capsys)
    assert code == 2, out + err
    assert message in err, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert snapshot(finished) == before and not (tmp_path / "results").exists()


# (a change to study.json of a copy of the finished study; what `report` says)
PLANS = [
    (lambda p: {**p, "jobs": [{k: v for k, v in j.items() if k != "config_hash"} for j in p["jobs"]]},
     "study.json has no 'jobs[0].config_hash'"),
    (lambda p: {**p, "jobs": ["torch_merge-s0"]}, "study.json 'jobs[0]' is a string, expected an object"),
    (lambda p: {**p, "jobs": [{**j, "folder": "/etc"} for j in p["jobs"]]}, "study.json 'jobs[0].folder' is not valid"),
    (lambda p: {**p, "jobs": [{**j, "folder": "../x"} for j in p["jobs"]]}, "study.json 'jobs[0].folder' is not valid"),
    (lambda p: {**p, "jobs": [{**j, "settings": {"seed": "0"}} for j in p["jobs"]]},
     "'jobs[0].settings.seed' is a string, expected an integer"),
    (lambda p: '{"x":' * 100_000 + "1" + "}" * 100_000, "study.json is not valid JSON"),
    (lambda p: {**p, "jobs": [p["jobs"][0]] * 2}, "study.json lists torch_merge-s0 twice"),
]


@pytest.mark.parametrize("change, message", PLANS, ids=[m[:40] for _, m in PLANS])
def test_report_refuses_a_damaged_plan_in_one_line(change, message, finished, tmp_path, capsys):
    study = tmp_path / STUDY
    shutil.copytree(finished / STUDY, study)
    plan = study / "study.json"
    changed = change(json.loads(plan.read_text()))
    plan.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    before = snapshot(study)
    code, out, err = cli(["report", study], capsys)
    assert code == 2, out + err
    assert message in err and "study command that ran here rewrites it" in err, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert snapshot(study) == before


# ------------------------------------------------------------------- damaged run files: rows, not errors
def _metrics(change):
    def apply(run: Path) -> None:
        m = json.loads((run / "metrics.json").read_text())
        change(m)
        (run / "metrics.json").write_text(json.dumps(m))
    return apply


def _captions(change):
    def apply(run: Path) -> None:
        c = json.loads((run / "captions.json").read_text())
        (run / "captions.json").write_text(json.dumps(change(c)))
    return apply


def _link(name: str, target: str):
    def apply(run: Path) -> None:
        (run / name).unlink()
        (run / name).symlink_to(target)
    return apply


def _history(text: str):
    return lambda run: (run / "history.csv").write_text(text)


DAMAGED = [
    (_metrics(lambda m: m["quality"].update({"BLEU-4": "high"})),
     "metrics.json 'quality.BLEU-4' is \"high\", expected a finite number"),
    (_metrics(lambda m: m.update(quality=[1, 2])), "metrics.json 'quality' is a list, expected an object"),
    (_metrics(lambda m: m.update(status=7)), "metrics.json 'status' is 7, expected one line of printable text"),
    (_metrics(lambda m: m["speed"].pop("train_tokens_per_s")), "metrics.json has no 'speed.train_tokens_per_s'"),
    (_metrics(lambda m: m.update(versions=["x"])), "metrics.json 'versions' is a list, expected an object"),
    (_metrics(lambda m: m["quality"].update({"CIDEr": float("nan")})),
     "metrics.json 'quality.CIDEr' is NaN, expected a finite number"),
    (_metrics(lambda m: m["params"].update(total=True)), "metrics.json 'params.total' is true/false"),
    (_metrics(lambda m: m.update(environment={"cpu": "x", "isa": "avx2", "env": {}})),
     "metrics.json 'environment.isa' is a string, expected a list"),
    (_history("epoch,step,train_loss,val_loss,val_bleu4,train_time_s\n1,2,1e308,1,0.1,3\n"),
     "history.csv has a value beyond ±1e+12 (epoch 1)"),
    (_captions(lambda c: {k: v["generated"] for k, v in c.items()}),
     "captions.json 'synth_"),
    (_captions(lambda c: {"/etc/hostname" if i == 0 else k: v for i, (k, v) in enumerate(c.items())}),
     "captions.json: '/etc/hostname' is not an image id"),
    (_captions(lambda c: {"../../x.jpg" if i == 0 else k: v for i, (k, v) in enumerate(c.items())}),
     "captions.json: '../../x.jpg' is not an image id"),
    (lambda run: (run / "per_image.json").write_text('{"a": {"CIDEr": "1"}}'),
     "per_image.json 'a.CIDEr' is a string, expected a number"),
    (_link("metrics.json", "/etc/hostname"), "metrics.json is a symbolic link"),
    (_link("history.csv", "/etc/hostname"), "history.csv is a symbolic link"),
    (_link("stdout.log", "/etc/hostname"), "stdout.log is a symbolic link"),
    (_metrics(lambda m: m.update(status="ok\n| PHANTOM |")), "metrics.json 'status' is \"ok\\n| PHANTOM |\", "
     "expected one line of printable text"),
    (_metrics(lambda m: m.update(device="cpu | 2")), "metrics.json 'device' is \"cpu | 2\""),
    (lambda run: (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()),
                                                               "label": "y\n| PHANTOM |"})),
     "config.json 'label' is \"y\\n| PHANTOM |\""),
    (lambda run: (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()),
                                                               "hparams": []})),
     "config.json 'hparams' is a list, expected an object"),
]


@pytest.mark.parametrize("damage, message", DAMAGED, ids=[m[:50] for _, m in DAMAGED])
def test_report_lists_each_damaged_file_as_an_unreadable_row(damage, message, finished, tmp_path, capsys):
    study = tmp_path / STUDY
    shutil.copytree(finished / STUDY, study)
    damage(study / "torch_merge-s0")
    code, out, err = cli(["report", study], capsys)
    assert code == 0, err
    report = (study / "report.md").read_text()
    row = next((ln for ln in report.splitlines() if "unreadable" in ln), "")
    assert "torch_merge (seed 0): unreadable: " + message in row, row
    assert "Traceback" not in out + err


def test_a_run_folder_that_links_elsewhere_is_neither_read_nor_written(finished, data_dir, tmp_path, capsys):
    """A run folder that is a symbolic link: `report` lists it as unreadable without reading it, `run`
    refuses before it would delete the link target's checkpoint and write a run into it."""
    results = tmp_path / "results"
    shutil.copytree(finished, results)
    outside = tmp_path / "outside"
    shutil.copytree(results / STUDY / "torch_merge-s0", outside)
    (outside / "checkpoint.json").write_text("{}")
    (outside / "tensorboard").mkdir()
    (outside / "tensorboard" / "events").write_text("x")
    shutil.rmtree(results / STUDY / "torch_merge-s0")
    (results / STUDY / "torch_merge-s0").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    code, out, err = cli(["report", results / STUDY], capsys)
    assert code == 0, err
    assert "torch_merge (seed 0): unreadable: the run folder is a symbolic link" in \
        (results / STUDY / "report.md").read_text()
    code, out, err = cli(["run", "--plugins", "torch_merge", "--dataset", "synthetic-small", "--data-dir", data_dir,
                          "--steps", "3", "--seeds", "2", "--no-meteor", "--results-dir", results, "--study", STUDY],
                         capsys)
    assert code == 2 and "torch_merge-s0 is a symbolic link; run folders are real folders" in err, err
    assert err.strip().count("\n") == 0 and snapshot(outside) == before


@pytest.mark.parametrize("what", ["study folder", "study.lock"])
def test_a_study_folder_or_lock_that_links_elsewhere_is_refused(what, finished, data_dir, tmp_path, capsys):
    results, outside = tmp_path / "results", tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    if what == "study folder":
        results.mkdir()
        (results / "linked").symlink_to(outside, target_is_directory=True)
        study, message = "linked", "is a symbolic link; a study folder is a real folder"
    else:
        shutil.copytree(finished, results)
        (results / STUDY / "study.lock").unlink(missing_ok=True)
        (results / STUDY / "study.lock").symlink_to(outside / "precious")
        study, message = STUDY, "remove the link and run the command again"
    code, out, err = cli(["run", "--plugins", "torch_merge", "--dataset", "synthetic-small", "--data-dir", data_dir,
                          "--steps", "2", "--no-meteor", "--results-dir", results, "--study", study], capsys)
    assert code == 2 and message in err, err
    assert err.strip().count("\n") == 0
    assert [p.name for p in outside.iterdir()] == ["precious"] and (outside / "precious").read_text() == "keep me"


def test_environment_is_checked_before_any_work(finished, data_dir, tmp_path, capsys, monkeypatch):
    """No Java (METEOR), no disk space, no write permission: each one line before anything is written."""
    import benchmarks.store.rundir as rundir_mod

    argv = ["run", "--plugins", "torch_merge", "--dataset", "synthetic-small", "--data-dir", data_dir, "--steps", "2",
            "--results-dir", tmp_path / "results", "--study", "env"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    code, out, err = cli(argv, capsys)
    assert code == 2 and "METEOR needs Java" in err and "or pass --no-meteor" in err, err
    assert not (tmp_path / "results").exists()
    monkeypatch.undo()
    monkeypatch.setattr(rundir_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, 1 << 40, 1 << 20))
    code, out, err = cli(argv + ["--no-meteor"], capsys)
    assert code == 2 and "the runs to go (1) need about 64 MiB" in err and "1 MiB are free" in err, err
    assert not list((tmp_path / "results" / "env").glob("*-s0"))
    monkeypatch.undo()
    monkeypatch.setattr(rundir_mod.os, "access", lambda p, mode: False)  # as root, chmod alone would not stop us
    code, out, err = cli(argv + ["--no-meteor"], capsys)
    assert code == 2 and "is not writable" in err, err


def test_list_with_a_dataset_that_is_not_there_says_so(data_dir, tmp_path, capsys):
    code, out, err = cli(["list", "--dataset", "missing", "--data-dir", data_dir], capsys)
    assert code == 2 and "missing" in err and "prepare" in err and err.strip().count("\n") == 0, err
    code, out, err = cli(["export", tmp_path / "e", "--dataset", "d" * 300, "--data-dir", data_dir], capsys)
    assert code == 2 and "not a dataset name or folder (File name too long)" in err, err


def test_a_killed_worker_is_reported_as_killed_not_by_its_last_line(tmp_path):
    from benchmarks.run.executors import outcome
    from benchmarks.run.plan import Job

    run = tmp_path / "r-s0"
    run.mkdir()
    (run / "stdout.log").write_text('{"epoch": 1, "step": 5, "val_loss": 2.0}\n')
    job = Job(1, "r", run, {"label": "r", "config_hash": "0" * 16})
    job.work_dir = run
    row = outcome(job, -9, 1.0, log=lambda *_: None)
    assert row["error"] == "error: the worker was killed by SIGKILL (out of memory, or kill -9)"
    assert (run / "error.txt").read_text().strip() == row["error"]


def test_a_full_disk_in_a_worker_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    import benchmarks.run.worker.__main__ as worker

    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")

    def full(run_dir):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(worker, "run", full)
    monkeypatch.setattr(sys, "argv", ["worker", str(tmp_path)])
    assert worker.main() == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"error: cannot write in {tmp_path} (No space left on device)")
    assert not list(tmp_path.glob("*.tmp"))


def test_files_planted_as_links_are_never_written_through(finished, data_dir, tmp_path, capsys):
    """A run's stdout.log or a report figure that links to an outside file: the study refuses before the
    worker would write the log into it; the report replaces the link with its own figure."""
    results, outside = tmp_path / "results", tmp_path / "outside.txt"
    outside.write_text("keep me")
    shutil.copytree(finished, results)
    (results / STUDY / "curves.png").unlink(missing_ok=True)
    (results / STUDY / "curves.png").symlink_to(outside)
    code, out, err = cli(["report", results / STUDY], capsys)
    assert code == 0 and outside.read_text() == "keep me", err
    assert not (results / STUDY / "curves.png").is_symlink()
    run = results / STUDY / "torch_merge-s1"
    (run / "metrics.json").unlink()
    (run / "stdout.log").unlink()
    (run / "stdout.log").symlink_to(outside)
    code, out, err = cli(["run", "--plugins", "torch_merge", "--dataset", "synthetic-small", "--data-dir", data_dir,
                          "--steps", "2", "--seeds", "2", "--no-meteor", "--results-dir", results, "--study", STUDY],
                         capsys)
    assert code == 2 and "torch_merge-s1/stdout.log is a symbolic link; a run's files are its own" in err, err
    assert err.strip().count("\n") == 0 and outside.read_text() == "keep me"

