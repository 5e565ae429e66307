r"""Linear (kernelised) attention: replace :math:`e^{q\cdot k}` by :math:`\phi(q)^\top\phi(k)`.

Chapter: notebooks/linear-attention.md (Su Jianlin, 《线性Attention的探索:Attention必须有个Softmax吗?》,
2020-07-04, https://kexue.fm/archives/7546).

With any similarity that factorises as :math:`\operatorname{sim}(q, k) = \phi(q)^\top\phi(k) \ge 0`, the
attention output

.. math:: o_i = \frac{\sum_j \phi(q_i)^\top\phi(k_j)\, v_j}{\sum_j \phi(q_i)^\top\phi(k_j)}
   = \frac{\phi(q_i)^\top \left(\sum_j \phi(k_j) v_j^\top\right)}{\phi(q_i)^\top \sum_j \phi(k_j)}

costs :math:`O(n f d_v)` instead of :math:`O(n^2)`, because the bracket is computed once (associativity of
the matrix product). Causally, the bracket becomes the running state
:math:`S_i = S_{i-1} + \phi(k_i) v_i^\top` (and :math:`z_i = z_{i-1} + \phi(k_i)` for the denominator).

This module computes that state chunk by chunk: inside a chunk of ``chunk_size`` positions the masked
quadratic form is exact and cheap; across chunks only the :math:`f \times d_v` state and the length-:math:`f`
normaliser are carried. Time is linear in :math:`n` and the extra memory is
:math:`O(\text{chunk}^2 + f d_v)`; the :math:`n \times f \times d_v` tensor of prefix sums is never formed.

Shapes follow PyTorch's convention: ``q`` is ``(..., n, d)``, ``k`` is ``(..., m, d)``, ``v`` is
``(..., m, d_v)``; leading dimensions broadcast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._numerics import safe_divisor, work_dtype
from .._validation import check_choice, check_tensor
from ._core import check_kernel_args, kernel_attention

__all__ = [
    "FEATURE_MAPS",
    "elu_feature_map",
    "linear_attention",
    "taylor_feature_map",
]

FeatureMap = str | Callable[[torch.Tensor], torch.Tensor]

#: The named feature maps accepted by :func:`linear_attention`.
FEATURE_MAPS = ("elu", "softmax", "taylor", "cosine")

DEFAULT_CHUNK = 64


# ----------------------------------------------------------------------------------------- feature
# maps
def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    r"""The feature map :math:`\phi(x) = \operatorname{elu}(x) + 1` of Katharopoulos et al. (2020).

    .. math:: \phi(x)_i = \begin{cases} 1 + x_i & x_i > 0 \\ e^{x_i} & x_i \le 0 \end{cases}

    It is positive wherever :math:`e^{x_i}` does not underflow (and never negative), so
    :math:`\phi(q)^\top\phi(k) \ge 0`.

    Parameters
    ----------
    x : torch.Tensor, shape ``(..., d)``
        Floating-point queries or keys.

    Returns
    -------
    torch.Tensor, shape ``(..., d)``

    Notes
    -----
    Chapter: notebooks/linear-attention.md.
    """
    check_tensor(x, "x", min_dim=1, floating=True)
    return F.elu(x) + 1.0


def taylor_feature_map(x: torch.Tensor) -> torch.Tensor:
    r"""Features of the first-order Taylor similarity :math:`1 + \hat q^\top \hat k` (also "cosine").

    With :math:`\hat x = x / \lVert x \rVert`, :math:`\phi(x) = [1, \hat x]` gives
    :math:`\phi(q)^\top\phi(k) = 1 + \cos\angle(q, k) \in [0, 2]`: the truncated Taylor series of
    :math:`e^{q\cdot k}` made non-negative by normalising :math:`q` and :math:`k` (Cauchy--Schwarz).
    The entries of :math:`\phi` may be negative; the similarity is not. A zero vector gets
    :math:`\hat x = 0` (similarity 1 with everything). The norm is taken after dividing by
    :math:`\max_i |x_i|`, so :math:`|x| = 10^{30}` does not overflow.

    Parameters
    ----------
    x : torch.Tensor, shape ``(..., d)``

    Returns
    -------
    torch.Tensor, shape ``(..., d + 1)``

    Notes
    -----
    Chapter: notebooks/linear-attention.md.
    """
    check_tensor(x, "x", min_dim=1, floating=True)
    if x.shape[-1] == 0:
        raise ValueError("x must have a last dimension d >= 1, got d = 0")
    big = x.abs().amax(dim=-1, keepdim=True)
    xs = x / safe_divisor(big)
    norm = torch.linalg.vector_norm(xs, dim=-1, keepdim=True)
    unit = xs / safe_divisor(norm)
    return torch.cat([torch.ones_like(unit[..., :1]), unit], dim=-1)


def _stabilise_keys(phi_k: torch.Tensor) -> torch.Tensor:
    """Divide key features by their largest magnitude over keys and features (a detached constant).

    Every term of a row's numerator and denominator carries this one positive factor, so it cancels.
    """
    # max |.|, ignoring NaN (a NaN key must not switch the stabilisation off for the others; it
    # reaches the
    # output through its own weight)
    big = phi_k.detach().nan_to_num(nan=0.0).abs_().amax(dim=(-2, -1), keepdim=True)
    return phi_k / safe_divisor(big)


def _stabilise_queries(phi_q: torch.Tensor) -> torch.Tensor:
    """Divide each query's features by their largest magnitude (a detached per-row constant)."""
    big = phi_q.detach().abs().amax(dim=-1, keepdim=True)  # max |.|
    return phi_q / safe_divisor(big)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: FeatureMap = "elu",
    causal: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    key_mask: torch.Tensor | None = None,
    eps: float | None = None,
) -> torch.Tensor:
    r"""Linear
    attention :math:`o_i = \sum_j \phi(q_i)^\top\phi(k_j) v_j / \sum_j \phi(q_i)^\top\phi(k_j)`.

    Costs :math:`O(n f d_v)` time by computing :math:`\phi(K)^\top V` first; with ``causal=True`` the sums
    run over :math:`j \le i` and are carried chunk by chunk (exact masked attention inside each chunk, the
    running state :math:`S = \sum_j \phi(k_j) v_j^\top`, :math:`z = \sum_j \phi(k_j)` across chunks), so
    time and memory stay linear in :math:`n`.

    Parameters
    ----------
    q : torch.Tensor, shape ``(..., n, d)``
    k : torch.Tensor, shape ``(..., m, d)``
    v : torch.Tensor, shape ``(..., m, d_v)``
        Floating point, same dtype and device; leading dimensions broadcast.
    feature_map : {"elu", "softmax", "taylor", "cosine"} or callable
        ``"elu"``: :math:`\phi(x) = \operatorname{elu}(x) + 1` (:func:`elu_feature_map`).
        ``"taylor"`` (alias ``"cosine"``): :math:`1 + \hat q^\top\hat k`
        (:func:`taylor_feature_map`).
        ``"softmax"``: Shen et
        al.'s :math:`\operatorname{softmax}_2(Q)\operatorname{softmax}_1(K)^\top V`,
        softmax of each query over its features and of each key feature over the (visible) sequence.
        This one is *not* of the form :math:`\phi(q)^\top\phi(k)/\text{normaliser}`: the sequence softmax
        normalises every feature column
        separately, :math:`o_i = \sum_f \operatorname{softmax}(q_i)_f
        \sum_j e^{k_{jf}} v_j / \sum_j
        e^{k_{jf}}`; its rows sum to one without a denominator. Causally
        the column sums run over :math:`j \le i`.
        A callable maps ``(..., L, d)`` to non-negative features ``(..., L, f)``; it is applied to
        ``q`` and ``k`` alike.
    causal : bool
        Query ``i`` attends to keys ``j <= i`` only (needs ``n == m``).
    chunk_size : int
        Positions per chunk in the causal form (ignored otherwise); ``n`` need not be a multiple.
    key_mask : torch.Tensor, optional
        Boolean ``(..., m)``, ``True`` for keys that may be attended to. A query that sees no key gets a
        zero output (not NaN). NaN in ``q``, ``k`` or ``v`` is never read as "no weight": it comes out as
        NaN in every output it reaches (with ``causal=True`` possibly also at earlier positions of its
        chunk, since the masked products ``0 * NaN`` inside a chunk are NaN).
    eps : float, optional
        A row whose denominator is ``<= eps`` is treated as having no keys and returns zeros. The
        denominator is measured after the stabilisation below (largest key feature and each query's
        largest feature equal 1), so the default, the smallest normal number of the compute dtype,
        only catches rows whose weights are all exactly (or sub-normally) zero; it adds no bias.

    Returns
    -------
    torch.Tensor, shape ``(..., n, d_v)``
        In the dtype of ``q``; float16/bfloat16 inputs are accumulated in float32.

    Notes
    -----
    Overflow is avoided by dividing each query's features by their largest magnitude and all key
    features by one global (per batch entry) largest magnitude; both are positive constants of a row's
    numerator and denominator and cancel exactly (for ``"softmax"``, :math:`e^{k_{jf}}` is computed as
    :math:`e^{k_{jf} - \max_j k_{jf}}`). Keys whose features are below about :math:`10^{-38}` of the
    largest one (float32) then contribute nothing.

    Chapter: notebooks/linear-attention.md.
    """
    check_kernel_args(q, k, v, causal, chunk_size, key_mask, eps)
    if isinstance(feature_map, str):
        check_choice(feature_map, "feature_map", FEATURE_MAPS)
    elif not callable(feature_map):
        raise TypeError(
            f"feature_map must be one of {FEATURE_MAPS} or a callable, got "
            f"{type(feature_map).__name__}"
        )
    dtype = work_dtype(q.dtype)
    qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
    keep = None if key_mask is None else key_mask.unsqueeze(-1)
    per_feature = feature_map == "softmax"
    if per_feature:
        phi_q = torch.softmax(qc, dim=-1)
        logits = kc if keep is None else torch.where(keep, kc, torch.full_like(kc, float("-inf")))
        top = logits.detach().amax(
            dim=-2, keepdim=True
        )  # per-feature max over the keys; cancels in ratio
        phi_k = torch.exp(logits - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
    else:
        fmap = {
            "elu": elu_feature_map,
            "taylor": taylor_feature_map,
            "cosine": taylor_feature_map,
        }.get(
            feature_map,
            feature_map,  # type: ignore[arg-type]
        )
        phi_q, phi_k = fmap(qc), fmap(kc)
        _check_features(phi_q, phi_k, q, k, user=not isinstance(feature_map, str))
        if keep is not None:
            phi_k = torch.where(keep, phi_k, torch.zeros_like(phi_k))
        phi_q = _stabilise_queries(
            phi_q
        )  # one at a time: the unscaled copy is freed before the next
        phi_k = _stabilise_keys(phi_k)
    out = kernel_attention(
        phi_q, phi_k, vc, causal=causal, chunk_size=chunk_size, per_feature=per_feature, eps=eps
    )
    return out.to(q.dtype)


def _check_features(
    phi_q: torch.Tensor, phi_k: torch.Tensor, q: torch.Tensor, k: torch.Tensor, user: bool
) -> None:
    """Check what a feature map returned: shapes, dtype and (for user callables) non-negativity."""
    for name, phi, x in (("phi(q)", phi_q, q), ("phi(k)", phi_k, k)):
        if not isinstance(phi, torch.Tensor):
            raise TypeError(
                f"feature_map must return a torch.Tensor for {name}, got {type(phi).__name__}"
            )
        if phi.shape[:-1] != x.shape[:-1]:
            raise ValueError(
                f"feature_map changed the leading shape of {name}: {tuple(x.shape)} -> "
                f"{tuple(phi.shape)}"
            )
        if not phi.is_floating_point():
            raise TypeError(f"feature_map must return floating-point features, got {phi.dtype}")
        if user and phi.device.type != "meta" and phi.numel() and bool((phi < 0).any()):
            raise ValueError(
                f"feature_map must return non-negative features; {name} has negative entries"
            )
        if (
            user
            and phi.device.type != "meta"
            and phi.numel()
            and not bool(torch.isfinite(phi).all())
        ):
            raise ValueError(f"feature_map returned non-finite features for {name}")
    if phi_q.shape[-1] != phi_k.shape[-1]:
        raise ValueError(
            f"feature_map gave {phi_q.shape[-1]} features for q but {phi_k.shape[-1]} for k"
        )


# -----------------------------------------------------------------------------------------
# measuring
