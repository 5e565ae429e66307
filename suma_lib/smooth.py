r"""Smooth stand-ins for non-smooth functions: SquarePlus and smoothing by approximate identities.

Two chapters build this module.

* ``squareplus`` derives :math:`\operatorname{SquarePlus}_b(x) = \tfrac12\bigl(x + \sqrt{x^2 + b}\bigr)`, a
  ReLU look-alike that needs no exponential, and compares it with SoftPlus
  (:func:`squareplus`, :class:`SquarePlus`, :func:`squareplus_softplus_gap`, :func:`squareplus_minimax`).
* ``dirac-smoothing`` smooths a function :math:`f` by convolving it with a narrow probability density
  :math:`\delta_s(y) = \delta(y/s)/s` (an approximate identity),

  .. math:: f_s(x) = (f * \delta_s)(x) = \int f(x - y)\, \delta_s(y)\, \mathrm{d}y \to f(x)
     \quad (s \to 0,\ x \text{ a point of continuity}),

  with the standard Gaussian density (``kernel="gaussian"``, :math:`s = \sigma`) or the logistic density
  :math:`\operatorname{sigmoid}(y)(1 - \operatorname{sigmoid}(y))` (``kernel="logistic"``, :math:`s = 1/t`).
  The closed forms for ReLU, the absolute value, the maximum of two numbers, the sign and the floor
  function are :func:`smooth_relu`, :func:`smooth_abs`, :func:`smooth_max`, :func:`smooth_sign` and
  :func:`smooth_floor`;
  :func:`kernel_pdf` and :func:`convolve_quad` are the NumPy/SciPy reference used to check them.

Every torch function is elementwise, keeps its input's shape, dtype and device (``meta`` included), is
differentiable (with the exact derivative at 0, where a naive ``abs`` or ``relu`` split would give 0), and
stays finite for huge inputs such as :math:`|x| = 10^{30}` in float32: no intermediate overflows into
``inf`` or ``nan``.

The fast SquarePlus path lives here; the approximate identities and the NumPy/SciPy reference live in private
modules (``suma_lib._smooth_identities``, ``suma_lib._smooth_reference``, helpers in
``suma_lib._smooth_common``), and every name is importable from here.

Chapters: notebooks/squareplus.md, notebooks/dirac-smoothing.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from torch import nn

from ._smooth_common import KERNELS as _KERNELS
from ._smooth_common import _const
from ._smooth_identities import (
    SmoothReLU,
    smooth_abs,
    smooth_floor,
    smooth_max,
    smooth_relu,
    smooth_sign,
)
from ._smooth_reference import MinimaxResult, convolve_quad, kernel_pdf, squareplus_minimax, squareplus_softplus_gap
from ._validation import check_float, check_tensor

__all__ = [
    "KERNELS",
    "MinimaxResult",
    "SmoothReLU",
    "SquarePlus",
    "convolve_quad",
    "kernel_pdf",
    "smooth_abs",
    "smooth_floor",
    "smooth_max",
    "smooth_relu",
    "smooth_sign",
    "squareplus",
    "squareplus_minimax",
    "squareplus_softplus_gap",
]

#: The approximate identities available: ``"gaussian"`` (scale :math:`\sigma`) and ``"logistic"``
#: (scale :math:`1/t`).
KERNELS = _KERNELS

# ------------------------------------------------------------------------------ the fast elementwise path
# Eager PyTorch runs each elementwise operation as a kernel of its own, reading and writing the whole tensor,
# while SoftPlus and GELU are one kernel each. Two remedies, both exact:
# * eager: few kernels, no torch.where (slow on the CPU), constants cached as 0-dim tensors, and for
#   squareplus a cheap sqrt(x^2 + b) where one reduction shows that x^2 cannot overflow (hypot otherwise);
# * fused (squareplus): for large tensors, the same formula compiled into one kernel by torch.compile,
#   cached, with the eager path as fallback where no compiler is available (SUMA_COMPILE=0 switches it off).
_COMPILE_MIN = 1 << 16  # elements from which the fused kernel pays for its per-call overhead
_COMPILED: dict[str, Callable | None] = {}
# Per dtype: (largest |x| whose square plus b cannot overflow, smallest and largest b for sqrt(x^2 + b)).
_SQRT_SAFE = {torch.float32: (1e18, 1e-30, 1e20), torch.float64: (1e150, 1e-280, 1e250)}



def _fused(name: str, x: torch.Tensor) -> Callable | None:
    """The torch.compile'd kernel ``name`` for ``x``, or None (small input, no compiler, or switched off)."""
    if x.numel() < _COMPILE_MIN or x.device.type not in ("cpu", "cuda"):
        return None
    if name not in _COMPILED:
        if os.environ.get("SUMA_COMPILE", "1") == "0" or not hasattr(torch, "compile"):
            _COMPILED[name] = None
        else:
            _COMPILED[name] = torch.compile(_KERNELS[name], dynamic=True)
    return _COMPILED[name]


def _run_fused(name: str, x: torch.Tensor, *args):
    """Call the fused kernel; on any compiler failure switch it off for good and return None."""
    fn = _fused(name, x)
    if fn is None:
        return None
    try:
        return fn(x, *args)
    except Exception:  # noqa: BLE001 - no C++ compiler, unsupported backend...: the eager path is exact
        _COMPILED[name] = None
        return None


def _safe_root(x, b, cap: float):
    """(|x|, sqrt(x^2 + b)) without overflow: |x| itself where x^2 would overflow (they agree there)."""
    a = x.abs()
    ac = torch.clamp(a, max=cap)
    return a, torch.maximum(torch.sqrt(ac * ac + b), a)


def _squareplus_kernel(x, b, s, cap: float):
    """SquarePlus as one fused expression, relu(x) + (s/2) s / (h + |x|); exact for every finite x."""
    a, h = _safe_root(x, b, cap)
    return torch.relu(x) + (0.5 * s) * (s / (h + a))


def _squareplus_grad_kernel(x, out, grad, b, cap: float):
    """grad * SquarePlus'(x) = grad * out / h as one fused expression (h recomputed: cheaper than storing it)."""
    return grad * (out / _safe_root(x, b, cap)[1])


_KERNELS = {"squareplus": _squareplus_kernel, "squareplus_grad": _squareplus_grad_kernel}


# Below this many elements the eager path takes hypot (one kernel, no overflow test and no read-back of a
# value); above it the overflow test buys the cheaper sqrt(x^2 + b).
_HYPOT_MAX = 1 << 14
# (b, x's dtype, device) -> (b, s = sqrt(b), b and s as 0-dim tensors, b regular), for validated b only.
_PARAMS: dict[tuple, tuple] = {}


def _params(b: float, x: torch.Tensor) -> tuple:
    """SquarePlus's constants for ``b`` in ``x``'s dtype and device, cached (a hot-path dictionary look-up)."""
    key = (b, x.dtype, x.device)
    p = _PARAMS.get(key)
    if p is None:
        s = math.sqrt(b)
        _, b_lo, b_hi = _SQRT_SAFE[x.dtype]
        if len(_PARAMS) > 256:
            _PARAMS.clear()
        # regular: b and b/2 are normal numbers of the dtype, so s^2 may be formed
        p = _PARAMS[key] = (b, s, _const(b, x), _const(s, x), b_lo <= b <= b_hi)
    return p


def _squareplus_values(
    x: torch.Tensor, b: float, grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """SquarePlus of ``x`` (float32/float64), its derivative when ``grad`` (eager path only), and whether
    the fused kernel computed it (then the backward pass uses the fused derivative); no autograd."""
    b, s, b_t, s_t, regular = _params(b, x)
    n = x.numel()
    if regular and n >= _COMPILE_MIN:
        fused = _run_fused("squareplus", x, b_t, s_t, _SQRT_SAFE[x.dtype][0])
        if fused is not None:
            return fused, None, True
    a = torch.abs(x)
    # one reduction (the overflow test) buys addcmul + sqrt, cheaper than hypot on the CPU at large sizes
    cheap = (regular and n > _HYPOT_MAX and x.device.type == "cpu"
             and float(a.max()) <= _SQRT_SAFE[x.dtype][0])
    h = torch.addcmul(b_t, a, a).sqrt_() if cheap else torch.hypot(a, s_t)  # NaN: hypot
    d = a.add_(h)  # h + |x|: no cancellation
    out = torch.relu(x)  # relu(NaN) is NaN
    if regular:  # relu(x) + (s/2) s / (h + |x|), in one kernel
        out.addcdiv_(s_t, d, value=0.5 * s)
    else:  # the same without forming s^2, which would under- or overflow
        out.add_(torch.div(s_t, d), alpha=0.5 * s)
    return out, (torch.div(out, h) if grad else None), False


class _SquarePlus(torch.autograd.Function):
    """SquarePlus with the derivative out / h (no cancellation).

    Eager path: the ratio is computed in the forward pass, reusing its square root, and saved. Fused path:
    the output is saved and the backward pass is one fused kernel that recomputes h (one allocation less
    than saving the slope, which is what costs at large sizes). Under ``create_graph`` the backward pass is
    written with differentiable operations instead, so that second derivatives work.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, b: float) -> torch.Tensor:
        out, slope, fused = _squareplus_values(x, b, grad=True)
        ctx.b, ctx.fused = b, fused
        ctx.save_for_backward(x, out if fused else slope)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: d/dx (out / h), with out and h differentiable
            h = torch.hypot(x, x.new_full((), math.sqrt(ctx.b)))
            return grad * (_SquarePlus.apply(x, ctx.b) / h), None
        if not ctx.fused:
            return grad * saved, None
        cap = _SQRT_SAFE[x.dtype][0]
        result = _run_fused("squareplus_grad", x, saved, grad, _const(ctx.b, x), cap)
        if result is None:  # the compiler failed after all: the same ratio, eagerly
            result = grad * (saved / torch.hypot(x, _const(math.sqrt(ctx.b), x)))
        return result, None


def _squareplus_dtype(x: torch.Tensor, b: float) -> torch.dtype:
    """The dtype SquarePlus is computed in: float32 for half precisions (float16 cannot even hold
    sqrt(b) = 1e5 for b = 1e10), float64 where sqrt(b) over- or underflows float32, else x's dtype."""
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    if dtype == torch.float32 and not 1e-37 < math.sqrt(b) < 1e37:
        dtype = torch.float64
    return dtype


# ------------------------------------------------------------------------------------------ SquarePlus
def squareplus(x: torch.Tensor, b: float = 4.0) -> torch.Tensor:
    r"""SquarePlus, :math:`\operatorname{SquarePlus}_b(x) = \tfrac12\bigl(x + \sqrt{x^2 + b}\bigr)`.

    Computed without overflow or cancellation: with :math:`h = \sqrt{x^2 + b}` and :math:`s = \sqrt b`,

    .. math:: \operatorname{SquarePlus}_b(x) = \max(x, 0) + \frac{s}{2}\,\frac{s}{h + |x|},
       \qquad \operatorname{SquarePlus}_b'(x) = \frac{\operatorname{SquarePlus}_b(x)}{h},

    since :math:`\tfrac12(h - |x|) = \tfrac12 b/(h + |x|)` (multiply and divide by :math:`h + |x|`). No two
    nearly equal numbers are subtracted, and :math:`h` is ``hypot(x, s)`` (no :math:`x^2` is formed) unless
    one reduction shows that :math:`x^2 + b` cannot overflow, where the cheaper ``sqrt`` is exact too. So
    the result is accurate to a few ulp for every finite input whose result is a normal number:
    :math:`b/(4|x|)` at :math:`x = -10^{30}` in float32, where the textbook formula returns ``inf``
    (:math:`x^2` overflows), and :math:`b/(4\cdot 10^4)` at :math:`x = -10^4`, where it returns 0
    (cancellation). The derivative :math:`\tfrac12(1 + x/h)` is evaluated as the ratio above (no
    cancellation either, :math:`\tfrac12` at 0, never NaN for finite :math:`x`); under ``create_graph``
    the backward pass is differentiable, so second derivatives work. Half precisions are computed in
    float32 (float16 cannot hold :math:`s = 10^5` for :math:`b = 10^{10}`, while the result
    :math:`5\cdot 10^4` fits), and float32 in float64 where :math:`s` itself over- or underflows float32.

    Speed: tensors of at least 65,536 elements on the CPU or CUDA go through one kernel fused by
    ``torch.compile`` (compiled once per process, a few seconds; switched off by the environment variable
    ``SUMA_COMPILE=0`` and skipped where no compiler works); smaller ones through four eager kernels (up to
    16,384 elements, with ``hypot``) or six and one reduction (the overflow test). Once a value of ``b`` has
    been checked for a dtype and device, later calls skip the argument checks (a cached look-up). See
    ``benchmarks/smooth.py`` for the ratios to SoftPlus.

    Chapter: notebooks/squareplus.md

    Parameters
    ----------
    x : torch.Tensor
        Floating-point input of any shape, on any device.
    b : float
        The curvature parameter, :math:`b > 0`; :math:`\operatorname{SquarePlus}_b(0) = \sqrt b/2`.
        ``b = 4 ln^2 2`` is the smallest value that keeps SquarePlus above SoftPlus everywhere.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``; non-negative (positive unless :math:`b/(4|x|)` underflows).

    Raises
    ------
    TypeError
        If ``x`` is not a floating-point tensor or ``b`` is not a real number.
    ValueError
        If ``b`` is not a finite positive number.
    """
    # The hot path: b, x's dtype and device were validated before (the cache holds only those).
    p = _PARAMS.get((b, x.dtype, x.device)) if type(x) is torch.Tensor and type(b) in (float, int) else None
    if p is not None:
        if x.requires_grad and torch.is_grad_enabled():
            return _SquarePlus.apply(x, b)
        if p[4] and x.numel() <= _HYPOT_MAX:  # small and regular: four kernels, no read-back
            a = torch.abs(x)
            a.add_(torch.hypot(a, p[3]))
            return torch.relu(x).addcdiv_(p[3], a, value=0.5 * p[1])
        return _squareplus_values(x, b, grad=False)[0]
    check_tensor(x, "x", floating=True)
    b = check_float(b, "b", low=0.0, low_open=True)
    dtype = _squareplus_dtype(x, b)
    xc = x if dtype == x.dtype else x.to(dtype)
    if xc.requires_grad and torch.is_grad_enabled():
        out = _SquarePlus.apply(xc, b)
    else:
        out = _squareplus_values(xc, b, grad=False)[0]
    return out if out.dtype == x.dtype else out.to(x.dtype)


class SquarePlus(nn.Module):
    r"""Module form of :func:`squareplus`, :math:`\tfrac12(x + \sqrt{x^2 + b})`, for use as an activation.

    Chapter: notebooks/squareplus.md

    Parameters
    ----------
    b : float
        The curvature parameter, :math:`b > 0`.
    """

    def __init__(self, b: float = 4.0) -> None:
        super().__init__()
        self.b = check_float(b, "b", low=0.0, low_open=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply :func:`squareplus` elementwise."""
        return squareplus(x, self.b)

    def extra_repr(self) -> str:
        """Show ``b`` in the module's repr."""
        return f"b={self.b:g}"


