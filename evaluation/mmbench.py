r"""MMBench (EN/CN): TSV loader with base64 images, LLaVA-1.5's prompt, CircularEval and rule-based answer extraction.

Answer extraction under rule set `official` (the default): VLMEvalKit's current `can_infer`
(`vlmeval/utils/matching_util.py` at the commit in `official_rules`, `VERBOSE` unset): (1) refusals listed there → "Z"
(wrong); (2) replace `.()[],:;!*#{}` by spaces, split on whitespace; a single option letter among the tokens is the
answer only if its first occurrence is among the last four tokens; no letter but a "Z" token → "Z"; (3) the regex
`(?i)(correct\s+)?answer\s+is\s+\**([ABCD])\**` on the raw text (no word boundary: "The answer is cherry" → C);
(4) option text: the one option whose lower-cased text occurs in the lower-cased answer, unless the answer is longer
than twice the options' total length. Rule sets `lenient`/`vlmevalkit-2024` use the 2024 `can_infer` (no last-four
test, no regex, no length limit); `vlmevalkit-2024-verbose` adds the `VERBOSE=1` reading of a lone "A" (an article).
What no rule resolves counts wrong (no API judge, never a random letter) and is counted.

CircularEval (VLMEvalKit `mcq_circular_eval`, exact matching): a question is a hit only if every row of its group
resolves to that row's answer. Under `official`, a group without its original-order row (`index == index % 1e6`) is
skipped, as VLMEvalKit does (counted in `groups_without_original`); `lenient` scores it. If the TSV already holds the
circular copies (indices ≥ 1,000,000, as VLMEvalKit's files), they are grouped by `index % 1,000,000`; otherwise the
loader makes the rotations itself like LLaVA's `model_vqa_mmbench.py --all-rounds` (round r shows the options
shifted left by r). Overall = mean over questions (groups); per category likewise (the original row's category).
"""

from __future__ import annotations

import base64
import binascii
import csv
import os
import string
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping

from . import official_rules
from .records import BenchmarkFormatError, EvalRecord, LoadedBenchmark, skip_bad_row

RULES = official_rules.RULE_SETS
DEFAULT_RULES = official_rules.DEFAULT_RULES
CIRCULAR_OFFSET = 1_000_000
REQUIRED = ("index", "question", "answer", "image")
LAYOUT = "MMBench layout: a .tsv with header index, question, hint, A, B, C, D, answer, category, image (base64), ..."
SUFFIX = {
    "mmbench": "\nAnswer with the option's letter from the given choices directly.",
    "mmbench_cn": "\n请直接回答选项字母。",
}
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def _missing(value: str | None) -> bool:
    return value is None or value.strip() in ("", "nan", "NaN", "None")


def find_tsv(path: str, benchmark: str) -> str:
    """The TSV for `benchmark` ("mmbench" or "mmbench_cn"): `path` itself, or the one matching file in folder `path`."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise BenchmarkFormatError(f"MMBench data path {path!r} does not exist; expected {LAYOUT}")
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(".tsv"))
    want_cn = benchmark == "mmbench_cn"
    matches = [n for n in names if ("_cn" in n.lower() or n.lower().startswith("cn")) == want_cn]
    if len(matches) != 1:
        raise BenchmarkFormatError(
            f"expected exactly one {'Chinese (*_cn*)' if want_cn else 'English'} MMBench .tsv in {path!r}, found "
            f"{matches or names or 'none'}; pass the file itself with --data"
        )
    return os.path.join(path, matches[0])


def load_mmbench(path: str, benchmark: str = "mmbench", circular: bool = True, strict: bool = True) -> LoadedBenchmark:
    """MMBench rows as records; with `circular`, every rotation of each question (see module docstring)."""
    tsv = find_tsv(path, benchmark)
    csv.field_size_limit(sys.maxsize)
    with open(tsv, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        header = reader.fieldnames or []
        absent = [k for k in REQUIRED if k not in header]
        if absent:
            raise BenchmarkFormatError(f"{tsv}:1: header lacks column(s) {absent}; expected {LAYOUT}")
        letters = [c for c in header if len(c) == 1 and c in string.ascii_uppercase]
        rows = [(reader.line_num, row) for row in reader]
    images = {row["index"].strip(): row["image"] for _, row in rows if not _missing(row.get("image"))}
    has_copies = any(_int(row["index"]) >= CIRCULAR_OFFSET for _, row in rows if _int(row["index"]) is not None)
    records, skipped = [], []
    for line, row in rows:
        source = f"{tsv}:{line}"
        with skip_bad_row(strict, skipped):
            records.extend(_row_records(row, letters, images, source, benchmark, circular and not has_copies))
    layout = "mmbench-tsv" + ("-circular-copies" if has_copies else "-rotated" if circular else "")
    return LoadedBenchmark(benchmark, records, layout=layout, skipped=skipped)


def _int(value: str) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _image_bytes(value: str, images: dict[str, str], source: str) -> bytes:
    if len(value) <= 64 and value.strip().isdigit():  # VLMEvalKit stores repeated images as the index of a row
        if value.strip() not in images or len(images[value.strip()]) <= 64:
            raise BenchmarkFormatError(f"{source}: field 'image' refers to row {value!r}, which has no image")
        value = images[value.strip()]
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as error:
        raise BenchmarkFormatError(f"{source}: field 'image' is not base64 ({error})") from error


def _row_records(row: dict, letters: list[str], images: dict, source: str, benchmark: str, rotate: bool):
    index = _int(row.get("index", ""))
    if index is None:
        raise BenchmarkFormatError(f"{source}: field 'index' must be an integer, got {row.get('index')!r}")
    if _missing(row.get("image")):
        raise BenchmarkFormatError(f"{source}: field 'image' is empty")
    options = {c: row[c].strip() for c in letters if not _missing(row.get(c))}
    answer = (row.get("answer") or "").strip()
    if len(options) < 2:
        raise BenchmarkFormatError(
            f"{source}: needs at least two options among columns {letters}, found {list(options)}"
        )
    if answer not in options:
        raise BenchmarkFormatError(f"{source}: field 'answer' must be one of {list(options)}, got {answer!r}")
    image = _image_bytes(row["image"], images, source)
    hint = None if _missing(row.get("hint")) else row["hint"]
    extra = {"l2-category": (row.get("l2-category") or "").strip(), "index": index}
    category = (row.get("category") or "").strip() or "unknown"
    common = dict(
        subtask=category,
        image_bytes=image,
        image_id=str(index % CIRCULAR_OFFSET),
        hint=hint,
        group=str(index % CIRCULAR_OFFSET),
        source=source,
        extra=extra,
    )
    if not rotate:
        return [
            EvalRecord(
                benchmark,
                str(index),
                row["question"],
                answer,
                options=options,
                round=index // CIRCULAR_OFFSET,
                **common,
            )
        ]
    return [
        EvalRecord(benchmark, f"{index}@r{r}", row["question"], new_answer, options=rotated, round=r, **common)
        for r, (rotated, new_answer) in enumerate(circular_rotations(options, answer))
    ]


def circular_rotations(options: Mapping[str, str], answer: str) -> list[tuple[dict[str, str], str]]:
    """CircularEval's copies of one question: round r shows the option texts shifted left by r under the same
    letters (LLaVA's `--all-rounds`); each with the letter the correct text then sits at."""
    texts, keys = list(options.values()), list(options)
    return [
        (dict(zip(keys, texts[r:] + texts[:r])), keys[(keys.index(answer) - r) % len(keys)]) for r in range(len(texts))
    ]


def build_prompt(record: EvalRecord, language: str | None = None) -> str:
    """LLaVA-1.5's `model_vqa_mmbench.py`: hint + question + "\\nA. …" per option + the answer instruction."""
    question = record.question if record.hint is None else record.hint + "\n" + record.question
    for letter, text in record.options.items():
        question = question + "\n" + letter + ". " + text
    return question + SUFFIX[language or record.benchmark]


def can_infer_option(answer: str, choices: Mapping[str, str], verbose: bool = False) -> str | None:
    """VLMEvalKit's 2024 letter rule; returns a letter, "Z" (refusal) or None."""
    if any(err in answer for err in REFUSALS):
        return "Z"
    splits = official_rules.option_tokens(answer)
    count = sum(1 for c in choices if c in splits)
    if count == 1:
        if verbose and "A" in splits and len(splits) > 3:
            return None
        return next(c for c in choices if c in splits)
    if count == 0 and ("Z" in splits or "" in splits):
        return "Z"
    return None


def can_infer_text(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit's 2024 text rule: the one option whose lower-cased text occurs in the lower-cased answer."""
    low = answer.lower()
    candidates = [k for k, v in choices.items() if str(v).lower() in low]
    return candidates[0] if len(candidates) == 1 else None


def extract_choice(answer: str, choices: Mapping[str, str], rules: str = DEFAULT_RULES) -> str | None:
    """The chosen letter under rule set `rules` (see module docstring), "Z" for a refusal, None when unresolved."""
    official_rules.check_rules(rules)
    answer = str(answer)
    if rules == "official":
        return official_rules.vlmevalkit_can_infer(answer, choices)
    verbose = rules == "vlmevalkit-2024-verbose"
    return can_infer_option(answer, choices, verbose=verbose) or can_infer_text(answer, choices)


def _lmms_eval_groups(records: list[EvalRecord], predictions: Mapping[str, str]) -> dict:
    """lmms-eval's MMBench reading: its prefetch rules; its data holds no circular copies, so rows the loader rotated
    are read in the original order only. A group its rules leave undecided goes to its GPT judge: counted wrong here
    and in `judge_groups`, so `accuracy` is a lower bound of lmms-eval's number."""
    groups: dict[str, list[EvalRecord]] = defaultdict(list)
    for record in records:
        if "@r" in record.uid and record.round != 0:
            continue
        groups[record.group].append(record)
    hits = judge = 0
    counted = 0
    for group in groups.values():
        if not any(r.round == 0 for r in group):
            continue
        counted += 1
        choices = [official_rules.lmms_eval_can_infer(predictions[r.uid], r.options) for r in group]
        if any(c is not None and c != r.answer for c, r in zip(choices, group)):
            continue
        if all(c is not None for c in choices):
            hits += 1
        else:
            judge += 1
    return {
        "accuracy": 100 * hits / counted if counted else 0.0,
        "questions": counted,
        "judge_groups": judge,
        "circular": not any("@r" in r.uid for r in records),
    }


def score(records: Iterable[EvalRecord], predictions: Mapping[str, str], rules: str = DEFAULT_RULES) -> dict:
    """CircularEval accuracy (percent) overall, per category and per l2-category, plus round-0-only accuracy.

    `predictions` maps uid → generated text, or → a letter for likelihood-ranked runs (a letter passes the rules).
    Under `official`, groups without their original-order row are skipped (VLMEvalKit `mcq_circular_eval`).
    """
    official_rules.check_rules(rules)
    records = list(records)
    groups: dict[str, list[bool]] = defaultdict(list)
    first_round: dict[str, bool] = {}
    category, l2 = {}, {}
    unresolved = refused = 0
    for record in records:
        if record.uid not in predictions:
            raise KeyError(f"no prediction for MMBench question {record.uid!r} ({record.source})")
        choice = extract_choice(predictions[record.uid], record.options, rules)
        unresolved += choice is None
        refused += choice == "Z"
        groups[record.group].append(choice == record.answer)
        if record.round == 0:
            first_round[record.group] = choice == record.answer
            category[record.group] = record.subtask
            l2[record.group] = record.extra.get("l2-category", "")
        else:
            category.setdefault(record.group, record.subtask)
            l2.setdefault(record.group, record.extra.get("l2-category", ""))
    without_original = [g for g in groups if g not in first_round]
    if rules == "official":
        groups = {g: v for g, v in groups.items() if g in first_round}
    hits = {g: all(v) for g, v in groups.items()}

    def _mean_by(names: dict[str, str]) -> dict[str, float]:
        buckets = defaultdict(list)
        for g, hit in hits.items():
            buckets[names[g]].append(hit)
        return {k: 100 * sum(v) / len(v) for k, v in sorted(buckets.items()) if k}

    return {
        "circular_accuracy": 100 * sum(hits.values()) / len(hits) if hits else 0.0,
        "round0_accuracy": 100 * sum(first_round.values()) / len(first_round) if first_round else 0.0,
        "questions": len(hits),
        "prompts": sum(len(v) for v in groups.values()),
        "unresolved_answers": unresolved,
        "refusals": refused,
        "groups_without_original": len(without_original),
        "extraction_rules": rules,
        "rules": official_rules.describe(rules, records[0].benchmark if records else "mmbench"),
        "categories": _mean_by(category),
        "l2_categories": _mean_by(l2),
        "lmms_eval": _lmms_eval_groups(records, predictions),
    }


__all__ = [
    "DEFAULT_RULES",
    "RULES",
    "build_prompt",
    "can_infer_option",
    "can_infer_text",
    "circular_rotations",
    "extract_choice",
    "find_tsv",
    "load_mmbench",
    "score",
]
