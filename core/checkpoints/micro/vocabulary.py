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
