"""Tests for suma_lib.penalty: gradient norms against plain autograd, the inequality, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from suma_lib.penalty import (
    gradient_penalty_bound,
    input_gradient_norm,
    mlp_layers,
    parameter_gradient_norm,
    parameter_gradient_penalty,
    penalty_inequality,
    random_mlp,
)

ACTS = ("tanh", "relu", "gelu", "sigmoid", "softplus", "identity")
F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _peer(net: nn.Module, x: torch.Tensor, f=torch.sum):
    """Per-sample gradients by a plain loop over samples with torch.autograd.grad (no vmap)."""
    gx2, gth2 = [], []
    params = list(net.parameters())
    for xi in x:
        xi = xi.clone().requires_grad_(True)
        grads = torch.autograd.grad(f(net(xi)), [xi, *params])
        gx2.append((grads[0] ** 2).sum())
        gth2.append(sum((g**2).sum() for g in grads[1:]))
    return torch.stack(gx2), torch.stack(gth2)


def _peer_jacobian_norms(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Spectral norms of d h^(t)/dx, t = 1..l+1, via torch.autograd.functional.jacobian +
    svdvals."""
    lins = [i for i, m in enumerate(net) if isinstance(m, nn.Linear)]
    cuts = lins[1:] + [len(net)]  # h^(t+1) is the output of net[:cut]
    out = []
    for xi in x:
        norms = [torch.ones((), dtype=x.dtype)]
        for cut in cuts:
            jac = torch.autograd.functional.jacobian(lambda v, c=cut: net[:c](v), xi)
            norms.append(torch.linalg.svdvals(jac)[0])
        out.append(torch.stack(norms))
    return torch.stack(out)


@pytest.mark.parametrize("act", ACTS)
def test_norms_match_plain_autograd(act: str) -> None:
    g = _gen(1)
    net = random_mlp([3, 5, 4, 2], act, generator=g, dtype=F64)
    x = torch.randn(6, 3, generator=g, dtype=F64)

    def f(o: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(o, 0)

    gx2, gth2 = _peer(net, x, f)
    torch.testing.assert_close(input_gradient_norm(net, x, f) ** 2, gx2, rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(
        parameter_gradient_norm(net, x, f) ** 2, gth2, rtol=1e-12, atol=1e-300
    )
    r = penalty_inequality(net, x, f)
    torch.testing.assert_close(
        r.jacobian_norms, _peer_jacobian_norms(net, x), rtol=1e-10, atol=1e-300
    )
    assert bool((r.ratio <= 1 + 1e-12).all())


def test_layer_split_and_differentiable_penalty() -> None:
    g = _gen(2)
    net = random_mlp([2, 6, 6, 1], "tanh", generator=g, dtype=F64)
    x = torch.randn(5, 2, generator=g, dtype=F64)
    r = penalty_inequality(net, x)
    split = (r.preact_grad_sq * (r.bias_terms + r.hidden_sq)).sum(-1)
    torch.testing.assert_close(split, r.param_grad_sq, rtol=1e-12, atol=0)
    pen = parameter_gradient_penalty(net, x)
    torch.testing.assert_close(pen.detach(), r.param_grad_sq, rtol=1e-12, atol=0)
    pen.sum().backward()  # the penalty is differentiable in the parameters (double backprop)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    torch.testing.assert_close(gradient_penalty_bound(net, x), r.lower_bound)


def test_double_backward_matches_finite_differences() -> None:
    g = _gen(3)
    w1 = torch.randn(3, 2, generator=g, dtype=F64, requires_grad=True)
    b1 = torch.randn(3, generator=g, dtype=F64, requires_grad=True)
    w2 = torch.randn(1, 3, generator=g, dtype=F64, requires_grad=True)
    x = torch.randn(4, 2, generator=g, dtype=F64)

    def fn(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return parameter_gradient_penalty([(a, b), (c, None)], x, activation=torch.tanh)

    assert torch.autograd.gradcheck(fn, (w1, b1, w2))


def test_one_layer_scalar_output_is_an_equality() -> None:
    g = _gen(4)
    for act in ACTS:
        net = random_mlp([5, 1], act, generator=g, dtype=F64)
        x = torch.randn(8, 5, generator=g, dtype=F64)
        r = penalty_inequality(net, x, lambda o: torch.sin(o).sum())
        torch.testing.assert_close(r.lower_bound, r.param_grad_sq, rtol=1e-12, atol=0)
    # without a bias the "1 +" disappears and the equality still holds
    w = torch.randn(1, 4, generator=g, dtype=F64)
    x = torch.randn(7, 4, generator=g, dtype=F64)
    r = penalty_inequality([(w, None)], x, activation=torch.tanh)
    assert r.bias_terms.tolist() == [0.0]
    torch.testing.assert_close(r.ratio, torch.ones(7, dtype=F64), rtol=1e-12, atol=0)


def test_aligned_rank_one_linear_network_is_tight() -> None:
    g = _gen(5)
    us = [nn.functional.normalize(torch.randn(4, generator=g, dtype=F64), dim=0) for _ in range(3)]
    us.append(torch.ones(1, dtype=F64))
    layers = [
        (s * torch.outer(us[t + 1], us[t]), torch.randn(us[t + 1].numel(), generator=g, dtype=F64))
        for t, s in enumerate((0.7, 1.3, 2.0))
    ]
    r = penalty_inequality(layers, torch.randn(6, 4, generator=g, dtype=F64))
    torch.testing.assert_close(r.ratio, torch.ones(6, dtype=F64), rtol=1e-12, atol=0)


@settings(max_examples=40, deadline=None)
@given(
    widths=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    act=st.sampled_from(ACTS),
    gain=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.01, 10.0),
)
def test_inequality_holds_on_random_mlps(widths, act, gain, seed, scale) -> None:
    g = _gen(seed)
    net = random_mlp(widths, act, weight_gain=gain, generator=g, dtype=F64)
    x = scale * torch.randn(3, widths[0], generator=g, dtype=F64)
    r = penalty_inequality(net, x, lambda o: (o**2).sum() + o.sum())
    assert torch.isfinite(r.ratio).all()
    assert bool((r.ratio <= 1 + 1e-10).all()), r.ratio
    assert bool((r.lower_bound <= r.sharp_lower_bound * (1 + 1e-10) + 1e-300).all())
    assert bool((r.sharp_lower_bound <= r.param_grad_sq * (1 + 1e-10) + 1e-300).all())


def test_batching_over_leading_dims_and_float32() -> None:
    g = _gen(6)
    net = random_mlp([3, 4, 2], "gelu", generator=g)
    x = torch.randn(2, 5, 3, generator=g)
    r = penalty_inequality(net, x)
    flat = penalty_inequality(net, x.reshape(10, 3))
    assert (
        r.ratio.shape == (2, 5)
        and r.hidden_sq.shape == (2, 5, 2)
        and r.jacobian_norms.shape == (2, 5, 3)
    )
    torch.testing.assert_close(r.ratio.reshape(10), flat.ratio)
    assert r.ratio.dtype == torch.float32
    assert input_gradient_norm(net, x).shape == (2, 5)


def test_meta_device() -> None:
    net = random_mlp([3, 4, 1], "tanh", device="meta")
    x = torch.empty(7, 3, device="meta")
    r = penalty_inequality(net, x)
    assert all(t.device.type == "meta" for t in r)
    assert r.ratio.shape == (7,) and r.weight_norms.shape == (2,)
    assert parameter_gradient_penalty(net, x).shape == (7,)


def test_extreme_and_degenerate_inputs() -> None:
    g = _gen(7)
    net = random_mlp([3, 5, 2], "relu", generator=g)
    x = 1e30 * torch.randn(4, 3, generator=g)
    r32 = penalty_inequality(net, x)  # the squared norms overflow float32, the ratio does not
    r64 = penalty_inequality(net.double(), x.double())
    torch.testing.assert_close(r32.ratio.double(), r64.ratio, rtol=1e-4, atol=1e-6)
    # a dead ReLU network: every gradient is zero, ratio defined as 0, no NaN
    dead = [
        (torch.ones(2, 2, dtype=F64), -10 * torch.ones(2, dtype=F64)),
        (torch.ones(1, 2, dtype=F64), None),
    ]
    r = penalty_inequality(dead, torch.zeros(3, 2, dtype=F64), activation=torch.relu)
    assert r.ratio.tolist() == [0.0, 0.0, 0.0] and r.lower_bound.tolist() == [0.0, 0.0, 0.0]


def test_mlp_layers_parses_modules_and_pairs() -> None:
    net = nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.Sigmoid(), nn.Sequential(nn.Linear(4, 2, bias=False))
    )
    layers = mlp_layers(net)
    assert [tuple(w.shape) for w, _, _ in layers] == [(4, 3), (2, 4)]
    assert layers[1][1] is None
    z = torch.randn(4)
    torch.testing.assert_close(layers[0][2](z), torch.sigmoid(torch.tanh(z)))
    assert not layers[0][0].requires_grad
    assert mlp_layers(net, detach=False)[0][0].requires_grad
    pairs = mlp_layers(
        [(torch.ones(2, 3), torch.zeros(2)), (torch.ones(1, 2), None)], [torch.relu, None]
    )
    assert pairs[0][2] is torch.relu


def test_errors_name_the_argument() -> None:
    net = random_mlp([3, 2], "tanh")
    with pytest.raises(ValueError, match="x"):
        penalty_inequality(net, torch.randn(4, 5))
    with pytest.raises(TypeError, match="x"):
        penalty_inequality(net, torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="x"):
        penalty_inequality(net, torch.full((2, 3), float("nan")))
    with pytest.raises(TypeError, match="x"):
        penalty_inequality(net, torch.randn(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="model"):
        penalty_inequality(nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2)), torch.randn(2, 3))
    with pytest.raises(ValueError, match="model"):
        penalty_inequality(nn.Sequential(nn.Tanh(), nn.Linear(3, 2)), torch.randn(2, 3))
    with pytest.raises(TypeError, match="model"):
        penalty_inequality("mlp", torch.randn(2, 3))
    with pytest.raises(ValueError, match="activation"):
        penalty_inequality(
            [(torch.ones(2, 3), None)], torch.randn(2, 3), activation=[torch.relu] * 2
        )
    with pytest.raises(ValueError, match="activation"):
        penalty_inequality(net, torch.randn(2, 3), activation=torch.relu)
    with pytest.raises(ValueError, match="layer 1"):
        penalty_inequality([(torch.ones(2, 3), None), (torch.ones(1, 5), None)], torch.randn(2, 3))
    with pytest.raises(ValueError, match="f"):
        penalty_inequality(net, torch.randn(2, 3), lambda o: o)  # not a scalar
    with pytest.raises(TypeError, match="f"):
        penalty_inequality(net, torch.randn(2, 3), 3.0)
    with pytest.raises(ValueError, match="widths"):
        random_mlp([3], "tanh")
    with pytest.raises(ValueError, match="activation"):
        random_mlp([3, 2], "swish")
    with pytest.raises(TypeError, match="generator"):
        random_mlp([3, 2], "tanh", generator=0)
