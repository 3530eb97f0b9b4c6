"""SEED-Bench (image dimensions 1–9): JSON + image-folder loader, LLaVA-1.5's prompt, per-dimension accuracy.

Two scorings: `likelihood` (the official SEED-Bench protocol: the option with the highest likelihood given the
question wins; we rank by mean per-token log-likelihood of the option text after the prompt) and `generate`
(LLaVA-1.5's protocol: the model writes a letter). A generated answer is read under rule set `official` (the default)
as LLaVA's `scripts/convert_seed_for_submission.py` does: right iff `prediction == answer` exactly — case-sensitive, not
stripped, so "B.", " A", "A\n", "(B)", "Answer: A" and the option text are wrong. `lenient`/`vlmevalkit-2024` read it
with MMBench's 2024 letter rules instead (unresolved = wrong). `lmms_eval` holds lmms-eval's reading (stripped, first
character, case-insensitive).
Overall = mean over all image questions (SEED's "Image" column); `dimension_mean` = unweighted mean of the dimensions.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping

from . import official_rules
from .mmbench import DEFAULT_RULES, extract_choice
from .records import BenchmarkFormatError, EvalRecord, LoadedBenchmark, skip_bad_row

DIMENSIONS = {
    1: "Scene Understanding",
    2: "Instance Identity",
    3: "Instance Attributes",
    4: "Instance Location",
    5: "Instances Counting",
    6: "Spatial Relation",
    7: "Instance Interaction",
    8: "Visual Reasoning",
    9: "Text Understanding",
}
LETTERS = ("A", "B", "C", "D")
LAYOUT = (
    'SEED-Bench layout: a JSON file {"questions": [{question_id, question, choice_a..choice_d, answer, data_id, '
    'data_type, question_type_id}], "question_type": {name: id}} + an image folder holding each data_id '
    "(the JSON's folder, <root>/SEED-Bench-image or <root>/images)"
)
SUFFIX = "\nAnswer with the option's letter from the given choices directly."


def _find_json(path: str) -> str:
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise BenchmarkFormatError(f"SEED-Bench data path {path!r} does not exist; expected {LAYOUT}")
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(".json") and "seed" in n.lower())
    names = names or sorted(n for n in os.listdir(path) if n.lower().endswith(".json"))
    if len(names) != 1:
        raise BenchmarkFormatError(f"expected one SEED-Bench .json in {path!r}, found {names or 'none'}; {LAYOUT}")
    return os.path.join(path, names[0])


def load_seed(path: str, strict: bool = True) -> LoadedBenchmark:
    """The image questions (dimensions 1–9) of a SEED-Bench JSON; video questions are skipped and counted."""
    json_path = _find_json(path)
    try:
        with open(json_path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise BenchmarkFormatError(f"{json_path}:{error.lineno}: invalid JSON ({error.msg})") from error
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise BenchmarkFormatError(f'{json_path}: expected an object with a "questions" list; {LAYOUT}')
    names = {int(v): k for k, v in (data.get("question_type") or {}).items()} or DIMENSIONS
    base = os.path.dirname(json_path)
    dirs = [d for d in (os.path.join(base, "SEED-Bench-image"), os.path.join(base, "images"), base) if os.path.isdir(d)]
    records, skipped = [], []
    for number, row in enumerate(data["questions"]):
        source = f"{json_path}: questions[{number}]"
        if isinstance(row, dict) and row.get("data_type", "image") != "image":
            skipped.append(f"{source}: data_type {row.get('data_type')!r} (video) is not evaluated")
            continue
        with skip_bad_row(strict, skipped):
            records.append(_record(row, source, names, dirs))
    return LoadedBenchmark("seed", records, layout="seed-json", skipped=skipped)


def _record_fields(row, source: str, names: dict[int, str] | None = None) -> EvalRecord:
    """A SEED record from one question object, validated; the image is attached by the caller."""
    if not isinstance(row, dict):
        raise BenchmarkFormatError(f"{source}: expected an object, got {type(row).__name__}")
    need = ["question_id", "question", "answer", "question_type_id"] + [f"choice_{c}" for c in "abcd"]
    missing = [k for k in need if k not in row]
    if missing:
        raise BenchmarkFormatError(f"{source}: missing field(s) {missing}")
    answer = str(row["answer"]).strip().upper()
    if answer not in LETTERS:
        raise BenchmarkFormatError(f"{source}: field 'answer' must be one of {list(LETTERS)}, got {row['answer']!r}")
    try:
        type_id = int(row["question_type_id"])
    except (TypeError, ValueError) as error:
        raise BenchmarkFormatError(
            f"{source}: question_type_id must be an integer, got {row['question_type_id']!r}"
        ) from error
    if type_id not in DIMENSIONS:
        raise BenchmarkFormatError(f"{source}: question_type_id {type_id} is not an image dimension (1-9)")
    options = {letter: str(row[f"choice_{letter.lower()}"]) for letter in LETTERS}
    return EvalRecord(
        "seed",
        str(row["question_id"]),
        str(row["question"]),
        answer,
        (names or DIMENSIONS).get(type_id, DIMENSIONS[type_id]),
        image_id=str(row.get("data_id", row["question_id"])),
        options=options,
        source=source,
        extra={"question_type_id": type_id, "raw_answer": str(row["answer"])},
    )


def _record(row, source: str, names: dict[int, str], dirs: list[str]) -> EvalRecord:
    record = _record_fields(row, source, names)
    if "data_id" not in row:
        raise BenchmarkFormatError(f"{source}: missing field(s) ['data_id']")
    data_id = str(row["data_id"])
    path = next((os.path.join(d, data_id) for d in dirs if os.path.isfile(os.path.join(d, data_id))), None)
    if path is None:
        raise BenchmarkFormatError(f"{source}: image {data_id!r} not found in any of {dirs}")
    record.image_path = path
    return record


def build_prompt(record: EvalRecord) -> str:
    """LLaVA-1.5's `llava-seed-bench.jsonl` text: question + "\\nA. …" per option + the letter instruction."""
    question = record.question
    for letter, text in record.options.items():
        question += "\n" + letter + ". " + text
    return question + SUFFIX


def build_likelihood_prompt(record: EvalRecord) -> str:
    """The question alone (the options are ranked as continuations of the answer turn)."""
    return record.question


def score(
    records: Iterable[EvalRecord],
    predictions: Mapping[str, str],
    rules: str = DEFAULT_RULES,
    scoring: str = "generate",
) -> dict:
    """Accuracy (percent) per dimension, overall (question-weighted) and the unweighted dimension mean.

    Args:
        predictions: uid → generated text (`scoring="generate"`) or the ranked letter (`"likelihood"`).
        rules: a rule set of `official_rules.RULE_SETS` (`official`: exact string equality with the JSON's answer).
        scoring: how the predictions were made; recorded in the rules description.
    """
    official_rules.check_rules(rules)
    records = list(records)
    buckets: dict[str, list[bool]] = defaultdict(list)
    lmms: list[bool] = []
    unresolved = 0
    for record in records:
        if record.uid not in predictions:
            raise KeyError(f"no prediction for SEED question {record.uid!r} ({record.source})")
        prediction = predictions[record.uid]
        answer = str(record.extra.get("raw_answer", record.answer))
        if rules == "official":
            right = official_rules.seed_official(prediction, answer)
        else:
            choice = extract_choice(prediction, record.options, rules)
            unresolved += choice is None
            right = choice == record.answer
        buckets[record.subtask].append(right)
        lmms.append(official_rules.seed_lmms_eval(prediction, answer))
    dims = {k: 100 * sum(v) / len(v) for k, v in sorted(buckets.items())}
    total = sum(len(v) for v in buckets.values())
    return {
        "overall": 100 * sum(sum(v) for v in buckets.values()) / total if total else 0.0,
        "dimension_mean": sum(dims.values()) / len(dims) if dims else 0.0,
        "questions": total,
        "unresolved_answers": unresolved,
        "dimensions": dims,
        "dimension_questions": {k: len(v) for k, v in sorted(buckets.items())},
        "rules": official_rules.describe(rules, "seed", scoring),
        "lmms_eval": {"overall": 100 * sum(lmms) / len(lmms) if lmms else 0.0},
    }


__all__ = ["DIMENSIONS", "build_likelihood_prompt", "build_prompt", "load_seed", "score"]
