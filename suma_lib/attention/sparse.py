r"""Sparse attention patterns: atrous, local, strided and fixed masks, and windowed attention.

Chapter: notebooks/sparse-attention.md (Su Jianlin, *From standard attention to sparse attention*,
2019; Child et al., *Generating Long Sequences with Sparse Transformers*, arXiv:1904.10509).

Every pattern is an ``(n, n)`` boolean mask with ``True`` where query ``i`` may attend to key ``j``, so it
can be passed as the ``mask`` of :func:`~suma_lib.attention.exact.softmax_attention`. Writing
:math:`d = i - j` for the relative offset:

.. math::

   \text{atrous}_k:\; k \mid d, \qquad
   \text{local}_k:\; |d| \le k, \qquad
   \text{strided}_k:\; |d| < k \;\lor\; k \mid d, \qquad
   \text{fixed}_{k,c}:\; \lfloor i/k \rfloor = \lfloor j/k \rfloor \;\lor\; (j \bmod k) \ge k - c,

each intersected with :math:`d \ge 0` when ``causal=True``. :func:`local_attention` computes local
attention without ever forming the :math:`n \times n` matrix, and :func:`reachability` composes the
masks of successive layers to tell which input tokens can influence which outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._validation import check_device, check_int, check_tensor
from ._core import check_bool, check_qkv, default_scale, masked_softmax, prescale
from .exact import softmax_attention

__all__ = [
    "atrous_mask",
    "fixed_mask",
    "local_attention",
    "local_mask",
    "reachability",
    "strided_mask",
]


# ------------------------------------------------------------------------------------------ helpers
def _grid(
    n: int, k: int, causal: bool, device: torch.device | str | None, *, k_low: int
) -> tuple[int, bool, torch.Tensor, torch.Tensor]:
    """Validate a mask's arguments; return ``k``, ``causal`` and the indices ``i`` ``(n, 1)``, ``j`` ``(1, n)``."""
    n = check_int(n, "n", low=0)
    k = check_int(k, "k", low=k_low)
    causal = check_bool(causal, "causal")
    idx = torch.arange(n, device=check_device(device))
    return k, causal, idx[:, None], idx[None, :]


# ------------------------------------------------------------------------------------------- masks
def atrous_mask(
    n: int, k: int, causal: bool = False, *, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""Atrous (dilated) pattern: query :math:`i` sees keys at
    offsets :math:`0, \pm k, \pm 2k, \dots`.

    .. math:: M_{ij} = [\,(i - j) \bmod k = 0\,]

    Its number of allowed pairs is :math:`n^2/k + s(k-s)/k` with :math:`s = n \bmod k`, i.e.
    :math:`O(n^2/k)`.

    Parameters
    ----------
    n : int
        Sequence length (>= 0).
    k : int
        Dilation (stride), >= 1; ``k = 1`` is full attention.
    causal : bool
        Keep only keys ``j <= i``.
    device : torch.device or str, optional
        Where to build the mask.

    Returns
    -------
    torch.Tensor, shape ``(n, n)``, dtype ``bool``

    Notes
    -----
    Chapter: notebooks/sparse-attention.md.
    """
    k, causal, i, j = _grid(n, k, causal, device, k_low=1)
    m = torch.remainder(i - j, k) == 0
    return m & (j <= i) if causal else m


def local_mask(
    n: int, k: int, causal: bool = False, *, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""Local self-attention pattern: query :math:`i` sees the :math:`k` keys on each side and itself.

    .. math:: M_{ij} = [\,|i - j| \le k\,] \quad (\text{causal: } 0 \le i - j \le k)

    Its number of allowed pairs is :math:`(2m+1)n - m(m+1)` with :math:`m = \min(k, n-1)`, i.e.
    :math:`O((2k+1)n)`.

    Parameters
    ----------
    n : int
        Sequence length (>= 0).
    k : int
        Half-width of the window (>= 0); ``k = 0`` lets each token see only itself.
    causal : bool
        Keep only keys ``j <= i`` (a window of ``k + 1`` keys ending at ``i``).
    device : torch.device or str, optional
        Where to build the mask.

    Returns
    -------
    torch.Tensor, shape ``(n, n)``, dtype ``bool``

    Notes
    -----
    Chapter: notebooks/sparse-attention.md.
    """
    k, causal, i, j = _grid(n, k, causal, device, k_low=0)
    d = i - j
    return (d >= 0) & (d <= k) if causal else d.abs() <= k


def strided_mask(
    n: int, k: int, causal: bool = False, *, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""The Sparse Transformer's *strided* pattern: a local band of width ``k`` plus every ``k``-th offset.

    .. math:: M_{ij} = [\,|i - j| < k\,] \lor [\,(i - j) \bmod k = 0\,]

    the union of :func:`local_mask` with half-width ``k - 1`` and :func:`atrous_mask` with stride ``k``
    (they share only the diagonal), so it allows :math:`(2k-1)n - k(k-1) + n^2/k + s(k-s)/k - n` pairs for
    :math:`n \ge k`, :math:`s = n \bmod k`; with :math:`k \approx \sqrt{n/2}` that
    is :math:`O(n\sqrt{n})`.

    Parameters
    ----------
    n : int
        Sequence length (>= 0).
    k : int
        Stride and band width, >= 1.
    causal : bool
        Keep only keys ``j <= i`` (Child et al.'s autoregressive version).
    device : torch.device or str, optional
        Where to build the mask.

    Returns
    -------
    torch.Tensor, shape ``(n, n)``, dtype ``bool``

    Notes
    -----
    Chapter: notebooks/sparse-attention.md.
    """
    n = check_int(n, "n", low=0)
    k = check_int(k, "k", low=1)
    return local_mask(n, k - 1, causal, device=device) | atrous_mask(n, k, causal, device=device)


def fixed_mask(
    n: int, k: int, c: int = 1, causal: bool = False, *, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""The Sparse Transformer's *fixed* pattern: the own block of ``k`` tokens plus "summary" columns.

    .. math:: M_{ij} = [\,\lfloor i/k \rfloor = \lfloor j/k \rfloor\,] \lor [\,(j \bmod k) \ge k -
       c\,]

    The last ``c`` positions of every block are summary columns that every query may read.

    Parameters
    ----------
    n : int
        Sequence length (>= 0).
    k : int
        Block length, >= 1.
    c : int
        Number of summary positions per block, ``1 <= c <= k``.
    causal : bool
        Keep only keys ``j <= i``.
    device : torch.device or str, optional
        Where to build the mask.

    Returns
    -------
    torch.Tensor, shape ``(n, n)``, dtype ``bool``

    Notes
    -----
    Chapter: notebooks/sparse-attention.md.
    """
    k, causal, i, j = _grid(n, k, causal, device, k_low=1)
    c = check_int(c, "c", low=1, high=k)
    m = (torch.div(i, k, rounding_mode="floor") == torch.div(j, k, rounding_mode="floor")) | (
        torch.remainder(j, k) >= k - c
    )
    return m & (j <= i) if causal else m


# ---------------------------------------------------------------------------------------
# reachability
def reachability(masks: Sequence[torch.Tensor], residual: bool = False) -> torch.Tensor:
    r"""Which inputs can influence which outputs after a stack of attention layers.

    With the layers' masks :math:`M^{(1)}, \dots, M^{(L)}` (first layer first), output :math:`i` of the
    last layer depends on input :math:`j` iff there is a
    path :math:`j = t_0 \to t_1 \to \dots \to t_L = i`
    with :math:`M^{(l)}_{t_l t_{l-1}}` true for every layer, i.e. iff the boolean product

    .. math:: R = M^{(L)} \cdots M^{(2)} M^{(1)}

    has :math:`R_{ij}` true. ``residual=True`` adds the identity to every layer (a residual connection
    lets a token keep its own information even where the mask hides the diagonal).

    Parameters
    ----------
    masks : Sequence[torch.Tensor]
        At least one boolean tensor of shape ``(..., n, n)`` (leading dimensions broadcast).
    residual : bool
        Use :math:`M^{(l)} \lor I` for every layer.

    Returns
    -------
    torch.Tensor, shape ``(..., n, n)``, dtype ``bool``

    Notes
    -----
    Chapter: notebooks/sparse-attention.md.
    """
    if isinstance(masks, torch.Tensor) or not isinstance(masks, Sequence) or len(masks) == 0:
        raise TypeError("masks must be a non-empty sequence (list or tuple) of boolean tensors")
    residual = check_bool(residual, "residual")
    n = None
    for idx, m in enumerate(masks):
        check_tensor(m, f"masks[{idx}]", min_dim=2)
        if m.dtype != torch.bool:
            raise TypeError(f"masks[{idx}] must be a boolean tensor, got {m.dtype}")
        if m.shape[-1] != m.shape[-2] or (n is not None and m.shape[-1] != n):
            raise ValueError(
                f"masks[{idx}] must be square (..., n, n) with the same n, got {tuple(m.shape)}"
            )
        if m.device != masks[0].device:
            raise TypeError(
                f"masks[{idx}] must be on the device of masks[0] ({masks[0].device}), got "
                f"{m.device}"
            )
        n = m.shape[-1]
    # Counts of paths are at most n**L, but only their positivity matters: clamp to 0/1 after each
    # step,
    # so float32 stays exact for any n < 2**24.
    eye = torch.eye(n, dtype=torch.bool, device=masks[0].device)
    out = masks[0] | eye if residual else masks[0]
    for m in masks[1:]:
        m = m | eye if residual else m
        out = torch.matmul(m.to(torch.float32), out.to(torch.float32)) > 0
    return out.clone() if out is masks[0] else out


# ------------------------------------------------------------------------------------ local
# attention
def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    r"""Local (banded) softmax attention in :math:`O(n \cdot \text{window})` time and memory.

    .. math:: o_i = \sum_{j:\,|i-j| \le w} \frac{e^{s\, q_i \cdot k_j}}{\sum_{j':\,|i-j'| \le w}
       e^{s\, q_i \cdot k_{j'}}}\, v_j

    (with :math:`0 \le i - j \le w` when ``causal``). The sequence is cut into blocks of :math:`b = w`
    positions; the queries of block :math:`t` only need the keys of blocks :math:`t-1, t, t+1` (only
    :math:`t-1, t` when causal), so each block is one small matrix product of :math:`b \times 3b` scores,
    masked to the band. The :math:`n \times n` matrix is never formed: the work is
    :math:`4 \cdot 3 n w d` multiply-adds (:math:`4 \cdot 2nwd` causal) for :math:`w \mid n`, and the memory
    :math:`O(n w + n d)`. When the band covers the whole sequence (:math:`2w + 1 \ge n`) the exact masked
    form is used instead. The result equals
    ``softmax_attention(q, k, v, mask=local_mask(n, window, causal))``.

    Parameters
    ----------
    q, k, v : torch.Tensor
        Shapes ``(..., n, d)``, ``(..., n, d)`` and ``(..., n, d_v)`` (self-attention: one length ``n``);
        leading dimensions broadcast.
    window : int
        Half-width :math:`w \ge 0` of the band.
    causal : bool
        Attend only to keys ``j <= i``.
    scale : float, optional
        Multiplies the logits; :math:`1/\sqrt{d}` by default.

    Returns
    -------
    torch.Tensor, shape ``(..., n, d_v)``

    Notes
    -----
    Chapter: notebooks/sparse-attention.md.
    """
    check_qkv(q, k, v)
    if k.shape[-2] != q.shape[-2]:
        raise ValueError(
            f"q and k must have the same length for local attention, got {q.shape[-2]} and "
            f"{k.shape[-2]}"
        )
    window = check_int(window, "window", low=0)
    causal = check_bool(causal, "causal")
    s = default_scale(scale, q.shape[-1])
    n = q.shape[-2]
    if 2 * window + 1 >= n:  # the band is (nearly) everything: the exact masked form is as cheap
        return softmax_attention(
            q, k, v, mask=local_mask(n, window, causal, device=q.device), scale=s
        )
    q, k = prescale(q, k, s)  # the same overflow-safe logits as softmax_attention's, scale included
    b = max(window, 1)  # block length
    m = -(-n // b)  # number of blocks
    extra = m * b - n
    left = 1 if causal else 2  # blocks of keys each query block needs: t-1, t (, t+1)
    # Pad keys/values with one block before and (non-causal) one after, then view them as blocks.
    kb = F.pad(k, (0, 0, b, extra + (0 if causal else b))).unflatten(-2, (-1, b))
    vb = F.pad(v, (0, 0, b, extra + (0 if causal else b))).unflatten(-2, (-1, b))
    kw = torch.cat(
        [kb[..., t : t + m, :, :] for t in range(left + 1)], dim=-2
    )  # (..., m, (left+1) b, d)
    vw = torch.cat([vb[..., t : t + m, :, :] for t in range(left + 1)], dim=-2)
    qb = F.pad(q, (0, 0, 0, extra)).unflatten(-2, (m, b))  # (..., m, b, d)
    logits = torch.matmul(qb, kw.transpose(-2, -1))  # (..., m, b, (left+1) b)
    # Query position t*b + r, key position (t-1)*b + c: offset i - j = r - c + b.
    r = torch.arange(b, device=q.device)[:, None]
    c = torch.arange((left + 1) * b, device=q.device)[None, :]
    off = r - c + b
    band = (off >= 0) & (off <= window) if causal else off.abs() <= window
    key_pos = torch.arange(m, device=q.device)[:, None, None] * b - b + c  # (m, 1, (left+1) b)
    valid = band & (key_pos >= 0) & (key_pos < n)  # (m, b, (left+1) b)
    out = torch.matmul(masked_softmax(logits, valid), vw)  # (..., m, b, d_v)
    return out.flatten(-3, -2)[..., :n, :]
