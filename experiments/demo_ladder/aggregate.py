"""The ladder table: mean ± std over seeds of every rung in results/*.json (markdown, printed).

python experiments/demo_ladder/aggregate.py [--results DIR] [--json OUT] [--readme README.md]

With --readme the table is also written into that file between its `<!-- table -->` and `<!-- /table -->` lines.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
TYPES = ("exist", "colour", "count", "position", "mean")


def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--json", type=Path, default=None, help="also write the aggregated numbers here")
    p.add_argument("--readme", type=Path, default=None, help="also put the table into this markdown file")
    args = p.parse_args()
    rungs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(args.results.glob("*.json")):
        run = json.loads(path.read_text())
        rungs[re.sub(r"_seed\d+$", "", run["name"])].append(run)
    out = {}
    lines = ["| rung | seeds | " + " | ".join(TYPES) + " | blank-image mean | curve (mean) | S2 steps/s |"]
    lines.append("|---|---|" + "---|" * (len(TYPES) + 3))
    for rung, runs in rungs.items():
        final = {t: [r["eval"]["final_image"][t] for r in runs] for t in TYPES}
        blank = [r["eval"]["final_blank_image"]["mean"] for r in runs]
        marks = sorted({k for r in runs for k in r["eval"] if k.startswith("S2@")}, key=lambda k: int(k[3:]))
        curve = {k: [r["eval"][k]["mean"] for r in runs if k in r["eval"]] for k in marks}
        speed = [r["stages"]["S2_proj_llm"]["steps_per_s"] for r in runs if "S2_proj_llm" in r["stages"]]
        if speed:
            steps = runs[0]["stages"]["S2_proj_llm"]["steps"]
            curve_text = (
                ", ".join(f"{k[3:]}: {statistics.fmean(v):.2f}" for k, v in curve.items())
                + f", {steps}: "
                + (f"{statistics.fmean(final['mean']):.2f}")
            )
        else:  # --eval-only: a checkpoint scored as it is
            curve_text = "(scored only)"
        seeds = ",".join(str(r["args"]["seed"]) for r in runs)
        lines.append(
            f"| {rung} | {seeds} | "
            + " | ".join(fmt(final[t]) for t in TYPES)
            + f" | {fmt(blank)} | {curve_text} | {fmt(speed, 1)} |"
        )
        out[rung] = {
            "seeds": seeds,
            "final": final,
            "blank_mean": blank,
            "curve": curve,
            "s2_steps_per_s": speed,
            "commits": sorted({r.get("commit", "") for r in runs}),
        }
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if args.readme:
        text = args.readme.read_text()
        start, end = text.index("<!-- table -->\n"), text.index("<!-- /table -->")
        args.readme.write_text(text[: start + len("<!-- table -->\n")] + "\n".join(lines) + "\n" + text[end:])


if __name__ == "__main__":
    main()
