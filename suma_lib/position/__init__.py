r"""Position encodings: absolute, rotary and relative (Part V of the book).

Absolute encodings are added to the inputs: the Transformer's sinusoid (:func:`sinusoidal_encoding`)
and a learned table (:class:`LearnedPositionalEmbedding`). The others act inside attention and plug
into :class:`~suma_lib.attention.multihead.MultiHeadAttention` through its two hooks, as a query/key transform
(``qk_transform=``; attribute ``role = "qk"``) or as an additive score term (``score_bias=``;
``role = "bias"``), or several at once through :class:`PositionalMultiHeadAttention`'s ``position=``:

* query/key transforms: :class:`RotaryEmbedding` (RoPE, :func:`apply_rope`), :class:`XPos`
  (:func:`apply_xpos`), :class:`LogNScale` (the :math:`\log_L n` attention scale);
* score terms: :class:`ShawRelativePosition`, :class:`T5RelativeBias`
  (:func:`t5_relative_position_bucket`), :class:`ALiBi` (:func:`alibi_slopes`), :class:`KERPLE`
  (:func:`kerple_bias`), :class:`Sandwich` (:func:`sandwich_bias`).

Positions of queries and keys default to the KV-cache convention: ``m`` keys sit at ``0, ..., m-1``
and ``n`` queries at the last ``n`` of them, ``m-n, ..., m-1``; every module also takes explicit
``q_positions``/``k_positions``. The relative position of key :math:`j` seen from query :math:`i` is
``k_positions[j] - q_positions[i]`` (T5's "memory minus query"). :func:`random_positions` and
:func:`equal_mean_positions` draw position sequences for training.

The sinusoid's two layouts of the same numbers (with :math:`\omega_i = \text{base}^{-2i/d}`):

* ``"interleaved"`` (the paper, and e.g. DistilBERT/XLM): :math:`PE_{p,2i} = \sin p\omega_i`,
  :math:`PE_{p,2i+1} = \cos p\omega_i`;
* ``"concatenated"`` (e.g. Marian; the article's own Keras code also keeps sines and cosines in two
  halves): all sines first, then all cosines, :math:`PE_{p,i} = \sin p\omega_i`,
  :math:`PE_{p,d/2+i} = \cos p\omega_i`.

RoPE pairs coordinates the same two ways: ``"interleaved"`` rotates :math:`(x_{2i}, x_{2i+1})` (the
RoFormer paper, GPT-J) and ``"half"`` rotates :math:`(x_i, x_{i+d/2})` (GPT-NeoX, LLaMA).

The code lives in private submodules (absolute encodings, rotary transforms, relative score terms, attention
and blocks, training positions); import every name from here.

Chapters: notebooks/attention-is-all-you-need.md, notebooks/position-encoding-survey.md,
notebooks/sinusoidal-origin.md, notebooks/roformer-v2.md.
"""


from __future__ import annotations

from ._absolute import LAYOUTS as LAYOUTS  # constants, re-exported outside __all__
from ._absolute import (
    LearnedPositionalEmbedding,
    sinusoidal_encoding,
    sinusoidal_frequencies,
    sinusoidal_shift_matrix,
)
from ._base import relative_positions
from ._blocks import NORMS as NORMS
from ._blocks import PositionalMultiHeadAttention, RoPEBlock, alpha_ramp
from ._relative import (
    KERPLE,
    ALiBi,
    Sandwich,
    ShawRelativePosition,
    T5RelativeBias,
    alibi_slopes,
    kerple_bias,
    sandwich_bias,
    t5_relative_position_bucket,
)
from ._relative import KERPLE_KINDS as KERPLE_KINDS
from ._rotary import ROPE_LAYOUTS as ROPE_LAYOUTS
from ._rotary import (
    LogNScale,
    RotaryEmbedding,
    XPos,
    apply_rope,
    apply_xpos,
    log_n_scale,
    rope_cos_sin,
)
from ._training import equal_mean_positions, random_positions

__all__ = [
    "KERPLE",
    "ALiBi",
    "LearnedPositionalEmbedding",
    "LogNScale",
    "PositionalMultiHeadAttention",
    "RoPEBlock",
    "RotaryEmbedding",
    "Sandwich",
    "ShawRelativePosition",
    "T5RelativeBias",
    "XPos",
    "alibi_slopes",
    "alpha_ramp",
    "apply_rope",
    "apply_xpos",
    "equal_mean_positions",
    "kerple_bias",
    "log_n_scale",
    "random_positions",
    "relative_positions",
    "rope_cos_sin",
    "sandwich_bias",
    "sinusoidal_encoding",
    "sinusoidal_frequencies",
    "sinusoidal_shift_matrix",
    "t5_relative_position_bucket",
]
