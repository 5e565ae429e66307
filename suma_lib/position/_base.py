"""Shared helpers of :mod:`suma_lib.position`: work dtypes, positions, devices, relative positions."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import (
    check_device,
    check_dtype,
    check_int,
    check_tensor,
)


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
    Chapter: notebooks/position-encoding-survey.md.
    """
    n = check_int(n, "n", low=0)
    m = n if m is None else check_int(m, "m", low=0)
    dev = check_device(device) or (
        q_positions.device if isinstance(q_positions, torch.Tensor)
        else k_positions.device if isinstance(k_positions, torch.Tensor) else torch.device("cpu")
    )
    qp, kp = _qk_positions(n, m, q_positions, k_positions, dev)
    return kp[..., None, :] - qp[..., :, None]
