"""Scorers against hand-computed values (MME acc+, POPE parse, MMBench CircularEval, SEED)."""

from __future__ import annotations

import random

import pytest

from evaluation import mmbench, mme, pope, seed
from evaluation.fixtures import write_mmbench
from evaluation.records import EvalRecord


def _mme(uid, subtask, image, answer):
    return EvalRecord("mme", uid, "q", answer, subtask, image_id=image)


def test_mme_parse_matches_official_rules():
    assert mme.parse_answer("Yes.") == "yes"
    assert mme.parse_answer("yes, there is") == "yes"
    assert mme.parse_answer("No") == "no"
    assert mme.parse_answer("I think so") == "other"
    assert mme.parse_answer("Not sure") == "no"  # "no" in the first four characters: the official quirk
    assert mme.parse_answer("The answer is yes") == "other"
    assert mme.parse_answer("") == "other"


def test_mme_acc_plus_with_interleaved_rows():
    # existence: img1 both right; img2 one right ("I think so" = other); img3 one right. Rows interleaved.
    rows = [
        (_mme("e1a", "existence", "1.png", "yes"), "Yes."),
        (_mme("e2a", "existence", "2.png", "yes"), "yes, there is"),
        (_mme("e1b", "existence", "1.png", "no"), "No"),
        (_mme("e3a", "existence", "3.png", "yes"), "No"),
        (_mme("e2b", "existence", "2.png", "no"), "I think so"),
        (_mme("e3b", "existence", "3.png", "no"), "no, not at all"),
        (_mme("c1a", "count", "1.png", "yes"), "Yes"),
        (_mme("c1b", "count", "1.png", "no"), "No."),
        (_mme("k1a", "code_reasoning", "1.png", "yes"), ""),
        (_mme("k1b", "code_reasoning", "1.png", "no"), ""),
    ]
    records, predictions = [r for r, _ in rows], {r.uid: p for r, p in rows}
    result = mme.score(records, predictions)
    existence = result["subtasks"]["existence"]
    assert existence["acc"] == pytest.approx(100 * 4 / 6)
    assert existence["acc_plus"] == pytest.approx(100 / 3)
    assert existence["score"] == pytest.approx(100.0)
    assert existence["other_answers"] == 1
    assert result["subtasks"]["count"]["score"] == pytest.approx(200.0)
    assert result["perception"] == pytest.approx(300.0)
    assert result["cognition"] == pytest.approx(0.0)
    assert result["subtasks"]["code_reasoning"]["other_answers"] == 2
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert mme.score(shuffled, predictions) == result


def test_mme_prompt_replaces_official_suffix():
    record = EvalRecord("mme", "x", "Is there a dog? Please answer yes or no.", "yes", "existence")
    assert mme.build_prompt(record) == "Is there a dog?\nAnswer the question using a single word or phrase."


def test_pope_parse_and_metrics_lenient():
    # The earlier reading, kept as rules "lenient": an empty answer is wrong, not a "yes" (official: see
    # tests/test_official_scoring.py, where "" reads "yes" as in LLaVA's eval_pope.py).
    assert pope.parse_answer("No, there is not a dog.") == "no"
    assert pope.parse_answer("Yes, a dog is there") == "yes"
    assert pope.parse_answer("There is a dog. There is no cat.") == "yes"  # only the first sentence counts
    assert pope.parse_answer("   ", "lenient") == ""
    rows = [
        ("random", "yes", "Yes, a dog is there"),  # TP
        ("random", "no", "No, there is not a dog."),  # TN
        ("random", "no", "There is a dog."),  # FP
        ("random", "yes", "I do not see a dog. But yes"),  # FN
        ("random", "yes", ""),  # empty: wrong (FN), not a "yes"
        ("popular", "yes", "Yes"),
        ("popular", "no", "no."),
    ]
    records = [EvalRecord("pope", f"{s}/{i}", "q", y, s) for i, (s, y, _) in enumerate(rows)]
    predictions = {r.uid: p for r, (_, _, p) in zip(records, rows)}
    result = pope.score(records, predictions, "lenient")
    random_split = result["splits"]["random"]
    assert (random_split["tp"], random_split["tn"], random_split["fp"], random_split["fn"]) == (1, 1, 1, 2)
    assert random_split["precision"] == pytest.approx(50.0)
    assert random_split["recall"] == pytest.approx(100 / 3)
    assert random_split["f1"] == pytest.approx(40.0)
    assert random_split["accuracy"] == pytest.approx(40.0)
    assert random_split["yes_ratio"] == pytest.approx(40.0)
    assert random_split["empty_answers"] == 1
    assert result["splits"]["popular"]["f1"] == pytest.approx(100.0)
    assert result["f1_mean"] == pytest.approx(70.0)


def test_mmbench_extraction_rules():
    choices = {"A": "red", "B": "blue", "C": "green"}
    assert mmbench.extract_choice("B", choices) == "B"
    assert mmbench.extract_choice("B. blue", choices) == "B"
    assert mmbench.extract_choice("(C)", choices) == "C"
    assert mmbench.extract_choice("blue", choices) == "B"  # option text, no letter
    assert mmbench.extract_choice("It is a blue square", choices) == "B"
    assert mmbench.extract_choice("A or B", choices) is None  # two letters, no unique text
    assert mmbench.extract_choice("purple", choices) is None
    assert mmbench.extract_choice("Cannot determine the answer", choices) == "Z"
    assert mmbench.extract_choice("", choices) is None
    # VERBOSE=1 reads a lone "A" among more than three words as an article
    assert mmbench.extract_choice("A square is red", choices, "vlmevalkit-2024") == "A"
    assert mmbench.extract_choice("A square is red", choices, "vlmevalkit-2024-verbose") == "A"  # text rule: red
    assert mmbench.extract_choice("A thing I see", choices, "vlmevalkit-2024-verbose") is None
    with pytest.raises(ValueError, match="vlmevalkit-2024"):
        mmbench.extract_choice("A", choices, "2023")


def _mmbench_records(tmp_path, circular_copies):
    path = write_mmbench(str(tmp_path / "mmb.tsv"), questions=3, seed=1, circular_copies=circular_copies)
    return mmbench.load_mmbench(path).records


@pytest.mark.parametrize("circular_copies", [False, True])
def test_mmbench_circular_eval_one_rotation_fails(tmp_path, circular_copies):
    records = _mmbench_records(tmp_path, circular_copies)
    assert len(records) == 12 and len({r.group for r in records}) == 3
    predictions = {}
    for r in records:
        if r.group == "0":  # right in every rotation, once by option text instead of the letter
            predictions[r.uid] = r.options[r.answer] if r.round == 1 else f"{r.answer}."
        elif r.group == "1":  # wrong in rotation 2 only
            wrong = next(k for k in r.options if k != r.answer)
            predictions[r.uid] = wrong if r.round == 2 else r.answer
        else:  # unresolved in every rotation
            predictions[r.uid] = "I cannot tell"
    result = mmbench.score(records, predictions)
    assert result["circular_accuracy"] == pytest.approx(100 / 3)
    assert result["round0_accuracy"] == pytest.approx(200 / 3)
    assert result["unresolved_answers"] == 4
    assert result["questions"] == 3 and result["prompts"] == 12
    assert result["categories"] == {"attribute_recognition": pytest.approx(100 / 3)}


def test_mmbench_rotation_moves_the_answer(tmp_path):
    records = [r for r in _mmbench_records(tmp_path, False) if r.group == "0"]
    texts = {r.options[r.answer] for r in records}
    assert len(texts) == 1  # every rotation's answer letter points at the same option text
    assert [r.round for r in records] == [0, 1, 2, 3]
    prompt = mmbench.build_prompt(records[1])
    assert prompt.startswith("What colour is the square?\nA. ")
    assert prompt.endswith("\nAnswer with the option's letter from the given choices directly.")


def test_seed_score_per_dimension_lenient():
    # Rules "lenient" read the option text "yellow" as D; the official exact match (LLaVA's
    # convert_seed_for_submission.py) counts it wrong: tests/test_official_scoring.py.
    options = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}
    rows = [
        ("Scene Understanding", "A", "A"),
        ("Scene Understanding", "B", "C"),
        ("Instance Attributes", "D", "yellow"),
        ("Instance Attributes", "C", ""),
    ]
    records = [EvalRecord("seed", str(i), "q", a, d, options=options) for i, (d, a, _) in enumerate(rows)]
    result = seed.score(records, {str(i): p for i, (_, _, p) in enumerate(rows)}, "lenient")
    assert result["overall"] == pytest.approx(50.0)
    assert result["dimensions"] == {
        "Instance Attributes": pytest.approx(50.0),
        "Scene Understanding": pytest.approx(50.0),
    }
    assert result["unresolved_answers"] == 1


def test_avg_n_reproduces_paper_table4():
    from evaluation.report import TABLE4, avg_n

    maxima = {k: m for k, (_, _, m) in TABLE4.items()}
    b1 = dict(zip(TABLE4, (140, 24.4, 40.7, 70.8, 48.9, 60.9)))
    b7 = dict(zip(TABLE4, (140, 39.2, 53.1, 76.5, 54.7, 56.1)))
    assert round(avg_n(b1, maxima), 1) == 52.6
    assert round(avg_n(b7, maxima), 1) == 58.3


# --- cross-checks against straight ports of the official scripts -------------------------------------------------

ANSWERS = ["Yes", "No", "yes, there is", "no.", "I think so", "Not sure", "", "There is no dog.", "Yes. No.", "no, not"]


def _official_mme(folder):
    """Port of MME eval_tool/calculation.py (consecutive-line pairs, parse_pred_ans, acc*100 + acc_plus*100)."""
    import os

    def parse_pred_ans(pred_ans):
        if pred_ans in ["yes", "no"]:
            return pred_ans
        prefix_pred_ans = pred_ans[:4]
        if "yes" in prefix_pred_ans:
            return "yes"
        if "no" in prefix_pred_ans:
            return "no"
        return "other"

    scores = {}
    for name in sorted(os.listdir(folder)):
        lines = open(os.path.join(folder, name), encoding="utf-8").read().splitlines()
        chunks = [lines[i : i + 2] for i in range(0, len(lines), 2)]
        gts, preds, acc_plus_correct = [], [], 0
        for chunk in chunks:
            assert len(chunk) == 2
            correct = 0
            for item in chunk:
                _, _, gt_ans, pred_ans = item.split("\t")
                gt_ans, pred_ans = gt_ans.lower(), parse_pred_ans(pred_ans.lower())
                gts.append(gt_ans)
                preds.append(pred_ans)
                correct += gt_ans == pred_ans
            acc_plus_correct += correct == 2
        acc = sum(g == p for g, p in zip(gts, preds)) / len(gts)
        scores[name[:-4]] = acc * 100 + acc_plus_correct / len(chunks) * 100
    return scores


def test_mme_equals_a_port_of_calculation_py(tmp_path):
    from evaluation.fixtures import write_mme

    root = write_mme(str(tmp_path / "mme"), images_per_subtask=5, subtasks=("color", "count", "OCR"))
    records = mme.load_mme(root).records
    rng = random.Random(3)
    predictions = {r.uid: rng.choice(ANSWERS) for r in records}
    mme.write_official_results(records, predictions, str(tmp_path / "results"))
    ours = {k: v["score"] for k, v in mme.score(records, predictions)["subtasks"].items()}
    assert ours == pytest.approx(_official_mme(str(tmp_path / "results")))


def _official_pope(answers, labels):
    """Port of LLaVA llava/eval/eval_pope.py (answers and labels in the same order)."""
    preds = []
    for text in answers:
        if text.find(".") != -1:
            text = text.split(".")[0]
        text = text.replace(",", "")
        words = text.split(" ")
        preds.append(0 if ("No" in words or "not" in words or "no" in words) else 1)
    labels = [0 if y == "no" else 1 for y in labels]
    tp = sum(1 for p, y in zip(preds, labels) if p == 1 and y == 1)
    fp = sum(1 for p, y in zip(preds, labels) if p == 1 and y == 0)
    tn = sum(1 for p, y in zip(preds, labels) if p == 0 and y == 0)
    fn = sum(1 for p, y in zip(preds, labels) if p == 0 and y == 1)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return {
        "accuracy": 100 * (tp + tn) / len(preds),
        "precision": 100 * precision,
        "recall": 100 * recall,
        "f1": 100 * 2 * precision * recall / (precision + recall),
        "yes_ratio": 100 * preds.count(1) / len(preds),
    }


def test_pope_equals_a_port_of_eval_pope_without_empty_answers(tmp_path):
    from evaluation.fixtures import write_pope

    records = pope.load_pope(write_pope(str(tmp_path), questions_per_split=40, splits=("random",))).records
    rng = random.Random(5)
    answers = [rng.choice([a for a in ANSWERS if a]) for _ in records]
    ours = pope.score(records, {r.uid: a for r, a in zip(records, answers)})["splits"]["random"]
    official = _official_pope(answers, [r.answer for r in records])
    assert {k: ours[k] for k in official} == pytest.approx(official)
