r"""Random projections: the Johnson–Lindenstrauss lemma and its applications.

Gaussian random projections and the JL dimension, pairwise distortion, sign random projections
(SimHash) and the angle they estimate, randomized SVD, and the minimum-entropy estimate behind the
embedding-size rule :math:`n > 8.33\log N`.

Chapter: notebooks/jl-lemma-applications.md

Conventions: see :mod:`suma_lib.geometry`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._numerics import blas_matmul, max_abs, safe_divisor, unit, work_dtype
from .._validation import (
    check_bool,
    check_compatible,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from ._common import _placement

__all__ = [
    "angle_between",
    "gaussian_matrix",
    "random_projection",
    "jl_min_dim",
    "pairwise_sq_distances",
    "jl_distortion",
    "sign_lsh",
    "hamming_angle",
    "randomized_svd",
    "embedding_entropy",
]

_unit = unit  # x / ||x|| along the last axis, overflow-free; zero vectors stay zero


def angle_between(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Angle between vectors along the last axis, accurate for all angles and any magnitude.

    Uses Kahan's formula on unit vectors :math:`\hat x = x/\|x\|`, :math:`\hat y = y/\|y\|`:

    .. math:: \theta = 2\operatorname{atan2}\left(\|\hat x - \hat y\|,\; \|\hat x + \hat y\|\right),

    which, unlike :math:`\arccos(\hat x\cdot\hat y)`, does not lose accuracy near 0 and :math:`\pi`.
    The vectors are rescaled by their largest entry first, so entries of size :math:`10^{30}` work
    in float32. A zero vector is treated as orthogonal to every non-zero vector (:math:`\theta =
    \pi/2`); two zero vectors give 0.

    Chapter: notebooks/jl-lemma-applications.md

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
        raise ValueError(
            f"x and y must have the same last dimension, got {x.shape[-1]} and {y.shape[-1]}"
        )
    ux, uy = _unit(x), _unit(y)
    return 2 * torch.atan2(
        torch.linalg.vector_norm(ux - uy, dim=-1), torch.linalg.vector_norm(ux + uy, dim=-1)
    )


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

    Chapter: notebooks/jl-lemma-applications.md

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


# From this many entries a float64 matrix on the CPU is drawn by NumPy's ziggurat sampler, seeded from the
# torch generator: twice as fast as torch's float64 normal sampler (which is not vectorised), full precision.
_NUMPY_DRAW_MIN = 1 << 16


def _numpy_normals(rows: int, cols: int, generator: torch.Generator | None) -> torch.Tensor:
    """A float64 ``(rows, cols)`` N(0, 1) matrix on the CPU from NumPy's generator, whose seed is one draw of
    ``generator`` (torch's global generator when None): reproducible under the same torch seed."""
    _placement(torch.device("cpu"), torch.float64, generator)
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((rows, cols)))


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

    whatever :math:`x` is. One matrix :math:`A` (``dim x d``) is drawn per call and shared by all
    leading dimensions of ``x``, so pairwise distances of a point set are all mapped by the same
    linear map (what the Johnson–Lindenstrauss lemma needs). Same distribution as
    ``sklearn.random_projection.GaussianRandomProjection``. A float64 matrix of at least 65,536 entries on
    the CPU is drawn by NumPy's sampler (twice as fast as torch's in float64), seeded by one draw from
    ``generator``, so the same torch seed still gives the same matrix.

    Chapter: notebooks/jl-lemma-applications.md

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
    std = 1.0 / math.sqrt(dim)
    # draw N(0, 1) and scale the (smaller) output instead of the matrix; 2-D products go through
    # BLAS
    d = x.shape[-1]
    if x.device.type == "cpu" and x.dtype == torch.float64 and dim * d >= _NUMPY_DRAW_MIN:
        g = _numpy_normals(dim, d, generator)
    else:
        g = gaussian_matrix(dim, d, generator=generator, device=x.device, dtype=x.dtype)
    x2 = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    y = blas_matmul(x2, g.T).reshape(*x.shape[:-1], dim) * std
    return (y, g * std) if return_matrix else y


def jl_min_dim(n_points: int, eps: float, constant: float = 24.0) -> int:
    r"""Smallest integer dimension :math:`n` with :math:`n > C \log N / \varepsilon^2` (natural log).

    With :math:`C = 24` (the default, the theory article's constant) a Gaussian random projection to
    :math:`n` dimensions keeps all :math:`\binom{N}{2}` squared distances within a factor
    :math:`1 \pm \varepsilon` with probability at least :math:`1 - 1/N`: the union bound over the
    pairs with the single-vector tail :math:`2e^{-\varepsilon^2 n/8}` gives a failure probability
    below :math:`N^2 e^{-\varepsilon^2 n/8} \le N^{-1}`. :math:`C = 16` only makes that failure
    probability smaller than 1 (such a projection exists).

    ``sklearn.random_projection.johnson_lindenstrauss_min_dim`` uses instead
    :math:`n \ge 4\log N / (\varepsilon^2/2 - \varepsilon^3/3)` (Dasgupta–Gupta), which is smaller
    by the factor :math:`3 - 2\varepsilon` for :math:`0 < \varepsilon < 1`.

    Chapter: notebooks/jl-lemma-applications.md

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

    Computed with ``torch.cdist`` without its matrix-product shortcut, which would lose accuracy for
    close points (:math:`\|x_i\|^2 + \|x_j\|^2 - 2x_i\cdot x_j` cancels). Pairs come in the order of
    ``torch.triu_indices(N, N, 1)``, the order of ``scipy.spatial.distance.pdist``.

    Chapter: notebooks/jl-lemma-applications.md

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
    """Squared distances of the pairs i < j of ``x / scale`` (half precision: cdist in float32)."""
    n = x.shape[-2]
    i, j = torch.triu_indices(n, n, 1, device=x.device)
    y = (x / scale).to(work_dtype(x.dtype))
    d = torch.cdist(y, y, compute_mode="donot_use_mm_for_euclid_dist")
    return d[..., i, j].square().to(x.dtype)


def jl_distortion(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Relative change of every pairwise squared distance: :math:`\|y_i - y_j\|^2 / \|x_i - x_j\|^2
    - 1`, :math:`i < j`.

    A map keeps all distances within :math:`\varepsilon` (in the Johnson–Lindenstrauss sense)
    exactly when every entry lies in :math:`[-\varepsilon, \varepsilon]`. Distances are computed as in
    :func:`pairwise_sq_distances`, after rescaling each point set by its largest entry so that
    entries as large as :math:`10^{30}` do not overflow. A pair of coincident points gives 0 if it
    is still coincident after the map and ``inf`` otherwise.

    Chapter: notebooks/jl-lemma-applications.md

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
        raise ValueError(
            f"x and y must hold the same points, got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dtype = x.dtype
    x, y = x.to(work_dtype(dtype)), y.to(work_dtype(dtype))  # half precision: computed in float32

    def sq_dists(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # rescale by the largest entry so that the squares cannot overflow
        scale = max_abs(p, dim=(-2, -1))
        return _pairwise_sq(p, scale), scale[..., 0]

    dx, sx = sq_dists(x)
    dy, sy = sq_dists(y)
    # (sy/sx)^2 can leave the dtype's range (points at 1e-30 mapped to 1e30) while the ratio does
    # not:
    # combine the factors in float64 where the device has it; a collapsed pair (dy = 0) gives
    # exactly -1.
    wide = torch.float32 if x.device.type == "mps" else torch.float64
    factor = (sy.to(wide) / sx.to(wide)).square()
    ratio = (
        torch.where(dy > 0, dy.to(wide) / safe_divisor(dx).to(wide) * factor, 0.0).to(x.dtype) - 1
    )
    zero = torch.where(dy > 0, torch.full_like(dy, math.inf), torch.zeros_like(dy))
    return torch.where(dx > 0, ratio, zero).to(dtype)


def sign_lsh(
    x: torch.Tensor,
    n_bits: int,
    generator: torch.Generator | None = None,
    *,
    planes: torch.Tensor | None = None,
    signed: bool = False,
) -> torch.Tensor:
    r"""Sign random projections (SimHash): bit :math:`b` of :math:`x` is :math:`[\,r_b \cdot x >
    0\,]`.

    With :math:`r_b \sim \mathcal{N}(0, I_d)` the hyperplanes are uniformly random, and for two
    vectors at angle :math:`\theta`

    .. math:: P\left[\operatorname{sgn}(r\cdot x) \ne \operatorname{sgn}(r\cdot y)\right] = \frac{\theta}{\pi},

    so the fraction of differing bits estimates :math:`\theta/\pi` (see :func:`hamming_angle`).
    Codes of two sets of vectors are comparable only if they use the same hyperplanes: hash them in
    one call, or pass the same ``planes``.

    Chapter: notebooks/jl-lemma-applications.md

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
        planes = gaussian_matrix(
            n_bits, x.shape[-1], generator=generator, device=x.device, dtype=x.dtype
        )
    else:
        check_tensor(planes, "planes", min_dim=2, floating=True, finite=True)
        check_compatible(x, planes, "x", "planes", core_dims=(x.dim(), 2))
        if planes.shape != (n_bits, x.shape[-1]):
            raise ValueError(
                f"planes must have shape ({n_bits}, {x.shape[-1]}), got {tuple(planes.shape)}"
            )
    # Normalising first keeps x @ planes.T finite for entries as large as 1e30 (signs are
    # unchanged).
    bits = (_unit(x) @ planes.T) > 0
    if signed:
        return torch.where(
            bits, torch.ones_like(bits, dtype=x.dtype), -torch.ones_like(bits, dtype=x.dtype)
        )
    return bits


def hamming_angle(codes_a: torch.Tensor, codes_b: torch.Tensor) -> torch.Tensor:
    r"""Angle estimated from two sign-LSH codes: :math:`\hat\theta = \pi \cdot \frac{\#\{b : a_b \ne b_b\}}{B}`.

    Unbiased, :math:`\mathbb{E}\hat\theta = \theta`, with variance :math:`\theta(\pi - \theta)/B`
    for :math:`B` independent hyperplanes (a binomial proportion times :math:`\pi`).

    Chapter: notebooks/jl-lemma-applications.md

    Parameters
    ----------
    codes_a, codes_b : torch.Tensor
        Codes from :func:`sign_lsh` (booleans or :math:`\pm 1`), broadcastable, ``(..., B)``.

    Returns
    -------
    torch.Tensor
        Estimated angles in :math:`[0, \pi]`, shape of the broadcast leading dimensions (floating
        point: the codes' dtype if floating, else torch's default dtype).
    """
    check_tensor(codes_a, "codes_a", min_dim=1)
    check_tensor(codes_b, "codes_b", min_dim=1)
    if codes_a.shape[-1] != codes_b.shape[-1]:
        raise ValueError(
            f"codes_a and codes_b must have the same length, got {codes_a.shape[-1]} and "
            f"{codes_b.shape[-1]}"
        )
    check_compatible(codes_a, codes_b, "codes_a", "codes_b", core_dims=1, same_dtype=False)
    if codes_a.shape[-1] == 0:
        raise ValueError("codes_a and codes_b must hold at least one bit")
    dtype = codes_a.dtype if codes_a.is_floating_point() else torch.get_default_dtype()
    return math.pi * (codes_a != codes_b).to(dtype).mean(dim=-1)


# -----------------------------------------------------------------------------------------
# randomized SVD
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

    1. :math:`Y = A\Omega`, then ``n_iter`` power iterations :math:`Y \leftarrow A A^\top Y`, each
       product re-orthonormalised by QR (without it, rounding wipes out all but the top direction;
       the QR of an :math:`m \times \ell` sketch costs far less than a product with :math:`A`);
    2. :math:`Q = \operatorname{qr}(Y)`, an orthonormal basis of (approximately) the
       top-:math:`\ell` range of :math:`A`;
    3. :math:`B = Q^\top A` (:math:`\ell \times n`), :math:`B = \tilde U \Sigma V^\top` exactly;
       :math:`U = Q\tilde U`; keep the first ``k`` triplets.

    A wide matrix (:math:`m < n`) is factored through :math:`A^\top`, so that the small SVD is of an
    :math:`\ell \times \min(m, n)` matrix, and the sketches are kept as :math:`\ell`-row matrices
    (:math:`Y^\top`), the layout in which the products with :math:`A` are fastest. That is
    :math:`2q + 2` products with :math:`A` in all, as in scikit-learn's ``randomized_svd`` (large
    CPU products in one-thread torch go through NumPy's BLAS, see
    :func:`suma_lib._numerics.blas_matmul`). Finiteness is checked on the first sketch :math:`Y`,
    which holds NaN or inf whenever :math:`A` does, instead of on :math:`A` itself (a full pass over
    :math:`A` costs as much as a product with it).

    By Eckart–Young, :math:`\|A - U_k\Sigma_k V_k^\top\|_2 \ge \sigma_{k+1}` and
    :math:`\|\cdot\|_F \ge (\sum_{j>k}\sigma_j^2)^{1/2}` for any rank-``k`` approximation; the power
    iterations bring the randomized error close to these optima when the spectrum decays slowly.

    Chapter: notebooks/jl-lemma-applications.md

    Parameters
    ----------
    a : torch.Tensor
        Matrices ``(..., m, n)``, floating point (real or complex), finite; float16/bfloat16 are
        computed in float32 (QR and SVD have no half-precision kernels) and returned in ``a``'s dtype.
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
        ``(U, S, Vh)`` with shapes ``(..., m, k)``, ``(..., k)`` (real, descending) and
        ``(..., k, n)``, as ``torch.linalg.svd(a, full_matrices=False)`` truncated to ``k``.
    """
    check_tensor(a, "a", min_dim=2)  # finiteness is checked on the first sketch, far smaller than a
    if not (a.is_floating_point() or a.is_complex()):
        raise TypeError(f"a must have a floating-point or complex dtype, got {a.dtype}")
    m, n = a.shape[-2], a.shape[-1]
    if min(m, n) == 0:
        raise ValueError(f"a must have non-empty matrices, got shape {tuple(a.shape)}")
    k = check_int(k, "k", low=1, high=min(m, n))
    p = check_int(n_oversamples, "n_oversamples", low=0)
    q = check_int(n_iter, "n_iter", low=0)
    check_generator(generator)
    dtype = a.dtype
    x = a.to(work_dtype(dtype))
    flip = m < n
    if flip:  # factor A^H (tall): the small SVD is then l x min(m, n)
        x = x.mH
    ell = min(k + p, m, n)
    # Sketches are stored transposed, as l x (rows) matrices: yt = (x Omega)^H, zt = (x^H Y)^H.
    omega_t = torch.randn(
        *x.shape[:-2], ell, x.shape[-1], generator=generator, device=x.device, dtype=x.dtype
    )
    yt = blas_matmul(omega_t, x.mH)
    if x.device.type != "meta" and not bool(torch.isfinite(yt).all()):
        # NaN or inf in a always reach the sketch (a Gaussian weight is 0 with probability 0)
        check_tensor(a, "a", finite=True)
        raise ValueError("a is finite but its products overflow the dtype: rescale a first")
    for _ in range(q):
        zt = blas_matmul(_normalize_rows(yt), x)
        yt = blas_matmul(_normalize_rows(zt), x.mH)
    qt = _orth_rows(yt)  # Q^H
    u_b, s, vh = torch.linalg.svd(blas_matmul(qt, x), full_matrices=False)  # B = Q^H x = U_b S V^H
    u = qt.mH @ u_b[..., :k]
    s, vh = s[..., :k], vh[..., :k, :]
    if flip:  # A = x^H = V S U^H
        u, vh = vh.mH, u.mH
    return u.to(dtype), s.to(_real_dtype(dtype)), vh.to(dtype)


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype of the singular values for ``dtype`` (complex -> its real counterpart)."""
    return torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype


def _normalize_rows(t: torch.Tensor) -> torch.Tensor:
    """Rows spanning those of ``t``, well conditioned: Cholesky-QR (``L^{-1} t`` with ``t t^H = L L^H``).

    Between power iterations only the span matters, so the cheap Cholesky-QR (two small products and
    a triangular solve) replaces Householder QR; a rank-deficient ``t`` (Cholesky fails) falls back to QR.
    """
    chol, info = torch.linalg.cholesky_ex(t @ t.mH)
    if t.device.type == "meta" or bool((info != 0).any()):
        return _orth_rows(t)
    return torch.linalg.solve_triangular(chol, t, upper=False)


def _orth_rows(t: torch.Tensor) -> torch.Tensor:
    """A matrix with orthonormal rows spanning the rows of ``t`` (``l x r``, ``l <= r``), by QR."""
    return torch.linalg.qr(t.mH).Q.mH


# ----------------------------------------------------------------------------------------- symbolic
# / scalar
def embedding_entropy(dim: float, n_points: float, grid: int = 20_001) -> float:
    r"""Entropy estimate of a softmax over :math:`N^2` pairs of random :math:`n`-dimensional embeddings.

    The minimum-entropy argument behind the embedding-size rule :math:`n > 8.33\log N`: model
    :math:`p(i, j) \propto e^{\langle u_i, v_j\rangle}` over all :math:`N^2` pairs, with embeddings
    of norm :math:`\sqrt{n}` in random directions, so :math:`\langle u_i, v_j\rangle =
    n\cos\theta_{ij}` with :math:`\theta` distributed as
    :func:`~suma_lib.geometry.random_init.angle_pdf`. Replacing the sums over
    pairs by :math:`N^2` times an expectation over :math:`\theta`:

    .. math:: H \approx 2\log N + \log\mathbb{E}\left[e^{n\cos\theta}\right]
       - n\,\frac{\mathbb{E}\left[\cos\theta\,
         e^{n\cos\theta}\right]}{\mathbb{E}\left[e^{n\cos\theta}\right]}.

    The estimate turns negative, i.e. :math:`N` points no longer "fill" the space, once
    :math:`n \gtrsim (4/\log\varphi)\log N \approx 8.31\log N` (:math:`\varphi` the golden ratio).
    The expectations are computed in float64 with a log-sum-exp trapezoid rule in :math:`t = \cos\theta`.

    Chapter: notebooks/jl-lemma-applications.md

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
    log_dens = (
        gammaln(n / 2) - gammaln((n - 1) / 2) - 0.5 * np.log(np.pi) + (n - 3) / 2 * np.log1p(-t * t)
    )
    log_w = log_dens + n * t
    log_z = logsumexp(log_w) + np.log(dt)
    tilted_mean = float(np.sum(np.exp(log_w - log_z) * t) * dt)
    return float(2 * np.log(big_n) + log_z - n * tilted_mean)
