r"""Random directions and initialisation in high dimensions.

The angle between two random directions (its density and a sampler), the fan-in/fan-out rules of
LeCun, Xavier and He initialisation, how far a random matrix is from orthogonal, how activations
scale through a deep random MLP, and exact Gaussian expectations of polynomials (SymPy).

Chapter: notebooks/init-geometry.md

Conventions: see :mod:`suma_lib.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._numerics import rms
from .._validation import (
    check_choice,
    check_compatible,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from ._common import _check_size, _placement

__all__ = [
    "angle_pdf",
    "sample_angles",
    "fan_in_and_fan_out",
    "init_std",
    "normal_init_",
    "uniform_init_",
    "orthogonality_error",
    "activation_norms",
    "gaussian_expectation",
]

_SCHEMES = ("lecun", "xavier", "he")
_NORMS = ("fro", "rms", "spectral", "max")
_rms = rms  # root mean square over the last axis without overflow


def _log_gamma_half_ratio(x: float) -> float:
    r""":math:`\log\Gamma(x + 1/2) - \log\Gamma(x)` for :math:`x > 0`, accurate for huge ``x`` too."""
    if x < 1e4:
        return math.lgamma(x + 0.5) - math.lgamma(x)
    # Asymptotic series; the next term is O(x^-5), far below double precision here.
    return 0.5 * math.log(x) - 1.0 / (8.0 * x) + 1.0 / (192.0 * x**3)


# ----------------------------------------------------------------------------------------- angles
def angle_pdf(theta: torch.Tensor, n: int) -> torch.Tensor:
    r"""Density of the angle between two independent uniformly random directions in
    :math:`\mathbb{R}^n`.

    .. math:: p_n(\theta) = \frac{\Gamma(n/2)}{\Gamma\left(\frac{n-1}{2}\right)\sqrt{\pi}}\,
       \sin^{n-2}\theta, \qquad 0 \le \theta \le \pi,

    and 0 outside :math:`[0, \pi]`. The constant is computed in double precision from log-gamma
    values (with an asymptotic series for huge ``n``), so the density stays accurate for ``n`` in
    the millions, where :math:`\Gamma(n/2)` itself overflows.

    Chapter: notebooks/init-geometry.md

    Parameters
    ----------
    theta : torch.Tensor
        Angles in radians, any shape, floating point, finite.
    n : int
        Dimension of the space, at least 2 (``n = 2`` gives the uniform density :math:`1/\pi`).

    Returns
    -------
    torch.Tensor
        The density at each angle, same shape, dtype and device as ``theta``.

    Raises
    ------
    TypeError
        If ``theta`` is not a floating-point tensor or ``n`` not an int.
    ValueError
        If ``theta`` has NaN or inf, or ``n < 2``.
    """
    check_tensor(theta, "theta", floating=True, finite=True)
    n = check_int(n, "n", low=2)
    inside = (theta >= 0) & (theta <= math.pi)
    if n == 2:
        dens = theta * 0 + 1.0 / math.pi  # constant, but keeps theta's graph (gradient 0)
    else:
        # log of the constant: log Γ(n/2) - log Γ((n-1)/2) - log √π
        log_c = _log_gamma_half_ratio((n - 1) / 2) - 0.5 * math.log(math.pi)
        # sin θ can come out a hair below 0 at θ = π in floating point: clamp. The power (not exp of
        # a
        # log) keeps the gradient finite at θ = 0 and π: c·(n-2)·sin^(n-3)θ·cos θ.
        dens = math.exp(log_c) * torch.sin(theta).clamp_min(0).pow(n - 2)
    return torch.where(inside, dens, torch.zeros_like(dens))


def sample_angles(
    n: int,
    size: int | Sequence[int],
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""Draw angles between two independent uniformly random directions in :math:`\mathbb{R}^n`.

    By rotation invariance the angle between two random directions has the law of the angle between
    one random direction :math:`x/\|x\|`, :math:`x \sim \mathcal{N}(0, I_n)`, and the fixed axis
    :math:`e_1`:

    .. math:: \theta = \operatorname{atan2}\left(\sqrt{x_2^2 + \dots + x_n^2},\; x_1\right) \in [0, \pi],

    whose density is :func:`angle_pdf`. ``atan2`` keeps full relative accuracy near 0 and
    :math:`\pi`, where ``arccos`` of a cosine loses it. The cost is :math:`O(n)` per angle; the
    draws are made in chunks of about :math:`2^{22}` numbers so memory stays bounded.

    Chapter: notebooks/init-geometry.md

    Parameters
    ----------
    n : int
        Dimension, at least 2.
    size : int or tuple of int
        Shape of the returned tensor of angles.
    generator : torch.Generator, optional
        Source of randomness; it must live on ``device``.
    device : str or torch.device, optional
        Where to draw (default: the generator's device, else the CPU); ``"meta"`` gives a meta
        tensor and ``"auto"`` picks as ``suma_lib.get_device`` does.
    dtype : torch.dtype, optional
        Floating-point dtype (default: torch's default dtype).

    Returns
    -------
    torch.Tensor
        Angles in :math:`[0, \pi]` of shape ``size``.
    """
    n = check_int(n, "n", low=2)
    shape = _check_size(size, "size")
    dev, dtype = _placement(device, dtype, generator)
    total = math.prod(shape)
    rows = max(1, (1 << 22) // n)
    parts = []
    for start in range(0, total, rows):
        m = min(rows, total - start)
        x = torch.randn(m, n, generator=generator, device=dev, dtype=dtype)
        parts.append(torch.atan2(torch.linalg.vector_norm(x[:, 1:], dim=-1), x[:, 0]))
    out = torch.cat(parts) if parts else torch.empty(0, device=dev, dtype=dtype)
    return out.reshape(shape)


# -----------------------------------------------------------------------------------------
# initialisation
def fan_in_and_fan_out(shape: Sequence[int] | torch.Tensor) -> tuple[int, int]:
    """Fan-in and fan-out of a weight, with the convention of :mod:`torch.nn.init`.

    A weight of shape ``(out, in, *kernel)`` has ``fan_in = in * prod(kernel)`` and
    ``fan_out = out * prod(kernel)`` (a ``Linear`` weight ``(out, in)`` acts as ``x @ w.T``).

    Chapter: notebooks/init-geometry.md

    Parameters
    ----------
    shape : tuple of int or torch.Tensor
        The weight's shape (or the weight itself), at least 2-D.

    Returns
    -------
    tuple of int
        ``(fan_in, fan_out)``.
    """
    if isinstance(shape, torch.Tensor):
        shape = tuple(shape.shape)
    shape = _check_size(shape, "shape")
    if len(shape) < 2:
        raise ValueError(f"shape must have at least 2 dimensions, got {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def init_std(
    shape: Sequence[int] | torch.Tensor, scheme: str = "lecun", gain: float = 1.0
) -> float:
    r"""Standard deviation of an initialisation scheme for a weight of the given shape.

    .. math:: \sigma^2_{\text{lecun}} = \frac{1}{\text{fan\_in}}, \qquad
       \sigma^2_{\text{xavier}} = \frac{2}{\text{fan\_in} + \text{fan\_out}}, \qquad
       \sigma^2_{\text{he}} = \frac{2}{\text{fan\_in}},

    each multiplied by ``gain**2``. LeCun keeps the second moment of a linear layer's output equal
    to its input's; He doubles it to make up for ReLU halving it
    (:math:`\mathbb{E}[\operatorname{relu}(z)^2] = \sigma^2/2`); Xavier (Glorot) compromises between
    the forward and the backward pass.

    Chapter: notebooks/init-geometry.md

    Parameters
    ----------
    shape : tuple of int or torch.Tensor
        Weight shape ``(fan_out, fan_in, *kernel)`` or the weight itself.
    scheme : {"lecun", "xavier", "he"}
        The rule.
    gain : float
        Extra positive factor on the standard deviation.

    Returns
    -------
    float
        The standard deviation :math:`\sigma`.
    """
    check_choice(scheme, "scheme", _SCHEMES)
    gain = check_float(gain, "gain", low=0.0, low_open=True)
    fan_in, fan_out = fan_in_and_fan_out(shape)
    if fan_in == 0 or fan_out == 0:
        raise ValueError(f"shape must have non-zero fans, got fan_in={fan_in}, fan_out={fan_out}")
    var = {"lecun": 1.0 / fan_in, "xavier": 2.0 / (fan_in + fan_out), "he": 2.0 / fan_in}[scheme]
    return gain * math.sqrt(var)


def normal_init_(
    w: torch.Tensor,
    scheme: str = "lecun",
    *,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill ``w`` in place with :math:`\mathcal{N}(0, \sigma^2)`, :math:`\sigma` from
    :func:`init_std`.

    ``scheme="lecun"`` matches ``torch.nn.init.kaiming_normal_(w, nonlinearity="linear")``, ``"he"``
    matches ``kaiming_normal_(w, nonlinearity="relu")`` and ``"xavier"`` matches ``xavier_normal_``:
    same standard deviation and, for the same generator state, the same numbers.

    Chapter: notebooks/init-geometry.md

    Parameters
    ----------
    w : torch.Tensor
        Floating-point weight, at least 2-D, shape ``(fan_out, fan_in, *kernel)``; any device (``meta`` too).
    scheme : {"lecun", "xavier", "he"}
        The rule.
    gain : float
        Extra positive factor on the standard deviation.
    generator : torch.Generator, optional
        Source of randomness, on ``w``'s device.

    Returns
    -------
    torch.Tensor
        ``w`` itself.
    """
    check_tensor(w, "w", min_dim=2, floating=True)
    check_generator(generator)
    std = init_std(w, scheme, gain)
    with torch.no_grad():
        return w.normal_(0.0, std, generator=generator)


def uniform_init_(
    w: torch.Tensor,
    scheme: str = "lecun",
    *,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill ``w`` in place with :math:`U[-a, a]`, :math:`a = \sqrt{3}\,\sigma`, so that its
    variance is :math:`\sigma^2`.

    :math:`U[-a, a]` has variance :math:`a^2/3`, so ``scheme="lecun"`` draws from
    :math:`U\left[-\sqrt{3/\text{fan\_in}}, \sqrt{3/\text{fan\_in}}\right]`. The schemes match
    ``torch.nn.init.kaiming_uniform_`` (``nonlinearity="linear"`` or ``"relu"``) and
    ``xavier_uniform_``.

    Chapter: notebooks/init-geometry.md

    Parameters
    ----------
    w : torch.Tensor
        Floating-point weight, at least 2-D, shape ``(fan_out, fan_in, *kernel)``.
    scheme : {"lecun", "xavier", "he"}
        The rule (see :func:`init_std`).
    gain : float
        Extra positive factor on the standard deviation.
    generator : torch.Generator, optional
        Source of randomness, on ``w``'s device.

    Returns
    -------
    torch.Tensor
        ``w`` itself.
    """
    check_tensor(w, "w", min_dim=2, floating=True)
    check_generator(generator)
    bound = math.sqrt(3.0) * init_std(w, scheme, gain)
    with torch.no_grad():
        return w.uniform_(-bound, bound, generator=generator)


def orthogonality_error(w: torch.Tensor, norm: str = "fro") -> torch.Tensor:
    r"""How far a (batch of) matrix is from having orthonormal columns (or rows): :math:`\|G - I\|`.

    For ``w`` of shape ``(..., m, n)`` the Gram matrix is taken on the smaller side,
    :math:`G = W^\top W` (:math:`n \times n`) when :math:`m \ge n` and :math:`G = W W^\top`
    otherwise, since only that one can equal the identity. Norms of :math:`E = G - I` (:math:`k
    \times k`, :math:`k = \min(m, n)`):

    * ``"fro"``: Frobenius norm :math:`\|E\|_F`;
    * ``"rms"``: root mean square entry :math:`\|E\|_F / k`, the typical size of
      :math:`\langle w_i, w_j\rangle - \delta_{ij}`;
    * ``"spectral"``: operator norm :math:`\|E\|_2 = \max_i |\sigma_i(W)^2 - 1|`;
    * ``"max"``: largest entry :math:`\max_{ij} |E_{ij}|`.

    For :math:`W` with i.i.d. :math:`\mathcal{N}(0, 1/m)` entries, :math:`\mathbb{E}\|E\|_F^2 =
    n(n+1)/m`, so the entrywise errors shrink like :math:`1/\sqrt{m}` while the spectral error of a
    square matrix does not shrink at all (it tends to 3, the Marchenko–Pastur edge).

    Chapter: notebooks/init-geometry.md

    Parameters
    ----------
    w : torch.Tensor
        Floating-point tensor ``(..., m, n)``.
    norm : {"fro", "rms", "spectral", "max"}
        Which norm of :math:`G - I`.

    Returns
    -------
    torch.Tensor
        One value per matrix, shape ``w.shape[:-2]``; ``inf`` where :math:`G` overflows the dtype.
    """
    check_tensor(w, "w", min_dim=2, floating=True, finite=True)
    check_choice(norm, "norm", _NORMS)
    m, n = w.shape[-2], w.shape[-1]
    if m == 0 or n == 0:
        raise ValueError(f"w must have non-empty matrices, got shape {tuple(w.shape)}")
    gram = w.mT @ w if m >= n else w @ w.mT
    k = gram.shape[-1]
    err = gram - torch.eye(k, device=w.device, dtype=w.dtype)
    finite = torch.isfinite(err).flatten(-2).all(dim=-1)
    err = torch.where(finite[..., None, None], err, torch.zeros_like(err))
    if norm == "spectral":  # E is symmetric: its operator norm is its largest |eigenvalue|
        out = torch.linalg.eigvalsh(err).abs().amax(dim=-1)
    elif norm == "max":
        out = err.abs().amax(dim=(-2, -1))
    else:
        out = _rms(err.flatten(-2)) * (k if norm == "fro" else 1.0)
    return torch.where(finite, out, torch.full_like(out, math.inf))


def activation_norms(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    activation: str | Callable[[torch.Tensor], torch.Tensor] = "relu",
) -> torch.Tensor:
    r"""Root-mean-square activation of every layer of a deep bias-free MLP :math:`h_{l+1} = \phi(h_l W_l^\top)`.

    Returns :math:`\operatorname{rms}(h_l) = \|h_l\|/\sqrt{d_l}` for :math:`l = 0, \dots, L`
    (:math:`h_0 = x`), computed without overflow. With :math:`W_l` drawn with variance
    :math:`c/\text{fan\_in}`, the mean square obeys :math:`\mathbb{E}\,\operatorname{rms}(h_{l+1})^2
    = c\,\kappa\,\operatorname{rms}(h_l)^2` with :math:`\kappa = 1` for the identity and
    :math:`\kappa = 1/2` for ReLU, so :math:`c = 2` (He) keeps a ReLU stack's scale and :math:`c =
    1` halves the mean square at every layer.

    Chapter: notebooks/init-geometry.md

    Parameters
    ----------
    x : torch.Tensor
        Inputs ``(..., d_0)``, floating point, finite.
    weights : list of torch.Tensor
        Weights ``W_l`` of shape ``(d_{l+1}, d_l)`` (``torch.nn.Linear`` layout), same dtype and device as ``x``.
    activation : {"relu", "linear", "tanh"} or callable
        The nonlinearity :math:`\phi` applied after every layer.

    Returns
    -------
    torch.Tensor
        Shape ``(L + 1, *x.shape[:-1])``: row ``l`` is :math:`\operatorname{rms}(h_l)` per input.
    """
    check_tensor(x, "x", min_dim=1, floating=True, finite=True)
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a sequence of 2-D tensors, got {type(weights).__name__}")
    if isinstance(activation, str):
        check_choice(activation, "activation", ("relu", "linear", "tanh"))
        act = {"relu": torch.relu, "linear": lambda t: t, "tanh": torch.tanh}[activation]
    elif callable(activation):
        act = activation
    else:
        raise TypeError(
            f"activation must be a string or a callable, got {type(activation).__name__}"
        )
    h = x
    out = [_rms(h)]
    for i, w in enumerate(weights):
        check_tensor(w, f"weights[{i}]", min_dim=2, floating=True)
        if w.dim() != 2:
            raise ValueError(f"weights[{i}] must be 2-D (out, in), got shape {tuple(w.shape)}")
        check_compatible(h, w, "x", f"weights[{i}]", core_dims=(h.dim(), 2))
        if w.shape[1] != h.shape[-1]:
            raise ValueError(f"weights[{i}] expects inputs of size {w.shape[1]}, got {h.shape[-1]}")
        h = act(h @ w.T)
        out.append(_rms(h))
    return torch.stack(out)


def gaussian_expectation(expr: Any, variables: Sequence[Any], std: Any = 1) -> Any:
    r"""Exact expectation of a polynomial in independent centred Gaussian variables (SymPy).

    Expands ``expr`` into monomials and uses :math:`\mathbb{E}[z^{k}] = \sigma^k (k-1)!!` for even
    :math:`k` and 0 for odd :math:`k`, independently for each variable. This is what a derivation
    with Gaussian weights needs (e.g. :math:`\mathbb{E}\|Av\|^2`), and much faster than ``sympy.stats``.

    Chapter: notebooks/init-geometry.md, notebooks/jl-lemma-applications.md

    Parameters
    ----------
    expr : sympy expression
        A polynomial in ``variables`` (other symbols are treated as constants).
    variables : list of sympy.Symbol
        The independent :math:`\mathcal{N}(0, \sigma^2)` variables.
    std : number or list
        :math:`\sigma` (a number or SymPy expression), shared by all variables, or a list with one per variable.

    Returns
    -------
    sympy expression
        :math:`\mathbb{E}[\text{expr}]`, expanded.
    """
    import sympy as sp

    variables = list(variables) if isinstance(variables, (list, tuple)) else None
    if not variables or not all(isinstance(v, sp.Symbol) for v in variables):
        raise TypeError("variables must be a non-empty list or tuple of sympy Symbols")
    stds = list(std) if isinstance(std, (list, tuple)) else [std] * len(variables)
    if len(stds) != len(variables):
        raise ValueError(
            f"std must be one value or one per variable, got {len(stds)} for {len(variables)}"
        )
    try:
        stds = [sp.sympify(s) for s in stds]
        poly = sp.Poly(sp.expand(sp.sympify(expr)), *variables)
    except (sp.SympifyError, sp.PolynomialError, TypeError) as err:
        raise ValueError(f"expr must be a polynomial in the given variables: {err}") from err
    total = sp.Integer(0)
    for monom, coeff in poly.terms():
        term = coeff
        for power, s in zip(monom, stds, strict=False):
            if power % 2:
                term = 0
                break
            term *= s**power * sp.factorial2(power - 1)
        total += term
    return sp.expand(total)
