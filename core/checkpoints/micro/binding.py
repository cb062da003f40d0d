"""An auxiliary objective that teaches the T5 encoder which words belong together.

FLUX gives every text token the same position id (zero), so inside the transformer a prompt
is a bag of tokens: which colour belongs to which shape and position can only come from the
T5 encoder's output. Trained on the denoising loss alone, the micro model's T5 learned to
pass each word through almost unchanged (``position_sensitivity``, reported by
``python -m core.bench.micro_quality``), and the model could not bind two colours to two
shapes.

This objective asks a linear head to read, from the T5 output of every token of a shape's
phrase ("a small yellow star at the top"), that phrase's colour, shape, position and size.
A token that can answer carries its whole phrase, so an image token at the top can find
"yellow" by looking for "top". The head is used only in training and is not written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F

from core.checkpoints.micro.dataset import token_ids
from core.checkpoints.micro.vocabulary import COLOURS, POSITIONS, SHAPES, SIZES, Scene

IGNORE = -100  # the label of a token outside every shape phrase (cross-entropy ignores it)
SPECIAL_TOKENS = frozenset({"<pad>", "</s>", "<unk>"})  # ``components.t5_tokenizer``'s
ATTRIBUTES: tuple[tuple[str, ...], ...] = (tuple(COLOURS), SHAPES, tuple(POSITIONS), SIZES)
"""The words each head output classifies among: colour, shape, position, size."""


def phrase_labels(tokens: list[str]) -> list[list[int]]:
    """Per token of one tokenized prompt (T5 pieces, word marker "▁" allowed), the indices
    of its shape phrase's (colour, shape, position, size) in ``ATTRIBUTES``, or ``IGNORE``
    four times for tokens outside a shape phrase or in a phrase that lacks an attribute.

    Phrases are split at the word "and"; the first "," (or the first special token: end of
    sequence, padding) ends the shape phrases (the background phrase follows the ","), as
    in ``vocabulary.Scene.prompt``.
    """
    words = [t.removeprefix("\u2581") for t in tokens]
    phrase_of: list[int | None] = []
    phrase, ended = 0, False
    for word in words:
        if word == "," or word in SPECIAL_TOKENS:
            ended = True
        if word == "and" or ended:
            phrase_of.append(None)
            phrase += word == "and"
            continue
        phrase_of.append(phrase)
    per_phrase: dict[int, list[int]] = {}
    for word, p in zip(words, phrase_of, strict=True):
        if p is None:
            continue
        labels = per_phrase.setdefault(p, [IGNORE] * len(ATTRIBUTES))
        for a, choices in enumerate(ATTRIBUTES):
            if word in choices:
                labels[a] = choices.index(word)
    return [per_phrase[p] if p is not None else [IGNORE] * len(ATTRIBUTES) for p in phrase_of]


def label_tensor(tokenizer: object, ids: torch.Tensor) -> torch.Tensor:
    """``phrase_labels`` of every row of the token ids ``ids`` (N, L): an (N, L, 4) long
    tensor. Padding and end-of-sequence tokens are outside every phrase."""
    rows = [
        phrase_labels(tokenizer.convert_ids_to_tokens(row.tolist()))  # type: ignore[attr-defined]
        for row in ids
    ]
    return torch.tensor(rows, dtype=torch.long)


class BindingHead(torch.nn.Module):
    """Linear classifiers from a T5 output vector to each attribute of ``ATTRIBUTES``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width, len(c)) for c in ATTRIBUTES)

    def loss(self, encoded: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean, over the attributes that have labels, of the cross-entropy (nats) of
        ``encoded`` (B, L, width) against ``labels`` (B, L, 4), in fp32 even under autocast;
        0 (still attached to ``encoded``'s graph) where no token has a label."""
        losses: list[torch.Tensor] = []
        with torch.autocast(encoded.device.type, enabled=False):
            for a, head in enumerate(self.heads):
                target = labels[..., a].reshape(-1)
                if (target != IGNORE).any():
                    logits = head(encoded.float()).reshape(-1, head.out_features)
                    losses.append(F.cross_entropy(logits, target, ignore_index=IGNORE))
        if not losses:
            return encoded.float().sum() * 0.0
        return torch.stack(losses).mean()


@contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` in eval mode (no dropout) inside the block; its mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def position_sensitivity(
    text_encoder_2: torch.nn.Module, tokenizer: object, scenes: list[Scene], max_length: int = 32
) -> float:
    """How much a colour word's T5 output depends on where its shape stands: over the
    two-shape ``scenes``, the mean of |h - h'| / |h| for each shape's colour token, where h
    is its output for the prompt and h' for the prompt with the two shapes' positions traded
    (same words, same token count), both padded to ``max_length`` tokens as ``FluxPipeline``
    pads them, with the encoder in eval mode (its mode is restored). 0 for an encoder that
    passes words through as a bag, which leaves the transformer no way to bind colours to
    places. Raises ValueError without a two-shape scene."""
    with evaluating(text_encoder_2):
        return _position_sensitivity(text_encoder_2, tokenizer, scenes, max_length)


def _position_sensitivity(
    text_encoder_2: torch.nn.Module, tokenizer: object, scenes: list[Scene], max_length: int
) -> float:
    ratios: list[torch.Tensor] = []
    for scene in scenes:
        if len(scene.shapes) != 2:
            continue
        first, second = scene.shapes
        traded = Scene(
            scene.background,
            (replace(first, position=second.position), replace(second, position=first.position)),
        )
        ids = token_ids(tokenizer, [scene.prompt(), traded.prompt()], max_length)
        tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())  # type: ignore[attr-defined]
        out = text_encoder_2(ids.to(text_encoder_2.device))[0].float()
        labels = phrase_labels(tokens)  # the background's colour is in no shape phrase
        for index, token in enumerate(tokens):
            if token.removeprefix("\u2581") in COLOURS and labels[index][0] != IGNORE:
                ratios.append((out[0, index] - out[1, index]).norm() / out[0, index].norm())
    if not ratios:
        raise ValueError("position_sensitivity needs at least one two-shape scene")
    return float(torch.stack(ratios).mean())
