r"""Multi-head attention and restricted (local-window) attention, as in "Attention is all you need".

.. math:: \operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}(\text{head}_1, \dots, \text{head}_h)\, W^O,
   \qquad \text{head}_j = \operatorname{Attention}(Q W_j^Q, K W_j^K, V W_j^V),

with each head of width :math:`d_k = d_{\text{model}} / h` and
:math:`\operatorname{Attention}(Q, K, V) = \operatorname{softmax}(QK^\top/\sqrt{d_k})\,V`
(:func:`~suma_lib.attention.exact.softmax_attention`). The paper's restricted self-attention, where
position :math:`i` attends to the :math:`2r + 1` positions :math:`|i - j| \le r` only, is the ``window``
option; it reuses :func:`~suma_lib.attention.sparse.local_attention`, which computes the band alone in
:math:`O(nrd)` instead of :math:`O(n^2 d)`.

Chapter: ``notebooks/attention-is-all-you-need.ipynb``.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_int, check_tensor
from .exact import attention_weights, softmax_attention
from .sparse import local_attention, local_mask

__all__ = [
    "split_heads",
    "merge_heads",
    "MultiHeadAttention",
]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Split the last dimension into heads: ``(..., n, h * d) -> (..., h, n, d)``.

    Parameters
    ----------
    x : torch.Tensor, shape ``(..., n, h * d)``
    num_heads : int
        The number of heads :math:`h`; it must divide the last dimension.

    Returns
    -------
    torch.Tensor, shape ``(..., h, n, d)``
    """
    check_tensor(x, "x", min_dim=2)
    num_heads = check_int(num_heads, "num_heads", low=1)
    if x.shape[-1] % num_heads:
        raise ValueError(
            f"num_heads={num_heads} must divide the last dimension of x, {x.shape[-1]}"
        )
    return x.unflatten(-1, (num_heads, x.shape[-1] // num_heads)).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the heads again: ``(..., h, n, d) -> (..., n, h * d)`` (the inverse of :func:`split_heads`).

    Parameters
    ----------
    x : torch.Tensor, shape ``(..., h, n, d)``

    Returns
    -------
    torch.Tensor, shape ``(..., n, h * d)``
    """
    check_tensor(x, "x", min_dim=3)
    return x.transpose(-3, -2).flatten(-2)


class MultiHeadAttention(nn.Module):
    r"""Multi-head attention with separate projections, built on :func:`~suma_lib.attention.exact.softmax_attention`.

    .. math:: \operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}_j
              \operatorname{softmax}\!\left(\frac{Q W_j^Q (K W_j^K)^\top}{\sqrt{d_k}} + M\right) V W_j^V\; W^O

    Parameters
    ----------
    embed_dim : int
        Model width :math:`d_{\text{model}}` (of the queries and of the output).
    num_heads : int
        Number of heads :math:`h`; it must divide ``embed_dim`` (each head has width
        :math:`d_k = d_{\text{model}}/h`).
    bias : bool
        Add biases to the four projections.
    kdim, vdim : int, optional
        Widths of the key and value inputs (``embed_dim`` by default).
    window : int, optional
        Restricted self-attention: query :math:`i` sees keys :math:`|i - j| \le` ``window`` only (query
        and key sequences must then have the same length). Without ``mask`` or ``return_weights`` it is
        computed on the band (:func:`~suma_lib.attention.sparse.local_attention`), otherwise with the mask
        :func:`~suma_lib.attention.sparse.local_mask`.
    device, dtype
        Passed to the parameters' constructors.

    Notes
    -----
    No dropout is applied to the attention weights; a :class:`torch.nn.MultiheadAttention` with the same
    weights (see :meth:`load_torch_weights`) gives the same output in ``eval`` mode. Masks here are boolean
    with ``True`` where attention is **allowed**, the opposite of :class:`torch.nn.MultiheadAttention`'s
    boolean ``attn_mask``.

    Chapter: ``notebooks/attention-is-all-you-need.ipynb``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        window: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        embed_dim = check_int(embed_dim, "embed_dim", low=1)
        num_heads = check_int(num_heads, "num_heads", low=1)
        if embed_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else check_int(kdim, "kdim", low=1)
        self.vdim = embed_dim if vdim is None else check_int(vdim, "vdim", low=1)
        self.window = None if window is None else check_int(window, "window", low=0)
        kw = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias, **kw)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)

    def extra_repr(self) -> str:
        """Sizes shown by ``repr``."""
        extra = f", window={self.window}" if self.window is not None else ""
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{extra}"

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``query`` to ``key``/``value``.

        Parameters
        ----------
        query : torch.Tensor, shape ``(..., n, embed_dim)``
        key : torch.Tensor, shape ``(..., m, kdim)``, optional
            ``query`` by default (self-attention).
        value : torch.Tensor, shape ``(..., m, vdim)``, optional
            ``key`` by default.
        mask : torch.Tensor, optional
            Boolean, ``True`` where query :math:`i` may attend to key :math:`j`, broadcastable to
            ``(..., n, m)`` over the batch dimensions of ``query`` (the same for every head). A padding
            mask over the keys is ``keep[..., None, :]``.
        causal : bool
            Query :math:`i` attends to keys :math:`j \\le i` only.
        return_weights : bool
            Also return the attention weights of every head.

        Returns
        -------
        torch.Tensor, shape ``(..., n, embed_dim)``
            The output, and with ``return_weights`` also the weights, shape ``(..., num_heads, n, m)``.
            A query whose keys are all masked gets the output projection's bias (a zero attention
            output), never NaN.
        """
        check_tensor(query, "query", min_dim=2, floating=True)
        key = query if key is None else check_tensor(key, "key", min_dim=2, floating=True)
        value = key if value is None else check_tensor(value, "value", min_dim=2, floating=True)
        for name, x, width in (
            ("query", query, self.embed_dim),
            ("key", key, self.kdim),
            ("value", value, self.vdim),
        ):
            if x.shape[-1] != width:
                raise ValueError(
                    f"{name} must have last dimension {width}, got shape {tuple(x.shape)}"
                )
        if key.shape[-2] != value.shape[-2]:
            raise ValueError(
                f"key and value must have the same length, got {key.shape[-2]} and {value.shape[-2]}"
            )
        if not isinstance(return_weights, bool):
            raise TypeError(f"return_weights must be a bool, got {type(return_weights).__name__}")
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        n, m = q.shape[-2], k.shape[-2]
        if mask is not None:
            check_tensor(mask, "mask", min_dim=2)
            if mask.dtype != torch.bool:
                raise TypeError(
                    f"mask must be a boolean tensor (True = may attend), got {mask.dtype}"
                )
            mask = mask.unsqueeze(-3)  # the same mask for every head
        if self.window is not None:
            if n != m:
                raise ValueError(
                    f"window (restricted self-attention) needs query and key of the same length, "
                    f"got {n} and {m}"
                )
            if mask is None and not return_weights:
                return self.out_proj(
                    merge_heads(local_attention(q, k, v, self.window, causal=causal))
                )
            band = local_mask(n, self.window, device=q.device)
            mask = band if mask is None else mask & band
        if return_weights:
            weights = attention_weights(q, k, mask=mask, causal=causal)
            return self.out_proj(merge_heads(weights @ v)), weights
        return self.out_proj(merge_heads(softmax_attention(q, k, v, mask=mask, causal=causal)))

    @torch.no_grad()
    def load_torch_weights(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        r"""Copy the weights of a :class:`torch.nn.MultiheadAttention` into this module.

        torch stacks the three input projections in ``in_proj_weight`` (shape ``(3E, E)``, rows
        :math:`W^Q; W^K; W^V`) when the key and value widths equal ``embed_dim``, and keeps
        ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` otherwise; ``in_proj_bias`` stacks the
        three biases; ``out_proj`` is a plain linear layer. After loading, both modules compute the same
        function (in ``eval`` mode, i.e. without torch's attention dropout).

        Parameters
        ----------
        mha : torch.nn.MultiheadAttention
            Same ``embed_dim``, ``num_heads``, ``kdim``, ``vdim`` and bias setting, without
            ``add_bias_kv`` or ``add_zero_attn`` (which have no counterpart here).

        Returns
        -------
        MultiHeadAttention
            ``self``.
        """
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be a torch.nn.MultiheadAttention, got {type(mha).__name__}")
        theirs = (mha.embed_dim, mha.num_heads, mha.kdim, mha.vdim)
        ours = (self.embed_dim, self.num_heads, self.kdim, self.vdim)
        if theirs != ours:
            raise ValueError(
                f"mha has (embed_dim, num_heads, kdim, vdim) = {theirs}, this module {ours}"
            )
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError(
                "mha uses add_bias_kv or add_zero_attn, which this module does not implement"
            )
        if (mha.in_proj_bias is None) != (self.q_proj.bias is None):
            raise ValueError("mha and this module must agree on bias")
        e = self.embed_dim
        if mha._qkv_same_embed_dim:
            wq, wk, wv = mha.in_proj_weight.split(e, dim=0)
        else:
            wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        for lin, w in (
            (self.q_proj, wq),
            (self.k_proj, wk),
            (self.v_proj, wv),
            (self.out_proj, mha.out_proj.weight),
        ):
            lin.weight.copy_(w)
        if mha.in_proj_bias is not None:
            for lin, b in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_bias.split(e)):
                lin.bias.copy_(b)
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self

    @classmethod
    def from_torch(
        cls, mha: nn.MultiheadAttention, window: int | None = None
    ) -> MultiHeadAttention:
        """A new module with the sizes, device, dtype and weights of a :class:`torch.nn.MultiheadAttention`.

        Parameters
        ----------
        mha : torch.nn.MultiheadAttention
            The source (see :meth:`load_torch_weights`).
        window : int, optional
            Make the copy a restricted-attention module.

        Returns
        -------
        MultiHeadAttention
        """
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be a torch.nn.MultiheadAttention, got {type(mha).__name__}")
        w = mha.out_proj.weight
        new = cls(
            mha.embed_dim,
            mha.num_heads,
            bias=mha.in_proj_bias is not None,
            kdim=mha.kdim,
            vdim=mha.vdim,
            window=window,
            device=w.device,
            dtype=w.dtype,
        )
        return new.load_torch_weights(mha)
