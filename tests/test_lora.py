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


def _peft_twin(layer: LoRALinear, alpha: float | None = None):
    """peft's LoRA wrapper around ``nn.Linear`` carrying ``layer``'s weights (our ``Y = X W`` is its
    ``x @ weight.T``: ``weight = W0^T``, ``lora_A.weight = A^T``, ``lora_B.weight = B^T``)."""
    peft = pytest.importorskip("peft")
    n, m = layer.weight0.shape
    r = layer.a.shape[1]

    class One(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(n, m, bias=False, dtype=layer.weight0.dtype)

        def forward(self, x):
            return self.proj(x)

    cfg = peft.LoraConfig(r=r, lora_alpha=r if alpha is None else alpha, target_modules=["proj"],
                          lora_dropout=0.0)
    model = peft.get_peft_model(One(), cfg)
    lin = model.base_model.model.proj
    scale = lin.scaling["default"]
    with torch.no_grad():
        lin.base_layer.weight.copy_(layer.weight0.T)
        lin.lora_A["default"].weight.copy_(layer.a.T)
        lin.lora_B["default"].weight.copy_(layer.b.T / scale)  # peft multiplies B A x by alpha / r
    return model, lin


@pytest.mark.parametrize("alpha", [None, 16.0])
def test_outputs_and_gradients_match_peft(alpha) -> None:
    w0, x, g = _setup()
    layer = LoRALinear(w0, 2, symmetric=True, generator=g)
    model, lin = _peft_twin(layer, alpha)
    torch.testing.assert_close(model(x), layer(x))
    weights = torch.randn(5, 4, dtype=torch.float64, generator=g)
    (layer(x).tanh() * weights).sum().backward()
    (model(x).tanh() * weights).sum().backward()
    scale = lin.scaling["default"]
    # Gradients w.r.t. the same functions of the weights: A = lora_A^T, B = scale lora_B^T.
    torch.testing.assert_close(layer.a.grad, lin.lora_A["default"].weight.grad.T)
    torch.testing.assert_close(layer.b.grad * scale, lin.lora_B["default"].weight.grad.T)
    assert lin.base_layer.weight.grad is None and not layer.weight0.requires_grad
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in layer.parameters() if p.requires_grad)


def test_zero_init_matches_peft_default() -> None:
    """peft's default initialisation also zeroes B (its ``lora_B``), so both start as ``W0``."""
    w0, x, g = _setup()
    layer = LoRALinear(w0, 2, generator=g)
    peft = pytest.importorskip("peft")

    class One(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(6, 4, bias=False, dtype=torch.float64)

        def forward(self, x):
            return self.proj(x)

    model = peft.get_peft_model(One(), peft.LoraConfig(r=2, lora_alpha=2, target_modules=["proj"]))
    lin = model.base_model.model.proj
    with torch.no_grad():
        lin.base_layer.weight.copy_(w0.T)
    assert torch.count_nonzero(lin.lora_B["default"].weight) == 0 and torch.count_nonzero(layer.b) == 0
    torch.testing.assert_close(model(x), layer(x))
