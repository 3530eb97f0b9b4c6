"""`MageTrainer`: transformers' `Trainer` with the MAGE loss `L = L_ITG + itdm_weight · L_ITDM`.

Loss bookkeeping (docs/training.md, "Loss": the accumulation rule). With `num_items_in_batch` (always passed for a model
that takes `**kwargs`), the ITG cross-entropy of each micro-batch is a *sum* over its tokens divided by the
supervised-token count of the whole accumulated batch (all processes), times the number of processes (DDP averages
gradients). The ITDM term follows the same rule: each micro-batch contributes `Σ_i ||d_ian_i − d_llm_i||² / N_img`,
N_img = image-bearing samples of the whole accumulated batch (gathered across processes), times the number of processes.
Hence 2 micro-batches × 4 with accumulation give the same gradients as 1 × 8, and 2 processes × 2 the same as 1 × 4.

ITG and ITDM are logged as separate scalars (`itg_loss`, `itdm_loss`) at every logging step, averaged like Trainer's
own `loss` (over processes and optimizer steps; ITDM over the steps that had image samples, since text-only steps have
none), so they reach TensorBoard / W&B whenever `report_to` enables them.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from torch import nn
from transformers import Trainer

from .collator import ITDM_KEYS, SKIP_KEY, ModalityLengthGroupedSampler
from .losses import ITG_REDUCTIONS, itdm_loss, itg_loss, itg_row_weights

logger = logging.getLogger(__name__)

PROJECTOR_MODULE = "multi_modal_projector"
VISION_MODULE = "vision_tower"


# ------------------------------------------------------------------------------------------------------ freezing
def set_trainable_for_stage(model: nn.Module, stage: int, tune_vision_tower: bool = False) -> dict[str, int]:
    """Freeze / unfreeze a `MageForConditionalGeneration` for a training stage (the one place this is decided).

    - stage 1: the projector (IAN) only — vision tower and LLM frozen;
    - stages 2 and 3: projector + LLM (decoder, embeddings, lm_head) — vision tower frozen;
    - `tune_vision_tower=True` also trains the tower (not in the paper).

    Returns the trainable parameter count per part: `{"vision_tower", "projector", "language_model", "total"}`.
    """
    if stage not in (1, 2, 3):
        raise ValueError(f"stage={stage!r}: expected 1, 2 or 3.")
    for name, parameter in model.named_parameters():
        part = _part_of(name)
        if part == "projector":
            parameter.requires_grad_(True)
        elif part == "vision_tower":
            parameter.requires_grad_(tune_vision_tower)
        else:
            parameter.requires_grad_(stage >= 2)
    return count_trainable(model)


def _part_of(name: str) -> str:
    if PROJECTOR_MODULE in name:
        return "projector"
    if VISION_MODULE in name:
        return "vision_tower"
    return "language_model"


def count_trainable(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per part (`vision_tower`, `projector`, `language_model`) and `total`."""
    counts = {"vision_tower": 0, "projector": 0, "language_model": 0}
    seen = set()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and id(parameter) not in seen:
            seen.add(id(parameter))
            counts[_part_of(name)] += parameter.numel()
    counts["total"] = sum(counts.values())
    return counts


# ------------------------------------------------------------------------------------------------------- trainer
class ItdmLossMixin:
    """`compute_loss` = ITG + itdm_weight · ITDM with exact accumulation / multi-process scaling, separate logging,
    the `projector_lr` parameter group and the modality-grouped sampler. Mixed into `Trainer` and TRL's SFTTrainer.

    Extra constructor arguments (keyword-only): `itdm_weight` (default: the model config's), `projector_lr`
    (None = the learning rate), `group_by_modality_length` (needs `train_dataset.lengths`), `length_group_factor`
    (megabatches sorted together by length; 1 = LLaVA's grouping), `itg_reduction` (how ITG weighs rows:
    `training.losses.ITG_REDUCTIONS`; "token" = the model's own loss).
    """

    def _init_mage(
        self,
        itdm_weight: float | None,
        projector_lr: float | None,
        group_by_modality_length: bool,
        length_group_factor: int = 1,
        itg_reduction: str = "token",
    ):
        if itg_reduction not in ITG_REDUCTIONS:
            raise ValueError(f"itg_reduction={itg_reduction!r}: expected one of {list(ITG_REDUCTIONS)}")
        self.itg_reduction = itg_reduction
        self._itg_normaliser = None
        config = self._mage_config()
        self.itdm_weight = float(config.itdm_weight if itdm_weight is None else itdm_weight)
        self.itdm_reduction = config.itdm_reduction
        self.projector_lr = projector_lr
        self.group_by_modality_length = group_by_modality_length
        self.length_group_factor = length_group_factor
        self._itdm_num_items = None
        self._mage_sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self._mage_steps: dict[str, set[int]] = defaultdict(set)

    def _mage_config(self):
        model = self.model
        while not hasattr(model, "get_itdm_features") and hasattr(model, "get_base_model"):
            model = model.get_base_model()
        return model.config

    def _mage_model(self, model: nn.Module) -> nn.Module:
        model = self.accelerator.unwrap_model(model)
        if not hasattr(model, "get_itdm_features") and hasattr(model, "get_base_model"):
            model = model.get_base_model()
        return model

    # ----------------------------------------------------------------------------------------------------- batches
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        count = sum(int(batch["itdm_input_ids"].shape[0]) for batch in batch_samples if "itdm_input_ids" in batch)
        count = torch.tensor(count, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        self._itdm_num_items = count
        if self.itg_reduction != "token":  # the row weights' normaliser of the whole accumulated batch
            total = sum(
                (
                    itg_row_weights(batch["labels"], self.itg_reduction)[1]
                    for batch in batch_samples
                    if "labels" in batch
                ),
                torch.zeros((), dtype=torch.float64),
            ).to(device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                total = self.accelerator.gather(total.reshape(1)).sum()
            self._itg_normaliser = total
        return batch_samples, num_items_in_batch

    # -------------------------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._record_data_events(inputs.pop(SKIP_KEY, ()))
        itdm_inputs = {key: inputs.pop(key) for key in ITDM_KEYS if key in inputs}
        if model.training and self.label_smoother is None and "labels" in inputs and self.itg_reduction == "token":
            # Training needs only the loss: the LM head runs at supervised positions only (same loss and gradients).
            inputs["return_logits"] = False
        itg, outputs = self._base_compute_loss(model, inputs, num_items_in_batch)
        itdm = torch.zeros((), device=itg.device, dtype=itg.dtype)
        images = getattr(outputs, "image_hidden_states", None)
        if itdm_inputs and images is not None and (self.itdm_weight > 0 or not model.training):
            itdm = self._itdm(model, itdm_inputs, images, num_items_in_batch).to(itg.dtype)
        loss = itg + self.itdm_weight * itdm
        if model.training:
            scaled = num_items_in_batch is not None
            if scaled and self._itdm_num_items is not None:
                has_images = int(self._itdm_num_items) > 0  # anywhere in the accumulated batch, all processes
            else:
                has_images = bool(itdm_inputs)
            self._record(itg, itdm, scaled, has_images)
        return (loss, outputs) if return_outputs else loss

    def _record_data_events(self, events) -> None:
        skips = getattr(self.train_dataset, "skips", None)
        for row_id, reason in events if skips is not None else ():
            if reason == "truncated":
                skips.truncated.add(row_id)
            else:
                skips.add(row_id, reason)

    def _base_compute_loss(self, model, inputs, num_items_in_batch):
        """ITG and the outputs: `Trainer.compute_loss` (the model's loss, normalised by `num_items_in_batch`), or with
        `itg_reduction` other than "token" the row-weighted loss from the logits, normalised alike (by the whole
        accumulated batch's row weights, times the processes as Trainer scales its loss)."""
        if self.itg_reduction == "token" or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        if num_items_in_batch is None or not model.training or self._itg_normaliser is None:
            return itg_loss(outputs.logits, labels, self.itg_reduction), outputs  # this micro-batch's own mean
        loss = itg_loss(outputs.logits, labels, self.itg_reduction, normaliser=self._itg_normaliser)
        if self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # as Trainer scales ITG: DDP averages the gradients
        return loss, outputs

    def _itdm(self, model, itdm_inputs: dict, image_hidden_states: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        mage = self._mage_model(model)
        d_ian, d_llm = mage.get_itdm_features(
            text_input_ids=itdm_inputs["itdm_input_ids"],
            text_attention_mask=itdm_inputs["itdm_attention_mask"],
            text_pool_mask=itdm_inputs["itdm_pool_mask"],
            image_hidden_states=image_hidden_states,
        )
        if num_items_in_batch is None or not model.training or self._itdm_num_items is None:
            return itdm_loss(d_ian, d_llm, reduction=self.itdm_reduction)  # a micro-batch mean
        loss = itdm_loss(d_ian, d_llm, reduction=self.itdm_reduction, num_items=self._itdm_num_items)
        if self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # as Trainer scales ITG: DDP averages the gradients
        return loss

    def _record(self, itg: torch.Tensor, itdm: torch.Tensor, scaled: bool, has_images: bool) -> None:
        # What enters backward, as Trainer's `tr_loss`: per-step sums, averaged over processes and steps at log time.
        # ITDM is averaged over the steps that had image samples only (text-only steps have no ITDM, not a zero one).
        divisor = 1 if scaled else self.current_gradient_accumulation_steps
        self._mage_sums["itg_loss"] += itg.detach().double().cpu() / divisor
        self._mage_sums["itdm_loss"] += itdm.detach().double().cpu() / divisor
        self._mage_steps["itg_loss"].add(self.state.global_step)
        if has_images:
            self._mage_steps["itdm_loss"].add(self.state.global_step)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._mage_steps["itg_loss"]:
            for key, value in self._mage_sums.items():
                total = self.accelerator.gather(value.to(self.args.device, torch.float32).reshape(1)).mean()
                logs[key] = round(float(total) / max(1, len(self._mage_steps[key])), 6)
            self._mage_sums.clear()
            self._mage_steps.clear()
        super().log(logs, *args, **kwargs)

    # ---------------------------------------------------------------------------------------------- optimisation
    def create_optimizer(self, model=None):
        if self.projector_lr is None or self.optimizer is not None:
            return super().create_optimizer(model) if model is not None else super().create_optimizer()
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[bool, bool], list] = defaultdict(list)
        for name, parameter in opt_model.named_parameters():
            if parameter.requires_grad:
                groups[(PROJECTOR_MODULE in name, name in decay)].append(parameter)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        param_groups = []
        for (is_projector, has_decay), params in groups.items():
            group = {"params": params, "weight_decay": self.args.weight_decay if has_decay else 0.0}
            if is_projector:
                group["lr"] = self.projector_lr
            param_groups.append(group)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.group_by_modality_length and hasattr(dataset, "lengths"):
            megabatch = self.args.train_batch_size * self.args.world_size * self.args.gradient_accumulation_steps
            return ModalityLengthGroupedSampler(
                dataset.lengths, megabatch, seed=self.args.seed, group_factor=self.length_group_factor
            )
        return super()._get_train_sampler(*([train_dataset] if train_dataset is not None else []))


class MageTrainer(ItdmLossMixin, Trainer):
    """`Trainer` for MAGE: `compute_loss` returns ITG + `itdm_weight`·ITDM (see the module docstring).

    Args (besides `Trainer`'s, keyword-only): `itdm_weight` (default: `model.config.itdm_weight`),
    `projector_lr` (LLaVA's `mm_projector_lr`; None = `args.learning_rate`), `group_by_modality_length`,
    `length_group_factor`, `itg_reduction` ("token", "square" or "sample": how ITG weighs rows of different lengths).
    The data collator must be a `MageDataCollator` (it provides the ITDM text).
    """

    def __init__(
        self,
        *args,
        itdm_weight: float | None = None,
        projector_lr: float | None = None,
        group_by_modality_length: bool = False,
        length_group_factor: int = 1,
        itg_reduction: str = "token",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._init_mage(itdm_weight, projector_lr, group_by_modality_length, length_group_factor, itg_reduction)


__all__ = ["MageTrainer", "ItdmLossMixin", "set_trainable_for_stage", "count_trainable"]
