"""Tests of suma_lib.entropy: entropy, the power transform and entropy normalisation.

Peers: scipy.stats.entropy for entropies, scipy.optimize.brentq for the exponent γ, NumPy for the
power transform; plus property tests (hypothesis), gradients (gradcheck), dtypes, the meta device
and errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
import torch
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy.optimize import brentq

from suma_lib.entropy import (
    EntropyNormalization,
    entropy,
    entropy_bounds,
    entropy_normalize,
    power_transform,
)

META = torch.device("meta")
F64 = torch.float64


def np_entropy_of_power(p: np.ndarray, gamma: float) -> float:
    """Peer: H(p^γ / Σ p^γ) in NumPy, from log p (stable for tiny entries)."""
    lp = np.log(p[p > 0])
    a = gamma * (lp - lp.max())
    q = np.exp(a) / np.exp(a).sum()
    return float(st.entropy(q))


def brentq_gamma(p: np.ndarray, target: float) -> float:
    """Peer: the exponent with H = target, by bracketing root finding on log γ."""
    return math.exp(
        brentq(lambda u: np_entropy_of_power(p, math.exp(u)) - target, -40, 40, xtol=1e-14)
    )


@hst.composite
def distributions(draw, max_n: int = 12):
    """Random distributions with zeros and ties (the edge cases), as float64 NumPy arrays."""
    n = draw(hst.integers(1, max_n))
    w = np.array(
        draw(
            hst.lists(
                hst.sampled_from([0.0, 1e-30, 1e-6, 0.1, 0.3, 0.5, 1.0, 2.0, 7.0]),
                min_size=n,
                max_size=n,
            )
        )
    )
    if w.sum() == 0:
        w[draw(hst.integers(0, n - 1))] = 1.0
    return w / w.sum()


# ----------------------------------------------------------------------------------------- entropy
def test_entropy_matches_scipy_and_edges() -> None:
    p = torch.rand(5, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    p = p / p.sum(-1, keepdim=True)
    np.testing.assert_allclose(entropy(p), st.entropy(p.numpy(), axis=-1), rtol=1e-12)
    np.testing.assert_allclose(entropy(p.T, dim=0), st.entropy(p.numpy(), axis=-1), rtol=1e-12)
    assert entropy(torch.tensor([0.0, 1.0, 0.0])).item() == 0.0
    assert entropy(torch.full((8,), 0.125, dtype=F64)).item() == pytest.approx(
        math.log(8), rel=1e-15
    )
    with pytest.raises(ValueError, match="p must be non-negative"):
        entropy(torch.tensor([1.5, -0.5]))
    with pytest.raises(TypeError, match="p"):
        entropy(torch.tensor([1, 0]))


# ----------------------------------------------------------------------------------------- power
# transform
def test_power_transform_matches_numpy_and_limits() -> None:
    p = np.array([0.5, 0.2, 0.2, 0.1, 0.0])
    for gamma in (0.3, 1.0, 2.5):
        peer = np.where(p > 0, p**gamma, 0.0)
        np.testing.assert_allclose(
            power_transform(torch.tensor(p), gamma), peer / peer.sum(), rtol=1e-14
        )
    np.testing.assert_allclose(power_transform(torch.tensor(p), 0.0), [0.25, 0.25, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(
        power_transform(torch.tensor([0.4, 0.4, 0.2]), math.inf), [0.5, 0.5, 0.0]
    )
    # unnormalised input and per-row exponents along another axis
    x = torch.tensor([[1.0, 3.0], [2.0, 1.0], [1.0, 0.0]], dtype=F64)  # columns are distributions
    out = power_transform(x, torch.tensor([1.0, 2.0], dtype=F64), dim=0)
    np.testing.assert_allclose(out[:, 0], [0.25, 0.5, 0.25], rtol=1e-14)
    np.testing.assert_allclose(out[:, 1], [0.9, 0.1, 0.0], rtol=1e-14)


@settings(max_examples=80, deadline=None)
@given(p=distributions(), gamma=hst.floats(1e-3, 50.0))
def test_power_transform_keeps_order_zeros_and_ties(p: np.ndarray, gamma: float) -> None:
    q = power_transform(torch.tensor(p), gamma).numpy()
    assert np.isfinite(q).all() and q.sum() == pytest.approx(1.0, abs=1e-12)
    assert (q[p == 0] == 0).all()
    bigger = p[:, None] > p[None, :]
    assert (q[:, None] >= q[None, :])[bigger].all()
    assert (q[:, None] == q[None, :])[p[:, None] == p[None, :]].all()


def test_entropy_bounds() -> None:
    p = torch.tensor([[0.3, 0.3, 0.2, 0.2, 0.0], [0.9, 0.05, 0.05, 0.0, 0.0]], dtype=F64)
    lo, hi = entropy_bounds(p)
    np.testing.assert_allclose(lo, [math.log(2), 0.0])
    np.testing.assert_allclose(hi, [math.log(4), math.log(3)])


# -----------------------------------------------------------------------------------------
# normalisation
@settings(max_examples=80, deadline=None)
@given(p=distributions(), frac=hst.floats(-0.2, 1.2))
def test_normalize_hits_clamped_target_and_keeps_order(p: np.ndarray, frac: float) -> None:
    n = len(p)
    target = min(max(frac, 0.0), 1.0) * math.log(n)
    res = entropy_normalize(torch.tensor(p), target, return_info=True)
    q = res.p.numpy()
    lo = math.log((p == p.max()).sum())
    hi = math.log((p > 0).sum())
    assert res.converged.item()
    assert st.entropy(q) == pytest.approx(min(max(target, lo), hi), abs=1e-9)
    assert (q[p == 0] == 0).all()
    assert (q[:, None] >= q[None, :])[p[:, None] > p[None, :]].all()


@settings(max_examples=60, deadline=None)
@given(p=distributions(), frac=hst.floats(0.0, 1.0))
def test_raise_mode_raises_exactly_for_unreachable_targets(p: np.ndarray, frac: float) -> None:
    target = frac * math.log(len(p))
    lo, hi = math.log((p == p.max()).sum()), math.log((p > 0).sum())
    tol = 1e-10
    if lo - tol <= target <= hi + tol:
        q = entropy_normalize(torch.tensor(p), target, unreachable="raise")
        if lo < hi:
            assert st.entropy(q.numpy()) == pytest.approx(target, abs=1e-9)
    else:
        with pytest.raises(ValueError, match="target .* unreachable"):
            entropy_normalize(torch.tensor(p), target, unreachable="raise")


def test_gamma_matches_brentq_peer() -> None:
    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.full(30, 0.3), size=20)
    T = rng.uniform(0.05, 0.95, size=20) * np.log(30)
    # make every target reachable (Dirichlet draws have a unique maximum and no zeros in float64)
    q, gamma = entropy_normalize(torch.tensor(P), torch.tensor(T), return_gamma=True)
    peer = [brentq_gamma(p, t) for p, t in zip(P, T, strict=False)]
    np.testing.assert_allclose(gamma, peer, rtol=1e-8)
    np.testing.assert_allclose(st.entropy(q.numpy(), axis=-1), T, atol=1e-10)


def test_batched_targets_dim_and_shapes() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(2, 3, 7, generator=g, dtype=F64), dim=-1)
    targets = torch.tensor(
        [0.5, 1.0, 1.5], dtype=F64
    )  # one per middle index, broadcast over the first
    q, gamma = entropy_normalize(p, targets, return_gamma=True)
    assert q.shape == p.shape and gamma.shape == (2, 3)
    np.testing.assert_allclose(entropy(q), targets.expand(2, 3), atol=1e-10)
    qt = entropy_normalize(p.transpose(0, 2), targets[:, None], dim=0)  # distributions along axis 0
    np.testing.assert_allclose(qt.transpose(0, 2), q, atol=1e-12)


def test_edge_cases_near_one_hot_uniform_zeros() -> None:
    p = torch.tensor([1 - 3e-30, 1e-30, 1e-30, 1e-30], dtype=F64)
    q, gamma = entropy_normalize(p, 1.0, return_gamma=True)
    assert entropy(q).item() == pytest.approx(1.0, abs=1e-12)
    r = brentq(
        lambda r: math.log1p(3 * r) - 3 * r * math.log(r) / (1 + 3 * r) - 1.0, 1e-12, 1, xtol=1e-16
    )
    assert gamma.item() == pytest.approx(math.log(r) / math.log(1e-30), rel=1e-9)
    # exactly one-hot: every target clamps to the one-hot itself, gamma = 1 (the row is uniform on
    # its support)
    q, gamma = entropy_normalize(torch.tensor([0.0, 1.0, 0.0]), 0.7, return_gamma=True)
    assert q.tolist() == [0.0, 1.0, 0.0] and gamma.item() == 1.0
    u = torch.full((6,), 1 / 6, dtype=F64)
    q, gamma = entropy_normalize(u, 0.2, return_gamma=True)
    assert torch.equal(q, u) and gamma.item() == 1.0
    q, gamma = entropy_normalize(
        torch.tensor([0.6, 0.3, 0.1, 0.0], dtype=F64), 0.0, return_gamma=True
    )
    assert q.tolist() == [1.0, 0.0, 0.0, 0.0] and math.isinf(gamma.item())
    q, gamma = entropy_normalize(
        torch.tensor([0.6, 0.3, 0.1, 0.0], dtype=F64), math.log(4), return_gamma=True
    )
    np.testing.assert_allclose(q, [1 / 3, 1 / 3, 1 / 3, 0.0]) and gamma.item() == 0.0


def test_info_and_return_types() -> None:
    p = torch.tensor([0.7, 0.2, 0.1], dtype=F64)
    info = entropy_normalize(p, 0.5, return_info=True)
    assert isinstance(info, EntropyNormalization)
    assert info.iterations.dtype == torch.int64 and 1 <= info.iterations.item() <= 10
    assert info.converged.item()
    assert isinstance(entropy_normalize(p, 0.5), torch.Tensor)
    # max_iter too small: flagged, not raised, and the output is still a distribution
    info = entropy_normalize(
        torch.tensor([0.97, 0.01, 0.01, 0.01], dtype=F64),
        1.3,
        max_iter=1,
        tol=1e-14,
        return_info=True,
    )
    assert not info.converged.item() and info.iterations.item() == 1
    assert info.p.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_dtypes(dtype: torch.dtype) -> None:
    p = torch.softmax(torch.randn(16, 50, generator=torch.Generator().manual_seed(2)), -1).to(dtype)
    q = entropy_normalize(p, 2.0)
    assert q.dtype == dtype and torch.isfinite(q).all()
    tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 0.1}[dtype]
    np.testing.assert_allclose(entropy(q.double()), 2.0, atol=tol)


def test_huge_batch_of_extremes_has_no_nan() -> None:
    p = torch.zeros(4, 1000, dtype=F64)
    p[0, 0] = 1.0  # one-hot
    p[1] = 1e-3  # uniform
    p[2, :2] = 0.5  # tie, rest zero
    p[3, 0], p[3, 1:] = 1 - 999e-300, 1e-300  # near one-hot with denormal-scale entries
    q = entropy_normalize(p, torch.tensor([3.0, 3.0, 0.3, 3.0], dtype=F64))
    assert torch.isfinite(q).all()
    assert entropy(q[3]).item() == pytest.approx(3.0, abs=1e-9)


# -----------------------------------------------------------------------------------------
# gradients
def test_gradcheck_through_the_solver() -> None:
    logits = torch.randn(
        2, 5, generator=torch.Generator().manual_seed(4), dtype=F64, requires_grad=True
    )
    t = torch.tensor([0.4, 1.3], dtype=F64, requires_grad=True)
    f = lambda a, t: entropy_normalize(torch.softmax(a, -1), t, return_gamma=True)  # noqa: E731
    assert torch.autograd.gradcheck(f, (logits, t))


def test_gradients_at_clamped_rows_and_zero_entries() -> None:
    p = torch.tensor(
        [[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]], dtype=F64, requires_grad=True
    )
    t = torch.tensor([math.log(4), 1.0], dtype=F64, requires_grad=True)  # both clamped
    q = entropy_normalize(p, t)
    (q * torch.arange(4, dtype=F64)).sum().backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(t.grad).all()
    assert t.grad.abs().max().item() == 0.0
    p2 = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=F64, requires_grad=True)
    entropy_normalize(p2, 0.5)[0].backward()
    assert p2.grad[3].item() == 0.0 and torch.isfinite(p2.grad).all()


# ----------------------------------------------------------------------------------------- devices
def test_meta_device_shapes() -> None:
    p = torch.empty(2, 3, 5, device=META)
    info = entropy_normalize(p, torch.empty(3, device=META), return_info=True)
    assert info.p.shape == (2, 3, 5) and info.p.device.type == "meta"
    assert info.gamma.shape == (2, 3) and info.iterations.shape == (2, 3)
    assert power_transform(p, 2.0).device.type == "meta"
    assert entropy_bounds(p)[0].shape == (2, 3)


# ----------------------------------------------------------------------------------------- errors
def test_errors_name_the_argument() -> None:
    p = torch.tensor([0.5, 0.5], dtype=F64)
    with pytest.raises(ValueError, match="p must be non-negative"):
        entropy_normalize(torch.tensor([1.2, -0.2]), 0.5)
    with pytest.raises(ValueError, match="p must sum to 1"):
        entropy_normalize(torch.tensor([0.5, 0.6]), 0.5)
    with pytest.raises(ValueError, match="p must be finite"):
        entropy_normalize(torch.tensor([math.nan, 1.0]), 0.5)
    with pytest.raises(TypeError, match="p"):
        entropy_normalize([0.5, 0.5], 0.5)
    with pytest.raises(ValueError, match=r"target must lie in \[0, log n\]"):
        entropy_normalize(p, 0.8)
    with pytest.raises(ValueError, match="target must lie"):
        entropy_normalize(p, -0.1)
    with pytest.raises(ValueError, match="target must not"):
        entropy_normalize(p, math.nan)
    with pytest.raises(ValueError, match="target of shape"):
        entropy_normalize(p.expand(3, 2), torch.zeros(4, dtype=F64))
    with pytest.raises(TypeError, match="target"):
        entropy_normalize(p, "0.5")
    with pytest.raises(ValueError, match="unreachable"):
        entropy_normalize(p, 0.5, unreachable="ignore")
    with pytest.raises(ValueError, match="max_iter"):
        entropy_normalize(p, 0.5, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        entropy_normalize(p, 0.5, tol=-1.0)
    with pytest.raises(ValueError, match="return_gamma and return_info"):
        entropy_normalize(p, 0.5, return_gamma=True, return_info=True)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        power_transform(p, -1.0)
    with pytest.raises(ValueError, match="at least one positive entry"):
        power_transform(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="dim"):
        entropy_normalize(p, 0.5, dim=3)
