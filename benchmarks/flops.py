"""Analytical FLOP and memory model of MAGE and LLaVA-1.5 (pure Python, no torch).

Counts matrix-multiply FLOPs (2 per multiply-add) of one *sample* (one image + its text) for the three parts that the
two models share or differ in, and derives the MAGE/LLaVA cost ratios that the measured benchmarks are checked against.

Parts and formulas (N = patch tokens, T_img = image tokens in the LM input, T = T_img + text tokens):
- vision tower (CLIP ViT, all layers run, frozen: forward only, no gradient flows into it):
  per layer `2·N'·(4·D_v² + 2·D_v·F_v) + 4·N'²·D_v` with N' = N + 1 (CLS), plus the patch embedding `2·N·3p²·D_v`;
- projector, forward: LLaVA `2·N·(D_v·D_l + D_l²)`; MAGE's IAN = VAB `2·N·(D_v·D_l + (depth−1)·D_l²)` + the SEB's
  query CNN (stem `2·N·3p²·C` or `2·N·D_v·C`, depth-wise 3×3 mixer `2·N·9·C`, out-projection `2·Q·C·D_l`) + per SEB layer
  `2·Q·2D_l² (q, o) + 2·N·2D_l² (k, v) + 4·Q·N·D_l (attention) + 2·Q·8D_l² (MLP)`;
- LM (Llama): per layer and token `2·(2·D² + 2·D·D_kv + 3·D·F)` plus causal attention `2·T·D` per token on average
  (`4·T²·D/2` per sequence: SDPA skips the masked half), and the LM head `2·D·V` per token.
Training multipliers: a trained part costs 3× its forward (forward + input-gradient + weight-gradient), a frozen part
that gradients must flow *through* (the LM in stage 1) 2×, a frozen part at the start of the graph (the tower) 1×.
MAGE's ITDM term with `itdm_text_source="hidden"` adds one no-grad LM forward over the text tokens.

Memory: parameters, gradients and AdamW states (bytes per element configurable), training activations per sample
(per LM layer and token ≈ `(6·D + 2·D_kv + 4·F)` stored elements; with gradient checkpointing only the layer inputs
`D` plus one layer's worth), logits `T·V` (×2: logits + their float32 log-softmax), and the KV cache
`2·L·T·D_kv` elements per sample.

The model ignores element-wise work (norms, activations, softmax, RoPE, optimizer arithmetic): that is what makes the
measured ratios on CPU drift from the FLOP ratios, and the report states by how much.
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
    # The tests' tiny model (DESIGN §5): 16 patches; Q = 4 is the 4× reduction, Q = 16 keeps every token.
    "tiny": Shapes(
        name="tiny", image_size=64, patch_size=16, vision_hidden=64, vision_layers=2, vision_heads=4, vision_mlp=128,
        lm_hidden=128, lm_layers=2, lm_heads=4, lm_kv_heads=2, lm_mlp=256, vocab_size=1000, batch_size=2,
        stage1_text_tokens=8, stage2_text_tokens=8, prompt_text_tokens=6, decode_new_tokens=4, queries=(4, 16),
        seb_hidden=64, seb_layers=1, seb_heads=4, max_positions=512, decode_batches=(1, 2), lora_rank=4,
    ),
    # Scaled-down CPU setting of the issue: 256 patches → 64 queries, as 576 → 144.
    "small": Shapes(
        name="small", image_size=224, patch_size=14, vision_hidden=384, vision_layers=6, vision_heads=6,
        vision_mlp=1536, lm_hidden=512, lm_layers=8, lm_heads=8, lm_kv_heads=8, lm_mlp=1376, vocab_size=32064,
        batch_size=4, stage1_text_tokens=32, stage2_text_tokens=64, prompt_text_tokens=32, decode_new_tokens=32,
        queries=(64, 16, 144), seb_hidden=384, max_positions=2048,
    ),
    # The paper: CLIP ViT-L/14-336 + Vicuna-7B / 13B, Q = 144 (576 / 4); LLaVA-1.5's batch per H100 and text lengths.
    "7b": Shapes(
        name="7b", image_size=336, patch_size=14, vision_hidden=1024, vision_layers=24, vision_heads=16,
        vision_mlp=4096, lm_hidden=4096, lm_layers=32, lm_heads=32, lm_kv_heads=32, lm_mlp=11008, vocab_size=32064,
        batch_size=16, stage1_text_tokens=64, stage2_text_tokens=128, prompt_text_tokens=64, decode_new_tokens=128,
        queries=(144, 64, 576), seb_hidden=1024, lora_rank=128,
    ),
    "13b": Shapes(
        name="13b", image_size=336, patch_size=14, vision_hidden=1024, vision_layers=24, vision_heads=16,
        vision_mlp=4096, lm_hidden=5120, lm_layers=40, lm_heads=40, lm_kv_heads=40, lm_mlp=13824, vocab_size=32064,
        batch_size=16, stage1_text_tokens=64, stage2_text_tokens=128, prompt_text_tokens=64, decode_new_tokens=128,
        queries=(144, 64, 576), seb_hidden=1024, lora_rank=128,
    ),
}

# DESIGN §6: LLaVA-1.5-7B reference points measured on one H100 (bs 16, gradient checkpointing), and the GPU targets.
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


def train_step_flops(s: Shapes, spec: ModelSpec, stage: int) -> dict[str, float]:
    """FLOPs of one training sample: `{"tower", "projector", "lm", "itdm", "total"}`.

    Stage 1: tower frozen (1×), projector trained (3×), LM frozen but back-propagated through (2×).
    Stage 2: tower 1×, projector 3×, LM trained (3×). ITDM (MAGE only): a no-grad LM forward over the text.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage={stage!r}: expected 1 or 2.")
    text = s.stage1_text_tokens if stage == 1 else s.stage2_text_tokens
    tokens = spec.image_tokens(s) + text
    parts = {
        "tower": vision_tower_flops(s),
        "projector": 3 * projector_flops(s, spec),
        "lm": (2 if stage == 1 else 3) * lm_flops(s, tokens),
        "itdm": lm_flops(s, text, lm_head_tokens=0) if (spec.projector == "ian" and spec.itdm) else 0.0,
    }
    parts["total"] = sum(parts.values())
    return parts


def prefill_flops(s: Shapes, spec: ModelSpec) -> float:
    """Forward FLOPs of a generation prefill for one prompt (LM head on the last token only)."""
    tokens = spec.image_tokens(s) + s.prompt_text_tokens
    return vision_tower_flops(s) + projector_flops(s, spec) + lm_flops(s, tokens, lm_head_tokens=1)


def decode_flops_per_token(s: Shapes, spec: ModelSpec) -> float:
    """Forward FLOPs of one decoded token at the middle of the generation (dense + attention to the cache)."""
    context = spec.image_tokens(s) + s.prompt_text_tokens + s.decode_new_tokens // 2
    return lm_dense_params(s) * 2 + s.lm_layers * 4 * context * s.lm_hidden


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
    return {"weights": weights, "grads_and_optimizer": states, "activations": activations,
            "total": weights + states + activations}


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
    trainable += lora_params(s, rank) * 4                          # the projector, here for LoRA)
    tokens = spec.image_tokens(s) + s.stage2_text_tokens
    activations = s.batch_size * (s.lm_layers * tokens * d + 2 * tokens * s.vocab_size + (6 * d + 4 * s.lm_mlp)
                                  * tokens) * activation_bytes
    total = quantised + full_precision + trainable + activations
    return {"quantised_decoder": quantised, "full_precision": full_precision, "trainable_states": trainable,
            "activations": activations, "total": total}


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


def predict(s: Shapes, queries: int, precision: Precision = Precision(), checkpointing: bool = False) -> Prediction:
    """FLOP-based predictions: time ∝ FLOPs (equal efficiency for both models), memory from `training_memory_bytes`."""
    llava, mage = ModelSpec("llava"), ModelSpec("ian", queries)
    mage_no_itdm = replace(mage, itdm=False)
    l1, m1 = train_step_flops(s, llava, 1), train_step_flops(s, mage, 1)
    l2, m2 = train_step_flops(s, llava, 2), train_step_flops(s, mage, 2)
    m2n = train_step_flops(s, mage_no_itdm, 2)
    lmem = training_memory_bytes(s, llava, 2, precision, checkpointing)["total"]
    mmem = training_memory_bytes(s, mage, 2, precision, checkpointing)["total"]
    return Prediction(
        shapes=s.name,
        queries=queries,
        llava_image_tokens=s.num_patches,
        stage1_speedup=l1["total"] / m1["total"],
        stage2_speedup=l2["total"] / m2["total"],
        stage2_speedup_without_itdm=l2["total"] / m2n["total"],
        prefill_speedup=prefill_flops(s, llava) / prefill_flops(s, mage),
        decode_speedup=decode_flops_per_token(s, llava) / decode_flops_per_token(s, mage),
        ian_share_stage2=m2["projector"] / m2["total"],
        stage2_memory_ratio=mmem / lmem,
        kv_cache_ratio=kv_cache_bytes(s, mage, 1) / kv_cache_bytes(s, llava, 1),
        flops={
            "llava_stage1": l1, "mage_stage1": m1, "llava_stage2": l2, "mage_stage2": m2,
            "llava_prefill": prefill_flops(s, llava), "mage_prefill": prefill_flops(s, mage),
            "ian_parts": ian_flops(s, queries),
        },
    )


def predict_anchored(s: Shapes, queries: int) -> dict[str, float]:
    """MAGE-Q figures on an H100 predicted from DESIGN §6's LLaVA-576 anchors and the FLOP ratios (predictions)."""
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
    "Shapes", "SHAPES", "ModelSpec", "Precision", "Prediction", "H100_ANCHORS", "GPU_TARGETS",
    "vision_tower_flops", "llava_projector_flops", "ian_flops", "lm_flops", "lm_dense_params", "projector_flops",
    "train_step_flops", "prefill_flops", "decode_flops_per_token", "parameter_counts", "training_memory_bytes",
    "kv_cache_bytes", "lora_params", "qlora_memory_bytes", "predict", "predict_anchored", "relative_error",
]
