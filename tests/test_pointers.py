"""Tests of suma_lib.pointers against brute force written here (every span enumerated)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suma_lib import pointers as ptr


def brute_spans(ps, pe, ts, te):
    """The article's loop: each start above ts takes the first end above te at or after it."""
    out = []
    for i in range(len(ps)):
        if ps[i] > ts:
            for j in range(i, len(pe)):
                if pe[j] > te:
                    out.append((i, j))
                    break
    return out


def brute_best(a, b, L, mask):
    best, arg = -math.inf, (-1, -1)
    for i in range(len(a)):
        for j in range(len(b)):
            if i <= j < i + L and mask[i] and mask[j] and a[i] + b[j] > best:
                best, arg = a[i] + b[j], (i, j)
    return arg, best


@pytest.mark.parametrize("seed", range(20))
def test_decode_spans_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(3, 4, 2, 13, generator=g, dtype=torch.float64)
    ts, te = 0.6, 0.45
    ends = ptr.decode_spans(p[..., 0, :], p[..., 1, :], ts, te)
    assert ends.shape == (3, 4, 13) and ends.dtype == torch.int64
    got = ptr.span_list(ends)
    for a in range(3):
        for b in range(4):
            want = brute_spans(p[a, b, 0].tolist(), p[a, b, 1].tolist(), ts, te)
            assert got[a][b] == want


def test_nearest_end_all_patterns():
    n = 6
    for bits in itertools.product([False, True], repeat=2 * n):
        s = torch.tensor(bits[:n])
        e = torch.tensor(bits[n:])
        got = ptr.span_list(ptr.nearest_end(s, e))
        want = brute_spans(s.float().tolist(), e.float().tolist(), 0.5, 0.5)
        assert got == want


def test_span_round_trip_for_non_nested_spans():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 15))
        cuts = sorted(rng.choice(np.arange(n + 1), size=min(n + 1, 2 * int(rng.integers(0, 4))),
                                 replace=False).tolist())
        spans = [(cuts[k], cuts[k + 1] - 1) for k in range(0, len(cuts) - 1, 2)
                 if cuts[k + 1] - 1 >= cuts[k]]
        y = ptr.span_labels(spans, n)
        assert ptr.span_list(ptr.decode_spans(y[:, 0], y[:, 1])) == spans


def test_nested_spans_sharing_a_start_lose_the_longer():
    y = ptr.span_labels([(1, 2), (1, 4)], 6)
    assert ptr.span_list(ptr.decode_spans(y[:, 0], y[:, 1])) == [(1, 2)]


def test_triple_round_trip_and_extract():
    rng = np.random.default_rng(1)
    n, P = 12, 3
    checked = 0
    for _ in range(300):
        # subjects and, per subject and predicate, objects that do not overlap one another
        triples = set()
        for _k in range(int(rng.integers(1, 3))):
            s0 = int(rng.integers(0, n - 1))
            s = (s0, s0 + int(rng.integers(0, 2)))
            for p in range(P):
                if rng.random() < 0.5:
                    o0 = int(rng.integers(0, n - 2))
                    triples.add((*s, p, o0, o0 + int(rng.integers(0, 2))))
        triples = sorted(triples)
        subj_y, subjects, obj_y = ptr.triple_labels(triples, n, P)
        assert [tuple(x) for x in subjects.tolist()] == sorted({t[:2] for t in triples})
        # decode back only when same-kind spans neither nest nor share a start
        def clean(spans):
            return all(b[0] > a[1] or a[0] > b[1] for a, b in itertools.combinations(spans, 2))
        ok = clean(subjects.tolist()) and all(
            clean([t[3:] for t in triples if t[:2] == tuple(s) and t[2] == p])
            for s in subjects.tolist() for p in range(P))
        if not ok:
            continue
        checked += 1
        lookup = {tuple(s): k for k, s in enumerate(subjects.tolist())}

        def object_fn(subs, obj_y=obj_y, lookup=lookup):
            return torch.stack([obj_y[lookup[tuple(s)]] for s in subs.tolist()])

        assert ptr.extract_triples(subj_y, object_fn) == triples
        assert ptr.decode_triples(subjects, obj_y) == triples
    assert checked > 50


@pytest.mark.parametrize("seed", range(10))
def test_best_span_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(4, 9, generator=g, dtype=torch.float64)
    b = torch.randn(4, 9, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 9, generator=g) < 0.7
    mask[0] = False
    for L in (1, 3, 9):
        start, end, score = ptr.best_span(a, b, L, mask)
        for r in range(4):
            (i, j), best = brute_best(a[r].tolist(), b[r].tolist(), L, mask[r].tolist())
            assert (int(start[r]), int(end[r])) == (i, j)
            assert float(score[r]) == pytest.approx(best) if i >= 0 else score[r] == -math.inf


def test_best_span_softmax_invariance():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 7, generator=g), torch.randn(2, 7, generator=g)
    s1 = ptr.best_span(a, b, 4)[:2]
    s2 = ptr.best_span(a.log_softmax(-1), b.log_softmax(-1), 4)[:2]
    assert all(torch.equal(x, y) for x, y in zip(s1, s2, strict=True))


@pytest.mark.parametrize("power", [1.0, 2.0, 4.0])
def test_power_bce_matches_torch_on_the_powered_probability(power):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, generator=g, dtype=torch.float64) * 4
    t = (torch.rand(50, generator=g) < 0.3).double()
    want = F.binary_cross_entropy(torch.sigmoid(z) ** power, t, reduction="none")
    assert torch.allclose(ptr.power_bce(z, t, power), want, rtol=1e-9, atol=1e-12)


def test_power_bce_extremes_finite_with_gradients():
    z = torch.tensor([-1e30, -50.0, 0.0, 50.0, 1e30], requires_grad=True)
    for t in (torch.zeros(5), torch.ones(5)):
        loss = ptr.power_bce(z, t, 4.0)
        assert torch.isfinite(loss).all() and (loss <= 100).all()
        (gz,) = torch.autograd.grad(loss.sum(), z)
        assert torch.isfinite(gz).all()


def test_pointer_loss_reduction_and_mask():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 3, 2, generator=g)
    t = (torch.rand(2, 5, 3, 2, generator=g) < 0.2).float()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    per = F.binary_cross_entropy(torch.sigmoid(z) ** 4, t, reduction="none").mean(-1).sum(-1)
    want = per[mask].sum() / mask.sum()
    assert torch.allclose(ptr.pointer_loss(z, t, mask, power=4), want, atol=1e-6)
    assert ptr.pointer_loss(z, t, torch.zeros(2, 5, dtype=torch.bool)) == 0
    zs, ts = z[..., 0, :], t[..., 0, :]
    assert torch.allclose(ptr.pointer_loss(zs, ts), F.binary_cross_entropy_with_logits(zs, ts))


def test_conditional_layer_norm():
    cln = ptr.ConditionalLayerNorm(6, 4)
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 5, 6, generator=g), torch.randn(2, 4, generator=g)
    assert torch.allclose(cln(x, c), F.layer_norm(x, (6,), eps=1e-6), atol=1e-5)
    with torch.no_grad():
        cln.to_gamma.weight.normal_(generator=g)
        cln.to_beta.weight.normal_(generator=g)
    gamma = 1 + c @ cln.to_gamma.weight.T
    beta = c @ cln.to_beta.weight.T
    want = gamma[:, None] * F.layer_norm(x, (6,), eps=1e-6) + beta[:, None]
    assert torch.allclose(cln(x, c), want, atol=1e-5)
    assert torch.isfinite(cln(x * 1e30, c)).all()
    m = ptr.ConditionalLayerNorm(6, 4, device="meta")
    assert m(x.to("meta"), c.to("meta")).shape == (2, 5, 6)


def test_subject_vector():
    h = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    s = torch.tensor([[1, 3], [0, 0]])
    v = ptr.subject_vector(h, s)
    assert torch.equal(v[0], torch.cat([h[0, 1], h[0, 3]]))
    assert torch.equal(v[1], torch.cat([h[1, 0], h[1, 0]]))


def test_rematch_recovers_original_spelling():
    text = "Ｈéllo  WORLD,\tCafé"
    # a toy tokenizer: NFKC, lower case, strip accents, split on spaces and punctuation
    toks = ["hello", "world", ",", "cafe"]
    m = ptr.rematch(text, toks)
    pieces = [text[k[0]:k[-1] + 1] for k in m]
    assert pieces[1] == "WORLD" and pieces[2] == "," and pieces[3] == "Café"
    assert ptr.rematch("ab", ["[CLS]", "a", "##b", "[SEP]"]) == [[], [0], [1], []]


def test_meta_and_devices():
    s = torch.empty(2, 7, device="meta")
    assert ptr.decode_spans(s, s).shape == (2, 7)
    out = ptr.best_span(s, s, 3)
    assert [o.shape for o in out] == [(2,), (2,), (2,)]
    assert ptr.pointer_loss(torch.empty(2, 7, 2, device="meta"),
                            torch.empty(2, 7, 2, device="meta")).device.type == "meta"


def test_errors():
    p = torch.rand(5)
    with pytest.raises(ValueError, match="start_probs"):
        ptr.decode_spans(p * 2, p)
    with pytest.raises(ValueError, match="start_threshold"):
        ptr.decode_spans(p, p, 1.5)
    with pytest.raises(TypeError, match="start_probs"):
        ptr.decode_spans(p.tolist(), p)
    with pytest.raises(ValueError, match="max_length"):
        ptr.best_span(p, p, 0)
    with pytest.raises(ValueError, match="end_logits"):
        ptr.best_span(p, torch.rand(6), 2)
    with pytest.raises(ValueError, match="triples"):
        ptr.triple_labels([(0, 1, 0, 3, 2)], 5, 1)
    with pytest.raises(ValueError, match="predicate"):
        ptr.triple_labels([(0, 1, 4, 2, 3)], 5, 2)
    with pytest.raises(ValueError, match="labels"):
        ptr.power_bce(p, p * 3)
    with pytest.raises(ValueError, match="power"):
        ptr.power_bce(p, p, 0.0)
    with pytest.raises(TypeError, match="mask"):
        ptr.best_span(p, p, 2, mask=torch.ones(5))
    with pytest.raises(ValueError, match="subjects"):
        ptr.subject_vector(torch.rand(1, 4, 3), torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="not found"):
        ptr.rematch("abc", ["x"])
