"""Minimal shapes world of the tiny-LLaVA reference run (a simplified ShapeWorld; not the project's generator).

Scenes: 1-4 objects with distinct (colour, shape) pairs, each in a distinct cell of a GxG grid.
Text: reading-order captions and four question types with balanced one-word answers.
"""

import random

import numpy as np
import torch
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 70, 230),
    "yellow": (235, 210, 20),
    "purple": (150, 40, 190),
    "cyan": (20, 200, 220),
}
SHAPES = ["circle", "square", "triangle"]
NUMS = ["zero", "one", "two", "three"]
QTYPES = ["exist", "colour", "count", "position"]
SPECIALS = ["<pad>", "<unk>", "<image>", "<s>", "</s>"]  # ids 0..4; CLIP eos must not be 2 (legacy argmax path)
BG = (255, 255, 255)


def sample_scene(rng, grid, n=None):
    n = n or rng.randint(1, 4)
    combos = rng.sample([(c, s) for c in COLOURS for s in SHAPES], n)
    cells = rng.sample(range(grid * grid), n)
    objs = [(c, s, cell // grid, cell % grid) for (c, s), cell in zip(combos, cells)]
    return sorted(objs, key=lambda o: (o[2], o[3]))  # reading order (row, col)


def caption(objs):
    parts = [f"a {c} {s}" for c, s, _, _ in objs]
    return parts[0] if len(parts) == 1 else " , ".join(parts[:-1]) + " and " + parts[-1]


def make_example(rng, grid, qtype):
    if qtype == "exist":
        objs = sample_scene(rng, grid)
        if rng.random() < 0.5:
            c, s, _, _ = rng.choice(objs)
            ans = "yes"
        else:
            present = {(o[0], o[1]) for o in objs}
            c, s = rng.choice([(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present])
            ans = "no"
        q = f"is there a {c} {s} ?"
    elif qtype == "colour":
        while True:
            objs = sample_scene(rng, grid)
            uniq = [s for s in SHAPES if sum(o[1] == s for o in objs) == 1]
            if uniq:
                break
        s = rng.choice(uniq)
        ans = next(o[0] for o in objs if o[1] == s)
        q = f"what colour is the {s} ?"
    elif qtype == "count":
        k = rng.randint(0, 3)
        s = rng.choice(SHAPES)
        n = rng.randint(max(k, 1), 4)
        cols = rng.sample(list(COLOURS), n)
        others = [x for x in SHAPES if x != s]
        shapes = [s] * k + [rng.choice(others) for _ in range(n - k)]
        cells = rng.sample(range(grid * grid), n)
        objs = sorted(
            [(c, sh, cell // grid, cell % grid) for c, sh, cell in zip(cols, shapes, cells)], key=lambda o: (o[2], o[3])
        )
        ans = NUMS[k]
        q = f"how many {s}s are there ?"
    elif qtype == "position":
        while True:
            objs = sample_scene(rng, grid, n=rng.randint(2, 4))
            pairs = [(a, b) for a in objs for b in objs if a[3] < b[3]]
            if pairs:
                break
        a, b = rng.choice(pairs)  # a strictly left of b
        if rng.random() < 0.5:
            ans = "yes"
        else:
            a, b = b, a
            ans = "no"
        q = f"is the {a[0]} {a[1]} left of the {b[0]} {b[1]} ?"
    elif qtype == "side":  # absolute position of one object: left half vs right half of the image
        objs = sample_scene(rng, grid)
        c, s, _, col = rng.choice(objs)
        side = rng.choice(["left", "right"])
        ans = "yes" if (col < grid / 2) == (side == "left") else "no"
        q = f"is the {c} {s} on the {side} ?"
    else:
        raise ValueError(qtype)
    return {"objs": objs, "caption": caption(objs), "question": q, "answer": ans, "qtype": qtype}


def render(objs, img, grid):
    im = Image.new("RGB", (img, img), BG)
    d = ImageDraw.Draw(im)
    cell = img / grid
    r = cell * 0.36
    for c, s, row, col in objs:
        cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        box = [cx - r, cy - r, cx + r, cy + r]
        if s == "circle":
            d.ellipse(box, fill=COLOURS[c])
        elif s == "square":
            d.rectangle(box, fill=COLOURS[c])
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[c])
    return np.asarray(im)


def make_dataset(n, seed, grid, img, qtypes=QTYPES):
    rng = random.Random(seed)
    exs = [make_example(rng, grid, qtypes[i % len(qtypes)]) for i in range(n)]
    imgs = np.stack([render(e["objs"], img, grid) for e in exs])
    return exs, torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()  # uint8 [n,3,H,W]


def build_tokenizer(texts):
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    for i, sp in enumerate(SPECIALS):
        assert tok.token_to_id(sp) == i, (sp, tok.token_to_id(sp))
    return tok


def all_texts(exs):
    out = []
    for e in exs:
        out += [e["caption"], f"question : {e['question']} answer : {e['answer']}"]
    return out
