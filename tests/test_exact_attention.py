"""Tests for suma_lib.attention.exact: softmax_attention, attention_weights, combine_masks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.attention import _core, attention_weights, combine_masks, softmax_attention

F64 = torch.float64


def rand(*shape, dtype=F64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def ref_weights(q, k, mask=None, causal=False, scale=None):
    """Explicit quadratic softmax; rows with no allowed key are all zeros."""
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * s
    allow = torch.ones(logits.shape[-2:], dtype=torch.bool)
    if causal:
        allow = allow.tril()
    if mask is not None:
        if mask.dtype == torch.bool:
            allow = allow & mask
        else:
            logits = logits + mask
            allow = allow & ~torch.isneginf(mask)
    logits = logits.masked_fill(~allow, float("-inf"))
    dead = ~allow.any(-1, keepdim=True)
    return torch.softmax(logits.masked_fill(dead, 0.0), dim=-1).masked_fill(~allow, 0.0)


def ref(q, k, v, **kw):
    return ref_weights(q, k, **kw) @ v


@pytest.mark.parametrize("shape", [(6, 4), (2, 6, 4), (2, 3, 6, 4), (2, 1, 3, 6, 4)])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_explicit_reference(shape, causal):
    q, k, v = rand(*shape, seed=1), rand(*shape, seed=2), rand(*shape[:-1], 3, seed=3)
    torch.testing.assert_close(
        softmax_attention(q, k, v, causal=causal),
        ref(q, k, v, causal=causal),
        rtol=1e-12,
        atol=1e-12,
    )
    torch.testing.assert_close(
        attention_weights(q, k, causal=causal),
        ref_weights(q, k, causal=causal),
        rtol=1e-12,
        atol=1e-12,
    )


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 12),
    m=st.integers(1, 12),
    d=st.integers(1, 5),
    causal=st.booleans(),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
)
def test_random_masks_match_reference(n, m, d, causal, density, seed):
    q, k, v = rand(2, n, d, seed=seed), rand(2, m, d, seed=seed + 1), rand(2, m, 2, seed=seed + 2)
    mask = torch.rand(2, n, m, generator=torch.Generator().manual_seed(seed)) < density
    out = softmax_attention(q, k, v, mask=mask, causal=causal)
    torch.testing.assert_close(out, ref(q, k, v, mask=mask, causal=causal), rtol=1e-10, atol=1e-12)
    w = attention_weights(q, k, mask=mask, causal=causal)
    sums = w.sum(-1)
    assert torch.all(((sums - 1).abs() < 1e-12) | (sums == 0))


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = rand(2, 5, 4, seed=4), rand(2, 6, 4, seed=5), rand(2, 6, 3, seed=6)
    mask = torch.ones(2, 5, 6, dtype=torch.bool)
    mask[0, 1] = False
    mask[1] = False
    add = torch.zeros(2, 5, 6, dtype=F64).masked_fill(~mask, float("-inf"))
    for m in (mask, add):
        for causal in (False, True):
            out = softmax_attention(q, k, v, mask=m, causal=causal)
            assert torch.isfinite(out).all()
            assert (out[0, 1] == 0).all() and (out[1] == 0).all()
            torch.testing.assert_close(out, ref(q, k, v, mask=m, causal=causal))
    w = attention_weights(q, k, mask=mask)
    assert (w[1] == 0).all() and torch.isfinite(w).all()


def test_key_padding_mask_broadcasts():
    q, k, v = rand(2, 3, 5, 4, seed=7), rand(2, 3, 6, 4, seed=8), rand(2, 3, 6, 2, seed=9)
    keep = torch.tensor([[True] * 4 + [False] * 2, [False] * 6]).view(2, 1, 1, 6)
    out = softmax_attention(q, k, v, mask=keep)
    torch.testing.assert_close(out, ref(q, k, v, mask=keep))
    assert (out[1] == 0).all()


def test_float_additive_masks():
    q, k, v = rand(4, 7, 3, seed=10), rand(4, 7, 3, seed=11), rand(4, 7, 2, seed=12)
    bias = rand(7, 7, seed=13)  # a real-valued additive bias (e.g. relative positions)
    torch.testing.assert_close(softmax_attention(q, k, v, mask=bias), ref(q, k, v, mask=bias))
    torch.testing.assert_close(
        softmax_attention(q, k, v, mask=bias, causal=True), ref(q, k, v, mask=bias, causal=True)
    )
    torch.testing.assert_close(
        softmax_attention(q, k, v, mask=bias.float()), ref(q, k, v, mask=bias)
    )


def test_causal_is_top_left_aligned_for_unequal_lengths():
    for n, m in ((5, 8), (8, 5)):
        q, k, v = rand(n, 3, seed=14), rand(m, 3, seed=15), rand(m, 2, seed=16)
        torch.testing.assert_close(
            softmax_attention(q, k, v, causal=True), ref(q, k, v, causal=True)
        )
        assert combine_masks(None, True, n, m, device=q.device).equal(
            torch.ones(n, m, dtype=torch.bool).tril()
        )


def test_leading_dimensions_broadcast_and_scale():
    q, k, v = rand(2, 1, 5, 4, seed=17), rand(1, 3, 6, 4, seed=18), rand(1, 3, 6, 2, seed=19)
    out = softmax_attention(q, k, v, scale=0.3)
    assert out.shape == (2, 3, 5, 2)
    torch.testing.assert_close(out, ref(q, k, v, scale=0.3))


@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_and_float16(causal):
    q, k, v = rand(2, 16, 8, seed=20), rand(2, 16, 8, seed=21), rand(2, 16, 4, seed=22)
    mask = rand(2, 16, 16, seed=23) > -1
    expected = ref(q, k, v, mask=mask, causal=causal)
    for dtype in (torch.bfloat16, torch.float16):
        out = softmax_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask=mask, causal=causal)
        assert out.dtype == dtype
        # Input rounding (bf16 keeps 8 significant bits, relative 4e-3) propagates to ~1e-2 in the
        # output.
        torch.testing.assert_close(out.double(), expected, rtol=3e-2, atol=3e-2)


def test_extreme_values():
    # One-hot attention: huge logits pick the best key exactly.
    q, k, v = rand(3, 4, seed=24), rand(5, 4, seed=25), rand(5, 2, seed=26)
    out = softmax_attention(q * 1e4, k, v)
    torch.testing.assert_close(out, v[(q @ k.T).argmax(-1)])
    # |x| = 1e30 in float64: logits of 1e60 are representable and the output is an average of v.
    big = softmax_attention(q * 1e30, k * 1e30, v)
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big, v[(q @ k.T).argmax(-1)])


def test_meta_device():
    q, k, v = (torch.empty(2, 3, 5, 4, device="meta") for _ in range(3))
    assert softmax_attention(q, k, v, causal=True).device.type == "meta"
    assert softmax_attention(
        q, k, v, mask=torch.ones(5, 5, dtype=torch.bool, device="meta")
    ).shape == (2, 3, 5, 4)
    assert softmax_attention(q, k, v, mask=torch.zeros(5, 5, device="meta"), causal=True).shape == (
        2,
        3,
        5,
        4,
    )
    assert attention_weights(q, k, causal=True).shape == (2, 3, 5, 5)


def test_gradients():
    q, k, v = (rand(1, 4, 3, seed=s).requires_grad_() for s in (27, 28, 29))
    mask = torch.tensor(
        [[True, False, True, True], [False] * 4, [True] * 4, [False, False, True, False]]
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c: softmax_attention(a, b, c, mask=mask, causal=True), (q, k, v)
    )
    out = softmax_attention(q, k, v, mask=mask)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and (q.grad[0, 1] == 0).all()


def test_errors_name_the_argument():
    q, k, v = rand(5, 4), rand(6, 4), rand(6, 3)
    with pytest.raises(TypeError, match="q"):
        softmax_attention(q.numpy(), k, v)
    with pytest.raises(TypeError, match="q"):
        softmax_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="last dimension"):
        softmax_attention(q, rand(6, 3), v)
    with pytest.raises(ValueError, match="k and v"):
        softmax_attention(q, k, rand(7, 3))
    with pytest.raises(TypeError, match="dtype"):
        softmax_attention(q, k.float(), v)
    with pytest.raises(TypeError, match="mask"):
        softmax_attention(q, k, v, mask=torch.ones(5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="mask"):
        softmax_attention(q, k, v, mask=torch.ones(4, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        softmax_attention(q, k, v, mask=torch.zeros(3, 6, dtype=F64))
    with pytest.raises(ValueError, match="mask"):
        softmax_attention(q, k, v, mask=torch.zeros(6, dtype=F64))
    with pytest.raises(TypeError, match="mask"):
        softmax_attention(q, k, v, mask=torch.ones(5, 6, dtype=torch.bool, device="meta"))
    with pytest.raises(TypeError, match="causal"):
        softmax_attention(q, k, v, causal="yes")
    with pytest.raises(TypeError, match="scale"):
        softmax_attention(q, k, v, scale=True)
    with pytest.raises(ValueError, match="scale"):
        softmax_attention(q, k, v, scale=float("inf"))
    with pytest.raises(TypeError, match="mask"):
        attention_weights(q, k, mask=torch.zeros(5, 6))


# ------------------------------------------------------------------------------ extreme magnitudes
@pytest.mark.parametrize("causal", [False, True])
def test_huge_inputs_give_the_hard_max_limit_not_nan(causal: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 12, 8, generator=g) * 1e30
    k = torch.randn(2, 3, 12, 8, generator=g) * 1e30
    v = torch.randn(2, 3, 12, 8, generator=g)
    out = softmax_attention(q, k, v, causal=causal)
    logits = q.double() @ k.double().transpose(-2, -1)  # float64 holds 1e60 exactly enough
    if causal:
        logits = logits.masked_fill(~torch.ones(12, 12, dtype=torch.bool).tril(), float("-inf"))
    hard = torch.gather(v, 2, logits.argmax(-1)[..., None].expand(-1, -1, -1, 8))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, hard, rtol=0, atol=1e-6)
    w = attention_weights(q, k, causal=causal)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 12), rtol=0, atol=1e-6)


def test_rescaling_is_exact_so_masked_keys_change_nothing() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 6, 4, generator=g) for _ in range(3))
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[:, 5] = False
    k2 = k.clone()
    k2[..., 5, :] *= 1e3  # a masked key with a much larger norm changes the global key scale
    assert torch.equal(
        softmax_attention(q, k, v, mask=mask), softmax_attention(q, k2, v, mask=mask)
    )


def test_gradients_match_the_unscaled_formula() -> None:
    g = torch.Generator().manual_seed(2)
    q, k, v = (
        torch.randn(2, 5, 3, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3)
    )
    out = softmax_attention(q, k, v, scale=0.7)
    ref = torch.softmax(0.7 * q @ k.transpose(-2, -1), -1) @ v
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- the private core
# module


def test_core_split_merge_round_trip() -> None:
    x = torch.randn(2, 3, 5, 12, generator=torch.Generator().manual_seed(0))
    heads = _core.split_heads(x, 4)
    assert heads.shape == (2, 3, 4, 5, 3)
    assert torch.equal(heads[..., 1, :, :], x[..., 3:6])  # head 1 holds features 3..5
    assert torch.equal(_core.merge_heads(heads), x)


def test_core_mask_combination() -> None:
    keep = torch.tensor([[True, False, True], [True, True, False]])
    full = _core.combine_masks(keep, True, 2, 3, device=keep.device)
    assert torch.equal(full, torch.tensor([[True, False, False], [True, True, False]]))
    assert _core.combine_masks(None, False, 2, 3, device=keep.device) is None
    assert torch.equal(_core.both(keep, None), keep) and _core.both(None, None) is None
    assert torch.equal(_core.both(keep, ~keep), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        _core.check_mask([[True]], 2, 3, keep.device)
    with pytest.raises(TypeError, match="mask"):
        _core.check_mask(keep.float(), 2, 3, keep.device)
    assert _core.check_mask(keep.float(), 2, 3, keep.device, boolean=False) is not None
    with pytest.raises(ValueError, match="mask"):
        _core.check_mask(keep, 3, 3, keep.device)
    with pytest.raises(TypeError, match="mask"):
        _core.check_mask(keep.to("meta"), 2, 3, keep.device)


@pytest.mark.parametrize("magnitude", [1e-3, 1.0, 30.0, 1e10, 1e25])
def test_core_softmax_matches_float64_reference(magnitude: float) -> None:
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 6, 4, generator=g, dtype=torch.float64) * magnitude
    k = torch.randn(2, 7, 4, generator=g, dtype=torch.float64) * magnitude
    keep = torch.rand(2, 6, 7, generator=g) > 0.3
    keep[0, 1] = False  # a fully masked row
    ref = torch.softmax((q @ k.mT * 0.5).masked_fill(~keep, -math.inf), -1).nan_to_num(0.0)
    w = _core.masked_softmax(_core.scaled_logits(q.float(), k.float(), 0.5), keep)
    assert torch.isfinite(w).all() and (w[0, 1] == 0).all()
    torch.testing.assert_close(w.double(), ref, rtol=1e-4, atol=1e-5)
    # the SDPA path: the prescaled q gives the same attention
    q2, k2 = _core.prescale(q.float(), k.float(), 0.5)
    w2 = _core.masked_softmax(q2 @ k2.mT, keep)
    torch.testing.assert_close(w2.double(), ref, rtol=1e-4, atol=1e-5)


def test_core_logits_are_exact_below_overflow() -> None:
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(3, 5, 8, generator=g), torch.randn(3, 9, 8, generator=g)
    for s in (0.125, 1 / math.sqrt(8), -2.0, 0.0):
        assert torch.equal(_core.scaled_logits(q, k, s), (q @ k.mT) * s)
    big = torch.full((1, 2), 3e38)
    assert torch.isfinite(_core.scaled_logits(big, big, 1.0)).all()
    assert torch.isfinite(_core.prescale(big, big, 1e300)[0] @ big.mT).all()
    assert torch.equal(_core.prescale(big, big, 0.0)[0], torch.zeros(1, 2))


def test_core_masked_softmax_limits() -> None:
    logits = torch.tensor([[math.inf, 1.0, math.inf], [-math.inf, -math.inf, -math.inf]])
    w = _core.masked_softmax(logits)
    torch.testing.assert_close(w[0], torch.tensor([0.5, 0.0, 0.5]))
    keep = torch.tensor([[True, True, True], [False, False, False]])
    assert torch.equal(_core.masked_softmax(logits, keep)[1], torch.zeros(3))


def test_core_check_tokens() -> None:
    assert _core.check_tokens(torch.tensor([0, 4]), "ids", 5) is not None
    for bad in (torch.tensor([-1, 0]), torch.tensor([5])):
        with pytest.raises(ValueError, match="ids"):
            _core.check_tokens(bad, "ids", 5)
    with pytest.raises(TypeError, match="ids"):
        _core.check_tokens(torch.tensor([0.0]), "ids", 5)


def test_no_module_imports_a_siblings_private_names() -> None:
    import ast
    from pathlib import Path

    import suma_lib.attention as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 1
                and node.module not in (None, "_core")
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, (
                    f"{path.name} imports private names of .{node.module}: {private}"
                )


# ----------------------------------------------------------------------------- issue 11 regressions
def test_scale_zero_with_huge_inputs_is_uniform() -> None:
    q, k = torch.full((2, 2), 2.0**70), torch.full((3, 2), 2.0**70)
    v = torch.arange(3.0).reshape(3, 1)
    torch.testing.assert_close(softmax_attention(q, k, v, scale=0.0), torch.full((2, 1), 1.0))


def test_zero_width_and_list_masks_raise_clearly() -> None:
    with pytest.raises(ValueError, match="d >= 1"):
        softmax_attention(torch.ones(2, 0), torch.ones(2, 0), torch.ones(2, 1))
    with pytest.raises(TypeError, match="mask"):
        softmax_attention(torch.ones(2, 2), torch.ones(2, 2), torch.ones(2, 1), mask=[[True, True]])
    with pytest.raises(TypeError, match="device"):
        softmax_attention(torch.ones(2, 2, device="meta"), torch.ones(2, 2), torch.ones(2, 1))


def test_weights_work_under_vmap() -> None:
    from torch.func import vmap

    g = torch.Generator().manual_seed(9)
    q, k = torch.randn(4, 3, 5, generator=g), torch.randn(6, 5, generator=g)
    torch.testing.assert_close(
        vmap(lambda row: attention_weights(row, k))(q), attention_weights(q, k)
    )


# ------------------------------------------------- issue 11: batch dimensions that do not broadcast
@pytest.mark.parametrize("bq, bk", [(2, 3), (0, 2), (3, 0)])
def test_qkv_batch_mismatch_is_a_clean_value_error(bq: int, bk: int) -> None:
    """Batch dims 2 vs 3 (or an empty batch against a full one) name the arguments, in every
    entry point that goes through the shared ``check_qkv``."""
    from suma_lib.attention import (
        entropy_invariant_attention,
        linear_attention,
        local_attention,
        residual_attention,
    )

    q, k, v = torch.randn(bq, 3, 4), torch.randn(bk, 3, 4), torch.randn(bk, 3, 2)
    calls = [
        lambda: softmax_attention(q, k, v),
        lambda: attention_weights(q, k),
        lambda: residual_attention(q, k, v),
        lambda: entropy_invariant_attention(q, k, v),
        lambda: local_attention(q, k, v, 1),
        lambda: linear_attention(q, k, v),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="do not broadcast"):
            call()
    with pytest.raises(ValueError, match="k .* and v .* do not broadcast"):
        softmax_attention(q, q, torch.randn(bq + 2, 3, 2))


def test_qkv_broadcasting_batches_still_work() -> None:
    q, k, v = torch.randn(2, 1, 3, 4), torch.randn(1, 5, 3, 4), torch.randn(1, 5, 3, 2)
    out = softmax_attention(q, k, v)
    ref = torch.softmax(q @ k.mT / 2, -1) @ v
    assert out.shape == (2, 5, 3, 2) and torch.allclose(out, ref, atol=1e-6)
