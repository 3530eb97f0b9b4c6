"""ITDM (paper Eq. 2) and ITG's row weighting against hand computations (docs/training.md, "Loss")."""

from __future__ import annotations

import pytest
import torch

from training.losses import itdm_loss, itdm_per_sample, itg_loss, itg_row_weights

D_IAN = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
D_LLM = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 1.0]])
# squared differences per row: [1, 4] → sum 5, mean 2.5; [1, 1] → 2, 1; [0, 4] → 4, 2


def test_per_sample_by_hand():
    assert itdm_per_sample(D_IAN, D_LLM, "sum").tolist() == [5.0, 2.0, 4.0]
    assert itdm_per_sample(D_IAN, D_LLM, "mean").tolist() == [2.5, 1.0, 2.0]


def test_mean_reduction_equals_torch_mse_loss():
    expected = torch.nn.functional.mse_loss(D_IAN, D_LLM)
    assert torch.allclose(itdm_loss(D_IAN, D_LLM, reduction="mean"), expected)


def test_masked_to_image_samples():
    mask = torch.tensor([True, False, True])
    assert itdm_loss(D_IAN, D_LLM, mask, "sum").item() == pytest.approx((5 + 4) / 2)
    assert itdm_loss(D_IAN, D_LLM, mask, "mean").item() == pytest.approx((2.5 + 2.0) / 2)


def test_num_items_splits_like_accumulation():
    full = itdm_loss(D_IAN, D_LLM, reduction="sum")
    parts = itdm_loss(D_IAN[:1], D_LLM[:1], reduction="sum", num_items=3) + itdm_loss(
        D_IAN[1:], D_LLM[1:], reduction="sum", num_items=3
    )
    assert torch.allclose(full, parts)


def test_no_image_rows_gives_zero_with_graph():
    d_ian = D_IAN.clone().requires_grad_()
    loss = itdm_loss(d_ian, D_LLM, torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(d_ian.grad, torch.zeros_like(d_ian))


def test_gradient_flows_to_ian_only():
    d_ian = D_IAN.clone().requires_grad_()
    d_llm = D_LLM.clone().requires_grad_()
    itdm_loss(d_ian, d_llm, reduction="sum").backward()
    # d/dx (1/3 Σ ||x - y||²) = 2 (x - y) / 3
    assert torch.allclose(d_ian.grad, 2 * (D_IAN - D_LLM) / 3)
    assert d_llm.grad is None


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="reduction='max'"):
        itdm_loss(D_IAN, D_LLM, reduction="max")
    with pytest.raises(ValueError, match="same shape"):
        itdm_loss(D_IAN, D_LLM[:, :1])


# ------------------------------------------------------------------------------------------------------ ITG rows
def _lm_batch(seed: int = 0):
    """Logits `(3, 7, 11)` and labels with 1, 4 and 2 supervised tokens (row 1 the long answer)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 7, 11, generator=generator)
    labels = torch.full((3, 7), -100)
    labels[0, 6] = 3
    labels[1, 3:7] = torch.tensor([1, 2, 5, 9])
    labels[2, 5:7] = torch.tensor([4, 4])
    return logits, labels


def _row_means(logits, labels):
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    mask = labels[:, 1:] != -100
    return [(ce[i][mask[i]]).sum() for i in range(len(labels))], mask.sum(1)


def test_itg_token_is_the_causal_lm_loss():
    logits, labels = _lm_batch()
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(itg_loss(logits, labels, "token"), expected)


def test_itg_sample_counts_every_row_once_and_square_lies_between():
    logits, labels = _lm_batch()
    sums, counts = _row_means(logits, labels)
    sample = sum(s / n for s, n in zip(sums, counts)) / 3
    torch.testing.assert_close(itg_loss(logits, labels, "sample"), sample)
    square = sum(s / n**0.5 for s, n in zip(sums, counts)) / sum(n**0.5 for n in counts)
    torch.testing.assert_close(itg_loss(logits, labels, "square"), square.float())
    # a row without supervised tokens changes nothing
    empty = torch.full((1, 7), -100)
    torch.testing.assert_close(itg_loss(torch.cat([logits, logits[:1]]), torch.cat([labels, empty]), "sample"), sample)


@pytest.mark.parametrize("reduction", ["token", "square", "sample"])
def test_itg_normaliser_splits_like_accumulation(reduction):
    logits, labels = _lm_batch(1)
    full = itg_loss(logits, labels, reduction)
    total = itg_row_weights(labels, reduction)[1]
    parts = itg_loss(logits[:1], labels[:1], reduction, normaliser=total) + itg_loss(
        logits[1:], labels[1:], reduction, normaliser=total
    )
    torch.testing.assert_close(parts, full)
    with pytest.raises(ValueError, match="itg reduction='mean'"):
        itg_loss(logits, labels, "mean")
