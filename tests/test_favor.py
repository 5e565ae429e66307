"""Tests for suma_lib.attention.favor (chapter performer)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.attention import (
    draw_orthogonal_features,
    favor_attention,
    favor_features,
    favor_flops,
    softmax_attention,
    softmax_attention_flops,
)

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rand(*shape, dtype=F64, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def favor_ref(q, k, v, omega, causal=False, key_mask=None):
    """Independent float64 reference, stable in log space: w_ij = sum_l exp(a_il + b_jl), rows
    normalised.

    a_il = omega_l.q~_i - |q~_i|^2/2, b_jl likewise for keys, q~ = q d^{-1/4}; the 1/m factor
    cancels.
    """
    d = q.shape[-1]
    qs, ks = q * d**-0.25, k * d**-0.25
    a = qs @ omega.T - 0.5 * (qs * qs).sum(-1, keepdim=True)
    b = ks @ omega.T - 0.5 * (ks * ks).sum(-1, keepdim=True)
    logw = torch.logsumexp(a.unsqueeze(-2) + b.unsqueeze(-3), dim=-1)  # (..., n, m_keys)
    allow = torch.ones(logw.shape[-2:], dtype=torch.bool)
    if causal:
        allow = allow.tril()
    if key_mask is not None:
        allow = allow & key_mask.unsqueeze(-2)
    logw = logw.masked_fill(~allow, float("-inf"))
    dead = ~allow.any(-1, keepdim=True)
    w = torch.softmax(logw.masked_fill(dead, 0.0), dim=-1).masked_fill(~allow, 0.0)
    return w @ v


# ----------------------------------------------------------------- the random projection
def test_orthogonal_blocks():
    d, m = 8, 20
    w = draw_orthogonal_features(m, d, gen(0), dtype=F64)
    assert w.shape == (m, d) and w.dtype == F64
    for start in range(0, m, d):
        block = w[start : start + d]
        gram = block @ block.T
        off = gram - torch.diag(torch.diagonal(gram))
        assert off.abs().max() < 1e-10  # rows of a block are orthogonal
    norms = w.norm(dim=-1)
    assert norms.std() > 0.05  # chi-distributed lengths, not all sqrt(d)


def test_rows_are_standard_gaussian_in_distribution():
    """Each row is N(0, I_d): E[w] = 0, E[w w^T] = I (checked over 4000 rows, 5 standard errors)."""
    d, m = 4, 4000
    w = draw_orthogonal_features(m, d, gen(1), dtype=F64)
    iid = draw_orthogonal_features(m, d, gen(1), dtype=F64, orthogonal=False)
    for x in (w, iid):
        assert (x.mean(0).abs() < 5 / math.sqrt(m)).all()
        second = (x.T @ x) / m
        # Var of w_a w_b is 1 (a != b) or 2 (a == b) for Gaussian entries.
        assert ((second - torch.eye(d, dtype=F64)).abs() < 5 * math.sqrt(2 / m)).all()
        sq = (x * x).sum(-1)  # chi^2_d: mean d, variance 2d
        assert abs(sq.mean() - d) < 5 * math.sqrt(2 * d / m)


def test_generator_reproducibility_and_devices():
    a = draw_orthogonal_features(10, 3, gen(5))
    b = draw_orthogonal_features(10, 3, gen(5))
    assert torch.equal(a, b) and a.dtype == torch.float32
    meta = draw_orthogonal_features(10, 3, gen(5), device="meta")
    assert meta.device.type == "meta" and meta.shape == (10, 3)
    assert draw_orthogonal_features(7, 3, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_projection_errors():
    with pytest.raises(ValueError, match="m"):
        draw_orthogonal_features(0, 3)
    with pytest.raises(TypeError, match="d"):
        draw_orthogonal_features(3, 2.0)
    with pytest.raises(TypeError, match="generator"):
        draw_orthogonal_features(3, 2, 0)
    with pytest.raises(TypeError, match="dtype"):
        draw_orthogonal_features(3, 2, dtype=torch.int64)
    with pytest.raises(TypeError, match="orthogonal"):
        draw_orthogonal_features(3, 2, orthogonal=1)


# ----------------------------------------------------------------- the estimator
@pytest.mark.parametrize("orthogonal", [False, True])
def test_estimator_is_unbiased(orthogonal):
    """mean over draws of phi(x).phi(y) = e^{x.y}, within 5 standard errors."""
    x, y = (
        torch.tensor([[0.3, -0.5, 0.2, 0.4]], dtype=F64),
        torch.tensor([[0.1, 0.6, -0.3, 0.2]], dtype=F64),
    )
    draws = (
        3000  # 3000 independent omegas of 8 rows (two orthogonal blocks each), drawn in one call
    )
    w = draw_orthogonal_features(8 * draws, 4, gen(0), dtype=F64, orthogonal=orthogonal).reshape(
        draws, 8, 4
    )
    est = torch.stack([(favor_features(x, wi) @ favor_features(y, wi).T).squeeze() for wi in w])
    target = math.exp(float(x @ y.T))
    assert abs(est.mean().item() - target) < 5 * est.std().item() / math.sqrt(len(est))


def test_features_log_and_positivity():
    x, w = rand(3, 5, 4, seed=2), draw_orthogonal_features(16, 4, gen(3), dtype=F64)
    phi = favor_features(x, w)
    assert phi.shape == (3, 5, 16) and (phi > 0).all()
    torch.testing.assert_close(favor_features(x, w, log=True).exp(), phi)


# ----------------------------------------------------------------- attention
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_matches_log_space_reference(causal, chunk):
    q, k, v = rand(2, 13, 4, seed=4), rand(2, 13, 4, seed=5), rand(2, 13, 3, seed=6)
    omega = draw_orthogonal_features(12, 4, gen(7), dtype=F64)
    out = favor_attention(q, k, v, omega=omega, causal=causal, chunk_size=chunk)
    torch.testing.assert_close(out, favor_ref(q, k, v, omega, causal), rtol=1e-10, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 20),
    d=st.integers(1, 5),
    m=st.integers(1, 12),
    causal=st.booleans(),
    seed=st.integers(0, 999),
)
def test_random_sizes_match_reference(n, d, m, causal, seed):
    q, k, v = rand(n, d, seed=seed), rand(n, d, seed=seed + 1), rand(n, 2, seed=seed + 2)
    omega = draw_orthogonal_features(m, d, gen(seed), dtype=F64)
    out = favor_attention(q, k, v, omega=omega, causal=causal, chunk_size=4)
    torch.testing.assert_close(out, favor_ref(q, k, v, omega, causal), rtol=1e-9, atol=1e-11)


def test_one_projection_per_head_broadcasts():
    q, k, v = rand(2, 3, 9, 4, seed=40), rand(2, 3, 9, 4, seed=41), rand(2, 3, 9, 2, seed=42)
    omega = torch.stack([draw_orthogonal_features(6, 4, gen(43 + h), dtype=F64) for h in range(3)])
    for causal in (False, True):
        out = favor_attention(q, k, v, omega=omega, causal=causal, chunk_size=4)
        for h in range(3):
            expected = favor_ref(q[:, h], k[:, h], v[:, h], omega[h], causal)
            torch.testing.assert_close(out[:, h], expected, rtol=1e-10, atol=1e-12)


def test_stabiliser_handles_large_logits():
    """Logits of a few hundred: raw features overflow float32, the stabilised ones do not."""
    q, k, v = rand(2, 16, 8, seed=8) * 12, rand(2, 16, 8, seed=9) * 12, rand(2, 16, 3, seed=10)
    omega = draw_orthogonal_features(32, 8, gen(11), dtype=F64)
    ref = favor_ref(q, k, v, omega)
    fq, fk = (favor_features(x.float() * 8**-0.25, omega.float()) for x in (q, k))
    w = fq @ fk.transpose(-2, -1)
    naive = (w @ v.float()) / w.sum(-1, keepdim=True)
    assert not torch.isfinite(naive).all()  # the unstabilised formula breaks down (0/0 or inf/inf)
    out = favor_attention(q.float(), k.float(), v.float(), omega=omega.float())
    assert torch.isfinite(out).all()
    # float32 rounding of log-features of size ~100 gives relative errors ~100 * 6e-8 per weight.
    torch.testing.assert_close(out.double(), ref, rtol=2e-4, atol=2e-4)


def test_converges_to_softmax_attention():
    q, k, v = rand(1, 24, 4, seed=12) * 0.7, rand(1, 24, 4, seed=13) * 0.7, rand(1, 24, 3, seed=14)
    exact = softmax_attention(q, k, v)
    errs = [
        (favor_attention(q, k, v, m, generator=gen(15)) - exact).abs().mean().item()
        for m in (8, 256, 8192)
    ]
    assert errs[2] < errs[1] < errs[0]
    assert errs[2] < 0.02  # ~ 1/sqrt(m) scaling: 8192 features leave a percent-level error


def test_peer_performer_pytorch_same_projection():
    """performer-pytorch's feature map and linear attention with our omega agree with ours."""
    pp = pytest.importorskip("performer_pytorch.performer_pytorch")
    q, k, v = (rand(1, 2, 64, 16, seed=s) for s in (30, 31, 32))
    omega = draw_orthogonal_features(64, 16, gen(33), dtype=F64)
    # eps=0: the peer otherwise adds 1e-4 to every stabilised feature (a bias, see the benchmark).
    fq = pp.softmax_kernel(q, projection_matrix=omega, is_query=True, eps=0.0)
    fk = pp.softmax_kernel(k, projection_matrix=omega, is_query=False, eps=0.0)
    peer = pp.linear_attention(fq, fk, v)
    torch.testing.assert_close(favor_attention(q, k, v, omega=omega), peer, rtol=1e-9, atol=1e-11)
    fast = pp.FastAttention(
        dim_heads=16, nb_features=64
    )  # the module draws its own orthogonal omega
    q32, k32, v32 = q.float(), k.float(), v.float()
    ours = favor_attention(q32, k32, v32, omega=fast.projection_matrix)
    with_eps = fast(q32, k32, v32)
    assert ours.shape == with_eps.shape and torch.isfinite(with_eps).all()


def test_masks_extremes_and_dtypes():
    q, k, v = rand(2, 10, 4, seed=16), rand(2, 10, 4, seed=17), rand(2, 10, 3, seed=18)
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[1] = False
    keep[0, :2] = False
    omega = draw_orthogonal_features(8, 4, gen(19), dtype=F64)
    for causal in (False, True):
        out = favor_attention(q, k, v, omega=omega, causal=causal, key_mask=keep, chunk_size=3)
        assert (out[1] == 0).all() and torch.isfinite(out).all()
        torch.testing.assert_close(out, favor_ref(q, k, v, omega, causal, keep))
        huge = favor_attention(
            q.float() * 1e30, k.float() * 1e30, v.float(), 8, generator=gen(1), causal=causal
        )
        assert torch.isfinite(huge).all()
    for dtype in (torch.bfloat16, torch.float16):
        out = favor_attention(q.to(dtype), k.to(dtype), v.to(dtype), omega=omega.to(dtype))
        assert out.dtype == dtype
        # Rounding q, k, v and omega to dtype dominates (bf16: 2^-8 relative); features accumulate
        # in fp32.
        torch.testing.assert_close(out.double(), favor_ref(q, k, v, omega), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("causal", [False, True])
def test_meta_device(causal):
    q, k, v = (torch.empty(2, 3, 40, 8, device="meta") for _ in range(3))
    out = favor_attention(q, k, v, 16, causal=causal, chunk_size=16)
    assert out.shape == (2, 3, 40, 8) and out.device.type == "meta"


def test_gradients():
    q, k, v = (rand(5, 3, seed=s).requires_grad_() for s in (20, 21, 22))
    omega = draw_orthogonal_features(6, 3, gen(23), dtype=F64)
    assert torch.autograd.gradcheck(
        lambda a, b, c: favor_attention(a, b, c, omega=omega, causal=True, chunk_size=2), (q, k, v)
    )


def test_flop_counts():
    d, m = 64, 266
    assert favor_flops(2000, d, m) == 2 * favor_flops(1000, d, m)  # linear in n
    assert softmax_attention_flops(2000, d) == 4 * softmax_attention_flops(
        1000, d
    )  # quadratic in n
    # Leading terms: 8nmd vs 4n^2 d (d_v = d) cross near n = 2m.
    assert softmax_attention_flops(m, d) < favor_flops(m, d, m)
    assert softmax_attention_flops(4 * m, d) > favor_flops(4 * m, d, m)
    with pytest.raises(ValueError, match="n_features"):
        favor_flops(10, 4, 0)


def test_errors_name_the_argument():
    q, k, v = rand(5, 4), rand(5, 4), rand(5, 3)
    with pytest.raises(ValueError, match="omega"):
        favor_attention(q, k, v, omega=rand(6, 3))
    with pytest.raises(ValueError, match="omega"):
        favor_attention(q, k, v, omega=rand(6))
    with pytest.raises(TypeError, match="omega"):
        favor_attention(q, k, v, omega=rand(6, 4).long())
    with pytest.raises(ValueError, match="n_features"):
        favor_attention(q, k, v, 5, omega=rand(6, 4))
    with pytest.raises(ValueError, match="n_features"):
        favor_attention(q, k, v, 0)
    with pytest.raises(ValueError, match="scale"):
        favor_attention(q, k, v, 4, scale=-1.0)
    with pytest.raises(TypeError, match="generator"):
        favor_attention(q, k, v, 4, generator=1)
    with pytest.raises(ValueError, match="causal"):
        favor_attention(q, rand(6, 4), rand(6, 3), 4, causal=True)
    with pytest.raises(TypeError, match="key_mask"):
        favor_attention(q, k, v, 4, key_mask=torch.ones(5))
    with pytest.raises(TypeError, match="x"):
        favor_features([1.0], rand(3, 1))


# ----------------------------------------------------------------- NaN and huge inputs (issue 11,
# item 8)
@pytest.mark.parametrize("causal", [False, True])
def test_nan_in_keys_or_values_comes_out_as_nan(causal):
    q, k, v = rand(6, 8, seed=1), rand(6, 8, seed=2), rand(6, 3, seed=3)
    omega = draw_orthogonal_features(16, 8, gen(4), dtype=F64)
    for which in ("k", "v"):
        kk, vv = k.clone(), v.clone()
        (kk if which == "k" else vv)[2, 0] = math.nan
        out = favor_attention(q, kk, vv, omega=omega, causal=causal)
        # every query that sees position 2 must be NaN, not a silent zero
        hit = out[2:] if which == "k" else out[2:, 0]  # a NaN value poisons its column
        assert torch.isnan(hit).all(), which
        if causal and which == "k":  # queries before the NaN key never see it
            torch.testing.assert_close(out[:2], favor_ref(q, k, v, omega, causal=True)[:2])


def test_huge_queries_stay_finite_and_reach_their_limit():
    # |q| = 1e38 in float32: omega . q overflows; the features must still be the limit, one-hot at
    # argmax_l omega_l . q (all other features vanish), computed here independently in float64
    d, m = 8, 32
    omega = draw_orthogonal_features(m, d, gen(5))
    q = rand(5, d, dtype=torch.float32, seed=6) * 1e38
    k, v = rand(7, d, dtype=torch.float32, seed=7), rand(7, 3, dtype=torch.float32, seed=8)
    out = favor_attention(q, k, v, omega=omega)
    assert torch.isfinite(out).all()
    top = (q.double() @ omega.double().T).argmax(-1)  # the surviving feature of each query
    ks = k.double() * d**-0.25
    logk = ks @ omega.double().T - 0.5 * (ks * ks).sum(-1, keepdim=True)
    w = torch.softmax(logk[:, top].T, dim=-1)  # (queries, keys)
    torch.testing.assert_close(out.double(), w @ v.double(), rtol=1e-5, atol=1e-6)
    # huge keys: no NaN either (their features underflow: no weight, so zeros)
    assert not torch.isnan(favor_attention(k, q, v[:5], omega=omega)).any()


# ----------------------------------------------------------------- FAVOR++ (optimised positive
# features)
def test_favorpp_parameter_minimises_the_relative_variance():
    from suma_lib.attention import favorpp_parameter

    def rel_var(a, rho, d):
        return (1 - 4 * a) ** d * (1 - 8 * a) ** (-d / 2) * math.exp(rho / (1 - 8 * a)) - 1

    assert favorpp_parameter(0.0, 16) == 0.0  # FAVOR+ is optimal when x + y = 0
    for rho, d in ((0.5, 8), (3.0, 16), (16.0, 64)):
        a = favorpp_parameter(rho, d)
        assert a < 0 and rel_var(a, rho, d) < rel_var(0.0, rho, d)
        for da in (-1e-3, 1e-3):  # a local minimum
            assert rel_var(a + da, rho, d) > rel_var(a, rho, d)
    t = favorpp_parameter(torch.tensor([0.0, 3.0, math.nan, math.inf]), 16)
    assert torch.isfinite(t).all() and t[0] == 0 and t[2] == 0


def test_favorpp_features_unbiased_with_the_predicted_lower_variance():
    from suma_lib.attention import favorpp_features, favorpp_parameter

    d, m, draws = 8, 16, 20_000
    x, y = rand(d, seed=11), rand(d, seed=12)
    x, y = x / x.norm(), x / x.norm() + 0.5 * y / y.norm()  # |x + y|^2 near 5: FAVOR+ is noisy
    rho = float(((x + y) ** 2).sum())
    omega = draw_orthogonal_features(m * draws, d, gen(13), orthogonal=False, dtype=F64).reshape(
        draws, m, d
    )
    target = math.exp(float(x @ y))
    var = {}
    for a in (0.0, favorpp_parameter(rho, d)):
        est = (
            (favorpp_features(x[None], omega, a) * favorpp_features(y[None], omega, a))
            .sum(-1)
            .squeeze(-1)
        )
        theory = (
            ((1 - 4 * a) ** d * (1 - 8 * a) ** (-d / 2) * math.exp(rho / (1 - 8 * a)) - 1)
            * target**2
            / m
        )
        assert abs(est.mean().item() - target) < 4 * est.std().item() / draws**0.5  # unbiased
        sq = (est - target) ** 2
        assert (
            abs(sq.mean().item() - theory) < 4 * sq.std().item() / draws**0.5
        )  # the variance formula
        var[a] = sq.mean().item()
    assert var[favorpp_parameter(rho, d)] < 0.8 * var[0.0]
    # a = 0 is FAVOR+
    torch.testing.assert_close(
        favorpp_features(x[None], omega[0], 0.0), favor_features(x[None], omega[0])
    )
    with pytest.raises(ValueError, match="a"):
        favorpp_features(x[None], omega[0], 0.2)


def test_favorpp_attention_matches_its_formula_and_favor_stabilisation():
    from suma_lib.attention import favorpp_attention, favorpp_parameter

    n, d, m = 9, 8, 24
    q, k, v = rand(n, d, seed=14), rand(n, d, seed=15), rand(n, 3, seed=16)
    omega = draw_orthogonal_features(m, d, gen(17), dtype=F64)
    qs, ks = q * d**-0.25, k * d**-0.25
    rho = ((qs[:, None] + ks[None]) ** 2).sum(-1).mean().item()  # mean over all pairs, brute force
    a = favorpp_parameter(rho, d)
    b = math.sqrt(1 - 4 * a)
    logq = b * qs @ omega.T + a * (omega**2).sum(-1) - 0.5 * (qs**2).sum(-1, keepdim=True)
    logk = b * ks @ omega.T + a * (omega**2).sum(-1) - 0.5 * (ks**2).sum(-1, keepdim=True)
    for causal in (False, True):
        logw = torch.logsumexp(logq[:, None, :] + logk[None, :, :], dim=-1)
        if causal:
            logw = logw.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), -math.inf)
        expected = torch.softmax(logw, -1) @ v
        torch.testing.assert_close(
            favorpp_attention(q, k, v, omega=omega, causal=causal, chunk_size=4), expected
        )
    # finite at |q| = 1e38, NaN propagates, gradients flow
    big = favorpp_attention(q.float() * 1e38, k.float(), v.float(), omega=omega.float())
    assert torch.isfinite(big).all()
    kn = k.clone()
    kn[3, 0] = math.nan
    assert torch.isnan(favorpp_attention(q, kn, v, omega=omega)).all()
    qg = q.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: favorpp_attention(t, k, v, omega=omega), (qg,))


# ------------------------------------------------- issue 11: batch dimensions that do not broadcast
def test_feature_maps_reject_non_broadcasting_omega() -> None:
    from suma_lib.attention import favor_features, favorpp_features

    x, omega = torch.randn(2, 3, 4), torch.randn(3, 8, 4)
    with pytest.raises(ValueError, match="x .* and omega .* do not broadcast"):
        favor_features(x, omega)
    with pytest.raises(ValueError, match="do not broadcast"):
        favorpp_features(x, omega, 0.1)
    # a shared (m, d) projection and a 1-D x still broadcast
    assert favor_features(x, omega[0]).shape == (2, 3, 8)
    assert favor_features(x[0, 0], omega[0]).shape == (8,)


def test_draw_orthogonal_features_checks_the_device() -> None:  # issue 11
    from suma_lib.attention import draw_orthogonal_features

    with pytest.raises(ValueError, match="device"):
        draw_orthogonal_features(8, 4, device="gpu0")
    with pytest.raises(TypeError, match="device"):
        draw_orthogonal_features(8, 4, device=1.5)


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e5, 1e30])
def test_feature_maps_never_nan_and_match_float64(scale: float) -> None:  # issue 11
    from suma_lib.attention import favor_features, favorpp_features

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64) * scale
    w = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    for ww in (w, w * scale):
        for fn, args in ((favor_features, ()), (favorpp_features, (0.05,))):
            ref = fn(x, ww, *args, log=True)  # float64 holds 1e60
            out = fn(x.float(), ww.float(), *args, log=True)
            assert not torch.isnan(out).any()
            fin = ref.abs() < 1e30
            assert torch.allclose(out.double()[fin], ref[fin], rtol=1e-5, atol=1e-4)
            assert torch.equal(torch.sign(out.double()[~fin]), torch.sign(ref[~fin]))
