"""POPE: loader for `coco_pope_<split>.json` (JSON lines) + image folder, LLaVA-1.5's prompt, official scoring.

Scoring follows LLaVA-1.5's `llava/eval/eval_pope.py` (the script behind the POPE numbers the paper compares with):
keep the text before the first ".", drop commas, split on spaces; the answer is "no" if the words contain "No", "not" or
"no", else "yes". Accuracy, precision, recall, F1 with "yes" as the positive class; yes-ratio = share of *predicted* yes.
One deliberate difference, stated in the report: an empty (whitespace-only) output is counted wrong (the script would
read it as "yes"); it is not counted as a "yes" in the yes-ratio. "POPE" = the unweighted mean F1 over the splits.
"""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping

from .records import BenchmarkFormatError, EvalRecord, LoadedBenchmark

SPLITS = ("adversarial", "popular", "random")
LAYOUT = (
    'POPE layout: coco_pope_<split>.json (one JSON object per line: "question_id", "image", "text", "label") '
    "+ the COCO images (the file's folder, <root>, <root>/val2014 or <root>/images)"
)
LLAVA_SUFFIX = "\nAnswer the question using a single word or phrase."


def _question_files(root: str) -> dict[str, str]:
    if os.path.isfile(root):
        name = os.path.basename(root)
        split = name.removeprefix("coco_pope_").removesuffix(".json")
        return {split: root}
    if not os.path.isdir(root):
        raise BenchmarkFormatError(f"POPE data path {root!r} does not exist; expected {LAYOUT}")
    files = {}
    for pattern in ("coco_pope_*.json", "*/coco_pope_*.json", "*/*/coco_pope_*.json"):
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            split = os.path.basename(path).removeprefix("coco_pope_").removesuffix(".json")
            files.setdefault(split, path)
    if not files:
        raise BenchmarkFormatError(f"no coco_pope_<split>.json under {root!r}; expected {LAYOUT}")
    return files


def _image_dirs(root: str, question_file: str) -> list[str]:
    base = root if os.path.isdir(root) else os.path.dirname(root)
    here = os.path.dirname(question_file)
    candidates = [
        here,
        base,
        os.path.join(base, "val2014"),
        os.path.join(base, "images"),
        os.path.join(here, "val2014"),
        os.path.join(here, "images"),
        os.path.join(base, "coco", "val2014"),
    ]
    return [c for c in dict.fromkeys(candidates) if os.path.isdir(c)]


def load_pope(root: str, strict: bool = True) -> LoadedBenchmark:
    """POPE questions of every `coco_pope_<split>.json` under `root` (or the one file `root`)."""
    records, skipped = [], []
    for split, path in sorted(_question_files(root).items()):
        dirs = _image_dirs(root, path)
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(_parse_line(line, split, f"{path}:{line_number}", dirs))
                except BenchmarkFormatError as error:
                    if strict:
                        raise
                    skipped.append(str(error))
    return LoadedBenchmark("pope", records, layout="pope-jsonl", skipped=skipped)


def _parse_line(line: str, split: str, source: str, dirs: list[str]) -> EvalRecord:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise BenchmarkFormatError(f"{source}: not a JSON object ({error.msg} at column {error.colno})") from error
    if not isinstance(row, dict):
        raise BenchmarkFormatError(f"{source}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in ("question_id", "image", "text", "label") if k not in row]
    if missing:
        raise BenchmarkFormatError(f"{source}: missing field(s) {missing}; expected {LAYOUT}")
    label = str(row["label"]).strip().lower()
    if label not in ("yes", "no"):
        raise BenchmarkFormatError(f"{source}: field 'label' must be 'yes' or 'no', got {row['label']!r}")
    image = str(row["image"])
    path = next((os.path.join(d, image) for d in dirs if os.path.isfile(os.path.join(d, image))), None)
    if path is None:
        raise BenchmarkFormatError(f"{source}: image {image!r} not found in any of {dirs}")
    return EvalRecord(
        "pope",
        f"{split}/{row['question_id']}",
        str(row["text"]),
        label,
        split,
        image_path=path,
        image_id=image,
        source=source,
    )


def build_prompt(record: EvalRecord) -> str:
    """LLaVA-1.5's POPE question (`llava_pope_test.jsonl`): the question + the short-answer instruction."""
    return record.question + LLAVA_SUFFIX


def parse_answer(text: str) -> str:
    """The official parse: `"yes"` or `"no"`; `""` for an empty output (counted wrong, see module docstring)."""
    text = text.strip()
    if not text:
        return ""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _metrics(pairs: list[tuple[str, str]]) -> dict:
    """Metrics of `(label, parsed prediction)` pairs; an empty prediction is the wrong class."""
    tp = sum(1 for y, p in pairs if y == "yes" and p == "yes")
    tn = sum(1 for y, p in pairs if y == "no" and p == "no")
    fp = sum(1 for y, p in pairs if y == "no" and p != "no")
    fn = sum(1 for y, p in pairs if y == "yes" and p != "yes")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100 * (tp + tn) / len(pairs),
        "precision": 100 * precision,
        "recall": 100 * recall,
        "f1": 100 * f1,
        "yes_ratio": 100 * sum(p == "yes" for _, p in pairs) / len(pairs),
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "empty_answers": sum(p == "" for _, p in pairs),
        "questions": len(pairs),
    }


def score(records: Iterable[EvalRecord], predictions: Mapping[str, str]) -> dict:
    """Per-split accuracy/precision/recall/F1/yes-ratio (percent) and `f1_mean` over the splits present."""
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for record in records:
        if record.uid not in predictions:
            raise KeyError(f"no prediction for POPE question {record.uid!r} ({record.source})")
        pairs[record.subtask].append((record.answer, parse_answer(predictions[record.uid])))
    splits = {split: _metrics(p) for split, p in sorted(pairs.items())}
    f1_mean = sum(s["f1"] for s in splits.values()) / len(splits) if splits else 0.0
    acc_mean = sum(s["accuracy"] for s in splits.values()) / len(splits) if splits else 0.0
    return {"f1_mean": f1_mean, "accuracy_mean": acc_mean, "splits": splits}


__all__ = ["SPLITS", "build_prompt", "load_pope", "parse_answer", "score"]
