"""POPE: loader for `coco_pope_<split>.json` (JSON lines) + image folder, LLaVA-1.5's prompt, official scoring.

Scoring (`rules="official"`, the default) follows LLaVA-1.5's `llava/eval/eval_pope.py` (the script behind the POPE
numbers the paper compares with; RUCAIBox POPE's `evaluate.py` is said to use the same rule, not checked here) rule
for rule: keep the text before the first ".", delete commas, `split(' ')`; the answer is "no" if a word is exactly
"No", "not" or "no", and "yes" otherwise — including an empty answer, "NO", "Nope" and "no!". Accuracy, precision, recall, F1 with "yes" as the
positive class; yes-ratio = share of answers read as yes, by the same rule. "POPE" = the unweighted mean F1 over the
splits. `rules="lenient"` (the earlier behaviour) strips the answer and counts an empty one wrong, not as "yes".
Every result also carries lmms-eval's reading (`lmms_eval`: exact "yes"/"no" after lower/strip, one pooled F1).
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping

from . import official_rules
from .records import BenchmarkFormatError, EvalRecord, LoadedBenchmark, json_object, skip_bad_row

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
                with skip_bad_row(strict, skipped):
                    records.append(_parse_line(line, split, f"{path}:{line_number}", dirs))
    return LoadedBenchmark("pope", records, layout="pope-jsonl", skipped=skipped)


def _parse_line(line: str, split: str, source: str, dirs: list[str]) -> EvalRecord:
    row = json_object(line, source)
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


_PARSERS = {"llava-eval-pope": official_rules.pope_official, "lenient": official_rules.pope_lenient}


def parse_answer(text: str, rules: str = official_rules.DEFAULT_RULES) -> str:
    """`"yes"` or `"no"` under rule set `rules`; `""` for an empty output under `lenient` only (counted wrong)."""
    return _PARSERS[official_rules.benchmark_rules(rules, "pope")](text)


def _metrics(pairs: list[tuple[str, str]]) -> dict:
    """Metrics of `(label, parsed prediction)` pairs; a prediction that is neither label is the wrong class."""
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


def _lmms_metrics(pairs: list[tuple[str, str]]) -> dict:
    """lmms-eval `pope/utils.py` aggregations of `(label, lower-stripped prediction)`: accuracy = exact match;
    FP counts only a "yes" on a "no" label and FN only a "no" on a "yes" label (any other text is neither);
    its `yes_ratio` is the share of *labels* that are yes (as lmms-eval computes it)."""
    tp = sum(1 for y, p in pairs if y == "yes" and p == "yes")
    fp = sum(1 for y, p in pairs if y == "no" and p == "yes")
    fn = sum(1 for y, p in pairs if y == "yes" and p == "no")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100 * sum(y == p for y, p in pairs) / len(pairs),
        "precision": 100 * precision,
        "recall": 100 * recall,
        "f1": 100 * f1,
        "yes_ratio": 100 * sum(y == "yes" for y, _ in pairs) / len(pairs),
    }


def score(
    records: Iterable[EvalRecord], predictions: Mapping[str, str], rules: str = official_rules.DEFAULT_RULES
) -> dict:
    """Per-split accuracy/precision/recall/F1/yes-ratio (percent) and `f1_mean` over the splits present, under rule
    set `rules`; `"lmms_eval"` holds lmms-eval's reading (per split and pooled over all splits, as its `pope` task)."""
    parse = _PARSERS[official_rules.benchmark_rules(rules, "pope")]
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    lmms_pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for record in records:
        if record.uid not in predictions:
            raise KeyError(f"no prediction for POPE question {record.uid!r} ({record.source})")
        pairs[record.subtask].append((record.answer, parse(predictions[record.uid])))
        lmms_pairs[record.subtask].append((record.answer, official_rules.pope_lmms_eval(predictions[record.uid])))
    splits = {split: _metrics(p) for split, p in sorted(pairs.items())}
    f1_mean = sum(s["f1"] for s in splits.values()) / len(splits) if splits else 0.0
    acc_mean = sum(s["accuracy"] for s in splits.values()) / len(splits) if splits else 0.0
    pooled = [pair for split in sorted(lmms_pairs) for pair in lmms_pairs[split]]
    lmms = {
        "pooled": _lmms_metrics(pooled) if pooled else {},
        "splits": {split: _lmms_metrics(p) for split, p in sorted(lmms_pairs.items())},
    }
    return {
        "f1_mean": f1_mean,
        "accuracy_mean": acc_mean,
        "splits": splits,
        "rules": official_rules.describe(rules, "pope"),
        "lmms_eval": lmms,
    }


__all__ = ["SPLITS", "build_prompt", "load_pope", "parse_answer", "score"]
