"""The demo's settings and its steps: data for stage 0, the tiny model, one training stage through `mage train`'s code
path, stage 0's tower pretraining, the second-core worker for side jobs, and the evaluation of one checkpoint.
`mage_cli.demo` runs them in order."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from evaluation.api import evaluate
from mage_cli.main import load_plugins
from shapeworld import (
    Difficulty,
    caption,
    caption_row,
    dataset_paths,
    generate_dataset,
    get_difficulty,
    instruction_turns,
    item_rng,
    sample_scene,
    text_corpus,
)
from shapeworld.skills import write_skill_sets
from shapeworld.text import conversation
from shapeworld.tools import tool_dialogue
from tool_use.eval_plans import evaluate_plan_model
from training.recipes import load_recipe


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
    # tool dialogues (request → JSON plan, their own stream) among stage 0's text rows, per training scene: the LM
    # that plays Vicuna has then read JSON plans before stage 3, as Vicuna has read JSON (0 = none; docs/DECISIONS.md)
    stage0_tool_share: float = 0.5
    # questions per stage-0 conversation, and whether stage 0 also reads each conversation without its caption
    # (answers it can only guess); the caption-in-context rows are what teach the LM to answer from its context
    stage0_context_turns: int = 1
    stage0_blind_questions: bool = True
    tower_steps: int = 1500  # stage 0, CLIP-style tower (steps, not seconds: runs must not depend on machine load)
    stage1_steps: int = 1600
    # stage 2 long enough that existence checks colour and shape on one object, not one attribute; its cosine
    # schedule still has a useful learning rate when that happens (experiments/demo_ladder: jobs_s2_long_sea.txt)
    stage2_steps: int = 8000
    stage3_steps: int = 600  # half the rows are replayed: as many tool rows as 300 updates without replay
    # stage 3's share of replayed stage-2 rows, its peak learning rate, and how ITG averages over a batch: "sample"
    # weighs each row alike, so a one-word replayed answer counts as much as a 300-token plan and stage 3 keeps the
    # stage-2 skills ("token" is transformers' mean over tokens; experiments/stage3_forgetting, docs/DECISIONS.md)
    stage3_replay_ratio: float = 0.5
    stage3_learning_rate: float = 1e-3
    stage3_itg_reduction: str = "sample"
    batch_size: int = 32
    # MAGE as the paper defines it: ITG + ITDM, at the ladder's weight, not the paper's 1 (docs/DECISIONS.md)
    itdm_weight: float = 0.01
    # SEA in stage 1 (0 = off), the ladder's lever for the IAN's counting (docs/DECISIONS.md): each visual token
    # contrasted with the words of its grid cell, ShapeWorld's exact labels standing in for CLIP's (alignment/sea.py)
    stage1_sea_weight: float = 1.0
    # SEA in stage 2 as well (0 = off; the project's addition, docs/alignment.md): while the projector trains with the
    # LM, the LM's gradient shrinks the tokens' shape directions, and existence then answers by colour alone
    # (experiments/perception_probe, experiments/demo_ladder: jobs_s2_projector.txt)
    stage2_sea_weight: float = 1.0
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

    def with_overrides(self, pairs: list[str]) -> DemoSettings:
        """`["stage2_steps=8000", "question_types=existence,colour"]` applied to a copy, each value typed as its
        field (int, float, bool, str; a tuple field takes comma-separated names). Raises `ValueError` naming the pair
        and what was expected."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        changes = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key, text = key.strip(), text.strip()
            if not sep or key not in fields:
                raise ValueError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
            current = fields[key]
            try:
                if isinstance(current, bool):
                    if text.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    value = text.lower() in ("true", "1")
                elif isinstance(current, (int, float, str)):
                    value = type(current)(text)
                elif isinstance(current, tuple):
                    value = tuple(name.strip() for name in text.split(",") if name.strip())
                else:
                    raise TypeError
            except ValueError:
                raise ValueError(f"--set {pair!r}: {key} expects a {type(current).__name__}") from None
            except TypeError:
                raise ValueError(
                    f"--set {pair!r}: {key} ({type(current).__name__}) cannot be set from the command line"
                ) from None
            changes[key] = value
        settings = dataclasses.replace(self, **changes)
        settings.world()  # a bad question type or turn count is refused here, before anything is written
        return settings

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


# ---------------------------------------------------------------------------------------------------------- data
def text_only_rows(
    n: int, seed: int, difficulty: Difficulty, tools: int = 0, context_turns: int = 1, blind: bool = True
) -> list[dict]:
    """Stage-0 LM data: `n` ShapeWorld scenes' caption and, with `blind`, their conversation without the image
    (answers the LM can only guess from the question), plus each conversation with its scene's caption in front of
    the first question ("In the picture: …"), so the LM learns to answer from a description in its context, as a
    pretrained LLM can, plus `tools` tool dialogues (a request and its JSON plan, without the tool list's system
    prompt). A conversation asks 1–`context_turns` questions. The scenes and dialogues are their own streams
    (`item_rng(seed, "stage0-text", i)`, `tool_dialogue(i, seed, …, split="stage0")`), not the training splits': a
    pretrained LM has not read the rows it is later fine-tuned on (docs/DECISIONS.md)."""
    rows, in_context = [], []
    for i in range(n):
        rng = item_rng(seed, "stage0-text", i)
        scene = sample_scene(rng, difficulty, f"stage0-text-{i:06d}")
        # the draws of shapeworld's dataset writer: the caption row first, then the conversation
        turns = [
            dict(t, value=t["value"].replace("<image>\n", "")) for t in caption_row("", "", rng, scene)["conversations"]
        ]
        rows.append({"id": f"text-caption-{i:06d}", "conversations": turns})
        turns = conversation(instruction_turns(rng, scene, difficulty, max_turns=context_turns), with_image=False)
        if blind:
            rows.append({"id": f"text-instruct-{i:06d}", "conversations": turns})
        first = dict(turns[0], value=f"In the picture: {caption(scene)}.\n{turns[0]['value']}")
        in_context.append({"id": f"context-{i:06d}", "conversations": [first] + turns[1:]})
    plans = [
        {
            "id": f"tools-stage0-{i:06d}",
            "conversations": tool_dialogue(i, seed, difficulty, "stage0", False)["conversations"],
        }
        for i in range(tools)
    ]
    return rows + in_context + plans


def stage0_text_rows(settings: DemoSettings, seed: int) -> list[dict]:
    """The demo's stage-0 text rows for `seed` (`text_only_rows` at the settings' sizes and options)."""
    return text_only_rows(
        settings.n_train,
        seed,
        settings.world(),
        round(settings.stage0_tool_share * settings.n_train),
        settings.stage0_context_turns,
        settings.stage0_blind_questions,
    )


def generate_demo_data(settings: DemoSettings, data: Path, seed: int) -> dict[str, str]:
    """The demo's ShapeWorld data under `data`: the splits (`generate_dataset`), the held-out skill set and stage 0's
    text-only rows. Returns `dataset_paths` plus `"skills"` and `"stage0_text"`."""
    difficulty = settings.world()
    generate_dataset(
        str(data), settings.n_train, settings.n_eval, seed=seed, image_size=settings.image_size, difficulty=difficulty
    )
    paths = dataset_paths(str(data))
    paths["skills"] = str(
        write_skill_sets(data / "eval" / "skills", settings.skill_questions, seed, difficulty, settings.image_size)
    )
    text_path = data / "train" / "stage0_text.json"
    text_path.write_text(json.dumps(stage0_text_rows(settings, seed)))
    paths["stage0_text"] = str(text_path)
    return paths


def build_model(settings: DemoSettings, seed: int, out: Path) -> Path:
    """The untrained tiny MAGE and its processor (a tokenizer trained on ShapeWorld text), saved to `out`."""
    from mage_testing.tiny import build_tiny_mage  # heavy

    corpus = list(text_corpus(num_scenes=400, seed=seed, difficulty=settings.world()))
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
    mode: str = "full",
    **recipe_overrides,
) -> Path:
    """One stage through `mage train`'s code path (same recipe files, trainer and checkpoints); `recipe_overrides`
    are recipe fields on top of the demo's (`stage_overrides`); `mode` as `training.api.train`'s ("lora": `out`
    then holds the adapter)."""
    from training.api import train  # heavy

    load_plugins("train")  # as `mage train` does: a recipe may name an alignment objective (SEA in stage 1)
    recipe = load_recipe(recipe_name, stage_overrides(settings, steps, seed, **recipe_overrides))
    extra = {"adam_beta2": settings.adam_beta2} | ({"use_cpu": True} if device == "cpu" else {})
    # the demo's own folder (`OWNER_MARK`): a second `mage demo` into it replaces its stages
    return train(recipe, model_path, data, out, mode=mode, disable_tqdm=False, overwrite=True, **extra)


def stage_overrides(settings: DemoSettings, steps: int, seed: int, **recipe_overrides) -> dict:
    """The recipe fields a demo stage sets on top of its `stage{1,2,3}_tiny` recipe."""
    return {
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
        # text encoded once, before training (its ShapeWorld rows are read for several epochs); the training loop
        # then only opens images (experiments/trainer_overhead/)
        "pretokenize": True,
        **recipe_overrides,
    }


def sea_fields(weight: float) -> dict:
    """A stage's SEA recipe fields (`settings.stage1_sea_weight`, `stage2_sea_weight`): none when `weight` is 0; else
    SEA at that weight, every token's cell sampled (`sea_window=1`: the 3 × 3 token grid is one ShapeWorld cell per
    token) and ShapeWorld's labels, which the demo's `scenes.jsonl` beside its training images provides."""
    if not weight:
        return {}
    return {
        "alignment_objective": "sea",
        "sea_weight": weight,
        "sea_window": 1,
        "sea_label_source": "shapeworld",
    }


def train_text_lm(
    model_path: Path, paths: dict[str, str], out: Path, settings: DemoSettings, seed: int, device: str | None
) -> Path:
    """Stage 0 (text): the LM on the text-only rows (`paths["stage0_text"]`), through `mage train`'s code path with
    the stage-2 recipe, no ITDM (no images) and a higher learning rate (the LM starts from scratch). With tool
    dialogues among the rows (`settings.stage0_tool_share`), batches are grouped by length (50 batches sorted at a
    time), so a long plan does not pad a batch of short captions."""
    grouping = {"group_by_modality_length": True, "length_group_factor": 50} if settings.stage0_tool_share > 0 else {}
    return train_stage(
        "stage2_tiny",
        model_path,
        Path(paths["stage0_text"]),
        out,
        settings.lm_steps,
        settings,
        seed,
        device,
        itdm_weight=0.0,
        learning_rate=2e-3,
        **grouping,
    )


def pretrain_tower(model_path: Path, paths: dict[str, str], settings: DemoSettings, seed: int, out: Path):
    """Stage 0 (vision): CLIP-style pretraining of the tower; returns the report and the saved folder."""
    from modeling_mage import MageForConditionalGeneration  # heavy
    from processing_mage import MageProcessor  # heavy
    from training.pretrain_tower import pretrain_vision_tower  # heavy

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
    import torch  # heavy

    torch.set_num_threads(threads)


def second_core(threads: int):
    """One spawned worker process for the demo's side jobs, run in order beside the main process's training: stage
    0's tower pretraining (it needs nothing from the text LM), then the evaluation of each finished checkpoint. A
    `concurrent.futures.ProcessPoolExecutor`; use it as a context manager."""
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_set_threads, initargs=(threads,)
    )


def combine_stage0(lm_path: Path, tower_path: Path, out: Path) -> Path:
    """The text LM (and its processor) of `lm_path` with the vision tower of `tower_path`, saved to `out`."""
    from modeling_mage import MageForConditionalGeneration  # heavy
    from processing_mage import MageProcessor  # heavy

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
    from modeling_mage import MageForConditionalGeneration  # heavy
    from processing_mage import MageProcessor  # heavy

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
            paths[key],
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
        from evaluation.skills import skill_accuracy  # heavy

        scores["skills"] = skill_accuracy(model, processor, paths["skills"], blank_images=blank_images)
    if plans:
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


def loss_summary(models: Path) -> str:
    """One line of each trained stage's first and last ITG / ITDM losses (from its `training_report.json`)."""
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
