"""`mage serve`'s library: a batching generation engine, an OpenAI-compatible API and a Gradio web chat for MAGE.

- :mod:`mage_cli.serving.engine` — request checks (images, lengths, messages), a bounded queue, left-padded batches, streaming;
- :mod:`mage_cli.serving.images` — images from data URLs, uploads and confined local paths, with size and pixel limits;
- :mod:`mage_cli.serving.api` — ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health`` (FastAPI);
- :mod:`mage_cli.serving.agent` — one `mage agent` request (plan, validation, execution) for the web chat's agent tab;
- :mod:`mage_cli.serving.webui` — the Gradio Blocks chat + agent tab, mounted on the same FastAPI app;
- :mod:`mage_cli.serving.app` — builds the whole app and runs it with uvicorn (also in a thread, for tests).

Heavy imports (torch, transformers, gradio) happen inside the modules, not here.
"""

from __future__ import annotations

__all__: list[str] = []
