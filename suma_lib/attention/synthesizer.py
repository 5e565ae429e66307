r"""Synthesizer attention: attention weights that are *synthesized* rather than computed from token pairs.

Chapter: ``notebooks/synthesizer.ipynb`` (Su Jianlin, *Google's new Synthesizer: we do not understand
self-attention well enough*, 2020; Tay et al., *Synthesizer: Rethinking Self-Attention in Transformer
Models*, arXiv:2005.00743).

Standard attention scores every pair, :math:`B = QK^\top/\sqrt{d_h}`. A synthesizer replaces :math:`B`
(per head, for a sequence of length :math:`n \le \ell`, the maximum length) by

.. math::

   \text{dense: } B_i = \operatorname{relu}(x_i W_1 + b_1) W_2 + b_2 \in \mathbb{R}^{\ell}, \qquad
   \text{random: } B = R \in \mathbb{R}^{\ell \times \ell},

   \text{factorized dense: } B_i = \operatorname{vec}(b_i a_i^\top),\ a_i \in \mathbb{R}^{a},\ b_i \in \mathbb{R}^{b},\
   ab = \ell, \qquad
   \text{factorized random: } B = R_1 R_2^\top,\ R_{1,2} \in \mathbb{R}^{\ell \times r},

cut to the first :math:`n` rows and columns, and a mixture uses :math:`\sum_s \alpha_s B^{(s)}`. The output
is :math:`\operatorname{softmax}(B)\, G(X)` with the value projection :math:`G`, followed by an output
projection. Each score module maps ``x`` of shape ``(..., n, d_model)`` to logits ``(..., h, n, n)``
(or ``(h, n, n)`` for the input-independent random ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_float, check_generator, check_int, check_tensor
from .exact import combine_masks
from .multihead import merge_heads as _merge_heads
from .multihead import split_heads as _split_heads
from .sparse import _check_bool, _masked_softmax

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
def _check_x(x: torch.Tensor, d_model: int, max_len: int | None = None) -> int:
    """Validate a sequence ``x`` of shape ``(..., n, d_model)``; return ``n``."""
    check_tensor(x, "x", min_dim=2, floating=True)
    if x.shape[-1] != d_model:
        raise ValueError(f"x must have last dimension d_model={d_model}, got shape {tuple(x.shape)}")
    n = x.shape[-2]
    if max_len is not None and n > max_len:
        raise ValueError(f"x has length {n}, longer than max_len={max_len}")
    return n


def _check_heads(d_model: int, n_heads: int) -> tuple[int, int]:
    d_model = check_int(d_model, "d_model", low=1)
    n_heads = check_int(n_heads, "n_heads", low=1)
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
    return d_model, n_heads


def _randn(shape: tuple[int, ...], std: float, generator, device, dtype) -> torch.Tensor:
    """Normal draws through an optional generator (on the generator's device), moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    if gen_device is not None and torch.device(gen_device).type == "meta":
        gen_device = None
    draw = torch.randn(
        shape, generator=generator, device=gen_device, dtype=dtype or torch.get_default_dtype()
    )
    return (draw * std).to(device=device)


# ------------------------------------------------------------------------------------ score modules
class DenseLogits(nn.Module):
    r"""Dense synthesizer scores: each token predicts its own row of logits from itself alone.

    .. math:: B_i = \operatorname{relu}(x_i W_1 + b_1)\, W_2 + b_2, \qquad W_2 \in \mathbb{R}^{d_{\text{hid}} \times h\ell}

    so :math:`\partial B_i / \partial x_j = 0` for :math:`j \ne i`.

    Parameters
    ----------
    d_model : int
        Width of the tokens.
    n_heads : int
        Number of heads :math:`h`.
    max_len : int
        Longest sequence :math:`\ell`; a sequence of length :math:`n` uses the first :math:`n` logits.
    hidden : int, optional
        Width of the hidden layer, ``d_model`` by default.
    device, dtype : optional
        Factory arguments of the parameters.

    Notes
    -----
    Chapter: ``notebooks/synthesizer.ipynb``.
    """

    def __init__(
        self, d_model: int, n_heads: int, max_len: int, hidden: int | None = None, *, device=None, dtype=None
    ):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", low=1)
        self.n_heads = check_int(n_heads, "n_heads", low=1)
        self.max_len = check_int(max_len, "max_len", low=1)
        hidden = self.d_model if hidden is None else check_int(hidden, "hidden", low=1)
        self.w1 = nn.Linear(self.d_model, hidden, device=device, dtype=dtype)
        self.w2 = nn.Linear(hidden, self.n_heads * self.max_len, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(..., h, n, n)`` for ``x`` of shape ``(..., n, d_model)``."""
        n = _check_x(x, self.d_model, self.max_len)
        b = self.w2(torch.relu(self.w1(x)))  # (..., n, h * max_len)
        return _split_heads(b, self.n_heads)[..., :n]


class _TableLogits(nn.Module):
    """Input-independent logits: tables of shape ``(h, max_len, ...)`` drawn at initialisation."""

    def __init__(self, n_heads: int, max_len: int, trainable: bool, generator: torch.Generator | None):
        super().__init__()
        self.n_heads = check_int(n_heads, "n_heads", low=1)
        self.max_len = check_int(max_len, "max_len", low=1)
        self.trainable = _check_bool(trainable, "trainable")
        check_generator(generator)

    def _table(self, name: str, shape: tuple[int, ...], std: float, generator, device, dtype) -> None:
        """Draw a normal table; keep it as a parameter (trainable) or a buffer (fixed)."""
        t = _randn(shape, std, generator, device, dtype)
        if self.trainable:
            self.register_parameter(name, nn.Parameter(t))
        else:
            self.register_buffer(name, t)

    def _length(self, x: torch.Tensor) -> int:
        """The sequence length ``n`` of ``x`` (``(..., n, d)``), at most ``max_len``."""
        check_tensor(x, "x", min_dim=2)
        if x.shape[-2] > self.max_len:
            raise ValueError(f"x has length {x.shape[-2]}, longer than max_len={self.max_len}")
        return x.shape[-2]


class RandomLogits(_TableLogits):
    r"""Random synthesizer scores: one :math:`\ell \times \ell` matrix per head, independent of the input.

    .. math:: B = R_{:n,:n}, \qquad R \sim \mathcal{N}(0, \sigma^2) \text{ at initialisation}

    Parameters
    ----------
    n_heads : int
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
    Chapter: ``notebooks/synthesizer.ipynb``.
    """

    def __init__(
        self,
        n_heads: int,
        max_len: int,
        trainable: bool = True,
        init_std: float = 1.0,
        generator: torch.Generator | None = None,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__(n_heads, max_len, trainable, generator)
        std = check_float(init_std, "init_std", low=0.0)
        self._table("r", (self.n_heads, self.max_len, self.max_len), std, generator, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(h, n, n)``; ``x`` (``(..., n, d)``) only sets ``n``."""
        n = self._length(x)
        return self.r[:, :n, :n]


class FactorizedRandomLogits(_TableLogits):
    r"""Factorized random scores :math:`B = R_1 R_2^\top`, :math:`R_1, R_2 \in \mathbb{R}^{\ell \times r}`: rank :math:`\le r`.

    Parameters
    ----------
    n_heads : int
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
    Chapter: ``notebooks/synthesizer.ipynb``.
    """

    def __init__(
        self,
        n_heads: int,
        max_len: int,
        rank: int,
        trainable: bool = True,
        init_std: float = 1.0,
        generator: torch.Generator | None = None,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__(n_heads, max_len, trainable, generator)
        self.rank = check_int(rank, "rank", low=1)
        std = check_float(init_std, "init_std", low=0.0)
        shape = (self.n_heads, self.max_len, self.rank)
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
    d_model : int
        Width of the tokens.
    n_heads : int
        Number of heads.
    max_len : int
        Longest sequence :math:`\ell`.
    factors : tuple of int, optional
        :math:`(a, b)` with :math:`ab = \ell`; by default :math:`a` is the largest divisor of
        :math:`\ell` not above :math:`\sqrt{\ell}`.
    hidden : int, optional
        Width of the hidden layer, ``d_model`` by default.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: ``notebooks/synthesizer.ipynb``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        max_len: int,
        factors: tuple[int, int] | None = None,
        hidden: int | None = None,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", low=1)
        self.n_heads = check_int(n_heads, "n_heads", low=1)
        self.max_len = check_int(max_len, "max_len", low=1)
        if factors is None:
            a = max(f for f in range(1, math.isqrt(self.max_len) + 1) if self.max_len % f == 0)
            factors = (a, self.max_len // a)
        if not (isinstance(factors, (tuple, list)) and len(factors) == 2):
            raise TypeError(f"factors must be a pair (a, b) of ints, got {factors!r}")
        a, b = (check_int(f, "factors", low=1) for f in factors)
        if a * b != self.max_len:
            raise ValueError(f"factors must multiply to max_len={self.max_len}, got {a} * {b} = {a * b}")
        self.factors = (a, b)
        hidden = self.d_model if hidden is None else check_int(hidden, "hidden", low=1)
        self.w1 = nn.Linear(self.d_model, hidden, device=device, dtype=dtype)
        self.wa = nn.Linear(hidden, self.n_heads * a, device=device, dtype=dtype)
        self.wb = nn.Linear(hidden, self.n_heads * b, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(..., h, n, n)`` for ``x`` of shape ``(..., n, d_model)``."""
        n = _check_x(x, self.d_model, self.max_len)
        hid = torch.relu(self.w1(x))
        a = _split_heads(self.wa(hid), self.n_heads)  # (..., h, n, a)
        b = _split_heads(self.wb(hid), self.n_heads)  # (..., h, n, b)
        rows = b.unsqueeze(-1) * a.unsqueeze(-2)  # (..., h, n, b, a): entry (p, q) = b_p a_q
        return rows.flatten(-2)[..., :n]


class DotProductLogits(nn.Module):
    r"""Standard scaled dot-product scores :math:`B = (XW_Q)(XW_K)^\top / \sqrt{d_h}` per head (the baseline).

    Parameters
    ----------
    d_model : int
        Width of the tokens.
    n_heads : int
        Number of heads; :math:`d_h = d_{\text{model}} / h`.
    bias : bool
        Use biases in the projections.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: ``notebooks/synthesizer.ipynb``.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        self.d_model, self.n_heads = _check_heads(d_model, n_heads)
        self.wq = nn.Linear(self.d_model, self.d_model, bias=bias, device=device, dtype=dtype)
        self.wk = nn.Linear(self.d_model, self.d_model, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(..., h, n, n)`` for ``x`` of shape ``(..., n, d_model)``."""
        _check_x(x, self.d_model)
        q = _split_heads(self.wq(x), self.n_heads)
        k = _split_heads(self.wk(x), self.n_heads)
        return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


# -------------------------------------------------------------------------------------- the layer
class SynthesizerAttention(nn.Module):
    r"""Multi-head attention whose weights come from synthesized logits (or a mixture of several kinds).

    .. math::

       Y = \Bigl[\operatorname{softmax}\Bigl(\textstyle\sum_s \alpha_s B^{(s)}_h(X) + M\Bigr)\, X W_V^{(h)}\Bigr]_{h} W_O,
       \qquad \alpha = \operatorname{softmax}(\theta) \text{ (learned) or fixed}

    with :math:`M` the mask (:math:`-\infty` where a query may not attend).

    Parameters
    ----------
    d_model : int
        Width of the tokens.
    n_heads : int
        Number of heads (must divide ``d_model``).
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
    generator : torch.Generator, optional
        Source of the random kinds' initial draw.
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapter: ``notebooks/synthesizer.ipynb``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
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
        generator: torch.Generator | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.d_model, self.n_heads = _check_heads(d_model, n_heads)
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
        h = self.n_heads
        make = {
            "dense": lambda: DenseLogits(self.d_model, h, self.max_len, hidden, **fk),
            "random": lambda: RandomLogits(h, self.max_len, trainable, init_std, generator, **fk),
            "factorized_dense": lambda: FactorizedDenseLogits(
                self.d_model, h, self.max_len, factors, hidden, **fk
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
            "dot": lambda: DotProductLogits(self.d_model, h, bias, **fk),
        }
        self.sources = nn.ModuleDict({kind: make[kind]() for kind in kinds})
        if mix_weights is None:
            self.mix_logits = nn.Parameter(torch.zeros(len(kinds), **fk)) if len(kinds) > 1 else None
            self.register_buffer("fixed_mix", None)
        else:
            if isinstance(mix_weights, (str, torch.Tensor)) or not isinstance(mix_weights, Sequence):
                raise TypeError("mix_weights must be a sequence of floats, one per kind")
            if len(mix_weights) != len(kinds):
                raise ValueError(
                    f"mix_weights must have one weight per kind ({len(kinds)}), got {len(mix_weights)}"
                )
            ws = [check_float(w, "mix_weights") for w in mix_weights]
            self.mix_logits = None
            self.register_buffer("fixed_mix", torch.tensor(ws, **fk))
        self.value = nn.Linear(self.d_model, self.d_model, bias=bias, **fk)
        self.out = nn.Linear(self.d_model, self.d_model, bias=bias, **fk)

    def mixture(self) -> torch.Tensor:
        r"""The weights :math:`\alpha` of the kinds (a one-element tensor for a single kind)."""
        if self.fixed_mix is not None:
            return self.fixed_mix
        if self.mix_logits is None:
            return self.value.weight.new_ones(1)
        return torch.softmax(self.mix_logits, dim=0)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        r"""Mixed logits :math:`\sum_s \alpha_s B^{(s)}(X)` of shape ``(..., h, n, n)``."""
        _check_x(x, self.d_model, self.max_len)
        alpha = self.mixture()
        total = None
        for a, source in zip(alpha, self.sources.values()):
            term = a * source(x)
            total = term if total is None else total + term
        return total.expand(*x.shape[:-2], *total.shape[-3:])

    def weights(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """Attention weights ``(..., h, n, n)``: rows sum to one, masked entries are zero.

        Parameters
        ----------
        x : torch.Tensor, shape ``(..., n, d_model)``
        mask : torch.Tensor, optional
            Boolean, ``True`` where a query may attend, broadcastable to ``(..., h, n, n)``. A fully masked
            row gets zero weights.
        causal : bool
            Let query ``i`` attend to keys ``j <= i`` only.
        """
        logits = self.logits(x)
        n = x.shape[-2]
        full = combine_masks(mask, causal, n, n, device=x.device)
        return _masked_softmax(logits, full)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """Apply the layer to ``x`` of shape ``(..., n, d_model)``; see :meth:`weights` for the masks."""
        w = self.weights(x, mask, causal)
        v = _split_heads(self.value(x), self.n_heads)
        return self.out(_merge_heads(w @ v))


# ------------------------------------------------------------------------ synthetic tasks and training
def permutation_task(
    batch: int, n: int, vocab: int, perm: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A task that needs only *positional* attention: :math:`y_i = x_{\pi(i)}`, :math:`\pi` a fixed permutation.

    Parameters
    ----------
    batch, n, vocab : int
        Number of sequences, their length and the number of token values.
    perm : torch.Tensor
        A permutation of ``range(n)`` (integer tensor); the tokens are drawn on its device.
    generator : torch.Generator, optional
        Source of the tokens (uniform over ``range(vocab)``).

    Returns
    -------
    tuple of torch.Tensor
        Tokens ``x`` and targets ``y``, both ``(batch, n)`` int64.

    Notes
    -----
    Chapter: ``notebooks/synthesizer.ipynb``.
    """
    batch = check_int(batch, "batch", low=1)
    n = check_int(n, "n", low=1)
    vocab = check_int(vocab, "vocab", low=1)
    check_tensor(perm, "perm", min_dim=1)
    check_generator(generator)
    if perm.dtype.is_floating_point or perm.shape != (n,):
        raise ValueError(
            f"perm must be an integer tensor of shape ({n},), got {perm.dtype} {tuple(perm.shape)}"
        )
    if perm.device.type != "meta" and not torch.equal(
        perm.sort().values, torch.arange(n, device=perm.device)
    ):
        raise ValueError("perm must be a permutation of range(n)")
    x = torch.randint(0, vocab, (batch, n), generator=generator, device=perm.device)
    return x, x[:, perm]


def partner_task(
    batch: int,
    n_pairs: int,
    n_payloads: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A task that needs *content* attention: find the other token with the same symbol, report its payload.

    Each sequence holds :math:`2m` tokens: the symbols :math:`0, \dots, m-1` twice each, in random order,
    each with an independent uniform payload in :math:`0, \dots, P-1`; token id = symbol :math:`\cdot P` +
    payload. The target at position :math:`i` is the payload of its partner (the other position with the
    same symbol), so where to look depends on the tokens, not on the positions.

    Parameters
    ----------
    batch : int
        Number of sequences.
    n_pairs : int
        :math:`m`; the length is :math:`2m` and the vocabulary :math:`mP`.
    n_payloads : int
        :math:`P`, the number of classes.
    generator : torch.Generator, optional
        Source of randomness (its device is used unless ``device`` is given).
    device : torch.device or str, optional
        Where to build the tensors.

    Returns
    -------
    tuple of torch.Tensor
        Tokens ``x`` and targets ``y``, both ``(batch, 2m)`` int64.

    Notes
    -----
    Chapter: ``notebooks/synthesizer.ipynb``.
    """
    batch = check_int(batch, "batch", low=1)
    m = check_int(n_pairs, "n_pairs", low=1)
    p = check_int(n_payloads, "n_payloads", low=1)
    check_generator(generator)
    if device is None and generator is not None:
        device = generator.device
    n = 2 * m
    sym = torch.argsort(torch.rand(batch, n, generator=generator, device=device), dim=1) % m
    pay = torch.randint(0, p, (batch, n), generator=generator, device=device)
    same = (sym[:, :, None] == sym[:, None, :]) & ~torch.eye(n, dtype=torch.bool, device=sym.device)
    partner = same.to(torch.int64).argmax(dim=-1)
    return sym * p + pay, torch.gather(pay, 1, partner)


class SequenceTagger(nn.Module):
    r"""Token + learned position embeddings, a body, and a linear read-out per position.

    .. math:: e_i = E[x_i] + p_i, \qquad h = e + \operatorname{body}(e) \ (\text{or } \operatorname{body}(e)), \qquad
       \text{logits}_i = h_i W + c

    Parameters
    ----------
    vocab : int
        Number of token ids.
    n_classes : int
        Number of output classes per position.
    max_len : int
        Longest sequence.
    d_model : int
        Embedding width.
    body : torch.nn.Module
        Maps ``(..., n, d_model)`` to ``(..., n, d_model)`` (an attention layer, an encoder).
    residual : bool
        Add the embeddings to the body's output (for a bare attention layer; an encoder has its own).
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapters: ``notebooks/synthesizer.ipynb``, ``notebooks/realformer.ipynb``.
    """

    def __init__(
        self,
        vocab: int,
        n_classes: int,
        max_len: int,
        d_model: int,
        body: nn.Module,
        residual: bool = True,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        vocab = check_int(vocab, "vocab", low=1)
        n_classes = check_int(n_classes, "n_classes", low=1)
        self.max_len = check_int(max_len, "max_len", low=1)
        d_model = check_int(d_model, "d_model", low=1)
        if not isinstance(body, nn.Module):
            raise TypeError(f"body must be a torch.nn.Module, got {type(body).__name__}")
        self.residual = _check_bool(residual, "residual")
        self.embed = nn.Embedding(vocab, d_model, device=device, dtype=dtype)
        self.pos = nn.Embedding(self.max_len, d_model, device=device, dtype=dtype)
        self.body = body
        self.head = nn.Linear(d_model, n_classes, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(..., n, n_classes)`` for token ids ``x`` of shape ``(..., n)``."""
        check_tensor(x, "x", min_dim=1)
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            raise TypeError(f"x must hold integer token ids, got {x.dtype}")
        n = x.shape[-1]
        if n > self.max_len:
            raise ValueError(f"x has length {n}, longer than max_len={self.max_len}")
        e = self.embed(x) + self.pos.weight[:n]
        h = self.body(e)
        return self.head(e + h if self.residual else h)


def train_tagger(
    model: nn.Module,
    sample,
    steps: int,
    batch: int,
    lr: float = 1e-2,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    r"""Train a per-position classifier with Adam on fresh batches; report its curve and held-out score.

    Minimises the mean cross-entropy :math:`-\frac{1}{|T|}\sum_{(b,i) \in T} \log p_\theta(y_{bi} \mid x_b)` over
    the targets :math:`T` (entries equal to ``-100`` are ignored).

    Parameters
    ----------
    model : torch.nn.Module
        Maps token ids ``(batch, n)`` to logits ``(batch, n, classes)``.
    sample : callable
        ``sample(batch) -> (x, y)``, a fresh training batch each call.
    steps : int
        Number of optimiser steps.
    batch : int
        Sequences per step.
    lr : float
        Adam's learning rate.
    eval_data : tuple of torch.Tensor, optional
        Held-out ``(x, y)`` scored after training.

    Returns
    -------
    dict
        ``"losses"`` (a float tensor of the training losses), and with ``eval_data`` also ``"eval_loss"``
        (mean cross-entropy in nats) and ``"eval_accuracy"`` (fraction of targets predicted by the arg-max).

    Notes
    -----
    Chapters: ``notebooks/synthesizer.ipynb``, ``notebooks/realformer.ipynb``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(sample):
        raise TypeError("sample must be callable: sample(batch) -> (x, y)")
    steps = check_int(steps, "steps", low=0)
    batch = check_int(batch, "batch", low=1)
    lr = check_float(lr, "lr", low=0.0, low_open=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)  # one kernel per op for all tensors
    losses = []
    model.train()
    for _ in range(steps):
        x, y = sample(batch)
        loss = nn.functional.cross_entropy(model(x).flatten(0, -2), y.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    out = {"losses": torch.stack(losses) if losses else torch.empty(0)}
    if eval_data is not None:
        x, y = eval_data
        model.eval()
        with torch.no_grad():
            logits = model(x).flatten(0, -2)
            y = y.flatten()
            keep = y != -100
            out["eval_loss"] = nn.functional.cross_entropy(logits[keep], y[keep]).item()
            out["eval_accuracy"] = (logits[keep].argmax(-1) == y[keep]).to(torch.float64).mean().item()
    return out
