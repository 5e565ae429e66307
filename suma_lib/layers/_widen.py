r"""Function-preserving widening of a Transformer ("repeat, then divide by :math:`\sqrt k`").

A model of width :math:`d` becomes one of width :math:`kd` (same depth, same number of heads, each
head :math:`k` times wider) that computes exactly the same function. Every hidden vector :math:`x`
of the small model is represented in the wide one by

.. math:: \tilde x = s\, x_{\pi}, \qquad \pi = (\underbrace{1,\dots,1}_{k}, \dots,
          \underbrace{d,\dots,d}_{k}), \qquad s = 1/\sqrt k,

(each coordinate repeated :math:`k` times in place; :func:`widen_index`), so that
:math:`\|\tilde x\| = \|x\|`. Each component has its own rule (:func:`widen_linear`,
:func:`widen_vector`, :func:`widen_norm`); :func:`widen` applies them to a whole module:

* embeddings: :math:`\tilde E = s\,E_{:,\pi}`;
* a linear layer from scale :math:`s_i` to scale :math:`s_o`:
  :math:`\tilde W = \frac{s_o}{k s_i} W_{\pi,\pi}`, :math:`\tilde b = s_o b_\pi`;
* LayerNorm / RMSNorm: :math:`\tilde\gamma = s_o\gamma_\pi`, :math:`\tilde\beta = s_o\beta_\pi`,
  :math:`\tilde\epsilon = s_i^2\epsilon`;
* the FFN (any activation): first layer to scale 1 (:math:`\tilde W_1 = W_1/\sqrt k`,
  :math:`\tilde b_1 = b_1`), second from scale 1 (:math:`\tilde W_2 = W_2/k^{3/2}`,
  :math:`\tilde b_2 = b_2/\sqrt k`);
* attention with its :math:`1/\sqrt{d_h}` scale: queries and keys to scale :math:`k^{-1/4}`, values
  and output at scale :math:`s`; RoPE's pairs are repeated as pairs (interleaved layout) and its
  frequencies repeated (:class:`WidenedRotary`).

Chapter: notebooks/lossless-enlargement.md.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import torch
from torch import nn

from .._validation import check_choice, check_device, check_float, check_int, check_tensor
from ..attention.multihead import MultiHeadAttention
from ..position._absolute import sinusoidal_frequencies
from ..position._base import _compute_dtype, _qk_positions, _work_dtype
from ..position._rotary import RotaryEmbedding, _check_x, _rotate
from ._blocks import FeedForward, Residual, TransformerBlock, _SelfAttention
from ._common import RMSNorm

__all__ = [
    "WidenedRotary",
    "widen",
    "widen_index",
    "widen_linear",
    "widen_norm",
    "widen_vector",
]


def _factor(factor) -> int:
    return check_int(factor, "factor", low=1)


def _scale(value, name: str, default: float) -> float:
    if value is None:
        return default
    return check_float(value, name, low=0.0, low_open=True)


def _block(block, name: str, d: int) -> int:
    block = check_int(block, name, low=1)
    if d % block:
        raise ValueError(f"{name}={block} must divide the width {d}")
    return block


def widen_index(d: int, factor: int = 2, *, block: int = 1, device=None) -> torch.Tensor:
    r"""The source index :math:`\pi` of each coordinate of the widened vector.

    The :math:`d` coordinates are cut into blocks of ``block`` consecutive ones and each block is
    repeated ``factor`` times in place:

    .. math:: \pi_j = \lfloor j / (kb) \rfloor\, b + (j \bmod b), \qquad j = 0, \dots, kd - 1.

    ``block=1`` is the article's :math:`[x_1, x_1, x_2, x_2, \dots]` (eq. 2, which keeps every head
    contiguous), ``block=2`` its pairwise repetition for RoPE :math:`[x_1, x_2, x_1, x_2, x_3, \dots]`
    (eq. 15), ``block=d`` the tiling :math:`[x_1, \dots, x_d, x_1, \dots, x_d]` that it rejects.

    Parameters
    ----------
    d : int
        The width :math:`d`.
    factor : int
        :math:`k \ge 1`.
    block : int
        The block size :math:`b`; it must divide ``d``.
    device : torch.device, optional

    Returns
    -------
    torch.Tensor
        int64, shape ``(factor * d,)``; every index of ``range(d)`` occurs exactly ``factor`` times.

    Chapter: notebooks/lossless-enlargement.md.
    """
    d = check_int(d, "d", low=1)
    k = _factor(factor)
    b = _block(block, "block", d)
    j = torch.arange(k * d, device=check_device(device))
    return torch.div(j, k * b, rounding_mode="floor") * b + j % b


def widen_vector(
    v: torch.Tensor, factor: int = 2, *, scale: float | None = None, block: int = 1
) -> torch.Tensor:
    r"""Widen the last axis of ``v``: :math:`\tilde v = s\, v_{\pi}` (eq. 2 with :math:`s = 1/\sqrt k`).

    The rule for an embedding table (rows are tokens), a bias, or a LayerNorm's :math:`\gamma` and
    :math:`\beta`.

    Parameters
    ----------
    v : torch.Tensor, shape ``(..., d)``
    factor : int
        :math:`k`.
    scale : float, optional
        :math:`s > 0` (default :math:`1/\sqrt k`).
    block : int
        Block size of the repetition (:func:`widen_index`).

    Returns
    -------
    torch.Tensor, shape ``(..., factor * d)``, same dtype and device.

    Chapter: notebooks/lossless-enlargement.md.
    """
    check_tensor(v, "v", min_dim=1, floating=True)
    k = _factor(factor)
    s = _scale(scale, "scale", 1.0 / math.sqrt(k))
    idx = widen_index(v.shape[-1], k, block=block, device=v.device)
    return v.index_select(-1, idx) * s


def widen_linear(
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    factor: int = 2,
    *,
    scale_in: float | None = None,
    scale_out: float | None = None,
    block_in: int | None = 1,
    block_out: int | None = 1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Widen a linear layer :math:`y = W x + b` (torch's ``(out, in)`` weight) from scale :math:`s_i` to :math:`s_o`.

    If the input is represented by :math:`\tilde x = s_i x_{\pi}` (each coordinate :math:`k` times),
    then

    .. math:: \tilde W = \frac{s_o}{k\, s_i} W_{\pi, \pi}, \qquad \tilde b = s_o\, b_{\pi}
              \quad\Longrightarrow\quad \tilde W \tilde x + \tilde b = s_o\, y_{\pi}.

    The article's eq. (6) is :math:`s_i = s_o = 1/\sqrt2` (:math:`\tilde W = W/2`), eq. (9)
    :math:`s_o = 1`, eq. (11) :math:`s_i = 1` (whose bias is then :math:`b/\sqrt2`, not :math:`b/2`),
    the query/key rule :math:`s_o = 2^{-1/4}`.

    Parameters
    ----------
    weight : torch.Tensor, shape ``(out, in)``
    bias : torch.Tensor, shape ``(out,)``, optional
    factor : int
        :math:`k`.
    scale_in, scale_out : float, optional
        :math:`s_i, s_o > 0`; default :math:`1/\sqrt k` on a widened side, 1 on a side that is not
        widened.
    block_in, block_out : int or None
        Block size of the repetition on each side (:func:`widen_index`); ``None`` leaves that side
        as it is (e.g. the vocabulary side of an output layer).

    Returns
    -------
    (weight, bias) : the widened tensors (``bias`` ``None`` if it was).

    Chapter: notebooks/lossless-enlargement.md.
    """
    check_tensor(weight, "weight", floating=True)
    if weight.dim() != 2:
        raise ValueError(f"weight must be a matrix (out, in), got shape {tuple(weight.shape)}")
    k = _factor(factor)
    if bias is not None:
        check_tensor(bias, "bias", floating=True)
        if bias.shape != weight.shape[:1]:
            raise ValueError(
                f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
            )
        if bias.device != weight.device:
            raise ValueError(f"bias is on {bias.device}, weight on {weight.device}")
    s_i = _scale(scale_in, "scale_in", 1.0 if block_in is None else 1.0 / math.sqrt(k))
    s_o = _scale(scale_out, "scale_out", 1.0 if block_out is None else 1.0 / math.sqrt(k))
    w, k_in = weight, 1
    if block_in is not None:
        b_in = _block(block_in, "block_in", weight.shape[1])
        w = w.index_select(1, widen_index(weight.shape[1], k, block=b_in, device=w.device))
        k_in = k
    if block_out is not None:
        b_out = _block(block_out, "block_out", weight.shape[0])
        out_idx = widen_index(weight.shape[0], k, block=b_out, device=w.device)
        w = w.index_select(0, out_idx)
        bias = None if bias is None else bias.index_select(0, out_idx)
    w = w * (s_o / (k_in * s_i))
    return w, (None if bias is None else bias * s_o)


def _new_linear(lin: nn.Linear, k, s_i, s_o, block_in=1, block_out=1) -> nn.Linear:
    w, b = widen_linear(
        lin.weight.detach(),
        None if lin.bias is None else lin.bias.detach(),
        k,
        scale_in=s_i,
        scale_out=s_o,
        block_in=block_in,
        block_out=block_out,
    )
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def widen_norm(
    norm: nn.Module,
    factor: int = 2,
    *,
    scale_in: float | None = None,
    scale_out: float | None = None,
) -> nn.Module:
    r"""Widen a LayerNorm or RMSNorm: gain and offset times :math:`s_o`, :math:`\epsilon` times :math:`s_i^2`.

    .. math:: \tilde\gamma = s_o \gamma_\pi, \qquad \tilde\beta = s_o\beta_\pi, \qquad
              \tilde\epsilon = s_i^2\epsilon.

    With :math:`\tilde x = s_i x_\pi` the mean and standard deviation (or root mean square) become
    :math:`s_i\mu` and :math:`s_i\sigma`, so the normalised vector is the plain repetition of the old
    one whatever :math:`s_i` (the article's eq. 4); the gain and offset then give it the scale
    :math:`s_o`. The :math:`\epsilon` inside the square root must be scaled by :math:`s_i^2` for
    exact equality (the article's LayerNorm has no :math:`\epsilon`).

    Parameters
    ----------
    norm : torch.nn.LayerNorm (or :class:`~suma_lib.layers.SafeLayerNorm`) or :class:`~suma_lib.layers.RMSNorm`
        Over one last axis.
    factor : int
        :math:`k`.
    scale_in, scale_out : float, optional
        :math:`s_i, s_o > 0` (default :math:`1/\sqrt k`). A norm without gain can only give
        :math:`s_o = 1`.

    Returns
    -------
    nn.Module
        A new norm of the same type and width ``factor * d``.

    Chapter: notebooks/lossless-enlargement.md.
    """
    k = _factor(factor)
    s_i = _scale(scale_in, "scale_in", 1.0 / math.sqrt(k))
    s_o = _scale(scale_out, "scale_out", 1.0 / math.sqrt(k))
    if isinstance(norm, nn.LayerNorm):
        if len(norm.normalized_shape) != 1:
            raise ValueError(f"norm must normalise one axis, got {norm.normalized_shape}")
        d, gain, offset = norm.normalized_shape[0], norm.weight, norm.bias
        new = type(norm)(
            k * d,
            eps=norm.eps * s_i * s_i,
            elementwise_affine=norm.elementwise_affine,
            bias=offset is not None,
            device=_device_of(norm),
            dtype=_dtype_of(norm),
        )
    elif isinstance(norm, RMSNorm):
        d, gain, offset = norm.normalized_shape, norm.weight, None
        new = RMSNorm(
            k * d,
            eps=norm.eps * s_i * s_i,
            elementwise_affine=norm.elementwise_affine,
            device=_device_of(norm),
            dtype=_dtype_of(norm),
        )
    else:
        raise TypeError(
            f"norm must be a torch.nn.LayerNorm or suma_lib.layers.RMSNorm, got {type(norm).__name__}"
        )
    if gain is None and s_o != 1.0:
        raise ValueError(
            f"a norm without gain outputs scale 1 and cannot give scale_out={s_o:.6g}"
        )
    with torch.no_grad():
        if gain is not None:
            new.weight.copy_(widen_vector(gain.detach(), k, scale=s_o))
        if offset is not None:
            new.bias.copy_(widen_vector(offset.detach(), k, scale=s_o))
    return new


def _device_of(m: nn.Module):
    t = next(m.parameters(), None)
    if t is None:
        t = next(m.buffers(), None)
    return None if t is None else t.device


def _dtype_of(m: nn.Module):
    t = next(m.parameters(), None)
    return None if t is None else t.dtype


class WidenedRotary(nn.Module):
    r"""RoPE with explicit frequencies :math:`\omega_i` (one per pair), as a query/key transform.

    .. math:: z_i \mapsto z_i\, e^{\mathrm{i} m \omega_i}

    on the pairs of :func:`~suma_lib.position.apply_rope` (``layout="interleaved"``: coordinates
    :math:`(2i, 2i+1)`; ``"half"``: :math:`(i, i + d/2)`). With
    :math:`\omega_i = \text{base}^{-2i/d}` it is :class:`~suma_lib.position.RotaryEmbedding`. Widening
    a head by :math:`k` repeats each pair :math:`k` times; the wide head keeps the small head's
    rotations exactly only if each frequency is repeated too, :math:`\tilde\omega = \omega_{\pi}`,
    whereas the standard table :math:`\text{base}^{-2i/(kd)}` gives most repeated pairs a different
    frequency (the article's reason why RoPE models widen only approximately).

    Parameters
    ----------
    omega : torch.Tensor, shape ``(d/2,)``
        Finite frequencies (a buffer; kept in float64, float32 on MPS).
    layout : {"interleaved", "half"}

    Chapter: notebooks/lossless-enlargement.md.
    """

    role = "qk"

    def __init__(self, omega: torch.Tensor, layout: str = "interleaved") -> None:
        super().__init__()
        check_tensor(omega, "omega", min_dim=1, floating=True, finite=True)
        if omega.dim() != 1:
            raise ValueError(f"omega must be one-dimensional, got shape {tuple(omega.shape)}")
        self.layout = check_choice(layout, "layout", ("interleaved", "half"))
        self.head_dim = 2 * omega.shape[0]
        self.register_buffer("omega", omega.detach().to(_work_dtype(omega.device)).clone())

    @classmethod
    def from_rotary(cls, rope: RotaryEmbedding) -> WidenedRotary:
        """The same transform as a :class:`~suma_lib.position.RotaryEmbedding`, with its frequency table."""
        if not isinstance(rope, RotaryEmbedding):
            raise TypeError(f"rope must be a RotaryEmbedding, got {type(rope).__name__}")
        omega = sinusoidal_frequencies(rope.head_dim, rope.base, dtype=torch.float64)
        return cls(omega, rope.layout)

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"head_dim={self.head_dim}, layout={self.layout!r}"

    def forward(self, q, k, q_positions=None, k_positions=None):
        """Rotate queries ``(..., n, d)`` and keys ``(..., m, d)`` by their positions."""
        for name, t in (("q", q), ("k", k)):
            if _check_x(t, name) != self.head_dim:
                raise ValueError(
                    f"{name} must have last dimension {self.head_dim}, got {tuple(t.shape)}"
                )
            if t.device != self.omega.device:
                raise ValueError(f"{name} is on {t.device}, the frequencies on {self.omega.device}")
        qp, kp = _qk_positions(q.shape[-2], k.shape[-2], q_positions, k_positions, q.device)
        out = []
        for x, p in ((q, qp), (k, kp)):
            angle = p[..., None] * self.omega.to(p.dtype)
            dt = _compute_dtype(x)
            cos, sin = torch.cos(angle).to(dt), torch.sin(angle).to(dt)
            out.append(_rotate(x.to(dt), cos, sin, self.layout).to(x.dtype))
        return tuple(out)


def _widen_rope(t, k: int, rope: str):
    """The widened query/key transform and the block size of the q/k repetition."""
    if t is None:
        return None, 1
    block = 2 if t.layout == "interleaved" else 1
    if isinstance(t, WidenedRotary):
        return WidenedRotary(t.omega.repeat_interleave(k), t.layout), block
    if isinstance(t, RotaryEmbedding):
        if rope == "standard":
            return RotaryEmbedding(k * t.head_dim, t.base, t.layout), block
        wide = WidenedRotary.from_rotary(t)
        omega = wide.omega.to(_device_of(t) or wide.omega.device)
        return WidenedRotary(omega.repeat_interleave(k), t.layout), block
    raise ValueError(
        f"qk_transform {type(t).__name__} has no widening rule (RotaryEmbedding or WidenedRotary)"
    )


def _widen_mha(m: MultiHeadAttention, k: int, s_i: float, s_o: float, rope: str):
    if type(m) is not MultiHeadAttention or not hasattr(m, "q_proj"):
        raise TypeError(
            f"module {type(m).__name__}: only MultiHeadAttention itself (default scores) can be widened"
        )
    if m.score_bias is not None:
        raise ValueError("module has a score_bias, which has no widening rule")
    t, block = _widen_rope(m.qk_transform, k, rope)
    if isinstance(t, nn.Module) and _device_of(m) is not None:
        t = t.to(_device_of(m))
    s_qk = k**-0.25  # (q.k) k s_qk^2 / sqrt(k d_h) = q.k / sqrt(d_h)
    new = MultiHeadAttention(
        k * m.embed_dim,
        m.num_heads,
        dropout=m.dropout,
        bias=m.q_proj.bias is not None,
        kdim=k * m.kdim,
        vdim=k * m.vdim,
        batch_first=m.batch_first,
        window=m.window,
        qk_transform=t,
        projections=False,
    )
    new.q_proj = _new_linear(m.q_proj, k, s_i, s_qk, block_out=block)
    new.k_proj = _new_linear(m.k_proj, k, s_i, s_qk, block_out=block)
    new.v_proj = _new_linear(m.v_proj, k, s_i, s_o)
    new.out_proj = _new_linear(m.out_proj, k, s_o, s_o)
    return new


def _shell(m: nn.Module) -> nn.Module:
    """A shallow copy of a container with its own children, parameters and buffers cleared."""
    new = copy.copy(m)
    new._modules, new._parameters, new._buffers = OrderedDict(), OrderedDict(), OrderedDict()
    return new


def _has_gain(norm: nn.Module) -> bool:
    return getattr(norm, "weight", None) is not None


def _widen(m: nn.Module, k: int, s_i: float, s_o: float, rope: str) -> nn.Module:
    if isinstance(m, nn.Embedding):
        if m.max_norm is not None:
            raise ValueError("module: an Embedding with max_norm has no widening rule")
        w = widen_vector(m.weight.detach(), k, scale=s_o)
        new = nn.Embedding(
            m.num_embeddings,
            w.shape[1],
            padding_idx=m.padding_idx,
            scale_grad_by_freq=m.scale_grad_by_freq,
            sparse=m.sparse,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(w)
        return new
    if isinstance(m, nn.Linear):
        return _new_linear(m, k, s_i, s_o)
    if isinstance(m, (nn.LayerNorm, RMSNorm)):
        return widen_norm(m, k, scale_in=s_i, scale_out=s_o)
    if isinstance(m, nn.Identity):
        if s_i != s_o:
            raise ValueError("module: an Identity cannot change the scale")
        return nn.Identity()
    if isinstance(m, FeedForward):
        # eqs. (9) and (11): the activation sees the plain repetition (scale 1), for any activation
        new = _shell(m)
        new.fc1, new.fc2 = _new_linear(m.fc1, k, s_i, 1.0), _new_linear(m.fc2, k, 1.0, s_o)
        new.width, new.hidden = k * m.width, k * m.hidden
        return new
    if isinstance(m, MultiHeadAttention):
        return _widen_mha(m, k, s_i, s_o, rope)
    if isinstance(m, _SelfAttention):
        return _SelfAttention(_widen(m.attn, k, s_i, s_o, rope), m.causal)
    if isinstance(m, Residual):
        new = _shell(m)
        new.width = k * m.width
        if m.placement == "pre":  # x + F(N(x)): the skip path keeps the scale
            if s_i != s_o:
                raise ValueError("module: a Pre-LN residual cannot change the scale")
            s_n = s_i if _has_gain(m.norm) else 1.0
            new.norm = _widen(m.norm, k, s_i, s_n, rope)
            new.sublayer = _widen(m.sublayer, k, s_n, s_i, rope)
        else:  # N(alpha x + F(x))
            if not _has_gain(m.norm) and s_o != 1.0:
                raise ValueError(
                    "module: a Post-LN norm without gain cannot output the scale "
                    f"{s_o:.6g}; widen a model with a gain instead"
                )
            new.sublayer = _widen(m.sublayer, k, s_i, s_i, rope)
            new.norm = _widen(m.norm, k, s_i, s_o, rope)
        return new
    if isinstance(m, TransformerBlock):
        new = _shell(m)
        new.width = k * m.width
        new.attn = _widen(m.attn, k, s_i, s_i, rope)
        new.ffn = _widen(m.ffn, k, s_i, s_o, rope)
        return new
    if isinstance(m, (nn.ModuleList, nn.Sequential)):
        if s_i != s_o:
            raise ValueError("module: a stack is widened at one scale")
        new = _shell(m)
        for name, child in m._modules.items():
            new._modules[name] = _widen(child, k, s_i, s_o, rope)
        return new
    raise TypeError(
        f"module {type(m).__name__} has no widening rule (Embedding, Linear, LayerNorm, RMSNorm, "
        "FeedForward, MultiHeadAttention, Residual, TransformerBlock, Stack, ModuleList, Sequential)"
    )


def widen(module: nn.Module, factor: int = 2, *, rope: str = "repeat") -> nn.Module:
    r"""A new module :math:`k` times wider that computes the same function.

    If ``module`` maps :math:`x \mapsto y` (hidden vectors of width :math:`d`), the result maps
    :math:`x_\pi/\sqrt k \mapsto y_\pi/\sqrt k` (:func:`widen_index`, ``block=1``); an
    :class:`~torch.nn.Embedding` maps token ids to :math:`E_{t,\pi}/\sqrt k`. A tied output layer
    :math:`h E^\top` then gives exactly the same logits, since
    :math:`\sum_{j=1}^{kd} (h_{\pi_j}/\sqrt k)(E_{t,\pi_j}/\sqrt k) = h E_t^\top`. Inside, each
    component follows its rule (see the module docstring): linear layers eq. (6), norms eq. (4) with
    :math:`\epsilon/k`, the FFN eqs. (9) and (11) for any activation, attention with queries and keys
    scaled by :math:`k^{-1/4}` (for the :math:`1/\sqrt{d_h}` that becomes
    :math:`1/\sqrt{k d_h}`), RoPE's pairs repeated as pairs with their frequencies.

    Parameters
    ----------
    module : nn.Module
        An :class:`~torch.nn.Embedding`, :class:`~torch.nn.Linear`, :class:`~torch.nn.LayerNorm`,
        :class:`RMSNorm`, :class:`FeedForward`,
        :class:`~suma_lib.attention.multihead.MultiHeadAttention` (default scores, optionally a
        RoPE ``qk_transform``), :class:`Residual`, :class:`TransformerBlock`, :class:`Stack` or a
        ``ModuleList``/``Sequential`` of these. The number of heads and of layers stays the same.
    factor : int
        :math:`k \ge 1`.
    rope : {"repeat", "standard"}
        ``"repeat"`` (exact): the wide RoPE repeats the frequencies (:class:`WidenedRotary`);
        ``"standard"``: the wide model keeps the standard table :math:`\text{base}^{-2i/(kd_h)}`, as
        in the article (approximately equal only).

    Returns
    -------
    nn.Module
        A new module on the same device and dtype; ``module`` is left unchanged.

    Chapter: notebooks/lossless-enlargement.md.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    k = _factor(factor)
    rope = check_choice(rope, "rope", ("repeat", "standard"))
    s = 1.0 / math.sqrt(k)
    new = _widen(module, k, s, s, rope)
    new.train(module.training)
    return new
