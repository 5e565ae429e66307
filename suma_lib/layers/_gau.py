"""The gated attention unit (:mod:`suma_lib.layers`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import (
    check_choice,
    check_float,
    check_generator,
    check_int,
)
from ..attention._core import check_qkv, randn
from ._common import _check_input

# --------------------------------------------------------------------------------------------------
# Gated attention unit (FLASH)
# --------------------------------------------------------------------------------------------------


def relu2_attention(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""The GAU's squared-ReLU attention matrix, in the article's normalisation.

    .. math:: A = \frac{1}{n s} \operatorname{relu}^2\!\left(Q K^\top\right)
              = \frac1n \operatorname{relu}^2\!\left(\frac{Q K^\top}{\sqrt s}\right),

    :math:`n` the number of keys, :math:`s` the width of :math:`Q, K`. Entries where ``mask`` is ``False`` are zero.

    Parameters
    ----------
    q : torch.Tensor, shape ``(..., n, s)``
    k : torch.Tensor, shape ``(..., m, s)``
    mask : torch.Tensor, optional
        Boolean, broadcastable to ``(..., n, m)``, ``True`` where attention is allowed.

    Returns
    -------
    torch.Tensor, shape ``(..., n, m)``

    Chapter: notebooks/gau-warmup.md.
    """
    check_qkv(q, k, None)
    m, s = k.shape[-2], k.shape[-1]
    # rows divided by their largest magnitude first, so that q k^T cannot overflow to inf - inf;
    # the scales are multiplied back one at a time (0 * huge stays 0), then squared
    sq = q.abs().amax(-1, keepdim=True)
    sq = torch.where(sq > 0, sq, torch.ones_like(sq))
    sk = k.abs().amax(-1, keepdim=True)
    sk = torch.where(sk > 0, sk, torch.ones_like(sk))
    dots = F.relu((q / sq) @ (k / sk).transpose(-1, -2))
    a = (dots * sq * (sk.transpose(-1, -2) / math.sqrt(s * m))).square()
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask must be a boolean torch.Tensor")
        a = a.masked_fill(~mask, 0.0)
    return a


class GAU(nn.Module):
    r"""The gated attention unit of FLASH (arXiv:2202.10447), in the article's notation.

    .. math:: U = \phi(X W_u),\ V = \phi(X W_v),\ Z = \phi(X W_z),\quad
              \mathcal Q(Z) = Z \odot \gamma_q + \beta_q,\
              \mathcal K(Z) = Z \odot \gamma_k + \beta_k,

    .. math:: A = \frac{1}{n s}\operatorname{relu}^2\!\left(\mathcal Q(Z)\mathcal K(Z)^\top\right),
              O = (U \odot A V) W_o,

    :math:`W_u, W_v \in \mathbb R^{d\times e}`, :math:`W_z \in \mathbb R^{d \times s}`,
    :math:`W_o \in \mathbb R^{e\times d}`,
    :math:`\phi` = swish. The residual and normalisation are not part
    of the unit (wrap it in :class:`Residual`).

    Initialisation: LeCun normal (:math:`W \sim \mathcal N(0, 1/d_{\text{in}})`, the article's
    assumption) or a fixed ``init_std`` (0.02 in the paper's code); :math:`\gamma = 1`,
    :math:`\beta = 0` so that :math:`\mathcal Q(Z) = \mathcal K(Z) = Z` at init; no biases.

    Parameters
    ----------
    width : int
        :math:`d`.
    expansion : int
        :math:`e = ` ``expansion * width`` (2 in the paper).
    key_width : int
        :math:`s` (128 in the paper).
    init_std : float, optional
        A fixed standard deviation for every matrix instead of LeCun's
        :math:`1/\sqrt{d_{\text{in}}}`.
    weight_scale : float
        A global factor :math:`\lambda` on every matrix at initialisation.
    activation : {"swish", "relu"}
        :math:`\phi`; ``"relu"`` is positively homogeneous, so that scaling every matrix by
        :math:`\lambda` scales the output by exactly :math:`\lambda^7`.
    generator : torch.Generator, optional
        For the initialisation.

    Chapter: notebooks/gau-warmup.md.
    """

    def __init__(
        self,
        width: int,
        expansion: int = 2,
        key_width: int = 128,
        *,
        init_std: float | None = None,
        weight_scale: float = 1.0,
        generator: torch.Generator | None = None,
        activation: str = "swish",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.width = check_int(width, "width", low=1)
        self.activation = check_choice(activation, "activation", ("swish", "relu"))
        self.expansion = check_int(expansion, "expansion", low=1)
        self.key_width = check_int(key_width, "key_width", low=1)
        e, d, s = self.expansion * self.width, self.width, self.key_width
        kw = {"device": device, "dtype": dtype}
        self.w_u = nn.Parameter(torch.empty(d, e, **kw))
        self.w_v = nn.Parameter(torch.empty(d, e, **kw))
        self.w_z = nn.Parameter(torch.empty(d, s, **kw))
        self.w_o = nn.Parameter(torch.empty(e, d, **kw))
        self.gamma = nn.Parameter(torch.empty(2, s, **kw))
        self.beta = nn.Parameter(torch.empty(2, s, **kw))
        self.reset_parameters(init_std=init_std, weight_scale=weight_scale, generator=generator)

    def reset_parameters(
        self,
        *,
        init_std: float | None = None,
        weight_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        """Draw the weights (LeCun or ``init_std``, times ``weight_scale``); gamma 1, beta 0."""
        if init_std is not None:
            init_std = check_float(init_std, "init_std", low=0.0, low_open=True)
        lam = check_float(weight_scale, "weight_scale", low=0.0, low_open=True)
        check_generator(generator)
        with torch.no_grad():
            for w in (self.w_u, self.w_v, self.w_z, self.w_o):
                std = init_std if init_std is not None else 1.0 / math.sqrt(w.shape[0])
                w.copy_(randn(tuple(w.shape), lam * std, generator, w.device, w.dtype))
            self.gamma.fill_(1.0)
            self.beta.zero_()

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, return_parts: bool = False
    ):
        """Apply the unit to ``x`` ``(..., n, d)``; ``return_parts``: also ``dict(U, V, Z, A)``."""
        _check_input(x, "x", self.width, self)
        phi = F.silu if self.activation == "swish" else F.relu
        u = phi(x @ self.w_u)
        v = phi(x @ self.w_v)
        z = phi(x @ self.w_z)
        q = z * self.gamma[0] + self.beta[0]
        k = z * self.gamma[1] + self.beta[1]
        a = relu2_attention(q, k, mask)
        out = (u * (a @ v)) @ self.w_o
        if return_parts:
            return out, {"U": u, "V": v, "Z": z, "A": a}
        return out

    def extra_repr(self) -> str:
        return f"width={self.width}, e={self.expansion * self.width}, s={self.key_width}"


