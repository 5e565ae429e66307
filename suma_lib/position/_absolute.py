r"""Absolute position encodings: the Transformer's sinusoid and a learned table.

Part of :mod:`suma_lib.position` (import from there).
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from .._validation import (
    check_choice,
    check_device,
    check_dtype,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from ._base import (
    _check_d,
    _resolve,
    _same_device,
    _work_dtype,
)

LAYOUTS = ("interleaved", "concatenated")

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
    Chapter: notebooks/attention-is-all-you-need.md.
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
    Chapter: notebooks/attention-is-all-you-need.md.
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
    Chapter: notebooks/attention-is-all-you-need.md.
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
    Chapter: notebooks/position-encoding-survey.md.
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
