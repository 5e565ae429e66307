r"""Numerical rank of attention matrices (Part VI of the book).

An :math:`n\times n` attention matrix built from queries and keys of width :math:`d` has a rank
that depends on how it is built:

* causal softmax attention :math:`A = \operatorname{softmax}(QK^\top/\sqrt d + M)` with the
  causal mask :math:`M` is lower-triangular with a positive diagonal, so
  :math:`\det A = \prod_i A_{ii} > 0` and :math:`\operatorname{rank} A = n`;
* bidirectional softmax attention is :math:`\operatorname{softmax}` of the rank-:math:`d`
  matrix :math:`QK^\top`; it is generically invertible, but when :math:`n \gg d` many of its
  singular values are tiny, so its *numerical* rank can be far below :math:`n`;
* bidirectional linear attention :math:`A = D^{-1}\phi(Q)\phi(K)^\top` (with
  :math:`D = \operatorname{diag}(\phi(Q)\phi(K)^\top\mathbf 1)`) has rank at most the feature width, exactly.

The numerical rank counts singular values above a relative threshold,

.. math:: \operatorname{rank}_\tau(A) = \#\{i : \sigma_i(A) > \tau\,\sigma_1(A)\},
   \qquad \tau = \max(n, m)\,\varepsilon \text{ by default},

with :math:`\varepsilon` the machine epsilon of the input's dtype: the convention of
:func:`numpy.linalg.matrix_rank` and :func:`torch.linalg.matrix_rank`. Singular values of float32
(and lower-precision) inputs are computed in float64 and returned in the input's dtype.

Chapter: notebooks/decoder-only.md
"""

from __future__ import annotations

from typing import Any

import torch

from ._validation import check_bool, check_float, check_tensor
from .attention import attention_weights
from .attention._core import check_qkv

__all__ = [
    "singular_values",
    "rank_threshold",
    "numerical_rank",
    "causal_attention",
    "bidirectional_attention",
    "linear_attention_matrix",
]


def _check_matrix(a: Any, name: str) -> torch.Tensor:
    a = check_tensor(a, name, min_dim=2, floating=True)
    if a.is_complex():
        raise TypeError(f"{name} must be real, got {a.dtype}")
    if a.shape[-1] == 0 or a.shape[-2] == 0:
        raise ValueError(f"{name} must have non-empty matrix dimensions, got {tuple(a.shape)}")
    return a


def singular_values(a: torch.Tensor) -> torch.Tensor:
    r"""Singular values :math:`\sigma_1 \ge \sigma_2 \ge \dots \ge 0` of a batch of matrices.

    Parameters
    ----------
    a : torch.Tensor, shape ``(..., n, m)``
        Real floating-point matrices, finite.

    Returns
    -------
    torch.Tensor, shape ``(..., min(n, m))``
        Descending singular values in ``a``'s dtype and on its device. Inputs below float64 are
        decomposed in float64 (a float32 SVD loses the small singular values the rank depends on).

    Raises
    ------
    TypeError
        If ``a`` is not a real floating-point tensor.
    ValueError
        If ``a`` has fewer than 2 dimensions, an empty matrix dimension or non-finite entries.

    Notes
    -----
    Chapter: notebooks/decoder-only.md
    """
    a = _check_matrix(a, "a")
    check_tensor(a, "a", finite=True)
    work = a if a.dtype == torch.float64 else a.to(torch.float64)
    return torch.linalg.svdvals(work).to(a.dtype)


def rank_threshold(shape: tuple[int, ...], dtype: torch.dtype) -> float:
    r"""The default relative threshold :math:`\tau = \max(n, m)\,\varepsilon_{\text{dtype}}`.

    Parameters
    ----------
    shape : tuple of int
        The matrix shape (its last two entries are used).
    dtype : torch.dtype
        A floating-point dtype; its machine epsilon :math:`\varepsilon` is used.

    Returns
    -------
    float
        The threshold, as in :func:`numpy.linalg.matrix_rank`.

    Chapter: notebooks/decoder-only.md
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if len(shape) < 2:
        raise ValueError(f"shape must have at least 2 entries, got {tuple(shape)}")
    return float(max(shape[-1], shape[-2]) * torch.finfo(dtype).eps)


def numerical_rank(a: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    r"""Numerical rank :math:`\#\{i : \sigma_i > \tau\sigma_1\}` of a batch of matrices.

    Parameters
    ----------
    a : torch.Tensor, shape ``(..., n, m)``
        Real floating-point matrices, finite.
    rtol : float, optional
        The relative threshold :math:`\tau \in [0, 1)`; default :math:`\max(n, m)\,\varepsilon`
        with :math:`\varepsilon` the machine epsilon of ``a``'s dtype (so a float32 matrix is judged
        at float32 precision even though its SVD runs in float64).

    Returns
    -------
    torch.Tensor, shape ``(...)``, dtype int64
        The rank of each matrix; 0 for a zero matrix. On the ``meta`` device, a meta tensor.

    Chapter: notebooks/decoder-only.md
    """
    a = _check_matrix(a, "a")
    if rtol is None:
        tau = rank_threshold(tuple(a.shape), a.dtype)
    else:
        tau = check_float(rtol, "rtol", low=0.0, high=1.0, high_open=True)
    if a.device.type == "meta":
        return torch.empty(a.shape[:-2], dtype=torch.int64, device=a.device)
    s = singular_values(a).to(torch.float64)
    top = s[..., :1]
    return ((s > tau * top) & (s > 0)).sum(-1)


def _check_qk(q: Any, k: Any) -> tuple[torch.Tensor, torch.Tensor]:
    check_qkv(q, k, None)
    return q, k
    return q, k


def causal_attention(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    r"""Causal softmax attention,
    :math:`A_{ij} = e^{s q_i\cdot k_j}/\sum_{l\le i} e^{s q_i\cdot k_l}` for :math:`j \le i`,
    0 above the diagonal.

    Its determinant is :math:`\prod_i A_{ii} > 0`, so it is invertible in exact arithmetic; it can
    still be badly conditioned (tiny diagonal entries), so its *numerical* rank can fall below
    :math:`n` when the logits are large.

    Parameters
    ----------
    q, k : torch.Tensor, shape ``(..., n, d)``
        Queries and keys (same ``n``, broadcastable batch dimensions).
    scale : float, optional
        :math:`s`, default :math:`1/\sqrt d`.

    Returns
    -------
    torch.Tensor, shape ``(..., n, n)``
        Lower-triangular, positive on and below the diagonal, rows summing to one.

    Chapter: notebooks/decoder-only.md
    """
    q, k = _check_qk(q, k)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"q and k must have the same length, got {q.shape[-2]} and {k.shape[-2]}")
    return attention_weights(q, k, causal=True, scale=scale)


def bidirectional_attention(
    q: torch.Tensor, k: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    r"""Bidirectional softmax attention :math:`A = \operatorname{softmax}(s\,QK^\top)` (row-wise).

    Parameters
    ----------
    q : torch.Tensor, shape ``(..., n, d)``
    k : torch.Tensor, shape ``(..., m, d)``
    scale : float, optional
        :math:`s`, default :math:`1/\sqrt d`.

    Returns
    -------
    torch.Tensor, shape ``(..., n, m)``
        Positive entries, rows summing to one.

    Chapter: notebooks/decoder-only.md
    """
    q, k = _check_qk(q, k)
    return attention_weights(q, k, causal=False, scale=scale)


def _elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.elu(x) + 1.0


def linear_attention_matrix(
    q: torch.Tensor,
    k: torch.Tensor,
    causal: bool = False,
    feature_map: Any = None,
) -> torch.Tensor:
    r"""The attention matrix of kernel (linear) attention,
    :math:`A_{ij} = \phi(q_i)\cdot\phi(k_j) / \sum_l \phi(q_i)\cdot\phi(k_l)`.

    The sum runs over all keys (``causal=False``) or over :math:`l \le i` (``causal=True``, then
    :math:`A_{ij} = 0` for :math:`j > i`). Bidirectionally
    :math:`A = D^{-1}\phi(Q)\phi(K)^\top`, so :math:`\operatorname{rank}A \le` the feature width.

    Parameters
    ----------
    q, k : torch.Tensor, shape ``(..., n, d)`` and ``(..., m, d)``
    causal : bool
        Lower-triangular (language-model) form; needs ``n == m``.
    feature_map : callable, optional
        :math:`\phi`, mapping ``(..., d)`` to positive features ``(..., r)``; default
        :math:`\operatorname{elu}(x) + 1` (Katharopoulos et al., 2020).

    Returns
    -------
    torch.Tensor, shape ``(..., n, m)``
        Non-negative, rows summing to one.

    Raises
    ------
    ValueError
        If the features are not positive and finite where a row's normaliser needs them.

    Notes
    -----
    Chapter: notebooks/decoder-only.md
    """
    q, k = _check_qk(q, k)
    causal = check_bool(causal, "causal")
    if feature_map is None:
        feature_map = _elu_plus_one
    elif not callable(feature_map):
        raise TypeError(f"feature_map must be callable, got {type(feature_map).__name__}")
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"causal needs q and k of the same length, got {q.shape[-2]} and {k.shape[-2]}"
        )
    phi_q, phi_k = feature_map(q), feature_map(k)
    if phi_q.device.type != "meta" and phi_q.numel() and phi_k.numel():
        # A_ij is unchanged by a positive factor per query row and by one factor for all keys:
        # scale both to a maximum of 1 so that huge features cannot overflow the product.
        tiny = torch.finfo(phi_q.dtype).tiny
        phi_q = phi_q / phi_q.abs().amax(-1, keepdim=True).clamp_min(tiny)
        phi_k = phi_k / phi_k.abs().amax((-2, -1), keepdim=True).clamp_min(tiny)
    scores = phi_q @ phi_k.mT
    if causal:
        n = q.shape[-2]
        keep = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, 0.0)
    if scores.device.type != "meta" and scores.numel() and not bool((scores >= 0).all()):
        raise ValueError("feature_map must give non-negative features (scores must be >= 0)")
    den = scores.sum(-1, keepdim=True)
    if den.device.type != "meta" and den.numel() and not bool((den > 0).all()):
        raise ValueError("every row needs a positive normaliser: feature_map gave all-zero scores")
    return scores / den
