"""Python entry point: `train(recipe, model_path, data_path, output_dir, ...) -> Path` (used by `mage train`, the
demo and `mage ablate`). Builds the data set, loads and freezes the model, runs `MageTrainer` (or, when
`recipe.alignment_objective` names one, `AlignedMageTrainer` with the objectives its registered builder returns: see
`training.recipes.register_alignment_objective`; alignment/ registers "sea"), saves a complete MAGE folder and
writes `training_report.json` (skips by reason and row id, trainable parameters, last ITG/ITDM/SEA) next to it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from modeling_mage import MageForConditionalGeneration
from processing_mage import MageProcessor

from .checkpoint import ModelError, check_mage_checkpoint
from .collator import MageDataCollator
from .data import build_dataset
from .lora import apply_lora, quantization_config
from .objectives import AlignedMageTrainer
from .recipes import Recipe, alignment_objective_builder
from .trainer import MageTrainer, count_trainable, set_trainable_for_stage

logger = logging.getLogger(__name__)
REPORT_FILE = "training_report.json"
RECIPE_FILE = "mage_recipe.json"  # written into every checkpoint; compared on --resume


def load_model_and_processor(model_path: str | os.PathLike, recipe: Recipe, mode: str = "full"):
    """`(model, processor)` ready for `recipe`: ITDM settings written into the config, stage freezing applied
    (`mode="full"`), or LoRA / QLoRA adapters added (`"lora"` / `"qlora"`)."""
    config = check_mage_checkpoint(model_path)
    if mode not in ("full", "lora", "qlora"):
        raise ModelError(f"mode={mode!r}: expected 'full', 'lora' or 'qlora'.")
    if mode != "full" and recipe.stage == 1:
        raise ModelError("LoRA adapts the LLM, which stage 1 keeps frozen: train stage 1 without --lora/--qlora.")
    trained = list(config.get("mage_trained_stages") or [])
    kwargs = {"dtype": torch.float32}
    if mode == "qlora":
        kwargs["quantization_config"] = quantization_config()
    model = MageForConditionalGeneration.from_pretrained(model_path, **kwargs)
    processor = MageProcessor.from_pretrained(model_path)
    model.config.itdm_weight = recipe.itdm_weight
    model.config.itdm_reduction = recipe.itdm_reduction
    model.config.itdm_text_source = recipe.itdm_text_source
    model.config.validate_mage()
    model.config.mage_trained_stages = sorted(set(trained) | {recipe.stage})
    if mode == "full":
        counts = set_trainable_for_stage(model, recipe.stage, recipe.tune_vision_tower)
    else:
        model = apply_lora(
            model,
            recipe.lora_r,
            recipe.lora_alpha,
            recipe.lora_dropout,
            quantized=mode == "qlora",
            gradient_checkpointing=recipe.gradient_checkpointing,
        )
        counts = count_trainable(model)
    logger.info("Trainable parameters: %s", counts)
    return model, processor


def training_arguments(recipe: Recipe, output_dir: str | os.PathLike, **overrides):
    """`TrainingArguments` from a recipe (LLaVA-1.5 names map one to one)."""
    same_names = (  # recipe fields that are `TrainingArguments` fields of the same name and meaning
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "optim",
        "learning_rate",
        "weight_decay",
        "lr_scheduler_type",
        "num_train_epochs",
        "max_steps",
        "max_grad_norm",
        "seed",
        "bf16",
        "gradient_checkpointing",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "dataloader_num_workers",
    )
    values = {name: getattr(recipe, name) for name in same_names}
    values.update(
        output_dir=str(output_dir),
        warmup_steps=recipe.warmup_ratio,  # < 1: a ratio of the total steps (transformers 5.x)
        data_seed=recipe.seed,
        gradient_checkpointing_kwargs={"use_reentrant": False} if recipe.gradient_checkpointing else None,
        save_strategy="steps",
        report_to=[] if recipe.report_to == "none" else [recipe.report_to],
        remove_unused_columns=False,
        # text-only batches leave the projector without gradients: DDP must allow unused parameters
        ddp_find_unused_parameters=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        # no accelerator: run on CPU explicitly, so processes started by torchrun / `accelerate launch` form a gloo
        # group (MULTI_CPU) instead of each training alone
        use_cpu=not _has_accelerator(),
        save_safetensors=True,
    )
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "activation_checkpointing" in known:  # the 5.x name; `gradient_checkpointing` warns there
        values["activation_checkpointing"] = values.pop("gradient_checkpointing")
        values["activation_checkpointing_kwargs"] = values.pop("gradient_checkpointing_kwargs")
    # `save_safetensors` is gone where safetensors is the only format.
    return TrainingArguments(**{key: value for key, value in values.items() if key in known})


def _has_accelerator() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return bool(
        torch.cuda.is_available()
        or (mps is not None and mps.is_available())
        or (xpu is not None and xpu.is_available())
    )


def train(
    recipe: Recipe,
    model_path: str | os.PathLike,
    data_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    resume: bool = False,
    mode: str = "full",
    callbacks: list | None = None,
    overwrite: bool = False,
    **argument_overrides,
) -> Path:
    """Train one stage and return the folder of the final checkpoint (`output_dir`).

    Args:
        recipe: a `Recipe` (see `training.recipes.load_recipe`).
        model_path: a MAGE checkpoint folder (from `mage convert`, a previous stage, or `build_tiny_mage` saved).
        data_path: LLaVA-format `.json`/`.jsonl`; images resolved against `recipe.image_folder` or its folder.
        output_dir: checkpoints go to `output_dir/checkpoint-N`, the final model to `output_dir` itself.
        resume: continue from the last `checkpoint-N` in `output_dir` (same data order, optimizer, scheduler, RNG).
        mode: `"full"` (stage freezing), `"lora"` or `"qlora"` (the final folder then holds the adapter; merge it
            with `mage merge-lora`).
        callbacks: extra `TrainerCallback`s; `argument_overrides`: extra `TrainingArguments` fields.
        overwrite: allow an `output_dir` that already holds files (another run's checkpoints or model, possibly the
            model being trained). Its checkpoints are removed before training; its model stays until the new one
            is complete and then replaces it. Without it, a non-empty `output_dir` is refused (nothing written).

    The final model is written to a hidden folder inside `output_dir` and then moved into place file by file,
    `config.json` last, so a crash while saving never leaves a loadable half model.
    """
    output_dir = Path(output_dir)
    last_checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if resume:
        last_checkpoint = last_complete_checkpoint(output_dir)
    if resume and last_checkpoint is None:
        raise FileNotFoundError(f"--resume: {output_dir} holds no complete checkpoint-N folder to resume from.")
    existing = sorted(p.name for p in output_dir.iterdir()) if output_dir.is_dir() and not resume else []
    if existing and not overwrite:
        if last_checkpoint is not None:
            raise FileExistsError(
                f"{output_dir} already holds {Path(last_checkpoint).name}; pass --resume to continue that run, "
                "--overwrite to replace it, or choose another --output-dir (nothing is overwritten)."
            )
        shown = ", ".join(existing[:4]) + (", …" if len(existing) > 4 else "")
        raise FileExistsError(
            f"{output_dir} is not empty ({shown}); pass --overwrite to replace what it holds or choose another "
            "--output-dir (nothing is overwritten)."
        )
    build_objectives = None
    if recipe.alignment_objective != "none":  # before loading anything: an unregistered name fails at once
        build_objectives = alignment_objective_builder(recipe.alignment_objective)
    model, processor = load_model_and_processor(model_path, recipe, mode)
    dataset = build_dataset(
        data_path,
        processor,
        recipe.template,
        recipe.max_length,
        image_folder=recipe.image_folder,
        replay_data=recipe.replay_data,
        replay_ratio=recipe.replay_ratio,
        max_samples=recipe.max_samples,
        seed=recipe.seed,
        pretokenize=recipe.pretokenize,
    )
    # a stage 2/3 on image rows from a projector stage 1 never trained (text-only rows, e.g. an LM's own
    # pretraining, do not pass through the projector); `mage_trained_stages` now also holds this stage
    if recipe.stage >= 2 and 1 not in model.config.mage_trained_stages and any(n > 0 for n in dataset.lengths):
        warnings.warn(
            f"{model_path}: stage {recipe.stage} starts from a model whose projector was not trained in stage 1 "
            f"(config.json mage_trained_stages={sorted(set(model.config.mage_trained_stages) - {recipe.stage})}); "
            "the IAN is still random. Run stage 1 first unless this is intended.",
            UserWarning,
            stacklevel=2,
        )
    if resume:
        warn_on_recipe_change(Path(last_checkpoint), recipe)
    trainer_class, collator, extra = MageTrainer, MageDataCollator.from_processor(processor), {}
    if build_objectives is not None:
        collator, objectives = build_objectives(recipe, model, processor, dataset, data_path, collator)
        trainer_class, extra = AlignedMageTrainer, {"objectives": objectives}
    trainer = trainer_class(
        model=model,
        args=training_arguments(recipe, output_dir, **argument_overrides),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=[RecipeSaver(recipe), *(callbacks or [])],
        projector_lr=recipe.projector_lr,
        group_by_modality_length=recipe.group_by_modality_length,
        length_group_factor=recipe.length_group_factor,
        itg_reduction=recipe.itg_reduction,
        **extra,
    )
    if existing and trainer.args.should_save:  # --overwrite: the replaced run's checkpoints go now, its model later
        for name in existing:
            if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and (output_dir / name).is_dir():
                shutil.rmtree(output_dir / name)
    result = trainer.train(resume_from_checkpoint=last_checkpoint if resume else None)
    save_final_model(trainer, output_dir)
    if trainer.args.should_save:
        (output_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the report holds the recipe as JSON
        write_report(output_dir, recipe, trainer, dataset, count_trainable(model), result.metrics)
    logger.info("Skipped rows:\n%s", dataset.skips.report())
    return output_dir


PARTIAL_DIR = ".final-model.partial"  # inside output_dir while the final model is written
INCOMPLETE_PREFIX = ".incomplete-"  # a checkpoint whose save was cut short, moved aside on resume


def _is_complete_checkpoint(folder: Path) -> bool:
    """The Trainer writes `trainer_state.json` after the weights, optimizer, scheduler and RNG states: a folder
    whose state file is missing or torn was cut short while saving."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` of `output_dir` that was saved completely. Newer ones that were not (a process
    killed while saving) are renamed `.incomplete-checkpoint-N` with a warning, so neither this resume nor the
    Trainer's checkpoint rotation mistakes them for a state to continue from."""
    if not output_dir.is_dir():
        return None
    steps = sorted(
        (int(p.name.rsplit("-", 1)[1]), p)
        for p in output_dir.iterdir()
        if p.is_dir() and p.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and p.name.rsplit("-", 1)[1].isdigit()
    )
    for _, folder in reversed(steps):
        if _is_complete_checkpoint(folder):
            return str(folder)
        aside = folder.with_name(f"{INCOMPLETE_PREFIX}{folder.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(folder, aside)
        warnings.warn(
            f"{folder} was not saved completely (no trainer_state.json): moved to {aside.name}, resuming "
            "from the checkpoint before it.",
            UserWarning,
            stacklevel=3,
        )
    return None


def save_final_model(trainer, output_dir: Path) -> None:
    """`trainer.save_model` into a hidden folder of `output_dir`, then the files moved into `output_dir` (replacing
    the top-level files of a model already there; `config.json` last). Checkpoint folders are left alone."""
    partial = output_dir / PARTIAL_DIR
    if trainer.args.should_save:
        shutil.rmtree(partial, ignore_errors=True)
    trainer.save_model(str(partial))
    if not trainer.args.should_save:
        return
    written = {p.name for p in partial.iterdir()}
    for old in output_dir.iterdir():  # a replaced model's files the new one does not have (shards, a model card)
        if old.is_file() and old.name not in written:
            old.unlink()
    (output_dir / "config.json").unlink(missing_ok=True)  # the folder is not loadable until the move is complete
    for name in sorted(written, key=lambda n: n == "config.json"):
        os.replace(partial / name, output_dir / name)
    partial.rmdir()


def warn_on_recipe_change(checkpoint: Path, recipe: Recipe) -> None:
    """On resume, warn naming each recipe field that differs from the checkpoint's (the new value is used)."""
    path = checkpoint / RECIPE_FILE
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    changed = {
        key: (saved[key], value) for key, value in recipe.to_dict().items() if key in saved and saved[key] != value
    }
    if changed:
        details = ", ".join(f"{key}: {old!r} → {new!r}" for key, (old, new) in sorted(changed.items()))
        warnings.warn(
            f"Resuming {checkpoint} with a changed recipe ({details}); the new values are used.",
            UserWarning,
            stacklevel=3,
        )


def _recipe_saver_class():
    class _RecipeSaver(TrainerCallback):
        def __init__(self, recipe: Recipe):
            self.recipe = recipe

        def on_save(self, args, state, control, **kwargs):
            if args.should_save:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    (folder / RECIPE_FILE).write_text(json.dumps(self.recipe.to_dict(), indent=2), encoding="utf-8")

    return _RecipeSaver


def RecipeSaver(recipe: Recipe):  # noqa: N802 - a factory that reads like the callback class it returns
    """A `TrainerCallback` writing the recipe as JSON into every checkpoint (for the resume check)."""
    return _recipe_saver_class()(recipe)


def write_report(output_dir: Path, recipe: Recipe, trainer, dataset, trainable: dict, metrics: dict) -> Path:
    """`training_report.json`: recipe, trainable parameters, skips (counts + ids), last logged ITG/ITDM, metrics."""
    losses = [entry for entry in trainer.state.log_history if "itg_loss" in entry]
    report = {
        "recipe": recipe.to_dict(),
        "trainable_parameters": trainable,
        "num_samples": len(dataset),
        "skipped": dataset.skips.counts(),
        "skipped_report": dataset.skips.report(),
        "truncated_after_image": len(dataset.skips.truncated),
        "first_log": losses[0] if losses else None,
        "last_log": losses[-1] if losses else None,
        "metrics": metrics,
    }
    path = output_dir / REPORT_FILE
    path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return path


__all__ = ["train", "load_model_and_processor", "training_arguments"]
