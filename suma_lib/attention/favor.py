r"""FAVOR+: Performer's positive orthogonal random features for softmax attention.

Chapter: notebooks/performer.md (Su Jianlin, 《Performer:用随机投影将Attention的复杂度线性化》,
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

from .._numerics import work_dtype
from .._validation import (
    check_compatible,
    check_device,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from ._core import _pow2_near, check_kernel_args, default_scale, kernel_attention
from .linear import DEFAULT_CHUNK

__all__ = [
    "draw_orthogonal_features",
    "favor_attention",
    "favor_features",
    "favor_flops",
    "favorpp_attention",
    "favorpp_features",
    "favorpp_parameter",
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
    Chapter: notebooks/performer.md.
    """
    m = check_int(m, "m", low=1)
    d = check_int(d, "d", low=1)
    check_generator(generator)
    if not isinstance(orthogonal, bool):
        raise TypeError(f"orthogonal must be a bool, got {type(orthogonal).__name__}")
    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    device = check_device(device)
    target = (
        device if device is not None else (generator.device if generator else torch.device("cpu"))
    )
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
    q = q * torch.where(sign == 0, torch.ones_like(sign), sign).unsqueeze(
        -2
    )  # Haar: fix QR's sign choice
    directions = q.transpose(-2, -1).reshape(blocks * d, d)[:m]  # orthonormal rows, block by block
    lengths = torch.linalg.vector_norm(gauss(m, d), dim=-1, keepdim=True)  # chi_d lengths
    return (directions * lengths).to(device=target, dtype=dtype)


def favor_features(x: torch.Tensor, omega: torch.Tensor, *, log: bool = False) -> torch.Tensor:
    r"""Positive random
    features :math:`\phi(x)_l = \exp(\omega_l\cdot x - \lVert x\rVert^2/2)/\sqrt m`.

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
    Chapter: notebooks/performer.md.
    """
    check_tensor(x, "x", min_dim=1, floating=True)
    _check_omega(omega, x)
    logphi = None
    if x.device.type == "cpu":  # the plain formula, kept when it has no NaN (bit for bit as before)
        logphi = torch.matmul(
            x, omega.transpose(-2, -1)
        )  # a fresh (..., L, m) buffer: update in place
        logphi = logphi.sub_(
            0.5 * (x * x).sum(dim=-1, keepdim=True) + 0.5 * math.log(omega.shape[-2])
        )
    if logphi is None or _has_nan(logphi):
        logphi = _safe_log_features(x, omega, 1.0, 0.0, -0.5 * math.log(omega.shape[-2]))
    return logphi if log else logphi.exp_()


def _has_nan(t: torch.Tensor) -> bool:
    try:
        return bool(torch.isnan(t).any())
    except RuntimeError:  # under torch.func.vmap a value cannot steer the control flow
        return True


def _safe_log_features(
    x: torch.Tensor, omega: torch.Tensor, r: float, alpha: float, const: float
) -> torch.Tensor:
    r""":math:`r\,x\cdot\omega + \alpha\lVert\omega\rVert^2 - \lVert x\rVert^2/2 + c`, ``(..., L, m)``, never NaN
    for finite input.

    With powers of two :math:`X \ge \max|x|/2` (per row of ``x``), :math:`W` (per row of ``omega``) and
    :math:`S = \max(X, W)`, the bracket
    :math:`r\tfrac{X}{S}\tfrac{W}{S}\,\hat x\cdot\hat\omega + \alpha\tfrac{W^2}{S^2}\lVert\hat\omega\rVert^2
    - \tfrac{X^2}{2S^2}\lVert\hat x\rVert^2` is finite (:math:`\hat x = x/X`, :math:`\hat\omega =
      \omega/W`),
    and :math:`S(S\cdot[\ldots])` overflows to :math:`\pm\infty` (the feature is then 0 or inf) instead
    of :math:`\infty - \infty`.
    """
    xd, wd = x.detach().abs().amax(-1, keepdim=True), omega.detach().abs().amax(-1, keepdim=True)
    big_x, big_w = _pow2_near(xd), _pow2_near(wd).transpose(-2, -1)  # (..., L, 1), (..., 1, m)
    s = torch.maximum(big_x, big_w)
    px, pw = big_x / s, big_w / s
    xh, wh = x / big_x, omega / big_w.transpose(-2, -1)
    t = torch.matmul(xh, wh.transpose(-2, -1))
    ux = (xh * xh).sum(-1, keepdim=True)
    uw = (wh * wh).sum(-1).unsqueeze(-2)
    bracket = (r * px) * pw * t + (alpha * pw) * pw * uw - (0.5 * px) * px * ux
    return s * (s * bracket) + const


def _check_omega(omega: torch.Tensor, x: torch.Tensor) -> None:
    check_tensor(omega, "omega", min_dim=2, floating=True)
    if omega.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"omega must have d = {x.shape[-1]} columns, got shape {tuple(omega.shape)}"
        )
    if omega.device != x.device:
        raise TypeError(f"omega must be on the inputs' device {x.device}, got {omega.device}")
    # (..., L, d) against (..., m, d): the leading dimensions must broadcast (a 1-D x has none)
    check_compatible(x, omega, "x", "omega", core_dims=(min(x.dim(), 2), 2), same_dtype=False)


def _row_scale(x: torch.Tensor) -> torch.Tensor:
    """max(1, each row's largest magnitude), detached: dividing by it keeps the products finite."""
    return x.detach().abs().amax(dim=-1, keepdim=True).clamp_(min=1.0)


def _all_ones(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is 1, where reading it is free (CPU, no ``torch.func`` transform)."""
    if t.device.type != "cpu" or t.requires_grad:
        return False
    try:
        return bool((t == 1.0).all())
    except RuntimeError:  # under torch.func.vmap a value cannot steer the control flow
        return False


def _finite_or_zero(t: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


def _positive_attention(
    qs: torch.Tensor,
    ks: torch.Tensor,
    vc: torch.Tensor,
    omega: torch.Tensor,
    proj: float | torch.Tensor,
    bias: torch.Tensor | None,
    causal: bool,
    chunk_size: int,
    key_mask: torch.Tensor | None,
    eps: float | None,
) -> torch.Tensor:
    """Attention with positive features exp(proj omega_l . x + bias_l - |x|^2 / 2), stabilised in log space.

    FAVOR+ is ``proj = 1``, ``bias = None``; FAVOR++ uses ``proj = sqrt(1 - 4A)`` and ``bias = A |omega_l|^2``.
    Queries: log phi = proj omega . q + bias (the row constants -|q|^2/2 and log D / sqrt m cancel),
    shifted by the row maximum (it cancels). Each row is first divided by M = max(1, its largest entry)
    (detached; it cancels too): u = proj omega . (q / M) + bias / M is finite, u - max u <= 0, and
    (u - max u) M is in [-inf, 0], never NaN, even at |q| = 1e38 where omega . q itself overflows.
    Keys: log phi = M (proj omega . k/M + bias/M - M |k/M|^2 / 2), finite or -inf (never inf - inf),
    shifted by one global maximum over keys and features, NaN keys ignored there (they reach the output
    through their own weight, as NaN). (In place: these (n, m) buffers are fresh.)
    """
    omega_t = omega.transpose(-2, -1)
    if omega.dim() == 2 and qs.dim() > 2 and qs.shape[:-2] == ks.shape[:-2]:
        # one (d, m) block per batch entry: a batched product, measured a third faster on the CPU than
        # the one tall (batch * n, d) @ (d, m) product torch.matmul would fold it into
        omega_t = omega_t.expand(*qs.shape[:-2], *omega_t.shape)
    big_q = _row_scale(qs)
    unit_q = _all_ones(big_q)  # no row needs dividing (the common case): skip those passes
    lq = torch.matmul(qs if unit_q else qs / big_q, omega_t)
    if not isinstance(proj, float) or proj != 1.0:
        lq = lq.mul_(proj)
    if bias is not None:
        lq = lq.add_(bias if unit_q else bias / big_q)
    lq = lq.sub_(lq.detach().amax(dim=-1, keepdim=True))
    phi_q = (lq if unit_q else lq.mul_(big_q)).exp_()
    big_k = _row_scale(ks)
    unit_k = _all_ones(big_k)
    kt = ks if unit_k else ks / big_k
    lk = torch.matmul(kt, omega_t)
    if not isinstance(proj, float) or proj != 1.0:
        lk = lk.mul_(proj)
    if bias is not None:
        lk = lk.add_(bias if unit_k else bias / big_k)
    lk = lk.sub_(0.5 * big_k * (kt * kt).sum(dim=-1, keepdim=True))
    if not unit_k:
        lk = lk.mul_(big_k)
    del kt
    if key_mask is not None:
        lk = torch.where(key_mask.unsqueeze(-1), lk, torch.full_like(lk, float("-inf")))
    # the maximum over keys of each key's maximum over features; a key with NaN (NaN in k: all its
    # features) is left out there. No (n, m) copy.
    row_top = lk.detach().amax(dim=-1, keepdim=True).nan_to_num_(nan=float("-inf"))
    top = row_top.amax(dim=-2, keepdim=True)
    phi_k = lk.sub_(_finite_or_zero(top)).exp_()
    del lq, lk
    return kernel_attention(phi_q, phi_k, vc, causal=causal, chunk_size=chunk_size, eps=eps)


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
    r"""FAVOR+ attention: an unbiased random-feature approximation
    of :math:`\operatorname{softmax}(s\,QK^\top)V`.

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

    Chapter: notebooks/performer.md.
    """
    check_kernel_args(q, k, v, causal, chunk_size, key_mask, eps)
    qs, ks, vc, omega = _scaled_inputs(q, k, v, omega, n_features, orthogonal, generator, scale)
    out = _positive_attention(qs, ks, vc, omega, 1.0, None, causal, chunk_size, key_mask, eps)
    return out.to(q.dtype)


def _scaled_inputs(q, k, v, omega, n_features, orthogonal, generator, scale):
    """sqrt(s) q, sqrt(s) k, v in the compute dtype, and the projection (given or drawn)."""
    s = default_scale(scale, q.shape[-1])
    if s <= 0:
        raise ValueError(f"scale must be positive for the softmax kernel, got {s}")
    dtype = work_dtype(q.dtype)
    omega = _projection(q, omega, n_features, orthogonal, generator, dtype)
    root = math.sqrt(s)
    return q.to(dtype) * root, k.to(dtype) * root, v.to(dtype), omega


def _projection(q, omega, n_features, orthogonal, generator, dtype) -> torch.Tensor:
    """The given projection (checked, cast to ``dtype``) or a fresh draw of ``n_features`` (d ln d) rows."""
    d = q.shape[-1]
    if omega is not None:
        _check_omega(omega, q)
        if n_features is not None and check_int(n_features, "n_features", low=1) != omega.shape[-2]:
            raise ValueError(
                f"n_features={n_features} does not match omega's {omega.shape[-2]} rows"
            )
        return omega.to(dtype)
    n_features = max(1, round(d * math.log(d))) if n_features is None else n_features
    n_features = check_int(n_features, "n_features", low=1)
    return draw_orthogonal_features(
        n_features, d, generator, orthogonal=orthogonal, device=q.device, dtype=dtype
    )


# ------------------------------------------------------------------------------ FAVOR++ (optimised
# features)
def favorpp_parameter(rho, d: int):
    r"""The FAVOR++ parameter :math:`A` that minimises the relative variance
    for :math:`\lVert x+y\rVert^2 = \rho`.

    The features of :func:`favorpp_features` estimate :math:`e^{x\cdot y}` without bias for every
    :math:`A < 1/4`; for :math:`A < 1/8` one feature's relative variance is

    .. math:: \frac{\operatorname{Var}}{e^{2x\cdot y}} = (1-4A)^{d}\,(1-8A)^{-d/2}\,
       e^{\lVert x+y\rVert^2/(1-8A)} - 1

    (:math:`A = 0`, FAVOR+: :math:`e^{\lVert x+y\rVert^2} - 1`). With :math:`t = 1 - 8A > 0` its logarithm is
    :math:`d\ln\frac{1+t}{2} - \frac d2\ln t + \rho/t`, whose derivative vanishes where
    :math:`d\,t^2 - (d + 2\rho)\,t - 2\rho = 0`:

    .. math:: t = \frac{d + 2\rho + \sqrt{(d+2\rho)^2 + 8d\rho}}{2d}, \qquad A = \frac{1 - t}{8} \le
       0 .

    :math:`\rho = 0` gives :math:`A = 0` (FAVOR+ is then optimal); larger :math:`\rho` give negative
    :math:`A`, which damps the rare long :math:`\omega` that make FAVOR+'s estimate heavy-tailed. This is the
    optimised positive random feature of Likhosherstov et al. (arXiv:2205.15317), derived here for one
    value of :math:`\rho`; :func:`favorpp_attention` takes :math:`\rho` as the mean over all query-key pairs.

    Parameters
    ----------
    rho : float or torch.Tensor
        :math:`\lVert x+y\rVert^2 \ge 0`, finite (a tensor's NaN and inf are read as 0 and :math:`10^{12}`).
    d : int
        The dimension.

    Returns
    -------
    float or torch.Tensor
        :math:`A`, of the type of ``rho``.

    Notes
    -----
    Chapter: notebooks/performer.md.
    """
    d = check_int(d, "d", low=1)
    if isinstance(rho, torch.Tensor):
        r = torch.nan_to_num(rho, nan=0.0, posinf=1e12).clamp(0.0, 1e12)
        t = (d + 2 * r + torch.sqrt((d + 2 * r) ** 2 + 8 * d * r)) / (2 * d)
        return (1 - t) / 8
    r = check_float(rho, "rho", low=0.0)
    r = min(r, 1e12)
    t = (d + 2 * r + math.sqrt((d + 2 * r) ** 2 + 8 * d * r)) / (2 * d)
    return (1 - t) / 8


def favorpp_features(
    x: torch.Tensor, omega: torch.Tensor, a: float, *, log: bool = False
) -> torch.Tensor:
    r"""Optimised positive random features :math:`\phi_A(x)_l = \frac{D}{\sqrt m}
    \exp\bigl(A\lVert\omega_l\rVert^2 + B\,\omega_l\cdot x - \lVert x\rVert^2/2\bigr)`.

    With :math:`B = \sqrt{1-4A}` and :math:`D = (1-4A)^{d/4}`, completing the square in the Gaussian integral
    (per coordinate, :math:`\mathbb E[e^{2Aw^2 + cw}] = (1-4A)^{-1/2}e^{c^2/(2(1-4A))}` for
    :math:`w\sim\mathcal N(0,1)`) gives :math:`\mathbb E[\phi_A(x)^\top\phi_A(y)] = e^{x\cdot y}` for every
    :math:`A < 1/4` when the rows of ``omega`` are :math:`\mathcal N(0, I_d)`; :math:`A = 0` is FAVOR+
    (:func:`favor_features`). The variance is finite for :math:`A < 1/8`; :func:`favorpp_parameter` gives
    the :math:`A` that minimises it.

    Parameters
    ----------
    x : torch.Tensor, shape ``(..., L, d)``
    omega : torch.Tensor, shape ``(m, d)`` or ``(..., m, d)``
    a : float
        :math:`A < 1/8`.
    log : bool
        Return :math:`\log\phi_A(x)` instead.

    Returns
    -------
    torch.Tensor, shape ``(..., L, m)``

    Notes
    -----
    Chapter: notebooks/performer.md.
    """
    check_tensor(x, "x", min_dim=1, floating=True)
    _check_omega(omega, x)
    a = check_float(a, "a", high=0.125, high_open=True)
    d, m = x.shape[-1], omega.shape[-2]
    const = 0.25 * d * math.log1p(-4 * a) - 0.5 * math.log(m)
    logphi = None
    if x.device.type == "cpu":  # the plain formula, kept when it has no NaN (bit for bit as before)
        logphi = torch.matmul(x, omega.transpose(-2, -1)).mul_(math.sqrt(1 - 4 * a))
        logphi = logphi.add_(a * (omega * omega).sum(-1).unsqueeze(-2))
        logphi = logphi.sub_(0.5 * (x * x).sum(dim=-1, keepdim=True) - const)
    if logphi is None or _has_nan(logphi):
        logphi = _safe_log_features(x, omega, math.sqrt(1 - 4 * a), a, const)
    return logphi if log else logphi.exp_()


def favorpp_attention(
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
    r"""FAVOR++ attention: :func:`favor_attention` with the optimised positive features of :func:`favorpp_features`.

    The parameter :math:`A` is :func:`favorpp_parameter` at :math:`\rho`, the mean of
    :math:`\lVert\tilde q_i + \tilde k_j\rVert^2` over all query-key pairs (per batch entry and head;
    :math:`\tilde q = \sqrt s\,q`), computed in :math:`O(nd)` as
    :math:`\overline{\lVert\tilde q\rVert^2} + \overline{\lVert\tilde k\rVert^2} + 2\,\bar{\tilde q}\cdot\bar{\tilde k}`
    (gradients flow through it too). Each weight is still an unbiased estimate of
    :math:`e^{s\,q_i\cdot k_j}` (up to the common factor :math:`D^2`, which cancels in the ratio), with a
    relative variance that grows like :math:`e^{\rho/(1-8A)}` instead of FAVOR+'s :math:`e^{\rho}`. Arguments,
    stabilisation, masks and NaN handling are those of :func:`favor_attention`.

    Returns
    -------
    torch.Tensor, shape ``(..., n, d_v)``

    Notes
    -----
    Chapter: notebooks/performer.md (Likhosherstov et al., arXiv:2205.15317).
    """
    check_kernel_args(q, k, v, causal, chunk_size, key_mask, eps)
    qs, ks, vc, omega = _scaled_inputs(q, k, v, omega, n_features, orthogonal, generator, scale)
    # rho and A are functions of the inputs like everything else (autograd sees them too)
    kk = ks if key_mask is None else ks * key_mask.unsqueeze(-1)
    n_keys = (
        ks.shape[-2]
        if key_mask is None
        else key_mask.sum(-1, keepdim=True).unsqueeze(-1).clamp(min=1)
    )
    k_mean = kk.sum(-2, keepdim=True) / n_keys
    k_sq = (kk * kk).sum(-1, keepdim=True).sum(-2, keepdim=True) / n_keys
    q_sq = (qs * qs).sum(-1, keepdim=True).mean(-2, keepdim=True)
    rho = (
        q_sq + k_sq + 2 * (qs.mean(-2, keepdim=True) * k_mean).sum(-1, keepdim=True)
    )  # (..., 1, 1)
    a = favorpp_parameter(rho.clamp(min=0.0), q.shape[-1])
    bias = a * (omega * omega).sum(-1).unsqueeze(-2)  # (..., 1, m)
    out = _positive_attention(
        qs, ks, vc, omega, torch.sqrt(1 - 4 * a), bias, causal, chunk_size, key_mask, eps
    )
    return out.to(q.dtype)


def softmax_attention_flops(n: int, d: int, d_v: int | None = None) -> int:
    r"""Floating-point operations of exact (non-causal) attention for one
    head: :math:`2n^2(d + d_v) + 3n^2`.

    :math:`QK^\top` and :math:`AV` are :math:`2n^2d` and :math:`2n^2d_v` (a multiply-add counts 2); the
    softmax costs about 3 per logit (subtract the max, exponentiate, divide).

    Notes
    -----
    Chapter: notebooks/performer.md.
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
    Chapter: notebooks/performer.md.
    """
    n, d = check_int(n, "n", low=0), check_int(d, "d", low=1)
    m = check_int(n_features, "n_features", low=1)
    d_v = d if d_v is None else check_int(d_v, "d_v", low=1)
    return 4 * n * m * d + 4 * n * d + 4 * n * m + 4 * n * m * d_v + 3 * n * m + n * d_v
