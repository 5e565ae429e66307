r"""What every attention module shares: argument checks, masks, head layout and overflow-safe logits.

Private: the attention modules import from here and never from each other's private names.

Overflow-safe logits. The logits :math:`s\,q_i\cdot k_j` overflow in float32 once :math:`|q|, |k|` reach
about :math:`10^{19}`, and ``inf - inf`` inside the dot product gives NaN. Two ways around it:

* :func:`scaled_logits` (explicit scores). With :math:`a_i` a power of two with
  :math:`\max_t |q_{it}| \le 2a_i` (per query row) and :math:`b` one with :math:`\max |k| \le 2b` (per
  attention matrix), :math:`\hat q = q/a` and :math:`\hat k = k/b` have entries in :math:`[-2, 2]`, so
  :math:`|\hat q_i \cdot \hat k_j| \le 4d`,
  and :math:`s\, q_i \cdot k_j = c_i\, \hat q_i \cdot \hat k_j`
  with :math:`c_i = s\, a_i\, b` computed in float64 (no overflow of :math:`a_i b`,
  no :math:`0 \cdot
  \infty`) and capped at the largest float over :math:`4d`. Dividing by a power of two is exact, so below
  the cap the logits are bit for bit those of ``(q @ k.T) * s``; at the cap the softmax is a hard maximum
  already, and the capped logits give that limit instead of NaN.
* :func:`prescale` (torch's fused kernel, which takes ``q`` and ``k``): ``q`` times a per-row factor
  that equals :math:`s` unless :math:`|s|\max|q_i|\max|k|` could overflow, lowered there just enough.
  One pass over each input, so :func:`~suma_lib.attention.exact.softmax_attention` stays as fast as SDPA.

:func:`masked_softmax` turns such logits into weights: masked entries get weight zero, a fully masked row
gets zeros (never NaN), and infinite logits give the softmax's limit.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F

from .._numerics import work_dtype
from .._validation import (
    check_bool,
    check_compatible,
    check_device,
    check_float,
    check_index_range,
    check_int,
    check_tensor,
)

__all__: list[str] = []  # private module

#: Integer token ids in ``[0, high)`` of at least one dimension (the shared check, with
#: ``min_dim=1``).
check_tokens = functools.partial(check_index_range, min_dim=1)


# ------------------------------------------------------------------------------------------- checks
def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None) -> None:
    """Floating ``q (..., n, d)``, ``k (..., m, d)``, optional ``v (..., m, d_v)`` on one device and dtype.

    Their batch dimensions (all but the last two) must broadcast; a batch of size zero on one tensor
    against a non-trivial one on another is such a mismatch, and raises a :class:`ValueError` here instead
    of a torch error from inside the product.
    """
    check_tensor(q, "q", min_dim=2, floating=True)
    check_tensor(k, "k", min_dim=2, floating=True)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share the last dimension, got {q.shape[-1]} and {k.shape[-1]}"
        )
    if q.shape[-1] == 0:
        raise ValueError("q and k must have a last dimension d >= 1, got d = 0")
    if q.dtype != k.dtype or q.device != k.device:
        raise TypeError(
            f"q and k must share dtype and device, got {q.dtype}/{q.device} and "
            f"{k.dtype}/{k.device}"
        )
    check_compatible(q, k, "q", "k", core_dims=2)
    if v is not None:
        check_tensor(v, "v", min_dim=2, floating=True)
        if v.shape[-2] != k.shape[-2]:
            raise ValueError(
                f"k and v must have the same length, got {k.shape[-2]} and {v.shape[-2]}"
            )
        if v.dtype != q.dtype or v.device != q.device:
            raise TypeError(f"v must share q's dtype and device, got {v.dtype}/{v.device}")
        check_compatible(k, v, "k", "v", core_dims=2)
        check_compatible(q, v, "q", "v", core_dims=2)


def check_same_device(x: torch.Tensor, ref: torch.Tensor, name: str, ref_name: str) -> None:
    """A :class:`TypeError` when ``x`` and ``ref`` live on different devices (e.g. meta and CPU)."""
    if x.device != ref.device:
        raise TypeError(
            f"{name} must be on the device of {ref_name} ({ref.device}), got {x.device}"
        )


def check_module_device(module: torch.nn.Module, x: torch.Tensor, name: str = "x") -> None:
    """A :class:`TypeError` when ``x`` is not on the device of ``module``'s parameters and buffers.

    Torch would raise its own error for a CPU weight on a meta input, or (for modules whose input only
    sets a length) silently return CPU values for a meta input; both become one message naming ``name``.
    A module with neither parameters nor buffers accepts any device.
    """
    for t in itertools.chain(module.parameters(), module.buffers()):
        check_same_device(x, t, name, "the module's parameters")
        return


def default_scale(scale: Any, d: int) -> float:
    """``scale`` as a finite float, :math:`1/\\sqrt{d}` when it is ``None``."""
    if scale is None:
        if d < 1:
            raise ValueError("the default scale 1/sqrt(d) needs d >= 1, got d = 0")
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def former_names(**former: str):
    """Let a constructor accept its arguments' former names too, e.g. ``d_model`` for ``embed_dim``.

    ``@former_names(d_model="embed_dim")`` maps the keyword ``d_model=`` to ``embed_dim=`` (no warning);
    passing both names is a :class:`TypeError`.
    """

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in former.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"pass {new} or its former name {old}, not both")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def check_heads(embed_dim: Any, num_heads: Any) -> tuple[int, int]:
    """``embed_dim`` and ``num_heads`` as ints, the second dividing the first."""
    embed_dim = check_int(embed_dim, "embed_dim", low=1)
    num_heads = check_int(num_heads, "num_heads", low=1)
    if embed_dim % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
    return embed_dim, num_heads


# -------------------------------------------------------------------------------------------- heads
def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(..., n, h * d) -> (..., h, n, d)`` (no checks: callers validate)."""
    return x.unflatten(-1, (num_heads, x.shape[-1] // num_heads)).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(..., h, n, d) -> (..., n, h * d)``, the inverse of :func:`split_heads`."""
    return x.transpose(-3, -2).flatten(-2)


# -------------------------------------------------------------------------------------------- masks
def check_mask(
    mask: Any, n: int, m: int, device: torch.device, *, boolean: bool = True
) -> torch.Tensor:
    """A mask broadcastable to ``(..., n, m)`` on ``device``: boolean, or (``boolean=False``) floating."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    check_tensor(mask, "mask", min_dim=2)
    if mask.dtype != torch.bool and (boolean or not mask.is_floating_point()):
        kinds = "boolean" if boolean else "boolean or floating point (additive)"
        raise TypeError(f"mask must be {kinds}, got {mask.dtype}")
    if mask.device != device:
        raise TypeError(f"mask must be on q's device {device}, got {mask.device}")
    if mask.shape[-2] not in (1, n) or mask.shape[-1] not in (1, m):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to (..., {n}, {m})")
    return mask


def causal_mask(n: int, m: int, device: torch.device) -> torch.Tensor:
    """``True`` where key ``j <= i`` (top-left aligned, as torch's SDPA)."""
    return torch.ones(n, m, dtype=torch.bool, device=device).tril()


def combine_masks(
    mask: torch.Tensor | None, causal: bool, n: int, m: int, *, device: torch.device
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
        Where the causal pattern is built (the inputs' device); ``mask`` must be there too.

    Returns
    -------
    torch.Tensor or None
        ``None`` when there is neither a mask nor the causal pattern.

    Notes
    -----
    Chapter: notebooks/attention-is-all-you-need.md.
    """
    check_bool(causal, "causal")
    device = check_device(device, "device", allow_none=False)
    if mask is not None:
        check_mask(mask, n, m, device)
    if not causal:
        return mask
    tril = causal_mask(n, m, device)
    return tril if mask is None else mask & tril


def both(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """The intersection of two optional boolean masks."""
    if a is None or b is None:
        return b if a is None else a
    return a & b


# ------------------------------------------------------------------------------- overflow-safe
# logits
def _pow2_near(x: torch.Tensor) -> torch.Tensor:
    """A finite power of two ``p > 0`` with ``x / p`` in ``[0, 2]``, for ``x >= 0``."""
    fi = torch.finfo(x.dtype)
    emax = math.frexp(fi.max)[1] - 1  # 2**emax is the largest finite power of two
    return torch.exp2(torch.log2(x.clamp_min(fi.tiny)).ceil().clamp(max=emax))


def _abs_max(x: torch.Tensor, dim) -> torch.Tensor:
    """``max |x|`` over ``dim`` (kept), detached (``abs().amax()`` is far faster than the inf-norm on CPU)."""
    return x.detach().abs().amax(dim=dim, keepdim=True)


def rescale(q: torch.Tensor, k: torch.Tensor, scale: float | torch.Tensor):
    """``q / a``, ``k / b`` and the capped factor ``c = scale * a * b`` (see the module docstring)."""
    d = q.shape[-1]
    a = _pow2_near(_abs_max(q, -1))
    b = _pow2_near(_abs_max(k, (-2, -1)))
    if isinstance(scale, torch.Tensor):
        scale = scale.detach().to(torch.float64)
    # (s a) b in float64: a b cannot overflow for narrower inputs, and no 0 * inf (a, b are finite).
    wide = (lambda t: t) if q.dtype == torch.float64 else (lambda t: t.to(torch.float64))
    c = (wide(a) * scale) * wide(b)
    acc = work_dtype(q.dtype)
    c_max = min(torch.finfo(q.dtype).max / 2, torch.finfo(acc).max / (4 * d))
    return q / a, k / b, c.clamp(-c_max, c_max).to(q.dtype)


def prescale(
    q: torch.Tensor, k: torch.Tensor, scale: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(q2, k)`` with :math:`q_2 k^\top = s\,q k^\top` wherever that is finite, and finite everywhere.

    :math:`q_2 = f\,q` with, per query row, :math:`f_i = s`
    unless :math:`|s|\,\max_t|q_{it}|\,\max|k|`
    could overflow, where :math:`|f_i|` is lowered to the largest value that cannot (the softmax is a
    hard maximum there anyway). One pass over ``q`` and ``k`` each to find the maxima, one to scale ``q``:
    the fast path of :func:`~suma_lib.attention.exact.softmax_attention`. ``scale`` is a float or a
    tensor broadcastable to ``(..., n, 1)`` (one scale per query); the factor is detached, so gradients
    are those of :math:`s\,q k^\top`.
    """
    if q.numel() == 0 or k.numel() == 0:  # nothing to overflow (and no maximum to take)
        return q * scale, k
    work = work_dtype(q.dtype)  # half kernels accumulate in float32
    a = _abs_max(q, -1).to(work)
    b = _abs_max(k, (-2, -1)).to(work)
    limit = torch.finfo(work).max / (2 * q.shape[-1])  # |q2 . k| <= d * limit < max
    cap = (
        torch.minimum(limit / b, b.new_tensor(torch.finfo(q.dtype).max / 2)) / a
    )  # |q2| fits q's dtype
    if isinstance(scale, torch.Tensor):
        f = torch.minimum(cap, scale.detach().abs().to(work)) * torch.sign(scale.detach()).to(work)
    else:
        f = cap.clamp(max=min(abs(scale), torch.finfo(work).max)) * math.copysign(1.0, scale)
    return (q * f if work == q.dtype else (q.to(work) * f).to(q.dtype)), k


def scaled_logits(q: torch.Tensor, k: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    r"""The logits :math:`s\, q k^\top`, shape ``(..., n, m)``, finite for every finite input.

    Bit for bit ``(q @ k.mT) * scale`` wherever that does not overflow; capped where it would. On the CPU
    the plain product is tried first and kept when it is finite (checking is cheap there); elsewhere the
    rescaled product is always used, so that no device synchronisation is needed.
    """
    if q.numel() == 0 or k.numel() == 0:
        return torch.matmul(q, k.transpose(-2, -1)) * scale
    if q.device.type == "cpu":
        logits = torch.matmul(q, k.transpose(-2, -1)) * scale
        try:
            if bool(
                torch.isfinite(logits.sum())
            ):  # one reduction; a finite sum: every entry is finite
                return logits
        except RuntimeError:  # under torch.func.vmap a value cannot steer the control flow
            pass
    q1, k1, c = rescale(q, k, scale)
    return torch.matmul(q1, k1.transpose(-2, -1)) * c


def clamp_finite(x: torch.Tensor) -> torch.Tensor:
    """``x`` with :math:`\\pm\\infty` replaced by the largest finite value of its dtype (NaN stays NaN)."""
    big = torch.finfo(x.dtype).max
    return x.clamp(-big, big)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Softmax over the last axis that never returns NaN for masked rows or infinite logits.

    ``mask`` (boolean, ``True`` = keep) removes the other entries; a row with no allowed entry gets zero
    weights. Infinite logits are clamped to the largest finite value first, which gives the softmax's
    limit: equal weight on the entries at :math:`+\infty`, none elsewhere. NaN logits stay NaN.
    """
    logits = clamp_finite(logits)
    if mask is None:
        return torch.softmax(logits, dim=-1)
    w = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return w.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)


def zero_rows(out: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """``out`` with the rows marked in ``dead`` set to zero; in place when autograd does not need ``out``."""
    if not out.requires_grad and torch.broadcast_shapes(out.shape, dead.shape) == out.shape:
        return out.masked_fill_(dead, 0.0)  # saves allocating (and page-faulting) a second output
    return out.masked_fill(dead, 0.0)


# ------------------------------------------------------------- the kernel (linear) attention engine
def _safe_div(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """``num / den``, but 0 where ``den <= eps`` (a row with no weight); gradient-safe (the other branch never
    sees 0). A NaN denominator is not "no weight": it divides, so NaN in the inputs comes out as NaN."""
    empty = den <= eps
    return torch.where(empty, 0.0, num / torch.where(empty, torch.ones_like(den), den))


def kernel_attention(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    chunk_size: int,
    per_feature: bool = False,
    eps: float | None = None,
) -> torch.Tensor:
    r"""Attention with weights :math:`\phi(q_i)^\top\phi(k_j)` from precomputed features (shared engine).

    ``per_feature=False`` (kernel form): :math:`o_i = \phi_i^\top S / \phi_i^\top z`.
    ``per_feature=True`` (the softmax map): each feature column of ``phi_k`` is normalised over the
    visible keys, :math:`o_i = \sum_f \phi_{if} S_{f\cdot} / z_f`, which is the kernel form with query
    features :math:`\phi_{if} / z_f` and no denominator.
    Features are used as given (stabilise them first); the output has the features' dtype.
    """
    if eps is None:
        eps = torch.finfo(phi_q.dtype).tiny
    if not causal:
        state = torch.matmul(phi_k.transpose(-2, -1), v)  # sum_j phi(k_j) v_j^T   (f, d_v)
        z = phi_k.sum(dim=-2, keepdim=True)  # sum_j phi(k_j)   (1, f)
        if per_feature:
            return torch.matmul(_safe_div(phi_q, z, eps), state)
        return _safe_div(torch.matmul(phi_q, state), torch.matmul(phi_q, z.transpose(-2, -1)), eps)

    if not per_feature:
        return _causal_chunks(phi_q, phi_k, v, chunk_size, eps)
    n = phi_q.shape[-2]
    lead = torch.broadcast_shapes(phi_q.shape[:-2], phi_k.shape[:-2], v.shape[:-2])
    f, dv = phi_q.shape[-1], v.shape[-1]
    state = phi_q.new_zeros(*lead, f, dv)  # S = sum over earlier chunks of phi(k_j) v_j^T
    z = phi_q.new_zeros(*lead, 1, f)  # z = sum over earlier chunks of phi(k_j)
    tril = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=phi_q.device).tril()
    out = phi_q.new_empty(*lead, n, dv)  # filled chunk by chunk
    for s in range(0, n, chunk_size):
        e = min(s + chunk_size, n)  # the last chunk may be shorter: no padding needed
        fq, fk, vc = phi_q[..., s:e, :], phi_k[..., s:e, :], v[..., s:e, :]
        mask = tril[: e - s, : e - s]
        if per_feature:
            zc = z + fk.cumsum(dim=-2)  # normaliser of each feature over the keys j <= i
            fq = _safe_div(fq, zc, eps)
        w = torch.matmul(fq, fk.transpose(-2, -1)).masked_fill(~mask, 0.0)  # exact inside the chunk
        num = torch.matmul(w, vc) + torch.matmul(fq, state)  # ... plus everything before it
        if not per_feature:
            den = w.sum(dim=-1, keepdim=True) + torch.matmul(fq, z.transpose(-2, -1))
            num = _safe_div(num, den, eps)
        out[..., s:e, :] = num
        state = state + torch.matmul(
            fk.transpose(-2, -1), vc
        )  # S <- S + sum_{j in chunk} phi(k_j) v_j^T
        z = z + fk.sum(dim=-2, keepdim=True)
    return out


def _causal_chunks(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, chunk_size: int, eps: float
) -> torch.Tensor:
    r"""Causal kernel attention, all chunks at once (no loop over the sequence).

    With chunks of :math:`C` positions (the last one padded with zero features, which weigh nothing),
    chunk :math:`c` gets the exact masked quadratic form inside it plus the state of every earlier chunk:

    .. math:: o_i = \frac{\sum_{j \le i,\ j \in c} w_{ij} v_j + \phi(q_i)^\top S_{<c}}
       {\sum_{j \le i,\ j \in c} w_{ij} + \phi(q_i)^\top z_{<c}}, \qquad
       S_{<c} = \sum_{c' < c} \phi(K_{c'})^\top V_{c'},

    the exclusive prefix sums :math:`S_{<c}`, :math:`z_{<c}` taken over the :math:`n/C` chunk states by one
    ``cumsum`` (the chunkwise form of the later linear-attention literature). A handful of batched matrix
    products whatever :math:`n`; the extra memory is :math:`(n/C)\,f\,d_v + n\,C`, linear in :math:`n`.
    """
    n = phi_q.shape[-2]
    lead = torch.broadcast_shapes(phi_q.shape[:-2], phi_k.shape[:-2], v.shape[:-2])
    c = min(chunk_size, max(n, 1))
    pad = (-n) % c
    dv = v.shape[-1]
    # values with a column of ones: the same products then give the denominators (last column)
    fq, fk = (t.expand(*lead, *t.shape[-2:]) for t in (phi_q, phi_k))
    vc = torch.cat([v.expand(*lead, *v.shape[-2:]), v.new_ones(*lead, n, 1)], dim=-1)
    if pad:
        fq, fk, vc = (F.pad(t, (0, 0, 0, pad)) for t in (fq, fk, vc))
    chunks = (n + pad) // c
    f = fq.shape[-1]
    fq = fq.reshape(*lead, chunks, c, f)
    fk = fk.reshape(*lead, chunks, c, f)
    vc = vc.reshape(*lead, chunks, c, dv + 1)
    tril = torch.ones(c, c, dtype=torch.bool, device=fq.device).tril()
    w = torch.matmul(fq, fk.transpose(-2, -1)).masked_fill_(~tril, 0.0)  # exact inside each chunk
    states = torch.matmul(fk.transpose(-2, -1), vc)  # (..., chunks, f, d_v + 1): [S_c, z_c]
    # exclusive prefix over chunks, by a shifted cumsum (no subtraction: NaN and inf stay in their
    # place)
    before = F.pad(torch.cumsum(states[..., :-1, :, :], dim=-3), (0, 0, 0, 0, 1, 0))
    num = torch.matmul(w, vc).add_(torch.matmul(fq, before))
    out = _safe_div(num[..., :dv], num[..., dv:], eps).reshape(*lead, chunks * c, dv)
    return out[..., :n, :] if pad else out


def check_kernel_args(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    chunk_size: int,
    key_mask: torch.Tensor | None,
    eps: float | None,
) -> None:
    """The arguments shared by the kernel attentions (linear, FAVOR+, FAVOR++)."""
    check_qkv(q, k, v)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    check_int(chunk_size, "chunk_size", low=1)
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"causal attention needs as many queries as keys, got q length {q.shape[-2]} and k "
            "length "
            f"{k.shape[-2]}"
        )
    if key_mask is not None:
        check_tensor(key_mask, "key_mask", min_dim=1)
        if key_mask.dtype != torch.bool:
            raise TypeError(
                f"key_mask must be a boolean tensor (True = keep), got {key_mask.dtype}"
            )
        if key_mask.shape[-1] != k.shape[-2]:
            raise ValueError(
                f"key_mask must have the keys' length {k.shape[-2]} as its last dimension, got "
                "shape "
                f"{tuple(key_mask.shape)}"
            )
        if key_mask.device != k.device:
            raise TypeError(f"key_mask must be on k's device {k.device}, got {key_mask.device}")
    if eps is not None:
        check_float(eps, "eps", low=0.0)


class LayerNorm(torch.nn.LayerNorm):
    r""":class:`torch.nn.LayerNorm` that stays finite when :math:`\sum_t x_t^2` would overflow.

    Rows whose largest entry exceeds :math:`\sqrt{\text{max}/(4D)}` (:math:`D` normalised entries) are
    normalised as :math:`\hat c / \sqrt{\overline{\hat c^2} + \epsilon/t^2}`
    with :math:`c = x - \mu`
    (:math:`\mu` taken from :math:`x/s`) and :math:`\hat c = c/t`, :math:`s, t` powers of two; every other
    row is exactly torch's. On the CPU the safe path runs only when such a row exists; it computes in
    float64 (where the device has it), so that a row of equal entries gives exactly the bias.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0 or x.device.type == "meta" or not x.is_floating_point():
            return super().forward(x)
        dims = tuple(range(-len(self.normalized_shape), 0))
        work = work_dtype(x.dtype)
        size = math.prod(self.normalized_shape)
        limit = math.sqrt(torch.finfo(work).max / (4 * size))
        big = _abs_max(x, dims).to(work) > limit
        if x.device.type == "cpu":
            try:
                if not bool(big.any()):
                    return super().forward(x)
            except RuntimeError:  # under torch.func.vmap
                pass
        plain = super().forward(torch.where(big, torch.zeros_like(x), x))  # no NaN in its gradient
        # the safe path in float64 (MPS has none): the mean of equal entries is exact, and so is x -
        # mu
        xw = x.to(work if x.device.type == "mps" else torch.float64)
        s = _pow2_near(_abs_max(xw, dims))
        c = xw - (xw / s).mean(dims, keepdim=True) * s
        t = _pow2_near(_abs_max(c, dims))
        ct = c / t
        y = ct * torch.rsqrt((ct * ct).mean(dims, keepdim=True) + (math.sqrt(self.eps) / t) ** 2)
        y = y.to(x.dtype)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return torch.where(big, y, plain)


def randn(shape: tuple[int, ...], std: float, generator, device, dtype) -> torch.Tensor:
    """Normal draws through an optional generator (on the generator's device), moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    if gen_device is not None and torch.device(gen_device).type == "meta":
        gen_device = None
    draw = torch.randn(
        shape, generator=generator, device=gen_device, dtype=dtype or torch.get_default_dtype()
    )
    return (draw * std).to(device=device)
