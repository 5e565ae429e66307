"""Shared checks and the normalisation layers of :mod:`suma_lib.layers`."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import (
    check_choice,
    check_device,
    check_dtype,
    check_float,
    check_int,
    check_tensor,
)

_NORMS = ("layernorm", "rmsnorm", "rmsnorm_nogain")
_PLACEMENTS = ("post", "pre")


def _check_input(x, name: str, width: int, module: nn.Module | None = None) -> torch.Tensor:
    check_tensor(x, name, min_dim=2, floating=True)
    if x.shape[-1] != width:
        raise ValueError(f"{name} must have last dimension {width}, got shape {tuple(x.shape)}")
    if module is not None:
        p = next(module.parameters(), None)
        if p is not None and p.device != x.device:
            raise ValueError(
                f"{name} is on {x.device} but the module's parameters are on {p.device}"
            )
    return x


def _check_factory(device, dtype) -> None:
    check_device(device)
    check_dtype(dtype)


class SafeLayerNorm(nn.LayerNorm):
    r"""LayerNorm computed on the row divided by its largest magnitude (no overflow at 1e30).

    .. math:: \operatorname{LN}(z) = \frac{z/s - \overline{z/s}}{\sqrt{\operatorname{Var}(z/s) +
              \epsilon/s^2}} \odot g + b, \qquad s = \max_i |z_i|,

    which equals :class:`torch.nn.LayerNorm` exactly in real arithmetic (same parameters, same
    :math:`\epsilon`), and stays finite where :math:`z^2` would overflow.

    Chapter: notebooks/deepnet-1000-layers.md.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", min_dim=1, floating=True)
        if len(self.normalized_shape) != 1 or x.shape[-1] != self.normalized_shape[0]:
            raise ValueError(
                f"x must have last dimension {self.normalized_shape}, got {tuple(x.shape)}"
            )
        if self.weight is not None and self.weight.device != x.device:
            raise ValueError(f"x is on {x.device} but the gain is on {self.weight.device}")
        s = x.abs().amax(-1, keepdim=True)
        s = torch.where(s > 0, s, torch.ones_like(s))
        xs = x / s
        xc = xs - xs.mean(-1, keepdim=True)
        y = xc * torch.rsqrt(xc.square().mean(-1, keepdim=True) + (self.eps / s) / s)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    r"""Root-mean-square normalisation, with an optional per-feature gain.

    .. math:: \operatorname{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac1d \sum_i x_i^2 + \epsilon}} \odot g

    (no centring, no offset; ``elementwise_affine=False`` drops :math:`g`). Same convention as
    :class:`torch.nn.RMSNorm` with a given ``eps``. The row is divided by its largest
    magnitude first (the formula is invariant to that up to :math:`\epsilon`), so that
    :math:`|x| = 10^{30}` in float32
    does not overflow.

    Parameters
    ----------
    normalized_shape : int
        The width :math:`d` of the last dimension.
    eps : float
        :math:`\epsilon > 0`.
    elementwise_affine : bool
        Learn the gain :math:`g` (initialised to ones).
    device, dtype
        Passed to the gain's constructor.

    Notes
    -----
    The output is homogeneous of degree 7 in large inputs (swish is linear there), so it leaves the
    floating-point range for :math:`|x|` far beyond :math:`10^{5}` in float32.

    Chapter: notebooks/gau-warmup.md.
    """

    def __init__(
        self,
        normalized_shape: int,
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.normalized_shape = check_int(normalized_shape, "normalized_shape", low=1)
        self.eps = check_float(eps, "eps", low=0.0, low_open=True)
        if not isinstance(elementwise_affine, bool):
            raise TypeError(
                f"elementwise_affine must be a bool, got {type(elementwise_affine).__name__}"
            )
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(
                torch.ones(self.normalized_shape, device=device, dtype=dtype)
            )
        else:
            self.register_parameter("weight", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", min_dim=1, floating=True)
        if x.shape[-1] != self.normalized_shape:
            raise ValueError(
                f"x must have last dimension {self.normalized_shape}, got shape {tuple(x.shape)}"
            )
        if self.weight is not None and self.weight.device != x.device:
            raise ValueError(f"x is on {x.device} but the gain is on {self.weight.device}")
        s = x.abs().amax(-1, keepdim=True)
        s = torch.where(s > 0, s, torch.ones_like(s))
        xs = x / s
        # eps / s^2 as (eps / s) / s: a tiny s overflows to inf (output -> 0), never NaN
        y = xs * torch.rsqrt(xs.square().mean(-1, keepdim=True) + (self.eps / s) / s)
        return y * self.weight if self.weight is not None else y

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


def make_norm(kind: str, width: int, *, eps: float = 1e-5, device=None, dtype=None) -> nn.Module:
    """A normalisation layer by name: ``"layernorm"``, ``"rmsnorm"`` or ``"rmsnorm_nogain"``.

    Chapter: notebooks/deepnet-1000-layers.md.
    """
    check_choice(kind, "norm_type", _NORMS)
    width = check_int(width, "width", low=1)
    _check_factory(device, dtype)
    if kind == "layernorm":
        return SafeLayerNorm(width, eps=eps, device=device, dtype=dtype)
    return RMSNorm(width, eps=eps, elementwise_affine=kind == "rmsnorm", device=device, dtype=dtype)


