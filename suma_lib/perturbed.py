"""Perturbed Masking: a token-token impact matrix from a masked encoder, and what it parses.

Wu et al. (ACL 2020, arXiv:2004.14786) probe a pretrained encoder ``H`` without training anything:
mask unit :math:`e_i` of a sentence, then mask :math:`e_j` as well, and measure how far the vector
of :math:`e_i` moves,

.. math::

    f(e_i, e_j) = \\bigl\\lVert \\bar H(x \\setminus \\{e_i\\})_i
                 - \\bar H(x \\setminus \\{e_i, e_j\\})_i \\bigr\\rVert_2 ,
    \\qquad f(e_i, e_i) = 0,

where a unit :math:`e_i` is a span of tokens (one token, or the word pieces of a word), masking it
replaces every token of the span by ``[MASK]``, and :math:`\\bar H(\\cdot)_i` averages the encoder's
output vectors over the span. The impact matrix :math:`F_{ij} = f(e_i, e_j)` gives:

* a segmentation (Su's rule, kexue.fm/archives/7476): join neighbours whose symmetric relatedness
  :math:`r_i = \\tfrac12 [f(e_i, e_{i+1}) + f(e_{i+1}, e_i)]` reaches a threshold, cut elsewhere;
* a binary tree by recursive splitting: at each node pick the split ``k`` that maximises the mean
  impact inside the two blocks minus the mean impact between them (:func:`split_scores`), then recurse.

The masked set :math:`\\{e_i, e_j\\}` is unordered, so one forward pass of
:math:`x \\setminus \\{e_i, e_j\\}` serves both :math:`f(e_i, e_j)` and :math:`f(e_j, e_i)`: the matrix
needs :math:`N(N+1)/2` passes (``N`` single masks and :math:`N(N-1)/2` pairs), not :math:`N^2`,
and the segmentation needs only the :math:`2N - 1` passes of the single and adjacent masks.

Chapter: notebooks/perturbed-masking.md
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

import torch

from ._validation import check_choice, check_float, check_index_range, check_int, check_tensor

__all__ = [
    "wordpiece_spans",
    "masked_inputs",
    "impact_matrix",
    "adjacent_impacts",
    "adjacent_relatedness",
    "segment",
    "split_scores",
    "parse_tree",
    "tree_spans",
    "tree_brackets",
    "plot_tree",
]

Tree = Union[int, tuple]


# ------------------------------------------------------------------------------------ inputs
def wordpiece_spans(
    tokens: Sequence[str], special: Sequence[str] = ("[CLS]", "[SEP]", "[PAD]")
) -> list[tuple[int, int]]:
    """Group WordPiece tokens into words: a token starting with ``##`` continues the previous word.

    Parameters
    ----------
    tokens : sequence of str
        The tokenizer's tokens of one sentence, special tokens included.
    special : sequence of str
        Tokens that belong to no word (skipped).

    Returns
    -------
    list of (start, end)
        Half-open token ranges, one per word, in order.

    Chapter: notebooks/perturbed-masking.md
    """
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be a sequence of str")
    spans: list[tuple[int, int]] = []
    for p, tok in enumerate(tokens):
        if tok in special:
            continue
        if tok.startswith("##") and spans and spans[-1][1] == p:
            spans[-1] = (spans[-1][0], p + 1)
        else:
            spans.append((p, p + 1))
    return spans


def _check_spans(spans: Any, length: int) -> list[tuple[int, int]]:
    if spans is None:
        return [(p, p + 1) for p in range(length)]
    if isinstance(spans, (str, torch.Tensor)) or not isinstance(spans, Sequence):
        raise TypeError("spans must be a sequence of (start, end) pairs of ints")
    out: list[tuple[int, int]] = []
    for s in spans:
        if not isinstance(s, Sequence) or len(s) != 2:
            raise TypeError("spans must be a sequence of (start, end) pairs of ints")
        a = check_int(s[0], "spans start", low=0)
        b = check_int(s[1], "spans end", high=length)
        if b <= a:
            raise ValueError(f"spans: each span must be non-empty (start < end), got {(a, b)}")
        if out and a < out[-1][1]:
            raise ValueError("spans must be in increasing order and must not overlap")
        out.append((a, b))
    if not out:
        raise ValueError("spans must hold at least one span")
    return out


def _check_ids(input_ids: Any, mask_id: Any) -> tuple[torch.Tensor, int]:
    ids = check_index_range(input_ids, "input_ids", min_dim=1)
    if ids.dim() != 1:
        raise ValueError(f"input_ids must be 1-D (one sentence), got shape {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError("input_ids must not be empty")
    return ids, check_int(mask_id, "mask_id", low=0)


def _pair_list(n: int, pairs: str) -> list[tuple[int, int]]:
    single = [(i, i) for i in range(n)]
    if pairs == "all":
        return single + [(i, j) for i in range(n) for j in range(i + 1, n)]
    return single + [(i, i + 1) for i in range(n - 1)]


def masked_inputs(
    input_ids: torch.Tensor,
    mask_id: int,
    spans: Sequence[tuple[int, int]] | None = None,
    pairs: str = "all",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct masked copies of a sentence that the impact matrix needs.

    Row ``r`` of the batch is :math:`x \\setminus \\{e_i, e_j\\}` for ``(i, j) = index[r]``; a row with
    ``i == j`` masks one unit only. ``pairs="all"`` lists the ``N`` single masks, then the
    :math:`N(N-1)/2` unordered pairs ``i < j``: :math:`N(N+1)/2` rows. ``pairs="adjacent"`` lists the
    single masks and the ``N - 1`` neighbours ``(i, i+1)``: :math:`2N - 1` rows.

    Parameters
    ----------
    input_ids : torch.Tensor
        ``(L,)`` integer token ids of one sentence (special tokens included).
    mask_id : int
        The id of the ``[MASK]`` token.
    spans : sequence of tuple, optional
        ``(start, end)`` pairs: half-open token ranges of the ``N`` units, increasing and disjoint
        (default: every token).
    pairs : {"all", "adjacent"}
        Which pairs to mask.

    Returns
    -------
    (batch, index)
        ``batch`` of shape ``(P, L)`` (same dtype and device as ``input_ids``) and ``index`` of shape
        ``(P, 2)`` (int64, on the same device).

    Chapter: notebooks/perturbed-masking.md
    """
    ids, mask_id = _check_ids(input_ids, mask_id)
    spans = _check_spans(spans, ids.shape[0])
    pairs = check_choice(pairs, "pairs", ("all", "adjacent"))
    plist = _pair_list(len(spans), pairs)
    member = torch.zeros(len(spans), ids.shape[0], dtype=torch.bool, device=ids.device)
    for n, (a, b) in enumerate(spans):
        member[n, a:b] = True
    index = torch.tensor(plist, dtype=torch.long, device=ids.device)
    masked = member[index[:, 0]] | member[index[:, 1]]  # (P, L)
    batch = torch.where(masked, torch.full_like(ids, mask_id), ids.expand(len(plist), -1))
    return batch, index


def _run_pairs(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    input_ids: Any,
    mask_id: Any,
    spans: Any,
    pairs: str,
    batch_size: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Span vectors: ``single (N, d)``, and for every pair row the vectors of ``i`` and ``j``."""
    if not callable(encoder):
        raise TypeError(f"encoder must be callable (token ids -> hidden states), got {type(encoder).__name__}")
    batch_size = check_int(batch_size, "batch_size", low=1)
    batch, index = masked_inputs(input_ids, mask_id, spans, pairs)
    spans = _check_spans(spans, batch.shape[1])
    n, length = len(spans), batch.shape[1]
    outs = []
    with torch.no_grad():
        for start in range(0, batch.shape[0], batch_size):
            chunk = batch[start : start + batch_size]
            try:
                h = encoder(chunk)
            except (RuntimeError, NotImplementedError) as err:  # device or dtype mismatch, mostly
                raise ValueError(
                    f"encoder failed on masked input_ids (shape {tuple(chunk.shape)}, device "
                    f"{chunk.device}): are the ids on the encoder's device? {err}"
                ) from err
            if not isinstance(h, torch.Tensor) or not h.is_floating_point():
                raise TypeError("encoder must return a floating-point torch.Tensor")
            if h.dim() != 3 or tuple(h.shape[:2]) != tuple(chunk.shape):
                raise ValueError(
                    f"encoder must map ids of shape {tuple(chunk.shape)} to hidden states of shape "
                    f"(batch, length, d), got {tuple(h.shape)}"
                )
            outs.append(h)
    hidden = torch.cat(outs)  # (P, L, d)
    avg = hidden.new_zeros(n, length)  # row n averages the tokens of span n
    for k, (a, b) in enumerate(spans):
        avg[k, a:b] = 1.0 / (b - a)
    if hidden.device != batch.device:
        raise ValueError(
            f"encoder returned hidden states on {hidden.device} for input_ids on {batch.device}: "
            "put input_ids on the encoder's device"
        )
    vi = torch.einsum("pl,pld->pd", avg[index[:, 0]], hidden)  # span i in row (i, j)
    vj = torch.einsum("pl,pld->pd", avg[index[:, 1]], hidden)  # span j in row (i, j)
    single = vi[:n]  # rows 0..N-1 are the single masks (i, i), in order
    return single, vi, vj, n


def impact_matrix(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    mask_id: int,
    spans: Sequence[tuple[int, int]] | None = None,
    *,
    batch_size: int = 64,
) -> torch.Tensor:
    """The Perturbed Masking impact matrix :math:`F_{ij} = f(e_i, e_j)` of one sentence.

    .. math::

        F_{ij} = \\bigl\\lVert \\bar H(x \\setminus \\{e_i\\})_i
                 - \\bar H(x \\setminus \\{e_i, e_j\\})_i \\bigr\\rVert_2 ,\\qquad F_{ii} = 0,

    row ``i`` is the unit whose vector is read, column ``j`` the unit masked in addition: how much
    :math:`e_i` depends on :math:`e_j`. The :math:`N(N+1)/2` masked inputs of :func:`masked_inputs`
    run through ``encoder`` in batches of ``batch_size`` (under ``torch.no_grad``).

    Parameters
    ----------
    encoder : callable
        Maps ``(B, L)`` token ids to ``(B, L, d)`` hidden states, e.g.
        ``lambda ids: model(input_ids=ids).last_hidden_state``.
    input_ids : torch.Tensor
        ``(L,)`` integer ids of one sentence, on the encoder's device.
    mask_id : int
        The id of ``[MASK]``.
    spans : sequence of tuple, optional
        ``(start, end)`` pairs: half-open token ranges of the ``N`` units (default: every token its own unit); a span's
        vector is the mean of its tokens' vectors.
    batch_size : int
        Masked inputs per forward pass.

    Returns
    -------
    torch.Tensor
        ``(N, N)``, dtype and device of the encoder's output.

    Chapter: notebooks/perturbed-masking.md
    """
    single, vi, vj, n = _run_pairs(encoder, input_ids, mask_id, spans, "all", batch_size)
    idx = torch.triu_indices(n, n, offset=1).to(single.device)  # the order of masked_inputs
    rows = slice(n, None)
    f = single.new_zeros(n, n)
    f[idx[0], idx[1]] = torch.linalg.vector_norm(single[idx[0]] - vi[rows], dim=-1)
    f[idx[1], idx[0]] = torch.linalg.vector_norm(single[idx[1]] - vj[rows], dim=-1)
    return f


def adjacent_impacts(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    mask_id: int,
    spans: Sequence[tuple[int, int]] | None = None,
    *,
    batch_size: int = 64,
) -> torch.Tensor:
    """The neighbour impacts :math:`f(e_i, e_{i+1})` and :math:`f(e_{i+1}, e_i)` from :math:`2N-1` passes.

    All a segmentation needs (:func:`segment`), without the full matrix: the ``N`` single masks and
    the ``N - 1`` adjacent pairs (the article's segmentation code builds the same batch).

    Returns
    -------
    torch.Tensor
        ``(N - 1, 2)``: column 0 is :math:`f(e_i, e_{i+1})`, column 1 is :math:`f(e_{i+1}, e_i)`,
        equal to ``F[i, i+1]`` and ``F[i+1, i]`` of :func:`impact_matrix`.

    Chapter: notebooks/perturbed-masking.md
    """
    single, vi, vj, n = _run_pairs(encoder, input_ids, mask_id, spans, "adjacent", batch_size)
    fwd = torch.linalg.vector_norm(single[:-1] - vi[n:], dim=-1)
    bwd = torch.linalg.vector_norm(single[1:] - vj[n:], dim=-1)
    return torch.stack([fwd, bwd], dim=-1)


# ------------------------------------------------------------------------------- segmentation
def _square(impact: Any, name: str = "impact") -> torch.Tensor:
    f = check_tensor(impact, name, min_dim=2, floating=True, finite=True)
    if f.shape[-1] != f.shape[-2]:
        raise ValueError(f"{name} must be square in its last two axes, got shape {tuple(f.shape)}")
    return f


def adjacent_relatedness(impact: torch.Tensor) -> torch.Tensor:
    """Symmetric relatedness of neighbours, :math:`r_i = \\tfrac12 [F_{i,i+1} + F_{i+1,i}]`.

    Parameters
    ----------
    impact : torch.Tensor
        ``(..., N, N)`` impact matrices.

    Returns
    -------
    torch.Tensor
        ``(..., N - 1)``.

    Chapter: notebooks/perturbed-masking.md
    """
    f = _square(impact)
    upper = f[..., :-1, 1:].diagonal(dim1=-2, dim2=-1)
    lower = f[..., 1:, :-1].diagonal(dim1=-2, dim2=-1)
    return upper / 2 + lower / 2


def segment(relatedness: torch.Tensor, threshold: float) -> list[tuple[int, int]]:
    """Cut a sequence of ``N`` units between neighbours whose relatedness is below ``threshold``.

    Neighbours ``i, i+1`` with :math:`r_i \\ge` ``threshold`` are joined, the others cut (the rule of
    kexue.fm/archives/7476).

    Parameters
    ----------
    relatedness : torch.Tensor
        ``(N - 1,)`` finite values (e.g. :func:`adjacent_relatedness`).
    threshold : float
        The joining threshold.

    Returns
    -------
    list of (start, end)
        Half-open ranges of unit indices, one per segment, covering ``0..N``.

    Chapter: notebooks/perturbed-masking.md
    """
    r = check_tensor(relatedness, "relatedness", min_dim=1, floating=True, finite=True)
    if r.dim() != 1:
        raise ValueError(f"relatedness must be 1-D, got shape {tuple(r.shape)}")
    if r.device.type == "meta":
        raise ValueError("relatedness must hold values (not on the meta device)")
    threshold = check_float(threshold, "threshold")
    join = (r >= threshold).tolist()
    out, start = [], 0
    for i, j in enumerate(join):
        if not j:
            out.append((start, i + 1))
            start = i + 1
    out.append((start, len(join) + 1))
    return out


# ------------------------------------------------------------------------------------ parsing
def split_scores(impact: torch.Tensor) -> torch.Tensor:
    """The split objective of every cut: within-block means minus between-block means.

    For a cut after ``s`` units (left block :math:`A = \\{0..s-1\\}`, right block
    :math:`B = \\{s..N-1\\}`),

    .. math::

        S(s) = \\frac{\\sum_{A \\times A} F}{s^2} + \\frac{\\sum_{B \\times B} F}{(N-s)^2}
               - \\frac{\\sum_{A \\times B} F}{s (N-s)} - \\frac{\\sum_{B \\times A} F}{s (N-s)},

    the article's objective with :math:`s = k - 1`. The diagonal of ``impact`` is used as given
    (the article sets :math:`f(x_i, x_i) = 0`). Block sums come from two-dimensional prefix sums; the
    matrix is scaled by its largest magnitude first (:math:`S` is linear), so that huge or tiny
    entries neither overflow nor underflow.

    Parameters
    ----------
    impact : torch.Tensor
        ``(..., N, N)`` with ``N >= 2``.

    Returns
    -------
    torch.Tensor
        ``(..., N - 1)``: entry ``s - 1`` is :math:`S(s)`, ``s = 1..N-1``.

    Chapter: notebooks/perturbed-masking.md
    """
    f = _square(impact)
    n = f.shape[-1]
    if n < 2:
        raise ValueError(f"impact must be at least 2 x 2 to be split, got shape {tuple(f.shape)}")
    work = f.float() if f.dtype in (torch.float16, torch.bfloat16) else f
    scale = work.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(work.dtype).tiny)
    c = (work / scale).cumsum(-1).cumsum(-2)  # c[a, b] = sum of the (a+1) x (b+1) top-left block
    s = torch.arange(1, n, device=f.device, dtype=work.dtype)
    tl = c[..., :-1, :-1].diagonal(dim1=-2, dim2=-1)  # s x s block
    rows = c[..., :-1, -1]  # first s rows, all columns
    cols = c[..., -1, :-1]  # all rows, first s columns
    total = c[..., -1:, -1]
    tr, bl = rows - tl, cols - tl
    br = total - rows - cols + tl
    m = n - s
    score = tl / s**2 + br / m**2 - (tr + bl) / (s * m)
    return (score * scale[..., 0]).to(f.dtype)


def _values(impact: Any) -> torch.Tensor:
    f = _square(impact)
    if f.dim() != 2:
        raise ValueError(f"impact must be one (N, N) matrix, got shape {tuple(f.shape)}")
    if f.device.type == "meta":
        raise ValueError("impact must hold values (not on the meta device)")
    if f.shape[-1] == 0:
        raise ValueError("impact must not be empty")
    return f


def parse_tree(impact: torch.Tensor, form: str = "article") -> Tree:
    """A binary tree over ``N`` units by recursive splitting with :func:`split_scores`.

    ``form="article"`` follows Su's code (kexue.fm/archives/7476, after ON-LSTM): a node over
    :math:`x_1..x_T` picks :math:`k \\in \\{2..T-1\\}` maximising :math:`S(k-1)` (the blocks
    :math:`x_{<k}` and :math:`x_{\\ge k}`) and returns
    :math:`((x_{<k}), (x_k, (x_{>k})))`, recursing on :math:`x_{<k}` and :math:`x_{>k}` with their own
    sub-matrices; two units make one node. ``form="binary"`` is the plain clustering reading:
    cut into :math:`x_{<k}` and :math:`x_{\\ge k}`, :math:`k \\in \\{2..T\\}`, and recurse on both. Ties go
    to the first maximum.

    Parameters
    ----------
    impact : torch.Tensor
        ``(N, N)`` finite impact matrix, ``N >= 1``.
    form : {"article", "binary"}
        The tree shape.

    Returns
    -------
    int or tuple
        A leaf is a unit index; a node is a pair ``(left, right)``.

    Chapter: notebooks/perturbed-masking.md
    """
    f = _values(impact)
    form = check_choice(form, "form", ("article", "binary"))

    def build(lo: int, hi: int) -> Tree:
        size = hi - lo
        if size == 1:
            return lo
        if size == 2:
            return (lo, lo + 1)
        scores = split_scores(f[lo:hi, lo:hi])
        if form == "article":
            k = lo + int(torch.argmax(scores[: size - 2])) + 1  # left block lo..k-1, pivot k
            return (build(lo, k), (k, build(k + 1, hi)))
        k = lo + int(torch.argmax(scores)) + 1
        return (build(lo, k), build(k, hi))

    return build(0, f.shape[-1])


def _leaves(tree: Tree) -> list[int]:
    if isinstance(tree, bool) or not isinstance(tree, (int, tuple)):
        raise TypeError("tree must be an int (a leaf) or a pair (left, right) of trees")
    if isinstance(tree, int):
        return [tree]
    if len(tree) != 2:
        raise ValueError(f"tree nodes must be pairs (left, right), got {len(tree)} children")
    return _leaves(tree[0]) + _leaves(tree[1])


def tree_spans(tree: Tree) -> list[tuple[int, int]]:
    """The constituents of a binary tree over consecutive units, as half-open ranges.

    Returns
    -------
    list of (start, end)
        One range per internal node (each of length >= 2), in pre-order.

    Chapter: notebooks/perturbed-masking.md
    """
    leaves = _leaves(tree)
    if leaves != list(range(leaves[0], leaves[0] + len(leaves))):
        raise ValueError("tree leaves must be consecutive unit indices in order")
    out: list[tuple[int, int]] = []

    def walk(t: Tree) -> tuple[int, int]:
        if isinstance(t, int):
            return (t, t + 1)
        at = len(out)
        out.append((0, 0))
        a, _ = walk(t[0])
        _, b = walk(t[1])
        out[at] = (a, b)
        return (a, b)

    walk(tree)
    return out


def tree_brackets(tree: Tree, labels: Sequence[str]) -> str:
    """The tree as a bracketed string, e.g. ``((the cat) sat)``.

    Chapter: notebooks/perturbed-masking.md
    """
    leaves = _leaves(tree)
    if any(i < 0 or i >= len(labels) for i in leaves):
        raise ValueError(f"labels must name every leaf of tree: {len(labels)} labels")

    def text(t: Tree) -> str:
        return str(labels[t]) if isinstance(t, int) else f"({text(t[0])} {text(t[1])})"

    return text(tree)


def plot_tree(tree: Tree, labels: Sequence[str], ax: Any = None) -> Any:
    """Draw a binary tree with its leaves (labelled) on a line and each node above its children.

    A node's height is the number of leaves it spans minus one, so constituents of equal size sit
    at the same height. Returns the matplotlib axes.

    Chapter: notebooks/perturbed-masking.md
    """
    import matplotlib.pyplot as plt

    leaves = _leaves(tree)
    if any(i < 0 or i >= len(labels) for i in leaves):
        raise ValueError(f"labels must name every leaf of tree: {len(labels)} labels")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(leaves)), 3.0))
    pos = {leaf: k for k, leaf in enumerate(leaves)}

    def draw(t: Tree) -> tuple[float, float]:
        if isinstance(t, int):
            x = float(pos[t])
            ax.text(x, -0.15, str(labels[t]), ha="right", va="top", rotation=35, rotation_mode="anchor", fontsize=9)
            return x, 0.0
        (xl, yl), (xr, yr) = draw(t[0]), draw(t[1])
        y = float(len(_leaves(t)) - 1)
        x = (xl + xr) / 2
        ax.plot([xl, xl, xr, xr], [yl, y, y, yr], color="C0", lw=1.5)
        return x, y

    draw(tree)
    ax.set_xlim(-0.7, len(leaves) - 0.3)
    ax.set_ylim(-1.6, len(leaves) - 0.5)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.grid(False)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    return ax
