"""Analytical FLOP, traffic and memory model of MAGE and LLaVA-1.5 (pure Python, no torch).

Counts the work of one *sample* (one image + its text) for the three parts that the two models share or differ in,
and derives the MAGE/LLaVA cost ratios that the measured benchmarks are checked against.

Matrix multiplies (2 FLOPs per multiply-add; N = patch tokens, T_img = image tokens in the LM input,
T = T_img + text tokens):
- vision tower (CLIP ViT, all layers run, frozen: forward only, no gradient flows into it):
  per layer `2·N'·(4·D_v² + 2·D_v·F_v) + 4·N'²·D_v` with N' = N + 1 (CLS), plus the patch embedding `2·N·3p²·D_v`;
- projector, forward: LLaVA `2·N·(D_v·D_l + D_l²)`; MAGE's IAN = VAB `2·N·(D_v·D_l + (depth−1)·D_l²)` + the SEB's
  query CNN (stem `2·N·3p²·C` or `2·N·D_v·C`, depth-wise 3×3 mixer `2·N·9·C`, out-projection `2·Q·C·D_l`) + per SEB layer
  `2·Q·2D_l² (q, o) + 2·N·2D_l² (k, v) + 4·Q·N·D_l (attention) + 2·Q·8D_l² (MLP)`;
- LM (Llama): per layer and token `2·(2·D² + 2·D·D_kv + 3·D·F)` plus causal attention `2·T·D` per token on average
  (`4·T²·D/2` per sequence: SDPA skips the masked half), and the LM head `2·D·V` per token.
Training multipliers: a trained part costs 3× its forward (forward + input-gradient + weight-gradient), a frozen part
that gradients must flow *through* (the LM in stage 1) 2×, a frozen part at the start of the graph (the tower) 1×;
gradient checkpointing adds one more LM forward. MAGE's ITDM term with `itdm_text_source="hidden"` adds one no-grad
LM forward over the text tokens.

Element-wise work (`Elementwise`, `train_step_elementwise`): every kernel that is not a matrix multiply — norms,
activations, RoPE, residual adds and gradient accumulations, bias-gradient reductions, copies (concatenations,
the image-feature scatter, the KV-cache update, gathers), the softmax inside attention, the cross-entropy's
`log_softmax` over the vocabulary on every position, and the fused AdamW update — counted kernel by kernel as the
models run in eager PyTorch (forward and backward, read off a dispatch trace), as FLOPs and as elements moved.
As FLOPs it is ≈ 1 % of the matrix multiplies or less at the `small`, 7B and 13B shapes (most of it the AdamW
update), so the FLOP ratios barely move; as traffic it costs time at memory bandwidth. `step_seconds` turns both into a roofline-style time on a `Machine` (GEMM rate +
bandwidth, measured on plain tensors by `benchmarks.perf`).

Memory: parameters, gradients and AdamW states (bytes per element configurable), training activations per sample
(per LM layer and token ≈ `(6·D + 2·D_kv + 4·F)` stored elements; with gradient checkpointing only the layer inputs
`D` plus one layer's worth), logits `T·V` (×2: logits + their float32 log-softmax), and the KV cache
`2·L·T·D_kv` elements per sample.

What the model cannot know: how efficiently a given kernel runs on a given machine (GEMM rates differ by shape,
attention kernels run below the GEMM rate, the allocator's page faults); docs/performance.md compares the
predictions with the measurements and the profiler.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Shapes:
    """Every size the benchmark needs for one named setting; both models share the tower, LM, batch and text."""

    name: str
    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    lm_hidden: int
    lm_layers: int
    lm_heads: int
    lm_kv_heads: int
    lm_mlp: int
    vocab_size: int
    batch_size: int
    stage1_text_tokens: int  # plain template: caption (+ BOS)
    stage2_text_tokens: int  # vicuna_v1 conversation around the image
    prompt_text_tokens: int  # question prompt for prefill / decode
    decode_new_tokens: int
    queries: tuple[int, ...]  # MAGE Q values; the first is the headline (the paper's 4× reduction)
    seb_hidden: int
    seb_layers: int = 1
    seb_heads: int = 8
    vab_depth: int = 2
    seb_query_source: str = "pixels"
    seb_output_norm: bool = False  # MageConfig's default since 4474183 (a LayerNorm on the SEB output before)
    max_positions: int = 4096
    decode_batches: tuple[int, ...] = (1, 8)
    lora_rank: int = 16

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def lm_kv_width(self) -> int:
        return self.lm_hidden // self.lm_heads * self.lm_kv_heads

    def to_dict(self) -> dict:
        return asdict(self)


SHAPES: dict[str, Shapes] = {
    # The tests' tiny model (docs/DECISIONS.md, Tooling): 16 patches; Q = 4 is the 4× reduction, Q = 16 keeps every
    # token.
    "tiny": Shapes(
        name="tiny",
        image_size=64,
        patch_size=16,
        vision_hidden=64,
        vision_layers=2,
        vision_heads=4,
        vision_mlp=128,
        lm_hidden=128,
        lm_layers=2,
        lm_heads=4,
        lm_kv_heads=2,
        lm_mlp=256,
        vocab_size=1000,
        batch_size=2,
        stage1_text_tokens=8,
        stage2_text_tokens=8,
        prompt_text_tokens=6,
        decode_new_tokens=4,
        queries=(4, 16),
        seb_hidden=64,
        seb_layers=1,
        seb_heads=4,
        max_positions=512,
        decode_batches=(1, 2),
        lora_rank=4,
    ),
    # Scaled-down CPU setting of the issue: 256 patches → 64 queries, as 576 → 144.
    "small": Shapes(
        name="small",
        image_size=224,
        patch_size=14,
        vision_hidden=384,
        vision_layers=6,
        vision_heads=6,
        vision_mlp=1536,
        lm_hidden=512,
        lm_layers=8,
        lm_heads=8,
        lm_kv_heads=8,
        lm_mlp=1376,
        vocab_size=32064,
        batch_size=4,
        stage1_text_tokens=32,
        stage2_text_tokens=64,
        prompt_text_tokens=32,
        decode_new_tokens=32,
        queries=(64, 16, 144),
        seb_hidden=384,
        max_positions=2048,
    ),
    # The paper: CLIP ViT-L/14-336 + Vicuna-7B / 13B, Q = 144 (576 / 4); LLaVA-1.5's batch per H100 and text lengths.
    "7b": Shapes(
        name="7b",
        image_size=336,
        patch_size=14,
        vision_hidden=1024,
        vision_layers=24,
        vision_heads=16,
        vision_mlp=4096,
        lm_hidden=4096,
        lm_layers=32,
        lm_heads=32,
        lm_kv_heads=32,
        lm_mlp=11008,
        vocab_size=32064,
        batch_size=16,
        stage1_text_tokens=64,
        stage2_text_tokens=128,
        prompt_text_tokens=64,
        decode_new_tokens=128,
        queries=(144, 64, 576),
        seb_hidden=1024,
        lora_rank=128,
    ),
    "13b": Shapes(
        name="13b",
        image_size=336,
        patch_size=14,
        vision_hidden=1024,
        vision_layers=24,
        vision_heads=16,
        vision_mlp=4096,
        lm_hidden=5120,
        lm_layers=40,
        lm_heads=40,
        lm_kv_heads=40,
        lm_mlp=13824,
        vocab_size=32064,
        batch_size=16,
        stage1_text_tokens=64,
        stage2_text_tokens=128,
        prompt_text_tokens=64,
        decode_new_tokens=128,
        queries=(144, 64, 576),
        seb_hidden=1024,
        lora_rank=128,
    ),
}

# LLaVA-1.5-7B reference points measured on one H100 (bs 16, gradient checkpointing) by others, not here, and the GPU
# targets: the project's given anchors, quoted and used in docs/performance.md, "Predictions at the paper's shapes".
H100_ANCHORS = {
    "llava576_stage1_samples_per_s": 14.5,
    "llava576_stage2_samples_per_s": 12.1,
    "llava576_stage2_peak_gib": 28.9,
    "llava_decode_bs1_eager_tok_per_s": 27.0,
    "decode_bandwidth_limit_tok_per_s": 250.0,
}
GPU_TARGETS = {
    "mage144_stage2_speedup": 2.0,
    "mfu": 0.45,
    "ian_share_of_step": 0.03,
    "decode_tok_per_s": 150.0,
    "qlora_7b_peak_gib": 12.0,
}


@dataclass(frozen=True)
class ModelSpec:
    """Which model: `projector="llava"` (all N patch tokens, MLP projector) or `"ian"` with `queries` = Q."""

    projector: str
    queries: int = 0
    itdm: bool = True  # MAGE's training step includes the ITDM text forward (itdm_text_source="hidden")

    def image_tokens(self, shapes: Shapes) -> int:
        return shapes.num_patches if self.projector == "llava" else self.queries

    def label(self, shapes: Shapes) -> str:
        """`LLaVA-256`, `MAGE-64`, `MAGE-64-noITDM`."""
        if self.projector == "llava":
            return f"LLaVA-{shapes.num_patches}"
        return f"MAGE-{self.queries}" + ("" if self.itdm else "-noITDM")


# ------------------------------------------------------------------------------------------------- forward FLOPs
def vision_tower_flops(s: Shapes) -> float:
    """Forward FLOPs of the CLIP tower for one image (all layers; HF runs the last one even though -2 is used)."""
    n, d = s.num_patches + 1, s.vision_hidden
    per_layer = 2 * n * (4 * d * d + 2 * d * s.vision_mlp) + 4 * n * n * d
    patch_embed = 2 * s.num_patches * 3 * s.patch_size**2 * d
    return s.vision_layers * per_layer + patch_embed


def llava_projector_flops(s: Shapes) -> float:
    """Forward FLOPs of LLaVA-1.5's mlp2x_gelu projector for one image."""
    return 2 * s.num_patches * (s.vision_hidden * s.lm_hidden + s.lm_hidden**2)


def ian_flops(s: Shapes, queries: int) -> dict[str, float]:
    """Forward FLOPs of MAGE's IAN for one image, split into VAB, query CNN and SEB cross-attention."""
    n, dv, dl, c = s.num_patches, s.vision_hidden, s.lm_hidden, s.seb_hidden
    vab = 2 * n * (dv * dl + (s.vab_depth - 1) * dl * dl)
    stem_in = 3 * s.patch_size**2 if s.seb_query_source == "pixels" else dv
    query_cnn = 2 * n * stem_in * c + 2 * n * 9 * c + 2 * queries * c * dl
    per_layer = 2 * queries * 2 * dl * dl + 2 * n * 2 * dl * dl + 4 * queries * n * dl + 2 * queries * 8 * dl * dl
    return {"vab": vab, "query_cnn": query_cnn, "seb_attention": s.seb_layers * per_layer}


def lm_flops(s: Shapes, tokens: int, lm_head_tokens: int | None = None) -> float:
    """Forward FLOPs of the Llama LM over one causal sequence of `tokens` (LM head on `lm_head_tokens`, default all)."""
    d = s.lm_hidden
    dense = 2 * (2 * d * d + 2 * d * s.lm_kv_width + 3 * d * s.lm_mlp)
    attention = 2 * tokens * tokens * d  # 4·T²·D / 2: QKᵀ and AV over the causal half
    head_tokens = tokens if lm_head_tokens is None else lm_head_tokens
    return s.lm_layers * (dense * tokens + attention) + 2 * d * s.vocab_size * head_tokens


def lm_dense_params(s: Shapes) -> float:
    """Parameters touched per token by the LM (decoder matrices + LM head): the `N` of `6·N·tokens`."""
    d = s.lm_hidden
    return s.lm_layers * (2 * d * d + 2 * d * s.lm_kv_width + 3 * d * s.lm_mlp) + d * s.vocab_size


def projector_flops(s: Shapes, spec: ModelSpec) -> float:
    return llava_projector_flops(s) if spec.projector == "llava" else sum(ian_flops(s, spec.queries).values())


def train_step_flops(s: Shapes, spec: ModelSpec, stage: int, checkpointing: bool = False) -> dict[str, float]:
    """FLOPs of one training sample: matrix multiplies by part `{"tower", "projector", "lm", "itdm"}`, their sum
    `"matmul"`, the element-wise FLOPs `"elementwise"` (`train_step_elementwise`, all parts and the optimizer) and
    `"total"` = matmul + element-wise.

    Stage 1: tower frozen (1×), projector trained (3×), LM frozen but back-propagated through (2×).
    Stage 2: tower 1×, projector 3×, LM trained (3×). ITDM (MAGE only): a no-grad LM forward over the text.
    `checkpointing`: the LM's forward runs once more in the backward (+1×), as with gradient checkpointing.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage={stage!r}: expected 1 or 2.")
    text = s.stage1_text_tokens if stage == 1 else s.stage2_text_tokens
    tokens = spec.image_tokens(s) + text
    parts = {
        "tower": vision_tower_flops(s),
        "projector": 3 * projector_flops(s, spec),
        "lm": ((2 if stage == 1 else 3) + int(checkpointing)) * lm_flops(s, tokens),
        "itdm": lm_flops(s, text, lm_head_tokens=0) if (spec.projector == "ian" and spec.itdm) else 0.0,
    }
    parts["matmul"] = sum(parts.values())
    parts["elementwise"] = sum(e.flops for e in train_step_elementwise(s, spec, stage, checkpointing).values())
    parts["total"] = parts["matmul"] + parts["elementwise"]
    return parts


def prefill_flops(s: Shapes, spec: ModelSpec) -> float:
    """Forward FLOPs of a generation prefill for one prompt (LM head on the last token only)."""
    tokens = spec.image_tokens(s) + s.prompt_text_tokens
    return vision_tower_flops(s) + projector_flops(s, spec) + lm_flops(s, tokens, lm_head_tokens=1)


def decode_flops_per_token(s: Shapes, spec: ModelSpec) -> float:
    """Forward FLOPs of one decoded token at the middle of the generation (dense + attention to the cache)."""
    context = spec.image_tokens(s) + s.prompt_text_tokens + s.decode_new_tokens // 2
    return lm_dense_params(s) * 2 + s.lm_layers * 4 * context * s.lm_hidden


# ------------------------------------------------------------------------------------------- element-wise work
@dataclass(frozen=True)
class Elementwise:
    """Element-wise work of one part: `flops` = arithmetic operations, `traffic` = tensor elements read + written.

    Counted per kernel as it runs in PyTorch eager (the kernel sequences were read from a `TorchDispatchMode` trace
    of the models' forward and backward; `tests/test_benchmarks_perf.py` checks the traffic against such a trace).
    A kernel over `E` elements costs `flops_per_element·E` FLOPs (1 for add/mul/neg/pow/div/sum, see `_FLOPS`
    for the fused ones; an exp, erf, log or rsqrt counts as 1 FLOP) and moves `rw·E` elements: 3 for a binary
    op (2 reads, 1 write), 2 for a unary op, a copy or an op with a broadcast second operand, 1 for a reduction.
    Softmax inside SDPA runs on scores that never leave the cache: FLOPs, no traffic.
    """

    flops: float = 0.0
    traffic: float = 0.0

    def __add__(self, other: Elementwise) -> Elementwise:
        return Elementwise(self.flops + other.flops, self.traffic + other.traffic)

    def __mul__(self, factor: float) -> Elementwise:
        return Elementwise(self.flops * factor, self.traffic * factor)

    __rmul__ = __mul__


# FLOPs per element of the fused kernels (forward, backward); everything else 1. Transcendentals count 1.
_FLOPS = {
    "layer_norm": (7, 12),  # mean, centre, square-sum, scale by rstd, affine | both grads and the reductions
    "gelu": (5, 10),  # x·½·(1 + erf(x/√2)) | Φ(x) + x·φ(x), times the gradient
    "sigmoid": (4, 3),  # 1/(1 + exp(−x)) | s·(1 − s)·g
    "silu_backward": (9, 9),
    "log_softmax": (5, 4),  # max, subtract, exp, sum, subtract log | g − exp(y)·Σg
    "softmax_score": (5, 5),  # SDPA's online softmax per attention score (scale, max, exp, sum, rescale)
    "adamw": (14, 14),  # per parameter: decay, two moment updates, bias corrections, sqrt, divide, update
}


def _pass(elements: float, kind: str = "unary", flops_per_element: float = 1.0) -> Elementwise:
    rw = {"unary": 2, "binary": 3, "reduce": 1, "copy": 2}[kind]
    return Elementwise(0.0 if kind == "copy" else flops_per_element * elements, rw * elements)


def _layer_norm(elements: float, backward: bool = False) -> Elementwise:
    """`native_layer_norm` (reads x, writes y) | `native_layer_norm_backward` (reads x, g; writes dx)."""
    if backward:
        return _pass(elements, "binary", _FLOPS["layer_norm"][1])
    return _pass(elements, "unary", _FLOPS["layer_norm"][0])


def _gelu(elements: float, backward: bool = False) -> Elementwise:
    return _pass(elements, "binary" if backward else "unary", _FLOPS["gelu"][int(backward)])


def tower_elementwise(s: Shapes) -> Elementwise:
    """CLIP tower forward for one image (frozen: no backward). Embeddings: CLS concatenation (copy), position
    gather (copy), add, `pre_layrnorm`; per layer and token: 2 LayerNorms, 2 residual adds, quick-GELU on the MLP
    (`x·1.702` , sigmoid, product); SDPA's softmax on `heads·N'²` scores per layer (not causal)."""
    n, d, f = s.num_patches + 1, s.vision_hidden, s.vision_mlp
    embed = _pass(n * d, "copy") * 2 + _pass(n * d, "binary") + _layer_norm(n * d)
    per_token = _layer_norm(d) * 2 + _pass(d, "binary") * 2
    per_token += _pass(f) + _pass(f, "unary", _FLOPS["sigmoid"][0]) + _pass(f, "binary")
    scores = Elementwise(_FLOPS["softmax_score"][0] * s.vision_heads * n * n, 0.0)
    return embed + (per_token * n + scores) * s.vision_layers


def projector_elementwise(s: Shapes, spec: ModelSpec, backward: bool = False) -> Elementwise:
    """Element-wise work of the projector for one image, forward or backward (trained in stages 1 and 2).

    LLaVA: GELU between the two linears; backward: GELU backward and the two bias-gradient reductions.
    IAN: VAB (LayerNorm on the tower width, GELU after each hidden linear, LayerNorm), query CNN (GELU after the
    stem, residual depth-wise mixer with GELU, average pooling, out-projection bias and position-embedding adds),
    per SEB layer LayerNorms on queries and keys/values, residual adds, GELU on the 4× MLP and SDPA's softmax on
    `heads·Q·N` scores, and a LayerNorm on the output if `s.seb_output_norm`. Backward: the mirrored kernels, bias-gradient reductions of every linear,
    gradient accumulation where a tensor feeds two branches (residual stream, K and V from one normed context);
    the VAB's first LayerNorm only computes its weight gradients (its input comes from the frozen tower).
    """
    n, dv, dl = s.num_patches, s.vision_hidden, s.lm_hidden
    if spec.projector == "llava":
        if backward:
            return _gelu(n * dl, True) + _pass(n * dl, "reduce") * 2
        return _gelu(n * dl)
    q, c, heads = spec.queries, s.seb_hidden, s.seb_heads
    hidden_linears = s.vab_depth - 1
    if not backward:
        vab = _layer_norm(n * dv) + _gelu(n * dl) * hidden_linears + _layer_norm(n * dl)
        cnn = _gelu(n * c) * 2 + _pass(n * c, "binary") + _pass(n * c, "reduce") + _pass(q * dl) * 2
        layer = (
            _layer_norm(q * dl) * 2
            + _layer_norm(n * dl)
            + _pass(q * dl, "binary") * 2
            + _gelu(4 * q * dl)
            + Elementwise(_FLOPS["softmax_score"][0] * heads * q * n, 0.0)
        )
        return vab + cnn + layer * s.seb_layers + (_layer_norm(q * dl) if s.seb_output_norm else Elementwise())
    vab = (
        _pass(n * dv, "reduce") * 2
        + _gelu(n * dl, True) * hidden_linears
        + _layer_norm(n * dl, True)
        + _pass(n * dl, "reduce") * s.vab_depth
    )
    cnn = (
        _gelu(n * c, True) * 2
        + _pass(n * c, "binary")
        + _pass(n * c)  # the conv biases: in conv backward
        + _pass(q * dl, "reduce")
        + _pass(q * dl, "copy")
    )  # out-projection bias, position-embedding gradient
    layer = (
        _layer_norm(q * dl, True) * 2
        + _layer_norm(n * dl, True)
        + _gelu(4 * q * dl, True)
        + _pass(q * dl, "binary") * 2
        + _pass(n * dl, "binary")  # accumulations: 2 residuals, K/V context
        + _pass(q * dl, "reduce") * 3
        + _pass(n * dl, "reduce") * 2
        + _pass(4 * q * dl, "reduce")  # biases
        + Elementwise(_FLOPS["softmax_score"][1] * heads * q * n, 0.0)
    )
    return vab + cnn + layer * s.seb_layers + (_layer_norm(q * dl, True) if s.seb_output_norm else Elementwise())


def _rms_norm(d: float, backward: bool = False) -> Elementwise:
    """Llama's RMSNorm per token as eager PyTorch runs it: `pow, mean, (+eps, rsqrt per row), x·r, w·x` | the
    autograd chain of those (11 kernels over D, two of them for the weight gradient)."""
    if not backward:
        return _pass(d) + _pass(d, "reduce") + _pass(d) * 2
    return _pass(d) * 5 + _pass(d, "binary") * 4 + _pass(d, "reduce") * 2


def _rope(elements: float, backward: bool = False) -> Elementwise:
    """Rotary embedding of q or k (`elements` per token): `q·cos, −q₂, cat, rot·sin, +` | mirrored, the two
    halves re-assembled by `slice_backward` (copies) and summed."""
    if not backward:
        return _pass(elements) * 2 + _pass(elements / 2) + _pass(elements, "copy") + _pass(elements, "binary")
    return (
        _pass(elements) * 2 + _pass(elements / 2) + _pass(elements, "binary") * 2 + _pass(elements * 0.75, "copy") * 2
    )


def lm_layer_elementwise(s: Shapes, tokens: float, backward: bool = False) -> Elementwise:
    """One Llama decoder layer over a causal sequence of `tokens`: per token 2 RMSNorms, RoPE on q and k, the
    cache update (copies of k and v), 2 residual adds, SiLU and the gate·up product; SDPA's softmax on
    `heads·T²/2` scores. Backward: the mirrored kernels, the gradient accumulation of the residual stream (2 adds),
    of the q/k/v and of the gate/up projections' input gradients (3 adds), the copies making q/k gradients
    contiguous."""
    d, kv, f = s.lm_hidden, s.lm_kv_width, s.lm_mlp
    scores = s.lm_heads * tokens * tokens / 2
    if not backward:
        per_token = (
            _rms_norm(d) * 2
            + _rope(d)
            + _rope(kv)
            + _pass(kv, "copy") * 2
            + _pass(d, "binary") * 2
            + _pass(f)
            + _pass(f, "binary")
        )
        return per_token * tokens + Elementwise(_FLOPS["softmax_score"][0] * scores, 0.0)
    per_token = (
        _rms_norm(d, True) * 2
        + _rope(d, True)
        + _rope(kv, True)
        + _pass(d, "binary") * 5
        + _pass(d + kv, "copy")
        + _pass(f, "binary", 1) * 2
        + _pass(f, "binary", _FLOPS["silu_backward"][1])
    )
    return per_token * tokens + Elementwise(_FLOPS["softmax_score"][1] * scores, 0.0)


def lm_elementwise(
    s: Shapes, tokens: float, logit_tokens: float | None = None, backward: bool = False, image_tokens: float = 0
) -> Elementwise:
    """The LM over one sequence: the token-embedding gather, the image-feature scatter (`masked_scatter` of
    `image_tokens` rows into the embeddings), the decoder layers, the final RMSNorm and, on `logit_tokens` rows
    (default all), the cross-entropy: `log_softmax` over the vocabulary (forward) | `nll_loss_backward` (writes a
    dense `T·V` gradient) and `log_softmax` backward."""
    d, v = s.lm_hidden, s.vocab_size
    logit_tokens = tokens if logit_tokens is None else logit_tokens
    layers = lm_layer_elementwise(s, tokens, backward) * s.lm_layers + _rms_norm(d, backward) * tokens
    if not backward:
        embed = _pass(tokens * d, "copy")
        scatter = _pass(tokens * d, "copy") + _pass(image_tokens * d, "copy") if image_tokens else Elementwise()
        loss = _pass(logit_tokens * v, "unary", _FLOPS["log_softmax"][0])
        return embed + scatter + layers + loss
    scatter = (
        _pass(tokens * d) + _pass(tokens * d, "reduce") + _pass(image_tokens * d, "copy")
        if image_tokens
        else Elementwise()
    )
    loss = Elementwise(0.0, logit_tokens * v) + _pass(logit_tokens * v, "binary", _FLOPS["log_softmax"][1])
    return scatter + layers + loss


def train_step_elementwise(
    s: Shapes, spec: ModelSpec, stage: int, checkpointing: bool = False
) -> dict[str, Elementwise]:
    """Element-wise work of one training sample, by part (the counterpart of `train_step_flops`).

    The tower runs forward only; the projector and the LM run forward and backward in both stages (stage 1
    back-propagates through the frozen LM; its norm-weight reductions are counted anyway, a < 1 % difference);
    MAGE's ITDM adds a no-grad LM forward over the text. `optimizer`: fused AdamW on the trained parameters, once
    per step, divided by the batch size; stage 2 also writes the dense embedding gradient (`V·D` per step, in
    `"lm"`).
    `checkpointing`: the LM's decoder forward runs once more in the backward.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage={stage!r}: expected 1 or 2.")
    text = s.stage1_text_tokens if stage == 1 else s.stage2_text_tokens
    image = spec.image_tokens(s)
    tokens = image + text
    params = parameter_counts(s, spec)
    trained = params["projector"] + (params["lm"] if stage == 2 else 0.0)
    optimizer = Elementwise(_FLOPS["adamw"][0] * trained, 7 * trained)  # reads p, g, m, v; writes p, m, v
    # stage 2 trains the token embeddings: `embedding_dense_backward` reads the tokens' gradients and writes a dense
    # `V·D` gradient once per step
    embedding_grad = Elementwise(0.0, s.vocab_size * s.lm_hidden / s.batch_size + tokens * s.lm_hidden)
    parts = {
        "tower": tower_elementwise(s),
        "projector": projector_elementwise(s, spec) + projector_elementwise(s, spec, backward=True),
        "lm": (
            lm_elementwise(s, tokens, image_tokens=image)
            + lm_elementwise(s, tokens, backward=True, image_tokens=image)
            + (lm_layer_elementwise(s, tokens) * s.lm_layers if checkpointing else Elementwise())
            + (embedding_grad if stage == 2 else Elementwise())
        ),
        "itdm": (
            lm_elementwise(s, text, logit_tokens=0)
            + _pass(image * s.lm_hidden, "reduce")  # + mean over Q
            + _pass(image * s.lm_hidden, "binary")  # its gradient joins the LM's on the image tokens
            if (spec.projector == "ian" and spec.itdm)
            else Elementwise()
        ),
        "optimizer": optimizer * (1.0 / s.batch_size),
    }
    return parts


def prefill_elementwise(s: Shapes, spec: ModelSpec) -> Elementwise:
    """Element-wise work of a generation prefill for one prompt (forward only, no loss: logits of the last token)."""
    image = spec.image_tokens(s)
    tokens = image + s.prompt_text_tokens
    return (
        tower_elementwise(s)
        + projector_elementwise(s, spec)
        + lm_elementwise(s, tokens, logit_tokens=0, image_tokens=image)
    )


# ------------------------------------------------------------------------------------------------------ time model
@dataclass(frozen=True)
class Machine:
    """What the time model needs of a machine: its matrix-multiply rate and its memory bandwidth for element-wise
    kernels. On CPU both are measured by `benchmarks.perf` (`measure_machine`: plain GEMMs and an out-of-cache add,
    neither model involved) and stored in the results JSON; nothing is fitted to the models' timings."""

    gemm_flop_per_s: float
    bandwidth_bytes_per_s: float
    bytes_per_element: int = 4
    name: str = ""


def step_seconds(matmul_flops: float, elementwise: Elementwise, machine: Machine) -> dict[str, float]:
    """Roofline-style time: matmul FLOPs at the GEMM rate + element-wise traffic at the bandwidth (element-wise
    kernels are memory-bound: ≤ 1 FLOP per 4 bytes moved against a machine balance of several FLOP/byte)."""
    matmul_s = matmul_flops / machine.gemm_flop_per_s
    elementwise_s = elementwise.traffic * machine.bytes_per_element / machine.bandwidth_bytes_per_s
    return {"matmul_s": matmul_s, "elementwise_s": elementwise_s, "total_s": matmul_s + elementwise_s}


def train_step_seconds(
    s: Shapes, spec: ModelSpec, stage: int, machine: Machine, checkpointing: bool = False
) -> dict[str, float]:
    """Predicted seconds of one training sample on `machine` (`step_seconds` of the matmul and element-wise
    counts)."""
    flops = train_step_flops(s, spec, stage, checkpointing)
    elementwise = sum(train_step_elementwise(s, spec, stage, checkpointing).values(), Elementwise())
    return step_seconds(flops["matmul"], elementwise, machine)


def prefill_seconds(s: Shapes, spec: ModelSpec, machine: Machine) -> dict[str, float]:
    return step_seconds(prefill_flops(s, spec), prefill_elementwise(s, spec), machine)


# --------------------------------------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class Precision:
    weight_bytes: int = 4
    activation_bytes: int = 4
    grad_bytes: int = 4
    optimizer_bytes: int = 8  # AdamW: two fp32 moments


def parameter_counts(s: Shapes, spec: ModelSpec) -> dict[str, float]:
    """Parameters of tower, projector and LM (weights only, biases/norms of the tower included roughly)."""
    dv, dl, c = s.vision_hidden, s.lm_hidden, s.seb_hidden
    tower = s.vision_layers * (4 * dv * dv + 2 * dv * s.vision_mlp) + 3 * s.patch_size**2 * dv
    tower += (s.num_patches + 1) * dv
    if spec.projector == "llava":
        projector = dv * dl + dl * dl
    else:
        stem_in = 3 * s.patch_size**2 if s.seb_query_source == "pixels" else dv
        projector = dv * dl + (s.vab_depth - 1) * dl * dl + stem_in * c + 9 * c + c * dl + spec.queries * dl
        projector += s.seb_layers * 12 * dl * dl
    lm = s.lm_layers * (2 * dl * dl + 2 * dl * s.lm_kv_width + 3 * dl * s.lm_mlp) + 2 * dl * s.vocab_size
    return {"tower": tower, "projector": projector, "lm": lm}


def training_memory_bytes(
    s: Shapes, spec: ModelSpec, stage: int, precision: Precision = Precision(), checkpointing: bool = False
) -> dict[str, float]:
    """Model-state and activation memory of one training step at `s.batch_size` (bytes)."""
    params = parameter_counts(s, spec)
    trainable = params["projector"] + (params["lm"] if stage == 2 else 0)
    text = s.stage1_text_tokens if stage == 1 else s.stage2_text_tokens
    tokens = spec.image_tokens(s) + text
    d, f = s.lm_hidden, s.lm_mlp
    per_token_layer = d if checkpointing else 6 * d + 2 * s.lm_kv_width + 4 * f
    lm_acts = s.lm_layers * tokens * per_token_layer + (6 * d + 2 * s.lm_kv_width + 4 * f) * tokens * checkpointing
    logits = 2 * tokens * s.vocab_size
    image_tokens = spec.image_tokens(s)
    projector_acts = s.num_patches * 3 * d + (image_tokens * 10 * d if spec.projector == "ian" else s.num_patches * d)
    activations = s.batch_size * (lm_acts + logits + projector_acts) * precision.activation_bytes
    weights = sum(params.values()) * precision.weight_bytes
    states = trainable * (precision.grad_bytes + precision.optimizer_bytes)
    return {
        "weights": weights,
        "grads_and_optimizer": states,
        "activations": activations,
        "total": weights + states + activations,
    }


def lora_params(s: Shapes, rank: int) -> float:
    """LoRA parameters on every LM attention / MLP projection (q, k, v, o, gate, up, down) at `rank`."""
    d, kv, f = s.lm_hidden, s.lm_kv_width, s.lm_mlp
    per_layer = rank * ((d + d) * 2 + (d + kv) * 2 + 2 * (d + f) + (f + d))
    return s.lm_layers * per_layer


def qlora_memory_bytes(s: Shapes, spec: ModelSpec, rank: int | None = None, activation_bytes: int = 2) -> dict:
    """QLoRA training memory (bytes) as `training.lora` sets it up: the LM decoder's projections in NF4 with double
    quantisation (≈ 0.53 bytes/parameter), everything else (embeddings, lm_head, tower, projector) upcast to fp32 by
    `prepare_model_for_kbit_training`, LoRA + the fully trained projector (`modules_to_save`) with fp32 weights,
    gradients and AdamW moments (16 bytes/parameter), checkpointed activations at `s.batch_size` (stage-2 text)."""
    rank = s.lora_rank if rank is None else rank
    params = parameter_counts(s, spec)
    d = s.lm_hidden
    embeddings = 2 * s.vocab_size * d
    decoder = params["lm"] - embeddings
    quantised = decoder * 0.53
    full_precision = (embeddings + params["tower"] + params["projector"]) * 4
    trainable = (lora_params(s, rank) + params["projector"]) * 12  # grads + 2 moments (weights counted above for
    trainable += lora_params(s, rank) * 4  # the projector, here for LoRA)
    tokens = spec.image_tokens(s) + s.stage2_text_tokens
    activations = (
        s.batch_size
        * (s.lm_layers * tokens * d + 2 * tokens * s.vocab_size + (6 * d + 4 * s.lm_mlp) * tokens)
        * activation_bytes
    )
    total = quantised + full_precision + trainable + activations
    return {
        "quantised_decoder": quantised,
        "full_precision": full_precision,
        "trainable_states": trainable,
        "activations": activations,
        "total": total,
    }


def kv_cache_bytes(s: Shapes, spec: ModelSpec, batch: int, bytes_per_element: int = 4) -> float:
    """KV cache at the end of a generation (prompt + new tokens) for `batch` sequences."""
    tokens = spec.image_tokens(s) + s.prompt_text_tokens + s.decode_new_tokens
    return 2 * s.lm_layers * tokens * s.lm_kv_width * batch * bytes_per_element


# ---------------------------------------------------------------------------------------------------- predictions
@dataclass
class Prediction:
    """Predicted MAGE-Q / LLaVA ratios for one shape setting (speed ratios > 1 mean MAGE is faster)."""

    shapes: str
    queries: int
    llava_image_tokens: int
    stage1_speedup: float
    stage2_speedup: float
    stage2_speedup_without_itdm: float
    prefill_speedup: float
    decode_speedup: float
    ian_share_stage2: float
    stage2_memory_ratio: float
    kv_cache_ratio: float
    flops: dict = field(default_factory=dict)
    matmul_only: dict = field(default_factory=dict)  # the same speed-ups from matrix-multiply FLOPs alone
    time_model: dict = field(default_factory=dict)  # speed-ups from `step_seconds` on a `Machine` (when given)


def predict(
    s: Shapes,
    queries: int,
    precision: Precision = Precision(),
    checkpointing: bool = False,
    machine: Machine | None = None,
) -> Prediction:
    """FLOP-based predictions: time ∝ FLOPs (matmul + element-wise, equal efficiency for every FLOP), memory from
    `training_memory_bytes`; with a `machine`, also the time model's speed-ups (matmul FLOPs at its GEMM rate +
    element-wise traffic at its bandwidth)."""
    llava, mage = ModelSpec("llava"), ModelSpec("ian", queries)
    mage_no_itdm = replace(mage, itdm=False)
    l1, m1 = train_step_flops(s, llava, 1, checkpointing), train_step_flops(s, mage, 1, checkpointing)
    l2, m2 = train_step_flops(s, llava, 2, checkpointing), train_step_flops(s, mage, 2, checkpointing)
    m2n = train_step_flops(s, mage_no_itdm, 2, checkpointing)
    lmem = training_memory_bytes(s, llava, 2, precision, checkpointing)["total"]
    mmem = training_memory_bytes(s, mage, 2, precision, checkpointing)["total"]
    prefill = {spec.projector: prefill_flops(s, spec) + prefill_elementwise(s, spec).flops for spec in (llava, mage)}
    ian_elementwise = train_step_elementwise(s, mage, 2, checkpointing)["projector"].flops
    time_model = {}
    if machine is not None:

        def ratio(stage: int, spec: ModelSpec) -> float:
            return (
                train_step_seconds(s, llava, stage, machine, checkpointing)["total_s"]
                / train_step_seconds(s, spec, stage, machine, checkpointing)["total_s"]
            )

        time_model = {
            "stage1_speedup": ratio(1, mage),
            "stage2_speedup": ratio(2, mage),
            "stage2_speedup_without_itdm": ratio(2, mage_no_itdm),
            "prefill_speedup": prefill_seconds(s, llava, machine)["total_s"]
            / prefill_seconds(s, mage, machine)["total_s"],
            "machine": asdict(machine),
        }
    return Prediction(
        shapes=s.name,
        queries=queries,
        llava_image_tokens=s.num_patches,
        stage1_speedup=l1["total"] / m1["total"],
        stage2_speedup=l2["total"] / m2["total"],
        stage2_speedup_without_itdm=l2["total"] / m2n["total"],
        prefill_speedup=prefill["llava"] / prefill["ian"],
        decode_speedup=decode_flops_per_token(s, llava) / decode_flops_per_token(s, mage),
        ian_share_stage2=(m2["projector"] + ian_elementwise) / m2["total"],
        stage2_memory_ratio=mmem / lmem,
        kv_cache_ratio=kv_cache_bytes(s, mage, 1) / kv_cache_bytes(s, llava, 1),
        flops={
            "llava_stage1": l1,
            "mage_stage1": m1,
            "llava_stage2": l2,
            "mage_stage2": m2,
            "llava_prefill": prefill["llava"],
            "mage_prefill": prefill["ian"],
            "ian_parts": ian_flops(s, queries),
        },
        matmul_only={
            "stage1_speedup": l1["matmul"] / m1["matmul"],
            "stage2_speedup": l2["matmul"] / m2["matmul"],
            "stage2_speedup_without_itdm": l2["matmul"] / m2n["matmul"],
            "prefill_speedup": prefill_flops(s, llava) / prefill_flops(s, mage),
        },
        time_model=time_model,
    )


def predict_anchored(s: Shapes, queries: int) -> dict[str, float]:
    """MAGE-Q figures on an H100 predicted from the LLaVA-576 anchors (`H100_ANCHORS`) and the FLOP ratios."""
    p = predict(s, queries, Precision(2, 2, 2, 8), checkpointing=True)
    return {
        "stage1_samples_per_s": H100_ANCHORS["llava576_stage1_samples_per_s"] * p.stage1_speedup,
        "stage2_samples_per_s": H100_ANCHORS["llava576_stage2_samples_per_s"] * p.stage2_speedup,
        "stage2_speedup": p.stage2_speedup,
        "ian_share_stage2": p.ian_share_stage2,
        "kv_cache_ratio": p.kv_cache_ratio,
    }


def relative_error(predicted: float, measured: float) -> float:
    """`|predicted − measured| / measured` (NaN when nothing was measured)."""
    if not measured or math.isnan(measured):
        return float("nan")
    return abs(predicted - measured) / abs(measured)


__all__ = [
    "Shapes",
    "SHAPES",
    "ModelSpec",
    "Precision",
    "Prediction",
    "H100_ANCHORS",
    "GPU_TARGETS",
    "Elementwise",
    "Machine",
    "tower_elementwise",
    "projector_elementwise",
    "lm_layer_elementwise",
    "lm_elementwise",
    "train_step_elementwise",
    "prefill_elementwise",
    "step_seconds",
    "train_step_seconds",
    "prefill_seconds",
    "vision_tower_flops",
    "llava_projector_flops",
    "ian_flops",
    "lm_flops",
    "lm_dense_params",
    "projector_flops",
    "train_step_flops",
    "prefill_flops",
    "decode_flops_per_token",
    "parameter_counts",
    "training_memory_bytes",
    "kv_cache_bytes",
    "lora_params",
    "qlora_memory_bytes",
    "predict",
    "predict_anchored",
    "relative_error",
]
