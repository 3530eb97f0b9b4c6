"""Score an existing predictions file without a model: `mage eval --predictions FILE` (and `score_predictions_file`).

Accepted files, per benchmark:

- every benchmark: LLaVA's answer JSONL (`question_id`, `text`, as `llava/eval/model_vqa*.py` write it) and this
  tool's own `predictions_<benchmark>.jsonl` (`uid`, `prediction`);
- MME: an eval-tool folder of `<subtask>.txt` files, one `image<TAB>question<TAB>gt<TAB>prediction` line per
  question (what MME's `calculation.py` reads); LLaVA JSONL rows are matched by `question_id` (`subtask/image`) and
  the question in `prompt`;
- POPE: LLaVA JSONL; `question_id` is matched within the row's `category` (LLaVA's question file has one) or, if
  absent, must be unique over the splits of `--data` (or be written `split/question_id`);
- MMBench: VLMEvalKit's TSV or XLSX with `index` and `prediction` columns (XLSX needs openpyxl); LLaVA JSONL with
  `question_id` = index and `round_id` = rotation (`model_vqa_mmbench.py --all-rounds`);
- SEED-Bench: LLaVA JSONL or the submission JSONL of `convert_seed_for_submission.py` (`question_id`, `prediction`).

What the official scripts do with unanswered questions is kept: MME, POPE and MMBench score the questions the file
answers (VLMEvalKit accepts a subset; MME's tool and `eval_pope.py` read only the answer files) and the report counts
the rest as `unanswered`; SEED-Bench counts an unanswered question wrong, as `convert_seed_for_submission.py` does.
Every problem is a `BenchmarkFormatError` naming the file, line or row, and field.
"""

from __future__ import annotations

import csv
import datetime
import os
import sys
from collections import defaultdict, deque

from . import official_rules
from .api import load_benchmark, score_predictions
from .mme import SUBTASKS
from .records import BenchmarkFormatError, EvalRecord, json_object
from .report import CONVENTIONS, git_commit, summary, table4, write_report

# Cells pandas reads as NaN by default; VLMEvalKit then turns the prediction into the string "nan" (`str(x)`).
PANDAS_NA = {
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
}
LLAVA_SUFFIXES = ("Answer the question using a single word or phrase.", "Please answer yes or no.")
CIRCULAR_OFFSET = 1_000_000


def _norm_question(text: str) -> str:
    """A question compared across files: LLaVA's and MME's instruction suffixes removed, whitespace collapsed."""
    for suffix in LLAVA_SUFFIXES:
        text = text.replace(suffix, " ")
    return " ".join(text.split())


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]


def is_table(path: str) -> bool:
    """True for an MMBench-style TSV/XLSX predictions table."""
    return os.path.isfile(path) and path.lower().endswith((".tsv", ".xlsx", ".xls"))


# --- MME eval-tool folders ---------------------------------------------------------------------------------------


def read_mme_folder(folder: str, records: list[EvalRecord]) -> dict[str, str]:
    """`{uid: prediction}` from an MME eval-tool folder; each line matched to a record of `--data` by subtask
    (file name), image (name without extension) and question."""
    index: dict[tuple[str, str, str], deque[EvalRecord]] = defaultdict(deque)
    for record in records:
        index[(record.subtask, _stem(record.image_id), _norm_question(record.question))].append(record)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".txt") and n[:-4] in SUBTASKS)
    if not names:
        raise BenchmarkFormatError(
            f"{folder}: no <subtask>.txt files of MME's eval tool (expected names like existence.txt, OCR.txt)"
        )
    predictions: dict[str, str] = {}
    for name in names:
        subtask, path = name[:-4], os.path.join(folder, name)
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                fields = line.rstrip("\n").split("\t")
                where = f"{path}:{number}"
                if len(fields) != 4:
                    raise BenchmarkFormatError(
                        f"{where}: expected 4 tab-separated fields (image, question, gt, prediction), got "
                        f"{len(fields)}; MME's calculation.py cannot read this line either"
                    )
                image, question, gt, prediction = fields
                if gt.lower() not in ("yes", "no"):
                    raise BenchmarkFormatError(f"{where}: field 'gt' must be Yes or No, got {gt!r}")
                queue = index.get((subtask, _stem(image), _norm_question(question)))
                if not queue:
                    raise BenchmarkFormatError(
                        f"{where}: no MME question in --data for image {image!r}, question {question!r} "
                        f"(or it is answered twice)"
                    )
                record = queue.popleft()
                if record.answer != gt.lower():
                    raise BenchmarkFormatError(
                        f"{where}: field 'gt' is {gt!r} but --data says {record.answer!r} ({record.source})"
                    )
                predictions[record.uid] = prediction
    return predictions


# --- MMBench tables ----------------------------------------------------------------------------------------------


def _table_rows(path: str) -> list[tuple[str, dict[str, str]]]:
    """`[(where, {column: cell text})]` of a TSV or XLSX, empty/NA prediction cells as VLMEvalKit reads them."""
    if path.lower().endswith(".tsv"):
        csv.field_size_limit(sys.maxsize)
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            header = reader.fieldnames or []
            rows = [(f"{path}:{reader.line_num}", row) for row in reader]
    else:
        try:
            import openpyxl  # optional
        except ImportError as error:
            raise BenchmarkFormatError(
                f"{path}: reading XLSX needs openpyxl, which is not installed (pip install openpyxl), or save the "
                "sheet as TSV"
            ) from error
        try:
            sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).worksheets[0]
        except Exception as error:  # openpyxl raises many types for a file that is not a workbook
            raise BenchmarkFormatError(f"{path}: not a readable XLSX workbook ({error})") from error
        values = list(sheet.iter_rows(values_only=True))
        header = [str(c) if c is not None else "" for c in (values[0] if values else [])]
        rows = [
            (f"{path}: row {n}", {h: ("" if v is None else str(v)) for h, v in zip(header, row)})
            for n, row in enumerate(values[1:], start=2)
        ]
    missing = [c for c in ("index", "prediction") if c not in header]
    if missing:
        raise BenchmarkFormatError(f"{path}: header lacks column(s) {missing}; expected VLMEvalKit's prediction table")
    return rows


def read_mmbench_table(path: str, records: list[EvalRecord]) -> dict[str, str]:
    """`{uid: prediction}` from a VLMEvalKit prediction table; rows are matched by `index` (one record per row)."""
    uids = {r.uid for r in records}
    predictions: dict[str, str] = {}
    for where, row in _table_rows(path):
        raw = (row.get("index") or "").strip()
        try:
            index = int(float(raw))
        except ValueError as error:
            raise BenchmarkFormatError(f"{where}: field 'index' must be an integer, got {raw!r}") from error
        uid = str(index)
        if uid not in uids:
            raise BenchmarkFormatError(
                f"{where}: index {index} is not a row of --data (predictions with circular copies need the TSV "
                "that holds them)"
            )
        if uid in predictions:
            raise BenchmarkFormatError(f"{where}: a second prediction for index {index}")
        text = row.get("prediction")
        predictions[uid] = "nan" if text is None or text in PANDAS_NA else text
    return predictions


# --- JSONL answers -----------------------------------------------------------------------------------------------


def _jsonl_rows(path: str) -> list[tuple[str, dict]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            row = json_object(line, where)
            if "_meta" in row:
                continue
            rows.append((where, row))
    if not rows:
        raise BenchmarkFormatError(f"{path}: holds no prediction rows")
    return rows


def _prediction_text(where: str, row: dict) -> str:
    for key in ("prediction", "text"):
        if key in row:
            if not isinstance(row[key], str):
                raise BenchmarkFormatError(f"{where}: field {key!r} must be a string, got {type(row[key]).__name__}")
            return row[key]
    raise BenchmarkFormatError(f"{where}: no prediction field ('text' as LLaVA writes it, or 'prediction')")


class _Matcher:
    """Finds the record a JSONL row answers, per benchmark (see module docstring)."""

    def __init__(self, benchmark: str, records: list[EvalRecord]) -> None:
        self.benchmark = benchmark
        self.by_uid = {r.uid: r for r in records}
        self.mme: dict[tuple[str, str], list[EvalRecord]] = defaultdict(list)
        self.pope: dict[str, list[EvalRecord]] = defaultdict(list)
        for r in records:
            if benchmark == "mme":
                self.mme[(r.subtask, _stem(r.image_id))].append(r)
            elif benchmark == "pope":
                self.pope[r.uid.split("/", 1)[-1]].append(r)

    def __call__(self, where: str, row: dict) -> str:
        if "uid" in row:
            uid = str(row["uid"])
            if uid not in self.by_uid:
                raise BenchmarkFormatError(f"{where}: uid {uid!r} is not a question of --data")
            return uid
        if "question_id" not in row:
            raise BenchmarkFormatError(f"{where}: no 'question_id' field (LLaVA answers) and no 'uid' field")
        qid = str(row["question_id"])
        if self.benchmark == "mme":
            return self._mme(where, row, qid)
        if self.benchmark == "pope":
            return self._pope(where, row, qid)
        if self.benchmark in ("mmbench", "mmbench_cn"):
            rounds = row.get("round_id")
            candidates = [f"{qid}@r{rounds}"] if rounds is not None else [qid, f"{qid}@r0"]
            if rounds is not None and str(rounds) == "0":
                candidates.append(qid)
        else:
            candidates = [qid]
        for uid in candidates:
            if uid in self.by_uid:
                return uid
        raise BenchmarkFormatError(f"{where}: question_id {row['question_id']!r} is not a question of --data")

    def _mme(self, where: str, row: dict, qid: str) -> str:
        subtask, image = qid.split("/", 1)[0], _stem(qid)
        group = self.mme.get((subtask, image))
        if not group:
            raise BenchmarkFormatError(f"{where}: question_id {qid!r} names no MME image of --data")
        prompt = row.get("prompt")
        if not isinstance(prompt, str):
            raise BenchmarkFormatError(f"{where}: field 'prompt' is needed to tell the questions of {qid!r} apart")
        want = _norm_question(prompt)
        found = [r for r in group if _norm_question(r.question) == want]
        if len(found) != 1:
            raise BenchmarkFormatError(f"{where}: field 'prompt' matches no question of {qid!r} in --data")
        return found[0].uid

    def _pope(self, where: str, row: dict, qid: str) -> str:
        if qid in self.by_uid:
            return qid
        split = row.get("category") or row.get("split")
        if split is not None:
            uid = f"{split}/{qid}"
            if uid not in self.by_uid:
                raise BenchmarkFormatError(f"{where}: question_id {qid!r} is not in split {split!r} of --data")
            return uid
        found = self.pope.get(qid, [])
        if len(found) != 1:
            raise BenchmarkFormatError(
                f"{where}: question_id {qid!r} is in {len(found)} POPE splits of --data; add a 'category' field "
                "or write it as 'split/question_id'"
            )
        return found[0].uid


def read_jsonl(path: str, benchmark: str, records: list[EvalRecord]) -> dict[str, str]:
    """`{uid: prediction}` from LLaVA answers, SEED submissions or this tool's predictions file."""
    match = _Matcher(benchmark, records)
    predictions: dict[str, str] = {}
    for where, row in _jsonl_rows(path):
        uid = match(where, row)
        if uid in predictions:
            raise BenchmarkFormatError(f"{where}: a second prediction for question {uid!r}")
        predictions[uid] = _prediction_text(where, row)
    return predictions


# --- scoring -----------------------------------------------------------------------------------------------------


def read_predictions_file(path: str, benchmark: str, records: list[EvalRecord]) -> dict[str, str]:
    """`{uid: prediction text}` read from `path` in any format accepted for `benchmark` (module docstring)."""
    try:
        if os.path.isdir(path):
            if benchmark != "mme":
                raise BenchmarkFormatError(
                    f"--predictions {path!r} is a folder; only MME's eval-tool output is a folder"
                )
            return read_mme_folder(path, records)
        if is_table(path):
            if benchmark not in ("mmbench", "mmbench_cn"):
                raise BenchmarkFormatError(f"{path}: a prediction table is MMBench's format, not {benchmark}'s")
            return read_mmbench_table(path, records)
        return read_jsonl(path, benchmark, records)
    except UnicodeDecodeError as error:
        raise BenchmarkFormatError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise BenchmarkFormatError(f"{error.filename or path}: cannot be read ({error.strerror})") from error


def score_predictions_file(
    benchmark: str,
    data: str,
    predictions_path: str,
    output_dir: str,
    rules: str = official_rules.DEFAULT_RULES,
    scoring: str = "official",
    strict: bool = True,
    split: str | None = None,
    plots: bool = True,
) -> dict:
    """Score `predictions_path` against the benchmark at `data`, write the report into `output_dir`, return it.

    Args:
        scoring: how the predictions were made; SEED predictions count as generated text unless `"likelihood"`.
    """
    official_rules.check_rules(rules)
    table = is_table(predictions_path) and benchmark in ("mmbench", "mmbench_cn")
    loaded = load_benchmark(benchmark, data, circular=not table, strict=strict, split=split)
    predictions = read_predictions_file(predictions_path, benchmark, loaded.records)
    used_scoring = "likelihood" if (benchmark == "seed" and scoring == "likelihood") else "generate"
    if benchmark == "seed":
        scored = list(loaded.records)
        unanswered = sum(r.uid not in predictions for r in scored)
        predictions = {r.uid: predictions.get(r.uid, "") for r in scored}
    else:
        scored = [r for r in loaded.records if r.uid in predictions]
        unanswered = len(loaded.records) - len(scored)
    if not scored:
        raise BenchmarkFormatError(f"{predictions_path}: answers none of the questions in --data {data!r}")
    scores = score_predictions(benchmark, scored, predictions, rules, used_scoring)
    bench = {
        "data": os.path.abspath(data),
        "layout": loaded.layout,
        "scoring": used_scoring,
        "samples": len(scored),
        "unanswered": unanswered,
        "skipped": loaded.skipped,
        "conventions": CONVENTIONS[benchmark],
        "scores": scores,
        "predictions_file": os.path.abspath(predictions_path),
    }
    results = {
        "model": f"(predictions file {os.path.abspath(predictions_path)})",
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {"rules": rules, "scoring": used_scoring, "predictions": os.path.abspath(predictions_path)},
        "benchmarks": {benchmark: bench},
    }
    results["summary"] = summary(results["benchmarks"])
    results["table4"] = table4(results["benchmarks"])
    results["files"] = write_report(results, output_dir, plots=plots)
    return results


__all__ = [
    "read_jsonl",
    "read_mme_folder",
    "read_mmbench_table",
    "read_predictions_file",
    "score_predictions_file",
]
