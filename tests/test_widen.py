"""Function-preserving widening (suma_lib.layers._widen): each rule against an independent
computation, then whole blocks end to end (notebooks/lossless-enlargement.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from suma_lib.attention import MultiHeadAttention
from suma_lib.layers import (
    GAU,
    FeedForward,
    RMSNorm,
    SafeLayerNorm,
    TransformerBlock,
    WidenedRotary,
    build_stack,
    widen,
    widen_index,
    widen_linear,
    widen_norm,
    widen_vector,
)
from suma_lib.position import ALiBi, RotaryEmbedding

D64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=D64)


def _rep(y: torch.Tensor, k: int = 2) -> torch.Tensor:
    """The wide representation y_pi / sqrt(k), built with NumPy's repeat (not widen_index)."""
    return torch.from_numpy(np.repeat(y.detach().numpy(), k, axis=-1)) / math.sqrt(k)


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5 + (p.dim() == 1) * 0.3)
    return module


# ------------------------------------------------------------------------------ the index and vectors
def test_widen_index_layouts() -> None:
    assert widen_index(3).tolist() == [0, 0, 1, 1, 2, 2]
    assert widen_index(4, block=2).tolist() == [0, 1, 0, 1, 2, 3, 2, 3]
    assert widen_index(3, block=3).tolist() == [0, 1, 2, 0, 1, 2]
    assert widen_index(2, 3).tolist() == [0, 0, 0, 1, 1, 1]
    assert widen_index(5, 1).tolist() == list(range(5))


def test_widen_vector_is_repeat_over_sqrt_k() -> None:
    v = _x(4, 6)
    for k in (2, 3):
        assert torch.allclose(widen_vector(v, k), _rep(v, k), rtol=0, atol=1e-15)
    # an isometry: the norm is kept (the article's reason for the 1/sqrt 2)
    assert torch.allclose(widen_vector(v).norm(dim=-1), v.norm(dim=-1), rtol=1e-14)
    assert torch.equal(widen_vector(v, scale=1.0)[..., ::2], v)


# ------------------------------------------------------------------------------ linear layers
@pytest.mark.parametrize(("s_i", "s_o"), [(2**-0.5, 2**-0.5), (2**-0.5, 1.0), (1.0, 2**-0.5)])
def test_widen_linear_matches_kron_and_preserves(s_i: float, s_o: float) -> None:
    w, b = _x(5, 3), _x(5, seed=1)
    wt, bt = widen_linear(w, b, scale_in=s_i, scale_out=s_o)
    expected = np.kron(w.numpy(), np.ones((2, 2))) * s_o / (2 * s_i)
    np.testing.assert_allclose(wt.numpy(), expected, rtol=0, atol=1e-15)
    x = _x(7, 3, seed=2)
    y = x @ w.T + b
    xt = torch.from_numpy(np.repeat(x.numpy(), 2, -1)) * s_i
    yt = xt @ wt.T + bt
    assert torch.allclose(yt, torch.from_numpy(np.repeat(y.numpy(), 2, -1)) * s_o, atol=1e-14)


def test_article_second_ffn_bias_b_over_2_is_wrong() -> None:
    """Eq. (11): from the plain repetition (s_i = 1) to scale 1/sqrt 2 the bias is b/sqrt 2."""
    w, b = _x(4, 6), _x(4, seed=1)
    h = _x(3, 6, seed=2)
    wt, bt = widen_linear(w, b, scale_in=1.0)
    assert torch.allclose(wt, torch.from_numpy(np.kron(w.numpy(), np.ones((2, 2)))) / (2 * 2**0.5))
    assert torch.allclose(bt, _rep(b))
    ht = torch.from_numpy(np.repeat(h.numpy(), 2, -1))
    target = _rep(h @ w.T + b)
    assert torch.allclose(ht @ wt.T + bt, target, atol=1e-14)
    b_article = torch.from_numpy(np.repeat(b.numpy(), 2)) / 2
    assert (ht @ wt.T + b_article - target).abs().max() > 0.01


def test_widen_linear_one_side_and_blocks() -> None:
    w, b = _x(5, 4), _x(5, seed=1)
    wt, bt = widen_linear(w, b, block_out=None)  # an untied output layer: vocabulary kept
    h = _x(3, 4, seed=2)
    assert wt.shape == (5, 8) and torch.equal(bt, b)
    assert torch.allclose(_rep(h) @ wt.T + bt, h @ w.T + b, atol=1e-14)
    wt2, _ = widen_linear(w, None, block_in=2, block_out=None)
    assert torch.allclose(wt2, w[:, [0, 1, 0, 1, 2, 3, 2, 3]] / 2**0.5)


# ------------------------------------------------------------------------------ norms
@pytest.mark.parametrize("kind", ["layernorm", "safe", "rmsnorm"])
def test_widen_norm_exact_with_scaled_eps(kind: str) -> None:
    norm = {"layernorm": nn.LayerNorm(6, eps=1e-3, dtype=D64),
            "safe": SafeLayerNorm(6, eps=1e-3, dtype=D64),
            "rmsnorm": RMSNorm(6, eps=1e-3, dtype=D64)}[kind]
    _randomize(norm)
    x = _x(4, 6) * 0.1  # small variance: epsilon matters
    wide = widen_norm(norm)
    assert type(wide) is type(norm) and math.isclose(wide.eps, 5e-4)
    assert torch.allclose(wide(_rep(x)), _rep(norm(x)), rtol=0, atol=1e-14)
    # from the plain repetition (scale 1) the same gains: LayerNorm is scale-free in its input
    wide1 = widen_norm(norm, scale_in=1.0)
    assert torch.allclose(wide1(torch.from_numpy(np.repeat(x.numpy(), 2, -1))), _rep(norm(x)))
    # the article's epsilon-free rule (same epsilon) is off
    wide.eps = norm.eps
    assert (wide(_rep(x)) - _rep(norm(x))).abs().max() > 1e-3


def test_widen_norm_layer_norm_peer() -> None:
    norm = _randomize(nn.LayerNorm(6, dtype=D64))
    x = _x(3, 6)
    wide = widen_norm(norm, 3)
    ref = F.layer_norm(_rep(x, 3), (18,), _rep(norm.weight, 3), _rep(norm.bias, 3), norm.eps / 3)
    assert torch.allclose(wide(_rep(x, 3)), ref, atol=1e-15)
    assert torch.allclose(ref, _rep(norm(x), 3), atol=1e-14)


# ------------------------------------------------------------------------------ FFN and attention
@pytest.mark.parametrize("act", ["gelu", "relu", "swish"])
def test_widen_ffn_any_activation(act: str) -> None:
    ffn = _randomize(FeedForward(4, 6, act, dtype=D64))
    x = _x(2, 3, 4)
    wide = widen(ffn)
    assert wide.width == 8 and wide.hidden == 12
    assert torch.allclose(wide(_rep(x)), _rep(ffn(x)), atol=1e-14)


def test_relu_is_homogeneous_gelu_is_not() -> None:
    x = _x(100)
    assert torch.allclose(F.relu(x / 2**0.5), F.relu(x) / 2**0.5)
    assert torch.allclose(F.leaky_relu(x / 2**0.5), F.leaky_relu(x) / 2**0.5)
    assert (F.gelu(x / 2**0.5) - F.gelu(x) / 2**0.5).abs().max() > 0.05


def test_widen_mha_against_torch_peer() -> None:
    peer = nn.MultiheadAttention(8, 2, batch_first=True, dtype=D64)
    _randomize(peer)
    mha = MultiHeadAttention.from_torch(peer)
    x = _x(2, 5, 8)
    wide = widen(mha)
    assert wide.head_dim == 8 and wide.num_heads == 2
    ref = peer(x, x, x, need_weights=False)[0]
    mask = torch.rand(5, 5, generator=_gen(1)) > 0.3
    mask |= torch.eye(5, dtype=torch.bool)
    for kw in ({}, {"causal": True}, {"mask": mask}):
        out = wide(_rep(x), **kw)
        assert torch.allclose(out, _rep(mha(x, **kw)), atol=1e-14)
    assert torch.allclose(wide(_rep(x)), _rep(ref), atol=1e-13)
    # attention weights unchanged
    _, a = mha(x, return_weights=True)
    _, at = wide(_rep(x), return_weights=True)
    assert torch.allclose(a, at, atol=1e-14)


def test_attention_scale_needs_fourth_root() -> None:
    """Without the 2^(1/4) on q and k the scores are divided by sqrt 2."""
    mha = _randomize(MultiHeadAttention(8, 2, dtype=D64))
    x = _x(2, 5, 8)
    wide = widen(mha)
    with torch.no_grad():
        for lin in (wide.q_proj, wide.k_proj):
            lin.weight.mul_(2**-0.25)
            lin.bias.mul_(2**-0.25)
    assert (wide(_rep(x)) - _rep(mha(x))).abs().max() > 1e-3


def test_tiled_repetition_mixes_heads() -> None:
    mha = _randomize(MultiHeadAttention(6, 3, dtype=D64))
    x = _x(2, 4, 6)
    wide = widen(mha)
    with torch.no_grad():  # replace q, k, v by the tiled repetition [x, x]
        for lin, old, s_o in ((wide.q_proj, mha.q_proj, 2**-0.25), (wide.k_proj, mha.k_proj, 2**-0.25),
                              (wide.v_proj, mha.v_proj, 2**-0.5)):
            w, b = widen_linear(old.weight, old.bias, scale_out=s_o, block_out=6)
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    assert (wide(_rep(x)) - _rep(mha(x))).abs().max() > 0.01


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_widen_rope(layout: str) -> None:
    mha = _randomize(MultiHeadAttention(8, 2, qk_transform=RotaryEmbedding(4, layout=layout), dtype=D64))
    x = _x(2, 6, 8)
    wide = widen(mha)
    assert isinstance(wide.qk_transform, WidenedRotary)
    assert torch.allclose(wide(_rep(x)), _rep(mha(x)), atol=1e-14)
    again = widen(wide)  # 4x in two steps
    assert torch.allclose(again(_rep(x, 4)), _rep(mha(x), 4), atol=1e-14)
    std = widen(mha, rope="standard")
    assert isinstance(std.qk_transform, RotaryEmbedding) and std.qk_transform.head_dim == 8
    assert (std(_rep(x)) - _rep(mha(x))).abs().max() > 1e-3


def test_widened_rotary_equals_rotary_embedding() -> None:
    q, k = _x(2, 3, 5, 8), _x(2, 3, 7, 8, seed=1)
    for layout in ("interleaved", "half"):
        rope = RotaryEmbedding(8, base=100.0, layout=layout)
        mine = WidenedRotary.from_rotary(rope)
        for a, b in zip(mine(q, k), rope(q, k), strict=True):
            # the same rotation; RotaryEmbedding may multiply complex numbers, so equal to round-off
            torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    # rotations by the repeated frequencies, by hand (interleaved pairs)
    omega = torch.tensor([1.0, 0.1], dtype=D64)
    rot = WidenedRotary(omega)
    v = _x(1, 3, 4)
    out, _ = rot(v, v)
    for m in range(3):
        for i in range(2):
            c, s = math.cos(m * omega[i]), math.sin(m * omega[i])
            a, b = v[0, m, 2 * i], v[0, m, 2 * i + 1]
            assert math.isclose(out[0, m, 2 * i], a * c - b * s, abs_tol=1e-14)
            assert math.isclose(out[0, m, 2 * i + 1], a * s + b * c, abs_tol=1e-14)


# ------------------------------------------------------------------------------ end to end
def _train_block(block: nn.Module, steps: int = 30) -> nn.Module:
    opt = torch.optim.Adam(block.parameters(), lr=1e-2)
    gen = _gen(3)
    for _ in range(steps):
        x = torch.randn(4, 6, block.width, generator=gen, dtype=D64)
        loss = (block(x) - x.flip(-2)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return block


@pytest.mark.parametrize(("placement", "norm"), [("post", "layernorm"), ("pre", "layernorm"),
                                                  ("pre", "rmsnorm_nogain"), ("post", "rmsnorm")])
def test_trained_block_end_to_end(placement: str, norm: str) -> None:
    torch.manual_seed(0)
    block = _train_block(TransformerBlock(8, 2, 16, placement, norm_type=norm, dtype=D64))
    x = _x(3, 6, 8)
    for k in (2, 3):
        wide = widen(block, k)
        assert wide.width == 8 * k
        assert torch.allclose(wide(_rep(x, k)), _rep(block(x), k), atol=1e-13)
    assert block.width == 8  # the source is left unchanged


def test_stack_and_embeddings_tied_logits() -> None:
    stack = build_stack(2, 8, num_heads=2, generator=_gen(), dtype=D64, activation="relu", causal=True)
    emb = _randomize(nn.Embedding(11, 8, dtype=D64))
    ids = torch.randint(0, 11, (2, 5), generator=_gen(1))
    logits = stack(emb(ids)) @ emb.weight.T
    wemb, wstack = widen(emb), widen(stack)
    assert torch.allclose(wemb(ids), _rep(emb(ids)))
    assert torch.allclose(wstack(wemb(ids)) @ wemb.weight.T, logits, atol=1e-13)


def test_meta_device_and_dtype() -> None:
    block = TransformerBlock(8, 2, 16, device="meta")
    wide = widen(block)
    assert all(p.device.type == "meta" for p in wide.parameters())
    assert wide(torch.randn(2, 3, 16, device="meta")).shape == (2, 3, 16)
    rope = MultiHeadAttention(8, 2, qk_transform=RotaryEmbedding(4), device="meta")
    assert widen(rope)(torch.randn(3, 16, device="meta")).shape == (3, 16)
    f32 = widen(TransformerBlock(8, 2, 16, dtype=torch.float32))
    assert all(p.dtype == torch.float32 for p in f32.parameters())
    assert widen(FeedForward(4).eval()).training is False


def test_gradients_flow() -> None:
    wide = widen(TransformerBlock(8, 2, 16))
    wide(torch.randn(2, 3, 16)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in wide.parameters())


# ------------------------------------------------------------------------------ bad input
def test_bad_input() -> None:
    block = TransformerBlock(8, 2, 16)
    with pytest.raises(ValueError, match="factor"):
        widen(block, 0)
    with pytest.raises(TypeError, match="factor"):
        widen(block, 2.0)
    with pytest.raises(TypeError, match="module"):
        widen("block")
    with pytest.raises(TypeError, match="GAU"):
        widen(GAU(8, 2, 4))
    with pytest.raises(ValueError, match="rope"):
        widen(block, rope="exact")
    with pytest.raises(ValueError, match="score_bias"):
        widen(MultiHeadAttention(8, 2, score_bias=ALiBi(2)))
    with pytest.raises(ValueError, match="without gain"):
        widen(TransformerBlock(8, 2, 16, norm_type="rmsnorm_nogain"))
    with pytest.raises(ValueError, match="block"):
        widen_index(5, block=2)
    with pytest.raises(ValueError, match="d"):
        widen_index(0)
    with pytest.raises(ValueError, match="weight"):
        widen_linear(torch.ones(3))
    with pytest.raises(ValueError, match="bias"):
        widen_linear(torch.ones(3, 2), torch.ones(2))
    with pytest.raises(TypeError, match="weight"):
        widen_linear(torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="scale_in"):
        widen_linear(torch.ones(3, 2), scale_in=-1.0)
    with pytest.raises(TypeError, match="norm"):
        widen_norm(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="scale_out"):
        widen_norm(nn.LayerNorm(4, elementwise_affine=False))
    with pytest.raises(TypeError, match="v"):
        widen_vector([1.0, 2.0])
    with pytest.raises(ValueError, match="omega"):
        WidenedRotary(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="q"):
        WidenedRotary(torch.ones(2))(torch.ones(3, 6), torch.ones(3, 6))
