"""MAGE training: LLaVA-format data, the ITG + ITDM trainer, stage recipes, LoRA/QLoRA and multi-GPU configs.

Heavy modules (torch, transformers, peft, trl) are imported by the sub-modules that need them, so importing this
package stays cheap (the `mage` CLI lists sub-commands without loading torch).
"""
