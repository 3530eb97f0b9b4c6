"""Report: `results.json`, a Markdown table beside the paper's numbers, and matplotlib PNGs.

Paper numbers are quoted exactly from MAGE's Table 1 (7B and 13B rows with 144 IAN tokens, and LLaVA-1.5), as strings,
so "1510/-" stays what the paper printed. MME is shown as perception/cognition like the paper.
"""

from __future__ import annotations

import json
import os
import subprocess

COLUMNS = ("MMB", "MMB^cn", "SEED^I", "MME", "POPE")
# Table 1 of the MAGE paper (columns MMB, MMB^cn, SEED^I, MME (perception/cognition), POPE), copied verbatim.
PAPER_ROWS = {
    "MAGE-7B (paper, IAN 144)": ("71.2", "70.3", "65.3", "1572/323", "86.7"),
    "MAGE-13B (paper, IAN 144)": ("73.9", "73.0", "67.8", "1632/312", "89.9"),
    "LLaVA-1.5-7B (paper Table 1)": ("64.3", "58.3", "58.6", "1510/-", "85.9"),
    "LLaVA-1.5-13B (paper Table 1)": ("67.7", "63.6", "61.6", "1531/-", "85.9"),
}
CONVENTIONS = {
    "mme": "score per subtask = 100·acc + 100·acc+ (acc over questions, acc+ over images with both questions right, "
    "grouped by (subtask, image)); perception = sum of the 10 perception subtasks (max 2000), cognition = sum of the "
    "4 cognition subtasks (max 800); answers read with the rules named below (official: calculation.py, lower-cased, "
    "not stripped).",
    "pope": "per split: accuracy, precision, recall, F1 with 'yes' positive, yes-ratio = share of answers read as yes; "
    "answers read with the rules named below (official: LLaVA eval_pope.py, first sentence, a word 'No'/'not'/'no' "
    "=> no, anything else, even empty, => yes); POPE = unweighted mean F1 over the splits present.",
    "mmbench": "CircularEval: a question is right only if every row of its group is; overall and per category = mean "
    "over questions; answers read with the rules named below (official: VLMEvalKit's current can_infer, groups "
    "without their original-order row skipped), unresolved = wrong and counted (no API judge).",
    "seed": "accuracy per dimension (question_type_id 1-9); overall = mean over all image questions (question-weighted); "
    "dimension_mean = unweighted mean of the dimensions; a generated answer is read with the rules named below "
    "(official: LLaVA convert_seed_for_submission.py, prediction == answer exactly).",
}
CONVENTIONS["mmbench_cn"] = CONVENTIONS["mmbench"]


def git_commit(path: str | None = None) -> str:
    """The checkout's HEAD commit (with "+dirty" if it has local changes), or "unknown"."""
    cwd = path or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# Maximum of each headline number, for the normalised average (Avg^N) in percent.
MAXIMA = {"MMB": 100.0, "MMB^cn": 100.0, "SEED^I": 100.0, "MME^P": 2000.0, "MME^C": 800.0, "POPE": 100.0}
# The six spatial tasks of the paper's Table 4: (benchmark, subtask/category, maximum).
TABLE4 = {
    "MME POS": ("mme", "position", 200.0),
    "MMB SR": ("mmbench", "spatial_relationship", 100.0),
    "MMB OL": ("mmbench", "object_localization", 100.0),
    "MMB PR": ("mmbench", "physical_relation", 100.0),
    "SEED SR": ("seed", "Spatial Relation", 100.0),
    "SEED IL": ("seed", "Instance Location", 100.0),
}


def avg_n(values: dict[str, float], maxima: dict[str, float]) -> float:
    """Normalised average: mean of `100 · value / maximum`. Reproduces Table 4's Avg^N (e.g. B1: MME POS 140/200 and
    five accuracies 24.4, 40.7, 70.8, 48.9, 60.9 → 52.6)."""
    return sum(100 * v / maxima[k] for k, v in values.items()) / len(values)


def table4(benchmarks: dict[str, dict]) -> dict[str, float]:
    """The Table-4 spatial subtasks present in this run, plus their Avg^N when all six are present."""
    out = {}
    for name, (bench, key, _) in TABLE4.items():
        scores = benchmarks.get(bench, {}).get("scores", {})
        items = scores.get("subtasks") or scores.get("categories") or scores.get("dimensions") or {}
        if key in items:
            out[name] = items[key]["score"] if isinstance(items[key], dict) else items[key]
    if len(out) == len(TABLE4):
        out["Avg^N"] = avg_n(out, {k: m for k, (_, _, m) in TABLE4.items()})
    return out


def summary(benchmarks: dict[str, dict]) -> dict[str, float]:
    """The headline numbers in the paper's columns from per-benchmark scores, and their Avg^N (all in percent but
    MME, which is normalised by its maximum: perception /2000, cognition /800)."""
    out = {}
    if "mmbench" in benchmarks:
        out["MMB"] = benchmarks["mmbench"]["scores"]["circular_accuracy"]
    if "mmbench_cn" in benchmarks:
        out["MMB^cn"] = benchmarks["mmbench_cn"]["scores"]["circular_accuracy"]
    if "seed" in benchmarks:
        out["SEED^I"] = benchmarks["seed"]["scores"]["overall"]
    if "mme" in benchmarks:
        out["MME^P"] = benchmarks["mme"]["scores"]["perception"]
        out["MME^C"] = benchmarks["mme"]["scores"]["cognition"]
    if "pope" in benchmarks:
        out["POPE"] = benchmarks["pope"]["scores"]["f1_mean"]
    if out:
        out["Avg^N"] = avg_n(out, MAXIMA)
    return out


def lmms_eval_line(name: str, scores: dict) -> str | None:
    """lmms-eval's variant of a benchmark's headline number, labelled, when it differs from the official one."""
    lmms = scores.get("lmms_eval")
    if not lmms:
        return None
    if name == "mme":
        if (round(lmms["perception"], 6), round(lmms["cognition"], 6)) == (
            round(scores["perception"], 6),
            round(scores["cognition"], 6),
        ):
            return None
        return f"lmms-eval reading: MME {lmms['perception']:.1f}/{lmms['cognition']:.1f} (perception/cognition)"
    if name == "pope":
        pooled = lmms.get("pooled") or {}
        if not pooled or round(pooled["f1"], 6) == round(scores["f1_mean"], 6):
            return None
        return (
            f"lmms-eval reading: POPE F1 {pooled['f1']:.1f} pooled over the splits (exact 'yes'/'no' after "
            f"lower/strip), accuracy {pooled['accuracy']:.1f}"
        )
    if name in ("mmbench", "mmbench_cn"):
        if round(lmms["accuracy"], 6) == round(scores["circular_accuracy"], 6) and not lmms["judge_groups"]:
            return None
        kind = "circular" if lmms.get("circular") else "original order only"
        return (
            f"lmms-eval reading: {lmms['accuracy']:.1f} ({kind}; its prefetch rules; {lmms['judge_groups']} "
            "question(s) would go to its GPT judge, counted wrong here: a lower bound)"
        )
    if name == "seed":
        if round(lmms["overall"], 6) == round(scores["overall"], 6):
            return None
        return f"lmms-eval reading: SEED^I {lmms['overall']:.1f} (stripped, first character, case-insensitive)"
    return None


def markdown_table(results: dict, run_name: str = "this run") -> str:
    """This run's headline numbers beside the paper's rows, plus the averaging conventions used."""
    s = results["summary"]

    def fmt(key: str) -> str:
        return f"{s[key]:.1f}" if key in s else "–"

    mme = f"{s['MME^P']:.0f}/{s['MME^C']:.0f}" if "MME^P" in s else "–"
    lines = [
        "| Model | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
        f"| {run_name} | {fmt('MMB')} | {fmt('MMB^cn')} | {fmt('SEED^I')} | {mme} | {fmt('POPE')} |",
    ]
    lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in PAPER_ROWS.items()]
    if "Avg^N" in s:
        lines += [
            "",
            f"Avg^N of this run (mean of the columns above normalised to 100; MME^P /2000, MME^C /800, over "
            f"{len(s) - 1} number(s)): {s['Avg^N']:.1f}",
        ]
    spatial = results.get("table4") or {}
    if spatial:
        lines += [
            "",
            "Paper Table 4 spatial tasks in this run: " + ", ".join(f"{k} {v:.1f}" for k, v in spatial.items()),
        ]
    lines += [
        "",
        f"Model: `{results['model']}` · commit `{results['git_commit']}` · settings: "
        + ", ".join(f"{k}={v}" for k, v in results["settings"].items()),
        "",
        "Conventions:",
    ]
    for name in results["benchmarks"]:
        lines.append(f"- **{name}**: {CONVENTIONS[name]}")
        extra = results["benchmarks"][name]
        rules = extra.get("scores", {}).get("rules")
        if rules:
            lines.append(f"  - rules: `{rules['set']}` → {rules['name']}: {rules['source']}")
        variant = lmms_eval_line(name, extra.get("scores", {}))
        if variant:
            lines.append(f"  - {variant} [{rules['lmms_eval_source'] if rules else 'lmms-eval'}]")
        if extra.get("unanswered"):
            lines.append(f"  - {extra['unanswered']} question(s) of --data not answered in the predictions file.")
        if extra.get("skipped"):
            lines.append(f"  - {len(extra['skipped'])} item(s) skipped while loading (listed in results.json).")
        if extra.get("image_errors"):
            images = extra.get("unreadable_images", extra["image_errors"])
            lines.append(
                f"  - {extra['image_errors']} question(s) on {images} image(s) that could not be decoded: counted "
                "wrong (rerun to retry them once the images are fixed)."
            )
    return "\n".join(lines) + "\n"


def write_plots(results: dict, output_dir: str) -> list[str]:
    """Per-subtask bar charts and POPE precision/recall; returns the PNG paths written."""
    import matplotlib  # heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy

    paths = []
    bars = {
        "mme": ("subtasks", "score", "MME score per subtask (max 200)"),
        "mmbench": ("categories", None, "MMBench CircularEval accuracy per category (%)"),
        "mmbench_cn": ("categories", None, "MMBench-CN CircularEval accuracy per category (%)"),
        "seed": ("dimensions", None, "SEED-Bench accuracy per dimension (%)"),
    }
    for name, (key, field, title) in bars.items():
        if name not in results["benchmarks"]:
            continue
        items = results["benchmarks"][name]["scores"][key]
        values = [v[field] if field else v for v in items.values()]
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(items) + 2), 3.5))
        ax.bar(range(len(items)), values, color="tab:blue")
        ax.set_xticks(range(len(items)), list(items), rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        paths.append(os.path.join(output_dir, f"{name}_subtasks.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    if "pope" in results["benchmarks"]:
        splits = results["benchmarks"]["pope"]["scores"]["splits"]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        x = range(len(splits))
        ax.bar([i - 0.2 for i in x], [v["precision"] for v in splits.values()], width=0.4, label="precision")
        ax.bar([i + 0.2 for i in x], [v["recall"] for v in splits.values()], width=0.4, label="recall")
        ax.set_xticks(list(x), list(splits))
        ax.set_ylim(0, 100)
        ax.set_title("POPE precision / recall per split (%)", fontsize=10)
        ax.legend()
        fig.tight_layout()
        paths.append(os.path.join(output_dir, "pope_precision_recall.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def write_report(results: dict, output_dir: str, plots: bool = True) -> dict[str, str]:
    """Write results.json, results.md and the PNGs into `output_dir`; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, "results.json"), "markdown": os.path.join(output_dir, "results.md")}
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, ensure_ascii=False)
    with open(paths["markdown"], "w", encoding="utf-8") as handle:
        handle.write(markdown_table(results))
    if plots:
        for i, path in enumerate(write_plots(results, output_dir)):
            paths[f"plot{i}"] = path
    return paths


__all__ = [
    "CONVENTIONS",
    "PAPER_ROWS",
    "TABLE4",
    "avg_n",
    "git_commit",
    "lmms_eval_line",
    "table4",
    "markdown_table",
    "summary",
    "write_plots",
    "write_report",
]
