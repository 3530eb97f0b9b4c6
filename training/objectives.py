"""Extra loss terms beside ITG + ITDM: the hook through which objectives (alignment/'s SEA and VLSA) join training.

An objective is any callable `(model, inputs, outputs) -> (loss, logs)`: `model` is the unwrapped MAGE model,
`inputs` the objectives' own batch keys plus `pixel_values`, `outputs` the model's forward output (with
`image_hidden_states`). `AlignedMageTrainer` adds them to `MageTrainer`'s loss:

    loss = ITG + itdm_weight·ITDM + Σ_k weight_k · objective_k

Each term is a micro-batch mean, divided by the accumulation steps when `num_items_in_batch` is used (as ITDM), and
logged as its own scalar (`<name>_loss`, plus the objective's logs). Objectives that are `nn.Module`s get their
trainable parameters (SEA's τ, VLSA's Epigone/denoiser) in an extra optimizer group, and are never part of the
exported model. Terms with weight 0 are skipped, not computed.

The batch keys the objectives read come from the data collator, which names them in its `objective_keys` attribute
(e.g. alignment's `SEALabelCollator`); the trainer takes them out of the batch before the model's forward.

From a recipe, `training.api.train` builds this trainer for `recipe.alignment_objective` through the builder
registered under that name (`training.recipes.register_alignment_objective`); training/ never imports the packages
that implement objectives.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .trainer import MageTrainer

AUX_FILE = "aux_heads.safetensors"  # the objectives' parameters, beside the model in every checkpoint
Objective = Callable[[nn.Module, dict, object], tuple[torch.Tensor, dict[str, float]]]


class _ZeroAuxGrads(TrainerCallback):
    """`Trainer` calls `model.zero_grad()` after each optimizer step; the objectives' parameters live outside the
    model, so their gradients would accumulate across steps without this callback (found by the resume test)."""

    def __init__(self, trainer: AlignedMageTrainer):
        self.trainer = trainer

    def _clear(self) -> None:
        for param in self.trainer.aux_parameters():
            param.grad = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._clear()

    def on_step_end(self, args, state, control, **kwargs):
        self._clear()


class AlignedMageTrainer(MageTrainer):
    """`MageTrainer` + weighted objectives (`objectives={"sea": (1.0, SEAObjective(...))}`).

    Keyword-only args besides `MageTrainer`'s: `objectives` (name → (weight, callable)), `aux_learning_rate`
    (learning rate of the objectives' parameters; None = `args.learning_rate`).
    """

    def __init__(self, *args, objectives: dict[str, tuple[float, Objective]] | None = None,
                 aux_learning_rate: float | None = None, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.objectives = {name: (float(w), obj) for name, (w, obj) in (objectives or {}).items()}
        self.aux_learning_rate = aux_learning_rate
        self._micro_step = (-1, 0)  # (global_step, micro-batches seen in it): seeds the objectives' generators
        self.add_callback(_ZeroAuxGrads(self))  # Trainer zeroes only the model's gradients
        for _, objective in self.objectives.values():
            if isinstance(objective, nn.Module):
                objective.to(self.args.device)
            if hasattr(objective, "attach"):
                objective.attach(self._mage_model(self.model))

    def aux_parameters(self) -> list[nn.Parameter]:
        params = []
        for weight, objective in self.objectives.values():
            if weight > 0 and isinstance(objective, nn.Module):
                params += [p for p in objective.parameters() if p.requires_grad]
        return params

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        params = self.aux_parameters()
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if params and not any(id(p) in present for p in params):  # once per optimizer object
            lr = self.aux_learning_rate or self.args.learning_rate
            optimizer.add_param_group({"params": params, "weight_decay": 0.0, "lr": lr})
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        keys = getattr(self.data_collator, "objective_keys", ())
        aux_inputs = {key: inputs.pop(key) for key in keys if key in inputs}
        pixel_values = inputs.get("pixel_values")
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        images = getattr(outputs, "image_hidden_states", None)
        if model.training and pixel_values is not None and images is not None:
            steps = self.current_gradient_accumulation_steps
            self._seed_generators()
            for name, (weight, objective) in self.objectives.items():
                if weight <= 0:
                    continue
                value, logs = objective(self._mage_model(model), {**aux_inputs, "pixel_values": pixel_values}, outputs)
                term = value.to(loss.dtype)
                if num_items_in_batch is not None:
                    term = term / steps
                    if self.args.average_tokens_across_devices:
                        term = term * self.accelerator.num_processes
                loss = loss + weight * term
                self._accumulate_log(f"{name}_loss", value.detach().double().cpu() / steps)
                for key, number in logs.items():
                    self._accumulate_log(key, torch.tensor(float(number), dtype=torch.float64) / steps)
        return (loss, outputs) if return_outputs else loss

    def _accumulate_log(self, key: str, value: torch.Tensor) -> None:
        """Add to MageTrainer's running log sums; the mean is taken over the steps that recorded `key`."""
        self._mage_sums[key] += value
        if isinstance(self._mage_steps, dict):  # per-key step sets (MageTrainer since f0281ac)
            self._mage_steps[key].add(self.state.global_step)

    # --------------------------------------------------------------------------------- exact resume of the heads
    def _seed_generators(self) -> None:
        """Per-micro-step randomness from (seed, global step, micro step, process), never the global RNG, so a
        resumed run samples the same SEA pairs / VLSA timesteps as an uninterrupted one."""
        step, micro = self._micro_step
        micro = micro + 1 if step == self.state.global_step else 0
        self._micro_step = (self.state.global_step, micro)
        seed = ((self.args.seed * 1_000_003 + self.state.global_step) * 1009 + micro) * 101 + self.args.process_index
        for index, (_, objective) in enumerate(self.objectives.values()):
            generator = getattr(objective, "generator", None)
            if isinstance(generator, torch.Generator):
                generator.manual_seed((seed + index) % (2**63))

    def aux_state_dict(self) -> dict[str, torch.Tensor]:
        state = {}
        for name, (_, objective) in self.objectives.items():
            if isinstance(objective, nn.Module):
                state.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in objective.state_dict().items()})
        return state

    def _save_checkpoint(self, model, trial, *args, **kwargs):
        super()._save_checkpoint(model, trial, *args, **kwargs)
        state = self.aux_state_dict()
        if state and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_file(state, os.path.join(folder, AUX_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, AUX_FILE)
        if os.path.isfile(path):
            state = load_file(path)
            for name, (_, objective) in self.objectives.items():
                if isinstance(objective, nn.Module):
                    prefix = f"{name}."
                    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                    if own:
                        objective.load_state_dict(own, strict=False)


__all__ = ["AlignedMageTrainer", "AUX_FILE", "Objective"]
