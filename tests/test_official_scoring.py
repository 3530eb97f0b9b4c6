"""`--rules official` against the official scripts' rules, one hand-written tricky prediction per rule, the kept
`lenient` reading, lmms-eval's variants, and `mage eval --predictions` on fixture data (no model loaded)."""

from __future__ import annotations

import csv
import json
import random

import pytest

from evaluation import fixtures, mmbench, mme, official_rules, pope, seed
from evaluation.predictions_io import read_mme_folder
from evaluation.records import EvalRecord
from mage_cli.main import main

COLOURS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}


# --- MME: calculation.py ------------------------------------------------------------------------------------------


def test_mme_exact_yes_is_yes():
    assert mme.parse_answer("yes") == "yes"


def test_mme_answer_is_lower_cased():
    assert mme.parse_answer("YES") == "yes"


def test_mme_one_leading_space_still_has_yes_in_the_first_four():
    assert mme.parse_answer(" yes") == "yes"


def test_mme_answer_is_not_stripped():
    assert mme.parse_answer("  Yes") == "other"  # "  ye" holds neither "yes" nor "no"


def test_mme_yes_later_than_the_first_four_characters_is_other():
    assert mme.parse_answer("The answer is yes") == "other"


def test_mme_empty_answer_is_other():
    assert mme.parse_answer("") == "other"


def test_mme_no_in_the_prefix_reads_no():
    assert mme.parse_answer("Not sure") == "no"


def test_mme_yes_is_tried_before_no():
    assert mme.parse_answer("noyes") == "no" and mme.parse_answer("yesno") == "yes"


def test_mme_lenient_rules_strip_first():
    assert mme.parse_answer("  Yes", "lenient") == "yes"


def test_mme_lmms_eval_reads_a_lone_y():
    assert official_rules.mme_lmms_eval(" Y.") == "yes"


def test_mme_export_keeps_the_prediction_but_not_tabs_or_line_breaks(tmp_path):
    records = [
        EvalRecord("mme", "a", "Is it red? Please answer yes or no.", "yes", "color", image_id="1.png"),
        EvalRecord("mme", "b", "Is it blue? Please answer yes or no.", "no", "color", image_id="1.png"),
    ]
    predictions = {"a": " Yes\tit is", "b": "no\nreally\r\n"}
    mme.write_official_results(records, predictions, str(tmp_path))
    lines = (tmp_path / "color.txt").read_text(encoding="utf-8").split("\n")
    assert lines[:2] == [
        "1.png\tIs it red? Please answer yes or no.\tYes\t Yes it is",
        "1.png\tIs it blue? Please answer yes or no.\tNo\tno really  ",
    ]
    for text in ["\tyes", "y\nes", "n\to", "no\r", " \nno"]:  # a space in their place never changes the parse
        assert mme.parse_answer(mme.export_prediction(text)) == mme.parse_answer(text)


def test_mme_acc_plus_groups_by_subtask_and_image_wherever_the_rows_are():
    def record(uid, subtask, image, answer):
        return EvalRecord("mme", uid, "q " + uid, answer, subtask, image_id=image)

    rows = [  # the same image name in two subtasks, and each image's questions far apart
        (record("c1y", "color", "1.png", "yes"), "Yes"),
        (record("o1y", "OCR", "1.png", "yes"), "Yes"),
        (record("c2y", "color", "2.png", "yes"), "Yes"),
        (record("o1n", "OCR", "1.png", "no"), "Yes"),  # OCR/1.png: one of two right
        (record("c2n", "color", "2.png", "no"), " no"),  # one leading space: still "no"
        (record("c1n", "color", "1.png", "no"), "No"),
    ]
    records, predictions = [r for r, _ in rows], {r.uid: p for r, p in rows}
    result = mme.score(records, predictions)
    assert result["subtasks"]["color"]["acc_plus"] == pytest.approx(100.0)
    assert result["subtasks"]["OCR"]["acc_plus"] == pytest.approx(0.0)
    assert result["subtasks"]["OCR"]["acc"] == pytest.approx(50.0)
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    assert mme.score(shuffled, predictions)["subtasks"] == result["subtasks"]


def test_mme_lmms_eval_variant_differs_where_its_parse_does():
    records = [
        EvalRecord("mme", "a", "q1", "yes", "color", image_id="1.png"),
        EvalRecord("mme", "b", "q2", "no", "color", image_id="1.png"),
    ]
    result = mme.score(records, {"a": "  Yes", "b": "no"})
    assert result["perception"] == pytest.approx(50.0)  # official: "  Yes" is other
    assert result["lmms_eval"]["perception"] == pytest.approx(200.0)  # lmms-eval strips
    assert result["rules"]["name"] == "mme-calculation"


# --- POPE: LLaVA eval_pope.py -------------------------------------------------------------------------------------


def test_pope_word_no_reads_no():
    assert pope.parse_answer("No") == "no"


def test_pope_word_not_reads_no():
    assert pope.parse_answer("There is not a dog") == "no"


def test_pope_only_the_first_sentence_counts():
    assert pope.parse_answer("There is a dog. No cat.") == "yes"


def test_pope_commas_are_deleted_before_splitting():
    assert pope.parse_answer("Yes,no") == "yes" and pope.parse_answer("Yes, no") == "no"


def test_pope_empty_answer_reads_yes():
    assert pope.parse_answer("") == "yes"


def test_pope_upper_case_no_reads_yes():
    assert pope.parse_answer("NO") == "yes"


def test_pope_nope_reads_yes():
    assert pope.parse_answer("Nope") == "yes"


def test_pope_no_with_exclamation_reads_yes():
    assert pope.parse_answer("no!") == "yes"


def test_pope_split_is_on_single_spaces_only():
    assert pope.parse_answer("No\nthere is none") == "yes"  # the first word is "No\nthere"


def test_pope_yes_ratio_and_metrics_follow_the_same_rule():
    labels = [("yes", ""), ("no", "NO"), ("no", "no"), ("yes", "No")]
    records = [EvalRecord("pope", f"random/{i}", "q", y, "random") for i, (y, _) in enumerate(labels)]
    predictions = {r.uid: p for r, (_, p) in zip(records, labels)}
    split = pope.score(records, predictions)["splits"]["random"]
    assert (split["tp"], split["fp"], split["tn"], split["fn"]) == (1, 1, 1, 1)
    assert split["yes_ratio"] == pytest.approx(50.0)


def test_pope_lenient_counts_an_empty_answer_wrong():
    records = [EvalRecord("pope", "random/1", "q", "yes", "random")]
    assert pope.score(records, {"random/1": ""}, "lenient")["splits"]["random"]["tp"] == 0


def test_pope_lmms_eval_variant_needs_an_exact_word():
    records = [EvalRecord("pope", f"random/{i}", "q", y, "random") for i, y in enumerate(["yes", "no"])]
    result = pope.score(records, {"random/0": "Yes, there is.", "random/1": "No."})
    assert result["f1_mean"] == pytest.approx(100.0)
    assert result["lmms_eval"]["pooled"]["accuracy"] == pytest.approx(0.0)


# --- MMBench: VLMEvalKit can_infer (HEAD) + mcq_circular_eval -----------------------------------------------------


def test_mmbench_lone_letter():
    assert mmbench.extract_choice("B", COLOURS) == "B"


def test_mmbench_punctuation_becomes_spaces():
    assert mmbench.extract_choice("(C).", COLOURS) == "C"


def test_mmbench_letter_among_the_last_four_tokens_counts():
    assert mmbench.extract_choice("So I pick B here now", COLOURS) == "B"  # index 3 of 6 tokens


def test_mmbench_letter_before_the_last_four_tokens_does_not_count():
    assert mmbench.extract_choice("So B is it I think", COLOURS) is None  # index 1 of 6 tokens


def test_mmbench_2024_rules_did_not_look_at_the_position():
    assert mmbench.extract_choice("So B is it I think", COLOURS, "vlmevalkit-2024") == "B"


def test_mmbench_answer_is_regex_has_no_word_boundary():
    fruit = {"A": "cherry", "B": "apple", "C": "plum", "D": "pear"}
    assert mmbench.extract_choice("The answer is cherry", fruit) == "C"


def test_mmbench_answer_is_regex_reads_bold_letters_far_from_the_end():
    text = "The correct answer is **B** since the square in the middle of the image is clearly of that colour"
    assert mmbench.extract_choice(text, COLOURS) == "B"


def test_mmbench_option_text_matches_when_short():
    assert mmbench.extract_choice("It is blue", COLOURS) == "B"


def test_mmbench_option_text_gives_up_on_a_long_answer():
    text = "The square in this picture is blue, " * 2  # 72 characters > 2 × 18
    assert mmbench.extract_choice(text, COLOURS) is None


def test_mmbench_two_option_texts_are_unresolved():
    assert mmbench.extract_choice("red or blue", COLOURS) is None


def test_mmbench_refusal_reads_z():
    assert mmbench.extract_choice("Cannot determine the answer", COLOURS) == "Z"


def test_mmbench_lmms_eval_prefetch_has_no_answer_is_regex():
    fruit = {"A": "cherry", "B": "apple", "C": "plum", "D": "pear"}
    assert official_rules.lmms_eval_can_infer("The answer is cherry", fruit) == "A"  # its text rule instead


def _circular_records(tmp_path):
    path = fixtures.write_mmbench(str(tmp_path / "mmb.tsv"), questions=3, seed=2, circular_copies=True)
    return mmbench.load_mmbench(path).records


def test_mmbench_group_without_its_original_row_is_skipped(tmp_path):
    records = [r for r in _circular_records(tmp_path) if not (r.group == "1" and r.round == 0)]
    predictions = {r.uid: (r.answer if r.group != "1" else "I cannot tell") for r in records}
    official = mmbench.score(records, predictions)
    assert official["questions"] == 2 and official["circular_accuracy"] == pytest.approx(100.0)
    assert official["groups_without_original"] == 1
    lenient = mmbench.score(records, predictions, "lenient")
    assert lenient["questions"] == 3 and lenient["circular_accuracy"] == pytest.approx(200 / 3)


def test_mmbench_hit_needs_every_row_of_the_group(tmp_path):
    records = _circular_records(tmp_path)
    predictions = {r.uid: r.answer for r in records}
    one = next(r for r in records if r.group == "0" and r.round == 3)
    predictions[one.uid] = "I cannot tell"  # unresolved in one rotation only
    assert mmbench.score(records, predictions)["circular_accuracy"] == pytest.approx(200 / 3)


# --- SEED-Bench: LLaVA convert_seed_for_submission.py -------------------------------------------------------------


def _seed_record(answer="A"):
    return EvalRecord("seed", "1", "q", answer, "Scene Understanding", options=COLOURS)


@pytest.mark.parametrize(
    "prediction, right",
    [
        ("A", True),
        (" A", False),  # not stripped
        ("A\n", False),
        ("a", False),  # case-sensitive
        ("A.", False),
        ("(A)", False),
        ("Answer: A", False),
        ("red", False),  # the option text
    ],
)
def test_seed_official_is_exact_string_equality(prediction, right):
    assert seed.score([_seed_record()], {"1": prediction})["overall"] == (100.0 if right else 0.0)


def test_seed_lenient_reads_the_letter():
    assert seed.score([_seed_record()], {"1": "A."}, "lenient")["overall"] == pytest.approx(100.0)


def test_seed_lmms_eval_keeps_the_first_character():
    assert seed.score([_seed_record()], {"1": " a) red"})["lmms_eval"]["overall"] == pytest.approx(100.0)


def test_seed_compares_with_the_answer_as_written_in_the_json():
    record = _seed_record()
    record.extra["raw_answer"] = "A "  # what the JSON held; the loader's answer is stripped
    assert seed.score([record], {"1": "A"})["overall"] == 0.0


# --- mage eval --predictions --------------------------------------------------------------------------------------


def _eval(capsys, *argv) -> tuple[int, str, str]:
    code = main(["eval", "--no-plots", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_scores_llava_pope_answers_without_a_model(tmp_path, capsys):
    data = fixtures.write_pope(str(tmp_path / "pope"), questions_per_split=2, splits=("random", "popular"))
    labels = {}
    for split in ("random", "popular"):
        for line in open(tmp_path / "pope" / f"coco_pope_{split}.json", encoding="utf-8"):
            row = json.loads(line)
            labels[(split, row["question_id"])] = row["label"]
    answers = tmp_path / "answers.jsonl"
    with open(answers, "w", encoding="utf-8") as handle:
        for (split, qid), label in labels.items():
            text = "" if label == "yes" else "No, there is not."  # "" reads yes, as eval_pope.py reads it
            handle.write(json.dumps({"question_id": qid, "category": split, "text": text}) + "\n")
    out = tmp_path / "out"
    code, stdout, _ = _eval(capsys, "--benchmark", "pope", "--data", data, "--predictions", str(answers),
                            "--output-dir", str(out))  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    scores = results["benchmarks"]["pope"]["scores"]
    assert scores["f1_mean"] == pytest.approx(100.0)
    assert scores["rules"]["set"] == "official" and "eval_pope.py" in scores["rules"]["source"]
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "rules: `official`" in markdown and "lmms-eval reading" in markdown


def test_cli_scores_an_mme_eval_tool_folder_like_direct_scoring(tmp_path, capsys):
    data = fixtures.write_mme(str(tmp_path / "MME"), images_per_subtask=2)
    records = mme.load_mme(data).records
    predictions = {r.uid: "  Yes" if r.answer == "yes" else " no\tsure" for r in records}
    mme.write_official_results(records, predictions, str(tmp_path / "tool"))
    read_back = read_mme_folder(str(tmp_path / "tool"), records)
    assert read_back == {uid: text.replace("\t", " ") for uid, text in predictions.items()}
    out = tmp_path / "out"
    code, _, _ = _eval(capsys, "--benchmark", "mme", "--data", data, "--predictions", str(tmp_path / "tool"),
                       "--output-dir", str(out))  # fmt: skip
    assert code == 0
    scores = json.loads((out / "results.json").read_text(encoding="utf-8"))["benchmarks"]["mme"]["scores"]
    assert scores["perception"] == pytest.approx(mme.score(records, predictions)["perception"])
    assert scores["perception"] != pytest.approx(mme.score(records, predictions, "lenient")["perception"])


def test_cli_scores_a_vlmevalkit_mmbench_table(tmp_path, capsys):
    data = fixtures.write_mmbench(str(tmp_path / "mmb.tsv"), questions=3, seed=2, circular_copies=True)
    with open(data, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    table = tmp_path / "pred.tsv"
    with open(table, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["index", "prediction"])
        for row in rows:
            if int(row["index"]) == 2:
                continue  # group 2 without its original-order row: skipped
            writer.writerow([row["index"], row["answer"] + "."])
    out = tmp_path / "out"
    code, _, _ = _eval(capsys, "--benchmark", "mmbench", "--data", data, "--predictions", str(table),
                       "--output-dir", str(out))  # fmt: skip
    assert code == 0
    scores = json.loads((out / "results.json").read_text(encoding="utf-8"))["benchmarks"]["mmbench"]["scores"]
    assert scores["questions"] == 2 and scores["circular_accuracy"] == pytest.approx(100.0)


def test_cli_scores_llava_seed_answers_exactly(tmp_path, capsys):
    data = fixtures.write_seed(str(tmp_path / "seed"), questions=4)
    questions = json.loads((tmp_path / "seed" / "SEED-Bench.json").read_text(encoding="utf-8"))["questions"]
    answers = tmp_path / "answers.jsonl"
    with open(answers, "w", encoding="utf-8") as handle:
        for i, q in enumerate(q for q in questions if q["data_type"] == "image"):
            text = q["answer"] if i < 2 else " " + q["answer"]  # whitespace: wrong under the official rule
            handle.write(json.dumps({"question_id": q["question_id"], "text": text}) + "\n")
    out = tmp_path / "out"
    code, _, _ = _eval(capsys, "--benchmark", "seed", "--data", data, "--predictions", str(answers),
                       "--output-dir", str(out))  # fmt: skip
    assert code == 0
    bench = json.loads((out / "results.json").read_text(encoding="utf-8"))["benchmarks"]["seed"]
    assert bench["scores"]["overall"] == pytest.approx(50.0)
    assert bench["scores"]["lmms_eval"]["overall"] == pytest.approx(100.0)
    assert bench["scoring"] == "generate"


def test_cli_bad_predictions_row_is_one_line_exit_2(tmp_path, capsys):
    data = fixtures.write_seed(str(tmp_path / "seed"), questions=2)
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": "0", "text": "A"}\n{"question_id": "1", "text": 7}\n', encoding="utf-8")
    code, _, err = _eval(capsys, "--benchmark", "seed", "--data", data, "--predictions", str(answers),
                         "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("mage eval: error: ")
    assert f"{answers}:2" in err and "'text'" in err


def test_cli_without_model_or_predictions_is_refused(tmp_path, capsys):
    data = fixtures.write_seed(str(tmp_path / "seed"), questions=1)
    code, _, err = _eval(capsys, "--benchmark", "seed", "--data", data, "--output-dir", str(tmp_path / "o"))
    assert code == 2 and "--model is required" in err


def test_cli_xlsx_without_openpyxl_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("pandas")
    try:
        import openpyxl  # noqa: F401

        pytest.skip("openpyxl is installed: XLSX is read")
    except ImportError:
        pass
    data = fixtures.write_mmbench(str(tmp_path / "mmb.tsv"), questions=1)
    table = tmp_path / "pred.xlsx"
    table.write_bytes(b"PK\x03\x04")
    code, _, err = _eval(capsys, "--benchmark", "mmbench", "--data", data, "--predictions", str(table),
                         "--output-dir", str(tmp_path / "o"))  # fmt: skip
    assert code == 2 and "openpyxl" in err and str(table) in err


def _bad_mme_folder(tmp_path):
    data = fixtures.write_mme(str(tmp_path / "MME"), images_per_subtask=1, subtasks=("color",))
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "color.txt").write_text("0000.png\tIs the square red?\tYes\n", encoding="utf-8")
    return "mme", data, tmp_path / "tool", f"{tmp_path / 'tool' / 'color.txt'}:1", "4 tab-separated fields"


def _bad_mmbench_table(tmp_path):
    data = fixtures.write_mmbench(str(tmp_path / "mmb.tsv"), questions=1)
    (tmp_path / "pred.tsv").write_text("index\tanswer\n0\tA\n", encoding="utf-8")
    return "mmbench", data, tmp_path / "pred.tsv", str(tmp_path / "pred.tsv"), "'prediction'"


def _ambiguous_pope_id(tmp_path):
    data = fixtures.write_pope(str(tmp_path / "pope"), questions_per_split=1)
    (tmp_path / "a.jsonl").write_text('{"question_id": 1, "text": "yes"}\n', encoding="utf-8")
    return "pope", data, tmp_path / "a.jsonl", f"{tmp_path / 'a.jsonl'}:1", "'category'"


@pytest.mark.parametrize("case", [_bad_mme_folder, _bad_mmbench_table, _ambiguous_pope_id])
def test_cli_bad_predictions_files_name_file_row_and_field(case, tmp_path, capsys):
    benchmark, data, predictions, where, field = case(tmp_path)
    code, _, err = _eval(capsys, "--benchmark", benchmark, "--data", data, "--predictions", str(predictions),
                         "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and err.startswith("mage eval: error: ")
    assert where in err and field in err
    assert not (tmp_path / "out").exists()


def test_cli_reads_a_vlmevalkit_xlsx_when_openpyxl_is_installed(tmp_path, capsys):
    openpyxl = pytest.importorskip("openpyxl")
    data = fixtures.write_mmbench(str(tmp_path / "mmb.tsv"), questions=2, seed=2, circular_copies=True)
    with open(data, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    book = openpyxl.Workbook()
    book.active.append(["index", "answer", "prediction"])
    for row in rows:  # an empty cell reads "nan" (pandas + str() in VLMEvalKit): unresolved, so group 1 misses
        book.active.append([int(row["index"]), row["answer"], None if row["index"] == "1000001" else row["answer"]])
    book.save(tmp_path / "pred.xlsx")
    out = tmp_path / "out"
    code, _, _ = _eval(capsys, "--benchmark", "mmbench", "--data", data, "--predictions", str(tmp_path / "pred.xlsx"),
                       "--output-dir", str(out))  # fmt: skip
    assert code == 0
    scores = json.loads((out / "results.json").read_text(encoding="utf-8"))["benchmarks"]["mmbench"]["scores"]
    assert scores["circular_accuracy"] == pytest.approx(50.0) and scores["unresolved_answers"] == 1
