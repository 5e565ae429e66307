"""LoRA from the gradient's side: the multiplicative layer W0 + AB and the additive variant.

Convention of the article: ``Y = X W`` with ``X`` of shape ``(..., n)`` and ``W`` of shape ``(n, m)``.

Chapter: notebooks/lora-gradient-view.md
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._validation import check_compatible, check_device, check_dtype, check_generator, check_int, check_tensor

__all__ = ["AdditiveLoRALinear", "LoRALinear", "block_ones", "lora_factor_grads"]


def lora_factor_grads(
    grad_w: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Gradients of the LoRA factors from the full gradient :math:`G = \partial L/\partial W`.

    .. math:: \frac{\partial L}{\partial A} = G B^\top, \qquad \frac{\partial L}{\partial B} = A^\top G
       \qquad (W = W_0 + AB).

    Chapter: notebooks/lora-gradient-view.md
    """
    check_tensor(grad_w, "grad_w", min_dim=2, floating=True)
    check_tensor(a, "a", min_dim=2, floating=True)
    check_tensor(b, "b", min_dim=2, floating=True)
    check_compatible(grad_w, a, "grad_w", "a", core_dims=2)
    check_compatible(grad_w, b, "grad_w", "b", core_dims=2)
    n, m = grad_w.shape[-2:]
    if a.shape[-2] != n or b.shape[-1] != m or a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"shapes do not fit W = A B: grad_w {tuple(grad_w.shape)}, a {tuple(a.shape)}, "
            f"b {tuple(b.shape)}"
        )
    return grad_w @ b.transpose(-1, -2), a.transpose(-1, -2) @ grad_w


def block_ones(rows: int, cols: int, r: int, *, dtype=None, device=None) -> torch.Tensor:
    r"""The block matrix of :math:`r\times r` identities used by the additive variant for rank ``r``.

    Shape ``(rows, cols)``; one of ``rows``, ``cols`` is ``r`` and the other a multiple of ``r``. For
    ``r = 1`` it is a row or column of ones.

    Chapter: notebooks/lora-gradient-view.md
    """
    rows = check_int(rows, "rows", low=1)
    cols = check_int(cols, "cols", low=1)
    r = check_int(r, "r", low=1)
    eye = torch.eye(r, dtype=check_dtype(dtype), device=check_device(device))
    if rows == r and cols % r == 0:
        return eye.repeat(1, cols // r)
    if cols == r and rows % r == 0:
        return eye.repeat(rows // r, 1)
    raise ValueError(
        f"block_ones needs one side equal to r and the other a multiple of r, got "
        f"({rows}, {cols}) with r = {r}"
    )


def _check_input(x: torch.Tensor, weight0: torch.Tensor) -> None:
    """``x`` must be a non-empty floating tensor ``(..., n)`` on the layer's device, in its dtype."""
    check_tensor(x, "x", min_dim=1, floating=True)
    if x.numel() == 0:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    check_compatible(x, weight0, "x", "weight", core_dims=(1, 2))
    if x.shape[-1] != weight0.shape[0]:
        raise ValueError(f"x must have {weight0.shape[0]} features in its last dimension, got {x.shape[-1]}")


class LoRALinear(nn.Module):
    r"""``Y = X W0 + (X A) B``: a frozen weight plus a trainable rank-``r`` update.

    ``A`` (``n x r``) is Gaussian with variance ``1/n`` and ``B`` (``r x m``) zero, so the layer starts as
    the pre-trained one. With ``symmetric=True`` both are random and the frozen weight stores
    ``W0 - A0 B0`` (the article's suggestion), which also starts as the pre-trained layer. The product is
    applied as ``(X A) B`` so that the backward pass never forms an ``n x m`` gradient.

    Parameters
    ----------
    weight : torch.Tensor
        Pre-trained weight ``W0`` of shape ``(n, m)`` (copied, frozen).
    r : int
        Rank, ``1 <= r <= min(n, m)``.
    symmetric : bool
        Initialise both factors at random and subtract ``A0 B0`` from the frozen weight.
    generator : torch.Generator, optional
        Source of randomness.

    Chapter: notebooks/lora-gradient-view.md
    """

    def __init__(
        self,
        weight: torch.Tensor,
        r: int,
        *,
        symmetric: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_tensor(weight, "weight", floating=True)
        if weight.dim() != 2:
            raise ValueError(f"weight must be a matrix (n, m), got shape {tuple(weight.shape)}")
        n, m = weight.shape
        r = check_int(r, "r", low=1, high=min(n, m))
        gen = check_generator(generator)
        kw = {"dtype": weight.dtype, "device": weight.device}
        a = (
            torch.randn(n, r, generator=gen, **kw) / math.sqrt(n)
            if weight.device.type != "meta"
            else torch.empty(n, r, **kw)
        )
        if symmetric:
            b = (
                torch.randn(r, m, generator=gen, **kw) / math.sqrt(r)
                if weight.device.type != "meta"
                else torch.empty(r, m, **kw)
            )
            base = weight.detach() - a @ b
        else:
            b = torch.zeros(r, m, **kw)
            base = weight.detach().clone()
        self.register_buffer("weight0", base)
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W0 + (x A) B`` for ``x`` of shape ``(..., n)``."""
        _check_input(x, self.weight0)
        return x @ self.weight0 + (x @ self.a) @ self.b

    def merged_weight(self) -> torch.Tensor:
        """``W0 + A B``: one matrix for inference, at no extra cost per token."""
        return self.weight0 + self.a @ self.b


class AdditiveLoRALinear(nn.Module):
    r"""The article's additive variant: :math:`W = W_0 + A\,E + F\,B` with block-identity ``E``, ``F``.

    For ``r = 1``, :math:`\Delta w_{ij} = a_i + b_j` (``E``, ``F`` rows / columns of ones); for ``r > 1``
    ``A`` is ``n x r``, ``B`` is ``r x m``, ``E`` = :func:`block_ones` ``(r, m)`` and ``F`` =
    :func:`block_ones` ``(n, r)`` (``r`` must divide ``n`` and ``m``). Both factors start at zero. The
    gradients are block sums of :math:`G`: :math:`\partial L/\partial A = G E^\top`,
    :math:`\partial L/\partial B = F^\top G`.

    Chapter: notebooks/lora-gradient-view.md
    """

    def __init__(self, weight: torch.Tensor, r: int = 1) -> None:
        super().__init__()
        check_tensor(weight, "weight", floating=True)
        if weight.dim() != 2:
            raise ValueError(f"weight must be a matrix (n, m), got shape {tuple(weight.shape)}")
        n, m = weight.shape
        r = check_int(r, "r", low=1, high=min(n, m))
        if n % r or m % r:
            raise ValueError(
                f"r must divide both dimensions of weight {tuple(weight.shape)}, got r = {r}"
            )
        kw = {"dtype": weight.dtype, "device": weight.device}
        self.register_buffer("weight0", weight.detach().clone())
        self.register_buffer("e", block_ones(r, m, r, **kw))
        self.register_buffer("f", block_ones(n, r, r, **kw))
        self.a = nn.Parameter(torch.zeros(n, r, **kw))
        self.b = nn.Parameter(torch.zeros(r, m, **kw))

    def merged_weight(self) -> torch.Tensor:
        """``W0 + A E + F B``."""
        return self.weight0 + self.a @ self.e + self.f @ self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W`` with the merged weight."""
        _check_input(x, self.weight0)
        return x @ self.merged_weight()
