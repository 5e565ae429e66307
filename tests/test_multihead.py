"""Tests of suma_lib.attention.multihead: multi-head attention against torch's, with and without a window."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.attention import (
    MultiHeadAttention,
    local_mask,
    merge_heads,
    softmax_attention,
    split_heads,
)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_gen(seed), dtype=F64)


# --------------------------------------------------------------------------------- against torch's MHA
@given(
    batch=st.integers(1, 3),
    n=st.integers(1, 9),
    m=st.integers(1, 9),
    heads=st.sampled_from([1, 2, 4]),
    kv_dims=st.sampled_from([(None, None), (6, 10)]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_equals_torch_multihead_attention(batch, n, m, heads, kv_dims, bias, seed) -> None:
    torch.manual_seed(seed)
    kdim, vdim = kv_dims
    peer = torch.nn.MultiheadAttention(
        8, heads, bias=bias, kdim=kdim, vdim=vdim, batch_first=True, dtype=F64
    )
    ours = MultiHeadAttention.from_torch(peer)
    q = _randn(batch, n, 8, seed=seed)
    k = _randn(batch, m, kdim or 8, seed=seed + 1)
    v = _randn(batch, m, vdim or 8, seed=seed + 2)
    allowed = torch.rand(batch, n, m, generator=_gen(seed)) > 0.4
    with torch.no_grad():
        torch.testing.assert_close(
            ours(q, k, v), peer(q, k, v, need_weights=False)[0], rtol=1e-10, atol=1e-12
        )
        # torch's boolean mask marks forbidden pairs, one mask per (batch, head); fully masked rows give NaN
        # in torch, so compare only rows with at least one allowed key.
        alive = allowed.any(-1)
        theirs = peer(
            q, k, v, attn_mask=(~allowed).repeat_interleave(heads, 0), need_weights=False
        )[0]
        mine = ours(q, k, v, mask=allowed)
        torch.testing.assert_close(mine[alive], theirs[alive], rtol=1e-10, atol=1e-12)
        assert torch.isfinite(mine).all()


def test_weights_and_causal_match_torch() -> None:
    torch.manual_seed(1)
    peer = torch.nn.MultiheadAttention(12, 3, batch_first=True, dtype=F64)
    ours = MultiHeadAttention(12, 3, dtype=F64).load_torch_weights(peer)
    x = _randn(2, 7, 12)
    causal_forbidden = torch.ones(7, 7, dtype=torch.bool).triu(1)
    with torch.no_grad():
        out, weights = ours(x, causal=True, return_weights=True)
        ref, ref_w = peer(x, x, x, attn_mask=causal_forbidden, average_attn_weights=False)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weights, ref_w, rtol=1e-10, atol=1e-12)
    assert weights.shape == (2, 3, 7, 7)


def test_separate_projection_weights_of_torch_are_loaded() -> None:
    torch.manual_seed(2)
    peer = torch.nn.MultiheadAttention(8, 2, kdim=5, vdim=3, batch_first=True, dtype=F64)
    assert not peer._qkv_same_embed_dim
    ours = MultiHeadAttention.from_torch(peer)
    torch.testing.assert_close(ours.k_proj.weight, peer.k_proj_weight)
    torch.testing.assert_close(ours.v_proj.bias, peer.in_proj_bias[16:])


# --------------------------------------------------------------------------------- heads and masks
def test_split_merge_are_inverse() -> None:
    x = _randn(2, 3, 5, 12)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 3, 4, 5, 3)
    torch.testing.assert_close(heads[..., 1, :, :], x[..., 3:6], rtol=0, atol=0)
    torch.testing.assert_close(merge_heads(heads), x, rtol=0, atol=0)


def test_module_window_uses_band_and_agrees_with_mask() -> None:
    torch.manual_seed(3)
    mha = MultiHeadAttention(16, 4, window=2, dtype=F64)
    x = _randn(3, 11, 16)
    everything = torch.ones(11, 11, dtype=torch.bool)
    with torch.no_grad():
        banded = mha(x)  # computed on the band
        via_mask = mha(x, mask=everything)  # dense path with the window mask
        dense_ref = MultiHeadAttention(16, 4, dtype=F64)
        dense_ref.load_state_dict(mha.state_dict())
        explicit = dense_ref(x, mask=local_mask(11, 2))
    torch.testing.assert_close(banded, via_mask, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(banded, explicit, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        causal_band = mha(x, causal=True)
        causal_ref = dense_ref(x, mask=local_mask(11, 2), causal=True)
    torch.testing.assert_close(causal_band, causal_ref, rtol=1e-12, atol=1e-12)


def test_fully_masked_query_gives_bias_not_nan() -> None:
    mha = MultiHeadAttention(8, 2, dtype=F64)
    x = _randn(1, 4, 8)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    with torch.no_grad():
        out = mha(x, mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2], mha.out_proj.bias, rtol=0, atol=1e-15)


def test_gradients_flow_and_softmax_attention_is_used() -> None:
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8, generator=_gen(), requires_grad=True)
    mha(x, causal=True).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in mha.parameters())
    # Single head, identity projections: multi-head attention reduces to softmax_attention.
    one = MultiHeadAttention(4, 1, bias=False, dtype=F64)
    with torch.no_grad():
        for lin in (one.q_proj, one.k_proj, one.v_proj, one.out_proj):
            lin.weight.copy_(torch.eye(4, dtype=F64))
    y = _randn(3, 6, 4)
    with torch.no_grad():
        torch.testing.assert_close(one(y), softmax_attention(y, y, y), rtol=1e-12, atol=1e-12)


def test_meta_device() -> None:
    mha = MultiHeadAttention(16, 4, device="meta")
    x = torch.empty(2, 3, 7, 16, device="meta")  # two leading batch dimensions
    assert mha(x).shape == (2, 3, 7, 16)
    out, w = mha(x, mask=torch.ones(7, 7, dtype=torch.bool, device="meta"), return_weights=True)
    assert out.device.type == "meta" and w.shape == (2, 3, 4, 7, 7)
    banded = MultiHeadAttention(16, 4, window=2, device="meta")
    assert banded(x).shape == (2, 3, 7, 16)
    assert banded(x, causal=True, return_weights=True)[1].shape == (2, 3, 4, 7, 7)


# --------------------------------------------------------------------------------- errors
def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="window"):
        MultiHeadAttention(8, 2, window=-1)
    with pytest.raises(TypeError, match="bias"):
        MultiHeadAttention(8, 2, bias=1)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="query"):
        mha(torch.randn(2, 3, 7))
    with pytest.raises(TypeError, match="query"):
        mha(torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="key and value"):
        mha(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 5, 8))
    with pytest.raises(TypeError, match="mask"):
        mha(torch.randn(2, 3, 8), mask=torch.ones(3, 3))
    with pytest.raises(TypeError, match="mha"):
        mha.load_torch_weights(torch.nn.Linear(8, 8))
    with pytest.raises(ValueError, match="mha"):
        mha.load_torch_weights(torch.nn.MultiheadAttention(8, 4))
    with pytest.raises(ValueError, match="add_bias_kv"):
        mha.load_torch_weights(torch.nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(ValueError, match="bias"):
        mha.load_torch_weights(torch.nn.MultiheadAttention(8, 2, bias=False))
    with pytest.raises(ValueError, match="num_heads"):
        split_heads(torch.randn(3, 10), 4)
    with pytest.raises(ValueError, match="same length"):
        MultiHeadAttention(8, 2, window=1)(torch.randn(1, 3, 8), torch.randn(1, 4, 8))
