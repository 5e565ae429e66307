r"""The scale of the attention logits, seen through the entropy of the attention rows.

Two chapters build on this module:

* ``entropy-invariant-softmax``: why the logit scale should grow with the number of keys ``n``, the
  entropy-invariant scale :math:`\log_{L} n/\sqrt{d}` (``L`` the training length), and the large-``n``
  entropy of a softmax over i.i.d.
  scores, :math:`H \approx \log n - D_{\mathrm{KL}}(P_\lambda\,\|\,P)`;
* ``softmax-robustness-information``: why i.i.d. noise on the logits barely moves the attention
  output,
  and how low the entropy of a softmax can go when every logit lies in :math:`[-\beta, \beta]`.

Torch functions follow their inputs' device and dtype and are batched over leading dimensions; the
closed forms that need special functions (Bessel functions) use NumPy/SciPy.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._validation import (
    check_choice,
    check_compatible,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from ..entropy import entropy
from ._core import check_qkv, prescale
from .exact import combine_masks, softmax_attention

__all__ = [
    "box_entropy_gap",
    "box_entropy_local_minima",
    "box_min_entropy",
    "entropy_invariant_attention",
    "entropy_invariant_scale",
    "max_gap_entropy_estimate",
    "noise_change_first_order",
    "noisy_attention_change",
    "score_cgf",
    "softmax_entropy",
    "tilted_entropy",
]

_NOISES = ("gaussian", "uniform")


# ------------------------------------------------------------------------- entropy-invariant scale
def entropy_invariant_scale(n: int, d: int, train_len: int = 512) -> float:
    r"""The entropy-invariant logit scale :math:`\lambda = \kappa \log n / d` with :math:`\kappa` fixed
    so that it equals the usual :math:`1/\sqrt{d}` at the training length.

    .. math:: \lambda(n) = \frac{\log n}{\log L}\,\frac{1}{\sqrt{d}} = \frac{\log_L n}{\sqrt{d}},
       \qquad \kappa = \frac{\sqrt{d}}{\log L}.

    Use it as ``softmax_attention(q, k, v, scale=entropy_invariant_scale(n, d))``.

    Parameters
    ----------
    n : int
        Number of keys each query sees (``n >= 1``; ``n = 1`` gives scale 0, harmless for one key).
    d : int
        Head dimension (``d >= 1``).
    train_len : int
        Training length ``L >= 2`` at which the scale equals :math:`1/\sqrt{d}`.

    Returns
    -------
    float

    Notes
    -----
    Chapter: notebooks/entropy-invariant-softmax.md.
    """
    n = check_int(n, "n", low=1)
    d = check_int(d, "d", low=1)
    train_len = check_int(train_len, "train_len", low=2)
    return math.log(n) / (math.log(train_len) * math.sqrt(d))


def entropy_invariant_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    train_len: int = 512,
) -> torch.Tensor:
    r"""Softmax attention whose scale follows the number of keys each query actually sees.

    Query :math:`i` with :math:`n_i` visible keys (after ``mask`` and the causal pattern) uses
    :math:`\lambda_i = \log_L n_i/\sqrt{d}` (see :func:`entropy_invariant_scale`):

    .. math:: o_i = \sum_j \operatorname{softmax}_j\!\left(\lambda_i\, q_i\cdot k_j\right) v_j .

    Parameters
    ----------
    q : torch.Tensor, shape ``(..., n, d)``
    k : torch.Tensor, shape ``(..., m, d)``
    v : torch.Tensor, shape ``(..., m, d_v)``
    mask : torch.Tensor, optional
        Boolean, ``True`` where a query may attend to a key, broadcastable to ``(..., n, m)``.
    causal : bool
        Query ``i`` attends to keys ``j <= i`` only.
    train_len : int
        Training length ``L >= 2``.

    Returns
    -------
    torch.Tensor, shape ``(..., n, d_v)``
        A query with no visible key gets a zero output.

    Notes
    -----
    Chapter: notebooks/entropy-invariant-softmax.md.
    """
    check_qkv(q, k, v)
    train_len = check_int(train_len, "train_len", low=2)
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool):
        raise TypeError("mask must be a boolean torch.Tensor (True = may attend)")
    n, m, d = q.shape[-2], k.shape[-2], q.shape[-1]
    full = combine_masks(mask, causal, n, m, device=q.device)
    if full is None:
        return softmax_attention(q, k, v, scale=entropy_invariant_scale(max(m, 1), d, train_len))
    counts = full.sum(dim=-1, keepdim=True).clamp_min(1).to(q.dtype)  # (..., n, 1); dead rows -> 1
    row_scale = torch.log(counts) / (math.log(train_len) * math.sqrt(d))
    q, k = prescale(q, k, row_scale)  # one scale per query, folded in without overflow
    return softmax_attention(q, k, v, mask=full, scale=1.0)


# ------------------------------------------------------------------------------ entropy of a
# softmax
def softmax_entropy(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Entropy (nats) of :math:`p = \operatorname{softmax}(s)` along ``dim``.

    .. math:: H = -\sum_i p_i \log p_i = \log\sum_i e^{s_i} - \sum_i p_i s_i .

    Entries equal to :math:`-\infty` are masked keys (probability 0); a slice that is entirely
    :math:`-\infty` (a fully masked row) has entropy 0. Huge finite logits (:math:`|s| = 10^{30}`)
    are fine. The entropy itself is :func:`suma_lib.entropy.entropy` of the softmax.

    Parameters
    ----------
    logits : torch.Tensor
        Floating-point tensor; NaN and :math:`+\infty` are rejected.
    dim : int
        The axis of each distribution.

    Returns
    -------
    torch.Tensor
        ``logits`` with ``dim`` removed, values in :math:`[0, \log n]`.

    Notes
    -----
    Chapters: notebooks/entropy-invariant-softmax.md,
    notebooks/softmax-robustness-information.md.
    """
    check_tensor(logits, "logits", min_dim=1, floating=True)
    check_int(dim, "dim", low=-logits.dim(), high=logits.dim() - 1)
    bad = torch.isnan(logits) | torch.isposinf(logits)
    if logits.device.type != "meta" and logits.numel() and bool(bad.any()):
        raise ValueError("logits must not contain NaN or +inf (use -inf to mask an entry)")
    dead = torch.isneginf(logits).all(dim=dim, keepdim=True)
    p = torch.softmax(logits.masked_fill(dead, 0.0), dim=dim).masked_fill(dead, 0.0)
    return entropy(p, dim=dim)


def max_gap_entropy_estimate(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""The estimate :math:`\log n - (s_{\max} - \bar s)` of the entropy
    of :math:`\operatorname{softmax}(s)`.

    With the scale folded into the logits (:math:`s = \lambda\,\text{score}`) this is the quick estimate
    :math:`H \approx \log n - \lambda(s_{\max} - \bar s)`. It is in fact a lower bound,

    .. math:: H = \log n + \log\tfrac{1}{n}\sum_i e^{s_i} - \sum_i p_i s_i
       \;\ge\; \log n + \bar s - s_{\max},

    by Jensen's inequality for the first sum and :math:`\sum_i p_i s_i \le s_{\max}` for the second.
    The gap :math:`s_{\max} - \bar s = \frac1n\sum_i (s_{\max} - s_i)` is summed from non-negative
    terms in a wider dtype and rounded down, so the value stays a lower bound after rounding, equals
    :math:`\log n` for equal logits of any size, and is finite for every finite input (at worst the
    dtype's most negative finite value).

    Parameters
    ----------
    logits : torch.Tensor
        Finite floating-point tensor (no masking).
    dim : int
        The axis of each distribution.

    Returns
    -------
    torch.Tensor
        ``logits`` with ``dim`` removed.

    Notes
    -----
    Chapter: notebooks/entropy-invariant-softmax.md.
    """
    check_tensor(logits, "logits", min_dim=1, floating=True, finite=True)
    check_int(dim, "dim", low=-logits.dim(), high=logits.dim() - 1)
    n = logits.shape[dim]
    if n == 0:
        raise ValueError("logits must have at least one entry along dim")
    dtype = logits.dtype
    wide = torch.float32 if logits.device.type == "mps" else torch.float64
    s = logits.to(wide)
    if dtype == wide:  # no wider dtype: halve first so that s_max - s_i cannot overflow
        gap = 2 * (0.5 * s.amax(dim=dim, keepdim=True) - 0.5 * s).mean(dim=dim)
    else:
        gap = (s.amax(dim=dim, keepdim=True) - s).mean(dim=dim)
    log_n = math.log(n)
    # summation error of the mean is below (n + 4) ulps of the gap: subtract it to stay a lower
    # bound
    est = log_n - gap - (n + 4) * torch.finfo(wide).eps * (gap + log_n)
    fmax = torch.finfo(dtype).max
    out = est.clamp_min(-fmax).to(dtype)
    if dtype != wide:  # round down, not to nearest
        down = torch.nextafter(out, torch.full_like(out, -math.inf)).clamp_min(-fmax)
        out = torch.where(out.to(wide) > est, down, out)
    return out


def _check_x(x: float | np.ndarray) -> np.ndarray:
    xa = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(xa)) or np.any(xa < 0):
        raise ValueError("x must be finite and non-negative")
    return xa


def _log_iv(nu: float, x: np.ndarray) -> np.ndarray:
    r""":math:`\log I_\nu(x)` for ``x > 0``: SciPy's exponentially scaled Bessel function, with an mpmath
    fallback where it underflows (large order, small argument)."""
    from scipy.special import ive

    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1)
    with np.errstate(divide="ignore"):
        out = np.log(ive(nu, flat)) + flat
    for i in np.flatnonzero(~np.isfinite(out) | (out < -600)):
        import mpmath  # ships with SymPy

        out[i] = float(mpmath.log(mpmath.besseli(nu, float(flat[i]))))
    return out.reshape(x.shape)


def score_cgf(x: float | np.ndarray, d: int | None = None) -> np.ndarray:
    r"""Cumulant generating function :math:`K(x) = \log \mathbb{E}[e^{x t}]` of a score law.

    * ``d=None``: :math:`t \sim \mathcal{N}(0, 1)` and :math:`K(x) = x^2/2`;
    * ``d`` given: :math:`t` is the cosine between two independent uniform directions in
      :math:`\mathbb{R}^d` (density :math:`\propto (1-t^2)^{(d-3)/2}` on :math:`[-1, 1]`) and
      :math:`K(x) = \log\bigl(\Gamma(d/2)\,(2/x)^{\nu} I_\nu(x)\bigr)`, :math:`\nu = d/2 - 1`
      (:math:`I_\nu` the modified Bessel function; :math:`d = 3` gives :math:`\log(\sinh x/x)`).

    Parameters
    ----------
    x : float or numpy.ndarray
        Non-negative tilts.
    d : int, optional
        Dimension for cosine scores (``d >= 1``); ``None`` for Gaussian scores.

    Returns
    -------
    numpy.ndarray
        :math:`K(x)`, with the shape of ``x``.

    Notes
    -----
    Chapter: notebooks/entropy-invariant-softmax.md.
    """
    from scipy.special import gammaln

    xa = _check_x(x)
    if d is None:
        return xa**2 / 2
    d = check_int(d, "d", low=1)
    nu = d / 2 - 1
    xs = np.where(xa > 1e-3, xa, 1.0)
    k_val = gammaln(d / 2) + nu * np.log(2 / xs) + _log_iv(nu, xs)
    # Small x: K(x) = x² Var(t)/2 + O(x⁴) with Var(t) = 1/d (avoids 0·∞ at x = 0).
    return np.where(xa > 1e-3, k_val, xa**2 / (2 * d))


def tilted_entropy(n: float, x: float | np.ndarray, d: int | None = None) -> np.ndarray:
    r"""Large-``n`` entropy of :math:`\operatorname{softmax}(x\,t_1, \dots, x\,t_n)` for i.i.d. scores
    :math:`t_i` (Gaussian, or cosines in :math:`\mathbb{R}^d`; see :func:`score_cgf`).

    When the sums over keys obey the law of large
    numbers, :math:`\sum_i e^{x t_i} \approx n\,e^{K(x)}`
    and :math:`\sum_i p_i t_i \approx K'(x)`, so

    .. math:: H \approx \log n - \bigl(x K'(x) - K(x)\bigr) = \log n - D_{\mathrm{KL}}(P_x \,\|\,
       P),

    where :math:`P_x` is the score law :math:`P` tilted by :math:`e^{x t}`. For Gaussian scores
    :math:`H \approx \log n - x^2/2`; for cosines :math:`K'(x) = I_{d/2}(x)/I_{d/2-1}(x)`.
    The law-of-large-numbers step needs :math:`(e^{K(2x) - 2K(x)} - 1)/n \ll 1`, the relative variance
    of :math:`\sum_i e^{x t_i}`; for Gaussian scores :math:`K(2x) - 2K(x) = x^2`, so it needs
    :math:`x^2 \ll \log n`. That is a condition on the estimate, not yet a change of regime: the
    softmax "freezes" on the few largest scores (the random-energy-model transition, where the entropy
    stops growing with :math:`n`) only at :math:`x^2 = 2\log n`, the point where the estimate
    :math:`\log n - x^2/2` would reach :math:`0`. For :math:`\log n \lesssim x^2 < 2\log n` the sum is
    dominated by rare large terms and the estimate is unreliable, although no freezing has occurred.

    Parameters
    ----------
    n : float
        Number of keys (``n >= 1``).
    x : float or numpy.ndarray
        Scale times score spread (``x >= 0``): :math:`\lambda\sigma` for Gaussian scores,
        :math:`\lambda\,\lVert q\rVert\,\lVert k\rVert` for cosine scores.
    d : int, optional
        Dimension for cosine scores (``d >= 1``); ``None`` for Gaussian scores.

    Returns
    -------
    numpy.ndarray
        The estimate, with the shape of ``x``.

    Notes
    -----
    Chapter: notebooks/entropy-invariant-softmax.md.
    """
    n = check_float(n, "n", low=1.0)
    xa = _check_x(x)
    if d is None:
        return math.log(n) - xa**2 / 2
    d = check_int(d, "d", low=1)
    nu = d / 2 - 1
    xs = np.where(xa > 1e-3, xa, 1.0)
    mean_t = np.exp(_log_iv(nu + 1, xs) - _log_iv(nu, xs))  # K'(x) = I_{d/2}(x) / I_{d/2-1}(x)
    kl = np.where(xa > 1e-3, xs * mean_t - score_cgf(xs, d), xa**2 / (2 * d))
    return math.log(n) - kl


# --------------------------------------------------------------------------- noise on the logits
def _noise_tau2(noise: str, std: float) -> float:
    r""":math:`\tau^2 = \operatorname{Var}(e^\varepsilon)/\mathbb{E}[e^\varepsilon]^2` for the noise law."""
    if noise == "gaussian":
        return math.expm1(std**2)
    a = math.sqrt(3.0) * std  # uniform on [-a, a] has standard deviation std
    if a < 1e-4:
        return std**2  # series: τ² = a²/3 + O(a⁴)
    m1 = math.sinh(a) / a
    m2 = math.sinh(2 * a) / (2 * a)
    return m2 / m1**2 - 1.0


def _check_scores_values(scores: torch.Tensor, values: torch.Tensor) -> None:
    check_tensor(scores, "scores", min_dim=1, floating=True, finite=True)
    check_tensor(values, "values", min_dim=2, floating=True, finite=True)
    if values.shape[-2] != scores.shape[-1]:
        raise ValueError(
            f"values must have one row per score, got {values.shape[-2]} rows for "
            f"{scores.shape[-1]} scores"
        )
    if values.dtype != scores.dtype or values.device != scores.device:
        raise TypeError("scores and values must share dtype and device")
    check_compatible(scores, values, "scores", "values", core_dims=(1, 2))


def _pow2(x: torch.Tensor) -> torch.Tensor:
    """A finite power of two ``p > 0`` with ``x / p`` in ``[0, 2]``, for ``x >= 0`` (1 where ``x = 0``)."""
    fi = torch.finfo(x.dtype)
    p = torch.exp2(torch.log2(x.clamp_min(fi.tiny)).ceil().clamp(max=math.frexp(fi.max)[1] - 1))
    return torch.where(x > 0, p, torch.ones_like(p))


def noisy_attention_change(
    scores: torch.Tensor,
    values: torch.Tensor,
    noise_std: float,
    *,
    samples: int = 1,
    noise: str = "gaussian",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""How much i.i.d. noise on the logits moves the attention
    output: :math:`o(s+\varepsilon) - o(s)`.

    .. math:: o(s) = \sum_i \operatorname{softmax}(s)_i\, v_i, \qquad \varepsilon_i \text{ i.i.d.},

    drawn ``samples`` times.

    Parameters
    ----------
    scores : torch.Tensor, shape ``(..., n)``
        The logits of each query.
    values : torch.Tensor, shape ``(..., n, d_v)``
        The value vectors (leading dimensions broadcast with ``scores``).
    noise_std : float
        Standard deviation of each :math:`\varepsilon_i` (``>= 0``).
    samples : int
        Number of independent noise draws.
    noise : {"gaussian", "uniform"}
        :math:`\mathcal{N}(0, \sigma^2)` or uniform on :math:`[-\sqrt{3}\sigma, \sqrt{3}\sigma]`.
    generator : torch.Generator, optional
        Source of randomness, on the device of ``scores``.

    Returns
    -------
    torch.Tensor, shape ``(samples, ..., d_v)``

    Notes
    -----
    Chapter: notebooks/softmax-robustness-information.md.
    """
    _check_scores_values(scores, values)
    noise_std = check_float(noise_std, "noise_std", low=0.0)
    samples = check_int(samples, "samples", low=1)
    check_choice(noise, "noise", _NOISES)
    check_generator(generator)
    shape = (samples, *scores.shape)
    kw = {"device": scores.device, "dtype": scores.dtype, "generator": generator}
    if noise == "gaussian":
        eps = torch.randn(shape, **kw) * noise_std
    else:
        eps = (torch.rand(shape, **kw) * 2 - 1) * (math.sqrt(3.0) * noise_std)
    clean = (torch.softmax(scores, dim=-1).unsqueeze(-2) @ values).squeeze(-2)  # (..., d_v)
    # Put the draws last so that one batched matmul over the leading dims serves them all (a leading
    # samples axis would make matmul broadcast, i.e. copy, ``values`` once per draw).
    weights = torch.softmax(scores + eps, dim=-1).movedim(0, -1)  # (..., n, samples)
    noisy = (values.transpose(-2, -1) @ weights).movedim(-1, 0)  # (samples, ..., d_v)
    return noisy - clean


def noise_change_first_order(
    scores: torch.Tensor,
    values: torch.Tensor,
    noise_std: float,
    noise: str = "gaussian",
) -> torch.Tensor:
    r"""First-order root-mean-square of :math:`\lVert o(s+\varepsilon) - o(s)\rVert` for i.i.d. noise.

    With :math:`p = \operatorname{softmax}(s)`, :math:`o = \sum_i p_i v_i` and
    :math:`e^{\varepsilon_i} = \mathbb{E}[e^{\varepsilon}](1 + \eta_i)`, the mean
    :math:`\mathbb{E}[e^\varepsilon]` cancels and

    .. math:: o(s+\varepsilon) - o(s) = \frac{\sum_i p_i \eta_i (v_i - o)}{1 + \sum_i p_i \eta_i},
       \qquad \mathbb{E}\lVert o(s+\varepsilon) - o(s)\rVert^2
       \approx \tau^2 \sum_i p_i^2 \lVert v_i - o\rVert^2,

    with :math:`\tau^2 = \operatorname{Var}(e^\varepsilon)/\mathbb{E}[e^\varepsilon]^2`
    (:math:`e^{\sigma^2} - 1` for Gaussian noise). For roughly even
    weights :math:`\sum_i p_i^2 \sim 1/n`,
    so the change falls like :math:`n^{-1/2}`.

    Parameters
    ----------
    scores : torch.Tensor, shape ``(..., n)``
    values : torch.Tensor, shape ``(..., n, d_v)``
    noise_std : float
        Standard deviation of the noise (``>= 0``).
    noise : {"gaussian", "uniform"}
        The noise law, as in :func:`noisy_attention_change`.

    Returns
    -------
    torch.Tensor, shape ``(...)``
        The predicted root-mean-square change of the output.

    Notes
    -----
    Chapter: notebooks/softmax-robustness-information.md.
    """
    _check_scores_values(scores, values)
    noise_std = check_float(noise_std, "noise_std", low=0.0)
    check_choice(noise, "noise", _NOISES)
    p = torch.softmax(scores, dim=-1)
    # ‖v_i − o‖² overflows for |v| ~ 1e20 (and 0 * inf = NaN where p_i = 0): work with v / c, c a
    # power
    # of two per attention row (exact), and multiply the root back by c.
    if values.numel():
        c = _pow2(values.detach().abs().amax(dim=(-2, -1), keepdim=True))
    else:  # nothing to scale (and no maximum to take)
        c = values.new_ones((*values.shape[:-2], 1, 1))
    vc = values / c
    o = (p.unsqueeze(-2) @ vc).squeeze(-2)
    spread = ((vc - o.unsqueeze(-2)) ** 2).sum(dim=-1)  # ‖v_i − o‖² / c², (..., n)
    rms = torch.sqrt(_noise_tau2(noise, noise_std) * (p**2 * spread).sum(dim=-1))
    return rms * c.squeeze(-1).squeeze(-1)


# ------------------------------------------------------------------ lowest entropy with bounded
# logits
def _two_level_entropy(n: int, k: np.ndarray, beta: float) -> np.ndarray:
    r"""Entropy of softmax with ``k`` logits at :math:`+\beta` and ``n - k`` at :math:`-\beta`."""
    f = k / n
    with np.errstate(divide="ignore"):
        logit_f = np.log(f) - np.log1p(-f)
    logit_q = 2 * beta + logit_f  # q = sigmoid(logit_q), the mass on the top group
    # log q and log(1 - q) from softplus, so that neither rounds to log 0 when q rounds to 1
    log_q, log_1q = -np.logaddexp(0.0, -logit_q), -np.logaddexp(0.0, logit_q)
    q, one_q = np.exp(log_q), np.exp(log_1q)
    # H = log n - KL(Bern(q) || Bern(f))
    kl = q * (log_q - np.log(f)) + one_q * (log_1q - np.log1p(-f))
    return math.log(n) - kl


def box_min_entropy(n: int, beta: float = 1.0) -> tuple[float, int]:
    r"""Lowest entropy of :math:`\operatorname{softmax}(s)` over :math:`s \in [-\beta, \beta]^n`.

    Along any one coordinate the entropy rises and then falls (:math:`\partial H/\partial s_i =
    -p_i(s_i - \langle
    s\rangle_p)`), so a minimiser has every logit at :math:`\pm\beta`; by symmetry only
    the number ``k`` of logits at :math:`+\beta` matters. With :math:`f = k/n` and
    :math:`q = f e^{2\beta}/(f e^{2\beta} + 1 - f)` (the mass on those ``k`` keys)

    .. math:: H(k) = \log n - D_{\mathrm{KL}}\bigl(\mathrm{Bern}(q)\,\|\,\mathrm{Bern}(f)\bigr),

    minimised here by checking every ``k`` (no closed form is used).

    Parameters
    ----------
    n : int
        Number of logits, ``2 <= n <= 10**8``.
    beta : float
        Half-width of the logit range (``> 0``); 1 for cosine similarities at temperature 1.

    Returns
    -------
    (float, int)
        The minimum entropy and the number ``k`` of logits at :math:`+\beta` that reaches it.

    Notes
    -----
    Chapter: notebooks/softmax-robustness-information.md.
    """
    n = check_int(n, "n", low=2, high=10**8)
    beta = check_float(beta, "beta", low=0.0, low_open=True)
    ks = np.arange(1, n, dtype=np.float64)
    h = _two_level_entropy(n, ks, beta)
    i = int(np.argmin(h))
    return float(h[i]), int(ks[i])


def box_entropy_gap(beta: float = 1.0) -> float:
    r"""Limit of :math:`\log n - \min_{s\in[-\beta,\beta]^n} H(\operatorname{softmax}(s))` as
    :math:`n \to \infty`.

    Maximising :math:`\log n - H(k)` over the fraction :math:`f = k/n` (see :func:`box_min_entropy`) with
    :math:`u = f e^{\beta} + (1-f) e^{-\beta}` gives
    :math:`\log n - H = \beta\coth\beta - \beta/(u\sinh\beta) - \log u`, largest at
    :math:`u^* = \beta/\sinh\beta`,
    i.e. :math:`f^* = (\beta/\sinh\beta - e^{-\beta})/(2\sinh\beta)`:

    .. math:: c^*(\beta) = \beta\coth\beta - 1 + \log\frac{\sinh\beta}{\beta}
       \qquad (c^*(1) \approx 0.4745).

    Parameters
    ----------
    beta : float
        Half-width of the logit range (``> 0``).

    Returns
    -------
    float

    Notes
    -----
    Chapter: notebooks/softmax-robustness-information.md.
    """
    beta = check_float(beta, "beta", low=0.0, low_open=True)
    if beta < 1e-3:
        return beta**2 / 2 - beta**4 / 36  # series, avoids cancellation
    # log(sinh β) = β - log 2 + log1p(-e^{-2β}) does not overflow for large β.
    log_sinh = beta - math.log(2.0) + math.log1p(-math.exp(-2 * beta))
    return beta / math.tanh(beta) - 1.0 + log_sinh - math.log(beta)


def box_entropy_local_minima(
    n: int,
    beta: float = 1.0,
    starts: int = 16,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Minimise :math:`H(\operatorname{softmax}(s))` over the box :math:`[-\beta, \beta]^n` from random
    starts with L-BFGS-B, using the exact
    gradient :math:`\partial H/\partial s_i = -p_i(s_i - \langle s\rangle_p)`.

    An independent, search-based check of :func:`box_min_entropy`.

    Parameters
    ----------
    n : int
        Number of logits (``n >= 2``).
    beta : float
        Half-width of the box (``> 0``).
    starts : int
        Number of uniformly random starting points.
    rng : numpy.random.Generator, optional
        Source of the starting points.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The entropies reached, shape ``(starts,)``, and the minimisers, shape ``(starts, n)``.

    Notes
    -----
    Chapter: notebooks/softmax-robustness-information.md.
    """
    from scipy.optimize import minimize

    n = check_int(n, "n", low=2)
    beta = check_float(beta, "beta", low=0.0, low_open=True)
    starts = check_int(starts, "starts", low=1)
    if rng is None:
        rng = np.random.default_rng()
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")

    def fun(s: np.ndarray) -> tuple[float, np.ndarray]:
        z = s - s.max()
        p = np.exp(z) / np.exp(z).sum()
        mean = float(p @ s)
        h = float(np.log(np.exp(z).sum()) + s.max() - mean)
        return h, -p * (s - mean)

    values, points = np.empty(starts), np.empty((starts, n))
    for j in range(starts):
        s0 = rng.uniform(-beta, beta, size=n)
        res = minimize(
            fun,
            s0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(-beta, beta)] * n,
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000},
        )
        values[j], points[j] = res.fun, res.x
    return values, points
