r"""Module replacement (BERT-of-Theseus): train small successor modules inside a frozen large model.

A model of :math:`K` predecessor modules :math:`F_p^{(1)}, \dots, F_p^{(K)}` (each a group of
layers, frozen) is compressed into :math:`K` successor modules :math:`F_s^{(k)}` (typically one
layer each).
During training every forward call draws, for each group independently,

.. math:: r^{(k)} \sim \operatorname{Bernoulli}(p), \qquad
   x^{(k)} = r^{(k)}\, F_s^{(k)}\bigl(x^{(k-1)}\bigr)
   + \bigl(1 - r^{(k)}\bigr)\, F_p^{(k)}\bigl(x^{(k-1)}\bigr),

so that the successor replaces its predecessor with probability :math:`p` (the *replacement rate*).
Only the chosen branch is computed (the result equals the masked sum, without running the other
branch and without :math:`0 \cdot \infty`). In evaluation mode only the successors run: the
compressed model is :math:`F_s^{(K)} \circ \dots \circ F_s^{(1)}`.

Kexue.fm writes the same mixture with :math:`\varepsilon = 1 - r` on the predecessor,
:math:`x^{(l)} = \varepsilon x_p^{(l)} + (1-\varepsilon) x_s^{(l)}`, and draws
:math:`\varepsilon` uniformly from :math:`\{0, 1\}` (:math:`p = 1/2`).

Chapter: notebooks/bert-of-theseus.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._validation import check_float, check_generator, check_int

__all__ = ["TheseusReplacement", "theseus_replace_rate"]

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch.OutOfMemoryError: 2.5+


def theseus_replace_rate(step: int, base: float, slope: float) -> float:
    r"""The linear replacement-rate curriculum of BERT-of-Theseus.

    .. math:: p(t) = \min\bigl(1,\; b + k\,t\bigr)

    Starting from the base rate :math:`b` at step 0, the probability that a successor replaces its
    predecessor grows by :math:`k` per step and stays at 1 once reached (from then on only the
    successors are trained, the second stage of the method).

    Parameters
    ----------
    step : int
        The training step :math:`t \ge 0`.
    base : float
        The rate :math:`b \in [0, 1]` at step 0.
    slope : float
        The increase :math:`k \ge 0` per step.

    Returns
    -------
    float
        :math:`p(t) \in [0, 1]`.

    Raises
    ------
    TypeError, ValueError
        If ``step`` is not a non-negative int, ``base`` not in ``[0, 1]`` or ``slope`` negative.

    Notes
    -----
    Chapter: notebooks/bert-of-theseus.md.
    """
    step = check_int(step, "step", low=0)
    base = check_float(base, "base", low=0.0, high=1.0)
    slope = check_float(slope, "slope", low=0.0)
    return min(1.0, base + slope * step)


def _as_group(group: Any, name: str) -> nn.ModuleList:
    """One group of layers: a module, or a non-empty sequence of modules run in order."""
    if isinstance(group, nn.Module) and not isinstance(group, nn.ModuleList):
        return nn.ModuleList([group])
    if isinstance(group, (nn.ModuleList, list, tuple)):
        layers = list(group)
        if not layers:
            raise ValueError(f"{name} is an empty group: give at least one module")
        for j, layer in enumerate(layers):
            if not isinstance(layer, nn.Module):
                raise TypeError(
                    f"{name}[{j}] must be a torch.nn.Module, got {type(layer).__name__}"
                )
        return nn.ModuleList(layers)
    raise TypeError(
        f"{name} must be a torch.nn.Module or a sequence of modules, got {type(group).__name__}"
    )


def _as_groups(groups: Any, name: str) -> nn.ModuleList:
    if isinstance(groups, nn.Module) and not isinstance(groups, (nn.ModuleList, nn.Sequential)):
        raise TypeError(f"{name} must be a sequence of groups (one per module), got one module")
    if not isinstance(groups, (Sequence, nn.ModuleList, nn.Sequential)) or isinstance(groups, str):
        raise TypeError(f"{name} must be a sequence of groups, got {type(groups).__name__}")
    items = list(groups)
    if not items:
        raise ValueError(f"{name} must hold at least one group")
    return nn.ModuleList([_as_group(g, f"{name}[{k}]") for k, g in enumerate(items)])


def _run(group: nn.ModuleList, x: Any, args: tuple, kwargs: dict, where: str = "group") -> Any:
    """Run the layers of a group in turn; a layer returning a tuple or list passes its first item.

    A layer that rejects its input with a RuntimeError (a shape, dtype or device mismatch) is
    reported as a ValueError that names the group and the input it got."""
    for j, layer in enumerate(group):
        try:
            out = layer(x, *args, **kwargs)
        except _OOM:
            raise
        except RuntimeError as err:
            raise ValueError(
                f"{where}, layer {j} ({type(layer).__name__}) failed on x of shape "
                f"{tuple(x.shape)}, {x.dtype} on {x.device}: {err}"
            ) from err
        x = out
        if isinstance(x, (tuple, list)):
            if not x:
                raise ValueError("a layer returned an empty tuple: nothing to pass on")
            x = x[0]
    return x


class TheseusReplacement(nn.Module):
    r"""Predecessor groups and successor modules mixed by random module replacement.

    In training mode each call draws :math:`r^{(k)} \sim \operatorname{Bernoulli}(p)` per group
    :math:`k` (from ``generator``) and computes

    .. math:: x^{(k)} = r^{(k)} F_s^{(k)}(x^{(k-1)}) + (1 - r^{(k)}) F_p^{(k)}(x^{(k-1)}),

    running only the chosen branch. In evaluation mode only the successors run. Given its input, one
    group's expected output is the mixture :math:`p F_s + (1-p) F_p`; the whole model's expected
    output is the average over the :math:`2^K` paths, which differs from the composition of the
    mixtures unless the modules are affine.

    Parameters
    ----------
    predecessors : sequence
        :math:`K` groups; each a :class:`torch.nn.Module` (an :class:`~torch.nn.Sequential`
        counts as one module) or a non-empty list, tuple or :class:`~torch.nn.ModuleList` of
        modules run in order (e.g. two BERT layers).
    successors : sequence
        :math:`K` groups in the same form (typically one layer each), trained in place of the
        predecessors.
    replace_rate : float
        The probability :math:`p \in [0, 1]` that a successor replaces its predecessor in a training
        call (settable later, e.g. from :func:`theseus_replace_rate`); 1 trains the successors
        alone (the second stage), 0 runs the predecessors alone.
    generator : torch.Generator, optional
        Draws the replacements (on the generator's device); torch's global generator if ``None``.
    freeze_predecessors : bool
        Set ``requires_grad=False`` on every predecessor parameter and keep the predecessors in
        evaluation mode (a frozen predecessor is a fixed function: its dropout is off).

    Notes
    -----
    Each layer is called as ``layer(x, *args, **kwargs)`` with the extra arguments of
    :meth:`forward` (an attention mask, say); a layer that returns a tuple or list passes its first
    element on (the convention of ``transformers``' ``BertLayer`` before version 5).
    ``last_replace`` holds the draw of the latest training call (a tuple of bools, ``True`` where
    the successor ran).

    Chapter: notebooks/bert-of-theseus.md.
    """

    def __init__(
        self,
        predecessors: Sequence[Any],
        successors: Sequence[Any],
        replace_rate: float = 0.5,
        *,
        generator: torch.Generator | None = None,
        freeze_predecessors: bool = True,
    ) -> None:
        super().__init__()
        pred = _as_groups(predecessors, "predecessors")
        succ = _as_groups(successors, "successors")
        if len(pred) != len(succ):
            raise ValueError(
                f"predecessors and successors must have as many groups: {len(pred)} and {len(succ)}"
            )
        if not isinstance(freeze_predecessors, bool):
            raise TypeError(
                f"freeze_predecessors must be a bool, got {type(freeze_predecessors).__name__}"
            )
        shared = {id(q) for q in pred.parameters()} & {id(q) for q in succ.parameters()}
        if shared:
            raise ValueError(
                "successors share parameters with predecessors: copy the layers (copy.deepcopy) "
                "so that the successor can be trained while the predecessor stays fixed"
            )
        self.predecessors = pred
        self.successors = succ
        self.replace_rate = replace_rate
        self.generator = check_generator(generator)
        self.freeze_predecessors = freeze_predecessors
        self.last_replace: tuple[bool, ...] | None = None
        if freeze_predecessors:
            for q in pred.parameters():
                q.requires_grad_(False)
            pred.eval()

    @property
    def num_groups(self) -> int:
        """The number :math:`K` of replaceable modules."""
        return len(self.successors)

    @property
    def replace_rate(self) -> float:
        """The replacement probability :math:`p` of a training call."""
        return self._replace_rate

    @replace_rate.setter
    def replace_rate(self, value: float) -> None:
        self._replace_rate = check_float(value, "replace_rate", low=0.0, high=1.0)

    def train(self, mode: bool = True) -> TheseusReplacement:
        """Set training mode like :meth:`torch.nn.Module.train`; frozen predecessors stay in eval mode."""
        super().train(mode)
        if self.freeze_predecessors:
            self.predecessors.eval()
        return self

    def sample_replace(self) -> tuple[bool, ...]:
        r"""Draw :math:`r^{(k)} \sim \operatorname{Bernoulli}(p)` for every group (``True`` = the
        successor runs), from ``generator``."""
        gen = self.generator
        device = gen.device if gen is not None else torch.device("cpu")
        u = torch.rand(self.num_groups, generator=gen, device=device, dtype=torch.float64)
        return tuple(bool(v) for v in (u < self.replace_rate).tolist())

    def _check_replace(self, replace: Any) -> tuple[bool, ...]:
        if isinstance(replace, torch.Tensor):
            if replace.dtype != torch.bool:
                raise TypeError(f"replace must be a bool tensor, got {replace.dtype}")
            if replace.device.type == "meta":
                raise ValueError("replace must hold values (not on the meta device)")
            replace = replace.flatten().tolist()
        if not isinstance(replace, Sequence) or isinstance(replace, str):
            raise TypeError(f"replace must be a sequence of bools, got {type(replace).__name__}")
        if len(replace) != self.num_groups:
            raise ValueError(f"replace must have {self.num_groups} entries, got {len(replace)}")
        for v in replace:
            if not isinstance(v, bool):
                raise TypeError(f"replace must hold bools, got {type(v).__name__}")
        return tuple(replace)

    def _check_weights(self, weights: Any) -> tuple[float, ...]:
        if isinstance(weights, torch.Tensor):
            if weights.device.type == "meta":
                raise ValueError("successor_weight must hold values (not on the meta device)")
            if not weights.is_floating_point():
                raise TypeError(f"successor_weight must be floating, got {weights.dtype}")
            weights = weights.detach().flatten().tolist()
        if not isinstance(weights, Sequence) or isinstance(weights, str):
            raise TypeError(
                f"successor_weight must be a sequence of floats, got {type(weights).__name__}"
            )
        if len(weights) != self.num_groups:
            raise ValueError(
                f"successor_weight must have {self.num_groups} entries, got {len(weights)}"
            )
        out = []
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, numbers.Real):
                raise TypeError(f"successor_weight must hold real numbers, got {type(w).__name__}")
            if not (math.isfinite(w) and 0.0 <= w <= 1.0):
                raise ValueError(f"successor_weight entries must lie in [0, 1], got {w}")
            out.append(float(w))
        return tuple(out)

    def forward(
        self,
        x: Any,
        *args: Any,
        replace: Any = None,
        successor_weight: Any = None,
        **kwargs: Any,
    ) -> Any:
        r"""Run the mixed model (training), the successors alone (evaluation) or a given path.

        Parameters
        ----------
        x : torch.Tensor
            The floating input of the first group (e.g. hidden states ``(batch, n, width)``).
        *args, **kwargs
            Passed on to every layer (e.g. ``attention_mask=...``).
        replace : sequence of bool or bool tensor, optional
            Force the path: ``replace[k]`` is ``True`` where successor :math:`k` runs (in any mode;
            no draw is made).
        successor_weight : sequence of float or tensor, optional
            Continuous mixing :math:`x^{(k)} = w_k F_s^{(k)} + (1 - w_k) F_p^{(k)}` with
            :math:`w_k \in [0, 1]` (both branches run unless :math:`w_k \in \{0, 1\}`), for the
            variants in which :math:`\varepsilon` is not a coin flip.

        Returns
        -------
        torch.Tensor
            The output of the last group.

        Raises
        ------
        TypeError
            If ``x`` is not a floating tensor, or ``replace`` / ``successor_weight`` have the wrong
            type.
        ValueError
            If both ``replace`` and ``successor_weight`` are given, either has the wrong length or
            values, or a layer rejects its input (the message names the group and the input).
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be floating (hidden states), got {x.dtype}")
        if replace is not None and successor_weight is not None:
            raise ValueError("give replace or successor_weight, not both")
        if successor_weight is not None:
            weights = self._check_weights(successor_weight)
            for k, (w, pred, succ) in enumerate(
                zip(weights, self.predecessors, self.successors, strict=True)
            ):
                if w == 1.0:
                    x = _run(succ, x, args, kwargs, f"successor {k}")
                elif w == 0.0:
                    x = _run(pred, x, args, kwargs, f"predecessor {k}")
                else:
                    xs = _run(succ, x, args, kwargs, f"successor {k}")
                    x = w * xs + (1.0 - w) * _run(pred, x, args, kwargs, f"predecessor {k}")
            return x
        if replace is not None:
            path = self._check_replace(replace)
        elif self.training:
            path = self.sample_replace()
            self.last_replace = path
        else:
            path = (True,) * self.num_groups
        for k, (use, pred, succ) in enumerate(
            zip(path, self.predecessors, self.successors, strict=True)
        ):
            where = f"{'successor' if use else 'predecessor'} {k}"
            x = _run(succ if use else pred, x, args, kwargs, where)
        return x

    def extra_repr(self) -> str:
        return f"groups={self.num_groups}, replace_rate={self.replace_rate}"
