"""MAGE model: configuration, IAN projector and the vision-language model.

Importing this package registers MAGE with the transformers Auto classes in-process (AutoConfig, AutoModel,
AutoModelForImageTextToText and, where transformers still has it, AutoModelForVision2Seq).
"""

import transformers

from .configuration_mage import MageConfig
from .ian import (
    MageIntelligentAlignmentNetwork,
    MageLinearProjector,
    MageMLPProjector,
    MageSemanticEnhancementBlock,
    MageVectorAlignmentBlock,
    build_projector,
)
from .modeling_mage import (
    QUANTIZATION_SKIP_MODULES,
    MageCausalLMOutputWithPast,
    MageForConditionalGeneration,
    MageModel,
    MageModelOutputWithPast,
    MagePreTrainedModel,
)


def register_mage() -> None:
    """Register the MAGE classes with the transformers Auto classes (idempotent)."""
    transformers.AutoConfig.register("mage", MageConfig, exist_ok=True)
    transformers.AutoModel.register(MageConfig, MageModel, exist_ok=True)
    for auto_name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        auto_class = getattr(transformers, auto_name, None)
        if auto_class is not None:
            auto_class.register(MageConfig, MageForConditionalGeneration, exist_ok=True)


register_mage()

__all__ = [
    "MageConfig",
    "MageModel",
    "MageForConditionalGeneration",
    "MagePreTrainedModel",
    "MageModelOutputWithPast",
    "MageCausalLMOutputWithPast",
    "MageVectorAlignmentBlock",
    "MageSemanticEnhancementBlock",
    "MageIntelligentAlignmentNetwork",
    "MageLinearProjector",
    "MageMLPProjector",
    "build_projector",
    "QUANTIZATION_SKIP_MODULES",
    "register_mage",
]
