"""The web chat at ``/``: a Gradio Blocks app with a chat tab (image, several turns, streamed answers, regenerate,
clear, sampling settings, ShapeWorld examples) and an agent tab (plan table, step status, images and texts).

Both tabs go through the same code as the API: the chat through :class:`mage_cli.serving.engine.Engine` (the same checks,
queue and batches), the agent through :class:`mage_cli.serving.agent.AgentRunner`. A bad input is a message under the chat
(``#chat-error``), never a dead server.
"""

from __future__ import annotations

import base64
import html
import io
import os
import random
from pathlib import Path
from typing import Any

from shapeworld.world import get_difficulty, render_scene, sample_scene

from .agent import AgentRunner
from .engine import Engine
from .errors import RequestError
from .images import DEFAULT_MAX_IMAGE_PIXELS, decode_image

PLAN_HEADERS = ["step", "task", "depends on", "arguments", "status", "output"]


def shapeworld_examples(folder: str | Path, n: int = 3, seed: int = 0, image_size: int = 224) -> list[tuple[str, str]]:
    """Draw `n` ShapeWorld scenes into `folder`; return ``(png path, question)`` pairs for the examples."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    questions = ["What is in the image?", "What colour is the first shape?", "How many shapes are there?"]
    out = []
    for i in range(n):
        scene = sample_scene(rng, get_difficulty("default"), f"serve-example-{i}", label=False)
        path = folder / f"shapeworld_{i}.png"
        render_scene(scene, image_size).save(path)
        out.append((str(path), questions[i % len(questions)]))
    return out


def _chat_messages(turns: list[list[str]], image: Any) -> list[dict[str, Any]]:
    """Turns ``[[question, answer], ...]`` (the last answer pending) → the engine's messages; the image (if any)
    belongs to the first user turn."""
    messages: list[dict[str, Any]] = []
    for k, (question, answer) in enumerate(turns):
        content: list[dict[str, Any]] = [{"type": "image", "image": image}] if (k == 0 and image is not None) else []
        content.append({"type": "text", "text": question})
        messages.append({"role": "user", "content": content})
        if k < len(turns) - 1:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def _shown(turns: list[list[str]]) -> list[dict[str, str]]:
    shown = []
    for question, answer in turns:
        shown += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return shown


def images_html(images: list[tuple[Any, str]]) -> str:
    """Step images inline (PNG data URLs) with their captions, for the agent tab."""
    figures = []
    for image, caption in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode()
        figures.append(
            f'<figure style="display:inline-block;margin:0 12px 8px 0;text-align:center">'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" '
            f'style="max-height:200px;max-width:260px"><figcaption>{html.escape(caption)}</figcaption>'
            f"</figure>"
        )
    return "".join(figures)


def build_ui(
    engine: Engine,
    agent: AgentRunner | None,
    *,
    examples: list[tuple[str, str]] = (),
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    title: str = "MAGE",
) -> Any:
    """The Gradio Blocks app (not launched: `mage_cli.serving.app` mounts it on the API's FastAPI app)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr  # optional

    def load(image_path: str | None) -> Any:
        if not image_path:
            return None
        return decode_image(Path(image_path).read_bytes(), what="the uploaded file", max_pixels=max_pixels)

    def answer(turns: list[list[str]], image_path: str | None, temperature: float, top_p: float, max_tokens: int):
        """Stream the last turn's answer into `turns`; a bad input leaves the turn out and says why."""
        try:
            image = load(image_path)
            job = engine.prepare(
                _chat_messages(turns, image),
                max_tokens=int(max_tokens),
                temperature=float(temperature),
                top_p=float(top_p),
            )
            engine.submit(job)
        except RequestError as error:
            turns.pop()
            yield turns, _shown(turns), f"⚠️ {error.message}"
            return
        try:
            for piece in engine.pieces(job):
                turns[-1][1] += piece
                yield turns, _shown(turns), ""
        except RuntimeError as error:
            yield turns, _shown(turns), f"⚠️ {error}"
            return
        yield turns, _shown(turns), ""

    def send(
        message: str, turns: list[list[str]], image_path: str | None, temperature: float, top_p: float, max_tokens: int
    ):
        turns = [list(t) for t in (turns or [])]
        if not message or not message.strip():
            yield turns, _shown(turns), "⚠️ the message is empty: ask something", message
            return
        turns.append([message, ""])
        for state, shown, error in answer(turns, image_path, temperature, top_p, max_tokens):
            yield state, shown, error, ("" if not error else message)

    def regenerate(turns: list[list[str]], image_path: str | None, temperature: float, top_p: float, max_tokens: int):
        turns = [list(t) for t in (turns or [])]
        if not turns:
            yield turns, _shown(turns), "⚠️ nothing to regenerate yet"
            return
        turns[-1][1] = ""
        yield from answer(turns, image_path, temperature, top_p, max_tokens)

    def run_agent(request: str, image_path: str | None):
        if agent is None:
            return "The agent is off on this server.", [], "", ""
        if image_path:
            try:
                load(image_path)
            except RequestError as error:
                return f"⚠️ {error.message}", [], "", ""
        outcome = agent.run(request, image_path)
        return outcome.message, outcome.plan_rows(), images_html(outcome.images()), outcome.raw

    with gr.Blocks(title=title, analytics_enabled=False) as blocks:
        gr.Markdown(f"# {title}\nUpload or paste an image, then ask about it. Answers stream as they are generated.")
        with gr.Tab("Chat", elem_id="chat-tab"):
            turns = gr.State([])
            with gr.Row():
                with gr.Column(scale=1):
                    image = _image_input(gr, "Image", "chat-image", height=260)
                    with gr.Accordion("Sampling", open=False, elem_id="chat-sampling"):
                        temperature = gr.Slider(
                            0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)", elem_id="chat-temperature"
                        )
                        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p", elem_id="chat-top-p")
                        max_tokens = gr.Slider(
                            1,
                            max(2, min(1024, engine.context_length - 1)),
                            step=1,
                            value=min(128, engine.context_length - 1),
                            label="max new tokens",
                            elem_id="chat-max-tokens",
                        )
                with gr.Column(scale=2):
                    chatbot = gr.Chatbot(label="MAGE", elem_id="chatbot", height=380, render_markdown=False)
                    error = gr.Markdown("", elem_id="chat-error")
                    message = gr.Textbox(placeholder="Ask about the image…", show_label=False, elem_id="chat-input")
                    with gr.Row():
                        send_button = gr.Button("Send", variant="primary", elem_id="chat-send")
                        regenerate_button = gr.Button("Regenerate", elem_id="chat-regenerate")
                        clear_button = gr.Button("Clear", elem_id="chat-clear")
            if examples:
                gr.Examples(
                    [[path, question] for path, question in examples],
                    inputs=[image, message],
                    label="ShapeWorld examples (drawn on start)",
                )
            settings = [temperature, top_p, max_tokens]
            for trigger in (send_button.click, message.submit):
                trigger(
                    send,
                    [message, turns, image, *settings],
                    [turns, chatbot, error, message],
                    concurrency_limit=engine.max_batch,
                )  # several users' turns meet in one engine batch
            regenerate_button.click(
                regenerate, [turns, image, *settings], [turns, chatbot, error], concurrency_limit=engine.max_batch
            )
            clear_button.click(lambda: ([], [], "", None), None, [turns, chatbot, error, image])
        with gr.Tab("Agent", elem_id="agent-tab"):
            gr.Markdown(
                "MAGE writes a tool plan for the request, then the plan runs (ShapeWorld draws, MAGE answers); "
                "plans may only name the uploaded image."
            )
            with gr.Row():
                agent_request = gr.Textbox(label="Request", lines=3, elem_id="agent-input", scale=3)
                agent_image = _image_input(gr, "Image (optional)", "agent-image", height=150, scale=1)
            agent_button = gr.Button("Run", variant="primary", elem_id="agent-run")
            agent_status = gr.Markdown("", elem_id="agent-status")
            plan_table = gr.Dataframe(
                headers=PLAN_HEADERS,
                label="Plan",
                elem_id="agent-plan",
                interactive=False,
                wrap=True,
                column_widths=["7%", "17%", "10%", "31%", "9%", "26%"],
            )
            gallery = gr.HTML("", elem_id="agent-images")
            with gr.Accordion("Model output", open=False):
                raw = gr.Textbox(show_label=False, lines=4, elem_id="agent-raw")
            agent_button.click(run_agent, [agent_request, agent_image], [agent_status, plan_table, gallery, raw])
    return blocks


__all__ = ["PLAN_HEADERS", "build_ui", "shapeworld_examples"]


def _image_input(gr, label: str, elem_id: str, **layout):
    """An image box that takes an upload or a pasted image and hands the handler its file path."""
    return gr.Image(type="filepath", label=label, sources=["upload", "clipboard"], elem_id=elem_id, **layout)
