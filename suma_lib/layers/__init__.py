r"""Transformer blocks: residual wrappers (Pre-LN, Post-LN, DeepNorm), RMSNorm, GAU, stacks.

The module is organised in sections, each a family of layers:

* **Normalisation**: :class:`RMSNorm` (with or without its gain), :func:`make_norm`.
* **Residual wrappers**: :class:`Residual` turns any sub-layer :math:`F` into
  Pre-LN :math:`x + F(\operatorname{LN}(x))` or Post-LN / DeepNorm
  :math:`\operatorname{LN}(\alpha x + F(x))`; :class:`FeedForward`; :class:`TransformerBlock`
  (self-attention on :class:`~suma_lib.attention.multihead.MultiHeadAttention`, then the FFN).
* **DeepNorm constants and initialisation**: :func:`deepnorm_constants` (the paper's
  :math:`\alpha, \beta`), :func:`residual_scaling` (the article's
  :math:`(\alpha, \lambda)` per optimiser),
  :func:`deepnorm_init_`.
* **Gated attention unit**: :class:`GAU`, :func:`relu2_attention`.
* **Stacks**: :class:`Stack`, :func:`build_stack`.
* **Widening**: :func:`widen` (function-preserving, :math:`k` times wider), its rules
  :func:`widen_index`, :func:`widen_vector`, :func:`widen_linear`, :func:`widen_norm`,
  :class:`WidenedRotary`.
* **Module replacement** (BERT-of-Theseus): :class:`TheseusReplacement`,
  :func:`theseus_replace_rate`.

Chapters: notebooks/deepnet-1000-layers.md, notebooks/gau-warmup.md,
notebooks/lossless-enlargement.md, notebooks/bert-of-theseus.md.
"""

from __future__ import annotations

from ._blocks import FeedForward, Residual, TransformerBlock, deepnorm_constants, deepnorm_init_, residual_scaling
from ._common import RMSNorm, SafeLayerNorm, make_norm
from ._gau import GAU, relu2_attention
from ._stack import Stack, build_stack
from ._theseus import TheseusReplacement, theseus_replace_rate
from ._widen import WidenedRotary, widen, widen_index, widen_linear, widen_norm, widen_vector

__all__ = [
    "GAU",
    "FeedForward",
    "RMSNorm",
    "Residual",
    "SafeLayerNorm",
    "Stack",
    "TheseusReplacement",
    "TransformerBlock",
    "WidenedRotary",
    "build_stack",
    "deepnorm_constants",
    "deepnorm_init_",
    "make_norm",
    "relu2_attention",
    "residual_scaling",
    "theseus_replace_rate",
    "widen",
    "widen_index",
    "widen_linear",
    "widen_norm",
    "widen_vector",
]

_NORMS = ("layernorm", "rmsnorm", "rmsnorm_nogain")
_PLACEMENTS = ("post", "pre")
