r"""Synthesizer attention: attention weights that are *synthesized* rather than computed from token pairs.

Chapter: notebooks/synthesizer.md (Su Jianlin, *Google's new Synthesizer: we do not understand
self-attention well enough*, 2020; Tay et al., *Synthesizer: Rethinking Self-Attention in Transformer
Models*, arXiv:2005.00743).

Standard attention scores every pair, :math:`B = QK^\top/\sqrt{d_h}`. A synthesizer
replaces :math:`B`
(per head, for a sequence of length :math:`n \le \ell`, the maximum length) by

.. math::

   \text{dense: } B_i = \operatorname{relu}(x_i W_1 + b_1) W_2 + b_2 \in \mathbb{R}^{\ell}, \qquad
   \text{random: } B = R \in \mathbb{R}^{\ell \times \ell},

   \text{factorized dense: } B_i = \operatorname{vec}(b_i a_i^\top),\ a_i \in \mathbb{R}^{a},\ b_i \in \mathbb{R}^{b},\
   ab = \ell, \qquad
   \text{factorized random: } B = R_1 R_2^\top,\ R_{1,2} \in \mathbb{R}^{\ell \times r},

cut to the first :math:`n` rows and columns, and a mixture uses :math:`\sum_s \alpha_s B^{(s)}`. The output
is :math:`\operatorname{softmax}(B)\, G(X)` with the value projection :math:`G`, followed by an output
projection. Each score module maps ``x`` of shape ``(..., n, embed_dim)`` to logits
``(..., h, n, n)``
(or ``(h, n, n)`` for the input-independent random ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_float, check_generator, check_int, check_tensor
from ..tasks import partner_task, permutation_task
from ..training import SequenceTagger, train_tagger
from ._core import (
    check_bool,
    check_heads,
    check_module_device,
    clamp_finite,
    default_scale,
    former_names,
    masked_softmax,
    merge_heads,
    randn,
    scaled_logits,
    split_heads,
)
from .multihead import MultiHeadAttention

__all__ = [
    "SYNTHESIZER_KINDS",
    "DenseLogits",
    "DotProductLogits",
    "FactorizedDenseLogits",
    "FactorizedRandomLogits",
    "RandomLogits",
    "SequenceTagger",
    "SynthesizerAttention",
    "partner_task",
    "permutation_task",
    "train_tagger",
]

#: The score modules :class:`SynthesizerAttention` can build, by name.
SYNTHESIZER_KINDS = ("dense", "random", "factorized_dense", "factorized_random", "dot")


# ------------------------------------------------------------------------------------------ helpers
def _check_x(
    x: torch.Tensor, embed_dim: int, max_len: int | None = None, module: nn.Module | None = None
) -> int:
    """Validate a sequence ``x`` of shape ``(..., n, embed_dim)`` (on ``module``'s device); return ``n``."""
    check_tensor(x, "x", min_dim=2, floating=True)
    if module is not None:
        check_module_device(module, x)
    if x.shape[-1] != embed_dim:
        raise ValueError(
            f"x must have last dimension embed_dim={embed_dim}, got shape {tuple(x.shape)}"
        )
    n = x.shape[-2]
    if max_len is not None and n > max_len:
        raise ValueError(f"x has length {n}, longer than max_len={max_len}")
    return n


# ------------------------------------------------------------------------------------ score modules
class DenseLogits(nn.Module):
    r"""Dense synthesizer scores: each token predicts its own row of logits from itself alone.

    .. math:: B_i = \operatorname{relu}(x_i W_1 + b_1)\, W_2 + b_2, \qquad W_2 \in
       \mathbb{R}^{d_{\text{hid}} \times h\ell}

    so :math:`\partial B_i / \partial x_j = 0` for :math:`j \ne i`.

    Parameters
    ----------
    embed_dim : int
        Width of the tokens.
    num_heads : int
        Number of heads :math:`h`.
    max_len : int
        Longest sequence :math:`\ell`; a sequence of length :math:`n` uses the first :math:`n` logits.
    hidden : int, optional
        Width of the hidden layer, ``embed_dim`` by default.
    device, dtype : optional
        Factory arguments of the parameters.

    Notes
    -----
    Chapter: notebooks/synthesizer.md.
    """

    @former_names(d_model="embed_dim", n_heads="num_heads")
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        max_len: int,
        hidden: int | None = None,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.embed_dim = check_int(embed_dim, "embed_dim", low=1)
        self.num_heads = check_int(num_heads, "num_heads", low=1)
        self.max_len = check_int(max_len, "max_len", low=1)
        hidden = self.embed_dim if hidden is None else check_int(hidden, "hidden", low=1)
        self.w1 = nn.Linear(self.embed_dim, hidden, device=device, dtype=dtype)
        self.w2 = nn.Linear(hidden, self.num_heads * self.max_len, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(..., h, n, n)`` for ``x`` of shape ``(..., n, embed_dim)``."""
        n = _check_x(x, self.embed_dim, self.max_len, self)
        b = self.w2(torch.relu(self.w1(x)))  # (..., n, h * max_len)
        return split_heads(b, self.num_heads)[..., :n]


class _TableLogits(nn.Module):
    """Input-independent logits: tables of shape ``(h, max_len, ...)`` drawn at initialisation."""

    def __init__(
        self, num_heads: int, max_len: int, trainable: bool, generator: torch.Generator | None
    ):
        super().__init__()
        self.num_heads = check_int(num_heads, "num_heads", low=1)
        self.max_len = check_int(max_len, "max_len", low=1)
        self.trainable = check_bool(trainable, "trainable")
        check_generator(generator)

    def _table(
        self, name: str, shape: tuple[int, ...], std: float, generator, device, dtype
    ) -> None:
        """Draw a normal table; keep it as a parameter (trainable) or a buffer (fixed)."""
        t = randn(shape, std, generator, device, dtype)
        if self.trainable:
            self.register_parameter(name, nn.Parameter(t))
        else:
            self.register_buffer(name, t)

    def _length(self, x: torch.Tensor) -> int:
        """The sequence length ``n`` of ``x`` (``(..., n, d)``), at most ``max_len``."""
        check_tensor(x, "x", min_dim=2)
        check_module_device(self, x)
        if x.shape[-2] > self.max_len:
            raise ValueError(f"x has length {x.shape[-2]}, longer than max_len={self.max_len}")
        return x.shape[-2]


class RandomLogits(_TableLogits):
    r"""Random synthesizer scores: one :math:`\ell \times \ell` matrix per head, independent of the input.

    .. math:: B = R_{:n,:n}, \qquad R \sim \mathcal{N}(0, \sigma^2) \text{ at initialisation}

    Parameters
    ----------
    num_heads : int
        Number of heads :math:`h`.
    max_len : int
        Longest sequence :math:`\ell`.
    trainable : bool
        Learn :math:`R` (``True``) or keep the random draw fixed (a buffer).
    init_std : float
        Standard deviation :math:`\sigma` of the initial draw.
    generator : torch.Generator, optional
        Source of the initial draw.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: notebooks/synthesizer.md.
    """

    @former_names(n_heads="num_heads")
    def __init__(
        self,
        num_heads: int,
        max_len: int,
        trainable: bool = True,
        init_std: float = 1.0,
        generator: torch.Generator | None = None,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__(num_heads, max_len, trainable, generator)
        std = check_float(init_std, "init_std", low=0.0)
        self._table(
            "r", (self.num_heads, self.max_len, self.max_len), std, generator, device, dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(h, n, n)``; ``x`` (``(..., n, d)``) only sets ``n``."""
        n = self._length(x)
        return self.r[:, :n, :n]


class FactorizedRandomLogits(_TableLogits):
    r"""Factorized random
    scores :math:`B = R_1 R_2^\top`, :math:`R_1, R_2 \in \mathbb{R}^{\ell \times r}`: rank :math:`\le r`.

    Parameters
    ----------
    num_heads : int
        Number of heads.
    max_len : int
        Longest sequence :math:`\ell`.
    rank : int
        Inner dimension :math:`r`.
    trainable : bool
        Learn the factors or keep them fixed.
    init_std : float
        Standard deviation of the entries of :math:`R_1 R_2^\top` at initialisation (each factor has
        standard deviation :math:`(\sigma^2/r)^{1/4}`).
    generator : torch.Generator, optional
        Source of the initial draw.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: notebooks/synthesizer.md.
    """

    @former_names(n_heads="num_heads")
    def __init__(
        self,
        num_heads: int,
        max_len: int,
        rank: int,
        trainable: bool = True,
        init_std: float = 1.0,
        generator: torch.Generator | None = None,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__(num_heads, max_len, trainable, generator)
        self.rank = check_int(rank, "rank", low=1)
        std = check_float(init_std, "init_std", low=0.0)
        shape = (self.num_heads, self.max_len, self.rank)
        for name in ("r1", "r2"):
            self._table(name, shape, (std**2 / self.rank) ** 0.25, generator, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(h, n, n)``; ``x`` (``(..., n, d)``) only sets ``n``."""
        n = self._length(x)
        return self.r1[:, :n] @ self.r2[:, :n].transpose(-2, -1)


class FactorizedDenseLogits(nn.Module):
    r"""Factorized dense scores: each token predicts two short vectors whose outer product is its row.

    .. math::

       h_i = \operatorname{relu}(x_i W_1 + b_1), \quad a_i = h_i W_A + b_A \in \mathbb{R}^{a}, \quad
       b_i = h_i W_B + b_B \in \mathbb{R}^{b}, \quad B_{i,\, p a + q} = (b_i)_p (a_i)_q

    with :math:`ab = \ell` (Tay et al.'s tiling :math:`H_A(a_i) \odot H_B(b_i)`), so each row, reshaped to
    :math:`b \times a`, has rank one, and the layer has :math:`(a + b)` instead of :math:`\ell` outputs.

    Parameters
    ----------
    embed_dim : int
        Width of the tokens.
    num_heads : int
        Number of heads.
    max_len : int
        Longest sequence :math:`\ell`.
    factors : tuple of int, optional
        :math:`(a, b)` with :math:`ab = \ell`; by default :math:`a` is the largest divisor of
        :math:`\ell` not above :math:`\sqrt{\ell}`.
    hidden : int, optional
        Width of the hidden layer, ``embed_dim`` by default.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: notebooks/synthesizer.md.
    """

    @former_names(d_model="embed_dim", n_heads="num_heads")
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        max_len: int,
        factors: tuple[int, int] | None = None,
        hidden: int | None = None,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.embed_dim = check_int(embed_dim, "embed_dim", low=1)
        self.num_heads = check_int(num_heads, "num_heads", low=1)
        self.max_len = check_int(max_len, "max_len", low=1)
        if factors is None:
            a = max(f for f in range(1, math.isqrt(self.max_len) + 1) if self.max_len % f == 0)
            factors = (a, self.max_len // a)
        if not (isinstance(factors, (tuple, list)) and len(factors) == 2):
            raise TypeError(f"factors must be a pair (a, b) of ints, got {factors!r}")
        a, b = (check_int(f, "factors", low=1) for f in factors)
        if a * b != self.max_len:
            raise ValueError(
                f"factors must multiply to max_len={self.max_len}, got {a} * {b} = {a * b}"
            )
        self.factors = (a, b)
        hidden = self.embed_dim if hidden is None else check_int(hidden, "hidden", low=1)
        self.w1 = nn.Linear(self.embed_dim, hidden, device=device, dtype=dtype)
        self.wa = nn.Linear(hidden, self.num_heads * a, device=device, dtype=dtype)
        self.wb = nn.Linear(hidden, self.num_heads * b, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(..., h, n, n)`` for ``x`` of shape ``(..., n, embed_dim)``."""
        n = _check_x(x, self.embed_dim, self.max_len, self)
        hid = torch.relu(self.w1(x))
        a = split_heads(self.wa(hid), self.num_heads)  # (..., h, n, a)
        b = split_heads(self.wb(hid), self.num_heads)  # (..., h, n, b)
        # (..., h, n, b, a): entry (p, q) = b_p a_q, the overflow-safe logits of a rank-one product
        rows = scaled_logits(b.unsqueeze(-1), a.unsqueeze(-1), 1.0)
        return rows.flatten(-2)[..., :n]


class DotProductLogits(nn.Module):
    r"""Standard scaled dot-product scores :math:`B = (XW_Q)(XW_K)^\top / \sqrt{d_h}` per head (the baseline).

    Parameters
    ----------
    embed_dim : int
        Width of the tokens.
    num_heads : int
        Number of heads; :math:`d_h = d_{\text{model}} / h`.
    bias : bool
        Use biases in the projections.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: notebooks/synthesizer.md.
    """

    @former_names(d_model="embed_dim", n_heads="num_heads")
    def __init__(
        self, embed_dim: int, num_heads: int, bias: bool = True, *, device=None, dtype=None
    ):
        super().__init__()
        self.embed_dim, self.num_heads = check_heads(embed_dim, num_heads)
        self.wq = nn.Linear(self.embed_dim, self.embed_dim, bias=bias, device=device, dtype=dtype)
        self.wk = nn.Linear(self.embed_dim, self.embed_dim, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(..., h, n, n)`` for ``x`` of shape ``(..., n, embed_dim)``."""
        _check_x(x, self.embed_dim, module=self)
        q = split_heads(self.wq(x), self.num_heads)
        k = split_heads(self.wk(x), self.num_heads)
        return scaled_logits(q, k, default_scale(None, q.shape[-1]))


# -------------------------------------------------------------------------------------- the layer
class SynthesizerAttention(MultiHeadAttention):
    r"""Multi-head attention whose weights come from synthesized logits (or a mixture of several kinds).

    A :class:`~suma_lib.attention.multihead.MultiHeadAttention` whose :meth:`get_scores` returns the
    mixture :meth:`logits` of the tokens instead of :math:`QK^\top/\sqrt{d_h}`; its own layout has a
    value projection ``value`` and an output projection ``out`` (no query or key projection outside the
    ``"dot"`` source).

    .. math::

       Y = \Bigl[\operatorname{softmax}\Bigl(\textstyle\sum_s \alpha_s B^{(s)}_h(X) + M\Bigr)\, X
       W_V^{(h)}\Bigr]_{h} W_O,
       \qquad \alpha = \operatorname{softmax}(\theta) \text{ (learned) or fixed}

    with :math:`M` the mask (:math:`-\infty` where a query may not attend).

    Parameters
    ----------
    embed_dim : int
        Width of the tokens.
    num_heads : int
        Number of heads (must divide ``embed_dim``).
    max_len : int, optional
        Longest sequence; needed by every kind but ``"dot"``.
    kinds : str or Sequence[str]
        One or more of :data:`SYNTHESIZER_KINDS`: ``"dense"``, ``"random"``, ``"factorized_dense"``,
        ``"factorized_random"``, ``"dot"`` (standard attention). Several kinds give a mixture.
    hidden : int, optional
        Hidden width of the dense kinds.
    rank : int, optional
        Rank of ``"factorized_random"`` (default 8, capped at ``max_len``).
    factors : tuple of int, optional
        :math:`(a, b)` of ``"factorized_dense"``.
    trainable : bool
        Whether the random kinds are learned (``False``: a fixed random pattern).
    init_std : float
        Initial standard deviation of the random kinds' logits.
    mix_weights : Sequence[float], optional
        Fixed mixture weights :math:`\alpha` (one per kind). By default they are learned as
        :math:`\operatorname{softmax}(\theta)`, :math:`\theta = 0` at initialisation.
    bias : bool
        Biases in the value, output and dot-product projections.
    dropout : float
        Dropout on the attention weights in training mode.
    generator : torch.Generator, optional
        Source of the random kinds' initial draw.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: notebooks/synthesizer.md.
    """

    _input_names = ("x", "x", "x")

    @former_names(d_model="embed_dim", n_heads="num_heads")
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        max_len: int | None = None,
        kinds: str | Sequence[str] = "dense",
        *,
        hidden: int | None = None,
        rank: int | None = None,
        factors: tuple[int, int] | None = None,
        trainable: bool = True,
        init_std: float = 1.0,
        mix_weights: Sequence[float] | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__(
            embed_dim, num_heads, dropout, bias, projections=False, device=device, dtype=dtype
        )
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        if not kinds:
            raise ValueError("kinds must name at least one kind")
        for kind in kinds:
            if kind not in SYNTHESIZER_KINDS:
                raise ValueError(f"kinds must be taken from {SYNTHESIZER_KINDS}, got {kind!r}")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"kinds must not repeat a kind, got {kinds}")
        if max_len is None and any(kind != "dot" for kind in kinds):
            raise ValueError("max_len is required by every kind except 'dot'")
        self.max_len = None if max_len is None else check_int(max_len, "max_len", low=1)
        self.kinds = kinds
        fk = {"device": device, "dtype": dtype}
        h = self.num_heads
        make = {
            "dense": lambda: DenseLogits(self.embed_dim, h, self.max_len, hidden, **fk),
            "random": lambda: RandomLogits(h, self.max_len, trainable, init_std, generator, **fk),
            "factorized_dense": lambda: FactorizedDenseLogits(
                self.embed_dim, h, self.max_len, factors, hidden, **fk
            ),
            "factorized_random": lambda: FactorizedRandomLogits(
                h,
                self.max_len,
                min(8, self.max_len) if rank is None else rank,
                trainable,
                init_std,
                generator,
                **fk,
            ),
            "dot": lambda: DotProductLogits(self.embed_dim, h, bias, **fk),
        }
        self.sources = nn.ModuleDict({kind: make[kind]() for kind in kinds})
        if mix_weights is None:
            self.mix_logits = (
                nn.Parameter(torch.zeros(len(kinds), **fk)) if len(kinds) > 1 else None
            )
            self.register_buffer("fixed_mix", None)
        else:
            if isinstance(mix_weights, (str, torch.Tensor)) or not isinstance(
                mix_weights, Sequence
            ):
                raise TypeError("mix_weights must be a sequence of floats, one per kind")
            if len(mix_weights) != len(kinds):
                raise ValueError(
                    f"mix_weights must have one weight per kind ({len(kinds)}), got "
                    f"{len(mix_weights)}"
                )
            ws = [check_float(w, "mix_weights") for w in mix_weights]
            self.mix_logits = None
            self.register_buffer("fixed_mix", torch.tensor(ws, **fk))
        self.value = nn.Linear(self.embed_dim, self.embed_dim, bias=bias, **fk)
        self.out = nn.Linear(self.embed_dim, self.embed_dim, bias=bias, **fk)

    def mixture(self) -> torch.Tensor:
        r"""The weights :math:`\alpha` of the kinds (a one-element tensor for a single kind)."""
        if self.fixed_mix is not None:
            return self.fixed_mix
        if self.mix_logits is None:
            return self.value.weight.new_ones(1)
        return torch.softmax(self.mix_logits, dim=0)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        r"""Mixed logits :math:`\sum_s \alpha_s B^{(s)}(X)` of shape ``(..., h, n, n)`` (finite)."""
        _check_x(x, self.embed_dim, self.max_len)
        alpha = self.mixture()
        total = None
        for a, source in zip(alpha, self.sources.values(), strict=True):
            term = a * clamp_finite(source(x))
            total = term if total is None else total + term
        return total.expand(*x.shape[:-2], *total.shape[-3:])

    def project(self, query, key, value):
        """Only values: the scores come from the tokens (:meth:`logits`), not from queries and keys."""
        return None, None, split_heads(self.value(value), self.num_heads)

    def get_scores(self, q, k, query, key):
        """The synthesized scores, :meth:`logits` of the tokens ``query``."""
        return self.logits(query)

    def output(self, o: torch.Tensor) -> torch.Tensor:
        """The output projection ``out`` of the per-head outputs."""
        return self.out(merge_heads(o))

    def weights(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """Attention weights ``(..., h, n, n)``: rows sum to one, masked entries are zero.

        Parameters
        ----------
        x : torch.Tensor, shape ``(..., n, embed_dim)``
        mask : torch.Tensor, optional
            Boolean, ``True`` where a query may attend: ``(..., n, n)`` the same for every head, or
            ``(..., h, n, n)`` per head. A fully masked row gets zero weights.
        causal : bool
            Let query ``i`` attend to keys ``j <= i`` only.
        """
        x, _, _ = self._inputs(x, None, None)
        logits = self.logits(x)
        n = x.shape[-2]
        return masked_softmax(logits, self._mask(mask, causal, n, n, logits.dim(), x.device))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Apply the layer to ``x`` of shape ``(..., n, embed_dim)``; see :meth:`weights` for the masks."""
        return super().forward(x, mask=mask, causal=causal, return_weights=return_weights)
