"""The generation engine behind both the API and the web chat: checks, a bounded queue, left-padded batches, streaming.

A request is checked and tokenised in the caller's thread (:meth:`Engine.prepare`: roles, empty messages, the image
count, the `<image>` marker in user text, the prompt length against the model's context), then queued
(:meth:`Engine.submit`; a full queue is a 429). One worker thread takes what is queued — waiting ``batch_window``
seconds for company after the first request — and runs up to ``max_batch`` compatible requests (same sampling
settings) as one left-padded ``model.generate`` call. Every row streams through its own
``transformers.TextIteratorStreamer`` (a fan-out streamer hands each row its tokens); a stopping criterion ends a row
at its own ``max_tokens``, at a stop string, or when its client went away, while the other rows go on.

The prompt is ``processor.apply_chat_template`` on the conversation — the chat template the checkpoint was saved with,
as `inference.generation.chat_text` renders one turn; a one-turn request with one image is exactly its string, so the greedy answer equals `inference.generation.generate_text`'s.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteriaList, TextIteratorStreamer

from .errors import RequestError

logger = logging.getLogger("serving")

ROLES = ("system", "user", "assistant")


@dataclass
class Job:
    """One queued generation: its tokenised prompt, settings, streamer and outcome."""

    input_ids: list[int]
    pixel_values: Any  # a (n_images, 3, H, W) tensor or None
    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    streamer: Any = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    completion_tokens: int = 0
    hit_eos: bool = False
    batch_size: int = 0
    stopped_by_string: bool = False

    @property
    def prompt_tokens(self) -> int:
        return len(self.input_ids)

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one `generate` call."""
        if not self.do_sample:
            return (False,)
        return (True, self.temperature, self.top_p, self.seed)


class TextAssembler:
    """Turns streamed text pieces into what the client sees: leading/trailing whitespace dropped (as
    `generate_text`'s ``.strip()``), cut at the first stop string, never emitting a piece a stop string may still eat."""

    def __init__(self, stop: list[str]):
        self.stop = [s for s in stop if s]
        self.text = ""  # everything received, left-stripped
        self.sent = 0
        self.stopped = False

    def _safe_end(self) -> int:
        end = len(self.text.rstrip())
        for s in self.stop:  # hold back a tail that may be the start of a stop string
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if s.startswith(self.text[-k:]):
                    end = min(end, len(self.text) - k)
                    break
        return max(end, self.sent)

    def add(self, piece: str) -> str:
        """Feed a piece; return the new text safe to show (empty once a stop string was seen)."""
        if self.stopped:
            return ""
        self.text = (self.text + piece).lstrip() if not self.text else self.text + piece
        cuts = [i for s in self.stop if (i := self.text.find(s)) >= 0]
        if cuts:
            self.text = self.text[: min(cuts)]
            self.stopped = True
            return self.finish()
        end = self._safe_end()
        out, self.sent = self.text[self.sent : end], end
        return out

    def finish(self) -> str:
        """The rest, trailing whitespace dropped."""
        self.text = self.text.rstrip()
        out, self.sent = self.text[self.sent :], len(self.text)
        return out


class _FanOut:
    """A `generate` streamer that hands row ``i`` of every step to ``streamers[i]`` (each a TextIteratorStreamer)."""

    def __init__(self, streamers: list[Any]):
        self.streamers = streamers

    def put(self, value: Any) -> None:
        if value.dim() == 2:  # the prompt (skipped by the row streamers: skip_prompt=True)
            for i, s in enumerate(self.streamers):
                s.put(value[i : i + 1])
        else:
            for i, s in enumerate(self.streamers):
                s.put(value[i : i + 1])

    def end(self) -> None:
        for s in self.streamers:
            s.end()


class _RowStops:
    """Per-row stopping: a row is finished at its own max_new_tokens or when its job is cancelled."""

    def __init__(self, jobs: list[Job], prompt_len: int):
        self.jobs = jobs
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        generated = input_ids.shape[1] - self.prompt_len
        flags = [generated >= j.max_new_tokens or j.cancelled.is_set() for j in self.jobs]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


class Engine:
    """Owns the model: prepares requests, queues them, batches and runs them in one worker thread."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        model_name: str = "mage",
        max_batch: int = 8,
        max_queue: int = 64,
        batch_window: float = 0.05,
        max_images: int = 1,
        default_max_tokens: int = 256,
    ):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model_name = model_name
        self.max_batch = max_batch
        self.batch_window = batch_window
        self.max_images = max_images
        self.default_max_tokens = default_max_tokens
        self.image_token = getattr(processor, "image_token", "<image>")
        self.context_length = self._context_length()
        self.padding_side = getattr(self.tokenizer, "padding_side", "right")
        if self.padding_side != "left":
            logger.warning("the tokenizer pads %s; batches are padded left for generation", self.padding_side)
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.batches: list[int] = []  # sizes of the batches run, in order (the log says the same)
        self._gate = threading.Event()
        self._gate.set()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._loop, name="mage-serve-engine", daemon=True)
        self._worker.start()

    # -- checks -------------------------------------------------------------------------------------------------
    def _context_length(self) -> int:
        config = getattr(self.model.config, "text_config", self.model.config)
        n = getattr(config, "max_position_embeddings", None) or 2048
        tokenizer_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
            n = min(n, tokenizer_max)
        return int(n)

    def check_messages(self, messages: list[dict[str, Any]]) -> list[Any]:
        """Check a conversation in the internal form (content: a list of ``{"type": "text", "text"}`` and
        ``{"type": "image", "image": PIL}``); return its images in order."""
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list", code="invalid_messages", param="messages")
        images = []
        for i, m in enumerate(messages):
            role = m.get("role")
            if role not in ROLES:
                raise RequestError(
                    400,
                    f"messages[{i}].role must be one of {list(ROLES)}, got {role!r}",
                    code="invalid_messages",
                    param=f"messages[{i}].role",
                )
            if role == "system" and i != 0:
                raise RequestError(
                    400, "a system message may only come first", code="invalid_messages", param=f"messages[{i}]"
                )
            for part in m["content"]:
                if part["type"] == "image":
                    images.append(part["image"])
                elif self.image_token in part["text"]:
                    raise RequestError(
                        400,
                        f"messages[{i}]: the text may not contain the image marker "
                        f"{self.image_token!r}; send images as image parts",
                        code="invalid_messages",
                    )
        if messages[-1]["role"] != "user":
            raise RequestError(400, "the last message must be the user's", code="invalid_messages", param="messages")
        last = messages[-1]["content"]
        if not any(p["type"] == "text" and p["text"].strip() for p in last):
            raise RequestError(
                400, "the last user message is empty: ask something", code="empty_message", param="messages"
            )
        if len(images) > self.max_images:
            raise RequestError(
                400,
                f"too many images: {len(images)} in the conversation, this server takes at most "
                f"{self.max_images} (--max-images)",
                code="too_many_images",
                param="messages",
            )
        return images

    def prompt(self, messages: list[dict[str, Any]]) -> str:
        """The chat-template string of the conversation plus the generation prompt."""
        rendered = [
            {
                "role": m["role"],
                "content": [
                    {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
                    for p in m["content"]
                ],
            }
            for m in messages
        ]
        try:
            return self.processor.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)
        except Exception as error:  # noqa: BLE001 (the template raises for what it cannot render)
            raise RequestError(
                400, f"the chat template cannot render these messages: {error}", code="invalid_messages"
            ) from None

    def prepare(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> Job:
        """Check and tokenise one request; raise :class:`RequestError` for anything wrong with it."""
        images = self.check_messages(messages)
        if max_tokens is not None and max_tokens < 1:
            raise RequestError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
        if temperature is not None and not 0 <= temperature <= 2:
            raise RequestError(400, f"temperature must be in [0, 2], got {temperature}", param="temperature")
        if top_p is not None and not 0 < top_p <= 1:
            raise RequestError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p")
        text = self.prompt(messages)
        try:
            if images:
                inputs = self.processor(images=images, text=[text], return_tensors="pt")
            else:
                inputs = self.processor(text=[text], return_tensors="pt")
        except ValueError as error:
            raise RequestError(400, f"the processor refused the request: {error}", code="invalid_messages") from None
        input_ids = inputs["input_ids"][0].tolist()
        room = self.context_length - len(input_ids)
        if room < 1:
            raise RequestError(
                400,
                f"the prompt is {len(input_ids)} tokens (images included); the model's context "
                f"is {self.context_length}",
                code="context_length_exceeded",
                param="messages",
            )
        if max_tokens is not None and max_tokens > room:
            raise RequestError(
                400,
                f"the prompt is {len(input_ids)} tokens and max_tokens is {max_tokens}; together "
                f"more than the model's context of {self.context_length}",
                code="context_length_exceeded",
                param="max_tokens",
            )
        pixel_values = inputs.get("pixel_values") if images else None
        do_sample = temperature is not None and temperature > 0
        if temperature is None:  # the checkpoint's own generation settings decide
            do_sample = bool(getattr(self.model.generation_config, "do_sample", False))
            temperature = float(getattr(self.model.generation_config, "temperature", 1.0) or 1.0)
        return Job(
            input_ids=input_ids,
            pixel_values=pixel_values,
            max_new_tokens=min(max_tokens or self.default_max_tokens, room),
            do_sample=do_sample,
            temperature=float(temperature),
            top_p=1.0 if top_p is None else float(top_p),
            stop=list(stop or []),
            seed=seed,
        )

    # -- queue --------------------------------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        """Queue `job` (a 429 `RequestError` when the queue is full) and give it its streamer."""
        if self._stop.is_set():
            raise RequestError(503, "the server is shutting down", code="shutting_down")
        job.streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise RequestError(
                429, f"the queue is full ({self.queue.maxsize} requests waiting); retry later", code="queue_full"
            ) from None
        return job

    def pieces(self, job: Job) -> Iterator[str]:
        """The job's answer as it streams, stop strings and outer whitespace applied (a blocking iterator)."""
        yield from self._stream(job, block=True)  # blocking, it never yields None

    async def apieces(self, job: Job, poll: float = 0.01) -> AsyncIterator[str]:
        """As :meth:`pieces`, for the event loop: polls the streamer instead of holding a worker thread while it
        waits (so many waiting requests never starve the thread pool that parses new ones)."""
        for out in self._stream(job, block=False):
            if out is None:
                await asyncio.sleep(poll)
            else:
                yield out

    @staticmethod
    def _stream(job: Job, block: bool) -> Iterator[str | None]:
        """The answer's pieces for :meth:`pieces` (`block`: waits for the streamer and the job's end) and
        :meth:`apieces` (not `block`: yields None where it would wait, for the caller to sleep and come back)."""
        text = TextAssembler(job.stop)
        while not text.stopped:
            try:
                piece = job.streamer.text_queue.get(block=block)
            except queue.Empty:
                yield None
                continue
            if piece is job.streamer.stop_signal:
                break
            out = text.add(piece)
            if text.stopped:
                job.cancelled.set()  # a stop string: the row ends at the next step, the rest is not shown
            if out:
                yield out
        out = text.finish()
        if out:
            yield out
        if block:
            job.done.wait()
        while not job.done.is_set():
            yield None
        if job.error:
            raise RuntimeError(job.error)
        job.stopped_by_string = text.stopped

    async def acomplete(self, job: Job) -> str:
        """The whole answer, awaited."""
        return "".join([piece async for piece in self.apieces(job)])

    def complete(self, job: Job) -> str:
        """The whole answer (blocking)."""
        return "".join(self.pieces(job))

    def finish_reason(self, job: Job) -> str:
        """OpenAI's finish_reason: "stop" (end of sequence or a stop string) or "length"."""
        if job.hit_eos or job.stopped_by_string:
            return "stop"
        return "length"

    def hold(self) -> threading.Event:
        """Pause the worker before its next batch (maintenance; tests fill the queue with it); ``.set()`` resumes."""
        self._gate.clear()
        return self._gate

    def close(self) -> None:
        """Stop the worker after the current batch; queued jobs fail with a message."""
        self._stop.set()
        self._gate.set()
        self._worker.join(timeout=30)
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            self._fail([job], "the server shut down before this request ran")

    # -- worker -------------------------------------------------------------------------------------------------
    def _collect(self, pending: deque[Job]) -> list[Job]:
        while not pending:
            if self._stop.is_set() or not self._gate.is_set():
                return []
            try:
                pending.append(self.queue.get(timeout=0.1))
            except queue.Empty:
                continue
        if not self._gate.is_set():
            return []  # held meanwhile: the job waits in `pending`
        deadline = time.monotonic() + self.batch_window
        while len(pending) < self.max_batch * 4:
            left = deadline - time.monotonic()
            try:
                pending.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        key = pending[0].batch_key()
        batch = [j for j in pending if j.batch_key() == key][: self.max_batch]
        for j in batch:
            pending.remove(j)
        return batch

    def _loop(self) -> None:
        pending: deque[Job] = deque()
        while not self._stop.is_set():
            self._gate.wait()
            if self._stop.is_set():
                break
            batch = self._collect(pending)
            if not batch:
                continue
            live = [j for j in batch if not j.cancelled.is_set()]
            for j in batch:
                if j.cancelled.is_set():
                    self._fail([j], "cancelled before it ran")
            if not live:
                continue
            try:
                self._run(live)
            except Exception as error:  # noqa: BLE001 (one bad batch must not kill the server)
                logger.exception("batch failed")
                self._fail(live, f"generation failed: {type(error).__name__}: {error}")
        for j in pending:
            self._fail([j], "the server shut down before this request ran")

    def _fail(self, jobs: list[Job], message: str) -> None:
        for j in jobs:
            j.error = message
            if j.streamer is not None:
                j.streamer.end()
            j.done.set()

    def _run(self, jobs: list[Job]) -> None:
        tokenizer = self.tokenizer
        padded = tokenizer.pad({"input_ids": [j.input_ids for j in jobs]}, padding_side="left", return_tensors="pt")
        inputs = {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}
        pixels = [j.pixel_values for j in jobs if j.pixel_values is not None]
        if pixels:
            inputs["pixel_values"] = torch.cat(pixels).to(self.model.dtype)
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        prompt_len = inputs["input_ids"].shape[1]
        first = jobs[0]
        settings: dict[str, Any] = {"do_sample": first.do_sample, "num_beams": 1}
        if first.do_sample:
            settings.update(temperature=first.temperature, top_p=first.top_p)
        else:
            settings.update(temperature=None, top_p=None, top_k=None)
        t0 = time.perf_counter()
        logger.info(
            "batch of %d request(s) %s: prompt %d tokens (left-padded), up to %d new tokens",
            len(jobs),
            [j.id for j in jobs],
            prompt_len,
            max(j.max_new_tokens for j in jobs),
        )
        self.batches.append(len(jobs))
        for j in jobs:
            j.batch_size = len(jobs)
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            if first.seed is not None:
                torch.manual_seed(first.seed)
            out = self.model.generate(
                **inputs,
                max_new_tokens=max(j.max_new_tokens for j in jobs),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                streamer=_FanOut([j.streamer for j in jobs]),
                stopping_criteria=StoppingCriteriaList([_RowStops(jobs, prompt_len)]),
                **settings,
            )
        new = out[:, prompt_len:].tolist()
        for j, row in zip(jobs, new):
            ids = row[: j.max_new_tokens]
            if tokenizer.eos_token_id in ids:
                j.hit_eos = True
                ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
            j.completion_tokens = sum(t != tokenizer.pad_token_id for t in ids)
            j.done.set()
        logger.info("batch of %d done in %.2f s", len(jobs), time.perf_counter() - t0)


__all__ = ["Engine", "Job", "TextAssembler"]
