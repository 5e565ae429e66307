"""Tests of suma_lib.perturbed: the impact matrix against a naive loop, trees against brute force."""

from __future__ import annotations

import pytest
import torch

from suma_lib import perturbed as P


class TinyEncoder(torch.nn.Module):
    """A random two-layer attention encoder: ids (B, L) -> hidden (B, L, d)."""

    def __init__(self, vocab: int = 12, d: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(vocab, d, generator=g))
        self.pos = torch.nn.Parameter(torch.randn(32, d, generator=g))
        self.w = torch.nn.Parameter(torch.randn(2, 3, d, d, generator=g) / d**0.5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb[ids] + self.pos[: ids.shape[-1]]
        for q, k, v in self.w:
            a = torch.softmax((h @ q) @ (h @ k).mT / h.shape[-1] ** 0.5, dim=-1)
            h = torch.tanh(h + a @ (h @ v))
        return h


def naive_impact(enc, ids, mask_id, spans):
    """N^2 separate passes: f(i, j) = |mean H(x \\ {e_i})[e_i] - mean H(x \\ {e_i, e_j})[e_i]|."""
    n = len(spans)

    def vec(masked, i):
        x = ids.clone()
        for m in masked:
            a, b = spans[m]
            x[a:b] = mask_id
        with torch.no_grad():
            h = enc(x[None])[0]
        a, b = spans[i]
        return h[a:b].mean(0)

    f = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        vi = vec([i], i)
        for j in range(n):
            if j != i:
                f[i, j] = float(torch.linalg.vector_norm(vi - vec([i, j], i)))
    return f


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_impact_matrix_matches_naive_loop(batch_size):
    enc = TinyEncoder().double()
    ids = torch.tensor([1, 4, 7, 3, 9, 5, 2, 8])
    spans = [(1, 2), (2, 4), (4, 5), (5, 7)]
    got = P.impact_matrix(enc, ids, 11, spans, batch_size=batch_size)
    torch.testing.assert_close(got, naive_impact(enc, ids, 11, spans), rtol=1e-10, atol=1e-12)
    adj = P.adjacent_impacts(enc, ids, 11, spans, batch_size=batch_size)
    torch.testing.assert_close(adj[:, 0], got.diagonal(1))
    torch.testing.assert_close(adj[:, 1], got.diagonal(-1))


def test_default_spans_are_tokens_and_pass_counts():
    enc = TinyEncoder().double()
    ids = torch.tensor([1, 4, 7, 3, 9])
    got = P.impact_matrix(enc, ids, 11)
    want = naive_impact(enc, ids, 11, [(p, p + 1) for p in range(5)])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    batch, index = P.masked_inputs(ids, 11)
    assert batch.shape == (15, 5) and index.shape == (15, 2)
    assert ((batch == 11).sum(1) == torch.where(index[:, 0] == index[:, 1], 1, 2)).all()
    batch, index = P.masked_inputs(ids, 11, pairs="adjacent")
    assert batch.shape == (9, 5)


def test_impact_matrix_on_meta():
    enc = TinyEncoder().to("meta")
    out = P.impact_matrix(enc, torch.tensor([1, 2, 3, 4]).to("meta"), 11, [(0, 1), (1, 3), (3, 4)])
    assert out.device.type == "meta" and out.shape == (3, 3)


def test_wordpiece_spans():
    toks = ["[CLS]", "un", "##su", "##per", "##vised", "token", "##s", "are", ".", "[SEP]"]
    assert P.wordpiece_spans(toks) == [(1, 5), (5, 7), (7, 8), (8, 9)]


def test_adjacent_relatedness_and_segment():
    f = torch.tensor([[0.0, 4, 0], [2, 0, 1], [0, 3, 0]])
    r = P.adjacent_relatedness(f)
    torch.testing.assert_close(r, torch.tensor([3.0, 2.0]))
    assert P.segment(r, 2.5) == [(0, 2), (2, 3)]
    assert P.segment(r, 2.0) == [(0, 3)]
    assert P.segment(r, 9.0) == [(0, 1), (1, 2), (2, 3)]
    assert P.segment(torch.zeros(0), 1.0) == [(0, 1)]


def naive_scores(f):
    """Eq. (3) of the article with explicit sums, 1-indexed k = 2..T."""
    t = f.shape[0]
    out = []
    for k in range(2, t + 1):
        a, b = range(1, k), range(k, t + 1)

        def block(rows, cols):
            return sum(float(f[i - 1, j - 1]) for i in rows for j in cols)

        out.append(
            block(a, a) / (k - 1) ** 2
            + block(b, b) / (t - k + 1) ** 2
            - block(a, b) / ((k - 1) * (t - k + 1))
            - block(b, a) / ((k - 1) * (t - k + 1))
        )
    return torch.tensor(out, dtype=torch.float64)


def test_split_scores_match_eq3():
    g = torch.Generator().manual_seed(1)
    for n in range(2, 9):
        f = torch.rand(n, n, generator=g, dtype=torch.float64)
        torch.testing.assert_close(P.split_scores(f), naive_scores(f))
    batch = torch.rand(3, 5, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(P.split_scores(batch)[1], naive_scores(batch[1]))
    huge = torch.rand(6, 6, generator=g) * 1e30
    assert torch.isfinite(P.split_scores(huge)).all()


def all_trees(lo, hi, form):
    """Every tree over units lo..hi-1 of the given shape, by enumeration."""
    if hi - lo == 1:
        yield lo
        return
    if hi - lo == 2:
        yield (lo, lo + 1)
        return
    if form == "binary":
        for k in range(lo + 1, hi):
            for left in all_trees(lo, k, form):
                for right in all_trees(k, hi, form):
                    yield (left, right)
    else:
        for k in range(lo + 1, hi - 1):
            for left in all_trees(lo, k, form):
                for right in all_trees(k + 1, hi, form):
                    yield (left, (k, right))


def locally_optimal(tree, f, form):
    """Every node's cut maximises eq. (3) on its own sub-matrix (the brute-force criterion)."""
    todo = [tree]
    while todo:
        t = todo.pop()
        leaves = _leaves(t)
        if len(leaves) < 3:
            continue
        lo, hi = leaves[0], leaves[-1] + 1
        size = len(_leaves(t[0]))  # units left of the cut
        s = naive_scores(f[lo:hi, lo:hi])
        allowed = s[: hi - lo - 2] if form == "article" else s
        if float(s[size - 1]) < float(allowed.max()) - 1e-12:
            return False
        todo += [t[0], t[1][1]] if form == "article" else [t[0], t[1]]
    return True


def _leaves(t):
    return [t] if isinstance(t, int) else _leaves(t[0]) + _leaves(t[1])


@pytest.mark.parametrize("form", ["article", "binary"])
def test_parse_tree_is_the_unique_locally_optimal_tree(form):
    g = torch.Generator().manual_seed(2)
    counts = {"article": [1, 1, 1, 2, 3, 6, 11], "binary": [1, 1, 2, 5, 14, 42, 132]}[form]
    for n in range(1, 8):
        trees = list(all_trees(0, n, form))
        assert len(trees) == counts[n - 1]
        for _ in range(5):
            f = torch.rand(n, n, generator=g, dtype=torch.float64).fill_diagonal_(0)
            if n < 3:
                assert P.parse_tree(f, form) == trees[0]
                continue
            good = [t for t in trees if locally_optimal(t, f, form)]
            assert good == [P.parse_tree(f, form)]


def test_parse_tree_recovers_a_planted_hierarchy():
    planted = (((0, 1), 2), ((3, (4, 5)), 6))
    depth = torch.zeros(7, 7, dtype=torch.float64)

    def mark(t, d):
        leaves = _leaves(t)
        for i in leaves:
            for j in leaves:
                depth[i, j] = d
        if not isinstance(t, int):
            mark(t[0], d + 1)
            mark(t[1], d + 1)

    mark(planted, 0)
    depth.fill_diagonal_(0)
    assert P.parse_tree(depth, "binary") == planted


def test_tree_helpers():
    tree = ((0, 1), (2, (3, 4)))
    assert P.tree_spans(tree) == [(0, 5), (0, 2), (2, 5), (3, 5)]
    assert P.tree_brackets(tree, list("abcde")) == "((a b) (c (d e)))"
    with pytest.raises(ValueError, match="consecutive"):
        P.tree_spans((1, 0))
    with pytest.raises(TypeError, match="tree"):
        P.tree_spans("ab")
    import matplotlib

    matplotlib.use("Agg")
    ax = P.plot_tree(tree, list("abcde"))
    assert ax is not None


def test_errors():
    enc = TinyEncoder()
    ids = torch.tensor([1, 2, 3])
    with pytest.raises(TypeError, match="encoder"):
        P.impact_matrix("no", ids, 11)
    with pytest.raises(TypeError, match="input_ids"):
        P.impact_matrix(enc, ids.float(), 11)
    with pytest.raises(ValueError, match="input_ids"):
        P.impact_matrix(enc, ids[None], 11)
    with pytest.raises(ValueError, match="spans"):
        P.impact_matrix(enc, ids, 11, [(0, 2), (1, 3)])
    with pytest.raises(ValueError, match="spans"):
        P.impact_matrix(enc, ids, 11, [(0, 4)])
    with pytest.raises(ValueError, match="batch_size"):
        P.impact_matrix(enc, ids, 11, batch_size=0)
    with pytest.raises(ValueError, match="encoder"):
        P.impact_matrix(lambda x: x.float(), ids, 11)
    with pytest.raises(ValueError, match="pairs"):
        P.masked_inputs(ids, 11, pairs="some")
    with pytest.raises(ValueError, match="square"):
        P.split_scores(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="finite"):
        P.parse_tree(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="form"):
        P.parse_tree(torch.zeros(3, 3), form="left")
    with pytest.raises(ValueError, match="threshold"):
        P.segment(torch.zeros(3), float("inf"))
    with pytest.raises(ValueError, match="meta"):
        P.parse_tree(torch.zeros(3, 3, device="meta"))
