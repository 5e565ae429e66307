r"""Linear-chain CRF, MEMM and Bi-MEMM for sequence labelling.

Every model here scores a label sequence :math:`y = (y_1, \dots, y_n)` for an input :math:`x` with
the same function, per-position emission scores :math:`f(y_k; x)` plus transition scores
:math:`g(y_{k-1}, y_k)`,

.. math::

    s(y; x) = a(y_1) + f(y_1; x) + \sum_{k=2}^{n} \big(g(y_{k-1}, y_k) + f(y_k; x)\big) + b(y_n),

(:math:`a`, :math:`b` optional start and end scores) and differs only in how it normalises it:

* the **CRF** normalises globally, :math:`P(y \mid x) = e^{s(y;x)} / Z(x)` with
  :math:`Z(x) = \sum_{y'} e^{s(y';x)}` computed by the forward algorithm in log space;
* the **MEMM** normalises locally, one softmax per step,
  :math:`P(y \mid x) = P(y_1 \mid x)\prod_{k \ge 2} P(y_k \mid y_{k-1}, x)` with
  :math:`P(y_k \mid y_{k-1}, x) \propto e^{g(y_{k-1}, y_k) + f(y_k; x)}`;
* the **Bi-MEMM** of Su Jianlin's article averages the log-likelihoods of the left-to-right MEMM and
  of the right-to-left one,
  :math:`P(y_{k-1} \mid y_k, x) \propto e^{g(y_{k-1}, y_k) + f(y_{k-1}; x)}`.

Shapes: ``emissions`` ``(*batch, n, K)``, ``tags`` and ``mask`` ``(*batch, n)``, ``transitions``
``(K, K)`` (``transitions[i, j]`` = :math:`g(i, j)`, the score of label ``i`` followed by ``j``) or,
for the low-rank form :math:`g = L R^\top`, a pair ``(L, R)`` of ``(K, d)`` matrices. ``mask`` is
boolean and right-padded (each row is some ``True`` steps then ``False`` steps) with its first step
``True``. Everything is batched over the leading dimensions, follows the inputs' device and dtype,
and runs on the ``meta`` device.

Chapter: notebooks/memm-vs-crf.md
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._validation import check_choice, check_int, check_tensor

__all__ = [
    "CRF",
    "crf_score",
    "crf_log_partition",
    "crf_log_likelihood",
    "crf_viterbi",
    "memm_log_likelihood",
    "bimemm_log_likelihood",
    "memm_viterbi",
    "low_rank_transitions",
]

_MASK_HELP = "mask must be right-padded: True steps first, then False steps"


def _check_emissions(emissions: Any) -> torch.Tensor:
    emissions = check_tensor(emissions, "emissions", min_dim=2, floating=True, finite=True)
    if emissions.shape[-2] < 1:
        raise ValueError(
            f"emissions must have at least one step, got shape {tuple(emissions.shape)}"
        )
    if emissions.shape[-1] < 1:
        raise ValueError(
            f"emissions must have at least one label, got shape {tuple(emissions.shape)}"
        )
    return emissions


def _check_vector(v: Any, name: str, emissions: torch.Tensor) -> torch.Tensor | None:
    if v is None:
        return None
    v = check_tensor(v, name, floating=True, finite=True)
    K = emissions.shape[-1]
    if tuple(v.shape) != (K,):
        raise ValueError(f"{name} must have shape ({K},), got {tuple(v.shape)}")
    _same_place(v, name, emissions)
    return v


def _same_place(t: torch.Tensor, name: str, emissions: torch.Tensor) -> None:
    if t.device != emissions.device:
        raise ValueError(f"{name} is on {t.device} but emissions is on {emissions.device}")
    if t.dtype != emissions.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but emissions has dtype {emissions.dtype}")


def low_rank_transitions(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    r"""The full transition matrix :math:`G = L R^\top` of a low-rank pair.

    Parameters
    ----------
    left, right : torch.Tensor
        ``(K, d)`` factors; :math:`g(i, j) = \langle L_i, R_j \rangle`, so ``2 d K`` parameters instead of ``K**2``.

    Returns
    -------
    torch.Tensor
        ``(K, K)`` matrix ``left @ right.T``.

    Chapter: notebooks/memm-vs-crf.md
    """
    left = check_tensor(left, "left", floating=True, finite=True)
    right = check_tensor(right, "right", floating=True, finite=True)
    if left.dim() != 2 or right.dim() != 2 or left.shape != right.shape:
        raise ValueError(
            f"left and right must both have shape (K, d), got {tuple(left.shape)} and "
            f"{tuple(right.shape)}"
        )
    if left.device != right.device or left.dtype != right.dtype:
        raise ValueError("left and right must share device and dtype")
    return left @ right.transpose(0, 1)


def _check_transitions(transitions: Any, emissions: torch.Tensor, *, allow_low_rank: bool):
    """Return ``("full", G)`` or ``("low", (L, R))`` after validation."""
    K = emissions.shape[-1]
    if isinstance(transitions, (tuple, list)):
        if not allow_low_rank:
            raise TypeError("transitions must be a (K, K) tensor here, not a low-rank pair")
        if len(transitions) != 2:
            raise ValueError(
                f"transitions as a low-rank pair must be (left, right), got {len(transitions)} "
                "items"
            )
        left, right = transitions
        for t, nm in ((left, "transitions[0]"), (right, "transitions[1]")):
            check_tensor(t, nm, floating=True, finite=True)
            if t.dim() != 2 or t.shape[0] != K:
                raise ValueError(f"{nm} must have shape ({K}, d), got {tuple(t.shape)}")
            _same_place(t, nm, emissions)
        if left.shape != right.shape:
            raise ValueError(
                f"transitions[0] and transitions[1] must share shape, got {tuple(left.shape)} and "
                f"{tuple(right.shape)}"
            )
        return "low", (left, right)
    G = check_tensor(transitions, "transitions", floating=True, finite=True)
    if tuple(G.shape) != (K, K):
        raise ValueError(f"transitions must have shape ({K}, {K}), got {tuple(G.shape)}")
    _same_place(G, "transitions", emissions)
    return "full", G


def _check_mask(mask: Any, emissions: torch.Tensor) -> torch.Tensor | None:
    """Validated boolean mask, or ``None`` when every step is valid."""
    if mask is None:
        return None
    mask = check_tensor(mask, "mask")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise TypeError(f"mask must be boolean (or 0/1 integers), got {mask.dtype}")
        if mask.device.type != "meta" and mask.numel() and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("mask must hold only 0 and 1")
        mask = mask != 0
    if tuple(mask.shape) != tuple(emissions.shape[:-1]):
        raise ValueError(
            f"mask must have shape {tuple(emissions.shape[:-1])}, got {tuple(mask.shape)}"
        )
    if mask.device != emissions.device:
        raise ValueError(f"mask is on {mask.device} but emissions is on {emissions.device}")
    if mask.device.type != "meta" and mask.numel():
        if not bool(mask[..., 0].all()):
            raise ValueError(
                "mask's first step must be True for every sequence (empty sequences are not "
                "allowed)"
            )
        if mask.shape[-1] > 1 and bool((mask[..., 1:] & ~mask[..., :-1]).any()):
            raise ValueError(_MASK_HELP)
    return mask


def _check_tags(tags: Any, emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    tags = check_tensor(tags, "tags")
    if tags.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"tags must be an integer tensor, got {tags.dtype}")
    if tuple(tags.shape) != tuple(emissions.shape[:-1]):
        raise ValueError(
            f"tags must have shape {tuple(emissions.shape[:-1])}, got {tuple(tags.shape)}"
        )
    if tags.device != emissions.device:
        raise ValueError(f"tags is on {tags.device} but emissions is on {emissions.device}")
    tags = tags.long()
    if mask is not None:
        tags = torch.where(mask, tags, torch.zeros((), dtype=tags.dtype, device=tags.device))
    K = emissions.shape[-1]
    if tags.device.type != "meta" and tags.numel() and bool(((tags < 0) | (tags >= K)).any()):
        raise ValueError(f"tags must lie in [0, {K}) at every valid step")
    return tags


def _last_index(mask: torch.Tensor | None, emissions: torch.Tensor) -> torch.Tensor:
    """Index of each sequence's last valid step, shape ``(*batch,)``."""
    n = emissions.shape[-2]
    if mask is None:
        return torch.full(emissions.shape[:-2], n - 1, dtype=torch.long, device=emissions.device)
    return mask.sum(-1) - 1


def crf_score(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor | None = None,
    end: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Unnormalised score :math:`s(y; x)` of the label sequence ``tags``.

    .. math::

        s(y; x) = a(y_1) + f(y_1; x) + \sum_{k=2}^{n} \big(g(y_{k-1}, y_k) + f(y_k; x)\big) + b(y_n),

    the numerator (in log) shared by the CRF and the MEMM; :math:`n` is each row's number of valid steps.

    Parameters
    ----------
    emissions : torch.Tensor
        ``(*batch, n, K)`` emission scores :math:`f(\cdot; x)`, finite, floating point.
    tags : torch.Tensor
        ``(*batch, n)`` integer labels in ``[0, K)`` (ignored where ``mask`` is False).
    transitions : torch.Tensor
        ``(K, K)``, ``transitions[i, j]`` = :math:`g(i, j)`.
    start, end : torch.Tensor, optional
        ``(K,)`` scores :math:`a`, :math:`b` of the first and last label (0 when omitted).
    mask : torch.Tensor, optional
        ``(*batch, n)`` boolean, right-padded, first step True.

    Returns
    -------
    torch.Tensor
        ``(*batch,)`` scores.

    Chapter: notebooks/memm-vs-crf.md
    """
    emissions = _check_emissions(emissions)
    _, G = _check_transitions(transitions, emissions, allow_low_rank=False)
    start = _check_vector(start, "start", emissions)
    end = _check_vector(end, "end", emissions)
    mask = _check_mask(mask, emissions)
    tags = _check_tags(tags, emissions, mask)
    return _score(emissions, tags, G, start, end, mask)


def _score(emissions, tags, G, start, end, mask):
    K = emissions.shape[-1]
    emit = emissions.gather(-1, tags.unsqueeze(-1)).squeeze(-1)  # (*batch, n)
    trans = G.reshape(-1)[tags[..., :-1] * K + tags[..., 1:]]  # (*batch, n-1)
    if mask is not None:
        m = mask.to(emissions.dtype)
        emit = emit * m
        trans = trans * m[..., 1:]
    total = emit.sum(-1) + trans.sum(-1)
    if start is not None:
        total = total + start[tags[..., 0]]
    if end is not None:
        last = _last_index(mask, emissions)
        total = total + end[tags.gather(-1, last.unsqueeze(-1)).squeeze(-1)]
    return total


def crf_log_partition(
    emissions: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor | None = None,
    end: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Log partition function :math:`\log Z(x) = \log \sum_y e^{s(y; x)}` by the forward algorithm.

    With :math:`\alpha_1 = a + f_1` and, for each valid step,

    .. math::

        \alpha_k(j) = f_k(j) + \log \sum_i e^{\alpha_{k-1}(i) + g(i, j)},

    :math:`\log Z = \log \sum_j e^{\alpha_n(j) + b(j)}`: :math:`O(n K^2)` instead of :math:`K^n`
    terms, every sum a ``logsumexp`` so that scores of any size (|f| = 1e30 included) give finite
    results and gradients. Padded steps carry :math:`\alpha` over unchanged. Parameters as in
    :func:`crf_score`.

    Returns
    -------
    torch.Tensor
        ``(*batch,)`` values of :math:`\log Z`.

    Chapter: notebooks/memm-vs-crf.md
    """
    emissions = _check_emissions(emissions)
    _, G = _check_transitions(transitions, emissions, allow_low_rank=False)
    start = _check_vector(start, "start", emissions)
    end = _check_vector(end, "end", emissions)
    mask = _check_mask(mask, emissions)
    return _log_partition(emissions, G, start, end, mask)


def _log_partition(emissions, G, start, end, mask):
    n = emissions.shape[-2]
    alpha = emissions[..., 0, :]
    if start is not None:
        alpha = alpha + start
    for k in range(1, n):
        nxt = torch.logsumexp(alpha.unsqueeze(-1) + G, dim=-2) + emissions[..., k, :]
        alpha = nxt if mask is None else torch.where(mask[..., k, None], nxt, alpha)
    if end is not None:
        alpha = alpha + end
    return torch.logsumexp(alpha, dim=-1)


def crf_log_likelihood(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor | None = None,
    end: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""CRF log-likelihood :math:`\log P(y \mid x) = s(y; x) - \log Z(x)` (global normalisation).

    Parameters as in :func:`crf_score`. Returns ``(*batch,)`` values (``<= 0``); minus their mean is
    the usual training loss.

    Chapter: notebooks/memm-vs-crf.md
    """
    emissions = _check_emissions(emissions)
    _, G = _check_transitions(transitions, emissions, allow_low_rank=False)
    start = _check_vector(start, "start", emissions)
    end = _check_vector(end, "end", emissions)
    mask = _check_mask(mask, emissions)
    tags = _check_tags(tags, emissions, mask)
    return _score(emissions, tags, G, start, end, mask) - _log_partition(
        emissions, G, start, end, mask
    )


def _viterbi(unary, pair, end, mask, n):
    """Max-product over a chain: ``unary`` (*b, K) at step 0, ``pair(k)`` (*b, K, K) for step k >= 1
    (``[i, j]``: from label i to label j), ``end`` (*b, K) or None added after the last valid step."""
    score = unary
    K = unary.shape[-1]
    ident = torch.arange(K, device=unary.device).expand_as(unary)
    back = []
    for k in range(1, n):
        best, arg = (score.unsqueeze(-1) + pair(k)).max(dim=-2)
        if mask is not None:
            m = mask[..., k, None]
            best = torch.where(m, best, score)
            arg = torch.where(m, arg, ident)
        score = best
        back.append(arg)
    if end is not None:
        score = score + end
    best_score, last = score.max(dim=-1)
    out = [last]
    for arg in reversed(back):
        last = arg.gather(-1, last.unsqueeze(-1)).squeeze(-1)
        out.append(last)
    path = torch.stack(out[::-1], dim=-1)
    if mask is not None:
        path = path.masked_fill(~mask, -1)
    return path, best_score


def crf_viterbi(
    emissions: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor | None = None,
    end: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Most likely label sequence :math:`\arg\max_y s(y; x)` by the Viterbi algorithm.

    The forward algorithm with :math:`\log\sum` replaced by :math:`\max`, keeping back-pointers,
    then one backward pass; vectorised over the batch and the labels, a loop over time only.

    Parameters as in :func:`crf_score`.

    Returns
    -------
    tags : torch.Tensor
        ``(*batch, n)`` int64 best labels, ``-1`` at padded steps.
    score : torch.Tensor
        ``(*batch,)`` the best score :math:`\max_y s(y; x)`.

    Chapter: notebooks/memm-vs-crf.md
    """
    emissions = _check_emissions(emissions)
    _, G = _check_transitions(transitions, emissions, allow_low_rank=False)
    start = _check_vector(start, "start", emissions)
    end = _check_vector(end, "end", emissions)
    mask = _check_mask(mask, emissions)
    unary = emissions[..., 0, :] if start is None else emissions[..., 0, :] + start
    return _viterbi(unary, lambda k: G + emissions[..., k, None, :], end, mask, emissions.shape[-2])


def _reverse(x: torch.Tensor, mask: torch.Tensor | None, time_dim: int) -> torch.Tensor:
    """Reverse each sequence's valid part along ``time_dim`` (padding stays at the end)."""
    if mask is None:
        return x.flip(time_dim)
    n = mask.shape[-1]
    lengths = mask.sum(-1, keepdim=True)  # (*batch, 1)
    ar = torch.arange(n, device=mask.device)
    idx = torch.where(ar < lengths, lengths - 1 - ar, ar)  # (*batch, n)
    if x.dim() > mask.dim():
        idx = idx.unsqueeze(-1).expand_as(x)
    return x.gather(time_dim, idx)


def _memm_one_way(emissions, tags, kind, G, first, mask):
    """Left-to-right MEMM log-likelihood; ``G`` already oriented (previous label first)."""
    logits = emissions.clone()
    if first is not None:
        logits[..., 0, :] = logits[..., 0, :] + first
    if emissions.shape[-2] > 1:
        prev = tags[..., :-1]
        if kind == "full":
            hist = G[prev]  # (*batch, n-1, K)
        else:
            left, right = G
            hist = left[prev] @ right.transpose(0, 1)
        logits[..., 1:, :] = logits[..., 1:, :] + hist
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tags.unsqueeze(-1)).squeeze(-1)
    if mask is not None:
        logp = logp * mask.to(logp.dtype)
    return logp.sum(-1)


def memm_log_likelihood(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    transitions,
    start: torch.Tensor | None = None,
    end: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    direction: str = "forward",
) -> torch.Tensor:
    r"""MEMM log-likelihood: one softmax per step (local normalisation).

    Left to right (``direction="forward"``)

    .. math::

        \log P(y \mid x) = \log\operatorname{softmax}(a + f_1)_{y_1}
            + \sum_{k=2}^n \log\operatorname{softmax}_j\big(g(y_{k-1}, j) + f_k(j)\big)_{y_k},

    right to left (``"backward"``), with the same :math:`g` read the other way round,

    .. math::

        \log P(y \mid x) = \log\operatorname{softmax}(b + f_n)_{y_n}
            + \sum_{k=2}^n \log\operatorname{softmax}_i\big(g(i, y_k) + f_{k-1}(i)\big)_{y_{k-1}}.

    Each step conditions on the true previous label, so all steps are computed at once (no
    recursion). ``start`` is used only by the forward direction and ``end`` only by the backward one.

    Parameters
    ----------
    emissions, tags, start, end, mask
        As in :func:`crf_score`.
    transitions : torch.Tensor or (torch.Tensor, torch.Tensor)
        ``(K, K)`` matrix, or a low-rank pair ``(L, R)`` of ``(K, d)`` factors with :math:`g = L R^\top`,
        which costs :math:`O(n K d)` instead of :math:`O(n K^2)` (the full matrix is never formed).
    direction : {"forward", "backward"}

    Returns
    -------
    torch.Tensor
        ``(*batch,)`` log-likelihoods.

    Chapter: notebooks/memm-vs-crf.md
    """
    emissions = _check_emissions(emissions)
    kind, G = _check_transitions(transitions, emissions, allow_low_rank=True)
    start = _check_vector(start, "start", emissions)
    end = _check_vector(end, "end", emissions)
    mask = _check_mask(mask, emissions)
    tags = _check_tags(tags, emissions, mask)
    direction = check_choice(direction, "direction", ("forward", "backward"))
    return _memm(emissions, tags, kind, G, start, end, mask, direction)


def _memm(emissions, tags, kind, G, start, end, mask, direction):
    if direction == "forward":
        return _memm_one_way(emissions, tags, kind, G, start, mask)
    Gr = G.transpose(0, 1) if kind == "full" else (G[1], G[0])
    return _memm_one_way(
        _reverse(emissions, mask, -2), _reverse(tags, mask, -1), kind, Gr, end, mask
    )


def bimemm_log_likelihood(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    transitions,
    start: torch.Tensor | None = None,
    end: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Bi-MEMM log-likelihood: the mean of the left-to-right and right-to-left MEMM
    log-likelihoods.

    .. math::

        \ell(y \mid x) = \tfrac12\big(\log P_{\rightarrow}(y \mid x) + \log P_{\leftarrow}(y \mid x)\big),

    both with the same scores :math:`f, g` (no extra parameters). Parameters as in
    :func:`memm_log_likelihood`.

    Chapter: notebooks/memm-vs-crf.md
    """
    emissions = _check_emissions(emissions)
    kind, G = _check_transitions(transitions, emissions, allow_low_rank=True)
    start = _check_vector(start, "start", emissions)
    end = _check_vector(end, "end", emissions)
    mask = _check_mask(mask, emissions)
    tags = _check_tags(tags, emissions, mask)
    fwd = _memm(emissions, tags, kind, G, start, end, mask, "forward")
    bwd = _memm(emissions, tags, kind, G, start, end, mask, "backward")
    return 0.5 * (fwd + bwd)


def memm_viterbi(
    emissions: torch.Tensor,
    transitions,
    start: torch.Tensor | None = None,
    end: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    direction: str = "forward",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Most likely label sequence under a MEMM (one direction) or a Bi-MEMM (``"both"``).

    The objective is the model's own log-probability (for ``"both"``, the mean of the two), a sum of
    per-step terms :math:`\log P(y_k \mid y_{k-1}, x)`, each depending on two adjacent labels, so
    the Viterbi algorithm finds its exact maximum in :math:`O(n K^2)`, as for a CRF. The answer
    generally differs from :func:`crf_viterbi` with the same scores: the local normalisers depend on the labels.

    Parameters as in :func:`memm_log_likelihood`; ``direction`` in ``{"forward", "backward", "both"}``.

    Returns
    -------
    tags : torch.Tensor
        ``(*batch, n)`` int64, ``-1`` at padded steps.
    logprob : torch.Tensor
        ``(*batch,)`` the model's log-probability (or Bi-MEMM mean) of that sequence.

    Chapter: notebooks/memm-vs-crf.md
    """
    emissions = _check_emissions(emissions)
    kind, G = _check_transitions(transitions, emissions, allow_low_rank=True)
    if kind == "low":
        G = G[0] @ G[1].transpose(0, 1)
    start = _check_vector(start, "start", emissions)
    end = _check_vector(end, "end", emissions)
    mask = _check_mask(mask, emissions)
    direction = check_choice(direction, "direction", ("forward", "backward", "both"))
    n = emissions.shape[-2]
    fwd = direction in ("forward", "both")
    bwd = direction in ("backward", "both")
    w = 0.5 if direction == "both" else 1.0
    zero = emissions.new_zeros(emissions.shape[:-2] + emissions.shape[-1:])
    unary = zero
    if fwd:
        first = emissions[..., 0, :] if start is None else emissions[..., 0, :] + start
        unary = unary + w * torch.log_softmax(first, dim=-1)
    final = None
    if bwd:
        last = _last_index(mask, emissions)
        f_last = emissions.gather(
            -2, last[..., None, None].expand(*last.shape, 1, emissions.shape[-1])
        )
        f_last = f_last.squeeze(-2)
        final = w * torch.log_softmax(f_last if end is None else f_last + end, dim=-1)

    def pair(k: int) -> torch.Tensor:
        out = 0.0
        if fwd:  # log P(y_k = j | y_{k-1} = i)
            out = out + w * torch.log_softmax(G + emissions[..., k, None, :], dim=-1)
        if bwd:  # log P(y_{k-1} = i | y_k = j)
            out = out + w * torch.log_softmax(G + emissions[..., k - 1, :, None], dim=-2)
        return out

    return _viterbi(unary, pair, final, mask, n)


class CRF(nn.Module):
    r"""Linear-chain CRF layer with learnable transitions (and optional start/end scores).

    ``forward(emissions, tags, mask)`` returns the per-sequence log-likelihood
    :math:`s(y; x) - \log Z(x)` (see :func:`crf_log_likelihood`); ``decode(emissions, mask)`` the
    Viterbi labels (see :func:`crf_viterbi`). ``memm_log_likelihood`` and ``bimemm_log_likelihood``
    score the same parameters under local normalisation, so one layer can be trained as a CRF, a MEMM or a Bi-MEMM.

    Parameters
    ----------
    num_tags : int
        Number of labels ``K``.
    start_end : bool
        Learn start and end scores :math:`a, b` (default True).
    rank : int, optional
        Factor the transitions as :math:`g = L R^\top` with ``(K, rank)`` factors (``2 K rank``
        parameters); the CRF methods then form the ``(K, K)`` matrix, the MEMM ones never do.
    device, dtype
        Where the parameters live.
    generator : torch.Generator, optional
        Draws the initial parameters (uniform in [-0.1, 0.1]; the factors scaled so that ``L R^T`` is too).

    Chapter: notebooks/memm-vs-crf.md
    """

    def __init__(
        self,
        num_tags: int,
        start_end: bool = True,
        rank: int | None = None,
        *,
        device=None,
        dtype=None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_tags = check_int(num_tags, "num_tags", low=1)
        self.rank = None if rank is None else check_int(rank, "rank", low=1)
        kw = dict(device=device, dtype=dtype)

        def init(*shape, scale=0.1):
            t = torch.empty(*shape, **kw)
            if t.device.type != "meta":
                with torch.no_grad():
                    t.uniform_(-scale, scale, generator=generator)
            return nn.Parameter(t)

        K = self.num_tags
        if self.rank is None:
            self.transitions = init(K, K)
            self.left = self.right = None
        else:
            s = (0.1 / self.rank) ** 0.5
            self.transitions = None
            self.left = init(K, self.rank, scale=s)
            self.right = init(K, self.rank, scale=s)
        self.start = init(K) if start_end else None
        self.end = init(K) if start_end else None

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, rank={self.rank}, start_end={self.start is not None}"

    def transition_matrix(self) -> torch.Tensor:
        """The ``(K, K)`` transition scores (formed from the factors in the low-rank case)."""
        if self.rank is None:
            return self.transitions
        return self.left @ self.right.transpose(0, 1)

    def _trans(self):
        return self.transitions if self.rank is None else (self.left, self.right)

    def forward(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CRF log-likelihood of ``tags``, shape ``(*batch,)``."""
        return crf_log_likelihood(
            emissions, tags, self.transition_matrix(), self.start, self.end, mask
        )

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Viterbi labels, ``(*batch, n)``, ``-1`` at padded steps."""
        return crf_viterbi(emissions, self.transition_matrix(), self.start, self.end, mask)[0]

    def memm_log_likelihood(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor | None = None,
        direction: str = "forward",
    ) -> torch.Tensor:
        """MEMM log-likelihood of ``tags`` with this layer's scores (see "
        ":func:`memm_log_likelihood`)."""
        return memm_log_likelihood(
            emissions, tags, self._trans(), self.start, self.end, mask, direction
        )

    def bimemm_log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Bi-MEMM log-likelihood (see :func:`bimemm_log_likelihood`)."""
        return bimemm_log_likelihood(emissions, tags, self._trans(), self.start, self.end, mask)

    def memm_decode(
        self, emissions: torch.Tensor, mask: torch.Tensor | None = None, direction: str = "forward"
    ) -> torch.Tensor:
        """MEMM / Bi-MEMM Viterbi labels (see :func:`memm_viterbi`)."""
        return memm_viterbi(emissions, self._trans(), self.start, self.end, mask, direction)[0]
