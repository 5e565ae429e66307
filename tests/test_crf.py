"""Tests of suma_lib.crf: brute-force enumeration, pytorch-crf as a peer, masks, extremes."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib import crf as C

torchcrf = pytest.importorskip("torchcrf")

D = torch.float64


def make(B=3, n=4, K=3, seed=0, dtype=D, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(B, n, K, generator=g, dtype=dtype) * scale
    G = torch.randn(K, K, generator=g, dtype=dtype) * scale
    a = torch.randn(K, generator=g, dtype=dtype)
    b = torch.randn(K, generator=g, dtype=dtype)
    return e, G, a, b


def ragged_mask(B, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, n + 1, (B,), generator=g)
    lengths[0] = n
    return torch.arange(n)[None, :] < lengths[:, None]


def enumerate_scores(e, G, a, b, L):
    """Every label sequence of length L and its score, written out term by term (one sequence)."""
    K = e.shape[-1]
    out = {}
    for y in itertools.product(range(K), repeat=L):
        s = e[0, y[0]] + sum(G[y[k - 1], y[k]] + e[k, y[k]] for k in range(1, L))
        if a is not None:
            s = s + a[y[0]]
        if b is not None:
            s = s + b[y[-1]]
        out[y] = s
    return out


def enumerate_memm(e, G, L, forward=True):
    """MEMM probabilities of every sequence of length L, from explicit per-step softmaxes."""
    K = e.shape[-1]
    out = {}
    for y in itertools.product(range(K), repeat=L):
        if forward:
            lp = torch.log_softmax(e[0], 0)[y[0]]
            for k in range(1, L):
                lp = lp + torch.log_softmax(G[y[k - 1], :] + e[k], 0)[y[k]]
        else:
            lp = torch.log_softmax(e[L - 1], 0)[y[L - 1]]
            for k in range(L - 1, 0, -1):
                lp = lp + torch.log_softmax(G[:, y[k]] + e[k - 1], 0)[y[k - 1]]
        out[y] = lp
    return out


@pytest.mark.parametrize("use_ab", [True, False])
def test_crf_against_enumeration(use_ab):
    e, G, a, b = make(B=4, n=4, K=3, seed=1)
    if not use_ab:
        a = b = None
    mask = ragged_mask(4, 4, seed=2)
    tags = torch.randint(0, 3, (4, 4), generator=torch.Generator().manual_seed(3))
    logz = C.crf_log_partition(e, G, a, b, mask)
    ll = C.crf_log_likelihood(e, tags, G, a, b, mask)
    path, best = C.crf_viterbi(e, G, a, b, mask)
    for r in range(4):
        L = int(mask[r].sum())
        sc = enumerate_scores(e[r], G, a, b, L)
        ref_z = torch.logsumexp(torch.stack(list(sc.values())), 0)
        torch.testing.assert_close(logz[r], ref_z)
        y = tuple(tags[r, :L].tolist())
        torch.testing.assert_close(ll[r], sc[y] - ref_z)
        arg = max(sc, key=lambda t: float(sc[t]))
        assert tuple(path[r, :L].tolist()) == arg
        assert (path[r, L:] == -1).all()
        torch.testing.assert_close(best[r], sc[arg])


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_memm_against_enumeration(direction):
    e, G, _, _ = make(B=3, n=4, K=3, seed=4)
    mask = ragged_mask(3, 4, seed=5)
    for r in range(3):
        L = int(mask[r].sum())
        ref = enumerate_memm(e[r], G, L, forward=direction == "forward")
        ys = list(ref)
        tags = torch.tensor([list(y) + [0] * (4 - L) for y in ys])
        got = C.memm_log_likelihood(
            e[r].expand(len(ys), 4, 3),
            tags,
            G,
            mask=mask[r].expand(len(ys), 4),
            direction=direction,
        )
        torch.testing.assert_close(got, torch.stack([ref[y] for y in ys]))
        torch.testing.assert_close(
            torch.logsumexp(got, 0), torch.zeros((), dtype=D), atol=1e-12, rtol=0
        )
        path, lp = C.memm_viterbi(e[r : r + 1], G, mask=mask[r : r + 1], direction=direction)
        arg = max(ref, key=lambda t: float(ref[t]))
        assert tuple(path[0, :L].tolist()) == arg
        torch.testing.assert_close(lp[0], ref[arg])


def test_bimemm_is_mean_and_its_decoding_is_argmax():
    e, G, a, b = make(B=2, n=3, K=3, seed=6)
    ys = list(itertools.product(range(3), repeat=3))
    tags = torch.tensor(ys)
    for r in range(2):
        x = e[r].expand(len(ys), 3, 3)
        bi = C.bimemm_log_likelihood(x, tags, G, a, b)
        f = C.memm_log_likelihood(x, tags, G, a, b, direction="forward")
        bk = C.memm_log_likelihood(x, tags, G, a, b, direction="backward")
        torch.testing.assert_close(bi, 0.5 * (f + bk))
        path, lp = C.memm_viterbi(e[r : r + 1], G, a, b, direction="both")
        i = int(bi.argmax())
        assert tuple(path[0].tolist()) == ys[i]
        torch.testing.assert_close(lp[0], bi[i])


def test_low_rank_matches_full():
    e, _, a, b = make(B=3, n=5, K=6, seed=7)
    g = torch.Generator().manual_seed(8)
    L, R = torch.randn(6, 2, generator=g, dtype=D), torch.randn(6, 2, generator=g, dtype=D)
    mask = ragged_mask(3, 5, seed=9)
    tags = torch.randint(0, 6, (3, 5), generator=g)
    full = C.low_rank_transitions(L, R)
    for d in ("forward", "backward"):
        torch.testing.assert_close(
            C.memm_log_likelihood(e, tags, (L, R), a, b, mask, d),
            C.memm_log_likelihood(e, tags, full, a, b, mask, d),
        )
    torch.testing.assert_close(
        C.bimemm_log_likelihood(e, tags, (L, R), a, b, mask),
        C.bimemm_log_likelihood(e, tags, full, a, b, mask),
    )
    assert torch.equal(
        C.memm_viterbi(e, (L, R), a, b, mask, "both")[0],
        C.memm_viterbi(e, full, a, b, mask, "both")[0],
    )


def peer(G, a, b):
    K = G.shape[0]
    m = torchcrf.CRF(K, batch_first=True).to(G.dtype)
    with torch.no_grad():
        m.transitions.copy_(G)
        m.start_transitions.copy_(a)
        m.end_transitions.copy_(b)
    return m


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_against_pytorch_crf(dtype):
    B, n, K = 8, 12, 5
    e, G, a, b = make(B, n, K, seed=10, dtype=dtype, scale=2.0)
    mask = ragged_mask(B, n, seed=11)
    tags = torch.randint(0, K, (B, n), generator=torch.Generator().manual_seed(12))
    ref = peer(G, a, b)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else {}
    torch.testing.assert_close(
        C.crf_log_likelihood(e, tags, G, a, b, mask),
        ref(e, tags, mask, reduction="none").detach(),
        **tol,
    )
    path = C.crf_viterbi(e, G, a, b, mask)[0]
    assert [row[row >= 0].tolist() for row in path] == ref.decode(e, mask)
    # zero start/end scores = no start/end scores
    z = torch.zeros(K, dtype=dtype)
    ref0 = peer(G, z, z)
    torch.testing.assert_close(
        C.crf_log_likelihood(e, tags, G, mask=mask),
        ref0(e, tags, mask, reduction="none").detach(),
        **tol,
    )


def test_module_matches_functions_and_peer_gradients():
    K = 4
    m = C.CRF(K, generator=torch.Generator().manual_seed(0), dtype=D)
    e, _, _, _ = make(3, 6, K, seed=13)
    e.requires_grad_(True)
    mask = ragged_mask(3, 6, seed=14)
    tags = torch.randint(0, K, (3, 6), generator=torch.Generator().manual_seed(15))
    ll = m(e, tags, mask)
    ref = peer(m.transitions.detach(), m.start.detach(), m.end.detach())
    e2 = e.detach().clone().requires_grad_(True)
    rl = ref(e2, tags, mask, reduction="none")
    torch.testing.assert_close(ll, rl)
    ll.sum().backward()
    rl.sum().backward()
    torch.testing.assert_close(e.grad, e2.grad)
    torch.testing.assert_close(m.transitions.grad, ref.transitions.grad)
    assert m.decode(e.detach(), mask).shape == (3, 6)
    assert m.memm_decode(e.detach(), mask, "both").shape == (3, 6)
    assert m.bimemm_log_likelihood(e, tags, mask).shape == (3,)
    low = C.CRF(K, rank=2, dtype=D)
    assert sum(p.numel() for p in low.parameters()) == 2 * K * 2 + 2 * K
    assert low.transition_matrix().shape == (K, K)
    assert low(e, tags, mask).shape == (3,)


def test_leading_batch_dims():
    e, G, a, b = make(6, 4, 3, seed=16)
    tags = torch.randint(0, 3, (6, 4), generator=torch.Generator().manual_seed(17))
    flat = C.crf_log_likelihood(e, tags, G, a, b)
    nested = C.crf_log_likelihood(e.reshape(2, 3, 4, 3), tags.reshape(2, 3, 4), G, a, b)
    torch.testing.assert_close(nested.reshape(-1), flat)
    p2 = C.crf_viterbi(e.reshape(2, 3, 4, 3), G, a, b)[0]
    assert torch.equal(p2.reshape(6, 4), C.crf_viterbi(e, G, a, b)[0])
    mb = C.memm_log_likelihood(
        e.reshape(2, 3, 4, 3), tags.reshape(2, 3, 4), G, a, b, direction="backward"
    )
    torch.testing.assert_close(
        mb.reshape(-1), C.memm_log_likelihood(e, tags, G, a, b, direction="backward")
    )


def test_padding_does_not_matter():
    e, G, a, b = make(4, 6, 3, seed=18)
    mask = ragged_mask(4, 6, seed=19)
    tags = torch.randint(0, 3, (4, 6), generator=torch.Generator().manual_seed(20))
    e2 = torch.where(mask[..., None], e, torch.full_like(e, 1e6))
    t2 = torch.where(mask, tags, torch.full_like(tags, 99))
    torch.testing.assert_close(
        C.crf_log_likelihood(e, tags, G, a, b, mask), C.crf_log_likelihood(e2, t2, G, a, b, mask)
    )
    torch.testing.assert_close(
        C.bimemm_log_likelihood(e, tags, G, a, b, mask),
        C.bimemm_log_likelihood(e2, t2, G, a, b, mask),
    )
    assert torch.equal(C.crf_viterbi(e, G, a, b, mask)[0], C.crf_viterbi(e2, G, a, b, mask)[0])
    for r in range(4):  # each row alone, unpadded
        L = int(mask[r].sum())
        torch.testing.assert_close(
            C.crf_log_partition(e, G, a, b, mask)[r],
            C.crf_log_partition(e[r : r + 1, :L], G, a, b)[0],
        )


@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_extreme_scores_finite(scale):
    e, G, a, b = make(3, 5, 4, seed=21, dtype=torch.float32)
    e = (e * scale).requires_grad_(True)
    Gs = (G * scale).requires_grad_(True)
    mask = ragged_mask(3, 5, seed=22)
    tags = torch.randint(0, 4, (3, 5), generator=torch.Generator().manual_seed(23))
    for fn in (
        lambda: C.crf_log_likelihood(e, tags, Gs, a, b, mask),
        lambda: C.bimemm_log_likelihood(e, tags, Gs, a, b, mask),
    ):
        e.grad = Gs.grad = None
        out = fn()
        assert torch.isfinite(out).all() and (out <= 0).all()
        out.sum().backward()
        assert torch.isfinite(e.grad).all() and torch.isfinite(Gs.grad).all()
    path, best = C.crf_viterbi(e.detach(), Gs.detach(), a, b, mask)
    assert torch.isfinite(best).all()
    # with huge scores the best path is the max-score path: its log-likelihood is about 0 relative
    # to scale
    ll = C.crf_log_likelihood(e.detach(), path.clamp(min=0), Gs.detach(), a, b, mask)
    assert (ll.abs() <= 1e-5 * scale).all()


def test_single_step_and_single_label():
    e, G, a, b = make(2, 1, 3, seed=24)
    tags = torch.tensor([[0], [2]])
    ref = torch.log_softmax(e[:, 0] + a + b, -1).gather(-1, tags).squeeze(-1)
    torch.testing.assert_close(C.crf_log_likelihood(e, tags, G, a, b), ref)
    e1 = torch.randn(2, 3, 1, dtype=D)
    assert torch.allclose(
        C.crf_log_likelihood(e1, torch.zeros(2, 3, dtype=torch.long), torch.zeros(1, 1, dtype=D)),
        torch.zeros(2, dtype=D),
    )


def test_meta_device_shapes():
    e = torch.empty(2, 3, 7, 5, device="meta")
    G = torch.empty(5, 5, device="meta")
    tags = torch.empty(2, 3, 7, dtype=torch.long, device="meta")
    mask = torch.empty(2, 3, 7, dtype=torch.bool, device="meta")
    assert C.crf_log_likelihood(e, tags, G, mask=mask).shape == (2, 3)
    assert C.crf_viterbi(e, G, mask=mask)[0].shape == (2, 3, 7)
    L = torch.empty(5, 2, device="meta")
    assert C.bimemm_log_likelihood(e, tags, (L, L), mask=mask).shape == (2, 3)
    assert C.memm_viterbi(e, (L, L), mask=mask, direction="both")[0].shape == (2, 3, 7)
    m = C.CRF(5, device="meta")
    assert m(e, tags, mask).device.type == "meta"


def test_validation_errors():
    e, G, a, b = make(2, 3, 3)
    tags = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="emissions"):
        C.crf_log_likelihood(e.long(), tags, G)
    with pytest.raises(ValueError, match="emissions"):
        C.crf_log_partition(e[:, :0], G)
    with pytest.raises(ValueError, match="emissions"):
        C.crf_log_partition(torch.full_like(e, float("nan")), G)
    with pytest.raises(ValueError, match="transitions"):
        C.crf_log_partition(e, G[:2])
    with pytest.raises(ValueError, match="transitions"):
        C.crf_log_partition(e, G.clone().fill_(float("-inf")))
    with pytest.raises(TypeError, match="transitions"):
        C.crf_log_partition(e, G.float())
    with pytest.raises(ValueError, match="start"):
        C.crf_log_partition(e, G, a[:2])
    with pytest.raises(ValueError, match="tags"):
        C.crf_log_likelihood(e, tags + 3, G)
    with pytest.raises(TypeError, match="tags"):
        C.crf_log_likelihood(e, tags.double(), G)
    with pytest.raises(ValueError, match="mask"):
        C.crf_log_partition(e, G, mask=torch.tensor([[0, 1, 1], [1, 1, 1]]).bool())
    with pytest.raises(ValueError, match="mask"):
        C.crf_log_partition(e, G, mask=torch.tensor([[1, 0, 1], [1, 1, 1]]).bool())
    with pytest.raises(ValueError, match="mask"):
        C.crf_log_partition(e, G, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        C.crf_log_partition(e, G, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="direction"):
        C.memm_log_likelihood(e, tags, G, direction="sideways")
    with pytest.raises(TypeError, match="transitions"):
        C.crf_log_partition(e, (G, G))
    with pytest.raises(ValueError, match="transitions"):
        C.memm_log_likelihood(e, tags, (torch.zeros(3, 2, dtype=D), torch.zeros(3, 1, dtype=D)))
    with pytest.raises(ValueError, match="num_tags"):
        C.CRF(0)
    # integer 0/1 masks are accepted
    m = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(
        C.crf_log_partition(e, G, mask=m), C.crf_log_partition(e, G, mask=m.bool())
    )


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    K=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
)
def test_hypothesis_partition_and_normalisation(n, K, seed, scale):
    e, G, a, b = make(1, n, K, seed=seed, scale=scale)
    sc = enumerate_scores(e[0], G, a, b, n)
    ref = torch.logsumexp(torch.stack(list(sc.values())), 0)
    torch.testing.assert_close(C.crf_log_partition(e, G, a, b)[0], ref)
    ys = torch.tensor(list(sc))
    x = e.expand(len(ys), n, K)
    for fn in (
        lambda: C.crf_log_likelihood(x, ys, G, a, b),
        lambda: C.memm_log_likelihood(x, ys, G, a, b),
        lambda: C.memm_log_likelihood(x, ys, G, a, b, direction="backward"),
    ):
        torch.testing.assert_close(
            torch.logsumexp(fn(), 0), torch.zeros((), dtype=D), atol=1e-9, rtol=0
        )
