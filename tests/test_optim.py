"""Tests of suma_lib.optim: AdaFactor against torch.optim.Adafactor and closed forms, the EG optimisers."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.optim import (
    AdaFactor,
    EGStepSize,
    ExponentiatedGradient,
    adafactor_beta2,
    adam_effective_beta2,
    i_divergence,
    rank_one_i_divergence,
    rms,
    state_bytes,
)


def _loss(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w, b = params
    return (torch.einsum("bm,kmn->kbn", x, w) + b).sin().square().sum()


def _run(opt_cls, params, steps: int = 15, **kw) -> list[torch.Tensor]:
    params = [p.detach().clone().requires_grad_() for p in params]
    opt = opt_cls(params, **kw)
    x = torch.linspace(-1, 1, 4 * params[0].shape[-2]).reshape(4, -1).to(params[0].dtype)
    for _ in range(steps):
        opt.zero_grad()
        _loss(params, x).backward()
        opt.step()
    return params


def _start(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(3, 5, 7, generator=g, dtype=dtype),
        torch.randn(7, generator=g, dtype=dtype),
    ]


def test_adafactor_matches_torch_adafactor() -> None:
    # same algorithm: relative step min(1e-2, 1/sqrt t), RMS clipping d=1, parameter scale, c=0.8
    ours = _run(AdaFactor, _start(), steps=30)
    peer = _run(torch.optim.Adafactor, _start(), steps=30, lr=1e-2, eps=(1e-30, 1e-3))
    for a, b in zip(ours, peer, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    moved = (ours[0] - _start()[0]).abs().max()
    assert moved > 1e-2


def test_adafactor_constant_lr_vs_torch_cap() -> None:
    # torch takes min(lr, 1/sqrt t); ours keeps a given lr constant: equal while lr <= 1/sqrt t
    a = _run(AdaFactor, _start(), steps=4, lr=0.5)
    b = _run(torch.optim.Adafactor, _start(), steps=4, lr=0.5, eps=(1e-30, 1e-3))
    torch.testing.assert_close(a[0], b[0], rtol=1e-10, atol=1e-12)
    a = _run(AdaFactor, _start(), steps=4, lr=0.8)
    b = _run(torch.optim.Adafactor, _start(), steps=4, lr=0.8, eps=(1e-30, 1e-3))
    assert (a[0] - b[0]).abs().max() > 1e-3  # step 2 onwards: 0.8 vs 1/sqrt 2


def test_adafactor_first_step_closed_form() -> None:
    # t = 1: beta2_hat = 0, so v_hat = rank-one I-divergence fit of g^2 + eps1; check by hand
    w = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    p = w.clone().requires_grad_()
    opt = AdaFactor([p], scale_parameter=False, d=1e9)
    p.grad = g.clone()
    opt.step()
    g2 = g * g + 1e-30
    vhat = g2.sum(1, keepdim=True) * g2.sum(0, keepdim=True) / g2.sum()
    torch.testing.assert_close(p.detach(), w - 1e-2 * g / vhat.sqrt(), rtol=1e-12, atol=1e-14)


def test_adafactor_clipping_and_scale() -> None:
    p = torch.full((5,), 3.0, dtype=torch.float64, requires_grad=True)
    opt = AdaFactor([p], lr=0.1)
    p.grad = torch.tensor([1.0, -1, 1, -1, 1], dtype=torch.float64)
    opt.step()  # u = sign(g) (RMS 1, no clipping), step = 0.1 * RMS(p)=3
    torch.testing.assert_close(p.detach(), 3.0 - 0.3 * p.grad, rtol=1e-9, atol=1e-9)
    q = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = AdaFactor([q], lr=0.1, d=0.5)
    q.grad = torch.tensor([1.0, 1, 1, 1], dtype=torch.float64)
    opt.step()  # u = 1, RMS 1 > d: clipped to 0.5, scale max(eps2, 0) = 1e-3
    torch.testing.assert_close(q.detach(), torch.full_like(q, -0.1 * 0.5 * 1e-3))


def test_adafactor_state_is_factored_and_small() -> None:
    p = torch.zeros(64, 128, requires_grad=True)
    opt = AdaFactor([p])
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.state[p]["row"].shape == (64,) and opt.state[p]["col"].shape == (128,)
    assert state_bytes(opt) == (64 + 128) * 4


def test_adafactor_momentum_and_groups_and_closure() -> None:
    a = torch.ones(3, 3, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    opt = AdaFactor([{"params": [a], "beta1": 0.9}, {"params": [b], "lr": 1e-3}])
    loss = opt.step(lambda: (a.sum() + b.sum()) if not a.grad_fn else None)
    assert loss is None or torch.is_tensor(loss)

    def closure():
        opt.zero_grad()
        out = (a * a).sum() + (b * b).sum()
        out.backward()
        return out

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and "m" in opt.state[a] and "m" not in opt.state[b]


def test_state_dict_round_trip_continues_identically() -> None:
    for cls, kw in ((AdaFactor, {}), (EGStepSize, {"gamma": 0.1}), (ExponentiatedGradient, {})):
        start = [p.abs() + 0.1 for p in _start()]
        params = [p.clone().requires_grad_() for p in start]
        opt = cls(params, **kw)
        x = torch.linspace(-1, 1, 20, dtype=torch.float64).reshape(4, 5)
        for _ in range(3):
            opt.zero_grad()
            _loss(params, x).backward()
            opt.step()
        sd = copy.deepcopy(opt.state_dict())
        params2 = [p.detach().clone().requires_grad_() for p in params]
        opt2 = cls(params2, **kw)
        opt2.load_state_dict(sd)
        for ps, o in ((params, opt), (params2, opt2)):
            for _ in range(3):
                o.zero_grad()
                _loss(ps, x).backward()
                o.step()
        for u, v in zip(params, params2, strict=False):
            assert torch.equal(u, v), cls


def test_half_precision_keeps_float32_statistics() -> None:
    p = torch.randn(8, 4).to(torch.bfloat16).requires_grad_()
    opt = AdaFactor([p])
    p.grad = torch.randn(8, 4).to(torch.bfloat16)
    opt.step()
    assert opt.state[p]["row"].dtype == torch.float32 and p.dtype == torch.bfloat16
    opt2 = AdaFactor([p])
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[p]["row"].dtype == torch.float32


def test_meta_device() -> None:
    for cls in (AdaFactor, EGStepSize, ExponentiatedGradient):
        p = torch.empty(4, 3, device="meta", requires_grad=True)
        p.grad = torch.empty(4, 3, device="meta")
        opt = cls([p])
        opt.step()
        assert all(v.device.type == "meta" for v in opt.state[p].values() if torch.is_tensor(v))


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"eps1": 0.0}, "eps1"),
        ({"eps2": -1.0}, "eps2"),
        ({"d": 0.0}, "d"),
        ({"c": 0.0}, "c"),
        ({"beta1": 1.0}, "beta1"),
        ({"rho_max": 0.0}, "rho_max"),
        ({"lr": float("nan")}, "lr"),
    ],
)
def test_adafactor_validation(kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        AdaFactor([torch.zeros(2, requires_grad=True)], **kw)


def test_eg_validation_and_sparse() -> None:
    with pytest.raises(ValueError, match="lr"):
        ExponentiatedGradient([torch.ones(2, requires_grad=True)], lr=0.0)
    with pytest.raises(ValueError, match="gamma"):
        EGStepSize([torch.ones(2, requires_grad=True)], gamma=-1.0)
    with pytest.raises(ValueError, match="nu_init"):
        EGStepSize([torch.ones(2, requires_grad=True)], nu_init=0.0)
    p = torch.tensor([1.0, -1.0], requires_grad=True)
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="params"):
        ExponentiatedGradient([p]).step()
    for cls in (AdaFactor, EGStepSize, ExponentiatedGradient):
        e = torch.ones(4, 2, requires_grad=True)
        e.grad = torch.ones(4, 2).to_sparse()
        with pytest.raises(TypeError, match="sparse"):
            cls([e]).step()
    with pytest.raises(TypeError, match="closure"):
        AdaFactor([torch.ones(2, requires_grad=True)]).step(closure=3)


def test_eg_update_and_positivity_at_extreme_gradient() -> None:
    p = torch.tensor([1.0, 2.0, 1e-30], requires_grad=True)
    opt = ExponentiatedGradient([p], lr=0.5)
    p.grad = torch.tensor([1.0, -1.0, 100.0])
    opt.step()
    expected = torch.tensor([1.0, 2.0, 1e-30]) * torch.exp(-0.5 * torch.tensor([1.0, -1.0, 100.0]))
    torch.testing.assert_close(p.detach(), expected)
    assert bool((p >= 0).all()) and bool(torch.isfinite(p).all())


def test_egstepsize_closed_form_gains() -> None:
    # nu_{t+1} = exp(gamma * sum_k g_{k-1} g_k), theta_{t+1} = theta_t - eta nu_{t+1} g_t
    a = torch.tensor([0.3, 2.0, 0.1], dtype=torch.float64)
    theta = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = EGStepSize([theta], lr=0.05, gamma=0.1)
    ref = theta.detach().clone()
    grads = []
    for _ in range(6):
        g = 2 * a * ref  # gradient of sum(a * theta^2)
        grads.append(g)
        acc = sum(
            (grads[k - 1] * grads[k] for k in range(1, len(grads))),
            torch.zeros(3, dtype=torch.float64),
        )
        ref = ref - 0.05 * torch.exp(0.1 * acc) * g
        opt.zero_grad()
        (a * theta**2).sum().backward()
        opt.step()
    torch.testing.assert_close(theta.detach(), ref, rtol=1e-12, atol=1e-12)


def test_egstepsize_gamma_zero_is_sgd() -> None:
    a = _run(EGStepSize, _start(), steps=5, lr=0.01, gamma=0.0)
    b = _run(torch.optim.SGD, _start(), steps=5, lr=0.01)
    for u, v in zip(a, b, strict=False):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(2, 6), st.integers(0, 10_000))
def test_rank_one_fit_is_stationary_and_beats_perturbations(m: int, n: int, seed: int) -> None:
    c = torch.rand(m, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 1e-3
    q = rank_one_i_divergence(c)
    # marginals are preserved (the stationarity conditions)
    torch.testing.assert_close(q.sum(0), c.sum(0))
    torch.testing.assert_close(q.sum(1), c.sum(1))
    best = i_divergence(c, q)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(5):
        a = q.sum(1) * torch.exp(0.05 * torch.randn(m, generator=g, dtype=torch.float64))
        b = (q[0] / q[0].sum()) * torch.exp(0.05 * torch.randn(n, generator=g, dtype=torch.float64))
        assert i_divergence(c, torch.outer(a, b)) >= best - 1e-12


def test_rank_one_extremes() -> None:
    assert torch.equal(rank_one_i_divergence(torch.zeros(2, 3, 4)), torch.zeros(2, 3, 4))
    c = torch.full((3, 3), 1e30)
    torch.testing.assert_close(rank_one_i_divergence(c), c)
    with pytest.raises(ValueError, match="c"):
        rank_one_i_divergence(torch.ones(3))
    with pytest.raises(TypeError, match="c"):
        rank_one_i_divergence(torch.ones(3, 3, dtype=torch.int64))


def test_schedules() -> None:
    assert adafactor_beta2(1) == 0.0
    assert abs(adafactor_beta2(32, 0.8) - (1 - 32**-0.8)) < 1e-15
    assert adam_effective_beta2(1, 0.999) == 0.0
    with pytest.raises(ValueError, match="t"):
        adafactor_beta2(0)
    with pytest.raises(ValueError, match="beta2"):
        adam_effective_beta2(3, 1.0)
    torch.testing.assert_close(rms(torch.tensor([3.0, -3.0])), torch.tensor(3.0))


def test_adafactor_zero_row_and_column_float32_is_finite() -> None:
    # r_i c_j ~ 1e-60 underflows in float32; the update must stay 0 there, not 0/0
    p = torch.ones(4, 5, requires_grad=True)
    opt = AdaFactor([p])
    for _ in range(3):
        g = torch.ones(4, 5)
        g[0] = 0.0
        g[:, 0] = 0.0
        p.grad = g
        opt.step()
    assert bool(torch.isfinite(p).all()) and bool((p[0] == 1).all()) and bool((p[:, 0] == 1).all())
    peer = torch.ones(4, 5, requires_grad=True)
    popt = torch.optim.Adafactor([peer], lr=1e-2)
    for _ in range(3):
        peer.grad = g.clone()
        popt.step()
    torch.testing.assert_close(p.detach(), peer.detach())
