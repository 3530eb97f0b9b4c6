"""MageTrainer: ITG + ITDM with exact gradient accumulation, separate logs, projector lr, stage freezing,
complete checkpoints, resume after a kill, and the named errors of `train`."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from inference.threads import torch_threads
from training.api import train, training_arguments
from training.checkpoint import ModelError
from training.collator import MageDataCollator
from training.data import build_dataset
from training.fixtures import VOCABULARY, write_tiny_llava_dataset
from training.losses import itdm_loss
from training.recipes import RecipeError, load_recipe
from training.trainer import MageTrainer, count_trainable, set_trainable_for_stage


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """1 torch thread: on the shared 2-core machine the default 2 threads spun and ran these tests up to 26x slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny MAGE (stage-1 trained marker set) and a mixed image / text-only LLaVA data set."""
    from mage_testing.tiny import build_tiny_mage

    root = tmp_path_factory.mktemp("train")
    model, processor = build_tiny_mage([VOCABULARY], seed=0)
    model.config.mage_trained_stages = [1]
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    data = write_tiny_llava_dataset(root / "data", num_images=12, num_text_only=4, seed=0)
    return {"root": root, "model": root / "model", "data": data, "mage": (model, processor)}


def recipe(*overrides):
    return load_recipe(
        "stage2_tiny",
        [
            "per_device_train_batch_size=4",
            "logging_steps=1",
            "warmup_ratio=0",
            "bf16=false",
            "dataloader_num_workers=0",
            *overrides,
        ],
    )


# ----------------------------------------------------------------------------------------------------- freezing
def test_freezing_per_stage_counts_parameters(tiny_mage):
    model = copy.deepcopy(tiny_mage[0])
    numel = {
        part: sum(p.numel() for p in module.parameters())
        for part, module in (
            ("vision_tower", model.model.vision_tower),
            ("projector", model.model.multi_modal_projector),
            ("language_model", model.model.language_model),
        )
    }
    numel["language_model"] += model.lm_head.weight.numel()
    stage1 = set_trainable_for_stage(model, 1)
    assert stage1 == {
        "vision_tower": 0,
        "projector": numel["projector"],
        "language_model": 0,
        "total": numel["projector"],
    }
    for stage in (2, 3):
        counts = set_trainable_for_stage(model, stage)
        assert counts["vision_tower"] == 0
        assert counts["total"] == numel["projector"] + numel["language_model"]
    assert set_trainable_for_stage(model, 2, tune_vision_tower=True)["vision_tower"] == numel["vision_tower"]
    assert count_trainable(model)["total"] == sum(numel.values())
    with pytest.raises(ValueError, match="stage=4"):
        set_trainable_for_stage(model, 4)


# ------------------------------------------------------------------------------------------ accumulation
class SequentialTrainer(MageTrainer):
    def _get_train_sampler(self, train_dataset=None):
        return torch.utils.data.SequentialSampler(self.train_dataset)


def one_sgd_step(workspace, tmp_path, batch_size, accumulation, lr=0.5, itg_reduction="token"):
    """Weights after one SGD step (no clipping, constant lr) from the same 8 samples in the same order."""
    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor

    model = MageForConditionalGeneration.from_pretrained(workspace["model"], dtype=torch.float32)
    processor = MageProcessor.from_pretrained(workspace["model"])
    set_trainable_for_stage(model, 2)
    dataset = build_dataset(workspace["data"], processor, "vicuna_v1", 256, max_samples=8)
    args = training_arguments(
        recipe(),
        tmp_path / f"run{batch_size}x{accumulation}{itg_reduction}",
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=lr,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = SequentialTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=MageDataCollator.from_processor(processor),
        itg_reduction=itg_reduction,
    )
    trainer.train()
    return {name: p.detach().clone() for name, p in model.named_parameters()}, dataset, processor


def full_batch_forward(workspace, dataset, processor):
    """The 8 samples of `one_sgd_step` as one batch through a fresh stage-2 model: `(model, batch, outputs, ITDM)`;
    `outputs.loss` is the token-mean ITG, `outputs.logits` the full logits (for other ITG weightings)."""
    from modeling_mage import MageForConditionalGeneration

    model = MageForConditionalGeneration.from_pretrained(workspace["model"], dtype=torch.float32)
    set_trainable_for_stage(model, 2)
    batch = MageDataCollator.from_processor(processor)([dataset[i] for i in range(8)])
    itdm_inputs = {key: batch.pop(key) for key in ("itdm_input_ids", "itdm_attention_mask", "itdm_pool_mask")}
    outputs = model(**batch)
    d_ian, d_llm = model.get_itdm_features(
        text_input_ids=itdm_inputs["itdm_input_ids"],
        text_attention_mask=itdm_inputs["itdm_attention_mask"],
        text_pool_mask=itdm_inputs["itdm_pool_mask"],
        image_hidden_states=outputs.image_hidden_states,
    )
    return model, batch, outputs, itdm_loss(d_ian, d_llm)


def test_accumulation_2x4_equals_1x8_and_the_full_batch_loss(workspace, tmp_path):
    before = load_file(workspace["model"] / "model.safetensors")
    full, dataset, processor = one_sgd_step(workspace, tmp_path, 8, 1)
    accumulated, _, _ = one_sgd_step(workspace, tmp_path, 4, 2)
    images = [dataset[i]["pixel_values"] is not None for i in range(8)]
    assert sum(images[:4]) != sum(images[4:])  # unequal image counts per micro-batch: the test can fail
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], rtol=1e-5, atol=1e-6)

    # by hand: ITG = mean CE over all supervised tokens of the 8 samples, ITDM = mean over their image samples

    model, batch, outputs, itdm = full_batch_forward(workspace, dataset, processor)
    (outputs.loss + model.config.itdm_weight * itdm).backward()
    lm_weight = "model.language_model.layers.0.mlp.down_proj.weight"
    projector_weight = next(n for n, _ in model.named_parameters() if "multi_modal_projector" in n and "weight" in n)
    for name in (lm_weight, projector_weight, "lm_head.weight"):
        expected = before[name] - 0.5 * dict(model.named_parameters())[name].grad
        torch.testing.assert_close(full[name], expected, rtol=1e-4, atol=1e-6)
    assert torch.equal(
        full["model.vision_tower.embeddings.patch_embedding.weight"],
        before["model.vision_tower.embeddings.patch_embedding.weight"],
    )


def test_sample_weighted_itg_accumulates_exactly_and_weighs_every_row_once(workspace, tmp_path):
    """`itg_reduction="sample"`: 2 × 4 equals 1 × 8, and the step is the gradient of the mean of the rows' own mean
    cross-entropies (+ ITDM) over the 8 rows, by hand; it differs from the token-weighted step."""

    before = load_file(workspace["model"] / "model.safetensors")
    full, dataset, processor = one_sgd_step(workspace, tmp_path, 8, 1, itg_reduction="sample")
    accumulated, _, _ = one_sgd_step(workspace, tmp_path, 4, 2, itg_reduction="sample")
    token, _, _ = one_sgd_step(workspace, tmp_path, 8, 1)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], rtol=1e-5, atol=1e-6)

    model, batch, outputs, itdm = full_batch_forward(workspace, dataset, processor)
    labels = batch["labels"]
    supervised = labels[:, 1:] != -100
    assert len(set(supervised.sum(1).tolist())) > 1  # rows of different lengths: the weighting can matter
    ce = torch.nn.functional.cross_entropy(outputs.logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    row_means = (ce * supervised).sum(1) / supervised.sum(1)
    (row_means.mean() + model.config.itdm_weight * itdm).backward()
    lm_weight = "model.language_model.layers.0.mlp.down_proj.weight"
    for name in (lm_weight, "lm_head.weight"):
        expected = before[name] - 0.5 * dict(model.named_parameters())[name].grad
        torch.testing.assert_close(full[name], expected, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(full[name], token[name], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------ full runs
def test_train_logs_itg_and_itdm_and_saves_complete_folders(workspace, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

    class Collect(TrainerCallback):  # what TensorBoard / W&B integrations receive
        seen: list = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.seen.append(dict(logs))

    out = train(
        recipe("max_steps=4", "save_steps=2", "itdm_weight=0.5"),
        workspace["model"],
        workspace["data"],
        tmp_path / "out",
        disable_tqdm=True,
        callbacks=[Collect()],
    )
    assert sum("itg_loss" in logs and "itdm_loss" in logs for logs in Collect.seen) == 4
    logs = [
        entry
        for entry in json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
        if "loss" in entry
    ]
    assert len(logs) == 4
    assert sum(entry["itdm_loss"] > 0 for entry in logs) >= 2  # text-only batches (modality grouping) have none
    for entry in logs:
        assert entry["itg_loss"] > 0 and entry["itdm_loss"] >= 0
        assert entry["loss"] == pytest.approx(entry["itg_loss"] + 0.5 * entry["itdm_loss"], rel=1e-3)
    for folder in (out, out / "checkpoint-4"):
        names = {p.name for p in folder.iterdir()}
        assert {
            "model.safetensors",
            "config.json",
            "modeling_mage.py",
            "configuration_mage.py",
            "ian.py",
            "tokenizer_config.json",
            "processor_config.json",
        } <= names
        assert not names & {"pytorch_model.bin"}
        model = AutoModelForImageTextToText.from_pretrained(folder)
        processor = AutoProcessor.from_pretrained(folder)
        assert model.config.mage_trained_stages == [1, 2] and model.config.itdm_weight == 0.5
        assert processor.num_image_tokens == model.config.image_seq_length
    assert "training_args.bin" not in {p.name for p in out.iterdir()}
    report = json.loads((out / "training_report.json").read_text())
    assert report["trainable_parameters"]["vision_tower"] == 0 and report["last_log"]["step"] == 4


def test_projector_lr_gets_its_own_group(workspace, tmp_path):
    from modeling_mage import MageForConditionalGeneration
    from processing_mage import MageProcessor

    model = MageForConditionalGeneration.from_pretrained(workspace["model"])
    set_trainable_for_stage(model, 2)
    processor = MageProcessor.from_pretrained(workspace["model"])
    trainer = MageTrainer(
        model=model,
        args=training_arguments(recipe(), tmp_path, learning_rate=1e-3),
        train_dataset=build_dataset(workspace["data"], processor, "vicuna_v1", 256),
        data_collator=MageDataCollator.from_processor(processor),
        projector_lr=5e-3,
    )
    optimizer = trainer.create_optimizer()
    projector = {id(p) for p in model.model.multi_modal_projector.parameters()}
    for group in optimizer.param_groups:
        in_projector = {id(p) in projector for p in group["params"]}
        assert len(in_projector) == 1
        assert group["lr"] == (5e-3 if in_projector.pop() else 1e-3)
    trained = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert trained == count_trainable(model)["total"]


class Kill(Exception):
    pass


def test_resume_after_kill_gives_the_same_weights(workspace, tmp_path):
    from transformers import TrainerCallback

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise Kill()

    run = recipe("max_steps=6", "save_steps=2", "save_total_limit=2")
    straight = train(run, workspace["model"], workspace["data"], tmp_path / "straight", disable_tqdm=True)
    with pytest.raises(Kill):
        train(
            run,
            workspace["model"],
            workspace["data"],
            tmp_path / "killed",
            callbacks=[KillAfterSave()],
            disable_tqdm=True,
        )
    assert (tmp_path / "killed" / "checkpoint-4").is_dir() and not (tmp_path / "killed" / "model.safetensors").exists()
    assert json.loads((tmp_path / "killed" / "checkpoint-4" / "mage_recipe.json").read_text())["max_steps"] == 6
    resumed = train(run, workspace["model"], workspace["data"], tmp_path / "killed", resume=True, disable_tqdm=True)
    expected, got = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_skips_in_dataloader_workers_reach_the_report(workspace, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(workspace["data"].parent, folder)
    rows = json.loads((folder / "data.json").read_text())
    image_row = next(row for row in rows if "image" in row)
    (folder / image_row["image"]).write_bytes(b"broken")
    out = train(
        recipe("max_steps=4", "save_steps=10", "dataloader_num_workers=1"),
        workspace["model"],
        folder / "data.json",
        tmp_path / "out",
        disable_tqdm=True,
    )
    report = json.loads((out / "training_report.json").read_text())
    assert report["skipped"] == {"corrupt image": 1} and image_row["id"] in report["skipped_report"]


# ------------------------------------------------------------------------------------------------ bad input
def test_named_errors(workspace, tmp_path):
    from mage_testing.tiny import train_tokenizer

    train_tokenizer(["x"]).save_pretrained(tmp_path / "llama")
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelError, match="model_type='llama', expected 'mage'"):
        train(recipe(), tmp_path / "llama", workspace["data"], tmp_path / "o1")
    with pytest.raises(ModelError, match="no config.json"):
        train(recipe(), tmp_path, workspace["data"], tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint-N folder"):
        train(recipe(), workspace["model"], workspace["data"], tmp_path / "o3", resume=True)
    (tmp_path / "o4" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(recipe(), workspace["model"], workspace["data"], tmp_path / "o4")
    assert (tmp_path / "o4" / "checkpoint-2").is_dir()  # nothing written so far is lost
    with pytest.raises(ModelError, match="stage 1"):
        train(load_recipe("stage1_tiny"), workspace["model"], workspace["data"], tmp_path / "o5", mode="lora")


def test_a_folder_holding_a_model_is_refused_unless_overwrite(workspace, tmp_path):
    import hashlib
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(workspace["model"], folder)
    (folder / "README.md").write_text("the old model's card")

    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}

    before = digest()
    with pytest.raises(FileExistsError, match="is not empty .*pass --overwrite"):
        train(recipe("max_steps=1", "save_steps=10"), folder, workspace["data"], folder, disable_tqdm=True)
    assert digest() == before  # refused before anything was written
    (folder / "checkpoint-7").mkdir()  # an older run's checkpoint in the same folder
    out = train(
        recipe("max_steps=2", "save_steps=10"), folder, workspace["data"], folder, disable_tqdm=True, overwrite=True
    )
    names = {p.name for p in out.iterdir()}
    assert "README.md" not in names and "checkpoint-7" not in names and ".final-model.partial" not in names
    assert load_file(out / "model.safetensors").keys() == load_file(workspace["model"] / "model.safetensors").keys()
    assert digest()["model.safetensors"] != before["model.safetensors"]  # trained from the model it replaced
    assert json.loads((out / "config.json").read_text())["mage_trained_stages"] == [1, 2]


def test_mage_train_cli_refuses_a_model_folder_as_output(workspace, tmp_path, capsys):
    import shutil

    from mage_cli.main import main

    shutil.copytree(workspace["model"], tmp_path / "model")
    code = main(
        [
            "train",
            "--recipe",
            "stage2_tiny",
            "--model",
            str(tmp_path / "model"),
            "--data",
            str(workspace["data"]),
            "--output-dir",
            str(tmp_path / "model"),
            "--threads",
            "1",
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "is not empty" in error[0] and "--overwrite" in error[0]


def test_resume_with_changed_recipe_warns(workspace, tmp_path):
    train(
        recipe("max_steps=2", "save_steps=2"), workspace["model"], workspace["data"], tmp_path / "o", disable_tqdm=True
    )
    with pytest.warns(UserWarning, match=r"changed recipe \(max_steps: 2 → 3\)"):
        train(
            recipe("max_steps=3", "save_steps=2"),
            workspace["model"],
            workspace["data"],
            tmp_path / "o",
            resume=True,
            disable_tqdm=True,
        )


def _untrained_projector_checkpoint(folder, workspace):
    """The workspace's tiny MAGE saved as if stage 1 had never trained its projector."""
    model, processor = workspace["mage"]
    model = copy.deepcopy(model)
    model.config.mage_trained_stages = []
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_text_only_rows_from_untrained_projector_do_not_warn(tmp_path, workspace):
    """An LM trained on text alone (the demo's stage 0) never passes through the projector: nothing to warn about."""
    import warnings

    fresh = _untrained_projector_checkpoint(tmp_path / "fresh", workspace)
    rows = [
        {"id": f"t{i}", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "a red circle"}]}
        for i in range(8)
    ]
    (tmp_path / "text.json").write_text(json.dumps(rows))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(recipe("max_steps=1", "save_steps=10"), fresh, tmp_path / "text.json", tmp_path / "o", disable_tqdm=True)
    assert not [w for w in caught if "projector was not trained in stage 1" in str(w.message)]


def test_stage2_from_untrained_projector_warns(tmp_path, workspace):
    fresh = _untrained_projector_checkpoint(tmp_path / "fresh", workspace)
    with pytest.warns(UserWarning, match="projector was not trained in stage 1"):
        train(recipe("max_steps=1", "save_steps=10"), fresh, workspace["data"], tmp_path / "o", disable_tqdm=True)


def test_a_registered_objective_joins_the_loss(workspace, tmp_path, monkeypatch):
    """The plug-in hook alignment/ uses for SEA: `train()` asks the builder registered for `alignment_objective` for
    the collator and the objectives, and trains them with `AlignedMageTrainer`."""
    from training import recipes
    from training.objectives import AlignedMageTrainer

    with pytest.raises(RecipeError, match=r"alignment_objective='norm': expected one of \['none', 'sea'"):
        recipe("alignment_objective=norm")
    monkeypatch.setattr(recipes, "_OBJECTIVE_BUILDERS", dict(recipes._OBJECTIVE_BUILDERS))
    calls, seen = [], []

    class Collator:
        objective_keys = ("norm_scale",)  # taken out of the batch before the model's forward

        def __init__(self, base):
            self.base = base

        def __call__(self, examples):
            return {**self.base(examples), "norm_scale": torch.tensor(2.0)}

    def objective(model, inputs, outputs):
        seen.append(sorted(inputs))
        return inputs["norm_scale"] * outputs.image_hidden_states.pow(2).mean(), {"norm_calls": 1.0}

    def build(run_recipe, model, processor, dataset, data_path, collator):
        calls.append((run_recipe.alignment_objective, data_path))
        return Collator(collator), {"norm": (0.5, objective)}

    recipes.register_alignment_objective("norm", build)
    trainers, original = [], AlignedMageTrainer.train

    def spy(self, *args, **kwargs):
        trainers.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AlignedMageTrainer, "train", spy)
    out = train(recipe("alignment_objective=norm", "max_steps=2", "save_steps=10"), workspace["model"],
                workspace["data"], tmp_path / "out", disable_tqdm=True)  # fmt: skip
    assert calls == [("norm", workspace["data"])]
    assert len(trainers) == 1 and set(trainers[0].objectives) == {"norm"}
    assert seen and all(keys == ["norm_scale", "pixel_values"] for keys in seen)
    last = json.loads((out / "training_report.json").read_text())["last_log"]
    assert last["norm_calls"] == 1.0 and last["norm_loss"] > 0


def test_an_unregistered_objective_fails_before_the_model_loads(tmp_path, monkeypatch):
    from training import recipes

    monkeypatch.setattr(recipes, "_OBJECTIVE_BUILDERS", {})  # as in a process that never imported alignment.recipe
    sea = load_recipe("stage1_tiny", {"alignment_objective": "sea"})  # the recipe itself loads as before
    with pytest.raises(RecipeError, match=r"alignment_objective='sea' has no registered implementation.*alignment"):
        train(sea, tmp_path / "no-model", tmp_path / "no-data.json", tmp_path / "out")
