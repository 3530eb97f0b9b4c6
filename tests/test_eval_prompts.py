"""Prompts: the exact strings LLaVA-1.5's evaluation scripts produce, rendered by the processor's chat template."""

from __future__ import annotations

import pytest

from evaluation.prompts import likelihood_query, question_text
from evaluation.records import EvalRecord
from inference import chat_text

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions."
)
OPTIONS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}

CASES = [
    (
        EvalRecord("mme", "u", "Is there a red square in this image? Please answer yes or no.", "yes", "existence"),
        "Is there a red square in this image?\nAnswer the question using a single word or phrase.",
    ),
    (
        EvalRecord("pope", "u", "Is there a dog in the image?", "no", "random"),
        "Is there a dog in the image?\nAnswer the question using a single word or phrase.",
    ),
    (
        EvalRecord("mmbench", "u", "What colour is it?", "A", "c", options=OPTIONS, hint="One square."),
        "One square.\nWhat colour is it?\nA. red\nB. blue\nC. green\nD. yellow\n"
        "Answer with the option's letter from the given choices directly.",
    ),
    (
        EvalRecord("mmbench_cn", "u", "方块是什么颜色？", "A", "c", options={"A": "红", "B": "蓝"}),
        "方块是什么颜色？\nA. 红\nB. 蓝\n请直接回答选项字母。",
    ),
    (
        EvalRecord("seed", "u", "What colour is it?", "A", "Scene Understanding", options=OPTIONS),
        "What colour is it?\nA. red\nB. blue\nC. green\nD. yellow\n"
        "Answer with the option's letter from the given choices directly.",
    ),
]


@pytest.mark.parametrize(("record", "expected"), CASES, ids=[c[0].benchmark for c in CASES])
def test_question_text_is_llava_15(record, expected):
    assert question_text(record) == expected


def test_chat_prompt_is_vicuna_v1_with_image_first(tiny_mage):
    _, processor = tiny_mage
    text = question_text(CASES[1][0])
    assert chat_text(processor, text) == f"{SYSTEM} USER: <image>\n{text} ASSISTANT:"


def test_likelihood_queries():
    seed_text, seed_conts, seed_keys = likelihood_query(CASES[4][0])
    assert seed_text == "What colour is it?" and seed_conts == ["red", "blue", "green", "yellow"]
    assert seed_keys == ["A", "B", "C", "D"]
    mmb_text, mmb_conts, _ = likelihood_query(CASES[2][0])
    assert mmb_text == CASES[2][1] and mmb_conts == ["A", "B", "C", "D"]
    with pytest.raises(ValueError, match="likelihood scoring is for SEED and MMBench"):
        likelihood_query(CASES[0][0])
