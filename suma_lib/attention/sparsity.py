r"""How concentrated an attention row is: the :math:`\ell_1/\ell_2` sparsity measure.

Chapter: notebooks/attention-focus.md.

For a row :math:`x = (x_1, \dots, x_n)` of attention scores (normalised or not, of any sign),

.. math:: S(x) = \frac{\frac{1}{n}\sum_j |x_j|}{\sqrt{\frac{1}{n}\sum_j x_j^2}}
   = \frac{\|x\|_1}{\sqrt{n}\,\|x\|_2} \in \Big[\tfrac{1}{\sqrt{n}}, 1\Big],

the empirical version of :math:`\mathbb{E}|x| / \sqrt{\mathbb{E}\,x^2}`. It is 1 for a row of equal
magnitudes and :math:`1/\sqrt{n}` for a one-hot row; it does not change when the row is multiplied by a
non-zero constant, so the softmax normaliser plays no role. For a probability row :math:`p`,
:math:`S^2 = e^{H_2(p)}/n` with the collision (Rényi-2) entropy :math:`H_2 = -\log \sum_j p_j^2`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._numerics import safe_divisor
from .._validation import check_choice, check_float, check_int, check_tensor
from ._core import check_bool, check_qkv, masked_softmax, rescale, scaled_logits

__all__ = ["SCORE_KINDS", "attention_scores", "attention_sparsity", "sparsity_stderr"]

SCORE_KINDS = ("exp", "identity", "relu2", "elu1", "relu")
"""The kinds of scores :func:`attention_scores` computes."""


def _check_dim(x: torch.Tensor, dim: int, name: str = "weights", least: int = 1) -> int:
    dim = check_int(dim, "dim", low=-x.dim(), high=x.dim() - 1)
    if x.shape[dim] < least:
        raise ValueError(
            f"{name} must have at least {least} entries along dim={dim}, got {x.shape[dim]}"
        )
    return dim


def _rescaled_abs(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``|x| / max|x|`` along ``dim`` (rows of zeros stay zero): safe to square for any finite ``x``."""
    a = x.abs()
    top = a.amax(dim=dim, keepdim=True)
    return a / safe_divisor(top)


def attention_sparsity(
    weights: torch.Tensor,
    dim: int = -1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The sparsity measure :math:`S = \|x\|_1 / (\sqrt{n}\, \|x\|_2)` of each attention row.

    Small values mean concentrated rows: :math:`S = 1` for a row of equal magnitudes and
    :math:`S = 1/\sqrt{n}` for a one-hot row of :math:`n` entries.

    Parameters
    ----------
    weights : torch.Tensor
        Floating-point, finite; any sign (the measure uses :math:`|x_j|`), normalised or not. Entries of
        any size work: each row is divided by its largest magnitude first, which leaves :math:`S`
        unchanged and keeps :math:`x_j^2` from overflowing or underflowing.
    dim : int
        The axis along which each row lies.
    mask : torch.Tensor, optional
        Boolean, broadcastable to ``weights.shape``; ``True`` marks the entries that belong to the row
        (keys a query may attend to). Masked entries are ignored and do not count in :math:`n`, so the
        zeros of padding or of a causal mask do not make a row look sparse.

    Returns
    -------
    torch.Tensor
        ``weights`` with ``dim`` removed, values in :math:`[1/\sqrt{n}, 1]`.

        **Rule for empty rows**: a row with no non-zero entry among its unmasked ones (a fully masked
        query, or a row of zeros) has no direction to measure; it gets :math:`S = 0`, a value outside
        the range of every non-empty row, so ``S > 0`` selects the rows that carry attention.

    Raises
    ------
    TypeError
        If ``weights`` is not a floating-point tensor or ``mask`` is not boolean.
    ValueError
        If ``weights`` holds NaN or inf, ``dim`` is out of range, the row length is 0, or ``mask`` does
        not broadcast to ``weights``.

    Notes
    -----
    Chapter: notebooks/attention-focus.md.
    """
    check_tensor(weights, "weights", min_dim=1, floating=True, finite=True)
    dim = _check_dim(weights, dim)
    if mask is None:
        y = _rescaled_abs(weights, dim)
        n = weights.new_full((), weights.shape[dim])
    else:
        check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor, got {mask.dtype}")
        try:
            if torch.broadcast_shapes(mask.shape, weights.shape) != weights.shape:
                raise RuntimeError
        except RuntimeError as err:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to weights "
                f"{tuple(weights.shape)}"
            ) from err
        if mask.device != weights.device:
            raise TypeError(f"mask must be on weights' device {weights.device}, got {mask.device}")
        y = _rescaled_abs(weights.masked_fill(~mask, 0.0), dim)
        n = mask.expand(weights.shape).sum(dim=dim).to(weights.dtype)
    l1 = y.sum(dim=dim)
    l2 = (y * y).sum(dim=dim)
    ok = l2 > 0
    # S = ||y||_1 / sqrt(n ||y||_2^2); ok implies n >= 1, so the denominator is positive there.
    denom = torch.where(ok, n * l2, torch.ones_like(l2)).sqrt()
    return torch.where(ok, l1 / denom, torch.zeros_like(l1))


def sparsity_stderr(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Delta-method standard error of :math:`S_n` as an estimate
    of :math:`\mathbb{E}|x|/\sqrt{\mathbb{E}x^2}`.

    When the :math:`n` entries along ``dim`` are i.i.d. draws of a random score :math:`x`, the empirical
    :math:`S_n = \bar a / \sqrt{\bar b}` with :math:`a = |x|`, :math:`b = x^2` estimates the population
    measure with variance, to first order in :math:`1/n`,

    .. math:: \operatorname{Var} S_n \approx \frac{1}{n}\left(
       \frac{\sigma_a^2}{\bar b} - \frac{\bar a\, \sigma_{ab}}{\bar b^2}
       + \frac{\bar a^2 \sigma_b^2}{4 \bar b^3}\right),

    with sample (co)variances :math:`\sigma`. The bias of :math:`S_n` is :math:`O(1/n)`, below this
    :math:`O(1/\sqrt{n})` error for large :math:`n`.

    Parameters
    ----------
    x : torch.Tensor
        Floating-point, finite, at least 2 entries along ``dim``.
    dim : int
        The axis that holds the sample.

    Returns
    -------
    torch.Tensor
        ``x`` with ``dim`` removed; 0 for a row of zeros.
    """
    check_tensor(x, "x", min_dim=1, floating=True, finite=True)
    dim = _check_dim(x, dim, "x", least=2)
    a = _rescaled_abs(x, dim)  # S and its error do not depend on the scale
    b = a * a
    n = x.shape[dim]
    ma, mb = a.mean(dim, keepdim=True), b.mean(dim, keepdim=True)
    va = ((a - ma) ** 2).sum(dim) / (n - 1)
    vb = ((b - mb) ** 2).sum(dim) / (n - 1)
    cab = ((a - ma) * (b - mb)).sum(dim) / (n - 1)
    ma, mb = ma.squeeze(dim), mb.squeeze(dim)
    ok = mb > 0
    mbs = torch.where(ok, mb, torch.ones_like(mb))
    var = (va / mbs - ma * cab / mbs**2 + ma**2 * vb / (4 * mbs**3)) / n
    return torch.where(ok, var.clamp_min(0).sqrt(), torch.zeros_like(var))


def attention_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    kind: str = "exp",
    *,
    scale: float = 1.0,
    normalize: bool = False,
) -> torch.Tensor:
    r"""Un-normalised attention scores :math:`x_{ij}` of query :math:`q_i` and key :math:`k_j` by kind.

    With :math:`s_{ij} = c\, q_i \cdot k_j` (``c = scale``):

    * ``"exp"``: :math:`e^{s_{ij}}` (softmax attention before normalisation);
    * ``"identity"``: :math:`s_{ij}` itself;
    * ``"relu2"``: :math:`\operatorname{relu}(s_{ij})^2`;
    * ``"elu1"``: :math:`c\, \phi(q_i)\cdot\phi(k_j)` with :math:`\phi = \operatorname{elu} + 1`
      (non-negative linear attention);
    * ``"relu"``: :math:`c\, \phi(q_i)\cdot\phi(k_j)` with :math:`\phi = \operatorname{relu}`.

    Parameters
    ----------
    q : torch.Tensor, shape ``(..., n, d)``
    k : torch.Tensor, shape ``(..., m, d)``
    kind : str
        One of ``SCORE_KINDS``.
    scale : float
        The factor :math:`c`.
    normalize : bool
        Divide each row by its :math:`\ell_1` norm (for ``"exp"`` this is the softmax, computed stably,
        so huge logits do not overflow). :func:`attention_sparsity` gives the same value either way.

    Returns
    -------
    torch.Tensor, shape ``(..., n, m)``
        With ``normalize=False`` an ``"exp"`` score can overflow to ``inf`` (logits above ~88 in
        float32, ~709 in float64); use ``normalize=True`` then.
    """
    check_qkv(q, k, None)
    kind = check_choice(kind, "kind", SCORE_KINDS)
    c = check_float(scale, "scale")
    check_bool(normalize, "normalize")
    if kind == "exp" and normalize:
        return masked_softmax(scaled_logits(q, k, c))  # the softmax of overflow-safe logits
    if kind in ("elu1", "relu"):
        phi = (lambda t: F.elu(t) + 1.0) if kind == "elu1" else F.relu
        q, k = phi(q), phi(k)
    if not normalize:
        s = scaled_logits(q, k, c)  # capped, never inf - inf = NaN; exp / square may still overflow
        return {"exp": torch.exp, "relu2": lambda t: F.relu(t) ** 2}.get(kind, lambda t: t)(s)
    # Normalised rows do not depend on a positive factor of the row: drop |c| and the powers of two
    # that
    # keep q k^T from overflowing, then square (relu2) only after dividing by the row's largest
    # entry.
    q1, k1, _ = rescale(q, k, 1.0) if q.numel() and k.numel() else (q, k, None)
    s = (q1 @ k1.mT) * (math.copysign(1.0, c) if c else 0.0)
    x = _rescaled_abs(F.relu(s), -1) ** 2 if kind == "relu2" else s
    l1 = x.abs().sum(-1, keepdim=True)
    return x / safe_divisor(l1)
