"""Tests for suma_lib.attention.scale (chapters entropy-invariant-softmax,
softmax-robustness-information)."""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.optimize import minimize_scalar
from scipy.stats import entropy as scipy_entropy

from suma_lib.attention import (
    box_entropy_gap,
    box_entropy_local_minima,
    box_min_entropy,
    entropy_invariant_attention,
    entropy_invariant_scale,
    max_gap_entropy_estimate,
    noise_change_first_order,
    noisy_attention_change,
    score_cgf,
    softmax_attention,
    softmax_entropy,
    tilted_entropy,
)

SETTINGS = settings(max_examples=30, deadline=None)
rows_strategy = st.lists(
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=12), min_size=1, max_size=4
).map(lambda rows: [r + [0.0] * (12 - len(r)) for r in rows])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------- entropy_invariant_scale
@SETTINGS
@given(n=st.integers(1, 10**6), d=st.integers(1, 1024), train_len=st.integers(2, 10**5))
def test_scale_is_log_ratio_over_sqrt_d(n, d, train_len):
    got = entropy_invariant_scale(n, d, train_len)
    assert got == pytest.approx(
        math.log(n) / math.log(train_len) / math.sqrt(d), rel=1e-12, abs=1e-15
    )


def test_scale_equals_inverse_sqrt_d_at_training_length():
    assert entropy_invariant_scale(512, 64) == pytest.approx(1 / 8, rel=1e-15)
    assert entropy_invariant_scale(1, 64) == 0.0


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"n": 0, "d": 64}, ValueError, "n"),
        ({"n": 2.5, "d": 64}, TypeError, "n"),
        ({"n": True, "d": 64}, TypeError, "n"),
        ({"n": 10, "d": 0}, ValueError, "d"),
        ({"n": 10, "d": 64, "train_len": 1}, ValueError, "train_len"),
    ],
)
def test_scale_errors(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        entropy_invariant_scale(**kwargs)


# --------------------------------------------------------------------- entropy_invariant_attention
def _reference_attention(q, k, v, visible, train_len):
    """Row-by-row softmax over the visible keys with the float scale of that row (plain torch)."""
    d = q.shape[-1]
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for idx in itertools.product(*(range(s) for s in q.shape[:-1])):
        keys = visible[idx[-1]].nonzero().flatten()
        if len(keys) == 0:
            continue
        lam = math.log(len(keys)) / math.log(train_len) / math.sqrt(d)
        logits = lam * (k[idx[:-1]][keys] @ q[idx])
        out[idx] = torch.softmax(logits, 0) @ v[idx[:-1]][keys]
    return out


def test_attention_without_mask_uses_the_float_scale():
    g = gen()
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out = entropy_invariant_attention(q, k, v, train_len=4)
    ref = softmax_attention(q, k, v, scale=entropy_invariant_scale(7, 8, 4))
    torch.testing.assert_close(out, ref)


def test_attention_causal_and_padding_match_row_by_row_reference():
    g = gen(1)
    q, k, v = (torch.randn(2, 6, 5, generator=g, dtype=torch.float64) for _ in range(3))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    torch.testing.assert_close(
        entropy_invariant_attention(q, k, v, causal=True, train_len=3),
        _reference_attention(q, k, v, causal, 3),
    )
    pad = torch.tensor(
        [[True, True, False, True, False, True]]
    )  # (1, m): the same keys for every query
    out = entropy_invariant_attention(q, k, v, mask=pad, train_len=3)
    torch.testing.assert_close(out, _reference_attention(q, k, v, pad.expand(6, 6), 3))


def test_attention_fully_masked_row_is_zero_not_nan():
    g = gen(2)
    q, k, v = (torch.randn(4, 3, generator=g) for _ in range(3))
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    out = entropy_invariant_attention(q, k, v, mask=mask)
    assert torch.isfinite(out).all() and (out[2] == 0).all()


def test_attention_meta_device_and_dtype():
    q = torch.empty(2, 4, 16, 8, device="meta", dtype=torch.float16)
    out = entropy_invariant_attention(
        q, q, torch.empty(2, 4, 16, 5, device="meta", dtype=torch.float16), causal=True
    )
    assert out.device.type == "meta" and out.shape == (2, 4, 16, 5) and out.dtype == torch.float16


def test_attention_errors():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="mask"):
        entropy_invariant_attention(x, x, x, mask=torch.ones(3, 3))
    with pytest.raises(ValueError, match="train_len"):
        entropy_invariant_attention(x, x, x, train_len=1)
    with pytest.raises(TypeError, match="q"):
        entropy_invariant_attention(x.long(), x, x)


# -----------------------------------------------------------------------------------
# softmax_entropy
@SETTINGS
@given(rows=rows_strategy)
def test_softmax_entropy_matches_scipy_and_bounds(rows):
    logits = torch.tensor(rows, dtype=torch.float64)
    h = softmax_entropy(logits)
    ref = scipy_entropy(torch.softmax(logits, -1).numpy(), axis=-1)
    np.testing.assert_allclose(h.numpy(), ref, rtol=1e-9, atol=1e-12)
    assert (h >= 0).all() and (h <= math.log(logits.shape[-1]) + 1e-12).all()


def test_softmax_entropy_matches_torch_categorical():
    g = gen(11)
    logits = 3 * torch.randn(5, 7, 33, generator=g, dtype=torch.float64)
    ref = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(softmax_entropy(logits), ref)


def test_softmax_entropy_extreme_rows():
    n = 50
    rows = torch.zeros(5, n, dtype=torch.float64)
    rows[1, 3] = 1e30  # one-hot by a huge logit
    rows[2] = 1e30  # uniform at a huge value
    rows[3] = -math.inf
    rows[3, 10] = 5.0  # one key visible
    rows[4] = -math.inf  # fully masked
    h = softmax_entropy(rows)
    torch.testing.assert_close(
        h, torch.tensor([math.log(n), 0.0, math.log(n), 0.0, 0.0], dtype=torch.float64)
    )


def test_softmax_entropy_masked_keys_drop_out_and_grad_is_finite():
    g = gen(3)
    x = torch.randn(3, 8, generator=g, dtype=torch.float64)
    masked = x.clone()
    masked[:, 5:] = -math.inf
    torch.testing.assert_close(softmax_entropy(masked), softmax_entropy(x[:, :5]))
    masked[2] = -math.inf
    masked.requires_grad_(True)
    softmax_entropy(masked).sum().backward()
    assert torch.isfinite(masked.grad).all()


def test_softmax_entropy_dim_and_meta():
    g = gen(4)
    x = torch.randn(4, 6, 3, generator=g)
    torch.testing.assert_close(softmax_entropy(x, dim=1), softmax_entropy(x.transpose(1, 2)))
    out = softmax_entropy(torch.empty(2, 3, 7, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 3)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_softmax_entropy_rejects_nan_and_pos_inf(bad):
    with pytest.raises(ValueError, match="logits"):
        softmax_entropy(torch.tensor([0.0, bad]))


def test_softmax_entropy_type_errors():
    with pytest.raises(TypeError, match="logits"):
        softmax_entropy(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="logits"):
        softmax_entropy([0.0, 1.0])
    with pytest.raises(ValueError, match="dim"):
        softmax_entropy(torch.zeros(3), dim=1)


# --------------------------------------------------------------------------
# max_gap_entropy_estimate
@SETTINGS
@given(rows=rows_strategy)
def test_quick_estimate_is_a_lower_bound(rows):
    logits = torch.tensor(rows, dtype=torch.float64)
    assert (max_gap_entropy_estimate(logits) <= softmax_entropy(logits) + 1e-9).all()


def test_quick_estimate_exact_for_constant_rows_and_errors():
    torch.testing.assert_close(
        max_gap_entropy_estimate(torch.full((2, 9), 3.0)), torch.full((2,), math.log(9))
    )
    assert max_gap_entropy_estimate(torch.empty(3, 5, device="meta")).shape == (3,)
    with pytest.raises(ValueError, match="logits"):
        max_gap_entropy_estimate(torch.tensor([0.0, -math.inf]))


# -------------------------------------------------------------------------- score_cgf,
# tilted_entropy
def _cgf_quad(x: float, d: int) -> float:
    w = lambda t: (1 - t * t) ** ((d - 3) / 2)  # noqa: E731
    return math.log(quad(lambda t: math.exp(x * t) * w(t), -1, 1)[0] / quad(w, -1, 1)[0])


@pytest.mark.parametrize("d", [3, 5, 8, 32])
@pytest.mark.parametrize("x", [0.01, 0.7, 6.0, 30.0])
def test_cgf_matches_quadrature(x, d):
    assert float(score_cgf(x, d)) == pytest.approx(_cgf_quad(x, d), rel=1e-8, abs=1e-12)


def test_cgf_closed_forms_and_extremes():
    x = np.array([0.0, 1e-4, 0.5, 3.0, 40.0])
    np.testing.assert_allclose(score_cgf(x), x**2 / 2)
    np.testing.assert_allclose(score_cgf(x, 1), np.log(np.cosh(x)), rtol=1e-7, atol=1e-16)
    np.testing.assert_allclose(score_cgf(x[1:], 3), np.log(np.sinh(x[1:]) / x[1:]), rtol=1e-7)
    assert np.isfinite(score_cgf(1e4, 64))  # no overflow
    # Large order, small argument: SciPy underflows, the mpmath fallback does not (K ≈ x²/(2d)).
    assert float(score_cgf(0.5, 4096)) == pytest.approx(0.25 / (2 * 4096), rel=1e-6)


def test_tilted_entropy_gaussian_matches_sampled_rows():
    g = gen(5)
    n = 2**16
    s = torch.randn(8, n, generator=g, dtype=torch.float64)
    for x in (0.5, 1.0):
        measured = softmax_entropy(x * s).mean().item()
        assert measured == pytest.approx(float(tilted_entropy(n, x)), abs=0.01)


def test_tilted_entropy_d3_closed_form_and_monotone():
    x = np.linspace(0.01, 20, 50)
    kl = x / np.tanh(x) - 1 - np.log(np.sinh(x) / x)
    np.testing.assert_allclose(tilted_entropy(100, x, 3), math.log(100) - kl, rtol=1e-7, atol=1e-9)
    assert np.all(np.diff(tilted_entropy(100, x, 16)) < 0)


def test_cgf_and_tilted_entropy_errors():
    with pytest.raises(ValueError, match="x"):
        score_cgf(-1.0)
    with pytest.raises(ValueError, match="x"):
        tilted_entropy(10, np.nan)
    with pytest.raises(ValueError, match="d"):
        score_cgf(1.0, 0)
    with pytest.raises(ValueError, match="n"):
        tilted_entropy(0.5, 1.0)


# ---------------------------------------------------------------------------- noise on the scores
def test_noisy_change_shape_zero_noise_and_reproducible():
    g = gen(6)
    s = torch.randn(2, 3, 10, generator=g)
    v = torch.randn(2, 3, 10, 4, generator=g)
    a = noisy_attention_change(s, v, 0.3, samples=5, generator=gen(7))
    assert a.shape == (5, 2, 3, 4)
    torch.testing.assert_close(a, noisy_attention_change(s, v, 0.3, samples=5, generator=gen(7)))
    assert (noisy_attention_change(s, v, 0.0, samples=2) == 0).all()


def test_noisy_change_ignores_a_common_shift_of_the_scores():
    g = gen(8)
    s = torch.randn(4, 20, generator=g, dtype=torch.float64)
    v = torch.randn(4, 20, 3, generator=g, dtype=torch.float64)
    a = noisy_attention_change(s, v, 0.5, samples=3, generator=gen(9))
    b = noisy_attention_change(s + 100.0, v, 0.5, samples=3, generator=gen(9))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_first_order_matches_monte_carlo(noise):
    g = gen(10)
    s = torch.randn(4, 1024, generator=g, dtype=torch.float64)
    v = torch.randn(4, 1024, 8, generator=g, dtype=torch.float64)
    change = noisy_attention_change(s, v, 0.3, samples=400, noise=noise, generator=g)
    rms = change.pow(2).sum(-1).mean(0).sqrt()
    torch.testing.assert_close(
        rms, noise_change_first_order(s, v, 0.3, noise=noise), rtol=0.08, atol=0
    )


def test_uniform_tau2_matches_quadrature():
    # τ² enters the prediction as a factor: compare with ∫ e^{kε} over U[-a, a] done by quadrature.
    s = torch.zeros(1, 2, dtype=torch.float64)
    v = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)  # Σ p_i² (v_i − o)² = 1/2
    for std in (1e-5, 0.2, 1.5):
        a = math.sqrt(3) * std
        with mpmath.workdps(40):  # high precision: m2/m1² − 1 cancels badly for tiny noise
            m = [
                mpmath.quad(lambda e, k=k, a=a: mpmath.exp(k * e) / (2 * a), [-a, a])
                for k in (1, 2)
            ]
            tau2 = float(m[1] / m[0] ** 2 - 1)
        got = noise_change_first_order(s, v, std, noise="uniform").item()
        assert got == pytest.approx(math.sqrt(tau2 / 2), rel=1e-7)


def test_noise_meta_device():
    s = torch.empty(3, 16, device="meta")
    v = torch.empty(3, 16, 4, device="meta")
    assert noisy_attention_change(s, v, 0.1, samples=2).shape == (2, 3, 4)
    assert noise_change_first_order(s, v, 0.1).shape == (3,)


def test_noise_errors():
    s, v = torch.zeros(2, 5), torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="values"):
        noisy_attention_change(s, torch.zeros(2, 4, 3), 0.1)
    with pytest.raises(ValueError, match="noise_std"):
        noisy_attention_change(s, v, -0.1)
    with pytest.raises(ValueError, match="noise"):
        noise_change_first_order(s, v, 0.1, noise="laplace")
    with pytest.raises(TypeError, match="generator"):
        noisy_attention_change(s, v, 0.1, generator=np.random.default_rng())
    with pytest.raises(ValueError, match="samples"):
        noisy_attention_change(s, v, 0.1, samples=0)
    with pytest.raises(TypeError, match="scores and values"):
        noisy_attention_change(s, v.double(), 0.1)
    with pytest.raises(ValueError, match="scores"):
        noise_change_first_order(torch.tensor([[0.0, math.nan]]), torch.zeros(1, 2, 1), 0.1)


# ---------------------------------------------------------------------- lowest entropy in a box
@pytest.mark.parametrize("beta", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("n", [2, 5, 9])
def test_box_min_entropy_matches_brute_force(n, beta):
    patterns = np.array(list(itertools.product([-beta, beta], repeat=n)))[1:-1]
    brute = scipy_entropy(np.exp(patterns), axis=1)
    h, k = box_min_entropy(n, beta)
    assert h == pytest.approx(brute.min(), rel=1e-12)
    assert brute[(patterns > 0).sum(1) == k].min() == pytest.approx(
        h, rel=1e-12
    )  # k is a minimiser


def test_box_entropy_gap_matches_search_and_limits():
    def search(beta):
        q = lambda f: f * math.exp(2 * beta) / (f * math.exp(2 * beta) + 1 - f)  # noqa: E731
        kl = lambda f: q(f) * math.log(q(f) / f) + (1 - q(f)) * math.log((1 - q(f)) / (1 - f))  # noqa: E731
        return -minimize_scalar(
            lambda f: -kl(f), bounds=(1e-12, 1 - 1e-12), method="bounded", options={"xatol": 1e-13}
        ).fun

    for beta in (0.05, 1.0, 3.0):
        assert box_entropy_gap(beta) == pytest.approx(search(beta), rel=1e-8)
    assert box_entropy_gap(1.0) == pytest.approx(
        1 / math.tanh(1) + math.log(math.sinh(1)) - 1, rel=1e-14
    )
    # Series branch and direct branch agree at the switch point.
    assert box_entropy_gap(0.999e-3) == pytest.approx(box_entropy_gap(1.001e-3), rel=1e-2)
    assert box_entropy_gap(1000.0) == pytest.approx(2000 - 1 - math.log(2000), rel=1e-12)
    assert math.log(10**6) - box_min_entropy(10**6)[0] == pytest.approx(
        box_entropy_gap(1.0), abs=1e-9
    )


def test_box_local_minima_never_beat_the_two_level_minimum():
    vals, pts = box_entropy_local_minima(12, 1.5, starts=4, rng=np.random.default_rng(0))
    assert vals.shape == (4,) and pts.shape == (4, 12)
    assert (vals >= box_min_entropy(12, 1.5)[0] - 1e-12).all()
    assert np.abs(np.abs(pts) - 1.5).max() < 1e-6


def test_box_errors():
    with pytest.raises(ValueError, match="n"):
        box_min_entropy(1)
    with pytest.raises(ValueError, match="beta"):
        box_min_entropy(5, 0.0)
    with pytest.raises(ValueError, match="beta"):
        box_entropy_gap(-1.0)
    with pytest.raises(TypeError, match="rng"):
        box_entropy_local_minima(5, rng=0)
    with pytest.raises(ValueError, match="starts"):
        box_entropy_local_minima(5, starts=0)


def test_entropy_invariant_attention_with_one_key_and_huge_inputs() -> None:
    """Issue 11: one visible key gives scale 0; with |q|, |k| >= 2^64 that was inf * 0 = NaN."""
    q = torch.full((1, 2), 2.0**70)
    torch.testing.assert_close(
        entropy_invariant_attention(q, q, torch.ones(1, 1)), torch.ones(1, 1)
    )
    q3, v3 = torch.full((3, 2), 2.0**70), torch.arange(3.0).reshape(3, 1)
    out = entropy_invariant_attention(q3, q3, v3, causal=True)  # query 0 sees one key
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], v3[0])
    with pytest.raises(ValueError, match="d >= 1"):
        entropy_invariant_attention(torch.ones(2, 0), torch.ones(2, 0), torch.ones(2, 1))


# ------------------------------------------------- issue 11: batch dimensions that do not broadcast
def test_noise_change_rejects_non_broadcasting_batches() -> None:
    from suma_lib.attention import noise_change_first_order, noisy_attention_change

    s, v = torch.randn(2, 5), torch.randn(3, 5, 2)
    with pytest.raises(ValueError, match="scores .* and values .* do not broadcast"):
        noise_change_first_order(s, v, 0.1)
    with pytest.raises(ValueError, match="do not broadcast"):
        noisy_attention_change(s, v, 0.1)
    with pytest.raises(ValueError, match="do not broadcast"):
        noise_change_first_order(s[:0], v, 0.1)


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e20, 1e30])
def test_noise_change_first_order_scales_with_the_values(scale: float) -> None:  # issue 11
    from suma_lib.attention import noise_change_first_order

    gen = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    ref = noise_change_first_order(s, v, 0.1)  # float64; the change is linear in v
    out = noise_change_first_order(s.float(), (v * scale).float(), 0.1)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.double() / scale, ref, rtol=1e-5)
    out_s = noise_change_first_order(
        (s * 1e30).float(), v.float(), 0.1
    )  # one-hot weights: no change
    assert torch.isfinite(out_s).all()
