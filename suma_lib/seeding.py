"""Seeding: one call makes a notebook reproducible.

Chapter: every chapter (through :func:`suma_lib.notebook.setup_notebook`)
"""

from __future__ import annotations

import random

import numpy as np
import torch

from ._validation import check_device, check_int

__all__ = ["seed_everything", "make_generator"]


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's legacy global state and torch (CPU and every GPU).

    Parameters
    ----------
    seed : int
        A non-negative integer.

    Returns
    -------
    numpy.random.Generator
        A fresh NumPy generator seeded with ``seed``, the preferred source of randomness for NumPy code.
    """
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return np.random.default_rng(seed)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a :class:`torch.Generator` on ``device`` seeded with ``seed``.

    Library functions that draw random numbers accept such a generator, so a caller can make one
    draw reproducible without touching torch's global state.
    """
    seed = check_int(seed, "seed", low=0, high=2**63 - 1)
    gen = torch.Generator(device=check_device(device, allow_none=False))
    gen.manual_seed(seed)
    return gen
