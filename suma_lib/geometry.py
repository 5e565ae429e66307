r"""Random geometry in high dimensions (Part I of the book).

Chapters ``init-geometry`` (random directions, initialisation, near-orthogonal random matrices) and
``jl-lemma-applications`` (random projections, the Johnson–Lindenstrauss dimension, sign random projections,
randomized SVD).

Conventions: torch code is device- and dtype-agnostic (new tensors follow their inputs, or the ``device`` and
``dtype`` arguments of the samplers), batched over leading dimensions, and draws its randomness from an optional
:class:`torch.Generator` (which must live on the device the numbers are drawn on). Weight matrices follow
:mod:`torch.nn.init`: a ``Linear`` weight has shape ``(fan_out, fan_in)`` and acts as ``x @ w.T``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._numerics import max_abs, rms, safe_divisor, unit
from ._validation import (
    check_bool,
    check_choice,
    check_compatible,
    check_dtype,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from .device import get_device

__all__ = [
    "angle_pdf",
    "sample_angles",
    "angle_between",
    "fan_in_and_fan_out",
    "init_std",
    "normal_init_",
    "uniform_init_",
    "orthogonality_error",
    "activation_norms",
    "gaussian_matrix",
    "random_projection",
    "jl_min_dim",
    "pairwise_sq_distances",
    "jl_distortion",
    "sign_lsh",
    "hamming_angle",
    "randomized_svd",
    "gaussian_expectation",
    "embedding_entropy",
]

_SCHEMES = ("lecun", "xavier", "he")
_NORMS = ("fro", "rms", "spectral", "max")


# ----------------------------------------------------------------------------------------- helpers
def _log_gamma_half_ratio(x: float) -> float:
    r""":math:`\log\Gamma(x + 1/2) - \log\Gamma(x)` for :math:`x > 0`, accurate also for huge ``x``."""
    if x < 1e4:
        return math.lgamma(x + 0.5) - math.lgamma(x)
    # Asymptotic series; the next term is O(x^-5), far below double precision here.
    return 0.5 * math.log(x) - 1.0 / (8.0 * x) + 1.0 / (192.0 * x**3)


_rms = rms  # root mean square over the last axis without overflow
_unit = unit  # x / ||x|| along the last axis, overflow-free; zero vectors stay zero


def _placement(
    device: str | torch.device | None, dtype: torch.dtype | None, generator: torch.Generator | None
) -> tuple[torch.device | None, torch.dtype]:
    """Validate the ``device``/``dtype``/``generator`` of a sampler; default to the generator's device."""
    check_generator(generator)
    dev = (generator.device if generator is not None else None) if device is None else get_device(device)
    dtype = check_dtype(dtype) or torch.get_default_dtype()
    if generator is not None and dev is not None and dev.type != "meta" and generator.device.type != dev.type:
        raise ValueError(f"generator lives on {generator.device} but the numbers are drawn on {dev}")
    return dev, dtype


# ----------------------------------------------------------------------------------------- angles
def angle_pdf(theta: torch.Tensor, n: int) -> torch.Tensor:
    r"""Density of the angle between two independent uniformly random directions in :math:`\mathbb{R}^n`.

    .. math:: p_n(\theta) = \frac{\Gamma(n/2)}{\Gamma\left(\frac{n-1}{2}\right)\sqrt{\pi}}\,
       \sin^{n-2}\theta, \qquad 0 \le \theta \le \pi,

    and 0 outside :math:`[0, \pi]`. The constant is computed in double precision from log-gamma values (with
    an asymptotic series for huge ``n``), so the density stays accurate for ``n`` in the millions, where
    :math:`\Gamma(n/2)` itself overflows.

    Chapter: notebooks/init-geometry.ipynb

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
        dens = torch.full_like(theta, 1.0 / math.pi)
    else:
        # log of the constant: log Γ(n/2) - log Γ((n-1)/2) - log √π
        log_c = _log_gamma_half_ratio((n - 1) / 2) - 0.5 * math.log(math.pi)
        # sin θ can come out a hair below 0 at θ = π in floating point: clamp. The power (not exp of a
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

    By rotation invariance the angle between two random directions has the law of the angle between one
    random direction :math:`x/\|x\|`, :math:`x \sim \mathcal{N}(0, I_n)`, and the fixed axis :math:`e_1`:

    .. math:: \theta = \operatorname{atan2}\left(\sqrt{x_2^2 + \dots + x_n^2},\; x_1\right) \in [0, \pi],

    whose density is :func:`angle_pdf`. ``atan2`` keeps full relative accuracy near 0 and :math:`\pi`, where
    ``arccos`` of a cosine loses it. The cost is :math:`O(n)` per angle; the draws are made in chunks of about
    :math:`2^{22}` numbers so memory stays bounded.

    Chapter: notebooks/init-geometry.ipynb

    Parameters
    ----------
    n : int
        Dimension, at least 2.
    size : int or tuple of int
        Shape of the returned tensor of angles.
    generator : torch.Generator, optional
        Source of randomness; it must live on ``device``.
    device : str or torch.device, optional
        Where to draw (default: the generator's device, else the CPU); ``"meta"`` gives a meta tensor and
        ``"auto"`` picks as ``suma_lib.get_device`` does.
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


def _check_size(size: Any, name: str) -> tuple[int, ...]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size,)
    if not isinstance(size, (tuple, list, torch.Size)):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {type(size).__name__}")
    return tuple(check_int(s, name, low=0) for s in size)


def angle_between(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Angle between vectors along the last axis, accurate for all angles and any magnitude.

    Uses Kahan's formula on unit vectors :math:`\hat x = x/\|x\|`, :math:`\hat y = y/\|y\|`:

    .. math:: \theta = 2\operatorname{atan2}\left(\|\hat x - \hat y\|,\; \|\hat x + \hat y\|\right),

    which, unlike :math:`\arccos(\hat x\cdot\hat y)`, does not lose accuracy near 0 and :math:`\pi`. The
    vectors are rescaled by their largest entry first, so entries of size :math:`10^{30}` work in float32. A
    zero vector is treated as orthogonal to every non-zero vector (:math:`\theta = \pi/2`); two zero vectors
    give 0.

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    x, y : torch.Tensor
        Floating-point tensors ``(..., d)`` with broadcastable leading dimensions, same dtype and device.

    Returns
    -------
    torch.Tensor
        Angles in :math:`[0, \pi]`, shape of the broadcast leading dimensions.
    """
    check_tensor(x, "x", min_dim=1, floating=True, finite=True)
    check_tensor(y, "y", min_dim=1, floating=True, finite=True)
    check_compatible(x, y, "x", "y", core_dims=1)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have the same last dimension, got {x.shape[-1]} and {y.shape[-1]}")
    ux, uy = _unit(x), _unit(y)
    return 2 * torch.atan2(
        torch.linalg.vector_norm(ux - uy, dim=-1), torch.linalg.vector_norm(ux + uy, dim=-1)
    )


# ----------------------------------------------------------------------------------------- initialisation
def fan_in_and_fan_out(shape: Sequence[int] | torch.Tensor) -> tuple[int, int]:
    """Fan-in and fan-out of a weight, with the convention of :mod:`torch.nn.init`.

    A weight of shape ``(out, in, *kernel)`` has ``fan_in = in * prod(kernel)`` and
    ``fan_out = out * prod(kernel)`` (a ``Linear`` weight ``(out, in)`` acts as ``x @ w.T``).

    Chapter: notebooks/init-geometry.ipynb

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


def init_std(shape: Sequence[int] | torch.Tensor, scheme: str = "lecun", gain: float = 1.0) -> float:
    r"""Standard deviation of an initialisation scheme for a weight of the given shape.

    .. math:: \sigma^2_{\text{lecun}} = \frac{1}{\text{fan\_in}}, \qquad
       \sigma^2_{\text{xavier}} = \frac{2}{\text{fan\_in} + \text{fan\_out}}, \qquad
       \sigma^2_{\text{he}} = \frac{2}{\text{fan\_in}},

    each multiplied by ``gain**2``. LeCun keeps the second moment of a linear layer's output equal to its
    input's; He doubles it to make up for ReLU halving it (:math:`\mathbb{E}[\operatorname{relu}(z)^2] =
    \sigma^2/2`); Xavier (Glorot) compromises between the forward and the backward pass.

    Chapter: notebooks/init-geometry.ipynb

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
    r"""Fill ``w`` in place with :math:`\mathcal{N}(0, \sigma^2)`, :math:`\sigma` from :func:`init_std`.

    ``scheme="lecun"`` matches ``torch.nn.init.kaiming_normal_(w, nonlinearity="linear")``, ``"he"`` matches
    ``kaiming_normal_(w, nonlinearity="relu")`` and ``"xavier"`` matches ``xavier_normal_``: same standard
    deviation and, for the same generator state, the same numbers.

    Chapter: notebooks/init-geometry.ipynb

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
    r"""Fill ``w`` in place with :math:`U[-a, a]`, :math:`a = \sqrt{3}\,\sigma`, so that its variance is :math:`\sigma^2`.

    :math:`U[-a, a]` has variance :math:`a^2/3`, so ``scheme="lecun"`` draws from
    :math:`U\left[-\sqrt{3/\text{fan\_in}}, \sqrt{3/\text{fan\_in}}\right]`. The schemes match
    ``torch.nn.init.kaiming_uniform_`` (``nonlinearity="linear"`` or ``"relu"``) and ``xavier_uniform_``.

    Chapter: notebooks/init-geometry.ipynb

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
    :math:`G = W^\top W` (:math:`n \times n`) when :math:`m \ge n` and :math:`G = W W^\top` otherwise, since
    only that one can equal the identity. Norms of :math:`E = G - I` (:math:`k \times k`,
    :math:`k = \min(m, n)`):

    * ``"fro"``: Frobenius norm :math:`\|E\|_F`;
    * ``"rms"``: root mean square entry :math:`\|E\|_F / k`, the typical size of
      :math:`\langle w_i, w_j\rangle - \delta_{ij}`;
    * ``"spectral"``: operator norm :math:`\|E\|_2 = \max_i |\sigma_i(W)^2 - 1|`;
    * ``"max"``: largest entry :math:`\max_{ij} |E_{ij}|`.

    For :math:`W` with i.i.d. :math:`\mathcal{N}(0, 1/m)` entries, :math:`\mathbb{E}\|E\|_F^2 = n(n+1)/m`,
    so the entrywise errors shrink like :math:`1/\sqrt{m}` while the spectral error of a square matrix does
    not shrink at all (it tends to 3, the Marchenko–Pastur edge).

    Chapter: notebooks/init-geometry.ipynb

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

    Returns :math:`\operatorname{rms}(h_l) = \|h_l\|/\sqrt{d_l}` for :math:`l = 0, \dots, L` (:math:`h_0 =
    x`), computed without overflow. With :math:`W_l` drawn with variance :math:`c/\text{fan\_in}`, the mean
    square obeys :math:`\mathbb{E}\,\operatorname{rms}(h_{l+1})^2 = c\,\kappa\,\operatorname{rms}(h_l)^2`
    with :math:`\kappa = 1` for the identity and :math:`\kappa = 1/2` for ReLU, so :math:`c = 2` (He) keeps a
    ReLU stack's scale and :math:`c = 1` halves the mean square at every layer.

    Chapter: notebooks/init-geometry.ipynb

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
        raise TypeError(f"activation must be a string or a callable, got {type(activation).__name__}")
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


# ----------------------------------------------------------------------------------------- JL lemma
def gaussian_matrix(
    rows: int,
    cols: int,
    std: float = 1.0,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """A ``(rows, cols)`` matrix of i.i.d. :math:`\\mathcal{N}(0, \\text{std}^2)` entries.

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    rows, cols : int
        Shape (non-negative).
    std : float
        Standard deviation (positive).
    generator : torch.Generator, optional
        Source of randomness, on ``device``.
    device : str or torch.device, optional
        Default: the generator's device, else the CPU.
    dtype : torch.dtype, optional
        Default: torch's default dtype.

    Returns
    -------
    torch.Tensor
    """
    rows = check_int(rows, "rows", low=0)
    cols = check_int(cols, "cols", low=0)
    std = check_float(std, "std", low=0.0, low_open=True)
    dev, dtype = _placement(device, dtype, generator)
    return torch.randn(rows, cols, generator=generator, device=dev, dtype=dtype) * std


def random_projection(
    x: torch.Tensor,
    dim: int,
    generator: torch.Generator | None = None,
    *,
    return_matrix: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Gaussian random projection of the last axis: :math:`x \mapsto A x`, :math:`A_{ij} \sim \mathcal{N}(0, 1/n)`.

    With :math:`n` = ``dim`` output coordinates, each :math:`(Ax)_i` is :math:`\mathcal{N}(0, \|x\|^2/n)`, so

    .. math:: \mathbb{E}\|Ax\|^2 = \|x\|^2, \qquad \frac{\|Ax\|^2}{\|x\|^2} \sim \frac{\chi^2_n}{n},

    whatever :math:`x` is. One matrix :math:`A` (``dim x d``) is drawn per call and shared by all leading
    dimensions of ``x``, so pairwise distances of a point set are all mapped by the same linear map (what the
    Johnson–Lindenstrauss lemma needs). Same distribution as
    ``sklearn.random_projection.GaussianRandomProjection``.

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    x : torch.Tensor
        Points ``(..., d)``, floating point.
    dim : int
        Target dimension :math:`n \ge 1`.
    generator : torch.Generator, optional
        Source of randomness, on ``x``'s device.
    return_matrix : bool
        Also return :math:`A`.

    Returns
    -------
    torch.Tensor or tuple of torch.Tensor
        The projected points ``(..., dim)``, and :math:`A` ``(dim, d)`` if ``return_matrix``.
    """
    check_tensor(x, "x", min_dim=1, floating=True)
    dim = check_int(dim, "dim", low=1)
    check_bool(return_matrix, "return_matrix")
    a = gaussian_matrix(dim, x.shape[-1], 1.0 / math.sqrt(dim), generator=generator, device=x.device, dtype=x.dtype)
    y = x @ a.T
    return (y, a) if return_matrix else y


def jl_min_dim(n_points: int, eps: float, constant: float = 24.0) -> int:
    r"""Smallest integer dimension :math:`n` with :math:`n > C \log N / \varepsilon^2` (natural log).

    With :math:`C = 24` (the default, the theory article's constant) a Gaussian random projection to
    :math:`n` dimensions keeps all :math:`\binom{N}{2}` squared distances within a factor
    :math:`1 \pm \varepsilon` with probability at least :math:`1 - 1/N`: the union bound over the pairs with
    the single-vector tail :math:`2e^{-\varepsilon^2 n/8}` gives a failure probability below
    :math:`N^2 e^{-\varepsilon^2 n/8} \le N^{-1}`. :math:`C = 16` only makes that failure probability
    smaller than 1 (such a projection exists).

    ``sklearn.random_projection.johnson_lindenstrauss_min_dim`` uses instead
    :math:`n \ge 4\log N / (\varepsilon^2/2 - \varepsilon^3/3)` (Dasgupta–Gupta), which is smaller by the
    factor :math:`3 - 2\varepsilon` for :math:`0 < \varepsilon < 1`.

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    n_points : int
        Number of points :math:`N \ge 1`.
    eps : float
        Distortion :math:`0 < \varepsilon < 1`.
    constant : float
        :math:`C > 0`.

    Returns
    -------
    int
        :math:`\lfloor C\log N/\varepsilon^2\rfloor + 1`.
    """
    n_points = check_int(n_points, "n_points", low=1)
    eps = check_float(eps, "eps", low=0.0, high=1.0, low_open=True, high_open=True)
    constant = check_float(constant, "constant", low=0.0, low_open=True)
    return math.floor(constant * math.log(n_points) / eps**2) + 1


def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    r"""Squared distances :math:`\|x_i - x_j\|^2` of all pairs :math:`i < j` of a point set.

    Computed with ``torch.cdist`` without its matrix-product shortcut, which would lose accuracy for close
    points (:math:`\|x_i\|^2 + \|x_j\|^2 - 2x_i\cdot x_j` cancels). Pairs come in the order of
    ``torch.triu_indices(N, N, 1)``, the order of ``scipy.spatial.distance.pdist``.

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    x : torch.Tensor
        Points ``(..., N, d)``, floating point, finite.

    Returns
    -------
    torch.Tensor
        ``(..., N * (N - 1) / 2)``; ``inf`` where a squared distance overflows the dtype.
    """
    check_tensor(x, "x", min_dim=2, floating=True, finite=True)
    return _pairwise_sq(x, 1.0)


def _pairwise_sq(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    n = x.shape[-2]
    i, j = torch.triu_indices(n, n, 1, device=x.device)
    d = torch.cdist(x / scale, x / scale, compute_mode="donot_use_mm_for_euclid_dist")
    return d[..., i, j].square()


def jl_distortion(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Relative change of every pairwise squared distance: :math:`\|y_i - y_j\|^2 / \|x_i - x_j\|^2 - 1`, :math:`i < j`.

    A map keeps all distances within :math:`\varepsilon` (in the Johnson–Lindenstrauss sense) exactly when
    every entry lies in :math:`[-\varepsilon, \varepsilon]`. Distances are computed as in
    :func:`pairwise_sq_distances`, after rescaling each point set by its largest entry so that entries as
    large as :math:`10^{30}` do not overflow. A pair of coincident points gives 0 if it is still coincident after the map and ``inf``
    otherwise.

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    x : torch.Tensor
        Original points ``(..., N, d)``.
    y : torch.Tensor
        Mapped points ``(..., N, n)``, same leading shape, dtype and device.

    Returns
    -------
    torch.Tensor
        ``(..., N * (N - 1) / 2)``, pairs in the order of ``torch.triu_indices(N, N, 1)``.
    """
    check_tensor(x, "x", min_dim=2, floating=True, finite=True)
    check_tensor(y, "y", min_dim=2, floating=True, finite=True)
    check_compatible(x, y, "x", "y", core_dims=2)
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"x and y must hold the same points, got shapes {tuple(x.shape)} and {tuple(y.shape)}")

    def sq_dists(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # rescale by the largest entry so that the squares cannot overflow
        scale = max_abs(p, dim=(-2, -1))
        return _pairwise_sq(p, scale), scale[..., 0]

    dx, sx = sq_dists(x)
    dy, sy = sq_dists(y)
    # (sy/sx)^2 can leave the dtype's range (points at 1e-30 mapped to 1e30) while the ratio does not:
    # combine the factors in float64 where the device has it; a collapsed pair (dy = 0) gives exactly -1.
    wide = torch.float32 if x.device.type == "mps" else torch.float64
    factor = (sy.to(wide) / sx.to(wide)).square()
    ratio = torch.where(dy > 0, dy.to(wide) / safe_divisor(dx).to(wide) * factor, 0.0).to(x.dtype) - 1
    zero = torch.where(dy > 0, torch.full_like(dy, math.inf), torch.zeros_like(dy))
    return torch.where(dx > 0, ratio, zero)


def sign_lsh(
    x: torch.Tensor,
    n_bits: int,
    generator: torch.Generator | None = None,
    *,
    planes: torch.Tensor | None = None,
    signed: bool = False,
) -> torch.Tensor:
    r"""Sign random projections (SimHash): bit :math:`b` of :math:`x` is :math:`[\,r_b \cdot x > 0\,]`.

    With :math:`r_b \sim \mathcal{N}(0, I_d)` the hyperplanes are uniformly random, and for two vectors at
    angle :math:`\theta`

    .. math:: P\left[\operatorname{sgn}(r\cdot x) \ne \operatorname{sgn}(r\cdot y)\right] = \frac{\theta}{\pi},

    so the fraction of differing bits estimates :math:`\theta/\pi` (see :func:`hamming_angle`). Codes of two
    sets of vectors are comparable only if they use the same hyperplanes: hash them in one call, or pass the
    same ``planes``.

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    x : torch.Tensor
        Vectors ``(..., d)``, floating point.
    n_bits : int
        Number of hyperplanes (ignored when ``planes`` is given, which must then have ``n_bits`` rows).
    generator : torch.Generator, optional
        Source of randomness for the hyperplanes, on ``x``'s device.
    planes : torch.Tensor, optional
        Hyperplane normals ``(n_bits, d)``, same dtype and device as ``x``.
    signed : bool
        Return :math:`\pm 1` codes in ``x``'s dtype instead of booleans.

    Returns
    -------
    torch.Tensor
        ``(..., n_bits)`` booleans (``True`` where :math:`r_b\cdot x > 0`), or :math:`\pm 1` if ``signed``.
    """
    check_tensor(x, "x", min_dim=1, floating=True, finite=True)
    n_bits = check_int(n_bits, "n_bits", low=1)
    check_bool(signed, "signed")
    if planes is None:
        planes = gaussian_matrix(n_bits, x.shape[-1], generator=generator, device=x.device, dtype=x.dtype)
    else:
        check_tensor(planes, "planes", min_dim=2, floating=True, finite=True)
        check_compatible(x, planes, "x", "planes", core_dims=(x.dim(), 2))
        if planes.shape != (n_bits, x.shape[-1]):
            raise ValueError(f"planes must have shape ({n_bits}, {x.shape[-1]}), got {tuple(planes.shape)}")
    # Normalising first keeps x @ planes.T finite for entries as large as 1e30 (signs are unchanged).
    bits = (_unit(x) @ planes.T) > 0
    if signed:
        return torch.where(bits, torch.ones_like(bits, dtype=x.dtype), -torch.ones_like(bits, dtype=x.dtype))
    return bits


def hamming_angle(codes_a: torch.Tensor, codes_b: torch.Tensor) -> torch.Tensor:
    r"""Angle estimated from two sign-LSH codes: :math:`\hat\theta = \pi \cdot \frac{\#\{b : a_b \ne b_b\}}{B}`.

    Unbiased, :math:`\mathbb{E}\hat\theta = \theta`, with variance :math:`\theta(\pi - \theta)/B` for
    :math:`B` independent hyperplanes (a binomial proportion times :math:`\pi`).

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    codes_a, codes_b : torch.Tensor
        Codes from :func:`sign_lsh` (booleans or :math:`\pm 1`), broadcastable, ``(..., B)``.

    Returns
    -------
    torch.Tensor
        Estimated angles in :math:`[0, \pi]`, shape of the broadcast leading dimensions (floating point:
        the codes' dtype if floating, else torch's default dtype).
    """
    check_tensor(codes_a, "codes_a", min_dim=1)
    check_tensor(codes_b, "codes_b", min_dim=1)
    if codes_a.shape[-1] != codes_b.shape[-1]:
        raise ValueError(f"codes_a and codes_b must have the same length, got {codes_a.shape[-1]} and {codes_b.shape[-1]}")
    if codes_a.device != codes_b.device:
        raise TypeError(f"codes_a and codes_b must be on the same device, got {codes_a.device} and {codes_b.device}")
    if codes_a.shape[-1] == 0:
        raise ValueError("codes_a and codes_b must hold at least one bit")
    dtype = codes_a.dtype if codes_a.is_floating_point() else torch.get_default_dtype()
    return math.pi * (codes_a != codes_b).to(dtype).mean(dim=-1)


# ----------------------------------------------------------------------------------------- randomized SVD
def randomized_svd(
    a: torch.Tensor,
    k: int,
    n_oversamples: int = 10,
    n_iter: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Rank-``k`` truncated SVD by random range finding (Halko, Martinsson and Tropp, 2011).

    With :math:`\ell = k + p` (``p = n_oversamples``) and a Gaussian test matrix
    :math:`\Omega \in \mathbb{R}^{n \times \ell}`:

    1. :math:`Y = A\Omega`, then ``n_iter`` power iterations :math:`Y \leftarrow A A^\top Y`, re-orthonormalised
       by QR after every product (without it, rounding wipes out all but the top direction);
    2. :math:`Q = \operatorname{qr}(Y)`, an orthonormal basis of (approximately) the top-:math:`\ell` range of
       :math:`A`;
    3. :math:`B = Q^\top A` (:math:`\ell \times n`), :math:`B = \tilde U \Sigma V^\top` exactly;
       :math:`U = Q\tilde U`; keep the first ``k`` triplets.

    By Eckart–Young, :math:`\|A - U_k\Sigma_k V_k^\top\|_2 \ge \sigma_{k+1}` and
    :math:`\|\cdot\|_F \ge (\sum_{j>k}\sigma_j^2)^{1/2}` for any rank-``k`` approximation; the power iterations
    bring the randomized error close to these optima when the spectrum decays slowly.

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    a : torch.Tensor
        Matrices ``(..., m, n)``, floating point (real or complex), finite.
    k : int
        Target rank, :math:`1 \le k \le \min(m, n)`.
    n_oversamples : int
        Extra random directions :math:`p \ge 0` (``k + p`` is capped at :math:`\min(m, n)`).
    n_iter : int
        Number of power iterations :math:`q \ge 0`.
    generator : torch.Generator, optional
        Source of randomness for :math:`\Omega`, on ``a``'s device.

    Returns
    -------
    tuple of torch.Tensor
        ``(U, S, Vh)`` with shapes ``(..., m, k)``, ``(..., k)`` (real, descending) and ``(..., k, n)``, as
        ``torch.linalg.svd(a, full_matrices=False)`` truncated to ``k``.
    """
    check_tensor(a, "a", min_dim=2, finite=True)
    if not (a.is_floating_point() or a.is_complex()):
        raise TypeError(f"a must have a floating-point or complex dtype, got {a.dtype}")
    m, n = a.shape[-2], a.shape[-1]
    if min(m, n) == 0:
        raise ValueError(f"a must have non-empty matrices, got shape {tuple(a.shape)}")
    k = check_int(k, "k", low=1, high=min(m, n))
    p = check_int(n_oversamples, "n_oversamples", low=0)
    q = check_int(n_iter, "n_iter", low=0)
    check_generator(generator)
    ell = min(k + p, m, n)
    omega = torch.randn(*a.shape[:-2], n, ell, generator=generator, device=a.device, dtype=a.dtype)
    y = torch.linalg.qr(a @ omega).Q
    for _ in range(q):
        z = torch.linalg.qr(a.mH @ y).Q
        y = torch.linalg.qr(a @ z).Q
    b = y.mH @ a
    u_b, s, vh = torch.linalg.svd(b, full_matrices=False)
    return (y @ u_b)[..., :k], s[..., :k], vh[..., :k, :]


# ----------------------------------------------------------------------------------------- symbolic / scalar
def gaussian_expectation(expr: Any, variables: Sequence[Any], std: Any = 1) -> Any:
    r"""Exact expectation of a polynomial in independent centred Gaussian variables (SymPy).

    Expands ``expr`` into monomials and uses :math:`\mathbb{E}[z^{k}] = \sigma^k (k-1)!!` for even
    :math:`k` and 0 for odd :math:`k`, independently for each variable. This is what a derivation with
    Gaussian weights needs (e.g. :math:`\mathbb{E}\|Av\|^2`), and much faster than ``sympy.stats``.

    Chapter: notebooks/init-geometry.ipynb, notebooks/jl-lemma-applications.ipynb

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
        raise ValueError(f"std must be one value or one per variable, got {len(stds)} for {len(variables)}")
    try:
        stds = [sp.sympify(s) for s in stds]
        poly = sp.Poly(sp.expand(sp.sympify(expr)), *variables)
    except (sp.SympifyError, sp.PolynomialError, TypeError) as err:
        raise ValueError(f"expr must be a polynomial in the given variables: {err}") from err
    total = sp.Integer(0)
    for monom, coeff in poly.terms():
        term = coeff
        for power, s in zip(monom, stds):
            if power % 2:
                term = 0
                break
            term *= s**power * sp.factorial2(power - 1)
        total += term
    return sp.expand(total)


def embedding_entropy(dim: float, n_points: float, grid: int = 20_001) -> float:
    r"""Entropy estimate of a softmax over :math:`N^2` pairs of random :math:`n`-dimensional embeddings.

    The minimum-entropy argument behind the embedding-size rule :math:`n > 8.33\log N`: model
    :math:`p(i, j) \propto e^{\langle u_i, v_j\rangle}` over all :math:`N^2` pairs, with embeddings of norm
    :math:`\sqrt{n}` in random directions, so :math:`\langle u_i, v_j\rangle = n\cos\theta_{ij}` with
    :math:`\theta` distributed as :func:`angle_pdf`. Replacing the sums over pairs by :math:`N^2` times an
    expectation over :math:`\theta`:

    .. math:: H \approx 2\log N + \log\mathbb{E}\left[e^{n\cos\theta}\right]
       - n\,\frac{\mathbb{E}\left[\cos\theta\, e^{n\cos\theta}\right]}{\mathbb{E}\left[e^{n\cos\theta}\right]}.

    The estimate turns negative, i.e. :math:`N` points no longer "fill" the space, once
    :math:`n \gtrsim (4/\log\varphi)\log N \approx 8.31\log N` (:math:`\varphi` the golden ratio).
    The expectations are computed in float64 with a log-sum-exp trapezoid rule in :math:`t = \cos\theta`.

    Chapter: notebooks/jl-lemma-applications.ipynb

    Parameters
    ----------
    dim : float
        Embedding dimension :math:`n \ge 2` (real, so that the crossing can be solved for).
    n_points : float
        Number of items :math:`N \ge 1`.
    grid : int
        Number of grid points for the integral (at least 1001).

    Returns
    -------
    float
        The entropy estimate in nats.
    """
    import numpy as np
    from scipy.special import gammaln, logsumexp

    n = check_float(dim, "dim", low=2.0)
    big_n = check_float(n_points, "n_points", low=1.0)
    grid = check_int(grid, "grid", low=1001)
    t = np.linspace(-1.0, 1.0, grid)[1:-1]
    dt = t[1] - t[0]
    # density of t = cos θ: Γ(n/2)/(Γ((n-1)/2)√π) (1 - t²)^((n-3)/2)
    log_dens = gammaln(n / 2) - gammaln((n - 1) / 2) - 0.5 * np.log(np.pi) + (n - 3) / 2 * np.log1p(-t * t)
    log_w = log_dens + n * t
    log_z = logsumexp(log_w) + np.log(dt)
    tilted_mean = float(np.sum(np.exp(log_w - log_z) * t) * dt)
    return float(2 * np.log(big_n) + log_z - n * tilted_mean)
