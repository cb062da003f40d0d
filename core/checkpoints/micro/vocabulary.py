"""What the micro model knows: its words, the prompts it was trained on, and a word checker.

Torch-free and PIL-free, so the app can offer the vocabulary (examples, a prompt builder)
and name the words of a prompt the model never saw, without loading a model.

A prompt describes one or two shapes on a coloured background::

    a large red circle on the left, on a blue background
    a small yellow star at the top and a large purple square at the bottom, on a white background
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RGB of each colour word, 0-255. Shapes and backgrounds use the same palette.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 50),
    "green": (40, 170, 70),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: tuple[str, ...] = ("small", "large")
# Position word -> the phrase that places a shape there.
POSITIONS: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}
# Two shapes always stand on opposite sides, so they never overlap.
OPPOSITE_PAIRS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("right", "left"),
    ("top", "bottom"),
    ("bottom", "top"),
)
GRAMMAR_WORDS: tuple[str, ...] = ("a", "an", "and", "on", "the", "at", "in", "background")

WORDS: frozenset[str] = frozenset(
    [*COLOURS, *SHAPES, *SIZES, *GRAMMAR_WORDS]
    + [w for phrase in POSITIONS.values() for w in phrase.split()]
)
"""Every word of every training prompt (lower case)."""


@dataclass(frozen=True)
class Shape:
    """One shape of a scene: its colour word, shape word, position word and size word."""

    colour: str
    shape: str
    position: str
    size: str

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} {POSITIONS[self.position]}"


@dataclass(frozen=True)
class Scene:
    """A background colour and one or two shapes (two only at opposite positions)."""

    background: str
    shapes: tuple[Shape, ...]

    def prompt(self) -> str:
        """The training prompt that describes this scene."""
        things = " and ".join(s.phrase() for s in self.shapes)
        return f"{things}, on a {self.background} background"


def describe(colour: str, shape: str, position: str, size: str, background: str) -> str:
    """The prompt of a one-shape scene, from the words a prompt builder offers.

    Raises ValueError naming the first word the model does not know.
    """
    for value, known in (
        (colour, COLOURS),
        (shape, SHAPES),
        (position, POSITIONS),
        (size, SIZES),
        (background, COLOURS),
    ):
        if value not in known:
            raise ValueError(f"{value!r} is not one of {', '.join(known)}")
    return Scene(background, (Shape(colour, shape, position, size),)).prompt()


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` the model was never trained on, in order, without repeats.

    Words are compared in lower case; punctuation is ignored.
    """
    seen: list[str] = []
    for word in re.findall(r"[^\W_]+", prompt.lower()):
        if word not in WORDS and word not in seen:
            seen.append(word)
    return seen


# The only symbol of the training prompts; every other one (emoji, ".", "!", markup) is a
# character the model never saw, and its tokenizer reads one as "<unk>" or a stray piece.
KNOWN_SYMBOLS = frozenset(",")
# The tokenizer has one piece per vocabulary word, in lower case: "Red" is read as the
# pieces "R", "e", "d", so a capital letter is outside the vocabulary too.


def unknown_terms(prompt: str) -> list[str]:
    """What of ``prompt`` the model's tokenizer cannot read as a vocabulary word, in order,
    without repeats: each word that is not a vocabulary word as written (case counts:
    "Red" is not "red"), and each run of symbols other than the comma (emoji included,
    leading or trailing: "🦊🔥", "!", "<b>").

    An empty list means every word and symbol is one the model was trained on.
    """
    terms: list[str] = []
    words = re.findall(r"[^\W_]+", prompt)
    symbols = re.findall(r"[^\s,]+", re.sub(r"[^\W_]+", " ", prompt))
    for term in [w for w in words if w not in WORDS] + symbols:
        if term not in terms:
            terms.append(term)
    return terms


def token_count(prompt: str) -> int:
    """T5 tokens of a prompt made of vocabulary words and commas: one per word, one per
    comma, one for the end-of-text token (the micro tokenizer has a piece per word)."""
    return len(re.findall(r"[^\W_]+|,", prompt)) + 1


def covers(prompt: str, max_tokens: int) -> bool:
    """Whether the model can draw ``prompt``: every word and symbol is in its vocabulary
    and the prompt fits in ``max_tokens`` T5 tokens (nothing is cut)."""
    return not unknown_terms(prompt) and token_count(prompt) <= max_tokens


def nearby_prompt(prompt: str) -> str:
    """A prompt the model knows, as close to ``prompt`` as its words allow: the prompt
    builder's sentence for the first shape named (with the colour, size and position words
    around it) and the background colour, defaults where a word is missing (a large red
    circle in the middle, on a white background).

    A second shape is kept when it stands on the side opposite the first, as in training.
    """
    words = [w.lower() for w in re.findall(r"[^\W_]+", prompt)]
    background = None
    for i, word in enumerate(words):
        if word == "background" and i > 0 and words[i - 1] in COLOURS:
            background = words[i - 1]
    shapes: list[Shape] = []
    start = 0
    for i, word in enumerate(words):
        if word not in SHAPES:
            continue
        before = words[start:i]
        after = words[i + 1 : i + 4]
        colour = next((w for w in reversed(before) if w in COLOURS), "red")
        size = next((w for w in reversed(before) if w in SIZES), "large")
        position = next((w for w in after if w in POSITIONS), "middle")
        shapes.append(Shape(colour, word, position, size))
        start = i + 1
    if not shapes:
        colour = next((w for w in words if w in COLOURS and w != background), "red")
        shapes = [Shape(colour, "circle", "middle", "large")]
    kept = [shapes[0]]
    if len(shapes) > 1 and (shapes[0].position, shapes[1].position) in OPPOSITE_PAIRS:
        kept.append(shapes[1])
    if background is None or any(s.colour == background for s in kept):
        used = {s.colour for s in kept}
        background = next(c for c in ("white", "black", *COLOURS) if c not in used)
    return Scene(background, tuple(kept)).prompt()


def refusal(prompt: str, max_tokens: int) -> str | None:
    """Why the model cannot draw ``prompt``, with a nearby prompt it can; None when it can.

    Names up to five unknown words or symbols (each quoted short), or, for a prompt of
    known words longer than ``max_tokens`` T5 tokens, how long it is.
    """
    unknown = unknown_terms(prompt)
    if unknown:
        shown = ", ".join(f"“{_short(t)}”" for t in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        problem = (
            f"the micro model does not know {shown}{more} (it reads only the lower-case "
            "words of its prompt builder and commas)"
        )
    elif token_count(prompt) > max_tokens:
        problem = (
            f"the prompt is {token_count(prompt)} tokens long and the micro model reads "
            f"{max_tokens}"
        )
    else:
        return None
    return f"{problem}; nothing was generated. A prompt it can draw: “{nearby_prompt(prompt)}”"


def _short(term: str, limit: int = 20) -> str:
    return term if len(term) <= limit else term[: limit - 1] + "…"


EXAMPLE_PROMPTS: tuple[str, ...] = (
    Scene("blue", (Shape("red", "circle", "left", "large"),)).prompt(),
    Scene("white", (Shape("green", "star", "middle", "large"),)).prompt(),
    Scene("black", (Shape("yellow", "triangle", "top", "small"),)).prompt(),
    Scene(
        "green",
        (Shape("orange", "square", "left", "small"), Shape("purple", "circle", "right", "large")),
    ).prompt(),
)
"""Prompts the Play tab offers as examples."""
