r"""Small numerical building blocks shared by the whole library.

* :func:`safe_divisor`: a denominator with its zeros replaced by one, so that ``0 / 0`` cases can be
  masked without a NaN reaching the forward value or the gradient; NaN stays NaN (it never turns into "no weight").
* :func:`scaled_norm`, :func:`unit`, :func:`rms`: norms and unit vectors that neither overflow nor
  underflow, by rescaling with the largest absolute entry first (rows of norm :math:`10^{20}` or
  :math:`10^{-30}` work in float32).
* :func:`work_dtype`, :func:`half_to_float32`: the half-precision rule. Kernels with no
  float16/bfloat16 version (``eigh``, ``cdist``, ``geqrf``, ``matrix_norm``) run in float32 and
  their results are cast back to the input's dtype.

Private module: the names here are not part of the public API and may change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "HALF_DTYPES",
    "safe_divisor",
    "safe_ratio",
    "max_abs",
    "scaled_norm",
    "unit",
    "rms",
    "work_dtype",
    "half_to_float32",
    "blas_matmul",
]

HALF_DTYPES = (torch.float16, torch.bfloat16)

F = TypeVar("F", bound=Callable[..., Any])


def safe_divisor(x: torch.Tensor) -> torch.Tensor:
    """``x`` with every entry ``<= 0`` replaced by 1; NaN entries stay NaN.

    Use it where a zero denominator goes with a zero numerator that the caller masks afterwards
    (zero rows, empty windows). It replaces the idiom ``torch.where(x > 0, x, 1)``, which silently
    turns a NaN denominator into 1 and so a NaN input into a finite, wrong output.
    """
    return torch.where(x <= 0, torch.ones_like(x), x)


def safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0``, 0 where ``den <= 0``, NaN where either is NaN.

    The gradient is finite wherever the value is (the masked branch never divides by zero).
    """
    out = num / safe_divisor(den)
    keep = (den > 0) | torch.isnan(den) | torch.isnan(num)
    return torch.where(keep, out, torch.zeros_like(out))


def max_abs(x: torch.Tensor, dim: int | tuple[int, ...] = -1, keepdim: bool = True) -> torch.Tensor:
    """Largest absolute entry along ``dim``, as a safe divisor (1 for all-zero slices, NaN kept).

    ``amax`` of a slice that holds NaN is NaN, so a NaN input stays NaN after rescaling by it. The
    result is detached: rescaling by a constant does not change the value of a norm or of a unit
    vector, and a detached scale keeps their gradients exact.
    """
    if x.numel() == 0 or (isinstance(dim, int) and x.shape[dim] == 0):
        shape = list(x.shape)
        dims = (dim,) if isinstance(dim, int) else dim
        for d in dims:
            shape[d] = 1
        out = x.new_ones(shape)
        return out if keepdim else out.squeeze(dims)
    return safe_divisor(x.detach().abs().amax(dim=dim, keepdim=keepdim))


def scaled_norm(
    x: torch.Tensor, dim: int = -1, keepdim: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(s, r)`` with :math:`\|x\| = s\,r` along ``dim``, where ``s`` is the largest absolute entry.

    ``r`` lies in :math:`[1, \sqrt{n}]` for a non-zero slice (0 for a zero slice), so neither factor
    over- or underflows even when :math:`\|x\|` itself would; ``s * r`` is the norm, ``inf`` only
    when the norm does not fit the dtype.
    """
    s = max_abs(x, dim=dim, keepdim=True)
    r = torch.linalg.vector_norm(x / s, dim=dim, keepdim=True)
    if not keepdim:
        s, r = s.squeeze(dim), r.squeeze(dim)
    return s, r


def unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``x / ||x||`` along ``dim`` without over- or underflow; zero slices stay zero, NaN stays NaN."""
    y = x / max_abs(x, dim=dim)
    return y / safe_divisor(torch.linalg.vector_norm(y, dim=dim, keepdim=True))


def rms(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Root mean square along ``dim`` (removed), without overflow up to the dtype's largest value."""
    s = max_abs(x, dim=dim)
    return (s * (x / s).square().mean(dim=dim, keepdim=True).sqrt()).squeeze(dim)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16 (the dtype to compute in), else ``dtype`` itself."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def half_to_float32(fn: F) -> F:
    """Decorator: run ``fn`` in float32 when any tensor argument is float16/bfloat16; cast results back.

    Tensor results (also inside tuples, lists and named tuples) that are floating point are cast to
    the half dtype of the first half-precision argument; other results are returned as they are.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        half = next(
            (
                a.dtype
                for a in (*args, *kwargs.values())
                if isinstance(a, torch.Tensor) and a.dtype in HALF_DTYPES
            ),
            None,
        )
        if half is None:
            return fn(*args, **kwargs)

        def up(a: Any) -> Any:
            return a.float() if isinstance(a, torch.Tensor) and a.dtype in HALF_DTYPES else a

        out = fn(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})
        return _cast_floats(out, half)

    return wrapper  # type: ignore[return-value]


def _cast_floats(out: Any, dtype: torch.dtype) -> Any:
    if isinstance(out, torch.Tensor):
        return out.to(dtype) if out.is_floating_point() else out
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return type(out)(*(_cast_floats(o, dtype) for o in out))
    if isinstance(out, (tuple, list)):
        return type(out)(_cast_floats(o, dtype) for o in out)
    return out


_NUMPY_DTYPES = (torch.float32, torch.float64)
_NUMPY_MIN_ENTRIES = 1 << 16


def blas_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D tensors; large CPU products in one-thread torch go through NumPy's BLAS.

    For the narrow, memory-bound products of randomized linear algebra (a large matrix times a block
    of a few dozen columns) NumPy's BLAS is measured faster than torch's on the CPU in one thread
    (see ``benchmarks/geometry.py``); the two agree to rounding. The NumPy path is taken only when
    torch runs one intra-op thread (``torch.get_num_threads() == 1``) and the operands hold at least
    ``2**16`` entries: with more threads, alternating between torch's and NumPy's thread pools makes
    their idle threads compete for the cores, which costs far more than it saves. Every other case
    (GPU, half or complex dtypes, batched operands, tensors that need a gradient) is plain ``a @ b``.
    """
    if (
        a.device.type == "cpu"
        and b.device.type == "cpu"
        and a.dim() == 2
        and b.dim() == 2
        and a.dtype == b.dtype
        and a.dtype in _NUMPY_DTYPES
        and not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad))
        and a.numel() + b.numel() >= _NUMPY_MIN_ENTRIES
        and torch.get_num_threads() == 1
    ):
        return torch.from_numpy(np.matmul(a.resolve_neg().numpy(), b.resolve_neg().numpy()))
    return a @ b
