"""Training losses as pure tensor functions, tested without a Trainer.

ITDM (Image-Text Distribution Matching, MAGE paper Eq. 2) compares the mean IAN output of an image with the mean LLM
encoding of its caption / answers:

    L_ITDM = 1/N Σ_i ||d_ian_i − d_llm_i||²       over the N image-bearing samples i

`reduction="sum"` is Eq. 2 as printed (squared L2 norm per sample); `reduction="mean"` divides each sample's squared
norm by the feature width D (what `torch.nn.functional.mse_loss` does; scale-stable across model widths).

Gradient accumulation: Trainer normalises the ITG cross-entropy by `num_items_in_batch`, the supervised-token count of
the *whole* accumulated batch, and sums the micro-batch losses. To keep ITDM exactly a mean over the accumulated
batch, pass `num_items` = the number of image-bearing samples in the whole accumulated batch: each micro-batch then
contributes `sum_i ||·||² / num_items`, and the sum over micro-batches is the full-batch mean (2 × 4 == 1 × 8).
Without `num_items` the result is the mean over this call's image-bearing samples.
"""

from __future__ import annotations

import torch

ITDM_REDUCTIONS = ("mean", "sum")


def itdm_per_sample(d_ian: torch.Tensor, d_llm: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared distance per sample.

    Args:
        d_ian: `(B, D)` mean IAN output per image (carries the gradient).
        d_llm: `(B, D)` mean LLM text encoding per sample (a target: detached here).
        reduction: `"mean"` (over the D features) or `"sum"` (squared L2 norm, Eq. 2 as printed).

    Returns:
        `(B,)` float tensor.
    """
    if reduction not in ITDM_REDUCTIONS:
        raise ValueError(f"itdm reduction={reduction!r} is not supported; expected one of {list(ITDM_REDUCTIONS)}.")
    if d_ian.shape != d_llm.shape or d_ian.ndim != 2:
        raise ValueError(
            f"ITDM expects d_ian and d_llm of the same shape (B, D); got {tuple(d_ian.shape)} and {tuple(d_llm.shape)}."
        )
    squared = (d_ian.float() - d_llm.detach().float()).pow(2)
    return squared.mean(dim=-1) if reduction == "mean" else squared.sum(dim=-1)


def itdm_loss(
    d_ian: torch.Tensor,
    d_llm: torch.Tensor,
    image_mask: torch.Tensor | None = None,
    reduction: str = "mean",
    num_items: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """ITDM loss, a scalar.

    Args:
        d_ian: `(B, D)`; d_llm: `(B, D)` (see `itdm_per_sample`).
        image_mask: `(B,)` bool, True for image-bearing samples; rows that are False contribute nothing
            (default: all rows).
        reduction: `"mean"` or `"sum"` over features (see the module docstring).
        num_items: divisor replacing the number of selected rows — the image-bearing sample count of the whole
            accumulated batch under gradient accumulation.

    Returns:
        `()` tensor; 0 (with a graph to `d_ian`) when no row is selected.
    """
    per_sample = itdm_per_sample(d_ian, d_llm, reduction)
    if image_mask is None:
        image_mask = torch.ones_like(per_sample, dtype=torch.bool)
    image_mask = image_mask.to(per_sample.device).bool()
    if image_mask.shape != per_sample.shape:
        raise ValueError(f"image_mask must have shape {tuple(per_sample.shape)}; got {tuple(image_mask.shape)}.")
    total = (per_sample * image_mask.to(per_sample.dtype)).sum()
    count = image_mask.sum() if num_items is None else torch.as_tensor(num_items, device=per_sample.device)
    return total / count.clamp(min=1).to(total.dtype)


# ITG's weighting of rows (InternVL 2.5's "loss reweighting"): a row with n supervised tokens gives each token the
# weight n^-p. "token" (p = 0, LLaVA's and transformers' mean over all supervised tokens) lets long answers dominate a
# batch, "sample" (p = 1) counts every row once, "square" (p = 1/2) lies between.
ITG_REDUCTIONS = {"token": 0.0, "square": 0.5, "sample": 1.0}


def itg_row_weights(labels: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row token weights and their normaliser for causal-LM labels.

    Args:
        labels: `(B, L)` with -100 where nothing is supervised; position t is predicted from t - 1 (the shift
            transformers' causal-LM loss makes), so the supervised tokens of a row are `labels[:, 1:] != -100`.
        reduction: a key of `ITG_REDUCTIONS`.

    Returns:
        `(weights (B,), normaliser ())`: each supervised token of row i weighs `weights[i] = n_i^-p`; the normaliser
        is `Σ_i n_i^(1-p)` over rows with n_i > 0 (the supervised-token count for "token", the row count for
        "sample"), so `Σ_i weights[i] · (CE summed over row i) / normaliser` is the weighted mean.
    """
    if reduction not in ITG_REDUCTIONS:
        raise ValueError(f"itg reduction={reduction!r} is not supported; expected one of {list(ITG_REDUCTIONS)}.")
    power = ITG_REDUCTIONS[reduction]
    counts = (labels[:, 1:] != -100).sum(dim=1).double()
    supervised = counts > 0
    weights = torch.where(supervised, counts.clamp(min=1).pow(-power), torch.zeros_like(counts))
    normaliser = torch.where(supervised, counts.clamp(min=1).pow(1 - power), torch.zeros_like(counts)).sum()
    return weights, normaliser


def itg_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    reduction: str = "token",
    normaliser: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """ITG (causal-LM cross-entropy) with rows weighted by `reduction` (see `ITG_REDUCTIONS`).

    Args:
        logits: `(B, L, V)`; position t predicts `labels[:, t + 1]`.
        labels: `(B, L)`, -100 where nothing is supervised.
        reduction: `"token"`, `"square"` or `"sample"`.
        normaliser: divisor replacing this batch's own (`itg_row_weights`) — that of the whole accumulated batch
            under gradient accumulation, so that the micro-batch losses sum to the full batch's.

    Returns:
        `()` float32 tensor; with `reduction="token"` and no `normaliser`, transformers' causal-LM loss.
    """
    targets = labels[:, 1:].to(logits.device)
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=-100, reduction="none"
    )  # (B, L - 1)
    weights, own = itg_row_weights(labels, reduction)
    total = (per_token.sum(dim=1) * weights.to(per_token.device, per_token.dtype)).sum()
    divisor = own if normaliser is None else torch.as_tensor(normaliser)
    return total / divisor.to(total.device, total.dtype).clamp(min=1e-12)


__all__ = ["itdm_loss", "itdm_per_sample", "itg_loss", "itg_row_weights", "ITDM_REDUCTIONS", "ITG_REDUCTIONS"]
