"""Spot the Quantized Model: the Gradio UI.

A thin layer over ``core``: ``build_demo(arena)`` lays out the tabs and wires each event
to a handler of a few lines that calls ``core.game.arena.Arena`` and turns the project's
named errors into ``gr.Error``; ``main()`` parses flags (or environment variables, for
a Hugging Face Space), loads the services and launches.

    python app.py                       # the micro model on a CPU, FLUX.1-dev on a GPU
    python app.py --model black-forest-labs/FLUX.1-schnell --offload model
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from core import config
from core.checkpoints.micro import vocabulary
from core.config import AppSettings
from core.errors import SpotError, StorageFullError
from core.game import presentation
from core.game.arena import Arena
from core.game.request_limits import RequestLimits
from core.game.rounds import CANT_TELL, SLOT_LABELS, Reveal, RoundView, check_mode
from core.store.round_images import RoundImages

logger = logging.getLogger("app")

ASSETS = Path(__file__).resolve().parent / "assets"
MODE_LABELS = {"trio": "Trio: spot the original among 3", "duel": "Duel: spot the quantized of 2"}
CANT_TELL_LABEL = "Can't tell"
MESSAGE_MAX_CHARS = 400  # a message shown to a player is never longer (values are quoted short)


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


def new_state(arena: Arena) -> dict[str, Any]:
    """Per-player state kept on the server: the session id and the current round only."""
    return {"session": arena.new_session_id(), "round": None, "paths": {}, "revealed": None}


def build_demo(arena: Arena) -> gr.Blocks:
    """The whole UI over ``arena``; nothing here holds state beyond gr.State."""
    spec = arena.spec
    defaults = arena.engine.default_settings()
    micro = spec.kind == "micro"
    examples = (
        list(vocabulary.EXAMPLE_PROMPTS)
        if micro
        else presentation.example_prompts(ASSETS / "prompts.txt")
    )
    warning = presentation.tiny_model_warning(spec)
    size_min, size_max = spec.size_limits

    with Blocks(title="Spot the Quantized Model") as demo:
        state = gr.State(None)
        gr.Markdown("# Spot the Quantized Model\n" + presentation.TAGLINE)

        with gr.Tab("Play"):
            if warning:
                gr.Markdown(warning, elem_classes=["tiny-warning"])
            with gr.Row():
                prompt = gr.Textbox(
                    label="Prompt",
                    placeholder="Describe an image…",
                    max_length=config.PROMPT_MAX_CHARS,
                    scale=4,
                )
                mode = gr.Radio(
                    [(label, name) for name, label in MODE_LABELS.items()],
                    value="trio",
                    label="Mode",
                    scale=2,
                )
            gr.Examples(examples=[[p] for p in examples], inputs=[prompt], label="Examples")
            if micro:
                with (
                    gr.Accordion("Prompt builder (the words the micro model knows)", open=True),
                    gr.Row(),
                ):
                    pick = {
                        name: gr.Dropdown(list(choices), value=choices[0], label=name.title())
                        for name, choices in (
                            ("size", vocabulary.SIZES),
                            ("colour", tuple(vocabulary.COLOURS)),
                            ("shape", vocabulary.SHAPES),
                            ("position", tuple(vocabulary.POSITIONS)),
                            ("background", tuple(vocabulary.COLOURS)[::-1]),
                        )
                    }
                    build_btn = gr.Button("Use this prompt", variant="secondary")
                build_btn.click(
                    lambda size, colour, shape, position, background: vocabulary.describe(
                        colour, shape, position, size, background
                    ),
                    list(pick.values()),
                    [prompt],
                    api_visibility="private",
                )
            with gr.Accordion("Advanced settings", open=False):
                with gr.Row():
                    random_seed = gr.Checkbox(value=True, label="Random seed")
                    seed = gr.Number(
                        value=0, label="Seed", precision=0, minimum=0, maximum=config.SEED_MAX
                    )
                with gr.Row():
                    steps = gr.Slider(
                        config.STEPS_MIN,
                        config.STEPS_MAX,
                        value=defaults.steps,
                        step=1,
                        label="Steps",
                    )
                    guidance = gr.Slider(
                        config.GUIDANCE_MIN,
                        config.GUIDANCE_MAX,
                        value=defaults.guidance,
                        step=0.1,
                        label="Guidance",
                    )
                with gr.Row():
                    width, height = (
                        gr.Slider(
                            size_min,
                            size_max,
                            value=defaults.width,
                            step=config.SIZE_MULTIPLE,
                            label=axis,
                        )
                        for axis in ("Width", "Height")
                    )
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary")
                ready_btn = gr.Button("Play a ready round", variant="secondary")
            ready_note = gr.Markdown("")
            question = gr.Markdown("")
            # The round's prompt was typed by a player: a Textbox shows it as plain text
            # (in Markdown, "![](http://…)" would load a remote image in every later
            # player's browser, and "# Hint: …" would become a heading).
            round_prompt = gr.Textbox(label="This round's prompt", interactive=False, visible=False)
            with gr.Row(equal_height=True):
                images = {
                    slot: gr.Image(
                        label=slot,
                        type="filepath",
                        interactive=False,
                        buttons=["fullscreen"],
                        height=512,
                        visible=slot != "C",
                    )
                    for slot in SLOT_LABELS
                }
            with gr.Row():
                answer_btns = {
                    slot: gr.Button(slot, interactive=False, visible=slot != "C")
                    for slot in SLOT_LABELS
                }
                answer_btns[CANT_TELL] = gr.Button(CANT_TELL_LABEL, interactive=False)
            api_answer = gr.Textbox(visible=False)
            api_guess_btn = gr.Button(visible=False)
            with gr.Group(visible=False) as reveal_box:
                verdict = gr.Markdown("")
                reveal_table = gr.Dataframe(
                    headers=[h.format(unit="GiB") for h in presentation.REVEAL_HEADERS],
                    interactive=False,
                    label="Measured cost",
                )
                with gr.Row():
                    compare_with = gr.Radio(
                        config.QUANTIZED_VARIANTS, label="Compare BF16 with", scale=1
                    )
                slider = gr.ImageSlider(label="BF16 ⟷ quantized", type="filepath", max_height=512)
                next_btn = gr.Button("Next ready round", variant="primary")

        with gr.Tab("Results"):
            if warning:
                gr.Markdown(warning)
            refresh_btn = gr.Button("Refresh", variant="secondary")
            verdicts_md = gr.Markdown("")
            gr.Markdown(presentation.DETECTION_HELP)
            detection_table = gr.Dataframe(
                headers=presentation.DETECTION_HEADERS, interactive=False, label="Detection"
            )
            chart = gr.Plot(label="Detection rate with its interval")
            picks_md = gr.Markdown("")
            hardest_table = gr.Dataframe(
                headers=presentation.HARDEST_HEADERS,
                datatype="str",  # players' prompts: plain text, never "markdown" or "html"
                interactive=False,
                label="Hardest prompts",
            )
            costs_table = gr.Dataframe(
                headers=[h.format(unit="GiB") for h in presentation.COST_HEADERS],
                interactive=False,
                label=f"Memory and time per variant here ({arena.engine.device_label})",
            )
            gr.Dataframe(
                value=presentation.reference_rows(),
                headers=presentation.REFERENCE_HEADERS,
                interactive=False,
                label=f"Reference: {config.SEED_REFERENCE_SOURCE}",
            )
            with gr.Row():
                export_btn = gr.Button("Export the data (zip)", variant="secondary")
                # A DownloadButton downloads the value it already holds, so the export is
                # made first and then offered.
                download_btn = gr.DownloadButton("Download the zip", visible=False)

        with gr.Tab("About"):
            if warning:
                gr.Markdown(warning)
            gr.Markdown(
                presentation.about(arena.spec, arena.engine.device_label, arena.engine.versions)
            )

        # --- handlers (a few lines each) ---------------------------------------------------

        round_outputs = [
            state, question, round_prompt, *images.values(), *answer_btns.values(), reveal_box,
            ready_btn, ready_note, seed,
        ]  # fmt: skip

        def show_round(st: dict[str, Any], view: RoundView) -> dict[Any, Any]:
            st = {
                **st,
                "round": view.round_id,
                "paths": dict(zip(view.slots, map(str, view.image_paths), strict=True)),
                "revealed": None,
            }
            out: dict[Any, Any] = {
                state: st,
                question: presentation.question(view),
                round_prompt: gr.Textbox(value=view.prompt, visible=True),
                reveal_box: gr.Group(visible=False),
                seed: view.settings.seed,
            }
            for slot in SLOT_LABELS:
                shown = slot in view.slots
                out[images[slot]] = gr.Image(value=st["paths"].get(slot), label=slot, visible=shown)
                out[answer_btns[slot]] = gr.Button(interactive=shown, visible=shown)
            out[answer_btns[CANT_TELL]] = gr.Button(interactive=True)
            return out | ready_updates(st, view.mode)

        def ready_updates(st: dict[str, Any] | None, mode_value: str) -> dict[Any, Any]:
            # A visitor without a session yet has seen nothing: ask for a fresh one.
            session = st["session"] if st else arena.new_session_id()
            ready = arena.has_ready_round(session, mode_value)
            note = "" if ready else presentation.NO_READY_ROUND
            return {ready_btn: gr.Button(interactive=ready), ready_note: note}

        @user_errors
        def on_load(st: dict[str, Any] | None, mode_value: str) -> dict[Any, Any]:
            # Never writes the state: a round started while this runs (a click right after
            # the page shows) would otherwise be replaced by the fresh empty state this
            # handler began with, and its answer refused ("Start a round first"). The
            # session is created by the first handler that needs one.
            return ready_updates(st, mode_value)

        @user_errors
        def on_generate(
            st, prompt_value, mode_value, seed_value, random_value, steps_value, guidance_value,
            width_value, height_value, progress=gr.Progress(),  # noqa: B008
        ) -> dict[Any, Any]:  # fmt: skip
            st = st or new_state(arena)
            if micro and isinstance(prompt_value, str):
                unknown = vocabulary.unknown_words(prompt_value)
                if unknown:
                    gr.Warning(presentation.unknown_words_notice(unknown))
            settings = arena.settings_from_request(
                seed=seed_value, random_seed=random_value, steps=steps_value,
                guidance=guidance_value, width=width_value, height=height_value,
            )  # fmt: skip
            progress(0, desc="waiting for the GPU")
            view = arena.generate_round(
                st["session"], prompt_value, settings, mode_value,
                presentation.progress_reporter(progress, arena.engine.variants, settings.steps),
            )  # fmt: skip
            return show_round(st, view)

        @user_errors
        def on_ready_round(st: dict[str, Any] | None, mode_value: str) -> dict[Any, Any]:
            st = st or new_state(arena)
            return show_round(st, arena.ready_round(st["session"], mode_value))

        @user_errors
        def on_guess(answer: str, st: dict[str, Any] | None, mode_value: str) -> dict[Any, Any]:
            check_mode(mode_value)  # before the guess is recorded: a bad mode must write nothing
            if not st or not st.get("round"):
                raise gr.Error("Start a round first: generate images or play a ready round.")
            try:
                reveal = arena.guess(st["session"], st["round"], answer)
            except StorageFullError:
                raise gr.Error(
                    "Your vote was NOT recorded: the server's storage is full. "
                    "Please try again later.",
                    print_exception=False,
                ) from None
            st = {**st, "revealed": reveal}
            return reveal_updates(st, reveal) | ready_updates(st, mode_value)

        def reveal_updates(st: dict[str, Any], reveal: Reveal) -> dict[Any, Any]:
            quantized = presentation.compare_default(reveal)
            out: dict[Any, Any] = {
                state: st,
                reveal_box: gr.Group(visible=True),
                verdict: presentation.verdict(reveal),
                reveal_table: presentation.reveal_table(reveal),
                compare_with: gr.Radio(
                    choices=presentation.compare_choices(reveal), value=quantized
                ),
                slider: presentation.slider_value(st, reveal, quantized),
            }
            for slot, variant in reveal.slot_variants.items():
                out[images[slot]] = gr.Image(label=f"{slot}: {config.VARIANTS[variant].label}")
            for btn in answer_btns.values():
                out[btn] = gr.Button(interactive=False)
            return out

        @user_errors
        def on_compare(st: dict[str, Any] | None, variant: str) -> Any:
            if not st or not st.get("revealed"):
                raise gr.Error("The comparison opens after your guess.")
            return presentation.slider_value(st, st["revealed"], variant)

        @user_errors
        def on_results() -> dict[Any, Any]:
            results = arena.results()
            return {
                verdicts_md: presentation.verdicts_markdown(results),
                detection_table: presentation.detection_rows(results),
                chart: presentation.detection_chart(results),
                picks_md: presentation.trio_picks(results),
                hardest_table: presentation.hardest_rows(results),
                costs_table: presentation.cost_table(results),
            }

        @user_errors
        def on_export() -> gr.DownloadButton:
            path = arena.export_zip(Path(arena.settings.db).parent / "exports")
            return gr.DownloadButton(f"Download {path.name}", value=str(path), visible=True)

        reveal_outputs = [
            state, reveal_box, verdict, reveal_table, compare_with, slider, *images.values(),
            *answer_btns.values(), ready_btn, ready_note,
        ]  # fmt: skip
        results_outputs = [
            detection_table, chart, picks_md, hardest_table, costs_table, verdicts_md
        ]  # fmt: skip

        demo.load(on_load, [state, mode], [ready_btn, ready_note], api_visibility="private")
        mode.change(on_load, [state, mode], [ready_btn, ready_note], api_visibility="private")
        generate_btn.click(
            on_generate,
            [state, prompt, mode, seed, random_seed, steps, guidance, width, height],
            round_outputs,
            api_name="generate",
            concurrency_id="generate",
            # The arena bounds the queue and answers "busy" at once, so let every request in.
            concurrency_limit=None,
            # The raw values reach the handler: core validates them and names the field in its
            # message (Gradio's own checks say "Value 250 is less than minimum value 256." or,
            # for a string, only "the upstream app raised an exception").
            preprocess=False,
        )
        for trigger in (ready_btn, next_btn):
            trigger.click(
                on_ready_round,
                [state, mode],
                round_outputs,
                api_name="ready_round" if trigger is ready_btn else None,
                api_visibility="public" if trigger is ready_btn else "private",
                preprocess=False,
            )
        for answer, btn in answer_btns.items():
            btn.click(
                functools.partial(on_guess, answer),
                [state, mode],
                reveal_outputs,
                api_visibility="private",
                preprocess=False,
            )
        api_guess_btn.click(
            on_guess, [api_answer, state, mode], reveal_outputs, api_name="guess", preprocess=False
        )
        compare_with.input(on_compare, [state, compare_with], slider, api_visibility="private")
        refresh_btn.click(on_results, None, results_outputs, api_name="results")
        demo.load(on_results, None, results_outputs, api_visibility="private")
        export_btn.click(on_export, None, download_btn, api_visibility="private")
    return demo


# --- launching ---------------------------------------------------------------------------


def on_zero_gpu(engine: Any, seconds: int = 120) -> Any:
    """On a ZeroGPU Space, attach a GPU to each generation with ``spaces.GPU``; elsewhere a
    no-op (``spaces`` is installed on Hugging Face Spaces only).

    Only the engine call is wrapped, not the Gradio handler: ZeroGPU runs the decorated
    function in a worker process, and the arena's queue and per-player limits must be
    counted in this one. Untested here (no ZeroGPU): see the README.
    """
    try:
        import spaces
    except ImportError:
        return engine
    engine.generate = spaces.GPU(duration=seconds)(engine.generate)
    return engine


def load_arena(settings: AppSettings) -> Arena:
    """Load the engine, open the database and build the services object."""
    from core.engine.generation import Engine  # torch is imported only when serving
    from core.game.rounds import Game
    from core.store.storage import Store

    store = Store(settings.db, settings.images_dir)
    engine = on_zero_gpu(
        Engine.load(
            settings.model, offload=settings.offload, max_gpu_memory_gb=settings.max_gpu_memory_gb
        )
    )
    game = Game(
        store,
        random.SystemRandom(),  # unpredictable shuffles in production; tests inject a seeded RNG
        rounds_per_minute=settings.rounds_per_minute,
        round_ttl_seconds=settings.round_ttl_seconds,
        round_images=round_images(settings),
    )
    return Arena(engine, store, game, settings)


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


def launch(arena: Arena, **kwargs: Any) -> gr.Blocks:
    """Queue and launch the demo; keyword arguments go to ``Blocks.launch``."""
    demo = build_demo(arena)
    demo.queue(default_concurrency_limit=16, max_size=None)
    settings = arena.settings
    demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        # No allowed_paths: the stored images are never served by name, only each round's
        # own copies from Gradio's cache folder (core.store.round_images).
        max_file_size="1kb",  # belt and braces: RequestLimits refuses every upload first
        css=presentation.CSS,
        app_kwargs={
            "middleware": [Middleware(RequestLimits, max_body_bytes=config.REQUEST_MAX_BYTES)]
        },
        **kwargs,
    )
    return demo


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Serve the app with the settings of ``argv`` and ``environ`` (default: this process's
    flags and environment); 2 for a bad setting or a model that cannot load, 0 when the
    server stops. argparse's own errors print the usage and exit with status 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = AppSettings.from_argv(argv, environ)
        arena = load_arena(settings)
    except SpotError as exc:
        logger.error("%s", exc)
        return 2
    launch(arena)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
