"""Attention mechanisms (Parts II and IV of the book).

Tensors follow PyTorch's convention ``(batch, heads, n, d)`` (any leading dimensions), any device and dtype.
Each submodule lists its public names in ``__all__``; they are all re-exported here.
"""

from __future__ import annotations

from . import exact, favor, linear, multihead, realformer, scale, sparse, sparsity, synthesizer, tta
from .exact import *
from .favor import *
from .linear import *
from .multihead import *
from .realformer import *
from .scale import *
from .sparse import *
from .sparsity import *
from .synthesizer import *
from .tta import *

__all__ = [
    name
    for mod in (exact, favor, linear, multihead, realformer, scale, sparse, sparsity, synthesizer, tta)
    for name in mod.__all__
]
