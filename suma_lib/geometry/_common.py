r"""Helpers shared by the two geometry chapters (private).

Chapter: notebooks/init-geometry.md, notebooks/jl-lemma-applications.md
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from .._validation import check_dtype, check_generator, check_int
from ..device import get_device

__all__: list[str] = []


def _placement(
    device: str | torch.device | None, dtype: torch.dtype | None, generator: torch.Generator | None
) -> tuple[torch.device | None, torch.dtype]:
    """Check a sampler's ``device``/``dtype``/``generator``; the device defaults to the generator's."""
    check_generator(generator)
    dev = (
        (generator.device if generator is not None else None)
        if device is None
        else get_device(device)
    )
    dtype = check_dtype(dtype) or torch.get_default_dtype()
    if (
        generator is not None
        and dev is not None
        and dev.type != "meta"
        and generator.device.type != dev.type
    ):
        raise ValueError(
            f"generator lives on {generator.device} but the numbers are drawn on {dev}"
        )
    return dev, dtype


def _check_size(size: Any, name: str) -> tuple[int, ...]:
    """``size`` as a tuple of non-negative ints (an int is a 1-tuple)."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size,)
    if not isinstance(size, (tuple, list, torch.Size)):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {type(size).__name__}")
    return tuple(check_int(s, name, low=0) for s in size)
