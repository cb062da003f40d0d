"""The project's named errors.

Every error a user can cause or meet is one of these small classes, so the UI and
the command lines can turn them into a clear message (``gr.Error``, a CLI exit)
without parsing strings. Each says in one line what went wrong.
"""

from __future__ import annotations

EXCERPT_CHARS = 80


class SpotError(Exception):
    """Base class of every error this project raises on purpose."""


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, for quoting a bad value in an
    error message (a million-character value must not come back in full)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return "a value too long to quote"
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} characters)"


# --- Input validation (raised before any work is done) ----------------------------


class InvalidInputError(SpotError, ValueError):
    """An input failed validation; nothing was done."""


class EmptyPromptError(InvalidInputError):
    """The prompt is empty or only whitespace."""


class PromptTooLongError(InvalidInputError):
    """The prompt is longer than the documented limit."""


class PromptControlCharacterError(InvalidInputError):
    """The prompt contains control characters (other than space)."""


class PromptEncodingError(InvalidInputError):
    """The prompt is not valid Unicode text (a lone surrogate)."""


class PromptInvisibleError(InvalidInputError):
    """The prompt has no visible character (only spaces, zero-width characters, a BOM)."""


class PromptBidiControlError(InvalidInputError):
    """The prompt contains a bidirectional override or isolate control."""


class PromptOutOfVocabularyError(InvalidInputError):
    """The prompt has words or symbols a model with a known vocabulary (micro) never saw,
    or is longer than it reads: nothing is generated."""


class SeedOutOfRangeError(InvalidInputError):
    """The seed is not an integer in 0 … 2**32 - 1."""


class InvalidSizeError(InvalidInputError):
    """Width or height is not a multiple of 16 or is outside the documented bounds."""


class StepsOutOfRangeError(InvalidInputError):
    """The number of inference steps is outside the documented bounds."""


class GuidanceOutOfRangeError(InvalidInputError):
    """The guidance scale is outside the documented bounds."""


class SequenceLengthOutOfRangeError(InvalidInputError):
    """max_sequence_length is outside the bounds the model's T5 encoder accepts."""


class UnknownVariantError(InvalidInputError):
    """A variant name is not in the variant registry."""


class DuplicateVariantError(InvalidInputError):
    """A variant is named twice in one list of variants (``--variants``)."""


class TooManyVariantsError(InvalidInputError):
    """More quantized variants than one round can show (``--variants``)."""


class ReferenceVariantMissingError(InvalidInputError):
    """The game's variants lack BF16, the original every round shows (``--variants``)."""


class InvalidSettingError(InvalidInputError):
    """An application setting (flag or environment variable) has an invalid value."""


# --- Models and generation ---------------------------------------------------------


class ModelUnavailableError(SpotError):
    """The model could not be loaded (not downloadable, gated, or not a diffusers folder)."""


class PlacementError(ModelUnavailableError):
    """No placement fits the model in this machine's GPU and host memory."""


class LoadOutOfMemoryError(ModelUnavailableError):
    """Loading ran out of accelerator memory; the message names the placement and what to try."""


class GenerationOutOfMemoryError(SpotError):
    """A variant ran out of accelerator memory; memory was released and the engine is usable."""


class GenerationFailedError(SpotError):
    """A generation failed for a reason other than memory; nothing was stored."""


class BusyError(SpotError):
    """The generation queue is full; try again in a moment."""


class ZeroGpuRefusedError(SpotError):
    """ZeroGPU refused the GPU (quota exceeded, or a duration over the maximum): the
    player is offered a ready round."""


# --- Data layer ----------------------------------------------------------------------


class DatabaseError(SpotError):
    """The database could not be opened, read or written."""


class DatabaseCorruptError(DatabaseError):
    """The database file is not a SQLite database or is damaged; it was left untouched."""


class DatabaseMissingError(DatabaseError):
    """The database file does not exist (and was not created)."""


class ForeignDatabaseError(DatabaseError):
    """The file is a SQLite database of something else; it was left untouched."""


class NewerDatabaseError(DatabaseError):
    """The database carries a migration this version does not know; it was left untouched."""


class DatabaseReadOnlyError(DatabaseError):
    """The database file, or the folder holding it, cannot be written."""


class StorageFullError(DatabaseError):
    """The disk (or the database's size cap) is full; nothing was recorded."""


class GenerationNotFoundError(SpotError):
    """No stored generation has this id."""


class IncompleteGenerationError(SpotError):
    """The generation lacks an image a mode needs, so no round can be made from it."""


class NoReadyRoundError(SpotError):
    """This session has played every stored generation the mode can use."""


class RateLimitedError(SpotError):
    """This session started too many rounds in the last minute."""


class AnswerCapError(RateLimitedError):
    """This person has given the most answers the server takes from one person a day."""


class RoundNotFoundError(SpotError):
    """No round has this id (unknown or forged)."""


class ForeignRoundError(RoundNotFoundError):
    """The round belongs to another session (reported like an unknown round)."""


class RoundExpiredError(SpotError):
    """The round is older than its time to live; it can no longer be answered."""


class RoundAlreadyGuessedError(SpotError):
    """The round was already answered; only the first guess counts."""


class InvalidModeError(InvalidInputError):
    """The game mode is not one of the modes the game offers."""


class InvalidAnswerError(InvalidInputError):
    """The answer is not a slot of this round nor "cant_tell"."""


class InvalidSessionError(InvalidInputError):
    """The session id is empty, too long or not printable."""


# --- Sync targets (core.game.sync, core.game.outbox) ------------------------------------


class SyncTargetError(SpotError):
    """The sync target cannot be reached, read or written; nothing was written."""


class ForeignSyncTargetError(SyncTargetError):
    """The sync target holds files that are not this game's events; it was left untouched."""


class SyncFormatError(SyncTargetError):
    """An event file of the target is not in this game's event format."""
