r"""Position encodings: absolute, rotary and relative (Part V of the book).

Absolute encodings are added to the inputs: the Transformer's sinusoid (:func:`sinusoidal_encoding`)
and a learned table (:class:`LearnedPositionalEmbedding`). The others act inside attention and plug
into :class:`~suma_lib.attention.MultiHeadAttention` through its two hooks, as a query/key transform
(``qk_transform=``; attribute ``role = "qk"``) or as an additive score term (``score_bias=``;
``role = "bias"``), or several at once through :class:`PositionalMultiHeadAttention`'s ``position=``:

* query/key transforms: :class:`RotaryEmbedding` (RoPE, :func:`apply_rope`), :class:`XPos`
  (:func:`apply_xpos`), :class:`LogNScale` (the :math:`\log_L n` attention scale);
* score terms: :class:`ShawRelativePosition`, :class:`T5RelativeBias`
  (:func:`t5_relative_position_bucket`), :class:`ALiBi` (:func:`alibi_slopes`), :class:`KERPLE`
  (:func:`kerple_bias`), :class:`Sandwich` (:func:`sandwich_bias`).

Positions of queries and keys default to the KV-cache convention: ``m`` keys sit at ``0, ..., m-1``
and ``n`` queries at the last ``n`` of them, ``m-n, ..., m-1``; every module also takes explicit
``q_positions``/``k_positions``. The relative position of key :math:`j` seen from query :math:`i` is
``k_positions[j] - q_positions[i]`` (T5's "memory minus query"). :func:`random_positions` and
:func:`equal_mean_positions` draw position sequences for training.

The sinusoid's two layouts of the same numbers (with :math:`\omega_i = \text{base}^{-2i/d}`):

* ``"interleaved"`` (the paper, and e.g. DistilBERT/XLM): :math:`PE_{p,2i} = \sin p\omega_i`,
  :math:`PE_{p,2i+1} = \cos p\omega_i`;
* ``"concatenated"`` (e.g. Marian; the article's own Keras code also keeps sines and cosines in two
  halves): all sines first, then all cosines, :math:`PE_{p,i} = \sin p\omega_i`,
  :math:`PE_{p,d/2+i} = \cos p\omega_i`.

RoPE pairs coordinates the same two ways: ``"interleaved"`` rotates :math:`(x_{2i}, x_{2i+1})` (the
RoFormer paper, GPT-J) and ``"half"`` rotates :math:`(x_i, x_{i+d/2})` (GPT-NeoX, LLaMA).

Chapters: ``notebooks/attention-is-all-you-need.md``, ``notebooks/position-encoding-survey.md``,
``notebooks/sinusoidal-origin.md``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

from ._validation import (
    check_bool,
    check_choice,
    check_device,
    check_dtype,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from .attention.multihead import MultiHeadAttention

__all__ = [
    "KERPLE",
    "ALiBi",
    "LearnedPositionalEmbedding",
    "LogNScale",
    "PositionalMultiHeadAttention",
    "RoPEBlock",
    "RotaryEmbedding",
    "Sandwich",
    "ShawRelativePosition",
    "T5RelativeBias",
    "XPos",
    "alibi_slopes",
    "alpha_ramp",
    "apply_rope",
    "apply_xpos",
    "equal_mean_positions",
    "kerple_bias",
    "log_n_scale",
    "random_positions",
    "relative_positions",
    "rope_cos_sin",
    "sandwich_bias",
    "sinusoidal_encoding",
    "sinusoidal_frequencies",
    "sinusoidal_shift_matrix",
    "t5_relative_position_bucket",
]

LAYOUTS = ("interleaved", "concatenated")


def _work_dtype(device: torch.device) -> torch.dtype:
    """Angles are computed in float64 (float32 where the device has no float64, e.g. MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_d(d: int) -> int:
    d = check_int(d, "d", low=2)
    if d % 2:
        raise ValueError(f"d must be even (the encoding is made of (sin, cos) pairs), got {d}")
    return d


def _resolve(device, dtype) -> tuple[torch.device, torch.dtype]:
    dev = check_device(device) or torch.device("cpu")
    dt = check_dtype(dtype) or torch.get_default_dtype()
    return dev, dt


def sinusoidal_frequencies(
    d: int,
    base: float = 10000.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""The :math:`d/2` angular frequencies :math:`\omega_i = \text{base}^{-2i/d}` of the sinusoidal encoding.

    Parameters
    ----------
    d : int
        Even encoding dimension.
    base : float
        Positive base (10000 in the Transformer).
    device, dtype
        Where and how the result is stored (CPU and the default dtype if omitted).

    Returns
    -------
    torch.Tensor, shape ``(d // 2,)``
        Decreasing from :math:`\omega_0 = 1` to :math:`\text{base}^{-(d-2)/d}`.

    Notes
    -----
    Chapter: ``notebooks/attention-is-all-you-need.ipynb``.
    """
    d = _check_d(d)
    base = check_float(base, "base", low=0.0, low_open=True)
    dev, dt = _resolve(device, dtype)
    i = torch.arange(d // 2, device=dev, dtype=_work_dtype(dev))
    return torch.pow(torch.tensor(base, device=dev, dtype=i.dtype), -2.0 * i / d).to(dt)


def _pairs_to_layout(s: torch.Tensor, c: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "interleaved":
        return torch.stack((s, c), dim=-1).flatten(-2)
    return torch.cat((s, c), dim=-1)


def sinusoidal_encoding(
    n: int | torch.Tensor,
    d: int,
    base: float = 10000.0,
    *,
    layout: str = "interleaved",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""The sinusoidal position encoding of "Attention is all you need".

    .. math:: PE_{p,2i} = \sin\!\left(p\,\text{base}^{-2i/d}\right), \qquad
              PE_{p,2i+1} = \cos\!\left(p\,\text{base}^{-2i/d}\right)

    (``layout="interleaved"``); ``layout="concatenated"`` puts the :math:`d/2` sines first and the cosines
    after them. Angles are computed in float64 where the device has it, then cast, so a float32 encoding
    is accurate to float32 rounding even at large positions.

    Parameters
    ----------
    n : int or torch.Tensor
        Either the number of positions (positions ``0, ..., n-1``), or a tensor of positions of any shape
        (integer or real, e.g. shifted or randomly drawn positions); a floating-point tensor also sets the
        default device and dtype of the result.
    d : int
        Even encoding dimension.
    base : float
        Positive base of the geometric progression of wavelengths (10000 in the Transformer).
    layout : {"interleaved", "concatenated"}
        Order of the coordinates, see the module docstring.
    device, dtype
        Where and how the result is stored; by default the device of ``n`` (or the CPU) and the dtype of a
        floating-point ``n`` (or the default dtype).

    Returns
    -------
    torch.Tensor, shape ``(n, d)`` or ``(*n.shape, d)``

    Raises
    ------
    ValueError
        If ``n`` is negative or not finite, ``d`` is odd or smaller than 2, or ``base`` is not positive.

    Notes
    -----
    Chapter: ``notebooks/attention-is-all-you-need.ipynb``.
    """
    layout = check_choice(layout, "layout", LAYOUTS)
    if isinstance(n, torch.Tensor):
        check_tensor(n, "n", finite=True)
        if n.is_complex() or n.dtype == torch.bool:
            raise TypeError(f"n must hold real positions, got dtype {n.dtype}")
        device = n.device if device is None else device
        if dtype is None and n.is_floating_point():
            dtype = n.dtype
        dev, dt = _resolve(device, dtype)
        pos = n.to(device=dev, dtype=_work_dtype(dev))
    else:
        if not isinstance(n, numbers.Integral) or isinstance(n, bool):
            raise TypeError(f"n must be an int or a tensor of positions, got {type(n).__name__}")
        n = check_int(n, "n", low=0)
        dev, dt = _resolve(device, dtype)
        pos = torch.arange(n, device=dev, dtype=_work_dtype(dev))
    omega = sinusoidal_frequencies(d, base, device=dev, dtype=pos.dtype)
    angle = pos[..., None] * omega
    return _pairs_to_layout(torch.sin(angle), torch.cos(angle), layout).to(dt)


def sinusoidal_shift_matrix(
    k: float | torch.Tensor,
    d: int,
    base: float = 10000.0,
    *,
    layout: str = "interleaved",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""The rotation :math:`R_k` with :math:`PE(p + k) = R_k\, PE(p)` for every position :math:`p`.

    By the angle-addition formulas each pair :math:`(\sin p\omega, \cos p\omega)` is carried to
    :math:`(\sin (p+k)\omega, \cos (p+k)\omega)` by

    .. math:: \begin{pmatrix} \cos k\omega & \sin k\omega \\ -\sin k\omega & \cos k\omega \end{pmatrix},

    so :math:`R_k` is block diagonal (in the interleaved layout; the same blocks spread over coordinates
    :math:`i` and :math:`i + d/2` in the concatenated one), orthogonal, and does not depend on :math:`p`.
    With row vectors, as the encoding is stored, the shift reads ``pe @ R.mT``.

    Parameters
    ----------
    k : float or torch.Tensor
        The shift (any real number; negative shifts move back). A tensor of shifts of shape ``S`` gives a
        stack of matrices of shape ``(*S, d, d)`` and sets the default device and dtype.
    d : int
        Even encoding dimension.
    base : float
        Positive base, as in :func:`sinusoidal_encoding`.
    layout : {"interleaved", "concatenated"}
        Coordinate order, as in :func:`sinusoidal_encoding`.
    device, dtype
        Where and how the result is stored.

    Returns
    -------
    torch.Tensor, shape ``(d, d)`` or ``(*k.shape, d, d)``

    Notes
    -----
    Chapter: ``notebooks/attention-is-all-you-need.ipynb``.
    """
    layout = check_choice(layout, "layout", LAYOUTS)
    d = _check_d(d)
    if isinstance(k, torch.Tensor):
        check_tensor(k, "k", finite=True)
        if k.is_complex() or k.dtype == torch.bool:
            raise TypeError(f"k must hold real shifts, got dtype {k.dtype}")
        device = k.device if device is None else device
        if dtype is None and k.is_floating_point():
            dtype = k.dtype
        dev, dt = _resolve(device, dtype)
        shift = k.to(device=dev, dtype=_work_dtype(dev))
    else:
        shift_value = check_float(k, "k")
        dev, dt = _resolve(device, dtype)
        shift = torch.tensor(shift_value, device=dev, dtype=_work_dtype(dev))
    omega = sinusoidal_frequencies(d, base, device=dev, dtype=shift.dtype)
    angle = shift[..., None] * omega  # (..., d/2)
    c, s = torch.cos(angle), torch.sin(angle)
    if layout == "interleaved":
        zero = torch.zeros_like(s)
        diag = torch.stack((c, c), dim=-1).flatten(-2)  # (..., d)
        upper = torch.stack((s, zero), dim=-1).flatten(-2)[..., :-1]  # entries (2i, 2i+1)
        rot = torch.diag_embed(diag) + torch.diag_embed(upper, 1) - torch.diag_embed(upper, -1)
    else:
        h = d // 2
        rot = torch.diag_embed(torch.cat((c, c), dim=-1))
        rot = rot + torch.diag_embed(s, h) - torch.diag_embed(s, -h)
    return rot.to(dt)


# ============================================================================ learned absolute encoding
class LearnedPositionalEmbedding(nn.Module):
    r"""A trained table of absolute position vectors, added to the inputs: :math:`x_k + p_k`.

    The scheme of BERT and GPT (and, earlier, of convolutional sequence-to-sequence models): a
    ``(max_len, dim)`` parameter, initialised :math:`\mathcal N(0, 0.02^2)` as in BERT. It has no vector
    for a position :math:`\ge` ``max_len``, so asking for one is an error rather than a silent wrap.

    Parameters
    ----------
    max_len : int
        Number of positions with a vector (512 in BERT).
    dim : int
        Width of the vectors (the model width).
    generator : torch.Generator, optional
        Randomness of the initialisation.
    device, dtype
        Of the parameter.

    Notes
    -----
    Chapter: ``notebooks/position-encoding-survey.md``.
    """

    role = "input"

    def __init__(self, max_len: int, dim: int, *, generator=None, device=None, dtype=None) -> None:
        super().__init__()
        self.max_len = check_int(max_len, "max_len", low=1)
        self.dim = check_int(dim, "dim", low=1)
        check_generator(generator)
        w = torch.empty(self.max_len, self.dim, device=check_device(device), dtype=check_dtype(dtype))
        if w.device.type != "meta":
            w.normal_(0.0, 0.02, generator=generator)
        self.weight = nn.Parameter(w)

    def extra_repr(self) -> str:
        """Sizes shown by ``repr``."""
        return f"max_len={self.max_len}, dim={self.dim}"

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor | None = None, *, offset: int = 0
    ) -> torch.Tensor:
        """``x + p[positions]`` for ``x`` of shape ``(..., n, dim)``.

        ``positions`` (integer, broadcastable to ``(..., n)``) defaults to ``offset, ..., offset + n - 1``.
        """
        check_tensor(x, "x", min_dim=2, floating=True)
        _same_device(self, x=x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension {self.dim}, got shape {tuple(x.shape)}")
        n = x.shape[-2]
        if positions is None:
            offset = check_int(offset, "offset", low=0)
            if offset + n > self.max_len:
                raise ValueError(
                    f"positions up to {offset + n - 1} asked for, but the table has max_len={self.max_len}"
                    " (a learned encoding has no vector beyond it)"
                )
            return x + self.weight[offset : offset + n].to(x.dtype)
        check_tensor(positions, "positions")
        if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
            raise TypeError(f"positions must be integers, got dtype {positions.dtype}")
        if positions.device.type != "meta" and positions.numel():
            lo, hi = int(positions.min()), int(positions.max())
            if lo < 0 or hi >= self.max_len:
                raise ValueError(
                    f"positions must lie in [0, {self.max_len - 1}] (max_len={self.max_len}), got [{lo}, {hi}]"
                )
        return x + self.weight[positions.to(self.weight.device)].to(x.dtype)


# ================================================================================= positions, helpers
def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 inputs are rotated in float64, every other float dtype in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _positions(
    positions: torch.Tensor | None, n: int, offset: float, device: torch.device, name: str
) -> torch.Tensor:
    """Positions as a tensor in the work dtype: the given ones, or ``offset + arange(n)``."""
    work = _work_dtype(device)
    if positions is None:
        return torch.arange(n, device=device, dtype=work) + offset
    check_tensor(positions, name, finite=True)
    if positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(f"{name} must hold real positions, got dtype {positions.dtype}")
    if positions.dim() == 0 or positions.shape[-1] not in (1, n):
        raise ValueError(
            f"{name} must have last dimension {n} (one per token), got shape {tuple(positions.shape)}"
        )
    if positions.device != device:
        raise TypeError(f"{name} must be on {device}, got {positions.device}")
    return positions.to(work)


def _same_device(module: nn.Module | None, **tensors: torch.Tensor) -> None:
    """A TypeError naming the argument when tensors (and the module's parameters) are on different devices."""
    ref_name, ref = None, None
    if module is not None:
        ref = next(iter(module.parameters()), None)
        ref_name = "the module's parameters"
    for name, t in tensors.items():
        if ref is None:
            ref_name, ref = name, t
        elif t.device != ref.device:
            raise TypeError(f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}")


def _qk_positions(n: int, m: int, q_positions, k_positions, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key positions; by default keys at ``0..m-1`` and queries at the last ``n`` of them."""
    kp = _positions(k_positions, m, 0.0, device, "k_positions")
    qp = _positions(q_positions, n, float(m - n), device, "q_positions")
    return qp, kp


def relative_positions(
    n: int,
    m: int | None = None,
    *,
    q_positions: torch.Tensor | None = None,
    k_positions: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""The relative position :math:`r_{ij} = \text{pos}^k_j - \text{pos}^q_i` of every query/key pair.

    Parameters
    ----------
    n, m : int
        Numbers of queries and keys (``m = n`` by default).
    q_positions, k_positions : torch.Tensor, optional
        Explicit positions, shapes ``(..., n)`` and ``(..., m)``; by default keys at ``0, ..., m-1`` and
        queries at ``m-n, ..., m-1`` (the KV-cache convention).
    device
        Where the result lives (the CPU by default).

    Returns
    -------
    torch.Tensor, shape ``(..., n, m)``
        In the work dtype (float64; float32 on MPS): integers when the positions are.

    Notes
    -----
    Chapter: ``notebooks/position-encoding-survey.md``.
    """
    n = check_int(n, "n", low=0)
    m = n if m is None else check_int(m, "m", low=0)
    dev = check_device(device) or (
        q_positions.device if isinstance(q_positions, torch.Tensor)
        else k_positions.device if isinstance(k_positions, torch.Tensor) else torch.device("cpu")
    )
    qp, kp = _qk_positions(n, m, q_positions, k_positions, dev)
    return kp[..., None, :] - qp[..., :, None]


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
    Chapter: ``notebooks/position-encoding-survey.md``.
    """
    check_tensor(positions, "positions", finite=True)
    if positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(f"positions must hold real positions, got dtype {positions.dtype}")
    dt = check_dtype(dtype) or (positions.dtype if positions.is_floating_point() else torch.float32)
    work = _work_dtype(positions.device)
    omega = sinusoidal_frequencies(d, base, device=positions.device, dtype=work)
    angle = positions.to(work)[..., None] * omega
    return torch.cos(angle).to(dt), torch.sin(angle).to(dt)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str) -> torch.Tensor:
    """Rotate the pairs of ``x`` (already in the compute dtype) by the given cosines and sines."""
    if layout == "interleaved":
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
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
    Chapter: ``notebooks/position-encoding-survey.md``.
    """
    layout = check_choice(layout, "layout", ROPE_LAYOUTS)
    d = _check_x(x, "x")
    offset = check_float(offset, "offset")
    pos = _positions(positions, x.shape[-2], offset, x.device, "positions")
    cos, sin = rope_cos_sin(pos, d, base, dtype=_compute_dtype(x))
    return _rotate(x.to(cos.dtype), cos, sin, layout).to(x.dtype)


class RotaryEmbedding(nn.Module):
    r"""RoPE as a query/key transform for :class:`~suma_lib.attention.MultiHeadAttention`.

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
    Chapter: ``notebooks/position-encoding-survey.md``.
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
        qp, kp = _qk_positions(q.shape[-2], k.shape[-2], q_positions, k_positions, q.device)
        kw = {"base": self.base, "layout": self.layout}
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
    Chapter: ``notebooks/position-encoding-survey.md`` (and Part V's extrapolation chapters).
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
    r"""XPOS (:func:`apply_xpos`) as a query/key transform for :class:`~suma_lib.attention.MultiHeadAttention`.

    Meant for causal attention: for keys after the query (:math:`n > m`) the factor
    :math:`\xi^{m-n}` grows instead of decaying.

    Parameters
    ----------
    head_dim : int
    base, scale_base, gamma, layout
        As in :func:`apply_xpos`.

    Notes
    -----
    Chapter: ``notebooks/position-encoding-survey.md``.
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
    Chapter: ``notebooks/position-encoding-survey.md`` (Part V's extrapolation chapters use it).
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
    Chapter: ``notebooks/position-encoding-survey.md``.
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
    Chapter: ``notebooks/position-encoding-survey.md``.
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
    Chapter: ``notebooks/position-encoding-survey.md``.
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
    Chapter: ``notebooks/position-encoding-survey.md``.
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
    Chapter: ``notebooks/position-encoding-survey.md``.
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
    Chapter: ``notebooks/position-encoding-survey.md``.
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
    Chapter: ``notebooks/position-encoding-survey.md``.
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
    Chapter: ``notebooks/position-encoding-survey.md``.
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


# ======================================================================================= attention
class PositionalMultiHeadAttention(MultiHeadAttention):
    r""":class:`~suma_lib.attention.MultiHeadAttention` with position modules plugged into its hooks.

    ``position`` is one module or a sequence of them; each one's ``role`` says where it goes: ``"qk"``
    modules (:class:`RotaryEmbedding`, :class:`XPos`, :class:`LogNScale`) transform ``q, k`` in order,
    ``"bias"`` modules (:class:`ALiBi`, :class:`T5RelativeBias`, :class:`KERPLE`, :class:`Sandwich`,
    :class:`ShawRelativePosition`) are summed into the score term :math:`B`:

    .. math:: \operatorname{softmax}\!\Bigl(\frac{T(q)\,T(k)^\top}{\sqrt{d_k}} + \sum B\Bigr) V.

    Every other argument is :class:`~suma_lib.attention.MultiHeadAttention`'s.

    Notes
    -----
    Chapter: ``notebooks/position-encoding-survey.md``.
    """

    def __init__(self, embed_dim: int, num_heads: int, *args, position=None, **kwargs) -> None:
        super().__init__(embed_dim, num_heads, *args, **kwargs)
        mods = [] if position is None else (
            list(position) if isinstance(position, (list, tuple, nn.ModuleList)) else [position]
        )
        for mod in mods:
            if getattr(mod, "role", None) not in ("qk", "bias") or not callable(mod):
                raise TypeError(
                    "position must hold modules with role 'qk' or 'bias' (e.g. RotaryEmbedding, ALiBi), "
                    f"got {type(mod).__name__}"
                )
        self.position = nn.ModuleList(mods)

    def transform_qk(self, q, k):
        """The ``qk_transform`` argument, then every ``"qk"`` position module."""
        q, k = super().transform_qk(q, k)
        for mod in self.position:
            if mod.role == "qk":
                q, k = mod(q, k)
        return q, k

    def get_bias(self, q, k):
        """The ``score_bias`` argument plus every ``"bias"`` position module (``None`` if none)."""
        bias = super().get_bias(q, k)
        for mod in self.position:
            if mod.role == "bias":
                b = mod(q, k)
                bias = b if bias is None else bias + b
        return bias


# ==================================================================================== random positions
def random_positions(
    n: int,
    max_position: int,
    *,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Sorted random positions for training: :math:`n` distinct integers drawn uniformly from
    :math:`\{0, \dots, L-1\}` (:math:`L` = ``max_position``), in increasing order.

    Trained this way, a model has seen every position up to :math:`L` even though its sequences have
    length :math:`n` (randomised positional encodings).

    Parameters
    ----------
    n : int
        Sequence length.
    max_position : int
        :math:`L \ge n`.
    batch_shape : tuple of int
        One independent draw per batch entry.
    generator : torch.Generator, optional
    device

    Returns
    -------
    torch.Tensor, int64, shape ``(*batch_shape, n)``

    Notes
    -----
    Chapter: Part V, ``position-robustness``.
    """
    n = check_int(n, "n", low=0)
    L = check_int(max_position, "max_position", low=max(n, 1))
    check_generator(generator)
    batch_shape = tuple(check_int(b, "batch_shape", low=0) for b in batch_shape)
    dev = check_device(device) or (generator.device if generator is not None else torch.device("cpu"))
    keys = torch.rand(*batch_shape, L, generator=generator, device=dev)
    return keys.argsort(dim=-1)[..., :n].sort(dim=-1).values


def equal_mean_positions(
    n: int,
    mean: float | None = None,
    *,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""The "equal-mean" random positions: :math:`s \sim \operatorname{Exp}(\text{mean})`, then
    :math:`n` evenly spaced points of :math:`[0, s]`, :math:`p_k = s\,k/(n-1)`.

    Real-valued (for functional encodings such as the sinusoid or RoPE, not a learned table). With the
    default mean :math:`n` the average spacing is :math:`\approx 1`, so the average positions match the
    ordinary :math:`0, 1, \dots`, while the exponential's tail reaches positions many times :math:`n`.

    Parameters
    ----------
    n : int
    mean : float, optional
        Mean of :math:`s` (``n`` by default).
    batch_shape : tuple of int
    generator : torch.Generator, optional
    device, dtype

    Returns
    -------
    torch.Tensor, shape ``(*batch_shape, n)``

    Notes
    -----
    Chapter: Part V, ``position-robustness``.
    """
    n = check_int(n, "n", low=1)
    mean = float(n) if mean is None else check_float(mean, "mean", low=0.0, low_open=True)
    check_generator(generator)
    batch_shape = tuple(check_int(b, "batch_shape", low=0) for b in batch_shape)
    dev = check_device(device) or (generator.device if generator is not None else torch.device("cpu"))
    dt = check_dtype(dtype) or torch.get_default_dtype()
    u = torch.rand(*batch_shape, 1, generator=generator, device=dev, dtype=_work_dtype(dev))
    s = -mean * torch.log1p(-u)  # inverse CDF of the exponential; 1 - u lies in (0, 1]
    grid = torch.linspace(0.0, 1.0, n, device=dev, dtype=s.dtype)
    return (grid * s).to(dt)



# ============================================================================ a RoPE Post-Norm block
NORMS = ("layer", "rms")


def alpha_ramp(step: int, ramp_steps: int) -> float:
    r"""The residual weight :math:`\alpha = \min(1, \text{step}/\text{ramp\_steps})`: 0 at the start, linear to 1.

    Used with :class:`RoPEBlock`'s residual :math:`x \leftarrow \operatorname{Norm}(x + \alpha F(x))`
    (RoFormerV2's way of training a Post-Norm model from scratch). ``ramp_steps = 0`` gives 1 at once.

    Notes
    -----
    Chapter: ``notebooks/roformer-v2.md``.
    """
    step = check_int(step, "step", low=0)
    ramp_steps = check_int(ramp_steps, "ramp_steps", low=0)
    return 1.0 if ramp_steps == 0 else min(1.0, step / ramp_steps)


class RoPEBlock(nn.Module):
    r"""A Post-Norm Transformer block with RoPE attention and a weighted residual.

    .. math:: x \leftarrow \operatorname{Norm}\bigl(x + \alpha\,\operatorname{Attn}_{\text{RoPE}}(x)\bigr),
              \qquad x \leftarrow \operatorname{Norm}\bigl(x + \alpha\,\operatorname{FFN}(x)\bigr),

    :math:`\operatorname{FFN}(x) = \operatorname{gelu}(xW_1 + b_1)W_2 + b_2`. The standard block (BERT/RoFormer
    style) has biases and LayerNorm with gain and bias; the RoFormerV2 block is ``bias=False, norm="rms",
    gain=False``: no bias anywhere and :math:`\operatorname{Norm}(x) = x/\sqrt{\operatorname{mean}(x^2) + \epsilon}`.
    :math:`\alpha` (attribute ``alpha``, 1 by default) is set by the training loop, e.g. with
    :func:`alpha_ramp`.

    Parameters
    ----------
    d_model, num_heads, d_ff : int
    bias : bool
        Biases in every linear layer.
    norm : {"layer", "rms"}
    gain : bool
        Learned elementwise gain (and, for LayerNorm, bias) of the norms.
    rope : bool
        Rotate queries and keys (:class:`RotaryEmbedding`, interleaved layout).
    eps : float
    device, dtype

    Notes
    -----
    Chapter: ``notebooks/roformer-v2.md``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        bias: bool = True,
        norm: str = "layer",
        gain: bool = True,
        rope: bool = True,
        eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        d_ff = check_int(d_ff, "d_ff", low=1)
        bias, gain, rope = check_bool(bias, "bias"), check_bool(gain, "gain"), check_bool(rope, "rope")
        self.norm_kind = check_choice(norm, "norm", NORMS)
        eps = check_float(eps, "eps", low=0.0, low_open=True)
        kw = {"device": device, "dtype": dtype}
        position = RotaryEmbedding(d_model // num_heads) if rope else None
        if rope and (d_model % num_heads or (d_model // num_heads) % 2):
            raise ValueError("rope needs num_heads to divide d_model into even head widths")
        self.attn = PositionalMultiHeadAttention(d_model, num_heads, bias=bias, position=position, **kw)
        self.ff1 = nn.Linear(d_model, d_ff, bias=bias, **kw)
        self.ff2 = nn.Linear(d_ff, d_model, bias=bias, **kw)

        def make_norm() -> nn.Module:
            if self.norm_kind == "layer":
                return nn.LayerNorm(d_model, eps=eps, elementwise_affine=gain, **kw)
            return nn.RMSNorm(d_model, eps=eps, elementwise_affine=gain, **kw)

        self.norm1, self.norm2 = make_norm(), make_norm()
        self.alpha = 1.0

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"norm={self.norm_kind!r}, alpha={self.alpha:g}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """Apply the block to ``x`` of shape ``(..., n, d_model)``."""
        a = check_float(self.alpha, "alpha")
        x = self.norm1(x + a * self.attn(x, mask=mask, causal=causal))
        return self.norm2(x + a * self.ff2(nn.functional.gelu(self.ff1(x))))
