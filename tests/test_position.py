"""Tests of suma_lib.position: sinusoid, learned table, RoPE, XPOS, relative biases, random positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.attention import MultiHeadAttention
from suma_lib.position import (
    KERPLE,
    ALiBi,
    LearnedPositionalEmbedding,
    LogNScale,
    PositionalMultiHeadAttention,
    RoPEBlock,
    RotaryEmbedding,
    Sandwich,
    ShawRelativePosition,
    T5RelativeBias,
    XPos,
    alibi_slopes,
    alpha_ramp,
    apply_rope,
    apply_xpos,
    equal_mean_positions,
    kerple_bias,
    log_n_scale,
    random_positions,
    relative_positions,
    rope_cos_sin,
    sandwich_bias,
    sinusoidal_encoding,
    sinusoidal_frequencies,
    sinusoidal_shift_matrix,
    t5_relative_position_bucket,
)

F64 = torch.float64


def _numpy_pe(positions: np.ndarray, d: int, base: float = 10000.0) -> np.ndarray:
    """The paper's formula, written independently: PE[p, 2i] = sin(p/base^(2i/d)), PE[p, 2i+1] =
    cos."""
    out = np.empty(positions.shape + (d,))
    for i in range(d // 2):
        angle = positions / base ** (2 * i / d)
        out[..., 2 * i] = np.sin(angle)
        out[..., 2 * i + 1] = np.cos(angle)
    return out


@given(n=st.integers(0, 40), half=st.integers(1, 16), base=st.floats(2.0, 1e5))
@settings(max_examples=30, deadline=None)
def test_encoding_matches_the_formula(n: int, half: int, base: float) -> None:
    d = 2 * half
    got = sinusoidal_encoding(n, d, base, dtype=F64).numpy()
    np.testing.assert_allclose(
        got, _numpy_pe(np.arange(n, dtype=float), d, base), rtol=0, atol=1e-12
    )


def test_concatenated_layout_is_a_permutation_of_interleaved() -> None:
    inter = sinusoidal_encoding(30, 12, dtype=F64)
    cat = sinusoidal_encoding(30, 12, layout="concatenated", dtype=F64)
    torch.testing.assert_close(
        cat, torch.cat((inter[:, 0::2], inter[:, 1::2]), dim=-1), rtol=0, atol=0
    )


def test_frequencies() -> None:
    w = sinusoidal_frequencies(8, 10000.0, dtype=F64)
    torch.testing.assert_close(w, torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=F64))


def test_positions_tensor_shape_dtype_and_float32_accuracy() -> None:
    pos = torch.tensor([[0.0, 1.5], [1e5, 1e6]], dtype=torch.float32)
    pe = sinusoidal_encoding(pos, 16)
    assert pe.shape == (2, 2, 16) and pe.dtype == torch.float32
    # Angles are formed in float64, so even at p = 1e6 the float32 result is accurate to float32
    # rounding.
    np.testing.assert_allclose(pe.numpy(), _numpy_pe(pos.double().numpy(), 16), atol=2e-7)
    assert sinusoidal_encoding(torch.arange(5), 4).dtype == torch.get_default_dtype()


@given(
    k=st.floats(-500, 500),
    half=st.integers(1, 12),
    layout=st.sampled_from(["interleaved", "concatenated"]),
)
@settings(max_examples=40, deadline=None)
def test_shift_matrix_maps_pe_p_to_pe_p_plus_k(k: float, half: int, layout: str) -> None:
    d = 2 * half
    p = torch.linspace(-50, 300, 23, dtype=F64)
    rot = sinusoidal_shift_matrix(k, d, layout=layout, dtype=F64)
    shifted = sinusoidal_encoding(p, d, layout=layout) @ rot.mT
    torch.testing.assert_close(
        shifted, sinusoidal_encoding(p + k, d, layout=layout), rtol=0, atol=1e-11
    )
    torch.testing.assert_close(rot @ rot.mT, torch.eye(d, dtype=F64), rtol=0, atol=1e-14)


def test_shift_matrices_compose_and_batch() -> None:
    ks = torch.tensor([[0.0, 3.0], [-2.0, 7.5]], dtype=F64)
    rots = sinusoidal_shift_matrix(ks, 10)
    assert rots.shape == (2, 2, 10, 10) and rots.dtype == F64
    torch.testing.assert_close(rots[0, 0], torch.eye(10, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(rots[0, 1] @ rots[1, 0], sinusoidal_shift_matrix(1.0, 10, dtype=F64))
    assert torch.linalg.det(rots[1, 1]).item() == pytest.approx(1.0)


def test_meta_device() -> None:
    pe = sinusoidal_encoding(torch.arange(6.0, device="meta").reshape(2, 3), 8)
    assert pe.device.type == "meta" and pe.shape == (2, 3, 8)
    rot = sinusoidal_shift_matrix(torch.zeros(4, device="meta"), 6)
    assert rot.device.type == "meta" and rot.shape == (4, 6, 6)
    assert sinusoidal_encoding(5, 4, device="meta").shape == (5, 4)


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="d must be even"):
        sinusoidal_encoding(4, 5)
    with pytest.raises(ValueError, match="d"):
        sinusoidal_shift_matrix(1, 0)
    with pytest.raises(ValueError, match="base"):
        sinusoidal_encoding(4, 4, base=0.0)
    with pytest.raises(ValueError, match="n"):
        sinusoidal_encoding(-1, 4)
    with pytest.raises(TypeError, match="n"):
        sinusoidal_encoding(3.0, 4)
    with pytest.raises(ValueError, match="n must be finite"):
        sinusoidal_encoding(torch.tensor([0.0, math.nan]), 4)
    with pytest.raises(ValueError, match="layout"):
        sinusoidal_encoding(4, 4, layout="sideways")
    with pytest.raises(ValueError, match="k"):
        sinusoidal_shift_matrix(math.inf, 4)
    with pytest.raises(TypeError, match="k"):
        sinusoidal_shift_matrix("1", 4)
    with pytest.raises(TypeError, match="dtype"):
        sinusoidal_encoding(4, 4, dtype=torch.int64)



# ============================================================================ learned absolute table
def test_learned_embedding_adds_rows_and_refuses_unknown_positions() -> None:
    g = torch.Generator().manual_seed(0)
    emb = LearnedPositionalEmbedding(6, 4, generator=g)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(emb(x, offset=2), x + emb.weight[2:5])
    torch.testing.assert_close(emb(x, torch.tensor([5, 0, 1])), x + emb.weight[[5, 0, 1]])
    with pytest.raises(ValueError, match="max_len"):
        emb(x, offset=4)
    with pytest.raises(ValueError, match="positions"):
        emb(x, torch.tensor([0, 1, 6]))
    with pytest.raises(TypeError, match="positions"):
        emb(x, torch.tensor([0.0, 1.0, 2.0]))
    assert float(emb.weight.detach().std()) == pytest.approx(0.02, rel=0.5)


# ================================================================================================ RoPE
def _complex_rope(x: np.ndarray, pos: np.ndarray, base: float, layout: str) -> np.ndarray:
    """RoPE written as complex multiplication, independently: z_i -> z_i * exp(1j * p * base**(-2i/d))."""
    d = x.shape[-1]
    theta = base ** (-np.arange(d // 2) * 2.0 / d)
    if layout == "interleaved":
        z = x[..., 0::2] + 1j * x[..., 1::2]
    else:
        z = x[..., : d // 2] + 1j * x[..., d // 2 :]
    z = z * np.exp(1j * pos[:, None] * theta)
    out = np.empty_like(x)
    if layout == "interleaved":
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
    else:
        out[..., : d // 2], out[..., d // 2 :] = z.real, z.imag
    return out


@given(
    n=st.integers(1, 12),
    half=st.integers(1, 8),
    base=st.sampled_from([100.0, 10000.0, 5e5]),
    offset=st.integers(0, 3000),
    layout=st.sampled_from(["interleaved", "half"]),
)
@settings(max_examples=40, deadline=None)
def test_rope_matches_complex_multiplication(n, half, base, offset, layout) -> None:
    d = 2 * half
    x = torch.randn(2, n, d, dtype=F64, generator=torch.Generator().manual_seed(n * d))
    got = apply_rope(x, offset=offset, base=base, layout=layout)
    pos = np.arange(n, dtype=float) + offset
    np.testing.assert_allclose(got.numpy(), _complex_rope(x.numpy(), pos, base, layout), atol=1e-12)


def test_rope_matches_transformers_llama_half_layout() -> None:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    b, h, n, d = 2, 3, 7, 16
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(b, h, n, d, generator=g), torch.randn(b, h, n, d, generator=g)
    pos = torch.arange(5, 5 + n, dtype=torch.float32)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    freqs = pos[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[None].expand(b, n, d)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, emb.cos(), emb.sin())
    torch.testing.assert_close(apply_rope(q, offset=5, layout="half"), ref_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(apply_rope(k, pos, layout="half"), ref_k, rtol=1e-5, atol=1e-5)


def test_rope_matches_transformers_gptj_interleaved_layout() -> None:
    from transformers.models.gptj.modeling_gptj import (
        apply_rotary_pos_emb,
        create_sinusoidal_positions,
    )

    b, n, h, d = 2, 9, 3, 12
    x = torch.randn(b, n, h, d, generator=torch.Generator().manual_seed(2))
    table = create_sinusoidal_positions(n, d)  # (n, d): sines then cosines
    sin, cos = table[None, :, : d // 2].expand(b, n, d // 2), table[None, :, d // 2 :].expand(b, n, d // 2)
    ref = apply_rotary_pos_emb(x, sin, cos)
    got = apply_rope(x.transpose(1, 2)).transpose(1, 2)  # ours: (..., n, d)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_the_offset_difference() -> None:
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(4, 16, dtype=F64, generator=g), torch.randn(4, 16, dtype=F64, generator=g)
    for layout in ("interleaved", "half"):
        s1 = apply_rope(q, offset=0, layout=layout) @ apply_rope(k, offset=0, layout=layout).mT
        s2 = apply_rope(q, offset=1000, layout=layout) @ apply_rope(k, offset=1000, layout=layout).mT
        torch.testing.assert_close(s1, s2, rtol=0, atol=1e-11)


def test_rope_half_inputs_rotate_in_float32_and_keep_dtype() -> None:
    x = torch.randn(5, 8, dtype=torch.float32, generator=torch.Generator().manual_seed(4))
    for dt in (torch.float16, torch.bfloat16):
        got = apply_rope(x.to(dt), offset=10_000)
        assert got.dtype == dt
        ref = apply_rope(x.to(dt).float(), offset=10_000)
        torch.testing.assert_close(got.float(), ref.to(dt).float(), rtol=0, atol=0)
    cos, _ = rope_cos_sin(torch.tensor([1e6]), 8)
    assert cos.dtype == torch.float32
    np.testing.assert_allclose(cos.numpy()[0], np.cos(1e6 * 10000.0 ** (-np.arange(4) / 4)), atol=2e-7)


def test_rotary_embedding_kv_cache_equals_full_sequence() -> None:
    """Decoding with a cache: the last query alone, rotated at position m-1, gives the full run's last row."""
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 10, 8, dtype=F64, generator=g), torch.randn(2, 10, 8, dtype=F64, generator=g)
    rope = RotaryEmbedding(8, layout="half")
    qf, kf = rope(q, k)
    ql, kl = rope(q[:, -1:], k)
    torch.testing.assert_close(ql, qf[:, -1:], rtol=0, atol=0)
    torch.testing.assert_close(kl, kf, rtol=0, atol=0)


def test_rope_on_meta_and_errors() -> None:
    out = apply_rope(torch.empty(2, 3, 8, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 3, 8)
    with pytest.raises(ValueError, match="x must have an even"):
        apply_rope(torch.zeros(3, 5))
    with pytest.raises(TypeError, match="x"):
        apply_rope(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="layout"):
        apply_rope(torch.zeros(3, 4), layout="split")
    with pytest.raises(ValueError, match="positions"):
        apply_rope(torch.zeros(3, 4), torch.arange(4))
    with pytest.raises(ValueError, match="positions must be finite"):
        apply_rope(torch.zeros(2, 4), torch.tensor([0.0, math.inf]))
    with pytest.raises(ValueError, match="offset"):
        apply_rope(torch.zeros(2, 4), offset=math.nan)


def test_rope_cached_tables_strided_inputs_inference_mode_and_gradients() -> None:
    """The default-position tables are cached; strided inputs, inference mode and autograd still work."""
    g = torch.Generator().manual_seed(11)
    base = torch.randn(2, 6, 11, dtype=F64, generator=g)
    for x in (base[..., 1:9], base[..., 1:9].transpose(0, 1), base[..., :8].mT.contiguous().mT):
        for layout in ("interleaved", "half"):
            ref = _complex_rope(x.numpy(), np.arange(x.shape[-2], dtype=float) + 3, 10000.0, layout)
            np.testing.assert_allclose(apply_rope(x, offset=3, layout=layout).numpy(), ref, atol=1e-12)
    x = torch.randn(3, 5, 8, dtype=F64, generator=g)
    with torch.inference_mode():  # fills the cache for this key inside inference mode ...
        apply_rope(x, offset=17.0)
    xg = x.clone().requires_grad_(True)  # ... and autograd may still save the cached table
    for layout in ("interleaved", "half"):
        assert torch.autograd.gradcheck(lambda t, lay=layout: apply_rope(t, offset=17.0, layout=lay), (xg,))
    # same length and offset, other dtype or base: other tables
    torch.testing.assert_close(apply_rope(x.float(), offset=17.0), apply_rope(x, offset=17.0).float())
    assert not torch.allclose(apply_rope(x, offset=17.0, base=100.0), apply_rope(x, offset=17.0))
    # the fast paths (complex product; full-width tables) agree with plain real arithmetic
    from suma_lib.position._rotary import _rotate, _table

    pos = torch.arange(5, dtype=F64) + 17.0
    for layout in ("interleaved", "half"):
        cos, sin, extra = _table(pos, 8, 10000.0, F64, layout)
        assert extra is not None
        torch.testing.assert_close(_rotate(x, cos, sin, layout, extra), _rotate(x, cos, sin, layout), rtol=0,
                                   atol=1e-15)


# ================================================================================================ XPOS
def test_xpos_identity_and_centring() -> None:
    """(xi^m R_m q) . (xi^-n R_n k) = sum_i xi_i^(m-n) [pair i of q^T R_(n-m) k], also at position 1e5."""
    d, B, gamma = 8, 512.0, 0.4
    g = torch.Generator().manual_seed(6)
    q, k = torch.randn(3, d, dtype=F64, generator=g), torch.randn(4, d, dtype=F64, generator=g)
    for start in (0, 100_000):
        qp = torch.arange(3, dtype=F64) + start + 1
        kp = torch.arange(4, dtype=F64) + start
        xq, xk = apply_xpos(q, k, qp, kp, scale_base=B, gamma=gamma)
        zeta = (np.arange(0, d, 2) / d + gamma) / (1 + gamma)
        expected = np.zeros((3, 4))
        rq = _complex_rope(q.numpy(), np.zeros(3), 10000.0, "interleaved")  # identity rotation
        for a in range(3):
            for b in range(4):
                rel = _complex_rope(k.numpy()[b : b + 1], np.array([float(kp[b] - qp[a])]), 1e4, "interleaved")
                pair = (rq[a] * rel[0]).reshape(-1, 2).sum(-1)
                expected[a, b] = (zeta ** (float(qp[a] - kp[b]) / B) * pair).sum()
        np.testing.assert_allclose((xq @ xk.mT).numpy(), expected, rtol=1e-9, atol=1e-9)
    assert torch.isfinite(xq).all() and torch.isfinite(xk).all()


def test_xpos_module_float32_long_positions_finite() -> None:
    q = torch.randn(1, 2, 4, 16)
    k = torch.randn(1, 2, 4, 16)
    pos = torch.arange(4, dtype=torch.float32) + 1e6
    xq, xk = XPos(16)(q, k, pos, pos)
    assert torch.isfinite(xq).all() and torch.isfinite(xk).all() and xq.dtype == torch.float32


# ================================================================================== relative biases
def _t5_bucket_reference(rel: int, bidirectional: bool, nb: int, maxd: int) -> int:
    """T5's bucket written from the paper's description with math.log (independent of the library)."""
    ret = 0
    if bidirectional:
        nb //= 2
        ret += nb if rel > 0 else 0
        s = abs(rel)
    else:
        s = max(-rel, 0)
    exact = nb // 2
    if s < exact:
        return ret + s
    return ret + min(nb - 1, exact + int(math.log(s / exact) / math.log(maxd / exact) * (nb - exact)))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("nb,maxd", [(32, 128), (16, 64), (8, 20)])
def test_t5_buckets_match_transformers(bidirectional: bool, nb: int, maxd: int) -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-600, 601)
    ours = t5_relative_position_bucket(rel, bidirectional, nb, maxd)
    theirs = T5Attention._relative_position_bucket(rel, bidirectional, nb, maxd)
    assert torch.equal(ours, theirs)
    ref = [_t5_bucket_reference(int(r), bidirectional, nb, maxd) for r in rel]
    assert ours.tolist() == ref


def test_t5_table_of_the_article() -> None:
    """The article's table (32 buckets, bidirectional), distances i - j = 0..30, i.e. r = j - i <= 0."""
    table = [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 9, 9, 9, 9] + [10] * 7 + [11] * 8
    got = t5_relative_position_bucket(-torch.arange(31), True, 32, 128)
    assert got.tolist() == table


def test_alibi_slopes_match_the_paper() -> None:
    torch.testing.assert_close(alibi_slopes(8, dtype=F64), torch.tensor([2.0**-i for i in range(1, 9)], dtype=F64))
    # 12 heads: the 8 slopes of 8 heads, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (every other slope of 16 heads)
    twelve = [2.0**-i for i in range(1, 9)] + [2.0 ** -(i + 0.5) for i in range(4)]
    torch.testing.assert_close(alibi_slopes(12, dtype=F64), torch.tensor(twelve, dtype=F64))
    assert alibi_slopes(1).tolist() == [2.0**-8]
    s = alibi_slopes(20, dtype=F64)
    assert len(set(s.tolist())) == 20 and bool((s > 0).all() and (s < 1).all())


def test_alibi_bias_values() -> None:
    q = torch.zeros(1, 2, 3, 4)
    k = torch.zeros(1, 2, 5, 4)
    b = ALiBi(2)(q, k)
    assert b.shape == (2, 3, 5)
    # queries at positions 2, 3, 4 (the last three of five keys)
    dist = (torch.arange(5.0)[None, :] - torch.arange(2.0, 5.0)[:, None]).abs()
    torch.testing.assert_close(b, -torch.stack((dist / 16, dist / 256)))  # 2 heads: 2^-4, 2^-8


@given(r1=st.floats(0.01, 5), r2=st.floats(0.01, 2.0))
@settings(max_examples=30, deadline=None)
def test_kerple_forms(r1: float, r2: float) -> None:
    dist = torch.arange(-6.0, 7.0, dtype=F64)
    power = kerple_bias(dist, r1, r2, "power")
    log = kerple_bias(dist, r1, r2, "log")
    np.testing.assert_allclose(power.numpy(), -r1 * np.abs(dist.numpy()) ** r2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(log.numpy(), -r1 * np.log(1 + r2 * np.abs(dist.numpy())), rtol=1e-12)


def test_kerple_gradients_finite_at_zero_distance_and_errors() -> None:
    mod = KERPLE(3, kind="power")
    q = torch.zeros(1, 3, 4, 2)
    mod(q, q).sum().backward()
    assert torch.isfinite(mod.log_r1.grad).all() and torch.isfinite(mod.log_r2.grad).all()
    with pytest.raises(ValueError, match="r2"):
        kerple_bias(torch.zeros(2), 1.0, 2.5, "power")
    with pytest.raises(ValueError, match="r1"):
        kerple_bias(torch.zeros(2), -1.0, 1.0, "log")
    with pytest.raises(ValueError, match="kind"):
        KERPLE(2, kind="cubic")


def test_sandwich_is_the_extra_coordinates_of_a_concatenation() -> None:
    """q.k + lam * (p_m . p_n - d'/2) == [q, sqrt(lam) p_m] . [k, sqrt(lam) p_n] - lam * d'/2."""
    dprime, lam = 16, 0.3
    pos = torch.arange(7, dtype=F64)
    pe = sinusoidal_encoding(pos, dprime, dtype=F64)
    g = torch.Generator().manual_seed(7)
    q, k = torch.randn(7, 4, dtype=F64, generator=g), torch.randn(7, 4, dtype=F64, generator=g)
    cat_q = torch.cat((q, math.sqrt(lam) * pe), -1)
    cat_k = torch.cat((k, math.sqrt(lam) * pe), -1)
    dist = pos[None, :] - pos[:, None]
    lhs = q @ k.mT + lam * sandwich_bias(dist, dprime)
    torch.testing.assert_close(lhs, cat_q @ cat_k.mT - lam * dprime / 2, rtol=0, atol=1e-12)
    b = Sandwich(2, dim=dprime, scale=[lam, 2 * lam])(q[None, None].expand(1, 2, 7, 4), k[None, None])
    torch.testing.assert_close(b[0], lam * sandwich_bias(dist, dprime))


def test_shaw_term_equals_the_explicit_sum() -> None:
    g = torch.Generator().manual_seed(8)
    shaw = ShawRelativePosition(4, max_distance=2, values=True, generator=g)
    q = torch.randn(2, 3, 5, 4, generator=g)
    k = torch.randn(2, 3, 6, 4, generator=g)
    got = shaw(q, k)
    qp = torch.arange(1, 6)  # the last five of six key positions
    expected = torch.empty(2, 3, 5, 6)
    for i in range(5):
        for j in range(6):
            row = int(max(-2, min(2, j - int(qp[i])))) + 2
            expected[..., i, j] = (q[..., i, :] * shaw.keys[row]).sum(-1) / 2.0
    torch.testing.assert_close(got, expected)
    w = torch.softmax(torch.randn(3, 5, 6, generator=g), -1)
    vt = shaw.value_term(w)
    exp_v = torch.zeros(3, 5, 4)
    for i in range(5):
        for j in range(6):
            row = int(max(-2, min(2, j - int(qp[i])))) + 2
            exp_v[:, i] += w[:, i, j, None] * shaw.values[row]
    torch.testing.assert_close(vt, exp_v)


def test_relative_positions_default_and_explicit() -> None:
    r = relative_positions(2, 4)
    assert r.tolist() == [[-2, -1, 0, 1], [-3, -2, -1, 0]]
    r2 = relative_positions(2, q_positions=torch.tensor([5.0, 9.0]), k_positions=torch.tensor([0.0, 1.0]))
    assert r2.tolist() == [[-5, -4], [-9, -8]]


# ================================================================================ the attention hooks
def _pair(**kw):
    torch.manual_seed(0)
    plain = MultiHeadAttention(16, 4, **{k: v for k, v in kw.items() if k != "position"})
    other = PositionalMultiHeadAttention(16, 4, **kw)
    other.load_state_dict(plain.state_dict(), strict=False)
    return plain, other


@pytest.mark.parametrize("causal", [False, True])
def test_zero_bias_and_identity_rotation_equal_the_plain_module(causal: bool) -> None:
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(9))
    t5 = T5RelativeBias(4)  # zero-initialised table
    sandwich = Sandwich(4, scale=0.0)
    rope0 = RotaryEmbedding(4)
    plain, other = _pair(position=[t5, sandwich])
    torch.testing.assert_close(other(x, causal=causal), plain(x, causal=causal))
    plain, other = _pair(position=LogNScale(training_length=7))  # log_7 7 = 1: the identity
    torch.testing.assert_close(other(x, causal=causal), plain(x, causal=causal), rtol=1e-6, atol=1e-6)
    # a rotation at all-zero positions is the identity
    ident = lambda q, k: rope0(q, k, torch.zeros(q.shape[-2]), torch.zeros(k.shape[-2]))
    plain, other = _pair(qk_transform=ident)
    torch.testing.assert_close(other(x, causal=causal), plain(x, causal=causal))


def test_rope_attention_scores_depend_only_on_m_minus_n() -> None:
    """Identical tokens: the RoPE layer's scores (from its own hook) are constant along every diagonal."""
    attn = PositionalMultiHeadAttention(16, 2, position=RotaryEmbedding(8)).double()
    x = torch.randn(1, 1, 16, dtype=F64, generator=torch.Generator().manual_seed(10)).expand(1, 9, 16)
    q, k, _ = attn.project(x, x, x)
    rq, rk = attn.transform_qk(q, k)
    s = attn.get_scores(rq, rk, x, x)[0]
    assert not torch.allclose(s[0, 0, 1], s[0, 0, 3])  # the positions do change the scores
    for off in range(-8, 9):
        diag = torch.diagonal(s, off, dim1=-2, dim2=-1)
        torch.testing.assert_close(diag, diag[..., :1].expand_as(diag), rtol=0, atol=1e-12)


def test_every_position_module_runs_in_attention_with_gradients() -> None:
    mods = [RotaryEmbedding(8, layout="half"), XPos(8), LogNScale(4, causal=True), ALiBi(2),
            T5RelativeBias(2, bidirectional=False), KERPLE(2, "power"), KERPLE(2, "log"),
            Sandwich(2), ShawRelativePosition(8, 3)]
    x = torch.randn(2, 6, 16, requires_grad=True)
    for mod in mods:
        attn = PositionalMultiHeadAttention(16, 2, position=mod)
        out = attn(x, causal=True)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(x.grad).all(), type(mod).__name__
        # the fused and the explicit paths agree
        _, w = attn(x, causal=True, return_weights=True)
        assert torch.isfinite(w).all()
    with pytest.raises(TypeError, match="position"):
        PositionalMultiHeadAttention(16, 2, position=torch.nn.Linear(2, 2))


def test_alibi_module_as_score_bias_of_plain_attention() -> None:
    attn = MultiHeadAttention(8, 2, score_bias=ALiBi(2))
    x = torch.randn(1, 5, 8)
    _, w = attn(x, causal=True, return_weights=True)
    assert torch.allclose(w.sum(-1), torch.ones(1, 2, 5))


# ================================================================================ log n, random positions
def test_log_n_scale() -> None:
    assert float(log_n_scale(512, 512)) == pytest.approx(1.0)
    assert float(log_n_scale(4096, 512)) == pytest.approx(math.log(4096) / math.log(512))
    with pytest.raises(ValueError, match="training_length"):
        log_n_scale(4, 1)
    with pytest.raises(ValueError, match="n"):
        log_n_scale(torch.tensor([0.0]), 8)


def test_random_positions_sorted_distinct_and_reproducible() -> None:
    p = random_positions(40, 2048, batch_shape=(50,), generator=torch.Generator().manual_seed(0))
    assert p.shape == (50, 40) and p.dtype == torch.int64
    assert bool((p[:, 1:] > p[:, :-1]).all()) and int(p.min()) >= 0 and int(p.max()) < 2048
    q = random_positions(40, 2048, batch_shape=(50,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(p, q)
    # the k-th smallest of n draws from {0..L-1} has mean about (k+1)(L+1)/(n+1) - 1
    mean = p.double().mean(0)
    expected = (torch.arange(1, 41, dtype=F64) * 2049 / 41) - 1
    assert float((mean - expected).abs().max()) < 150
    with pytest.raises(ValueError, match="max_position"):
        random_positions(10, 5)


def test_equal_mean_positions() -> None:
    g = torch.Generator().manual_seed(1)
    p = equal_mean_positions(64, batch_shape=(4000,), generator=g, dtype=F64)
    assert p.shape == (4000, 64) and bool((p[:, 0] == 0).all())
    spans = p[:, -1]
    # s ~ Exp(mean 64): sample mean within 4 standard errors (sd = 64)
    assert abs(float(spans.mean()) - 64) < 4 * 64 / math.sqrt(4000)
    torch.testing.assert_close(p[:, 1:] - p[:, :-1], (spans / 63)[:, None].expand(4000, 63))
    with pytest.raises(ValueError, match="mean"):
        equal_mean_positions(4, mean=0.0)


# ================================================================================== the RoPE block
def test_rope_block_variants_and_alpha() -> None:
    torch.manual_seed(0)
    std = RoPEBlock(16, 2, 32)
    v2 = RoPEBlock(16, 2, 32, bias=False, norm="rms", gain=False)
    n_bias = 4 * 16 + 32 + 16  # four attention projections, two FFN layers
    n_norm = 2 * 2 * 16  # two LayerNorms, gain and bias each
    assert sum(p.numel() for p in std.parameters()) - sum(p.numel() for p in v2.parameters()) == n_bias + n_norm
    assert not any("bias" in name for name, _ in v2.named_parameters())
    x = torch.randn(2, 5, 16, dtype=F64)
    v2 = v2.double()
    v2.alpha = 0.0  # the block is the norm alone
    rms = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(v2(x), rms / torch.sqrt((rms**2).mean(-1, keepdim=True) + 1e-6))
    v2.alpha = 1.0
    out = v2(x, causal=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert [alpha_ramp(s, 4) for s in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0] and alpha_ramp(3, 0) == 1.0
    with pytest.raises(ValueError, match="norm"):
        RoPEBlock(16, 2, 32, norm="batch")
    with pytest.raises(ValueError, match="step"):
        alpha_ramp(-1, 4)


def test_rope_block_standard_equals_brute_force() -> None:
    torch.manual_seed(1)
    blk = RoPEBlock(8, 2, 12).double()
    x = torch.randn(1, 6, 8, dtype=F64)
    a = blk.attn
    q, k, v = (lin(x).view(1, 6, 2, 4).transpose(1, 2) for lin in (a.q_proj, a.k_proj, a.v_proj))
    q, k = apply_rope(q), apply_rope(k)
    att = torch.softmax(q @ k.mT / 2.0, -1) @ v
    h = torch.nn.functional.layer_norm(x + a.out_proj(att.transpose(1, 2).reshape(1, 6, 8)), (8,),
                                       blk.norm1.weight, blk.norm1.bias, 1e-6)
    ff = blk.ff2(torch.nn.functional.gelu(blk.ff1(h)))
    ref = torch.nn.functional.layer_norm(h + ff, (8,), blk.norm2.weight, blk.norm2.bias, 1e-6)
    torch.testing.assert_close(blk(x), ref, rtol=1e-12, atol=1e-12)


def test_robust_edges_of_the_score_terms() -> None:
    # NaN distances propagate; huge distances give a huge finite penalty
    assert torch.isnan(kerple_bias(torch.tensor([math.nan]), 1.0, 1.5, "power")).all()
    huge = kerple_bias(torch.tensor([1e30, 0.0]), 1.0, 2.0, "power")
    assert torch.isfinite(huge).all() and huge[0] == torch.finfo(torch.float32).min and huge[1] == 0
    # biases follow the queries' dtype, clamped to its range
    q16 = torch.zeros(1, 2, 3, 4, dtype=torch.float16)
    for mod in (ALiBi(2), T5RelativeBias(2), Sandwich(2, dim=8)):
        b = mod(q16, q16)
        assert b.dtype == torch.float16 and torch.isfinite(b).all()
    far = ALiBi(2)(q16, q16, torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 1.0, 1e6]))
    assert torch.isfinite(far).all()
    # mixed devices are a TypeError naming the argument
    with pytest.raises(TypeError, match="k must be on the device"):
        apply_xpos(torch.zeros(2, 4), torch.zeros(2, 4, device="meta"))
    with pytest.raises(TypeError, match="x must be on the device"):
        LearnedPositionalEmbedding(4, 4)(torch.zeros(2, 4, device="meta"))
    assert float(log_n_scale(torch.tensor([0.5]), 4)) < 0  # any positive n is accepted
