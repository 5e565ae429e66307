r"""Synthetic tasks for small attention models, with their exact (Bayes-optimal) answers where known.

* :func:`permutation_task` and :func:`partner_task`: tasks that need positional or content attention
  (chapter ``synthesizer``);
* a first-order Markov chain over ``V`` states: :func:`markov_chain` draws
  one, :func:`markov_sample`
  draws sequences from it, :func:`markov_mlm_task` hides some positions (a miniature masked language
  model), :func:`markov_posterior` gives the exact posterior of every position given the visible ones
  (forward-backward) and :func:`markov_leave_one_out` the exact :math:`p(x_i \mid x_{\setminus i})`
  (chapters ``realformer`` and ``faster-mlm``).

Every Markov function takes the chain in one order, ``(initial, transition)``: the distribution
:math:`\pi` of the first state, shape ``(V,)``, then the row-stochastic matrix
:math:`P_{ab} = p(x_{t+1} = b \mid x_t = a)`, shape ``(V, V)``, as :func:`markov_chain` returns them.
(The older :func:`suma_lib.attention.tta.sample_markov_chain`
and :func:`suma_lib.attention.tta.markov_conditionals`
take ``(transition, initial)``; they are thin wrappers of :func:`markov_sample` and
:func:`markov_leave_one_out`.)

Token ids are range-checked: a negative id or one beyond the vocabulary raises a :class:`ValueError`
naming the argument. Randomness comes only from the optional ``generator``.
"""

from __future__ import annotations

import torch

from ._validation import (
    check_device,
    check_dtype,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from .attention._core import check_tokens

__all__ = [
    "markov_chain",
    "markov_leave_one_out",
    "markov_mlm_task",
    "markov_posterior",
    "markov_sample",
    "partner_task",
    "permutation_task",
]

#: The target value that marks a position without a target
#: (``torch.nn.functional.cross_entropy``'s default).
IGNORE = -100


# ---------------------------------------------------------------------------------- attention tasks
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
    Chapter: notebooks/synthesizer.md.
    """
    batch = check_int(batch, "batch", low=1)
    n = check_int(n, "n", low=1)
    vocab = check_int(vocab, "vocab", low=1)
    check_tokens(perm, "perm", n)
    check_generator(generator)
    if perm.shape != (n,):
        raise ValueError(f"perm must be an integer tensor of shape ({n},), got {tuple(perm.shape)}")
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
    each with an independent uniform payload in :math:`0, \dots, P-1`; token id =
    symbol :math:`\cdot P` +
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
    Chapter: notebooks/synthesizer.md.
    """
    batch = check_int(batch, "batch", low=1)
    m = check_int(n_pairs, "n_pairs", low=1)
    p = check_int(n_payloads, "n_payloads", low=1)
    check_generator(generator)
    device = _device(device, generator)
    n = 2 * m
    sym = torch.argsort(torch.rand(batch, n, generator=generator, device=device), dim=1) % m
    pay = torch.randint(0, p, (batch, n), generator=generator, device=device)
    same = (sym[:, :, None] == sym[:, None, :]) & ~torch.eye(n, dtype=torch.bool, device=sym.device)
    partner = same.to(torch.int64).argmax(dim=-1)
    return sym * p + pay, torch.gather(pay, 1, partner)


def _device(device, generator: torch.Generator | None) -> torch.device | None:
    device = check_device(device)
    if device is None and generator is not None:
        return generator.device
    return device


# ------------------------------------------------------------------------------------ Markov chains
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
    Chapter: notebooks/realformer.md.
    """
    v = check_int(n_states, "n_states", low=1)
    beta = check_float(sharpness, "sharpness", low=0.0)
    check_generator(generator)
    dtype = check_dtype(dtype, allow_none=False)
    g = torch.randn(v, v, generator=generator, device=_device(device, generator), dtype=dtype)
    return torch.full((v,), 1.0 / v, device=g.device, dtype=dtype), torch.softmax(beta * g, dim=-1)


def _check_chain(initial: torch.Tensor, transition: torch.Tensor) -> int:
    """Validate a chain ``(initial (V,), transition (V, V))``, both stochastic; return ``V``."""
    check_tensor(initial, "initial", min_dim=1, floating=True, finite=True)
    check_tensor(transition, "transition", min_dim=2, floating=True, finite=True)
    v = initial.shape[-1]
    if initial.dim() != 1 or transition.shape != (v, v):
        raise ValueError(
            f"initial must be (V,) and transition (V, V), got {tuple(initial.shape)} and "
            f"{tuple(transition.shape)}"
        )
    if initial.dtype != transition.dtype or initial.device != transition.device:
        raise TypeError(
            "initial and transition must share dtype and device, got "
            f"{initial.dtype}/{initial.device} "
            f"and {transition.dtype}/{transition.device}"
        )
    if transition.device.type != "meta":
        for name, p in (("initial", initial), ("transition", transition)):
            if bool((p < 0).any()) or not torch.allclose(p.sum(-1), p.new_ones(()), atol=1e-6):
                raise ValueError(f"{name} must be non-negative with rows summing to 1")
    return v


def markov_sample(
    initial: torch.Tensor,
    transition: torch.Tensor,
    batch: int,
    length: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Draw sequences of a Markov chain: :math:`x_0 \sim \pi`, :math:`x_{t+1} \sim P_{x_t,\cdot}`.

    Parameters
    ----------
    initial : torch.Tensor, shape ``(V,)``
        Distribution :math:`\pi` of the first state.
    transition : torch.Tensor, shape ``(V, V)``
        Row-stochastic :math:`P`.
    batch, length : int
        Number and length of the sequences.
    generator : torch.Generator, optional
        Source of randomness (on the chain's device).

    Returns
    -------
    torch.Tensor, shape ``(batch, length)``, ``torch.long``, on the chain's device

    Notes
    -----
    Chapters: notebooks/realformer.md, notebooks/faster-mlm.md.
    """
    v = _check_chain(initial, transition)
    batch = check_int(batch, "batch", low=1)
    length = check_int(length, "length", low=1)
    check_generator(generator)
    x = torch.multinomial(initial.expand(batch, v), 1, replacement=True, generator=generator)
    cols = [x]
    for _ in range(length - 1):
        x = torch.multinomial(transition[x.squeeze(-1)], 1, replacement=True, generator=generator)
        cols.append(x)
    return torch.cat(cols, dim=-1)


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
    Chapter: notebooks/realformer.md.
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
    return s.masked_fill(hidden, v), s.masked_fill(~hidden, IGNORE)


_IMPOSSIBLE = "{name} has a position with no possible value under the chain (probability zero)"


def _normalise(p: torch.Tensor, name: str) -> torch.Tensor:
    """``p`` divided by its sum over the last axis; a :class:`ValueError` where that sum is zero."""
    total = p.sum(-1, keepdim=True)
    if p.device.type != "meta" and bool((total <= 0).any()):
        raise ValueError(_IMPOSSIBLE.format(name=name))
    return p / total


def markov_posterior(
    x: torch.Tensor, initial: torch.Tensor, transition: torch.Tensor
) -> torch.Tensor:
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
        Inputs ``(batch, n)`` from :func:`markov_mlm_task`: ids in ``[0, V]``, ``V`` = hidden.
    initial, transition : torch.Tensor
        The chain.

    Returns
    -------
    torch.Tensor, shape ``(batch, n, V)``
        Posterior probabilities (rows sum to one), in the chain's dtype.

    Raises
    ------
    ValueError
        If an id lies outside ``[0, V]``, or the visible states have probability zero under the chain.

    Notes
    -----
    Chapter: notebooks/realformer.md.
    """
    v = _check_chain(initial, transition)
    check_tokens(x, "x", v + 1, min_dim=2)
    if x.dim() != 2:
        raise ValueError(f"x must have shape (batch, n), got {tuple(x.shape)}")
    if x.device != transition.device:
        raise TypeError(f"x must be on the chain's device {transition.device}, got {x.device}")
    ev = torch.nn.functional.one_hot(x, v + 1)[..., :v].to(transition.dtype)
    ev = torch.where((x == v)[..., None], torch.ones_like(ev), ev)  # hidden: every state possible
    n = x.shape[1]
    if n == 0:  # no positions: an empty posterior
        return ev
    alpha = [_normalise(initial * ev[:, 0], "x")]
    for t in range(1, n):
        alpha.append(_normalise((alpha[-1] @ transition) * ev[:, t], "x"))
    beta = [torch.ones_like(alpha[0])]
    for t in range(n - 2, -1, -1):
        beta.insert(0, _normalise((ev[:, t + 1] * beta[0]) @ transition.T, "x"))
    return _normalise(torch.stack(alpha, 1) * torch.stack(beta, 1), "x")


def markov_leave_one_out(
    tokens: torch.Tensor, initial: torch.Tensor, transition: torch.Tensor
) -> torch.Tensor:
    r"""The exact :math:`p(x_i = a \mid x_{\setminus i})` of a Markov chain, for every position at once.

    Only the two neighbours matter:

    .. math:: p(x_i = a \mid x_{\setminus i}) \propto \pi_{i-1 \to a}\; P_{a, x_{i+1}},
              \qquad \pi_{i-1\to a} = \begin{cases} \pi(a) & i = 1 \\ P_{x_{i-1}, a} & i >
              1\end{cases}

    (the second factor is 1 at the last position). This is the Bayes-optimal predictor of every token
    from all the others (what a T-TA model can at best approach); it equals :func:`markov_posterior`
    with only position :math:`i` hidden.

    Parameters
    ----------
    tokens : torch.Tensor, shape ``(..., n)``, integer, ids in ``[0, V)``
    initial : torch.Tensor, shape ``(V,)``
    transition : torch.Tensor, shape ``(V, V)``

    Returns
    -------
    torch.Tensor, shape ``(..., n, V)``
        Rows sum to one.

    Raises
    ------
    ValueError
        If an id lies outside ``[0, V)``, or some position has no possible value (the sequence has
        probability zero under the chain).

    Notes
    -----
    Chapter: notebooks/faster-mlm.md.
    """
    v = _check_chain(initial, transition)
    check_tokens(tokens, "tokens", v)
    if tokens.device != transition.device:
        raise TypeError(
            f"tokens must be on the chain's device {transition.device}, got {tokens.device}"
        )
    left = transition[tokens[..., :-1]]  # (..., n-1, V): P[x_{i-1}, a]
    left = torch.cat((initial.expand(*tokens.shape[:-1], 1, v), left), dim=-2)
    right = transition.mT[tokens[..., 1:]]  # (..., n-1, V): P[a, x_{i+1}]
    right = torch.cat((right, right.new_ones(*tokens.shape[:-1], 1, v)), dim=-2)
    return _normalise(left * right, "tokens")
