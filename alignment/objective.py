"""Plugging alignment objectives into the MAGE trainer.

An objective is any callable `(model, inputs, outputs) -> (loss, logs)`: `model` is the unwrapped MAGE model,
`inputs` the objective's own batch keys plus `pixel_values`, `outputs` the model's forward output (with
`image_hidden_states`). `AlignedMageTrainer` adds them to `MageTrainer`'s loss:

    loss = ITG + itdm_weight·ITDM + Σ_k weight_k · objective_k

Each term is a micro-batch mean, divided by the accumulation steps when `num_items_in_batch` is used (as ITDM), and
logged as its own scalar (`<name>_loss`, plus the objective's logs). Objectives that are `nn.Module`s get their
trainable parameters (SEA's τ, VLSA's Epigone/denoiser) in an extra optimizer group, and are never part of the
exported model. Terms with weight 0 are skipped, not computed.

`SEALabelCollator` wraps `MageDataCollator` and adds the SEA labels of each image row (`sea_label_ids`,
`sea_label_scores`, one row per image in batch order), looked up by row id.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from training.trainer import MageTrainer

from .sea import NO_LABEL, SEA_KEYS

OBJECTIVE_KEYS = SEA_KEYS
Objective = Callable[[nn.Module, dict, object], tuple[torch.Tensor, dict[str, float]]]


class SEALabelCollator:
    """`MageDataCollator` + SEA labels: `labels[row_id] = (ids (g, g, n) long, scores (g, g, n) float)`.

    Image rows without labels get all `NO_LABEL` (no pairs) and are counted in `missing`.
    """

    def __init__(self, base, labels: dict[str, tuple[torch.Tensor, torch.Tensor]], grid: int, top_n: int):
        self.base, self.labels, self.grid, self.top_n = base, labels, grid, top_n
        self.missing = 0

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.base(examples)
        image_rows = [e for e in examples if e.get("pixel_values") is not None]
        if not image_rows:
            return batch
        ids, scores = [], []
        for example in image_rows:
            found = self.labels.get(example["id"])
            if found is None:
                self.missing += 1
                found = (
                    torch.full((self.grid, self.grid, self.top_n), NO_LABEL),
                    torch.zeros(self.grid, self.grid, self.top_n),
                )
            ids.append(found[0])
            scores.append(found[1])
        batch["sea_label_ids"], batch["sea_label_scores"] = torch.stack(ids), torch.stack(scores)
        return batch


class AlignedMageTrainer(MageTrainer):
    """`MageTrainer` + weighted alignment objectives (`objectives={"sea": (1.0, SEAObjective(...))}`).

    Keyword-only args besides `MageTrainer`'s: `objectives` (name → (weight, callable)), `aux_learning_rate`
    (learning rate of the objectives' parameters; None = `args.learning_rate`).
    """

    def __init__(self, *args, objectives: dict[str, tuple[float, Objective]] | None = None,
                 aux_learning_rate: float | None = None, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.objectives = {name: (float(w), obj) for name, (w, obj) in (objectives or {}).items()}
        self.aux_learning_rate = aux_learning_rate
        self._aux_group_added = False
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
        if params and not self._aux_group_added:
            lr = self.aux_learning_rate or self.args.learning_rate
            optimizer.add_param_group({"params": params, "weight_decay": 0.0, "lr": lr})
            self._aux_group_added = True
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        aux_inputs = {key: inputs.pop(key) for key in OBJECTIVE_KEYS if key in inputs}
        pixel_values = inputs.get("pixel_values")
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        images = getattr(outputs, "image_hidden_states", None)
        if model.training and pixel_values is not None and images is not None:
            steps = self.current_gradient_accumulation_steps
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
                self._mage_sums[f"{name}_loss"] += value.detach().double().cpu() / steps
                for key, number in logs.items():
                    self._mage_sums[key] += torch.tensor(float(number), dtype=torch.float64) / steps
        return (loss, outputs) if return_outputs else loss


__all__ = ["AlignedMageTrainer", "SEALabelCollator", "OBJECTIVE_KEYS", "Objective"]
