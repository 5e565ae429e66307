"""Exact (quadratic) softmax attention, with well-defined results for fully masked rows.

Used by every chapter of Part IV; first derived in the chapter ``attention-is-all-you-need``:

.. math:: \\operatorname{Attention}(Q, K, V) = \\operatorname{softmax}\\!\\left(s\\,QK^\\top +
   M\\right) V,
   \\qquad s = 1/\\sqrt{d_k} \\text{ by default.}

Shapes follow PyTorch's convention: ``q`` is ``(..., n, d)``, ``k`` is ``(..., m, d)``, ``v`` is
``(..., m, d_v)``; leading dimensions (batch, heads, ...) broadcast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._core import (
    causal_mask,
    check_bool,
    check_mask,
    check_qkv,
    combine_masks,
    default_scale,
    masked_softmax,
    prescale,
    scaled_logits,
    zero_rows,
)

__all__ = ["attention_weights", "combine_masks", "softmax_attention"]


def attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """The attention matrix ``softmax(scale * q k^T)`` with rows that sum to one.

    Parameters
    ----------
    q : torch.Tensor, shape ``(..., n, d)``
    k : torch.Tensor, shape ``(..., m, d)``
    mask : torch.Tensor, optional
        Boolean, ``True`` where a query may attend to a key, broadcastable to ``(..., n, m)``.
    causal : bool
        Let query ``i`` attend to keys ``j <= i`` only.
    scale : float, optional
        Multiplies the logits; ``1/sqrt(d)`` by default.

    Returns
    -------
    torch.Tensor, shape ``(..., n, m)``
        Each row is a probability distribution; a row whose keys are all masked is all zeros (not NaN).
    """
    check_qkv(q, k, None)
    logits = scaled_logits(q, k, default_scale(scale, q.shape[-1]))
    return masked_softmax(
        logits, combine_masks(mask, causal, q.shape[-2], k.shape[-2], device=q.device)
    )


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact scaled dot-product attention ``softmax(scale * q k^T + mask) v``.

    Dispatches to :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient /
    math kernels as torch chooses), so it is as fast as torch's own attention, and adds one guarantee
    on top: a query whose keys are all masked gets a zero output instead of NaN, and huge inputs
    (:math:`|x| = 10^{30}` in float32) give the limiting hard-max attention instead of NaN (the scale is
    folded into rescaled ``q`` and ``k`` whose product cannot overflow).

    Parameters
    ----------
    q : torch.Tensor, shape ``(..., n, d)``
    k : torch.Tensor, shape ``(..., m, d)``
    v : torch.Tensor, shape ``(..., m, d_v)``
    mask : torch.Tensor, optional
        Boolean (``True`` = may attend) or additive float mask, broadcastable to ``(..., n, m)``.
    causal : bool
        Query ``i`` attends to keys ``j <= i`` only (top-left aligned).
    scale : float, optional
        Multiplies ``q k^T``; ``1/sqrt(d)`` by default.

    Returns
    -------
    torch.Tensor, shape ``(..., n, d_v)``

    Notes
    -----
    Chapter: notebooks/attention-is-all-you-need.md.
    """
    check_qkv(q, k, v)
    check_bool(causal, "causal")
    n, m = q.shape[-2], k.shape[-2]
    q, k = prescale(
        q, k, default_scale(scale, q.shape[-1])
    )  # q k^T carries the scale, cannot overflow
    if mask is not None:
        mask = check_mask(mask, n, m, q.device, boolean=False)
    if mask is not None and mask.dtype != torch.bool:
        # Additive mask: fold the causal pattern in and guard rows that are entirely -inf.
        if causal:
            mask = mask.masked_fill(~causal_mask(n, m, q.device), float("-inf"))
        dead = torch.isneginf(mask).all(dim=-1, keepdim=True)
        mask = mask.masked_fill(dead, 0.0).to(q.dtype)
        return zero_rows(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0), dead)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal and n > 0, scale=1.0)
    full = combine_masks(mask, causal, n, m, device=q.device)
    row_any = full.any(dim=-1, keepdim=True)
    # Let dead rows attend everywhere (finite softmax), then zero their output.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=full | ~row_any, scale=1.0)
    return zero_rows(out, ~row_any)
