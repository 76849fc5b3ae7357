"""Captions of a synthetic scene: a grammar with synonyms, several sentence structures and optional
detail (sizes, positions, pairwise relations, the background), so that the five captions of an
image differ the way Flickr8k's do; and `LEXICON`, which maps every surface word back to the
attribute it names, for grounded scoring.
"""

from __future__ import annotations

import math

import numpy as np

from shared_data.synthetic_scene import IMAGE_SIZE, Scene, SceneObject, overlap

# ---------------------------------------------------------------- the lexicon (surface -> canonical)
SHAPE_WORDS = {
    "circle": ["circle", "disc", "round shape"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle", "triangular shape"],
    "star": ["star", "five pointed star"],
    "diamond": ["diamond", "rhombus"],
    "hexagon": ["hexagon", "six sided shape"],
    "cross": ["cross", "plus sign"],
    "heart": ["heart", "heart shape"],
    "ring": ["ring", "hoop", "donut"],
    "crescent": ["crescent", "moon shape", "half moon"],
    "rectangle": ["rectangle", "bar", "brick"],
    "oval": ["oval", "ellipse", "egg shape"],
}
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
                 "diamond": "diamonds", "hexagon": "hexagons", "cross": "crosses", "heart": "hearts",
                 "ring": "rings", "crescent": "crescents", "rectangle": "rectangles", "oval": "ovals"}
COLOUR_WORDS = {
    "red": ["red", "scarlet"], "orange": ["orange"], "yellow": ["yellow", "golden"],
    "green": ["green", "emerald"], "blue": ["blue", "navy"], "purple": ["purple", "violet"],
    "pink": ["pink"], "brown": ["brown", "chocolate"], "white": ["white"], "black": ["black", "jet black"],
    "grey": ["grey", "gray", "silver"],
}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "medium": ["medium sized", "mid sized", ""],
              "large": ["large", "big", "huge"]}
RELATION_WORDS = {
    "left": ["to the left of", "left of", "on the left side of"],
    "right": ["to the right of", "right of", "on the right side of"],
    "above": ["above", "over", "on top of"],
    "below": ["below", "under", "beneath", "underneath"],
    "front": ["in front of", "overlapping", "partly covering"],
    "behind": ["behind", "partly hidden behind", "covered by"],
    "near": ["next to", "beside", "near", "close to"],
}
BG_WORDS = {
    "plain": ["plain", "flat", "simple"], "striped": ["striped", "lined"],
    "dotted": ["dotted", "spotted", "polka dot"], "checkered": ["checkered", "chequered", "tiled"],
    "speckled": ["speckled", "grainy", "noisy"], "wavy": ["wavy", "rippled"],
    "gradient": ["shaded", "gradient", "fading"],
}
BG_NOUNS = ["background", "backdrop", "surface", "canvas"]
SCENE_NOUNS = ["picture", "image", "photo", "scene", "drawing"]
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}


def _lexicon() -> dict[str, tuple[str, str]]:
    lex: dict[str, tuple[str, str]] = {}
    for kind, table in (("shape", SHAPE_WORDS), ("colour", COLOUR_WORDS), ("size", SIZE_WORDS),
                        ("relation", RELATION_WORDS)):
        for canonical, words in table.items():
            for w in words:
                if w:
                    lex.setdefault(w, (kind, canonical))
    for shape, plural in SHAPE_PLURALS.items():
        lex[plural] = ("shape", shape)
    return lex


LEXICON = _lexicon()  # "scarlet" -> ("colour", "red"), "hoop" -> ("shape", "ring"), ...


# ------------------------------------------------------------------------------------ captions
def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _position_phrase(o: SceneObject, rng: np.random.Generator) -> str:
    third = IMAGE_SIZE / 3
    h = "left" if o.x < third else "right" if o.x > 2 * third else "centre"
    v = "top" if o.y < third else "bottom" if o.y > 2 * third else "middle"
    if h == "centre" and v == "middle":
        return _pick(rng, ["in the centre", "in the middle", "at the centre of the " + _pick(rng, SCENE_NOUNS)])
    if h == "centre":
        return _pick(rng, [f"at the {v}", f"near the {v}", f"at the {v} of the {_pick(rng, SCENE_NOUNS)}"])
    if v == "middle":
        return _pick(rng, [f"on the {h}", f"on the {h} side", f"at the {h} of the {_pick(rng, SCENE_NOUNS)}"])
    return _pick(rng, [f"in the {v} {h} corner", f"at the {v} {h}", f"in the {v} {h}"])


def relation(a: SceneObject, b: SceneObject) -> str:
    """How a relates to b, as the canonical relation a caption would name."""
    if overlap(a.bbox, b.bbox) > 0.05:
        return "front" if a.depth > b.depth else "behind"
    dx, dy = a.x - b.x, a.y - b.y
    if math.hypot(dx, dy) < (a.radius + b.radius) * 1.4:
        return "near"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _noun_phrase(o: SceneObject, rng: np.random.Generator, definite: bool = False,
                 with_size: float = 0.5, with_colour: float = 0.9) -> str:
    words = []
    if rng.random() < with_size:
        size = _pick(rng, SIZE_WORDS[o.size])
        if size:
            words.append(size)
    if rng.random() < with_colour:
        words.append(_pick(rng, COLOUR_WORDS[o.colour]))
    words.append(_pick(rng, SHAPE_WORDS[o.shape]))
    phrase = " ".join(words)
    if definite:
        return "the " + phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _background_phrase(scene: Scene, rng: np.random.Generator) -> str:
    tone = "" if rng.random() < 0.5 else scene.tone + " "
    return f"{_pick(rng, ['on', 'against', 'over'])} a {tone}{_pick(rng, BG_WORDS[scene.background])} " \
           f"{_pick(rng, BG_NOUNS)}"


def _count_phrase(objects: list[SceneObject], rng: np.random.Generator) -> str:
    """'two circles and a star' / 'three shapes': counting is part of what a model must see."""
    if len(objects) > 1 and rng.random() < 0.3:
        return f"{NUMBERS[len(objects)]} {_pick(rng, ['shapes', 'objects', 'figures'])}"
    groups: dict[str, int] = {}
    for o in objects:
        groups[o.shape] = groups.get(o.shape, 0) + 1
    parts = []
    for shape, k in groups.items():
        if k == 1:
            parts.append(_noun_phrase(next(o for o in objects if o.shape == shape), rng, with_size=0.2))
        else:
            parts.append(f"{NUMBERS[k]} {SHAPE_PLURALS[shape]}")
    return _join(parts)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


VERBS = ["is", "sits", "rests", "lies", "appears", "is placed", "can be seen", "is drawn", "floats"]
OPENERS = ["there is", "we see", "this is", "you can see"]
SHOWS = ["shows", "contains", "depicts", "has"]


# terse list, opener + list, position, relation, count, chained relations, all positions:
# weights tuned so that caption lengths spread like Flickr8k's (mean ~11 words, long tail to ~35)
STYLE_WEIGHTS = (0.24, 0.1, 0.24, 0.18, 0.12, 0.05, 0.07)
MAX_WORDS = 35


def _caption(scene: Scene, rng: np.random.Generator) -> str:
    objs = sorted(scene.objects, key=lambda o: -o.radius)  # people mention the biggest things first
    main = objs[0]
    style = int(rng.choice(7, p=STYLE_WEIGHTS))
    bg = _background_phrase(scene, rng) if rng.random() < 0.25 else ""
    if style == 0:  # terse list
        text = _join([_noun_phrase(o, rng, with_size=0.3) for o in objs[: int(rng.integers(1, len(objs) + 1))]])
    elif style == 1:  # opener + list
        text = f"{_pick(rng, OPENERS)} " + _join([_noun_phrase(o, rng) for o in objs])
    elif style == 2:  # main object with a position
        text = f"{_noun_phrase(main, rng)} {_pick(rng, VERBS)} {_position_phrase(main, rng)}"
    elif style == 3 and len(objs) > 1:  # relation between the two biggest
        rel = relation(objs[0], objs[1])
        text = f"{_noun_phrase(objs[0], rng)} {_pick(rng, VERBS)} {_pick(rng, RELATION_WORDS[rel])} " \
               f"{_noun_phrase(objs[1], rng, definite=rng.random() < 0.5)}"
    elif style == 4:  # the scene "shows" a count
        noun = _pick(rng, SCENE_NOUNS)
        article = "the" if rng.random() < 0.5 else "an" if noun[0] in "aeiou" else "a"
        text = f"{article} {noun} {_pick(rng, SHOWS)} " \
               f"{_count_phrase(objs, rng)}"
    elif style == 5 and len(objs) > 1:  # chained relations: long captions
        parts = [f"{_noun_phrase(objs[0], rng)} {_position_phrase(objs[0], rng)}"]
        for o in objs[1:]:
            parts.append(f"{_noun_phrase(o, rng)} {_pick(rng, RELATION_WORDS[relation(o, objs[0])])} it")
        text = _join(parts)
    else:  # every object with its position
        text = _join([f"{_noun_phrase(o, rng)} {_position_phrase(o, rng)}" for o in objs])
    if bg:
        text = f"{bg} {text}" if rng.random() < 0.25 else f"{text} {bg}"
    return text


def captions_for(scene: Scene, rng: np.random.Generator, k: int = 5) -> list[str]:
    """k distinct captions (a few extra draws when the grammar repeats itself)."""
    out: list[str] = []
    for _ in range(50 * k):
        c = _caption(scene, rng)
        if c not in out and len(c.split()) <= MAX_WORDS:
            out.append(c)
        if len(out) == k:
            return out
    raise RuntimeError("grammar could not produce distinct captions")  # pragma: no cover
