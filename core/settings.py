"""How an operator configures a running app: one ``SettingSpec`` per flag and environment
variable, read into ``AppSettings`` (``python app.py --help`` is built from them), and the
one check per setting that the engine's and the statistics' own commands call too. This
module imports neither torch nor gradio.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import (
    ALL_VARIANT_NAMES,
    AUTO_MODEL,
    MAX_QUANTIZED,
    REFERENCE_VARIANT,
    VARIANT_NAMES,
    parse_variants,
)
from core.errors import (
    InvalidInputError,
    InvalidSettingError,
    excerpt,
)

OFFLOAD_CHOICES: tuple[str, ...] = ("auto", "none", "model", "group")


SPACE_HOST_VARIABLE = "GRADIO_SERVER_NAME"
"""Set by Hugging Face Spaces to the address the app must serve on; used for the host when
neither ``--host`` nor SPOT_HOST is given."""


@dataclass(frozen=True)
class AppSettings:
    """Settings of a running app; every field has a flag and an environment variable
    (APP_SETTINGS), read by ``AppSettings.from_argv``."""

    model: str = AUTO_MODEL
    # The variants loaded and played: BF16 and up to MAX_QUANTIZED quantized ones.
    variants: tuple[str, ...] = VARIANT_NAMES
    db: Path = Path("data/arena.db")
    images_dir: Path = Path("data/images")
    host: str = "127.0.0.1"
    port: int = 7860
    offload: str = "auto"
    share: bool = False
    max_gpu_memory_gb: float | None = None
    queue_size: int = 4
    generations_per_minute: int = 3
    rounds_per_minute: int = 30
    round_ttl_seconds: int = 3600
    # Equivalence margin of the verdicts, in points of chance: "indistinguishable within ±m".
    margin_points: float = 5.0
    # At most this many answers per person per UTC day (0: no cap).
    answers_per_day: int = 0
    # Where acknowledged events are pushed (core.game.sync): hf://datasets/OWNER/NAME or a
    # folder; None: nowhere. Minutes between pushes; "private" or "public" target.
    sync_to: str | None = None
    sync_every_minutes: float = 5.0
    sync_visibility: str = "private"
    # Ready rounds made elsewhere (core.game.pool), imported at start and every sync_every.
    pool: str | None = None

    @classmethod
    def from_argv(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> AppSettings:
        """The settings given by command-line flags and environment variables.

        Each setting comes from its flag, else its environment variable (an empty one
        counts as unset), else the default. The host falls back on GRADIO_SERVER_NAME
        before its default, and without ``--images-dir`` or SPOT_IMAGES_DIR a given
        database keeps its images in ``images/`` beside it. ``argv`` defaults to
        ``sys.argv[1:]`` and ``environ`` to ``os.environ``: read here, nowhere deeper.

        Raises InvalidSettingError, naming the flag or the variable and the value, for a
        variable that is not of its flag's type and for any value out of its range.
        argparse's own errors (unknown flag, a flag's value that is not a number or not
        one of its choices) print the usage and raise SystemExit(2); ``--help`` prints
        the help and raises SystemExit(0).
        """
        environ = os.environ if environ is None else environ
        given = vars(build_app_parser().parse_args(argv))
        values: dict[str, object] = {}
        for spec in APP_SETTINGS:
            if spec.name in given:
                value, source = given[spec.name], spec.flag
            elif environ.get(spec.variable, "") != "":
                value, source = spec.from_text(environ[spec.variable]), spec.variable
            else:
                continue
            values[spec.name] = spec.check(value, source)
        if "host" not in values and environ.get(SPACE_HOST_VARIABLE, "") != "":
            values["host"] = HOST.check(environ[SPACE_HOST_VARIABLE], SPACE_HOST_VARIABLE)
        if "images_dir" not in values and "db" in values:
            values["images_dir"] = Path(values["db"]).parent / "images"  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_KIND_WORDS: dict[type, str] = {int: "an integer", float: "a number"}


@dataclass(frozen=True)
class SettingSpec:
    """One AppSettings field as an operator sets it: its flag, its environment variable,
    how the variable's text becomes a value, and which values are accepted."""

    name: str  # the AppSettings field
    flag: str
    variable: str
    help: str
    kind: type = str  # str, int, float, Path or bool (a --flag / --no-flag pair)
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    accepts: Callable[[Any], bool] | None = None
    rule: str = ""  # what ``accepts`` demands, after the name: "must be 0 or more"
    shown_default: str | None = None  # the default as --help shows it, when not str(default)
    # Turns the accepted text into the setting's value, raising a named InvalidInputError.
    convert: Callable[[Any], Any] | None = None

    def from_text(self, text: str) -> object:
        """The environment variable's text as a value of this setting's kind."""
        if self.kind is bool:
            if text.strip().lower() in TRUE_WORDS | FALSE_WORDS:
                return text.strip().lower() in TRUE_WORDS
            expected = "1, true, yes or on to enable; 0, false, no or off to disable"
        elif self.kind in _KIND_WORDS:
            try:
                return self.kind(text)
            except ValueError:
                expected = _KIND_WORDS[self.kind]
        else:
            return self.kind(text)
        raise InvalidSettingError(
            f"{self.variable}={excerpt(text)} is not a valid {self.flag} value: expected {expected}"
        )

    def check(self, value: Any, source: str) -> Any:
        """Return ``value`` if this setting accepts it, else raise InvalidSettingError
        naming ``source`` (the flag or the variable it came from)."""
        if self.choices is not None and value not in self.choices:
            raise InvalidSettingError(
                f"{source} must be one of {', '.join(self.choices)}, got {excerpt(value)}"
            )
        if self.accepts is not None and not self.accepts(value):
            raise InvalidSettingError(f"{source} {self.rule}, got {excerpt(_plain(value))}")
        if self.convert is not None:
            try:
                return self.convert(value)
            except InvalidInputError as exc:  # the same named error, saying where from
                raise type(exc)(f"{source}: {exc}") from None
        return value

    def help_text(self) -> str:
        default = getattr(AppSettings(), self.name)
        shown = self.shown_default or ("none" if default is None else str(default))
        return f"{self.help} (default: {shown}) [{self.variable}]"


def _plain(value: object) -> object:
    """Paths are quoted as text in error messages."""
    return str(value) if isinstance(value, Path) else value


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: value >= low


HOST = SettingSpec(
    "host",
    "--host",
    "SPOT_HOST",
    "address to serve on (0.0.0.0 for every interface)",
    accepts=lambda value: value != "" and not any(ch.isspace() for ch in value),
    rule="must be a host name or an address, without spaces",
    shown_default="GRADIO_SERVER_NAME where set, as on a Space, else 127.0.0.1",
)
# The settings the engine's and the statistics' own commands check too, through
# check_offload, check_margin and check_max_gpu_memory: one rule each, wherever the value
# comes from.
OFFLOAD = SettingSpec(
    "offload",
    "--offload",
    "SPOT_OFFLOAD",
    "placement of the variants' weights",
    choices=OFFLOAD_CHOICES,
)
MARGIN = SettingSpec(
    "margin_points",
    "--margin",
    "SPOT_MARGIN",
    "equivalence margin of the verdicts, in points of chance (indistinguishable within ±m)",
    kind=float,
    metavar="POINTS",
    accepts=lambda value: 0.0 < value < 50.0,
    rule="must be more than 0 and less than 50 points of chance",
)
MAX_GPU_MEMORY = SettingSpec(
    "max_gpu_memory_gb",
    "--max-gpu-memory",
    "SPOT_MAX_GPU_MEMORY",
    "cap on GPU memory, in GB, for the placement plan",
    kind=float,
    metavar="GB",
    accepts=lambda value: math.isfinite(value) and value > 0,
    rule="must be a positive number of GB",
)
APP_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "model",
        "--model",
        "SPOT_MODEL",
        "auto (FLUX.1-dev on a GPU, micro otherwise), micro, tiny, a hub id or a local folder",
        accepts=lambda value: value.strip() != "",
        rule="must name a model",
    ),
    SettingSpec(
        "variants",
        "--variants",
        "SPOT_VARIANTS",
        "variants to load and play, comma-separated: bf16 and 1 to "
        f"{MAX_QUANTIZED} of {', '.join(n for n in ALL_VARIANT_NAMES if n != REFERENCE_VARIANT)}",
        metavar="NAMES",
        convert=parse_variants,
        shown_default=",".join(VARIANT_NAMES),
    ),
    SettingSpec(
        "db",
        "--db",
        "SPOT_DB",
        "SQLite database file",
        kind=Path,
        metavar="FILE",
        accepts=lambda value: str(value) != "" and not value.is_dir(),
        rule="must be a database file, not a folder",
    ),
    SettingSpec(
        "images_dir",
        "--images-dir",
        "SPOT_IMAGES_DIR",
        "folder for the generated images",
        kind=Path,
        metavar="FOLDER",
        accepts=lambda value: not value.is_file(),
        rule="must be a folder, not a file",
        shown_default="images/ beside --db: data/images",
    ),
    HOST,
    SettingSpec(
        "port",
        "--port",
        "SPOT_PORT",
        "port to serve on",
        kind=int,
        accepts=lambda value: 1 <= value <= 65535,
        rule="must be a port number in 1…65535",
    ),
    OFFLOAD,
    SettingSpec(
        "share",
        "--share",
        "SPOT_SHARE",
        "create a public gradio.live link",
        kind=bool,
        shown_default="off",
    ),
    MAX_GPU_MEMORY,
    SettingSpec(
        "queue_size",
        "--queue-size",
        "SPOT_QUEUE_SIZE",
        "prompts that may wait for the GPU",
        kind=int,
        metavar="N",
        accepts=_at_least(0),
        rule="must be 0 or more",
    ),
    SettingSpec(
        "generations_per_minute",
        "--generations-per-minute",
        "SPOT_GENERATIONS_PER_MINUTE",
        "generations per player per minute (0: unlimited)",
        kind=int,
        metavar="N",
        accepts=_at_least(0),
        rule="must be 0 or more",
    ),
    SettingSpec(
        "rounds_per_minute",
        "--rounds-per-minute",
        "SPOT_ROUNDS_PER_MINUTE",
        "rounds per player per minute (0: unlimited)",
        kind=int,
        metavar="N",
        accepts=_at_least(0),
        rule="must be 0 or more",
    ),
    SettingSpec(
        "round_ttl_seconds",
        "--round-ttl",
        "SPOT_ROUND_TTL",
        "seconds a round may be answered",
        kind=int,
        metavar="SECONDS",
        accepts=_at_least(1),
        rule="must be a positive number of seconds",
    ),
    MARGIN,
    SettingSpec(
        "answers_per_day",
        "--answers-per-day",
        "SPOT_ANSWERS_PER_DAY",
        "answers one person may give per UTC day (0: no cap)",
        kind=int,
        metavar="N",
        accepts=_at_least(0),
        rule="must be 0 or more",
    ),
    SettingSpec(
        "sync_to",
        "--sync-to",
        "SPOT_SYNC_TO",
        "push every vote, round and generation to hf://datasets/OWNER/NAME or a folder, "
        "and restore from it into an empty database",
        metavar="TARGET",
        accepts=lambda value: value.strip() != "",
        rule="must name hf://datasets/OWNER/NAME or a folder",
    ),
    SettingSpec(
        "sync_every_minutes",
        "--sync-every",
        "SPOT_SYNC_EVERY",
        "minutes between pushes to the sync target (and imports from the pool)",
        kind=float,
        metavar="MINUTES",
        accepts=lambda value: math.isfinite(value) and value > 0,
        rule="must be a positive number of minutes",
    ),
    SettingSpec(
        "sync_visibility",
        "--sync-visibility",
        "SPOT_SYNC_VISIBILITY",
        "private: the target is the database's backup; public: keyed hashes for session ids "
        "(SPOT_SYNC_KEY), no images and no answer key of an open round",
        choices=("private", "public"),
    ),
    SettingSpec(
        "pool",
        "--pool",
        "SPOT_POOL",
        "import ready rounds made by python -m core.bench.pool from this target",
        metavar="TARGET",
        accepts=lambda value: value.strip() != "",
        rule="must name hf://datasets/OWNER/NAME or a folder",
    ),
)

# Read by app.main only, never a flag (a secret on the command line shows in `ps`): the key
# that signs browser person ids and hashes account ids (core.game.identity). Unset: a key
# file beside the database, made on first use.
PERSON_KEY_VARIABLE = "SPOT_PERSON_KEY"
# A Space with `hf_oauth: true` sets these; with all four, the app offers "Sign in with
# Hugging Face" and a signed-in player is their account.
OAUTH_VARIABLES: tuple[str, ...] = (
    "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL",
)  # fmt: skip


def oauth_enabled(environ: Mapping[str, str]) -> bool:
    """Whether the environment enables Hugging Face OAuth (every OAUTH_VARIABLES set)."""
    return all(environ.get(name, "") != "" for name in OAUTH_VARIABLES)


# Setting name -> environment variable, documented in README.md.
ENV_VARS: dict[str, str] = {spec.name: spec.variable for spec in APP_SETTINGS}


def build_app_parser() -> argparse.ArgumentParser:
    """The app's command line (``python app.py --help``): one flag per APP_SETTINGS entry.

    The flags have no defaults of their own (``argparse.SUPPRESS``): a parsed namespace
    holds only the flags given, so AppSettings.from_argv can tell a flag from a default.
    """
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="Spot the Quantized Model: can people tell BF16 FLUX from LLM.int8 and NF4?",
        epilog="Every flag can also be set with the environment variable in brackets; "
        "the flag wins.",
        argument_default=argparse.SUPPRESS,
    )
    for spec in APP_SETTINGS:
        if spec.kind is bool:
            parser.add_argument(
                spec.flag,
                dest=spec.name,
                action=argparse.BooleanOptionalAction,
                help=spec.help_text(),
            )
        else:
            parser.add_argument(
                spec.flag,
                dest=spec.name,
                type=spec.kind,
                choices=spec.choices,
                metavar=spec.metavar,
                help=spec.help_text(),
            )
    return parser


def check_offload(value: str, source: str = "offload") -> str:
    """``value`` if it is one of OFFLOAD_CHOICES (the app's --offload rule), else
    InvalidSettingError naming ``source``."""
    return OFFLOAD.check(value, source)


def check_max_gpu_memory(value: float | None, source: str = "--max-gpu-memory") -> float | None:
    """``value`` (GB) if it is None or the app's --max-gpu-memory accepts it (a finite
    positive number), else InvalidSettingError naming ``source``."""
    if value is None:
        return None
    return MAX_GPU_MEMORY.check(value, source)


def check_margin(points: float, source: str = "--margin") -> float:
    """The verdicts' equivalence margin, in points of chance: more than 0, less than 50
    (the app's --margin rule), else InvalidSettingError naming ``source``."""
    return MARGIN.check(points, source)
