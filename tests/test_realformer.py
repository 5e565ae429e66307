"""Tests of suma_lib.attention.realformer: residual attention, the three block layouts, the Markov
MLM task."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.attention import (
    LN_VARIANTS,
    RealFormerBlock,
    RealFormerEncoder,
    ResidualAttention,
    attention_weights,
    markov_chain,
    markov_mlm_task,
    markov_posterior,
    residual_attention,
    softmax_attention,
)

D, H = 8, 2


def _x(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------ residual
# attention
def test_without_prev_it_is_ordinary_attention() -> None:
    q, k, v = _x(2, 5, 4), _x(2, 6, 4, seed=1), _x(2, 6, 3, seed=2)
    out, scores = residual_attention(q, k, v)
    torch.testing.assert_close(out, softmax_attention(q, k, v))
    torch.testing.assert_close(torch.softmax(scores, -1), attention_weights(q, k))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 7), st.integers(1, 7), st.booleans())
def test_prev_is_added_before_the_softmax(n: int, m: int, causal: bool) -> None:
    q, k, v, prev = _x(3, n, 4), _x(3, m, 4, seed=1), _x(3, m, 2, seed=2), _x(3, n, m, seed=3)
    out, scores = residual_attention(q, k, v, prev=prev, causal=causal and n == m)
    torch.testing.assert_close(scores, q @ k.transpose(-1, -2) / 2.0 + prev)  # 1/sqrt(4)
    mask = torch.ones(n, m, dtype=torch.bool).tril() if causal and n == m else None
    additive = prev if mask is None else prev.masked_fill(~mask, -math.inf)
    # independent peer: torch's kernel with the previous scores as an additive mask
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=additive))


def test_module_equals_torch_multihead_attention_without_prev() -> None:
    torch.manual_seed(0)
    layer = ResidualAttention(D, H, dtype=torch.float64)
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(layer.in_proj.weight)
        mha.in_proj_bias.copy_(layer.in_proj.bias)
        mha.out_proj.weight.copy_(layer.out_proj.weight)
        mha.out_proj.bias.copy_(layer.out_proj.bias)
    x = _x(3, 6, D)
    y, scores = layer(x)
    ref, ref_w = mha(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(torch.softmax(scores, -1), ref_w)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    torch.testing.assert_close(
        layer(x, causal=True)[0], mha(x, x, x, attn_mask=causal, need_weights=False)[0]
    )


def test_encoder_scores_are_the_running_sum_of_every_layer() -> None:
    torch.manual_seed(0)
    enc = RealFormerEncoder(4, D, H, 16, "realformer", dtype=torch.float64)
    inputs = []
    hooks = [
        b.attn.register_forward_pre_hook(lambda mod, args: inputs.append(args[0]))
        for b in enc.blocks
    ]
    x = _x(2, 5, D)
    _, scores = enc(x, return_scores=True)
    for h in hooks:
        h.remove()
    running = 0.0
    for block, inp, got in zip(enc.blocks, inputs, scores, strict=True):
        w, b = block.attn.in_proj.weight, block.attn.in_proj.bias
        q = (inp @ w[:D].T + b[:D]).unflatten(-1, (H, -1)).transpose(-3, -2)
        k = (inp @ w[D : 2 * D].T + b[D : 2 * D]).unflatten(-1, (H, -1)).transpose(-3, -2)
        running = running + q @ k.transpose(-1, -2) / math.sqrt(D // H)
        torch.testing.assert_close(got, running)


def test_one_layer_realformer_is_post_ln_and_variants_differ() -> None:
    torch.manual_seed(0)
    post = RealFormerEncoder(1, D, H, 16, "post", dtype=torch.float64)
    real = RealFormerEncoder(1, D, H, 16, "realformer", dtype=torch.float64)
    real.load_state_dict(post.state_dict())
    x = _x(2, 5, D)
    torch.testing.assert_close(real(x), post(x))
    outs = {}
    for v in LN_VARIANTS:
        torch.manual_seed(1)
        outs[v] = RealFormerEncoder(3, D, H, 16, v, dtype=torch.float64)(x)
    assert not torch.allclose(outs["post"], outs["realformer"]) and not torch.allclose(
        outs["post"], outs["pre"]
    )
    # Post-LN (and RealFormer) outputs are layer-normalised; the Pre-LN stack ends with its own
    # LayerNorm.
    for v in LN_VARIANTS:
        torch.testing.assert_close(
            outs[v].mean(-1), torch.zeros(2, 5, dtype=torch.float64), atol=1e-10, rtol=0
        )


def test_masked_scores_stay_finite_and_dead_rows_are_zero() -> None:
    q, k, v = _x(4, 3), _x(4, 3, seed=1), _x(4, 2, seed=2)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    out, scores = residual_attention(q, k, v, prev=_x(4, 4, seed=3), mask=mask)
    assert torch.isfinite(scores).all() and torch.isfinite(out).all()
    assert (out[1] == 0).all()
    enc = RealFormerEncoder(2, D, H, 16, "realformer")
    y, sc = enc(torch.randn(2, 4, D), mask=mask, return_scores=True)
    assert torch.isfinite(y).all() and all(torch.isfinite(s).all() for s in sc)


def test_gradients_flow_through_the_carried_scores() -> None:
    q, k, v = (_x(1, 4, 3, seed=s).requires_grad_(True) for s in range(3))
    prev = _x(1, 4, 4, seed=4).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b, c, p: residual_attention(a, b, c, p, causal=True), (q, k, v, prev)
    )
    torch.manual_seed(0)
    enc = RealFormerEncoder(2, D, H, 16, "realformer")
    first_q = enc.blocks[0].attn.in_proj.weight
    _, scores = enc(torch.randn(2, 5, D), return_scores=True)
    (g,) = torch.autograd.grad(scores[1].sum(), first_q)
    assert g[:D].abs().sum() > 0  # layer 2's scores depend on layer 1's queries through A_1


def test_large_inputs_stay_finite() -> None:
    q = torch.full((3, 4), 1e30)
    out, _ = residual_attention(q, q, torch.randn(3, 2))
    assert torch.isfinite(out).all()


def test_meta_device() -> None:
    for v in LN_VARIANTS:
        enc = RealFormerEncoder(2, D, H, 16, v, device="meta")
        y, scores = enc(torch.randn(3, 5, D, device="meta"), causal=True, return_scores=True)
        assert y.device.type == "meta" and scores[-1].shape == (3, H, 5, 5)
    init, trans = markov_chain(4, device="meta")
    assert init.device.type == trans.device.type == "meta"
    x = torch.zeros(2, 5, dtype=torch.long, device="meta")
    assert markov_posterior(x, init, trans).shape == (2, 5, 4)


# ------------------------------------------------------------------------------------ the Markov
# MLM task
def test_markov_posterior_equals_brute_force_enumeration() -> None:
    init, trans = markov_chain(3, 1.5, torch.Generator().manual_seed(0))
    x = torch.tensor([[3, 1, 3, 3, 0], [2, 3, 3, 1, 3]])  # 3 = hidden
    post = markov_posterior(x, init, trans)
    for b in range(2):
        joint = torch.zeros(5, 3, dtype=torch.float64)
        for seq in itertools.product(range(3), repeat=5):
            if any(x[b, t] != 3 and x[b, t] != s for t, s in enumerate(seq)):
                continue
            p = init[seq[0]] * math.prod(trans[seq[t - 1], seq[t]] for t in range(1, 5))
            for t, s in enumerate(seq):
                joint[t, s] += p
        torch.testing.assert_close(post[b], joint / joint.sum(-1, keepdim=True))


def test_markov_mlm_task_hides_and_targets_consistently() -> None:
    init, trans = markov_chain(5, 2.0, torch.Generator().manual_seed(1))
    x, y = markov_mlm_task(400, 12, init, trans, 0.3, torch.Generator().manual_seed(2))
    hidden = x == 5
    assert ((y == -100) == ~hidden).all() and (y[hidden] < 5).all()
    assert (
        abs(hidden.double().mean().item() - 0.3) < 0.03
    )  # 4800 positions: 4 standard errors ~ 0.026
    torch.testing.assert_close(trans.sum(-1), torch.ones(5, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------
# errors
def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="variant"):
        RealFormerBlock(D, H, 16, "middle")
    with pytest.raises(ValueError, match="num_heads"):
        ResidualAttention(D, 3)
    with pytest.raises(ValueError, match="num_layers"):
        RealFormerEncoder(0, D, H, 16)
    q = _x(4, 3)
    with pytest.raises(ValueError, match="prev"):
        residual_attention(q, q, q, prev=_x(5, 5))
    with pytest.raises(TypeError, match="prev"):
        residual_attention(q, q, q, prev=_x(4, 4).float())
    with pytest.raises(ValueError, match="x must have last dimension"):
        ResidualAttention(D, H)(torch.randn(3, D + 1))
    with pytest.raises(TypeError, match="return_scores"):
        RealFormerEncoder(1, D, H, 16)(torch.randn(3, D), return_scores=1)
    init, trans = markov_chain(3)
    with pytest.raises(ValueError, match="mask_rate"):
        markov_mlm_task(2, 4, init, trans, mask_rate=0.0)
    with pytest.raises(ValueError, match="initial"):
        markov_posterior(torch.zeros(2, 4, dtype=torch.long), init[:2], trans)
    with pytest.raises(ValueError, match="sharpness"):
        markov_chain(3, -1.0)


def test_overflowing_scores_stay_finite_and_correct() -> None:
    """Issue 11: residual attention at |x| ~ 1e20 (raw q k^T would be inf - inf)."""
    out, scores = residual_attention(
        torch.tensor([[1e20, 1e20]]), torch.tensor([[1e20, -1e20]]), torch.tensor([[1.0]])
    )
    assert torch.equal(out, torch.tensor([[1.0]])) and torch.isfinite(scores).all()
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 4, generator=g) * 1e20, torch.randn(6, 4, generator=g) * 1e20
    v = torch.randn(6, 2, generator=g)
    out, scores = residual_attention(q, k, v, prev=torch.full((5, 6), 3e38))
    assert torch.isfinite(out).all() and torch.isfinite(scores).all()
    torch.testing.assert_close(
        out, softmax_attention(q, k, v)
    )  # prev is constant per row: no change
    layer = ResidualAttention(D, H)
    with torch.no_grad():
        y, scores = layer(_x(3, 5, D).float() * 1e20)
        y2, scores2 = layer(_x(3, 5, D).float() * 1e20, prev=scores)
    assert all(torch.isfinite(t).all() for t in (y, scores, y2, scores2))


def test_former_argument_names_still_work() -> None:
    torch.manual_seed(0)
    a = ResidualAttention(d_model=D, n_heads=H)
    torch.manual_seed(0)
    b = ResidualAttention(embed_dim=D, num_heads=H)
    assert a.embed_dim == b.embed_dim == a.d_model == D and a.num_heads == a.n_heads == H
    assert torch.equal(a.in_proj.weight, b.in_proj.weight)
    enc = RealFormerEncoder(n_layers=2, d_model=D, n_heads=H, d_ff=16, variant="pre")
    assert len(enc.blocks) == 2
    with pytest.raises(TypeError, match="embed_dim"):
        ResidualAttention(D, H, d_model=D)
    with pytest.raises(TypeError, match="not both"):
        ResidualAttention(embed_dim=D, num_heads=H, d_model=D)


def test_markov_posterior_of_empty_sequences() -> None:  # issue 11: no positions
    init, trans = markov_chain(4, generator=torch.Generator().manual_seed(0))
    out = markov_posterior(torch.zeros(2, 0, dtype=torch.long), init, trans)
    assert out.shape == (2, 0, 4) and out.dtype == trans.dtype


def test_markov_chain_checks_dtype_and_device() -> None:  # issue 11
    for bad in (torch.int64, "float32"):
        with pytest.raises(TypeError, match="dtype"):
            markov_chain(3, dtype=bad)
    with pytest.raises(ValueError, match="device"):
        markov_chain(3, device="gpu0")


# ------------------------------------------------------- issue 11: LayerNorm at |x| = 1e30
@pytest.mark.parametrize("scale", [1.0, 1e18, 1e30, 1e38])
def test_layer_norm_is_finite_and_exact_at_any_scale(scale: float) -> None:
    from suma_lib.attention import _core

    gen = torch.Generator().manual_seed(0)
    ln = _core.LayerNorm(8)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5, generator=gen)
        ln.bias.uniform_(-1, 1, generator=gen)
    x64 = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    ref = F.layer_norm(x64, (8,), ln.weight.double(), ln.bias.double(), ln.eps)  # scale-free
    out = ln((x64 * scale).float())
    assert torch.isfinite(out).all()
    assert torch.allclose(out.double(), ref, atol=1e-5)
    x = torch.randn(4, 8, generator=gen)
    assert torch.equal(ln(x), F.layer_norm(x, (8,), ln.weight, ln.bias, ln.eps))  # bit for bit
    assert torch.equal(
        ln(torch.full((2, 8), 1e30)), ln.bias.expand(2, 8)
    )  # constant rows: the bias
    xg = (x * 1e30).requires_grad_(True)
    ln(xg).square().sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_realformer_block_finite_at_huge_input() -> None:
    torch.manual_seed(0)
    for variant in LN_VARIANTS:
        block = RealFormerBlock(D, H, 16, variant)
        y, _ = block(torch.randn(2, 3, D) * 1e30)
        assert torch.isfinite(y).all()
