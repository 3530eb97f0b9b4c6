"""The parquet/`datasets` layouts lmms-eval uses (lmms-lab/MME, POPE, MMBench, SEED-Bench), loaded from a local path.

`datasets.load_dataset(path)` reads the folder (parquet shards, or a saved `DatasetDict`); images are kept encoded.
Columns expected (as on the Hub):
- MME: question_id, image, question, answer ("Yes"/"No"), category (subtask).
- POPE: question_id, question, answer ("yes"/"no"), image_source, image, category (split).
- MMBench: index, question, hint, answer, A, B, C, D, category, image, l2-category (circular copies ≥ 1,000,000).
- SEED-Bench: question_id, question, answer, choice_a..choice_d, data_id, data_type, question_type_id, image (list).
The same scorers apply; only the source changes.
"""

from __future__ import annotations

import base64
import os

from . import mmbench, seed
from .records import BenchmarkFormatError, EvalRecord, LoadedBenchmark, skip_bad_row

COLUMNS = {
    "mme": ("question_id", "image", "question", "answer", "category"),
    "pope": ("question_id", "question", "answer", "image", "category"),
    "mmbench": ("index", "question", "answer", "image"),
    "mmbench_cn": ("index", "question", "answer", "image"),
    "seed": ("question_id", "question", "answer", "choice_a", "question_type_id", "image"),
}
SPLIT_PREFERENCE = ("test", "dev", "validation", "train")
# lmms-lab/MMBench's "test" split has no answers: score "dev" unless told otherwise.
MMBENCH_SPLIT_PREFERENCE = ("dev", "validation", "test", "train")


def is_hf_layout(path: str) -> bool:
    """True when `path` holds parquet shards or a saved `datasets` folder (and no official-layout files)."""
    if os.path.isfile(path):
        return path.endswith(".parquet")
    if not os.path.isdir(path):
        return False
    for _, _, files in os.walk(path):
        if any(f.endswith(".parquet") or f in ("dataset_dict.json", "dataset_info.json") for f in files):
            return True
    return False


def _load(path: str, split: str | None, preference: tuple[str, ...] = SPLIT_PREFERENCE):
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk  # heavy

    if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, n)) for n in ("dataset_dict.json", "state.json")):
        data = load_from_disk(path)
    elif os.path.isfile(path):
        data = load_dataset("parquet", data_files=path)
    else:
        data = load_dataset(path)
    if isinstance(data, Dataset):
        return data, "saved"
    assert isinstance(data, DatasetDict)
    if split is None:
        split = next((s for s in preference if s in data), next(iter(data)))
    if split not in data:
        raise BenchmarkFormatError(f"{path}: no split {split!r}; available: {list(data)}")
    return data[split], split


def _undecoded(dataset):
    """Cast image columns to undecoded bytes (`{"bytes", "path"}` dicts)."""
    from datasets import Image, Sequence  # heavy

    for name, feature in dataset.features.items():
        if isinstance(feature, Image):
            dataset = dataset.cast_column(name, Image(decode=False))
        elif isinstance(feature, Sequence) and isinstance(feature.feature, Image):
            dataset = dataset.cast_column(name, Sequence(Image(decode=False)))
        elif isinstance(feature, list) and feature and isinstance(feature[0], Image):
            dataset = dataset.cast_column(name, [Image(decode=False)])
    return dataset


def _image_bytes(value, source: str) -> bytes:
    if isinstance(value, list):
        if not value:
            raise BenchmarkFormatError(f"{source}: field 'image' is an empty list")
        value = value[0]
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path") and os.path.isfile(value["path"]):
            with open(value["path"], "rb") as handle:
                return handle.read()
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return base64.b64decode(value)
    raise BenchmarkFormatError(f"{source}: field 'image' holds no image ({type(value).__name__})")


def load_hf_layout(
    path: str, benchmark: str, split: str | None = None, circular: bool = True, strict: bool = True
) -> LoadedBenchmark:
    """Records of `benchmark` from an lmms-eval style parquet/`datasets` folder at `path`."""
    preference = MMBENCH_SPLIT_PREFERENCE if benchmark.startswith("mmbench") else SPLIT_PREFERENCE
    data, split_name = _load(path, split, preference)
    missing = [c for c in COLUMNS[benchmark] if c not in data.column_names]
    if missing:
        raise BenchmarkFormatError(
            f"{path} (split {split_name}): columns {data.column_names} lack {missing}; the lmms-eval layout of "
            f"{benchmark} has {list(COLUMNS[benchmark])}"
        )
    data = _undecoded(data)
    rotate = circular
    if benchmark.startswith("mmbench"):  # files with circular copies are grouped, never rotated again
        rotate = circular and all(int(float(i)) < mmbench.CIRCULAR_OFFSET for i in data["index"])
    records, skipped = [], []
    for number, row in enumerate(data):
        source = f"{path} [{split_name} row {number}]"
        if benchmark == "seed" and row.get("data_type", "image") != "image":
            skipped.append(f"{source}: data_type {row.get('data_type')!r} (video) is not evaluated")
            continue
        with skip_bad_row(strict, skipped):
            records.extend(_convert(row, benchmark, source, rotate))
    return LoadedBenchmark(benchmark, records, layout=f"lmms-eval-parquet:{split_name}", skipped=skipped)


def _convert(row: dict, benchmark: str, source: str, rotate: bool) -> list[EvalRecord]:
    if benchmark in ("mme", "pope"):
        answer = str(row["answer"]).strip().lower()
        if answer not in ("yes", "no"):
            raise BenchmarkFormatError(f"{source}: field 'answer' must be yes or no, got {row['answer']!r}")
        image = _image_bytes(row["image"], source)
        subtask = str(row["category"])
        qid = str(row["question_id"])
        image_id = qid if benchmark == "mme" else str(row.get("image_source") or qid)
        uid = f"{subtask}/{qid}" + (f"#{row['question']}" if benchmark == "mme" else "")
        return [
            EvalRecord(
                benchmark,
                uid,
                str(row["question"]),
                answer,
                subtask,
                image_bytes=image,
                image_id=image_id,
                source=source,
            )
        ]
    if benchmark in ("mmbench", "mmbench_cn"):
        fields = {k: ("" if v is None else str(v)) for k, v in row.items() if k != "image"}
        image = _image_bytes(row["image"], source)
        fields["image"] = base64.b64encode(image).decode()
        letters = [c for c in "ABCDEFGHI" if c in row]
        return mmbench._row_records(fields, letters, {}, source, benchmark, rotate)
    record = seed._record_fields(row, source)
    record.image_bytes = _image_bytes(row["image"], source)
    return [record]


__all__ = ["COLUMNS", "is_hf_layout", "load_hf_layout"]
