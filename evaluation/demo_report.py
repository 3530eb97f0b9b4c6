"""The demo's report: its table row per checkpoint, the table and plot, the old verdict (`judge`) and the `--strict`
targets of `mage demo` (held-out skills beside the benchmark splits, each against the grey-image baseline)."""

from __future__ import annotations

import math
from pathlib import Path

from shapeworld.skills import SKILLS


def headline(scores: dict) -> dict[str, float]:
    """The numbers of the demo table, all in percent (MME perception normalised by its maximum)."""
    row = {"MME^P": scores.get("MME^P", float("nan"))}
    row["POPE acc"] = scores.get("pope_details", {}).get("accuracy_mean", float("nan"))
    row["POPE F1"] = scores.get("POPE", float("nan"))
    row["MMB"] = scores.get("MMB", float("nan"))
    row["MMB^cn"] = scores.get("MMB^cn", float("nan"))
    row["SEED"] = scores.get("SEED^I", float("nan"))
    plans = scores.get("plans")
    if plans:
        row["plan valid %"] = 100 * plans.get("valid_rate", float("nan"))
        row["plan node F1"] = 100 * plans.get("node_f1", float("nan"))
        row["plan edge F1"] = 100 * plans.get("edge_f1", float("nan"))
    return row


def format_table(rows: dict[str, dict[str, float]]) -> str:
    columns = []
    for row in rows.values():
        columns += [c for c in row if c not in columns]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, row in rows.items():
        cells = [f"{row[c]:.1f}" if c in row and row[c] == row[c] else "–" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_table(rows: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib  # heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy

    columns = [c for c in ("POPE acc", "MMB", "SEED", "plan valid %") if any(c in r for r in rows.values())]
    figure, axis = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(rows))
    for index, (name, row) in enumerate(rows.items()):
        values = [row.get(c, 0.0) if row.get(c, 0.0) == row.get(c, 0.0) else 0.0 for c in columns]
        axis.bar([i + index * width for i in range(len(columns))], values, width, label=name)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(columns))], columns)
    axis.set_ylabel("percent")
    axis.set_title("MAGE demo on ShapeWorld: every stage vs the untrained model and the text-only baseline")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# -------------------------------------------------------------------------------------------------------- main


# POPE accuracy, not F1: on POPE's balanced splits a constant answer scores 50 % accuracy but 66.7 F1 ("yes") or 0
# ("no"), so F1 let an always-"yes" model beat an always-"no" one by 67 points (a run whose stage 3 answered "yes" to
# everything and whose grey-image baseline answered "no" passed the F1 verdict).
IMAGE_DEPENDENT = ("POPE acc", "MMB", "SEED")


def judge(rows: dict[str, dict[str, float]], margin: float = 5.0) -> dict:
    """Does the trained model beat the untrained model and the text-only baseline by `margin` points on the
    image-dependent splits (mean of POPE accuracy, MMBench and SEED)?"""

    def mean(row):
        values = [row[c] for c in IMAGE_DEPENDENT if c in row and row[c] == row[c]]
        return sum(values) / len(values) if values else float("nan")

    trained, untrained, blank = mean(rows["stage 3"]), mean(rows["untrained"]), mean(rows["text-only baseline"])
    wins = trained >= untrained + margin and trained >= blank + margin
    lines = [
        f"image-dependent mean (POPE accuracy, MMBench, SEED): trained {trained:.1f}, untrained {untrained:.1f}, "
        f"text-only baseline {blank:.1f}",
        f"the trained model beats both by ≥ {margin:.0f} points: {wins}",
    ]
    plans2, plans3 = rows.get("stage 2", {}).get("plan valid %"), rows.get("stage 3", {}).get("plan valid %")
    if plans3 is not None and plans2 is not None:
        lines.append(f"valid tool plans: stage 2 {plans2:.0f} %, stage 3 {plans3:.0f} %")
    return {
        "trained": trained,
        "untrained": untrained,
        "text_only": blank,
        "margin": margin,
        "trained_beats_baselines": wins,
        "lines": lines,
    }


def format_skills(skills: dict[str, dict]) -> str:
    """Markdown table of held-out per-skill accuracy (percent) per checkpoint."""
    lines = ["| held-out skill accuracy (%) | " + " | ".join(SKILLS) + " |", "|---|" + "---:|" * len(SKILLS)]
    for name, scores in skills.items():
        cells = [f"{100 * scores[k]:.1f}" if k in scores else "–" for k in SKILLS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def strict_targets(raw: dict[str, dict]) -> dict:
    """The `--strict` targets of the demo (issue 23), each with its value and by how much it is missed. Reads the
    stage-3 model, the stage-2 model and the text-only (grey-image) baseline from `raw` (`evaluate_checkpoint`)."""
    final, before, grey = raw["stage 3"], raw.get("stage 2", {}), raw["text-only baseline"]
    checks: list[tuple[str, float, float, str]] = []  # (what, value, threshold, comparison: ">=", "<=" or ">")
    for split in ("random", "popular", "adversarial"):
        value = final.get("pope_details", {}).get("splits", {}).get(split, {}).get("accuracy", float("nan"))
        checks.append((f"POPE {split} accuracy ≥ 75", value, 75.0, ">="))
        value = grey.get("pope_details", {}).get("splits", {}).get(split, {}).get("accuracy", float("nan"))
        checks.append((f"POPE {split} accuracy with grey images ≤ 55", value, 55.0, "<="))
    for skill in ("existence", "colour", "count"):
        checks.append((f"held-out {skill} ≥ 85 %", 100 * final.get("skills", {}).get(skill, float("nan")), 85.0, ">="))
    grey_mme = grey.get("MME^P", float("nan"))
    checks.append(("MME perception ≥ 1.3 × grey's", final.get("MME^P", float("nan")), 1.3 * grey_mme, ">="))
    grey_seed = grey.get("SEED^I", float("nan"))
    checks.append(("SEED ≥ grey's + 15", final.get("SEED^I", float("nan")), grey_seed + 15, ">="))
    grey_mmb = grey.get("MMB", float("nan"))
    checks.append(("MMBench (CircularEval) > grey's", final.get("MMB", float("nan")), grey_mmb, ">"))
    for skill in SKILLS:
        kept, had = final.get("skills", {}).get(skill), before.get("skills", {}).get(skill)
        if kept is not None and had is not None:
            checks.append((f"stage 3 keeps ≥ 90 % of stage 2's {skill}", 100 * kept, 90 * had, ">="))
    plans = final.get("plans", {})
    checks.append(("valid plans ≥ 90 %", 100 * plans.get("valid_rate", float("nan")), 90.0, ">="))
    checks.append(("plan argument values F1 ≥ 80 %", 100 * plans.get("arg_value_f1", float("nan")), 80.0, ">="))
    rows, lines = [], []
    for what, value, target, comparison in checks:
        met = {">=": value >= target, "<=": value <= target, ">": value > target}[comparison]  # NaN: not met
        rows.append({"target": what, "value": value, "threshold": target, "comparison": comparison, "met": bool(met)})
        needs = {">=": "≥", "<=": "≤", ">": ">"}[comparison] + f" {target:.1f}"
        missed = "" if comparison == ">" or math.isnan(value) else f", missed by {abs(value - target):.1f}"
        lines.append(
            f"{'met' if met else 'NOT MET'}: {what} — {value:.1f}" + ("" if met else f" (needs {needs}{missed})")
        )
    all_met = all(r["met"] for r in rows)
    lines.append(f"--strict targets met: {sum(r['met'] for r in rows)}/{len(rows)}" + (" (all)" if all_met else ""))
    return {"checks": rows, "all_met": all_met, "lines": lines}
