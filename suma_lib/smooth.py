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
  :math:`\operatorname{sigmoid}(y)(1 - \operatorname{sigmoid}(y))` (``kernel="logistic"``, :math:`s = 1/t`). The closed forms for ReLU, the
  absolute value, the maximum of two numbers, the sign and the floor function are :func:`smooth_relu`,
  :func:`smooth_abs`, :func:`smooth_max`, :func:`smooth_sign` and :func:`smooth_floor`;
  :func:`kernel_pdf` and :func:`convolve_quad` are the NumPy/SciPy reference used to check them.

Every torch function is elementwise, keeps its input's shape, dtype and device (``meta`` included), is
differentiable (with the exact derivative at 0, where a naive ``abs`` or ``relu`` split would give 0), and
stays finite for huge inputs such as :math:`|x| = 10^{30}` in float32: no intermediate overflows into
``inf`` or ``nan``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._validation import check_choice, check_compatible, check_float, check_tensor

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


# ------------------------------------------------------------------------------ the fast elementwise path
# Eager PyTorch runs each elementwise operation as a kernel of its own, reading and writing the whole tensor,
# while SoftPlus and GELU are one kernel each. Two remedies, both exact:
# * eager: few kernels, no torch.where (slow on the CPU), constants cached as 0-dim tensors, and for
#   squareplus a cheap sqrt(x^2 + b) where one reduction shows that x^2 cannot overflow (hypot otherwise);
# * fused (squareplus): for large tensors, the same formula compiled into one kernel by torch.compile,
#   cached, with the eager path as fallback where no compiler is available (SUMA_COMPILE=0 switches it off).
_COMPILE_MIN = 1 << 16  # elements from which the fused kernel pays for its per-call overhead
_COMPILED: dict[str, Callable | None] = {}
_CONSTS: dict[tuple, torch.Tensor] = {}
# Per dtype: (largest |x| whose square plus b cannot overflow, smallest and largest b for sqrt(x^2 + b)).
_SQRT_SAFE = {torch.float32: (1e18, 1e-30, 1e20), torch.float64: (1e150, 1e-280, 1e250)}


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    """A cached 0-dim tensor holding ``value`` in ``like``'s dtype and device (no per-call allocation)."""
    key = (value, like.dtype, like.device)
    t = _CONSTS.get(key)
    if t is None:
        if len(_CONSTS) > 256:
            _CONSTS.clear()
        t = _CONSTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return t


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


def _squareplus_values(
    x: torch.Tensor, b: float, grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """SquarePlus of ``x`` (float32/float64), its derivative when ``grad`` (eager path only), and whether
    the fused kernel computed it (then the backward pass uses the fused derivative); no autograd."""
    s = math.sqrt(b)
    cap, b_lo, b_hi = _SQRT_SAFE[x.dtype]
    fused = _run_fused("squareplus", x, _const(b, x), _const(s, x), cap) if b_lo <= b <= b_hi else None
    if fused is not None:
        return fused, None, True
    s_t = _const(s, x)
    a = torch.abs(x)
    regular = b_lo <= b <= b_hi  # b and b/2 are normal numbers of the dtype
    # one reduction (the overflow test) buys addcmul + sqrt, cheaper than hypot on the CPU at every size
    cheap = regular and x.device.type == "cpu" and x.numel() > 0 and float(a.max()) <= cap
    h = torch.addcmul(_const(b, x), a, a).sqrt_() if cheap else torch.hypot(a, s_t)  # NaN: hypot
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
    ``SUMA_COMPILE=0`` and skipped where no compiler works); smaller ones through six eager kernels and one
    reduction (the overflow test). See
    ``benchmarks/smooth.py`` for the ratios to SoftPlus.

    Chapter: notebooks/squareplus.ipynb

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

    Chapter: notebooks/squareplus.ipynb

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


# ------------------------------------------------------------------------------ approximate identities
@_fill_params
def smooth_relu(x: torch.Tensor, scale: float = 1.0, kernel: str = "gaussian") -> torch.Tensor:
    r"""ReLU convolved with an approximate identity: :math:`\int \max(0, x - y)\,\delta_s(y)\,\mathrm{d}y`.

    .. math::
       \text{gaussian: } x\,\Phi(x/\sigma) + \sigma\,\varphi(x/\sigma)
       = \tfrac12\Bigl[x \operatorname{erf}\tfrac{x}{\sqrt2\sigma} + x
       + \sqrt{\tfrac{2}{\pi}}\,\sigma e^{-x^2/(2\sigma^2)}\Bigr],
       \qquad
       \text{logistic: } \frac{\log(1 + e^{t x})}{t},

    with :math:`\sigma = s` and :math:`t = 1/s`. The derivative is the smoothed step, :math:`\Phi(x/\sigma)`
    or :math:`\operatorname{sigmoid}(t x)`, which is what the backward pass evaluates (to full relative
    accuracy in the tails, and twice differentiable); the largest error, :math:`\sigma/\sqrt{2\pi}` or
    :math:`\ln 2 / t`, is at :math:`x = 0`.

    It is computed as :math:`\max(x, 0) + s\,g(|x|/s)` with the even remainder
    :math:`g(a) = \varphi(a) - a\,\Phi(-a)` (Gaussian, :math:`\Phi(-a)` from ``erfc``) or
    :math:`g(a) = \log(1 + e^{-a})` (logistic), both positive and vanishing in the tails, so that where
    :math:`|x|/s \ge 10^4` the result is ReLU itself to the last bit: huge inputs neither overflow nor
    produce NaN, and their gradient is exactly 0 or 1. A width that underflows in the input's dtype (say
    :math:`s = 10^{-50}` in float32) gives the limit, ReLU, with the step (and :math:`\tfrac12` at 0) as
    gradient. For the Gaussian kernel and :math:`x \ll -\sigma` the
    two terms nearly cancel, and rounding :math:`x/\sigma` alone moves :math:`\Phi(x/\sigma)` by a relative
    :math:`(x/\sigma)^2` ulp: the absolute error is of order :math:`(x/\sigma)^2` ulp of
    :math:`|x|\Phi(x/\sigma)`, tiny, but not a small relative error.

    Chapter: notebooks/dirac-smoothing.ipynb

    %(smooth_params)s

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``; always :math:`\ge \max(0, x)`.

    Raises
    ------
    TypeError
        If ``x`` is not a floating-point tensor or ``scale`` is not a real number.
    ValueError
        If ``scale`` is not finite and positive, or ``kernel`` is unknown.
    """
    check_tensor(x, "x", floating=True)
    scale = _check_scale(scale)
    check_choice(kernel, "kernel", KERNELS)
    if x.requires_grad and torch.is_grad_enabled():
        return _SmoothReLU.apply(x, scale, kernel)
    return _smooth_relu_values(x, scale, kernel, grad=False)[0]


def _over_scale(x: torch.Tensor, scale: float, *, absolute: bool = False) -> torch.Tensor:
    """``x / scale`` (or ``|x| / scale``), clamped to ``[-_FLAT, _FLAT]``; where ``scale`` underflows in
    x's dtype, 0/0 is read as 0 (``x = 0`` sits in the middle of a kernel of width zero)."""
    u = torch.abs(x).div_(scale) if absolute else torch.div(x, scale)  # a fresh tensor: in place is safe
    if scale < torch.finfo(x.dtype).tiny:
        u.nan_to_num_(nan=0.0, posinf=_FLAT, neginf=-_FLAT)
    return u.clamp_(-_FLAT, _FLAT)


def _smooth_relu_values(
    x: torch.Tensor, scale: float, kernel: str, grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """relu * delta_s as relu(x) + s g(|x|/s), g the even, positive remainder; no autograd.

    Gaussian: g(a) = phi(a) - a Phi(-a); logistic: g(a) = log(1 + e^{-a}). Returns (value, None): the
    backward pass computes the derivative itself. (A fused torch.compile kernel was tried: its erfc and exp
    are not vectorised on the CPU, so it gained little over these eager kernels; not worth a compile.)
    """
    a = _over_scale(x, scale, absolute=True)
    if kernel == "gaussian":
        g = torch.addcmul(_const(-0.5 * math.log(2 * math.pi), a), a, a, value=-0.5).exp_()
        g.addcmul_(torch.mul(a, _INV_SQRT_2).erfc_(), a, value=-0.5)  # phi(a) - a erfc(a/sqrt2)/2
    else:
        g = F.softplus(a.neg_())  # log(1 + e^{-a}), exact in the tail
    return torch.clamp(x, min=0.0).add_(g, alpha=scale), None


class _SmoothReLU(torch.autograd.Function):
    """relu * delta_s with the derivative given by its closed form, the smoothed step F(x/s).

    Autograd through the Gaussian value formula would subtract two nearly equal terms (u phi(u) from
    Phi(u) + u phi(u)) and lose the lower tail of the gradient; the closed form keeps it. The backward
    pass evaluates it with differentiable operations, so second derivatives (the kernel itself) work too.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float, kernel: str) -> torch.Tensor:
        out, _ = _smooth_relu_values(x, scale, kernel, grad=True)
        ctx.scale, ctx.kernel = scale, kernel
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * _cdf(_over_scale(x, ctx.scale), ctx.kernel), None, None


@_fill_params
def smooth_abs(x: torch.Tensor, scale: float = 1.0, kernel: str = "gaussian") -> torch.Tensor:
    r"""The absolute value convolved with an approximate identity.

    Since :math:`|x| = \max(0, x) + \max(0, -x)` and the kernels are even,

    .. math:: |x|_s = \operatorname{relu}_s(x) + \operatorname{relu}_s(-x)
       \quad\Bigl(\text{gaussian: } x\operatorname{erf}\tfrac{x}{\sqrt2\sigma}
       + \sqrt{\tfrac2\pi}\,\sigma e^{-x^2/(2\sigma^2)}\Bigr),

    a sum of two non-negative terms (no cancellation). It is at least :math:`|x|` and exceeds it most at 0,
    by :math:`2\sigma/\sqrt{2\pi}` or :math:`2\ln 2/t`.

    Chapter: notebooks/dirac-smoothing.ipynb

    %(smooth_params)s

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``.
    """
    return smooth_relu(x, scale, kernel) + smooth_relu(-x, scale, kernel)


def smooth_max(
    a: torch.Tensor, b: torch.Tensor, scale: float = 1.0, kernel: str = "gaussian"
) -> torch.Tensor:
    r"""The maximum of two numbers, smoothed through :math:`\max(a, b) = a + \max(0, b - a)`.

    .. math:: \max\nolimits_s(a, b) = a + \operatorname{relu}_s(b - a)
       = \tfrac{a + b}{2} + |d|_{s/2}, \qquad d = \tfrac{b - a}{2},

    where the second form (from :math:`\operatorname{relu}_s(2d) = 2\operatorname{relu}_{s/2}(d)` and
    :math:`\operatorname{relu}_s(d) - \operatorname{relu}_s(-d) = d`) is what is computed: it is symmetric in
    ``a`` and ``b`` and never overflows, even for :math:`a = -b = 3\cdot10^{38}` in float32. With the logistic
    kernel it is :math:`\log(e^{t a} + e^{t b})/t`, the log-sum-exp. It lies between :math:`\max(a, b)` and
    :math:`\max(a, b) + \sigma/\sqrt{2\pi}` (resp. :math:`+\ln 2/t`).

    Chapter: notebooks/dirac-smoothing.ipynb

    Parameters
    ----------
    a, b : torch.Tensor
        Floating-point tensors of the same dtype and device, broadcastable to each other.
    scale : float
        Width :math:`s > 0` of the kernel applied to :math:`b - a`.
    kernel : {"gaussian", "logistic"}
        The approximate identity.

    Returns
    -------
    torch.Tensor
        The broadcast shape of ``a`` and ``b``.

    Raises
    ------
    TypeError
        If ``a`` or ``b`` is not a floating-point tensor, or they differ in dtype or device.
    ValueError
        If they do not broadcast, ``scale`` is not finite and positive, or ``kernel`` is unknown.
    """
    check_tensor(a, "a", floating=True)
    check_tensor(b, "b", floating=True)
    check_compatible(a, b, "a", "b")
    scale = _check_scale(scale)
    half_a, half_b = 0.5 * a, 0.5 * b
    return (half_a + half_b) + smooth_abs(half_b - half_a, 0.5 * scale, kernel)


@_fill_params
def smooth_sign(x: torch.Tensor, scale: float = 1.0, kernel: str = "gaussian") -> torch.Tensor:
    r"""The sign function convolved with an approximate identity.

    .. math:: \text{gaussian: } 2\Phi(x/\sigma) - 1 = \operatorname{erf}\frac{x}{\sqrt2\,\sigma},
       \qquad \text{logistic: } 2\operatorname{sigmoid}(t x) - 1 = \tanh\frac{t x}{2}.

    Both saturate to exactly :math:`\pm 1` for huge :math:`|x|` (no NaN, zero gradient).

    Chapter: notebooks/dirac-smoothing.ipynb

    %(smooth_params)s

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``, in :math:`[-1, 1]`.
    """
    check_tensor(x, "x", floating=True)
    scale = _check_scale(scale)
    check_choice(kernel, "kernel", KERNELS)
    _check_step_scale(scale, x)
    if kernel == "gaussian":
        return torch.erf(x / (math.sqrt(2.0) * scale))
    return torch.tanh(x / (2.0 * scale))


def _cdf(u: torch.Tensor, kernel: str) -> torch.Tensor:
    """The kernel's cumulative distribution function (the smoothed Heaviside step)."""
    return _ndtr(u) if kernel == "gaussian" else torch.sigmoid(u)


@_fill_params
def smooth_floor(x: torch.Tensor, scale: float = 0.1, kernel: str = "gaussian") -> torch.Tensor:
    r"""The floor function convolved with an approximate identity, as a sum of smoothed steps.

    Writing :math:`\lfloor x \rfloor = \sum_{n \ge 1} H(x - n) - \sum_{n \le 0} [x < n]` with the step
    :math:`H(t) = [t \ge 0]` and the strict indicator in the second sum (so that :math:`\lfloor 0
    \rfloor = 0`; :math:`[x < n]` differs from :math:`H(n - x)` only at :math:`x = n`, which no
    convolution sees), and :math:`H * \delta_s = F(\cdot/s)` with the kernel's distribution
    function :math:`F` (:math:`\Phi` or the sigmoid), the smoothed floor is a sum of :math:`F` terms. Regrouped around
    :math:`n_0 = \lfloor x \rfloor` and :math:`f = x - n_0 \in [0, 1)`, every term is a tail
    probability:

    .. math:: \lfloor x \rfloor_s = n_0 - \sum_{j = 0}^{J} F\Bigl(-\frac{f + j}{s}\Bigr)
       + \sum_{j = 1}^{J} F\Bigl(-\frac{j - f}{s}\Bigr),

    truncated at :math:`J = \lceil c\,s \rceil + 1` with :math:`c = 9` (Gaussian) or 44 (logistic), where
    the dropped terms are below :math:`10^{-19}`. Since only :math:`f` enters the sum, huge inputs stay
    exact (at :math:`x = 10^{30}` the result is :math:`x - 1/2` rounded, i.e. :math:`x`); at every integer
    the value is :math:`n - 1/2`, the midpoint of the jump, and :math:`\lfloor x + 1\rfloor_s =
    \lfloor x \rfloor_s + 1`. The gradient is :math:`\sum_n \delta_s(x - n)`, which never vanishes.
    The work and memory grow like :math:`J`, i.e. linearly in ``scale``, which is therefore limited to 1000.

    Chapter: notebooks/dirac-smoothing.ipynb

    %(smooth_params)s

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``; increasing in ``x``.
    """
    check_tensor(x, "x", floating=True)
    scale = check_float(scale, "scale", low=0.0, high=1000.0, low_open=True)
    check_choice(kernel, "kernel", KERNELS)
    _check_step_scale(scale, x)
    n0 = torch.floor(x)
    frac = torch.where(torch.isfinite(x), x - n0, 0.0).unsqueeze(-1)  # exact, in [0, 1)
    terms = math.ceil(_TAIL[kernel] * scale) + 1
    j = torch.arange(terms + 1, device=x.device, dtype=x.dtype)
    below = _cdf(-(frac + j) / scale, kernel).sum(
        -1
    )  # the steps at n0 - j, j >= 0, not yet reached
    above = _cdf(-(j[1:] - frac) / scale, kernel).sum(
        -1
    )  # the steps at n0 + j, j >= 1, already felt
    return n0 - below + above


class SmoothReLU(nn.Module):
    r"""Module form of :func:`smooth_relu` (ReLU convolved with a Gaussian or logistic kernel).

    Chapter: notebooks/dirac-smoothing.ipynb

    Parameters
    ----------
    scale : float
        Width :math:`s > 0` of the kernel: :math:`\sigma` for ``"gaussian"``, :math:`1/t` for ``"logistic"``.
    kernel : {"gaussian", "logistic"}
        The approximate identity.
    """

    def __init__(self, scale: float = 1.0, kernel: str = "gaussian") -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.kernel = check_choice(kernel, "kernel", KERNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply :func:`smooth_relu` elementwise."""
        return smooth_relu(x, self.scale, self.kernel)

    def extra_repr(self) -> str:
        """Show the kernel and its scale in the module's repr."""
        return f"scale={self.scale:g}, kernel={self.kernel!r}"


# ------------------------------------------------------------------------ NumPy / SciPy reference side
def kernel_pdf(y: np.ndarray | float, scale: float = 1.0, kernel: str = "gaussian") -> np.ndarray:
    r"""The density of the approximate identity, :math:`\delta_s(y) = \delta(y/s)/s`.

    .. math:: \text{gaussian: } \frac{e^{-y^2/(2\sigma^2)}}{\sqrt{2\pi}\,\sigma}, \qquad
       \text{logistic: } t\,\operatorname{sigmoid}(t y)\bigl(1 - \operatorname{sigmoid}(t y)\bigr),

    evaluated in NumPy (float64) without overflow.

    Chapter: notebooks/dirac-smoothing.ipynb

    Parameters
    ----------
    y : float or numpy.ndarray
        Where to evaluate.
    scale : float
        Width :math:`s > 0`: :math:`\sigma` or :math:`1/t`.
    kernel : {"gaussian", "logistic"}
        The approximate identity.

    Returns
    -------
    numpy.ndarray
        The density, same shape as ``y``.
    """
    scale = _check_scale(scale)
    check_choice(kernel, "kernel", KERNELS)
    u = np.asarray(y, dtype=np.float64) / scale
    if kernel == "gaussian":
        return np.exp(-0.5 * u * u) * _INV_SQRT_2PI / scale
    e = np.exp(-np.abs(u))  # sigmoid(u)(1 - sigmoid(u)) = e^{-|u|} / (1 + e^{-|u|})^2
    return e / (1.0 + e) ** 2 / scale


def convolve_quad(
    f: Callable[[float], float],
    x: np.ndarray | float,
    scale: float = 1.0,
    kernel: str = "gaussian",
    *,
    breaks: Callable[[float], list[float]] | None = None,
) -> np.ndarray:
    r"""Numerical convolution :math:`(f * \delta_s)(x) = \int f(x - y)\,\delta_s(y)\,\mathrm{d}y` by quadrature.

    The reference for the closed forms: :func:`scipy.integrate.quad` over :math:`|y| \le c\,s` (:math:`c = 40`
    for the Gaussian, 50 for the logistic kernel, beyond which the kernel's mass is below :math:`10^{-21}`),
    split at the kinks and jumps of :math:`f` so that each piece is smooth.

    Chapter: notebooks/dirac-smoothing.ipynb

    Parameters
    ----------
    f : callable
        A scalar function of one float.
    x : float or numpy.ndarray
        Where to evaluate the convolution.
    scale : float
        Width :math:`s > 0` of the kernel.
    kernel : {"gaussian", "logistic"}
        The approximate identity.
    breaks : callable, optional
        ``breaks(x)`` lists the points :math:`y` where :math:`y \mapsto f(x - y)` has a kink or a jump.

    Returns
    -------
    numpy.ndarray
        The convolution at each ``x`` (float64), same shape as ``x``.
    """
    from scipy import integrate

    scale = _check_scale(scale)
    check_choice(kernel, "kernel", KERNELS)
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    half = (40.0 if kernel == "gaussian" else 50.0) * scale
    xs = np.asarray(x, dtype=np.float64)
    out = np.empty(xs.shape)
    for idx, xi in np.ndenumerate(xs):
        cuts = sorted(p for p in (breaks(float(xi)) if breaks else []) if -half < p < half)
        edges = [-half, *cuts, half]
        out[idx] = sum(
            integrate.quad(
                lambda y, xi=xi: f(xi - y) * float(kernel_pdf(y, scale, kernel)),
                lo,
                hi,
                epsabs=1e-13,
                epsrel=1e-12,
                limit=200,
            )[0]
            for lo, hi in pairwise(edges)
        )
    return out


def squareplus_softplus_gap(x: np.ndarray | float, b: float) -> np.ndarray:
    r"""The gap :math:`g_b(x) = \operatorname{SquarePlus}_b(x) - \operatorname{SoftPlus}(x)` in float64 NumPy.

    Both functions satisfy :math:`f(x) - f(-x) = x`, so :math:`g_b` is even. SquarePlus is evaluated in the
    same cancellation-free form as :func:`squareplus`, SoftPlus as ``logaddexp(x, 0)``.

    Chapter: notebooks/squareplus.ipynb

    Parameters
    ----------
    x : float or numpy.ndarray
        Where to evaluate.
    b : float
        SquarePlus's parameter, :math:`b > 0`.

    Returns
    -------
    numpy.ndarray
        :math:`g_b(x)`, same shape as ``x``.
    """
    b = check_float(b, "b", low=0.0, low_open=True)
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    h = np.hypot(a, math.sqrt(b))
    tail = 0.5 * b / (h + a)  # SquarePlus(-|x|)
    return np.where(x >= 0, x + tail, tail) - np.logaddexp(x, 0.0)


@dataclass(frozen=True)
class MinimaxResult:
    """The SquarePlus parameter closest to SoftPlus in the sup norm, as found by :func:`squareplus_minimax`."""

    b: float  #: the optimal parameter
    gap: float  #: the smallest achievable :math:`\max_x |g_b(x)|`
    x_peak: float  #: where :math:`g_b` peaks on :math:`x > 0` (its largest positive excursion)
    method: str  #: ``"equioscillation"`` or ``"minimize"``


def _gap_peak(b: float) -> tuple[float, float]:
    """Largest value of the gap on x > 0 and where it is (root of the gap's derivative, Brent's method)."""
    from scipy import optimize, special

    root_b = math.sqrt(b)

    def slope(x: float) -> float:  # g_b'(x) = (1 + x/h)/2 - sigmoid(x)
        return 0.5 * (1.0 + x / math.hypot(x, root_b)) - float(special.expit(x))

    x_peak = optimize.brentq(slope, 1e-3, 60.0, xtol=1e-14, rtol=1e-15)
    return float(squareplus_softplus_gap(x_peak, b)), x_peak


def squareplus_minimax(method: str = "equioscillation") -> MinimaxResult:
    r"""The :math:`b` minimising :math:`\max_x |\operatorname{SquarePlus}_b(x) - \operatorname{SoftPlus}(x)|`.

    For :math:`b < 4\ln^2 2` the gap :math:`g_b` is negative at 0 (its minimum, :math:`\sqrt b/2 - \ln 2`) and
    has a positive peak at :math:`\pm x^*`; raising :math:`b` lifts the whole curve. Two independent ways
    to find the best :math:`b`:

    * ``"equioscillation"``: the optimum balances the two excursions,
      :math:`\ln 2 - \sqrt b/2 = g_b(x^*)` with :math:`g_b'(x^*) = 0`: nested root finding (Brent) in
      :math:`x^*` and :math:`b`;
    * ``"minimize"``: direct bounded minimisation over :math:`b \in [1, 4\ln^2 2]` of the sup norm, the sup
      taken on a grid of :math:`|x| \le 40` and refined by bounded scalar maximisation, with no use of the
      structure of the optimum.

    Chapter: notebooks/squareplus.ipynb

    Parameters
    ----------
    method : {"equioscillation", "minimize"}
        Which of the two computations to run.

    Returns
    -------
    MinimaxResult
        ``b``, ``gap``, ``x_peak`` and ``method``.
    """
    from scipy import optimize

    check_choice(method, "method", ("equioscillation", "minimize"))
    b_touch = 4.0 * math.log(2.0) ** 2
    if method == "equioscillation":
        b = optimize.brentq(
            lambda b: (math.log(2.0) - 0.5 * math.sqrt(b)) - _gap_peak(b)[0],
            1.0,
            b_touch,
            xtol=1e-15,
            rtol=1e-15,
        )
        peak, x_peak = _gap_peak(b)
        return MinimaxResult(b=float(b), gap=peak, x_peak=x_peak, method=method)

    grid = np.linspace(0.0, 40.0, 4001)

    def sup_gap(b: float) -> tuple[float, float]:
        """max_x |g_b(x)| and where: every local maximum of |g_b| on the grid, refined by Brent."""
        g = np.abs(squareplus_softplus_gap(grid, b))
        padded = np.concatenate(([-np.inf], g, [-np.inf]))
        peaks = np.flatnonzero((g >= padded[:-2]) & (g >= padded[2:]))
        best = (-np.inf, 0.0)
        for i in peaks:
            lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
            r = optimize.minimize_scalar(
                lambda x: -abs(float(squareplus_softplus_gap(x, b))),
                bounds=(lo, hi),
                method="bounded",
                options={"xatol": 1e-12},
            )
            best = max(best, (max(-float(r.fun), float(g[i])), float(r.x)))
        return best

    res = optimize.minimize_scalar(
        lambda b: sup_gap(b)[0], bounds=(1.0, b_touch), method="bounded", options={"xatol": 1e-13}
    )
    b = float(res.x)
    gap, _ = sup_gap(b)
    x_peak = grid[1:][int(np.argmax(squareplus_softplus_gap(grid[1:], b)))]
    x_peak = optimize.minimize_scalar(
        lambda x: -float(squareplus_softplus_gap(x, b)),
        bounds=(x_peak - 0.01, x_peak + 0.01),
        method="bounded",
        options={"xatol": 1e-12},
    ).x
    return MinimaxResult(b=b, gap=gap, x_peak=float(x_peak), method=method)
