"""Shannon entropy of distributions, and entropy normalisation (chapter ``entropy-normalization``)."""

from __future__ import annotations

import torch

from ._validation import check_int, check_tensor

__all__ = ["entropy"]


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy :math:`H(p) = -\\sum_i p_i \\log p_i` in nats, along ``dim``.

    Zero probabilities contribute nothing (:math:`0 \\log 0 = 0`), so one-hot rows give exactly 0 and
    rows of a masked attention matrix are handled without NaN.

    Parameters
    ----------
    p : torch.Tensor
        Non-negative floating-point tensor whose slices along ``dim`` sum to one.
    dim : int
        The axis that holds each distribution.

    Returns
    -------
    torch.Tensor
        ``p`` with ``dim`` removed; values lie in :math:`[0, \\log n]`.

    Raises
    ------
    TypeError
        If ``p`` is not a floating-point tensor.
    ValueError
        If ``p`` has negative entries, NaN or inf.
    """
    check_tensor(p, "p", min_dim=1, floating=True, finite=True)
    check_int(dim, "dim", low=-p.dim(), high=p.dim() - 1)
    if p.device.type != "meta" and p.numel() and bool((p < 0).any()):
        raise ValueError("p must be non-negative")
    logp = torch.log(torch.where(p > 0, p, torch.ones_like(p)))
    return -(p * logp).sum(dim=dim)
