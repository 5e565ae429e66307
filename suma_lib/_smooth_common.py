r"""Shared helpers of :mod:`suma_lib.smooth`: kernels, scale checks, cached constants.

Private; import from :mod:`suma_lib.smooth`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._validation import check_float

#: The approximate identities available: ``"gaussian"`` (scale :math:`\sigma`) and ``"logistic"``
#: (scale :math:`1/t`).
KERNELS = ("gaussian", "logistic")

# Beyond |x/s| = _FLAT every smoothed function equals its limit to the last bit in every float dtype
# (Phi(-1e4) and exp(-1e4) underflow to 0), and 1e4 is still finite in float16.
_FLAT = 1.0e4
# How many Gaussian / logistic tail terms the floor sum keeps: terms beyond j/s > _TAIL[kernel] are below
# 1e-19 (Phi(-9) ~ 1e-19, e^{-44} ~ 8e-20), far under float64's resolution of the sum.
_TAIL = {"gaussian": 9.0, "logistic": 44.0}
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


def _ndtr(u: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF, accurate in the lower tail.

    ``torch.special.ndtr`` loses the lower tail (torch 2.x returns 0 for u < -8 in float32 and u < -10 in
    float64, where the true values are 6e-16 and 8e-24); ``erfc`` keeps it down to underflow.
    """
    return 0.5 * torch.erfc(u * -_INV_SQRT_2)


def _check_scale(scale: float, name: str = "scale") -> float:
    return check_float(scale, name, low=0.0, low_open=True)


def _check_step_scale(scale: float, x: torch.Tensor) -> None:
    """The smoothed sign and floor differentiate to the kernel itself, of height ~1/scale: refuse a width
    that underflows in x's dtype (their gradient would be inf or NaN) with a clear error."""
    if scale < torch.finfo(x.dtype).tiny:
        raise ValueError(
            f"scale = {scale:g} underflows in {x.dtype}: the smoothed step's derivative (a kernel of "
            "that width) is not representable; use a larger scale or float64 input"
        )


_SMOOTH_PARAMS = """Parameters
    ----------
    x : torch.Tensor
        Floating-point input of any shape, on any device.
    scale : float
        Width :math:`s > 0` of the kernel: :math:`\\sigma` for ``"gaussian"``, :math:`1/t` for ``"logistic"``.
    kernel : {"gaussian", "logistic"}
        The approximate identity."""


def _fill_params(func: Callable) -> Callable:
    """Insert the parameter block shared by the elementwise smoothed functions into ``func``'s docstring."""
    if func.__doc__:  # None under python -OO
        func.__doc__ = func.__doc__.replace("%(smooth_params)s", _SMOOTH_PARAMS)
    return func




# 0-dim constants in each dtype and device, cached by :func:`_const`.
_CONSTS: dict[tuple, torch.Tensor] = {}


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    """A cached 0-dim tensor holding ``value`` in ``like``'s dtype and device (no per-call allocation)."""
    key = (value, like.dtype, like.device)
    t = _CONSTS.get(key)
    if t is None:
        if len(_CONSTS) > 256:
            _CONSTS.clear()
        t = _CONSTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return t
