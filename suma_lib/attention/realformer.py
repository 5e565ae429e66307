r"""RealFormer: residual connections on the attention scores, and the Post-LN / Pre-LN baselines.

Chapter: notebooks/realformer.md (Su Jianlin, *RealFormer: moving the residual onto the attention
matrix*, 2020; He et al., *RealFormer: Transformer Likes Residual Attention*, arXiv:2012.11747; Xiong et
al., *On Layer Normalization in the Transformer Architecture*, arXiv:2002.04745).

Layer :math:`n` of a RealFormer adds its pre-softmax scores to those of the layer below, per head:

.. math::

   A_n = \frac{Q_n K_n^\top}{\sqrt{d_k}} + A_{n-1}, \qquad
   \operatorname{Attention}_n = \operatorname{softmax}(A_n + M)\, V_n, \qquad A_0 = 0,

so :math:`A_n = \sum_{l \le n} Q_l K_l^\top / \sqrt{d_k}`. The mask :math:`M` is applied inside the
softmax of each layer and never enters the carried scores, which therefore stay finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_int, check_tensor
from ..tasks import markov_chain, markov_mlm_task, markov_posterior
from . import _core
from ._core import (
    check_bool,
    check_qkv,
    clamp_finite,
    combine_masks,
    default_scale,
    former_names,
    masked_softmax,
    scaled_logits,
    split_heads,
)
from .multihead import MultiHeadAttention

__all__ = [
    "LN_VARIANTS",
    "RealFormerBlock",
    "RealFormerEncoder",
    "ResidualAttention",
    "markov_chain",
    "markov_mlm_task",
    "markov_posterior",
    "residual_attention",
]

#: The block layouts compared in the chapter, Post-LN, Pre-LN and RealFormer (Post-LN with
#: residual scores).
LN_VARIANTS = ("post", "pre", "realformer")


def _check_prev(prev: torch.Tensor | None, ref: torch.Tensor, shape: tuple[int, ...]) -> None:
    """``prev`` must share ``ref``'s dtype and device and broadcast to the scores' ``shape``."""
    if prev is None:
        return
    check_tensor(prev, "prev", min_dim=2, floating=True)
    if prev.dtype != ref.dtype or prev.device != ref.device:
        raise TypeError(
            f"prev must share the scores' dtype and device {ref.dtype}/{ref.device}, got "
            f"{prev.dtype}/{prev.device}"
        )
    try:
        torch.broadcast_shapes(prev.shape, shape)
    except RuntimeError as err:
        raise ValueError(
            f"prev of shape {tuple(prev.shape)} does not broadcast to the scores {shape}"
        ) from err


def residual_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prev: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Residual (RealFormer) attention: returns the output and the scores to pass to the next layer.

    .. math:: A = s\, QK^\top + A_{\text{prev}}, \qquad O = \operatorname{softmax}(A + M)\, V

    Parameters
    ----------
    q : torch.Tensor, shape ``(..., n, d)``
    k : torch.Tensor, shape ``(..., m, d)``
    v : torch.Tensor, shape ``(..., m, d_v)``
    prev : torch.Tensor, optional
        Scores of the previous layer, broadcastable to ``(..., n, m)``; ``None``
        means :math:`A_0 = 0`.
    mask : torch.Tensor, optional
        Boolean, ``True`` where a query may attend; a fully masked row gives a zero output.
    causal : bool
        Let query ``i`` attend to keys ``j <= i`` only.
    scale : float, optional
        :math:`s`, :math:`1/\sqrt{d}` by default.

    Returns
    -------
    tuple of torch.Tensor
        The output ``(..., n, d_v)`` and the unmasked scores :math:`A` ``(..., n, m)``. The scores are
        computed overflow-safe and capped at the dtype's largest value, so they stay finite (and the
        output correct) for inputs as large as :math:`10^{30}`.

    Notes
    -----
    Chapter: notebooks/realformer.md.
    """
    check_qkv(q, k, v)
    scores = scaled_logits(q, k, default_scale(scale, q.shape[-1]))
    if prev is not None:
        _check_prev(prev, q, scores.shape)
        scores = clamp_finite(scores + prev)
    full = combine_masks(mask, causal, q.shape[-2], k.shape[-2], device=q.device)
    return masked_softmax(scores, full) @ v, scores


class ResidualAttention(MultiHeadAttention):
    r"""Multi-head self-attention that adds the previous layer's scores before the softmax (RealFormer).

    .. math:: A_n^{(h)} = \frac{Q_n^{(h)} K_n^{(h)\top}}{\sqrt{d_h}} + A_{n-1}^{(h)}, \qquad
       Y = \bigl[\operatorname{softmax}(A_n^{(h)} + M)\, V_n^{(h)}\bigr]_h W_O

    A :class:`~suma_lib.attention.multihead.MultiHeadAttention` whose projections are laid out like
    :class:`torch.nn.MultiheadAttention`'s (one ``in_proj`` of width ``3 * embed_dim`` for :math:`Q, K, V`,
    then ``out_proj``) and whose forward takes and returns the scores. With ``prev=None`` this is ordinary
    multi-head attention. The hooks of the base class (``qk_transform``, ``score_bias``) apply.

    Parameters
    ----------
    embed_dim : int
        Width of the tokens (former name ``d_model``, still accepted).
    num_heads : int
        Number of heads, dividing ``embed_dim`` (former name ``n_heads``).
    dropout : float
        Dropout on the attention weights in training mode.
    bias : bool
        Biases in the projections.
    device, dtype : optional
        Factory arguments.
    **hooks
        ``qk_transform``, ``score_bias`` (see the base class).

    Notes
    -----
    Chapter: notebooks/realformer.md.
    """

    _input_names = ("x", "x", "x")

    @former_names(d_model="embed_dim", n_heads="num_heads")
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        *,
        device=None,
        dtype=None,
        **hooks,
    ):
        super().__init__(
            embed_dim,
            num_heads,
            dropout,
            bias,
            projections=False,
            device=device,
            dtype=dtype,
            **hooks,
        )
        e = self.embed_dim
        self.in_proj = nn.Linear(e, 3 * e, bias=bias, device=device, dtype=dtype)
        self.out_proj = nn.Linear(e, e, bias=bias, device=device, dtype=dtype)

    @property
    def d_model(self) -> int:
        """Former name of ``embed_dim``."""
        return self.embed_dim

    @property
    def n_heads(self) -> int:
        """Former name of ``num_heads``."""
        return self.num_heads

    def project(self, query, key, value):
        """Per-head ``q, k, v`` from the packed ``in_proj`` (one matrix product for
        self-attention)."""
        if key is query and value is query:
            parts = self.in_proj(query).chunk(3, dim=-1)
        else:
            biases = (None,) * 3 if self.in_proj.bias is None else self.in_proj.bias.chunk(3)
            parts = [
                F.linear(x, w, b)
                for x, w, b in zip(
                    (query, key, value), self.in_proj.weight.chunk(3), biases, strict=True
                )
            ]
        return tuple(split_heads(t, self.num_heads) for t in parts)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head queries, keys and values of ``x``, each of shape ``(..., h, n, d_h)``."""
        x, _, _ = self._inputs(x, None, None)
        return self.project(x, x, x)

    def forward(
        self,
        x: torch.Tensor,
        prev: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend over ``x`` of shape ``(..., n, embed_dim)``.

        Parameters
        ----------
        x : torch.Tensor, shape ``(..., n, embed_dim)``
        prev : torch.Tensor, optional
            The previous layer's scores, broadcastable to ``(..., h, n, n)``.
        mask : torch.Tensor, optional
            Boolean, ``True`` where a query may attend: ``(..., n, n)`` the same for every head, or
            ``(..., h, n, n)`` per head.
        causal : bool
            Let query ``i`` attend to keys ``j <= i`` only.

        Returns
        -------
        tuple of torch.Tensor
            The output ``(..., n, embed_dim)`` and the scores :math:`A_n` ``(..., h, n, n)`` (finite).
        """
        check_bool(causal, "causal")
        q, k, v = self.qkv(x)
        q, k = self.transform_qk(q, k)
        _check_prev(prev, q, (*q.shape[:-1], k.shape[-2]))
        o, _, scores = self.attend(q, k, v, x, x, mask, causal, prev=prev, need_weights=True)
        return self.output(o), scores


class RealFormerBlock(nn.Module):
    r"""One Transformer encoder block in one of three layouts (:data:`LN_VARIANTS`).

    .. math::

       \text{post: } & x \leftarrow \operatorname{LN}(x + \operatorname{Attn}(x)),\;
                     x \leftarrow \operatorname{LN}(x + \operatorname{FFN}(x)) \\
       \text{pre: } & x \leftarrow x + \operatorname{Attn}(\operatorname{LN}(x)),\;
                    x \leftarrow x + \operatorname{FFN}(\operatorname{LN}(x)) \\
       \text{realformer: } & \text{post, with } \operatorname{Attn} \text{ taking and returning the scores } A_n

    with :math:`\operatorname{FFN}(x) = \operatorname{gelu}(x W_1 + b_1) W_2 + b_2`.

    Parameters
    ----------
    embed_dim : int
        Width of the tokens (former name ``d_model``, still accepted).
    num_heads : int
        Number of heads (former name ``n_heads``).
    ff_dim : int
        Hidden width of the feed-forward layer (former name ``d_ff``).
    variant : str
        ``"post"``, ``"pre"`` or ``"realformer"``.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: notebooks/realformer.md.
    """

    @former_names(d_model="embed_dim", n_heads="num_heads", d_ff="ff_dim")
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ff_dim: int,
        variant: str = "realformer",
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.variant = check_choice(variant, "variant", LN_VARIANTS)
        ff_dim = check_int(ff_dim, "ff_dim", low=1)
        fk = {"device": device, "dtype": dtype}
        self.attn = ResidualAttention(embed_dim, num_heads, **fk)
        e = self.attn.embed_dim
        self.ff = nn.Sequential(nn.Linear(e, ff_dim, **fk), nn.GELU(), nn.Linear(ff_dim, e, **fk))
        self.ln1 = _core.LayerNorm(e, **fk)
        self.ln2 = _core.LayerNorm(e, **fk)

    def forward(
        self,
        x: torch.Tensor,
        prev: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the block; ``prev`` (the scores of the block below) is used only by
        ``"realformer"``.

        Returns
        -------
        tuple of torch.Tensor
            The new ``x`` and this block's scores (``(..., h, n, n)``), to pass on as ``prev``.
        """
        prev = prev if self.variant == "realformer" else None
        if self.variant == "pre":
            a, scores = self.attn(self.ln1(x), prev, mask, causal)
            x = x + a
            return x + self.ff(self.ln2(x)), scores
        a, scores = self.attn(x, prev, mask, causal)
        x = self.ln1(x + a)
        return self.ln2(x + self.ff(x)), scores


class RealFormerEncoder(nn.Module):
    r"""A stack of :class:`RealFormerBlock` blocks of one variant (the Pre-LN stack ends with a LayerNorm).

    For ``"realformer"`` the scores flow up the
    stack, :math:`A_n = Q_nK_n^\top/\sqrt{d_h} + A_{n-1}`;
    the other variants start every layer from :math:`A_0 = 0`.

    Parameters
    ----------
    num_layers : int
        Number of blocks (former name ``n_layers``, still accepted).
    embed_dim, num_heads, ff_dim : int
        Sizes of each block (former names ``d_model``, ``n_heads``, ``d_ff``).
    variant : str
        ``"post"``, ``"pre"`` or ``"realformer"``.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: notebooks/realformer.md.
    """

    @former_names(n_layers="num_layers", d_model="embed_dim", n_heads="num_heads", d_ff="ff_dim")
    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        num_heads: int,
        ff_dim: int,
        variant: str = "realformer",
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        num_layers = check_int(num_layers, "num_layers", low=1)
        self.variant = check_choice(variant, "variant", LN_VARIANTS)
        fk = {"device": device, "dtype": dtype}
        self.blocks = nn.ModuleList(
            RealFormerBlock(embed_dim, num_heads, ff_dim, variant, **fk) for _ in range(num_layers)
        )
        self.final_ln = _core.LayerNorm(embed_dim, **fk) if variant == "pre" else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        return_scores: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode ``x`` of shape ``(..., n, d_model)``.

        Parameters
        ----------
        x : torch.Tensor, shape ``(..., n, d_model)``
        mask : torch.Tensor, optional
            Boolean, ``True`` where a query may attend.
        causal : bool
            Let query ``i`` attend to keys ``j <= i`` only.
        return_scores : bool
            Also return every block's scores (``(..., h, n, n)`` each, bottom first).

        Returns
        -------
        torch.Tensor or tuple
            The encoding, and with ``return_scores`` the list of scores.
        """
        check_bool(return_scores, "return_scores")
        prev, all_scores = None, []
        for block in self.blocks:
            x, prev = block(x, prev, mask, causal)
            all_scores.append(prev)
        x = self.final_ln(x)
        return (x, all_scores) if return_scores else x
