"""Writing a whole ShapeWorld folder (streamed, deterministic, with a manifest), and its per-part writers.

Layout of `generate_dataset(out_dir, ...)`::

    manifest.json                     seed, sizes, difficulty, counts, paths, SHA-256 of every file (no timestamps)
    train/images/000000.png ...       one image per training scene
    train/scenes.jsonl                ground truth: {"image", "scene"} per line
    train/stage1_captions.json        LLaVA-558K format: "<image>\\n<brief prompt>" -> caption
    train/stage2_instructions.json    LLaVA-665K format: 1-4 turns, "<image>" in the first human turn
    train/stage3_tools.json           text-only tool dialogues whose answers are plans
    eval/images/...                   held-out scenes
    eval/stage2_instructions.json     held-out instruction turns (same question types)
    eval/stage3_tools.json            held-out tool dialogues (plan metrics)
    benchmarks/MME/MME_Benchmark_release_version/<subtask>/...
    benchmarks/pope/coco_pope_{random,popular,adversarial}.json + val2014/
    benchmarks/mmbench/mmbench_dev_{en,cn}.tsv
    benchmarks/seed/SEED-Bench.json + SEED-Bench-image/
    benchmarks/ground_truth/<benchmark>.jsonl   {"index", "scene", questions/options/answer} per item, in file order

Image paths in the LLaVA files are relative to the file's folder ("images/000000.png"), so `training`'s loader finds
them with no `image_folder`. Every item has its own RNG derived from (seed, part, index): nothing touches global RNG
state and re-running with the same arguments rewrites the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator

from tqdm import tqdm

from .benchmarks import BENCHMARKS, benchmark_items, write_mmbench, write_mme, write_pope, write_seed
from .text import caption, caption_row, instruction_row
from .tools import tool_dialogue
from .world import Difficulty, ShapeWorldError, get_difficulty, item_rng, render_scene, sample_scene, scene_png

SPLITS = ("train", "eval")
FORMAT_VERSION = 1
_OWNED = ("manifest.json", "train", "eval", "benchmarks")
Progress = Callable[[int], None] | None


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ShapeWorldError(f"{name} must be a non-negative integer, got {value!r}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ShapeWorldError(f"unknown split {split!r}; choose one of {list(SPLITS)}")


class _JsonListWriter:
    """Writes a JSON list one row at a time (memory flat in the number of rows)."""

    def __init__(self, path: str):
        self.handle = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed in close()
        self.handle.write("[")
        self.rows = 0

    def add(self, row: dict) -> None:
        self.handle.write(("\n" if self.rows == 0 else ",\n") + json.dumps(row, ensure_ascii=False))
        self.rows += 1

    def close(self) -> None:
        self.handle.write("\n]\n")
        self.handle.close()


def write_llava_split(
    out_dir: str,
    split: str,
    n: int,
    seed: int,
    image_size: int = 336,
    difficulty: str | Difficulty | dict | None = None,
    progress: Progress = None,
) -> dict[str, int]:
    """Images + LLaVA-format files of one split under `out_dir/<split>/`: stage-1 captions (train only) and stage-2
    instructions. Returns `{"images": n, "stage1_rows": ..., "stage2_rows": ...}`."""
    _check_split(split)
    _check_count(f"number of {split} scenes", n)
    d = get_difficulty(difficulty)
    folder = os.path.join(out_dir, split)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    truth = open(os.path.join(folder, "scenes.jsonl"), "w", encoding="utf-8", newline="\n")  # noqa: SIM115
    captions = _JsonListWriter(os.path.join(folder, "stage1_captions.json")) if split == "train" else None
    instructions = _JsonListWriter(os.path.join(folder, "stage2_instructions.json"))
    try:
        for i in range(n):
            rng = item_rng(seed, split, i)
            scene = sample_scene(rng, d, f"{split}-{i:06d}")
            image = f"images/{i:06d}.png"
            with open(os.path.join(folder, image), "wb") as handle:
                handle.write(scene_png(scene, image_size))
            truth.write(json.dumps({"image": image, "scene": scene}) + "\n")
            if captions is not None:
                captions.add(caption_row(f"{split}-caption-{i:06d}", image, rng, scene))
            instructions.add(instruction_row(f"{split}-instruct-{i:06d}", image, rng, scene, d))
            if progress:
                progress(1)
    finally:
        truth.close()
        for writer in (captions, instructions):
            if writer is not None:
                writer.close()
    return {"images": n, "stage1_rows": n if captions is not None else 0, "stage2_rows": n}


def iter_samples(
    split: str,
    n: int,
    seed: int,
    image_size: int = 64,
    difficulty: str | Difficulty | dict | None = None,
) -> Iterator[dict]:
    """The scenes of `split` in memory, without writing files: `{"id", "image" (PIL RGB), "scene", "caption",
    "caption_conversations" (the stage-1 turns; train only, else None), "conversations" (stage-2 turns, "<image>"
    first)}` — the same scenes and turns `write_llava_split` writes for the same arguments."""
    _check_split(split)
    _check_count(f"number of {split} scenes", n)
    d = get_difficulty(difficulty)
    for i in range(n):
        rng = item_rng(seed, split, i)
        scene = sample_scene(rng, d, f"{split}-{i:06d}")
        image = f"images/{i:06d}.png"
        stage1 = caption_row("", image, rng, scene)["conversations"] if split == "train" else None  # same draws
        yield {
            "id": scene["id"],
            "image": render_scene(scene, image_size),
            "scene": scene,
            "caption": caption(scene),
            "caption_conversations": stage1,
            "conversations": instruction_row("", image, rng, scene, d)["conversations"],
        }


def dataset_paths(out_dir: str) -> dict[str, str]:
    """Absolute paths of a generated folder's parts, from its manifest ("stage1", "stage2", "stage3", "eval_stage2",
    "eval_stage3", "mme", "pope", "mmbench", "mmbench_cn", "seed")."""
    path = os.path.join(out_dir, "manifest.json")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as error:
        raise ShapeWorldError(
            f"{path}: no readable ShapeWorld manifest ({error}); run `mage data shapeworld` first"
        ) from error
    return {key: os.path.join(out_dir, rel) for key, rel in manifest["paths"].items()}


def write_tool_dialogues(
    path: str,
    split: str,
    n: int,
    seed: int,
    difficulty: str | Difficulty | dict | None = None,
    progress: Progress = None,
) -> int:
    """`n` stage-3 tool dialogues of `split` as a JSON list at `path`; returns the number of rows."""
    _check_split(split)
    _check_count(f"number of {split} tool dialogues", n)
    d = get_difficulty(difficulty)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    writer = _JsonListWriter(path)
    try:
        for i in range(n):
            writer.add(tool_dialogue(i, seed, d, split=split))
            if progress:
                progress(1)
    finally:
        writer.close()
    return n


def write_benchmarks(
    out_dir: str,
    n: int,
    seed: int,
    image_size: int = 336,
    difficulty: str | Difficulty | dict | None = None,
    benchmarks: Iterable[str] = BENCHMARKS,
    progress: Progress = None,
) -> dict[str, int]:
    """Benchmark splits under `out_dir/benchmarks/`: `n` MME images (2 questions each, spread over the subtasks),
    `n` POPE images (3 splits), `n` MMBench questions (EN + CN), `n` SEED questions. Returns question counts."""
    _check_count("number of benchmark items", n)
    d = get_difficulty(difficulty)
    root = os.path.join(out_dir, "benchmarks")
    writers = {
        "mme": ("MME", write_mme),
        "pope": ("pope", write_pope),
        "mmbench": ("mmbench", write_mmbench),
        "seed": ("seed", write_seed),
    }
    counts = {}
    for benchmark in benchmarks:
        if benchmark not in writers:
            raise ShapeWorldError(f"unknown benchmark {benchmark!r}; choose from {list(BENCHMARKS)}")
        folder, write = writers[benchmark]
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        os.makedirs(os.path.join(root, "ground_truth"), exist_ok=True)
        with open(os.path.join(root, "ground_truth", f"{benchmark}.jsonl"), "w", encoding="utf-8", newline="\n") as gt:
            items = _ticking(benchmark_items(benchmark, n, seed, d), progress, gt)
            counts[benchmark] = write(os.path.join(root, folder), items, image_size)
    return counts


def _ticking(items: Iterable[dict], progress: Progress, truth) -> Iterable[dict]:
    """Pass items through, writing each one's ground truth (item index, scene, questions) and ticking progress."""
    for index, item in enumerate(items):
        truth.write(json.dumps({"index": index, **item}, ensure_ascii=False) + "\n")
        yield item
        if progress:
            progress(1)


def _prepare(out_dir: str) -> None:
    """Create `out_dir`, or clear the parts a previous ShapeWorld run wrote there; refuse a foreign non-empty folder."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ShapeWorldError(f"--out {out_dir!r} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        manifest = os.path.join(out_dir, "manifest.json")
        try:
            with open(manifest, encoding="utf-8") as handle:
                ours = json.load(handle).get("generator") == "shapeworld"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ShapeWorldError(
                f"--out {out_dir!r} is not empty and holds no ShapeWorld manifest.json; choose an empty or new folder"
            )
        for name in _OWNED:
            path = os.path.join(out_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".shapeworld-write-test")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ShapeWorldError(f"cannot write to --out {out_dir!r}: {error.strerror or error}") from error


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(out_dir: str) -> tuple[dict[str, str], dict[str, dict]]:
    """`(files, image_folders)`: SHA-256 of every file by relative path, except that a folder holding images is
    summarised as `{"files": count, "sha256": hash of its sorted "name sha256" lines}` (its .txt files included)."""
    files, folders = {}, {}
    for root, dirs, names in os.walk(out_dir):
        dirs.sort()
        rel_root = os.path.relpath(root, out_dir).replace(os.sep, "/")
        names = sorted(n for n in names if not (rel_root == "." and n == "manifest.json"))
        digests = {name: _sha256(os.path.join(root, name)) for name in names}
        if any(name.lower().endswith((".png", ".jpg")) for name in names):
            lines = "".join(f"{name} {digest}\n" for name, digest in digests.items())
            folders[rel_root] = {"files": len(names), "sha256": hashlib.sha256(lines.encode()).hexdigest()}
        else:
            for name, digest in digests.items():
                files[name if rel_root == "." else f"{rel_root}/{name}"] = digest
    return files, folders


def generate_dataset(
    out_dir: str,
    n_train: int,
    n_eval: int,
    seed: int = 0,
    image_size: int = 336,
    difficulty: str | Difficulty | dict | None = "default",
    n_tools_train: int | None = None,
    n_tools_eval: int | None = None,
    benchmarks: Iterable[str] = BENCHMARKS,
    progress: bool | Callable[[int], None] = False,
) -> dict:
    """Write a complete ShapeWorld folder (layout in the module docstring) and return its manifest.

    `n_train` training scenes (one stage-1 and one stage-2 row each), `n_eval` held-out scenes and `n_eval` items
    per benchmark; tool dialogues default to `n_train` / `n_eval`. `progress=True` shows a progress bar on stderr
    (or pass a callable that receives increments). Same arguments -> byte-identical files.
    """
    for name, value in (("n_train", n_train), ("n_eval", n_eval), ("seed", seed), ("image_size", image_size)):
        _check_count(name, value)
    if image_size < 16:
        raise ShapeWorldError(f"image_size must be >= 16 px, got {image_size}")
    n_tools_train = n_train if n_tools_train is None else n_tools_train
    n_tools_eval = n_eval if n_tools_eval is None else n_tools_eval
    _check_count("n_tools_train", n_tools_train)
    _check_count("n_tools_eval", n_tools_eval)
    d = get_difficulty(difficulty)
    benchmarks = tuple(benchmarks)
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise ShapeWorldError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    _prepare(out_dir)
    total = n_train + n_eval + n_tools_train + n_tools_eval + n_eval * len(benchmarks)
    bar, tick = _progress(progress, total)
    try:
        train = write_llava_split(out_dir, "train", n_train, seed, image_size, d, tick)
        held_out = write_llava_split(out_dir, "eval", n_eval, seed, image_size, d, tick)
        tools_train = write_tool_dialogues(
            os.path.join(out_dir, "train", "stage3_tools.json"), "train", n_tools_train, seed, d, tick
        )
        tools_eval = write_tool_dialogues(
            os.path.join(out_dir, "eval", "stage3_tools.json"), "eval", n_tools_eval, seed, d, tick
        )
        questions = write_benchmarks(out_dir, n_eval, seed, image_size, d, benchmarks, tick)
    finally:
        if bar is not None:
            bar.close()
    files, image_folders = file_hashes(out_dir)
    manifest = {
        "generator": "shapeworld",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "image_size": image_size,
        "difficulty": d.to_dict(),
        "counts": {
            "train_scenes": train["images"],
            "stage1_rows": train["stage1_rows"],
            "stage2_rows": train["stage2_rows"],
            "eval_scenes": held_out["images"],
            "eval_stage2_rows": held_out["stage2_rows"],
            "stage3_train_rows": tools_train,
            "stage3_eval_rows": tools_eval,
            "benchmark_items": n_eval,
            "benchmark_questions": questions,
        },
        "paths": {
            "stage1": "train/stage1_captions.json",
            "stage2": "train/stage2_instructions.json",
            "stage3": "train/stage3_tools.json",
            "eval_stage2": "eval/stage2_instructions.json",
            "eval_stage3": "eval/stage3_tools.json",
            **{b: _BENCHMARK_PATHS[b] for b in benchmarks},
            **({"mmbench_cn": _BENCHMARK_PATHS["mmbench_cn"]} if "mmbench" in benchmarks else {}),
        },
        "files": files,
        "image_folders": image_folders,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8", newline="\n") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return manifest


_BENCHMARK_PATHS = {
    "mme": "benchmarks/MME",
    "pope": "benchmarks/pope",
    "mmbench": "benchmarks/mmbench/mmbench_dev_en.tsv",
    "mmbench_cn": "benchmarks/mmbench/mmbench_dev_cn.tsv",
    "seed": "benchmarks/seed",
}


def _progress(progress, total: int):
    if callable(progress):
        return None, progress
    if not progress:
        return None, None
    bar = tqdm(total=total, unit="item", desc="shapeworld", mininterval=0.5)
    return bar, bar.update


__all__ = [
    "FORMAT_VERSION",
    "dataset_paths",
    "iter_samples",
    "SPLITS",
    "file_hashes",
    "generate_dataset",
    "write_benchmarks",
    "write_llava_split",
    "write_tool_dialogues",
]
