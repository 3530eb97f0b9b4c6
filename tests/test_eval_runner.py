"""Runner with a tiny MAGE: batching, resume, empty outputs, likelihood ranking with a forced answer, report files."""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager

import pytest
import torch

from evaluation import fixtures, runner
from evaluation.api import evaluate, load_benchmark


@pytest.fixture(scope="module")
def mage():
    """A tiny MAGE whose lm_head has a bias we can push towards chosen tokens (restored after each use)."""
    from mage_testing.tiny import build_tiny_mage

    model, processor = build_tiny_mage(texts=["red green blue yellow square colour yes no"] * 5, seed=1)
    old = model.lm_head
    model.lm_head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        model.lm_head.weight.copy_(old.weight)
        model.lm_head.bias.zero_()
    return model, processor


@contextmanager
def forced(model, token_ids, amount=60.0):
    with torch.no_grad():
        model.lm_head.bias[token_ids] = amount
    try:
        yield
    finally:
        with torch.no_grad():
            model.lm_head.bias.zero_()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return fixtures.write_all(str(root), size=2)


def _predictions(path):
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return {r["uid"]: r["prediction"] for r in rows if "uid" in r}


def test_batched_generation_equals_one_by_one(mage, data, tmp_path):
    model, processor = mage
    a = evaluate(
        model,
        processor,
        "mme",
        data["mme"],
        str(tmp_path / "bs1"),
        batch_size=1,
        max_new_tokens=5,
        progress=False,
        plots=False,
    )
    b = evaluate(
        model,
        processor,
        "mme",
        data["mme"],
        str(tmp_path / "bs5"),
        batch_size=5,
        max_new_tokens=5,
        progress=False,
        plots=False,
    )
    pa = _predictions(a["benchmarks"]["mme"]["predictions_file"])
    pb = _predictions(b["benchmarks"]["mme"]["predictions_file"])
    assert len(pa) == 12 and pa == pb
    assert a["benchmarks"]["mme"]["scores"] == b["benchmarks"]["mme"]["scores"]


def test_model_that_emits_nothing_is_wrong_not_a_crash(mage, data, tmp_path):
    model, processor = mage
    with forced(model, [processor.tokenizer.eos_token_id]):
        result = evaluate(
            model,
            processor,
            "all",
            os.path.dirname(data["mme"]),
            str(tmp_path),
            batch_size=4,
            max_new_tokens=4,
            progress=False,
            plots=False,
        )
    preds = _predictions(result["benchmarks"]["pope"]["predictions_file"])
    assert set(preds.values()) == {""}
    assert result["summary"]["MME^P"] == 0
    # Official POPE rule (LLaVA eval_pope.py): an empty answer reads "yes" -> precision 1/2, recall 1 per split
    # (this asserted POPE == 0 under the earlier lenient reading, where an empty answer counted wrong).
    assert result["summary"]["POPE"] == pytest.approx(200 / 3)
    assert result["benchmarks"]["pope"]["scores"]["splits"]["random"]["yes_ratio"] == pytest.approx(100.0)
    assert result["benchmarks"]["mmbench"]["scores"]["unresolved_answers"] == 12


def test_seed_likelihood_ranking_with_a_forced_answer(mage, data, tmp_path):
    model, processor = mage
    red = processor.tokenizer(" red", add_special_tokens=False).input_ids
    assert len(red) == 1
    records = load_benchmark("seed", data["seed"]).records
    expected = {r.uid: next(k for k, v in r.options.items() if v == "red") for r in records}
    with forced(model, red, 30.0):
        result = evaluate(
            model,
            processor,
            "seed",
            data["seed"],
            str(tmp_path),
            batch_size=3,
            scoring="likelihood",
            progress=False,
            plots=False,
        )
    assert _predictions(result["benchmarks"]["seed"]["predictions_file"]) == expected
    right = sum(r.options[r.answer] == "red" for r in records)
    assert result["summary"]["SEED^I"] == pytest.approx(100 * right / len(records))


def test_likelihood_sums_match_a_manual_forward(mage):
    model, processor = mage
    image = fixtures.shape_image("red")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}],
        add_generation_prompt=True,
    )
    sums, counts = runner.continuation_logprobs(
        model, processor, [prompt, prompt], ["red", "yellow square"], [image, image]
    )
    inputs = processor(images=[image], text=[prompt + " yellow square"], return_tensors="pt")
    with torch.no_grad():
        logprobs = torch.log_softmax(model(**inputs).logits[0].float(), -1)
    ids = inputs["input_ids"][0]
    n = counts[1]
    manual = sum(float(logprobs[t - 1, ids[t]]) for t in range(len(ids) - n, len(ids)))
    assert n == len(processor.tokenizer(" yellow square", add_special_tokens=False).input_ids)
    assert sums[1] == pytest.approx(manual, abs=1e-3)


def test_interrupted_run_resumes_to_the_same_report(mage, data, tmp_path, monkeypatch):
    model, processor = mage
    full = evaluate(
        model,
        processor,
        "mmbench",
        data["mmbench"],
        str(tmp_path / "full"),
        batch_size=3,
        max_new_tokens=3,
        progress=False,
        plots=False,
    )
    calls = {"n": 0}
    original = runner._predict_rows

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "_predict_rows", flaky)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            model,
            processor,
            "mmbench",
            data["mmbench"],
            str(out),
            batch_size=3,
            max_new_tokens=3,
            progress=False,
            plots=False,
        )
    monkeypatch.setattr(runner, "_predict_rows", original)
    path = out / "predictions_mmbench.jsonl"
    assert len(_predictions(path)) == 6
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"uid": "torn')  # a write cut by the interruption
    resumed = evaluate(
        model,
        processor,
        "mmbench",
        data["mmbench"],
        str(out),
        batch_size=3,
        max_new_tokens=3,
        progress=False,
        plots=False,
    )
    assert resumed["benchmarks"]["mmbench"]["timing"]["resumed"] == 6
    assert resumed["benchmarks"]["mmbench"]["scores"] == full["benchmarks"]["mmbench"]["scores"]
    assert _predictions(path) == _predictions(tmp_path / "full" / "predictions_mmbench.jsonl")
    with pytest.raises(ValueError, match="other settings.*max_new_tokens"):
        evaluate(model, processor, "mmbench", data["mmbench"], str(out), max_new_tokens=7, progress=False)


def test_report_files_and_blank_images(mage, data, tmp_path):
    model, processor = mage
    result = evaluate(
        model,
        processor,
        "pope",
        data["pope"],
        str(tmp_path),
        batch_size=4,
        max_new_tokens=3,
        blank_images=True,
        limit=3,
        progress=False,
    )
    saved = json.load(open(tmp_path / "results.json", encoding="utf-8"))
    assert saved["settings"]["blank_images"] is True and saved["benchmarks"]["pope"]["samples"] == 3
    assert saved["git_commit"] and "POPE" in saved["summary"]
    table = open(tmp_path / "results.md", encoding="utf-8").read()
    assert "| MAGE-7B (paper, IAN 144) | 71.2 | 70.3 | 65.3 | 1572/323 | 86.7 |" in table
    assert "mean F1" in table
    assert os.path.isfile(tmp_path / "pope_precision_recall.png")
    assert result["summary"] == saved["summary"]


def test_continuation_tokens_with_real_sentencepiece(tmp_path):
    """With Llama's SentencePiece, the option's tokens in context are exactly the ones scored."""
    import shutil
    import types

    mistral_common = pytest.importorskip("mistral_common")
    pytest.importorskip("sentencepiece")
    from transformers import LlamaTokenizer

    from processing_mage import MageProcessor, prepare_tokenizer

    shutil.copy(
        os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1"),
        tmp_path / "tokenizer.model",
    )
    tokenizer = LlamaTokenizer.from_pretrained(tmp_path)
    prepare_tokenizer(tokenizer)
    from mage_testing.tiny import tiny_image_processor

    processor = MageProcessor(tiny_image_processor(64), tokenizer, num_image_tokens=4)

    class Recorder(torch.nn.Module):
        """Stands in for the model: uniform logits, records the batch."""

        dtype = torch.float32
        device = torch.device("cpu")

        def forward(self, input_ids, logits_to_keep=0, **kwargs):
            self.input_ids = input_ids
            return types.SimpleNamespace(logits=torch.zeros(*input_ids.shape[:2], len(tokenizer))[:, -logits_to_keep:])

    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}],
        add_generation_prompt=True,
    )
    image = fixtures.shape_image("red")
    continuations = ["red", "light blue square", "A"]
    sums, counts = runner.continuation_logprobs(Recorder(), processor, [prompt] * 3, continuations, [image] * 3)
    for cont, n, s in zip(continuations, counts, sums):
        in_context = len(tokenizer(prompt + " " + cont)["input_ids"]) - len(tokenizer(prompt)["input_ids"])
        assert n == in_context and n >= 1
        assert s == pytest.approx(-n * math.log(len(tokenizer)), rel=1e-5)


def test_shared_image_encoding_equals_the_plain_forward(mage):
    model, processor = mage
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}],
        add_generation_prompt=True,
    )
    red, blue = fixtures.shape_image("red"), fixtures.shape_image("blue")
    conts = ["red", "blue square", "red", "blue square"]
    shared = runner.continuation_logprobs(model, processor, [prompt] * 4, conts, [red, red, blue, blue])
    plain = runner.continuation_logprobs(model, processor, [prompt] * 4, conts, [red, red.copy(), blue, blue.copy()])
    assert shared[1] == plain[1]
    assert shared[0] == pytest.approx(plain[0], abs=1e-4)
    assert shared[0][0] != pytest.approx(shared[0][2], abs=1e-4)  # same text, other image: the image does matter


def test_one_benchmark_per_call_adds_up_to_one_report(mage, data, tmp_path):
    model, processor = mage
    kwargs = dict(batch_size=4, max_new_tokens=2, limit=2, progress=False, plots=False)
    evaluate(model, processor, "pope", data["pope"], str(tmp_path), **kwargs)
    both = evaluate(model, processor, "seed", data["seed"], str(tmp_path), **kwargs)
    assert set(both["benchmarks"]) == {"pope", "seed"} and {"POPE", "SEED^I"} <= set(both["summary"])
    # the default scoring is each benchmark's own protocol: SEED-Bench ranks options by likelihood, POPE generates
    assert both["benchmarks"]["seed"]["scoring"] == "likelihood" and both["benchmarks"]["pope"]["scoring"] == "generate"
    other = evaluate(
        model, processor, "seed", data["seed"], str(tmp_path), **{**kwargs, "max_new_tokens": 3}, overwrite=True
    )
    assert set(other["benchmarks"]) == {"seed"}  # the POPE numbers were made with other settings: not carried over


def test_resolve_scoring_picks_each_benchmarks_protocol():
    from evaluation.api import resolve_scoring

    assert [resolve_scoring("official", b) for b in ("seed", "mmbench", "mme", "pope")] == [
        "likelihood",
        "generate",
        "generate",
        "generate",
    ]
    assert (
        resolve_scoring("likelihood", "mmbench") == "likelihood" and resolve_scoring("likelihood", "pope") == "generate"
    )
    assert resolve_scoring("generate", "seed") == "generate"
    with pytest.raises(ValueError, match="scoring must be one of"):
        resolve_scoring("ppl", "seed")


def test_failed_and_changed_rows_are_predicted_again(mage, tmp_path):
    """A row whose image could not be decoded is retried once the image is fixed; a row whose question changed
    (another --data folder) is predicted again; the rest resume; no uid is written twice."""
    import shutil

    model, processor = mage
    clean = fixtures.write_pope(str(tmp_path / "clean"), questions_per_split=2)
    reference = evaluate(model, processor, "pope", clean, str(tmp_path / "ref"), max_new_tokens=3, progress=False)
    broken = str(tmp_path / "broken")
    shutil.copytree(clean, broken)
    image = os.path.join(broken, "val2014", "COCO_val2014_random_000000.png")
    good_bytes = open(image, "rb").read()
    with open(image, "wb") as handle:
        handle.write(b"not a png")
    out = str(tmp_path / "out")
    first = evaluate(model, processor, "pope", broken, out, max_new_tokens=3, progress=False, plots=False)
    assert first["benchmarks"]["pope"]["image_errors"] == 1
    with open(image, "wb") as handle:
        handle.write(good_bytes)
    fixed = evaluate(model, processor, "pope", broken, out, max_new_tokens=3, progress=False, plots=False)
    timing = fixed["benchmarks"]["pope"]["timing"]
    assert (timing["new_samples"], timing["retried_failed"], timing["resumed"]) == (1, 1, 5)
    assert fixed["benchmarks"]["pope"]["image_errors"] == 0
    assert fixed["benchmarks"]["pope"]["scores"] == reference["benchmarks"]["pope"]["scores"]
    path = os.path.join(out, "predictions_pope.jsonl")
    assert _predictions(path) == _predictions(os.path.join(tmp_path / "ref", "predictions_pope.jsonl"))

    other = str(tmp_path / "other")
    shutil.copytree(clean, other)
    split = os.path.join(other, "coco_pope_popular.json")
    lines = open(split, encoding="utf-8").read().splitlines()
    row = json.loads(lines[0])
    row["text"] = row["text"].replace("Is there", "Is there not")
    lines[0] = json.dumps(row)
    with open(split, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    moved = evaluate(model, processor, "pope", other, out, max_new_tokens=3, progress=False, plots=False)
    timing = moved["benchmarks"]["pope"]["timing"]
    assert (timing["new_samples"], timing["redone_changed_input"], timing["resumed"]) == (1, 1, 5)
    uids = [json.loads(line).get("uid") for line in open(path, encoding="utf-8")][1:]
    assert len(uids) == len(set(uids)) == 6


def test_predictions_of_another_model_are_refused(mage, tmp_path):
    from mage_testing.tiny import build_tiny_mage

    model, processor = mage
    data = fixtures.write_pope(str(tmp_path / "pope"), questions_per_split=1)
    out = str(tmp_path / "out")
    evaluate(model, processor, "pope", data, out, max_new_tokens=3, progress=False, plots=False)
    other, other_processor = build_tiny_mage(texts=["red green blue yellow square colour yes no"] * 5, seed=2)
    with pytest.raises(runner.SettingsMismatch, match="another model"):
        evaluate(other, other_processor, "pope", data, out, max_new_tokens=3, progress=False, plots=False)
