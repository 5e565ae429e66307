"""Attention mechanisms (Parts II and IV of the book).

Tensors follow PyTorch's convention ``(batch, heads, n, d)`` (any leading dimensions), any device and dtype.
"""

from __future__ import annotations

from .exact import attention_weights, combine_masks, softmax_attention

__all__ = ["attention_weights", "combine_masks", "softmax_attention"]
