"""Caption metrics: pycocoevalcap is the reference, nltk's corpus BLEU a cross-check.

Inputs are already tokenised by shared_data.text.tokenize (lowercase, letters and digits), for
references and hypotheses alike, so the PTB tokenizer step of the COCO toolkit (a Java call that
would split the same words the same way) is skipped. Special tokens never reach this module:
`Vocab.decode` strips them.

pycocoevalcap's `Cider` is CIDEr-D (clipped counts, Gaussian length penalty, sigma 6), the variant
reported on the COCO leaderboard; its IDF comes from the references being scored, as in the toolkit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
CORENLP = "stanford-corenlp-3.6.0"


def spice_missing() -> str | None:
    """None when SPICE can run; otherwise why not and how to fix it. SPICE needs Stanford CoreNLP's
    jars, which pycocoevalcap downloads on first use (not possible offline, so never at run time)."""
    import importlib.util

    spec = importlib.util.find_spec("pycocoevalcap")  # a namespace package: no __init__, no origin
    locations = list(spec.submodule_search_locations or []) if spec else []
    lib = Path(locations[0]) / "spice" / "lib" if locations else None
    if lib is not None and all((lib / f"{CORENLP}{suffix}.jar").exists() for suffix in ("", "-models")):
        return None
    return (f"SPICE left out: it needs {CORENLP}.jar and {CORENLP}-models.jar in {lib or 'pycocoevalcap/spice/lib'} "
            "(fetch them once with: python -c 'from pycocoevalcap.spice.get_stanford_models import "
            "get_stanford_models as g; g()')")


def java_missing() -> str | None:
    """Why METEOR cannot run here (its scorer is a Java program), or None. Checked before a study
    starts: without it, a run would train for hours and then fail in evaluation."""
    import shutil

    if shutil.which("java") is None:
        return ("METEOR needs Java, and there is no 'java' on PATH: install Java 17 (Debian/Ubuntu: "
                "apt install openjdk-17-jre-headless) or pass --no-meteor")
    return None


def start_meteor():
    """pycocoevalcap's METEOR scorer, started now: its JVM spends about 5 s loading paraphrase tables
    in the background, so a caller can start it before other work and pass it to coco_scores."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def coco_scores(references: dict[str, Sequence[str]], hypotheses: dict[str, str],
                meteor=True, spice: bool = False) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Corpus scores and per-image scores (for paired comparisons) for one set of captions.

    references: image id -> reference captions (space-joined tokens)
    hypotheses: image id -> one generated caption
    meteor: True (start a scorer), False, or a scorer from start_meteor()
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(references) != set(hypotheses):
        raise ValueError("references and hypotheses must cover the same images")
    ids = sorted(references)
    # pycocoevalcap wants lists of strings and chokes on an empty hypothesis: score it as one
    # unknown word, which matches nothing (what an empty caption deserves)
    gts = {i: list(references[i]) for i in ids}
    res = {i: [hypotheses[i] if hypotheses[i].strip() else "<empty>"] for i in ids}
    scorers = [(Bleu(4), ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]), (Rouge(), ["ROUGE-L"]), (Cider(), ["CIDEr"])]
    if meteor:
        scorers.append((start_meteor() if meteor is True else meteor, ["METEOR"]))
    if spice and spice_missing() is None:
        from pycocoevalcap.spice.spice import Spice
        scorers.append((Spice(), ["SPICE"]))
    corpus: dict[str, float] = {}
    per_image: dict[str, dict[str, float]] = {i: {} for i in ids}
    for scorer, names in scorers:
        score, scores = scorer.compute_score(gts, res, **({"verbose": 0} if names[0] == "BLEU-1" else {}))
        if names == ["SPICE"]:  # per-image results are dicts of F-scores by tuple category
            scores = [x["All"]["f"] for x in scores]
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, s, per in zip(names, score, scores, strict=True):
            corpus[name] = float(s)
            for i, v in zip(ids, per, strict=True):
                per_image[i][name] = float(v)
    return {m: corpus[m] for m in METRICS if m in corpus}, per_image


def nltk_bleu4(references: dict[str, Sequence[str]], hypotheses: dict[str, str]) -> float:
    """Corpus BLEU-4 by nltk: the number most tutorials (and seed 001) report."""
    from nltk.translate.bleu_score import corpus_bleu

    ids = sorted(references)
    return float(corpus_bleu([[r.split() for r in references[i]] for i in ids],
                             [hypotheses[i].split() for i in ids]))


def human_ceiling(captions: dict[str, Sequence[str]], meteor: bool = False) -> dict[str, float]:
    """Each image's first caption scored against its other captions: what a human scores."""
    refs = {i: list(c[1:]) for i, c in captions.items() if len(c) > 1}
    if not refs:
        return {}  # one caption per image: there is nothing to compare a human against
    hyps = {i: captions[i][0] for i in refs}
    scores, _ = coco_scores(refs, hyps, meteor=meteor)
    return scores
