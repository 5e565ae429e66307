"""Tests of suma_lib.layers against peers (torch RMSNorm, TransformerEncoderLayer) and formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from suma_lib.layers import (
    GAU,
    Residual,
    RMSNorm,
    Stack,
    TransformerBlock,
    build_stack,
    deepnorm_constants,
    deepnorm_init_,
    relu2_attention,
    residual_scaling,
)


def test_rmsnorm_matches_torch():
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    ours = RMSNorm(16, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
    peer = torch.nn.RMSNorm(16, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        peer.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), peer(x))
    nogain = RMSNorm(16, eps=1e-6, elementwise_affine=False, dtype=torch.float64)
    torch.testing.assert_close(
        nogain(x), torch.nn.RMSNorm(16, eps=1e-6, elementwise_affine=False)(x)
    )
    assert nogain.weight is None


def test_rmsnorm_extreme_and_zero():
    n = RMSNorm(4, elementwise_affine=False)
    x = torch.tensor([[1e30, -1e30, 1e30, 0.0], [0.0, 0.0, 0.0, 0.0]])
    y = n(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[0], torch.tensor([1.0, -1.0, 1.0, 0.0]) / math.sqrt(0.75))
    assert (y[1] == 0).all()


def test_residual_formulas():
    torch.manual_seed(0)
    f = torch.nn.Linear(8, 8)
    x = torch.randn(2, 3, 8)
    post = Residual(f, 8, "post", alpha=2.5)
    torch.testing.assert_close(post(x), F.layer_norm(2.5 * x + f(x), (8,)))
    pre = Residual(f, 8, "pre", norm_type="rmsnorm_nogain")
    torch.testing.assert_close(
        pre(x), x + f(x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-5))
    )
    with pytest.raises(ValueError, match="alpha"):
        Residual(f, 8, "pre", alpha=2.0)
    with pytest.raises(ValueError, match="placement"):
        Residual(f, 8, "middle")
    with pytest.raises(ValueError, match="x"):
        post(torch.randn(2, 3, 7))


def test_transformer_block_matches_torch_post_ln():
    torch.manual_seed(1)
    blk = TransformerBlock(16, 4, 32, "post", activation="relu", dtype=torch.float64)
    peer = torch.nn.TransformerEncoderLayer(
        16, 4, 32, dropout=0.0, batch_first=True, norm_first=False, dtype=torch.float64
    )
    a = blk.attn.sublayer.attn
    with torch.no_grad():
        peer.self_attn.in_proj_weight.copy_(
            torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        )
        peer.self_attn.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        peer.self_attn.out_proj.weight.copy_(a.out_proj.weight)
        peer.self_attn.out_proj.bias.copy_(a.out_proj.bias)
        peer.linear1.weight.copy_(blk.ffn.sublayer.fc1.weight)
        peer.linear1.bias.copy_(blk.ffn.sublayer.fc1.bias)
        peer.linear2.weight.copy_(blk.ffn.sublayer.fc2.weight)
        peer.linear2.bias.copy_(blk.ffn.sublayer.fc2.bias)
    peer.eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(blk(x), peer(x))
    blk_pre = TransformerBlock(16, 4, 32, "pre", activation="relu", dtype=torch.float64)
    blk_pre.load_state_dict(blk.state_dict())
    peer.norm_first = True
    torch.testing.assert_close(blk_pre(x), peer(x))


def test_deepnorm_constants_and_scaling():
    ((a, b),) = deepnorm_constants(6).values()
    assert a == pytest.approx(12**0.25) and b == pytest.approx(48**-0.25)
    ed = deepnorm_constants(6, "encoder-decoder", 6)
    assert ed["decoder"] == pytest.approx((18**0.25, 72**-0.25))
    assert ed["encoder"][0] == pytest.approx(0.81 * (6**5) ** (1 / 16))
    assert residual_scaling(8, "sgd") == pytest.approx((16**0.25, 16**-0.25))
    assert residual_scaling(8, "adam") == pytest.approx((4.0, 0.25))
    assert residual_scaling(8, "lamb") == pytest.approx((1.0, 0.25))
    with pytest.raises(ValueError, match="optimizer"):
        residual_scaling(8, "rmsprop")
    with pytest.raises(ValueError, match="num_decoder_layers"):
        deepnorm_constants(6, "encoder-decoder")


def test_deepnorm_init_gain():
    g = torch.Generator().manual_seed(0)
    stack = build_stack(3, 64, num_heads=4, alpha="deepnorm", generator=g)
    a, b = deepnorm_constants(3)["encoder"]
    blk = stack[0]
    assert blk.attn.alpha == pytest.approx(a)
    w = blk.ffn.sublayer.fc1.weight
    assert w.std().item() == pytest.approx(b * math.sqrt(2 / (64 + 256)), rel=0.05)
    q = blk.attn.sublayer.attn.q_proj.weight
    assert q.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.05)
    with pytest.raises(ValueError, match="TransformerBlock"):
        deepnorm_init_(torch.nn.Linear(2, 2))


def test_relu2_attention_formula_and_mask():
    q, k = torch.randn(5, 8), torch.randn(7, 8)
    a = relu2_attention(q, k)
    torch.testing.assert_close(a, torch.clamp(q @ k.T, min=0) ** 2 / (7 * 8))
    mask = torch.ones(5, 7, dtype=torch.bool).tril()
    assert (relu2_attention(q, k, mask)[~mask] == 0).all()
    with pytest.raises(ValueError, match="q and k"):
        relu2_attention(q, torch.randn(7, 9))


def test_gau_direct_formula_and_scale():
    g = torch.Generator().manual_seed(0)
    gau = GAU(16, 2, 8, generator=g, dtype=torch.float64)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    u, v, z = (F.silu(x @ w) for w in (gau.w_u, gau.w_v, gau.w_z))
    a = torch.clamp(z @ z.transpose(-1, -2), min=0) ** 2 / (6 * 8)
    torch.testing.assert_close(gau(x), (u * (a @ v)) @ gau.w_o)
    assert gau.w_u.std().item() == pytest.approx(1 / 4, rel=0.2)
    g2 = torch.Generator().manual_seed(0)
    half = GAU(16, 2, 8, weight_scale=0.5, generator=g2, dtype=torch.float64)
    torch.testing.assert_close(half.w_o, 0.5 * gau.w_o)
    r1 = GAU(
        16, 2, 8, activation="relu", generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    r2 = GAU(
        16,
        2,
        8,
        activation="relu",
        weight_scale=0.5,
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64,
    )
    torch.testing.assert_close(r2(x), 0.5**7 * r1(x))
    with pytest.raises(ValueError, match="activation"):
        GAU(16, activation="gelu")
    with pytest.raises(ValueError, match="weight_scale"):
        GAU(16, weight_scale=0.0)


def test_gau_stack_and_devices():
    g = torch.Generator().manual_seed(0)
    st = build_stack(3, 16, kind="gau", generator=g, expansion=2, key_width=8)
    assert isinstance(st, Stack) and len(st) == 3
    y = st(torch.randn(2, 5, 16))
    assert y.shape == (2, 5, 16) and torch.isfinite(y).all()
    meta = build_stack(2, 16, kind="gau", device="meta", key_width=8)
    assert meta(torch.randn(1, 4, 16, device="meta")).device.type == "meta"
    with pytest.raises(ValueError, match="kind"):
        build_stack(2, 16, kind="rnn")
    with pytest.raises(ValueError, match="beta"):
        build_stack(2, 16, kind="gau", beta=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    st = build_stack(2, 16, num_heads=2, alpha="deepnorm", device="cuda")
    assert st(torch.randn(1, 4, 16, device="cuda")).device.type == "cuda"


def test_safe_layer_norm_matches_torch_and_survives_huge_rows():
    from suma_lib.layers import SafeLayerNorm

    ours = SafeLayerNorm(16, dtype=torch.float64)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    peer = torch.nn.LayerNorm(16, dtype=torch.float64)
    peer.load_state_dict(ours.state_dict())
    x = torch.randn(3, 16, dtype=torch.float64) * torch.tensor(
        [[1e-3], [1.0], [1e3]], dtype=torch.float64
    )
    torch.testing.assert_close(ours(x), peer(x))
    big = SafeLayerNorm(4)(torch.tensor([[1e30, -1e30, 1e30, -1e30]]))
    torch.testing.assert_close(big, torch.tensor([[1.0, -1.0, 1.0, -1.0]]))


def test_relu2_attention_huge_and_batch_checks():
    q = torch.tensor([[1e30, -1e30], [0.0, 0.0]])
    a = relu2_attention(q, q)
    assert not torch.isnan(a).any() and a[1].eq(0).all()
    with pytest.raises(ValueError, match="broadcast"):
        relu2_attention(torch.randn(2, 3, 4), torch.randn(3, 3, 4))
    with pytest.raises(ValueError, match="gain is on cpu"):
        RMSNorm(4)(torch.randn(2, 4, device="meta"))
