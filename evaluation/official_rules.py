"""Named answer-reading rules: which script each scoring reproduces, where it was read, and the rule logic itself.

`mage eval --rules NAME` picks one rule set for every benchmark:

- `official` (default): each benchmark's own scoring script, rule for rule (sources in `SOURCES`, listed with their
  commits in docs/evaluation.md): MME `eval_tool/calculation.py`, LLaVA's `eval_pope.py`, VLMEvalKit's current
  `can_infer` + `mcq_circular_eval` (exact matching, no judge), LLaVA's `convert_seed_for_submission.py`.
- `lenient`: this project's earlier, more forgiving reading (answers stripped; an empty POPE answer is wrong instead of
  "yes"; MMBench and SEED letters read with VLMEvalKit's 2024 `can_infer`). Same as `vlmevalkit-2024`.
- `vlmevalkit-2024-verbose`: `lenient` with the `VERBOSE=1` reading of a lone "A" (an article, unresolved).

Every score also carries lmms-eval's variant (`LMMS_EVAL_SOURCES`), labelled, for comparison with its leaderboards.
The functions below re-implement only the few lines of rule logic of those scripts; each cites its source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

RULE_SETS = ("official", "lenient", "vlmevalkit-2024", "vlmevalkit-2024-verbose")
DEFAULT_RULES = "official"

VLMEVALKIT_COMMIT = "e8e78f05f3080fe28154f2130321f17951c3be94"
LLAVA_COMMIT = "c121f0432da27facab705978f83c4ada465e46fd"
LMMS_EVAL_COMMIT = "75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3"
MME_TOOL = "zjunlp/Deco@a3ccc150b715373f3019fc07cb1836c1961d7e15 eval_tool/calculation.py"

# Per benchmark: the rule name each rule set resolves to, and where that rule comes from.
SOURCES = {
    "mme-calculation": f"MME eval_tool/calculation.py (parse_pred_ans; read as redistributed in {MME_TOOL})",
    "llava-eval-pope": f"haotian-liu/LLaVA@{LLAVA_COMMIT[:12]} llava/eval/eval_pope.py",
    "vlmevalkit-current": f"open-compass/VLMEvalKit@{VLMEVALKIT_COMMIT[:12]} vlmeval/utils/matching_util.py can_infer "
    "+ vlmeval/dataset/utils/multiple_choice.py mcq_circular_eval (exact matching)",
    "llava-seed-exact": f"haotian-liu/LLaVA@{LLAVA_COMMIT[:12]} scripts/convert_seed_for_submission.py "
    "(row['text'] == answer)",
    "likelihood": "option ranking by likelihood (no text to read; SEED-Bench's own protocol)",
    "lenient": "this project's earlier reading: stripped answers (MME), an empty answer counts wrong (POPE)",
    "vlmevalkit-2024": "VLMEvalKit matching_util.py can_infer as released in 2024 (VERBOSE unset)",
    "vlmevalkit-2024-verbose": "VLMEvalKit matching_util.py can_infer as released in 2024 with VERBOSE=1",
}
LMMS_EVAL_SOURCES = {
    "mme": f"EvolvingLMMs-Lab/lmms-eval@{LMMS_EVAL_COMMIT[:12]} lmms_eval/tasks/mme/utils.py",
    "pope": f"EvolvingLMMs-Lab/lmms-eval@{LMMS_EVAL_COMMIT[:12]} lmms_eval/tasks/pope/utils.py",
    "mmbench": f"EvolvingLMMs-Lab/lmms-eval@{LMMS_EVAL_COMMIT[:12]} lmms_eval/tasks/mmbench/mmbench_evals.py "
    "(prefetch rules only; lmms-eval asks a GPT judge about the rest)",
    "seed": f"EvolvingLMMs-Lab/lmms-eval@{LMMS_EVAL_COMMIT[:12]} lmms_eval/tasks/seedbench/utils.py",
}
LMMS_EVAL_SOURCES["mmbench_cn"] = LMMS_EVAL_SOURCES["mmbench"]


def check_rules(rules: str) -> str:
    """`rules` if it is a known rule set, else ValueError naming the choices."""
    if rules not in RULE_SETS:
        raise ValueError(f"unknown rules {rules!r}; choose one of {RULE_SETS}")
    return rules


def benchmark_rules(rules: str, benchmark: str, scoring: str = "generate") -> str:
    """The rule name (a key of `SOURCES`) that rule set `rules` applies to `benchmark` read with `scoring`."""
    check_rules(rules)
    if benchmark == "seed" and scoring == "likelihood":
        return "likelihood"
    if rules == "official":
        return {
            "mme": "mme-calculation",
            "pope": "llava-eval-pope",
            "mmbench": "vlmevalkit-current",
            "mmbench_cn": "vlmevalkit-current",
            "seed": "llava-seed-exact",
        }[benchmark]
    if benchmark in ("mme", "pope"):
        return "lenient"
    return "vlmevalkit-2024-verbose" if rules == "vlmevalkit-2024-verbose" else "vlmevalkit-2024"


def describe(rules: str, benchmark: str, scoring: str = "generate") -> dict:
    """`{"set", "name", "source", "lmms_eval_source"}`: what the report states about the rules behind a number."""
    name = benchmark_rules(rules, benchmark, scoring)
    return {"set": rules, "name": name, "source": SOURCES[name], "lmms_eval_source": LMMS_EVAL_SOURCES[benchmark]}


# --- MME ---------------------------------------------------------------------------------------------------------


def mme_official(prediction: str) -> str:
    """MME `calculation.py`: `pred_ans.lower()` (never stripped), then `parse_pred_ans`: exactly "yes"/"no", else
    "yes" in the first four characters, else "no" there, else "other"."""
    pred = prediction.lower()
    if pred in ("yes", "no"):
        return pred
    prefix = pred[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def mme_lenient(prediction: str) -> str:
    """The earlier reading: the official parse of the stripped answer (so "  Yes" is "yes")."""
    return mme_official(prediction.strip())


def mme_lmms_eval(prediction: str) -> str:
    """lmms-eval `mme/utils.py` `parse_pred_ans`: lower, strip, drop "."; "y"/"n" alone count; else the MME prefix
    rule."""
    pred = prediction.lower().strip().replace(".", "")
    if pred in ("yes", "no"):
        return pred
    if len(pred) == 1:
        return {"y": "yes", "n": "no"}.get(pred, "other")
    return mme_official(pred)


# --- POPE --------------------------------------------------------------------------------------------------------


def pope_official(prediction: str) -> str:
    """LLaVA `eval_pope.py`: text before the first ".", commas deleted, `split(' ')`; "no" if a word is exactly
    "No", "not" or "no", else "yes" (also for "", "NO", "Nope", "no!")."""
    text = prediction
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_lenient(prediction: str) -> str:
    """The earlier reading: the official parse of the stripped answer; `""` (wrong, not a "yes") when it is empty."""
    text = prediction.strip()
    return pope_official(text) if text else ""


def pope_lmms_eval(prediction: str) -> str:
    """lmms-eval `pope/utils.py`: `pred.lower().strip()`, compared with the label as is ("yes", "no" or anything)."""
    return prediction.lower().strip()


# --- MMBench (VLMEvalKit, current) -------------------------------------------------------------------------------

REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
# VLMEvalKit matching_util.py `_VERBOSE_ANSWER_RE` (case-insensitive, no word boundary: "answer is cherry" reads C).
VERBOSE_ANSWER_RE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def option_tokens(answer: str) -> list[str]:
    """VLMEvalKit's tokens for letter matching: `. ( ) [ ] , : ; ! * # { }` to spaces, then whitespace split (the
    same in its 2024 and current `can_infer_option`)."""
    for char in ".()[],:;!*#{}":
        answer = answer.replace(char, " ")
    return [x.strip() for x in answer.split()]


def vlmevalkit_can_infer_option(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit `can_infer_option` (HEAD, `VERBOSE` unset): a letter, "Z" (refusal) or None."""
    if "Failed to obtain answer via API" in answer:
        return None
    if any(err in answer for err in REFUSALS):
        return "Z"
    splits = option_tokens(answer)
    count = sum(1 for c in choices if c in splits)
    if count == 1:
        for ch in choices:  # the one letter counts only if it first occurs among the last four tokens
            if ch in splits and splits.index(ch) > len(splits) - 5:
                return ch
    elif count == 0 and "Z" in splits:
        return "Z"
    match = VERBOSE_ANSWER_RE.search(answer or "")
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return None


def vlmevalkit_can_infer_text(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit `can_infer_text` (HEAD): gives up on an answer longer than twice the options' total length; else
    the one option whose lower-cased text occurs in the lower-cased answer."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    candidates = [k for k, v in choices.items() if str(v).lower() in answer]
    return candidates[0] if len(candidates) == 1 else None


def vlmevalkit_can_infer(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit `can_infer` (HEAD): the option rule, else the text rule."""
    answer = str(answer)
    return vlmevalkit_can_infer_option(answer, choices) or vlmevalkit_can_infer_text(answer, choices)


def lmms_eval_can_infer(answer: str, choices: Mapping[str, str]) -> str | None:
    """lmms-eval `MMBench_Evaluator.can_infer` (its prefetch, before the GPT judge): whitespace tokens; one of A-E
    alone wins unless "A" stands among more than three tokens; else one letter with the listed punctuation around
    it; else the one option whose text occurs in the answer."""
    answer = str(answer)
    letters = "ABCDE"
    if "Failed to obtain answer via API" not in answer:
        splits = [x.strip() for x in answer.split()]

        def count(prefix: str = "", suffix: str = "") -> int:
            return sum(1 for c in letters if prefix + c + suffix in splits)

        if count() == 1 and not ("A" in splits and len(splits) > 3):
            return next(c for c in letters if c in splits)
        affixes = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""))
        affixes += ((":", ","), (":", "."), (":", ")"), (":", ")."))
        for prefix, suffix in affixes:
            if count(prefix, suffix) == 1:
                return next(c for c in letters if prefix + c + suffix in splits)
    low = answer.lower()
    candidates = [k for k, v in choices.items() if str(v).lower() in low]
    return candidates[0] if len(candidates) == 1 else None


# --- SEED-Bench (generation) -------------------------------------------------------------------------------------


def seed_official(prediction: str, answer: str) -> bool:
    """LLaVA `convert_seed_for_submission.py`: right iff `row['text'] == question_data['answer']`, exactly."""
    return prediction == answer


def seed_lmms_eval(prediction: str, answer: str) -> bool:
    """lmms-eval `seedbench/utils.py`: strip, keep the first character, compare case-insensitively."""
    pred = prediction.strip()
    if len(pred) > 1:
        pred = pred[0]
    return pred.lower().strip() == answer.lower().strip()


__all__ = [
    "DEFAULT_RULES",
    "LMMS_EVAL_SOURCES",
    "RULE_SETS",
    "SOURCES",
    "benchmark_rules",
    "check_rules",
    "describe",
    "lmms_eval_can_infer",
    "mme_lenient",
    "mme_lmms_eval",
    "mme_official",
    "pope_lenient",
    "pope_lmms_eval",
    "pope_official",
    "seed_lmms_eval",
    "seed_official",
    "vlmevalkit_can_infer",
    "vlmevalkit_can_infer_option",
    "vlmevalkit_can_infer_text",
]
