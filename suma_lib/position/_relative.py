r"""Additive relative-position score terms: ALiBi, T5, KERPLE, Sandwich and Shaw et al.

Part of :mod:`suma_lib.position` (import from there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._validation import (
    check_bool,
    check_choice,
    check_device,
    check_dtype,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from ._absolute import (
    sinusoidal_frequencies,
)
from ._base import (
    _check_d,
    _qk_positions,
    _resolve,
    _same_device,
    _work_dtype,
)


# ================================================================================== relative biases
class _Bias(nn.Module):
    """Shared plumbing of the additive score terms: positions, shape ``(..., h, n, m)``, dtype."""

    role = "bias"

    def _distance(self, q, k, q_positions, k_positions) -> torch.Tensor:
        check_tensor(q, "q", min_dim=2, floating=True)
        check_tensor(k, "k", min_dim=2, floating=True)
        _same_device(self, q=q, k=k)
        qp, kp = _qk_positions(q.shape[-2], k.shape[-2], q_positions, k_positions, q.device)
        return kp[..., None, :] - qp[..., :, None]  # (..., n, m): key minus query

    @staticmethod
    def _out(bias: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The bias in the queries' dtype, clamped to its finite range (a huge penalty, never -inf)."""
        info = torch.finfo(q.dtype)
        return bias.clamp(info.min, info.max).to(q.dtype)


def alibi_slopes(
    num_heads: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    r"""ALiBi's head slopes: a geometric sequence :math:`2^{-8/h}, 2^{-16/h}, \dots, 2^{-8}` for :math:`h` a
    power of two.

    For other :math:`h` (the paper's rule, as in its code): the :math:`2^{\lfloor\log_2 h\rfloor}` slopes of
    the nearest smaller power of two, then every other slope of the next power of two,
    :math:`2^{-4/2^k}, 2^{-12/2^k}, \dots`, up to :math:`h` in all.

    Parameters
    ----------
    num_heads : int
    device, dtype

    Returns
    -------
    torch.Tensor, shape ``(num_heads,)``

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md (Part V's extrapolation chapters use it).
    """
    h = check_int(num_heads, "num_heads", low=1)
    dev, dt = _resolve(device, dtype)

    def power_of_two(p: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / p) for i in range(p)]

    p = 1 << (h.bit_length() - 1)
    slopes = power_of_two(p) + power_of_two(2 * p)[0::2][: h - p]
    return torch.tensor(slopes, device=dev, dtype=torch.float64).to(dt)


class ALiBi(_Bias):
    r"""ALiBi: the score term :math:`-\lambda_h |m - n|`, one fixed slope per head (:func:`alibi_slopes`).

    Meant for causal attention (where only :math:`n \le m` is seen); for bidirectional attention the
    same symmetric form is a common extension.

    Parameters
    ----------
    num_heads : int

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = check_int(num_heads, "num_heads", low=1)
        self.register_buffer("slopes", alibi_slopes(self.num_heads, dtype=torch.float64), persistent=False)

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"num_heads={self.num_heads}"

    def forward(self, q, k, q_positions=None, k_positions=None):
        """The bias ``(..., h, n, m)`` (``(h, n, m)`` with default positions)."""
        dist = self._distance(q, k, q_positions, k_positions).abs()
        slopes = self.slopes.to(device=dist.device, dtype=dist.dtype)
        return self._out(-slopes[:, None, None] * dist[..., None, :, :], q)


def t5_relative_position_bucket(
    relative_position: torch.Tensor,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> torch.Tensor:
    r"""T5's bucket of a relative position :math:`r = j - i` (key minus query).

    Bidirectional: half of the buckets for :math:`r > 0`, half for :math:`r \le 0`; causal: only
    :math:`r \le 0` counts (:math:`r > 0` shares bucket 0). Within a half of :math:`B` buckets, distances
    :math:`0, \dots, B/2 - 1` get a bucket each and larger ones share log-spaced buckets,

    .. math:: b(s) = \frac B2 + \left\lfloor \frac{\ln(2s/B)}{\ln(2D/B)}\,\frac B2 \right\rfloor
              \quad\text{capped at } B - 1,

    :math:`D` = ``max_distance`` (every :math:`s \ge D` lands in the last bucket). The logarithm is
    taken in float32, as in the reference code.

    Parameters
    ----------
    relative_position : torch.Tensor
        Integer relative positions, any shape.
    bidirectional : bool
    num_buckets : int
        32 in T5.
    max_distance : int
        128 in T5.

    Returns
    -------
    torch.Tensor
        int64, same shape, values in ``[0, num_buckets)``.

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """
    check_tensor(relative_position, "relative_position")
    if relative_position.is_complex() or relative_position.dtype == torch.bool:
        raise TypeError(f"relative_position must be real, got dtype {relative_position.dtype}")
    if relative_position.is_floating_point():
        check_tensor(relative_position, "relative_position", finite=True)
    bidirectional = check_bool(bidirectional, "bidirectional")
    nb = check_int(num_buckets, "num_buckets", low=4 if bidirectional else 2)
    max_distance = check_int(max_distance, "max_distance", low=1)
    r = relative_position.round().to(torch.int64) if relative_position.is_floating_point() else (
        relative_position.to(torch.int64)
    )
    out = torch.zeros_like(r)
    if bidirectional:
        nb //= 2
        out = out + (r > 0).to(torch.int64) * nb
        s = r.abs()
    else:
        s = (-r).clamp_min(0)
    exact = nb // 2
    if max_distance <= exact:
        raise ValueError(f"max_distance must exceed the {exact} exact buckets, got {max_distance}")
    s_f = s.to(torch.float32).clamp_min(1.0)
    large = exact + (
        torch.log(s_f / exact) / math.log(max_distance / exact) * (nb - exact)
    ).to(torch.int64)
    large = large.clamp(max=nb - 1)
    return out + torch.where(s < exact, s, large)


class T5RelativeBias(_Bias):
    r"""T5's relative bias :math:`\beta_{h, b(j - i)}`: one learned scalar per head and bucket.

    Buckets from :func:`t5_relative_position_bucket`; the table is an ``nn.Embedding(num_buckets,
    num_heads)`` initialised to zero (the layer starts as position-free attention).

    Parameters
    ----------
    num_heads : int
    num_buckets : int
    max_distance : int
    bidirectional : bool
    device, dtype
        Of the table.

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """

    def __init__(
        self,
        num_heads: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = True,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.num_heads = check_int(num_heads, "num_heads", low=1)
        self.bidirectional = check_bool(bidirectional, "bidirectional")
        self.num_buckets = check_int(num_buckets, "num_buckets", low=4 if self.bidirectional else 2)
        self.max_distance = check_int(max_distance, "max_distance", low=1)
        t5_relative_position_bucket(torch.zeros(1, dtype=torch.int64), self.bidirectional,
                                    self.num_buckets, self.max_distance)  # validates the combination
        self.embedding = nn.Embedding(self.num_buckets, self.num_heads, device=device, dtype=dtype)
        nn.init.zeros_(self.embedding.weight)

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return (f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, "
                f"max_distance={self.max_distance}, bidirectional={self.bidirectional}")

    def forward(self, q, k, q_positions=None, k_positions=None):
        """The bias ``(..., h, n, m)``."""
        dist = self._distance(q, k, q_positions, k_positions)
        b = t5_relative_position_bucket(dist, self.bidirectional, self.num_buckets, self.max_distance)
        bias = self.embedding(b.to(self.embedding.weight.device))  # (..., n, m, h)
        return self._out(bias.movedim(-1, -3), q)


KERPLE_KINDS = ("power", "log")


def kerple_bias(
    distance: torch.Tensor,
    r1: torch.Tensor | float,
    r2: torch.Tensor | float,
    kind: str = "log",
) -> torch.Tensor:
    r"""KERPLE's score terms, from conditionally positive definite kernels of :math:`|m - n|`:

    .. math:: \text{power: } -r_1 |m-n|^{r_2} \;(r_1 > 0,\ 0 < r_2 \le 2), \qquad
              \text{log: } -r_1 \ln(1 + r_2 |m-n|) \;(r_1, r_2 > 0).

    Parameters
    ----------
    distance : torch.Tensor
        :math:`m - n` (its absolute value is used), any shape.
    r1, r2 : float or torch.Tensor
        Broadcastable against ``distance`` (e.g. one per head, shape ``(h, 1, 1)``).
    kind : {"power", "log"}

    Returns
    -------
    torch.Tensor
        Finite for finite input (clamped at the dtype's lowest value), with finite gradients also at
        distance 0 (where the power form is 0).

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """
    kind = check_choice(kind, "kind", KERPLE_KINDS)
    check_tensor(distance, "distance", floating=True)
    params = []
    for name, r in (("r1", r1), ("r2", r2)):
        if isinstance(r, torch.Tensor):
            check_tensor(r, name, floating=True)
            if r.device.type != "meta" and r.numel() and bool((r <= 0).any()):
                raise ValueError(f"{name} must be > 0")
        else:
            r = torch.tensor(check_float(r, name, low=0.0, low_open=True), device=distance.device,
                             dtype=distance.dtype)
        params.append(r)
    r1, r2 = params
    if kind == "power" and r2.device.type != "meta" and r2.numel() and bool((r2 > 2).any()):
        raise ValueError("r2 must be <= 2 for the power form (a conditionally positive definite kernel)")
    s = distance.abs()
    info = torch.finfo(s.dtype)
    if kind == "log":
        out = -r1 * torch.log1p(r2 * s)
    else:
        powered = torch.exp(r2 * torch.log(s.clamp_min(info.tiny)))  # NaN stays NaN
        out = -r1 * torch.where(s == 0, torch.zeros_like(powered), powered)
    return out.clamp_min(info.min)  # a huge distance gives a huge finite penalty


class KERPLE(_Bias):
    r"""KERPLE with learned :math:`r_1, r_2 > 0` per head (:func:`kerple_bias`).

    The parameters are stored as their logarithms (so they stay positive); for the power form
    :math:`r_2` is capped at 2.

    Parameters
    ----------
    num_heads : int
    kind : {"power", "log"}
    r1, r2 : float
        Initial values (1 by default).

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """

    def __init__(self, num_heads: int, kind: str = "log", r1: float = 1.0, r2: float = 1.0) -> None:
        super().__init__()
        self.num_heads = check_int(num_heads, "num_heads", low=1)
        self.kind = check_choice(kind, "kind", KERPLE_KINDS)
        r1 = check_float(r1, "r1", low=0.0, low_open=True)
        r2 = check_float(r2, "r2", low=0.0, low_open=True)
        if self.kind == "power" and r2 > 2:
            raise ValueError(f"r2 must be <= 2 for the power form, got {r2}")
        self.log_r1 = nn.Parameter(torch.full((self.num_heads,), math.log(r1)))
        self.log_r2 = nn.Parameter(torch.full((self.num_heads,), math.log(r2)))

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"num_heads={self.num_heads}, kind={self.kind!r}"

    def forward(self, q, k, q_positions=None, k_positions=None):
        """The bias ``(..., h, n, m)``."""
        dist = self._distance(q, k, q_positions, k_positions)[..., None, :, :]
        r1 = self.log_r1.exp().to(dist.dtype)[:, None, None]
        r2 = self.log_r2.exp().to(dist.dtype)[:, None, None]
        if self.kind == "power":
            r2 = r2.clamp(max=2.0)
        return self._out(kerple_bias(dist, r1, r2, self.kind), q)


def sandwich_bias(
    distance: torch.Tensor, dim: int = 128, base: float = 10000.0
) -> torch.Tensor:
    r"""Sandwich's score term: the inner product of two sinusoidal encodings, shifted to 0 at distance 0,

    .. math:: \langle p_m, p_n\rangle - \frac{d'}{2} = \sum_{i=0}^{d'/2-1} \bigl(\cos((m-n)\theta_i) - 1\bigr)
              \le 0, \qquad \theta_i = \text{base}^{-2i/d'},

    equivalently the extra coordinates of :math:`[q, \sqrt\lambda\,p_m]\cdot[k, \sqrt\lambda\,p_n]`
    (the constant :math:`d'/2` does not change a softmax). Multiply by a per-head :math:`\lambda`.

    Parameters
    ----------
    distance : torch.Tensor
        :math:`m - n`, any shape.
    dim : int
        :math:`d'`, even.
    base : float

    Returns
    -------
    torch.Tensor
        Shape of ``distance``; its dtype if floating-point, float32 for integer distances.

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """
    check_tensor(distance, "distance", finite=True)
    if distance.is_complex() or distance.dtype == torch.bool:
        raise TypeError(f"distance must be real, got dtype {distance.dtype}")
    d = _check_d(dim)
    work = _work_dtype(distance.device)
    omega = sinusoidal_frequencies(d, base, device=distance.device, dtype=work)
    out = (torch.cos(distance.to(work)[..., None] * omega) - 1).sum(-1)
    return out.to(distance.dtype if distance.is_floating_point() else torch.float32)


class Sandwich(_Bias):
    r"""Sandwich (:func:`sandwich_bias`) times a per-head weight :math:`\lambda_h` as a score term.

    Parameters
    ----------
    num_heads : int
    dim : int
        :math:`d'` of the sinusoids (128 by default).
    base : float
    scale : float or sequence of float
        :math:`\lambda` (one value for all heads, or one per head).

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """

    def __init__(self, num_heads: int, dim: int = 128, base: float = 10000.0, scale=1.0) -> None:
        super().__init__()
        self.num_heads = check_int(num_heads, "num_heads", low=1)
        self.dim = _check_d(dim)
        self.base = check_float(base, "base", low=0.0, low_open=True)
        if isinstance(scale, Sequence) and not isinstance(scale, str):
            if len(scale) != self.num_heads:
                raise ValueError(f"scale must have one value per head ({self.num_heads}), got {len(scale)}")
            lam = [check_float(s, "scale", low=0.0) for s in scale]
        else:
            lam = [check_float(scale, "scale", low=0.0)] * self.num_heads
        self.register_buffer("scale", torch.tensor(lam, dtype=torch.float64), persistent=False)

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"num_heads={self.num_heads}, dim={self.dim}"

    def forward(self, q, k, q_positions=None, k_positions=None):
        """The bias ``(..., h, n, m)``."""
        dist = self._distance(q, k, q_positions, k_positions)
        b = sandwich_bias(dist, self.dim, self.base)[..., None, :, :]  # in the work dtype
        return self._out(self.scale.to(device=b.device, dtype=b.dtype)[:, None, None] * b, q)


class ShawRelativePosition(_Bias):
    r"""Shaw et al.'s relative position representations, key side: the score term
    :math:`q_i^\top a^K_{ij}/\sqrt{d}` with :math:`a^K_{ij} = w^K_{\operatorname{clip}(j - i, -k, k)}`.

    :math:`2k + 1` learned vectors of the head width, shared by the heads (as in the paper). The value
    side :math:`\sum_j \alpha_{ij} a^V_{ij}` is :meth:`value_term` (not added by the attention hooks).
    Unlike the other terms this one depends on the queries' values.

    Parameters
    ----------
    head_dim : int
    max_distance : int
        The clipping distance :math:`k`.
    values : bool
        Also learn the value vectors :math:`w^V`.
    generator : torch.Generator, optional
    device, dtype

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """

    def __init__(
        self, head_dim: int, max_distance: int, values: bool = False, *, generator=None, device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.head_dim = check_int(head_dim, "head_dim", low=1)
        self.max_distance = check_int(max_distance, "max_distance", low=0)
        check_generator(generator)
        size = (2 * self.max_distance + 1, self.head_dim)

        def table() -> nn.Parameter:
            w = torch.empty(size, device=check_device(device), dtype=check_dtype(dtype))
            if w.device.type != "meta":
                w.normal_(0.0, self.head_dim**-0.5, generator=generator)
            return nn.Parameter(w)

        self.keys = table()
        self.values = table() if check_bool(values, "values") else None

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"head_dim={self.head_dim}, max_distance={self.max_distance}"

    def index(self, q, k, q_positions=None, k_positions=None) -> torch.Tensor:
        """The table row :math:`\\operatorname{clip}(j-i, -k, k) + k` of each pair, ``(..., n, m)``."""
        dist = self._distance(q, k, q_positions, k_positions)
        kk = self.max_distance
        return (dist.round().clamp(-kk, kk) + kk).to(torch.int64)

    def forward(self, q, k, q_positions=None, k_positions=None):
        """The term ``(..., h, n, m)`` :math:`q_i \\cdot a^K_{ij} / \\sqrt{d}`."""
        check_tensor(q, "q", min_dim=2, floating=True)
        if q.shape[-1] != self.head_dim:
            raise ValueError(f"q must have last dimension {self.head_dim}, got {tuple(q.shape)}")
        idx = self.index(q, k, q_positions, k_positions)
        per_row = torch.matmul(q, self.keys.to(q.dtype).mT)  # (..., h, n, 2k+1)
        shape = torch.broadcast_shapes(per_row.shape[:-1], idx.shape[:-1]) + idx.shape[-1:]
        out = torch.gather(per_row.expand(*shape[:-1], per_row.shape[-1]), -1, idx.expand(shape))
        return self._out(out / math.sqrt(self.head_dim), q)

    def value_term(self, weights: torch.Tensor, q_positions=None, k_positions=None) -> torch.Tensor:
        """:math:`\\sum_j \\alpha_{ij} a^V_{ij}` for attention weights ``(..., n, m)``: ``(..., n, d)``."""
        if self.values is None:
            raise ValueError("this module was built with values=False")
        check_tensor(weights, "weights", min_dim=2, floating=True)
        n, m = weights.shape[-2:]
        dummy_q = weights.new_empty(n, 1)
        idx = self.index(dummy_q, weights.new_empty(m, 1), q_positions, k_positions)
        shape = torch.broadcast_shapes(weights.shape, idx.shape)
        buckets = weights.new_zeros(*shape[:-1], 2 * self.max_distance + 1)
        buckets = buckets.scatter_add(-1, idx.expand(shape), weights.expand(shape))
        return torch.matmul(buckets, self.values.to(weights.dtype))
