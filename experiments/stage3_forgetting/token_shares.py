"""How much of stage 3's supervised signal the replayed stage-2 rows carry: ITG is a mean over every supervised
(assistant) token in a batch, so a row counts by its answer's length. Reads the demo's stage-2 and stage-3 rows and
its tokenizer; prints answer tokens per row and the replayed rows' share of the supervised tokens at some replay ratios,
and a stage-3 row's tokens by turn (system prompt with the tool list, request, plan).

    python experiments/stage3_forgetting/token_shares.py \\
        --data experiments/demo_ladder/cache/demo_stage0_seed0/data \\
        --tokenizer experiments/demo_ladder/cache/demo_stage0_seed0/models/stage0 \\
        --out experiments/stage3_forgetting/token_shares.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from transformers import PreTrainedTokenizerFast

ROLES = ("system", "human", "gpt")


def turn_tokens(rows: list[dict], tokenizer, limit: int, role: str, per_turn: int = 0) -> list[int]:
    """Tokens per row in the turns of `role` ("system", "human", "gpt"), plus `per_turn` for each such turn."""
    return [
        sum(len(tokenizer(t["value"], add_special_tokens=False)["input_ids"]) + per_turn for t in row["conversations"]
            if t["from"] == role)
        for row in rows[:limit]
    ]  # fmt: skip


def answer_tokens(rows: list[dict], tokenizer, limit: int) -> list[int]:
    """Supervised tokens per row: every assistant turn's tokens plus its end-of-sequence token."""
    return turn_tokens(rows, tokenizer, limit, "gpt", per_turn=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the demo's data folder (mage demo's data/)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="a demo checkpoint (its tokenizer.json)")
    parser.add_argument("--rows", type=int, default=2000, help="rows read from each file")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(args.tokenizer / "tokenizer.json"))
    train = args.data / "train"
    tool_rows = json.loads((train / "stage3_tools.json").read_text())
    tools = answer_tokens(tool_rows, tokenizer, args.rows)
    # where a stage-3 row's tokens go: the system prompt (the tool list), the request, the plan
    turns = {role: statistics.fmean(turn_tokens(tool_rows, tokenizer, args.rows, role)) for role in ROLES}
    questions = answer_tokens(json.loads((train / "stage2_instructions.json").read_text()), tokenizer, args.rows)
    tool_mean, question_mean = statistics.fmean(tools), statistics.fmean(questions)
    shares = {
        str(ratio): ratio * question_mean / (ratio * question_mean + (1 - ratio) * tool_mean)
        for ratio in (0.1, 0.25, 0.5, 0.75, 0.9)
    }
    result = {
        "command": "python experiments/stage3_forgetting/token_shares.py "
        + f"--data {args.data} --tokenizer {args.tokenizer} --rows {args.rows}",
        "rows_read": args.rows,
        "stage3_answer_tokens_per_row": round(tool_mean, 2),
        "stage2_answer_tokens_per_row": round(question_mean, 2),
        "replayed_share_of_supervised_tokens": {k: round(v, 4) for k, v in shares.items()},
        "stage3_tokens_per_row_by_turn": {role: round(v, 2) for role, v in turns.items()},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
