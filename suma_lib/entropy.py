r"""Shannon entropy of distributions, and entropy normalisation (chapter ``entropy-normalization``).

Entropy normalisation moves a distribution :math:`p` to a prescribed entropy :math:`H^*` with the power transform

.. math:: q_i(\gamma) = \frac{p_i^{\gamma}}{\sum_j p_j^{\gamma}}, \qquad \gamma \ge 0,

which keeps the order of the :math:`p_i` (and their zeros) and whose entropy falls monotonically in
:math:`\gamma`, because :math:`\mathrm{d}H/\mathrm{d}\gamma = -\gamma\,\operatorname{Var}_{q}(\log
p)`. Everything is computed from :math:`\log p` (log-space), so one-hot rows and entries like
``1e-30`` are handled without underflow or NaN.

Chapter: notebooks/entropy-normalization.md
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._numerics import safe_divisor, work_dtype
from ._validation import (
    check_bool,
    check_choice,
    check_compatible,
    check_float,
    check_int,
    check_tensor,
)

__all__ = [
    "entropy",
    "power_transform",
    "entropy_bounds",
    "entropy_normalize",
    "EntropyNormalization",
]


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy :math:`H(p) = -\\sum_i p_i \\log p_i` in nats, along ``dim``.

    Zero probabilities contribute nothing (:math:`0 \\log 0 = 0`), so one-hot rows give exactly 0
    and rows of a masked attention matrix are handled without NaN.

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
    logp = torch.log(safe_divisor(p))  # 0 log 0 = 0
    return -(p * logp).sum(dim=dim)


# ----------------------------------------------------------------------------------------- helpers
def _is_meta(x: torch.Tensor) -> bool:
    return x.device.type == "meta"


# Half-precision inputs are solved in float32 (entropy differences need more than 3 digits).
_work_dtype = work_dtype


def _check_distribution(
    p: torch.Tensor, dim: int, sum_tol: float | None, *, need_sum: bool
) -> torch.Tensor:
    """Validate ``p`` and return it with the distribution axis moved last (in the working dtype)."""
    check_tensor(p, "p", min_dim=1, floating=True, finite=True)
    dim = check_int(dim, "dim", low=-p.dim(), high=p.dim() - 1)
    if p.shape[dim] == 0:
        raise ValueError("p must have at least one entry along dim")
    x = p.movedim(dim, -1).to(_work_dtype(p.dtype))
    if _is_meta(x) or x.numel() == 0:
        return x
    if bool((x < 0).any()):
        raise ValueError("p must be non-negative")
    s = x.sum(-1)
    if need_sum:
        tol = math.sqrt(torch.finfo(p.dtype).eps) if sum_tol is None else sum_tol
        bad = (s - 1).abs() > tol
        if bool(bad.any()):
            worst = float((s - 1).abs().max())
            raise ValueError(
                f"p must sum to 1 along dim (within {tol:.3g}); the worst slice is off by "
                f"{worst:.3g}"
            )
    elif bool((s <= 0).any()):
        raise ValueError("p must have at least one positive entry in every slice along dim")
    return x


def _log_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Support mask, centred log-probabilities :math:`\\ell_i - \\max_j \\ell_j` (0 off the support)
    and the mask of the arg-max set."""
    support = x > 0
    # log of a masked tensor: zeros never reach log, so their gradient is 0 instead of NaN.
    logp = torch.log(torch.where(support, x, torch.ones_like(x)))
    neg_inf = torch.full_like(logp, float("-inf"))
    lmax = torch.where(support, logp, neg_inf).amax(-1, keepdim=True)
    ell = torch.where(support, logp - lmax, torch.zeros_like(logp))
    top = support & (ell == 0)
    return support, ell, top


def _logits(ell: torch.Tensor, support: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """:math:`\\gamma\\,\\ell_i` on the support and :math:`-\\infty` off it, for finite ``gamma >= 0``."""
    return torch.where(support, gamma.unsqueeze(-1) * ell, torch.full_like(ell, float("-inf")))


def _entropy_and_var(a: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy of ``softmax(a)`` and the variance of ``a`` under it (``a = -inf`` off the support).

    :math:`H = \\log Z - \\mathbb{E}_q[a]` and :math:`\\operatorname{Var}_q(a)`, both from log-sum-exp.
    """
    log_z = torch.logsumexp(a, dim=-1)
    q = torch.exp(a - log_z.unsqueeze(-1))
    a0 = torch.where(support, a, torch.zeros_like(a))
    mean = (q * a0).sum(-1)
    var = (q * (a0 - mean.unsqueeze(-1)) ** 2).sum(-1)
    return log_z - mean, var


def _as_row_tensor(value, name: str, batch_shape: torch.Size, ref: torch.Tensor) -> torch.Tensor:
    """Broadcast a float or tensor argument to the batch shape, on ``ref``'s device and dtype."""
    if isinstance(value, torch.Tensor):
        check_tensor(value, name, floating=True)
        check_compatible(value, ref, name, "p", same_dtype=False, core_dims=(0, ref.dim()))
        try:
            out = torch.broadcast_to(value.to(ref.dtype), batch_shape)
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not broadcast to the batch shape "
                f"{tuple(batch_shape)}"
            ) from err
        if not _is_meta(out) and out.numel() and bool(torch.isnan(out).any()):
            raise ValueError(f"{name} must not contain NaN")
        return out
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return ref.new_full(batch_shape, float(value))


# ----------------------------------------------------------------------------------------- public
def power_transform(p: torch.Tensor, gamma: float | torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""The power transform :math:`q_i = p_i^{\gamma} / \sum_j p_j^{\gamma}` along ``dim``.

    Computed as :math:`\operatorname{softmax}(\gamma \log p)` over the support of ``p``, so it is
    exact for tiny entries. The two ends are defined as limits: :math:`\gamma = 0` gives the uniform
    distribution on the support of ``p`` (zeros stay zero, unlike the literal :math:`0^0 = 1`), and
    :math:`\gamma = \infty` gives the uniform distribution on the set of largest entries. For
    :math:`\gamma > 0` the order of the entries is kept: :math:`q_i / q_j = (p_i / p_j)^{\gamma}`.

    Parameters
    ----------
    p : torch.Tensor
        Non-negative floating-point tensor with at least one positive entry per slice along ``dim``;
        it need not be normalised (the transform normalises).
    gamma : float or torch.Tensor
        Exponent(s) in :math:`[0, \infty]`; a tensor broadcasts against ``p`` with ``dim`` removed.
    dim : int
        The axis that holds each distribution.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``p``; every slice sums to one.

    Raises
    ------
    TypeError
        If ``p`` or ``gamma`` has the wrong type.
    ValueError
        If ``p`` has negative entries, NaN, inf or an all-zero slice, or ``gamma`` is negative or NaN.

    Notes
    -----
    Chapter: notebooks/entropy-normalization.md
    """
    x = _check_distribution(p, dim, None, need_sum=False)
    g = _as_row_tensor(gamma, "gamma", x.shape[:-1], x)
    if not _is_meta(g) and g.numel() and bool((g < 0).any()):
        raise ValueError("gamma must be >= 0")
    support, ell, top = _log_parts(x)
    q = _transform(ell, support, top, g)
    return q.to(p.dtype).movedim(-1, dim)


def _transform(ell, support, top, g):
    """Power transform from the log-parts; ``g`` may hold 0 and inf (handled as limits)."""
    finite = torch.isfinite(g)
    g_safe = torch.where(finite, g, torch.ones_like(g))  # keeps inf * 0 out of the graph
    q_finite = torch.softmax(_logits(ell, support, g_safe), dim=-1)
    q_top = top.to(ell.dtype) / top.sum(-1, keepdim=True).to(ell.dtype)
    return torch.where(finite.unsqueeze(-1), q_finite, q_top)


def entropy_bounds(p: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The entropies the power transform of ``p`` can reach: :math:`[\log k, \log m]`.

    :math:`m` is the number of non-zero entries (the limit :math:`\gamma \to 0`, uniform on the
    support) and :math:`k` the number of entries equal to the maximum (the limit :math:`\gamma \to
    \infty`). Every value in between is reached by exactly one :math:`\gamma \in (0, \infty)` unless
    :math:`k = m` (``p`` uniform on its support), where the transform leaves ``p`` unchanged.

    Parameters
    ----------
    p : torch.Tensor
        Non-negative floating-point tensor with at least one positive entry per slice along ``dim``.
    dim : int
        The axis that holds each distribution.

    Returns
    -------
    tuple of torch.Tensor
        ``(h_min, h_max)``, each of the shape of ``p`` with ``dim`` removed.

    Notes
    -----
    Chapter: notebooks/entropy-normalization.md
    """
    x = _check_distribution(p, dim, None, need_sum=False)
    support, _, top = _log_parts(x)
    h_min = torch.log(top.sum(-1).to(x.dtype))
    h_max = torch.log(support.sum(-1).to(x.dtype))
    return h_min.to(p.dtype), h_max.to(p.dtype)


class EntropyNormalization(NamedTuple):
    """Result of :func:`entropy_normalize` with ``return_info=True``."""

    p: torch.Tensor
    """The normalised distributions (shape of the input)."""
    gamma: torch.Tensor
    """The exponent of each slice (0/inf at a clamped bound, 1 for a slice uniform on its support)."""
    iterations: torch.Tensor
    """Number of (safeguarded) Newton updates each slice needed (int64)."""
    converged: torch.Tensor
    """Whether each slice met the tolerance within ``max_iter`` updates."""


def entropy_normalize(
    p: torch.Tensor,
    target: float | torch.Tensor,
    dim: int = -1,
    *,
    tol: float | None = None,
    max_iter: int = 100,
    unreachable: str = "clamp",
    return_gamma: bool = False,
    return_info: bool = False,
    sum_tol: float | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | EntropyNormalization:
    r"""Entropy normalisation: the power transform of ``p`` whose entropy equals ``target``.

    Finds :math:`\gamma > 0` with :math:`H(q(\gamma)) = H^*` for :math:`q_i(\gamma) = p_i^{\gamma} /
    \sum_j p_j^{\gamma}` by Newton's method in :math:`u = \log\gamma`, starting from :math:`\gamma =
    1`:

    .. math:: u \leftarrow u + \frac{H(q) - H^*}{\operatorname{Var}_q(\log q)},

    (the derivative is :math:`\mathrm{d}H/\mathrm{d}u = -\operatorname{Var}_q(\log q)`), with steps
    capped at :math:`|\Delta u| \le 2` and a bisection fallback inside the bracket that every
    evaluated point narrows (:math:`H` is monotone in :math:`u`), so it converges for every reachable target.

    **Reachable targets.** The power transform reaches exactly the entropies in
    :math:`[\log k, \log m]` (see :func:`entropy_bounds`). A target outside that range is either
    clamped (``unreachable="clamp"``, the default: the result is the limit :math:`\gamma = 0`,
    uniform on the support, or :math:`\gamma = \infty`, uniform on the largest entries) or rejected
    (``unreachable="raise"``: :class:`ValueError` naming ``target``). Targets within ``tol`` of a
    bound are treated as that bound. A slice uniform on its support (:math:`k = m`) is returned
    unchanged with :math:`\gamma = 1` when clamping.

    **Gradients** are exact first derivatives by the implicit function theorem: the iterations run
    without autograd, then one Newton step is taken with autograd on (its denominator detached),
    whose derivative at the root equals :math:`\partial\gamma/\partial\theta = -(\partial
    H/\partial\theta) / (\partial H/\partial\gamma)` for :math:`\theta \in \{p, H^*\}`. Zero entries
    of ``p`` get zero gradient (the support is held fixed); slices at a clamped bound have zero
    gradient with respect to ``target``. Second derivatives are not supported.

    Parameters
    ----------
    p : torch.Tensor
        Probabilities: non-negative, finite, summing to one along ``dim`` (within ``sum_tol``).
    target : float or torch.Tensor
        Target entropy in nats, in :math:`[0, \log n]` (:math:`n` = size of ``dim``); a tensor
        broadcasts against ``p`` with ``dim`` removed (one target per slice).
    dim : int
        The axis that holds each distribution.
    tol : float, optional
        Stop when :math:`|H(q) - H^*| \le` ``tol``; default ``1e-10`` in float64, ``1e-5`` in
        float32 and below (half precision is solved in float32). The final Newton step usually improves on it.
    max_iter : int
        Most Newton updates per slice; slices that do not converge are flagged in ``converged``.
    unreachable : str
        What to do with a target outside the reachable range (see above): ``"clamp"`` (default) or ``"raise"``.
    return_gamma : bool
        Also return the exponents: ``(q, gamma)``.
    return_info : bool
        Return an :class:`EntropyNormalization` (distributions, exponents, iteration counts, convergence).
    sum_tol : float, optional
        Tolerance on :math:`|\sum_i p_i - 1|`; default :math:`\sqrt{\varepsilon}` of ``p``'s dtype.

    Returns
    -------
    torch.Tensor or tuple or EntropyNormalization
        ``q`` with the shape, dtype and device of ``p``; see ``return_gamma`` and ``return_info``.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``p`` is not a distribution along ``dim`` (negative entries, NaN/inf, wrong sum),
        ``target`` is NaN or outside :math:`[0, \log n]`, or (with ``unreachable="raise"``) not reachable.

    Notes
    -----
    Chapter: notebooks/entropy-normalization.md
    """
    check_choice(unreachable, "unreachable", ("clamp", "raise"))
    max_iter = check_int(max_iter, "max_iter", low=1)
    check_bool(return_gamma, "return_gamma")
    check_bool(return_info, "return_info")
    if return_gamma and return_info:
        raise ValueError(
            "return_gamma and return_info are exclusive (the info already holds gamma)"
        )
    if sum_tol is not None:
        sum_tol = check_float(sum_tol, "sum_tol", low=0.0, low_open=True)
    x = _check_distribution(p, dim, sum_tol, need_sum=True)
    if tol is None:
        tol = 1e-10 if x.dtype == torch.float64 else 1e-5
    tol = check_float(tol, "tol", low=0.0, low_open=True)
    n = x.shape[-1]
    batch = x.shape[:-1]
    h_star = _as_row_tensor(target, "target", batch, x)
    meta = _is_meta(x)
    if not meta and h_star.numel():
        log_n = math.log(n)
        lo, hi = float(h_star.detach().min()), float(h_star.detach().max())
        slack = (
            4 * torch.finfo(x.dtype).eps * max(log_n, 1.0)
        )  # a target of log n rounded to x's dtype
        if lo < 0 or hi > log_n + slack:
            raise ValueError(
                f"target must lie in [0, log n] = [0, {log_n:.6g}], got values in [{lo:.6g}, "
                f"{hi:.6g}]"
            )

    support, ell, top = _log_parts(x)
    h_min = torch.log(top.sum(-1).to(x.dtype))
    h_max = torch.log(support.sum(-1).to(x.dtype))
    flat = top.sum(-1) == support.sum(-1)
    if unreachable == "raise" and not meta and h_star.numel():
        bad = (h_star < h_min - tol) | (h_star > h_max + tol)
        if bool(bad.any()):
            i = int(bad.flatten().nonzero()[0])
            raise ValueError(
                f"target {float(h_star.flatten()[i]):.6g} is unreachable for slice {i}: the "
                f"power transform of "
                f"that slice reaches entropies in [{float(h_min.flatten()[i]):.6g}, "
                f"{float(h_max.flatten()[i]):.6g}] only (use unreachable='clamp' to clamp)"
            )
    at_top = ~flat & (h_star <= h_min + tol)  # gamma = inf
    at_uniform = ~flat & (h_star >= h_max - tol)  # gamma = 0
    active = ~(flat | at_top | at_uniform)

    u, iterations, converged = _newton_log_gamma(
        ell.detach(), support, h_star.detach(), active, tol, max_iter, meta
    )

    # One Newton step with autograd on: exact first derivatives at the root (implicit function
    # theorem).
    a = _logits(ell, support, torch.exp(u))
    h, var = _entropy_and_var(a, support)
    resid = h - h_star
    resid = torch.where(converged, resid, resid - resid.detach())  # unconverged: gradient only
    var_safe = torch.where(active & (var > 0), var, torch.ones_like(var)).detach()
    u_out = u + torch.where(active, resid / var_safe, torch.zeros_like(resid))
    gamma = torch.exp(u_out)
    gamma = torch.where(at_top, torch.full_like(gamma, float("inf")), gamma)
    gamma = torch.where(at_uniform, torch.zeros_like(gamma), gamma)
    gamma = torch.where(flat, torch.ones_like(gamma), gamma)
    q = _transform(ell, support, top, gamma).to(p.dtype).movedim(-1, dim)
    if return_info:
        return EntropyNormalization(q, gamma.to(p.dtype), iterations, converged | ~active)
    if return_gamma:
        return q, gamma.to(p.dtype)
    return q


_MAX_STEP = 2.0  # cap on |Δ log γ| per Newton update (γ changes by at most e² ≈ 7.4× per step)


@torch.no_grad()
def _newton_log_gamma(ell, support, h_star, active, tol, max_iter, meta):
    """Safeguarded Newton iteration on :math:`u = \\log\\gamma` for the slices in ``active``.

    Returns ``u`` (0 for inactive slices), the number of updates per slice and the convergence mask.
    """
    u = torch.zeros_like(h_star)
    u_cap = math.log(torch.finfo(u.dtype).max) - 8.0  # keeps exp(u) and u * log p finite
    lo = torch.full_like(u, float("-inf"))  # H(lo) > H*: the root lies above lo
    hi = torch.full_like(u, float("inf"))  # H(hi) < H*: the root lies below hi
    iterations = torch.zeros(u.shape, dtype=torch.int64, device=u.device)
    done = ~active
    converged = torch.zeros_like(active)
    # On the meta device there are no values to iterate on: one pass fixes every shape.
    n_updates = 1 if meta else max_iter
    for it in range(n_updates + 1):
        h, var = _entropy_and_var(_logits(ell, support, torch.exp(u)), support)
        r = h - h_star
        newly = ~done & (r.abs() <= tol)
        converged = converged | newly
        done = done | newly
        if it == n_updates or (not meta and bool(done.all())):
            break
        lo = torch.where(~done & (r > 0), u, lo)
        hi = torch.where(~done & (r < 0), u, hi)
        var_ok = var > 0
        step = torch.where(
            var_ok, r / torch.where(var_ok, var, torch.ones_like(var)), r.sign() * _MAX_STEP
        )
        u_new = u + step.clamp(-_MAX_STEP, _MAX_STEP)
        # H is monotone in u, so the root stays inside (lo, hi); an overshoot falls back to
        # bisection.
        outside = (u_new <= lo) | (u_new >= hi)
        bisect = outside & torch.isfinite(lo) & torch.isfinite(hi)
        u_new = torch.where(bisect, 0.5 * (lo + hi), u_new).clamp(-u_cap, u_cap)
        u = torch.where(done, u, u_new)
        iterations = iterations + (~done).to(torch.int64)
    return u, iterations, converged
