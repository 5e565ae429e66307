"""Tests for suma_lib.attention.linear (chapter linear-attention)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.attention import elu_feature_map, linear_attention, taylor_feature_map
from suma_lib.profiling import crossover_length, measure_peak_memory, measure_time

F64 = torch.float64


def rand(*shape, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# ----------------------------------------------------------------- independent references
# (quadratic)
def elu1(x):
    return torch.where(x > 0, x + 1, torch.exp(x))


def unit_plus_one(x):
    u = x / x.norm(dim=-1, keepdim=True)
    return torch.cat([torch.ones_like(u[..., :1]), u], dim=-1)


def kernel_ref(q, k, v, phi, causal=False, key_mask=None):
    """Explicit O(n^2) form: weights phi(q_i).phi(k_j), masked, divided by their row sum."""
    w = phi(q) @ phi(k).transpose(-2, -1)
    if causal:
        w = w * torch.ones(w.shape[-2:], dtype=torch.bool).tril()
    if key_mask is not None:
        w = w * key_mask.unsqueeze(-2)
    den = w.sum(-1, keepdim=True)
    return torch.where(den > 0, (w @ v) / torch.where(den > 0, den, 1), 0.0)


def softmax_map_ref(q, k, v, causal=False):
    """softmax_2(Q) softmax_1(K)^T V; causally the sequence softmax runs over the prefix j <= i."""
    a = torch.softmax(q, dim=-1)
    if not causal:
        return a @ (torch.softmax(k, dim=-2).transpose(-2, -1) @ v)
    rows = []
    for i in range(q.shape[-2]):
        kk = torch.softmax(k[..., : i + 1, :], dim=-2)
        rows.append(a[..., i : i + 1, :] @ (kk.transpose(-2, -1) @ v[..., : i + 1, :]))
    return torch.cat(rows, dim=-2)


MAPS = {"elu": elu1, "taylor": unit_plus_one, "cosine": unit_plus_one}


# ----------------------------------------------------------------- equality with the quadratic form
@pytest.mark.parametrize("name", ["elu", "taylor", "cosine"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 16, 100])
def test_matches_quadratic_reference(name, causal, chunk):
    q, k, v = rand(2, 3, 37, 5, seed=1), rand(2, 3, 37, 5, seed=2), rand(2, 3, 37, 4, seed=3)
    out = linear_attention(q, k, v, name, causal=causal, chunk_size=chunk)
    torch.testing.assert_close(out, kernel_ref(q, k, v, MAPS[name], causal), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 50])
def test_softmax_map_matches_its_definition(causal, chunk):
    q, k, v = rand(2, 13, 6, seed=4), rand(2, 13, 6, seed=5), rand(2, 13, 3, seed=6)
    out = linear_attention(q, k, v, "softmax", causal=causal, chunk_size=chunk)
    torch.testing.assert_close(out, softmax_map_ref(q, k, v, causal), rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 6),
    chunk=st.integers(1, 45),
    causal=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_random_sizes_match_reference(n, d, chunk, causal, seed):
    q, k, v = rand(n, d, seed=seed), rand(n, d, seed=seed + 1), rand(n, 2, seed=seed + 2)
    out = linear_attention(q, k, v, causal=causal, chunk_size=chunk)
    torch.testing.assert_close(out, kernel_ref(q, k, v, elu1, causal), rtol=1e-9, atol=1e-11)


def test_callable_feature_map_and_cross_attention():
    q, k, v = rand(3, 8, 4, seed=7), rand(3, 11, 4, seed=8), rand(3, 11, 2, seed=9)
    phi = lambda x: torch.relu(x) ** 2 + 0.1  # noqa: E731
    torch.testing.assert_close(
        linear_attention(q, k, v, phi), kernel_ref(q, k, v, phi), rtol=1e-10, atol=1e-12
    )


def test_leading_dimensions_broadcast():
    q, k, v = rand(2, 1, 9, 4, seed=10), rand(1, 3, 9, 4, seed=11), rand(1, 3, 9, 5, seed=12)
    for causal in (False, True):
        out = linear_attention(q, k, v, causal=causal, chunk_size=4)
        assert out.shape == (2, 3, 9, 5)
        torch.testing.assert_close(out, kernel_ref(q, k, v, elu1, causal), rtol=1e-10, atol=1e-12)


def test_peer_performer_pytorch_kernel_form():
    """performer-pytorch's own linear attention (non-causal, and its causal reference with
    eps=1e-6)."""
    pp = pytest.importorskip("performer_pytorch.performer_pytorch")
    q, k, v = rand(1, 2, 32, 4, seed=13), rand(1, 2, 32, 4, seed=14), rand(1, 2, 32, 3, seed=15)
    fq, fk = elu1(q), elu1(k)
    torch.testing.assert_close(
        linear_attention(q, k, v), pp.linear_attention(fq, fk, v), rtol=1e-10, atol=1e-12
    )
    peer = pp.causal_linear_attention_noncuda(fq, fk, v, chunk_size=4, eps=1e-6)
    # The peer adds eps = 1e-6 to each prefix sum of phi(k) (entries of order 1..32): relative bias
    # ~1e-6.
    torch.testing.assert_close(
        linear_attention(q, k, v, causal=True, chunk_size=5), peer, rtol=1e-5, atol=1e-6
    )


# ----------------------------------------------------------------- properties
@pytest.mark.parametrize("name", ["elu", "taylor", "softmax"])
@pytest.mark.parametrize("causal", [False, True])
def test_rows_are_averages(name, causal):
    """With v = 1 every output is 1: the weights of each row sum to one."""
    q, k = rand(2, 23, 5, seed=16), rand(2, 23, 5, seed=17)
    out = linear_attention(q, k, torch.ones(2, 23, 3, dtype=F64), name, causal=causal, chunk_size=6)
    torch.testing.assert_close(out, torch.ones_like(out), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 8))
def test_taylor_similarity_is_non_negative(seed, d):
    x, y = rand(20, d, seed=seed) * 10, rand(20, d, seed=seed + 1) * 10
    sim = taylor_feature_map(x) @ taylor_feature_map(y).T
    assert bool((sim >= -1e-12).all()) and bool((sim <= 2 + 1e-12).all())


def test_feature_maps_values():
    x = torch.tensor([[-2.0, 0.0, 3.0]], dtype=F64)
    torch.testing.assert_close(
        elu_feature_map(x), torch.tensor([[torch.e**-2, 1.0, 4.0]], dtype=F64)
    )
    torch.testing.assert_close(
        taylor_feature_map(torch.tensor([[3.0, 4.0]])), torch.tensor([[1.0, 0.6, 0.8]])
    )
    assert taylor_feature_map(torch.zeros(1, 3)).tolist() == [[1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("name", ["elu", "softmax", "taylor"])
def test_causal_output_ignores_the_future(name):
    q, k, v = rand(30, 4, seed=18), rand(30, 4, seed=19), rand(30, 3, seed=20)
    out = linear_attention(q, k, v, name, causal=True, chunk_size=8)
    k2, v2 = k.clone(), v.clone()
    k2[17:] += 5 * rand(13, 4, seed=21)
    v2[17:] += 5
    out2 = linear_attention(q, k2, v2, name, causal=True, chunk_size=8)
    torch.testing.assert_close(out2[:17], out[:17], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(out2[17:], out[17:])


def test_key_mask_and_fully_masked_rows():
    q, k, v = rand(2, 12, 4, seed=22), rand(2, 12, 4, seed=23), rand(2, 12, 3, seed=24)
    keep = rand(2, 12, seed=25) > 0
    keep[1] = False  # batch entry 1: no key at all
    keep[0, :3] = False  # batch entry 0: the first three queries see nothing causally
    for causal in (False, True):
        for name in ("elu", "taylor", "softmax"):
            out = linear_attention(q, k, v, name, causal=causal, key_mask=keep, chunk_size=5)
            assert torch.isfinite(out).all()
            assert (out[1] == 0).all()
            if causal:
                assert (out[0, :3] == 0).all()
        ref = kernel_ref(q, k, v, elu1, causal, key_mask=keep)
        torch.testing.assert_close(
            linear_attention(q, k, v, causal=causal, key_mask=keep, chunk_size=5), ref
        )


@pytest.mark.parametrize("name", ["elu", "taylor", "softmax"])
def test_extreme_inputs_give_finite_outputs(name):
    q, k, v = (
        rand(2, 9, 4, dtype=torch.float32, seed=26) * 1e30,
        rand(2, 9, 4, dtype=torch.float32, seed=27) * 1e30,
        rand(2, 9, 3, dtype=torch.float32, seed=28),
    )
    for causal in (False, True):
        out = linear_attention(q, k, v, name, causal=causal, chunk_size=4)
        assert torch.isfinite(out).all()
        assert bool((out.abs() <= v.abs().max() + 1e-5).all())  # an average of the values


def test_large_elu_features_do_not_overflow():
    """elu(x)+1 ~ 1e30 would give products of 1e60 in float32 without the stabilisation."""
    q, k, v = (
        rand(7, 3, seed=29).abs() * 1e30,
        rand(7, 3, seed=30).abs() * 1e30,
        rand(7, 2, seed=31),
    )
    ref = kernel_ref(
        q / 1e30, k / 1e30, v, lambda x: x
    )  # elu(x)+1 = x+1 ~ x at this scale; exact ratio
    out = linear_attention(q.float(), k.float(), v.float(), causal=False)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- dtypes, devices, gradients
@pytest.mark.parametrize(
    "dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 3e-3), (torch.float32, 1e-5)]
)
@pytest.mark.parametrize("causal", [False, True])
def test_low_precision(dtype, tol, causal):
    q, k, v = rand(2, 40, 8, seed=32), rand(2, 40, 8, seed=33), rand(2, 40, 4, seed=34)
    ref = kernel_ref(q, k, v, elu1, causal)
    out = linear_attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=causal, chunk_size=16)
    assert out.dtype == dtype
    # Tolerance: rounding the inputs to dtype (bf16: 8 bits, relative 2^-8) dominates; accumulation
    # is fp32.
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["elu", "taylor", "softmax", "callable"])
@pytest.mark.parametrize("causal", [False, True])
def test_meta_device(name, causal):
    q, k, v = (torch.empty(2, 3, 70, 8, device="meta") for _ in range(3))
    fmap = (lambda x: torch.relu(x)) if name == "callable" else name
    keep = torch.ones(2, 3, 70, dtype=torch.bool, device="meta")
    out = linear_attention(q, k, v, fmap, causal=causal, chunk_size=32, key_mask=keep)
    assert out.shape == (2, 3, 70, 8) and out.device.type == "meta"


def test_gradients_match_finite_differences():
    q, k, v = (rand(5, 2, seed=s).requires_grad_() for s in (35, 36, 37))
    for name in ("elu", "softmax", "taylor"):
        assert torch.autograd.gradcheck(
            lambda a, b, c, name=name: linear_attention(a, b, c, name, causal=True, chunk_size=2),
            (q, k, v),
        )


def test_gradients_finite_with_masked_rows():
    q, k, v = (rand(2, 6, 3, seed=s).requires_grad_() for s in (38, 39, 40))
    keep = torch.tensor([[False] * 6, [False, True, True, True, True, True]])
    out = linear_attention(q, k, v, causal=True, key_mask=keep, chunk_size=4)
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[0] == 0).all()


def test_causal_memory_is_linear_not_n_d_d():
    """The causal form never builds the n x d x d prefix sums: its peak stays a few times the
    input."""
    n, d = 2048, 32
    q, k, v = (torch.randn(1, n, d) for _ in range(3))
    peak = measure_peak_memory(lambda: linear_attention(q, k, v, causal=True, chunk_size=64))
    assert peak < 12 * n * d * 4  # prefix sums alone would be n*d*d*4 = 32x the input
    assert peak >= n * d * 4  # it does write the output


def test_measure_helpers():
    peak = measure_peak_memory(lambda: torch.empty(1000, 1000))
    assert 4_000_000 <= peak < 4_100_000  # float32: exactly 4e6 bytes for the tensor itself
    assert measure_time(lambda: torch.ones(10).sum(), repeats=2) >= 0.0
    assert measure_time(lambda: None, repeats=1, warmup=0) >= 0.0
    with pytest.raises(TypeError, match="fn"):
        measure_time(3)
    with pytest.raises(TypeError, match="fn"):
        measure_peak_memory("x")
    with pytest.raises(ValueError, match="repeats"):
        measure_time(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="device"):
        measure_peak_memory(lambda: None, device="meta")


def test_crossover_length():
    # ratio = (n / 100)^-1 crosses 1 at n = 100 exactly; interpolation is exact for a power law.
    ns = [25.0, 50.0, 200.0, 400.0]
    assert crossover_length(ns, [100 / n for n in ns]) == pytest.approx(100.0)
    assert crossover_length([1, 2, 4, 8], [3, 1.5, 1.2, 0.6]) == pytest.approx(
        4 * 2 ** (math.log(1.2) / math.log(2))
    )
    assert math.isnan(crossover_length([1, 2], [0.5, 0.2]))  # already faster
    assert math.isnan(crossover_length([1, 2], [2.0, 1.5]))  # never faster
    with pytest.raises(ValueError, match="ratios"):
        crossover_length([1, 2], [1.0, -1.0])
    with pytest.raises(ValueError, match="lengths"):
        crossover_length([2, 1], [2.0, 0.5])
    with pytest.raises(ValueError, match="lengths"):
        crossover_length([1, 2, 3], [2.0, 0.5])


# ----------------------------------------------------------------- errors
def test_errors_name_the_argument():
    q, k, v = rand(5, 4), rand(5, 4), rand(5, 3)
    with pytest.raises(ValueError, match="feature_map"):
        linear_attention(q, k, v, "relu")
    with pytest.raises(TypeError, match="feature_map"):
        linear_attention(q, k, v, 3)
    with pytest.raises(ValueError, match="feature_map"):
        linear_attention(q, k, v, lambda x: x)  # negative features
    with pytest.raises(ValueError, match="feature_map"):
        linear_attention(q, k, v, lambda x: x.sum(-1, keepdim=True).T.abs())
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, k, v, causal=True, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        linear_attention(q, k, v, chunk_size=2.0)
    with pytest.raises(TypeError, match="causal"):
        linear_attention(q, k, v, causal=1)
    with pytest.raises(ValueError, match="causal"):
        linear_attention(q, rand(6, 4), rand(6, 3), causal=True)
    with pytest.raises(TypeError, match="key_mask"):
        linear_attention(q, k, v, key_mask=torch.ones(5))
    with pytest.raises(ValueError, match="key_mask"):
        linear_attention(q, k, v, key_mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="eps"):
        linear_attention(q, k, v, eps=-1.0)
    with pytest.raises(TypeError, match="q"):
        linear_attention(q.numpy(), k, v)
    with pytest.raises(TypeError, match="q"):
        linear_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="k and v"):
        linear_attention(q, k, rand(6, 3))
    with pytest.raises(TypeError, match="x"):
        elu_feature_map(torch.ones(3, dtype=torch.long))


# ----------------------------------------------------------------- NaN propagates (issue 11, item
# 8)
@pytest.mark.parametrize("feature_map", ["elu", "taylor", "softmax"])
@pytest.mark.parametrize("causal", [False, True])
def test_nan_in_keys_or_values_comes_out_as_nan(feature_map, causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(6, 8, generator=g),
        torch.randn(6, 8, generator=g),
        torch.randn(6, 3, generator=g),
    )
    clean = linear_attention(q, k, v, feature_map=feature_map, causal=causal, chunk_size=2)
    for which in ("k", "v"):
        kk, vv = k.clone(), v.clone()
        (kk if which == "k" else vv)[2, 0] = math.nan
        out = linear_attention(q, kk, vv, feature_map=feature_map, causal=causal, chunk_size=2)
        hit = out[2:] if which == "k" else out[2:, 0]  # a NaN value poisons its column
        assert torch.isnan(hit).all(), which  # never a silent zero for a query that sees it
        if causal:  # earlier chunks never see it, and the stabilisation ignores the NaN
            torch.testing.assert_close(out[:2], clean[:2])


def test_taylor_feature_map_rejects_d_zero() -> None:  # issue 11: empty last axis
    with pytest.raises(ValueError, match="d >= 1"):
        taylor_feature_map(torch.randn(3, 0))
    assert taylor_feature_map(torch.randn(0, 4)).shape[0] == 0
