"""Tests of suma_lib.attention.multihead: multi-head attention against torch's, with and without a
window."""

from __future__ import annotations

import math

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


# --------------------------------------------------------------------------------- against torch's
# MHA
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
        # torch's boolean mask marks forbidden pairs, one mask per (batch, head); fully masked rows
        # give NaN
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


# --------------------------------------------------------------------------------- the hooks
def _alibi(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A fixed linear distance penalty per head (ALiBi-like), shape (h, n, m)."""
    h, n, m = q.shape[-3], q.shape[-2], k.shape[-2]
    slopes = 2.0 ** -torch.arange(1, h + 1, dtype=q.dtype, device=q.device)
    dist = (
        torch.arange(n, device=q.device)[:, None] - torch.arange(m, device=q.device)[None, :]
    ).abs()
    return -slopes[:, None, None] * dist.to(q.dtype)


def _by_hand(mha: MultiHeadAttention, x: torch.Tensor, bias=None, transform=None, mask=None):
    """softmax(q k^T / sqrt(d) + B + M) v, head by head, in float64 from the module's weights."""
    h, d = mha.num_heads, mha.head_dim
    q, k, v = (
        lin(x).unflatten(-1, (h, d)).transpose(-3, -2)
        for lin in (mha.q_proj, mha.k_proj, mha.v_proj)
    )
    if transform is not None:
        q, k = transform(q, k)
    s = q @ k.mT / math.sqrt(d)
    if bias is not None:
        s = s + bias(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf)
    o = torch.softmax(s, -1) @ v
    return mha.out_proj(o.transpose(-3, -2).flatten(-2))


def test_score_bias_hook_on_fused_and_explicit_paths() -> None:
    torch.manual_seed(5)
    mha = MultiHeadAttention(12, 3, score_bias=_alibi, dtype=F64)
    x = _randn(2, 6, 12)
    keep = torch.rand(2, 6, 6, generator=_gen(1)) > 0.3
    keep[..., 0] = True
    with torch.no_grad():
        ref = _by_hand(mha, x, bias=_alibi, mask=keep[:, None])
        torch.testing.assert_close(
            mha(x, mask=keep), ref, rtol=1e-10, atol=1e-12
        )  # fused (additive mask)
        out, w = mha(x, mask=keep, return_weights=True)  # explicit scores
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 6, dtype=F64))


def test_qk_transform_hook_and_rotation_invariance() -> None:
    torch.manual_seed(6)
    rot = torch.linalg.qr(torch.randn(4, 4, generator=_gen(2), dtype=F64))[0]

    def rotate(q, k):  # one orthogonal map on both: q k^T unchanged
        return q @ rot, k @ rot

    def shift(q, k):  # a transform that does change the scores
        return q + 1.0, k

    plain = MultiHeadAttention(8, 2, dtype=F64)
    x = _randn(3, 5, 8)
    with torch.no_grad():
        for fn in (rotate, shift):
            mha = MultiHeadAttention(8, 2, qk_transform=fn, dtype=F64)
            mha.load_state_dict(plain.state_dict())
            torch.testing.assert_close(
                mha(x), _by_hand(mha, x, transform=fn), rtol=1e-10, atol=1e-12
            )
            if fn is rotate:
                torch.testing.assert_close(mha(x), plain(x), rtol=1e-10, atol=1e-12)


def test_get_scores_can_be_overridden() -> None:
    class Cosine(MultiHeadAttention):
        def get_scores(self, q, k, query, key):
            unit = torch.nn.functional.normalize
            return 5.0 * unit(q, dim=-1) @ unit(k, dim=-1).mT

    torch.manual_seed(7)
    mha = Cosine(8, 2, dtype=F64)
    x = _randn(2, 4, 8)
    with torch.no_grad():
        q, k, v = mha.project(x, x, x)
        unit = torch.nn.functional.normalize
        w = torch.softmax(5.0 * unit(q, dim=-1) @ unit(k, dim=-1).mT, -1)
        _, weights = mha(x, return_weights=True)
        torch.testing.assert_close(weights, w)
        torch.testing.assert_close(mha(x), mha.output(w @ v))


def test_batch_first_false_and_dropout() -> None:
    torch.manual_seed(8)
    first = MultiHeadAttention(8, 2, dtype=F64)
    seq_first = MultiHeadAttention(8, 2, batch_first=False, dtype=F64)
    seq_first.load_state_dict(first.state_dict())
    x = _randn(3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(seq_first(x.transpose(0, 1)), first(x).transpose(0, 1))
    peer = torch.nn.MultiheadAttention(8, 2, dtype=F64).eval()  # torch's default layout (L, N, E)
    ours = MultiHeadAttention.from_torch(peer)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(x), peer(x, x, x, need_weights=False)[0], rtol=1e-10, atol=1e-12
        )
    drop = MultiHeadAttention(8, 2, dropout=0.5, dtype=F64)
    drop.load_state_dict(first.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(drop.eval()(x), first(x))
        assert not torch.allclose(drop.train()(x), first(x))


def test_window_at_overflow_equals_masked_softmax_attention() -> None:
    """Issue 11: restricted attention once q.k overflows float32."""
    mha = MultiHeadAttention(2, 1, window=0, bias=False)
    with torch.no_grad():
        for lin in (mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj):
            lin.weight.copy_(torch.eye(2))
    x = torch.tensor([[[1e20, 1e20], [-1e20, 1e20], [1e20, -1e20]]])
    with torch.no_grad():
        out = mha(x)
        ref = softmax_attention(x, x, x, mask=local_mask(3, 0))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out, x)  # window 0: each token sees itself only


def test_inputs_on_another_device_than_the_weights() -> None:
    mha = MultiHeadAttention(4, 2)
    with pytest.raises(TypeError, match="device"):
        mha(torch.ones(1, 3, 4, device="meta"))
    with pytest.raises(TypeError, match="dtype"):
        mha(torch.ones(1, 3, 4, dtype=F64))
    with pytest.raises(TypeError, match="qk_transform"):
        MultiHeadAttention(4, 2, qk_transform=3)


def test_autocast_and_half_precision() -> None:
    torch.manual_seed(9)
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8, generator=_gen(3))
    with torch.no_grad():
        ref = mha(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = mha(x.bfloat16())
        huge = mha.bfloat16()(x.bfloat16() * 1e30)  # logits far beyond bfloat16's range
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)
    assert torch.isfinite(huge).all()
