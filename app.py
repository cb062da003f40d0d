"""Spot the Quantized Model: the Gradio UI.

A thin layer over ``core``, in four parts: one builder per tab (``build_play_tab``,
``build_results_tab``, ``build_about_tab``) that lays out components and returns them in a
frozen dataclass; module-level handlers of a few lines that call
``core.game.arena.Arena`` and turn the project's named errors into ``gr.Error``, bound to
the arena and the tab with ``bind`` (``functools.partial`` keeping Gradio's type hints);
the wiring of events (``wire_play``, ``wire_results``); and launching (``main`` reads the
flags and environment with ``AppSettings.from_argv``, loads the services and serves). A
player's server-side state is a frozen ``PlayerState`` in a ``gr.State``; who the player
is (their person id, core.game.identity) comes from a signed token in the browser's
local storage (``gr.BrowserState``) or, on a Space with OAuth, from their account.

    python app.py                       # the micro model on a CPU, FLUX.1-dev on a GPU
    python app.py --model black-forest-labs/FLUX.1-schnell --offload model
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import random
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # --help and a bad flag answer at once: the flags are read before Gradio and torch are
    # imported (seconds), and read again, with the environment, by main().
    from core.settings import build_app_parser

    build_app_parser().parse_args()

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from core import config, limits
from core import settings as app_settings
from core.checkpoints.micro import vocabulary
from core.errors import ModelUnavailableError, SpotError, StorageFullError, ZeroGpuRefusedError
from core.game import presentation
from core.game.arena import Arena
from core.game.identity import KEY_FILE_NAME, PersonIds, key_from_text, load_or_create_key
from core.game.request_limits import RequestLimits
from core.game.rounds import CANT_TELL, SLOT_LABELS, Reveal, RoundView, check_mode
from core.settings import AppSettings
from core.store.round_images import RoundImages

if os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true"):
    # A ZeroGPU Space: spaces must be imported before torch (it patches torch's CUDA
    # calls); app.py itself imports no torch, so this is the first import of either.
    import spaces  # noqa: F401

logger = logging.getLogger("app")

ASSETS = Path(__file__).resolve().parent / "assets"


def mode_labels(variants: Sequence[str]) -> dict[str, str]:
    """Each mode's name in the Mode choice, with the images its rounds show when
    ``variants`` are loaded: "Trio: spot the original among 3", "Duel: …"."""
    trio, duel = (config.MODE_SPECS[m].slots_for(variants) for m in ("trio", "duel"))
    return {
        "trio": f"Trio: spot the original among {trio}",
        "duel": f"Duel: spot the quantized of {duel}",
    }


CANT_TELL_LABEL = "Can't tell"
MESSAGE_MAX_CHARS = 400  # a message shown to a player is never longer (values are quoted short)
# Where the browser keeps its person token (gr.BrowserState). Both are public: Gradio sends
# them to the page, whose local storage they only obfuscate; what makes a token good is
# its server-side signature (core.game.identity). Fixed, so tokens outlive a restart.
PERSON_STORAGE_KEY = "spot-the-quantized-person"
PERSON_STORAGE_SECRET = "spot-the-quantized-person-v1"
# Beside "Sign in with Hugging Face" (on a Space with OAuth): what signing in changes.
SIGN_IN_NOTE = (
    "Optional: signed in, your answers count as one player on every device. Only a keyed "
    "hash of your account is stored, never its name."
)
# Each action brings its result into view (spotScrollTo is defined by assets/app.js): the
# round's images (with the question above them when both fit), the detail view, the reveal.
SCROLL_TO_ROUND = "() => window.spotScrollTo('#round-images', '#round')"
SCROLL_TO_DETAIL = "() => window.spotScrollTo('#detail-view')"
SCROLL_TO_REVEAL = "() => window.spotScrollTo('#reveal')"


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's named errors into gr.Error; log anything else, show no trace."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SpotError as exc:
            raise gr.Error(_shorten(str(exc)), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            logger.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(
                "Something went wrong on the server (it was logged). Please try again.",
                print_exception=False,
            ) from None

    return wrapper


def _shorten(message: str) -> str:
    if len(message) <= MESSAGE_MAX_CHARS:
        return message
    return message[: MESSAGE_MAX_CHARS - 1] + "…"


class Blocks(gr.Blocks):
    """gr.Blocks whose events check the number of values they receive.

    Gradio itself only notices too *few* values, and then raises a plain ValueError that
    quotes every value received and reaches an API caller as ``error: null`` (a bare
    "Error"). Here a wrong count, too few or too many, is a gr.Error naming the endpoint
    and the inputs it takes, quoting no value.
    """

    def validate_inputs(self, block_fn: Any, inputs: list[Any]) -> None:
        expected = block_fn.inputs
        if len(inputs) != len(expected):
            endpoint = f"/{block_fn.api_name}" if block_fn.api_name else "this event"
            # An API caller sends the values of every input but gr.State (Gradio adds the
            # state itself when exactly those are sent).
            values = [b for b in expected if not isinstance(b, gr.State)]
            names = ", ".join(_input_name(block) for block in values) or "none"
            raise gr.Error(
                f"{endpoint} takes {len(values)} values ({names}), got {len(inputs)}",
                print_exception=False,
            )


def _input_name(block: Any) -> str:
    return str(getattr(block, "label", None) or type(block).__name__.lower())


@dataclass(frozen=True)
class PlayerState:
    """What the server keeps for one page (a gr.State, never sent to the browser): the
    player's session id (their person id, set when the page loads; a scripted client
    without a page gets one of its own), the round being played with its image files by
    slot, and its reveal once the player has guessed. Core code never sees this object,
    only its fields."""

    session: str
    round_id: str | None = None
    slot_paths: tuple[tuple[str, str], ...] = ()
    reveal: Reveal | None = None

    @property
    def paths(self) -> dict[str, str]:
        """Slot letter → the round's served image file."""
        return dict(self.slot_paths)


def player_state(arena: Arena, st: PlayerState | None) -> PlayerState:
    """The player's state; a caller whose page never loaded (a scripted API client) gets a
    fresh one with a session of its own."""
    return st if isinstance(st, PlayerState) else PlayerState(session=arena.new_session_id())


def account_subject(profile: gr.OAuthProfile | None) -> str | None:
    """The signed-in account's stable id (OAuth ``sub``; the user name only where a
    provider gives no subject), or None when nobody is signed in. Only its keyed hash is
    ever stored."""
    if profile is None:
        return None
    subject = profile.get("sub") or profile.get("preferred_username")
    return f"hf:{subject}" if subject else None


def bind(handler: Callable[..., Any], /, *args: Any) -> Callable[..., Any]:
    """``handler`` with its first arguments bound, as ``functools.partial`` does, but with
    the signature and type hints Gradio reads to pass gr.SelectData and gr.Progress (a bare
    partial object hides the hints)."""
    bound = functools.partial(handler, *args)

    @functools.wraps(handler)
    def call(*rest: Any, **kwargs: Any) -> Any:
        return bound(*rest, **kwargs)

    call.__signature__ = inspect.signature(bound)  # type: ignore[attr-defined]
    return call


# --- the tabs: components only ---------------------------------------------------------------


@dataclass(frozen=True)
class PlayTab:
    """The Play tab's components that events read or update."""

    prompt: gr.Textbox
    mode: gr.Radio
    generate_btn: gr.Button
    ready_btn: gr.Button
    status: gr.Markdown
    seed: gr.Number
    random_seed: gr.Checkbox
    steps: gr.Slider
    guidance: gr.Slider
    width: gr.Slider
    height: gr.Slider
    builder: dict[str, gr.Dropdown]
    builder_btn: gr.Button | None
    round_box: gr.Column
    question: gr.Markdown
    round_prompt: gr.Textbox
    slot_columns: dict[str, gr.Column]
    images: dict[str, gr.Image]
    answer_btns: dict[str, gr.Button]
    detail_box: gr.Column
    detail_note: gr.Markdown
    details: dict[str, gr.Image]
    reveal_box: gr.Column
    verdict: gr.Markdown
    reveal_table: gr.Dataframe
    compare_with: gr.Radio
    slider: gr.ImageSlider
    next_btn: gr.Button
    api_answer: gr.Textbox


@dataclass(frozen=True)
class ResultsTab:
    """The Results tab's components that events update."""

    tab: gr.Tab
    refresh_btn: gr.Button
    verdicts_md: gr.Markdown
    detection_table: gr.Dataframe
    details_table: gr.Dataframe
    chart: gr.HTML
    picks_md: gr.Markdown
    hardest_table: gr.Dataframe
    costs_table: gr.Dataframe
    cost_note: gr.Markdown
    export_btn: gr.Button
    download_btn: gr.DownloadButton
    domain_md: gr.Markdown
    metrics_html: gr.HTML

    @property
    def outputs(self) -> list[Any]:
        # The API's /results returns these in this order (new outputs go at the end).
        return [
            self.detection_table, self.chart, self.picks_md, self.hardest_table,
            self.costs_table, self.verdicts_md, self.details_table, self.cost_note,
            self.metrics_html,
        ]  # fmt: skip


def build_play_tab(arena: Arena) -> PlayTab:
    """The Play tab: prompt and Generate first (visible on a phone's first screen), then
    the round: one column per slot, each image with its answer button under it, the
    detail view, and the reveal."""
    spec = arena.spec
    defaults = arena.engine.default_settings()
    micro = spec.kind == "micro"
    warning = presentation.tiny_model_warning(spec)
    examples = (
        list(vocabulary.EXAMPLE_PROMPTS)
        if micro
        else presentation.example_prompts(ASSETS / "prompts.txt")
    )
    size_min, size_max = spec.size_limits
    if warning:
        gr.Markdown(warning, elem_classes=["tiny-warning"])
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(
            label="Prompt",
            placeholder="Describe an image…",
            # No max_length: the browser would cut a longer prompt without a word; the
            # server refuses it instead, saying how long it is and what the limit is.
            scale=4,
            min_width=240,
        )
        with gr.Column(scale=1, min_width=160):
            # Enabled when the page has loaded and the player is known (on_page_load): a
            # round started before would belong to no one.
            generate_btn = gr.Button("Generate", variant="primary", interactive=False)
            ready_btn = gr.Button("Play a ready round", variant="secondary", interactive=False)
    mode = gr.Radio(
        [(label, name) for name, label in mode_labels(arena.game.variants).items()],
        value="trio",
        label="Mode",
    )
    status = gr.Markdown("", elem_classes=["play-status"])
    with gr.Column(visible=False, elem_classes=["round"], elem_id="round") as round_box:
        question = gr.Markdown("")
        # The round's prompt was typed by a player: a Textbox shows it as plain text (in
        # Markdown, "![](http://…)" would load a remote image in every later player's
        # browser, and "# Hint: …" would become a heading).
        round_prompt = gr.Textbox(label="This round's prompt", interactive=False)
        slot_columns, images, answer_btns = {}, {}, {}
        with gr.Row(equal_height=False, elem_classes=["round-images"], elem_id="round-images"):
            for slot in SLOT_LABELS:
                with gr.Column(min_width=240, elem_classes=["slot"]) as column:
                    images[slot] = gr.Image(
                        label=slot,
                        type="filepath",
                        interactive=False,
                        buttons=["fullscreen"],
                        elem_classes=["round-image"],
                    )
                    answer_btns[slot] = gr.Button(slot, interactive=False, variant="primary")
                slot_columns[slot] = column
        answer_btns[CANT_TELL] = gr.Button(CANT_TELL_LABEL, interactive=False)
        gr.Markdown(presentation.DETAIL_HINT, elem_classes=["detail-hint"])
        with gr.Column(visible=False, elem_id="detail-view") as detail_box:
            detail_note = gr.Markdown("", elem_classes=["detail-note"])
            details = {}
            with gr.Row(equal_height=False, elem_classes=["detail-row"]):
                for slot in SLOT_LABELS:
                    details[slot] = gr.Image(
                        label=f"{slot} (detail)",
                        type="filepath",
                        interactive=False,
                        buttons=["fullscreen"],
                        elem_classes=["round-image", "detail-image"],
                        min_width=120,
                    )
        with gr.Column(visible=False, elem_id="reveal") as reveal_box:
            verdict = gr.Markdown("")
            reveal_table = gr.Dataframe(
                headers=presentation.REVEAL_HEADERS,
                interactive=False,
                label="Measured cost",
                elem_classes=["scroll-table", "fit-table"],
            )
            gr.Markdown(presentation.REVEAL_HELP)
            compare_with = gr.Radio(config.QUANTIZED_VARIANTS, label="Compare BF16 with")
            slider = gr.ImageSlider(
                label="BF16 ⟷ quantized",
                type="filepath",
                elem_classes=["round-image", "compare-slider"],
            )
            next_btn = gr.Button("Next ready round", variant="primary", interactive=False)
    gr.Examples(examples=[[p] for p in examples], inputs=[prompt], label="Examples")
    builder: dict[str, gr.Dropdown] = {}
    builder_btn = None
    if micro:
        with gr.Accordion("Prompt builder (the words the micro model knows)", open=False):
            with gr.Row():
                for name, choices in (
                    ("size", vocabulary.SIZES),
                    ("colour", tuple(vocabulary.COLOURS)),
                    ("shape", vocabulary.SHAPES),
                    ("position", tuple(vocabulary.POSITIONS)),
                    ("background", tuple(vocabulary.COLOURS)[::-1]),
                ):
                    builder[name] = gr.Dropdown(
                        list(choices), value=choices[0], label=name.title(), min_width=120
                    )
            builder_btn = gr.Button("Use this prompt", variant="secondary")
    with gr.Accordion("Advanced settings", open=False):
        with gr.Row():
            random_seed = gr.Checkbox(value=True, label="Random seed")
            seed = gr.Number(value=0, label="Seed", precision=0, minimum=0, maximum=limits.SEED_MAX)
        with gr.Row():
            steps = gr.Slider(
                limits.STEPS_MIN, limits.STEPS_MAX, value=defaults.steps, step=1, label="Steps"
            )
            guidance = gr.Slider(
                limits.GUIDANCE_MIN,
                limits.GUIDANCE_MAX,
                value=defaults.guidance,
                step=0.1,
                label="Guidance",
            )
        with gr.Row():
            width, height = (
                gr.Slider(
                    size_min, size_max, value=defaults.width, step=limits.SIZE_MULTIPLE, label=axis
                )
                for axis in ("Width", "Height")
            )

    # The API's /guess takes the answer as text (the buttons above send their own).
    api_answer = gr.Textbox(label="answer", visible=False)
    return PlayTab(
        prompt=prompt, mode=mode, generate_btn=generate_btn, ready_btn=ready_btn,
        status=status, seed=seed, random_seed=random_seed, steps=steps, guidance=guidance,
        width=width, height=height, builder=builder, builder_btn=builder_btn,
        round_box=round_box, question=question, round_prompt=round_prompt,
        slot_columns=slot_columns, images=images, answer_btns=answer_btns,
        detail_box=detail_box, detail_note=detail_note, details=details,
        reveal_box=reveal_box, verdict=verdict, reveal_table=reveal_table,
        compare_with=compare_with, slider=slider, next_btn=next_btn,
        api_answer=api_answer,
    )  # fmt: skip


def build_results_tab(arena: Arena) -> ResultsTab:
    """The Results tab: verdicts, detection table and chart, hardest prompts, costs here
    and the reference figures, and the export. Filled when the tab opens."""
    warning = presentation.tiny_model_warning(arena.spec)
    with gr.Tab("Results") as tab:
        if warning:
            gr.Markdown(warning, elem_classes=["tiny-warning"])
        refresh_btn = gr.Button("Refresh", variant="secondary", size="sm")
        verdicts_md = gr.Markdown("")
        # How many stored rounds the model cannot draw are left out (filled on its own).
        domain_md = gr.Markdown("")
        gr.Markdown(presentation.DETECTION_HELP)
        detection_table = gr.Dataframe(
            headers=presentation.DETECTION_HEADERS,
            interactive=False,
            label="Detection",
            elem_classes=["scroll-table", "fit-table"],
        )
        with gr.Accordion("Details: every interval and test", open=False):
            gr.Markdown(presentation.DETAILS_HELP)
            details_table = gr.Dataframe(
                headers=presentation.DETECTION_DETAIL_HEADERS,
                interactive=False,
                label="Detection details",
                elem_classes=["scroll-table", "fit-table"],
            )
        # An SVG drawn once per Results recomputation (presentation.detection_chart_html),
        # not a gr.Plot, which would encode the figure again for every refresh.
        chart = gr.HTML(elem_classes=["detection-chart"], js_on_load=None)
        picks_md = gr.Markdown("")
        hardest_table = gr.Dataframe(
            headers=presentation.HARDEST_HEADERS,
            datatype="str",  # players' prompts: plain text, never "markdown" or "html"
            interactive=False,
            label=presentation.HARDEST_LABEL,
            elem_classes=["scroll-table", "fit-table"],
        )
        costs_table = gr.Dataframe(
            headers=presentation.COST_HEADERS,
            interactive=False,
            label=f"Memory and time per variant here ({arena.engine.device_label})",
            elem_classes=["scroll-table", "fit-table"],
        )
        cost_note = gr.Markdown("")
        # Image metrics against BF16 and which one predicts what people spot (metric_view).
        metrics_html = gr.HTML(elem_classes=["metric-section"])
        gr.Dataframe(
            value=presentation.reference_table(),
            interactive=False,
            label=f"Reference: {config.SEED_REFERENCE_SOURCE}",
            elem_classes=["scroll-table", "fit-table"],
        )
        with gr.Row():
            export_btn = gr.Button("Export the data (zip)", variant="secondary")
            # A DownloadButton downloads the value it already holds, so the export is made
            # first and then offered.
            download_btn = gr.DownloadButton("Download the zip", visible=False)
    return ResultsTab(
        tab=tab, refresh_btn=refresh_btn, verdicts_md=verdicts_md,
        detection_table=detection_table, details_table=details_table, chart=chart,
        picks_md=picks_md, hardest_table=hardest_table, costs_table=costs_table,
        cost_note=cost_note, export_btn=export_btn, download_btn=download_btn,
        domain_md=domain_md, metrics_html=metrics_html,
    )  # fmt: skip


def build_about_tab(arena: Arena) -> None:
    """The About tab: what the app does, the model and device, the library versions."""
    warning = presentation.tiny_model_warning(arena.spec)
    with gr.Tab("About"):
        if warning:
            gr.Markdown(warning, elem_classes=["tiny-warning"])
        engine = arena.engine
        gr.Markdown(
            presentation.about(
                arena.spec, engine.device_label, engine.versions, arena.game.variants
            )
        )


# --- handlers: module-level, bound to the arena and the tab with bind() -----------------------


def ready_updates(arena: Arena, play: PlayTab, st: PlayerState, mode: str) -> dict[Any, Any]:
    """The ready-round buttons enabled exactly when a ready round is waiting for this
    player in ``mode``, and the status line saying so when none is."""
    ready = arena.ready_rounds(st.session, mode)
    capped = arena.answer_cap_note(st.session)
    if capped is not None:  # today's last answer given: no new round, and why
        return {
            play.ready_btn: gr.Button(interactive=False),
            play.next_btn: gr.Button(interactive=False),
            play.status: f"*{capped[:1].upper()}{capped[1:]}.*",
        }
    return {
        play.ready_btn: gr.Button(interactive=ready.unseen > 0),
        play.next_btn: gr.Button(interactive=ready.unseen > 0),
        play.status: presentation.ready_round_note(ready),
    }


def round_updates(
    arena: Arena, play: PlayTab, st: PlayerState, view: RoundView, state: gr.State
) -> dict[Any, Any]:
    """Show a new round: its images (one column per slot shown), enabled answers, no detail
    and no reveal yet."""
    st = replace(
        st,
        round_id=view.round_id,
        slot_paths=tuple(zip(view.slots, map(str, view.image_paths), strict=True)),
        reveal=None,
    )
    paths = st.paths
    out: dict[Any, Any] = {
        state: st,
        play.round_box: gr.Column(visible=True),
        play.question: presentation.question(view),
        play.round_prompt: gr.Textbox(value=view.prompt),
        play.detail_box: gr.Column(visible=False),
        play.reveal_box: gr.Column(visible=False),
        play.seed: view.settings.seed,
    }
    for slot in SLOT_LABELS:
        shown = slot in paths
        out[play.slot_columns[slot]] = gr.Column(visible=shown)
        out[play.images[slot]] = gr.Image(value=paths.get(slot), label=slot, visible=shown)
        out[play.answer_btns[slot]] = gr.Button(interactive=shown)
        out[play.details[slot]] = gr.Image(value=None, label=f"{slot} (detail)", visible=shown)
    out[play.answer_btns[CANT_TELL]] = gr.Button(interactive=True)
    # The status line stays quiet while a round is shown: "no ready round left" right
    # after generating read as if the generation had failed. It shows after the guess.
    return out | ready_updates(arena, play, st, view.mode) | {play.status: ""}


@user_errors
def on_page_load(
    arena: Arena, play: PlayTab, state: gr.State, browser: gr.BrowserState, token: object,
    mode: str, profile: gr.OAuthProfile | None,
) -> dict[Any, Any]:  # fmt: skip
    """The page has loaded: who is playing (the signed-in account, else the browser's
    signed token, else a new person whose token the browser keeps), their unanswered
    round if one is still open (a reload restores it, the same shuffle), the ready-round
    buttons, and Generate enabled.

    The only handler that writes the person into the state. Nothing that starts a round
    can run before it: Generate and the ready-round buttons are enabled by its answer.
    """
    person = arena.person(token, account_subject(profile))
    st = PlayerState(session=person.id)
    out: dict[Any, Any] = {play.generate_btn: gr.Button(interactive=True)}
    if person.token is not None:
        out[browser] = person.token
    try:
        view = arena.open_round(st.session)
    except Exception:  # a round that cannot be shown again must not keep the page from playing
        logger.exception("could not restore the open round of a returning player")
        view = None
    if view is None:
        return out | {state: st} | ready_updates(arena, play, st, mode)
    out[play.mode] = view.mode
    return out | round_updates(arena, play, st, view, state)


@user_errors
def on_load(arena: Arena, play: PlayTab, st: PlayerState | None, mode: str) -> dict[Any, Any]:
    """Mode change: only the ready-round buttons and the status line.

    Never writes the state: a round started while this runs would otherwise be replaced
    by the state this handler began with.
    """
    return ready_updates(arena, play, player_state(arena, st), mode)


@user_errors
def on_generate(
    arena: Arena, play: PlayTab, state: gr.State, st: PlayerState | None, prompt: object,
    mode: str, seed: object, random_seed: object, steps: object, guidance: object,
    width: object, height: object, progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> dict[Any, Any]:  # fmt: skip
    """Generate a new round from the player's prompt; every value is validated in core."""
    st = player_state(arena, st)
    settings = arena.settings_from_request(
        seed=seed, random_seed=random_seed, steps=steps, guidance=guidance, width=width,
        height=height,
    )  # fmt: skip
    # A micro prompt with words or symbols it never saw is refused here (the error names
    # them and offers a prompt it can draw); text past the T5 limit is named, not dropped
    # in silence.
    cut = arena.check_prompt(prompt, settings)
    if cut:
        gr.Warning(presentation.cut_prompt_notice(cut, settings.max_sequence_length))
    progress(0, desc=presentation.waiting_text(arena.on_gpu))
    view = arena.generate_round(
        st.session, prompt, settings, mode,
        presentation.progress_reporter(progress, arena.engine.variants, settings.steps),
    )  # fmt: skip
    return round_updates(arena, play, st, view, state)


@user_errors
def on_ready_round(
    arena: Arena, play: PlayTab, state: gr.State, st: PlayerState | None, mode: str
) -> dict[Any, Any]:
    """Start a round of a ready generation this player has not seen."""
    st = player_state(arena, st)
    return round_updates(arena, play, st, arena.ready_round(st.session, mode), state)


@user_errors
def on_guess(
    arena: Arena, play: PlayTab, state: gr.State, answer: str, st: PlayerState | None,
    mode: str,
) -> dict[Any, Any]:  # fmt: skip
    """Record the answer, then reveal: labels, verdict, costs and the comparison."""
    check_mode(mode)  # before the guess is recorded: a bad mode must write nothing
    if not isinstance(st, PlayerState) or st.round_id is None:
        raise gr.Error("Start a round first: generate images or play a ready round.")
    try:
        reveal = arena.guess(st.session, st.round_id, answer)
    except StorageFullError:
        raise gr.Error(
            "Your vote was NOT recorded: the server's storage is full. Please try again later.",
            print_exception=False,
        ) from None
    st = replace(st, reveal=reveal)
    return reveal_updates(play, st, reveal, state) | ready_updates(arena, play, st, mode)


def reveal_updates(
    play: PlayTab, st: PlayerState, reveal: Reveal, state: gr.State
) -> dict[Any, Any]:
    """Labels every image (and detail) with its variant and opens the reveal."""
    quantized = presentation.compare_default(reveal)
    choices = presentation.compare_choices(reveal)
    out: dict[Any, Any] = {
        state: st,
        play.reveal_box: gr.Column(visible=True),
        play.verdict: presentation.verdict(reveal),
        play.reveal_table: presentation.reveal_table(reveal),
        # A duel shows one quantized variant: nothing to choose between.
        play.compare_with: gr.Radio(choices=choices, value=quantized, visible=len(choices) > 1),
        play.slider: presentation.slider_value(st.paths, reveal, quantized),
    }
    for slot, variant in reveal.slot_variants.items():
        label = f"{slot}: {config.VARIANTS[variant].label}"
        out[play.images[slot]] = gr.Image(label=label)
        out[play.details[slot]] = gr.Image(label=f"{label} (detail)")
    for btn in play.answer_btns.values():
        out[btn] = gr.Button(interactive=False)
    return out


@user_errors
def on_compare(st: PlayerState | None, variant: str) -> Any:
    """The slider's quantized side, chosen after the guess."""
    if not isinstance(st, PlayerState) or st.reveal is None:
        raise gr.Error("The comparison opens after your guess.")
    return presentation.slider_value(st.paths, st.reveal, variant)


@user_errors
def on_detail(
    arena: Arena, play: PlayTab, st: PlayerState | None, evt: gr.SelectData
) -> dict[Any, Any]:
    """The spot the player pointed at, cut from every image of the round at the same
    pixels and magnified; labelled by slot, and by variant only after the guess."""
    if not isinstance(st, PlayerState) or not st.slot_paths:
        raise gr.Error("Start a round first: generate images or play a ready round.")
    slots, paths = zip(*st.slot_paths, strict=True)
    region, served = arena.detail([Path(p) for p in paths], evt.index)
    variants = st.reveal.slot_variants if st.reveal else {}
    out: dict[Any, Any] = {
        play.detail_box: gr.Column(visible=True),
        play.detail_note: presentation.detail_caption(region.describe()),
    }
    for slot, path in zip(slots, served, strict=True):
        name = f"{slot}: {config.VARIANTS[variants[slot]].label}" if slot in variants else slot
        out[play.details[slot]] = gr.Image(value=str(path), label=f"{name} (detail)")
    return out


@user_errors
def on_results(arena: Arena, results: ResultsTab) -> dict[Any, Any]:
    """Every Results table and the chart, from the shared summary (at most a few seconds
    old: core.game.results_cache)."""
    summary = arena.results()
    return {
        results.verdicts_md: presentation.verdicts_markdown(summary)
        + presentation.withdrawn_note(summary),
        results.detection_table: presentation.detection_table(summary),
        results.details_table: presentation.detection_details_table(summary),
        results.chart: summary.chart_html,
        results.picks_md: presentation.trio_picks(summary),
        results.hardest_table: presentation.hardest_table(summary),
        results.costs_table: presentation.cost_table(summary),
        results.cost_note: presentation.cost_note(summary) + presentation.elsewhere_note(summary),
        results.metrics_html: presentation.metric_section(summary),
    }


@user_errors
def on_report(arena: Arena, st: PlayerState | None) -> None:
    """The player reports the round they are shown: it leaves the pool and the verdicts
    at once, until an operator hides or restores it (core.game.moderate)."""
    from core.game import moderate

    if not isinstance(st, PlayerState) or st.round_id is None:
        raise gr.Error("There is no round to report: start one first.", print_exception=False)
    moderate.report(arena.store, st.session, st.round_id)
    gr.Info("Thank you: this round will not be shown again until an operator has looked at it.")


def on_out_of_domain(arena: Arena) -> str:
    """The Results line saying how many stored rounds the model cannot draw are left out."""
    return presentation.out_of_domain_note(*arena.out_of_domain())


@user_errors
def on_export(arena: Arena) -> gr.DownloadButton:
    """Write the export zip and offer it for download."""
    path = arena.export_zip(Path(arena.settings.db).parent / "exports")
    return gr.DownloadButton(f"Download {path.name}", value=str(path), visible=True)


def set_button(label: str, interactive: bool) -> gr.Button:
    """A button's label and whether it can be clicked (e.g. "Generating…" while busy)."""
    return gr.Button(value=label, interactive=interactive)


# --- wiring ------------------------------------------------------------------------------------


def wire_play(arena: Arena, demo: gr.Blocks, state: gr.State, browser: gr.BrowserState,
              play: PlayTab, results: ResultsTab) -> None:  # fmt: skip
    """Connect the Play tab's events to their handlers.

    Errors show as a notice (gr.Error's toast) and, through ``show_progress_on``, as a
    badge on the status line only: the round's images and reveal stay as they were.
    """
    # The API returns these in order (gr.State and layout blocks left out): what a client
    # reads first comes first.
    round_outputs = [
        state, play.question, play.round_prompt, *play.images.values(),
        *play.answer_btns.values(), play.round_box, play.detail_box, play.reveal_box,
        *play.slot_columns.values(), *play.details.values(), play.ready_btn, play.next_btn,
        play.status, play.seed,
    ]  # fmt: skip
    reveal_outputs = [
        state, play.reveal_box, play.verdict, play.reveal_table, play.compare_with,
        play.slider, *play.images.values(), *play.details.values(),
        *play.answer_btns.values(), play.ready_btn, play.next_btn, play.status,
    ]  # fmt: skip
    ready_outputs = [play.ready_btn, play.next_btn, play.status]
    status = [play.status]

    demo.load(
        bind(on_page_load, arena, play, state, browser), [browser, play.mode],
        [*round_outputs, play.mode, play.generate_btn, browser], api_visibility="private",
        show_progress_on=status,
    )  # fmt: skip
    load = bind(on_load, arena, play)
    play.mode.change(load, [state, play.mode], ready_outputs, api_visibility="private")

    busy = play.generate_btn.click(
        bind(set_button, "Generating…", False), None, play.generate_btn, queue=False,
        api_visibility="private",
    )  # fmt: skip
    generated = busy.then(
        bind(on_generate, arena, play, state),
        [
            state,
            play.prompt,
            play.mode,
            play.seed,
            play.random_seed,
            play.steps,
            play.guidance,
            play.width,
            play.height,
        ],
        round_outputs,
        api_name="generate",
        concurrency_id="generate",
        # The arena bounds the queue and answers "busy" at once, so let every request in.
        concurrency_limit=None,
        # The raw values reach the handler: core validates them and names the field in its
        # message (Gradio's own checks say "Value 250 is less than minimum value 256." or,
        # for a string, only "the upstream app raised an exception").
        preprocess=False,
        show_progress_on=status,
    )
    # Gradio's frontend skips a .then() after a failed event, so both outcomes re-enable.
    for outcome in (generated.success, generated.failure):
        outcome(
            bind(set_button, "Generate", True), None, play.generate_btn, queue=False,
            api_visibility="private",
        )  # fmt: skip
    generated.success(None, None, None, js=SCROLL_TO_ROUND, api_visibility="private")

    ready = bind(on_ready_round, arena, play, state)
    for trigger in (play.ready_btn, play.next_btn):
        trigger.click(
            ready,
            [state, play.mode],
            round_outputs,
            api_name="ready_round" if trigger is play.ready_btn else None,
            api_visibility="public" if trigger is play.ready_btn else "private",
            preprocess=False,
            show_progress_on=status,
        ).success(None, None, None, js=SCROLL_TO_ROUND, api_visibility="private")
    guess = bind(on_guess, arena, play, state)
    refresh = bind(on_results, arena, results)
    for answer, btn in play.answer_btns.items():
        answered = btn.click(
            bind(guess, answer), [state, play.mode], reveal_outputs,
            api_visibility="private", preprocess=False, show_progress_on=status,
        )  # fmt: skip
        answered.success(None, None, None, js=SCROLL_TO_REVEAL, api_visibility="private")
        answered.success(refresh, None, results.outputs, api_visibility="private",
                         show_progress="hidden")  # fmt: skip
    # An API-only event (no trigger on the page). Not gr.api: its endpoints take no
    # gr.State, and /guess answers the round held in the caller's session state.
    gr.on(
        triggers=[], fn=guess, inputs=[play.api_answer, state, play.mode],
        outputs=reveal_outputs, api_name="guess", preprocess=False,
    )  # fmt: skip
    play.compare_with.input(
        on_compare, [state, play.compare_with], play.slider, api_visibility="private"
    )
    detail = bind(on_detail, arena, play)
    detail_outputs = [play.detail_box, play.detail_note, *play.details.values()]
    for image in play.images.values():
        image.select(
            detail, [state], detail_outputs, api_visibility="private",
            show_progress_on=[play.detail_note],
        ).success(None, None, None, js=SCROLL_TO_DETAIL, api_visibility="private")  # fmt: skip
    if play.builder_btn is not None:
        play.builder_btn.click(
            describe_prompt, list(play.builder.values()), [play.prompt], api_visibility="private"
        )


def describe_prompt(size: str, colour: str, shape: str, position: str, background: str) -> str:
    """The prompt builder's sentence, in the micro model's own words."""
    return vocabulary.describe(colour, shape, position, size, background)


def wire_results(arena: Arena, demo: gr.Blocks, results: ResultsTab) -> None:
    """Results fill when the page loads, when the tab opens and on Refresh."""
    refresh = bind(on_results, arena, results)
    results.refresh_btn.click(refresh, None, results.outputs, api_name="results")
    demo.load(refresh, None, results.outputs, api_visibility="private")
    results.tab.select(refresh, None, results.outputs, api_visibility="private")
    domain = bind(on_out_of_domain, arena)
    for trigger in (demo.load, results.tab.select, results.refresh_btn.click):
        trigger(domain, None, results.domain_md, api_visibility="private")
    results.export_btn.click(
        bind(on_export, arena), None, results.download_btn, api_visibility="private"
    )


def build_demo(arena: Arena, *, oauth: bool = False) -> gr.Blocks:
    """The whole UI over ``arena``; nothing here holds state beyond gr.State and the
    person token in gr.BrowserState. ``oauth``: offer "Sign in with Hugging Face" (only
    where the Space enables OAuth: Gradio's LoginButton needs its routes)."""
    with Blocks(title="Spot the Quantized Model") as demo:
        state = gr.State(None)
        browser = gr.BrowserState(
            None, storage_key=PERSON_STORAGE_KEY, secret=PERSON_STORAGE_SECRET
        )
        gr.Markdown("# Spot the Quantized Model\n" + presentation.tagline(arena.game.variants))
        if oauth:
            with gr.Row():
                gr.LoginButton(size="sm", scale=0, min_width=200)
                gr.Markdown(SIGN_IN_NOTE, elem_classes=["sign-in-note"])
        with gr.Tab("Play"):
            play = build_play_tab(arena)
            report_btn = gr.Button("Report this round", variant="secondary", size="sm")
        results = build_results_tab(arena)
        build_about_tab(arena)
        wire_play(arena, demo, state, browser, play, results)
        wire_results(arena, demo, results)
        report_btn.click(bind(on_report, arena), [state], None, api_name="report")
    return demo


# --- launching ---------------------------------------------------------------------------


def zero_gpu_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this is a ZeroGPU Space (``SPACES_ZERO_GPU`` set as the spaces package reads it)."""
    return environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def zero_gpu_seconds(prompt: str, settings: Any, progress: Any = None) -> int:
    """The GPU time to ask ZeroGPU for one trio, in seconds: 10 s of overhead and 1 s per
    step (issue 26 quotes about 19 s per 20 steps for a FLUX.1-dev trio on an H200; no
    command of this repository has measured it on ZeroGPU's RTX PRO 6000). ZeroGPU checks
    the quota against this figure (doubled for xlarge) before it runs anything."""
    return 10 + int(settings.steps)


def on_zero_gpu(engine: Any) -> Any:
    """On a ZeroGPU Space, wrap the engine's generation alone in ``spaces.GPU`` (size
    xlarge: the trio's 62.6 GB of weights is above the 42 GiB automatic-xlarge threshold);
    elsewhere a no-op.

    Only the engine call is wrapped, not the Gradio handler: ZeroGPU runs the decorated
    function in a forked worker, and the arena's queue and per-player limits must be
    counted in this process. The progress callback does not cross into the worker (its
    arguments are pickled), so a ZeroGPU generation shows no step progress. ZeroGPU's
    refusals ("ZeroGPU quota exceeded", "ZeroGPU illegal duration") become a
    ZeroGpuRefusedError that offers a ready round. Not run on ZeroGPU hardware (README).
    """
    if not zero_gpu_enabled():
        return engine
    import spaces

    on_gpu = spaces.GPU(duration=zero_gpu_seconds, size="xlarge")(engine.generate)

    def generate(prompt: str, settings: Any, progress: Any = None) -> Any:
        try:
            return on_gpu(prompt, settings)
        except gr.Error as exc:
            title = str(getattr(exc, "title", "") or "")
            if title.startswith(("ZeroGPU quota exceeded", "ZeroGPU illegal duration")):
                raise ZeroGpuRefusedError(
                    f"{title}: no GPU for a new prompt now ({_shorten(str(exc.message))[:200]}); "
                    "play a ready round instead"
                ) from None
            raise

    generate.gpu_task = on_gpu  # type: ignore[attr-defined]
    engine.generate = generate
    return engine


def connect_sync(settings: AppSettings, environ: Mapping[str, str]) -> Any:
    """The checked sync target of ``--sync-to`` (core.game.sync.SyncLink), or None.

    Checked before the database is opened: an unreachable or foreign target stops the
    start with one line (SyncTargetError) and nothing is written anywhere."""
    if not settings.sync_to:
        return None
    from core.game import sync

    return sync.connect(
        settings.sync_to,
        sync.outbox_dir_for(settings.db, settings.sync_to),
        settings.sync_every_minutes,
        public=settings.sync_visibility == "public",
        key=environ.get(sync.SYNC_KEY_VARIABLE) or None,
        token=environ.get("HF_TOKEN") or None,
    )


def load_arena(
    settings: AppSettings, link: Any = None, environ: Mapping[str, str] | None = None
) -> Arena:
    """Load the engine, then open the database (restored from the sync target ``link`` when
    it is empty, then syncing to it) and build the services object. Person ids are signed
    with load_person_key(settings, environ), read after the model has loaded so a failed
    start leaves no file; with ``environ`` None, a random key for this process."""
    from core.engine.generation import Engine  # torch is imported only when serving
    from core.game.rounds import Game
    from core.game.sync import SyncedStore

    # The model first: a model that cannot load leaves no database file behind.
    try:
        zero_gpu = zero_gpu_enabled()
        engine = on_zero_gpu(
            Engine.load(
                settings.model,
                variants=settings.variants,
                # ZeroGPU: every weight on "cuda" in this process at start, as it requires
                # (it packs them and moves them to the GPU it lends for each call).
                device="cuda" if zero_gpu else None,
                offload="none" if zero_gpu else settings.offload,
                max_gpu_memory_gb=settings.max_gpu_memory_gb,
            )
        )
    except ModelUnavailableError as exc:
        if not settings.pool:
            raise
        # A CPU Space serving rounds made on a GPU elsewhere (core.game.pool).
        from core.game.pool import NoLocalEngine

        logger.warning(
            "no local engine for %s; serving ready rounds from the pool %s (%s)",
            settings.model,
            settings.pool,
            exc,
        )
        engine = NoLocalEngine(config.resolve_model(settings.model, cuda_available=False), str(exc))
    persons = (
        PersonIds.ephemeral() if environ is None else PersonIds(load_person_key(settings, environ))
    )
    store = SyncedStore(settings.db, settings.images_dir)
    try:
        if link is not None:
            link.attach(store, Path(get_upload_folder()) / "spot-sync")
        if settings.pool:
            from core.game.pool import PoolImporter

            PoolImporter(
                store,
                settings.pool,
                Path(get_upload_folder()) / "spot-pool",
                settings.sync_every_minutes,
            ).start()
    except BaseException:
        store.close()
        raise
    game = Game(
        store,
        random.SystemRandom(),  # unpredictable shuffles in production; tests inject a seeded RNG
        rounds_per_minute=settings.rounds_per_minute,
        round_ttl_seconds=settings.round_ttl_seconds,
        round_images=round_images(settings),
        answers_per_day=settings.answers_per_day,
        # Rounds draw from the variants the engine loads (the same, in registry order); a
        # pool without a local engine serves the rounds of these variants too.
        variants=settings.variants,
    )
    return Arena(engine, store, game, settings, persons=persons)


def load_person_key(settings: AppSettings, environ: Mapping[str, str]) -> bytes:
    """The key behind person ids: SPOT_PERSON_KEY where set, else ``person.key`` beside
    the database (made on first use). Raises InvalidSettingError for a bad one."""
    text = environ.get(app_settings.PERSON_KEY_VARIABLE, "")
    if text != "":
        return key_from_text(text, app_settings.PERSON_KEY_VARIABLE)
    return load_or_create_key(Path(settings.db).parent / KEY_FILE_NAME)


def round_images(settings: AppSettings) -> RoundImages:
    """Each round's own image files, inside Gradio's cache folder (GRADIO_TEMP_DIR or
    <tmp>/gradio): Gradio serves a file that is already there as it is, without copying
    it or touching its timestamp (see core.store.round_images). One folder per image
    folder, so a restart reuses the padded copies; round folders are kept for the round's
    time to live plus an hour (the reveal's slider shows them after the guess)."""
    images_dir = str(Path(settings.images_dir).resolve())
    name = hashlib.sha256(images_dir.encode()).hexdigest()[:16]
    return RoundImages(
        Path(get_upload_folder()) / "spot-rounds" / name,
        keep_seconds=settings.round_ttl_seconds + 3600,
    )


def launch(arena: Arena, *, oauth: bool = False, **kwargs: Any) -> gr.Blocks:
    """Queue and launch the demo (``oauth``: see build_demo); keyword arguments go to
    ``Blocks.launch``."""
    demo = build_demo(arena, oauth=oauth)
    demo.queue(default_concurrency_limit=16, max_size=None)
    settings = arena.settings
    demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        # No allowed_paths: the stored images are never served by name, only each round's
        # own copies from Gradio's cache folder (core.store.round_images).
        max_file_size="1kb",  # belt and braces: RequestLimits refuses every upload first
        css_paths=[ASSETS / "app.css"],
        js=(ASSETS / "app.js").read_text(encoding="utf-8"),  # integer scaling, scrolling
        app_kwargs={
            "middleware": [Middleware(RequestLimits, max_body_bytes=limits.REQUEST_MAX_BYTES)]
        },
        **kwargs,
    )
    return demo


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Serve the app with the settings of ``argv`` and ``environ`` (default: this process's
    flags and environment); 2 for a bad setting or a model that cannot load, 0 when the
    server stops. argparse's own errors print the usage and exit with status 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    environ = os.environ if environ is None else environ
    link = None
    try:
        settings = AppSettings.from_argv(argv, environ)
        link = connect_sync(settings, environ)
        arena = load_arena(settings, link, environ)
    except SpotError as exc:
        logger.error("%s: %s", type(exc).__name__, exc)  # one line, the error named
        if link is not None:
            link.close()
        return 2
    # SIGTERM (a Space's stop, docker stop) and SIGINT end the server as Ctrl-C does; the
    # outbox is then pushed, so a clean stop loses no acknowledged vote.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        launch(arena, oauth=app_settings.oauth_enabled(environ))
    except KeyboardInterrupt:  # a stop before the server was up and waiting
        logger.info("stopped while starting")
    finally:
        if link is not None:
            link.close()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    """Stop the server once; a second signal while it stops (a supervisor's SIGTERM and
    SIGINT both) is ignored, so the final push is not cut short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
