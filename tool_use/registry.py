"""The tool registry: what each task name runs, built lazily.

A :class:`Tool` declares its task (name, input and output modalities) and a zero-argument ``build`` that returns a
callable ``fn(**args) -> output``; the callable is built on first use and cached. Arguments arrive resolved — text as
``str``, images as RGB ``PIL.Image``, audio as ``{"array", "sampling_rate"}`` — and the output must be of the
declared modality (raw transformers-pipeline outputs are normalised by :func:`pipeline_tool`).

Adding a tool takes a few lines::

    >>> registry = ToolRegistry()
    >>> @registry.tool("shout", inputs={"text": "text"}, output="text")
    ... def shout(text):
    ...     return text.upper() + "!"
    >>> registry.run("shout", text="hi")
    'HI!'

Default tools come from a YAML file (:func:`registry_from_config`)::

    tools:
      image-classification: {model: google/vit-base-patch16-224}
      summarization: {model: facebook/bart-large-cnn}
      translation: {model: Helsinki-NLP/opus-mt-en-fr}
      text-to-speech: {model: facebook/mms-tts-eng}
      automatic-speech-recognition: {model: openai/whisper-tiny}
      visual-question-answering: {model: PATH_OR_ID, pipeline: image-text-to-text}
    mage: path/to/mage-checkpoint      # image-text-to-text, and image-to-text / VQA unless configured above
    shapeworld: true                   # offline text-to-image renderer
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inference import generation
from shapeworld.plan_schema import DEFAULT_TASKS, MODALITIES, TaskSpec

from .media import check_modality
from .shapeworld_render import render_description

#: Prompts used when a task is served by a generic text-generation / image-text-to-text model.
TEXT_PROMPTS: dict[str, str] = {
    "summarization": "Summarize the following text.\n{text}\nSummary:",
    "translation": "Translate the following text to {target_language}.\n{text}\nTranslation:",
    "image-to-text": "Describe the image.",
}

#: transformers pipeline task used for each plan task when the config does not say (first one available wins).
PIPELINE_TASKS: dict[str, tuple[str, ...]] = {
    "image-to-text": ("image-to-text", "image-text-to-text"),
    "text-to-speech": ("text-to-audio",),
    "automatic-speech-recognition": ("automatic-speech-recognition",),
    "visual-question-answering": ("visual-question-answering", "image-text-to-text"),
    "image-classification": ("image-classification",),
    "object-detection": ("object-detection",),
    "translation": ("translation", "text-generation"),
    "summarization": ("summarization", "text-generation"),
    "image-text-to-text": ("image-text-to-text",),
}


@dataclass
class Tool:
    """One runnable tool: ``spec`` says its task and modalities, ``build()`` returns ``fn(**args) -> output``."""

    spec: TaskSpec
    build: Callable[[], Callable[..., Any]]
    source: str = ""
    _fn: Callable[..., Any] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def get(self) -> Callable[..., Any]:
        """The built callable (built once, thread-safe)."""
        with self._lock:
            if self._fn is None:
                self._fn = self.build()
            return self._fn

    def __call__(self, **args: Any) -> Any:
        out = self.get()(**args)
        problem = check_modality(out, self.spec.output)
        if problem is not None:
            raise TypeError(f"tool {self.name!r} ({self.source or 'custom'}) returned the wrong output: {problem}")
        return out


class ToolRegistry:
    """Task name → :class:`Tool`. ``registry.tasks`` is what plans are validated against."""

    def __init__(self, tools: list[Tool] | None = None):
        self._tools: dict[str, Tool] = {}
        for tool in tools or []:
            self.add(tool)

    def add(self, tool: Tool) -> Tool:
        """Add (or replace) the tool for ``tool.name``."""
        self._tools[tool.name] = tool
        return tool

    def update(self, other: ToolRegistry) -> ToolRegistry:
        """Add every tool of ``other`` (its tools win); returns self."""
        for tool in other._tools.values():
            self.add(tool)
        return self

    def register(
        self,
        name: str,
        fn: Callable[..., Any] | None = None,
        *,
        inputs: dict[str, str] | None = None,
        output: str | None = None,
        build: Callable[[], Callable[..., Any]] | None = None,
        description: str = "",
    ) -> Tool:
        """Register ``fn`` (or a lazy ``build``) for task ``name``; modalities default to :data:`DEFAULT_TASKS`."""
        if (fn is None) == (build is None):
            raise ValueError(f"register({name!r}): give exactly one of fn or build")
        default = DEFAULT_TASKS.get(name)
        if (inputs is None or output is None) and default is None:
            raise ValueError(f"register({name!r}): not a default task, so inputs= and output= are required")
        spec = TaskSpec(
            name,
            dict(inputs if inputs is not None else default.inputs),
            output if output is not None else default.output,
            description or (default.description if default else ""),
        )
        return self.add(Tool(spec, build if build is not None else (lambda: fn), source=getattr(fn, "__name__", "")))

    def tool(self, name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of :meth:`register`."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.register(name, fn, **kwargs)
            return fn

        return deco

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        return {name: tool.spec for name, tool in self._tools.items()}

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __getitem__(self, name: str) -> Tool:
        if name not in self._tools:
            raise KeyError(f"no tool for task {name!r}; registered: {sorted(self._tools)}")
        return self._tools[name]

    def run(self, name: str, **args: Any) -> Any:
        return self[name](**args)


# --------------------------------------------------------------------------------------------- output normalising
def _text_of(raw: Any) -> str:
    """The text in a transformers pipeline output (generated/summary/translation text, answer, label, detections)."""
    if isinstance(raw, str):
        return raw.strip()
    if isinstance(raw, list):
        if raw and all(isinstance(r, dict) and "box" in r for r in raw):  # object detection
            return "; ".join(
                f"{r['label']} ({r.get('score', 0):.2f}) at "
                + ",".join(str(round(float(r["box"][k]))) for k in ("xmin", "ymin", "xmax", "ymax"))
                for r in raw
            )
        if not raw:
            return ""
        return _text_of(raw[0])
    if isinstance(raw, dict):
        for key in ("generated_text", "summary_text", "translation_text", "text", "answer", "label", "content"):
            if key in raw:
                value = raw[key]
                if isinstance(value, list):  # chat output: the last message's content
                    return _text_of(value[-1]) if value else ""
                return str(value).strip()
    raise TypeError(f"cannot read text from a pipeline output of type {type(raw).__name__}: {str(raw)[:80]}")


def _audio_of(raw: Any) -> dict[str, Any]:
    if isinstance(raw, list):
        raw = raw[0]
    if isinstance(raw, dict) and "audio" in raw and "sampling_rate" in raw:
        return {
            "array": np.asarray(raw["audio"], dtype=np.float32).reshape(-1),
            "sampling_rate": int(raw["sampling_rate"]),
        }
    raise TypeError(f"cannot read audio from a pipeline output: {str(raw)[:80]}")


def _available_pipeline_tasks() -> set[str]:
    from transformers.pipelines import SUPPORTED_TASKS  # heavy

    return set(SUPPORTED_TASKS)


def pick_pipeline_task(task: str, requested: str | None = None) -> str:
    """The transformers pipeline task that serves plan task ``task`` in this transformers version."""
    available = _available_pipeline_tasks()
    if requested:
        return requested
    for candidate in PIPELINE_TASKS.get(task, (task,)):
        if candidate in available:
            return candidate
    raise ValueError(
        f"no transformers pipeline serves {task!r} here (tried {PIPELINE_TASKS.get(task, (task,))}); "
        f"set `pipeline:` in the tool config or register a custom tool"
    )


def pipeline_tool(
    task: str,
    model: str,
    *,
    pipeline_task: str | None = None,
    spec: TaskSpec | None = None,
    generate_kwargs: dict[str, Any] | None = None,
    prompt: str | None = None,
    target_language: str = "French",
    **pipeline_kwargs: Any,
) -> Tool:
    """A :class:`Tool` for plan task ``task`` backed by ``transformers.pipeline(pipeline_task, model=model)``.

    The pipeline is created on first call. ``pipeline_task`` defaults to the first of :data:`PIPELINE_TASKS` this
    transformers version has (e.g. on 5.x, summarization runs on a ``text-generation`` model with the prompt from
    :data:`TEXT_PROMPTS`). ``model`` may be a hub id or a local folder; nothing is downloaded until the first call.
    """
    spec = spec or DEFAULT_TASKS.get(task)
    if spec is None:
        raise ValueError(f"pipeline_tool({task!r}): not a default task; pass spec=TaskSpec(...)")
    gen = dict(generate_kwargs or {"max_new_tokens": 64})

    def build() -> Callable[..., Any]:
        from transformers import pipeline  # heavy

        hf_task = pick_pipeline_task(task, pipeline_task)
        pipe = pipeline(hf_task, model=model, **pipeline_kwargs)
        template = prompt or TEXT_PROMPTS.get(task, "{text}")

        def run(**args: Any) -> Any:
            if hf_task == "text-generation":
                text = template.format(target_language=target_language, **args)
                raw = pipe(text, return_full_text=False, **gen)
            elif hf_task in ("summarization", "translation") or hf_task.startswith("translation"):
                raw = pipe(args["text"], **gen)
            elif hf_task == "image-text-to-text":
                question = args.get("text") or template.format(**{k: v for k, v in args.items() if k != "image"})
                messages = [
                    {
                        "role": "user",
                        "content": [{"type": "image", "image": args["image"]}, {"type": "text", "text": question}],
                    }
                ]
                raw = pipe(text=messages, return_full_text=False, **gen)
            elif hf_task == "visual-question-answering":
                raw = pipe(image=args["image"], question=args["text"])
            elif hf_task == "automatic-speech-recognition":
                raw = pipe(dict(raw=args["audio"]["array"], sampling_rate=args["audio"]["sampling_rate"]))
            elif hf_task in ("image-classification", "object-detection", "image-to-text"):
                raw = pipe(args["image"])
            else:  # text-to-audio and any single-input pipeline
                raw = pipe(*args.values())
            if spec.output == "text":
                return _text_of(raw)
            if spec.output == "audio":
                return _audio_of(raw)
            return raw

        return run

    return Tool(spec, build, source=f"pipeline:{pipeline_task or task}:{model}")


def mage_tool(
    model: str | Path | None = None,
    *,
    model_and_processor: tuple[Any, Any] | None = None,
    task: str = "image-text-to-text",
    max_new_tokens: int = 64,
    default_question: str = "Describe the image.",
) -> Tool:
    """MAGE itself as an image+text → text tool (``processor.apply_chat_template`` + ``model.generate``, greedy).

    Give a checkpoint folder ``model`` (loaded on first call) or an already built ``(model, processor)`` pair.
    For ``task="image-to-text"`` the question is ``default_question``.
    """
    if (model is None) == (model_and_processor is None):
        raise ValueError("mage_tool: give exactly one of model= or model_and_processor=")
    spec = DEFAULT_TASKS[task]

    def build() -> Callable[..., Any]:
        mdl, proc = model_and_processor if model_and_processor is not None else _load_mage_shared(str(model))
        lock = _MODEL_LOCKS.setdefault(id(mdl), threading.Lock())

        def run(image: Any, text: str | None = None) -> str:
            with lock:  # one generate at a time per model: parallel plan steps share it
                return generation.generate_text(
                    mdl, proc, text or default_question, image=image, max_new_tokens=max_new_tokens
                )

        return run

    return Tool(spec, build, source=f"mage:{model or 'in-memory'}")


_MAGE_CACHE: dict[str, tuple[Any, Any]] = {}
_MODEL_LOCKS: dict[int, threading.Lock] = {}
_MAGE_LOCK = threading.Lock()


def _load_mage_shared(path: str) -> tuple[Any, Any]:
    """One loaded copy per checkpoint for all MAGE tools (image-to-text, VQA, image-text-to-text)."""
    with _MAGE_LOCK:
        if path not in _MAGE_CACHE:
            _MAGE_CACHE[path] = load_mage(path)
        return _MAGE_CACHE[path]


def load_mage(path: str | Path) -> tuple[Any, Any]:
    """Load a MAGE checkpoint folder as ``(model.eval(), processor)`` with the project's classes."""
    from transformers import AutoModelForImageTextToText  # heavy

    import modeling_mage  # heavy  # noqa: F401  (registers the Auto classes)
    from processing_mage import MageProcessor  # heavy

    model = AutoModelForImageTextToText.from_pretrained(str(path))
    processor = MageProcessor.from_pretrained(str(path))
    return model.eval(), processor


def shapeworld_tool() -> Tool:
    """The offline text-to-image tool: ShapeWorld draws the scene a description names."""

    def build() -> Callable[..., Any]:
        return lambda text: render_description(text)

    return Tool(DEFAULT_TASKS["text-to-image"], build, source="shapeworld")


def registry_from_config(config: dict[str, Any] | str | Path, *, base_dir: str | Path | None = None) -> ToolRegistry:
    """Build a :class:`ToolRegistry` from a dict or YAML file (format in the module docstring).

    ``tools.<task>`` entries take ``model`` (required), ``pipeline`` (transformers task), ``prompt``,
    ``target_language``, ``generate_kwargs`` and any other ``transformers.pipeline`` keyword; a task that is not a
    default one also needs ``inputs`` and ``output``. Relative local paths resolve against the YAML's folder.
    Unknown top-level keys are errors naming the allowed ones.
    """
    if not isinstance(config, dict):
        path = Path(config)
        base_dir = base_dir or path.parent
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise ValueError(f"{path}: cannot read the tool config ({error.strerror or error})") from error
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(f"{path}:{where}: not valid YAML ({problem})") from error
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a mapping with keys tools/mage/shapeworld, got {type(config).__name__}")
    allowed = {"tools", "mage", "shapeworld", "mage_max_new_tokens"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"tool config: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    base = Path(base_dir) if base_dir else None

    def local(p: str, key: str) -> str:
        if base is not None and not Path(p).is_absolute() and (base / p).exists():
            return str((base / p).resolve())
        # A Hub id is `name` or `org/name`; anything else is a local path, and it must exist before a model loads.
        path_like = Path(p).is_absolute() or p.startswith((".", "~")) or len(Path(p).parts) > 2
        if path_like and not Path(p).expanduser().exists():
            raise ValueError(f"tool config: {key}: local model {p!r} does not exist")
        return p

    registry = ToolRegistry()
    if config.get("shapeworld"):
        registry.add(shapeworld_tool())
    if config.get("mage"):
        mage_path = local(str(config["mage"]), "mage")
        max_new = int(config.get("mage_max_new_tokens", 64))
        for task in ("image-text-to-text", "image-to-text", "visual-question-answering"):
            registry.add(mage_tool(mage_path, task=task, max_new_tokens=max_new))
    for task, entry in (config.get("tools") or {}).items():
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ValueError(f"tool config: tools.{task} needs a `model:` (hub id or local folder), got {entry!r}")
        entry = dict(entry)
        spec = None
        if "inputs" in entry or "output" in entry or task not in DEFAULT_TASKS:
            inputs, output = entry.pop("inputs", None), entry.pop("output", None)
            if not isinstance(inputs, dict) or output not in MODALITIES:
                raise ValueError(
                    f"tool config: tools.{task} is not a default task; give inputs: {{arg: modality}} "
                    f"and output: one of {MODALITIES}"
                )
            spec = TaskSpec(task, inputs, output)
        model = local(str(entry.pop("model")), f"tools.{task}.model")
        registry.add(pipeline_tool(task, model, pipeline_task=entry.pop("pipeline", None), spec=spec, **entry))
    return registry


__all__ = [
    "PIPELINE_TASKS",
    "TEXT_PROMPTS",
    "Tool",
    "ToolRegistry",
    "load_mage",
    "mage_tool",
    "pick_pipeline_task",
    "pipeline_tool",
    "registry_from_config",
    "shapeworld_tool",
]
