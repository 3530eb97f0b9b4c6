"""Python API: `load_benchmark`, `score_predictions`, `evaluate` (what `mage eval` and the demo call).

>>> from evaluation import evaluate                                    # doctest: +SKIP
>>> results = evaluate(model, processor, "pope", "data/pope", "out/")  # doctest: +SKIP
>>> results["summary"]["POPE"]                                         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
from collections.abc import Sequence

from . import hf_layouts, mmbench, mme, official_rules, pope, seed
from .provenance import model_fingerprint
from .records import BENCHMARKS, BenchmarkFormatError, EvalRecord, LoadedBenchmark
from .report import CONVENTIONS, git_commit, summary, table4, write_report

# Folder names tried under --data for --benchmark all (first existing wins, case-insensitive prefix match).
ALL_FOLDERS = {
    "mme": ("mme",),
    "pope": ("pope",),
    "mmbench": ("mmbench",),
    "mmbench_cn": ("mmbench",),
    "seed": ("seed",),
}


def load_benchmark(
    benchmark: str, data: str, circular: bool = True, strict: bool = True, split: str | None = None
) -> LoadedBenchmark:
    """Records of `benchmark` from `data` in its official layout or the lmms-eval parquet layout (auto-detected)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {BENCHMARKS}")
    if hf_layouts.is_hf_layout(data):
        return hf_layouts.load_hf_layout(data, benchmark, split=split, circular=circular, strict=strict)
    if benchmark == "mme":
        return mme.load_mme(data, strict=strict)
    if benchmark == "pope":
        return pope.load_pope(data, strict=strict)
    if benchmark in ("mmbench", "mmbench_cn"):
        return mmbench.load_mmbench(data, benchmark, circular=circular, strict=strict)
    return seed.load_seed(data, strict=strict)


def score_predictions(
    benchmark: str,
    records: Sequence[EvalRecord],
    predictions: dict[str, str],
    rules: str = official_rules.DEFAULT_RULES,
    scoring: str = "generate",
) -> dict:
    """The benchmark's scores from `{uid: prediction text}` under rule set `rules` (`official_rules.RULE_SETS`;
    `official` = the benchmark's own script, rule for rule). `scoring` says how SEED's predictions were made."""
    official_rules.check_rules(rules)
    if benchmark == "mme":
        return mme.score(records, predictions, rules)
    if benchmark == "pope":
        return pope.score(records, predictions, rules)
    if benchmark in ("mmbench", "mmbench_cn"):
        return mmbench.score(records, predictions, rules)
    return seed.score(records, predictions, rules, scoring)


def _scoring_unit(record: EvalRecord):
    """What a limit counts: an image for MME (acc+ needs both questions), the circular group for MMBench (`group`
    equals `uid` elsewhere)."""
    return (record.subtask, record.image_id) if record.benchmark == "mme" else record.group


def limit_records(records: Sequence[EvalRecord], limit: int | None) -> list[EvalRecord]:
    """`limit` scoring units taken round-robin over the subtasks (POPE splits, MME subtasks, SEED dimensions, …) in
    file order, so a limited run still scores every subtask (the files are sorted by subtask: the first N units alone
    were all POPE "adversarial"). Records keep their original order."""
    if limit is None:
        return list(records)
    by_subtask: dict[str, dict] = {}  # subtask -> its units in file order (a dict as an ordered set)
    for record in records:
        by_subtask.setdefault(record.subtask, {})[_scoring_unit(record)] = None
    missing = object()
    round_robin = [
        unit
        for layer in itertools.zip_longest(*by_subtask.values(), fillvalue=missing)
        for unit in layer
        if unit is not missing
    ]
    kept = set(round_robin[:limit])
    return [record for record in records if _scoring_unit(record) in kept]


def find_benchmark_data(data: str, benchmark: str) -> str | None:
    """For `--benchmark all`: the sub-folder of `data` holding `benchmark` (None if there is none)."""
    names = sorted(os.listdir(data)) if os.path.isdir(data) else []
    for prefix in ALL_FOLDERS[benchmark]:
        for name in names:
            if name.lower().startswith(prefix) and os.path.isdir(os.path.join(data, name)):
                if benchmark == "mmbench" and "cn" in name.lower()[len(prefix) :]:
                    continue
                return os.path.join(data, name)
    return None


def evaluate(
    model,
    processor,
    benchmark: str,
    data_dir: str,
    output_dir: str,
    batch_size: int = 8,
    limit: int | None = None,
    scoring: str = "official",
    blank_images: bool = False,
    max_new_tokens: int = 16,
    rules: str = official_rules.DEFAULT_RULES,
    model_path: str = "",
    circular: bool = True,
    strict: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    plots: bool = True,
    split: str | None = None,
    model_sha256: str | None = None,
) -> dict:
    """Evaluate `model` on one benchmark (or `"all"`), write the report into `output_dir`, return the results dict.

    Args:
        benchmark: one of `BENCHMARKS` or `"all"` (then `data_dir` holds one sub-folder per benchmark).
        scoring: `"official"` (each benchmark's own protocol: option likelihood for SEED-Bench, greedy answers for
            the rest), `"generate"` (greedy answers everywhere) or `"likelihood"` (option ranking for SEED and
            MMBench, the others generate).
        blank_images: replace every image by a grey one (the text-only baseline).
        rules: how answers are read, one of `official_rules.RULE_SETS` (`official`: each benchmark's own script).
        limit: evaluate only the first `limit` images (MME), circular groups (MMBench) or questions (others).
        overwrite: discard earlier predictions in `output_dir` instead of resuming them.
        split: split of an lmms-eval parquet folder (default: test, dev for MMBench).
        model_sha256: the model's content hash if already computed (`provenance.model_fingerprint`).
    Returns:
        `{"model", "git_commit", "created", "settings", "benchmarks": {name: {...scores...}}, "summary"}`.
    """
    names = list(BENCHMARKS) if benchmark == "all" else [benchmark]
    os.makedirs(output_dir, exist_ok=True)
    options = RunOptions(
        batch_size=batch_size,
        limit=limit,
        scoring=scoring,
        blank_images=blank_images,
        max_new_tokens=max_new_tokens,
        rules=rules,
        circular=circular,
        strict=strict,
        overwrite=overwrite,
        progress=progress,
        split=split,
    )
    results = {
        "model": model_path or getattr(getattr(model, "config", None), "_name_or_path", "") or "(in-memory model)",
        "model_sha256": model_sha256 or model_fingerprint(model, model_path),
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": options.report_settings(),
        "benchmarks": {},
    }
    for name in names:
        path = data_dir if benchmark != "all" else find_benchmark_data(data_dir, name)
        if path is None:
            results.setdefault("missing_benchmarks", []).append(name)
            continue
        results["benchmarks"][name] = run_benchmark(
            model, processor, name, path, output_dir, options, results["model"], results["model_sha256"]
        )
    if not results["benchmarks"]:
        raise BenchmarkFormatError(f"no benchmark data found under {data_dir!r} for {names}")
    _carry_over(results, os.path.join(output_dir, "results.json"))
    results["summary"] = summary(results["benchmarks"])
    results["table4"] = table4(results["benchmarks"])
    results["files"] = write_report(results, output_dir, plots=plots)
    return results


def _carry_over(results: dict, path: str) -> None:
    """Keep the other benchmarks of an earlier report in the same folder made with the same model and settings, so
    one benchmark per call still adds up to one report."""
    try:
        with open(path, encoding="utf-8") as handle:
            earlier = json.load(handle)
    except (OSError, ValueError):
        return
    same_model = (earlier.get("model"), earlier.get("model_sha256")) == (results["model"], results["model_sha256"])
    if not same_model or earlier.get("settings") != results["settings"]:
        return
    for name, bench in (earlier.get("benchmarks") or {}).items():
        results["benchmarks"].setdefault(name, bench)


# The protocol each benchmark's own evaluation uses (docs/evaluation.md, "Scoring conventions"): SEED-Bench ranks the
# options by likelihood; MME, POPE and MMBench read a generated answer.
OFFICIAL_SCORING = {"seed": "likelihood"}
SCORING_CHOICES = ("official", "generate", "likelihood")


def resolve_scoring(scoring: str, benchmark: str) -> str:
    """The scoring one benchmark runs with: `"official"` picks its own protocol; likelihood ranking exists only for
    the multiple-choice benchmarks (SEED, MMBench), so the others always generate."""
    if scoring not in SCORING_CHOICES:
        raise ValueError(f"scoring must be one of {SCORING_CHOICES}, got {scoring!r}")
    if scoring == "official":
        return OFFICIAL_SCORING.get(benchmark, "generate")
    return scoring if benchmark in ("seed", "mmbench", "mmbench_cn") else "generate"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How `evaluate` runs each benchmark: its keyword arguments of the same names (the defaults live there)."""

    batch_size: int
    limit: int | None
    scoring: str
    blank_images: bool
    max_new_tokens: int
    rules: str
    circular: bool
    strict: bool
    overwrite: bool
    progress: bool
    split: str | None

    def report_settings(self) -> dict:
        """The settings a report records (those that change the scores)."""
        keep = ("scoring", "batch_size", "limit", "max_new_tokens", "blank_images", "rules", "circular", "split")
        return {key: getattr(self, key) for key in keep}


def run_benchmark(
    model, processor, name: str, path: str, output_dir: str, options: RunOptions, model_path: str, model_sha256: str
) -> dict:
    """Load, predict (resuming), score and describe one benchmark."""
    from .runner import RunSettings, run_predictions  # heavy

    loaded = load_benchmark(name, path, circular=options.circular, strict=options.strict, split=options.split)
    records = limit_records(loaded.records, options.limit)
    used_scoring = resolve_scoring(options.scoring, name)
    settings = RunSettings(
        name, used_scoring, options.max_new_tokens, options.blank_images, model=model_path, model_sha256=model_sha256
    )
    predictions_path = os.path.join(output_dir, f"predictions_{name}.jsonl")
    if options.overwrite and os.path.exists(predictions_path):
        os.remove(predictions_path)
    rows, timing = run_predictions(
        model, processor, records, predictions_path, settings, options.batch_size, options.progress
    )
    predictions = {r.uid: rows[r.uid]["prediction"] for r in records}
    scores = score_predictions(name, records, predictions, options.rules, used_scoring)
    if name == "mme":
        mme.write_official_results(records, predictions, os.path.join(output_dir, "mme_official_format"))
    return {
        "data": os.path.abspath(path),
        "layout": loaded.layout,
        "scoring": used_scoring,
        "samples": len(records),
        "skipped": loaded.skipped,
        "image_errors": sum(1 for r in records if "error" in rows[r.uid]),
        "unreadable_images": len({r.image_path or r.uid for r in records if "error" in rows[r.uid]}),
        "timing": timing,
        "conventions": CONVENTIONS[name],
        "scores": scores,
        "predictions_file": predictions_path,
    }


__all__ = [
    "RunOptions",
    "evaluate",
    "find_benchmark_data",
    "limit_records",
    "load_benchmark",
    "run_benchmark",
    "score_predictions",
]
