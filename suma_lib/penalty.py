r"""Input-gradient and parameter-gradient penalties of an MLP, and the inequality that links them.

Chapter: notebooks/gradient-penalty-inequality.md

An :math:`l`-layer perceptron maps :math:`h^{(1)} = x` through

.. math:: z^{(t+1)} = W^{(t)} h^{(t)} + b^{(t)}, \qquad h^{(t+1)} = g^{(t)}\big(z^{(t+1)}\big),
   \qquad t = 1, \dots, l,

and :math:`f` is a scalar function of the output :math:`h^{(l+1)}`. With :math:`\delta^{(t)} =
\partial f / \partial z^{(t+1)}` the parameter gradient splits layer by layer,
:math:`\|\nabla_\theta f\|^2 = \sum_t \|\delta^{(t)}\|^2 (1 + \|h^{(t)}\|^2)`, while
:math:`\nabla_x f = (W^{(t)} J^{(t)})^\top \delta^{(t)}` for every :math:`t`, where
:math:`J^{(t)} = \partial h^{(t)} / \partial x` is the Jacobian of the :math:`t`-th layer's *input*
with respect to :math:`x` (so :math:`J^{(1)} = I`). Hence
:math:`\|\delta^{(t)}\| \ge \|\nabla_x f\| / (\|W^{(t)}\|_2 \|J^{(t)}\|_2)` and

.. math:: \|\nabla_x f\|^2 \sum_{t=1}^{l}
   \frac{1 + \|h^{(t)}\|^2}{\|W^{(t)}\|_2^2\, \|J^{(t)}\|_2^2} \;\le\; \|\nabla_\theta f\|^2 .

Everything is computed per sample by reverse-mode autograd (samples do not interact, so one backward
pass of a sum over the batch gives every sample's gradient), on any device and dtype, batched over
the leading dimensions of ``x``. Activations receive a batch of pre-activations, shape ``(B, d)``,
and must act on each row independently (entrywise activations do).

The layer list (:func:`mlp_layers`) and the batched gradients and Jacobians live in the private module
``suma_lib._penalty_layers``; import every name from here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ._numerics import max_abs
from ._penalty_layers import (
    _apply_f,
    _forward,
    _gradients,
    _jacobians,
    _prepare,
    _safe_norm,
    _safe_ratio,
    _spectral_norm,
    _sq_norm_sum,
    mlp_layers,
)
from ._validation import (
    check_choice,
    check_device,
    check_dtype,
    check_float,
    check_generator,
    check_int,
)

__all__ = [
    "PenaltyInequality",
    "mlp_layers",
    "input_gradient_norm",
    "parameter_gradient_norm",
    "gradient_penalty_bound",
    "penalty_inequality",
    "parameter_gradient_penalty",
    "random_mlp",
]


def input_gradient_norm(
    model: nn.Module | Sequence[Any],
    x: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    activation: Callable | Sequence[Callable | None] | None = None,
) -> torch.Tensor:
    r"""The input-gradient norm :math:`\|\nabla_x f(h^{(l+1)}(x))\|_2`, per sample.

    Parameters
    ----------
    model : torch.nn.Sequential or list
        The MLP: an ``nn.Sequential`` or a list of ``(weight, bias)`` pairs (see
        :func:`mlp_layers`).
    x : torch.Tensor, shape ``(..., d_1)``
        Inputs; leading dimensions are a batch.
    f : callable, optional
        Maps one output vector ``(d_out,)`` to a scalar, written with torch operations (it is
        applied to every sample through :func:`torch.func.vmap`). Default: the sum of the outputs
        (the output itself when ``d_out = 1``).
    activation : callable or list of callable, optional
        Activations for a list of pairs (see :func:`mlp_layers`).

    Returns
    -------
    torch.Tensor, shape ``x.shape[:-1]``
    """
    params, acts, f, xb, lead = _prepare(model, x, f, activation)
    return _safe_norm(_gradients(params, acts, f, xb, False)[1]).reshape(lead)


def parameter_gradient_norm(
    model: nn.Module | Sequence[Any],
    x: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    activation: Callable | Sequence[Callable | None] | None = None,
) -> torch.Tensor:
    r"""The parameter-gradient norm :math:`\|\nabla_\theta f\|_2` over every weight and bias, per sample.

    Computed by automatic differentiation with respect to the parameters themselves (each sample
    gets its own copy of the weights, so one backward pass gives every per-sample gradient), not
    through the layer-wise formula, so that it can be compared with that formula independently.

    Parameters
    ----------
    model, x, f, activation
        As in :func:`input_gradient_norm`.

    Returns
    -------
    torch.Tensor, shape ``x.shape[:-1]``
    """
    params, acts, f, xb, lead = _prepare(model, x, f, activation)
    return _sq_norm_sum(_gradients(params, acts, f, xb, True)[3]).sqrt().reshape(lead)


class PenaltyInequality(NamedTuple):
    r"""Every quantity of the gradient-penalty inequality, per sample (leading shape
    ``x.shape[:-1]``).

    ``lower_bound`` is the left-hand side
    :math:`\|\nabla_x f\|^2 \sum_t (\beta_t + \|h^{(t)}\|^2) / (\|W^{(t)}\|_2^2 \|J^{(t)}\|_2^2)`
    (:math:`\beta_t = 1` when layer :math:`t` has a bias, else 0) and ``ratio`` is
    ``lower_bound / param_grad_sq``, which the inequality keeps at or below one.

    Fields, in order (``l`` is the number of layers):

    ``input_grad_sq`` ``(...)``
        :math:`\|\nabla_x f\|^2`.
    ``param_grad_sq`` ``(...)``
        :math:`\|\nabla_\theta f\|^2`, by autograd over the parameters themselves.
    ``lower_bound`` ``(...)``
        The left-hand side of the inequality.
    ``ratio`` ``(...)``
        ``lower_bound / param_grad_sq``; 0 where both vanish. Computed after dividing both sides by
        the sample's largest :math:`\|h^{(t)}\|^2`, so it stays finite when the squared norms
        themselves overflow (inputs of size :math:`10^{30}` in float32, where ``lower_bound`` and
        ``param_grad_sq`` are ``inf``).
    ``sharp_lower_bound`` ``(...)``
        The sharper bound with :math:`\|\partial z^{(t+1)}/\partial x\|_2 = \|W^{(t)} J^{(t)}\|_2`
        in place of :math:`\|W^{(t)}\|_2 \|J^{(t)}\|_2`; it lies between ``lower_bound`` and ``param_grad_sq``.
    ``hidden_sq`` ``(..., l)``
        :math:`\|h^{(t)}\|^2` for :math:`t = 1, \dots, l`.
    ``bias_terms`` ``(l,)``
        :math:`\beta_t`.
    ``weight_norms`` ``(l,)``
        Spectral norms :math:`\|W^{(t)}\|_2`.
    ``jacobian_norms`` ``(..., l + 1)``
        Spectral norms :math:`\|\partial h^{(t)}/\partial x\|_2` for :math:`t = 1, \dots, l + 1`.
    ``preact_jacobian_norms`` ``(..., l)``
        Spectral norms :math:`\|\partial z^{(t+1)}/\partial x\|_2 = \|W^{(t)} J^{(t)}\|_2`.
    ``preact_grad_sq`` ``(..., l)``
        :math:`\|\delta^{(t)}\|^2 = \|\partial f/\partial z^{(t+1)}\|^2`, by autograd with respect
        to the pre-activations.
    """

    input_grad_sq: torch.Tensor
    param_grad_sq: torch.Tensor
    lower_bound: torch.Tensor
    ratio: torch.Tensor
    sharp_lower_bound: torch.Tensor
    hidden_sq: torch.Tensor
    bias_terms: torch.Tensor
    weight_norms: torch.Tensor
    jacobian_norms: torch.Tensor
    preact_jacobian_norms: torch.Tensor
    preact_grad_sq: torch.Tensor


def penalty_inequality(
    model: nn.Module | Sequence[Any],
    x: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    activation: Callable | Sequence[Callable | None] | None = None,
) -> PenaltyInequality:
    r"""Both sides of the gradient-penalty inequality and every ingredient, per sample.

    .. math:: \|\nabla_x f\|^2 \sum_{t=1}^{l}
       \frac{\beta_t + \|h^{(t)}\|^2}{\|W^{(t)}\|_2^2\, \|\partial h^{(t)}/\partial x\|_2^2}
       \;\le\; \|\nabla_\theta f\|^2 ,

    where :math:`\partial h^{(t)}/\partial x` is the Jacobian of layer :math:`t`'s input (the
    identity for :math:`t = 1`), norms of matrices are spectral norms and :math:`\beta_t` is 1 for a
    layer with a bias and 0 without. A term whose denominator vanishes is counted as 0: then
    :math:`\nabla_x f = (W^{(t)} J^{(t)})^\top \delta^{(t)} = 0` exactly.

    Parameters
    ----------
    model, x, f, activation
        As in :func:`input_gradient_norm`. ``f`` and the activations must be differentiable where
        they are evaluated (ReLU is, almost everywhere).

    Returns
    -------
    PenaltyInequality
        Named tuple of tensors on ``x``'s device and dtype.

    Notes
    -----
    Chapter: notebooks/gradient-penalty-inequality.md
    """
    params, acts, f, xb, lead = _prepare(model, x, f, activation)
    n_layers = len(params)
    hs, gx, deltas, pgrads = _gradients(params, acts, f, xb, True)
    gx2 = (gx**2).sum(-1)
    gth2 = _sq_norm_sum(pgrads)
    dsq = torch.stack([(d**2).sum(-1) for d in deltas], -1)
    jacs = _jacobians(params, acts, xb)  # d h^{(t)}/dx, t >= 2
    jn = torch.stack([xb.new_ones(xb.shape[0])] + [_spectral_norm(j) for j in jacs], -1)
    wn = torch.stack([_spectral_norm(w) for w, _ in params])
    # dz^{(t+1)}/dx = W^{(t)} J^{(t)}; for t = 1 it is W^{(1)} itself.
    zjn = torch.stack(
        [wn[0].expand(xb.shape[0])]
        + [_spectral_norm(w @ j) for (w, _), j in zip(params[1:], jacs[:-1], strict=False)],
        -1,
    )
    beta = xb.new_tensor([0.0 if b is None else 1.0 for _, b in params])
    hnorm = torch.stack([_safe_norm(h) for h in hs[:n_layers]], -1)
    # Divide every (1 + |h|^2) and every parameter gradient by the largest |h|^2 of the sample, so
    # that
    # the ratio stays finite when the squares themselves overflow (|x| ~ 1e30 in float32).
    scale = hnorm.amax(-1, keepdim=True).clamp_min(1.0)
    num = beta / scale**2 + (hnorm / scale) ** 2
    terms = _safe_ratio(num, wn**2 * jn[:, :n_layers] ** 2).sum(-1)
    sharp_terms = _safe_ratio(num, zjn**2).sum(-1)
    gth2_scaled = _sq_norm_sum([g / scale.view(-1, *[1] * (g.dim() - 1)) for g in pgrads])
    ratio = _safe_ratio(gx2 * terms, gth2_scaled)
    s2 = scale.squeeze(-1) ** 2
    lower = torch.where(gx2 > 0, gx2 * terms * s2, torch.zeros_like(gx2))
    sharp = torch.where(gx2 > 0, gx2 * sharp_terms * s2, torch.zeros_like(gx2))
    hid = hnorm**2
    return PenaltyInequality(
        input_grad_sq=gx2.reshape(lead),
        param_grad_sq=gth2.reshape(lead),
        lower_bound=lower.reshape(lead),
        ratio=ratio.reshape(lead),
        sharp_lower_bound=sharp.reshape(lead),
        hidden_sq=hid.reshape(*lead, n_layers),
        bias_terms=beta,
        weight_norms=wn,
        jacobian_norms=jn.reshape(*lead, n_layers + 1),
        preact_jacobian_norms=zjn.reshape(*lead, n_layers),
        preact_grad_sq=dsq.reshape(*lead, n_layers),
    )


def gradient_penalty_bound(
    model: nn.Module | Sequence[Any],
    x: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    activation: Callable | Sequence[Callable | None] | None = None,
) -> torch.Tensor:
    r"""The lower bound on :math:`\|\nabla_\theta f\|^2` given by the input gradient, per sample.

    .. math:: \|\nabla_x f\|^2 \sum_{t=1}^{l}
       \frac{1 + \|h^{(t)}\|^2}{\|W^{(t)}\|_2^2\, \|\partial h^{(t)}/\partial x\|_2^2}

    (the ``1`` is dropped for a layer without bias). See :func:`penalty_inequality`, which also
    returns the right-hand side and the ingredients.

    Parameters
    ----------
    model, x, f, activation
        As in :func:`input_gradient_norm`.

    Returns
    -------
    torch.Tensor, shape ``x.shape[:-1]``
    """
    return penalty_inequality(model, x, f, activation=activation).lower_bound


def parameter_gradient_penalty(
    model: nn.Module | Sequence[Any],
    x: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    activation: Callable | Sequence[Callable | None] | None = None,
) -> torch.Tensor:
    r"""The per-sample parameter-gradient penalty :math:`\|\nabla_\theta f\|^2`, differentiable in θ.

    Uses the layer-wise split of the parameter gradient,

    .. math:: \|\nabla_\theta f\|^2 = \sum_{t=1}^{l} \|\delta^{(t)}\|^2 \big(\beta_t + \|h^{(t)}\|^2\big),
       \qquad \delta^{(t)} = \frac{\partial f}{\partial z^{(t+1)}},

    so that one backward pass with respect to the pre-activations of the whole batch gives every
    sample's :math:`\delta^{(t)}` (samples do not interact), and the result keeps its graph
    (``create_graph=True``): adding ``lam * penalty.mean()`` to a loss trains with the penalty. It
    equals ``parameter_gradient_norm(...) ** 2`` (checked in the tests), at the cost of one extra
    backward pass instead of per-sample gradients.

    Parameters
    ----------
    model, x, f, activation
        As in :func:`input_gradient_norm`; the model's parameters are used without detaching.

    Returns
    -------
    torch.Tensor, shape ``x.shape[:-1]``
    """
    params, acts, f, xb, lead = _prepare(model, x, f, activation, detach=False)
    with torch.enable_grad():
        # an input that requires grad keeps the graph alive even when no parameter does
        hs, zs = _forward(
            params, acts, xb if xb.requires_grad else xb.detach().requires_grad_(True)
        )
        # row i of each result is sample i's delta^{(t)}; the graph is kept for the outer backward
        deltas = torch.autograd.grad(
            _apply_f(f, hs[-1]).sum(), zs, create_graph=True, allow_unused=True
        )
    total = xb.new_zeros(xb.shape[0])
    for (_, b), hh, d in zip(params, hs, deltas, strict=False):
        if d is not None:
            # |d|^2 (beta + |h|^2) from rescaled factors (scales detached, so the gradient is
            # exact):
            # |h|^2 may overflow (x = 1e30) where |d|^2 |h|^2 does not, and d = 0 must give 0, not 0
            # * inf.
            sd, sh = max_abs(d), max_abs(hh)
            d2, h2 = (d / sd).square().sum(-1), (hh / sh).square().sum(-1)
            sd = sd.squeeze(-1) * (d2 > 0)  # a zero delta has scale 0, so 0 * |h|^2 stays 0
            term = d2 * (sd * sh.squeeze(-1)).square() * h2
            if b is not None:
                term = term + d2 * sd.square()
            total = total + term
    return total.reshape(lead)


def random_mlp(
    widths: Sequence[int],
    activation: str = "tanh",
    *,
    weight_gain: float = 1.0,
    bias_std: float = 0.5,
    last_activation: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> nn.Sequential:
    r"""A random MLP
    ``Linear(widths[0], widths[1]), act, ..., Linear(widths[-2], widths[-1]) [, act]``.

    Weights are drawn from :math:`\mathcal N(0, \text{gain}^2 / d_{\text{in}})`, biases from
    :math:`\mathcal N(0, \text{bias\_std}^2)`, through ``generator`` when given.

    Parameters
    ----------
    widths : list of int
        Layer widths :math:`d_1, \dots, d_{l+1}` (at least two, all positive).
    activation : str
        One of ``"tanh"``, ``"relu"``, ``"gelu"``, ``"sigmoid"``, ``"softplus"``, ``"identity"``.
    weight_gain, bias_std : float
        Scale of the weights (relative to :math:`1/\sqrt{d_{\text{in}}}`) and of the biases.
    last_activation : bool
        Apply the activation after the last layer too (the chapter's :math:`h^{(l+1)} = g(z^{(l+1)})`).
    generator : torch.Generator, optional
        Source of randomness (on ``device``).
    dtype, device
        Of the parameters.

    Returns
    -------
    torch.nn.Sequential
    """
    acts = {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "sigmoid": nn.Sigmoid,
        "softplus": nn.Softplus,
        "identity": nn.Identity,
    }
    if not isinstance(widths, (list, tuple)) or len(widths) < 2:
        raise ValueError("widths must be a sequence of at least two layer widths")
    widths = [check_int(w, "widths", low=1) for w in widths]
    check_choice(activation, "activation", tuple(acts))
    weight_gain = check_float(weight_gain, "weight_gain", low=0.0)
    bias_std = check_float(bias_std, "bias_std", low=0.0)
    check_generator(generator)
    dtype = check_dtype(dtype, allow_none=False)
    device = check_device(device) or torch.device("cpu")
    mods: list[nn.Module] = []
    for t, (d_in, d_out) in enumerate(itertools.pairwise(widths)):
        # skip nn.Linear's own initialisation: it would draw from (and advance) the global generator
        lin = torch.nn.utils.skip_init(nn.Linear, d_in, d_out, dtype=dtype, device=device)
        with torch.no_grad():
            w = torch.randn(d_out, d_in, generator=generator, dtype=dtype, device=lin.weight.device)
            b = torch.randn(d_out, generator=generator, dtype=dtype, device=lin.weight.device)
            lin.weight.copy_(w * (weight_gain / d_in**0.5))
            lin.bias.copy_(b * bias_std)
        mods.append(lin)
        if last_activation or t < len(widths) - 2:
            mods.append(acts[activation]())
    return nn.Sequential(*mods)
