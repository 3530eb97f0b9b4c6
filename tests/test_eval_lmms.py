"""lmms-eval adapter: `--model mage` on a local POPE-format task gives the same answers as `mage eval`.

lmms-eval pins many packages, so it lives in its own environment: set MAGE_LMMS_EVAL_PYTHON to that interpreter
(default: /tmp/lmms/bin/python when present, or this interpreter if it can import lmms_eval). Skipped otherwise.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from evaluation import fixtures
from evaluation.api import evaluate
from evaluation.lmms_tasks import write_pope_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lmms_python() -> str | None:
    candidates = [os.environ.get("MAGE_LMMS_EVAL_PYTHON"), "/tmp/lmms/bin/python"]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return candidate
    return sys.executable if importlib.util.find_spec("lmms_eval") else None


@pytest.mark.slow
def test_lmms_eval_model_mage_matches_mage_eval(tiny_mage, tiny_mage_dir, tmp_path):
    python = _lmms_python()
    if python is None:
        pytest.skip("lmms-eval is not installed (set MAGE_LMMS_EVAL_PYTHON to an interpreter that has it)")
    pope = fixtures.write_pope(str(tmp_path / "pope"), questions_per_split=4, splits=("random",))
    write_pope_task(os.path.join(pope, "coco_pope_random.json"), str(tmp_path / "tasks"))
    env = dict(
        os.environ,
        PYTHONPATH=REPO,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
    )
    command = [
        python,
        "-m",
        "evaluation.lmms_eval_adapter",
        "--model",
        "mage",
        "--model_args",
        f"pretrained={tiny_mage_dir},device=cpu,dtype=float32",
        "--tasks",
        "mage_pope_local",
        "--include_path",
        str(tmp_path / "tasks"),
        "--batch_size",
        "2",
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    samples = glob.glob(str(tmp_path / "out" / "**" / "*_samples_mage_pope_local.jsonl"), recursive=True)
    assert len(samples) == 1
    theirs = [json.loads(line) for line in open(samples[0], encoding="utf-8")]
    model, processor = tiny_mage
    ours = evaluate(model, processor, "pope", pope, str(tmp_path / "ours"), batch_size=2, progress=False, plots=False)
    rows = [json.loads(line) for line in open(ours["benchmarks"]["pope"]["predictions_file"], encoding="utf-8")][1:]
    assert [r["filtered_resps"] for r in sorted(theirs, key=lambda r: r["doc_id"])] == [r["prediction"] for r in rows]
    results = glob.glob(str(tmp_path / "out" / "**" / "*results*.json"), recursive=True)
    aggregated = json.load(open(results[0], encoding="utf-8"))["results"]["mage_pope_local"]
    assert aggregated["pope_f1,none"] == pytest.approx(ours["summary"]["POPE"] / 100)


LOGLIKELIHOOD_SCRIPT = """
import json, sys
from lmms_eval.api.instance import Instance
from evaluation.lmms_eval_adapter import Mage
from evaluation.api import load_benchmark

lm = Mage(pretrained=sys.argv[1], device="cpu", dtype="float32")
records = load_benchmark("seed", sys.argv[2]).records
lm.task_dict = {"t": {"test": [{"record": r} for r in records]}}
meta = {"task": "t", "doc_id": 0, "repeats": 1}
requests = [
    Instance("loglikelihood", (r.question, " " + text, lambda d: [d["record"].load_image()], i, "t", "test"), 0,
             metadata=meta)
    for i, r in enumerate(records) for text in r.options.values()
]
print(json.dumps([[float(a), bool(b)] for a, b in lm.loglikelihood(requests)]))
"""


@pytest.mark.slow
def test_lmms_eval_loglikelihood_ranks_like_mage_eval(tiny_mage, tiny_mage_dir, tmp_path):
    """The adapter's `loglikelihood` (lmms-eval's Instance objects) gives the mean NLL our likelihood scoring ranks by.

    Run directly, not through a `multiple_choice` task: lmms-eval 0.7.3's `unwrap_generation_output` turns every
    `(loglikelihood, is_greedy)` pair into a string, so its multiple_choice scoring fails for every model (its own
    `dummy` model included).
    """
    python = _lmms_python()
    if python is None:
        pytest.skip("lmms-eval is not installed (set MAGE_LMMS_EVAL_PYTHON to an interpreter that has it)")
    seed_dir = fixtures.write_seed(str(tmp_path / "seed"), questions=4)
    script = tmp_path / "ll.py"
    script.write_text(LOGLIKELIHOOD_SCRIPT, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [python, str(script), str(tiny_mage_dir), seed_dir],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [pair[0] for pair in json.loads(done.stdout.strip().splitlines()[-1])]
    from evaluation import runner
    from evaluation.api import load_benchmark

    model, processor = tiny_mage
    records = load_benchmark("seed", seed_dir).records
    letters, scores, _ = runner.rank_batch(model, processor, records)
    ours = [-s for per_record in scores for s in per_record]
    assert losses == pytest.approx(ours, rel=1e-4, abs=1e-4)
    theirs = ["ABCD"[min(range(4), key=lambda k, i=i: losses[4 * i + k])] for i in range(len(records))]
    assert theirs == letters
