"""`MageSFTTrainer`: TRL's `SFTTrainer` for users who prefer TRL, with MAGE's collator and ITDM term.

Two TRL behaviours are replaced on purpose (docs/training.md, TRL):

- TRL's VLM collator (`DataCollatorForVisionLanguageModeling`) does not mask image tokens; the `MageDataCollator`
  masks everything but the assistant answers (image placeholders included) and also provides the ITDM text.
- TRL's fused-LM-head loss path (`fused_lm_head=True`) computes only the token loss and would drop the ITDM term;
  `compute_loss` here is the `MageTrainer` one (ITG via the model's loss with `num_items_in_batch` + ITDM).

Dataset preparation is skipped (`dataset_kwargs={"skip_prepare_dataset": True}`): pass a `LlavaDataset`.
"""

from __future__ import annotations

import dataclasses
import os

import trl
from transformers import Trainer

from .api import training_arguments
from .recipes import Recipe
from .trainer import ItdmLossMixin


def sft_config(recipe: Recipe, output_dir: str | os.PathLike, **overrides):
    """An `SFTConfig` equal to `training.api.training_arguments(recipe, ...)` plus the TRL settings MAGE needs
    (no dataset preparation, no packing / padding-free, no TRL truncation: the data set already truncates safely)."""
    base = training_arguments(recipe, output_dir, **overrides)
    known = {f.name for f in dataclasses.fields(trl.SFTConfig)}
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init and f.name in known}
    values.update(
        dataset_kwargs={"skip_prepare_dataset": True},
        packing=False,
        padding_free=False,
        max_length=None,
        remove_unused_columns=False,
    )
    return trl.SFTConfig(**values)


class MageSFTTrainer(ItdmLossMixin, trl.SFTTrainer):
    """TRL `SFTTrainer` with MAGE's loss (`ITG + itdm_weight · ITDM`), logging and optimizer groups.

    Use with `data_collator=MageDataCollator.from_processor(processor)`, a `LlavaDataset` and `sft_config(...)`.
    Keyword-only extras as `MageTrainer`: `itdm_weight`, `projector_lr`, `group_by_modality_length`, `itg_reduction`.
    """

    def __init__(
        self,
        *args,
        itdm_weight=None,
        projector_lr=None,
        group_by_modality_length=False,
        itg_reduction="token",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._init_mage(itdm_weight, projector_lr, group_by_modality_length, itg_reduction=itg_reduction)

    def _base_compute_loss(self, model, inputs, num_items_in_batch):
        if self.itg_reduction != "token":  # the mixin's row-weighted ITG
            return super()._base_compute_loss(model, inputs, num_items_in_batch)
        # Trainer's path (the model's own loss with num_items_in_batch), not TRL's fused path without ITDM.
        return Trainer.compute_loss(self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)


__all__ = ["MageSFTTrainer", "sft_config"]
