r"""Query/key transforms: RoPE, XPOS and the :math:`\log_L n` attention scale.

Part of :mod:`suma_lib.position` (import from there).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from .._validation import (
    check_bool,
    check_choice,
    check_dtype,
    check_float,
    check_int,
    check_tensor,
)
from ._absolute import (
    sinusoidal_frequencies,
)
from ._base import (
    _check_d,
    _compute_dtype,
    _positions,
    _qk_positions,
    _same_device,
    _work_dtype,
)

# ================================================================================================ RoPE
ROPE_LAYOUTS = ("interleaved", "half")


def _check_x(x: torch.Tensor, name: str) -> int:
    check_tensor(x, name, min_dim=2, floating=True)
    d = x.shape[-1]
    if d < 2 or d % 2:
        raise ValueError(f"{name} must have an even last dimension >= 2 (rotated in pairs), got {d}")
    return d


def rope_cos_sin(
    positions: torch.Tensor,
    d: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`\cos p\theta_i` and :math:`\sin p\theta_i`, :math:`\theta_i = \text{base}^{-2i/d}`.

    The angles :math:`p\theta_i` are formed in float64 (float32 on MPS), so that large positions keep
    their accuracy, and the cosines and sines are returned in ``dtype`` (:func:`apply_rope` asks for
    float32 for half inputs, which it rotates in float32 and casts back).

    Parameters
    ----------
    positions : torch.Tensor, shape ``(...,)``
        Real positions.
    d : int
        Even head dimension.
    base : float
        RoPE's base (10000 in RoFormer; larger in long-context models).
    dtype : torch.dtype, optional
        Of the result: by default that of floating-point positions, float32 for integer ones.

    Returns
    -------
    cos, sin : torch.Tensor, shape ``(..., d // 2)``

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """
    check_tensor(positions, "positions", finite=True)
    if positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(f"positions must hold real positions, got dtype {positions.dtype}")
    dt = check_dtype(dtype) or (positions.dtype if positions.is_floating_point() else torch.float32)
    work = _work_dtype(positions.device)
    omega = sinusoidal_frequencies(d, base, device=positions.device, dtype=work)
    angle = positions.to(work)[..., None] * omega
    return torch.cos(angle).to(dt), torch.sin(angle).to(dt)


#: Devices whose complex multiplication the interleaved rotation uses (elsewhere: real arithmetic).
_COMPLEX_DEVICES = ("cpu", "cuda", "meta")
#: Default-position tables kept by :func:`_default_table` (see :func:`_table`), most recent last.
_TABLES: OrderedDict[tuple, tuple] = OrderedDict()
_TABLES_MAX, _TABLE_MAX_ELEMENTS = 32, 1 << 22


def _table(pos: torch.Tensor, d: int, base: float, dtype: torch.dtype, layout: str):
    """(cos, sin, extra) of ``pos`` (work dtype) for :func:`_rotate`.

    ``extra`` is ``cos + i sin`` for the interleaved layout (on devices whose complex product is used), and
    the full-width ``([cos, cos], [-sin, sin])`` for the half layout.
    """
    cos, sin = rope_cos_sin(pos, d, base, dtype=dtype)
    if layout == "half":
        extra = (torch.cat((cos, cos), -1), torch.cat((-sin, sin), -1))
    else:
        extra = torch.complex(cos, sin) if pos.device.type in _COMPLEX_DEVICES else None
    return cos, sin, extra


def _default_table(n: int, offset: float, d: int, base: float, device: torch.device, dtype: torch.dtype,
                   layout: str):
    """The table of positions ``offset, ..., offset + n - 1``, cached per (n, offset, d, base, device, dtype,
    layout).

    Recomputing the angles in float64 costs more than the rotation itself at short lengths, and every layer
    of a model asks for the same table. The cache keeps the 32 most recent tables of at most 2^22 numbers
    each. Tables are built outside inference mode (so that autograd can save them later); under
    ``torch.compile`` tracing and on the meta device they are recomputed, not cached.
    """
    key = (n, offset, d, base, device, dtype, layout)
    hit = _TABLES.get(key)
    if hit is not None:
        try:
            _TABLES.move_to_end(key)
        except KeyError:  # evicted meanwhile by another thread: the table itself is still valid
            pass
        return hit
    cacheable = (device.type != "meta" and n * d // 2 <= _TABLE_MAX_ELEMENTS
                 and not torch.compiler.is_compiling())
    with torch.inference_mode(False), torch.no_grad():
        pos = torch.arange(n, device=device, dtype=_work_dtype(device)) + offset
        out = _table(pos, d, base, dtype, layout)
    if cacheable:
        _TABLES[key] = out
        while len(_TABLES) > _TABLES_MAX:
            _TABLES.popitem(last=False)
    return out


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str, extra=None) -> torch.Tensor:
    """Rotate the pairs of ``x`` (already in the compute dtype) by the given cosines and sines.

    With ``extra`` from :func:`_table`: interleaved pairs are adjacent, so ``x`` is read as complex numbers
    and multiplied by ``cos + i sin`` (one kernel each way, several times faster than strided real
    arithmetic); half-split pairs are ``x * [cos, cos] + [x_2, x_1] * [-sin, sin]`` (one copy, one product,
    one fused multiply-add). Without it, real arithmetic on the two halves of each pair.
    """
    if layout == "interleaved":
        if extra is not None:
            cis = extra
            if x.stride(-1) != 1 or x.storage_offset() % 2 or any(s % 2 for s in x.stride()[:-1]):
                x = x.contiguous()
            z = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
            return torch.view_as_real(z * cis).flatten(-2)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    if extra is not None:
        cos_full, sin_signed = extra
        return torch.addcmul(x * cos_full, torch.cat((x2, x1), -1), sin_signed)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def apply_rope(
    x: torch.Tensor,
    positions: torch.Tensor | None = None,
    *,
    offset: float = 0.0,
    base: float = 10000.0,
    layout: str = "interleaved",
) -> torch.Tensor:
    r"""Rotary position embedding: rotate each pair of coordinates of token :math:`m` by :math:`m\theta_i`.

    Seen as complex numbers :math:`z_i = x_{a_i} + \mathrm{i}\,x_{b_i}`,

    .. math:: z_i \mapsto z_i\, e^{\mathrm{i} m\theta_i}, \qquad \theta_i = \text{base}^{-2i/d},

    i.e. :math:`x \mapsto R_m x` with a block-diagonal rotation, so that
    :math:`\langle R_m q, R_n k\rangle = q^\top R_{n-m} k` depends on :math:`n - m` only. The pair
    :math:`(a_i, b_i)` is :math:`(2i, 2i+1)` with ``layout="interleaved"`` and :math:`(i, i + d/2)` with
    ``layout="half"``.

    Parameters
    ----------
    x : torch.Tensor, shape ``(..., n, d)``
        Queries or keys (per head), ``d`` even.
    positions : torch.Tensor, optional
        Positions of the ``n`` tokens, broadcastable to ``(..., n)`` (integer or real, e.g. random
        positions); by default ``offset, ..., offset + n - 1``.
    offset : float
        First position when ``positions`` is omitted (a KV cache: new queries start at the cache length).
    base : float
        Positive base.
    layout : {"interleaved", "half"}

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``; float16/bfloat16 inputs are rotated in float32.

    Notes
    -----
    Without ``positions``, the cosines and sines are cached per length, offset, width, base, device, dtype
    and layout (every layer of a model reuses them); interleaved pairs are rotated as one complex product.
    ``benchmarks/position.py`` times this against rotary-embedding-torch, x-transformers and transformers.

    Chapter: notebooks/position-encoding-survey.md.
    """
    layout = check_choice(layout, "layout", ROPE_LAYOUTS)
    d = _check_x(x, "x")
    offset = check_float(offset, "offset")
    cd = _compute_dtype(x)
    if positions is None:
        base = check_float(base, "base", low=0.0, low_open=True)
        cos, sin, extra = _default_table(x.shape[-2], offset, d, base, x.device, cd, layout)
    else:
        pos = _positions(positions, x.shape[-2], offset, x.device, "positions")
        cos, sin, extra = _table(pos, d, base, cd, layout)
    return _rotate(x.to(cd), cos, sin, layout, extra).to(x.dtype)


class RotaryEmbedding(nn.Module):
    r"""RoPE as a query/key transform for :class:`~suma_lib.attention.multihead.MultiHeadAttention`.

    ``RotaryEmbedding(d)(q, k)`` returns :math:`(R_m q_m, R_n k_n)` (:func:`apply_rope`), keys at
    ``0..m-1`` and queries at the last ``n`` key positions unless explicit positions are given, so a
    decoder step with a KV cache rotates its new query by the right angle. Pass it as
    ``MultiHeadAttention(..., qk_transform=RotaryEmbedding(head_dim))``. No parameters.

    Parameters
    ----------
    head_dim : int
        Even per-head width.
    base : float
    layout : {"interleaved", "half"}

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """

    role = "qk"

    def __init__(self, head_dim: int, base: float = 10000.0, layout: str = "interleaved") -> None:
        super().__init__()
        self.head_dim = _check_d(head_dim)
        self.base = check_float(base, "base", low=0.0, low_open=True)
        self.layout = check_choice(layout, "layout", ROPE_LAYOUTS)

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"head_dim={self.head_dim}, base={self.base:g}, layout={self.layout!r}"

    def forward(self, q, k, q_positions=None, k_positions=None):
        """Rotate queries ``(..., n, d)`` and keys ``(..., m, d)`` by their positions."""
        for name, t in (("q", q), ("k", k)):
            if _check_x(t, name) != self.head_dim:
                raise ValueError(f"{name} must have last dimension {self.head_dim}, got {tuple(t.shape)}")
        kw = {"base": self.base, "layout": self.layout}
        n, m = q.shape[-2], k.shape[-2]
        if q_positions is None and k_positions is None and q.device == k.device:
            # the default positions (keys at 0..m-1, queries the last n of them) as offsets: cached tables
            return apply_rope(q, offset=float(m - n), **kw), apply_rope(k, **kw)
        qp, kp = _qk_positions(n, m, q_positions, k_positions, q.device)
        return apply_rope(q, qp, **kw), apply_rope(k, kp, **kw)


# ================================================================================================ XPOS
def apply_xpos(
    q: torch.Tensor,
    k: torch.Tensor,
    q_positions: torch.Tensor | None = None,
    k_positions: torch.Tensor | None = None,
    *,
    base: float = 10000.0,
    scale_base: float = 512.0,
    gamma: float = 0.4,
    layout: str = "interleaved",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""XPOS: RoPE with a per-pair exponential scale, :math:`\xi^{m}` on queries and :math:`\xi^{-n}` on keys.

    With :math:`\zeta_i = (2i/d + \gamma)/(1 + \gamma) \in (0, 1)` and :math:`\xi_i = \zeta_i^{1/B}`
    (:math:`B` = ``scale_base``),

    .. math:: q_m \mapsto \xi^{\,m - c} R_m q_m, \qquad k_n \mapsto \xi^{-(n - c)} R_n k_n, \qquad
              \langle \cdot, \cdot \rangle = \sum_i \xi_i^{\,m-n}\,(\text{pair } i \text{ of } q^\top R_{n-m} k),

    which decays with :math:`m - n \ge 0` (causal attention). The centre :math:`c` (the midpoint of all
    positions) cancels in every product; it keeps the factors near 1 at long lengths, where
    :math:`\xi^{\pm n}` alone would overflow or underflow.

    Parameters
    ----------
    q, k : torch.Tensor, shapes ``(..., n, d)`` and ``(..., m, d)``
    q_positions, k_positions : torch.Tensor, optional
        By default keys at ``0..m-1`` and queries at the last ``n`` of them.
    base, layout
        As in :func:`apply_rope`.
    scale_base : float
        :math:`B` (512 in the paper).
    gamma : float
        :math:`\gamma` (0.4 in the paper).

    Returns
    -------
    q, k : torch.Tensor
        Same shapes and dtypes.

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md (and Part V's extrapolation chapters).
    """
    layout = check_choice(layout, "layout", ROPE_LAYOUTS)
    d = _check_x(q, "q")
    if _check_x(k, "k") != d:
        raise ValueError(f"q and k must have the same last dimension, got {d} and {k.shape[-1]}")
    scale_base = check_float(scale_base, "scale_base", low=0.0, low_open=True)
    gamma = check_float(gamma, "gamma", low=0.0, low_open=True)
    _same_device(None, q=q, k=k)
    qp, kp = _qk_positions(q.shape[-2], k.shape[-2], q_positions, k_positions, q.device)
    if qp.numel() and kp.numel():
        lo = torch.minimum(qp.min(), kp.min())
        hi = torch.maximum(qp.max(), kp.max())
        centre = (lo + hi) / 2
    else:
        centre = torch.zeros((), device=q.device, dtype=qp.dtype)
    i = torch.arange(d // 2, device=q.device, dtype=qp.dtype)
    log_zeta = torch.log((2 * i / d + gamma) / (1 + gamma)) / scale_base  # log xi_i
    out = []
    for x, pos, sign in ((q, qp, 1.0), (k, kp, -1.0)):
        cd = _compute_dtype(x)
        cos, sin = rope_cos_sin(pos, d, base, dtype=cd)
        scale = torch.exp(sign * (pos - centre)[..., None] * log_zeta).to(cd)  # (..., n, d/2)
        out.append(_rotate(x.to(cd), cos * scale, sin * scale, layout).to(x.dtype))
    return out[0], out[1]


class XPos(nn.Module):
    r"""XPOS (:func:`apply_xpos`) as a query/key transform for
    :class:`~suma_lib.attention.multihead.MultiHeadAttention`.

    Meant for causal attention: for keys after the query (:math:`n > m`) the factor
    :math:`\xi^{m-n}` grows instead of decaying.

    Parameters
    ----------
    head_dim : int
    base, scale_base, gamma, layout
        As in :func:`apply_xpos`.

    Notes
    -----
    Chapter: notebooks/position-encoding-survey.md.
    """

    role = "qk"

    def __init__(
        self,
        head_dim: int,
        base: float = 10000.0,
        scale_base: float = 512.0,
        gamma: float = 0.4,
        layout: str = "interleaved",
    ) -> None:
        super().__init__()
        self.head_dim = _check_d(head_dim)
        self.base = check_float(base, "base", low=0.0, low_open=True)
        self.scale_base = check_float(scale_base, "scale_base", low=0.0, low_open=True)
        self.gamma = check_float(gamma, "gamma", low=0.0, low_open=True)
        self.layout = check_choice(layout, "layout", ROPE_LAYOUTS)

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"head_dim={self.head_dim}, scale_base={self.scale_base:g}, gamma={self.gamma:g}"

    def forward(self, q, k, q_positions=None, k_positions=None):
        """Rotate and scale queries and keys."""
        _check_x(q, "q")
        if q.shape[-1] != self.head_dim:
            raise ValueError(f"q must have last dimension {self.head_dim}, got {tuple(q.shape)}")
        return apply_xpos(
            q, k, q_positions, k_positions, base=self.base, scale_base=self.scale_base,
            gamma=self.gamma, layout=self.layout,
        )


# ======================================================================================== log-n scale
def log_n_scale(n: int | torch.Tensor, training_length: int) -> torch.Tensor:
    r"""The factor :math:`\log_L n = \ln n / \ln L` that turns :math:`QK^\top/\sqrt d` into
    :math:`\log_L n \cdot QK^\top/\sqrt d` (:math:`L` = ``training_length``, :math:`n` = number of keys).

    It is 1 at the training length and grows slowly beyond it, keeping the attention's entropy roughly
    constant as the sequence grows.

    Parameters
    ----------
    n : int or torch.Tensor
        Number(s) of keys attended to (:math:`\ge 1` in practice; any positive value is accepted).
    training_length : int
        :math:`L \ge 2`.

    Returns
    -------
    torch.Tensor
        The shape of ``n``; the dtype of a floating-point ``n``, else float64 (float32 on MPS).

    Notes
    -----
    Chapter: Part V, ``position-robustness`` (used with the other schemes of this module).
    """
    L = check_int(training_length, "training_length", low=2)
    if isinstance(n, torch.Tensor):
        check_tensor(n, "n", finite=True)
        if n.is_complex() or n.dtype == torch.bool:
            raise TypeError(f"n must hold real counts, got dtype {n.dtype}")
        if n.device.type != "meta" and n.numel() and bool((n <= 0).any()):
            raise ValueError("n must be > 0")
        out_dtype = n.dtype if n.is_floating_point() else _work_dtype(n.device)
        nn_ = n.to(_work_dtype(n.device))
        return (torch.log(nn_) / math.log(L)).to(out_dtype)
    nn_ = torch.tensor(float(check_int(n, "n", low=1)), dtype=torch.float64)
    return torch.log(nn_) / math.log(L)


class LogNScale(nn.Module):
    r"""Multiply the queries by :math:`\log_L n` (:func:`log_n_scale`): a query/key transform.

    Non-causal: :math:`n` is the number of keys. ``causal=True``: query :math:`i` (at position
    :math:`p_i`, keys at ``0..m-1``) sees :math:`p_i + 1` keys, and its own count is used.

    Parameters
    ----------
    training_length : int
    causal : bool

    Notes
    -----
    Chapter: Part V, ``position-robustness``.
    """

    role = "qk"

    def __init__(self, training_length: int, causal: bool = False) -> None:
        super().__init__()
        self.training_length = check_int(training_length, "training_length", low=2)
        self.causal = check_bool(causal, "causal")

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"training_length={self.training_length}, causal={self.causal}"

    def forward(self, q, k, q_positions=None, k_positions=None):
        """Scale the queries ``(..., n, d)``; the keys pass through."""
        check_tensor(q, "q", min_dim=2, floating=True)
        check_tensor(k, "k", min_dim=2, floating=True)
        _same_device(None, q=q, k=k)
        n, m = q.shape[-2], k.shape[-2]
        if self.causal:
            qp, _ = _qk_positions(n, m, q_positions, k_positions, q.device)
            count = (qp + 1).clamp_min(1)
        else:
            count = torch.full((n,), float(max(m, 1)), device=q.device, dtype=_work_dtype(q.device))
        s = log_n_scale(count, self.training_length)[..., None].to(_compute_dtype(q))
        return (q.to(s.dtype) * s).to(q.dtype), k
