"""Argument checks shared by every public entry point of :mod:`suma_lib`.

Each helper raises :class:`TypeError` or :class:`ValueError` whose message names the offending
argument and says what was expected, so that bad input never turns into a silent NaN or a wrong answer.
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
    "check_bool",
    "check_dtype",
    "check_device",
    "check_index_range",
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
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}"
        )
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


def check_compatible(
    a: torch.Tensor,
    b: torch.Tensor,
    name_a: str,
    name_b: str,
    *,
    core_dims: int | tuple[int, int] = 0,
    same_dtype: bool = True,
) -> tuple[int, ...]:
    """Check that two tensors share dtype and device and that their batch dimensions broadcast.

    Parameters
    ----------
    a, b : torch.Tensor
        The two tensors.
    name_a, name_b : str
        Their argument names, used in the messages.
    core_dims : int or (int, int)
        How many trailing dimensions of ``a`` (and of ``b``) are core dimensions, left out of the
        broadcast check (e.g. 1 for vectors ``(..., d)``, 2 for matrices ``(..., n, d)``); an int applies to both.
    same_dtype : bool
        Also require equal dtypes (the device must always match).

    Returns
    -------
    tuple of int
        The broadcast shape of the batch dimensions.

    Raises
    ------
    TypeError
        If the devices differ (a meta tensor mixed with a real one included) or, with
        ``same_dtype``, the dtypes differ; the message names both arguments.
    ValueError
        If a tensor has fewer dimensions than its core dimensions or the batch dimensions do not broadcast.
    """
    ca, cb = (core_dims, core_dims) if isinstance(core_dims, int) else core_dims
    if a.device != b.device:
        if "meta" in (a.device.type, b.device.type):
            raise TypeError(
                f"{name_a} and {name_b} mix the meta device with real data ({a.device} and "
                f"{b.device}): "
                "put both on the meta device or both on a real one"
            )
        raise TypeError(
            f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}"
        )
    if same_dtype and a.dtype != b.dtype:
        raise TypeError(
            f"{name_a} and {name_b} must share dtype and device, got {a.dtype}/{a.device} and "
            f"{b.dtype}/{b.device}"
        )
    for t, c, name in ((a, ca, name_a), (b, cb, name_b)):
        if t.dim() < c:
            raise ValueError(
                f"{name} must have at least {c} dimension(s), got shape {tuple(t.shape)}"
            )
    batch_a = a.shape[: a.dim() - ca]
    batch_b = b.shape[: b.dim() - cb]
    if batch_a == batch_b:  # the common case, without broadcast_shapes' cost
        return tuple(batch_a)
    try:
        return tuple(torch.broadcast_shapes(batch_a, batch_b))
    except RuntimeError as err:
        what = "batch dimensions " if ca or cb else ""
        raise ValueError(
            f"{name_a} of shape {tuple(a.shape)} and {name_b} of shape {tuple(b.shape)}: {what}"
            f"{tuple(batch_a)} and {tuple(batch_b)} do not broadcast"
        ) from err


def check_bool(x: Any, name: str) -> bool:
    """Check that ``x`` is a Python ``bool`` (not an int, not a tensor) and return it."""
    if not isinstance(x, bool):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__}")
    return x


def check_dtype(
    x: Any, name: str = "dtype", *, floating: bool = True, allow_none: bool = True
) -> torch.dtype | None:
    """Check that ``x`` is a :class:`torch.dtype` (floating if ``floating``), or ``None`` if allowed."""
    if x is None and allow_none:
        return None
    if not isinstance(x, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {type(x).__name__}")
    if floating and not x.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype, got {x}")
    return x


def check_device(x: Any, name: str = "device", *, allow_none: bool = True) -> torch.device | None:
    """Check a device argument before it reaches torch and return it as a :class:`torch.device`.

    Accepts a :class:`torch.device`, a device string (``"cpu"``, ``"cuda:1"``, ``"meta"``, ...) or a
    non-negative int (a CUDA ordinal, as torch does), and ``None`` if ``allow_none``. ``"auto"`` is
    not resolved here (see :func:`suma_lib.device.get_device`).

    Raises
    ------
    TypeError
        If ``x`` has another type (a bool, a float, a tensor, ...).
    ValueError
        If the string names no device torch knows, the ordinal is negative, or the device's backend
        (CUDA, MPS) is not available on this machine.
    """
    if x is None and allow_none:
        return None
    if isinstance(x, torch.device):
        dev = x
    elif isinstance(x, str):
        try:
            dev = torch.device(x)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"{name} must be a torch device string such as 'cpu' or 'cuda:0', got {x!r}"
            ) from err
    elif isinstance(x, numbers.Integral) and not isinstance(x, bool):
        if int(x) < 0:
            raise ValueError(f"{name} as an int is a CUDA ordinal and must be >= 0, got {int(x)}")
        dev = torch.device("cuda", int(x))
    else:
        raise TypeError(f"{name} must be a str, an int or a torch.device, got {type(x).__name__}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={str(dev)!r} was requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name}={str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name}={str(dev)!r} was requested but MPS is not available")
    return dev


def check_index_range(
    ids: Any, name: str, size: int | None = None, *, min_dim: int = 0
) -> torch.Tensor:
    """Check that ``ids`` is an integer tensor of indices in ``[0, size)`` (token ids, class
    labels); ``size=None`` checks only that no id is negative.

    Negative ids are rejected (they would wrap around silently in indexing), and so are ids
    ``>= size`` (torch would raise an IndexError from deep inside, or read past the table). The
    value check is skipped on the meta device. The attention modules use it as ``check_tokens`` (with ``min_dim=1``).

    Raises
    ------
    TypeError
        If ``ids`` is not a tensor of an integer dtype (bool included).
    ValueError
        If ``ids`` has fewer than ``min_dim`` dimensions or an id lies outside ``[0, size)``.
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer ids, got {type(ids).__name__}")
    if ids.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s), got shape {tuple(ids.shape)}"
        )
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of ids, got dtype {ids.dtype}")
    if ids.device.type != "meta" and ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or (size is not None and hi >= size):
            upper = "" if size is None else f", {size}"
            raise ValueError(
                f"{name} must hold ids in [0{upper}): every id of {name} must lie in [0{upper}), "
                f"got values in [{lo}, {hi}]"
            )
    return ids
