"""Exact (quadratic) softmax attention, with well-defined results for fully masked rows.

Used by every chapter of Part IV; first derived in the chapter ``attention-is-all-you-need``:

.. math:: \\operatorname{Attention}(Q, K, V) = \\operatorname{softmax}\\!\\left(s\\,QK^\\top +
   M\\right) V,
   \\qquad s = 1/\\sqrt{d_k} \\text{ by default.}

Shapes follow PyTorch's convention: ``q`` is ``(..., n, d)``, ``k`` is ``(..., m, d)``, ``v`` is
``(..., m, d_v)``; leading dimensions (batch, heads, ...) broadcast.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .._numerics import work_dtype
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
    folded into rescaled ``q`` and ``k`` whose product cannot overflow). On the CPU one reduction over
    ``q`` and ``k`` shows when nothing can overflow, and then SDPA gets the inputs and the scale as they
    are; likewise a boolean mask without fully masked rows goes to SDPA unchanged.

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
    s = default_scale(scale, q.shape[-1])
    if _fits(q, k, s):  # SDPA's own scaling cannot overflow: no pass over q to rescale it
        sdpa = functools.partial(F.scaled_dot_product_attention, scale=s)
    else:  # q k^T carries the scale, cannot overflow
        q, k = prescale(q, k, s)
        sdpa = functools.partial(F.scaled_dot_product_attention, scale=1.0)
    if mask is not None:
        mask = check_mask(mask, n, m, q.device, boolean=False)
    if mask is not None and mask.dtype != torch.bool:
        # Additive mask: fold the causal pattern in and guard rows that are entirely -inf.
        if causal:
            mask = mask.masked_fill(~causal_mask(n, m, q.device), float("-inf"))
        dead = torch.isneginf(mask).all(dim=-1, keepdim=True)
        mask = mask.masked_fill(dead, 0.0).to(q.dtype)
        return zero_rows(sdpa(q, k, v, attn_mask=mask), dead)
    if mask is None:
        return sdpa(q, k, v, is_causal=causal and n > 0)
    full = mask & causal_mask(n, m, q.device) if causal else mask
    row_any = full.any(dim=-1, keepdim=True)
    if _all_true(row_any):  # no fully masked row (known without a sync on the CPU): SDPA as it is
        return sdpa(q, k, v, attn_mask=full)
    # Let dead rows attend everywhere (finite softmax), then zero their output.
    out = sdpa(q, k, v, attn_mask=full | ~row_any)
    return zero_rows(out, ~row_any)


def _fits(q: torch.Tensor, k: torch.Tensor, scale: float) -> bool:
    r"""Whether SDPA can take ``scale`` itself: on the CPU (where reading a value costs no device
    synchronisation), True when :math:`\max(1, |s|)\max|q|\max|k|\,d` and :math:`\max(1, |s|)\max|q|`
    stay below the bounds :func:`prescale` enforces, so that ``q k^T`` and ``s q`` cannot overflow
    whichever order the kernel scales in; then :func:`prescale` would leave ``q`` times ``s`` anyway.
    NaN, inf, empty inputs, other devices and ``torch.func`` transforms take the prescaled path."""
    if q.device.type != "cpu" or q.numel() == 0 or k.numel() == 0:
        return False
    try:
        a = max(abs(float(t)) for t in torch.aminmax(q.detach()))
        b = max(abs(float(t)) for t in torch.aminmax(k.detach()))
    except RuntimeError:  # under torch.func.vmap a value cannot steer the control flow
        return False
    f = max(1.0, abs(scale))
    limit = torch.finfo(work_dtype(q.dtype)).max / (2 * q.shape[-1])
    half_max = torch.finfo(q.dtype).max / 2
    return f * a * b <= limit and f * a <= half_max and b <= half_max  # False for NaN and inf


def _all_true(x: torch.Tensor) -> bool:
    """``x.all()`` where reading it is free (CPU, outside ``torch.func`` transforms), else False."""
    if x.device.type != "cpu":
        return False
    try:
        return bool(x.all())
    except RuntimeError:
        return False
