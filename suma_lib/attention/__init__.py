"""Attention mechanisms (Parts II and IV of the book).

Tensors follow PyTorch's convention ``(batch, heads, n, d)`` (any leading dimensions), any device and dtype.
Each submodule lists its public names in ``__all__``; they are all re-exported here.
"""

from __future__ import annotations

from . import exact, favor, linear, multihead, realformer, scale, sparse, sparsity, synthesizer, tta
from .exact import *  # noqa: F403
from .favor import *  # noqa: F403
from .linear import *  # noqa: F403
from .multihead import *  # noqa: F403
from .realformer import *  # noqa: F403
from .scale import *  # noqa: F403
from .sparse import *  # noqa: F403
from .sparsity import *  # noqa: F403
from .synthesizer import *  # noqa: F403
from .tta import *  # noqa: F403

__all__ = [
    name
    for mod in (exact, favor, linear, multihead, realformer, scale, sparse, sparsity, synthesizer, tta)
    for name in mod.__all__
]
