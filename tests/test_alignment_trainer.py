"""Objectives in the trainer (S14, logging, τ in the optimizer) and the ablation runner's pure parts."""

from __future__ import annotations

import json

import pytest
import torch

from alignment.ablate import Cell, _command, add_arguments, aggregate, markdown, plan_cells
from alignment.sea import NO_LABEL, SEALabelCollator, SEAObjective, tokenize_words
from training.objectives import AlignedMageTrainer

WORDS = ["red", "green", "blue", "yellow", "square", "circle", "background"]


@pytest.fixture()
def stage1_setup(tmp_path):
    from mage_testing.tiny import build_tiny_mage
    from training.api import load_model_and_processor, training_arguments
    from training.collator import MageDataCollator
    from training.data import build_dataset
    from training.fixtures import VOCABULARY, write_tiny_llava_dataset
    from training.recipes import load_recipe

    model, processor = build_tiny_mage([VOCABULARY], projector_type="mlp2x_gelu")
    model.save_pretrained(tmp_path / "init")
    processor.save_pretrained(tmp_path / "init")
    data = write_tiny_llava_dataset(tmp_path / "data", 8, 0, stage=1, seed=0)
    recipe = load_recipe(
        "stage1_tiny", {"max_steps": 2, "per_device_train_batch_size": 4, "itdm_weight": 1.0, "logging_steps": 1}
    )
    model, processor = load_model_and_processor(tmp_path / "init", recipe)
    dataset = build_dataset(data, processor, recipe.template, recipe.max_length, seed=0)
    g = torch.Generator().manual_seed(0)
    labels = {
        dataset[i]["id"]: (torch.randint(0, len(WORDS), (4, 4, 2), generator=g), torch.rand(4, 4, 2, generator=g))
        for i in range(len(dataset))
    }
    collator = SEALabelCollator(MageDataCollator.from_processor(processor), labels, grid=4, top_n=2)
    args = training_arguments(recipe, tmp_path / "run", save_strategy="no", disable_tqdm=True)
    return model, processor, dataset, collator, args


def _trainer(setup, weight: float):
    model, processor, dataset, collator, args = setup
    objective = SEAObjective(*tokenize_words(processor.tokenizer, WORDS), temperature=0.5, window=1)
    return AlignedMageTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                              processing_class=processor, objectives={"sea": (weight, objective)}), objective  # fmt: skip


def test_s14_weight_zero_is_the_plain_trainer_and_weight_adds_lambda_times_sea(stage1_setup):
    from training.trainer import MageTrainer

    model, processor, dataset, collator, args = stage1_setup
    model.train()
    batch = collator([dataset[i] for i in range(4)])
    plain = MageTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=processor
    )
    plain.current_gradient_accumulation_steps = 1  # set by `train()`; compute_loss is called directly here
    base_inputs = {k: v for k, v in batch.items() if not k.startswith("sea_")}
    torch.manual_seed(0)
    base = plain.compute_loss(model, dict(base_inputs))
    trainer, _ = _trainer(stage1_setup, 0.0)
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(0)
    assert torch.equal(trainer.compute_loss(model, dict(batch)), base)
    trainer, objective = _trainer(stage1_setup, 0.5)
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(0)
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    trainer._micro_step = (-1, 0)  # replay the per-step seeding the trainer used
    trainer._seed_generators()
    sea, logs = objective(
        model, {"sea_label_ids": batch["sea_label_ids"], "sea_label_scores": batch["sea_label_scores"]}, outputs
    )
    torch.testing.assert_close(loss - base, 0.5 * sea, rtol=1e-5, atol=1e-6)
    assert logs["sea_pairs"] >= 2


def test_training_logs_sea_and_learns_the_temperature(stage1_setup):
    trainer, objective = _trainer(stage1_setup, 1.0)
    before = float(objective.logit_scale.detach())
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "sea_loss" in entry]
    assert logged and all(
        key in logged[0] for key in ("itg_loss", "itdm_loss", "sea_loss", "sea_pairs", "sea_temperature")
    )
    assert float(objective.logit_scale.detach()) != before
    assert not any("logit_scale" in name for name, _ in trainer.model.named_parameters())


def test_collator_marks_rows_without_labels(stage1_setup):
    _, _, dataset, collator, _ = stage1_setup
    collator.labels = {}
    batch = collator([dataset[0], dataset[1]])
    assert batch["sea_label_ids"].shape == (2, 4, 4, 2) and (batch["sea_label_ids"] == NO_LABEL).all()
    assert collator.missing == 2


# ------------------------------------------------------------------------------------------------- ablate
def test_plan_cells_collapses_per_patch_projectors_and_validates():
    cells = plan_cells(["linear", "ian"], [4, 16], ["none", "sea"], 2, patches=16)
    assert Cell("linear", 16, "none", 0) in cells and Cell("ian", 4, "sea", 1) in cells
    assert len(cells) == 2 * 2 + 2 * 2 * 2  # linear: one token count; ian: two
    assert len({c.name for c in cells}) == len(cells)
    with pytest.raises(ValueError, match="--queries"):
        plan_cells(["ian"], [144], ["none"], 1, patches=16)
    with pytest.raises(ValueError, match="--objectives"):
        plan_cells(["ian"], [4], ["clip"], 1, patches=16)
    with pytest.raises(ValueError, match="--projectors"):
        plan_cells(["qformer"], [4], ["none"], 1, patches=16)


def test_aggregate_mean_and_sample_std_and_table():
    records = [
        {"projector": "ian", "tokens": 4, "objective": "none", "seed": s, "table4": {"MMB SR": v, "Avg^N": v}}
        for s, v in enumerate([10.0, 20.0, 30.0])
    ]
    rows = aggregate(records)
    assert rows[0]["MMB SR"]["mean"] == pytest.approx(20.0) and rows[0]["MMB SR"]["std"] == pytest.approx(10.0)
    table = markdown(rows, "mage ablate")
    assert "| ian | 4 | none | 3 |" in table and "20.0 ± 10.0" in table


def test_dry_run_and_resume_skip(tmp_path, capsys):
    import argparse

    from alignment import ablate

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--projectors", "ian", "--queries", "4", "--objectives", "none", "--seeds", "1",
                              "--out", str(tmp_path / "out"), "--dry-run"])  # fmt: skip
    assert ablate.run(args) == 0
    assert capsys.readouterr().out.split() == ["ian-t4-none-s0"]
    assert _command(args).startswith("mage ablate --projectors ian --queries 4 --objectives none --seeds 1")
    # a finished cell is read back, not re-run (run_cell would need data and minutes)
    (tmp_path / "out" / "cells").mkdir(parents=True)
    record = {"projector": "ian", "tokens": 4, "objective": "none", "seed": 0, "table4": {"Avg^N": 5.0}}
    (tmp_path / "out" / "cells" / "ian-t4-none-s0.json").write_text(json.dumps(record))
    args.dry_run, args.data = False, str(tmp_path / "data")
    (tmp_path / "data" / "train").mkdir(parents=True)
    for name in ("stage1_captions.json", "stage2_instructions.json"):
        (tmp_path / "data" / "train" / name).write_text("[]")
    assert ablate.run(args) == 0
    assert "5.0 ± 0.0" in (tmp_path / "out" / "table.md").read_text()
    assert (tmp_path / "out" / "ablation.png").is_file()


def test_resumed_run_refuses_other_cell_settings(tmp_path, capsys):
    import argparse

    from alignment.ablate import check_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--image-size", "64"])
    assert check_settings(tmp_path, args)
    assert check_settings(tmp_path, args)  # same settings: fine
    args.stage2_steps += 1
    assert not check_settings(tmp_path, args)
    assert "stage2_steps" in capsys.readouterr().err


def test_kill_and_resume_restores_tau_and_samples_the_same_pairs(stage1_setup, tmp_path):
    import dataclasses

    from training.objectives import AUX_FILE

    model, processor, dataset, collator, base_args = stage1_setup
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def fresh_trainer(output_dir, max_steps):
        model.load_state_dict(initial)
        args = dataclasses.replace(base_args, output_dir=str(output_dir), max_steps=max_steps, save_strategy="steps",
                                   save_steps=2, save_total_limit=None)  # fmt: skip
        objective = SEAObjective(*tokenize_words(processor.tokenizer, WORDS), temperature=0.5, window=1)
        return AlignedMageTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                  processing_class=processor, objectives={"sea": (1.0, objective)}), objective  # fmt: skip

    full, full_objective = fresh_trainer(tmp_path / "full", 4)
    full.train()
    tau_full = float(full_objective.logit_scale.detach())
    weights_full = {k: v.clone() for k, v in model.state_dict().items()}
    assert (tmp_path / "full" / "checkpoint-2" / AUX_FILE).is_file()

    # A run killed after its step-2 checkpoint, resumed from that checkpoint (same schedule: max_steps=4).
    resumed, resumed_objective = fresh_trainer(tmp_path / "resumed", 4)
    resumed_objective.logit_scale.data.fill_(0.0)  # must come back from aux_heads.safetensors
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    bad = [k for k, v in model.state_dict().items() if not torch.allclose(v, weights_full[k], rtol=1e-5, atol=1e-6)]
    assert not bad, bad
    assert float(resumed_objective.logit_scale.detach()) == pytest.approx(tau_full, abs=1e-6)


def test_vlsa_reconstruction_objective_runs_in_the_trainer(stage1_setup):
    from alignment.vlsa import TinyAutoencoder, TinyDenoiser, VLSAReconstructionObjective

    model, processor, dataset, collator, args = stage1_setup
    autoencoder = TinyAutoencoder(latent_channels=4, width=8)
    denoiser = TinyDenoiser(4, latent_size=8, ctx_dim=16, pooled_dim=8, width=16, layers=1, heads=2)
    objective = VLSAReconstructionObjective(autoencoder, denoiser, 128, 128, 16, 8, rank=8)
    trainer = AlignedMageTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                 processing_class=processor, objectives={"rec": (1.0, objective)})  # fmt: skip
    before = objective.epigone.down.weight.detach().clone()
    trainer.train()
    assert any("rec_loss" in entry for entry in trainer.state.log_history)
    assert not torch.equal(before, objective.epigone.down.weight.detach())  # Epigone is in the optimizer
    assert all(not p.requires_grad for p in autoencoder.parameters())  # the VAE stays frozen


def test_objective_logs_are_means_over_the_logging_window(stage1_setup):
    import dataclasses

    model, processor, dataset, collator, args = stage1_setup
    objective = SEAObjective(*tokenize_words(processor.tokenizer, WORDS), temperature=0.5, window=1)
    values = []
    forward = objective.forward

    def recording(*a, **k):
        loss, logs = forward(*a, **k)
        values.append(float(loss.detach()))
        return loss, logs

    objective.forward = recording
    args = dataclasses.replace(args, logging_steps=2, max_steps=2)
    trainer = AlignedMageTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                 processing_class=processor, objectives={"sea": (1.0, objective)})  # fmt: skip
    trainer.train()
    logged = [entry["sea_loss"] for entry in trainer.state.log_history if "sea_loss" in entry]
    assert len(values) == 2 and logged == [pytest.approx(sum(values) / 2, rel=1e-4)]
