"""`mage ablate`: the projector × query-count × alignment-objective ablation of MAGE's Table 4, on ShapeWorld.

    mage ablate --projectors linear,mlp2x_gelu,resampler,c_abstractor,ian --queries 64,144 \
        --objectives none,itdm,sea --seeds 3 --out benchmarks/results/ablation_shapeworld

Every cell (projector, query count, objective, seed) gets the same budget on the same data:

0. stage 0 (once per seed, shared by all cells): the tiny LM pre-trained text-only on the ShapeWorld captions and
   instructions, so that its word embeddings mean something (SEA's and ITDM's premise);
1. stage 1: projector only, plain template, ShapeWorld captions; loss ITG (+ITDM for `itdm`, +λ·SEA for `sea`,
   labels from the scene ground truth = the ShapeWorld oracle SUBSTITUTE for CLIP labels);
2. stage 2: projector + LM, vicuna_v1, ShapeWorld instructions; ITG (+ITDM for `itdm`; SEA is stage-1 only as in
   the paper);
3. evaluation on the ShapeWorld MME / MMBench / SEED in their official layouts (option likelihood for MMBench/SEED):
   MME position, MMBench spatial relation / object localisation / physical relation, SEED spatial relation /
   instance location and their normalised average (Avg^N, as `evaluation.report.table4`).

Stages 1 and 2 run through `training.api.train` with the `stage{1,2}_tiny` recipes and the cell's overrides (for
`sea`: `alignment_objective=sea`, `sea_label_source=shapeworld`), the same path as `mage train`.
`linear` and `mlp2x_gelu` emit one token per patch, so their query count is the patch count whatever `--queries`
says (as Table 4's "Linear 576" row). Finished cells (`cells/<name>.json`) are never re-run: the runner resumes.
Outputs: `cells/*.json`, `results.json`, `table.md` (mean ± std over seeds) and `ablation.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from evaluation.api import evaluate
from evaluation.report import table4
from inference.threads import add_threads_argument
from shapeworld.dataset import generate_dataset
from training.recipes import load_recipe

DEFAULT_PROJECTORS = "linear,mlp2x_gelu,resampler,c_abstractor,ian"
OBJECTIVES = ("none", "itdm", "sea", "itdm+sea")
TABLE4_COLUMNS = ("MME POS", "MMB SR", "MMB OL", "MMB PR", "SEED SR", "SEED IL", "Avg^N")
PER_PATCH = ("linear", "mlp2x_gelu")
PATCH = 16  # the tiny tower's patch size


@dataclass(frozen=True)
class Cell:
    projector: str
    tokens: int
    objective: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.projector}-t{self.tokens}-{self.objective.replace('+', '_')}-s{self.seed}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--projectors", default=DEFAULT_PROJECTORS, help=f"comma list (default {DEFAULT_PROJECTORS})")
    parser.add_argument("--queries", default="64,144", help="comma list of square query counts (default 64,144)")
    parser.add_argument("--objectives", default="none,itdm,sea", help=f"comma list of {list(OBJECTIVES)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    add_threads_argument(parser)
    parser.add_argument("--out", default="benchmarks/results/ablation_shapeworld", help="results folder (committed)")
    parser.add_argument(
        "--work", default=None, help="scratch folder for data and checkpoints (default OUT/../.ablation_work)"
    )
    parser.add_argument("--data", default=None, help="an existing `mage data shapeworld` folder (default: generate)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="tower input size; default: patch grid >= max query"
    )
    parser.add_argument("--n-train", type=int, default=1200, help="training scenes when generating data")
    parser.add_argument("--n-eval", type=int, default=120, help="items per benchmark when generating data")
    parser.add_argument("--difficulty", default="easy", help="ShapeWorld difficulty preset (default easy)")
    parser.add_argument("--stage0-steps", type=int, default=300)
    parser.add_argument("--stage1-steps", type=int, default=150)
    parser.add_argument("--stage2-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sea-weight", type=float, default=1.0, help="λ of SEA (paper: unstated)")
    parser.add_argument("--sea-temperature", type=float, default=0.07, help="initial τ (paper: '0', ambiguous)")
    parser.add_argument("--sea-window", type=int, default=1, help="k of the k×k sampling window on the token grid")
    parser.add_argument("--eval-limit", type=int, default=None, help="limit per benchmark (default: all items)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and exit")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def plan_cells(
    projectors: list[str], queries: list[int], objectives: list[str], seeds: int, patches: int
) -> list[Cell]:
    """The distinct cells; per-patch projectors collapse onto `patches` tokens."""
    from modeling_mage.configuration_mage import PROJECTOR_TYPES  # heavy

    for name in projectors:
        if name not in PROJECTOR_TYPES:
            raise ValueError(f"--projectors: unknown projector {name!r}; expected one of {list(PROJECTOR_TYPES)}.")
    for name in objectives:
        if name not in OBJECTIVES:
            raise ValueError(f"--objectives: unknown objective {name!r}; expected one of {list(OBJECTIVES)}.")
    for q in queries:
        if q < 1 or math.isqrt(q) ** 2 != q or q > patches:
            raise ValueError(f"--queries: {q} must be a perfect square <= the {patches} patches of the tower.")
    cells, seen = [], set()
    # seed-major: an interrupted run has every projector × objective for the first seeds
    for seed in range(seeds):
        for q in queries:
            for objective in objectives:
                for projector in projectors:
                    cell = Cell(projector, patches if projector in PER_PATCH else q, objective, seed)
                    if cell not in seen:
                        seen.add(cell)
                        cells.append(cell)
    return cells


# ------------------------------------------------------------------------------------------------------- data
def ensure_data(args, work: Path, image_size: int) -> Path:
    if args.data:
        return Path(args.data)
    data = work / f"shapeworld_{image_size}px_{args.difficulty}_{args.n_train}_{args.n_eval}"
    if not (data / "manifest.json").is_file():
        generate_dataset(str(data), args.n_train, args.n_eval, seed=0, image_size=image_size, difficulty=args.difficulty,
                         n_tools_train=0, n_tools_eval=0, benchmarks=("mme", "mmbench", "seed"))  # fmt: skip
    return data


def corpus(data: Path) -> list[str]:
    """Every caption, question and answer of the training data (tokenizer and stage-0 text)."""
    texts = []
    for name in ("stage1_captions.json", "stage2_instructions.json"):
        for row in json.loads((data / "train" / name).read_text(encoding="utf-8")):
            texts += [turn["value"].replace("<image>", "").strip() for turn in row["conversations"]]
    return texts


# ---------------------------------------------------------------------------------------------------- stage 0
def stage0_language_model(work: Path, texts: list[str], seed: int, steps: int, batch_size: int, image_size: int):
    """Text-only LM pre-training on ShapeWorld text; returns the LM + head state dict (cached per seed)."""
    import torch  # heavy
    from safetensors.torch import load_file, save_file  # heavy

    from mage_testing.tiny import build_tiny_mage  # heavy

    path = work / f"stage0_seed{seed}_{steps}.safetensors"
    if path.is_file():
        return load_file(str(path))
    model, processor = build_tiny_mage(texts, image_size=image_size, projector_type="linear", seed=seed)
    tokenizer = processor.tokenizer
    generator = torch.Generator().manual_seed(seed)
    params = list(model.model.language_model.parameters()) + list(model.lm_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=2e-3)
    model.train()
    for _ in range(steps):
        batch = [
            texts[int(i)] + tokenizer.eos_token
            for i in torch.randint(0, len(texts), (batch_size,), generator=generator)
        ]
        enc = tokenizer(batch, return_tensors="pt", padding=True, padding_side="right", truncation=True, max_length=96)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = {f"language_model.{k}": v.contiguous() for k, v in model.model.language_model.state_dict().items()}
    state.update({f"lm_head.{k}": v.contiguous() for k, v in model.lm_head.state_dict().items()})
    save_file(state, str(path))
    return state


# -------------------------------------------------------------------------------------------------- one cell
def _train_stage(stage: int, model_dir: Path, out_dir: Path, rows: Path, cell: Cell, args) -> dict:
    """One stage of one cell through `training.api.train` (the path of `mage train`); SEA in stage 1 for `sea`
    cells, with the ShapeWorld oracle labels (SUBSTITUTE) read from the data's `scenes.jsonl`."""
    from training.api import REPORT_FILE, train  # heavy

    from . import recipe as _alignment_recipe  # heavy  # noqa: F401 - registers alignment_objective="sea" with training/

    steps = args.stage1_steps if stage == 1 else args.stage2_steps
    overrides = {"max_steps": steps, "seed": cell.seed, "itdm_weight": 1.0 if "itdm" in cell.objective else 0.0,
                 "per_device_train_batch_size": args.batch_size, "save_steps": 10**9,
                 "logging_steps": max(1, steps // 5), "group_by_modality_length": False}  # fmt: skip
    if stage == 1 and "sea" in cell.objective:
        overrides.update(alignment_objective="sea", sea_label_source="shapeworld", sea_weight=args.sea_weight,
                         sea_temperature=args.sea_temperature, sea_window=args.sea_window,
                         sea_apply_to=getattr(args, "sea_apply_to", "tokens"))  # fmt: skip
    recipe = load_recipe(f"stage{stage}_tiny", overrides)
    # the cell's own scratch folders (a rerun of the probes replaces its earlier one)
    train(recipe, model_dir, rows, out_dir, save_strategy="no", disable_tqdm=True, overwrite=True)
    report = json.loads((out_dir / REPORT_FILE).read_text(encoding="utf-8"))
    return {"first_log": report["first_log"], "last_log": report["last_log"]}


def run_cell(cell: Cell, args, data: Path, work: Path, image_size: int, texts: list[str]) -> dict:
    import torch  # heavy

    from mage_testing.tiny import build_tiny_mage  # heavy

    start = time.time()
    cell_dir = work / "cells" / cell.name
    if cell_dir.exists():
        shutil.rmtree(cell_dir)
    q = cell.tokens if cell.projector not in PER_PATCH else 4
    model, processor = build_tiny_mage(
        texts, image_size=image_size, num_query_tokens=q, projector_type=cell.projector, seed=cell.seed
    )
    state = stage0_language_model(work, texts, cell.seed, args.stage0_steps, args.batch_size, image_size)
    missing, unexpected = model.model.load_state_dict(
        {k: v for k, v in state.items() if k.startswith("language_model.")}, strict=False
    )
    assert not unexpected, unexpected
    model.lm_head.load_state_dict({k[len("lm_head.") :]: v for k, v in state.items() if k.startswith("lm_head.")})
    model.save_pretrained(cell_dir / "init")
    processor.save_pretrained(cell_dir / "init")
    logs = {
        "stage1": _train_stage(
            1, cell_dir / "init", cell_dir / "stage1", data / "train" / "stage1_captions.json", cell, args
        ),
        "stage2": _train_stage(
            2, cell_dir / "stage1", cell_dir / "stage2", data / "train" / "stage2_instructions.json", cell, args
        ),
    }
    from modeling_mage import MageForConditionalGeneration  # heavy
    from processing_mage import MageProcessor  # heavy

    model = MageForConditionalGeneration.from_pretrained(cell_dir / "stage2", dtype=torch.float32).eval()
    processor = MageProcessor.from_pretrained(cell_dir / "stage2")
    benchmarks = {}
    for name, folder in (("mme", "MME"), ("mmbench", "mmbench"), ("seed", "seed")):
        result = evaluate(model, processor, name, str(data / "benchmarks" / folder), str(cell_dir / "eval" / name),
                          batch_size=16, limit=args.eval_limit, scoring="likelihood", progress=False, plots=False)  # fmt: skip
        benchmarks[name] = result["benchmarks"][name]
    record = {**asdict(cell), "name": cell.name, "image_size": image_size, "table4": table4(benchmarks),
              "logs": logs, "seconds": round(time.time() - start, 1)}  # fmt: skip
    shutil.rmtree(cell_dir, ignore_errors=True)  # checkpoints are scratch; the record is the result
    return record


# ----------------------------------------------------------------------------------------------- aggregation
def aggregate(records: list[dict]) -> list[dict]:
    """Mean and sample std over seeds per (projector, tokens, objective)."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["projector"], record["tokens"], record["objective"]), []).append(record)
    rows = []
    for (projector, tokens, objective), items in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        row = {"projector": projector, "tokens": tokens, "objective": objective, "seeds": len(items)}
        for column in TABLE4_COLUMNS:
            values = [item["table4"][column] for item in items if column in item["table4"]]
            if values:
                mean = sum(values) / len(values)
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
                row[column] = {"mean": mean, "std": std, "n": len(values)}
        rows.append(row)
    return rows


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Projector × objective ablation on ShapeWorld (MAGE Table 4 layout)",
        "",
        f"Command: `{command}`",
        "",
        "Mean ± sample std over seeds. MME POS is out of 200, the rest are accuracies in %; Avg^N normalises each "
        "column by its maximum (`evaluation.report.table4`). Tiny random-initialised models trained on CPU: compare "
        "rows with each other, never with the paper's numbers.",
        "",
        "| projector | #tokens | objective | seeds | " + " | ".join(TABLE4_COLUMNS) + " |",
        "|---|---|---|---|" + "---|" * len(TABLE4_COLUMNS),
    ]
    for row in rows:
        cells = [f"{row[c]['mean']:.1f} ± {row[c]['std']:.1f}" if c in row else "–" for c in TABLE4_COLUMNS]
        lines.append(
            f"| {row['projector']} | {row['tokens']} | {row['objective']} | {row['seeds']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # heavy

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy

    labels = [f"{r['projector']}\n{r['tokens']}t {r['objective']}" for r in rows if "Avg^N" in r]
    means = [r["Avg^N"]["mean"] for r in rows if "Avg^N" in r]
    stds = [r["Avg^N"]["std"] for r in rows if "Avg^N" in r]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels)), 4))
    ax.bar(range(len(labels)), means, yerr=stds, capsize=3)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("Avg^N (Table-4 spatial tasks)")
    ax.set_title("ShapeWorld projector ablation (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, records: list[dict], command: str) -> list[dict]:
    rows = aggregate(records)
    (out / "results.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1), encoding="utf-8")
    (out / "table.md").write_text(markdown(rows, command), encoding="utf-8")
    if rows:
        plot(rows, out / "ablation.png")
    return rows


# Settings every cell of one results folder must share (the grid itself may grow between runs).
CELL_SETTINGS = ("image_size", "data", "n_train", "n_eval", "difficulty", "stage0_steps", "stage1_steps", "stage2_steps",
                 "batch_size", "sea_weight", "sea_temperature", "sea_window", "eval_limit")  # fmt: skip


def check_settings(out: Path, args: argparse.Namespace) -> bool:
    """Write `out/settings.json`, or refuse (False, message on stderr) when it holds different cell settings: a resumed
    run must not mix cells trained with another budget."""
    settings = {key: getattr(args, key) for key in CELL_SETTINGS}
    path = out / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if changed:
            print(f"mage ablate: {out} holds cells made with other settings {changed} (old, new); use another --out.",
                  file=sys.stderr)  # fmt: skip
            return False
    path.write_text(json.dumps(settings, indent=1), encoding="utf-8")
    return True


def _command(args: argparse.Namespace) -> str:
    """The equivalent `mage ablate` command line (flags with non-default values)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    parts = ["mage ablate"]
    for key, value in vars(args).items():
        if key in defaults and value != defaults[key] and key not in ("work", "dry_run"):
            parts.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    import torch  # heavy

    torch.set_num_threads(args.threads)

    queries = [int(q) for q in _csv(args.queries)]
    image_size = args.image_size or max(64, PATCH * math.ceil(math.sqrt(max(queries))))
    patches = (image_size // PATCH) ** 2
    try:
        cells = plan_cells(_csv(args.projectors), queries, _csv(args.objectives), args.seeds, patches)
    except ValueError as error:
        print(f"mage ablate: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    work = Path(args.work) if args.work else out.parent / ".ablation_work"
    if args.dry_run:
        for cell in cells:
            print(cell.name)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "cells").mkdir(exist_ok=True)
    if not check_settings(out, args):
        return 2
    work.mkdir(parents=True, exist_ok=True)
    command = _command(args)
    data = ensure_data(args, work, image_size)
    texts = corpus(data)
    records = []
    for index, cell in enumerate(cells):
        path = out / "cells" / f"{cell.name}.json"
        if path.is_file():
            records.append(json.loads(path.read_text(encoding="utf-8")))
            continue
        print(f"[{index + 1}/{len(cells)}] {cell.name}", flush=True)
        record = run_cell(cell, args, data, work, image_size, texts)
        path.write_text(json.dumps(record, indent=1), encoding="utf-8")
        records.append(record)
        write_outputs(out, records, command)
    write_outputs(out, records, command)
    print((out / "table.md").read_text(encoding="utf-8"))
    return 0


__all__ = ["Cell", "plan_cells", "aggregate", "markdown", "add_arguments", "run", "run_cell"]
