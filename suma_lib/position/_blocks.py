r"""Attention and a Transformer block with position modules plugged in.

Part of :mod:`suma_lib.position` (import from there).
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
)
from ..attention.multihead import MultiHeadAttention
from ._rotary import (
    RotaryEmbedding,
)


# ======================================================================================= attention
class PositionalMultiHeadAttention(MultiHeadAttention):
    r""":class:`~suma_lib.attention.multihead.MultiHeadAttention` with position modules plugged into its hooks.

    ``position`` is one module or a sequence of them; each one's ``role`` says where it goes: ``"qk"``
    modules (:class:`RotaryEmbedding`, :class:`XPos`, :class:`LogNScale`) transform ``q, k`` in order,
    ``"bias"`` modules (:class:`ALiBi`, :class:`T5RelativeBias`, :class:`KERPLE`, :class:`Sandwich`,
    :class:`ShawRelativePosition`) are summed into the score term :math:`B`:

    .. math:: \operatorname{softmax}\!\Bigl(\frac{T(q)\,T(k)^\top}{\sqrt{d_k}} + \sum B\Bigr) V.

    Every other argument is :class:`~suma_lib.attention.multihead.MultiHeadAttention`'s.

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """

    def __init__(self, embed_dim: int, num_heads: int, *args, position=None, **kwargs) -> None:
        super().__init__(embed_dim, num_heads, *args, **kwargs)
        mods = [] if position is None else (
            list(position) if isinstance(position, (list, tuple, nn.ModuleList)) else [position]
        )
        for mod in mods:
            if getattr(mod, "role", None) not in ("qk", "bias") or not callable(mod):
                raise TypeError(
                    "position must hold modules with role 'qk' or 'bias' (e.g. RotaryEmbedding, ALiBi), "
                    f"got {type(mod).__name__}"
                )
        self.position = nn.ModuleList(mods)

    def transform_qk(self, q, k):
        """The ``qk_transform`` argument, then every ``"qk"`` position module."""
        q, k = super().transform_qk(q, k)
        for mod in self.position:
            if mod.role == "qk":
                q, k = mod(q, k)
        return q, k

    def get_bias(self, q, k):
        """The ``score_bias`` argument plus every ``"bias"`` position module (``None`` if none)."""
        bias = super().get_bias(q, k)
        for mod in self.position:
            if mod.role == "bias":
                b = mod(q, k)
                bias = b if bias is None else bias + b
        return bias


# ============================================================================ a RoPE Post-Norm block
NORMS = ("layer", "rms")


def alpha_ramp(step: int, ramp_steps: int) -> float:
    r"""The residual weight :math:`\alpha = \min(1, \text{step}/\text{ramp\_steps})`: 0 at the start, linear to 1.

    Used with :class:`RoPEBlock`'s residual :math:`x \leftarrow \operatorname{Norm}(x + \alpha F(x))`
    (RoFormerV2's way of training a Post-Norm model from scratch). ``ramp_steps = 0`` gives 1 at once.

    Notes
    -----
    Chapter: notebooks/roformer-v2.md.
    """
    step = check_int(step, "step", low=0)
    ramp_steps = check_int(ramp_steps, "ramp_steps", low=0)
    return 1.0 if ramp_steps == 0 else min(1.0, step / ramp_steps)


class RoPEBlock(nn.Module):
    r"""A Post-Norm Transformer block with RoPE attention and a weighted residual.

    .. math:: x \leftarrow \operatorname{Norm}\bigl(x + \alpha\,\operatorname{Attn}_{\text{RoPE}}(x)\bigr),
              \qquad x \leftarrow \operatorname{Norm}\bigl(x + \alpha\,\operatorname{FFN}(x)\bigr),

    :math:`\operatorname{FFN}(x) = \operatorname{gelu}(xW_1 + b_1)W_2 + b_2`. The standard block (BERT/RoFormer
    style) has biases and LayerNorm with gain and bias; the RoFormerV2 block is ``bias=False, norm="rms",
    gain=False``: no bias anywhere and :math:`\operatorname{Norm}(x) = x/\sqrt{\operatorname{mean}(x^2) + \epsilon}`.
    :math:`\alpha` (attribute ``alpha``, 1 by default) is set by the training loop, e.g. with
    :func:`alpha_ramp`.

    Parameters
    ----------
    d_model, num_heads, d_ff : int
    bias : bool
        Biases in every linear layer.
    norm : {"layer", "rms"}
    gain : bool
        Learned elementwise gain (and, for LayerNorm, bias) of the norms.
    rope : bool
        Rotate queries and keys (:class:`RotaryEmbedding`, interleaved layout).
    eps : float
    device, dtype

    Notes
    -----
    Chapter: notebooks/roformer-v2.md.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        bias: bool = True,
        norm: str = "layer",
        gain: bool = True,
        rope: bool = True,
        eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        d_ff = check_int(d_ff, "d_ff", low=1)
        bias, gain, rope = check_bool(bias, "bias"), check_bool(gain, "gain"), check_bool(rope, "rope")
        self.norm_kind = check_choice(norm, "norm", NORMS)
        eps = check_float(eps, "eps", low=0.0, low_open=True)
        kw = {"device": device, "dtype": dtype}
        position = RotaryEmbedding(d_model // num_heads) if rope else None
        if rope and (d_model % num_heads or (d_model // num_heads) % 2):
            raise ValueError("rope needs num_heads to divide d_model into even head widths")
        self.attn = PositionalMultiHeadAttention(d_model, num_heads, bias=bias, position=position, **kw)
        self.ff1 = nn.Linear(d_model, d_ff, bias=bias, **kw)
        self.ff2 = nn.Linear(d_ff, d_model, bias=bias, **kw)

        def make_norm() -> nn.Module:
            if self.norm_kind == "layer":
                return nn.LayerNorm(d_model, eps=eps, elementwise_affine=gain, **kw)
            return nn.RMSNorm(d_model, eps=eps, elementwise_affine=gain, **kw)

        self.norm1, self.norm2 = make_norm(), make_norm()
        self.alpha = 1.0

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"norm={self.norm_kind!r}, alpha={self.alpha:g}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """Apply the block to ``x`` of shape ``(..., n, d_model)``."""
        a = check_float(self.alpha, "alpha")
        x = self.norm1(x + a * self.attn(x, mask=mask, causal=causal))
        return self.norm2(x + a * self.ff2(nn.functional.gelu(self.ff1(x))))
