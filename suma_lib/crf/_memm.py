"""MEMM and Bi-MEMM: locally normalised chains."""

from __future__ import annotations

import torch

from .._validation import check_choice
from ._chain import _viterbi
from ._checks import _check_emissions, _check_mask, _check_tags, _check_transitions, _check_vector, _last_index


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


