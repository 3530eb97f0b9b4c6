"""The main job, offline, on the embedded ShapeWorld: generate data → build a tiny MAGE → stage 0 (text LM + CLIP-style
tower) → stage 1 → stage 2 → stage 3 through `mage train`'s code path → evaluate every stage, the untrained model and
a text-only baseline → report → save with a model card → reload in a fresh process → answer → run one agent request.

    mage demo                                   # about 10 minutes on 2 CPU cores, everything under ./mage-demo
    mage demo --quick                           # a shortened run that checks every step works (about 2 minutes)
    mage demo --size small --steps 3000 --device cuda --output-dir runs/demo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shapeworld import Difficulty, get_difficulty
from shapeworld.skills import SKILLS

OWNER_MARK = ".mage-demo"  # marks an output folder as the demo's own
# Questions the reloaded model answers about a new scene (step 9).
NEW_SCENE_QUESTIONS = ["What colour is the circle?", "How many shapes are there?"]
AGENT_REQUEST = "Draw a red circle to the left of a blue square, then describe the picture."


@dataclass
class DemoSettings:
    """Sizes and step budgets of one demo run (`--quick` and `--size` pick a preset). The stage budgets, optimizer
    settings and one-question rows are the learning ladder's regime (experiments/demo_ladder, docs/DECISIONS.md)."""

    n_train: int = 20000  # stage-2 rows, one scene and one question each
    n_eval: int = 100
    # 48 px = 3 × 3 patches of 16 px, one per cell of ShapeWorld's 3 × 3 grid: no object straddles a patch border
    image_size: int = 48
    difficulty: str = "easy"
    vocab_size: int = 2000  # above what the byte-level BPE uses on ShapeWorld text, so every word is one token
    lm_steps: int = 1200  # stage 0, text-only LM (its data holds each conversation twice: plain and in context)
    tower_steps: int = 1500  # stage 0, CLIP-style tower (steps, not seconds: runs must not depend on machine load)
    stage1_steps: int = 1600
    stage2_steps: int = 5000
    stage3_steps: int = 300
    batch_size: int = 32
    # MAGE as the paper defines it: ITG + ITDM, at the ladder's weight, not the paper's 1 (docs/DECISIONS.md)
    itdm_weight: float = 0.1
    skill_questions: int = 400  # held-out questions per skill (existence, colour, shape, count, relation)
    eval_limits: dict = dataclasses.field(
        default_factory=lambda: {"mme": 60, "pope": 300, "mmbench": 50, "mmbench_cn": 30, "seed": 100, "plans": 60}
    )
    num_query_tokens: int = 9  # one query per grid cell (docs/DECISIONS.md)
    # the ladder's optimizer: AdamW β2 0.98, no weight decay, 3 % warm-up, one learning rate for projector and LM
    adam_beta2: float = 0.98
    warmup_ratio: float = 0.03
    # text is encoded before training (pretokenize), so the main process only opens images: the second core runs
    # the side jobs instead (stage 0's tower, evaluations of finished checkpoints)
    dataloader_num_workers: int = 0
    model_overrides: dict = dataclasses.field(default_factory=dict)
    # a short system prompt spends the tiny model's tokens on the rows (training and evaluation read the template)
    system_prompt: str = "A chat about a picture of shapes."
    max_turns: int = 1  # questions per stage-2 row: updates, not tokens per row, are what teach (docs/DECISIONS.md)
    # The stage-2 mix, weighted (a type listed k times is asked k times as often): the held-out skills, the yes/no
    # format of POPE and MME, and the multiple-choice format of MMBench and SEED
    question_types: tuple[str, ...] = (
        ("existence",) * 3
        + ("count_shape",) * 3
        + ("colour",) * 3
        + ("relation",) * 2
        + ("choice",) * 2
        + ("shape", "count", "position")
    )

    def world(self) -> Difficulty:
        """The ShapeWorld `Difficulty` of the demo's data: `difficulty` with the demo's question mix and turns."""
        return dataclasses.replace(
            get_difficulty(self.difficulty), question_types=self.question_types, max_turns=self.max_turns
        )

    @classmethod
    def preset(cls, size: str, quick: bool) -> DemoSettings:
        settings = cls()
        if size == "small":
            settings = dataclasses.replace(
                settings,
                image_size=96,  # 2 × 2 patches per grid cell
                n_train=40000,
                stage2_steps=10000,
                num_query_tokens=16,
                model_overrides={"text_hidden_size": 256, "text_layers": 4},  # tiny_config sizes
            )
        if quick:
            settings = dataclasses.replace(
                settings,
                n_train=600,
                n_eval=16,
                lm_steps=10,
                tower_steps=20,
                stage1_steps=8,
                stage2_steps=12,
                stage3_steps=8,
                batch_size=16,
                eval_limits={"mme": 8, "pope": 24, "mmbench": 6, "mmbench_cn": 4, "seed": 12, "plans": 6},
                skill_questions=16,
            )
        return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--output-dir", type=Path, default=Path("mage-demo"), help="where everything is written")
    parser.add_argument("--seed", type=int, default=0, help="one seed for data and training (runs are repeatable)")
    parser.add_argument("--quick", action="store_true", help="a shortened run that exercises every step")
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny", help="model/data size preset")
    parser.add_argument("--steps", type=int, default=None, help="stage-2 optimizer steps (others scale with it)")
    parser.add_argument("--device", default=None, help="cpu, cuda, … (default: what transformers picks)")
    parser.add_argument("--no-reload", action="store_true", help="skip the fresh-process reload and agent steps")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --output-dir that an earlier `mage demo` did not make (a demo's own folder is "
        "reused without it)",
    )
    parser.add_argument("--itdm-weight", type=float, default=None, help="ITDM weight in stages 1-3 (default 0.1)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless every target of the report's --strict list is met (POPE ≥ 75 per split with grey images "
        "≤ 55; held-out existence, colour, count ≥ 85 %%; MME ≥ 1.3x, SEED ≥ +15, MMBench above the grey-image "
        "baseline; stage 3 keeps ≥ 90 %% of stage 2's skills, ≥ 90 %% valid plans, argument F1 ≥ 80 %%) within 10 minutes",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the tiny model gains nothing from more, and oversubscribed cores on a "
        "busy machine made 2 threads up to 26x slower)",
    )


class Progress:
    """Numbered steps with durations, and a running log file (`demo.log`) beside the results."""

    def __init__(self, total: int, log_path: Path):
        self.total, self.index, self.started = total, 0, time.perf_counter()
        self.log = log_path.open("w", encoding="utf-8")

    def step(self, title: str) -> None:
        self.index += 1
        self.step_started = time.perf_counter()
        self.say(f"[{self.index}/{self.total}] {title} …")

    def done(self, detail: str = "") -> None:
        self.say(f"      done in {time.perf_counter() - self.step_started:.1f}s {detail}".rstrip())

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# ---------------------------------------------------------------------------------------------------------- data
def text_only_rows(paths: dict[str, str]) -> list[dict]:
    """Stage-0 LM data: the ShapeWorld conversations and captions without their images (text the LM must speak),
    plus each conversation again with its scene's caption in front of the first question ("In the picture: …"), so
    the LM learns to answer from a description in its context, as a pretrained LLM can."""
    sources = {key: json.loads(Path(paths[key]).read_text()) for key in ("stage1", "stage2")}
    captions = {row["image"]: row["conversations"][1]["value"] for row in sources["stage1"]}
    rows, in_context = [], []
    for key, source_rows in sources.items():
        for row in source_rows:
            turns = [
                dict(t, value=t["value"].replace("<image>\n", "").replace("<image>", "")) for t in row["conversations"]
            ]
            rows.append({"id": f"text-{row['id']}", "conversations": turns})
            if key == "stage2" and row.get("image") in captions:
                first = dict(turns[0], value=f"In the picture: {captions[row['image']]}.\n{turns[0]['value']}")
                in_context.append({"id": f"context-{row['id']}", "conversations": [first] + turns[1:]})
    return rows + in_context


def build_model(settings: DemoSettings, corpus: list[str], seed: int, out: Path) -> Path:
    from mage_testing.tiny import build_tiny_mage

    model, processor = build_tiny_mage(
        corpus,
        image_size=settings.image_size,
        num_query_tokens=settings.num_query_tokens,
        seed=seed,
        vocab_size=settings.vocab_size,
        system_prompt=settings.system_prompt,
        **settings.model_overrides,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------------------------ training
def train_stage(
    recipe_name: str,
    model_path: Path,
    data: Path,
    out: Path,
    steps: int,
    settings: DemoSettings,
    seed: int,
    device: str | None,
    **recipe_overrides,
) -> Path:
    """One stage through `mage train`'s code path (same recipe files, trainer and checkpoints)."""
    from training.api import train
    from training.recipes import load_recipe

    overrides = {
        "itdm_weight": settings.itdm_weight,
        "max_steps": steps,
        "per_device_train_batch_size": settings.batch_size,
        "seed": seed,
        "logging_steps": max(1, steps // 10),
        "save_steps": max(steps, 1),
        "dataloader_num_workers": settings.dataloader_num_workers,
        "warmup_ratio": settings.warmup_ratio,
        "weight_decay": 0.0,
        "projector_lr": None,
        "group_by_modality_length": False,
        # text encoded once, before training (its ShapeWorld rows are read for several epochs); the data worker then
        # only opens images (benchmarks/trainer_overhead.py)
        "pretokenize": True,
        **recipe_overrides,
    }
    recipe = load_recipe(recipe_name, overrides)
    extra = {"adam_beta2": settings.adam_beta2} | ({"use_cpu": True} if device == "cpu" else {})
    # the demo's own folder (`OWNER_MARK`): a second `mage demo` into it replaces its stages
    return train(recipe, model_path, data, out, disable_tqdm=False, overwrite=True, **extra)


def pretrain_tower(model_path: Path, paths: dict[str, str], settings: DemoSettings, seed: int, out: Path):
    """Stage 0 (vision): CLIP-style pretraining of the tower; returns the report and the saved folder."""
    from PIL import Image

    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor
    from training.pretrain_tower import pretrain_vision_tower

    model = MageForConditionalGeneration.from_pretrained(model_path)
    processor = MageProcessor.from_pretrained(model_path)
    rows = json.loads(Path(paths["stage1"]).read_text())
    folder = Path(paths["stage1"]).parent
    images = [Image.open(folder / row["image"]).convert("RGB") for row in rows]
    captions = [row["conversations"][1]["value"] for row in rows]
    held_out = min(256, len(rows) // 4)
    report = pretrain_vision_tower(
        model,
        processor,
        images,
        captions,
        max_seconds=None,
        max_steps=settings.tower_steps,
        batch_size=min(64, len(rows) - held_out),
        held_out=held_out,
        seed=seed,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return report, out


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def second_core(threads: int):
    """One spawned worker process for the demo's side jobs, run in order beside the main process's training: stage
    0's tower pretraining (it needs nothing from the text LM), then the evaluation of each finished checkpoint. A
    `concurrent.futures.ProcessPoolExecutor`; use it as a context manager."""
    import concurrent.futures
    import multiprocessing

    return concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_set_threads, initargs=(threads,)
    )


def combine_stage0(lm_path: Path, tower_path: Path, out: Path) -> Path:
    """The text LM (and its processor) of `lm_path` with the vision tower of `tower_path`, saved to `out`."""
    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor

    model = MageForConditionalGeneration.from_pretrained(lm_path)
    tower = MageForConditionalGeneration.from_pretrained(tower_path).model.vision_tower
    model.model.vision_tower.load_state_dict(tower.state_dict())
    model.save_pretrained(out)
    MageProcessor.from_pretrained(lm_path).save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------------- evaluation
BENCHMARK_KEYS = ("mme", "pope", "mmbench", "mmbench_cn", "seed")


def evaluate_checkpoint(
    model_path: Path,
    paths: dict[str, str],
    settings: DemoSettings,
    out: Path,
    blank_images: bool = False,
    plans: bool = False,
    device: str | None = None,
) -> dict:
    """Scores of one checkpoint on the ShapeWorld benchmark splits (and the held-out plans)."""
    from evaluation.api import evaluate
    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor

    model = MageForConditionalGeneration.from_pretrained(model_path).eval()
    if device:
        model.to(device)
    processor = MageProcessor.from_pretrained(model_path)
    scores: dict = {}
    for key in BENCHMARK_KEYS:
        results = evaluate(
            model,
            processor,
            key,
            paths[key] if key != "mme" else paths["mme"],
            str(out / key),
            batch_size=32,
            limit=settings.eval_limits[key],
            blank_images=blank_images,
            max_new_tokens=8,
            model_path=str(model_path),
            progress=False,
            plots=False,
            overwrite=True,  # the demo's own folder: an earlier demo's predictions are not this model's
        )
        scores.update(results["summary"])
        scores[f"{key}_details"] = results["benchmarks"][key]["scores"]
    scores.pop("Avg^N", None)
    if paths.get("skills"):
        from evaluation.skills import skill_accuracy

        scores["skills"] = skill_accuracy(model, processor, paths["skills"], blank_images=blank_images)
    if plans:
        from tool_use.eval_plans import evaluate_plan_model

        plan_scores = evaluate_plan_model(
            model,
            processor,
            paths["eval_stage3"],
            output_dir=str(out / "plans"),
            batch_size=16,
            limit=settings.eval_limits["plans"],
            max_new_tokens=160,
        )
        scores["plans"] = plan_scores
    return scores


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
def run(args: argparse.Namespace) -> int:
    import torch

    from shapeworld import dataset_paths, generate_dataset, text_corpus
    from shapeworld.skills import write_skill_sets

    torch.set_num_threads(max(1, args.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, args.threads)))  # subprocesses (reload, agent) follow
    settings = DemoSettings.preset(args.size, args.quick)
    if args.steps:
        scale = args.steps / settings.stage2_steps
        settings = dataclasses.replace(
            settings,
            stage2_steps=args.steps,
            stage1_steps=max(1, int(settings.stage1_steps * scale)),
            stage3_steps=max(1, int(settings.stage3_steps * scale)),
            lm_steps=max(1, int(settings.lm_steps * scale)),
        )
    if args.itdm_weight is not None:
        settings = dataclasses.replace(settings, itdm_weight=args.itdm_weight)
    out = args.output_dir.resolve()
    if out.is_dir() and any(out.iterdir()) and not (out / OWNER_MARK).is_file() and not args.overwrite:
        print(
            f"mage demo: error: {out} is not empty and was not made by `mage demo`; pass --overwrite to write into it "
            "or choose another --output-dir (nothing was written).",
            file=sys.stderr,
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / OWNER_MARK).write_text("made by `mage demo`; a later `mage demo` may replace what this folder holds\n")
    models, evals = out / "models", out / "eval"
    progress = Progress(total=9 if not args.no_reload else 7, log_path=out / "demo.log")
    progress.say(f"MAGE demo: {json.dumps(dataclasses.asdict(settings))}")

    progress.step(
        f"generate ShapeWorld ({settings.n_train} train scenes, {settings.difficulty}, {settings.image_size} px)"
    )
    data = out / "data"
    difficulty = settings.world()
    generate_dataset(
        str(data),
        settings.n_train,
        settings.n_eval,
        seed=args.seed,
        image_size=settings.image_size,
        difficulty=difficulty,
    )
    paths = dataset_paths(str(data))
    paths["skills"] = str(
        write_skill_sets(data / "eval" / "skills", settings.skill_questions, args.seed, difficulty, settings.image_size)
    )
    text_path = data / "train" / "stage0_text.json"
    text_path.write_text(json.dumps(text_only_rows(paths)))
    progress.done()

    progress.step("build a tiny MAGE (tiny CLIP + tiny Llama) and a tokenizer trained on ShapeWorld text")
    corpus = list(text_corpus(num_scenes=400, seed=args.seed, difficulty=difficulty))
    init = build_model(settings, corpus, args.seed, models / "untrained")
    progress.done(f"→ {init}")

    side = second_core(max(1, args.threads))
    try:
        progress.step("stage 0: text-only LM pretraining (plays Vicuna) and CLIP-style tower pretraining (plays CLIP)")
        tower_future = side.submit(pretrain_tower, init, paths, settings, args.seed, models / "stage0-tower")
        lm = train_stage(
            "stage2_tiny",
            init,
            text_path,
            models / "stage0-lm",
            settings.lm_steps,
            settings,
            args.seed,
            args.device,
            itdm_weight=0.0,
            learning_rate=2e-3,
        )
        tower_report, tower = tower_future.result()
        stage0 = combine_stage0(lm, tower, models / "stage0")
        progress.done(
            f"(tower image→caption top-1 {tower_report.retrieval_top1_before:.2f} → "
            f"{tower_report.retrieval_top1_after:.2f} in {tower_report.steps} steps)"
        )

        def evaluate_beside(name: str, path: Path, plans: bool = False):
            folder = evals / name.replace(" ", "")
            return side.submit(evaluate_checkpoint, path, paths, settings, folder, plans=plans, device=args.device)

        checkpoints = {"untrained": init}
        pending = {"untrained": evaluate_beside("untrained", init)}
        progress.step(
            "stages 1 → 2 → 3 with the tiny recipes (mage train's code path; each finished stage is evaluated "
            "in the second process meanwhile)"
        )
        stage1 = train_stage(
            "stage1_tiny",
            stage0,
            Path(paths["stage1"]),
            models / "stage1",
            settings.stage1_steps,
            settings,
            args.seed,
            args.device,
        )
        pending["stage 1"] = evaluate_beside("stage 1", stage1)
        stage2 = train_stage(
            "stage2_tiny",
            stage1,
            Path(paths["stage2"]),
            models / "stage2",
            settings.stage2_steps,
            settings,
            args.seed,
            args.device,
        )
        pending["stage 2"] = evaluate_beside("stage 2", stage2, plans=True)
        stage3 = train_stage(
            "stage3_tiny",
            stage2,
            Path(paths["stage3"]),
            models / "stage3",
            settings.stage3_steps,
            settings,
            args.seed,
            args.device,
            replay_data=paths["stage2"],
            max_length=512,
        )
        pending["stage 3"] = evaluate_beside("stage 3", stage3, plans=True)
        checkpoints.update({"stage 1": stage1, "stage 2": stage2, "stage 3": stage3})
        progress.done(_loss_summary(models))

        progress.step("evaluate: stage 3 with blank images (text-only baseline) here, the last checkpoints beside it")
        blank = evaluate_checkpoint(stage3, paths, settings, evals / "blank", blank_images=True, device=args.device)
        raw = {name: future.result() for name, future in pending.items()}
        raw["text-only baseline"] = blank
        rows = {name: headline(scores) for name, scores in raw.items()}
        progress.done()
    finally:  # a failed or interrupted run does not wait for queued evaluations
        side.shutdown(wait=True, cancel_futures=True)

    progress.step("write the report (JSON, Markdown, plot)")
    verdict = judge(rows)
    skills = {name: scores.get("skills", {}) for name, scores in raw.items()}
    targets = strict_targets(raw)
    verdict["lines"] += ["", format_skills(skills), "", *targets["lines"]]
    report = {
        "settings": dataclasses.asdict(settings),
        "seed": args.seed,
        "rows": rows,
        "raw": raw,
        "tower_pretraining": dataclasses.asdict(tower_report),
        "verdict": verdict,
        "skills": skills,
        "targets": targets,
        "checkpoints": {k: str(v) for k, v in checkpoints.items()},
    }
    (out / "demo_report.json").write_text(json.dumps(report, indent=2, default=str))
    table = format_table(rows)
    (out / "demo_report.md").write_text(_markdown(table, verdict, settings, tower_report))
    plot_table(rows, out / "demo_report.png")
    progress.say("\n" + table + "\n")
    for line in verdict["lines"]:
        progress.say(line)
    if not verdict["trained_beats_baselines"]:
        progress.say("NOT MET: the trained model does not yet beat both baselines at this budget (see demo_report.md).")
    progress.done(f"→ {out / 'demo_report.md'}")

    progress.step("save the final model with remote code and a model card")
    final = _publishable_copy(stage3, out / "final", raw["stage 3"], settings)
    progress.done(f"→ {final}")

    ok = targets["all_met"] or not args.strict
    if not args.no_reload:
        ok = _reload_and_agent(final, out, progress, args.seed, settings.image_size) and ok
    minutes = progress.elapsed / 60
    progress.say(f"\ntotal {minutes:.1f} min; outputs in {out}")
    if args.strict and minutes > STRICT_MINUTES:
        progress.say(f"NOT MET: the demo took {minutes:.1f} min, {minutes - STRICT_MINUTES:.1f} over {STRICT_MINUTES}.")
        ok = False
    return 0 if ok else 1


def _loss_summary(models: Path) -> str:
    parts = []
    for stage in ("stage1", "stage2", "stage3"):
        path = models / stage / "training_report.json"
        if path.is_file():
            report = json.loads(path.read_text())
            first, last = report.get("first_log") or {}, report.get("last_log") or {}
            if "itg_loss" in first:
                parts.append(
                    f"{stage} ITG {first['itg_loss']:.2f}→{last['itg_loss']:.2f}, "
                    f"ITDM {first.get('itdm_loss', float('nan')):.3f}→{last.get('itdm_loss', float('nan')):.3f}"
                )
    return "(" + "; ".join(parts) + ")" if parts else ""


# POPE accuracy, not F1: on POPE's balanced splits a constant answer scores 50 % accuracy but 66.7 F1 ("yes") or 0
# ("no"), so F1 let an always-"yes" model beat an always-"no" one by 67 points (measured: a run whose stage 3 answered
# "yes" to everything and whose grey-image baseline answered "no" passed the F1 verdict).
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


STRICT_MINUTES = 10


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
    checks: list[tuple[str, float, float, bool]] = []  # (what, value, target, higher is better)
    for split in ("random", "popular", "adversarial"):
        value = final.get("pope_details", {}).get("splits", {}).get(split, {}).get("accuracy", float("nan"))
        checks.append((f"POPE {split} accuracy ≥ 75", value, 75.0, True))
        value = grey.get("pope_details", {}).get("splits", {}).get(split, {}).get("accuracy", float("nan"))
        checks.append((f"POPE {split} accuracy with grey images ≤ 55", value, 55.0, False))
    for skill in ("existence", "colour", "count"):
        checks.append((f"held-out {skill} ≥ 85 %", 100 * final.get("skills", {}).get(skill, float("nan")), 85.0, True))
    grey_mme = grey.get("MME^P", float("nan"))
    checks.append(("MME perception ≥ 1.3 × grey's", final.get("MME^P", float("nan")), 1.3 * grey_mme, True))
    grey_seed = grey.get("SEED^I", float("nan"))
    checks.append(("SEED ≥ grey's + 15", final.get("SEED^I", float("nan")), grey_seed + 15, True))
    grey_mmb = grey.get("MMB", float("nan"))
    checks.append(("MMBench (CircularEval) > grey's", final.get("MMB", float("nan")), grey_mmb + 1e-9, True))
    for skill in SKILLS:
        kept, had = final.get("skills", {}).get(skill), before.get("skills", {}).get(skill)
        if kept is not None and had is not None:
            checks.append((f"stage 3 keeps ≥ 90 % of stage 2's {skill}", 100 * kept, 90 * had, True))
    plans = final.get("plans", {})
    checks.append(("valid plans ≥ 90 %", 100 * plans.get("valid_rate", float("nan")), 90.0, True))
    checks.append(("plan argument values F1 ≥ 80 %", 100 * plans.get("arg_value_f1", float("nan")), 80.0, True))
    rows, lines = [], []
    for what, value, target, higher in checks:
        met = value >= target if higher else value <= target  # NaN: not met
        rows.append({"target": what, "value": value, "threshold": target, "met": bool(met)})
        lines.append(
            f"{'met' if met else 'NOT MET'}: {what} — {value:.1f}"
            + ("" if met else f" (missed by {abs(value - target):.1f})")
        )
    all_met = all(r["met"] for r in rows)
    lines.append(f"--strict targets met: {sum(r['met'] for r in rows)}/{len(rows)}" + (" (all)" if all_met else ""))
    return {"checks": rows, "all_met": all_met, "lines": lines}


def _markdown(table: str, verdict: dict, settings: DemoSettings, tower) -> str:
    return "\n".join(
        [
            "# MAGE demo on ShapeWorld",
            "",
            "All numbers in percent on held-out ShapeWorld benchmark splits written in the official formats "
            "(MME perception normalised by its maximum over the subtasks present; POPE = mean accuracy and mean F1 of the three splits; "
            "MMBench = CircularEval accuracy; SEED = accuracy, options ranked by likelihood as SEED-Bench's own "
            "evaluation does). The text-only baseline is the stage-3 model with every "
            "image replaced by a grey one.",
            "",
            table,
            "",
            *verdict["lines"],
            "",
            f"Stage 0 tower pretraining: image→caption top-1 {tower.retrieval_top1_before:.2f} → "
            f"{tower.retrieval_top1_after:.2f} ({tower.steps} steps, {tower.seconds:.0f} s).",
            "",
            "Settings: `" + json.dumps(dataclasses.asdict(settings)) + "`",
            "",
            "![scores](demo_report.png)",
            "",
        ]
    )


def _publishable_copy(checkpoint: Path, final: Path, scores: dict, settings: DemoSettings) -> Path:
    from mage_cli.model_card import build_model_card
    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor

    model = MageForConditionalGeneration.from_pretrained(checkpoint)
    processor = MageProcessor.from_pretrained(checkpoint)
    model.save_pretrained(final)
    processor.save_pretrained(final)
    results = {"shapeworld_" + k.lower().replace("^", "_"): {"score": v} for k, v in headline(scores).items() if v == v}
    build_model_card(
        final,
        results=results,
        repo_id="local/mage-tiny-shapeworld",
        datasets=["shapeworld (generated)"],
        training=(
            f"`mage demo`: stage 0 (text LM {settings.lm_steps} steps; CLIP-style tower), stage 1 "
            f"{settings.stage1_steps}, stage 2 {settings.stage2_steps}, stage 3 {settings.stage3_steps} steps "
            f"of batch {settings.batch_size} on ShapeWorld ({settings.difficulty}, {settings.image_size} px)."
        ),
        limits="A tiny demonstration model: it knows only the ShapeWorld world (coloured shapes on a grid).",
    ).save(final / "README.md")
    return final


def _reload_and_agent(final: Path, out: Path, progress: Progress, seed: int, image_size: int) -> bool:
    import subprocess
    import sys

    from mage_cli.reload_check import reload_and_answer
    from shapeworld import get_difficulty, item_rng, sample_scene, scene_png
    from shapeworld.world import ObjectSpec

    progress.step("reload in a fresh process (AutoModelForImageTextToText + AutoProcessor, remote code) and answer")
    # Exactly one circle, so "What colour is the circle?" has one answer.
    scene = sample_scene(
        item_rng(seed, "demo-new-scene", 0),
        get_difficulty("easy"),
        "new-scene",
        forced=(ObjectSpec(shape="circle"),),
        avoid_shapes=("circle",),
    )
    image_path = out / "new_scene.png"
    image_path.write_bytes(scene_png(scene, image_size))
    report = reload_and_answer(final, [image_path] * len(NEW_SCENE_QUESTIONS), NEW_SCENE_QUESTIONS)
    progress.say(f"      new scene: {json.dumps(scene)[:160]}")
    for question, answer in zip(NEW_SCENE_QUESTIONS, report["answers"]):
        progress.say(f"      Q: {question}  A: {answer}")
    progress.done(f"({report['model_class']})")

    progress.step(f"mage agent: {AGENT_REQUEST!r}")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mage_cli.main",
            "agent",
            "--model",
            str(final),
            "--output-dir",
            str(out / "agent"),
            AGENT_REQUEST,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    for line in completed.stdout.strip().splitlines()[-12:]:
        progress.say("      " + line)
    progress.done(f"(exit code {completed.returncode})")
    return not report["project_imported"] and completed.returncode in (0, 1, 2)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
