r"""One small training loop for the book's small models.

:func:`train` minimises a loss with a torch optimiser over ``steps`` mini-batches and returns the history:

.. math:: \theta_{t+1} = \operatorname{opt}\bigl(\theta_t, \nabla_\theta \mathcal{L}(\theta_t;
   B_t)\bigr),
   \qquad t = 0, \dots, T-1,

where the batches :math:`B_t` come from a sampler (a function that returns a fresh batch), from an
iterable of batches, or are drawn with replacement from a dataset of tensors with the caller's
``generator``. The loop itself never draws from torch's global random state (a model with dropout still
does, as in any torch code), so a caller's seeded state is left as it was. A progress bar is shown only
for long runs in a terminal (never in CI, in papermill or in a notebook unless asked for).

Chapters: notebooks/synthesizer.md, notebooks/realformer.md,
notebooks/faster-mlm.md,
notebooks/self-orthogonality.md.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import check_float, check_generator, check_int
from .attention._core import check_bool, check_same_device, check_tokens, former_names

__all__ = ["SequenceTagger", "default_loss", "train", "train_tagger"]

#: Runs with at least this many steps get a progress bar (in a terminal, when ``progress=None``).
LONG_RUN = 1000


def default_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    r"""The loss of a batch ``(x, y)``: cross-entropy for integer targets, mean squared error otherwise.

    .. math:: \mathcal{L} = -\frac{1}{|T|}\sum_{t \in T} \log \operatorname{softmax}(f(x))_{t, y_t}
       \quad\text{or}\quad \mathcal{L} = \operatorname{mean}\,(f(x) - y)^2

    For integer targets the model's output is ``(..., classes)`` with ``y`` of shape ``(...)``; entries of
    ``y`` equal to ``-100`` are ignored (:func:`torch.nn.functional.cross_entropy`'s convention).
    """
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError("the default loss needs batches (x, y); pass loss=... for other batches")
    x, y = batch
    out = model(x)
    if y.is_floating_point():
        return F.mse_loss(out, y)
    return F.cross_entropy(out.flatten(0, -2), y.flatten(), ignore_index=-100)


class _Progress:
    """A one-line progress report on stderr, refreshed at most twice a second."""

    def __init__(self, steps: int) -> None:
        self.steps, self.last = steps, 0.0

    def update(self, step: int, loss: torch.Tensor) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and step < self.steps:
            return
        self.last = now
        width = 30
        done = width * step // max(self.steps, 1)
        sys.stderr.write(
            f"\r[{'#' * done}{'.' * (width - done)}] {step}/{self.steps} loss {loss.item():.4g}"
        )
        if step == self.steps:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _batches(
    data: Any, batch_size: int | None, generator: torch.Generator | None
) -> Callable[[], Any]:
    """A function returning the next batch, whatever form ``data`` has."""
    if isinstance(data, torch.Tensor) or (
        isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data)
    ):
        tensors = (data,) if isinstance(data, torch.Tensor) else data
        size = tensors[0].shape[0] if tensors[0].dim() else 0
        if size == 0 or any(t.dim() == 0 or t.shape[0] != size for t in tensors):
            raise ValueError("a dataset must be tensors that share a non-empty first dimension")
        if batch_size is None:
            raise TypeError("batch_size is required when data is a dataset of tensors")
        device = tensors[0].device

        def draw() -> Any:
            rows = torch.randint(size, (batch_size,), device=device, generator=generator)
            picked = tuple(t[rows] for t in tensors)
            return picked[0] if isinstance(data, torch.Tensor) else picked

        return draw
    if callable(data):
        return data
    if isinstance(data, Iterable):
        state = {"it": iter(data)}

        def step() -> Any:
            try:
                return next(state["it"])
            except StopIteration:  # start the iterable again (an epoch ended)
                state["it"] = iter(data)
                return next(state["it"])

        return step
    raise TypeError(
        "data must be a callable returning a batch, an iterable of batches or a dataset of "
        "tensors, "
        f"got {type(data).__name__}"
    )


def train(
    model: nn.Module,
    data: Any,
    steps: int,
    optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None = None,
    *,
    loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    lr: float = 1e-3,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    max_grad_norm: float | None = None,
    eval_fn: Callable[[nn.Module], Any] | None = None,
    eval_every: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    r"""Train ``model`` for ``steps`` optimiser steps and return the history.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; it is in training mode during the loop and back in its former mode afterwards.
    data : callable, iterable or tuple of torch.Tensor
        Where the batches come from: a function ``data() -> batch`` (a fresh batch each call, e.g.
        ``lambda: task(64, generator=g)``), an iterable of batches (started again when it runs out), or a
        dataset, a tensor or a tuple of tensors sharing the first dimension, from which each step draws
        ``batch_size`` rows with replacement using ``generator``.
    steps : int
        Number of optimiser steps (0 is allowed: nothing is trained).
    optimizer : torch.optim.Optimizer or callable, optional
        An optimiser over the model's parameters, or a factory ``optimizer(params)``; Adam with
        learning rate ``lr`` by default.
    loss : callable, optional
        ``loss(model, batch) -> scalar tensor``; :func:`default_loss` by default (cross-entropy or mean
        squared error on ``(x, y)``).
    lr : float
        Learning rate of the default optimiser.
    batch_size : int, optional
        Rows per step when ``data`` is a dataset.
    generator : torch.Generator, optional
        Draws the rows of a dataset (on the dataset's device); the global random state is never used.
    max_grad_norm : float, optional
        Clip the gradients' total norm to this value before each step.
    eval_fn : callable, optional
        ``eval_fn(model) -> value`` (a float, a tensor, a dict...), called in ``eval`` mode without
        gradients every ``eval_every`` steps (if given) and after the last step.
    eval_every : int, optional
        Evaluation period in steps.
    progress : bool, optional
        Show a progress bar on stderr. ``None`` (default): only for runs of at least
        ``LONG_RUN`` (1000) steps with stderr a terminal and no ``CI`` environment variable (so chapters run
        by papermill are silent).

    Returns
    -------
    dict
        ``"loss"``: the training loss of every step (a 1-D CPU tensor, in the loss's dtype);
        ``"eval"``: a list of ``(step, value)`` pairs (empty without ``eval_fn``).

    Notes
    -----
    Chapters: notebooks/synthesizer.md, notebooks/realformer.md,
    notebooks/faster-mlm.md, notebooks/self-orthogonality.md.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    steps = check_int(steps, "steps", low=0)
    lr = check_float(lr, "lr", low=0.0, low_open=True)
    batch_size = None if batch_size is None else check_int(batch_size, "batch_size", low=1)
    check_generator(generator)
    if max_grad_norm is not None:
        max_grad_norm = check_float(max_grad_norm, "max_grad_norm", low=0.0, low_open=True)
    eval_every = None if eval_every is None else check_int(eval_every, "eval_every", low=1)
    for name, fn in (("loss", loss), ("eval_fn", eval_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool or None, got {type(progress).__name__}")
    next_batch = _batches(data, batch_size, generator)
    loss = default_loss if loss is None else loss
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        if not callable(optimizer):
            raise TypeError(
                "optimizer must be a torch.optim.Optimizer or a factory, got "
                f"{type(optimizer).__name__}"
            )
        optimizer = optimizer(model.parameters())
    if progress is None:
        progress = steps >= LONG_RUN and sys.stderr.isatty() and "CI" not in os.environ
    bar = _Progress(steps) if progress else None
    was_training = model.training
    losses: list[torch.Tensor] = []
    history: dict[str, Any] = {"eval": []}

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            history["eval"].append((step, eval_fn(model)))
        model.train()

    model.train()
    try:
        for step in range(1, steps + 1):
            value = loss(model, next_batch())
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise TypeError("loss must return a tensor with one element")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            losses.append(value.detach().reshape(()))
            if bar is not None:
                bar.update(step, losses[-1])
            if (
                eval_fn is not None
                and eval_every is not None
                and step % eval_every == 0
                and step < steps
            ):
                evaluate(step)
        if eval_fn is not None:
            evaluate(steps)
    finally:
        model.train(was_training)
    history["loss"] = torch.stack(losses).cpu() if losses else torch.empty(0)
    return history


# ------------------------------------------------------------------ a per-position model and its
# loop
class SequenceTagger(nn.Module):
    r"""Token + learned position embeddings, a body, and a linear read-out per position.

    .. math:: e_i = E[x_i] + p_i, \qquad h = e + \operatorname{body}(e) \ (\text{or }
       \operatorname{body}(e)), \qquad
       \text{logits}_i = h_i W + c

    Parameters
    ----------
    vocab : int
        Number of token ids.
    n_classes : int
        Number of output classes per position.
    max_len : int
        Longest sequence.
    embed_dim : int
        Embedding width.
    body : torch.nn.Module
        Maps ``(..., n, embed_dim)`` to ``(..., n, embed_dim)`` (an attention layer, an encoder).
    residual : bool
        Add the embeddings to the body's output (for a bare attention layer; an encoder has its own).
    device, dtype : optional
        Factory arguments.

    Notes
    -----
    Chapters: notebooks/synthesizer.md, notebooks/realformer.md
    """

    @former_names(d_model="embed_dim")
    def __init__(
        self,
        vocab: int,
        n_classes: int,
        max_len: int,
        embed_dim: int,
        body: nn.Module,
        residual: bool = True,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.vocab = vocab = check_int(vocab, "vocab", low=1)
        n_classes = check_int(n_classes, "n_classes", low=1)
        self.max_len = check_int(max_len, "max_len", low=1)
        embed_dim = check_int(embed_dim, "embed_dim", low=1)
        if not isinstance(body, nn.Module):
            raise TypeError(f"body must be a torch.nn.Module, got {type(body).__name__}")
        self.residual = check_bool(residual, "residual")
        self.embed = nn.Embedding(vocab, embed_dim, device=device, dtype=dtype)
        self.pos = nn.Embedding(self.max_len, embed_dim, device=device, dtype=dtype)
        self.body = body
        self.head = nn.Linear(embed_dim, n_classes, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(..., n, n_classes)`` for token ids ``x`` of shape ``(..., n)``."""
        check_tokens(x, "x", self.vocab)
        check_same_device(x, self.embed.weight, "x", "the model's parameters")
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

    Minimises the mean
    cross-entropy :math:`-\frac{1}{|T|}\sum_{(b,i) \in T} \log p_\theta(y_{bi} \mid x_b)` over
    the targets :math:`T` (entries equal to ``-100`` are ignored). A thin wrapper of
    :func:`suma_lib.training.train` (Adam, :func:`~suma_lib.training.default_loss`).

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
        ``"losses"`` (a float CPU tensor of the training losses), and with ``eval_data`` also ``"eval_loss"``
        (mean cross-entropy in nats) and ``"eval_accuracy"`` (fraction of targets predicted by the arg-max).

    Notes
    -----
    Chapters: notebooks/synthesizer.md, notebooks/realformer.md
    """
    if not callable(sample):
        raise TypeError("sample must be callable: sample(batch) -> (x, y)")
    batch = check_int(batch, "batch", low=1)
    lr = check_float(lr, "lr", low=0.0, low_open=True)
    history = train(
        model,
        lambda: sample(batch),
        steps,
        lambda params: torch.optim.Adam(
            params, lr=lr, foreach=True
        ),  # one kernel per op for all tensors
    )
    model.train()
    out = {"losses": history["loss"]}
    if eval_data is not None:
        x, y = eval_data
        model.eval()
        with torch.no_grad():
            logits = model(x).flatten(0, -2)
            y = y.flatten()
            keep = y != -100
            out["eval_loss"] = nn.functional.cross_entropy(logits[keep], y[keep]).item()
            out["eval_accuracy"] = (
                (logits[keep].argmax(-1) == y[keep]).to(torch.float64).mean().item()
            )
    return out
