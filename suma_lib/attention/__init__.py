"""Attention mechanisms (Parts II and IV of the book).

Tensors follow PyTorch's convention ``(batch, heads, n, d)`` (any leading dimensions), any device and dtype.
Each submodule lists its public names in ``__all__``; they are all re-exported here.

Layout: the private ``_core`` holds what every module shares (argument checks, masks, head split/merge,
overflow-safe logits and softmax); :class:`~suma_lib.attention.multihead.MultiHeadAttention` is the one
multi-head layer, whose hooks (``project``, ``transform_qk``, ``get_scores``, ``get_bias``, ``get_mask``)
the variants override: RealFormer's :class:`~suma_lib.attention.realformer.ResidualAttention`,
:class:`~suma_lib.attention.synthesizer.SynthesizerAttention` and T-TA's
:class:`~suma_lib.attention.tta.DiagonalFreeAttention`. Synthetic tasks live in :mod:`suma_lib.tasks`,
the training loop in :mod:`suma_lib.training`.
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
    for mod in (
        exact,
        favor,
        linear,
        multihead,
        realformer,
        scale,
        sparse,
        sparsity,
        synthesizer,
        tta,
    )
    for name in mod.__all__
]
