"""Tests of suma_lib.transport: exact EMD, WMD and WRD against POT's ``ot.emd2``, the lower bounds
(hypothesis), log-domain Sinkhorn against ``ot.sinkhorn2`` and its limit eps -> 0, validation, the
meta device."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib import transport as T

DT = torch.float64


def _case(seed: int, n: int, m: int, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.randn(m, d, generator=g, dtype=DT)
    p = torch.rand(n, generator=g, dtype=DT) + 0.05
    q = torch.rand(m, generator=g, dtype=DT) + 0.05
    return x, y, p / p.sum(), q / q.sum()


@pytest.mark.parametrize("n,m", [(1, 1), (1, 5), (4, 4), (6, 9), (12, 7)])
def test_emd_matches_pot(n, m):
    x, y, p, q = _case(n * 31 + m, n, m)
    cost = torch.cdist(x, y)
    value, plan = T.emd(p, q, cost, return_plan=True)
    ref = ot.emd2(p.numpy(), q.numpy(), cost.numpy())
    assert float(value) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert torch.allclose(plan.sum(1), p, atol=1e-9) and torch.allclose(plan.sum(0), q, atol=1e-9)
    assert bool((plan >= -1e-12).all())
    assert float((plan * cost).sum()) == pytest.approx(float(value), rel=1e-9)


def test_emd_unnormalised_masses_and_dtype():
    x, y, p, q = _case(3, 5, 6)
    cost = torch.cdist(x, y)
    v1 = T.emd(p, q, cost)
    v3 = T.emd(3 * p, 3 * q, cost)
    assert float(v3) == pytest.approx(3 * float(v1), rel=1e-9)
    v32 = T.emd(p.float(), q.float(), cost.float())
    assert v32.dtype == torch.float32


def test_wmd_and_wrd_match_pot():
    x, y, p, q = _case(7, 5, 8, d=6)
    c = torch.cdist(x, y).numpy()
    ref = ot.emd2(np.full(5, 0.2), np.full(8, 0.125), c)
    assert float(T.wmd(x, y)) == pytest.approx(ref, rel=1e-9)
    assert float(T.wmd(x, y, p, q)) == pytest.approx(ot.emd2(p.numpy(), q.numpy(), c), rel=1e-9)
    nx, ny = x.norm(dim=1).numpy(), y.norm(dim=1).numpy()
    cos = (x.numpy() @ y.numpy().T) / np.outer(nx, ny)
    ref = ot.emd2(nx / nx.sum(), ny / ny.sum(), 1 - cos)
    assert float(T.wrd(x, y)) == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_wrd_extremes():
    u = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=DT)
    assert float(T.wrd(u, 3 * u)) == pytest.approx(0.0, abs=1e-12)
    assert float(T.wrd(u, -u)) == pytest.approx(2.0, abs=1e-12)
    assert float(T.wrd_lower_bound(u, -u)) == pytest.approx(2.0, abs=1e-12)
    # a zero vector carries no weight and changes nothing
    z = torch.cat([u, torch.zeros(1, 2, dtype=DT)])
    v = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=DT)
    assert float(T.wrd(z, v)) == pytest.approx(float(T.wrd(u, v)), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 7), st.integers(1, 7), st.integers(1, 5),
       st.floats(1e-3, 1e3))
def test_lower_bounds_never_exceed(seed, n, m, d, scale):
    x, y, p, q = _case(seed, n, m, d)
    x, y = x * scale, y * scale
    assert float(T.word_centroid_distance(x, y)) <= float(T.wmd(x, y)) * (1 + 1e-9) + 1e-12
    wcd = float(T.word_centroid_distance(x, y, p, q))
    assert wcd <= float(T.wmd(x, y, p, q)) * (1 + 1e-9) + 1e-12
    w = float(T.wrd(x, y))
    assert float(T.wrd_lower_bound(x, y)) <= w + 1e-9
    assert -1e-12 <= w <= 2 + 1e-12


@pytest.mark.parametrize("eps", [1.0, 0.1, 0.02])
def test_sinkhorn_matches_pot(eps):
    x, y, p, q = _case(11, 6, 9)
    cost = torch.cdist(x, y)
    ref = ot.sinkhorn2(p.numpy(), q.numpy(), cost.numpy(), eps, method="sinkhorn_log",
                       numItermax=100_000, stopThr=1e-12)
    val = T.sinkhorn(p, q, cost, eps, max_iter=100_000, tol=1e-12)
    assert float(val) == pytest.approx(float(ref), rel=1e-7)


def test_sinkhorn_tends_to_emd():
    x, y, p, q = _case(5, 7, 5)
    cost = torch.cdist(x, y)
    exact = float(T.emd(p, q, cost))
    gaps = [float(T.sinkhorn(p, q, cost, e, max_iter=200_000, tol=1e-11)) - exact
            for e in (1.0, 0.1, 0.01, 0.001)]
    assert all(g >= -1e-7 for g in gaps)
    assert abs(gaps[-1]) < 1e-4 and gaps[0] > gaps[-1]


def test_sinkhorn_small_eps_is_finite():
    x, y, p, q = _case(2, 5, 5)
    cost = torch.cdist(x, y) * 100
    val = T.sinkhorn(p, q, cost, 1e-3, max_iter=2000)
    assert torch.isfinite(val)


def test_sinkhorn_batched_and_padded():
    cases = [_case(s, 3 + s, 6 - s) for s in range(3)]
    n, m = 5, 6
    P = torch.zeros(3, n, dtype=DT)
    Q = torch.zeros(3, m, dtype=DT)
    C = torch.zeros(3, n, m, dtype=DT)
    for b, (x, y, p, q) in enumerate(cases):
        P[b, : p.numel()], Q[b, : q.numel()] = p, q
        C[b, : p.numel(), : q.numel()] = torch.cdist(x, y)
    vals, plan = T.sinkhorn(P, Q, C, 0.05, max_iter=50_000, tol=1e-12, return_plan=True)
    assert vals.shape == (3,) and plan.shape == (3, n, m)
    for b, (x, y, p, q) in enumerate(cases):
        one = T.sinkhorn(p, q, torch.cdist(x, y), 0.05, max_iter=50_000, tol=1e-12)
        assert float(vals[b]) == pytest.approx(float(one), rel=1e-8)
    # broadcasting: one cost matrix, many marginals
    vals2 = T.sinkhorn(P[:, :4], Q, C[0, :4], 0.5)
    assert vals2.shape == (3,)


def test_sinkhorn_meta_device():
    p = torch.empty(4, 3, device="meta")
    val, plan = T.sinkhorn(p, torch.empty(4, 5, device="meta"), torch.empty(4, 3, 5, device="meta"),
                           0.1, max_iter=3, return_plan=True)
    assert val.shape == (4,) and plan.shape == (4, 3, 5) and val.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sinkhorn_cuda():
    x, y, p, q = _case(1, 4, 6)
    cost = torch.cdist(x, y)
    cpu = T.sinkhorn(p, q, cost, 0.1)
    gpu = T.sinkhorn(p.cuda(), q.cuda(), cost.cuda(), 0.1)
    assert gpu.device.type == "cuda" and float(gpu) == pytest.approx(float(cpu), rel=1e-9)


def test_validation():
    x, y, p, q = _case(0, 3, 4)
    c = torch.cdist(x, y)
    with pytest.raises(TypeError, match="p"):
        T.emd(p.numpy(), q, c)
    with pytest.raises(ValueError, match="cost"):
        T.emd(p, q, c.T)
    with pytest.raises(ValueError, match="non-negative"):
        T.emd(-p, q, c)
    with pytest.raises(ValueError, match="total mass"):
        T.emd(p, 2 * q, c)
    with pytest.raises(ValueError, match="finite"):
        T.emd(p, q, c.masked_fill(c > 0, float("nan")))
    with pytest.raises(ValueError, match="features"):
        T.wmd(x, y[:, :2])
    with pytest.raises(ValueError, match="one weight per point"):
        T.wmd(x, y, p[:2], q)
    with pytest.raises(ValueError, match="non-zero"):
        T.wrd(torch.zeros(2, 4, dtype=DT), y)
    with pytest.raises(ValueError, match="eps"):
        T.sinkhorn(p, q, c, 0.0)
    with pytest.raises(TypeError, match="max_iter"):
        T.sinkhorn(p, q, c, 0.1, max_iter=1.5)
    with pytest.raises(ValueError, match="broadcast"):
        T.sinkhorn(p.expand(2, 3), q.expand(3, 4), c, 0.1)
    with pytest.raises(ValueError, match="positive total"):
        T.sinkhorn(torch.zeros(3, dtype=DT), q, c, 0.1)


@pytest.mark.parametrize("eps", [0.5, 0.01, 1e-4])
def test_sinkhorn_scaling_steps_match_log_steps(eps):
    """check_every = 1 runs log-domain steps only; the default mixes in scaling steps (or falls
    back to log-domain ones where they overflow): the same iterates either way."""
    x, y, p, q = _case(8, 6, 7)
    cost = torch.cdist(x, y)
    a = T.sinkhorn(p, q, cost, eps, max_iter=200, tol=0.0, check_every=1)
    b = T.sinkhorn(p, q, cost, eps, max_iter=200, tol=0.0)
    assert torch.isfinite(b) and float(b) == pytest.approx(float(a), rel=1e-9)
