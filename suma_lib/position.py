r"""Position encodings (Part V of the book; first used in the chapter
``attention-is-all-you-need``).

For now this module holds the Transformer's sinusoidal encoding and the rotation that shifts it.
With frequencies :math:`\omega_i = \text{base}^{-2i/d}` (:math:`i = 0, \dots, d/2 - 1`) the encoding
of position :math:`p` is made of the pairs :math:`(\sin p\omega_i, \cos p\omega_i)`. Two layouts of
the same numbers are in use:

* ``"interleaved"`` (the paper, and e.g. DistilBERT/XLM): :math:`PE_{p,2i} = \sin p\omega_i`,
  :math:`PE_{p,2i+1} = \cos p\omega_i`;
* ``"concatenated"`` (e.g. Marian; the article's own Keras code also keeps sines and cosines in two
  halves): all sines first, then all cosines, :math:`PE_{p,i} = \sin p\omega_i`,
  :math:`PE_{p,d/2+i} = \cos p\omega_i`.

They differ by a fixed permutation of the coordinates, which the first linear layer of a model
absorbs.
"""

from __future__ import annotations

import numbers

import torch

from ._validation import (
    check_choice,
    check_device,
    check_dtype,
    check_float,
    check_int,
    check_tensor,
)

__all__ = ["sinusoidal_frequencies", "sinusoidal_encoding", "sinusoidal_shift_matrix"]

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
    r"""The :math:`d/2` angular frequencies :math:`\omega_i = \text{base}^{-2i/d}` of the sinusoidal
    encoding.

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
    Chapter: notebooks/attention-is-all-you-need.md
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

    (``layout="interleaved"``); ``layout="concatenated"`` puts the :math:`d/2` sines first and the
    cosines after them. Angles are computed in float64 where the device has it, then cast, so a
    float32 encoding is accurate to float32 rounding even at large positions.

    Parameters
    ----------
    n : int or torch.Tensor
        Either the number of positions (positions ``0, ..., n-1``), or a tensor of positions of any
        shape (integer or real, e.g. shifted or randomly drawn positions); a floating-point tensor
        also sets the default device and dtype of the result.
    d : int
        Even encoding dimension.
    base : float
        Positive base of the geometric progression of wavelengths (10000 in the Transformer).
    layout : {"interleaved", "concatenated"}
        Order of the coordinates, see the module docstring.
    device, dtype
        Where and how the result is stored; by default the device of ``n`` (or the CPU) and the
        dtype of a floating-point ``n`` (or the default dtype).

    Returns
    -------
    torch.Tensor, shape ``(n, d)`` or ``(*n.shape, d)``

    Raises
    ------
    ValueError
        If ``n`` is negative or not finite, ``d`` is odd or smaller than 2, or ``base`` is not
        positive.

    Notes
    -----
    Chapter: notebooks/attention-is-all-you-need.md
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

    .. math:: \begin{pmatrix} \cos k\omega & \sin k\omega \\ -\sin k\omega & \cos k\omega
    \end{pmatrix},

    so :math:`R_k` is block diagonal (in the interleaved layout; the same blocks spread over
    coordinates :math:`i` and :math:`i + d/2` in the concatenated one), orthogonal, and does not
    depend on :math:`p`. With row vectors, as the encoding is stored, the shift reads ``pe @ R.mT``.

    Parameters
    ----------
    k : float or torch.Tensor
        The shift (any real number; negative shifts move back). A tensor of shifts of shape ``S``
        gives a stack of matrices of shape ``(*S, d, d)`` and sets the default device and dtype.
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
    Chapter: notebooks/attention-is-all-you-need.md
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
