"""How varied a model's captions are, beside how right: beam search and greedy decoding collapse onto
a few safe captions, which BLEU does not punish.

For one caption per test image (captions are space-joined tokens, as the harness stores them):

- vocabulary: distinct words used over the whole test split
- distinct-1 / distinct-2: distinct unigrams (bigrams) over all unigrams (bigrams), pooled over
  the split (Li et al. 2016)
- unique: share of the captions that no other test image got
- novel: share of the captions that are not, word for word, a training caption (needs the dataset)
- mean length: words per caption
- objects named / in image (the embedded dataset, whose scenes are known): shape nouns a caption
  names, and objects its image has, both per image

For several captions per image (sampling, diverse beam search; the references themselves):

- mBLEU-4: each caption's BLEU-4 against the same image's other captions, statistics summed over the
  split as corpus BLEU is (Shetty et al. 2017): how alike one image's captions are, lower is more
  varied.
- Self-CIDEr (Wang and Chan 2019): per image, the kernel matrix K of its m captions' CIDEr
  similarities (tf-idf n-gram vectors, n = 1..4, document frequencies over the split's images, the
  cosine averaged over n; no length penalty, so that K stays positive semi-definite), then
  -log(sqrt(largest eigenvalue) / sum of sqrt(eigenvalues)) / log(m): 0 when the captions say one
  thing, 1 when they share no n-gram; higher is more varied. Mean over images.

The human references get the same numbers (each image's first reference) as a ceiling row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

METRICS = ("vocabulary", "distinct_1", "distinct_2", "unique", "novel", "mean_length", "objects_named",
           "objects_in_image")
HEADERS = ("vocabulary", "distinct-1", "distinct-2", "unique", "novel", "mean length", "objects named",
           "objects in image")


def _ngrams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return zip(*(tokens[i:] for i in range(n)), strict=False)


def distinct(captions: list[list[str]], n: int) -> float:
    grams = [g for t in captions for g in _ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def diversity(captions: dict[str, str], train: set[str] | None = None, objects: dict | None = None) -> dict:
    """The numbers above for {image id: caption}; novel is NaN without the training captions and the
    object counts without the scenes (objects.json)."""
    texts = [captions[i] for i in sorted(captions)]
    tokens = [t.split() for t in texts]
    counts: dict[str, int] = {}
    for t in texts:
        counts[t] = counts.get(t, 0) + 1
    n = max(len(texts), 1)
    out = {
        "vocabulary": len({w for t in tokens for w in t}),
        "distinct_1": distinct(tokens, 1),
        "distinct_2": distinct(tokens, 2),
        "unique": sum(c == 1 for c in counts.values()) / n,
        "novel": sum(t not in train for t in texts) / n if train is not None else math.nan,
        "mean_length": sum(map(len, tokens)) / n,
        "objects_named": math.nan,
        "objects_in_image": math.nan,
    }
    if objects and all(i in objects for i in captions):
        from benchmarks.scoring.grounding import caption_counts

        out["objects_named"] = sum(caption_counts(captions[i], objects[i])["shape_total"] for i in captions) / n
        out["objects_in_image"] = sum(len(_objects(objects[i])) for i in captions) / n
    return out


def _objects(scene: dict | list) -> list:
    return scene["objects"] if isinstance(scene, dict) else scene


def first_references(captions: dict[str, dict]) -> dict[str, str]:
    """Each image's first human reference: the ceiling row, one caption per image like a model's."""
    return {i: entry["references"][0] for i, entry in captions.items()}


def mbleu4(captions: dict[str, list[str]]) -> float:
    """mBLEU-4 of {image id: its captions}; NaN when no image has two."""
    import numpy as np

    from benchmarks.scoring.stats import bleu_stats, corpus_bleu

    rows = [bleu_stats(caps[:k] + caps[k + 1:], cap) for caps in captions.values() if len(caps) > 1
            for k, cap in enumerate(caps)]
    return corpus_bleu(np.sum(rows, 0)) if rows else math.nan


def self_cider(captions: dict[str, list[str]], max_n: int = 4) -> float:
    """Self-CIDEr of {image id: its captions} (see the module docstring); NaN when no image has two."""
    import numpy as np

    several = {i: [c.split() for c in caps] for i, caps in captions.items() if len(caps) > 1}
    if not several:
        return math.nan
    df: dict[tuple[str, ...], int] = {}
    for caps in several.values():
        for g in {g for t in caps for n in range(1, max_n + 1) for g in _ngrams(t, n)}:
            df[g] = df.get(g, 0) + 1
    log_images = math.log(len(several))
    values = []
    for caps in several.values():
        m = len(caps)
        kernel = np.zeros((m, m))
        for n in range(1, max_n + 1):
            grams = sorted({g for t in caps for g in _ngrams(t, n)})
            index = {g: k for k, g in enumerate(grams)}
            vec = np.zeros((m, len(grams)))
            for r, t in enumerate(caps):
                for g in _ngrams(t, n):
                    vec[r, index[g]] += log_images - math.log(df[g])
            norms = np.linalg.norm(vec, axis=1)
            unit = np.divide(vec, norms[:, None], out=np.zeros_like(vec), where=norms[:, None] > 0)
            kernel += unit @ unit.T / max_n
        eig = np.clip(np.linalg.eigvalsh(kernel), 0, None)
        roots = np.sqrt(eig)
        values.append(0.0 if roots.sum() == 0 else -math.log(roots.max() / roots.sum()) / math.log(m))
    return float(np.mean(values))
