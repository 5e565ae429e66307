"""Optimisers of Part VII: AdaFactor, exponentiated gradient descent and its step-size adaptation.

All three are real :class:`torch.optim.Optimizer` subclasses: parameter groups, closures and
``state_dict`` round-trips work as for torch's own optimisers. States live on the parameter's device;
statistics are kept in float32 for half-precision parameters (float64 parameters keep float64), and the
update is cast back to the parameter's dtype when it is applied. Sparse and complex gradients are rejected.

Chapters: notebooks/adafactor.md, notebooks/exponentiated-gradient.md
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from ._validation import check_compatible, check_float, check_tensor

__all__ = [
    "AdaFactor",
    "EGStepSize",
    "ExponentiatedGradient",
    "adafactor_beta2",
    "adam_effective_beta2",
    "i_divergence",
    "rank_one_i_divergence",
    "rms",
    "state_bytes",
]


# ---------------------------------------------------------------------------------------------------
# Functional pieces


def rank_one_i_divergence(c: torch.Tensor) -> torch.Tensor:
    r"""Rank-one approximation of a non-negative matrix that minimises the generalised KL divergence.

    .. math:: \hat c_{ij} = \frac{\bigl(\sum_k c_{ik}\bigr)\bigl(\sum_k c_{kj}\bigr)}{\sum_{k,l} c_{kl}}

    (row sums times column sums over the total), batched over leading dimensions. A matrix whose entries
    are all zero maps to zero.

    Parameters
    ----------
    c : torch.Tensor
        Non-negative tensor of shape ``(..., m, n)``.

    Returns
    -------
    torch.Tensor
        Tensor of the same shape, of rank one in its last two dimensions.

    Chapter: notebooks/adafactor.md
    """
    check_tensor(c, "c", min_dim=2)
    if not c.is_floating_point():
        raise TypeError(f"c must be a floating-point tensor, got dtype {c.dtype}")
    rows = c.sum(dim=-1, keepdim=True)
    cols = c.sum(dim=-2, keepdim=True)
    total = rows.sum(dim=-2, keepdim=True)
    out = rows * (cols / torch.where(total > 0, total, torch.ones_like(total)))  # no overflow
    return out


def i_divergence(c: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""Generalised KL (I-) divergence :math:`\sum_{ij} c_{ij}\log(c_{ij}/q_{ij}) - c_{ij} + q_{ij}`.

    Summed over the last two dimensions (``0 log 0 = 0``); non-negative, zero only when ``c == q``.

    Chapter: notebooks/adafactor.md
    """
    check_tensor(c, "c", min_dim=2, floating=True)
    check_tensor(q, "q", min_dim=2, floating=True)
    check_compatible(c, q, "c", "q", core_dims=2)
    if c.shape != q.shape:
        raise ValueError(
            f"c and q must have the same shape, got {tuple(c.shape)} and {tuple(q.shape)}"
        )
    safe = torch.where(c > 0, c, torch.ones_like(c))
    term = torch.where(c > 0, c * torch.log(safe / q), torch.zeros_like(c))
    return (term - c + q).sum(dim=(-2, -1))


def adafactor_beta2(t: int | torch.Tensor, c: float = 0.8) -> float | torch.Tensor:
    r"""AdaFactor's decay schedule :math:`\hat\beta_{2,t} = 1 - t^{-c}` (step ``t >= 1``).

    Chapter: notebooks/adafactor.md
    """
    c = check_float(c, "c", low=0.0, low_open=True)
    if torch.is_tensor(t):
        if bool((t < 1).any()):
            raise ValueError("t must be >= 1")
        return 1.0 - t.to(torch.promote_types(t.dtype, torch.float32)) ** (-c)
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"t must be an integer >= 1, got {t!r}")
    return 1.0 - t ** (-c)


def adam_effective_beta2(t: int, beta2: float) -> float:
    r"""The time-varying decay that Adam's bias correction amounts to.

    .. math:: \hat\beta_{2,t} = \beta_2\,\frac{1-\beta_2^{t-1}}{1-\beta_2^t},
       \qquad \hat v_t = \hat\beta_{2,t}\hat v_{t-1} + (1-\hat\beta_{2,t})\,g_t^2 .

    Chapter: notebooks/adafactor.md
    """
    beta2 = check_float(beta2, "beta2", low=0.0, high=1.0, high_open=True)
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"t must be an integer >= 1, got {t!r}")
    return beta2 * (1.0 - beta2 ** (t - 1)) / (1.0 - beta2**t)


def rms(x: torch.Tensor) -> torch.Tensor:
    r"""Root mean square :math:`\sqrt{\tfrac1n\sum_i x_i^2}` over all entries (0-d tensor).

    Chapter: notebooks/adafactor.md
    """
    check_tensor(x, "x", floating=True)
    if x.numel() == 0:
        raise ValueError("x must not be empty")
    # scale by the largest magnitude first, so that |x| = 1e30 does not overflow x**2 (NaN stays NaN,
    # inf gives inf)
    m = x.detach().abs().amax()
    scale = torch.where((m > 0) & torch.isfinite(m), m, torch.ones_like(m))
    return scale * (x / scale).square().mean().sqrt()


def state_bytes(optimizer: Optimizer) -> int:
    """Bytes held by the tensors of an optimiser's state (all parameters, all keys).

    Chapter: notebooks/adafactor.md
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    total = 0
    for st in optimizer.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                total += v.numel() * v.element_size()
    return total


# ---------------------------------------------------------------------------------------------------
# Shared optimiser plumbing


def _stat_dtype(p: torch.Tensor) -> torch.dtype:
    # half / bfloat16 parameters keep float32 statistics; float32 and float64 keep their own dtype
    return torch.promote_types(p.dtype, torch.float32)


def _check_grad(p: torch.Tensor, who: str) -> torch.Tensor:
    g = p.grad
    if g.is_sparse:
        raise TypeError(
            f"{who} does not support sparse gradients (param of shape {tuple(p.shape)})"
        )
    if torch.is_complex(p):
        raise TypeError(f"{who} does not support complex parameters")
    if not p.is_floating_point():
        raise TypeError(f"{who} needs floating-point parameters, got {p.dtype}")
    return g


class _Base(Optimizer):
    """Closure handling and a ``load_state_dict`` that keeps float32 statistics for half params."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch casts floating state to the parameter's dtype; keep the saved statistics' precision
        saved = {
            pid: {k: v for k, v in st.items() if torch.is_tensor(v)}
            for pid, st in state_dict["state"].items()
        }
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        for pid, p in zip(ids, params, strict=False):
            for k, v in saved.get(pid, {}).items():
                self.state[p][k] = v.to(device=p.device, dtype=_stat_dtype(p))

    def _closure(self, closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        if not callable(closure):
            raise TypeError("closure must be callable or None")
        with torch.enable_grad():
            return closure()


# ---------------------------------------------------------------------------------------------------
# AdaFactor


class AdaFactor(_Base):
    r"""AdaFactor (Shazeer and Stern, 2018) as retold in Su Jianlin's article.

    For a parameter :math:`\theta` of two or more dimensions (the last two factored, leading ones
    batched) with gradient :math:`g_t`:

    .. math::
        \hat\beta_{2,t} &= 1 - t^{-c},\\
        r_t &= \hat\beta_{2,t} r_{t-1} + (1-\hat\beta_{2,t})\,\mathrm{mean}_j(g_{ij}^2+\epsilon_1),\quad
        c_t = \hat\beta_{2,t} c_{t-1} + (1-\hat\beta_{2,t})\,\mathrm{mean}_i(g_{ij}^2+\epsilon_1),\\
        \hat v_{ij} &= r_i c_j / \mathrm{mean}_i(r_i),\qquad u = g/\sqrt{\hat v},\\
        \hat u &= u / \max(1, \mathrm{RMS}(u)/d),\qquad
        \theta_t = \theta_{t-1} - \alpha_t\,\max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\hat u .

    Means instead of the article's sums give the same :math:`\hat v` (the factors cancel) and do not
    overflow; :math:`g/\sqrt{\hat v}` is computed as :math:`g\,(r_i/\bar r)^{-1/2} c_j^{-1/2}`, since
    the product :math:`r_i c_j` of two statistics near :math:`\epsilon_1` underflows in float32
    (0/0 where a row and a column of gradients are zero). Vectors and scalars keep an unfactored :math:`v_t`.
    The step size is
    :math:`\alpha_t = \min(\rho_{\max}, 1/\sqrt t)` when ``lr`` is ``None`` (the paper's relative step
    size), else the constant ``lr`` (the article's advice to pass one). With ``beta1`` a momentum
    :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1)\hat u_t` replaces :math:`\hat u_t` (off by default).

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float or None
        Constant step size :math:`\alpha`; ``None`` (default) uses :math:`\min(\rho_{\max}, t^{-1/2})`.
    eps1 : float
        Added to squared gradients (default 1e-30), > 0.
    eps2 : float
        Floor of the parameter scale (default 1e-3), >= 0.
    d : float
        Clipping threshold of the update's RMS (default 1), > 0.
    c : float
        Exponent of the decay schedule (default 0.8), > 0.
    beta1 : float or None
        Momentum coefficient in [0, 1), or ``None`` (default) for none.
    rho_max : float
        Cap of the relative step size (default 1e-2), > 0.
    scale_parameter : bool
        Multiply the step by :math:`\max(\epsilon_2, \mathrm{RMS}(\theta))` (default True).

    Notes
    -----
    Statistics of float16/bfloat16 parameters are float32; ``load_state_dict`` keeps them float32
    (torch's default would cast them to the parameter's dtype).

    Chapter: notebooks/adafactor.md
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | None = None,
        *,
        eps1: float = 1e-30,
        eps2: float = 1e-3,
        d: float = 1.0,
        c: float = 0.8,
        beta1: float | None = None,
        rho_max: float = 1e-2,
        scale_parameter: bool = True,
    ) -> None:
        if lr is not None:
            lr = check_float(lr, "lr", low=0.0, low_open=True)
        eps1 = check_float(eps1, "eps1", low=0.0, low_open=True)
        eps2 = check_float(eps2, "eps2", low=0.0)
        d = check_float(d, "d", low=0.0, low_open=True)
        c = check_float(c, "c", low=0.0, low_open=True)
        if beta1 is not None:
            beta1 = check_float(beta1, "beta1", low=0.0, high=1.0, high_open=True)
        rho_max = check_float(rho_max, "rho_max", low=0.0, low_open=True)
        if not isinstance(scale_parameter, bool):
            raise TypeError(f"scale_parameter must be a bool, got {type(scale_parameter).__name__}")
        defaults = {
            "lr": lr,
            "eps1": eps1,
            "eps2": eps2,
            "d": d,
            "c": c,
            "beta1": beta1,
            "rho_max": rho_max,
            "scale_parameter": scale_parameter,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimisation step; ``closure`` re-evaluates the loss (optional)."""
        loss = self._closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _check_grad(p, "AdaFactor")
                sdt = _stat_dtype(p)
                state = self.state[p]
                factored = g.dim() >= 2
                if len(state) == 0:
                    state["step"] = 0
                    if factored:
                        state["row"] = torch.zeros(g.shape[:-1], device=p.device, dtype=sdt)
                        state["col"] = torch.zeros(
                            g.shape[:-2] + g.shape[-1:], device=p.device, dtype=sdt
                        )
                    else:
                        state["v"] = torch.zeros(g.shape, device=p.device, dtype=sdt)
                    if group["beta1"] is not None:
                        state["m"] = torch.zeros(g.shape, device=p.device, dtype=sdt)
                state["step"] += 1
                t = state["step"]
                w = t ** (-group["c"])  # 1 - beta2_hat
                gf = g.to(sdt)
                eps1 = group["eps1"]
                if factored:
                    row, col = state["row"], state["col"]
                    # mean_j (g^2 + eps1) through norms: no temporary of the gradient's size
                    n_c, n_r = g.shape[-1], g.shape[-2]
                    row.lerp_(
                        torch.linalg.vector_norm(gf, dim=-1).square_().div_(n_c).add_(eps1), w
                    )
                    col.lerp_(
                        torch.linalg.vector_norm(gf, dim=-2).square_().div_(n_r).add_(eps1), w
                    )
                    # g / sqrt(r c / mean r), one factor at a time: the product r c of two tiny
                    # statistics (a row and a column of zero gradients) underflows in float32
                    r_fac = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
                    u = gf * r_fac
                    u.mul_(col.rsqrt().unsqueeze(-2))
                else:
                    v = state["v"]
                    v.lerp_(gf.square().add_(eps1), w)
                    u = gf * v.rsqrt()
                root_n = math.sqrt(max(u.numel(), 1))
                u_rms = torch.linalg.vector_norm(u).div_(root_n)
                clip = (u_rms / group["d"]).clamp_(min=1.0).reciprocal_()
                alpha = group["lr"] if group["lr"] is not None else min(group["rho_max"], t**-0.5)
                if group["scale_parameter"]:
                    p_rms = torch.linalg.vector_norm(p, dtype=sdt).div_(root_n)
                    scale = p_rms.clamp_(min=group["eps2"]).mul_(alpha)
                else:
                    scale = torch.full((), alpha, device=p.device, dtype=sdt)
                if group["beta1"] is not None:
                    state["m"].lerp_(u.mul_(clip), 1.0 - group["beta1"])
                    u = state["m"]
                    factor = scale
                else:
                    factor = clip.mul_(scale)  # one pass over u: clipping and step size together
                if p.dtype == sdt:
                    p.addcmul_(u, factor, value=-1.0)
                    continue
                p.sub_((u * factor).to(p.dtype))
        return loss


# ---------------------------------------------------------------------------------------------------
# Exponentiated gradient


class ExponentiatedGradient(_Base):
    r"""Exponentiated gradient descent :math:`\theta_{t+1} = \theta_t \odot e^{-\eta\nabla L(\theta_t)}`.

    Mirror descent with the (unnormalised) negative entropy as mirror map: each step solves
    :math:`\min_\theta \eta\langle g,\theta\rangle + \sum_i \theta_i\log(\theta_i/\theta_{t,i})
    - \theta_i + \theta_{t,i}`. Parameters must be positive; they stay positive.

    Parameters
    ----------
    params : iterable
        Positive parameters or parameter groups.
    lr : float
        Step size :math:`\eta > 0`.

    Chapter: notebooks/exponentiated-gradient.md
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2) -> None:
        lr = check_float(lr, "lr", low=0.0, low_open=True)
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimisation step; ``closure`` re-evaluates the loss (optional)."""
        loss = self._closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _check_grad(p, "ExponentiatedGradient")
                state = self.state[p]
                if len(state) == 0:
                    if p.device.type != "meta" and bool((p <= 0).any()):
                        raise ValueError(
                            "params: exponentiated gradient needs positive parameters "
                            "(a zero entry would stay zero, a negative one would move the wrong way)"
                        )
                    state["step"] = 0
                state["step"] += 1
                sdt = _stat_dtype(p)
                p.copy_((p.to(sdt) * torch.exp(-group["lr"] * g.to(sdt))).to(p.dtype))
        return loss


class EGStepSize(_Base):
    r"""Per-coordinate step sizes adapted by exponentiated gradient (the article's simplified form).

    .. math::
        \nu_{t+1} = \nu_t \odot \exp(\gamma\, g_{t-1}\odot g_t),\qquad
        \theta_{t+1} = \theta_t - \eta\,\nu_{t+1}\odot g_t ,

    with :math:`\nu_1 = \nu_{\text{init}}` (before a previous gradient exists :math:`g_{t-1} = 0`), so
    :math:`\nu_{t+1} = \nu_1 \exp(\gamma\sum_{k=1}^{t} g_{k-1}\odot g_k)`.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float
        Base step size :math:`\eta > 0`.
    gamma : float
        Meta step size :math:`\gamma \ge 0` (0 gives plain gradient descent).
    nu_init : float
        Initial gains :math:`\nu_1 > 0` (default 1).
    nu_max : float or None
        Optional cap on the gains (default None: no cap, as in the article).

    Chapter: notebooks/exponentiated-gradient.md
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        gamma: float = 1e-2,
        *,
        nu_init: float = 1.0,
        nu_max: float | None = None,
    ) -> None:
        lr = check_float(lr, "lr", low=0.0, low_open=True)
        gamma = check_float(gamma, "gamma", low=0.0)
        nu_init = check_float(nu_init, "nu_init", low=0.0, low_open=True)
        if nu_max is not None:
            nu_max = check_float(nu_max, "nu_max", low=nu_init)
        super().__init__(params, {"lr": lr, "gamma": gamma, "nu_init": nu_init, "nu_max": nu_max})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimisation step; ``closure`` re-evaluates the loss (optional)."""
        loss = self._closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _check_grad(p, "EGStepSize")
                sdt = _stat_dtype(p)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["nu"] = torch.full(g.shape, group["nu_init"], device=p.device, dtype=sdt)
                    state["prev_grad"] = torch.zeros(g.shape, device=p.device, dtype=sdt)
                state["step"] += 1
                gf = g.to(sdt)
                nu = state["nu"]
                nu.mul_(torch.exp(group["gamma"] * state["prev_grad"] * gf))
                if group["nu_max"] is not None:
                    nu.clamp_(max=group["nu_max"])
                state["prev_grad"].copy_(gf)
                p.sub_((group["lr"] * nu * gf).to(p.dtype))
        return loss
