"""The demo-learning ladder: from the known-good tiny LLaVA toward the demo, one factor at a time (issue 23).

One run = one rung × one seed, counted in optimizer updates with one torch thread:

  S0  text-only LM on captions + QA text               (plain loop, as the reference; cached per seed/template)
  SC  CLIP-style contrastive pretraining of the tower  (plain loop, as the reference; cached with S0)
  S1  projector only on captions                       (--path plain: the reference loop on transformers' LLaVA;
  S2  projector + LLM on single questions               --path trainer: `training.api.train`, i.e. `mage train`'s
                                                         MageTrainer + LlavaDataset + MageDataCollator + processor)

The world, tower, LM sizes, batch, optimiser (AdamW betas 0.9/0.98, no decay, clip 1.0, 3 % warm-up, cosine) and
the evaluation are the reference's (`../shared/reference/tiny_llava/`, its `shapes.py` copied as `ref_shapes.py`).
Evaluation: held-out scenes, 400 questions per type, greedy (teacher-forced argmax) match of the answer's tokens
(one token for every word-level answer: the argmax at the last prompt position, as the reference),
with the real image and with a blank one.

Factors (each rung changes one): --path, --projector (mlp | ian) with --q, --template (ref | vicuna), --itdm.

    python experiments/demo_ladder/ladder.py --seed 0 --path trainer --projector mlp --out experiments/demo_ladder/results
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE.parent / "perception_probe"))

import ref_shapes as S  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SPECIALS = S.SPECIALS  # <pad> <unk> <image> <s> </s> = ids 0..4
PAD, UNK, IMG, BOS, EOS = range(5)
SHORT_SYSTEM_PROMPT = "A chat about a picture of shapes."  # the demo's


# ---------------------------------------------------------------------------------------------------------- worlds
PROJECT_QUESTIONS = {"exist": "_q_exists", "colour": "_q_colour", "count": "_q_count_shape", "position": "_q_relation"}


def make_project_dataset(
    n: int,
    seed: int,
    image_size: int,
    qtypes,
    difficulty: str = "easy",
    near_negatives: bool = False,
    scene_first: bool = False,
    cross_negatives: bool = False,
):
    """The project's ShapeWorld (`shapeworld.world` scenes and renderer, `shapeworld.text` captions and question
    phrasings) in the reference's shape: one question per example, types in turn; `position` is the relation
    question ("Is the X to the left of the Y?"). Returns (examples, uint8 images (n, 3, H, W), blank image)."""
    import numpy as np

    from shapeworld import text as T
    from shapeworld.world import get_difficulty, item_rng, render_scene, sample_scene

    d = get_difficulty(difficulty)
    exs, imgs = [], []
    for i in range(n):
        qtype = qtypes[i % len(qtypes)]
        rng = item_rng(seed, "ladder", i)
        turn = 0
        scene = sample_scene(rng, d, f"s{i}")
        while True:
            if qtype == "exist" and (near_negatives or cross_negatives):  # POPE's popular/adversarial kind of "No"
                kind = "cross" if cross_negatives else "near"
                made = (*T.existence_question(rng, scene, d, negatives=kind), "yesno")
            else:
                made = getattr(T, PROJECT_QUESTIONS[qtype])(rng, scene, d)
            if made is not None:
                break
            if scene_first:  # the demo's way: the scene stays, the next question type that applies is asked
                turn += 1
                qtype = qtypes[(i + turn) % len(qtypes)]
            else:  # the reference's way: a new scene until the question applies
                scene = sample_scene(rng, d, f"s{i}")
        question, answer, _ = made
        exs.append(
            {"caption": T.caption(scene), "question": question, "answer": answer, "qtype": qtype, "scene": scene}
        )
        imgs.append(np.asarray(render_scene(scene, image_size)))
    blank = np.asarray(render_scene({"objects": [], "label": None, "marks": []}, image_size))
    images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # (n, 3, H, W) as the reference's
    return exs, images, torch.from_numpy(blank).permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------------------------------------------ templates
def ref_chat_template() -> str:
    """The reference's row `<s> <image>×Q question : … ? answer : X </s>` as a chat template: the user turn renders
    `<image> question : q`, the generation prompt ` answer :`, the assistant ` X </s>`."""
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- for item in message['content'] if item['type'] == 'image' -%}{{- '<image>' -}}{%- endfor -%}"
        "{{- ' question : ' + (message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text')"
        " | join(' ')) -}}"
        "{%- else -%}"
        "{{- ' answer : ' + (message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text')"
        " | join(' ')) + ' </s>' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- ' answer :' -}}{%- endif -%}"
    )


def chat_template(name: str) -> str:
    from processing_mage import vicuna_v1_chat_template

    return ref_chat_template() if name == "ref" else vicuna_v1_chat_template(SHORT_SYSTEM_PROMPT)


def render_qa(template: str, question: str, answer: str | None, image: bool = True) -> str:
    """The text of one QA row (answer None: the prompt up to the generation prompt), for S0 and the tokenizer."""
    user = {"role": "user", "content": ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]}
    messages = [user] + ([{"role": "assistant", "content": [{"type": "text", "text": answer}]}] if answer else [])
    return compiled_template(template).render(messages=messages, add_generation_prompt=answer is None)


@functools.lru_cache
def compiled_template(name: str):
    from jinja2 import Template

    return Template(chat_template(name))


# ---------------------------------------------------------------------------------------------------------- setup
def build_tokenizer(texts, kind: str = "word"):
    """The reference's word-level tokenizer (`kind="word"`), or the demo's byte-level BPE of 2,000 tokens
    (`mage_testing.tiny.train_tokenizer`'s settings, `"bpe"`), as a `PreTrainedTokenizerFast` that adds BOS; the
    special tokens keep the reference's ids 0..4 either way."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    if kind == "word":
        tok = S.build_tokenizer(texts)
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=2000,
            special_tokens=SPECIALS,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<image>"],
        model_max_length=512,
    )


def pix(u8: torch.Tensor) -> torch.Tensor:
    return (u8.float() / 255.0 - 0.5) / 0.5


def pad_batch(seqs, labs):
    L = max(len(s) for s in seqs)
    x = torch.full((len(seqs), L), PAD)
    y = torch.full((len(seqs), L), -100)
    m = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs)):
        x[i, : len(s)] = torch.tensor(s)
        y[i, : len(lab)] = torch.tensor(lab)
        m[i, : len(s)] = 1
    return x, y, m


def lr_at(base: float, frac: float) -> float:
    """The reference's schedule: 3 % warm-up, cosine to 5 %."""
    return base * min(1.0, frac / 0.03 + 0.01) * (0.5 * (1 + math.cos(math.pi * frac)) * 0.95 + 0.05)


def plain_loop(name, steps, lr, step_fn, params, n, bs, log, record, on_step=None):
    """The reference's training loop, counted in optimizer steps."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    t0, losses, paused = time.time(), [], 0.0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(lr, step / steps)
        loss = step_fn(random.sample(range(n), bs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 500 == 0:
            log(f"{name} step {step + 1} loss {sum(losses[-100:]) / 100:.4f}")
        if on_step is not None:
            t = time.time()
            on_step(step + 1)
            paused += time.time() - t  # evaluation does not count as training time
    wall = time.time() - t0 - paused
    record[name] = {
        "steps": steps,
        "wall_s": round(wall, 1),
        "steps_per_s": round(steps / wall, 2),
        "loss_first100": round(sum(losses[:100]) / max(1, len(losses[:100])), 4),
        "loss_last100": round(sum(losses[-100:]) / max(1, len(losses[-100:])), 4),
    }
    log(name, record[name])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--path", choices=("plain", "trainer"), default="trainer")
    p.add_argument("--projector", choices=("mlp", "ian", "vab"), default="mlp", help="vab: the IAN without its SEB")
    p.add_argument("--q", type=int, default=16, help="IAN query tokens (a square <= 16 patches)")
    p.add_argument("--template", choices=("ref", "vicuna"), default="ref")
    p.add_argument("--world", choices=("ref", "project"), default="ref", help="the reference's shapes or ShapeWorld")
    p.add_argument("--tokenizer", choices=("word", "bpe"), default="word", help="word-level or the demo's BPE")
    p.add_argument("--image-size", type=int, default=64, help="pixels (patch 16): 64 = 4x4 patches, 48 = 3x3")
    p.add_argument("--itdm", type=float, default=0.0, help="ITDM weight (trainer path) in the stages of --itdm-stages")
    p.add_argument("--itdm-source", choices=("hidden", "embeddings"), default="hidden")
    p.add_argument("--itdm-stages", choices=("1,2", "2"), default="1,2", help="the stages --itdm applies to")
    p.add_argument("--seb-query-source", choices=("pixels", "features"), default="pixels", help="IAN: SEB queries from")
    p.add_argument(
        "--seb-vab-residual",
        action="store_true",
        help="IAN (experiment, patched in this process only): the VAB output, average-pooled onto the query grid, "
        "added to the SEB queries before they cross-attend",
    )
    p.add_argument(
        "--seb-gated",
        action="store_true",
        help="IAN (experiment, patched in this process only): the SEB's residual stream starts from the VAB output "
        "pooled onto the query grid; the CNN queries (+ positions) enter only the attention's query input; the "
        "attention and MLP branches are added through tanh gates that start at 0 (the IAN starts as the pooled VAB)",
    )
    p.add_argument(
        "--seb-parts",
        default=None,
        help="IAN (experiment): the SEB's stream is the pooled VAB, and it adds only these parts, '+'-joined from "
        "attn, cnn, mlp (e.g. attn, cnn+attn); ungated unless --seb-gated",
    )
    p.add_argument(
        "--zero-query-proj",
        action="store_true",
        help="IAN: start the query CNN's output projection at zero (the VAB path alone at first)",
    )
    p.add_argument("--seb-heads", type=int, default=4, help="IAN: SEB attention heads (the demo's 4)")
    p.add_argument(
        "--seb-bias",
        choices=("gaussian", "cell", "none"),
        default="gaussian",
        help="IAN: MageConfig.seb_attention_bias (cell: each query reads only the patches inside its cell)",
    )
    p.add_argument(
        "--seb-output-norm", action="store_true", help="IAN: MageConfig.seb_output_norm (a LayerNorm on the SEB output)"
    )
    p.add_argument(
        "--exist-train",
        choices=("random", "near", "cross"),
        default="random",
        help="project world: existence negatives in training (near: sharing a shape or colour with a present object; "
        "cross: its colour and its shape both present on other objects when the scene allows, else near)",
    )
    p.add_argument("--exist-eval", choices=("random", "near"), default="random", help="the same for the held-out set")
    p.add_argument(
        "--stage0-from",
        type=Path,
        default=None,
        help="trainer path: start S1 from this MAGE checkpoint (its LM, tower, projector, tokenizer and processor; "
        "the demo's stage 0 made by demo_stage0.py) instead of the ladder's S0 + SC",
    )
    p.add_argument(
        "--demo-data",
        type=Path,
        default=None,
        help="trainer path: train S1 and S2 on a demo data folder's rows (train/stage1_captions.json, "
        "train/stage2_instructions.json) instead of the ladder's; the held-out set stays the ladder's",
    )
    p.add_argument("--demo-data-stages", default="1,2", help="with --demo-data: the stages that read its rows")
    p.add_argument(
        "--demo-s2",
        choices=("as-is", "no-suffix", "four-types"),
        default="as-is",
        help="with --demo-data: its stage-2 rows as they are, without LLaVA's short-answer suffix, or only the "
        "ladder's four question types (existence, colour of a shape, count of a shape, relation)",
    )
    p.add_argument(
        "--demo-min-objects",
        type=int,
        default=1,
        help="with --demo-data: keep only its rows whose scene holds at least this many objects",
    )
    p.add_argument(
        "--scene-first",
        action="store_true",
        help="project world, training rows: draw the scene once and ask the next question type that applies (the "
        "demo's way) instead of drawing scenes until the row's type applies",
    )
    p.add_argument("--lr2", type=float, default=1e-3, help="S2 peak learning rate (trainer path)")
    p.add_argument("--projector-lr2", type=float, default=None, help="S2 projector learning rate (trainer path)")
    p.add_argument("--s0", type=int, default=1200)
    p.add_argument("--sc", type=int, default=1350)
    p.add_argument("--s1", type=int, default=1600)
    p.add_argument("--s2", type=int, default=5000)
    p.add_argument("--batch2", type=int, default=32, help="S2 batch size (trainer path)")
    p.add_argument(
        "--s1-sea",
        type=float,
        default=0.0,
        help="SEA's weight in S1 (trainer path, the project's world): each visual token contrasted with the words of "
        "its grid cell, ShapeWorld's exact labels (alignment/sea.py) from the scenes of the ladder's or the demo's rows",
    )
    p.add_argument(
        "--s2-sea",
        type=float,
        default=0.0,
        help="SEA's weight in S2 as well, beside ITG (needs --s1-sea's labels: the same rows' scenes); keeps each "
        "image token tied to its cell's words while the projector trains with the LM",
    )
    p.add_argument(
        "--s2-captions",
        type=float,
        default=0.0,
        help="share of S2 rows that are their scene's caption row (S1's format: the image alone, the caption as the "
        "answer) instead of its question, spread evenly over the rows; the LM, trained in S2, then learns to name "
        "each object's colour, shape and position",
    )
    p.add_argument("--eval-every", type=int, default=2500)
    p.add_argument("--ntrain", type=int, default=20000)
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="with --stage0-from: no S1/S2, score that checkpoint on the held-out set (e.g. the demo's stage 2)",
    )
    p.add_argument("--workers", type=int, default=0, help="trainer path: dataloader workers")
    p.add_argument("--name", default=None)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--cache", type=Path, default=HERE / "cache", help="S0+SC checkpoints, reused per seed/template")
    args = p.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    name = args.name or (
        ("" if args.world == "ref" else "sw_")
        + ("" if args.tokenizer == "word" else "bpe_")
        + ("" if args.image_size == 64 else f"px{args.image_size}_")
        + f"{args.path}_{args.projector}{args.q if args.projector == 'ian' else ''}"
        + ("" if args.seb_query_source == "pixels" else "feat")
        + ("zq" if args.zero_query_proj else "")
        + ("vres" if args.seb_vab_residual else "")
        + ("gated" if args.seb_gated else "")
        + (f"vab+{args.seb_parts}" if args.seb_parts else "")
        + ("" if args.seb_heads == 4 else f"h{args.seb_heads}")
        + ("" if args.seb_bias == "gaussian" else args.seb_bias)
        + ("onorm" if args.seb_output_norm else "")
        + ("" if args.exist_train == "random" else f"_xtrain{args.exist_train}")
        + ("" if args.exist_eval == "random" else f"_xeval{args.exist_eval}")
        + f"_{args.template}"
        + f"_itdm{args.itdm:g}"
        + ("" if args.itdm_stages == "1,2" else "s2only")
        + (f"{args.itdm_source[0]}" if args.itdm else "")
        + ("" if args.lr2 == 1e-3 else f"_lr{args.lr2:g}")
        + ("" if args.projector_lr2 is None else f"_plr{args.projector_lr2:g}")
        + ("" if args.s2 == 5000 else f"_s2x{args.s2}")
        + ("" if args.batch2 == 32 else f"_b{args.batch2}")
        + ("" if args.ntrain == 20000 else f"_n{args.ntrain}")
        + ("" if not args.s1_sea else f"_sea{args.s1_sea:g}")
        + ("" if not args.s2_sea else f"_s2sea{args.s2_sea:g}")
        + ("" if not args.s2_captions else f"_s2cap{args.s2_captions:g}")
        + ("" if args.stage0_from is None else "_s0demo")
        + ("" if args.demo_data is None else "_datademo" + args.demo_data_stages.replace(",", ""))
        + ("" if args.demo_s2 == "as-is" else f"_{args.demo_s2}")
        + ("" if args.demo_min_objects == 1 else f"_minobj{args.demo_min_objects}")
        + ("_scenefirst" if args.scene_first else "")
        + ("_evalonly" if args.eval_only else "")
        + f"_seed{args.seed}"
    )
    if args.eval_only and args.stage0_from is None:
        raise SystemExit("--eval-only scores the checkpoint of --stage0-from")
    if args.batch2 != 32 and args.path != "trainer":
        raise SystemExit("--batch2 is for --path trainer")
    if args.s2_captions and (args.path != "trainer" or args.demo_data is not None or not 0 < args.s2_captions < 1):
        raise SystemExit("--s2-captions (a share in (0, 1)) is for --path trainer on the ladder's own rows")
    if args.s1_sea and (args.path, args.world) != ("trainer", "project"):
        raise SystemExit("--s1-sea needs --path trainer --world project")
    if args.s2_sea and (not args.s1_sea or args.demo_data is not None):
        raise SystemExit("--s2-sea needs --s1-sea (its labels) and the ladder's own rows")
    if args.stage0_from is not None and (args.path, args.tokenizer) != ("trainer", "bpe"):
        raise SystemExit("--stage0-from needs --path trainer --tokenizer bpe (the demo's checkpoint)")
    T0 = time.time()
    R: dict = {
        "name": name,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "stages": {},
        "eval": {},
    }
    R["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    def log(*a):
        print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)

    # ---------------- data (the reference's world and held-out set) ----------------
    QT = ["exist", "colour", "count", "position"]
    if args.world == "ref":
        train, train_img = S.make_dataset(args.ntrain, 1000 + args.seed, 4, args.image_size, QT)
        evl, eval_img = S.make_dataset(1600, 999999, 4, args.image_size, QT)
        blank = torch.full((3, args.image_size, args.image_size), 255, dtype=torch.uint8)
    else:
        train, train_img, blank = make_project_dataset(
            args.ntrain,
            1000 + args.seed,
            args.image_size,
            QT,
            near_negatives=args.exist_train == "near",
            scene_first=args.scene_first,
            cross_negatives=args.exist_train == "cross",
        )
        evl, eval_img, _ = make_project_dataset(
            1600, 999999, args.image_size, QT, near_negatives=args.exist_eval == "near"
        )
    if args.stage0_from is None:
        texts = []
        for e in train:
            texts += [e["caption"], render_qa(args.template, e["question"], e["answer"])]
        tokenizer = build_tokenizer(texts, args.tokenizer)
        for i, sp in enumerate(SPECIALS):
            assert tokenizer.convert_tokens_to_ids(sp) == i, sp
    else:  # the checkpoint's own tokenizer and special ids; the rows must render as its chat template renders them
        from processing_mage import MageProcessor

        global PAD, UNK, IMG, BOS, EOS
        start_processor = MageProcessor.from_pretrained(args.stage0_from)
        assert start_processor.chat_template == chat_template(args.template), "--template must be the checkpoint's"
        tokenizer = start_processor.tokenizer
        PAD, UNK, BOS, EOS = (
            tokenizer.pad_token_id,
            tokenizer.unk_token_id,
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
        )
        IMG = tokenizer.convert_tokens_to_ids("<image>")

    def ids(text):
        out = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert UNK not in out, text
        return out

    for e in train + evl:
        e["cap_ids"] = ids(e["caption"])
        # the answer's tokens as they stand in the row (after the generation prompt), `</s>` last
        prompt = render_qa(args.template, e["question"], None, image=False)
        whole = render_qa(args.template, e["question"], e["answer"], image=False)
        prompt_ids, whole_ids = ids(prompt), ids(whole)
        assert whole.startswith(prompt) and whole_ids[: len(prompt_ids)] == prompt_ids, whole
        e["ans_ids"] = whole_ids[len(prompt_ids) :]
        e["a_ids"] = e["ans_ids"][:-1]
        assert e["ans_ids"][-1] == EOS and e["a_ids"], (whole, e["ans_ids"])
    n_patches = (args.image_size // 16) ** 2
    n_img = args.q if args.projector == "ian" else n_patches
    log(f"data: vocab {len(tokenizer)}, image tokens {n_img}")

    # ---------------- model: transformers' LLaVA as the reference builds it ----------------
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vcfg = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=args.image_size,
        patch_size=16,
        projection_dim=64,
    )
    tcfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        tie_word_embeddings=False,
    )
    llava = LlavaForConditionalGeneration(
        LlavaConfig(
            vision_config=vcfg,
            text_config=tcfg,
            image_token_index=IMG,
            image_seq_length=n_patches,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
    )

    def qa_prompt_ids(e, with_image=True):  # cached: the reference pre-tokenises its rows
        key = "p_ids" if with_image else "p_ids_text"
        if key not in e:
            e[key] = _qa_prompt_ids(e, with_image)
        return e[key]

    def _qa_prompt_ids(e, with_image):
        return [BOS] + ids(
            render_qa(args.template, e["question"], None, with_image).replace("<image>", "<image>" * n_img)
        )

    # ---------------- S0 + SC, cached per seed and template ----------------
    cache = (
        args.cache / f"s0sc_{'' if args.world == 'ref' else 'sw_'}{'' if args.tokenizer == 'word' else 'bpe_'}"
        f"{'' if args.image_size == 64 else f'px{args.image_size}_'}{args.template}_seed{args.seed}_{args.s0}_{args.sc}_{args.ntrain}"
        f"{'' if args.exist_train == 'random' else '_xtrain' + args.exist_train}"  # S0's text holds the questions
    )
    if args.stage0_from is not None:
        log("S0+SC: the checkpoint", args.stage0_from)
        stage0_report = args.stage0_from.parent.parent / "stage0.json"
        if stage0_report.is_file():
            R["stages"]["stage0_from"] = json.loads(stage0_report.read_text())
    elif (cache / "model.safetensors").is_file():
        from safetensors.torch import load_file

        llava.load_state_dict(load_file(str(cache / "model.safetensors")))
        R["stages"].update(json.loads((cache / "stages.json").read_text()))
        log("S0+SC from cache", cache)
    else:
        llava.train()
        for prm in llava.parameters():
            prm.requires_grad = False
        lm_params = list(llava.model.language_model.parameters()) + list(llava.lm_head.parameters())
        for prm in lm_params:
            prm.requires_grad = True
        text_rows = [
            (ids(render_qa(args.template, e["question"], e["answer"], image=False)), e["cap_ids"]) for e in train
        ]

        def s0_step(idx):
            seqs = [[BOS] + (text_rows[i][1] + [EOS] if random.random() < 0.5 else text_rows[i][0]) for i in idx]
            x, _, m = pad_batch(seqs, seqs)
            y = x.masked_fill(m == 0, -100)
            y[:, 0] = -100
            return llava(input_ids=x, attention_mask=m, labels=y).loss

        plain_loop("S0_text_lm", args.s0, 2e-3, s0_step, lm_params, len(train), 32, log, R["stages"])
        ccfg = CLIPConfig(
            text_config=CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=64,
                pad_token_id=PAD,
                bos_token_id=BOS,
                eos_token_id=EOS,
                projection_dim=64,
            ),
            vision_config=vcfg.to_dict(),
            projection_dim=64,
        )
        clip = CLIPModel(ccfg)
        clip.vision_model.load_state_dict(llava.model.vision_tower.state_dict())
        cap_key: dict = {}

        def clip_step(idx):
            seqs = [[BOS] + train[i]["cap_ids"] + [EOS] for i in idx]
            x, _, m = pad_batch(seqs, seqs)
            out = clip(input_ids=x, attention_mask=m, pixel_values=pix(train_img[idx]))
            keys = torch.tensor([cap_key.setdefault(train[i]["caption"], len(cap_key)) for i in idx])
            tgt = (keys[:, None] == keys[None, :]).float()
            tgt = tgt / tgt.sum(1, keepdim=True)
            li = out.logits_per_image
            return 0.5 * (-(tgt * F.log_softmax(li, 1)).sum(1).mean() - (tgt * F.log_softmax(li.t(), 1)).sum(1).mean())

        plain_loop("SC_clip", args.sc, 2e-3, clip_step, list(clip.parameters()), len(train), 128, log, R["stages"])
        llava.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
        del clip
        from safetensors.torch import save_file

        cache.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in llava.state_dict().items()}, str(cache / "model.safetensors"))
        (cache / "stages.json").write_text(json.dumps({k: R["stages"][k] for k in ("S0_text_lm", "SC_clip")}))

    # S1 onwards starts from the same RNG state whether S0+SC ran or came from the cache
    torch.manual_seed(10_000 + args.seed)
    random.seed(10_000 + args.seed)

    # ---------------- evaluation (held out, 400 per type, real vs blank image) ----------------
    @torch.no_grad()
    def evaluate(model, tag, blank_image=False, pixels=None):
        was_training = model.training
        model.eval()
        correct = {q: 0 for q in QT}
        total = {q: 0 for q in QT}
        answers = []  # (example, predicted answer ids) of the existence rows, for detail()
        for b in range(0, len(evl), 200):
            chunk = evl[b : b + 200]
            # teacher-forced greedy match of every answer token (one token: the argmax after the prompt)
            seqs = [qa_prompt_ids(e) + e["a_ids"] for e in chunk]
            x, _, m = pad_batch(seqs, seqs)
            imgs = blank.expand(len(chunk), -1, -1, -1) if blank_image else eval_img[b : b + len(chunk)]
            pred = model(input_ids=x, attention_mask=m, pixel_values=pixels(imgs)).logits.argmax(-1)
            for row, e in enumerate(chunk):
                start = len(qa_prompt_ids(e)) - 1
                total[e["qtype"]] += 1
                got = pred[row, start : start + len(e["a_ids"])].tolist()
                correct[e["qtype"]] += int(got == e["a_ids"])
                if e["qtype"] == "exist":
                    answers.append((e, got))
        if not blank_image and "scene" in evl[0]:
            R.setdefault("eval_detail", {})[tag] = detail(model, pixels, answers)
        model.train(was_training)
        acc = {q: round(correct[q] / total[q], 4) for q in QT}
        acc["mean"] = round(sum(acc[q] for q in QT) / len(QT), 4)
        R["eval"][tag] = acc
        log("eval", tag, acc, R.get("eval_detail", {}).get(tag, ""))
        return acc

    @torch.no_grad()
    def detail(model, pixels, answers):
        """The project world's held-out existence questions by kind (geometry.existence_kind: accuracy, share of
        "Yes"; `answers` = evaluate()'s (example, predicted ids) of those rows), and, with one image token per grid
        cell, the share of the tokens' variance between the colours and between the shapes of the cells' objects
        (geometry.variance_share)."""
        from geometry import KINDS, existence_kind, variance_share

        right, yes, total = {k: 0 for k in KINDS}, {k: 0 for k in KINDS}, {k: 0 for k in KINDS}
        yes_ids = next(e["a_ids"] for e, _ in answers if e["answer"] == "Yes")
        for e, got in answers:
            k = existence_kind(e["question"], e["scene"])
            total[k] += 1
            right[k] += int(got == e["a_ids"])
            yes[k] += int(got == yes_ids)
        out = {
            "exist_by_kind": {
                k: {"n": total[k], "acc": round(right[k] / total[k], 4), "yes": round(yes[k] / total[k], 4)}
                for k in KINDS
                if total[k]
            }
        }
        scenes = [e["scene"] for e in evl[:800]]
        tokens = torch.cat(
            [
                model.get_image_features(pixels(eval_img[b : b + 200]), return_dict=True).pooler_output
                for b in range(0, len(scenes), 200)
            ]
        )
        grid = math.isqrt(tokens.shape[1])
        if grid * grid == tokens.shape[1] and grid == 3:
            for attribute in ("colour", "shape"):
                cells = [
                    (i, o["row"] * grid + o["col"], o[attribute]) for i, sc in enumerate(scenes) for o in sc["objects"]
                ]
                names = sorted({c for *_, c in cells})
                x = torch.stack([tokens[i, j] for i, j, _ in cells])
                y = torch.tensor([names.index(c) for *_, c in cells])
                out[f"token_variance_{attribute}"] = variance_share(x, y)
        return out

    # ---------------- S1 + S2 ----------------
    if args.path == "plain":
        if args.projector != "mlp" or args.template != "ref" or args.itdm or args.lr2 != 1e-3 or args.projector_lr2:
            raise SystemExit(
                "--path plain is the reference loop: --projector mlp --template ref --itdm 0, default learning rates"
            )
        model = llava
        model.train()

        def set_trainable(proj, llm):
            for prm in model.parameters():
                prm.requires_grad = False
            for prm in model.model.multi_modal_projector.parameters():
                prm.requires_grad = proj
            for prm in list(model.model.language_model.parameters()) + list(model.lm_head.parameters()):
                prm.requires_grad = llm

        def s1_step(idx):
            seqs, labs = [], []
            for i in idx:
                c = train[i]["cap_ids"] + [EOS]
                seqs.append([BOS] + [IMG] * n_img + c)
                labs.append([-100] * (1 + n_img) + c)
            x, y, m = pad_batch(seqs, labs)
            return model(input_ids=x, attention_mask=m, pixel_values=pix(train_img[idx]), labels=y).loss

        def s2_step(idx):
            seqs, labs = [], []
            for i in idx:
                pre = qa_prompt_ids(train[i])
                ans = train[i]["ans_ids"]
                seqs.append(pre + ans)
                labs.append([-100] * len(pre) + ans)
            x, y, m = pad_batch(seqs, labs)
            return model(input_ids=x, attention_mask=m, pixel_values=pix(train_img[idx]), labels=y).loss

        set_trainable(True, False)
        plain_loop(
            "S1_projector",
            args.s1,
            2e-3,
            s1_step,
            list(model.model.multi_modal_projector.parameters()),
            len(train),
            32,
            log,
            R["stages"],
        )
        set_trainable(True, True)

        def on_step(step):
            if step % args.eval_every == 0 and step < args.s2:
                evaluate(model, f"S2@{step}", pixels=pix)

        plain_loop(
            "S2_proj_llm",
            args.s2,
            1e-3,
            s2_step,
            [q for q in model.parameters() if q.requires_grad],
            len(train),
            32,
            log,
            R["stages"],
            on_step=on_step,
        )
        pixels = pix
    else:
        model, pixels = run_trainer_path(args, llava, tokenizer, train, train_img, n_img, evaluate, log, R)

    evaluate(model, "final_image", pixels=pixels)
    evaluate(model, "final_blank_image", blank_image=True, pixels=pixels)
    R["total_s"] = round(time.time() - T0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(R, indent=1))
    log("total", R["total_s"], "->", args.out / f"{name}.json")


def patch_seb_with_vab_residual() -> None:
    """Experiment: every SEB in this process adds the VAB output, average-pooled onto its query grid, to its queries
    (full per-patch content in the residual stream; cross-attention then adds context)."""
    from modeling_mage import ian

    seb_class = ian.MageSemanticEnhancementBlock
    original = seb_class.forward

    def forward(self, aligned, pixel_values=None, feature_grid=None):
        batch, count, width = aligned.shape
        side, grid = math.isqrt(count), self.query_cnn.grid_size
        pooled = F.adaptive_avg_pool2d(aligned.transpose(1, 2).reshape(batch, width, side, side), grid)
        cnn = self.query_cnn

        class WithResidual(torch.nn.Module):
            def forward(self, pixels, features):
                return cnn(pixels, features) + pooled.flatten(2).transpose(1, 2)

        self.query_cnn = WithResidual()
        try:
            return original(self, aligned, pixel_values, feature_grid)
        finally:
            self.query_cnn = cnn

    seb_class.forward = forward


def patch_seb_vab_stream(gated: bool = True, parts: tuple[str, ...] = ("cnn", "attn", "mlp")) -> None:
    """Experiment: every SEB built in this process keeps the VAB output (average-pooled onto its query grid) as its
    residual stream. `parts` says what the SEB adds to it: `attn` the cross-attention to the VAB output (queries from
    the stream plus the position embedding), `cnn` the CNN queries added to the attention's query input only (as
    DETR adds query positions), `mlp` the block's MLP. With `gated`, attention and MLP join through tanh gates
    initialised at 0, so the IAN starts as the pooled VAB."""
    from modeling_mage import ian

    seb_class = ian.MageSemanticEnhancementBlock
    original_init = seb_class.__init__

    def __init__(self, config):
        original_init(self, config)
        for layer in self.layers:
            layer.attn_gate = torch.nn.Parameter(torch.zeros(1)) if gated else None
            layer.mlp_gate = torch.nn.Parameter(torch.zeros(1)) if gated else None

    def gate(value, parameter):
        return value if parameter is None else torch.tanh(parameter) * value

    def forward(self, aligned, pixel_values=None, feature_grid=None):
        batch, count, width = aligned.shape
        side, grid = math.isqrt(count), self.query_cnn.grid_size
        stream = F.adaptive_avg_pool2d(aligned.transpose(1, 2).reshape(batch, width, side, side), grid)
        stream = stream.flatten(2).transpose(1, 2)
        query_embed = self.position_embedding.to(aligned.dtype)
        if "cnn" in parts:
            query_embed = query_embed + self.query_cnn(pixel_values, feature_grid).to(aligned.dtype)
        bias = self.attention_bias
        if bias is not None:
            bias = bias.to(aligned.dtype)[None]
        for layer in self.layers:
            if "attn" in parts:
                normed_context = layer.context_norm(aligned)
                attended = F.scaled_dot_product_attention(
                    layer._heads(layer.q_proj(layer.query_norm(stream + query_embed))),
                    layer._heads(layer.k_proj(normed_context)),
                    layer._heads(layer.v_proj(normed_context)),
                    attn_mask=bias,
                )
                attended = attended.transpose(1, 2).reshape(stream.shape)
                stream = stream + gate(layer.o_proj(attended), layer.attn_gate)
            if "mlp" in parts:
                stream = stream + gate(layer.fc2(layer.act(layer.fc1(layer.mlp_norm(stream)))), layer.mlp_gate)
        return self.final_norm(stream)

    seb_class.__init__ = __init__
    seb_class.forward = forward


def run_trainer_path(args, llava, tokenizer, train, train_img, n_img, evaluate, log, R):
    """S1 and S2 through `training.api.train` (`mage train`'s code path) on a MAGE copy of the S0+SC model."""

    from transformers import CLIPImageProcessor

    from modeling_mage import MageConfig, MageForConditionalGeneration
    from processing_mage import MageProcessor

    projector = {"mlp": "mlp2x_gelu", "ian": "ian", "vab": "vab"}[args.projector]
    if args.seb_vab_residual:
        patch_seb_with_vab_residual()
    if args.seb_gated or args.seb_parts:
        parts = tuple(args.seb_parts.split("+")) if args.seb_parts else ("cnn", "attn", "mlp")
        patch_seb_vab_stream(gated=args.seb_gated, parts=parts)
    if args.stage0_from is not None:
        model = MageForConditionalGeneration.from_pretrained(args.stage0_from)
        if projector != model.config.projector_type:  # the checkpoint's tower and LM, a fresh projector of this type
            config = model.config
            config.projector_type = projector
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                fresh = MageForConditionalGeneration(config)
            state = {k: v for k, v in model.state_dict().items() if ".multi_modal_projector." not in k}
            missing, unexpected = fresh.load_state_dict(state, strict=False)
            assert not unexpected and all(".multi_modal_projector." in k for k in missing), (missing, unexpected)
            model = fresh
        processor = MageProcessor.from_pretrained(args.stage0_from)
        return run_from_checkpoint(args, model, processor, train, train_img, evaluate, log, R)
    config = MageConfig(
        vision_config=llava.config.vision_config.to_dict(),
        text_config=llava.config.text_config.to_dict(),
        image_token_id=IMG,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_type=projector,
        num_query_tokens=n_img,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
        seb_num_heads=args.seb_heads,
        seb_attention_bias=args.seb_bias,
        seb_output_norm=args.seb_output_norm,
        seb_hidden_size=64,
        seb_num_layers=1,
        seb_query_source=args.seb_query_source,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = MageForConditionalGeneration(config)  # the projector as MAGE initialises it
    state = {k: v for k, v in llava.state_dict().items() if ".multi_modal_projector." not in k}
    if projector == "mlp2x_gelu":  # the same initial MLP as the plain path: only the training path differs
        state.update({k: v for k, v in llava.state_dict().items() if ".multi_modal_projector." in k})
    if args.zero_query_proj:
        with torch.no_grad():
            model.model.multi_modal_projector.seb.query_cnn.out_proj.weight.zero_()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(".multi_modal_projector." in k for k in missing), (missing, unexpected)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": args.image_size},
        crop_size={"height": args.image_size, "width": args.image_size},
        do_center_crop=True,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = MageProcessor(
        image_processor, tokenizer, num_image_tokens=n_img, chat_template=chat_template(args.template)
    )
    return run_from_checkpoint(args, model, processor, train, train_img, evaluate, log, R)


def demo_rows(path: Path, out: Path, how: str = "as-is", min_objects: int = 1) -> Path:
    """The demo's rows at `path` (either stage), written to `out` with absolute image paths: those whose scene holds
    at least `min_objects` objects (the data folder's `scenes.jsonl`); with `how="no-suffix"` without LLaVA's
    short-answer suffix, with `"four-types"` only the ladder's four question types (existence, colour of a shape,
    count of a shape, relation)."""
    import re

    from shapeworld.text import LLAVA_SHORT_SUFFIX

    four = re.compile(
        r"^<image>\n(Is there an? \w+ \w+ in the image\?|What colour is the \w+\?|How many \w+ are there\?"
        r"|Is the \w+ \w+ (to the left of|to the right of|above|below) the \w+ \w+\?)"
    )
    objects = {}
    for line in (path.parent / "scenes.jsonl").read_text().splitlines():
        record = json.loads(line)
        objects[record["image"]] = len(record["scene"]["objects"])
    rows = []
    for row in json.loads(path.read_text()):
        turns = [dict(t) for t in row["conversations"]]
        if objects[row["image"]] < min_objects or (how == "four-types" and not four.match(turns[0]["value"])):
            continue
        if how == "no-suffix":
            turns[0]["value"] = turns[0]["value"].replace(LLAVA_SHORT_SUFFIX, "")
        rows.append({**row, "image": str(path.parent.resolve() / row["image"]), "conversations": turns})
    out.write_text(json.dumps(rows))
    return out


def run_from_checkpoint(args, model, processor, train, train_img, evaluate, log, R):
    """S1 and S2 through `training.api.train` from `model` and its `processor`; returns the S2 model and the
    processor's pixel function."""
    import shutil
    import tempfile

    import numpy as np
    from PIL import Image
    from transformers import TrainerCallback

    from modeling_mage import MageForConditionalGeneration
    from training.api import train as mage_train
    from training.recipes import load_recipe

    def pixels(u8):  # the processor's own preprocessing, as training sees it
        return processor.image_processor(
            [Image.fromarray(a) for a in u8.permute(0, 2, 3, 1).numpy()], return_tensors="pt"
        )["pixel_values"]

    check = pixels(train_img[:4])
    R["processor_vs_reference_pixels_maxdiff"] = round(float((check - pix(train_img[:4])).abs().max()), 5)
    if args.eval_only:  # score the checkpoint as it is (e.g. the demo's own stage 2) on the ladder's held-out set
        return model, pixels

    work = Path(tempfile.mkdtemp(prefix=f"ladder_{args.seed}_", dir=args.cache))
    demo_stages = set(args.demo_data_stages.split(",")) if args.demo_data is not None else set()
    if demo_stages != {"1", "2"}:  # the ladder's own rows: images as PNG files, as `mage train` reads them
        (work / "images").mkdir()
        for i in range(len(train)):
            Image.fromarray(np.ascontiguousarray(train_img[i].permute(1, 2, 0).numpy())).save(
                work / "images" / f"{i}.png"
            )
    s1_rows = [
        {
            "id": f"cap{i}",
            "image": f"images/{i}.png",
            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": e["caption"]}],
        }
        for i, e in enumerate(train)
    ]
    s2_rows = [
        {
            "id": f"qa{i}",
            "image": f"images/{i}.png",
            "conversations": [
                {"from": "human", "value": "<image>\n" + e["question"]},
                {"from": "gpt", "value": e["answer"]},
            ],
        }
        if int((i + 1) * args.s2_captions) == int(i * args.s2_captions)
        else s1_rows[i]  # --s2-captions: this scene's caption row instead
        for i, e in enumerate(train)
    ]
    s1_data, s2_data = work / "s1.json", work / "s2.json"
    if "1" in demo_stages:  # the demo's rows, filtered/transformed into the work folder
        s1_data = demo_rows(
            args.demo_data / "train" / "stage1_captions.json", s1_data, min_objects=args.demo_min_objects
        )
    else:
        s1_data.write_text(json.dumps(s1_rows))
        if args.s1_sea:  # SEA's ShapeWorld labeller reads the scenes beside the data (alignment.recipe.SCENES_FILE)
            with open(work / "scenes.jsonl", "w") as handle:
                for i, e in enumerate(train):
                    handle.write(json.dumps({"image": f"images/{i}.png", "scene": e["scene"]}) + "\n")
    if "2" in demo_stages:
        s2_data = demo_rows(
            args.demo_data / "train" / "stage2_instructions.json", s2_data, args.demo_s2, args.demo_min_objects
        )
    else:
        s2_data.write_text(json.dumps(s2_rows))
    model.config.mage_trained_stages = []
    model.save_pretrained(work / "m0")
    processor.save_pretrained(work / "m0")
    common = {
        "per_device_train_batch_size": 32,
        "weight_decay": 0.0,
        "warmup_ratio": 0.03,
        "lr_scheduler_type": "cosine",
        "bf16": False,
        "gradient_checkpointing": False,
        "max_length": 256,
        "group_by_modality_length": False,
        "logging_steps": 100,
        "save_steps": 10**9,
        "seed": args.seed,
        "dataloader_num_workers": args.workers,
        "projector_lr": None,
        "itdm_weight": args.itdm,
        "itdm_text_source": args.itdm_source,
        "num_train_epochs": 1000,
    }
    extra = {"adam_beta2": 0.98, "disable_tqdm": True}

    class Timer(TrainerCallback):
        def __init__(self, stage, every=0, evaluate_fn=None):
            self.stage, self.every, self.evaluate_fn = stage, every, evaluate_fn

        def on_train_begin(self, a, state, control, **kw):
            self.t0, self.pause = time.time(), 0.0

        def on_step_end(self, a, state, control, model=None, **kw):
            if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
                t = time.time()
                evaluate(model, f"S2@{state.global_step}", pixels=pixels)
                self.pause += time.time() - t

        def on_train_end(self, a, state, control, **kw):
            wall = time.time() - self.t0 - self.pause
            logs = [h for h in state.log_history if "loss" in h]
            R["stages"][self.stage] = {
                "steps": state.global_step,
                "wall_s": round(wall, 1),
                "steps_per_s": round(state.global_step / wall, 2),
                "loss_first_log": logs[0]["loss"] if logs else None,
                "loss_last_log": logs[-1]["loss"] if logs else None,
                "log": [
                    {k: h[k] for k in ("step", "loss", "itg_loss", "itdm_loss", "sea_loss") if k in h} for h in logs
                ],
            }
            log(self.stage, {k: v for k, v in R["stages"][self.stage].items() if k != "log"})

    sea = (
        {"alignment_objective": "sea", "sea_weight": args.s1_sea, "sea_window": 1, "sea_label_source": "shapeworld"}
        if args.s1_sea
        else {}
    )
    if args.s1_sea and "1" in demo_stages:  # the demo's scenes.jsonl lies beside its images, not beside the rows
        sea["image_folder"] = str((args.demo_data / "train").resolve())
    if args.s1_sea:
        import alignment.recipe  # noqa: F401  registers "sea" with training's objective registry

    s1_itdm = {} if args.itdm_stages == "1,2" else {"itdm_weight": 0.0}
    r1 = load_recipe("stage1_tiny", {**common, "learning_rate": 2e-3, "max_steps": args.s1, **sea, **s1_itdm})
    mage_train(r1, work / "m0", s1_data, work / "s1", callbacks=[Timer("S1_projector")], **extra)
    evaluate(MageForConditionalGeneration.from_pretrained(work / "s1"), "S1", pixels=pixels)
    r2 = load_recipe(
        "stage2_tiny",
        {
            **common,
            "learning_rate": args.lr2,
            "projector_lr": args.projector_lr2,
            "max_steps": args.s2,
            "per_device_train_batch_size": args.batch2,
            **({**sea, "sea_weight": args.s2_sea} if args.s2_sea else {}),
        },
    )
    mage_train(r2, work / "s1", s2_data, work / "s2", callbacks=[Timer("S2_proj_llm", args.eval_every)], **extra)
    model = MageForConditionalGeneration.from_pretrained(work / "s2")
    shutil.rmtree(work, ignore_errors=True)
    return model, pixels


if __name__ == "__main__":
    main()
