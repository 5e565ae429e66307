r"""RealFormer: residual connections on the attention scores, and the Post-LN / Pre-LN baselines.

Chapter: ``notebooks/realformer.ipynb`` (Su Jianlin, *RealFormer: moving the residual onto the attention
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
from torch import nn

from .._validation import check_choice, check_compatible, check_float, check_generator, check_int, check_tensor
from .exact import _check_qkv, _default_scale, combine_masks
from .sparse import _masked_softmax
from .synthesizer import _check_heads, _check_x, _merge_heads, _split_heads

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

#: The block layouts compared in the chapter, Post-LN, Pre-LN and RealFormer (Post-LN with residual scores).
LN_VARIANTS = ("post", "pre", "realformer")


def _check_prev(prev: torch.Tensor | None, ref: torch.Tensor) -> None:
    if prev is None:
        return
    check_tensor(prev, "prev", min_dim=2, floating=True)
    check_compatible(prev, ref, "prev", "the scores")


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
        Scores of the previous layer, broadcastable to ``(..., n, m)``; ``None`` means :math:`A_0 = 0`.
    mask : torch.Tensor, optional
        Boolean, ``True`` where a query may attend; a fully masked row gives a zero output.
    causal : bool
        Let query ``i`` attend to keys ``j <= i`` only.
    scale : float, optional
        :math:`s`, :math:`1/\sqrt{d}` by default.

    Returns
    -------
    tuple of torch.Tensor
        The output ``(..., n, d_v)`` and the unmasked scores :math:`A` ``(..., n, m)``.

    Notes
    -----
    Chapter: ``notebooks/realformer.ipynb``.
    """
    _check_qkv(q, k, v)
    s = _default_scale(scale, q.shape[-1])
    scores = torch.matmul(q, k.transpose(-2, -1)) * s
    if prev is not None:
        _check_prev(prev, scores)
        scores = scores + prev
    full = combine_masks(mask, causal, q.shape[-2], k.shape[-2], device=q.device)
    return _masked_softmax(scores, full) @ v, scores


class ResidualAttention(nn.Module):
    r"""Multi-head self-attention that adds the previous layer's scores before the softmax (RealFormer).

    .. math:: A_n^{(h)} = \frac{Q_n^{(h)} K_n^{(h)\top}}{\sqrt{d_h}} + A_{n-1}^{(h)}, \qquad
       Y = \bigl[\operatorname{softmax}(A_n^{(h)} + M)\, V_n^{(h)}\bigr]_h W_O

    The projections are laid out like :class:`torch.nn.MultiheadAttention` (one ``in_proj`` of width
    ``3 * d_model`` for :math:`Q, K, V`, then ``out_proj``). With ``prev=None`` this is ordinary multi-head
    attention.

    Parameters
    ----------
    d_model : int
        Width of the tokens.
    n_heads : int
        Number of heads (must divide ``d_model``).
    bias : bool
        Biases in the projections.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: ``notebooks/realformer.ipynb``.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        self.d_model, self.n_heads = _check_heads(d_model, n_heads)
        self.in_proj = nn.Linear(self.d_model, 3 * self.d_model, bias=bias, device=device, dtype=dtype)
        self.out_proj = nn.Linear(self.d_model, self.d_model, bias=bias, device=device, dtype=dtype)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head queries, keys and values, each of shape ``(..., h, n, d_h)``."""
        _check_x(x, self.d_model)
        q, k, v = self.in_proj(x).chunk(3, dim=-1)
        return tuple(_split_heads(t, self.n_heads) for t in (q, k, v))

    def forward(
        self,
        x: torch.Tensor,
        prev: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend over ``x`` of shape ``(..., n, d_model)``.

        Parameters
        ----------
        x : torch.Tensor, shape ``(..., n, d_model)``
        prev : torch.Tensor, optional
            The previous layer's scores, broadcastable to ``(..., h, n, n)``.
        mask : torch.Tensor, optional
            Boolean, ``True`` where a query may attend, broadcastable to ``(..., h, n, n)``.
        causal : bool
            Let query ``i`` attend to keys ``j <= i`` only.

        Returns
        -------
        tuple of torch.Tensor
            The output ``(..., n, d_model)`` and the scores :math:`A_n` ``(..., h, n, n)``.
        """
        q, k, v = self.qkv(x)
        o, scores = residual_attention(q, k, v, prev=prev, mask=mask, causal=causal)
        return self.out_proj(_merge_heads(o)), scores


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
    d_model : int
        Width of the tokens.
    n_heads : int
        Number of heads.
    d_ff : int
        Hidden width of the feed-forward layer.
    variant : str
        ``"post"``, ``"pre"`` or ``"realformer"``.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: ``notebooks/realformer.ipynb``.
    """

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, variant: str = "realformer", *, device=None, dtype=None
    ):
        super().__init__()
        self.variant = check_choice(variant, "variant", LN_VARIANTS)
        d_ff = check_int(d_ff, "d_ff", low=1)
        fk = {"device": device, "dtype": dtype}
        self.attn = ResidualAttention(d_model, n_heads, **fk)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff, **fk), nn.GELU(), nn.Linear(d_ff, d_model, **fk))
        self.ln1 = nn.LayerNorm(d_model, **fk)
        self.ln2 = nn.LayerNorm(d_model, **fk)

    def forward(
        self,
        x: torch.Tensor,
        prev: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the block; ``prev`` (the scores of the block below) is used only by ``"realformer"``.

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

    For ``"realformer"`` the scores flow up the stack, :math:`A_n = Q_nK_n^\top/\sqrt{d_h} + A_{n-1}`;
    the other variants start every layer from :math:`A_0 = 0`.

    Parameters
    ----------
    n_layers : int
        Number of blocks.
    d_model, n_heads, d_ff : int
        Sizes of each block.
    variant : str
        ``"post"``, ``"pre"`` or ``"realformer"``.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: ``notebooks/realformer.ipynb``.
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        variant: str = "realformer",
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        n_layers = check_int(n_layers, "n_layers", low=1)
        self.variant = check_choice(variant, "variant", LN_VARIANTS)
        fk = {"device": device, "dtype": dtype}
        self.blocks = nn.ModuleList(
            RealFormerBlock(d_model, n_heads, d_ff, variant, **fk) for _ in range(n_layers)
        )
        self.final_ln = nn.LayerNorm(d_model, **fk) if variant == "pre" else nn.Identity()

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
        if not isinstance(return_scores, bool):
            raise TypeError(f"return_scores must be a bool, got {type(return_scores).__name__}")
        prev, all_scores = None, []
        for block in self.blocks:
            x, prev = block(x, prev, mask, causal)
            all_scores.append(prev)
        x = self.final_ln(x)
        return (x, all_scores) if return_scores else x


# --------------------------------------------------------------------- the chapter's synthetic benchmark
def markov_chain(
    n_states: int,
    sharpness: float = 2.0,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A random first-order Markov chain with Gaussian-softmax transition rows.

    The start is uniform and row :math:`s` of the transition matrix is
    :math:`P_{s\cdot} = \operatorname{softmax}(\beta g_s)`, :math:`g_s \sim \mathcal{N}(0, I)`.

    Parameters
    ----------
    n_states : int
        Number of states :math:`V`.
    sharpness : float
        :math:`\beta \ge 0`; larger values make each row more peaked (more predictable sequences).
    generator : torch.Generator, optional
        Source of the draw.
    device, dtype : optional
        Where and in which floating dtype to build the chain (float64 by default).

    Returns
    -------
    tuple of torch.Tensor
        The initial distribution ``(V,)`` and the transition matrix ``(V, V)`` (rows sum to one).

    Notes
    -----
    Chapter: ``notebooks/realformer.ipynb``.
    """
    v = check_int(n_states, "n_states", low=1)
    beta = check_float(sharpness, "sharpness", low=0.0)
    check_generator(generator)
    if device is None and generator is not None:
        device = generator.device
    g = torch.randn(v, v, generator=generator, device=device, dtype=dtype)
    return torch.full((v,), 1.0 / v, device=g.device, dtype=dtype), torch.softmax(beta * g, dim=-1)


def _check_chain(initial: torch.Tensor, transition: torch.Tensor) -> int:
    check_tensor(initial, "initial", min_dim=1, floating=True, finite=True)
    check_tensor(transition, "transition", min_dim=2, floating=True, finite=True)
    v = initial.shape[-1]
    if initial.dim() != 1 or transition.shape != (v, v):
        raise ValueError(
            f"initial must be (V,) and transition (V, V), got {tuple(initial.shape)} and {tuple(transition.shape)}"
        )
    return v


def markov_mlm_task(
    batch: int,
    n: int,
    initial: torch.Tensor,
    transition: torch.Tensor,
    mask_rate: float = 0.25,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Masked-token prediction on sequences of a Markov chain (a miniature MLM).

    Sequences :math:`s_0 \sim \pi,\ s_t \sim P_{s_{t-1}\cdot}` are drawn; each position is hidden with
    probability ``mask_rate`` (replaced by the id :math:`V`), and the targets are the hidden states.

    Parameters
    ----------
    batch, n : int
        Number and length of the sequences.
    initial, transition : torch.Tensor
        The chain, as returned by :func:`markov_chain`.
    mask_rate : float
        Probability that a position is hidden, in ``(0, 1]``.
    generator : torch.Generator, optional
        Source of randomness (on the chain's device).

    Returns
    -------
    tuple of torch.Tensor
        Inputs ``x`` (``(batch, n)``, ids ``0..V``, ``V`` = hidden) and targets ``y`` (the hidden states,
        ``-100`` at visible positions).

    Notes
    -----
    Chapter: ``notebooks/realformer.ipynb``.
    """
    batch = check_int(batch, "batch", low=1)
    n = check_int(n, "n", low=1)
    v = _check_chain(initial, transition)
    rate = check_float(mask_rate, "mask_rate", low=0.0, high=1.0, low_open=True)
    check_generator(generator)
    states = [torch.multinomial(initial.expand(batch, v), 1, generator=generator)[:, 0]]
    for _ in range(n - 1):
        states.append(torch.multinomial(transition[states[-1]], 1, generator=generator)[:, 0])
    s = torch.stack(states, dim=1)
    hidden = torch.rand(batch, n, generator=generator, device=initial.device) < rate
    return s.masked_fill(hidden, v), s.masked_fill(~hidden, -100)


def markov_posterior(x: torch.Tensor, initial: torch.Tensor, transition: torch.Tensor) -> torch.Tensor:
    r"""Exact posterior of every position's state given the visible ones (forward-backward).

    With the evidence :math:`e_t(s) = 1` at a hidden position and :math:`[s = x_t]` at a visible one,

    .. math::

       \alpha_0 = \pi \odot e_0,\quad \alpha_t = (\alpha_{t-1} P) \odot e_t, \qquad
       \beta_{n-1} = \mathbf{1},\quad \beta_t = P (e_{t+1} \odot \beta_{t+1}), \qquad
       p(s_t = s \mid x) \propto \alpha_t(s)\, \beta_t(s),

    each message renormalised as it goes. Its cross-entropy on the hidden states is the Bayes limit of
    any predictor of :func:`markov_mlm_task`.

    Parameters
    ----------
    x : torch.Tensor
        Inputs ``(batch, n)`` from :func:`markov_mlm_task` (id ``V`` = hidden).
    initial, transition : torch.Tensor
        The chain.

    Returns
    -------
    torch.Tensor, shape ``(batch, n, V)``
        Posterior probabilities (rows sum to one), in the chain's dtype.

    Notes
    -----
    Chapter: ``notebooks/realformer.ipynb``.
    """
    v = _check_chain(initial, transition)
    check_tensor(x, "x", min_dim=2)
    if x.dtype.is_floating_point or x.dim() != 2:
        raise ValueError(f"x must be an integer tensor of shape (batch, n), got {x.dtype} {tuple(x.shape)}")
    ev = torch.nn.functional.one_hot(x.clamp(max=v), v + 1)[..., :v].to(transition.dtype)
    ev = torch.where((x == v)[..., None], torch.ones_like(ev), ev)  # hidden: every state possible
    n = x.shape[1]
    alpha = [initial * ev[:, 0]]
    alpha[0] = alpha[0] / alpha[0].sum(-1, keepdim=True)
    for t in range(1, n):
        a = (alpha[-1] @ transition) * ev[:, t]
        alpha.append(a / a.sum(-1, keepdim=True))
    beta = [torch.ones_like(alpha[0])]
    for t in range(n - 2, -1, -1):
        b = (ev[:, t + 1] * beta[0]) @ transition.T
        beta.insert(0, b / b.sum(-1, keepdim=True))
    post = torch.stack(alpha, 1) * torch.stack(beta, 1)
    return post / post.sum(-1, keepdim=True)
