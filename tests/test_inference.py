"""`inference`: the one-turn prompt, left-padded batches that leave a shared processor as it was, greedy answers."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from inference import chat_text, encode_left_padded, generate_text, greedy_answers


def test_system_prompt_replaces_the_templates_default(tiny_mage):
    _, processor = tiny_mage
    text = chat_text(processor, "How many shapes?", with_image=False, system="Plan tools.")
    assert text.startswith("Plan tools. USER: How many shapes?") and text.endswith("ASSISTANT:")
    assert "<image>" not in text


def test_left_padding_restores_the_processors_side(tiny_mage):
    model, processor = tiny_mage
    tokenizer = processor.tokenizer
    before = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        prompts = [chat_text(processor, "Is there a red square?"), chat_text(processor, "Colour?")]
        images = [Image.new("RGB", (32, 32), (200, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 200))]
        inputs = encode_left_padded(model, processor, prompts, images)
        assert tokenizer.padding_side == "right"
    finally:
        tokenizer.padding_side = before
    mask = inputs["attention_mask"]
    assert mask[:, -1].all() and not mask[1, 0]  # the shorter prompt is padded on the left
    assert inputs["pixel_values"].dtype == model.dtype and inputs["pixel_values"].shape[0] == 2


def test_batched_greedy_answers_equal_one_at_a_time(tiny_mage):
    model, processor = tiny_mage
    questions = ["Is there a red square in the image?", "Colour?"]
    images = [Image.new("RGB", (32, 32), (200, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 200))]
    batched = greedy_answers(model, processor, [chat_text(processor, q) for q in questions], images, 6)
    alone = [generate_text(model, processor, q, image=i, max_new_tokens=6) for q, i in zip(questions, images)]
    assert batched == alone
    # a random tiny model may answer both alike, so compare what greedy decoding reads: the next-token logits of each
    # left-padded row against the row alone (they differ between the rows, so a padding bug would show)
    prompts = [chat_text(processor, q) for q in questions]
    with torch.inference_mode():
        together = model(**encode_left_padded(model, processor, prompts, images)).logits[:, -1]
        single = [
            model(**encode_left_padded(model, processor, [t], [i])).logits[0, -1] for t, i in zip(prompts, images)
        ]
    assert not torch.allclose(single[0], single[1], atol=1e-4)
    for row, expected in zip(together, single):
        torch.testing.assert_close(row, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("command", ["demo", "train", "eval", "agent", "ablate", "serve"])
@pytest.mark.parametrize("value", ["0", "two"])
def test_every_command_refuses_a_bad_thread_count_in_one_line(command, value, capsys):
    from mage_cli.main import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, "--threads", value])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"mage {command}: error: argument --threads: expected an integer >= 1, got")
