r"""The layers of an MLP and batched per-sample gradients and Jacobians, for :mod:`suma_lib.penalty`.

Private; import from :mod:`suma_lib.penalty` (which re-exports :func:`mlp_layers`).

Chapter: notebooks/gradient-penalty-inequality.md
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import vmap

from ._numerics import half_to_float32, safe_ratio, scaled_norm
from ._validation import (
    check_compatible,
    check_tensor,
)

_Layer = tuple[torch.Tensor, "torch.Tensor | None", Callable[[torch.Tensor], torch.Tensor]]


def _identity(z: torch.Tensor) -> torch.Tensor:
    return z


def _compose(
    fns: list[Callable[[torch.Tensor], torch.Tensor]],
) -> Callable[[torch.Tensor], torch.Tensor]:
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
    *,
    detach: bool = True,
) -> list[tuple[torch.Tensor, torch.Tensor | None, Callable[[torch.Tensor], torch.Tensor]]]:
    r"""Normalise an MLP into a list of ``(weight, bias, activation)`` triples.

    Layer :math:`t` computes :math:`h^{(t+1)} = g^{(t)}(W^{(t)} h^{(t)} + b^{(t)})` with ``weight``
    of shape ``(d_{t+1}, d_t)`` (the :class:`torch.nn.Linear` convention).

    Parameters
    ----------
    model : torch.nn.Module or list
        Either an :class:`torch.nn.Sequential` (or a single :class:`torch.nn.Linear`) that starts
        with a ``Linear``; every parameter-free module after a ``Linear`` (``Tanh``, ``ReLU``,
        ``GELU``, ...) is composed into that layer's activation :math:`g^{(t)}`, and only ``Linear``
        modules may hold parameters. Or a sequence of ``(weight, bias)`` pairs (``bias`` may be ``None``).
    activation : callable or list of callable, optional
        Only with a sequence of pairs: one activation for every layer, or one per layer (``None``
        means the identity). Default: the identity everywhere (a linear network).
    detach : bool
        Detach the weights and biases from autograd (the default), or keep them attached so that a
        result can be differentiated with respect to them.

    Returns
    -------
    list of tuple
        ``(weight, bias or None, activation)`` per layer.

    Raises
    ------
    TypeError, ValueError
        If ``model`` is not of the forms above, or consecutive shapes, dtypes or devices do not match.
    """
    layers: list[_Layer] = []
    if isinstance(model, nn.Module):
        if activation is not None:
            raise ValueError(
                "activation must be None when model is an nn.Module (its modules define it)"
            )
        mods = _flatten_modules(model)
        if not mods or not isinstance(mods[0], nn.Linear):
            raise ValueError("model must start with an nn.Linear layer")
        acts: list[list[Callable]] = []
        for i, mod in enumerate(mods):
            if isinstance(mod, nn.Linear):
                b = mod.bias if mod.bias is None or not detach else mod.bias.detach()
                layers.append((mod.weight.detach() if detach else mod.weight, b, _identity))
                acts.append([])
            elif any(True for _ in mod.parameters()):
                raise ValueError(
                    f"model[{i}] ({type(mod).__name__}) holds parameters; only nn.Linear layers may"
                )
            else:
                acts[-1].append(mod)
        layers = [(w, b, _compose(a)) for (w, b, _), a in zip(layers, acts, strict=False)]
    elif isinstance(model, (list, tuple)):
        if not model:
            raise ValueError("model must hold at least one (weight, bias) pair")
        if activation is None or callable(activation):
            act_list: list = [activation] * len(model)
        elif isinstance(activation, (list, tuple)) and len(activation) == len(model):
            act_list = list(activation)
        else:
            raise ValueError(
                f"activation must be a callable or a sequence of {len(model)} callables (one "
                f"per layer)"
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
                b = b.detach() if detach else b
            g = act_list[t]
            if g is not None and not callable(g):
                raise TypeError(f"activation[{t}] must be callable or None")
            layers.append((w.detach() if detach else w, b, _identity if g is None else g))
    else:
        raise TypeError(
            f"model must be an nn.Sequential or a list of (weight, bias) pairs, got "
            f"{type(model).__name__}"
        )
    w0 = layers[0][0]
    for t, (w, b, _) in enumerate(layers):
        check_compatible(w, w0, f"layer {t} weight", "layer 0 weight", core_dims=2)
        if b is not None:
            check_compatible(b, w0, f"layer {t} bias", "layer 0 weight", core_dims=(1, 2))
        if t and w.shape[1] != layers[t - 1][0].shape[0]:
            raise ValueError(
                f"layer {t} expects {w.shape[1]} inputs but layer {t - 1} gives "
                f"{layers[t - 1][0].shape[0]}"
            )
    return layers


# ------------------------------------------------------------------------------ batched forward
def _forward(params: list, acts: list, x: torch.Tensor) -> tuple[list, list]:
    """Rows of ``x`` are samples -> ``([h1, ..., h_{l+1}], [z2, ..., z_{l+1}])``.

    A weight of shape ``(B, out, in)`` (and bias ``(B, out)``) is a per-sample copy: sample ``i``
    uses slice ``i`` only, so the gradient of a sum over samples with respect to it is the per-sample gradient.
    """
    h, hs, zs = x, [x], []
    for (w, b), g in zip(params, acts, strict=False):
        z = (w @ h.unsqueeze(-1)).squeeze(-1) if w.dim() == 3 else h @ w.mT  # z^{(t+1)} = W h (+ b)
        if b is not None:
            z = z + b
        h = g(z)  # h^{(t+1)} = g(z^{(t+1)})
        zs.append(z)
        hs.append(h)
    return hs, zs


def _scalar(f: Callable, out: torch.Tensor) -> torch.Tensor:
    val = f(out)
    if not isinstance(val, torch.Tensor) or val.numel() != 1:
        raise ValueError("f must map one output vector of shape (d_out,) to a scalar tensor")
    return val.reshape(())


def _apply_f(f: Callable, out: torch.Tensor) -> torch.Tensor:
    """``f`` of each row of ``out`` (one sample's output vector), shape ``(B,)``."""
    return vmap(lambda o: _scalar(f, o))(out)


def _prepare(model, x, f, activation, detach=True):
    layers = mlp_layers(model, activation, detach=detach)
    check_tensor(x, "x", min_dim=1, floating=True, finite=True)
    w0 = layers[0][0]
    if x.shape[-1] != w0.shape[1]:
        raise ValueError(
            f"x must have {w0.shape[1]} features in its last dimension, got {x.shape[-1]}"
        )
    check_compatible(x, w0, "x", "the weights", core_dims=(x.dim(), 2))
    if f is None:
        f = torch.sum
    elif not callable(f):
        raise TypeError(f"f must be callable or None, got {type(f).__name__}")
    xb = x.reshape(-1, x.shape[-1])
    if xb.shape[0] == 0:
        raise ValueError("x must hold at least one sample")
    params = [(w, b) for w, b, _ in layers]
    acts = [g for _, _, g in layers]
    return params, acts, f, xb, x.shape[:-1]


# ``num / den`` where ``den > 0``, else 0 (a vanishing Jacobian forces a zero input gradient).
_safe_ratio = safe_ratio


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis without overflow: ``m * |v / m|`` with ``m = max|v|``."""
    m, r = scaled_norm(v)
    return m * r


@half_to_float32
def _spectral_norm(a: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix (float16/bfloat16 in float32: no half kernel)."""
    return torch.linalg.matrix_norm(a, ord=2)


def _sq_norm_sum(tensors) -> torch.Tensor:
    return sum((t.flatten(1) ** 2).sum(-1) for t in tensors if t is not None)


def _gradients(params, acts, f, xb, with_params: bool):
    """One backward pass of ``sum_i f(h_i)``: per-sample input gradients, deltas and parameter gradients.

    Samples do not interact, so the gradient of the sum with respect to sample ``i``'s input, its
    pre-activations or its own copy of the parameters is that sample's gradient.
    """
    with torch.enable_grad():
        x = xb.detach().requires_grad_(True)
        if with_params:
            n = xb.shape[0]
            ps = [
                (
                    w.detach().expand(n, *w.shape).requires_grad_(True),
                    None if b is None else b.detach().expand(n, *b.shape).requires_grad_(True),
                )
                for w, b in params
            ]
        else:
            ps = [(w.detach(), None if b is None else b.detach()) for w, b in params]
        hs, zs = _forward(ps, acts, x)
        flat = [p for pair in ps for p in pair if p is not None] if with_params else []
        grads = torch.autograd.grad(_apply_f(f, hs[-1]).sum(), [x, *zs, *flat], allow_unused=True)
    grads = [
        torch.zeros_like(t) if g is None else g
        for g, t in zip(grads, [x, *zs, *flat], strict=False)
    ]
    n_l = len(params)
    return [h.detach() for h in hs], grads[0], grads[1 : 1 + n_l], grads[1 + n_l :]


def _jacobians(params, acts, xb) -> list[torch.Tensor]:
    """Per-sample Jacobians ``d h^{(t+1)} / dx``, ``(B, d_{t+1}, d_1)``, for ``t = 1..l``.

    Reverse mode with one backward pass per layer: the batch is replicated ``d_{t+1}`` times and
    copy ``j`` back-propagates output coordinate ``j``.
    """
    n, d1 = xb.shape
    out = []
    for t in range(1, len(params) + 1):
        d = params[t - 1][0].shape[0]
        with torch.enable_grad():
            xr = xb.detach().unsqueeze(0).expand(d, n, d1).reshape(d * n, d1).requires_grad_(True)
            h = _forward(
                [(w.detach(), None if b is None else b.detach()) for w, b in params[:t]],
                acts[:t],
                xr,
            )[0][-1]
            picked = h.reshape(d, n, d).diagonal(dim1=0, dim2=2)  # [i, j] = coordinate j of copy j
            (gx,) = torch.autograd.grad(picked.sum(), xr, allow_unused=True)
        gx = torch.zeros_like(xr) if gx is None else gx
        out.append(gx.reshape(d, n, d1).transpose(0, 1))
    return out
