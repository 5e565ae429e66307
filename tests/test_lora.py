"""Tests of suma_lib.lora: gradients against autograd, initial equivalence, the additive variant."""

from __future__ import annotations

import pytest
import torch

from suma_lib.lora import AdditiveLoRALinear, LoRALinear, block_ones, lora_factor_grads


def _setup(n=6, m=4, b=5):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, m, dtype=torch.float64, generator=g),
        torch.randn(b, n, dtype=torch.float64, generator=g),
        g,
    )


@pytest.mark.parametrize("symmetric", [False, True])
def test_starts_as_pretrained_and_grads_match(symmetric: bool) -> None:
    w0, x, g = _setup()
    layer = LoRALinear(w0, 2, symmetric=symmetric, generator=g)
    torch.testing.assert_close(layer(x), x @ w0)
    with torch.no_grad():
        layer.b.add_(0.3)
    y = layer(x)
    loss = (y.sin()).sum()
    loss.backward()
    gw = x.T @ torch.cos(x @ layer.merged_weight().detach())
    ga, gb = lora_factor_grads(gw, layer.a.detach(), layer.b.detach())
    torch.testing.assert_close(layer.a.grad, ga)
    torch.testing.assert_close(layer.b.grad, gb)
    assert layer.weight0.requires_grad is False


@pytest.mark.parametrize("r", [1, 2])
def test_additive_grads_are_block_sums(r: int) -> None:
    w0, x, _ = _setup()
    layer = AdditiveLoRALinear(w0, r)
    (layer(x) ** 2).sum().backward()
    gw = x.T @ (2 * (x @ w0))
    torch.testing.assert_close(layer.a.grad, gw @ block_ones(r, 4, r, dtype=torch.float64).T)
    torch.testing.assert_close(layer.b.grad, block_ones(6, r, r, dtype=torch.float64).T @ gw)
    if r == 1:
        torch.testing.assert_close(layer.a.grad[:, 0], gw.sum(1))
        torch.testing.assert_close(layer.b.grad[0], gw.sum(0))


def test_validation() -> None:
    w0, _, _ = _setup()
    with pytest.raises(ValueError, match="r"):
        LoRALinear(w0, 0)
    with pytest.raises(ValueError, match="r"):
        AdditiveLoRALinear(w0, 4)
    with pytest.raises(ValueError, match="weight"):
        LoRALinear(torch.ones(3), 1)
    with pytest.raises(ValueError, match="shapes"):
        lora_factor_grads(torch.ones(3, 4), torch.ones(4, 1), torch.ones(1, 4))
    with pytest.raises(ValueError, match="block_ones"):
        block_ones(3, 5, 2)


def test_meta_device() -> None:
    layer = LoRALinear(torch.empty(8, 4, device="meta"), 2)
    assert layer(torch.empty(3, 8, device="meta")).shape == (3, 4)
    assert (
        AdditiveLoRALinear(torch.empty(8, 4, device="meta"), 2).merged_weight().device.type
        == "meta"
    )
