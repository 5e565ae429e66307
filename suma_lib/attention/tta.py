r"""T-TA: a Transformer that predicts every token from all the others in one pass
(arXiv:2004.08097).

A masked language model (BERT) estimates :math:`p(x_i \mid x_{\setminus i})` for the few positions it
masked; the pseudo-log-likelihood :math:`\sum_i \log p(x_i \mid x_{\setminus i})` takes :math:`n` forward
passes. T-TA (Transformer-based Text Autoencoder) gets all :math:`n` conditionals from one pass with three
changes to the encoder:

1. the queries of the first layer are the position embeddings alone (no token content);
2. the attention mask removes the diagonal, :math:`M_{ij} = [i \ne j]`, so query :math:`i` never reads
   key/value :math:`i`;
3. every layer takes its keys and values from the *original* token embeddings; only the queries are
   carried from layer to layer.

By induction the hidden state at position :math:`i` is a function of the tokens :math:`x_j, j \ne i` only:
the queries start token-free, attention at :math:`i` reads only :math:`j \ne i`, and the residual
connections, layer norms and feed-forward blocks act position by position. Stacking naïvely (keys and
values from the previous layer's output) breaks this in the second layer, because the state at
:math:`j \ne i` has read token :math:`i` in the first.

Chapter: notebooks/faster-mlm.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_device, check_float, check_int, check_tensor
from ..tasks import markov_leave_one_out, markov_sample
from ..training import train
from . import _core
from ._core import check_same_device, check_tokens
from .multihead import MultiHeadAttention

__all__ = [
    "DiagonalFreeAttention",
    "TTAEncoder",
    "TTALayer",
    "diagonal_free_mask",
    "markov_conditionals",
    "masked_pseudo_log_likelihood",
    "pseudo_log_likelihood",
    "sample_markov_chain",
    "train_tta",
]

STACKINGS = ("tta", "naive")


def diagonal_free_mask(n: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    r"""The mask :math:`M_{ij} = [i \ne j]`: every query attends to every key except its own position.

    Parameters
    ----------
    n : int
        Sequence length.
    device : torch.device or str, optional
        Where the mask is built.

    Returns
    -------
    torch.Tensor, shape ``(n, n)``, dtype ``torch.bool``
        ``True`` where attention is allowed. For ``n = 1`` the single row is empty and the attention
        output there is zero (see :func:`~suma_lib.attention.exact.softmax_attention`).
    """
    n = check_int(n, "n", low=0)
    return ~torch.eye(n, dtype=torch.bool, device=check_device(device))


class DiagonalFreeAttention(MultiHeadAttention):
    r"""Multi-head attention in which query :math:`i` never reads key :math:`i` (the
    mask :math:`[i \ne j]`).

    A :class:`~suma_lib.attention.multihead.MultiHeadAttention` whose structural mask (:meth:`get_mask`)
    is :func:`diagonal_free_mask`; any ``mask`` passed to the forward is combined with it. The query and
    key sequences must have the same length (position :math:`j` of the keys is position :math:`j` of the
    queries). Same constructor as the base class.

    Notes
    -----
    Chapter: notebooks/faster-mlm.md.
    """

    def get_mask(self, n: int, m: int, device: torch.device) -> torch.Tensor:
        """:func:`diagonal_free_mask` of the length ``n`` (``m`` must equal it)."""
        if n != m:
            raise ValueError(f"memory must have the query's length {n}, got {m}")
        return diagonal_free_mask(n, device=device)


class TTALayer(nn.Module):
    r"""One T-TA block: diagonal-free multi-head attention from ``query`` to ``memory``, then a feed-forward.

    .. math:: h = \operatorname{LN}\big(q + \operatorname{MHA}(q, m, m; M)\big), \qquad
              \text{out} = \operatorname{LN}\big(h + W_2\,\operatorname{GELU}(W_1 h)\big), \qquad M_{ij} = [i \ne j]

    (post-norm, as in BERT). Everything except the attention acts on each position separately.

    Parameters
    ----------
    embed_dim : int
        Width of queries, memory and output.
    num_heads : int
        Attention heads; must divide ``embed_dim``.
    ff_dim : int, optional
        Hidden width of the feed-forward block, ``4 * embed_dim`` by default.
    dropout : float
        Dropout after the attention and the feed-forward block (position-wise, so it never mixes positions).
    device, dtype
        Passed to the parameters' constructors.

    Notes
    -----
    Chapter: notebooks/faster-mlm.md.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ff_dim: int | None = None,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        embed_dim = check_int(embed_dim, "embed_dim", low=1)
        ff_dim = 4 * embed_dim if ff_dim is None else check_int(ff_dim, "ff_dim", low=1)
        dropout = check_float(dropout, "dropout", low=0.0, high=1.0, high_open=True)
        kw = {"device": device, "dtype": dtype}
        self.attn = DiagonalFreeAttention(embed_dim, num_heads, **kw)
        self.norm1 = _core.LayerNorm(embed_dim, **kw)
        self.ff = nn.Sequential(
            nn.Linear(embed_dim, ff_dim, **kw), nn.GELU(), nn.Linear(ff_dim, embed_dim, **kw)
        )
        self.norm2 = _core.LayerNorm(embed_dim, **kw)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the block.

        Parameters
        ----------
        query : torch.Tensor, shape ``(..., n, embed_dim)``
        memory : torch.Tensor, shape ``(..., n, embed_dim)``
            Keys and values; position :math:`j` of ``memory`` is the same position as row :math:`j` of
            ``query`` (the diagonal is defined by it).
        mask : torch.Tensor, optional
            Extra boolean mask (``True`` = may attend) broadcastable to ``(..., n, n)``, e.g. padding;
            it is combined with the diagonal-free mask.

        Returns
        -------
        torch.Tensor, shape ``(..., n, embed_dim)``
        """
        check_tensor(query, "query", min_dim=2, floating=True)
        check_tensor(memory, "memory", min_dim=2, floating=True)
        if memory.shape[-2] != query.shape[-2]:
            raise ValueError(
                f"memory must have the query's length {query.shape[-2]}, got {memory.shape[-2]}"
            )
        h = self.norm1(query + self.drop(self.attn(query, memory, memory, mask=mask)))
        return self.norm2(h + self.drop(self.ff(h)))


class TTAEncoder(nn.Module):
    r"""A T-TA language autoencoder: logits of :math:`p(x_i \mid x_{\setminus i})` at every position at once.

    With token embeddings :math:`e(x_j)` and learned position embeddings :math:`p_j`:

    .. math:: m_j = \operatorname{LN}(e(x_j) + p_j), \qquad h^{(0)}_i = \operatorname{LN}'(p_i),
       \qquad
              h^{(\ell)} = \text{Layer}_\ell\big(h^{(\ell-1)}, m\big), \qquad
              \text{logits}_i = W h^{(L)}_i + b.

    With ``stacking="naive"`` layers after the first take their keys and values from the previous output,
    :math:`h^{(\ell)} = \text{Layer}_\ell(h^{(\ell-1)}, h^{(\ell-1)})`: a plain encoder with a
    diagonal-free mask, which leaks token :math:`i` back to position :math:`i` from the second layer on.

    Parameters
    ----------
    vocab_size : int
        Number of token ids.
    max_len : int
        Longest sequence (number of position embeddings).
    embed_dim, num_heads, num_layers : int
        Width, heads per layer and depth.
    ff_dim : int, optional
        Feed-forward width, ``4 * embed_dim`` by default.
    dropout : float
        Dropout inside each layer.
    stacking : {"tta", "naive"}
        Where the keys and values of layers 2, 3, ... come from (see above).
    device, dtype
        Passed to the parameters' constructors.

    Notes
    -----
    Chapter: notebooks/faster-mlm.md.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        embed_dim: int,
        num_heads: int,
        num_layers: int,
        ff_dim: int | None = None,
        dropout: float = 0.0,
        stacking: str = "tta",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.vocab_size = check_int(vocab_size, "vocab_size", low=1)
        self.max_len = check_int(max_len, "max_len", low=1)
        embed_dim = check_int(embed_dim, "embed_dim", low=1)
        num_layers = check_int(num_layers, "num_layers", low=1)
        self.stacking = check_choice(stacking, "stacking", STACKINGS)
        kw = {"device": device, "dtype": dtype}
        self.token_embedding = nn.Embedding(vocab_size, embed_dim, **kw)
        self.position_embedding = nn.Embedding(max_len, embed_dim, **kw)
        self.memory_norm = _core.LayerNorm(embed_dim, **kw)
        self.query_norm = _core.LayerNorm(embed_dim, **kw)
        self.layers = nn.ModuleList(
            TTALayer(embed_dim, num_heads, ff_dim, dropout, **kw) for _ in range(num_layers)
        )
        self.head = nn.Linear(embed_dim, vocab_size, **kw)

    def extra_repr(self) -> str:
        """The stacking mode, shown by ``repr``."""
        return f"stacking={self.stacking!r}"

    def forward(
        self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of every position given all the other tokens.

        Parameters
        ----------
        tokens : torch.Tensor, shape ``(..., n)``, integer
            Token ids in ``[0, vocab_size)``, ``n <= max_len``.
        padding_mask : torch.Tensor, shape ``(..., n)``, optional
            Boolean, ``True`` at real tokens; padded positions are never attended to.

        Returns
        -------
        torch.Tensor, shape ``(..., n, vocab_size)``
        """
        check_tokens(tokens, "tokens", self.vocab_size)
        check_same_device(tokens, self.head.weight, "tokens", "the model's parameters")
        return self.forward_embeddings(self.token_embedding(tokens), padding_mask)

    def forward_embeddings(
        self, token_vectors: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Like :meth:`forward`, from the token embeddings :math:`e(x_j)` (e.g. to differentiate through them).

        Parameters
        ----------
        token_vectors : torch.Tensor, shape ``(..., n, embed_dim)``
            One vector per token; position embeddings are added here.
        padding_mask : torch.Tensor, shape ``(..., n)``, optional
            Boolean, ``True`` at real tokens.

        Returns
        -------
        torch.Tensor, shape ``(..., n, vocab_size)``
        """
        check_tensor(token_vectors, "token_vectors", min_dim=2, floating=True)
        check_same_device(
            token_vectors, self.head.weight, "token_vectors", "the model's parameters"
        )
        n, width = token_vectors.shape[-2:]
        if width != self.token_embedding.embedding_dim:
            raise ValueError(
                f"token_vectors must have last dimension {self.token_embedding.embedding_dim}, "
                f"got {width}"
            )
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len={self.max_len}")
        mask = None
        if padding_mask is not None:
            check_tensor(padding_mask, "padding_mask", min_dim=1)
            if padding_mask.dtype != torch.bool or padding_mask.shape[-1] != n:
                raise ValueError(
                    f"padding_mask must be boolean with last dimension {n}, "
                    f"got {padding_mask.dtype} {tuple(padding_mask.shape)}"
                )
            mask = padding_mask[..., None, :]
        pos = self.position_embedding(torch.arange(n, device=token_vectors.device))
        memory = self.memory_norm(token_vectors + pos)
        h = self.query_norm(pos).expand_as(memory)  # queries: positions only, no token content
        for index, layer in enumerate(self.layers):
            keys_values = memory if (self.stacking == "tta" or index == 0) else h
            h = layer(h, keys_values, mask)
        return self.head(h)


def pseudo_log_likelihood(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    r"""The pseudo-log-likelihood :math:`\sum_i \log p(x_i \mid x_{\setminus i})` from one pass's logits.

    Parameters
    ----------
    logits : torch.Tensor, shape ``(..., n, V)``
        Position :math:`i` holds the (unnormalised) log-probabilities of :math:`x_i` given the rest, as a
        :class:`TTAEncoder` produces in a single forward pass.
    tokens : torch.Tensor, shape ``(..., n)``, integer
        The observed tokens.

    Returns
    -------
    torch.Tensor, shape ``(...)``

    Notes
    -----
    Chapter: notebooks/faster-mlm.md.
    """
    check_tensor(logits, "logits", min_dim=2, floating=True)
    check_tokens(tokens, "tokens", logits.shape[-1])
    check_same_device(tokens, logits, "tokens", "logits")
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be tokens' shape {tuple(tokens.shape)} plus (V,)"
        )
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)


def masked_pseudo_log_likelihood(
    model: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, mask_token: int
) -> torch.Tensor:
    r"""The pseudo-log-likelihood the MLM way: :math:`n` forward passes, the :math:`i`-th with :math:`x_i` masked.

    .. math:: \operatorname{PLL}(x) = \sum_{i=1}^n \log p_\theta\big(x_i \mid x_1, \dots, x_{i-1},
              \texttt{[MASK]}, x_{i+1}, \dots, x_n\big)

    Parameters
    ----------
    model : callable
        Maps tokens ``(..., n)`` to logits ``(..., n, V)``; it is called ``n`` times.
    tokens : torch.Tensor, shape ``(..., n)``, integer
    mask_token : int
        The id written over :math:`x_i` in pass :math:`i`.

    Returns
    -------
    torch.Tensor, shape ``(...)``

    Notes
    -----
    For a :class:`TTAEncoder` output :math:`i` does not depend on :math:`x_i`, so this equals
    :func:`pseudo_log_likelihood` of a single pass. Chapter: notebooks/faster-mlm.md.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    check_tokens(tokens, "tokens")
    mask_token = check_int(mask_token, "mask_token", low=0)
    total = None
    for i in range(tokens.shape[-1]):
        masked = tokens.clone()
        masked[..., i] = mask_token
        logp = torch.log_softmax(model(masked)[..., i, :], dim=-1)
        term = logp.gather(-1, tokens[..., i : i + 1]).squeeze(-1)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("tokens must hold at least one position")
    return total


def train_tta(
    model: nn.Module,
    train_tokens: torch.Tensor,
    steps: int,
    *,
    batch_size: int = 64,
    lr: float = 3e-3,
    generator: torch.Generator | None = None,
) -> list[float]:
    r"""Train a :class:`TTAEncoder` with Adam on the autoencoding loss of *every* position.

    .. math:: \mathcal{L} = -\frac{1}{n}\sum_{i=1}^n \log p_\theta(x_i \mid x_{\setminus i})

    Unlike BERT's MLM, which scores about 15 % of the positions of each sequence, each pass trains all
    :math:`n` of them.

    Parameters
    ----------
    model : torch.nn.Module
        Maps tokens ``(batch, n)`` to logits ``(batch, n, V)``.
    train_tokens : torch.Tensor, shape ``(N, n)``, integer
        The training set; each step draws ``batch_size`` rows with replacement.
    steps : int
        Number of optimiser steps.
    batch_size : int
        Sequences per step.
    lr : float
        Adam's learning rate.
    generator : torch.Generator, optional
        Draws the mini-batches (on ``train_tokens``' device).

    Returns
    -------
    list of float
        The training loss (nats per token) at every step.

    Notes
    -----
    Chapter: notebooks/faster-mlm.md.
    """
    check_tokens(train_tokens, "train_tokens", min_dim=2)
    lr = check_float(lr, "lr", low=0.0, low_open=True)

    def autoencode(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(batch).flatten(0, -2), batch.flatten())

    history = train(
        model,
        train_tokens,
        steps,
        lambda params: torch.optim.Adam(params, lr=lr),
        loss=autoencode,
        batch_size=batch_size,
        generator=generator,
    )
    model.eval()
    return history["loss"].tolist()


def sample_markov_chain(
    transition: torch.Tensor,
    initial: torch.Tensor,
    num_sequences: int,
    length: int,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Draw sequences from a Markov
    chain: :math:`x_1 \sim \pi_0`, :math:`x_{t+1} \sim P_{x_t,\cdot}`.

    The former argument order ``(transition, initial)`` of :func:`suma_lib.tasks.markov_sample`, which
    this wraps.

    Parameters
    ----------
    transition : torch.Tensor, shape ``(V, V)``
        Row-stochastic matrix :math:`P_{ab} = p(x_{t+1} = b \mid x_t = a)`.
    initial : torch.Tensor, shape ``(V,)``
        Distribution :math:`\pi_0` of the first token.
    num_sequences, length : int
        Output shape.
    generator : torch.Generator, optional
        Source of randomness (on ``transition``'s device).

    Returns
    -------
    torch.Tensor, shape ``(num_sequences, length)``, ``torch.long``, on ``transition``'s device

    Notes
    -----
    The synthetic task of notebooks/faster-mlm.md.
    """
    return markov_sample(initial, transition, num_sequences, length, generator)


def markov_conditionals(
    tokens: torch.Tensor, transition: torch.Tensor, initial: torch.Tensor
) -> torch.Tensor:
    r"""The exact :math:`p(x_i = a \mid x_{\setminus i})` of a Markov chain, for every position at once.

    The former argument order ``(tokens, transition, initial)`` of
    :func:`suma_lib.tasks.markov_leave_one_out`, which this wraps (see it for the formula):

    .. math:: p(x_i = a \mid x_{\setminus i}) \propto \pi_{i-1 \to a}\; P_{a, x_{i+1}}

    Parameters
    ----------
    tokens : torch.Tensor, shape ``(..., n)``, integer, ids in ``[0, V)``
    transition, initial : torch.Tensor, shapes ``(V, V)`` and ``(V,)``

    Returns
    -------
    torch.Tensor, shape ``(..., n, V)``
        Rows sum to one; a :class:`ValueError` for ids out of range or a sequence of probability zero.

    Notes
    -----
    Chapter: notebooks/faster-mlm.md.
    """
    return markov_leave_one_out(tokens, initial, transition)
