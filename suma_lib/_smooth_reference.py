r"""The NumPy/SciPy reference side of :mod:`suma_lib.smooth`: kernel densities, quadrature, SquarePlus minimax.

Private; import from :mod:`suma_lib.smooth`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from ._smooth_common import (
    _INV_SQRT_2PI,
    KERNELS,
    _check_scale,
)
from ._validation import check_choice, check_float


# ------------------------------------------------------------------------ NumPy / SciPy reference side
def kernel_pdf(y: np.ndarray | float, scale: float = 1.0, kernel: str = "gaussian") -> np.ndarray:
    r"""The density of the approximate identity, :math:`\delta_s(y) = \delta(y/s)/s`.

    .. math:: \text{gaussian: } \frac{e^{-y^2/(2\sigma^2)}}{\sqrt{2\pi}\,\sigma}, \qquad
       \text{logistic: } t\,\operatorname{sigmoid}(t y)\bigl(1 - \operatorname{sigmoid}(t y)\bigr),

    evaluated in NumPy (float64) without overflow.

    Chapter: notebooks/dirac-smoothing.md

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

    Chapter: notebooks/dirac-smoothing.md

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

    Chapter: notebooks/squareplus.md

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

    Chapter: notebooks/squareplus.md

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
