r"""Multi-head attention and restricted (local-window) attention, as in "Attention is all you need".

.. math:: \operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}(\text{head}_1, \dots,
   \text{head}_h)\, W^O,
   \qquad \text{head}_j = \operatorname{Attention}(Q W_j^Q, K W_j^K, V W_j^V),

with each head of width :math:`d_k = d_{\text{model}} / h` and
:math:`\operatorname{Attention}(Q, K, V) = \operatorname{softmax}(QK^\top/\sqrt{d_k})\,V`
(:func:`~suma_lib.attention.exact.softmax_attention`). The paper's restricted self-attention, where
position :math:`i` attends to the :math:`2r + 1` positions :math:`|i - j| \le r` only, is the ``window``
option; it reuses :func:`~suma_lib.attention.sparse.local_attention`, which computes the band alone in
:math:`O(nrd)` instead of :math:`O(n^2 d)`.

Chapter: notebooks/attention-is-all-you-need.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._validation import check_float, check_int, check_tensor
from . import _core
from ._core import both, check_bool, combine_masks, default_scale, masked_softmax, scaled_logits
from .exact import softmax_attention
from .sparse import local_attention, local_mask

__all__ = [
    "MultiHeadAttention",
    "merge_heads",
    "split_heads",
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
    return _core.split_heads(x, num_heads)


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
    return _core.merge_heads(x)


def _autocast(device: torch.device) -> bool:
    """Whether torch's autocast is on for ``device``'s type."""
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()
    except RuntimeError:  # a device type autocast does not know (meta)
        return False


class MultiHeadAttention(nn.Module):
    r"""Multi-head attention with separate projections and overridable scores (the base of every variant).

    .. math:: \operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}_j
              \operatorname{softmax}\!\left(S_j + B_j + M\right) V W_j^V\; W^O, \qquad
              S_j = \frac{Q W_j^Q (K W_j^K)^\top}{\sqrt{d_k}} \text{ by default,}

    with an optional additive score term :math:`B_j` and the mask :math:`M` (:math:`-\infty` where
    attention is not allowed). Each step is a method a subclass may override, the way labml's
    ``MultiHeadAttention.get_scores`` is overridden by its variants:

    * :meth:`project` maps the inputs to per-head ``q, k, v`` (``(..., h, n, d_k)``);
    * :meth:`transform_qk` transforms ``q`` and ``k`` (e.g. a rotary position encoding); by default
      it
      applies the ``qk_transform`` argument, if any;
    * :meth:`get_scores` returns the scores :math:`S` ``(..., h, n, m)`` (RealFormer, Synthesizer);
    * :meth:`get_bias` returns the additive term :math:`B` (ALiBi, T5 buckets); by default the
      ``score_bias`` argument applied to ``(q, k)``, if any;
    * :meth:`get_mask` returns a structural boolean mask (the ``window`` band; T-TA's diagonal-free
      mask).

    While :meth:`get_scores` is the default and no weights are asked for, the attention runs through
    :func:`~suma_lib.attention.exact.softmax_attention` (torch's fused kernels) or, for a window alone,
    :func:`~suma_lib.attention.sparse.local_attention`; otherwise the scores are formed explicitly. Either
    way huge inputs give finite outputs (the logits are computed overflow-safe) and a fully masked query
    gets a zero attention output.

    Parameters
    ----------
    embed_dim : int
        Model width :math:`d_{\text{model}}` (of the queries and of the output).
    num_heads : int
        Number of heads :math:`h`; it must divide ``embed_dim`` (:math:`d_k = d_{\text{model}}/h`).
    dropout : float
        Dropout on the attention weights in training mode (as :class:`torch.nn.MultiheadAttention`).
    bias : bool
        Add biases to the projections.
    kdim, vdim : int, optional
        Widths of the key and value inputs (``embed_dim`` by default).
    batch_first : bool
        ``True`` (the default here, unlike torch): inputs are ``(..., n, embed_dim)``, the sequence
        second to last. ``False``: the sequence axis comes first, ``(n, ..., embed_dim)`` (torch's
        default ``(L, N, E)`` layout); the output follows the same layout. Masks are ``(..., n, m)`` either way.
    window : int, optional
        Restricted self-attention: query :math:`i` sees keys :math:`|i - j| \le` ``window`` only (query
        and key sequences must then have the same length), computed on the band alone
        (:func:`~suma_lib.attention.sparse.local_attention`) when nothing else is asked for.
    qk_transform : callable, optional
        ``qk_transform(q, k) -> (q, k)`` on the per-head tensors ``(..., h, n, d_k)``; an
        :class:`torch.nn.Module` is registered as a submodule.
    score_bias : callable, optional
        ``score_bias(q, k) -> B``, broadcastable to ``(..., h, n, m)`` (from the per-head ``q, k``; it
        may use only their shapes, device and dtype); a :class:`torch.nn.Module` is registered.
    projections : bool
        Build the four projections ``q_proj, k_proj, v_proj, out_proj`` (subclasses with another
        layout pass ``False`` and override :meth:`project`).
    device, dtype
        Passed to the parameters' constructors.

    Notes
    -----
    Masks are boolean with ``True`` where attention is **allowed**, the opposite of
    :class:`torch.nn.MultiheadAttention`'s boolean ``attn_mask``. A mask with fewer dimensions than the
    per-head scores is the same for every head; one with as many is per head. With the same weights
    (:meth:`load_torch_weights`) the output equals :class:`torch.nn.MultiheadAttention`'s in ``eval``
    mode.

    Examples
    --------
    A position bias (ALiBi-like) and a transform of the queries and keys (RoPE-like), plugged in without subclassing::

        def alibi(q, k):  # (h, n, m): a linear distance penalty, one slope per head
            h, n, m = q.shape[-3], q.shape[-2], k.shape[-2]
            dist = (torch.arange(n)[:, None] - torch.arange(m)[None, :]).abs().to(q)
            return -(2.0 ** -torch.arange(1, h + 1)).to(q)[:, None, None] * dist

        mha = MultiHeadAttention(64, 8, score_bias=alibi, qk_transform=rotary)

    Chapter: notebooks/attention-is-all-you-need.md.
    """

    _input_names = ("query", "key", "value")  # the forward's argument names, for error messages

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = True,
        *,
        window: int | None = None,
        qk_transform: Callable | None = None,
        score_bias: Callable | None = None,
        projections: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim, self.num_heads = _core.check_heads(embed_dim, num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = check_float(dropout, "dropout", low=0.0, high=1.0, high_open=True)
        check_bool(bias, "bias")
        self.batch_first = check_bool(batch_first, "batch_first")
        self.kdim = self.embed_dim if kdim is None else check_int(kdim, "kdim", low=1)
        self.vdim = self.embed_dim if vdim is None else check_int(vdim, "vdim", low=1)
        self.window = None if window is None else check_int(window, "window", low=0)
        for name, fn in (("qk_transform", qk_transform), ("score_bias", score_bias)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        self.qk_transform, self.score_bias = qk_transform, score_bias
        if check_bool(projections, "projections"):
            kw = {"bias": bias, "device": device, "dtype": dtype}
            self.q_proj = nn.Linear(self.embed_dim, self.embed_dim, **kw)
            self.k_proj = nn.Linear(self.kdim, self.embed_dim, **kw)
            self.v_proj = nn.Linear(self.vdim, self.embed_dim, **kw)
            self.out_proj = nn.Linear(self.embed_dim, self.embed_dim, **kw)

    def extra_repr(self) -> str:
        """Sizes shown by ``repr``."""
        extra = f", window={self.window}" if self.window is not None else ""
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{extra}"

    # ------------------------------------------------------------------------------------- the
    # hooks
    def project(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Per-head ``q, k, v`` of shape ``(..., h, n, d_k)`` from the inputs
        ``(..., n, width)``."""
        h = self.num_heads
        return (
            _core.split_heads(self.q_proj(query), h),
            _core.split_heads(self.k_proj(key), h),
            _core.split_heads(self.v_proj(value), h),
        )

    def transform_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform the per-head queries and keys (the identity unless ``qk_transform`` was given)."""
        return (q, k) if self.qk_transform is None else self.qk_transform(q, k)

    def get_scores(
        self, q: torch.Tensor, k: torch.Tensor, query: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        r"""The scores :math:`S = q k^\top/\sqrt{d_k}`, ``(..., h, n, m)``, finite for any finite input.

        ``query`` and ``key`` are the layer's inputs (``(..., n, embed_dim)``), for scores that are
        computed from the tokens rather than from ``q`` and ``k`` (Synthesizer).
        """
        return scaled_logits(q, k, default_scale(None, self.head_dim))

    def get_bias(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor | None:
        """An additive score term broadcastable to ``(..., h, n, m)``, or ``None`` (no term)."""
        return None if self.score_bias is None else self.score_bias(q, k)

    def get_mask(self, n: int, m: int, device: torch.device) -> torch.Tensor | None:
        """A structural boolean mask ``(n, m)`` (``True`` = may attend): the window's band, or ``None``."""
        if self.window is None:
            return None
        if n != m:
            raise ValueError(
                "window (restricted self-attention) needs query and key of the same length, got "
                f"{n} and {m}"
            )
        return local_mask(n, self.window, device=device)

    def output(self, o: torch.Tensor) -> torch.Tensor:
        """The output projection of the per-head attention outputs ``(..., h, n, d_v)``."""
        return self.out_proj(_core.merge_heads(o))

    # -------------------------------------------------------------------------------------
    # machinery
    def _inputs(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None,
        value: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validate the inputs (width, length, device, dtype) and put the sequence axis second to last."""
        names = self._input_names
        check_tensor(query, names[0], min_dim=2, floating=True)
        key = query if key is None else check_tensor(key, names[1], min_dim=2, floating=True)
        value = key if value is None else check_tensor(value, names[2], min_dim=2, floating=True)
        ref = next(self.parameters(), None)
        same_dtype = ref is not None and not _autocast(
            ref.device
        )  # autocast mixes dtypes on purpose
        for name, x, width in zip(
            names, (query, key, value), (self.embed_dim, self.kdim, self.vdim), strict=True
        ):
            if x.shape[-1] != width:
                raise ValueError(
                    f"{name} must have last dimension {width}, got shape {tuple(x.shape)}"
                )
            if ref is not None and (
                x.device != ref.device or (same_dtype and x.dtype != ref.dtype)
            ):
                raise TypeError(
                    f"{name} must have the parameters' dtype and device {ref.dtype}/{ref.device}, "
                    f"got {x.dtype}/{x.device}"
                )
        if key.shape[-2] != value.shape[-2]:
            raise ValueError(
                f"key and value must have the same length, got {key.shape[-2]} and "
                f"{value.shape[-2]}"
            )
        if not self.batch_first:
            query, key, value = (
                x.movedim(0, -2) if x.dim() > 2 else x for x in (query, key, value)
            )
        return query, key, value

    def _mask(self, mask, causal: bool, n: int, m: int, score_dim: int, device: torch.device):
        """The user's mask (same for every head unless it has a head axis), the causal and structural masks."""
        if mask is not None and isinstance(mask, torch.Tensor) and mask.dim() < score_dim:
            mask = mask.unsqueeze(-3)
        structural = self.get_mask(n, m, device)
        if structural is not None and structural.dim() == 2:
            # (1, n, m): torch's SDPA picks its kernel by the mask's rank, and a rank-2 mask makes
            # the
            # result depend (in the last bit) on how many batch dimensions the input has.
            structural = structural.unsqueeze(0)
        return both(combine_masks(mask, causal, n, m, device=device), structural)

    def attend(
        self,
        q: torch.Tensor | None,
        k: torch.Tensor | None,
        v: torch.Tensor,
        query: torch.Tensor,
        key: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        prev: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Attention of the per-head ``q, k, v``: the output ``(..., h, n, d_v)``, the weights and the scores.

        ``prev`` (scores added before the softmax, RealFormer) and ``need_weights`` force the explicit
        path; the weights and scores are ``None`` on the fused path.
        """
        n, m = query.shape[-2], key.shape[-2]
        full = self._mask(mask, causal, n, m, v.dim(), v.device)
        bias = self.get_bias(q, k)
        dropout = self.dropout if self.training else 0.0
        fused = type(self).get_scores is MultiHeadAttention.get_scores
        if fused and prev is None and not need_weights and not dropout:
            if bias is None and mask is None and type(self).get_mask is MultiHeadAttention.get_mask:
                if self.window is not None:  # the band alone, in O(n w d)
                    return local_attention(q, k, v, self.window, causal=causal), None, None
                return softmax_attention(q, k, v, causal=causal), None, None
            if bias is not None:
                bias = bias.to(q.dtype)
                full = bias if full is None else bias.masked_fill(~full, float("-inf"))
            return softmax_attention(q, k, v, mask=full), None, None
        scores = self.get_scores(q, k, query, key)
        for term in (bias, prev):
            if term is not None:
                scores = scores + term
        scores = _core.clamp_finite(scores)  # carried scores (RealFormer) stay finite
        weights = masked_softmax(scores, full)
        attn = nn.functional.dropout(weights, dropout) if dropout else weights
        return torch.matmul(attn, v), weights, scores

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
            ``(..., n, m)`` over the batch dimensions of ``query`` (the same for every head), or to
            ``(..., h, n, m)`` when it has a head axis. A padding mask over the keys is ``keep[..., None, :]``.
        causal : bool
            Query :math:`i` attends to keys :math:`j \\le i` only.
        return_weights : bool
            Also return the attention weights of every head.

        Returns
        -------
        torch.Tensor, shape ``(..., n, embed_dim)``
            The output, and with ``return_weights`` also the weights, shape
            ``(..., num_heads, n, m)``.
            A query whose keys are all masked gets the output projection's bias (a zero attention output), never NaN.
        """
        check_bool(return_weights, "return_weights")
        query, key, value = self._inputs(query, key, value)
        q, k, v = self.project(query, key, value)
        if q is not None:
            q, k = self.transform_qk(q, k)
        o, weights, _ = self.attend(q, k, v, query, key, mask, causal, need_weights=return_weights)
        out = self.output(o)
        if not self.batch_first and out.dim() > 2:
            out = out.movedim(-2, 0)
        return (out, weights) if return_weights else out

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
            for lin, b in zip(
                (self.q_proj, self.k_proj, self.v_proj), mha.in_proj_bias.split(e), strict=True
            ):
                lin.bias.copy_(b)
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self

    @classmethod
    def from_torch(
        cls, mha: nn.MultiheadAttention, window: int | None = None
    ) -> MultiHeadAttention:
        """A new module with the sizes, device, dtype and weights of
        a :class:`torch.nn.MultiheadAttention`.

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
            dropout=mha.dropout,
            batch_first=mha.batch_first,
            bias=mha.in_proj_bias is not None,
            kdim=mha.kdim,
            vdim=mha.vdim,
            window=window,
            device=w.device,
            dtype=w.dtype,
        )
        return new.load_torch_weights(mha)
