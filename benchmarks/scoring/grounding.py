"""Grounded caption scores: does a generated caption say things that are true of its image?

BLEU rewards the right words; this module checks them against the scene's ground truth (the
objects.json of a synthetic dataset). A caption is read with the generator's own vocabulary
(`synthetic_captions.LEXICON`), phrases matched longest-first ("five pointed star" before "star",
"on the left side of" before "left of"). Rules:

- Background: a background noun ("background", "backdrop", "surface", "canvas") and the words
  before it that describe it (articles, pattern words, tones, colours, one preposition such as
  "on"/"against"/"over") are dropped first; nothing in "on a striped white background" is an object.
- Noun phrase: a shape noun (singular or plural) with the run of colour, size and number words
  right before it ("two", "a huge scarlet", "the tiny"); "shapes"/"objects"/"figures" make a
  generic noun phrase, used only for counts. An object matches a noun phrase when it has the shape
  and every colour and size the phrase names.
- colour_acc: each colour word in a noun phrase; right if an object has that shape and colour.
- shape_precision: each shape noun; right if the shape is in the image (hallucination_rate is the
  rest). shape_recall: each distinct shape of the image; right if the caption names it.
- size_acc: each size word in a noun phrase; right if an object has that shape, size (and colour).
- relation_acc: a relation phrase followed directly by a noun phrase B (after "a"/"an"/"the") or by
  "it" (the caption's first noun phrase), with A the nearest noun phrase before it; right if some
  pair of distinct objects matching A and B has that relation by `synthetic_captions.relation(a, b)`.
  "near" is also right for overlapping pairs (`relation` says front/behind for those): near in any
  direction. A relation phrase not followed by a noun phrase is a position ("near the top", "at the
  left of the picture") and is not scored.
- count_acc: a number word ("one".."six") in a noun phrase; right if it equals the number of objects
  matching the phrase ("two circles": circles; "three shapes": all objects).

Corpus rates pool mentions over all captions (micro-average); each comes with its mention count
(`n_colour`, ...), and a rate with no mentions is NaN, not 0.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from shared_data import synthetic_captions, synthetic_scene
from shared_data.text import tokenize

NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
GENERIC_PLURALS = ("shapes", "objects", "figures")
ARTICLES = ("a", "an", "the")
BG_PREPOSITIONS = ("on", "against", "over", "in", "with")
# words that may describe a background: articles, patterns, tones, colours
_BG_MODIFIERS = (set(ARTICLES) | set(synthetic_scene.BG_TONES)
                 | {t for words in synthetic_captions.BG_WORDS.values() for w in words for t in w.split()}
                 | {t for words in synthetic_captions.COLOUR_WORDS.values() for w in words for t in w.split()})

# (kind, value) for each phrase: kinds shape, plural (canonical shape), colour, size, relation,
# number (int), generic, it, article
_PHRASES: dict[tuple[str, ...], tuple[str, object]] = {}
for _surface, (_kind, _canonical) in synthetic_captions.LEXICON.items():
    _PHRASES[tuple(_surface.split())] = (_kind, _canonical)
for _shape, _plural in synthetic_captions.SHAPE_PLURALS.items():
    _PHRASES[(_plural,)] = ("plural", _shape)
_PHRASES.update({(w,): ("number", n) for w, n in NUMBER_WORDS.items()})
_PHRASES.update({(w,): ("generic", None) for w in GENERIC_PLURALS})
_PHRASES.update({(w,): ("article", None) for w in ARTICLES})
_PHRASES[("it",)] = ("it", None)
_MAX_PHRASE = max(len(p) for p in _PHRASES)
_MODIFIERS = ("colour", "size", "number")

METRICS = ("colour_acc", "shape_precision", "hallucination_rate", "shape_recall", "size_acc", "relation_acc",
           "count_acc")
_COUNTERS = {"colour_acc": "colour", "shape_precision": "shape", "shape_recall": "recall", "size_acc": "size",
             "relation_acc": "relation", "count_acc": "count"}


@dataclass
class NounPhrase:
    shape: str | None  # None for "shapes"/"objects"/"figures"
    start: int  # item index of the first modifier
    end: int  # item index of the noun
    colours: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    number: int | None = None

    def matches(self, o: synthetic_scene.SceneObject) -> bool:
        return ((self.shape is None or o.shape == self.shape) and all(c == o.colour for c in self.colours)
                and all(s == o.size for s in self.sizes))


def _strip_background(tokens: list[str]) -> list[str | None]:
    """Tokens with background phrases replaced by None (a barrier no noun phrase crosses)."""
    out: list[str | None] = list(tokens)
    for i, t in enumerate(tokens):
        if t not in synthetic_captions.BG_NOUNS:
            continue
        j = i - 1
        while j >= 0 and tokens[j] in _BG_MODIFIERS:
            j -= 1
        if j >= 0 and tokens[j] in BG_PREPOSITIONS:
            j -= 1
        for k in range(j + 1, i + 1):
            out[k] = None
    return out


def _items(tokens: list[str | None]) -> list[tuple[str, object]]:
    """Longest-first phrase matching; unknown words become ("word", w), background ("bg", None)."""
    items: list[tuple[str, object]] = []
    i = 0
    while i < len(tokens):
        if tokens[i] is None:
            items.append(("bg", None))
            i += 1
            continue
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):
            span = tokens[i:i + n]
            if None not in span and tuple(span) in _PHRASES:
                items.append(_PHRASES[tuple(span)])
                i += n
                break
        else:
            items.append(("word", tokens[i]))
            i += 1
    return items


def _noun_phrases(items: list[tuple[str, object]]) -> list[NounPhrase]:
    phrases = []
    for end, (kind, value) in enumerate(items):
        if kind not in ("shape", "plural", "generic"):
            continue
        start = end
        while start > 0 and items[start - 1][0] in _MODIFIERS:
            start -= 1
        np_ = NounPhrase(value, start, end)
        for k, v in items[start:end]:
            if k == "colour":
                np_.colours.append(v)
            elif k == "size":
                np_.sizes.append(v)
            else:
                np_.number = v
        phrases.append(np_)
    return phrases


def _relation_holds(relation: str, a: synthetic_scene.SceneObject, b: synthetic_scene.SceneObject) -> bool:
    actual = synthetic_captions.relation(a, b)
    return actual == relation or (relation == "near" and actual in ("front", "behind"))


def _scene_objects(scene: dict | list) -> list[synthetic_scene.SceneObject]:
    raw = scene["objects"] if isinstance(scene, dict) else scene
    return [synthetic_scene.SceneObject(o["shape"], o["colour"], o["size"], o["x"], o["y"], o["radius"], o["depth"],
                                  tuple(o["bbox"])) for o in raw]


def caption_counts(caption: str, scene: dict | list) -> Counter:
    """Right/total counts for one caption: keys "<what>_right" and "<what>_total"."""
    objects = _scene_objects(scene)
    items = _items(_strip_background(tokenize(caption)))
    phrases = _noun_phrases(items)
    shape_phrases = [p for p in phrases if p.shape is not None]
    c: Counter = Counter()

    def tally(what: str, right: bool) -> None:
        c[f"{what}_total"] += 1
        c[f"{what}_right"] += int(right)

    for p in phrases:
        if p.shape is not None:
            tally("shape", any(o.shape == p.shape for o in objects))
            for colour in p.colours:
                tally("colour", any(o.shape == p.shape and o.colour == colour for o in objects))
            for size in p.sizes:
                tally("size", any(p.matches(o) and o.size == size for o in objects))
        if p.number is not None:
            tally("count", p.number == sum(p.matches(o) for o in objects))
    mentioned = {p.shape for p in shape_phrases}
    for shape in {o.shape for o in objects}:
        tally("recall", shape in mentioned)

    starts = {p.start: p for p in shape_phrases}
    for r, (kind, relation) in enumerate(items):
        if kind != "relation":
            continue
        before = [p for p in shape_phrases if p.end < r]
        if not before:
            continue
        a_phrase = before[-1]
        k = r + 1
        if k < len(items) and items[k][0] == "it":
            b_phrase = shape_phrases[0]
            if b_phrase is a_phrase:  # "it" with no antecedent but A itself
                continue
        else:
            while k < len(items) and items[k][0] == "article":
                k += 1
            b_phrase = starts.get(k)
            if b_phrase is None:  # a position ("near the top"), not a relation between objects
                continue
        tally("relation", any(_relation_holds(relation, a, b) for a in objects for b in objects
                              if a is not b and a_phrase.matches(a) and b_phrase.matches(b)))
    return c


def _rates(c: Counter) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric, what in _COUNTERS.items():
        total = c[f"{what}_total"]
        out[metric] = c[f"{what}_right"] / total if total else math.nan
        if metric == "shape_precision":
            out["hallucination_rate"] = 1.0 - out[metric]  # NaN stays NaN
        out[f"n_{what}"] = total
    return out


def _check(captions: dict[str, str], objects: dict[str, dict]) -> None:
    missing = sorted(set(captions) - set(objects))
    if missing:
        raise ValueError(f"no ground truth for {len(missing)} captioned images, e.g. {missing[0]}")


def per_image_grounding(captions: dict[str, str], objects: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Image id -> the rates and mention counts of its caption alone (NaN where nothing is mentioned)."""
    _check(captions, objects)
    return {i: _rates(caption_counts(captions[i], objects[i])) for i in sorted(captions)}


def grounded_scores(captions: dict[str, str], objects: dict[str, dict]) -> dict[str, float]:
    """Corpus grounding rates for one generated caption per image.

    captions: image id -> caption (space-joined tokens); objects: image id -> objects.json entry
    ({"objects": [...], "background", "tone"}) or the bare list of objects. Returns n_captions, the
    rates in METRICS (NaN where nothing was mentioned) and n_<what>, the mentions each rests on
    (n_recall counts the images' distinct shapes).
    """
    _check(captions, objects)
    total: Counter = Counter()
    for i in captions:
        total.update(caption_counts(captions[i], objects[i]))
    return {"n_captions": len(captions), **_rates(total)}
