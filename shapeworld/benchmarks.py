"""Benchmark splits in the official file layouts: MME, POPE, MMBench (EN + CN), SEED-Bench (image dimensions).

Items are built "question first": the asked value (count, colour, side, word, ...) is drawn uniformly, then a scene is
made that satisfies it, and the wrong value of a yes/no pair is drawn uniformly from the other values. So every
question string is as likely to be answered "yes" as "no", option letters are uniform (a shuffled A-D block per four
questions), and no answer can be read from the text alone. The item builders, one per benchmark family, are in
shapeworld/benchmark_questions.py (re-exported here); this module numbers and seeds them (`benchmark_items`), gives
the texts a model is prompted with (`prompt_texts`) and writes the files.

Layouts written (each loader of the real data reads them unchanged):

- MME: `MME_Benchmark_release_version/<subtask>/<stem>.png` + `<stem>.txt` side by side (the release's layout for
  existence, count, position, color, OCR and numerical_calculation); each `.txt` holds two lines
  `question<TAB>Yes` then `question<TAB>No`, questions ending in " Please answer yes or no.".
- POPE: `coco_pope_{random,popular,adversarial}.json` (one JSON object per line: question_id, image, text, label)
  + `val2014/<image>`; the same images and positives in all three splits; negatives drawn uniformly among the absent
  objects (random), in proportion to their frequency in the split (popular: POPE takes the top-k of the frequency
  ranking, which in a world of equally frequent objects would ask the same few objects as negatives in every image and
  make "no" readable from the question alone), or among the absent objects that share a shape or colour with a present
  one, in proportion to their co-occurrence with the present ones (adversarial; POPE again takes the top-k, with the
  same leak).
- MMBench: `mmbench_dev_en.tsv` and `mmbench_dev_cn.tsv` (same index, image and answer; CN = translated templates),
  columns index, question, hint, A, B, C, D, answer, category, image (base64 PNG), source, l2-category, comment, split.
- SEED-Bench: `SEED-Bench.json` {"questions": [...], "question_type": {name: id}} + `SEED-Bench-image/<data_id>`.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections import Counter
from collections.abc import Iterator

from .benchmark_questions import (
    MMBENCH_CATEGORIES,
    MME_SUBTASKS,
    POPE_SPLITS,
    SEED_DIMENSIONS,
    SEED_USED,
    mmbench_item,
    mme_item,
    pope_items,
    seed_dimension_has_four_options,
    seed_item,
)
from .text import LLAVA_LETTER_SUFFIX, LLAVA_LETTER_SUFFIX_CN, LLAVA_SHORT_SUFFIX, MME_SUFFIX, options_block
from .world import Difficulty, ShapeWorldError, item_rng, scene_png

BENCHMARKS = ("mme", "pope", "mmbench", "seed")
HINT_EN = "The image shows shapes on a grey background."
HINT_CN = "图像中是灰色背景上的形状。"

# ---------------------------------------------------------------- item streams


def _letter_slot(seed: int, part: str, index: int, n_options: int) -> int:
    block = random.Random(f"shapeworld:{seed}:{part}:letters:{index // 4}").sample(range(4), 4)
    return block[index % 4] % n_options


def benchmark_items(benchmark: str, n: int, seed: int, difficulty: Difficulty) -> Iterator[dict] | list[dict]:
    """The first `n` items of `benchmark` ("mme" images, "pope" images, "mmbench" or "seed" questions), no pixels."""
    if benchmark not in BENCHMARKS:
        raise ShapeWorldError(f"unknown benchmark {benchmark!r}; choose one of {list(BENCHMARKS)}")
    if n < 0:
        raise ShapeWorldError(f"number of {benchmark} items must be >= 0, got {n}")
    if benchmark == "pope":
        return pope_items(n, seed, difficulty)
    return _stream(benchmark, n, seed, difficulty)


def _stream(benchmark: str, n: int, seed: int, d: Difficulty) -> Iterator[dict]:
    for i in range(n):
        rng = item_rng(seed, benchmark, i)
        scene_id = f"{benchmark}-{i:06d}"
        if benchmark == "mme":
            yield mme_item(rng, d, scene_id, MME_SUBTASKS[i % len(MME_SUBTASKS)])
        elif benchmark == "mmbench":
            category = list(MMBENCH_CATEGORIES)[i % len(MMBENCH_CATEGORIES)]
            item = mmbench_item(rng, d, scene_id, category, _letter_slot(seed, benchmark, i, 4))
            item["category"] = category
            yield item
        else:
            dimension = SEED_USED[i % len(SEED_USED)]
            if not seed_dimension_has_four_options(dimension, d):
                dimension = 4  # SEED questions always have four choices; location has nine candidates
            yield seed_item(rng, d, scene_id, dimension, _letter_slot(seed, benchmark, i, 4))


def prompt_texts(benchmark: str, item: dict) -> Iterator[str]:
    """The texts a model sees and answers for one item, as LLaVA-1.5 prompts them (for the tokenizer corpus)."""
    if benchmark in ("mme", "pope"):
        questions = item["questions"] if benchmark == "mme" else [q for qs in item["splits"].values() for q in qs]
        for q in questions:
            yield q["question"]
            yield q["question"].replace(MME_SUFFIX, "") + LLAVA_SHORT_SUFFIX
            yield q["answer"].capitalize()
        return
    yield item["question"] + "\n" + options_block(item["options"]) + LLAVA_LETTER_SUFFIX
    yield from item["options"]
    yield item["answer"]
    if "question_cn" in item:
        yield HINT_CN + "\n" + item["question_cn"] + "\n" + options_block(item["options_cn"]) + LLAVA_LETTER_SUFFIX_CN
        yield HINT_EN


# ---------------------------------------------------------------- writers


def _write_png(path: str, scene: dict, image_size: int) -> bytes:
    data = scene_png(scene, image_size)
    with open(path, "wb") as handle:
        handle.write(data)
    return data


def write_mme(root: str, items, image_size: int) -> int:
    """MME release layout under `root/MME_Benchmark_release_version`; returns the number of questions."""
    base = os.path.join(root, "MME_Benchmark_release_version")
    count = 0
    for index, item in enumerate(items):
        folder = os.path.join(base, item["subtask"])
        os.makedirs(folder, exist_ok=True)
        stem = f"{index:06d}"
        _write_png(os.path.join(folder, stem + ".png"), item["scene"], image_size)
        with open(os.path.join(folder, stem + ".txt"), "w", encoding="utf-8", newline="\n") as handle:
            for q in item["questions"]:
                handle.write(f"{q['question']}\t{q['answer'].capitalize()}\n")
                count += 1
    return count


def write_pope(root: str, items, image_size: int) -> int:
    """`coco_pope_<split>.json` (JSON lines) + `val2014/`; returns the number of questions over all splits."""
    image_dir = os.path.join(root, "val2014")
    os.makedirs(image_dir, exist_ok=True)
    handles = {
        s: open(os.path.join(root, f"coco_pope_{s}.json"), "w", encoding="utf-8", newline="\n") for s in POPE_SPLITS
    }
    ids, count = Counter(), 0
    try:
        for index, item in enumerate(items):
            image = f"COCO_val2014_{index:012d}.png"
            _write_png(os.path.join(image_dir, image), item["scene"], image_size)
            for split in POPE_SPLITS:
                for q in item["splits"][split]:
                    ids[split] += 1
                    row = {"question_id": ids[split], "image": image, "text": q["question"], "label": q["answer"]}
                    handles[split].write(json.dumps(row) + "\n")
                    count += 1
    finally:
        for handle in handles.values():
            handle.close()
    return count


MMBENCH_COLUMNS = (
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
)


def _tsv_field(value: str, where: str) -> str:
    if "\t" in value or "\n" in value or "\r" in value:
        raise ShapeWorldError(f"{where}: a TSV field cannot contain tabs or newlines: {value!r}")
    return value


def write_mmbench(folder: str, items, image_size: int) -> int:
    """`mmbench_dev_en.tsv` + `mmbench_dev_cn.tsv` in `folder`; returns the number of questions per file."""
    os.makedirs(folder, exist_ok=True)
    paths = {lang: os.path.join(folder, f"mmbench_dev_{lang}.tsv") for lang in ("en", "cn")}
    handles = {lang: open(path, "w", encoding="utf-8", newline="") for lang, path in paths.items()}
    count = 0
    try:
        for handle in handles.values():
            handle.write("\t".join(MMBENCH_COLUMNS) + "\n")
        for index, item in enumerate(items):
            image = base64.b64encode(scene_png(item["scene"], image_size)).decode("ascii")
            with_hint = index % 3 == 2
            for lang, handle in handles.items():
                options = item["options"] if lang == "en" else item["options_cn"]
                options = list(options) + [""] * (4 - len(options))
                row = {
                    "index": str(index),
                    "question": item["question"] if lang == "en" else item["question_cn"],
                    "hint": (HINT_EN if lang == "en" else HINT_CN) if with_hint else "",
                    **dict(zip("ABCD", options)),
                    "answer": item["answer"],
                    "category": item["category"],
                    "image": image,
                    "source": "shapeworld",
                    "l2-category": MMBENCH_CATEGORIES[item["category"]],
                    "comment": "",
                    "split": "dev",
                }
                fields = [_tsv_field(row[c], f"{paths[lang]} row {index} column {c}") for c in MMBENCH_COLUMNS]
                handle.write("\t".join(fields) + "\n")
            count += 1
    finally:
        for handle in handles.values():
            handle.close()
    return count


def write_seed(root: str, items, image_size: int) -> int:
    """`SEED-Bench.json` + `SEED-Bench-image/`; returns the number of questions."""
    image_dir = os.path.join(root, "SEED-Bench-image")
    os.makedirs(image_dir, exist_ok=True)
    questions = []
    for index, item in enumerate(items):
        data_id = f"shapeworld_{index:06d}.png"
        _write_png(os.path.join(image_dir, data_id), item["scene"], image_size)
        options = list(item["options"]) + [""] * (4 - len(item["options"]))
        questions.append(
            {
                "answer": item["answer"],
                **{f"choice_{c}": options[k] for k, c in enumerate("abcd")},
                "data_id": data_id,
                "data_type": "image",
                "question": item["question"],
                "question_id": str(index),
                "question_type_id": item["dimension"],
            }
        )
    with open(os.path.join(root, "SEED-Bench.json"), "w", encoding="utf-8", newline="\n") as handle:
        json.dump({"questions": questions, "question_type": SEED_DIMENSIONS}, handle, ensure_ascii=False, indent=1)
    return len(questions)


__all__ = [
    "BENCHMARKS",
    "MMBENCH_CATEGORIES",
    "MMBENCH_COLUMNS",
    "MME_SUBTASKS",
    "POPE_SPLITS",
    "SEED_DIMENSIONS",
    "SEED_USED",
    "benchmark_items",
    "mmbench_item",
    "mme_item",
    "pope_items",
    "prompt_texts",
    "seed_item",
    "write_mmbench",
    "write_mme",
    "write_pope",
    "write_seed",
]
