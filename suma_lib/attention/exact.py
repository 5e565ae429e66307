"""Exact (quadratic) softmax attention, with well-defined results for fully masked rows.

Used by every chapter of Part IV; first derived in the chapter ``attention-is-all-you-need``:

.. math:: \\operatorname{Attention}(Q, K, V) = \\operatorname{softmax}\\!\\left(s\\,QK^\\top + M\\right) V,
   \\qquad s = 1/\\sqrt{d_k} \\text{ by default.}

Shapes follow PyTorch's convention: ``q`` is ``(..., n, d)``, ``k`` is ``(..., m, d)``, ``v`` is
``(..., m, d_v)``; leading dimensions (batch, heads, ...) broadcast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._validation import check_tensor

__all__ = ["softmax_attention", "attention_weights", "combine_masks"]


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None) -> None:
    check_tensor(q, "q", min_dim=2, floating=True)
    check_tensor(k, "k", min_dim=2, floating=True)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dimension, got {q.shape[-1]} and {k.shape[-1]}")
    if q.dtype != k.dtype or q.device != k.device:
        raise TypeError(f"q and k must share dtype and device, got {q.dtype}/{q.device} and {k.dtype}/{k.device}")
    if v is not None:
        check_tensor(v, "v", min_dim=2, floating=True)
        if v.shape[-2] != k.shape[-2]:
            raise ValueError(f"k and v must have the same length, got {k.shape[-2]} and {v.shape[-2]}")
        if v.dtype != q.dtype or v.device != q.device:
            raise TypeError(f"v must share q's dtype and device, got {v.dtype}/{v.device}")


def combine_masks(
    mask: torch.Tensor | None,
    causal: bool,
    n: int,
    m: int,
    *,
    device: torch.device,
) -> torch.Tensor | None:
    """Return one boolean mask (``True`` = may attend) for an optional mask and the causal pattern.

    The causal pattern lets query ``i`` see keys ``j <= i`` (top-left aligned, as in
    :func:`torch.nn.functional.scaled_dot_product_attention`).

    Parameters
    ----------
    mask : torch.Tensor or None
        Boolean, broadcastable to ``(..., n, m)``.
    causal : bool
        Whether to add the causal pattern.
    n, m : int
        Query and key lengths.
    device : torch.device
        Where the causal pattern is built (the inputs' device).
    """
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if mask is not None:
        check_tensor(mask, "mask", min_dim=2)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor here, got {mask.dtype}")
        if mask.device != device:
            raise TypeError(f"mask must be on q's device {device}, got {mask.device}")
        if mask.shape[-2] not in (1, n) or mask.shape[-1] not in (1, m):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to (..., {n}, {m})")
    if not causal:
        return mask
    tril = torch.ones(n, m, dtype=torch.bool, device=device).tril()
    return tril if mask is None else mask & tril


def _default_scale(scale: float | None, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def _as_bool_mask(mask: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor | None:
    """Turn an additive float mask into a boolean one where it is only 0 / -inf; keep other floats."""
    if mask is None or mask.dtype == torch.bool:
        return mask
    if not mask.is_floating_point():
        raise TypeError(f"mask must be boolean or floating point, got {mask.dtype}")
    check_tensor(mask, "mask", min_dim=2)
    if mask.device != ref.device:
        raise TypeError(f"mask must be on q's device {ref.device}, got {mask.device}")
    return mask


def _pow2_at_least(x: torch.Tensor) -> torch.Tensor:
    """A power of two near ``x`` (1 where ``x`` is 0): dividing by it is exact in floating point."""
    safe = torch.where(x > 0, x, torch.ones_like(x))
    return torch.exp2(torch.ceil(torch.log2(safe)))


def _prescale(q: torch.Tensor, k: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Return ``(q2, k2)`` with :math:`q_2 k_2^\top = s\,q k^\top` whose product cannot overflow.

    With :math:`a_i = \max_j |q_{ij}|` per query row and :math:`b = \max |k|` per attention matrix,
    :math:`q_2 = (q / a)\,c` and :math:`k_2 = k / b` where :math:`c = s\,a\,b`. Every entry of
    :math:`k_2` and of :math:`q/a` lies in :math:`[-1, 1]`, so :math:`|q_2 k_2^\top| \le d\,|c|`;
    capping :math:`|c|` at the largest float over :math:`d` keeps the logits finite. The cap only acts
    when the logits would overflow, where the softmax is a hard maximum anyway: inputs as large as
    :math:`10^{30}` in float32 then give the limiting (argmax) attention instead of NaN. The scales
    :math:`a, b` are powers of two, so the rescaling is exact: a key that is masked out (but enters
    :math:`b`) cannot change a single bit of the other logits. They are detached, so gradients are those
    of the unscaled product.
    """
    d = q.shape[-1]
    if q.numel() == 0 or k.numel() == 0:  # nothing to overflow (and no maximum to take)
        return q * s, k
    a = _pow2_at_least(q.detach().abs().amax(dim=-1, keepdim=True))
    b = _pow2_at_least(k.detach().abs().amax(dim=(-2, -1), keepdim=True))
    # Half-precision kernels accumulate in float32; the stored q2 must still fit the input dtype.
    acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    c_max = min(torch.finfo(q.dtype).max, torch.finfo(acc).max / max(d, 1))
    c = (a * b * abs(s)).clamp(max=c_max) * (1.0 if s >= 0 else -1.0)
    return q / a * c, k / b


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
    _check_qkv(q, k, None)
    s = _default_scale(scale, q.shape[-1])
    q2, k2 = _prescale(q, k, s)
    logits = torch.matmul(q2, k2.transpose(-2, -1))
    full = combine_masks(mask, causal, q.shape[-2], k.shape[-2], device=q.device)
    if full is None:
        return torch.softmax(logits, dim=-1)
    logits = logits.masked_fill(~full, float("-inf"))
    row_any = full.any(dim=-1, keepdim=True)
    # A fully masked row would be softmax of all -inf = NaN; give it zero logits, then zero weights.
    logits = logits.masked_fill(~row_any, 0.0)
    return torch.softmax(logits, dim=-1).masked_fill(~full, 0.0)


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
    Chapter: ``notebooks/attention-is-all-you-need.ipynb``.
    """
    _check_qkv(q, k, v)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    s = _default_scale(scale, q.shape[-1])
    n, m = q.shape[-2], k.shape[-2]
    q, k = _prescale(q, k, s)  # q k^T now carries the scale and cannot overflow
    s = 1.0
    mask = _as_bool_mask(mask, q)
    if mask is not None and mask.dtype != torch.bool:
        # Additive mask: fold the causal pattern in and guard rows that are entirely -inf.
        if mask.shape[-2] not in (1, n) or mask.shape[-1] not in (1, m):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to (..., {n}, {m})")
        if causal:
            tril = torch.ones(n, m, dtype=torch.bool, device=q.device).tril()
            mask = mask.masked_fill(~tril, float("-inf"))
        dead = torch.isneginf(mask).all(dim=-1, keepdim=True)
        mask = mask.masked_fill(dead, 0.0).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=s)
        return _zero_rows(out, dead)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal and n > 0, scale=s)
    full = combine_masks(mask, causal, n, m, device=q.device)
    assert full is not None
    row_any = full.any(dim=-1, keepdim=True)
    # Let dead rows attend everywhere (finite softmax), then zero their output.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=full | ~row_any, scale=s)
    return _zero_rows(out, ~row_any)


def _zero_rows(out: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """``out`` with the rows marked in ``dead`` set to zero; in place when autograd does not need ``out``."""
    if not out.requires_grad and torch.broadcast_shapes(out.shape, dead.shape) == out.shape:
        return out.masked_fill_(dead, 0.0)  # saves allocating (and page-faulting) a second output
    return out.masked_fill(dead, 0.0)
