"""MageSFTTrainer (TRL) keeps MAGE's collator (image tokens masked) and ITDM term: one SGD step on the same batch
gives the same weights as MageTrainer, and ITDM is logged (TRL's fused loss path would drop it)."""

from __future__ import annotations

import pytest
import torch

from inference.threads import torch_threads
from training.api import training_arguments
from training.collator import MageDataCollator
from training.data import build_dataset
from training.fixtures import VOCABULARY, write_tiny_llava_dataset
from training.recipes import load_recipe
from training.templates import IGNORE_INDEX
from training.trainer import MageTrainer, set_trainable_for_stage

pytest.importorskip("trl")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """1 torch thread: on the shared 2-core machine the default 2 threads spun and ran these tests up to 26x slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from mage_testing.tiny import build_tiny_mage

    root = tmp_path_factory.mktemp("sft")
    model, processor = build_tiny_mage([VOCABULARY], seed=2)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return {"model": root / "model", "data": write_tiny_llava_dataset(root / "data", 6, 2, seed=2)}


def one_step(workspace, tmp_path, trainer_name):
    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor
    from training.sft import MageSFTTrainer, sft_config

    model = MageForConditionalGeneration.from_pretrained(workspace["model"], dtype=torch.float32)
    processor = MageProcessor.from_pretrained(workspace["model"])
    set_trainable_for_stage(model, 2)
    dataset = build_dataset(workspace["data"], processor, "vicuna_v1", 256)
    settings = dict(
        per_device_train_batch_size=8,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        seed=3,
        data_seed=3,
    )
    recipe = load_recipe("stage2_tiny", ["bf16=false", "warmup_ratio=0"])
    collator = MageDataCollator.from_processor(processor)
    if trainer_name == "sft":
        args = sft_config(recipe, tmp_path / "sft", **settings)
        assert args.gradient_checkpointing is False and args.dataset_kwargs == {"skip_prepare_dataset": True}
        trainer = MageSFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset.to_hf_dataset(),
            data_collator=collator,
            processing_class=processor,
        )
    else:
        trainer = MageTrainer(
            model=model,
            args=training_arguments(recipe, tmp_path / "plain", **settings),
            train_dataset=dataset,
            data_collator=collator,
            processing_class=processor,
        )
    trainer.train()
    batch = collator([dataset[i] for i in range(len(dataset))])
    image_positions = batch["input_ids"] == processor.image_token_id
    assert image_positions.any() and (batch["labels"][image_positions] == IGNORE_INDEX).all()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {n: p.detach().clone() for n, p in model.named_parameters()}, logs[0]


def test_sft_trainer_matches_mage_trainer(workspace, tmp_path):
    sft_weights, sft_log = one_step(workspace, tmp_path, "sft")
    weights, log = one_step(workspace, tmp_path, "plain")
    assert sft_log["itdm_loss"] > 0  # not dropped
    assert sft_log["loss"] == pytest.approx(sft_log["itg_loss"] + sft_log["itdm_loss"], rel=1e-4)
    assert sft_log["itg_loss"] == pytest.approx(log["itg_loss"], rel=1e-5)
    assert sft_log["itdm_loss"] == pytest.approx(log["itdm_loss"], rel=1e-5)
    for name in weights:
        torch.testing.assert_close(sft_weights[name], weights[name], rtol=1e-5, atol=1e-6)
