"""Training recipes: a typed `Recipe` dataclass loaded from YAML (`training/recipes/*.yaml`) plus `key=value` overrides.

Unknown keys are errors that name the file and suggest the closest field ("`lr` is not a recipe field; did you mean
`learning_rate`?"); every error of a file is reported at once. Values from YAML or the command line are converted to
the field's type (`--set learning_rate=1e-3` works although YAML 1.1 reads `1e-3` as a string).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

RECIPE_DIR = Path(__file__).parent / "recipes"
TEMPLATES = ("plain", "vicuna_v1")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
ALIGNMENT_OBJECTIVES = ("none", "sea")  # the objectives whose fields `Recipe` holds; more can be registered
SEA_LABEL_SOURCES = ("auto", "shapeworld", "clip")


class RecipeError(ValueError):
    """A recipe file or override is invalid; the message lists every problem found."""


# ------------------------------------------------------------------------------------ alignment objective plug-ins
# `alignment_objective` name -> builder. The packages that implement objectives register them (alignment/ registers
# "sea" when `alignment.recipe` is imported, as `mage train` and `mage ablate` do); training/ never imports them.
_OBJECTIVE_BUILDERS: dict[str, Callable] = {}


def register_alignment_objective(name: str, build: Callable) -> None:
    """Make `alignment_objective: <name>` trainable. `training.api.train` calls
    `build(recipe, model, processor, dataset, data_path, collator)` after loading the model and the data; it returns
    `(collator, objectives)`: the data collator to train with (the given one, or a wrapper adding the objectives'
    batch keys, named in its `objective_keys`) and `{name: (weight, objective)}` for
    `training.objectives.AlignedMageTrainer`. It raises `RecipeError` for settings the model or data cannot serve."""
    if name == "none":
        raise ValueError("alignment_objective 'none' means no objective; register another name.")
    _OBJECTIVE_BUILDERS[name] = build


def alignment_objective_builder(name: str) -> Callable:
    """The builder registered for `alignment_objective=name`; a `RecipeError` when none is."""
    if name not in _OBJECTIVE_BUILDERS:
        known = ", ".join(repr(n) for n in _OBJECTIVE_BUILDERS) or "no objective yet"
        raise RecipeError(
            f"alignment_objective={name!r} has no registered implementation (registered: {known}). training/ does "
            "not import the packages that implement objectives: import the one that registers it first (SEA: "
            "`import alignment.recipe`, as `mage train` does) or call training.recipes.register_alignment_objective."
        )
    return _OBJECTIVE_BUILDERS[name]


def known_alignment_objectives() -> tuple[str, ...]:
    """The values `alignment_objective` accepts: "none", the objectives `Recipe` has fields for, the registered."""
    return tuple(dict.fromkeys([*ALIGNMENT_OBJECTIVES, *_OBJECTIVE_BUILDERS]))


@dataclass
class Recipe:
    """One training stage. Defaults are LLaVA-1.5 stage 2 (docs/training.md, Recipes); the YAML files override what
    differs.

    Batch sizes: the global batch is `per_device_train_batch_size × gradient_accumulation_steps × num_processes`.
    The 7B/13B recipes assume 8 processes (LLaVA-1.5: stage 1 256, stage 2 128).
    """

    # --- what is trained
    stage: int = 2  # 1: IAN only; 2: IAN + LLM; 3: as 2, on tool-use data + a replay share of stage-2 data
    template: str = "vicuna_v1"  # "plain" (stage 1: <image> + caption) or "vicuna_v1" (chat)
    tune_vision_tower: bool = False  # the paper keeps the tower frozen in every stage
    # --- optimisation
    optim: str = "adamw_torch"  # any TrainingArguments.optim (LLaVA-1.5: AdamW)
    learning_rate: float = 2e-5
    projector_lr: float | None = None  # LLaVA's mm_projector_lr; None = learning_rate
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    seed: int = 42
    bf16: bool = True
    gradient_checkpointing: bool = True
    # --- loss (written into the model config, so the checkpoint records it)
    itdm_weight: float = 1.0  # L = L_ITG + itdm_weight * L_ITDM
    itdm_reduction: str = "mean"  # "mean" over features or "sum" (Eq. 2 as printed)
    itdm_text_source: str = "hidden"  # "hidden" (text-only LM forward) or "embeddings"
    # how ITG weighs rows (training.losses.ITG_REDUCTIONS): "token" (every supervised token alike, LLaVA), "sample"
    # (every row alike, whatever its answer's length), "square" (between); a trainer setting, not stored in the model
    itg_reduction: str = "token"
    # --- alignment objective beside ITG/ITDM (docs/alignment.md). Implemented outside training/: the name selects the
    # builder registered with `register_alignment_objective` (alignment/ registers "sea"). The sea_* fields are SEA's
    # settings, stored and checked here so recipes load the same whether or not alignment/ is imported.
    # SEA is stage-1 only (the paper).
    alignment_objective: str = "none"  # "none" or "sea": L = ITG + itdm_weight·ITDM + sea_weight·L_a
    sea_weight: float = 1.0  # λ of SEA's Eq. 11 (the paper does not state it)
    sea_temperature: float = 0.07  # initial τ, learnable (the paper's "τ = 0" is ambiguous)
    sea_window: int = 2  # k of the k×k localized sampling window on the label grid (paper: 2)
    sea_top_n: int = 10  # labels kept per patch (paper: 10)
    sea_apply_to: str = "tokens"  # "tokens" (projector output) or "vab" (the IAN's per-patch VAB output)
    # "auto": exact ShapeWorld labels when a scenes.jsonl beside the data covers every image row, else CLIP;
    # "shapeworld" (substitute for CLIP labels) or "clip" (Eqs. 4-6 with `sea_clip_model` and `sea_word_list`)
    sea_label_source: str = "auto"
    sea_clip_model: str | None = None  # folder of a transformers CLIPModel + its tokenizer and image processor
    sea_word_list: str | None = None  # the word list W for CLIP labels, one word per line (paper: 2of12)
    # --- data
    max_length: int = 2048
    image_folder: str | None = None  # default: the data file's folder
    replay_data: str | None = None  # stage 3: stage-2 data mixed in
    replay_ratio: float = 0.1  # share of replay samples in the stage-3 mix (the paper's 10 %)
    max_samples: int | None = None  # keep the first N valid rows of the main data (smoke tests)
    group_by_modality_length: bool = True
    # > 1: sort this many megabatches at a time by length before batching (less padding); 1 = LLaVA's grouping
    length_group_factor: int = 1
    dataloader_num_workers: int = 0
    # encode every row's text once before training (TRL-style) instead of on each access, every epoch: for data
    # that fits in memory and is read for several epochs; large sets encode lazily in dataloader workers
    pretokenize: bool = False
    # --- checkpoints and logs
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int | None = 1
    report_to: str = "none"  # "tensorboard", "wandb", "none"
    # --- LoRA / QLoRA (used with --lora / --qlora; LLaVA-1.5's LoRA settings)
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05

    def validate(self) -> list[str]:
        """Every problem as a sentence naming field, value and what is allowed (empty when valid)."""
        errors = []
        if self.stage not in (1, 2, 3):
            errors.append(f"stage={self.stage!r}: expected 1, 2 or 3")
        if self.template not in TEMPLATES:
            errors.append(f"template={self.template!r}: expected one of {list(TEMPLATES)}")
        if self.lr_scheduler_type not in SCHEDULERS:
            errors.append(f"lr_scheduler_type={self.lr_scheduler_type!r}: expected one of {list(SCHEDULERS)}")
        if self.itdm_reduction not in ("mean", "sum"):
            errors.append(f"itdm_reduction={self.itdm_reduction!r}: expected 'mean' or 'sum'")
        if self.itg_reduction not in ("token", "square", "sample"):
            errors.append(f"itg_reduction={self.itg_reduction!r}: expected 'token', 'square' or 'sample'")
        if self.itdm_text_source not in ("hidden", "embeddings"):
            errors.append(f"itdm_text_source={self.itdm_text_source!r}: expected 'hidden' or 'embeddings'")
        for name in (
            "learning_rate",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "length_group_factor",
        ):
            if getattr(self, name) <= 0:
                errors.append(f"{name}={getattr(self, name)!r}: must be > 0")
        if self.projector_lr is not None and self.projector_lr <= 0:
            errors.append(f"projector_lr={self.projector_lr!r}: must be > 0 or null")
        if not 0.0 <= self.replay_ratio < 1.0:
            errors.append(f"replay_ratio={self.replay_ratio!r}: expected 0 <= replay_ratio < 1")
        if self.itdm_weight < 0:
            errors.append(f"itdm_weight={self.itdm_weight!r}: must be >= 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            errors.append(f"warmup_ratio={self.warmup_ratio!r}: expected 0 <= warmup_ratio < 1")
        if self.stage == 1 and self.template != "plain":
            errors.append(f"template={self.template!r} with stage=1: stage 1 uses the 'plain' template (LLaVA)")
        errors.extend(self._alignment_errors())
        if self.report_to not in ("none", "tensorboard", "wandb", "all"):
            errors.append(f"report_to={self.report_to!r}: expected 'none', 'tensorboard', 'wandb' or 'all'")
        return errors

    def _alignment_errors(self) -> list[str]:
        errors = []
        known = known_alignment_objectives()
        if self.alignment_objective not in known:
            errors.append(f"alignment_objective={self.alignment_objective!r}: expected one of {list(known)}")
        if self.alignment_objective == "sea" and self.stage not in (1, 2):
            errors.append(
                f"alignment_objective='sea' with stage={self.stage}: SEA aligns image tokens with their cells' words in "
                "stage 1 (the paper) or stage 2 (docs/alignment.md); use stage=1 or 2, or alignment_objective=none"
            )
        if self.sea_weight < 0:
            errors.append(f"sea_weight={self.sea_weight!r}: must be >= 0")
        if self.sea_temperature <= 0:
            errors.append(f"sea_temperature={self.sea_temperature!r}: must be > 0 (the paper's 'τ = 0' is ambiguous)")
        for name in ("sea_window", "sea_top_n"):
            if getattr(self, name) < 1:
                errors.append(f"{name}={getattr(self, name)!r}: must be >= 1")
        if self.sea_apply_to not in ("tokens", "vab"):
            errors.append(f"sea_apply_to={self.sea_apply_to!r}: expected 'tokens' or 'vab'")
        if self.sea_label_source not in SEA_LABEL_SOURCES:
            errors.append(f"sea_label_source={self.sea_label_source!r}: expected one of {list(SEA_LABEL_SOURCES)}")
        if self.alignment_objective == "sea" and self.sea_label_source == "clip":
            for name in ("sea_clip_model", "sea_word_list"):
                if not getattr(self, name):
                    errors.append(f"{name} is not set: sea_label_source='clip' needs sea_clip_model and sea_word_list")
        return errors

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Recipe))
_HINTS = typing.get_type_hints(Recipe)
# Names users bring from LLaVA / transformers scripts.
ALIASES = {
    "lr": "learning_rate",
    "mm_projector_lr": "projector_lr",
    "model_max_length": "max_length",
    "batch_size": "per_device_train_batch_size",
    "epochs": "num_train_epochs",
    "group_by_length": "group_by_modality_length",
}


def _coerce(name: str, value):
    """Convert `value` (from YAML or a `--set` string) to the type of field `name`; raise `RecipeError`."""
    hint = _HINTS[name]
    allowed = [a for a in typing.get_args(hint)] if isinstance(hint, types.UnionType) else [hint]
    optional = type(None) in allowed
    base = next(a for a in allowed if a is not type(None))
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
        if optional:
            return None
        raise RecipeError(f"{name}: null is not allowed (expected {base.__name__})")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{name}={value!r}: expected {base.__name__}{' or null' if optional else ''}") from None


def _unknown_key_message(key: str) -> str:
    close = [ALIASES[key]] if key in ALIASES else []
    close = close or [name for name in FIELD_NAMES if "".join(word[0] for word in name.split("_")) == key][:1]
    close = close or difflib.get_close_matches(key, FIELD_NAMES, n=1, cutoff=0.5)
    hint = f"; did you mean `{close[0]}`?" if close else f"; known fields: {', '.join(FIELD_NAMES)}"
    return f"`{key}` is not a recipe field{hint}"


def recipe_from_dict(values: dict, source: str = "<dict>") -> Recipe:
    """Build and validate a `Recipe`; one `RecipeError` lists every problem, prefixed with `source`."""
    errors, kwargs = [], {}
    for key, value in values.items():
        if key not in FIELD_NAMES:
            errors.append(_unknown_key_message(key))
            continue
        try:
            kwargs[key] = _coerce(key, value)
        except RecipeError as error:
            errors.append(str(error))
    recipe = Recipe(**kwargs) if not errors else None
    if recipe is not None:
        errors.extend(recipe.validate())
    if errors:
        raise RecipeError(f"{source}: " + "; ".join(errors) + ".")
    return recipe


def parse_overrides(pairs: list[str] | None) -> dict:
    """`["learning_rate=1e-3", "bf16=false"]` → `{"learning_rate": "1e-3", "bf16": "false"}` (typed later)."""
    result = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise RecipeError(f"--set {pair!r}: expected key=value, e.g. --set learning_rate=1e-3.")
        key, value = pair.split("=", 1)
        result[key.strip()] = value.strip()
    return result


def resolve_recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A path, or the name of a bundled recipe (`stage2_7b` → `training/recipes/stage2_7b.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = RECIPE_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    if bundled.is_file():
        return bundled
    known = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
    raise RecipeError(f"Recipe {str(name_or_path)!r} not found: not a file, nor a bundled recipe ({known}).")


def load_recipe(name_or_path: str | os.PathLike, overrides: dict | list[str] | None = None) -> Recipe:
    """Load a YAML recipe and apply overrides (a dict, or `key=value` strings as given to `--set`)."""
    path = resolve_recipe_path(name_or_path)
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RecipeError(f"{path}:{where} not valid YAML ({problem}).") from None
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: expected a mapping of recipe fields, got {type(values).__name__}.")
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for key in overrides or {}:
        if key not in FIELD_NAMES:
            raise RecipeError(f"--set: {_unknown_key_message(key)}.")
    return recipe_from_dict({**values, **(overrides or {})}, source=str(path))


__all__ = [
    "Recipe",
    "RecipeError",
    "load_recipe",
    "recipe_from_dict",
    "parse_overrides",
    "resolve_recipe_path",
    "RECIPE_DIR",
    "FIELD_NAMES",
    "register_alignment_objective",
    "alignment_objective_builder",
    "known_alignment_objectives",
]
