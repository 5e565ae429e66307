"""Tests for suma_lib.rank (numerical rank of attention matrices)."""

import numpy as np
import pytest
import torch

from suma_lib.rank import (
    bidirectional_attention,
    causal_attention,
    linear_attention_matrix,
    numerical_rank,
    rank_threshold,
    singular_values,
)


def _qk(b, n, d, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, n, d, generator=g, dtype=dtype) * scale
    k = torch.randn(b, n, d, generator=g, dtype=dtype) * scale
    return q, k


def test_singular_values_match_numpy():
    a = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = np.linalg.svd(a.numpy(), compute_uv=False)
    np.testing.assert_allclose(singular_values(a).numpy(), ref, rtol=1e-12, atol=1e-14)


def test_singular_values_float32_keeps_dtype_and_uses_float64():
    a = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    s = singular_values(a)
    assert s.dtype == torch.float32
    ref = np.linalg.svd(a.double().numpy(), compute_uv=False)
    np.testing.assert_allclose(s.numpy(), ref.astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numerical_rank_matches_numpy_and_torch(dtype):
    g = torch.Generator().manual_seed(3)
    u = torch.randn(5, 30, 4, generator=g, dtype=torch.float64)
    v = torch.randn(5, 4, 20, generator=g, dtype=torch.float64)
    a = (u @ v).to(dtype)  # rank 4
    r = numerical_rank(a)
    assert r.shape == (5,) and r.dtype == torch.int64
    assert (r == 4).all()
    ref = [np.linalg.matrix_rank(m.double().numpy(), tol=None) for m in a]
    if dtype == torch.float64:
        assert r.tolist() == ref
    tau = rank_threshold(a.shape, dtype)
    assert r.tolist() == torch.linalg.matrix_rank(a.double(), rtol=tau).tolist()


def test_numerical_rank_rtol_and_zero():
    a = torch.diag(torch.tensor([1.0, 1e-3, 1e-6], dtype=torch.float64))
    assert int(numerical_rank(a, rtol=1e-4)) == 2
    assert int(numerical_rank(a, rtol=0.0)) == 3
    assert int(numerical_rank(torch.zeros(3, 3))) == 0


def test_rank_threshold_is_numpy_convention():
    assert rank_threshold((10, 7), torch.float64) == 10 * np.finfo(np.float64).eps
    assert rank_threshold((3, 8), torch.float32) == 8 * float(np.finfo(np.float32).eps)


def test_causal_attention_full_rank_and_determinant():
    q, k = _qk(2, 12, 3, scale=0.5)
    a = causal_attention(q, k)
    assert torch.equal(a, a.tril())
    assert (torch.diagonal(a, dim1=-2, dim2=-1) > 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 12, dtype=torch.float64))
    det = torch.linalg.det(a)
    diag = torch.diagonal(a, dim1=-2, dim2=-1).prod(-1)
    torch.testing.assert_close(det, diag, rtol=1e-10, atol=0)
    assert (numerical_rank(a) == 12).all()


def test_causal_attention_can_be_numerically_rank_deficient():
    # invertible in exact arithmetic (det = product of the diagonal > 0), but large logits make
    # tiny diagonal entries and an ill-conditioned triangle
    q, k = _qk(1, 64, 3, seed=9, scale=4.0)
    a = causal_attention(q, k)
    assert (torch.diagonal(a, dim1=-2, dim2=-1) > 0).all()
    assert int(numerical_rank(a)) < 64


def test_causal_matches_brute_force():
    q, k = _qk(1, 5, 2, seed=4)
    a = causal_attention(q, k, scale=0.7)[0]
    s = (q[0] @ k[0].T * 0.7).numpy()
    for i in range(5):
        w = np.exp(s[i, : i + 1] - s[i, : i + 1].max())
        np.testing.assert_allclose(a[i, : i + 1].numpy(), w / w.sum(), rtol=1e-12)
        assert (a[i, i + 1:] == 0).all()


def test_bidirectional_matches_torch_softmax():
    q, k = _qk(2, 9, 4, seed=5)
    a = bidirectional_attention(q, k)
    torch.testing.assert_close(a, torch.softmax(q @ k.mT / 2.0, -1))


def test_linear_attention_rank_at_most_features():
    q, k = _qk(3, 40, 4, seed=6)
    a = linear_attention_matrix(q, k)
    phi = torch.nn.functional.elu
    s = (phi(q) + 1) @ (phi(k) + 1).mT
    torch.testing.assert_close(a, s / s.sum(-1, keepdim=True))
    assert (numerical_rank(a) <= 4).all()
    c = linear_attention_matrix(q, k, causal=True)
    assert torch.equal(c, c.tril())
    torch.testing.assert_close(c.sum(-1), torch.ones(3, 40, dtype=torch.float64))
    assert (numerical_rank(c) == 40).all()


def test_linear_attention_custom_feature_map():
    q, k = _qk(1, 6, 3, seed=7)
    a = linear_attention_matrix(q, k, feature_map=torch.exp)
    s = torch.exp(q) @ torch.exp(k).mT
    torch.testing.assert_close(a, s / s.sum(-1, keepdim=True))


def test_bidirectional_rank_drops_when_n_much_larger_than_d():
    q, k = _qk(1, 256, 4, seed=8, dtype=torch.float32)
    bidirectional = int(numerical_rank(bidirectional_attention(q, k)))
    assert bidirectional < 200
    assert int(numerical_rank(causal_attention(q, k))) > bidirectional


def test_meta_device():
    q = torch.empty(2, 8, 4, device="meta")
    assert causal_attention(q, q).shape == (2, 8, 8)
    assert linear_attention_matrix(q, q).shape == (2, 8, 8)
    assert numerical_rank(torch.empty(2, 8, 8, device="meta")).shape == (2,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    q, k = _qk(2, 16, 4)
    a = causal_attention(q.cuda(), k.cuda())
    assert a.device.type == "cuda"
    assert numerical_rank(a).device.type == "cuda"


def test_validation():
    with pytest.raises(TypeError, match="a"):
        numerical_rank([[1.0]])
    with pytest.raises(ValueError, match="a"):
        numerical_rank(torch.ones(3))
    with pytest.raises(TypeError, match="a"):
        numerical_rank(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="rtol"):
        numerical_rank(torch.ones(2, 2), rtol=1.5)
    with pytest.raises(ValueError, match="a"):
        singular_values(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="last dimension"):
        causal_attention(torch.ones(3, 2), torch.ones(3, 4))
    with pytest.raises(ValueError, match="length"):
        causal_attention(torch.ones(3, 2), torch.ones(4, 2))
    with pytest.raises(TypeError, match="feature_map"):
        linear_attention_matrix(torch.ones(3, 2), torch.ones(3, 2), feature_map=3)
    with pytest.raises(ValueError, match="feature_map"):
        linear_attention_matrix(torch.ones(3, 2), -torch.ones(3, 2), feature_map=lambda x: x)
    with pytest.raises(TypeError, match="causal"):
        linear_attention_matrix(torch.ones(3, 2), torch.ones(3, 2), causal=1)
    with pytest.raises(TypeError, match="dtype"):
        rank_threshold((2, 2), torch.int32)
