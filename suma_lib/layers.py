r"""Transformer blocks: residual wrappers (Pre-LN, Post-LN, DeepNorm), RMSNorm, GAU, stacks.

The module is organised in sections, each a family of layers:

* **Normalisation**: :class:`RMSNorm` (with or without its gain), :func:`make_norm`.
* **Residual wrappers**: :class:`Residual` turns any sub-layer :math:`F` into
  Pre-LN :math:`x + F(\operatorname{LN}(x))` or Post-LN / DeepNorm
  :math:`\operatorname{LN}(\alpha x + F(x))`; :class:`FeedForward`; :class:`TransformerBlock`
  (self-attention on :class:`~suma_lib.attention.multihead.MultiHeadAttention`, then the FFN).
* **DeepNorm constants and initialisation**: :func:`deepnorm_constants` (the paper's
  :math:`\alpha, \beta`), :func:`residual_scaling` (the article's
  :math:`(\alpha, \lambda)` per optimiser),
  :func:`deepnorm_init_`.
* **Gated attention unit**: :class:`GAU`, :func:`relu2_attention`.
* **Stacks**: :class:`Stack`, :func:`build_stack`.

Chapters: notebooks/deepnet-1000-layers.md, notebooks/gau-warmup.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import (
    check_choice,
    check_device,
    check_dtype,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from .attention._core import randn
from .attention.multihead import MultiHeadAttention

__all__ = [
    "GAU",
    "FeedForward",
    "RMSNorm",
    "Residual",
    "SafeLayerNorm",
    "Stack",
    "TransformerBlock",
    "build_stack",
    "deepnorm_constants",
    "deepnorm_init_",
    "make_norm",
    "relu2_attention",
    "residual_scaling",
]

_NORMS = ("layernorm", "rmsnorm", "rmsnorm_nogain")
_PLACEMENTS = ("post", "pre")


def _check_input(x, name: str, width: int, module: nn.Module | None = None) -> torch.Tensor:
    check_tensor(x, name, min_dim=2, floating=True)
    if x.shape[-1] != width:
        raise ValueError(f"{name} must have last dimension {width}, got shape {tuple(x.shape)}")
    if module is not None:
        p = next(module.parameters(), None)
        if p is not None and p.device != x.device:
            raise ValueError(
                f"{name} is on {x.device} but the module's parameters are on {p.device}"
            )
    return x


def _check_factory(device, dtype) -> None:
    check_device(device)
    check_dtype(dtype)


class SafeLayerNorm(nn.LayerNorm):
    r"""LayerNorm computed on the row divided by its largest magnitude (no overflow at 1e30).

    .. math:: \operatorname{LN}(z) = \frac{z/s - \overline{z/s}}{\sqrt{\operatorname{Var}(z/s) +
              \epsilon/s^2}} \odot g + b, \qquad s = \max_i |z_i|,

    which equals :class:`torch.nn.LayerNorm` exactly in real arithmetic (same parameters, same
    :math:`\epsilon`), and stays finite where :math:`z^2` would overflow.

    Chapter: notebooks/deepnet-1000-layers.md.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", min_dim=1, floating=True)
        if len(self.normalized_shape) != 1 or x.shape[-1] != self.normalized_shape[0]:
            raise ValueError(
                f"x must have last dimension {self.normalized_shape}, got {tuple(x.shape)}"
            )
        if self.weight is not None and self.weight.device != x.device:
            raise ValueError(f"x is on {x.device} but the gain is on {self.weight.device}")
        s = x.abs().amax(-1, keepdim=True)
        s = torch.where(s > 0, s, torch.ones_like(s))
        xs = x / s
        xc = xs - xs.mean(-1, keepdim=True)
        y = xc * torch.rsqrt(xc.square().mean(-1, keepdim=True) + (self.eps / s) / s)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    r"""Root-mean-square normalisation, with an optional per-feature gain.

    .. math:: \operatorname{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac1d \sum_i x_i^2 + \epsilon}} \odot g

    (no centring, no offset; ``elementwise_affine=False`` drops :math:`g`). Same convention as
    :class:`torch.nn.RMSNorm` with a given ``eps``. The row is divided by its largest
    magnitude first (the formula is invariant to that up to :math:`\epsilon`), so that
    :math:`|x| = 10^{30}` in float32
    does not overflow.

    Parameters
    ----------
    normalized_shape : int
        The width :math:`d` of the last dimension.
    eps : float
        :math:`\epsilon > 0`.
    elementwise_affine : bool
        Learn the gain :math:`g` (initialised to ones).
    device, dtype
        Passed to the gain's constructor.

    Notes
    -----
    The output is homogeneous of degree 7 in large inputs (swish is linear there), so it leaves the
    floating-point range for :math:`|x|` far beyond :math:`10^{5}` in float32.

    Chapter: notebooks/gau-warmup.md.
    """

    def __init__(
        self,
        normalized_shape: int,
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.normalized_shape = check_int(normalized_shape, "normalized_shape", low=1)
        self.eps = check_float(eps, "eps", low=0.0, low_open=True)
        if not isinstance(elementwise_affine, bool):
            raise TypeError(
                f"elementwise_affine must be a bool, got {type(elementwise_affine).__name__}"
            )
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(
                torch.ones(self.normalized_shape, device=device, dtype=dtype)
            )
        else:
            self.register_parameter("weight", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", min_dim=1, floating=True)
        if x.shape[-1] != self.normalized_shape:
            raise ValueError(
                f"x must have last dimension {self.normalized_shape}, got shape {tuple(x.shape)}"
            )
        if self.weight is not None and self.weight.device != x.device:
            raise ValueError(f"x is on {x.device} but the gain is on {self.weight.device}")
        s = x.abs().amax(-1, keepdim=True)
        s = torch.where(s > 0, s, torch.ones_like(s))
        xs = x / s
        # eps / s^2 as (eps / s) / s: a tiny s overflows to inf (output -> 0), never NaN
        y = xs * torch.rsqrt(xs.square().mean(-1, keepdim=True) + (self.eps / s) / s)
        return y * self.weight if self.weight is not None else y

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


def make_norm(kind: str, width: int, *, eps: float = 1e-5, device=None, dtype=None) -> nn.Module:
    """A normalisation layer by name: ``"layernorm"``, ``"rmsnorm"`` or ``"rmsnorm_nogain"``.

    Chapter: notebooks/deepnet-1000-layers.md.
    """
    check_choice(kind, "norm_type", _NORMS)
    width = check_int(width, "width", low=1)
    _check_factory(device, dtype)
    if kind == "layernorm":
        return SafeLayerNorm(width, eps=eps, device=device, dtype=dtype)
    return RMSNorm(width, eps=eps, elementwise_affine=kind == "rmsnorm", device=device, dtype=dtype)


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
    check_tensor(q, "q", min_dim=2, floating=True)
    check_tensor(k, "k", min_dim=2, floating=True)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension, got {q.shape[-1]} and {k.shape[-1]}"
        )
    if q.device != k.device:
        raise ValueError(f"q and k must be on the same device, got {q.device} and {k.device}")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except RuntimeError as err:
        raise ValueError(
            f"the batch dimensions of q {tuple(q.shape)} and k {tuple(k.shape)} do not broadcast"
        ) from err
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
