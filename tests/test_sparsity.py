"""Tests for suma_lib.attention.sparsity: the l1/l2 measure, masks, extremes, standard error,
scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from suma_lib.attention import SCORE_KINDS, attention_scores, attention_sparsity, sparsity_stderr
from suma_lib.entropy import entropy

F64 = torch.float64


def _numpy_peer(x: np.ndarray) -> float:
    """S = mean|x| / sqrt(mean x^2), straight from the definition (float64 NumPy)."""
    x = x / np.max(
        np.abs(x)
    )  # rescaled first, so that subnormal entries do not underflow when squared
    return float(np.mean(np.abs(x)) / np.sqrt(np.mean(x**2)))


def test_uniform_one_hot_and_known_rows() -> None:
    n = 10
    rows = torch.stack(
        [
            torch.full((n,), 2.0, dtype=F64),
            torch.eye(n, dtype=F64)[3],
            torch.tensor([1.0, -1.0] * 5, dtype=F64),
        ]
    )
    torch.testing.assert_close(
        attention_sparsity(rows), torch.tensor([1.0, n**-0.5, 1.0], dtype=F64)
    )
    x = torch.tensor([3.0, 0.0, -4.0, 0.0], dtype=F64)  # |x|_1 = 7, |x|_2 = 5
    torch.testing.assert_close(attention_sparsity(x), torch.tensor(7 / (2 * 5), dtype=F64))


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e6, 1e6)).filter(
        lambda a: np.any(a != 0)
    )
)
def test_matches_definition_and_range(a: np.ndarray) -> None:
    s = attention_sparsity(torch.from_numpy(a)).item()
    assert s == pytest.approx(_numpy_peer(a), rel=1e-12)
    assert 1 / math.sqrt(a.size) * (1 - 1e-12) <= s <= 1 + 1e-12


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, 12, elements=st.floats(0.0, 1.0)).filter(lambda a: a.sum() > 0),
    st.floats(1e-30, 1e30),
)
def test_scale_invariance_and_renyi_entropy(p: np.ndarray, c: float) -> None:
    p = torch.from_numpy(p / p.sum())
    s = attention_sparsity(p)
    torch.testing.assert_close(attention_sparsity(c * p), s, rtol=1e-12, atol=0)
    torch.testing.assert_close(12 * s**2, 1 / (p**2).sum(), rtol=1e-12, atol=0)  # n S^2 = e^{H_2}
    assert 12 * s.item() ** 2 <= math.exp(entropy(p).item()) * (1 + 1e-12)  # H_2 <= H


def test_mask_excludes_entries_and_empty_rows_give_zero() -> None:
    w = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.2, 0.3, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=F64)
    mask = torch.tensor(
        [[True, True, False, False], [True, True, True, True], [False, False, False, False]]
    )
    s = attention_sparsity(w, mask=mask)
    assert s[0].item() == pytest.approx(1.0)  # uniform over its 2 real keys
    assert s[1].item() == pytest.approx(_numpy_peer(np.array([0.2, 0.3, 0.5, 0.0])))
    assert s[2].item() == 0.0  # fully masked: rule S = 0
    assert attention_sparsity(torch.zeros(3, 5)).tolist() == [0.0, 0.0, 0.0]
    # masked entries are ignored even when non-zero; a broadcast mask works
    w2 = torch.tensor([[1.0, 1.0, 9.0]], dtype=F64)
    assert attention_sparsity(w2, mask=torch.tensor([True, True, False])).item() == pytest.approx(
        1.0
    )
    assert not torch.isnan(s).any()


def test_fully_masked_rows_from_attention_weights() -> None:
    from suma_lib.attention import attention_weights

    q, k = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    mask = torch.ones(2, 4, 6, dtype=torch.bool)
    mask[0, 1] = False
    w = attention_weights(q, k, mask=mask)
    s = attention_sparsity(w, mask=mask)
    assert s[0, 1].item() == 0.0 and bool((s[0, 0] > 0) & (s[1] > 0).all())


def test_extreme_magnitudes_float32() -> None:
    base = torch.tensor([1.0, 2.0, 3.0, 0.5])
    ref = attention_sparsity(base)
    for c in (1e30, -1e30, 1e-30, 1e-42):  # 1e-42 is subnormal in float32
        torch.testing.assert_close(attention_sparsity(c * base), ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(
        attention_sparsity(torch.tensor([1e30, 1.0, 0.0])),
        torch.tensor(1 / math.sqrt(3)),
        rtol=1e-6,
        atol=0,
    )


def test_dim_batching_and_dtype() -> None:
    x = torch.rand(3, 5, 7, dtype=F64)
    s_last = attention_sparsity(x)
    s_mid = attention_sparsity(x.transpose(1, 2), dim=1)
    torch.testing.assert_close(s_last, s_mid)
    assert s_last.shape == (3, 5) and s_last.dtype == F64
    assert attention_sparsity(x.float()).dtype == torch.float32


def test_meta_device() -> None:
    w = torch.empty(2, 3, 5, device="meta")
    assert attention_sparsity(w).shape == (2, 3) and attention_sparsity(w).device.type == "meta"
    m = torch.ones(2, 1, 5, dtype=torch.bool, device="meta")
    assert attention_sparsity(w, mask=m).shape == (2, 3)
    assert sparsity_stderr(w).shape == (2, 3)
    q, k = torch.empty(4, 8, device="meta"), torch.empty(6, 8, device="meta")
    for kind in SCORE_KINDS:
        assert attention_scores(q, k, kind, normalize=True).shape == (4, 6)


def test_stderr_matches_spread_of_repeated_samples() -> None:
    g = torch.Generator().manual_seed(0)
    reps, n = 400, 2000
    x = torch.randn(reps, n, generator=g, dtype=F64).exp()  # lognormal scores, tau = 1
    s = attention_sparsity(x)
    se = sparsity_stderr(x)
    # the delta-method error predicts the spread of S across independent rows (within 15 %)
    assert se.mean().item() == pytest.approx(s.std().item(), rel=0.15)
    assert s.mean().item() == pytest.approx(
        math.exp(-0.5), abs=4 * s.std().item() / math.sqrt(reps)
    )
    assert sparsity_stderr(torch.zeros(2, 5)).tolist() == [0.0, 0.0]


def test_scores_against_direct_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    q, k = (
        torch.randn(2, 3, 4, generator=g, dtype=F64),
        torch.randn(2, 5, 4, generator=g, dtype=F64),
    )
    s = 0.5 * q @ k.mT
    phi = lambda t: torch.where(t > 0, t + 1, t.exp())  # elu + 1, written out  # noqa: E731
    expected = {
        "exp": s.exp(),
        "identity": s,
        "relu2": s.clamp_min(0) ** 2,
        "elu1": 0.5 * phi(q) @ phi(k).mT,
        "relu": 0.5 * q.clamp_min(0) @ k.clamp_min(0).mT,
    }
    for kind in SCORE_KINDS:
        x = attention_scores(q, k, kind, scale=0.5)
        torch.testing.assert_close(x, expected[kind])
        xn = attention_scores(q, k, kind, scale=0.5, normalize=True)
        nonzero = (x.abs().sum(-1) > 0).to(F64)  # a relu2 row can be all zero; it stays zero
        torch.testing.assert_close(xn.abs().sum(-1), nonzero)
        torch.testing.assert_close(attention_sparsity(xn), attention_sparsity(x))
    # softmax rows with huge logits: no overflow when normalised
    big = attention_scores(1e3 * q, k, "exp", normalize=True)
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big, torch.softmax(1e3 * q @ k.mT, -1))


def test_errors_name_the_argument() -> None:
    with pytest.raises(TypeError, match="weights"):
        attention_sparsity([0.5, 0.5])
    with pytest.raises(TypeError, match="weights"):
        attention_sparsity(torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="weights"):
        attention_sparsity(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="weights"):
        attention_sparsity(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="weights"):
        attention_sparsity(torch.empty(3, 0))
    with pytest.raises(ValueError, match="dim"):
        attention_sparsity(torch.ones(3), dim=2)
    with pytest.raises(TypeError, match="mask"):
        attention_sparsity(torch.ones(2, 3), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask"):
        attention_sparsity(torch.ones(2, 3), mask=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="x"):
        sparsity_stderr(torch.ones(3, 1))
    with pytest.raises(ValueError, match="kind"):
        attention_scores(torch.ones(2, 3), torch.ones(2, 3), "softmax")
    with pytest.raises(ValueError, match="q and k"):
        attention_scores(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="scale"):
        attention_scores(torch.ones(2, 3), torch.ones(2, 3), scale=float("inf"))
    with pytest.raises(TypeError, match="normalize"):
        attention_scores(torch.ones(2, 3), torch.ones(2, 3), normalize=1)


def test_normalized_scores_survive_overflow() -> None:
    """Issue 11: attention_scores(normalize=True) at |q.k| beyond float32."""
    one = attention_scores(torch.tensor([[1e20]]), torch.tensor([[1e20]]), "exp", normalize=True)
    assert torch.equal(one, torch.ones(1, 1))
    q = torch.tensor([[1e12, 1e12]])
    k = torch.tensor([[1e12, 1e12], [1e12, 0.0], [-1e12, 0.0]])
    torch.testing.assert_close(
        attention_scores(q, k, "relu2", normalize=True), torch.tensor([[0.8, 0.2, 0.0]])
    )
    torch.testing.assert_close(
        attention_scores(q, k, "identity", scale=-3.0, normalize=True),
        torch.tensor([[-0.5, -0.25, 0.25]]),
    )
    g = torch.Generator().manual_seed(0)
    q64, k64 = (
        torch.randn(3, 4, generator=g, dtype=torch.float64),
        torch.randn(5, 4, generator=g, dtype=torch.float64),
    )
    for kind in SCORE_KINDS:  # away from overflow, normalize=True is the row-normalised plain score
        raw = attention_scores(q64, k64, kind, scale=0.7)
        ref = raw / raw.abs().sum(-1, keepdim=True)
        torch.testing.assert_close(attention_scores(q64, k64, kind, scale=0.7, normalize=True), ref)
        big = attention_scores(q64.float() * 1e25, k64.float() * 1e25, kind, normalize=True)
        assert torch.isfinite(big).all(), kind


def test_unnormalized_scores_never_nan_at_huge_input() -> None:  # issue 11
    from suma_lib.attention import attention_scores

    q, k = torch.randn(3, 4) * 1e30, torch.randn(5, 4) * 1e30
    for kind in ("exp", "relu2", "relu", "elu1"):
        out = attention_scores(q, k, kind, normalize=False)
        assert not torch.isnan(out).any()
    out = attention_scores(q / 1e30, k / 1e30, "exp", normalize=False)
    assert torch.allclose(out, torch.exp((q / 1e30) @ (k / 1e30).T), rtol=1e-5)
