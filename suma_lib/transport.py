"""Optimal transport between weighted point sets: the earth mover's distance, WMD, WRD, Sinkhorn.

The earth mover's (Wasserstein-1) distance between masses ``p`` (n points) and ``q`` (m points)
under a cost matrix ``d`` is the linear programme

.. math::

    \\operatorname{EMD}(p, q; d) = \\min_{\\gamma \\ge 0} \\sum_{i,j} \\gamma_{ij} d_{ij}
    \\quad\\text{s.t.}\\quad \\sum_j \\gamma_{ij} = p_i,\\ \\sum_i \\gamma_{ij} = q_j .

Word Mover's Distance (Kusner et al., ICML 2015) takes the word vectors of two sentences, uniform
(or given) weights and the Euclidean cost; Word Rotator's Distance (Yokoi et al., arXiv:2004.15003)
takes the vectors' norms as weights and ``1 - cos`` as cost. Each has a cheap lower bound through
the weighted means. :func:`sinkhorn` solves the entropic problem in the log domain, batched over pairs, on any device.

Chapter: notebooks/wmd-wrd.md
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._validation import check_bool, check_float, check_int, check_tensor

__all__ = [
    "emd",
    "wmd",
    "word_centroid_distance",
    "wrd",
    "wrd_lower_bound",
    "sinkhorn",
]


def _weights(w: Any, name: str) -> torch.Tensor:
    w = check_tensor(w, name, min_dim=1, floating=True, finite=True)
    if w.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(w.shape)}")
    if w.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative")
    if not float(w.detach().sum()) > 0:
        raise ValueError(f"{name} must have a positive total mass")
    return w


def _vectors(x: Any, name: str) -> torch.Tensor:
    x = check_tensor(x, name, min_dim=2, floating=True, finite=True)
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (points, features), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one point of at least one feature")
    return x


def _same_features(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of features, got {x.shape[1]} and {y.shape[1]}"
        )
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")


def emd(
    p: Any, q: Any, cost: Any, *, return_plan: bool = False, rtol: float | None = None
) -> Any:
    """The exact earth mover's distance, a linear programme solved by SciPy's HiGHS.

    .. math::

        \\min_{\\gamma \\ge 0} \\sum_{i,j} \\gamma_{ij} d_{ij}
        \\quad\\text{s.t.}\\quad \\sum_j \\gamma_{ij} = p_i,\\ \\sum_i \\gamma_{ij} = q_j .

    One of the ``n + m`` equality constraints is implied by the others (both sides sum to the total
    mass) and is dropped, as in the article, so that rounding in the masses cannot make the system
    inconsistent. The masses need not sum to 1, only to the same total (within ``rtol``); ``q`` is
    rescaled to ``p``'s total before solving.

    Parameters
    ----------
    p : torch.Tensor
        Masses of the ``n`` sources, shape ``(n,)``, non-negative, floating point.
    q : torch.Tensor
        Masses of the ``m`` sinks, shape ``(m,)``, same total as ``p``.
    cost : torch.Tensor
        Cost matrix ``d``, shape ``(n, m)``, finite.
    return_plan : bool
        Also return the optimal plan ``gamma`` (shape ``(n, m)``).
    rtol : float, optional
        Largest relative difference of the two totals accepted (default: ``1e-6``, or the
        rounding of the inputs' dtype times the number of points, if larger).

    Returns
    -------
    torch.Tensor or tuple
        The distance, a 0-d tensor of ``cost``'s dtype and device (and the plan when asked).

    Raises
    ------
    ValueError
        Bad shapes, negative or unbalanced masses, non-finite costs, or a solver failure.

    Notes
    -----
    Chapter: notebooks/wmd-wrd.md
    """
    from scipy import sparse
    from scipy.optimize import linprog

    p = _weights(p, "p")
    q = _weights(q, "q")
    cost = check_tensor(cost, "cost", min_dim=2, floating=True, finite=True)
    check_bool(return_plan, "return_plan")
    if rtol is not None:
        rtol = check_float(rtol, "rtol", low=0.0)
    for name, t in (("p", p), ("q", q), ("cost", cost)):
        if t.device.type == "meta":
            raise ValueError(f"{name} is on the meta device: the exact EMD needs values")
    if not (p.device == q.device == cost.device):
        raise ValueError("p, q and cost must be on the same device")
    n, m = p.numel(), q.numel()
    if tuple(cost.shape) != (n, m):
        raise ValueError(
            f"cost must have shape ({n}, {m}) to match p and q, got {tuple(cost.shape)}"
        )
    if rtol is None:
        rounding = max(torch.finfo(p.dtype).eps, torch.finfo(q.dtype).eps)
        rtol = max(1e-6, rounding * max(n, m))
    pn = p.detach().cpu().double().numpy()
    qn = q.detach().cpu().double().numpy()
    if abs(pn.sum() - qn.sum()) > rtol * max(pn.sum(), qn.sum()):
        raise ValueError(f"p and q must have the same total mass, got {pn.sum()} and {qn.sum()}")
    qn = qn * (pn.sum() / qn.sum())
    scale = pn.sum()
    pn, qn = pn / scale, qn / scale
    d = cost.detach().cpu().double().numpy().reshape(-1)
    cscale = float(np.abs(d).max()) or 1.0  # HiGHS reads costs above 1e20 as infinite: normalise
    d = d / cscale
    rows = sparse.kron(sparse.eye(n), np.ones((1, m)))  # sum over j of gamma_ij
    cols = sparse.kron(np.ones((1, n)), sparse.eye(m))  # sum over i of gamma_ij
    a_eq = sparse.vstack([rows, cols]).tocsr()[:-1]
    b_eq = np.concatenate([pn, qn])[:-1]
    res = linprog(d, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0:
        raise ValueError(f"the linear programme failed: {res.message}")
    value = torch.as_tensor(res.fun * cscale * scale, dtype=cost.dtype, device=cost.device)
    if not return_plan:
        return value
    plan = torch.as_tensor(res.x.reshape(n, m) * scale, dtype=cost.dtype, device=cost.device)
    return value, plan


def _default_weights(x: torch.Tensor, w: Any, name: str) -> torch.Tensor:
    if w is None:
        return torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype, device=x.device)
    w = _weights(w, name)
    if w.numel() != x.shape[0]:
        raise ValueError(f"{name} must have one weight per point ({x.shape[0]}), got {w.numel()}")
    return w.to(x.dtype) / w.sum()


def wmd(x: Any, y: Any, p: Any = None, q: Any = None, *, return_plan: bool = False) -> Any:
    """Word Mover's Distance: the earth mover's distance between two sets of word vectors.

    .. math::

        \\operatorname{WMD} = \\min_{\\gamma \\ge 0} \\sum_{i,j} \\gamma_{ij} \\|w_i - w'_j\\|
        \\quad\\text{s.t.}\\quad \\sum_j \\gamma_{ij} = p_i,\\ \\sum_i \\gamma_{ij} = q_j ,

    with uniform weights ``p_i = 1/n``, ``q_j = 1/m`` unless given (given weights are normalised).

    Parameters
    ----------
    x, y : torch.Tensor
        Word vectors, shapes ``(n, d)`` and ``(m, d)``.
    p, q : torch.Tensor, optional
        Non-negative weights of the words, shapes ``(n,)`` and ``(m,)``.
    return_plan : bool
        Also return the optimal plan.

    Returns
    -------
    torch.Tensor or tuple
        The distance (0-d tensor), and the plan when asked.

    Chapter: notebooks/wmd-wrd.md
    """
    x, y = _vectors(x, "x"), _vectors(y, "y")
    _same_features(x, y)
    p, q = _default_weights(x, p, "p"), _default_weights(y, q, "q")
    xs, ys, scale = _rescaled(x, y)
    p, q = p.to(xs.dtype), q.to(xs.dtype)
    out = emd(p / p.sum(), q / q.sum(), torch.cdist(xs, ys), return_plan=return_plan)
    if return_plan:
        return (out[0] * scale).to(x.dtype), out[1].to(x.dtype)
    return (out * scale).to(x.dtype)


def word_centroid_distance(x: Any, y: Any, p: Any = None, q: Any = None) -> torch.Tensor:
    """The word centroid distance, a lower bound of :func:`wmd`.

    .. math::

        \\operatorname{WMD} \\ge \\Big\\|\\sum_i p_i w_i - \\sum_j q_j w'_j\\Big\\| ,

    by the triangle inequality applied to ``sum_ij gamma_ij (w_i - w'_j)`` and the marginal constraints.

    Parameters
    ----------
    x, y : torch.Tensor
        Word vectors, shapes ``(n, d)`` and ``(m, d)``.
    p, q : torch.Tensor, optional
        Weights (uniform by default; given weights are normalised).

    Chapter: notebooks/wmd-wrd.md
    """
    x, y = _vectors(x, "x"), _vectors(y, "y")
    _same_features(x, y)
    p, q = _default_weights(x, p, "p"), _default_weights(y, q, "q")
    xs, ys, scale = _rescaled(x, y)
    return (torch.linalg.vector_norm(p.to(xs.dtype) @ xs - q.to(xs.dtype) @ ys) * scale).to(x.dtype)


def _rescaled(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # x / s, y / s with s the largest magnitude, in at least float32, so that norms of vectors
    # of size 1e30 or 1e-30 neither overflow nor underflow; distances scale back by s
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x, y = x.to(dtype), y.to(dtype)
    s = torch.maximum(x.abs().amax(), y.abs().amax())
    s = torch.where(s > 0, s, torch.ones_like(s))
    return x / s, y / s, s


def _wrd_parts(x: Any, y: Any) -> tuple[torch.Tensor, ...]:
    x, y = _vectors(x, "x"), _vectors(y, "y")
    _same_features(x, y)
    x, _, _ = _rescaled(x, x)  # WRD does not change when x or y is scaled
    y, _, _ = _rescaled(y, y)
    nx, ny = torch.linalg.vector_norm(x, dim=1), torch.linalg.vector_norm(y, dim=1)
    if x.device.type != "meta" and not float(nx.detach().sum()) > 0:
        raise ValueError("x must have at least one non-zero vector")
    if y.device.type != "meta" and not float(ny.detach().sum()) > 0:
        raise ValueError("y must have at least one non-zero vector")
    # a zero vector gets weight 0, so its (undefined) direction never matters: use 0 for it
    ux = x / torch.where(nx > 0, nx, torch.ones_like(nx))[:, None]
    uy = y / torch.where(ny > 0, ny, torch.ones_like(ny))[:, None]
    return x, y, nx, ny, ux, uy


def wrd(x: Any, y: Any, *, return_plan: bool = False) -> Any:
    """Word Rotator's Distance: norms as weights, cosine distance as cost.

    .. math::

        \\operatorname{WRD} = \\min_{\\gamma \\ge 0} \\sum_{i,j} \\gamma_{ij}
        \\Big(1 - \\frac{w_i \\cdot w'_j}{\\|w_i\\|\\,\\|w'_j\\|}\\Big)
        \\quad\\text{s.t.}\\quad \\sum_j \\gamma_{ij} = \\frac{\\|w_i\\|}{Z},\\
        \\sum_i \\gamma_{ij} = \\frac{\\|w'_j\\|}{Z'} ,

    with ``Z = sum_i ||w_i||`` and ``Z' = sum_j ||w'_j||``. The value lies in ``[0, 2]``.

    Parameters
    ----------
    x, y : torch.Tensor
        Word vectors, shapes ``(n, d)`` and ``(m, d)``; each needs one non-zero vector.
    return_plan : bool
        Also return the optimal plan.

    Chapter: notebooks/wmd-wrd.md
    """
    dtype = x.dtype if isinstance(x, torch.Tensor) else None
    x, y, nx, ny, ux, uy = _wrd_parts(x, y)
    cost = (1 - ux @ uy.T).clamp(0, 2)
    out = emd(nx / nx.sum(), ny / ny.sum(), cost, return_plan=return_plan)
    if return_plan:
        return out[0].to(dtype), out[1].to(dtype)
    return out.to(dtype)


def wrd_lower_bound(x: Any, y: Any) -> torch.Tensor:
    """A lower bound of :func:`wrd` through the norm-weighted means (the article's own addition).

    .. math::

        \\operatorname{WRD} \\ge \\frac12 \\Big\\| \\frac{1}{Z}\\sum_i w_i
        - \\frac{1}{Z'}\\sum_j w'_j \\Big\\|^2 ,

    from ``2(1 - cos) = ||u_i - u'_j||^2`` for unit vectors and Jensen's inequality for the convex
    ``||.||^2`` under the plan's probabilities.

    Parameters
    ----------
    x, y : torch.Tensor
        Word vectors, shapes ``(n, d)`` and ``(m, d)``.

    Chapter: notebooks/wmd-wrd.md
    """
    dtype = x.dtype if isinstance(x, torch.Tensor) else None
    x, y, nx, ny, _, _ = _wrd_parts(x, y)
    diff = x.sum(0) / nx.sum() - y.sum(0) / ny.sum()
    return (0.5 * (diff * diff).sum()).to(dtype)


def sinkhorn(
    p: Any,
    q: Any,
    cost: Any,
    eps: float,
    *,
    max_iter: int = 1000,
    tol: float = 1e-9,
    check_every: int = 10,
    return_plan: bool = False,
) -> Any:
    """Entropic optimal transport by log-domain Sinkhorn iterations, batched over pairs.

    Solves ``min_gamma <gamma, C> - eps H(gamma)`` under the marginals ``p`` and ``q``; the plan is
    ``gamma_ij = exp((f_i + g_j - C_ij) / eps)`` with potentials updated as

    .. math::

        f_i \\leftarrow \\varepsilon \\log p_i
        - \\varepsilon \\log \\sum_j e^{(g_j - C_{ij})/\\varepsilon},\\qquad
        g_j \\leftarrow \\varepsilon \\log q_j
        - \\varepsilon \\log \\sum_i e^{(f_i - C_{ij})/\\varepsilon},

    which never forms ``exp(-C/eps)`` and so stays finite for small ``eps``. Between two log-domain
    steps, ``check_every - 1`` steps run as plain scalings of the current plan (matrix products, no
    exponentials), absorbed into the potentials afterwards; where they over- or underflow they are
    redone in the log domain, so the iterates are those of the log-domain updates either way.
    Returns the transport cost ``<gamma, C>`` (what POT's ``ot.sinkhorn2`` returns), which tends to
    the exact EMD as ``eps -> 0``.
    Pairs of different sizes batch by padding with zero mass: a zero weight gets an empty row or column of the plan.

    Parameters
    ----------
    p : torch.Tensor
        Source masses, shape ``(..., n)``, non-negative, each row with a positive total.
    q : torch.Tensor
        Sink masses, shape ``(..., m)``; each row is rescaled to its ``p`` row's total.
    cost : torch.Tensor
        Costs, shape ``(..., n, m)``; the leading dimensions of the three broadcast.
    eps : float
        Entropic regularisation, > 0 (in the units of ``cost``).
    max_iter : int
        Iteration cap.
    tol : float
        Stop when the largest L1 error of the row marginals (the column marginals are exact after
        each update) is at most ``tol`` times the total mass, checked every ``check_every`` steps.
    check_every : int
        How often the stopping test runs (each test synchronises with the device).
    return_plan : bool
        Also return the plan, shape ``(..., n, m)``.

    Returns
    -------
    torch.Tensor or tuple
        The costs, shape ``(...)`` (and the plan when asked), on the inputs' device and dtype.

    Chapter: notebooks/wmd-wrd.md
    """
    p = check_tensor(p, "p", min_dim=1, floating=True, finite=True)
    q = check_tensor(q, "q", min_dim=1, floating=True, finite=True)
    cost = check_tensor(cost, "cost", min_dim=2, floating=True, finite=True)
    eps = check_float(eps, "eps", low=0.0, low_open=True)
    max_iter = check_int(max_iter, "max_iter", low=1)
    tol = check_float(tol, "tol", low=0.0)
    check_every = check_int(check_every, "check_every", low=1)
    check_bool(return_plan, "return_plan")
    if not (p.device == q.device == cost.device):
        raise ValueError("p, q and cost must be on the same device")
    n, m = p.shape[-1], q.shape[-1]
    if tuple(cost.shape[-2:]) != (n, m):
        raise ValueError(
            f"cost must end in shape ({n}, {m}) to match p and q, got {tuple(cost.shape)}"
        )
    if n == 0 or m == 0:
        raise ValueError("p and q must not be empty")
    try:
        batch = torch.broadcast_shapes(p.shape[:-1], q.shape[:-1], cost.shape[:-2])
    except RuntimeError as err:
        raise ValueError(
            f"the leading dimensions of p, q and cost do not broadcast: {err}"
        ) from err
    dtype = torch.promote_types(torch.promote_types(p.dtype, q.dtype), cost.dtype)
    p = p.to(dtype).expand(*batch, n)
    q = q.to(dtype).expand(*batch, m)
    cost = cost.to(dtype).expand(*batch, n, m)
    meta = p.device.type == "meta"
    if not meta:
        if bool((p < 0).any()) or bool((q < 0).any()):
            raise ValueError("p and q must be non-negative")
        if not (bool((p.sum(-1) > 0).all()) and bool((q.sum(-1) > 0).all())):
            raise ValueError("every row of p and of q must have a positive total mass")
    mass = p.sum(-1, keepdim=True)
    q = q * (mass / q.sum(-1, keepdim=True))
    log_p, log_q = p.log(), q.log()  # -inf where a weight is 0: an empty row or column
    pos_p, pos_q = p > 0, q > 0
    neg = -cost / eps
    a = torch.zeros_like(p)  # the potentials divided by eps: f / eps, g / eps
    b = torch.zeros_like(q)

    def log_step(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = log_p - torch.logsumexp(neg + b.unsqueeze(-2), dim=-1)
        b = log_q - torch.logsumexp(neg + a.unsqueeze(-1), dim=-2)
        return a, b

    it = 0
    while it < max_iter:
        a, b = log_step(a, b)
        it += 1
        steps = min(check_every - 1, max_iter - it)
        if meta:
            for _ in range(steps):
                a, b = log_step(a, b)
            it += steps
            continue
        # The next steps as plain scalings of the current plan K (entries <= 1, rows and columns
        # already close to their marginals): matrix products instead of exponentials. The scalings
        # are absorbed into the potentials afterwards; if any over- or underflowed (tiny eps, far
        # from convergence), the same steps are redone in the log domain.
        kern = torch.exp(neg + a.unsqueeze(-1) + b.unsqueeze(-2))
        u, v = torch.ones_like(p), torch.ones_like(q)
        kv = torch.matmul(kern, v.unsqueeze(-1)).squeeze(-1)
        for _ in range(steps):
            u = torch.where(pos_p, p / kv, 0.0)
            v = torch.where(pos_q, q / torch.matmul(u.unsqueeze(-2), kern).squeeze(-2), 0.0)
            kv = torch.matmul(kern, v.unsqueeze(-1)).squeeze(-1)
        rows = u * kv
        good_u = (torch.isfinite(u) & (u > 0)) | ~pos_p
        good_v = (torch.isfinite(v) & (v > 0)) | ~pos_q
        scaled_ok = bool(good_u.all() & good_v.all() & torch.isfinite(rows).all())
        if scaled_ok:
            a, b = a + u.log(), b + v.log()
        else:
            for _ in range(steps):
                a, b = log_step(a, b)
            rows = torch.logsumexp(neg + a.unsqueeze(-1) + b.unsqueeze(-2), dim=-1).exp()
        it += steps
        err = (rows - p).abs().sum(-1) / mass.squeeze(-1)
        if float(err.max()) <= tol:
            break
    plan = torch.exp(neg + a.unsqueeze(-1) + b.unsqueeze(-2))
    value = (plan * cost).sum((-2, -1))
    return (value, plan) if return_plan else value
