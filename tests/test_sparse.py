"""Tests of suma_lib.attention.sparse: sparse masks, reachability and local attention."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.attention import (
    atrous_mask,
    fixed_mask,
    local_attention,
    local_mask,
    reachability,
    softmax_attention,
    strided_mask,
)


# ------------------------------------------------------------------- explicit references (Python
# loops)
def _ref(n: int, rule, causal: bool) -> np.ndarray:
    m = np.zeros((n, n), dtype=bool)
    for i, j in itertools.product(range(n), repeat=2):
        m[i, j] = rule(i, j) and (j <= i or not causal)
    return m


REFS = {
    "atrous": lambda n, k, causal: _ref(n, lambda i, j: (i - j) % k == 0, causal),
    "local": lambda n, k, causal: _ref(n, lambda i, j: abs(i - j) <= k, causal),
    "strided": lambda n, k, causal: _ref(
        n, lambda i, j: abs(i - j) < k or (i - j) % k == 0, causal
    ),
}
MASKS = {"atrous": atrous_mask, "local": local_mask, "strided": strided_mask}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(MASKS)), st.integers(0, 17), st.integers(1, 7), st.booleans())
def test_masks_match_explicit_loops(kind: str, n: int, k: int, causal: bool) -> None:
    got = MASKS[kind](n, k, causal)
    assert got.dtype == torch.bool and got.shape == (n, n)
    np.testing.assert_array_equal(got.numpy(), REFS[kind](n, k, causal))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 17), st.integers(1, 6), st.data(), st.booleans())
def test_fixed_mask_matches_explicit_loops(n: int, k: int, data, causal: bool) -> None:
    c = data.draw(st.integers(1, k))
    ref = _ref(n, lambda i, j: i // k == j // k or j % k >= k - c, causal)
    np.testing.assert_array_equal(fixed_mask(n, k, c, causal).numpy(), ref)


def test_local_window_zero_is_identity_and_atrous_one_is_full() -> None:
    assert torch.equal(local_mask(5, 0), torch.eye(5, dtype=torch.bool))
    assert atrous_mask(5, 1).all()
    assert torch.equal(atrous_mask(6, 1, causal=True), torch.ones(6, 6, dtype=torch.bool).tril())


@pytest.mark.parametrize("n,k", [(1, 1), (7, 3), (12, 4), (13, 5), (30, 7)])
def test_mask_counts_match_closed_forms(n: int, k: int) -> None:
    s = n % k
    assert int(atrous_mask(n, k).sum()) * k == n * n + s * (k - s)
    m = min(k, n - 1)
    assert int(local_mask(n, k).sum()) == (2 * m + 1) * n - m * (m + 1)
    assert 2 * int(local_mask(n, k, causal=True).sum()) == 2 * (m + 1) * n - m * (m + 1)
    # strided = local(k-1) | atrous(k), which share only the diagonal
    assert (
        int(strided_mask(n, k).sum())
        == int(local_mask(n, k - 1).sum()) + int(atrous_mask(n, k).sum()) - n
    )


# -----------------------------------------------------------------------------------------
# reachability
def _paths(masks: list[np.ndarray]) -> np.ndarray:
    """Reference by explicit set propagation: which inputs reach each output."""
    n = masks[0].shape[0]
    reach = [{j for j in range(n) if masks[0][i, j]} for i in range(n)]
    for m in masks[1:]:
        reach = [set().union(*[reach[t] for t in range(n) if m[i, t]]) for i in range(n)]
    out = np.zeros((n, n), dtype=bool)
    for i, js in enumerate(reach):
        out[i, list(js)] = True
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 14), st.integers(0, 4), st.integers(1, 6), st.booleans(), st.booleans())
def test_reachability_matches_path_enumeration(
    n: int, k: int, s: int, causal: bool, residual: bool
) -> None:
    masks = [local_mask(n, k, causal), atrous_mask(n, s, causal)]
    np_masks = [m.numpy() | (np.eye(n, dtype=bool) if residual else False) for m in masks]
    np.testing.assert_array_equal(reachability(masks, residual=residual).numpy(), _paths(np_masks))


def test_reachability_composition_rules() -> None:
    n = 20
    # two local layers of half-width k form one local layer of half-width 2k
    assert torch.equal(reachability([local_mask(n, 3)] * 2), local_mask(n, 6))
    # atrous is an equivalence relation: composing it changes nothing
    assert torch.equal(reachability([atrous_mask(n, 4)] * 3), atrous_mask(n, 4))
    # a single mask is returned as a copy
    m = local_mask(n, 2)
    r = reachability([m])
    assert torch.equal(r, m) and r.data_ptr() != m.data_ptr()


def test_reachability_batched_masks_broadcast() -> None:
    masks = torch.stack([local_mask(8, 1), atrous_mask(8, 2)])  # (2, 8, 8)
    out = reachability([masks, masks])
    assert out.shape == (2, 8, 8)
    assert torch.equal(out[0], local_mask(8, 2))


# ---------------------------------------------------------------------------------------- local
# attention
def _qkv(shape_q, dv, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape_q, generator=g, dtype=dtype)
    k = torch.randn(*shape_q, generator=g, dtype=dtype)
    v = torch.randn(*shape_q[:-1], dv, generator=g, dtype=dtype)
    return q, k, v


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 9), st.booleans(), st.integers(1, 5))
def test_local_attention_equals_masked_exact_attention(
    n: int, window: int, causal: bool, d: int
) -> None:
    q, k, v = _qkv((2, 3, n, d), 4)
    mask = local_mask(n, window, causal)
    got = local_attention(q, k, v, window, causal)
    torch.testing.assert_close(got, softmax_attention(q, k, v, mask=mask), rtol=1e-12, atol=1e-12)
    # independent peer: torch's own kernel with the boolean mask
    torch.testing.assert_close(
        got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=1e-12, atol=1e-12
    )


def test_local_attention_scale_and_broadcast_leading_dims() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(4, 1, 9, 5, generator=g, dtype=torch.float64)
    k = torch.randn(1, 2, 9, 5, generator=g, dtype=torch.float64)
    v = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    got = local_attention(q, k, v, 2, scale=0.3)
    assert got.shape == (4, 2, 9, 3)
    ref = softmax_attention(q, k, v, mask=local_mask(9, 2), scale=0.3)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_local_attention_never_forms_the_n_by_n_matrix(causal: bool) -> None:
    # n = 4096 with window 2 would need 16M scores for the dense form; the blocks need 3w (2w
    # causal) per query.
    n, w, d = 4096, 2, 4
    q, k, v = (torch.randn(n, d, device="meta") for _ in range(3))
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = local_attention(q, k, v, w, causal=causal)
    assert out.shape == (n, d)
    # Two block products of (2 or 3) w keys per query, 2 flops per multiply-add: 4 * (2 or 3) * n *
    # w * d.
    assert counter.get_total_flops() == 4 * (2 if causal else 3) * n * w * d
    assert counter.get_total_flops() < 4 * n * n * d / 100


def test_local_attention_gradients() -> None:
    q, k, v = _qkv((1, 6, 3), 2)
    for t in (q, k, v):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: local_attention(a, b, c, 2, causal=True), (q, k, v)
    )


def test_local_attention_extreme_inputs() -> None:
    # Overflowing logits (1e30 * 1e30 in float32) give the softmax's limit, not NaN.
    q = torch.full((4, 3), 1e30)
    v = torch.arange(8.0).reshape(4, 2)
    out = local_attention(q, q, v, 1)
    assert torch.isfinite(out).all()
    # every logit in each band is +inf: equal weights over the band
    ref = torch.stack([v[max(0, i - 1) : i + 2].mean(0) for i in range(4)])
    torch.testing.assert_close(out, ref)
    huge_v = torch.full((5, 2), 1e30)
    assert torch.isfinite(local_attention(torch.randn(5, 2), torch.randn(5, 2), huge_v, 1)).all()


def test_empty_sequence() -> None:
    q = torch.randn(3, 0, 4)
    assert local_attention(q, q, torch.randn(3, 0, 2), 2).shape == (3, 0, 2)
    assert atrous_mask(0, 2).shape == (0, 0)


def test_meta_device() -> None:
    for m in (
        atrous_mask(6, 2, device="meta"),
        local_mask(6, 2, device="meta"),
        strided_mask(6, 2, device="meta"),
        fixed_mask(6, 2, device="meta"),
    ):
        assert m.device.type == "meta" and m.shape == (6, 6) and m.dtype == torch.bool
    m = local_mask(6, 1, device="meta")
    assert reachability([m, m]).device.type == "meta"
    q = torch.randn(2, 6, 4, device="meta")
    assert local_attention(q, q, q, 2, causal=True).device.type == "meta"


# ------------------------------------------------------------------------------------------------
# errors
def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="n must be"):
        local_mask(-1, 2)
    with pytest.raises(ValueError, match="k must be"):
        atrous_mask(5, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        strided_mask(5, 2.0)
    with pytest.raises(ValueError, match="c must be"):
        fixed_mask(5, 2, c=3)
    with pytest.raises(TypeError, match="causal"):
        local_mask(5, 1, causal=1)
    with pytest.raises(TypeError, match="device"):
        local_mask(5, 1, device=3.0)
    q = torch.randn(5, 4)
    with pytest.raises(ValueError, match="window"):
        local_attention(q, q, q, -1)
    with pytest.raises(ValueError, match="same length"):
        local_attention(q, torch.randn(6, 4), torch.randn(6, 4), 1)
    with pytest.raises(TypeError, match="q must have a floating-point"):
        local_attention(q.long(), q, q, 1)
    with pytest.raises(TypeError, match="masks"):
        reachability(local_mask(3, 1))
    with pytest.raises(TypeError, match=r"masks\[1\] must be a boolean"):
        reachability([local_mask(3, 1), torch.ones(3, 3)])
    with pytest.raises(ValueError, match=r"masks\[1\] must be square"):
        reachability([local_mask(3, 1), local_mask(4, 1)])


def test_local_attention_at_overflow_equals_masked_softmax_attention() -> None:
    """Issue 11: q.k overflows float32 (inf - inf inside the dot product)."""
    q = torch.full((2, 2), 1e20)
    k = torch.tensor([[-1e20, 1e20], [1e20, 1e20]])
    v = torch.ones(2, 1)
    out = local_attention(q, k, v, window=0)
    torch.testing.assert_close(out, softmax_attention(q, k, v, mask=local_mask(2, 0)))
    torch.testing.assert_close(out, torch.ones(2, 1))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 40, 4, generator=g) * 1e25, torch.randn(2, 40, 4, generator=g) * 1e25
    v = torch.randn(2, 40, 3, generator=g)
    for causal in (False, True):
        band = local_attention(q, k, v, 3, causal=causal)
        assert torch.isfinite(band).all()
        torch.testing.assert_close(band, softmax_attention(q, k, v, mask=local_mask(40, 3, causal)))


def test_reachability_rejects_masks_on_two_devices() -> None:
    cpu = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(TypeError, match="masks\\[1\\]"):
        reachability([cpu, cpu.to("meta")])


# ------------------------------------------------------- issue 11: bad device strings and numbers
@pytest.mark.parametrize(
    "bad, err", [("gpu0", ValueError), (1.5, TypeError), ("cuda:99", ValueError)]
)
def test_mask_builders_check_the_device(bad, err) -> None:
    from suma_lib.attention import (
        atrous_mask,
        combine_masks,
        diagonal_free_mask,
        fixed_mask,
        local_mask,
        strided_mask,
    )
    from suma_lib.tasks import markov_chain, partner_task

    calls = [
        lambda: atrous_mask(4, 2, device=bad),
        lambda: fixed_mask(4, 2, device=bad),
        lambda: local_mask(4, 1, device=bad),
        lambda: strided_mask(4, 2, device=bad),
        lambda: diagonal_free_mask(4, device=bad),
        lambda: combine_masks(None, True, 3, 3, device=bad),
        lambda: markov_chain(3, device=bad),
        lambda: partner_task(2, 2, 3, device=bad),
    ]
    for call in calls:
        with pytest.raises(err, match="device"):
            call()
    assert local_mask(3, 1, device="meta").device.type == "meta"
    assert torch.equal(local_mask(3, 0, device=torch.device("cpu")), torch.eye(3, dtype=torch.bool))
