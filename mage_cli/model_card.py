"""Model cards for MAGE checkpoints, written with `huggingface_hub.ModelCard` (metadata + usage for 4.x and 5.x)."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A MAGE (*Multimodal Alignment and Generation Enhancement via Bridging Visual and Semantic Spaces*, E, Yang et
al.) vision-language model: a CLIP-style vision tower (penultimate layer, CLS
dropped) → the **IAN** projector (VAB + SEB, {{ num_query_tokens }} query tokens per image) → a causal LM. The model code
ships with the checkpoint: load it with `trust_remote_code=True`.

## Usage

transformers 5.x:

```python
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained("{{ repo_id }}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{{ repo_id }}", trust_remote_code=True)
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=[image], text=[prompt], return_tensors="pt")
print(processor.batch_decode(model.generate(**inputs, max_new_tokens=32), skip_special_tokens=True))
```

transformers 4.x (4.51 and later):

```python
from transformers import AutoModelForVision2Seq, AutoProcessor
model = AutoModelForVision2Seq.from_pretrained("{{ repo_id }}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{{ repo_id }}", trust_remote_code=True)
```

## Architecture

| part | setting |
| --- | --- |
| vision tower | {{ vision_type }}, {{ image_size }} px, patch {{ patch_size }}, layer {{ feature_layer }} |
| projector | {{ projector_type }} → {{ image_seq_length }} tokens per image |
| language model | {{ text_type }}, {{ text_layers }} layers, width {{ text_hidden }} |
| ITDM | weight {{ itdm_weight }}, text source `{{ itdm_text_source }}`, reduction `{{ itdm_reduction }}` |

## Training

{{ training }}

## Evaluation

{{ evaluation }}

## Limits

{{ limits }}
"""

DEFAULT_LIMITS = (
    "Answers can be wrong or invented; check them before relying on them. Tool plans produced by the model are data: "
    "validate them against the plan schema before executing anything."
)


def _flatten_results(results: dict | None) -> dict[str, dict[str, float]]:
    """`{benchmark: {metric: value}}` from a `mage eval` results.json or an already flat mapping."""
    if not results:
        return {}
    benchmarks = results.get("benchmarks", results)
    flat: dict[str, dict[str, float]] = {}
    for name, value in benchmarks.items():
        if not isinstance(value, dict):
            continue
        metrics = value.get("metrics", value)
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numeric:
            flat[name] = numeric
    return flat


def _image_seq_length(config: dict) -> int | str:
    """Tokens per image, from the saved config (query projectors: Q; patch projectors: the patch count)."""
    try:
        from modeling_mage import MageConfig  # heavy

        return MageConfig.from_dict(config).image_seq_length
    except Exception:  # a card must not fail on a config this version cannot parse
        return config.get("num_query_tokens", "?")


def build_model_card(
    folder: Path,
    results: dict | None = None,
    license: str = "apache-2.0",
    repo_id: str = "USER/mage",
    base_models: list[str] | None = None,
    datasets: list[str] | None = None,
    training: str | None = None,
    limits: str = DEFAULT_LIMITS,
):
    """A `ModelCard` for the checkpoint in `folder` (reads its config.json) with a `model-index` from `results`."""
    config = json.loads((Path(folder) / "config.json").read_text())
    vision, text = config.get("vision_config", {}), config.get("text_config", {})
    model_name = repo_id.split("/")[-1]
    eval_results = [
        EvalResult(
            task_type="image-text-to-text",
            dataset_type=name,
            dataset_name=name,
            metric_type=metric,
            metric_value=round(value, 4),
        )
        for name, metrics in _flatten_results(results).items()
        for metric, value in metrics.items()
    ]
    card_data = ModelCardData(
        language=["en"],
        license=license,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=["mage", "vision-language", "custom_code", "llava"],
        base_model=base_models or None,
        datasets=datasets or None,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    evaluation = "No evaluation results were attached."
    if eval_results:
        rows = "\n".join(f"| {r.dataset_name} | {r.metric_type} | {r.metric_value} |" for r in eval_results)
        evaluation = "| benchmark | metric | value |\n| --- | --- | --- |\n" + rows
    image_seq_length = _image_seq_length(config)
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        model_name=model_name,
        repo_id=repo_id,
        num_query_tokens=config.get("num_query_tokens"),
        vision_type=vision.get("model_type"),
        image_size=vision.get("image_size"),
        patch_size=vision.get("patch_size"),
        feature_layer=config.get("vision_feature_layer"),
        projector_type=config.get("projector_type"),
        image_seq_length=image_seq_length,
        text_type=text.get("model_type"),
        text_layers=text.get("num_hidden_layers"),
        text_hidden=text.get("hidden_size"),
        itdm_weight=config.get("itdm_weight"),
        itdm_text_source=config.get("itdm_text_source"),
        itdm_reduction=config.get("itdm_reduction"),
        training=training or "See the training recipe that produced this checkpoint.",
        evaluation=evaluation,
        limits=limits,
    )


__all__ = ["build_model_card"]
