"""Inference: batched greedy generation (left padding) or likelihood ranking, appended to a JSONL file as it goes.

The predictions file starts with a header line `{"_meta": {...settings...}}` (the settings include the model's
content hash); each further line is one finished record `{"uid", "prediction", "input", ...}`, flushed after every
batch, where `input` hashes what the model saw (question, options, image bytes: `provenance.record_key`).
A rerun with the same settings keeps the rows whose `input` still matches and predicts the rest: an interrupted run
resumes where it stopped, a row whose question or image changed (another `--data` folder, a fixed image) is predicted
again, and so is a row that failed. Other settings or another model are refused. Rows that are not kept (and a torn
last line) are removed by rewriting the file through a temporary file, so a uid never appears twice.
A record whose image cannot be decoded gets an empty prediction and an `"error"` field: it counts wrong and is counted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from inference import chat_text, encode_left_padded, greedy_answers

from .prompts import likelihood_query, question_text
from .provenance import record_key
from .records import BenchmarkFormatError, EvalRecord, blank_image

SCORINGS = ("generate", "likelihood")


@dataclass
class RunSettings:
    """What determines the predictions (stored in the file header and checked on resume)."""

    benchmark: str
    scoring: str = "generate"
    max_new_tokens: int = 16
    blank_images: bool = False
    likelihood_reduction: str = "mean"
    model: str = ""
    model_sha256: str = ""

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if self.likelihood_reduction not in ("mean", "sum"):
            raise ValueError(f"likelihood_reduction must be 'mean' or 'sum', got {self.likelihood_reduction!r}")


class SettingsMismatch(ValueError):
    """A predictions file was made with other settings or another model; the message says which and what to do."""


def _read_lines(path: str) -> tuple[dict | None, dict[str, dict], int]:
    """`(header meta, rows by uid, number of unreadable lines)` of a predictions file."""
    rows, meta, torn = {}, None, 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or ("_meta" not in row and "uid" not in row):
                torn += 1
            elif "_meta" in row:
                meta = row["_meta"]
            else:
                rows[row["uid"]] = row
    return meta, rows, torn


def _other_model(path: str, meta: dict, model_sha256: str) -> SettingsMismatch:
    return SettingsMismatch(
        f"{path} holds predictions of another model (stored {meta.get('model') or '?'}, content hash "
        f"{(meta.get('model_sha256') or 'not recorded')[:12]}; now {model_sha256[:12]}); use another --output-dir "
        "or --overwrite to start again"
    )


def _check_settings(path: str, meta: dict | None, settings: RunSettings) -> None:
    if meta is None or meta == asdict(settings):
        return
    if meta.get("model_sha256") != settings.model_sha256:
        raise _other_model(path, meta, settings.model_sha256)
    changed = {k: (meta.get(k), v) for k, v in asdict(settings).items() if meta.get(k) != v}
    raise SettingsMismatch(
        f"{path} was made with other settings {changed} (stored, requested); use another --output-dir or "
        "--overwrite to start again"
    )


def check_same_model(output_dir: str, model_sha256: str) -> None:
    """Refuse an `output_dir` whose predictions files come from another model (cheap: reads their header lines), so
    that a wrong folder is reported before a model is loaded."""
    if not os.path.isdir(output_dir):
        return
    for name in sorted(os.listdir(output_dir)):
        if not (name.startswith("predictions_") and name.endswith(".jsonl")):
            continue
        path = os.path.join(output_dir, name)
        with open(path, encoding="utf-8") as handle:
            try:
                meta = json.loads(handle.readline()).get("_meta")
            except (ValueError, AttributeError):
                continue  # not a header: reusable_rows rewrites the file under the right settings
        if isinstance(meta, dict) and meta.get("model_sha256") != model_sha256:
            raise _other_model(path, meta, model_sha256)


def _write_atomically(path: str, meta: dict, rows: Sequence[dict]) -> None:
    temporary = f"{path}.partial"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"_meta": meta}) + "\n")
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def reusable_rows(path: str, settings: RunSettings, keys: dict[str, str]) -> tuple[dict[str, dict], dict[str, int]]:
    """The rows of `path` that can be kept for records `{uid: record_key}`: written with these settings, for the
    same input, and without an error. Rewrites the file to hold only them (and rows of uids outside `keys`, e.g.
    beyond a `--limit`, when still valid) whenever anything is dropped. Returns `(kept rows, counts of dropped)`."""
    counts = {"failed": 0, "stale": 0, "torn": 0}
    if not os.path.isfile(path):
        return {}, counts
    meta, rows, counts["torn"] = _read_lines(path)
    _check_settings(path, meta, settings)
    kept = {}
    for uid, row in rows.items():
        if "error" in row:
            counts["failed"] += 1
        elif uid in keys and row.get("input") != keys[uid]:
            counts["stale"] += 1
        else:
            kept[uid] = row
    if any(counts.values()) or meta is None:
        _write_atomically(path, asdict(settings), list(kept.values()))
    return kept, counts


def _images(records: Sequence[EvalRecord], blank: bool):
    images, errors = [], []
    for record in records:
        try:
            images.append(blank_image() if blank else record.load_image())
            errors.append(None)
        except BenchmarkFormatError as error:
            images.append(blank_image())
            errors.append(str(error))
    return images, errors


def generate_batch(model, processor, records: Sequence[EvalRecord], max_new_tokens: int, blank: bool = False):
    """Greedy answers for `records` (one left-padded batch); returns `(texts, image errors)`."""
    images, errors = _images(records, blank)
    texts = [chat_text(processor, question_text(r)) for r in records]
    answers = greedy_answers(model, processor, texts, images, max_new_tokens)
    return [("" if e else a) for a, e in zip(answers, errors)], errors


def _prompt_ids(processor, prompts: list[str]) -> list[list[int]]:
    expanded = [p.replace(processor.image_token, processor.image_token * processor.num_image_tokens) for p in prompts]
    return processor.tokenizer(expanded)["input_ids"]


def _continuation_count(full: list[int], prompt: list[int]) -> int:
    """Tokens of `full` past its longest common prefix with `prompt` (a merge across the boundary moves it back)."""
    common = 0
    for a, b in zip(full, prompt):
        if a != b:
            break
        common += 1
    return max(1, len(full) - common)


def continuation_logprobs(
    model, processor, prompts: list[str], continuations: list[str], images: list, separator: str = " ", greedy=False
):
    """Sum and count of log-probabilities of each continuation after its prompt: lists `(sums, counts)`.

    The continuation is `separator + text` after the prompt (which ends with "ASSISTANT:"); its tokens are those of
    `prompt + separator + text` past the prompt's own tokens. Sequences are left-padded with explicit position ids.
    With `greedy=True` a third list says whether each continuation is the greedy one (lmms-eval's `is_greedy`).
    """
    full = [p + separator + c for p, c in zip(prompts, continuations)]
    inputs = encode_left_padded(model, processor, full, images)
    prompt_ids = _prompt_ids(processor, prompts)
    mask = inputs["attention_mask"]
    rows = [ids[m.bool()].tolist() for ids, m in zip(inputs["input_ids"], mask)]
    counts = [_continuation_count(row, p) for row, p in zip(rows, prompt_ids)]
    keep = max(counts) + 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits = _forward_shared_images(model, inputs, images, position_ids, keep).float()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t+1
    targets = inputs["input_ids"][:, -keep + 1 :]
    token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N, keep-1)
    sums = [float(token_lp[i, -c:].sum()) for i, c in enumerate(counts)]
    if not greedy:
        return sums, counts
    best = logprobs.argmax(-1)
    is_greedy = [bool((best[i, -c:] == targets[i, -c:]).all()) for i, c in enumerate(counts)]
    return sums, counts, is_greedy


def _forward_shared_images(model, inputs, images: list, position_ids, keep: int):
    """Logits of the last `keep` positions; each distinct image (by identity) goes through the tower + IAN once.

    Likelihood ranking repeats one image per option: encoding it once and scattering its tokens into every sequence
    gives the same numbers as the plain forward (the image path does not depend on the text) at a fraction of the
    cost. Models without `model.model.get_image_features` take the plain path.
    """
    inner = getattr(model, "model", None)
    first: dict[int, int] = {}
    owner = [first.setdefault(id(image), i) for i, image in enumerate(images)]
    if not hasattr(inner, "get_image_features") or len(first) == len(images):
        return model(**inputs, position_ids=position_ids, logits_to_keep=keep).logits
    unique = sorted(first.values())
    features = inner.get_image_features(
        inputs["pixel_values"][unique], return_dict=True
    ).pooler_output  # (num_unique, Q, D_l)
    slot = {index: k for k, index in enumerate(unique)}
    features = features[[slot[o] for o in owner]]
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    placeholder = (inputs["input_ids"] == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(placeholder, features.to(embeds.dtype))
    return model(
        inputs_embeds=embeds, attention_mask=inputs["attention_mask"], position_ids=position_ids, logits_to_keep=keep
    ).logits


def rank_batch(model, processor, records: Sequence[EvalRecord], blank: bool = False, reduction: str = "mean"):
    """Likelihood ranking: for each record the letter of the best continuation, its scores, image errors."""
    images, errors = _images(records, blank)
    prompts, conts, owners, imgs = [], [], [], []
    queries = [likelihood_query(r) for r in records]
    for i, (text, continuations, _) in enumerate(queries):
        prompt = chat_text(processor, text)
        for c in continuations:
            prompts.append(prompt)
            conts.append(c)
            owners.append(i)
            imgs.append(images[i])
    sums, counts = continuation_logprobs(model, processor, prompts, conts, imgs)
    scores: list[list[float]] = [[] for _ in records]
    for owner, s, n in zip(owners, sums, counts):
        scores[owner].append(s / n if reduction == "mean" else s)
    letters = []
    for (_, _, keys), sc, error in zip(queries, scores, errors):
        letters.append("" if error else keys[max(range(len(sc)), key=sc.__getitem__)])
    return letters, scores, errors


def run_predictions(
    model,
    processor,
    records: Sequence[EvalRecord],
    predictions_path: str,
    settings: RunSettings,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[dict[str, dict], dict]:
    """Predict every record not yet in `predictions_path`; returns `(rows by uid, timing)`.

    Timing: `{"new_samples", "seconds", "samples_per_second", "resumed", "retried_failed", "redone_changed_input"}`
    for the work done in this call (see the module docstring for what is kept).
    """
    keys = {r.uid: record_key(r) for r in records}
    done, dropped = reusable_rows(predictions_path, settings, keys)
    pending = [r for r in records if r.uid not in done]
    os.makedirs(os.path.dirname(os.path.abspath(predictions_path)), exist_ok=True)
    if not os.path.isfile(predictions_path) or os.path.getsize(predictions_path) == 0:
        _write_atomically(predictions_path, asdict(settings), [])
    start = time.perf_counter()
    bar = tqdm(total=len(pending), unit="sample", desc=settings.benchmark, disable=not progress)
    with open(predictions_path, "a", encoding="utf-8") as handle:
        for begin in range(0, len(pending), batch_size):
            batch = pending[begin : begin + batch_size]
            rows = _predict_rows(model, processor, batch, settings)
            for row in rows:
                row["input"] = keys[row["uid"]]
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                done[row["uid"]] = row
            handle.flush()
            bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - start
    timing = {
        "new_samples": len(pending),
        "resumed": len(records) - len(pending),
        "retried_failed": dropped["failed"],
        "redone_changed_input": dropped["stale"],
        "seconds": seconds,
        "samples_per_second": len(pending) / seconds if pending and seconds > 0 else None,
    }
    return done, timing


def _predict_rows(model, processor, batch: Sequence[EvalRecord], settings: RunSettings) -> list[dict]:
    if settings.scoring == "likelihood" and batch[0].benchmark in ("seed", "mmbench", "mmbench_cn"):
        letters, scores, errors = rank_batch(
            model, processor, batch, settings.blank_images, settings.likelihood_reduction
        )
        extras = [{"scores": s} for s in scores]
        answers = letters
    else:
        answers, errors = generate_batch(model, processor, batch, settings.max_new_tokens, settings.blank_images)
        extras = [{} for _ in batch]
    rows = []
    for record, answer, error, extra in zip(batch, answers, errors, extras):
        row = {"uid": record.uid, "prediction": answer, "answer": record.answer, "subtask": record.subtask, **extra}
        if error:
            row["error"] = error
        rows.append(row)
    return rows


__all__ = [
    "SCORINGS",
    "RunSettings",
    "SettingsMismatch",
    "check_same_model",
    "continuation_logprobs",
    "generate_batch",
    "rank_batch",
    "reusable_rows",
    "run_predictions",
]
