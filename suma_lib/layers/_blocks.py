"""Residual wrappers, blocks and DeepNorm's constants and initialisation (:mod:`suma_lib.layers`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import (
    check_choice,
    check_float,
    check_generator,
    check_int,
)
from ..attention._core import randn
from ..attention.multihead import MultiHeadAttention
from ._common import _PLACEMENTS, _check_input, make_norm

# --------------------------------------------------------------------------------------------------
# Residual wrappers and the Transformer block
# --------------------------------------------------------------------------------------------------


class Residual(nn.Module):
    r"""A residual connection with its normalisation placed before or after the sum.

    .. math:: \text{Pre-LN: } x_{l+1} = x_l + F(\operatorname{LN}(x_l)), \qquad
              \text{Post-LN / DeepNorm: } x_{l+1} = \operatorname{LN}(\alpha x_l + F(x_l))

    :math:`\alpha = 1` is the original Post-LN; DeepNorm takes :math:`\alpha > 1`
    (:func:`deepnorm_constants`), equivalently :math:`\operatorname{LN}(x_l + F(x_l)/\alpha)`.

    Parameters
    ----------
    sublayer : nn.Module
        :math:`F`; called as ``sublayer(x, mask=mask)`` when a mask is given, else ``sublayer(x)``.
    width : int
        The model width (of the normalisation).
    placement : {"post", "pre"}
    alpha : float
        The residual weight :math:`\alpha > 0` (Post-LN only; must be 1 for Pre-LN).
    norm_type : {"layernorm", "rmsnorm", "rmsnorm_nogain"}
    eps : float
        The normalisation's :math:`\epsilon`.

    Chapter: notebooks/deepnet-1000-layers.md.
    """

    def __init__(
        self,
        sublayer: nn.Module,
        width: int,
        placement: str = "post",
        alpha: float = 1.0,
        *,
        norm_type: str = "layernorm",
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not isinstance(sublayer, nn.Module):
            raise TypeError(f"sublayer must be an nn.Module, got {type(sublayer).__name__}")
        self.width = check_int(width, "width", low=1)
        self.placement = check_choice(placement, "placement", _PLACEMENTS)
        self.alpha = check_float(alpha, "alpha", low=0.0, low_open=True)
        if self.placement == "pre" and self.alpha != 1.0:
            raise ValueError(f"alpha must be 1 with placement='pre', got {self.alpha}")
        self.sublayer = sublayer
        self.norm = make_norm(norm_type, self.width, eps=eps, device=device, dtype=dtype)

    def _f(self, x, mask):
        return self.sublayer(x) if mask is None else self.sublayer(x, mask=mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(x, "x", self.width, self)
        if self.placement == "pre":
            return x + self._f(self.norm(x), mask)
        return self.norm(self.alpha * x + self._f(x, mask))

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}, alpha={self.alpha:.6g}"


class _SelfAttention(nn.Module):
    """Self-attention as a sub-layer: ``attn(x, mask=...)`` on :class:`MultiHeadAttention`."""

    def __init__(self, attn: MultiHeadAttention, causal: bool) -> None:
        super().__init__()
        self.attn, self.causal = attn, causal

    def forward(self, x, mask=None):
        return self.attn(x, mask=mask, causal=self.causal)


class FeedForward(nn.Module):
    r"""The position-wise feed-forward network :math:`\phi(x W_1 + b_1) W_2 + b_2`.

    Parameters
    ----------
    width, hidden : int
        :math:`d` and the inner width (``4 d`` by default).
    activation : {"gelu", "relu", "swish"}

    Chapter: notebooks/deepnet-1000-layers.md.
    """

    _ACT: dict[str, Callable] = {"gelu": F.gelu, "relu": F.relu, "swish": F.silu}

    def __init__(
        self,
        width: int,
        hidden: int | None = None,
        activation: str = "gelu",
        bias: bool = True,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.width = check_int(width, "width", low=1)
        self.hidden = 4 * self.width if hidden is None else check_int(hidden, "hidden", low=1)
        self.activation = check_choice(activation, "activation", tuple(self._ACT))
        kw = {"bias": bias, "device": device, "dtype": dtype}
        self.fc1 = nn.Linear(self.width, self.hidden, **kw)
        self.fc2 = nn.Linear(self.hidden, self.width, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "x", self.width, self)
        return self.fc2(self._ACT[self.activation](self.fc1(x)))


class TransformerBlock(nn.Module):
    r"""One Transformer layer: self-attention then the FFN, each in a :class:`Residual`.

    .. math:: x' = R_{\text{attn}}(x), \qquad x_{l+1} = R_{\text{ffn}}(x'),

    with :math:`R` Pre-LN :math:`x + F(\operatorname{LN}(x))` or Post-LN
    :math:`\operatorname{LN}(\alpha x + F(x))` (DeepNorm for :math:`\alpha > 1`). The attention is
    :class:`~suma_lib.attention.multihead.MultiHeadAttention`.

    Parameters
    ----------
    width, num_heads : int
    ffn_hidden : int, optional
        Inner width of the FFN (``4 * width``).
    placement : {"post", "pre"}
    alpha : float
        DeepNorm's residual weight (1 for plain Post-LN).
    norm_type : {"layernorm", "rmsnorm", "rmsnorm_nogain"}
    activation : {"gelu", "relu", "swish"}
    causal : bool
        Causal self-attention.

    Chapter: notebooks/deepnet-1000-layers.md.
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        ffn_hidden: int | None = None,
        placement: str = "post",
        alpha: float = 1.0,
        *,
        norm_type: str = "layernorm",
        activation: str = "gelu",
        causal: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
        kw = {"device": device, "dtype": dtype}
        self.width = check_int(width, "width", low=1)
        attn = MultiHeadAttention(self.width, num_heads, **kw)
        ffn = FeedForward(self.width, ffn_hidden, activation, **kw)
        self.attn = Residual(
            _SelfAttention(attn, causal), self.width, placement, alpha, norm_type=norm_type, **kw
        )
        self.ffn = Residual(ffn, self.width, placement, alpha, norm_type=norm_type, **kw)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.ffn(self.attn(x, mask))


# --------------------------------------------------------------------------------------------------
# DeepNorm constants and initialisation
# --------------------------------------------------------------------------------------------------


def deepnorm_constants(
    num_layers: int, architecture: str = "encoder", num_decoder_layers: int | None = None
) -> dict[str, tuple[float, float]]:
    r"""DeepNet's residual weight :math:`\alpha` and init gain :math:`\beta` (paper's table).

    .. math:: \text{encoder-only (N layers): } \alpha = (2N)^{1/4},\ \beta = (8N)^{-1/4}; \qquad
              \text{decoder-only (M): } \alpha = (2M)^{1/4},\ \beta = (8M)^{-1/4};

    encoder-decoder: encoder :math:`\alpha = 0.81 (N^4 M)^{1/16}`,
    :math:`\beta = 0.87 (N^4 M)^{-1/16}`,
    decoder :math:`\alpha = (3M)^{1/4}`, :math:`\beta = (12M)^{-1/4}` (arXiv:2203.00555).

    Parameters
    ----------
    num_layers : int
        :math:`N` (encoder layers, or the decoder's :math:`M` for ``"decoder"``).
    architecture : {"encoder", "decoder", "encoder-decoder"}
    num_decoder_layers : int, optional
        :math:`M`, required for ``"encoder-decoder"``.

    Returns
    -------
    dict
        ``{"encoder": (alpha, beta)}``, ``{"decoder": (alpha, beta)}`` or both.

    Chapter: notebooks/deepnet-1000-layers.md.
    """
    n = check_int(num_layers, "num_layers", low=1)
    check_choice(architecture, "architecture", ("encoder", "decoder", "encoder-decoder"))
    if architecture != "encoder-decoder":
        if num_decoder_layers is not None:
            raise ValueError("num_decoder_layers is only used with architecture='encoder-decoder'")
        return {architecture: ((2 * n) ** 0.25, (8 * n) ** -0.25)}
    if num_decoder_layers is None:
        raise ValueError("num_decoder_layers is required with architecture='encoder-decoder'")
    m = check_int(num_decoder_layers, "num_decoder_layers", low=1)
    return {
        "encoder": (0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)),
        "decoder": ((3 * m) ** 0.25, (12 * m) ** -0.25),
    }


def residual_scaling(num_layers: int, optimizer: str = "sgd") -> tuple[float, float]:
    r"""The article's :math:`(\alpha, \lambda)` keeping the first update's size depth-free.

    With :math:`2N` residual branches whose weights are scaled by :math:`\lambda` and branch outputs
    divided by :math:`\alpha` (so each gradient is :math:`O(\lambda/\alpha)`):

    .. math:: \text{SGD: } \alpha = (2N)^{1/4},\ \lambda = (2N)^{-1/4}; \quad
              \text{Adam: } \alpha = (2N)^{1/2},\ \lambda = (2N)^{-1/2}; \quad
              \text{LAMB: } \alpha = 1,\ \lambda = (2N)^{-1/2}.

    Parameters
    ----------
    num_layers : int
        :math:`N` (attention + FFN pairs).
    optimizer : {"sgd", "adam", "lamb"}

    Returns
    -------
    (alpha, lam) : tuple of float

    Chapter: notebooks/deepnet-1000-layers.md.
    """
    n2 = 2 * check_int(num_layers, "num_layers", low=1)
    opt = check_choice(optimizer, "optimizer", ("sgd", "adam", "lamb"))
    if opt == "sgd":
        return n2**0.25, n2**-0.25
    if opt == "adam":
        return n2**0.5, n2**-0.5
    return 1.0, n2**-0.5


def _xavier_normal_(w: torch.Tensor, gain: float, generator) -> None:
    fan_out, fan_in = w.shape
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    with torch.no_grad():
        w.copy_(randn(tuple(w.shape), std, generator, w.device, w.dtype))


def deepnorm_init_(
    module: nn.Module, beta: float = 1.0, *, generator: torch.Generator | None = None
) -> nn.Module:
    r"""Xavier-normal initialisation with DeepNet's gain :math:`\beta` on the residual branches.

    Every :class:`TransformerBlock` inside ``module`` gets :math:`W \sim \mathcal N(0,
    \beta^2 \cdot 2/(d_{\text{in}} + d_{\text{out}}))` for the value and output projections and
    both FFN matrices, gain 1 for the query and key projections (the paper's choice; the article's
    :math:`\lambda` plays the role of :math:`\beta`), zero biases, and norms reset to identity.

    Parameters
    ----------
    module : nn.Module
        A :class:`TransformerBlock`, a :class:`Stack` of them, or any module containing them.
    beta : float
        The gain :math:`\beta > 0`.
    generator : torch.Generator, optional

    Returns
    -------
    nn.Module
        ``module``, initialised in place.

    Chapter: notebooks/deepnet-1000-layers.md.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    beta = check_float(beta, "beta", low=0.0, low_open=True)
    check_generator(generator)
    blocks = [m for m in module.modules() if isinstance(m, TransformerBlock)]
    if not blocks:
        raise ValueError("module contains no TransformerBlock")
    for blk in blocks:
        attn = blk.attn.sublayer.attn
        ffn = blk.ffn.sublayer
        for lin, gain in (
            (attn.q_proj, 1.0),
            (attn.k_proj, 1.0),
            (attn.v_proj, beta),
            (attn.out_proj, beta),
            (ffn.fc1, beta),
            (ffn.fc2, beta),
        ):
            _xavier_normal_(lin.weight, gain, generator)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        for res in (blk.attn, blk.ffn):
            if getattr(res.norm, "weight", None) is not None:
                nn.init.ones_(res.norm.weight)
            if getattr(res.norm, "bias", None) is not None:
                nn.init.zeros_(res.norm.bias)
    return module


