r"""Smoothing by approximate identities: ReLU, absolute value, maximum, sign and floor.

Private; import from :mod:`suma_lib.smooth`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._smooth_common import (
    _FLAT,
    _INV_SQRT_2,
    _TAIL,
    KERNELS,
    _check_scale,
    _check_step_scale,
    _const,
    _fill_params,
    _ndtr,
)
from ._validation import check_choice, check_compatible, check_float, check_tensor


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

    Chapter: notebooks/dirac-smoothing.md

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
    if (type(x) is torch.Tensor and kernel == "gaussian" and type(scale) in (float, int)
            and x.dtype in _GAUSS_FAST and _GAUSS_FAST[x.dtype] <= scale < math.inf
            and not (x.requires_grad and torch.is_grad_enabled())):
        return _gaussian_relu(x, scale)  # the hot path: the checks above are the full checks here
    check_tensor(x, "x", floating=True)
    scale = _check_scale(scale)
    check_choice(kernel, "kernel", KERNELS)
    if x.requires_grad and torch.is_grad_enabled():
        return _SmoothReLU.apply(x, scale, kernel)
    return _smooth_relu_values(x, scale, kernel, grad=False)[0]


# dtype -> smallest scale for which 1/(scale sqrt 2) is finite (the direct Gaussian path)
_GAUSS_FAST = {torch.float32: 1e-30, torch.float64: 1e-300}
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _gaussian_relu(x: torch.Tensor, scale: float) -> torch.Tensor:
    """relu(x) + s g(|x|/s) for the Gaussian kernel in nine kernels, with z = |x|/(s sqrt 2) = a/sqrt 2:
    g = phi(a) - a Phi(-a) = exp(-z^2 - ln sqrt(2 pi)) - (z/sqrt 2) erfc(z); z clamped at _FLAT/sqrt 2
    (inf included), where g has underflowed to 0 already."""
    z = torch.abs(x).mul_(_INV_SQRT_2 / scale).clamp_(max=_FLAT * _INV_SQRT_2)
    g = torch.addcmul(_const(-_LOG_SQRT_2PI, z), z, z, value=-1.0).exp_()
    g.addcmul_(torch.erfc(z), z, value=-_INV_SQRT_2)
    return torch.clamp(x, min=0.0).add_(g, alpha=scale)


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
    if kernel == "gaussian" and x.dtype in _GAUSS_FAST and scale >= _GAUSS_FAST[x.dtype]:
        return _gaussian_relu(x, scale), None
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

    Chapter: notebooks/dirac-smoothing.md

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

    Chapter: notebooks/dirac-smoothing.md

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

    Chapter: notebooks/dirac-smoothing.md

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
    :math:`H(y) = [y \ge 0]` (the strict indicator in the second sum is what makes :math:`\lfloor 0 \rfloor
    = 0`), and :math:`H * \delta_s = F(\cdot/s)` with the kernel's distribution function :math:`F`
    (:math:`\Phi` or the sigmoid; :math:`[\,\cdot < n]` smooths to :math:`F((n - \cdot)/s)`, the kernels
    being symmetric), the smoothed floor is a sum of :math:`F` terms. Regrouped around
    :math:`n_0 = \lfloor x \rfloor` and :math:`f = x - n_0 \in [0, 1)`, every term is a tail probability:

    .. math:: \lfloor x \rfloor_s = n_0 - \sum_{j = 0}^{J} F\Bigl(-\frac{f + j}{s}\Bigr)
       + \sum_{j = 1}^{J} F\Bigl(-\frac{j - f}{s}\Bigr),

    truncated at :math:`J = \lceil c\,s \rceil + 1` with :math:`c = 9` (Gaussian) or 44 (logistic), where
    the dropped terms are below :math:`10^{-19}`. Since only :math:`f` enters the sum, huge inputs stay
    exact (at :math:`x = 10^{30}` the result is :math:`x - 1/2` rounded, i.e. :math:`x`); at every integer
    the value is :math:`n - 1/2`, the midpoint of the jump, and :math:`\lfloor x + 1\rfloor_s =
    \lfloor x \rfloor_s + 1`. The gradient is :math:`\sum_n \delta_s(x - n)`, which never vanishes.
    The work and memory grow like :math:`J`, i.e. linearly in ``scale``, which is therefore limited to 1000.

    Chapter: notebooks/dirac-smoothing.md

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

    Chapter: notebooks/dirac-smoothing.md

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
