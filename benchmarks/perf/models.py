"""Random-weight LLaVA and MAGE models of the same `Shapes`, their training stages, and synthetic batches."""

from __future__ import annotations

from benchmarks.flops import ModelSpec, Shapes
from benchmarks.perf.settings import RunSettings, image_token_id, torch_dtype, torch_module


def vision_config(s: Shapes):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=s.vision_hidden,
        intermediate_size=s.vision_mlp,
        num_hidden_layers=s.vision_layers,
        num_attention_heads=s.vision_heads,
        image_size=s.image_size,
        patch_size=s.patch_size,
        projection_dim=s.vision_hidden,
        attn_implementation="sdpa",
    )


def text_config(s: Shapes):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=s.lm_hidden,
        intermediate_size=s.lm_mlp,
        num_hidden_layers=s.lm_layers,
        num_attention_heads=s.lm_heads,
        num_key_value_heads=s.lm_kv_heads,
        vocab_size=s.vocab_size,
        max_position_embeddings=s.max_positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )


def build_model(s: Shapes, spec: ModelSpec, settings: RunSettings):
    """A random-weight `LlavaForConditionalGeneration` or `MageForConditionalGeneration` on the run's device/dtype."""
    torch = torch_module()
    torch.manual_seed(settings.seed)
    if spec.projector == "llava":
        from transformers import LlavaConfig, LlavaForConditionalGeneration

        config = LlavaConfig(
            vision_config=vision_config(s),
            text_config=text_config(s),
            image_token_id=image_token_id(s),
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            projector_hidden_act="gelu",
            image_seq_length=s.num_patches,
            tie_word_embeddings=False,
        )
        config._attn_implementation = "sdpa"
        model = LlavaForConditionalGeneration(config)
    else:
        from modeling_mage import MageConfig, MageForConditionalGeneration

        config = MageConfig(
            vision_config=vision_config(s),
            text_config=text_config(s),
            image_token_id=image_token_id(s),
            projector_type="ian",
            num_query_tokens=spec.queries,
            seb_hidden_size=s.seb_hidden,
            seb_num_layers=s.seb_layers,
            seb_num_heads=s.seb_heads,
            vab_depth=s.vab_depth,
            seb_query_source=s.seb_query_source,
            seb_output_norm=s.seb_output_norm,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        config._attn_implementation = "sdpa"
        model = MageForConditionalGeneration(config)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    model.generation_config.bos_token_id = 1
    return model.to(settings.device, torch_dtype(settings.dtype))


def enable_gradient_checkpointing(model) -> None:
    """transformers 5.23 renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable`: use either."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def set_stage(model, stage: int) -> dict[str, int]:
    """Stage 1: projector only; stage 2: projector + LM (tower frozen). Works for MAGE and LLaVA (same names)."""
    from training.trainer import set_trainable_for_stage

    return set_trainable_for_stage(model, stage)


def make_batch(s: Shapes, spec: ModelSpec, stage: int, batch_size: int, settings: RunSettings, prompt: bool = False):
    """Synthetic batch: `BOS, <image>×T_img, text…` with random ids, labels on the caption (stage 1) or the second
    half of the text (stage 2, the answer), and for MAGE the ITDM text (BOS + supervised tokens).

    `prompt=True` gives a generation prompt (`s.prompt_text_tokens` of text, no labels).
    Returns a dict of tensors on the run's device: input_ids/attention_mask/labels `(B, L)`, pixel_values
    `(B, 3, H, W)` and, for MAGE training, itdm_input_ids/itdm_attention_mask/itdm_pool_mask `(B, T_sup + 1)`.
    """
    torch = torch_module()
    generator = torch.Generator().manual_seed(settings.seed + stage)
    text = s.prompt_text_tokens if prompt else (s.stage1_text_tokens if stage == 1 else s.stage2_text_tokens)
    image_tokens = spec.image_tokens(s)
    ids = torch.randint(3, image_token_id(s), (batch_size, text), generator=generator)
    image = torch.full((batch_size, image_tokens), image_token_id(s))
    input_ids = torch.cat([torch.ones(batch_size, 1, dtype=torch.long), image, ids[:, 1:]], dim=1)
    pixel_values = torch.randn(batch_size, 3, s.image_size, s.image_size, generator=generator)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixel_values.to(torch_dtype(settings.dtype)),
    }
    if not prompt:
        labels = torch.full_like(input_ids, -100)
        supervised_from = 1 + image_tokens + (0 if stage == 1 else (text - 1) // 2)
        labels[:, supervised_from:] = input_ids[:, supervised_from:]
        batch["labels"] = labels
        if spec.projector == "ian" and spec.itdm:
            supervised = input_ids[:, supervised_from:]
            batch["itdm_input_ids"] = torch.cat([torch.ones(batch_size, 1, dtype=torch.long), supervised], dim=1)
            batch["itdm_attention_mask"] = torch.ones_like(batch["itdm_input_ids"])
            pool = torch.ones_like(batch["itdm_input_ids"])
            pool[:, 0] = 0
            batch["itdm_pool_mask"] = pool
    return {key: value.to(settings.device) for key, value in batch.items()}


def tokens_per_sample(batch: dict) -> int:
    return int(batch["attention_mask"][0].sum())
