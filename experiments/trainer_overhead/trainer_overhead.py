"""What `mage train`'s path (MageTrainer + LlavaDataset + MageDataCollator) costs per stage-2 update against a plain
PyTorch loop over the same model, rows and batch, at the demo's shapes (issue 23: at most 1.15×).

The plain loop runs on batches collated before the clock starts (the ideal: no data work on the training thread);
the trainer loads, encodes and collates its rows as it trains (`dataloader_num_workers` 0 or 1), or, with the data
set built with `pretokenize=True`, only loads the images and collates. All use one torch thread. Blocks alternate (plain, trainer 0 workers, trainer 1 worker, plain, …) so machine load hits every variant
alike; a step's time is the wall time between consecutive optimizer steps (data loading included), the first
`--warmup` steps of each block dropped, medians over all blocks.

    python experiments/trainer_overhead/trainer_overhead.py --out experiments/trainer_overhead/results/trainer_overhead.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build(workdir: Path, n_rows: int, seed: int):
    """The demo's data (ShapeWorld, its difficulty and question mix) and its untrained tiny MAGE."""
    from mage_cli.demo_stages import DemoSettings, build_model
    from shapeworld import dataset_paths, generate_dataset

    settings = DemoSettings()
    difficulty = settings.world()
    generate_dataset(str(workdir / "data"), n_rows, 0, seed=seed, image_size=settings.image_size, difficulty=difficulty)
    paths = dataset_paths(str(workdir / "data"))
    model_path = build_model(settings, seed, workdir / "model")
    return settings, Path(paths["stage2"]), model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per block")
    parser.add_argument("--blocks", type=int, default=3, help="rounds of (plain, trainer×workers)")
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of each block")
    parser.add_argument("--workers", default="0,1", help="dataloader_num_workers values of the trainer variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the table (.md) and the numbers (.json) here")
    args = parser.parse_args()

    import torch
    from transformers import TrainerCallback

    from training.api import load_model_and_processor, training_arguments
    from training.collator import ITDM_KEYS, MageDataCollator
    from training.data import build_dataset
    from training.recipes import load_recipe
    from training.trainer import MageTrainer

    torch.set_num_threads(1)
    workers = [int(w) for w in args.workers.split(",")]
    per_block = args.steps + args.warmup
    n_rows = 32 * per_block
    with tempfile.TemporaryDirectory(prefix="trainer_overhead_") as tmp:
        settings, data, model_path = build(Path(tmp), n_rows, args.seed)
        recipe = load_recipe(
            "stage2_tiny",
            {
                "itdm_weight": settings.itdm_weight,
                "per_device_train_batch_size": 32,
                "seed": args.seed,
                "group_by_modality_length": False,
                "logging_steps": 10**6,
                "save_steps": 10**9,
            },
        )
        model, processor = load_model_and_processor(model_path, recipe)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        dataset = build_dataset(data, processor, recipe.template, recipe.max_length, seed=args.seed)
        started = time.perf_counter()
        pretokenized = build_dataset(
            data, processor, recipe.template, recipe.max_length, seed=args.seed, pretokenize=True
        )
        pretokenize_s = time.perf_counter() - started
        collator = MageDataCollator.from_processor(processor)
        batches = [collator([dataset[i] for i in range(k * 32, (k + 1) * 32)]) for k in range(per_block)]
        tokens = statistics.fmean(int(b["attention_mask"].sum()) / 32 for b in batches)
        padded = statistics.fmean(b["input_ids"].shape[1] for b in batches)

        def plain_block() -> list[float]:
            model.load_state_dict(initial)
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)
            times, last = [], time.perf_counter()
            for batch in batches:
                inputs = {k: v for k, v in batch.items() if k not in ITDM_KEYS}
                loss = model(**inputs, return_logits=False).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                now = time.perf_counter()
                times.append(now - last)
                last = now
            return times[args.warmup :]

        class StepClock(TrainerCallback):
            def __init__(self):
                self.times, self.last = [], None

            def on_step_end(self, a, state, control, **kw):
                now = time.perf_counter()
                if self.last is not None:
                    self.times.append(now - self.last)
                self.last = now

        def trainer_block(num_workers: int, train_dataset) -> list[float]:
            model.load_state_dict(initial)
            clock = StepClock()
            with tempfile.TemporaryDirectory(prefix="trainer_block_") as out:
                trainer = MageTrainer(
                    model=model,
                    args=training_arguments(
                        recipe,
                        out,
                        max_steps=per_block,
                        dataloader_num_workers=num_workers,
                        disable_tqdm=True,
                        save_strategy="no",
                        use_cpu=True,
                    ),
                    train_dataset=train_dataset,
                    data_collator=collator,
                    processing_class=processor,
                    callbacks=[clock],
                    projector_lr=recipe.projector_lr,
                    group_by_modality_length=False,
                )
                trainer.train()
            return clock.times[max(0, args.warmup - 1) :]

        variants = {"plain loop (pre-collated batches)": plain_block}
        for w in workers:
            variants[f"MageTrainer, {w} dataloader worker{'s' if w != 1 else ''}"] = lambda w=w: trainer_block(
                w, dataset
            )
        variants["MageTrainer, pretokenized, 0 dataloader workers"] = lambda: trainer_block(0, pretokenized)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.blocks):
            for name, block in variants.items():
                times[name] += block()

    plain = statistics.median(times["plain loop (pre-collated batches)"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(
            {
                "variant": name,
                "median_ms": round(1000 * median, 1),
                "steps": len(values),
                "ratio_to_plain": round(median / plain, 3),
            }
        )
    lines = [
        f"Stage-2 update at the demo's shapes (image {settings.image_size} px, Q = {settings.num_query_tokens}, "
        f"batch 32, {tokens:.0f} real / {padded:.0f} padded tokens per row), one torch thread, "
        f"{args.blocks} alternating blocks of {args.steps} timed steps:",
        "",
        "| variant | median ms / update | ratio to the plain loop | timed updates |",
        "|---|---:|---:|---:|",
        *[f"| {r['variant']} | {r['median_ms']} | {r['ratio_to_plain']:.2f} | {r['steps']} |" for r in rows],
        "",
        f"Pretokenizing the {len(pretokenized)} rows took {pretokenize_s:.1f} s "
        f"({1000 * pretokenize_s / len(pretokenized):.2f} ms per row), once, before training.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        command = "python " + " ".join(sys.argv)
        args.out.write_text(f"# Trainer overhead\n\n`{command}`\n\n{table}\n", encoding="utf-8")
        args.out.with_suffix(".json").write_text(
            json.dumps(
                {
                    "rows": rows,
                    "tokens_per_row": tokens,
                    "padded_per_row": padded,
                    "args": vars(args),
                    "pretokenize_s": pretokenize_s,
                    "n_rows": len(pretokenized),
                },
                indent=1,
                default=str,
            ),
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
