"""How a run measures (`RunSettings`), which models it compares, and torch loaded only when a measurement needs it."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.flops import ModelSpec, Shapes


@dataclass
class RunSettings:
    """How a run measures: device/dtype, repeats, steps and what to include."""

    device: str = "cpu"
    dtype: str = "float32"
    repeats: int = 3
    steps: int = 1
    warmup: int = 1
    gradient_checkpointing: bool = False
    compile_backend: str = "inductor"
    decode_tokens: int | None = None
    memory: bool = True
    lora: bool = True
    threads: int = 0
    seed: int = 0
    allocator: str = "retain"  # CPU: "retain" keeps freed heap memory in the process (see configure_allocator)
    quick: bool = False  # smoke run: memory for LLaVA + the headline MAGE only, LoRA/QLoRA for the headline MAGE only


def model_specs(shapes: Shapes) -> list[ModelSpec]:
    """LLaVA (all patches), MAGE at every Q of the shape setting, and the headline MAGE without its ITDM term."""
    specs = [ModelSpec("llava")] + [ModelSpec("ian", q) for q in shapes.queries]
    return specs + [ModelSpec("ian", shapes.queries[0], itdm=False)]


def torch_module():
    import torch

    return torch


def torch_dtype(name: str):
    torch = torch_module()
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def image_token_id(shapes: Shapes) -> int:
    return shapes.vocab_size - 1
