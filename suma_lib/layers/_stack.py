"""Stacks of layers (:mod:`suma_lib.layers`)."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import (
    check_choice,
    check_generator,
    check_int,
)
from ._blocks import Residual, TransformerBlock, deepnorm_constants, deepnorm_init_
from ._common import _check_factory
from ._gau import GAU

# --------------------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------------------


class Stack(nn.ModuleList):
    """Layers called as ``layer(x, mask)`` in turn (an :class:`nn.ModuleList` with a forward).

    Chapter: notebooks/deepnet-1000-layers.md.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, mask)
        return x


def build_stack(
    num_layers: int,
    width: int,
    *,
    kind: str = "transformer",
    num_heads: int = 1,
    placement: str = "post",
    alpha: float | str = 1.0,
    beta: float | None = None,
    norm_type: str = "layernorm",
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
    **layer_kw,
) -> Stack:
    r"""``num_layers`` Transformer blocks or residual GAU layers, optionally with DeepNorm.

    Parameters
    ----------
    num_layers, width : int
    kind : {"transformer", "gau"}
        :class:`TransformerBlock` (``num_heads``, ``ffn_hidden``, ``activation``, ``causal`` in
        ``layer_kw``) or :class:`GAU` in a :class:`Residual` (``expansion``, ``key_width``,
        ``init_std``, ``weight_scale`` in ``layer_kw``).
    placement : {"post", "pre"}
    alpha : float or "deepnorm"
        The residual weight; ``"deepnorm"`` uses :func:`deepnorm_constants` for an encoder of
        ``num_layers`` layers, and then ``beta`` defaults to its :math:`\beta`.
    beta : float, optional
        Apply :func:`deepnorm_init_` with this gain (Transformer stacks only).
    generator : torch.Generator, optional
        For every initialisation (the Transformer blocks are re-initialised with Xavier normal,
        gain ``beta`` or 1, whenever a generator or ``beta`` is given).

    Returns
    -------
    Stack

    Chapter: notebooks/deepnet-1000-layers.md.
    """
    n = check_int(num_layers, "num_layers", low=1)
    kind = check_choice(kind, "kind", ("transformer", "gau"))
    check_generator(generator)
    _check_factory(device, dtype)
    if isinstance(alpha, str):
        check_choice(alpha, "alpha", ("deepnorm",))
        alpha, dn_beta = deepnorm_constants(n)["encoder"]
        beta = dn_beta if beta is None else beta
    kw = {"device": device, "dtype": dtype}
    if kind == "transformer":
        layers = [
            TransformerBlock(
                width,
                num_heads,
                placement=placement,
                alpha=alpha,
                norm_type=norm_type,
                **layer_kw,
                **kw,
            )
            for _ in range(n)
        ]
        stack = Stack(layers)
        if beta is not None or generator is not None:
            deepnorm_init_(stack, 1.0 if beta is None else beta, generator=generator)
        return stack
    if beta is not None:
        raise ValueError("beta applies to Transformer stacks; use weight_scale for GAU stacks")
    layers = [
        Residual(
            GAU(width, generator=generator, **layer_kw, **kw),
            width,
            placement,
            alpha,
            norm_type=norm_type,
            **kw,
        )
        for _ in range(n)
    ]
    return Stack(layers)

