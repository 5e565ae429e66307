r"""Recomputation (gradient checkpointing) for deep stacks, and activation memory measured exactly.

Training a stack of :math:`n` layers keeps every layer's intermediate activations for the backward
pass: memory :math:`O(n)`. Chen et al. (2016) split the stack into segments of
:math:`k = \lceil\sqrt n\rceil` layers, keep only each segment's input during the forward pass, and
recompute a segment's activations when the backward pass reaches it. Memory is then

.. math:: M(k) \approx \frac{n}{k}\,m_{\text{in}} + k\,m_{\text{layer}},

the segment inputs plus the activations of one segment, minimised near :math:`k = \sqrt{n}` at
:math:`O(\sqrt n)`, for the price of one extra forward pass.

:class:`RecomputeSequential` builds this plan on :func:`torch.utils.checkpoint.checkpoint`
(non-reentrant), like :func:`torch.utils.checkpoint.checkpoint_sequential` (the last segment is
run plainly, since the backward pass needs it at once). :func:`saved_activation_bytes` measures the
memory held for the backward pass deterministically: the bytes of the distinct storages packed
through :func:`torch.autograd.graph.saved_tensors_hooks` (parameters excluded), plus the inputs the
plan's checkpoints keep alive (held by the checkpoint itself, not packed through the hooks).

Chapter: notebooks/recompute.md
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from ._validation import check_int

__all__ = ["segment_length", "segments", "RecomputeSequential", "saved_activation_bytes"]

_RECORDERS: list[list[torch.Tensor]] = []


def segment_length(n: int) -> int:
    r"""The segment length :math:`\lceil\sqrt n\rceil` of the :math:`O(\sqrt n)` plan.

    Parameters
    ----------
    n : int
        Number of layers, at least 1.

    Returns
    -------
    int
        :math:`\lceil\sqrt n\rceil`, computed exactly with integers.

    Chapter: notebooks/recompute.md
    """
    n = check_int(n, "n", low=1)
    r = math.isqrt(n)
    return r if r * r == n else r + 1


def segments(n: int, every: int | None = None) -> list[tuple[int, int]]:
    r"""Split layers ``0..n-1`` into consecutive segments of ``every`` layers (the last may be shorter).

    Parameters
    ----------
    n : int
        Number of layers, at least 1.
    every : int, optional
        Segment length; default :func:`segment_length` (:math:`\lceil\sqrt n\rceil`).

    Returns
    -------
    list of (start, stop)
        Half-open index ranges covering ``0..n-1`` in order.

    Chapter: notebooks/recompute.md
    """
    n = check_int(n, "n", low=1)
    every = segment_length(n) if every is None else check_int(every, "every", low=1)
    return [(s, min(s + every, n)) for s in range(0, n, every)]


class RecomputeSequential(torch.nn.Module):
    r"""Run a stack of layers with a checkpoint at the start of every segment of ``every`` layers.

    During training (gradients enabled) each segment but the last runs under
    :func:`torch.utils.checkpoint.checkpoint` (``use_reentrant=False``): only its input is kept,
    and its activations are recomputed in the backward pass. Outputs and gradients equal the plain
    stack's (and :func:`torch.utils.checkpoint.checkpoint_sequential`'s with the same segments).
    With gradients disabled it runs the layers plainly.

    Parameters
    ----------
    layers : torch.nn.Sequential or iterable of torch.nn.Module
        The stack; each layer maps one tensor to one tensor.
    every : int, optional
        Segment length; default :math:`\lceil\sqrt n\rceil`.

    Chapter: notebooks/recompute.md
    """

    def __init__(self, layers: Iterable[torch.nn.Module], every: int | None = None) -> None:
        super().__init__()
        if isinstance(layers, torch.nn.Module) and not isinstance(layers, torch.nn.Sequential):
            raise TypeError("layers must be a torch.nn.Sequential or an iterable of modules")
        try:
            mods = list(layers)
        except TypeError as err:
            raise TypeError("layers must be a torch.nn.Sequential or an iterable of modules") from (
                err
            )
        if not mods:
            raise ValueError("layers must contain at least one module")
        if not all(isinstance(m, torch.nn.Module) for m in mods):
            raise TypeError("every entry of layers must be a torch.nn.Module")
        self.layers = torch.nn.ModuleList(mods)
        self.bounds = segments(len(mods), every)

    @property
    def every(self) -> int:
        """The segment length."""
        return self.bounds[0][1] - self.bounds[0][0]

    def _run(self, start: int, stop: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers[start:stop]:
                x = layer(x)
            return x

        return run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        grad = torch.is_grad_enabled()
        for i, (start, stop) in enumerate(self.bounds):
            run = self._run(start, stop)
            if grad and i < len(self.bounds) - 1:
                for rec in _RECORDERS:
                    rec.append(x)
                x = checkpoint(run, x, use_reentrant=False)
            else:
                x = run(x)
        return x


def _storage_key(t: torch.Tensor) -> tuple[int, str]:
    st = t.untyped_storage()
    return st.data_ptr(), str(t.device)


def saved_activation_bytes(
    fn: Callable[..., Any], *args: Any, exclude: Iterable[torch.Tensor] = ()
) -> tuple[int, Any]:
    r"""Bytes held for the backward pass by one call ``fn(*args)``, counted exactly.

    The count is the total size of the distinct storages of the tensors autograd saves (seen through
    :func:`torch.autograd.graph.saved_tensors_hooks`), leaving out the storages of ``exclude``
    (typically the model's parameters, which exist anyway), plus the segment inputs kept alive by
    :class:`RecomputeSequential`'s checkpoints. It depends on shapes and dtypes only, not on timing.

    Parameters
    ----------
    fn : callable
        The forward computation, e.g. a module.
    *args
        Its arguments.
    exclude : iterable of torch.Tensor
        Tensors whose storages are not activations (``model.parameters()``).

    Returns
    -------
    tuple
        ``(bytes, output)``: the count and ``fn``'s return value (to run the backward pass on).

    Chapter: notebooks/recompute.md
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    skip = set()
    for t in exclude:
        if not isinstance(t, torch.Tensor):
            raise TypeError("exclude must contain tensors only")
        skip.add(_storage_key(t))
    seen: dict[tuple[int, str], int] = {}

    def keep(t: torch.Tensor) -> None:
        if t.device.type == "meta":
            return
        key = _storage_key(t)
        if key not in skip:
            seen[key] = t.untyped_storage().nbytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        keep(t)
        return t

    recorded: list[torch.Tensor] = []
    _RECORDERS.append(recorded)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(*args)
    finally:
        _RECORDERS.remove(recorded)
    for t in recorded:
        keep(t)
    return sum(seen.values()), out
