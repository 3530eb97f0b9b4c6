"""Alignment methods of the seed papers beside MAGE's ITDM: SEA (token-level contrastive alignment of visual tokens to
word embeddings) and VLSA (SA-Perceiver, reconstruction through a denoiser, cognition-alignment data), plus the
projector ablation runner (`mage ablate`).

Every training objective here is a callable `(model, inputs, outputs) -> (loss, logs)` (see `training.objectives`),
so any trainer can add it as `loss = ITG + itdm_weight·ITDM + weight·objective(...)`. docs/alignment.md says which
parts reproduce the papers and which are named substitutes.
"""
