"""Probes of token-level alignment (SEA v2's metrics plus a ground-truth retrieval accuracy), and the stage-1 SEA
measurement (ALIGNMENT_METHODS.md §1.5.5 S16):

    python -m alignment.probes --data SHAPEWORLD_DIR --projector ian --steps 150 --seeds 2

trains stage 1 (projector only, after the text-only stage 0) with `sea_weight` 0 and 1 from the same start and
reports, on held-out scenes, how often a visual token's nearest LLM word embedding is one of its ground-truth
words (chance = 1/|W| for one gold word). The number is measured and reported, never asserted as a constant.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from mage_testing.tiny import build_tiny_mage
from modeling_mage import MageForConditionalGeneration
from processing_mage import MageProcessor
from training.api import load_model_and_processor, training_arguments
from training.collator import MageDataCollator
from training.data import build_dataset
from training.objectives import AlignedMageTrainer
from training.recipes import load_recipe

from .ablate import Cell, _train_stage, corpus, stage0_language_model
from .cognition import load_images
from .sea import sea_word_features, shapeworld_patch_labels, shapeworld_words, tokenize_words
from .vlsa import TinyAutoencoder, TinyDenoiser, VLSAReconstructionObjective, reconstruction_loss, train_autoencoder


def token_word_retrieval_accuracy(visual: torch.Tensor, word_feats: torch.Tensor, gold: Sequence[set[int]]) -> float:
    """SEA v2 Eq. 4 scored against ground truth: the share of tokens (with a non-empty gold set) whose
    cosine-nearest word is gold. `visual (T, D)`, `word_feats (W, D)`, `gold` T sets of word ids."""
    nearest = (F.normalize(visual.float(), dim=-1) @ F.normalize(word_feats.float(), dim=-1).T).argmax(-1).tolist()
    scored = [(n in g) for n, g in zip(nearest, gold) if g]
    return sum(scored) / len(scored) if scored else float("nan")


def tacs(visual: torch.Tensor, text: torch.Tensor, k: int = 10) -> float:
    """SEA v2 TACS: mean over the top-k visual tokens of `max_j cos(visual_i, text_j)`."""
    best = (F.normalize(visual.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T).max(-1).values
    return float(best.topk(min(k, best.numel())).values.mean())


def modality_gap(visual: torch.Tensor, word_feats: torch.Tensor) -> float:
    """SEA v2 Eq. 5: mean over visual tokens of the L2 distance to the nearest word embedding."""
    return float(torch.cdist(visual.float(), word_feats.float()).min(-1).values.mean())


@torch.no_grad()
def measure_retrieval(model, processor, data: Path, grid: int, apply_to: str, limit: int = 60) -> float:
    """Retrieval accuracy of the tokens (`"tokens"` = projector output on a `grid` × `grid` grid, `"vab"` = the
    IAN's per-patch VAB output) on the first `limit` held-out scenes; gold = oracle words with coverage ≥ 0.5."""
    words = shapeworld_words()
    ids, mask = tokenize_words(processor.tokenizer, words)
    word_feats = sea_word_features(ids, mask, model.get_input_embeddings())
    captured = {}
    hook = None
    if apply_to == "vab":
        hook = model.multi_modal_projector.vab.register_forward_hook(lambda m, a, out: captured.update(vab=out))
    visual, gold = [], []
    with open(data / "eval" / "scenes.jsonl", encoding="utf-8") as handle:
        entries = [json.loads(line) for _, line in zip(range(limit), handle)]
    for entry in entries:
        with Image.open(data / "eval" / entry["image"]) as image:
            pixels = processor.image_processor([image.convert("RGB")], return_tensors="pt")["pixel_values"]
        tokens = model.get_image_features(pixels, return_dict=True).pooler_output[0]
        if apply_to == "vab":
            tokens = captured["vab"][0, -grid * grid :]
        label_ids, label_scores = shapeworld_patch_labels(entry["scene"], grid, words, image_size=64, top_n=3)
        for cell in range(grid * grid):
            r, c = divmod(cell, grid)
            gold.append({int(i) for i, s in zip(label_ids[r, c], label_scores[r, c]) if i >= 0 and s >= 0.5})
        visual.append(tokens[-grid * grid :])
    if hook is not None:
        hook.remove()
    return token_word_retrieval_accuracy(torch.cat(visual), word_feats, gold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a `mage data shapeworld` folder (train + eval splits)")
    parser.add_argument("--projector", default="ian")
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--apply-to", default=None, help="tokens | vab (default: vab for ian, else tokens)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--stage0-steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", default="/tmp/sea_probe")
    parser.add_argument("--out", default=None, help="write the measurements as JSON here")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    apply_to = args.apply_to or ("vab" if args.projector == "ian" else "tokens")
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    texts = corpus(data)
    results = []
    for seed in range(args.seeds):
        model, processor = build_tiny_mage(texts, image_size=64, num_query_tokens=args.queries,
                                           projector_type=args.projector, seed=seed)  # fmt: skip
        grid = 4 if apply_to == "vab" or args.projector in ("linear", "mlp2x_gelu") else math.isqrt(args.queries)
        state = stage0_language_model(work, texts, seed, args.stage0_steps, args.batch_size, 64)
        model.model.load_state_dict({k: v for k, v in state.items() if k.startswith("language_model.")}, strict=False)
        model.lm_head.load_state_dict({k[len("lm_head.") :]: v for k, v in state.items() if k.startswith("lm_head.")})
        init = work / f"init_{args.projector}_{seed}"
        model.save_pretrained(init)
        processor.save_pretrained(init)
        row = {"seed": seed, "projector": args.projector, "apply_to": apply_to}
        for objective in ("none", "sea"):
            ns = argparse.Namespace(stage1_steps=args.steps, stage2_steps=0, batch_size=args.batch_size, sea_weight=1.0,
                                    sea_temperature=0.07, sea_window=1, sea_apply_to=apply_to)  # fmt: skip
            out = work / f"{args.projector}_{objective}_{seed}"
            _train_stage(
                1,
                init,
                out,
                data / "train" / "stage1_captions.json",
                Cell(args.projector, grid * grid, objective, seed),
                ns,
            )
            trained = MageForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
            row[objective] = measure_retrieval(trained, MageProcessor.from_pretrained(out), data, grid, apply_to)
        results.append(row)
        print(json.dumps(row), flush=True)
    summary = {"rows": results, "chance_one_gold": 1 / 13, "command": "python -m alignment.probes " + " ".join(argv)}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def reconstruction_probe(data: Path, steps: int = 150, ae_steps: int = 300, seed: int = 0, batch_size: int = 8,
                         work: Path = Path("/tmp/rec_probe")) -> dict:  # fmt: skip
    """VLSA V12 (measured): stage 1 with `L_rec` through the SUBSTITUTE tiny autoencoder + denoiser, then the
    held-out L_rec with each image's own Epigone condition vs. the condition of another image (batch rolled by one).
    A lower loss with the own condition means the visual tokens carry image information into the denoiser."""
    torch.manual_seed(seed)
    train_images = sorted((data / "train" / "images").glob("*.png"))[:800]
    autoencoder = TinyAutoencoder(latent_channels=4, width=32)
    ae_losses = train_autoencoder(
        autoencoder, load_images([str(p) for p in train_images], 64), steps=ae_steps, seed=seed
    )
    model, processor = build_tiny_mage(corpus_texts(data), projector_type="ian", num_query_tokens=4, seed=seed)
    work.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(work / "init")
    processor.save_pretrained(work / "init")
    recipe = load_recipe("stage1_tiny", {"max_steps": steps, "seed": seed, "itdm_weight": 0.0, "logging_steps": max(1, steps // 5),
                                         "per_device_train_batch_size": batch_size, "group_by_modality_length": False})  # fmt: skip
    model, processor = load_model_and_processor(work / "init", recipe)
    dataset = build_dataset(
        data / "train" / "stage1_captions.json", processor, recipe.template, recipe.max_length, seed=seed
    )
    denoiser = TinyDenoiser(4, latent_size=8, ctx_dim=64, pooled_dim=32, width=64, layers=2, heads=4)
    objective = VLSAReconstructionObjective(autoencoder, denoiser, 128, 128, 64, 32, rank=32)
    trainer = AlignedMageTrainer(model=model, args=training_arguments(recipe, work / "run", save_strategy="no", disable_tqdm=True),
                                 train_dataset=dataset, data_collator=MageDataCollator.from_processor(processor),
                                 processing_class=processor, objectives={"rec": (1.0, objective)})  # fmt: skip
    trainer.train()
    logs = [entry["rec_loss"] for entry in trainer.state.log_history if "rec_loss" in entry]
    model.eval()
    objective.eval()
    eval_paths = sorted((data / "eval" / "images").glob("*.png"))[:64]
    pixels = torch.cat(
        [
            processor.image_processor([Image.open(p).convert("RGB")], return_tensors="pt")["pixel_values"]
            for p in eval_paths
        ]
    )
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        tokens = model.get_image_features(pixels, return_dict=True).pooler_output
        context, pooled = objective.epigone(tokens, tokens.mean(1))
        z0 = autoencoder.encode(pixels)
        t = torch.rand(z0.shape[0], generator=generator)
        noise = torch.randn(z0.shape, generator=generator)
        own = float(reconstruction_loss(z0, denoiser, context, pooled, t, noise))
        other = float(reconstruction_loss(z0, denoiser, context.roll(1, 0), pooled.roll(1, 0), t, noise))
    return {"ae_loss_first_last": [ae_losses[0], ae_losses[-1]], "rec_loss_logged": logs,
            "heldout_rec_loss_own_condition": own, "heldout_rec_loss_other_image_condition": other, "steps": steps,
            "seed": seed}  # fmt: skip


def corpus_texts(data: Path) -> list[str]:
    return corpus(data)
