"""The linear-chain CRF: score, log partition (forward algorithm), log-likelihood, Viterbi."""

from __future__ import annotations

import torch

from ._checks import _check_emissions, _check_mask, _check_tags, _check_transitions, _check_vector, _last_index


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
    terms, every sum a ``logsumexp`` so that scores of any size (:math:`|f| = 10^{30}` included) give finite
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


