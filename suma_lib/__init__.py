"""suma_lib: the library behind *suma*, an executable book of Su Jianlin's derivations.

Small, device-agnostic PyTorch implementations of the methods each chapter derives, plus the core
helpers every chapter uses: device choice, seeding, the figure style and the claim checks that build
the book's verification ledger.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import (  # noqa: E402
    attention,
    claims,
    entropy,
    geometry,
    models,
    orthogonality,
    penalty,
    position,
    smooth,
)
from .device import get_device  # noqa: E402
from .notebook import setup_notebook  # noqa: E402
from .plotting import use_style  # noqa: E402
from .seeding import make_generator, seed_everything  # noqa: E402

__all__ = [
    "__version__",
    "attention",
    "claims",
    "entropy",
    "geometry",
    "models",
    "orthogonality",
    "penalty",
    "position",
    "smooth",
    "get_device",
    "make_generator",
    "seed_everything",
    "setup_notebook",
    "use_style",
]
