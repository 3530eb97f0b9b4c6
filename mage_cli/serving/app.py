"""One FastAPI app for everything `mage serve` serves, and a uvicorn server that runs it (blocking, or in a thread).

``build_app`` adds the API routes first and mounts the Gradio chat at ``/`` after them, so ``/v1/...`` and
``/health`` are the API's and every other path is Gradio's.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from .agent import AgentRunner
from .api import add_api_routes
from .engine import Engine
from .images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from .webui import build_ui, shapeworld_examples


@dataclass
class ServeOptions:
    """Everything `mage serve` can set besides the model (the CLI's flags; tests set them directly)."""

    model_name: str = "mage"
    max_batch: int = 8
    max_queue: int = 64
    batch_window: float = 0.05
    max_images: int = 1
    default_max_tokens: int = 256
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    image_dir: Path | None = None
    agent: bool = True
    tools: str | None = None
    step_timeout: float = 120.0
    max_steps: int = 16
    work_dir: Path | None = None
    examples: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


def build_app(model: Any, processor: Any, options: ServeOptions | None = None) -> tuple[Any, Engine]:
    """``(FastAPI app, engine)`` serving `model`: the API, and the Gradio chat mounted at ``/``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr  # optional

    options = options or ServeOptions()
    work_dir = Path(options.work_dir or tempfile.mkdtemp(prefix="mage-serve-"))
    engine = Engine(
        model,
        processor,
        model_name=options.model_name,
        max_batch=options.max_batch,
        max_queue=options.max_queue,
        batch_window=options.batch_window,
        max_images=options.max_images,
        default_max_tokens=options.default_max_tokens,
    )
    agent = None
    if options.agent:
        agent = AgentRunner(
            model,
            processor,
            work_dir=work_dir / "agent",
            tools=options.tools,
            step_timeout=options.step_timeout,
            max_steps=options.max_steps,
        )
    examples = shapeworld_examples(work_dir / "examples", n=options.examples) if options.examples else []
    app = FastAPI(title="MAGE", description="MAGE: an OpenAI-compatible API and a web chat")
    add_api_routes(app, engine, image_dir=options.image_dir, max_pixels=options.max_image_pixels)
    blocks = build_ui(
        engine, agent, examples=examples, max_pixels=options.max_image_pixels, title=f"MAGE — {options.model_name}"
    )
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # no web fonts: the server may be offline
    app = gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        ssr_mode=False,
        theme=theme,
        footer_links=[],
        max_file_size=DEFAULT_MAX_IMAGE_BYTES,
        allowed_paths=[str(work_dir / "examples")],
    )
    return app, engine


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port` (port 0: a free port chosen by the OS)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Server:
    """uvicorn on an already bound socket; `url` is known before it starts."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn  # optional

        self.sock = bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, ws="none")
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve in this thread until interrupted."""
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 60.0) -> Server:
        """Serve in a daemon thread; return once uvicorn has started (or raise)."""
        self.thread = threading.Thread(target=self.run, name="mage-serve-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for it (close the engine after this)."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.sock.close()


__all__ = ["Server", "ServeOptions", "bind", "build_app"]
