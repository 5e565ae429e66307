"""Argument checks shared by every public entry point of :mod:`suma_lib`.

Each helper raises :class:`TypeError` or :class:`ValueError` whose message names the offending argument
and says what was expected, so that bad input never turns into a silent NaN or a wrong answer.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

__all__ = [
    "check_tensor",
    "check_int",
    "check_float",
    "check_choice",
    "check_generator",
    "check_compatible",
]


def check_tensor(
    x: Any,
    name: str,
    *,
    min_dim: int = 0,
    floating: bool = False,
    finite: bool = False,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with at least ``min_dim`` dimensions.

    Parameters
    ----------
    x : Any
        The value passed by the caller.
    name : str
        The argument's name, used in the error message.
    min_dim : int
        Smallest number of dimensions accepted.
    floating : bool
        Require a floating-point dtype.
    finite : bool
        Require every entry to be finite (skipped on the ``meta`` device, which holds no values).

    Returns
    -------
    torch.Tensor
        ``x`` itself, unchanged.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if finite and x.device.type != "meta" and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, but it contains NaN or inf")
    return x


def check_int(x: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Check that ``x`` is an integer (not a bool) in ``[low, high]`` and return it as ``int``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    x = int(x)
    if low is not None and x < low:
        raise ValueError(f"{name} must be >= {low}, got {x}")
    if high is not None and x > high:
        raise ValueError(f"{name} must be <= {high}, got {x}")
    return x


def check_float(
    x: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check that ``x`` is a finite real number in the given interval and return it as ``float``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if low is not None and (x <= low if low_open else x < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {x}")
    if high is not None and (x >= high if high_open else x > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {x}")
    return x


def check_choice(x: Any, name: str, choices: tuple[str, ...]) -> str:
    """Check that ``x`` is one of the strings in ``choices``."""
    if not isinstance(x, str) or x not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {x!r}")
    return x


def check_generator(generator: Any, name: str = "generator") -> torch.Generator | None:
    """Check that ``generator`` is ``None`` or a :class:`torch.Generator`."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def check_compatible(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> tuple[int, ...]:
    """Check that two tensors share dtype and device and broadcast together; return the broadcast shape.

    Raises
    ------
    TypeError
        If the dtypes or devices differ (the message names both arguments).
    ValueError
        If the shapes do not broadcast.
    """
    if a.dtype != b.dtype or a.device != b.device:
        raise TypeError(
            f"{name_a} and {name_b} must share dtype and device, got {a.dtype}/{a.device} and "
            f"{b.dtype}/{b.device}"
        )
    try:
        return tuple(torch.broadcast_shapes(a.shape, b.shape))
    except RuntimeError as err:
        raise ValueError(
            f"{name_a} of shape {tuple(a.shape)} and {name_b} of shape {tuple(b.shape)} do not broadcast"
        ) from err
