r"""FAVOR+: Performer's positive orthogonal random features for softmax attention.

Chapter: ``notebooks/performer.ipynb`` (Su Jianlin, 《Performer:用随机投影将Attention的复杂度线性化》,
2020-12-01, https://kexue.fm/archives/7921; Choromanski et al., arXiv:2009.14794).

For :math:`\omega \sim \mathcal N(0, I_d)`, completing the square in the Gaussian integral gives

.. math:: e^{x\cdot y} = \mathbb E_\omega\!\left[e^{\omega\cdot x - \lVert x\rVert^2/2}\,
   e^{\omega\cdot y - \lVert y\rVert^2/2}\right],

so with :math:`m` draws :math:`\omega_1, \dots, \omega_m` the positive features
:math:`\phi(x)_l = e^{\omega_l\cdot x - \lVert x\rVert^2/2}/\sqrt m` give an unbiased estimate
:math:`\phi(x)^\top\phi(y) \approx e^{x\cdot y}`. Scaling queries and keys by :math:`d^{-1/4}` turns this into
:math:`e^{q\cdot k/\sqrt d}`, the softmax kernel, and attention becomes linear attention with these features
(computed by the same engine as :func:`suma_lib.attention.linear.linear_attention`, causal form included).
Drawing the :math:`\omega_l` in orthogonal blocks (with chi-distributed lengths, so that each one is still
:math:`\mathcal N(0, I_d)`) keeps the estimate unbiased and lowers its variance.
"""

from __future__ import annotations

import math

import torch

from .._validation import check_generator, check_int, check_tensor
from .exact import _default_scale
from .linear import DEFAULT_CHUNK, _check_common, _compute_dtype, _kernel_attention

__all__ = [
    "draw_orthogonal_features",
    "favor_attention",
    "favor_features",
    "favor_flops",
    "softmax_attention_flops",
]


def draw_orthogonal_features(
    m: int,
    d: int,
    generator: torch.Generator | None = None,
    *,
    orthogonal: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""Draw the random projection :math:`\Omega \in \mathbb R^{m \times d}` of FAVOR+.

    ``orthogonal=True``: rows come in blocks of :math:`d` mutually orthogonal directions (QR of a
    Gaussian :math:`d \times d` block, with the signs of :math:`\operatorname{diag} R` folded in so that
    the block is Haar-distributed), each scaled by an independent :math:`\chi_d` length (the norm of a
    fresh Gaussian vector). Every row is then exactly :math:`\mathcal N(0, I_d)`, as the unbiasedness of
    the estimator needs, while rows within a block are orthogonal. The last block is truncated when
    :math:`d` does not divide :math:`m`. ``orthogonal=False``: i.i.d. Gaussian rows.

    Parameters
    ----------
    m : int
        Number of random features (rows).
    d : int
        Dimension of queries and keys (columns).
    generator : torch.Generator, optional
        Source of randomness. Draws happen on its device and are moved to ``device`` if that differs.
    orthogonal : bool
        Orthogonal blocks (default) or i.i.d. rows.
    device : torch.device or str, optional
        Where the result lives (the generator's device, or the CPU, by default).
    dtype : torch.dtype, optional
        Floating-point dtype of the result (float32 by default); half precisions are drawn in float32.

    Returns
    -------
    torch.Tensor, shape ``(m, d)``

    Notes
    -----
    Chapter: ``notebooks/performer.ipynb``.
    """
    m = check_int(m, "m", low=1)
    d = check_int(d, "d", low=1)
    check_generator(generator)
    if not isinstance(orthogonal, bool):
        raise TypeError(f"orthogonal must be a bool, got {type(orthogonal).__name__}")
    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    target = torch.device(device) if device is not None else (generator.device if generator else torch.device("cpu"))
    # Draw where the generator lives (the meta device needs no values and accepts any generator).
    where = target if generator is None or target.type == "meta" else generator.device
    work = torch.float64 if dtype == torch.float64 else torch.float32

    def gauss(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=where, dtype=work)

    if not orthogonal:
        return gauss(m, d).to(device=target, dtype=dtype)
    blocks = -(-m // d)
    q, r = torch.linalg.qr(gauss(blocks, d, d))
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    q = q * torch.where(sign == 0, torch.ones_like(sign), sign).unsqueeze(-2)  # Haar: fix QR's sign choice
    directions = q.transpose(-2, -1).reshape(blocks * d, d)[:m]  # orthonormal rows, block by block
    lengths = torch.linalg.vector_norm(gauss(m, d), dim=-1, keepdim=True)  # chi_d lengths
    return (directions * lengths).to(device=target, dtype=dtype)


def favor_features(x: torch.Tensor, omega: torch.Tensor, *, log: bool = False) -> torch.Tensor:
    r"""Positive random features :math:`\phi(x)_l = \exp(\omega_l\cdot x - \lVert x\rVert^2/2)/\sqrt m`.

    :math:`\phi(x)^\top\phi(y)` is an unbiased estimate of :math:`e^{x\cdot y}` when the rows of ``omega``
    are :math:`\mathcal N(0, I_d)` (see :func:`draw_orthogonal_features`). No scaling is applied: pass
    :math:`x\,d^{-1/4}` to estimate :math:`e^{q\cdot k/\sqrt d}`. These are the raw features (they may
    overflow for large :math:`\lVert x\rVert`); :func:`favor_attention` stabilises them in log space.

    Parameters
    ----------
    x : torch.Tensor, shape ``(..., L, d)``
    omega : torch.Tensor, shape ``(m, d)`` or ``(..., m, d)``
        Same device as ``x``; leading dimensions broadcast against those of ``x`` (e.g. one
        projection per head, or one per Monte Carlo draw).
    log : bool
        Return :math:`\log\phi(x)` instead.

    Returns
    -------
    torch.Tensor, shape ``(..., L, m)``

    Notes
    -----
    Chapter: ``notebooks/performer.ipynb``.
    """
    check_tensor(x, "x", min_dim=1, floating=True)
    _check_omega(omega, x)
    logphi = torch.matmul(x, omega.transpose(-2, -1))  # a fresh (..., L, m) buffer: update it in place
    logphi = logphi.sub_(0.5 * (x * x).sum(dim=-1, keepdim=True) + 0.5 * math.log(omega.shape[-2]))
    return logphi if log else logphi.exp_()


def _check_omega(omega: torch.Tensor, x: torch.Tensor) -> None:
    check_tensor(omega, "omega", min_dim=2, floating=True)
    if omega.shape[-1] != x.shape[-1]:
        raise ValueError(f"omega must have d = {x.shape[-1]} columns, got shape {tuple(omega.shape)}")
    if omega.device != x.device:
        raise TypeError(f"omega must be on the inputs' device {x.device}, got {omega.device}")


def _row_scale(x: torch.Tensor) -> torch.Tensor:
    """Each row's largest magnitude (detached), 1 for zero rows: dividing by it keeps products finite."""
    big = x.detach().abs().amax(dim=-1, keepdim=True)
    return torch.where(big > 0, big, torch.ones_like(big))


def _finite_or_zero(t: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


def favor_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_features: int | None = None,
    orthogonal: bool = True,
    generator: torch.Generator | None = None,
    causal: bool = False,
    *,
    omega: torch.Tensor | None = None,
    scale: float | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    key_mask: torch.Tensor | None = None,
    eps: float | None = None,
) -> torch.Tensor:
    r"""FAVOR+ attention: an unbiased random-feature approximation of :math:`\operatorname{softmax}(s\,QK^\top)V`.

    With :math:`\tilde q = \sqrt s\, q`, :math:`\tilde k = \sqrt s\, k` (:math:`s = 1/\sqrt d`, i.e. the
    :math:`d^{-1/4}` scaling) and :math:`\phi` of :func:`favor_features`,

    .. math:: o_i = \frac{\sum_j \phi(\tilde q_i)^\top\phi(\tilde k_j)\, v_j}
       {\sum_j \phi(\tilde q_i)^\top\phi(\tilde k_j)}, \qquad
       \mathbb E\big[\phi(\tilde q_i)^\top\phi(\tilde k_j)\big] = e^{s\, q_i\cdot k_j},

    computed in :math:`O(n m d)` like :func:`~suma_lib.attention.linear.linear_attention` (causal form chunk by
    chunk, sharing its engine).

    Parameters
    ----------
    q : torch.Tensor, shape ``(..., n, d)``
    k : torch.Tensor, shape ``(..., m, d)``
    v : torch.Tensor, shape ``(..., m, d_v)``
    n_features : int, optional
        Number of random features :math:`m`; by default the rows of ``omega`` or
        :math:`\operatorname{round}(d \ln d)` (the paper's default).
    orthogonal : bool
        Draw orthogonal features (:func:`draw_orthogonal_features`); ignored when ``omega`` is given.
    generator : torch.Generator, optional
        Randomness for drawing ``omega``.
    causal : bool
        Query ``i`` attends to keys ``j <= i`` only (needs ``n == m``).
    omega : torch.Tensor, shape ``(n_features, d)`` or ``(..., n_features, d)``, optional
        Use these projections instead of drawing new ones (same device as ``q``; leading dimensions
        broadcast, e.g. one projection per head).
    scale : float, optional
        The kernel is :math:`e^{s\,q\cdot k}`; :math:`s = 1/\sqrt d` by default; must be positive.
    chunk_size : int
        Chunk length of the causal form.
    key_mask : torch.Tensor, optional
        Boolean ``(..., m)``, ``True`` for keys that may be attended to; a query that sees no key gets zeros.
    eps : float, optional
        Rows whose (stabilised) denominator is ``<= eps`` return zeros; see
        :func:`~suma_lib.attention.linear.linear_attention`.

    Returns
    -------
    torch.Tensor, shape ``(..., n, d_v)``
        In ``q``'s dtype (float16/bfloat16 accumulate in float32).

    Notes
    -----
    Stabilisation in log space (as in the paper's code): each query's log-features are shifted by their
    maximum over the :math:`m` features, :math:`c_i = \max_l \omega_l\cdot\tilde q_i`, and all key
    log-features by one global maximum :math:`c = \max_{j,l} \log\phi(\tilde k_j)_l` (over unmasked keys).
    Row :math:`i`'s numerator and denominator are then both multiplied by :math:`e^{-c_i}e^{-c}`, which
    cancels, so the output is unchanged while every feature lies in :math:`[0, 1]`. For the queries the
    term :math:`-\lVert\tilde q_i\rVert^2/2` (and :math:`1/\sqrt m`) is a per-row constant too and is
    dropped for the same reason. Each row of queries and keys is divided by its largest entry :math:`M`
    before the projection and the log-features multiplied by :math:`M` after the shift, so that nothing
    overflows into :math:`\infty - \infty` (the output stays finite at :math:`|q| = 10^{38}` in float32).
    Keys whose log-feature lies more than about 87 (float32) below the global maximum underflow to zero
    weight; a query left with no weight returns zeros. NaN in ``q``, ``k`` or ``v`` comes out as NaN (never
    as "no weight").

    Chapter: ``notebooks/performer.ipynb``.
    """
    _check_common(q, k, v, causal, chunk_size, key_mask, eps)
    d = q.shape[-1]
    s = _default_scale(scale, d)
    if s <= 0:
        raise ValueError(f"scale must be positive for the softmax kernel, got {s}")
    dtype = _compute_dtype(q.dtype)
    if omega is not None:
        _check_omega(omega, q)
        if n_features is not None and check_int(n_features, "n_features", low=1) != omega.shape[-2]:
            raise ValueError(f"n_features={n_features} does not match omega's {omega.shape[-2]} rows")
        omega = omega.to(dtype)
    else:
        n_features = max(1, round(d * math.log(d))) if n_features is None else n_features
        n_features = check_int(n_features, "n_features", low=1)
        omega = draw_orthogonal_features(
            n_features, d, generator, orthogonal=orthogonal, device=q.device, dtype=dtype
        )
    root = math.sqrt(s)
    qs, ks, vc = q.to(dtype) * root, k.to(dtype) * root, v.to(dtype)
    omega_t = omega.transpose(-2, -1)
    # Queries: log phi = omega . q - (per-row constants); shift by the row maximum (it cancels). Each row
    # is first divided by its largest entry M (detached; it cancels too): t = omega . (q / M) is then
    # finite, t - max t <= 0, and (t - max t) M is in [-inf, 0], never NaN, even at |q| = 1e38 where
    # omega . q itself overflows. (In place: these (n, m) buffers are fresh.)
    big_q = _row_scale(qs)
    lq = torch.matmul(qs / big_q, omega_t)
    phi_q = lq.sub_(lq.detach().amax(dim=-1, keepdim=True)).mul_(big_q).exp_()
    # Keys: log phi = omega . k - |k|^2 / 2 = M (omega . k/M - M |k/M|^2 / 2), finite or -inf (never
    # inf - inf); shift by one global maximum over keys and features, NaN keys ignored (they reach the
    # output through their own weight, as NaN).
    big_k = _row_scale(ks)
    kt = ks / big_k
    lk = torch.matmul(kt, omega_t).sub_(0.5 * big_k * (kt * kt).sum(dim=-1, keepdim=True)).mul_(big_k)
    del kt
    if key_mask is not None:
        lk = torch.where(key_mask.unsqueeze(-1), lk, torch.full_like(lk, float("-inf")))
    top = lk.detach().nan_to_num(nan=float("-inf")).amax(dim=(-2, -1), keepdim=True)
    phi_k = lk.sub_(_finite_or_zero(top)).exp_()
    del lq, lk
    out = _kernel_attention(phi_q, phi_k, vc, causal=causal, chunk_size=chunk_size, eps=eps)
    return out.to(q.dtype)


def softmax_attention_flops(n: int, d: int, d_v: int | None = None) -> int:
    r"""Floating-point operations of exact (non-causal) attention for one head: :math:`2n^2(d + d_v) + 3n^2`.

    :math:`QK^\top` and :math:`AV` are :math:`2n^2d` and :math:`2n^2d_v` (a multiply-add counts 2); the
    softmax costs about 3 per logit (subtract the max, exponentiate, divide).

    Notes
    -----
    Chapter: ``notebooks/performer.ipynb``.
    """
    n, d = check_int(n, "n", low=0), check_int(d, "d", low=1)
    d_v = d if d_v is None else check_int(d_v, "d_v", low=1)
    return 2 * n * n * (d + d_v) + 3 * n * n


def favor_flops(n: int, d: int, n_features: int, d_v: int | None = None) -> int:
    r"""Floating-point operations of (non-causal) FAVOR+ attention for one head, :math:`m` = ``n_features``.

    .. math:: \underbrace{4nmd}_{\Omega\tilde q,\ \Omega\tilde k} + \underbrace{4nd}_{\text{norms}}
       + \underbrace{4nm}_{\exp,\ \text{shifts}} + \underbrace{2nmd_v}_{\phi(K)^\top V}
       + \underbrace{nm}_{\sum_j\phi(k_j)} + \underbrace{2nmd_v + 2nm}_{\text{numerator, denominator}}
       + \underbrace{nd_v}_{\text{division}}

    Notes
    -----
    Chapter: ``notebooks/performer.ipynb``.
    """
    n, d = check_int(n, "n", low=0), check_int(d, "d", low=1)
    m = check_int(n_features, "n_features", low=1)
    d_v = d if d_v is None else check_int(d_v, "d_v", low=1)
    return 4 * n * m * d + 4 * n * d + 4 * n * m + 4 * n * m * d_v + 3 * n * m + n * d_v
