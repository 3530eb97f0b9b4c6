"""The OpenAI-compatible API: ``POST /v1/chat/completions`` (plain or server-sent events), ``GET /v1/models``,
``GET /health``.

Bodies are read and parsed here (not by FastAPI's models) so that every mistake — malformed JSON, a wrong type, a bad
image — is a 4xx with OpenAI's ``{"error": {"message", "type", "param", "code"}}`` body and one readable message.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .engine import Engine
from .errors import RequestError
from .images import DEFAULT_MAX_IMAGE_PIXELS, image_from_url

MAX_BODY_BYTES = 64 * 1024 * 1024


def _number(payload: dict, name: str, kind: type, default: Any = None) -> Any:
    value = payload.get(name, default)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        raise RequestError(
            400, f"{name} must be a{'n integer' if kind is int else ' number'}, got {value!r}", param=name
        )
    return kind(value)


def openai_messages(raw: Any, *, image_dir: Path | None, max_pixels: int) -> list[dict[str, Any]]:
    """OpenAI chat messages → the engine's form (text parts and decoded images), checking each part."""
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "messages must be a non-empty list", code="invalid_messages", param="messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise RequestError(400, f"messages[{i}] must be an object", code="invalid_messages")
        content = m.get("content")
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, list):
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    image = image_from_url(url, image_dir, what=f"{where} (image)", max_pixels=max_pixels)
                    parts.append({"type": "image", "image": image})
                else:
                    raise RequestError(
                        400,
                        f"{where} must be {{'type': 'text', 'text': ...}} or "
                        "{'type': 'image_url', 'image_url': {'url': ...}}",
                        code="invalid_messages",
                        param=where,
                    )
        elif content is None and m.get("role") == "assistant":
            parts = []
        else:
            raise RequestError(
                400,
                f"messages[{i}].content must be a string or a list of parts",
                code="invalid_messages",
                param=f"messages[{i}].content",
            )
        out.append({"role": m.get("role"), "content": parts})
    return out


def parse_request(body: bytes, engine: Engine, *, image_dir: Path | None, max_pixels: int) -> tuple[Any, bool]:
    """Body bytes → ``(prepared job, stream?)``; every problem a :class:`RequestError`."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "the body must be a JSON object", code="invalid_json")
    if "messages" not in payload:
        raise RequestError(400, "messages is required", code="invalid_messages", param="messages")
    n = _number(payload, "n", int, 1)
    if n != 1:
        raise RequestError(400, f"n must be 1 on this server, got {n}", param="n")
    stop = payload.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4):
        raise RequestError(400, "stop must be a string or a list of at most 4 strings", param="stop")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, f"stream must be true or false, got {stream!r}", param="stream")
    max_tokens = _number(payload, "max_completion_tokens", int) or _number(payload, "max_tokens", int)
    messages = openai_messages(payload["messages"], image_dir=image_dir, max_pixels=max_pixels)
    job = engine.prepare(
        messages,
        max_tokens=max_tokens,
        temperature=_number(payload, "temperature", float),
        top_p=_number(payload, "top_p", float),
        stop=stop,
        seed=_number(payload, "seed", int),
    )
    return job, stream


def add_api_routes(
    app: Any, engine: Engine, *, image_dir: Path | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> None:
    """Add the three routes and the JSON error handler to the FastAPI `app`."""

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error.to_json(), status_code=error.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": engine.model_name,
            "queued": engine.queue.qsize(),
            "max_queue": engine.queue.maxsize,
            "max_batch": engine.max_batch,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": engine.model_name, "object": "model", "created": 0, "owned_by": "mage"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(413, f"the body is larger than {MAX_BODY_BYTES:,} bytes", code="body_too_large")
        job, stream = await run_in_threadpool(parse_request, body, engine, image_dir=image_dir, max_pixels=max_pixels)
        engine.submit(job)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": cid, "created": created, "model": engine.model_name}
        if not stream:
            try:
                text = await engine.acomplete(job)
            except RuntimeError as error:
                return JSONResponse(RequestError(500, str(error), code="generation_failed").to_json(), 500)
            return {
                **head,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": engine.finish_reason(job),
                    }
                ],
                "usage": {
                    "prompt_tokens": job.prompt_tokens,
                    "completion_tokens": job.completion_tokens,
                    "total_tokens": job.prompt_tokens + job.completion_tokens,
                },
            }

        def chunk(delta: dict, finish: str | None = None) -> str:
            data = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n"

        async def events():
            try:
                yield chunk({"role": "assistant", "content": ""})
                async for piece in engine.apieces(job):
                    yield chunk({"content": piece})
                    if await request.is_disconnected():
                        job.cancelled.set()
                        return
                yield chunk({}, engine.finish_reason(job))
            except RuntimeError as error:
                yield f"data: {json.dumps(RequestError(500, str(error), code='generation_failed').to_json())}\n\n"
            finally:
                job.cancelled.set()  # a no-op after the end; stops the row when the client went away
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


__all__ = ["add_api_routes", "openai_messages", "parse_request"]
