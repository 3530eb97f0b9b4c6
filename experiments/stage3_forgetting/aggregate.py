"""The stage-3 table: mean ± std over seeds per setting of results/*.json, beside the stage-2 checkpoint's scores.

    python experiments/stage3_forgetting/aggregate.py [--results DIR] [--readme README.md]

With --readme the table is also written between the file's `<!-- table -->` and `<!-- /table -->` lines.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKILLS = ("existence", "colour", "shape", "count", "relation")
PLANS = ("valid_rate", "node_f1", "arg_value_f1")


def fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--readme", type=Path, default=None)
    args = p.parse_args()
    base = json.loads((args.results / "stage2.json").read_text())
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(args.results.glob("*_seed*.json")):
        run = json.loads(path.read_text())
        runs[run["setting"]].append(run)
    head = "| setting | replay | peak LR | seeds | " + " | ".join(SKILLS + PLANS) + " |"
    lines = [head, "|---|---|---|---|" + "---|" * (len(SKILLS) + len(PLANS))]
    lines.append(
        "| stage 2 (start) | – | – | – | "
        + " | ".join(f"{base['skills'][s]:.3f}" for s in SKILLS)
        + " | "
        + " | ".join(f"{base['plans'][k]:.3f}" for k in PLANS)
        + " |"
    )
    for setting, group in runs.items():
        lines.append(
            f"| {setting} | {group[0]['replay_ratio']} | {group[0]['learning_rate']:g} | "
            + ",".join(str(r["seed"]) for r in group)
            + " | "
            + " | ".join(fmt([r["skills"][s] for r in group]) for s in SKILLS)
            + " | "
            + " | ".join(fmt([r["plans"][k] for r in group]) for k in PLANS)
            + " |"
        )
    print("\n".join(lines))
    if args.readme:
        text = args.readme.read_text()
        start, end = text.index("<!-- table -->\n"), text.index("<!-- /table -->")
        args.readme.write_text(text[: start + len("<!-- table -->\n")] + "\n".join(lines) + "\n" + text[end:])


if __name__ == "__main__":
    main()
