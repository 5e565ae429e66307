r"""Position sequences for training: random and equal-mean positions.

Part of :mod:`suma_lib.position` (import from there).
"""

from __future__ import annotations

import torch

from .._validation import (
    check_device,
    check_dtype,
    check_float,
    check_generator,
    check_int,
)
from ._base import (
    _work_dtype,
)


# ==================================================================================== random positions
def random_positions(
    n: int,
    max_position: int,
    *,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Sorted random positions for training: :math:`n` distinct integers drawn uniformly from
    :math:`\{0, \dots, L-1\}` (:math:`L` = ``max_position``), in increasing order.

    Trained this way, a model has seen every position up to :math:`L` even though its sequences have
    length :math:`n` (randomised positional encodings).

    Parameters
    ----------
    n : int
        Sequence length.
    max_position : int
        :math:`L \ge n`.
    batch_shape : tuple of int
        One independent draw per batch entry.
    generator : torch.Generator, optional
    device

    Returns
    -------
    torch.Tensor, int64, shape ``(*batch_shape, n)``

    Notes
    -----
    Chapter: Part V, ``position-robustness``.
    """
    n = check_int(n, "n", low=0)
    L = check_int(max_position, "max_position", low=max(n, 1))
    check_generator(generator)
    batch_shape = tuple(check_int(b, "batch_shape", low=0) for b in batch_shape)
    dev = check_device(device) or (generator.device if generator is not None else torch.device("cpu"))
    keys = torch.rand(*batch_shape, L, generator=generator, device=dev)
    return keys.argsort(dim=-1)[..., :n].sort(dim=-1).values


def equal_mean_positions(
    n: int,
    mean: float | None = None,
    *,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""The "equal-mean" random positions: :math:`s \sim \operatorname{Exp}(\text{mean})`, then
    :math:`n` evenly spaced points of :math:`[0, s]`, :math:`p_k = s\,k/(n-1)`.

    Real-valued (for functional encodings such as the sinusoid or RoPE, not a learned table). With the
    default mean :math:`n` the average spacing is :math:`\approx 1`, so the average positions match the
    ordinary :math:`0, 1, \dots`, while the exponential's tail reaches positions many times :math:`n`.

    Parameters
    ----------
    n : int
    mean : float, optional
        Mean of :math:`s` (``n`` by default).
    batch_shape : tuple of int
    generator : torch.Generator, optional
    device, dtype

    Returns
    -------
    torch.Tensor, shape ``(*batch_shape, n)``

    Notes
    -----
    Chapter: Part V, ``position-robustness``.
    """
    n = check_int(n, "n", low=1)
    mean = float(n) if mean is None else check_float(mean, "mean", low=0.0, low_open=True)
    check_generator(generator)
    batch_shape = tuple(check_int(b, "batch_shape", low=0) for b in batch_shape)
    dev = check_device(device) or (generator.device if generator is not None else torch.device("cpu"))
    dt = check_dtype(dtype) or torch.get_default_dtype()
    u = torch.rand(*batch_shape, 1, generator=generator, device=dev, dtype=_work_dtype(dev))
    s = -mean * torch.log1p(-u)  # inverse CDF of the exponential; 1 - u lies in (0, 1]
    grid = torch.linspace(0.0, 1.0, n, device=dev, dtype=s.dtype)
    return (grid * s).to(dt)
