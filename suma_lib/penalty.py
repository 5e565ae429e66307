r"""Input-gradient and parameter-gradient penalties of an MLP, and the inequality that links them.

Chapter: ``notebooks/gradient-penalty-inequality.ipynb``.

An :math:`l`-layer perceptron maps :math:`h^{(1)} = x` through

.. math:: z^{(t+1)} = W^{(t)} h^{(t)} + b^{(t)}, \qquad h^{(t+1)} = g^{(t)}\big(z^{(t+1)}\big),
   \qquad t = 1, \dots, l,

and :math:`f` is a scalar function of the output :math:`h^{(l+1)}`. With :math:`\delta^{(t)} =
\partial f / \partial z^{(t+1)}` the parameter gradient splits layer by layer,
:math:`\|\nabla_\theta f\|^2 = \sum_t \|\delta^{(t)}\|^2 (1 + \|h^{(t)}\|^2)`, while
:math:`\nabla_x f = (W^{(t)} J^{(t)})^\top \delta^{(t)}` for every :math:`t`, where
:math:`J^{(t)} = \partial h^{(t)} / \partial x` is the Jacobian of the :math:`t`-th layer's *input* with
respect to :math:`x` (so :math:`J^{(1)} = I`). Hence
:math:`\|\delta^{(t)}\| \ge \|\nabla_x f\| / (\|W^{(t)}\|_2 \|J^{(t)}\|_2)` and

.. math:: \|\nabla_x f\|^2 \sum_{t=1}^{l}
   \frac{1 + \|h^{(t)}\|^2}{\|W^{(t)}\|_2^2\, \|J^{(t)}\|_2^2} \;\le\; \|\nabla_\theta f\|^2 .

Everything is computed per sample with :mod:`torch.func` (``vmap`` of ``grad`` / ``jacfwd``), on any
device and dtype, batched over the leading dimensions of ``x``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import grad, jacfwd, vmap

from ._validation import check_tensor

__all__ = [
    "PenaltyInequality",
    "mlp_layers",
    "input_gradient_norm",
    "parameter_gradient_norm",
    "gradient_penalty_bound",
    "penalty_inequality",
]

Layer = tuple[torch.Tensor, "torch.Tensor | None", Callable[[torch.Tensor], torch.Tensor]]


def _identity(z: torch.Tensor) -> torch.Tensor:
    return z


def _compose(fns: list[Callable[[torch.Tensor], torch.Tensor]]) -> Callable[[torch.Tensor], torch.Tensor]:
    if not fns:
        return _identity
    if len(fns) == 1:
        return fns[0]

    def composed(z: torch.Tensor) -> torch.Tensor:
        for fn in fns:
            z = fn(z)
        return z

    return composed


def _flatten_modules(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [leaf for sub in model for leaf in _flatten_modules(sub)]
    return [model]


def mlp_layers(
    model: nn.Module | Sequence[Any],
    activation: Callable | Sequence[Callable | None] | None = None,
) -> list[Layer]:
    r"""Normalise an MLP into a list of ``(weight, bias, activation)`` triples.

    Layer :math:`t` computes :math:`h^{(t+1)} = g^{(t)}(W^{(t)} h^{(t)} + b^{(t)})` with ``weight`` of
    shape ``(d_{t+1}, d_t)`` (the :class:`torch.nn.Linear` convention).

    Parameters
    ----------
    model : torch.nn.Module or sequence
        Either an :class:`torch.nn.Sequential` (or a single :class:`torch.nn.Linear`) that starts with a
        ``Linear``; every parameter-free module after a ``Linear`` (``Tanh``, ``ReLU``, ``GELU``, ...) is
        composed into that layer's activation :math:`g^{(t)}`, and only ``Linear`` modules may hold
        parameters. Or a sequence of ``(weight, bias)`` pairs (``bias`` may be ``None``).
    activation : callable or sequence of callables, optional
        Only with a sequence of pairs: one activation for every layer, or one per layer (``None`` means
        the identity). Default: the identity everywhere (a linear network).

    Returns
    -------
    list of tuple
        ``(weight, bias or None, activation)`` per layer, tensors detached from autograd.

    Raises
    ------
    TypeError, ValueError
        If ``model`` is not of the forms above, or consecutive shapes, dtypes or devices do not match.
    """
    layers: list[Layer] = []
    if isinstance(model, nn.Module):
        if activation is not None:
            raise ValueError("activation must be None when model is an nn.Module (its modules define it)")
        mods = _flatten_modules(model)
        if not mods or not isinstance(mods[0], nn.Linear):
            raise ValueError("model must start with an nn.Linear layer")
        acts: list[list[Callable]] = []
        for i, mod in enumerate(mods):
            if isinstance(mod, nn.Linear):
                b = None if mod.bias is None else mod.bias.detach()
                layers.append((mod.weight.detach(), b, _identity))
                acts.append([])
            elif any(True for _ in mod.parameters()):
                raise ValueError(
                    f"model[{i}] ({type(mod).__name__}) holds parameters; only nn.Linear layers may"
                )
            else:
                acts[-1].append(mod)
        layers = [(w, b, _compose(a)) for (w, b, _), a in zip(layers, acts)]
    elif isinstance(model, (list, tuple)):
        if not model:
            raise ValueError("model must hold at least one (weight, bias) pair")
        if activation is None or callable(activation):
            act_list: list = [activation] * len(model)
        elif isinstance(activation, (list, tuple)) and len(activation) == len(model):
            act_list = list(activation)
        else:
            raise ValueError(
                f"activation must be a callable or a sequence of {len(model)} callables (one per layer)"
            )
        for t, pair in enumerate(model):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise TypeError(f"model[{t}] must be a (weight, bias) pair")
            w, b = pair
            check_tensor(w, f"model[{t}] weight", floating=True)
            if w.dim() != 2:
                raise ValueError(f"model[{t}] weight must be a matrix, got shape {tuple(w.shape)}")
            if b is not None:
                check_tensor(b, f"model[{t}] bias", floating=True)
                if tuple(b.shape) != (w.shape[0],):
                    raise ValueError(
                        f"model[{t}] bias must have shape ({w.shape[0]},), got {tuple(b.shape)}"
                    )
                b = b.detach()
            g = act_list[t]
            if g is not None and not callable(g):
                raise TypeError(f"activation[{t}] must be callable or None")
            layers.append((w.detach(), b, _identity if g is None else g))
    else:
        raise TypeError(
            f"model must be an nn.Sequential or a list of (weight, bias) pairs, got {type(model).__name__}"
        )
    w0 = layers[0][0]
    for t, (w, b, _) in enumerate(layers):
        if w.dtype != w0.dtype or w.device != w0.device or (b is not None and
                                                             (b.dtype, b.device) != (w0.dtype, w0.device)):
            raise TypeError(f"layer {t} must share the dtype and device of layer 0 ({w0.dtype}, {w0.device})")
        if t and w.shape[1] != layers[t - 1][0].shape[0]:
            raise ValueError(
                f"layer {t} expects {w.shape[1]} inputs but layer {t - 1} gives {layers[t - 1][0].shape[0]}"
            )
    return layers


# ------------------------------------------------------------------------------ functional forward
def _forward(params: list, acts: list, x: torch.Tensor, eps: list | None = None) -> list[torch.Tensor]:
    """One sample ``x`` of shape ``(d_1,)`` -> ``[h1, ..., h_{l+1}]``; ``eps`` is added to each ``z``."""
    h = x
    hs = [h]
    for t, ((w, b), g) in enumerate(zip(params, acts)):
        z = w @ h                              # z^{(t+1)} = W^{(t)} h^{(t)} (+ b^{(t)})
        if b is not None:
            z = z + b
        if eps is not None:
            z = z + eps[t]                     # a zero probe whose gradient is delta^{(t)}
        h = g(z)                               # h^{(t+1)} = g^{(t)}(z^{(t+1)})
        hs.append(h)
    return hs


def _scalar(f: Callable, out: torch.Tensor) -> torch.Tensor:
    val = f(out)
    if not isinstance(val, torch.Tensor) or val.numel() != 1:
        raise ValueError("f must map one output vector of shape (d_out,) to a scalar tensor")
    return val.reshape(())


def _prepare(model, x, f, activation):
    layers = mlp_layers(model, activation)
    check_tensor(x, "x", min_dim=1, floating=True, finite=True)
    w0 = layers[0][0]
    if x.shape[-1] != w0.shape[1]:
        raise ValueError(f"x must have {w0.shape[1]} features in its last dimension, got {x.shape[-1]}")
    if x.dtype != w0.dtype or x.device != w0.device:
        raise TypeError(f"x must share the weights' dtype and device ({w0.dtype}, {w0.device}), "
                        f"got ({x.dtype}, {x.device})")
    if f is None:
        f = torch.sum
    elif not callable(f):
        raise TypeError(f"f must be callable or None, got {type(f).__name__}")
    params = [(w, b) for w, b, _ in layers]
    acts = [g for _, _, g in layers]
    return params, acts, f, x.reshape(-1, x.shape[-1]), x.shape[:-1]


def _sq_norm_sum(tensors) -> torch.Tensor:
    return sum((t.flatten(1) ** 2).sum(-1) for t in tensors if t is not None)


def _input_grad(params, acts, f, xb) -> torch.Tensor:
    return vmap(grad(lambda xi: _scalar(f, _forward(params, acts, xi)[-1])))(xb)


def _param_grads(params, acts, f, xb) -> list:
    flat = [p for pair in params for p in pair if p is not None]

    def f_theta(flat_p, xi):
        it = iter(flat_p)
        ps = [(next(it), None if b is None else next(it)) for _, b in params]
        return _scalar(f, _forward(ps, acts, xi)[-1])

    return vmap(grad(f_theta), in_dims=(None, 0))(flat, xb)


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
    model : torch.nn.Sequential or sequence of (weight, bias)
        The MLP (see :func:`mlp_layers`).
    x : torch.Tensor, shape ``(..., d_1)``
        Inputs; leading dimensions are a batch.
    f : callable, optional
        Maps one output vector ``(d_out,)`` to a scalar, written with torch operations (it is traced by
        :func:`torch.func.vmap`). Default: the sum of the outputs (the output itself when ``d_out = 1``).
    activation : callable or sequence, optional
        Activations for a list of pairs (see :func:`mlp_layers`).

    Returns
    -------
    torch.Tensor, shape ``x.shape[:-1]``
    """
    params, acts, f, xb, lead = _prepare(model, x, f, activation)
    return _input_grad(params, acts, f, xb).norm(dim=-1).reshape(lead)


def parameter_gradient_norm(
    model: nn.Module | Sequence[Any],
    x: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    activation: Callable | Sequence[Callable | None] | None = None,
) -> torch.Tensor:
    r"""The parameter-gradient norm :math:`\|\nabla_\theta f\|_2` over every weight and bias, per sample.

    Computed by automatic differentiation with respect to the parameters themselves (per-sample
    gradients via :func:`torch.func.vmap`), not through the layer-wise formula, so that it can be
    compared with that formula independently.

    Parameters
    ----------
    model, x, f, activation
        As in :func:`input_gradient_norm`.

    Returns
    -------
    torch.Tensor, shape ``x.shape[:-1]``
    """
    params, acts, f, xb, lead = _prepare(model, x, f, activation)
    return _sq_norm_sum(_param_grads(params, acts, f, xb)).sqrt().reshape(lead)


class PenaltyInequality(NamedTuple):
    r"""Every quantity of the gradient-penalty inequality, per sample (leading shape ``x.shape[:-1]``).

    ``lower_bound`` is the left-hand side
    :math:`\|\nabla_x f\|^2 \sum_t (\beta_t + \|h^{(t)}\|^2) / (\|W^{(t)}\|_2^2 \|J^{(t)}\|_2^2)`
    (:math:`\beta_t = 1` when layer :math:`t` has a bias, else 0) and ``ratio`` is
    ``lower_bound / param_grad_sq``, which the inequality keeps at or below one.
    """

    input_grad_sq: torch.Tensor
    """:math:`\\|\\nabla_x f\\|^2`, shape ``(...)``."""
    param_grad_sq: torch.Tensor
    """:math:`\\|\\nabla_\\theta f\\|^2` by autograd over the parameters, shape ``(...)``."""
    lower_bound: torch.Tensor
    """The left-hand side of the inequality, shape ``(...)``."""
    ratio: torch.Tensor
    """``lower_bound / param_grad_sq`` (0 where both vanish), shape ``(...)``."""
    hidden_sq: torch.Tensor
    """:math:`\\|h^{(t)}\\|^2` for :math:`t = 1..l`, shape ``(..., l)``."""
    bias_terms: torch.Tensor
    """:math:`\\beta_t` (1 with a bias, 0 without), shape ``(l,)``."""
    weight_norms: torch.Tensor
    """Spectral norms :math:`\\|W^{(t)}\\|_2`, shape ``(l,)``."""
    jacobian_norms: torch.Tensor
    """Spectral norms :math:`\\|\\partial h^{(t)}/\\partial x\\|_2` for :math:`t = 1..l+1`, shape ``(..., l+1)``."""
    preact_jacobian_norms: torch.Tensor
    """Spectral norms :math:`\\|\\partial z^{(t+1)}/\\partial x\\|_2` for :math:`t = 1..l`, shape ``(..., l)``."""
    preact_grad_sq: torch.Tensor
    """:math:`\\|\\delta^{(t)}\\|^2 = \\|\\partial f/\\partial z^{(t+1)}\\|^2`, shape ``(..., l)``."""


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

    where :math:`\partial h^{(t)}/\partial x` is the Jacobian of layer :math:`t`'s input (the identity for
    :math:`t = 1`), norms of matrices are spectral norms and :math:`\beta_t` is 1 for a layer with a bias
    and 0 without. A term whose denominator vanishes is counted as 0: then
    :math:`\nabla_x f = (W^{(t)} J^{(t)})^\top \delta^{(t)} = 0` exactly.

    Parameters
    ----------
    model, x, f, activation
        As in :func:`input_gradient_norm`. ``f`` and the activations must be differentiable where they
        are evaluated (ReLU is, almost everywhere).

    Returns
    -------
    PenaltyInequality
        Named tuple of tensors on ``x``'s device and dtype.

    Notes
    -----
    Chapter: ``notebooks/gradient-penalty-inequality.ipynb``.
    """
    params, acts, f, xb, lead = _prepare(model, x, f, activation)
    n_layers = len(params)
    hs = vmap(lambda xi: tuple(_forward(params, acts, xi)))(xb)              # h^{(1)}, ..., h^{(l+1)}
    gx = _input_grad(params, acts, f, xb)
    gx2 = (gx**2).sum(-1)
    gth2 = _sq_norm_sum(_param_grads(params, acts, f, xb))
    eps0 = [xb.new_zeros(xb.shape[0], w.shape[0]) for w, _ in params]
    deltas = vmap(grad(lambda e, xi: _scalar(f, _forward(params, acts, xi, e)[-1])))(eps0, xb)
    dsq = torch.stack([(d**2).sum(-1) for d in deltas], -1)
    jacs = vmap(jacfwd(lambda xi: tuple(_forward(params, acts, xi)[1:])))(xb)  # d h^{(t)}/dx, t >= 2
    jac_norms = [xb.new_ones(xb.shape[0])] + [torch.linalg.matrix_norm(j, ord=2) for j in jacs]
    eye = torch.eye(xb.shape[-1], dtype=xb.dtype, device=xb.device)
    zjac = [params[0][0] @ eye] + [w @ j for (w, _), j in zip(params[1:], jacs[:-1])]  # W^{(t)} J^{(t)}
    hid = torch.stack([(h**2).sum(-1) for h in hs[:n_layers]], -1)
    beta = xb.new_tensor([0.0 if b is None else 1.0 for _, b in params])
    wn = torch.stack([torch.linalg.matrix_norm(w, ord=2) for w, _ in params])
    jn = torch.stack(jac_norms, -1)
    denom = wn**2 * jn[:, :n_layers] ** 2
    num = beta + hid
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    terms = torch.where(denom > 0, num / safe, torch.zeros_like(denom))
    lower = gx2 * terms.sum(-1)
    pos = gth2 > 0
    ratio = torch.where(pos, lower / torch.where(pos, gth2, torch.ones_like(gth2)), torch.zeros_like(lower))
    zjn = torch.stack(
        [torch.linalg.matrix_norm(zj if zj.dim() == 3 else zj.expand(xb.shape[0], *zj.shape), ord=2)
         for zj in zjac], -1)
    return PenaltyInequality(
        input_grad_sq=gx2.reshape(lead),
        param_grad_sq=gth2.reshape(lead),
        lower_bound=lower.reshape(lead),
        ratio=ratio.reshape(lead),
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

    (the ``1`` is dropped for a layer without bias). See :func:`penalty_inequality`, which also returns
    the right-hand side and the ingredients.

    Parameters
    ----------
    model, x, f, activation
        As in :func:`input_gradient_norm`.

    Returns
    -------
    torch.Tensor, shape ``x.shape[:-1]``
    """
    return penalty_inequality(model, x, f, activation=activation).lower_bound
