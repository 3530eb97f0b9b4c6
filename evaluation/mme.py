"""MME: loader for the official release layouts, LLaVA-1.5's prompt, and the official `calculation.py` scoring.

Scoring (`rules="official"`, the default) follows MME's `eval_tool/calculation.py` rule for rule: the answer is
lower-cased and NOT stripped; exactly `"yes"`/`"no"`, else `"yes"` searched in the first four characters, else `"no"`
there, else `"other"` (always wrong) — so `" yes"` is yes but `"  Yes"`, `"The answer is yes"` and `""` are other.
Subtask score = 100·acc + 100·acc+, acc over questions, acc+ over images with every question right. The official tool
pairs consecutive lines; we group by `(subtask, image)` wherever the rows are, which is identical on files in the
official order and cannot be changed by reordering. Perception = sum of 10 subtask scores (max 2000), cognition = sum
of 4 (max 800). `rules="lenient"` strips the answer first (the earlier behaviour). Every result also carries
lmms-eval's reading (`lmms_eval`), see `official_rules`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping

from . import official_rules
from .records import BenchmarkFormatError, EvalRecord, LoadedBenchmark, skip_bad_row

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SUBTASKS = PERCEPTION + COGNITION
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
LAYOUTS = (
    "MME layout A: <root>/<subtask>/images/<name>.<ext> + <root>/<subtask>/questions_answer_YES_NO/<name>.txt",
    "MME layout B: <root>/<subtask>/<name>.<ext> + <root>/<subtask>/<name>.txt side by side",
)
OFFICIAL_SUFFIX = " Please answer yes or no."
LLAVA_SUFFIX = "\nAnswer the question using a single word or phrase."


def _find_image(folder: str, stem: str) -> str | None:
    for extension in IMAGE_EXTENSIONS:
        for candidate in (stem + extension, stem + extension.upper()):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                return path
    return None


def _subtask_pairs(folder: str) -> tuple[str, list[tuple[str, str]]] | None:
    """`(layout, [(txt path, image folder)])` for one subtask folder, or None if it matches no layout."""
    qa_dir, image_dir = os.path.join(folder, "questions_answer_YES_NO"), os.path.join(folder, "images")
    if os.path.isdir(qa_dir) and os.path.isdir(image_dir):
        names = sorted(n for n in os.listdir(qa_dir) if n.endswith(".txt"))
        return "A", [(os.path.join(qa_dir, n), image_dir) for n in names]
    names = sorted(n for n in os.listdir(folder) if n.endswith(".txt"))
    if names:
        return "B", [(os.path.join(folder, n), folder) for n in names]
    return None


def _resolve_root(root: str) -> str:
    """The folder holding the subtask folders (accepts the release folder or its parent)."""
    if not os.path.isdir(root):
        raise BenchmarkFormatError(f"MME data folder {root!r} does not exist; expected one of: " + "; ".join(LAYOUTS))
    if any(os.path.isdir(os.path.join(root, s)) for s in SUBTASKS):
        return root
    for name in sorted(os.listdir(root)):
        sub = os.path.join(root, name)
        if os.path.isdir(sub) and any(os.path.isdir(os.path.join(sub, s)) for s in SUBTASKS):
            return sub
    raise BenchmarkFormatError(
        f"{root!r} holds none of the MME subtask folders {list(SUBTASKS)}; expected one of: " + "; ".join(LAYOUTS)
    )


def load_mme(root: str, strict: bool = True) -> LoadedBenchmark:
    """All MME questions under `root` (either official layout), two per image, in file order.

    With `strict=False`, malformed lines and missing images are skipped and listed in `.skipped` instead of raising.
    """
    root = _resolve_root(root)
    records, skipped, layouts = [], [], set()
    for subtask in SUBTASKS:
        folder = os.path.join(root, subtask)
        if not os.path.isdir(folder):
            continue
        found = _subtask_pairs(folder)
        if found is None:
            raise BenchmarkFormatError(
                f"MME subtask folder {folder!r} matches no layout; expected " + "; ".join(LAYOUTS)
            )
        layout, pairs = found
        layouts.add(layout)
        for txt_path, image_dir in pairs:
            stem = os.path.splitext(os.path.basename(txt_path))[0]
            with skip_bad_row(strict, skipped):
                image_path = _find_image(image_dir, stem)
                if image_path is None:
                    raise BenchmarkFormatError(
                        f"{txt_path}:1: no image named {stem}{{{','.join(IMAGE_EXTENSIONS)}}} in {image_dir}"
                    )
                records.extend(_read_qa_file(txt_path, subtask, image_path))
    if not records and not skipped:
        raise BenchmarkFormatError(f"no MME questions found under {root!r}; expected one of: " + "; ".join(LAYOUTS))
    return LoadedBenchmark("mme", records, layout="mme-" + "+".join(sorted(layouts)), skipped=skipped)


def _read_qa_file(txt_path: str, subtask: str, image_path: str) -> list[EvalRecord]:
    image_name = os.path.basename(image_path)
    out = []
    with open(txt_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            source = f"{txt_path}:{line_number}"
            if len(fields) != 2:
                raise BenchmarkFormatError(f"{source}: expected 'question<TAB>answer', got {len(fields)} field(s)")
            question, answer = fields[0].strip(), fields[1].strip().lower()
            if answer not in ("yes", "no"):
                raise BenchmarkFormatError(f"{source}: answer must be Yes or No, got {fields[1]!r}")
            uid = f"{subtask}/{image_name}#{line_number}"
            out.append(
                EvalRecord(
                    "mme", uid, question, answer, subtask, image_path=image_path, image_id=image_name, source=source
                )
            )
    return out


def build_prompt(record: EvalRecord) -> str:
    """LLaVA-1.5's MME question: the official suffix replaced by the short-answer instruction (appended if absent)."""
    question = record.question
    if question.endswith(OFFICIAL_SUFFIX):
        return question[: -len(OFFICIAL_SUFFIX)] + LLAVA_SUFFIX
    if OFFICIAL_SUFFIX.strip() in question:
        return question.replace(OFFICIAL_SUFFIX.strip(), "").rstrip() + LLAVA_SUFFIX
    return question + LLAVA_SUFFIX


_PARSERS = {
    "mme-calculation": official_rules.mme_official,
    "lenient": official_rules.mme_lenient,
    "lmms-eval": official_rules.mme_lmms_eval,
}


def parse_answer(text: str, rules: str = official_rules.DEFAULT_RULES) -> str:
    """`"yes"`, `"no"` or `"other"` under rule set `rules` (`official`: MME `calculation.py`, never stripped)."""
    return _PARSERS[official_rules.benchmark_rules(rules, "mme")](text)


def _aggregate(records: list[EvalRecord], predictions: Mapping[str, str], parse) -> dict:
    by_image: dict[tuple[str, str], list[bool]] = defaultdict(list)
    other = defaultdict(int)
    for record in records:
        parsed = parse(predictions[record.uid])
        other[record.subtask] += parsed == "other"
        by_image[(record.subtask, record.image_id)].append(parsed == record.answer)
    subtasks: dict[str, dict] = {}
    for subtask in SUBTASKS:
        images = [v for (s, _), v in by_image.items() if s == subtask]
        if not images:
            continue
        questions = sum(len(v) for v in images)
        acc = sum(sum(v) for v in images) / questions
        acc_plus = sum(all(v) for v in images) / len(images)
        subtasks[subtask] = {
            "acc": 100 * acc,
            "acc_plus": 100 * acc_plus,
            "score": 100 * acc + 100 * acc_plus,
            "questions": questions,
            "images": len(images),
            "images_not_two_questions": sum(len(v) != 2 for v in images),
            "other_answers": other[subtask],
        }
    perception = sum(subtasks[s]["score"] for s in PERCEPTION if s in subtasks)
    cognition = sum(subtasks[s]["score"] for s in COGNITION if s in subtasks)
    return {
        "perception": perception,
        "cognition": cognition,
        "total": perception + cognition,
        "perception_subtasks": sum(s in subtasks for s in PERCEPTION),
        "cognition_subtasks": sum(s in subtasks for s in COGNITION),
        "subtasks": subtasks,
    }


def score(
    records: Iterable[EvalRecord], predictions: Mapping[str, str], rules: str = official_rules.DEFAULT_RULES
) -> dict:
    """Per-subtask acc / acc+ / score and the perception and cognition totals under rule set `rules`, plus
    lmms-eval's reading of the same answers under `"lmms_eval"` (its parse: stripped, "." dropped, "y"/"n").

    Args:
        records: the MME records that were evaluated.
        predictions: `{uid: generated text}`; a missing uid is an error (score only finished runs).
        rules: a rule set of `official_rules.RULE_SETS`.
    """
    records = list(records)
    for record in records:
        if record.uid not in predictions:
            raise KeyError(f"no prediction for MME question {record.uid!r} ({record.source})")
    result = _aggregate(records, predictions, _PARSERS[official_rules.benchmark_rules(rules, "mme")])
    lmms = _aggregate(records, predictions, official_rules.mme_lmms_eval)
    result["rules"] = official_rules.describe(rules, "mme")
    result["lmms_eval"] = {
        "perception": lmms["perception"],
        "cognition": lmms["cognition"],
        "total": lmms["total"],
        "subtasks": {k: v["score"] for k, v in lmms["subtasks"].items()},
        "other_answers": sum(v["other_answers"] for v in lmms["subtasks"].values()),
    }
    return result


def export_prediction(text: str) -> str:
    """A prediction as written into an eval-tool line: unchanged but for tab, CR and LF, each replaced by one space.

    MME's `calculation.py` reads `line.split("\\t")` into exactly four fields and pairs lines, so a raw tab or line
    break in a prediction makes it crash (or misread the following lines); LLaVA's `convert_answer_to_mme.py` writes
    the text unchanged and would produce such a file. A space in their place cannot change the parse: "yes" and "no"
    hold no whitespace, so neither the exact match nor the four-character prefix test can gain or lose a match.
    """
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_official_results(records: Iterable[EvalRecord], predictions: Mapping[str, str], folder: str) -> None:
    """Write `<subtask>.txt` files ("image<TAB>question<TAB>gt<TAB>prediction") for MME's own `calculation.py`.

    Rows keep the loader's order (the two questions of an image are consecutive, as the tool's pairing needs); the
    prediction is written as generated, not stripped (`export_prediction`).
    """
    os.makedirs(folder, exist_ok=True)
    lines: dict[str, list[str]] = defaultdict(list)
    for r in records:
        pred = export_prediction(predictions.get(r.uid, ""))
        lines[r.subtask].append("\t".join([r.image_id, r.question, r.answer.capitalize(), pred]))
    for subtask, rows in lines.items():
        with open(os.path.join(folder, f"{subtask}.txt"), "w", encoding="utf-8", newline="\n") as handle:
            handle.write("\n".join(rows) + "\n")


__all__ = [
    "COGNITION",
    "PERCEPTION",
    "SUBTASKS",
    "build_prompt",
    "export_prediction",
    "load_mme",
    "parse_answer",
    "score",
    "write_official_results",
]
