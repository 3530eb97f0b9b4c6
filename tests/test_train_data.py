"""LLaVA-format data: templates, masking (tiny BPE and the real SentencePiece tokenizer), truncation, skips,
collator and the modality-grouped sampler."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from training.collator import MageDataCollator, ModalityLengthGroupedSampler
from training.data import DataError, SkipLog, build_dataset, mix_replay
from training.templates import IGNORE_INDEX, ConversationEncoder, SampleError

Q = 4
CONVERSATION = [
    {"from": "human", "value": "What is shown?\n<image>"},
    {"from": "gpt", "value": "A red square."},
    {"from": "human", "value": "Which colour?"},
    {"from": "gpt", "value": "Red"},
]
CAPTION = [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a red square on grey"}]


@pytest.fixture(scope="module")
def sp_processor(tiny_mage, tmp_path_factory):
    """MageProcessor around the real Llama-family SentencePiece tokenizer (mistral-common's; docs/training.md)."""
    mistral_common = pytest.importorskip("mistral_common")
    pytest.importorskip("sentencepiece")
    from transformers import LlamaTokenizer

    from processing_mage import MageProcessor, prepare_tokenizer

    folder = tmp_path_factory.mktemp("sp")
    shutil.copy(
        os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1"), folder / "tokenizer.model"
    )
    tokenizer = LlamaTokenizer.from_pretrained(folder)
    prepare_tokenizer(tokenizer)
    return MageProcessor(tiny_mage[1].image_processor, tokenizer, num_image_tokens=Q)


@pytest.fixture(params=["bpe", "sentencepiece"])
def processor(request, tiny_mage):
    return tiny_mage[1] if request.param == "bpe" else request.getfixturevalue("sp_processor")


def supervised_segments(sample) -> list[list[int]]:
    segments, current = [], []
    for token, label in zip(sample.input_ids, sample.labels):
        if label != IGNORE_INDEX:
            assert label == token  # labels align with inputs; the model shifts
            current.append(token)
        elif current:
            segments.append(current)
            current = []
    return segments + ([current] if current else [])


def test_vicuna_targets_are_the_answers_with_eos(processor):
    tokenizer = processor.tokenizer
    sample = ConversationEncoder(processor, "vicuna_v1", 512).encode(CONVERSATION, has_image=True)
    segments = supervised_segments(sample)
    assert [tokenizer.decode(s).strip() for s in segments] == ["A red square.</s>", "Red</s>"]
    assert all(s[-1] == tokenizer.eos_token_id for s in segments)
    assert sample.input_ids[0] == tokenizer.bos_token_id and sample.labels[0] == IGNORE_INDEX
    # the whole text is exactly the processor's chat template, so training and inference prompts agree
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
        {"role": "user", "content": [{"type": "text", "text": "Which colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red"}]},
    ]
    text = processor.apply_chat_template(messages)
    images = [Image.new("RGB", (64, 64))]
    assert processor(images=images, text=text)["input_ids"][0].tolist() == sample.input_ids
    # the prompt the model sees at inference is a token prefix, and the first target starts right after it
    prompt = processor.apply_chat_template(messages[:1], add_generation_prompt=True)
    prompt_ids = processor(images=images, text=prompt)["input_ids"][0].tolist()
    assert sample.input_ids[: len(prompt_ids)] == prompt_ids
    assert sample.labels[len(prompt_ids) - 1] == IGNORE_INDEX and sample.labels[len(prompt_ids)] != IGNORE_INDEX
    assert sample.input_ids.count(processor.image_token_id) == Q
    assert all(
        label == IGNORE_INDEX
        for token, label in zip(sample.input_ids, sample.labels)
        if token == processor.image_token_id
    )


def test_plain_template_targets_caption_and_newline(processor):
    tokenizer = processor.tokenizer
    sample = ConversationEncoder(processor, "plain", 512).encode(CAPTION, has_image=True)
    assert sample.input_ids[1 : 1 + Q] == [processor.image_token_id] * Q
    (segment,) = supervised_segments(sample)
    assert tokenizer.decode(segment) == "a red square on grey\n"
    assert sample.labels[: 1 + Q] == [IGNORE_INDEX] * (1 + Q)


def test_text_only_vicuna(processor):
    sample = ConversationEncoder(processor, "vicuna_v1", 512).encode(CONVERSATION[2:], has_image=False)
    assert processor.image_token_id not in sample.input_ids
    assert [processor.tokenizer.decode(s).strip() for s in supervised_segments(sample)] == ["Red</s>"]


def test_tokenization_mismatch_is_refused_not_trained(tiny_mage):
    """A tokenizer whose prefix tokens are not a prefix of the whole (the LLaVA 'loss 0' bug) → SampleError."""

    class Drifting(ConversationEncoder):
        def _tokenize(self, text):
            ids = super()._tokenize(text)
            return ids if text.endswith("</s>") else ids[:1] + ids[2:]  # shifts every prefix by one token

    with pytest.raises(SampleError, match="tokenization mismatch"):
        Drifting(tiny_mage[1], "vicuna_v1", 512).encode(CONVERSATION, has_image=True)


def test_truncation_after_image_kept_through_image_refused(processor):
    full = ConversationEncoder(processor, "vicuna_v1", 512).encode(CONVERSATION, has_image=True)
    last_image = max(i for i, t in enumerate(full.input_ids) if t == processor.image_token_id)
    first_target = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    cut = ConversationEncoder(processor, "vicuna_v1", first_target + 2).encode(CONVERSATION, has_image=True)
    assert cut.truncated and len(cut.input_ids) == first_target + 2
    assert cut.input_ids.count(processor.image_token_id) == Q
    with pytest.raises(SampleError, match="truncation through image"):
        ConversationEncoder(processor, "vicuna_v1", last_image).encode(CONVERSATION, has_image=True)
    with pytest.raises(SampleError, match="no answer tokens"):
        ConversationEncoder(processor, "vicuna_v1", first_target).encode(CONVERSATION, has_image=True)


# ------------------------------------------------------------------------------------------------ data sets
def write_dataset(folder, rows, images=("a.png", "b.png")):
    for index, name in enumerate(images):
        Image.new("RGB", (64, 64), (40 * index, 100, 200)).save(folder / name)
    path = folder / "data.json"
    path.write_text(json.dumps(rows))
    return path


GOOD = [
    {"id": "img1", "image": "a.png", "conversations": CONVERSATION},
    {"id": "img2", "image": "b.png", "conversations": CONVERSATION[:2]},
    {"id": "txt1", "conversations": CONVERSATION[2:]},
]
BAD = [
    {"id": "no_conv", "image": "a.png"},
    {"id": "bad_role", "conversations": [{"from": "robot", "value": "hi"}]},
    {"id": "no_answer", "conversations": [{"from": "human", "value": "hi"}]},
    {"id": "marker_no_image", "conversations": CONVERSATION},
    {"id": "missing_file", "image": "nope.png", "conversations": CONVERSATION},
    {"id": "corrupt", "image": "corrupt.png", "conversations": CONVERSATION},
    "not an object",
]


def test_bad_rows_are_skipped_counted_and_reported(tmp_path, tiny_mage):
    path = write_dataset(tmp_path, GOOD + BAD)
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    dataset = build_dataset(path, tiny_mage[1], "vicuna_v1", 512)
    assert len(dataset) == 4  # 3 good + the corrupt image, found only when read (lazy decoding)
    items = [dataset[i] for i in range(len(dataset))]
    assert [item["id"] for item in items] == ["img1", "img2", "txt1", "img1"]  # corrupt → replaced by the next row
    counts = dataset.skips.counts()
    assert counts["corrupt image"] == 1 and counts["missing image file"] == 1
    assert sum(counts.values()) == len(BAD) and dataset.skips.total == len(BAD)
    report = dataset.skips.report()
    for row_id in ("no_conv", "bad_role", "no_answer", "marker_no_image", "missing_file", "corrupt", "data.json[9]"):
        assert row_id in report
    assert items[0]["pixel_values"].shape == (1, 3, 64, 64) and items[2]["pixel_values"] is None
    assert items[3]["skipped"] == [("corrupt", "corrupt image")]  # travels with the batch (worker processes)
    batch = MageDataCollator.from_processor(tiny_mage[1])(items)
    assert batch["mage_data_events"] == [("corrupt", "corrupt image")]


def test_pretokenized_data_set_gives_the_lazy_samples_and_skips_at_build_time(tmp_path, tiny_mage):
    path = write_dataset(tmp_path, GOOD + BAD)
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    long_answer = [CONVERSATION[0], {"from": "gpt", "value": "red " * 300}]
    rows = json.loads(path.read_text()) + [{"id": "long", "image": "a.png", "conversations": long_answer}]
    rows.append(
        {
            "id": "cut_answer",
            "image": "a.png",
            "conversations": [{"from": "human", "value": "x " * 200 + "<image>"}, {"from": "gpt", "value": "y"}],
        }
    )
    path.write_text(json.dumps(rows))
    lazy = build_dataset(path, tiny_mage[1], "vicuna_v1", 128)
    eager = build_dataset(path, tiny_mage[1], "vicuna_v1", 128, pretokenize=True)
    # refused rows are found while building, before any sample is read
    assert eager.skips.counts()["no answer tokens"] == 1 and eager.skips.truncated == {"long"}
    assert len(eager) == len(lazy) - 1
    lazy_items = {item["id"]: item for item in (lazy[i] for i in range(len(lazy)))}
    for index in range(len(eager)):
        item = eager[index]
        reference = lazy_items[item["id"]]
        assert item["input_ids"].tolist() == reference["input_ids"].tolist()
        assert item["labels"].tolist() == reference["labels"].tolist()
        assert item["truncated"] == reference["truncated"]
        assert (item["pixel_values"] is None) == (reference["pixel_values"] is None)
    assert eager.skips.counts()["corrupt image"] == 1  # images stay lazy: a corrupt file is found when read
    assert eager.lengths == [length for length, row in zip(lazy.lengths, lazy.rows) if row["id"] != "cut_answer"]


def test_jsonl_with_broken_line(tmp_path, tiny_mage):
    write_dataset(tmp_path, [])
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n{broken\n" + json.dumps(GOOD[2]) + "\n")
    dataset = build_dataset(path, tiny_mage[1], "vicuna_v1", 512)
    assert len(dataset) == 2 and "data.jsonl:2" in dataset.skips.report()


def test_unusable_data_are_named_errors(tmp_path, tiny_mage):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(tmp_path / "missing.json", tiny_mage[1], "vicuna_v1", 512)
    path = write_dataset(tmp_path, BAD[:3])
    with pytest.raises(DataError, match="(?s)No usable rows left.*no_conv"):
        build_dataset(path, tiny_mage[1], "vicuna_v1", 512)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match="broken.json: invalid JSON at line 1"):
        build_dataset(tmp_path / "broken.json", tiny_mage[1], "vicuna_v1", 512)


def test_replay_share():
    main = [{"id": f"m{i}"} for i in range(90)]
    replay = [{"id": f"r{i}"} for i in range(500)]
    mixed = mix_replay(main, replay, 0.1, seed=0)
    assert len(mixed) == 100 and sum(row["id"].startswith("r") for row in mixed) == 10
    assert mix_replay(main, replay, 0.1, seed=0) == mixed


def test_collator_pads_and_builds_itdm_text(tmp_path, tiny_mage):
    processor = tiny_mage[1]
    dataset = build_dataset(write_dataset(tmp_path, GOOD), processor, "vicuna_v1", 512)
    items = [dataset[i] for i in range(3)]
    batch = MageDataCollator.from_processor(processor)(items)
    lengths = [len(item["input_ids"]) for item in items]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape == (2, 3, 64, 64)  # two image rows, in row order
    assert batch["itdm_input_ids"].shape[0] == 2
    tokenizer = processor.tokenizer
    first = batch["itdm_input_ids"][0][batch["itdm_attention_mask"][0].bool()]
    assert first[0] == tokenizer.bos_token_id
    assert tokenizer.decode(first[1:]) == " A red square. Red"  # answers, no </s>
    assert batch["itdm_pool_mask"][0].sum() == len(first) - 1
    with pytest.raises(KeyError, match="Unexpected input keys"):
        MageDataCollator.from_processor(processor)([{**items[0], "extra": 1}])


def test_modality_grouped_sampler():
    lengths = [5, -3, 7, -2, 9, -4, 6, -8, 3, -1, 4]
    sampler = ModalityLengthGroupedSampler(lengths, megabatch_size=2, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))
    batches = [order[i : i + 2] for i in range(0, len(order) - 3, 2)]  # all but the leftover batch
    assert all(len({lengths[i] > 0 for i in batch}) == 1 for batch in batches)
    assert list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_skiplog_report_is_empty_when_clean():
    assert SkipLog().report() == "no rows skipped"


def test_length_grouped_sampler_cuts_padding_and_keeps_modalities():
    """group_factor > 1 sorts several megabatches together: every index once, batches still single-modality (but
    the leftover), deterministic, and much less padding than LLaVA's grouping (factor 1) on mixed lengths."""
    import random

    rng = random.Random(0)
    lengths = [rng.choice([1, -1]) * rng.randint(5, 120) for _ in range(640)]
    batch = 8

    def padding(order):
        batches = [order[i : i + batch] for i in range(0, len(order), batch)]
        return sum(max(abs(lengths[i]) for i in b) * len(b) for b in batches) / sum(abs(x) for x in lengths)

    llava = list(ModalityLengthGroupedSampler(lengths, batch, seed=0))
    sampler = ModalityLengthGroupedSampler(lengths, batch, seed=0, group_factor=8)
    grouped = list(sampler)
    assert sorted(grouped) == list(range(len(lengths)))
    assert grouped == list(sampler)
    full = [grouped[i : i + batch] for i in range(0, len(grouped) - 2 * batch * 8, batch)]
    assert all(len({lengths[i] > 0 for i in b}) == 1 for b in full)
    assert padding(grouped) < 1.15 < 1.5 < padding(llava)
