"""Stage 3's forgetting (issue 23): the demo's stage 3 (tool plans, 300 updates) from one stage-2 checkpoint, with the
demo's settings and with more replay of the stage-2 rows, a lower learning rate or ITG weighted by rows instead of
tokens (`itg_reduction="sample"`), three training seeds each.
Scores: the held-out skills the stage-2 model had (the demo's skill set, generation as the demo's report) and the
held-out plans (valid share, argument match).

    python experiments/stage3_forgetting/stage3_replay.py --demo-dir /tmp/demo_new_s0 \
        --out experiments/stage3_forgetting/results
    mage demo --strict --seed 0 --set stage1_sea_weight=1 --output-dir /tmp/demo_sea_s0      # SEA in stage 1
    python experiments/stage3_forgetting/stage3_replay.py --demo-dir /tmp/demo_sea_s0 --settings demo sample \
        --out experiments/stage3_forgetting/results_sea_s0

`--demo-dir` is a `mage demo` output folder (its `models/stage2` and `data/`); one JSON per (setting, seed) is written
to `--out` and a finished one is not run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from evaluation.skills import skill_accuracy  # noqa: E402
from mage_cli.demo_stages import DemoSettings, train_stage  # noqa: E402
from modeling_mage import MageForConditionalGeneration  # noqa: E402
from processing_mage import MageProcessor  # noqa: E402
from tool_use.eval_plans import evaluate_plan_model  # noqa: E402

# name: (replay_ratio, learning_rate, itg_reduction); "demo" is the demo's stage 3 until 2026-12-07 (the demo now runs
# "sample_replay0.5", `DemoSettings.stage3_*`); "sample": every
# row weighs alike in ITG, so the replayed rows' share of the loss is their share of the rows (token_shares.py)
SETTINGS = {
    "demo": (0.1, 1e-3, "token"),
    "replay0.5": (0.5, 1e-3, "token"),
    "lr2e-4": (0.1, 2e-4, "token"),
    "replay0.5_lr2e-4": (0.5, 2e-4, "token"),
    "sample": (0.1, 1e-3, "sample"),
    "sample_replay0.25": (0.25, 1e-3, "sample"),
    "sample_replay0.5": (0.5, 1e-3, "sample"),
    # LLaVA's modality grouping: a batch holds only replayed image rows or only (long, text-only) tool rows, so the
    # short replayed rows are not padded to a plan's length (a fourth element: further recipe fields)
    "sample_replay0.5_grouped": (0.5, 1e-3, "sample", {"group_by_modality_length": True}),
    # more stage-3 updates, so the tool rows seen match the 10 %-replay stage 3's (`steps` replaces the demo's count)
    "sample_replay0.5_steps450": (0.5, 1e-3, "sample", {"steps": 450}),
    "sample_replay0.5_steps600": (0.5, 1e-3, "sample", {"steps": 600}),
}
# LoRA on the LM (r 16, alpha 32; the projector fully trained, as `mage train --lora`), merged after training: the
# base weights that hold the stage-2 skills stay as they were; name: (replay_ratio, learning_rate, itg_reduction)
LORA_SETTINGS = {"lora16": (0.1, 2e-3, "token")}
LORA_R, LORA_ALPHA = 16, 32


def score(model_path: Path, data: Path, plans_limit: int) -> dict:
    model = MageForConditionalGeneration.from_pretrained(model_path).eval()
    processor = MageProcessor.from_pretrained(model_path)
    skills = skill_accuracy(model, processor, data / "eval" / "skills" / "skills.jsonl")
    plans = evaluate_plan_model(
        model, processor, data / "eval" / "stage3_tools.json", batch_size=16, limit=plans_limit, max_new_tokens=160
    )
    keep = ("parse_rate", "valid_rate", "exact_match", "node_f1", "arg_value_f1")
    return {"skills": skills, "plans": {k: v for k, v in plans.items() if k in keep and not isinstance(v, dict)}}


def training_report(work: Path) -> dict:
    """The last logged ITG/ITDM and the metrics of the run's `training_report.json` (the adapter's, for LoRA)."""
    for folder in ("stage3", "adapter"):
        path = work / folder / "training_report.json"
        if path.is_file():
            report = json.loads(path.read_text())
            return {k: v for k, v in report.items() if k not in ("recipe", "skipped_report")}
    return {}


def train_lora(
    stage2: Path, data: Path, work: Path, settings: DemoSettings, seed: int, overrides: dict, steps: int
) -> Path:
    """The demo's stage 3 (`train_stage`, `steps` updates) with LoRA adapters on the LM, merged into a plain
    checkpoint."""
    from training.lora import merge_lora

    adapter = train_stage(
        "stage3_tiny",
        stage2,
        data / "train" / "stage3_tools.json",
        work / "adapter",
        steps,
        settings,
        seed,
        "cpu",
        mode="lora",
        lora_r=LORA_R,
        lora_alpha=LORA_ALPHA,
        **overrides,
    )
    return merge_lora(adapter, work / "stage3", base_model=stage2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=[*SETTINGS, *LORA_SETTINGS])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--plans", type=int, default=60, help="held-out plan requests scored (the demo's limit)")
    args = p.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    data, stage2 = args.demo_dir / "data", args.demo_dir / "models" / "stage2"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    base_file = args.out / "stage2.json"
    if not base_file.is_file():
        base_file.write_text(json.dumps({"model": str(stage2), "commit": commit, **score(stage2, data, args.plans)}))
    settings = DemoSettings()
    for name in args.settings:
        replay, lr, reduction, *extra = SETTINGS[name] if name in SETTINGS else LORA_SETTINGS[name]
        extra_fields = dict(extra[0]) if extra else {}
        steps = extra_fields.pop("steps", settings.stage3_steps)
        for seed in args.seeds:
            out_file = args.out / f"{name}_seed{seed}.json"
            if out_file.is_file():
                continue
            work = Path(tempfile.mkdtemp(prefix="stage3_"))
            t0 = time.time()
            overrides = {
                "replay_data": str(data / "train" / "stage2_instructions.json"),
                "replay_ratio": replay,
                "learning_rate": lr,
                "max_length": 512,
                "itg_reduction": reduction,
                **extra_fields,
            }
            if name in LORA_SETTINGS:
                model = train_lora(stage2, data, work, settings, seed, overrides, steps)
            else:
                model = train_stage(
                    "stage3_tiny",
                    stage2,
                    data / "train" / "stage3_tools.json",
                    work / "stage3",
                    steps,
                    settings,
                    seed,
                    "cpu",
                    **overrides,
                )
            result = {
                "setting": name,
                "replay_ratio": replay,
                "learning_rate": lr,
                "itg_reduction": reduction,
                "extra_recipe_fields": extra_fields,
                "seed": seed,
                "steps": steps,
                "settings": dataclasses.asdict(settings),
                "commit": commit,
                "train_s": round(time.time() - t0, 1),
                "training_report": training_report(work),
                **score(model, data, args.plans),
            }
            out_file.write_text(json.dumps(result, indent=1))
            print(name, seed, result["skills"], result["plans"], flush=True)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
