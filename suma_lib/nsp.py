r"""Zero-shot classification with a next-sentence-prediction (NSP) head, the recipe of NSP-BERT.

BERT's NSP head reads ``[CLS] first [SEP] second [SEP]`` and returns two logits; in ``transformers``
index 0 means "the second sentence follows the first" (:data:`IS_NEXT`) and index 1 "it is a random
sentence". NSP-BERT classifies an input :math:`x` among labels :math:`y_1, \dots, y_K` by turning each
label into a sentence, a *label prompt* :math:`p_k` (e.g. "This is about sports."), and picking

.. math::

    \hat y(x) = \arg\max_k \log P(\text{is next} \mid x, p_k)
              = \arg\max_k \operatorname{log\,softmax}(\ell(x, p_k))_0 .

This module scores every ``(input, prompt)`` pair in batches through any pair-scoring callable
(:func:`score_pairs`, :func:`zero_shot_classify`), wraps a ``transformers`` NSP model as such a callable
(:func:`nsp_pair_scorer`), loads a pretrained one without surprises (:func:`load_nsp_model`), and
provides what a chapter needs to build a small NSP model offline: consecutive-versus-random sentence
pairs (:func:`nsp_pairs`), sentences from the docstrings of installed modules
(:func:`docstring_sentences`), mean-pooled sentence embeddings (:func:`sentence_embeddings`) and an NSP
head on a pair of embeddings (:class:`PairNSPHead`).

Chapter: notebooks/nsp-zero-shot.md
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._validation import (
    check_bool,
    check_compatible,
    check_device,
    check_generator,
    check_int,
    check_tensor,
)

__all__ = [
    "IS_NEXT",
    "TEMPLATES",
    "NSPWeightsUnavailable",
    "label_prompts",
    "nsp_log_prob",
    "score_pairs",
    "zero_shot_classify",
    "nsp_pair_scorer",
    "load_nsp_model",
    "nsp_pairs",
    "docstring_sentences",
    "sentence_embeddings",
    "PairNSPHead",
]

IS_NEXT = 0
"""Index of the "is next" logit of a ``transformers`` NSP head (``next_sentence_label`` 0)."""

TEMPLATES = {
    "topic": "This is about {label}.",
    "news": "This is a piece of {label} news.",
    "sentiment": "It was {label}.",
    "keyword": "Keywords: {label}.",
}
"""English label-prompt templates in the spirit of NSP-BERT's Chinese templates. Each is the second
sentence that an input is paired with, one per label; ``{label}`` is replaced by the label's word(s)."""


class NSPWeightsUnavailable(OSError):
    """The weights of a pretrained NSP model could not be found (offline, or an unknown name)."""


def _check_texts(x: Any, name: str) -> list[str]:
    if isinstance(x, str) or not isinstance(x, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(x).__name__}")
    x = list(x)
    if not x:
        raise ValueError(f"{name} must not be empty")
    for i, s in enumerate(x):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(s).__name__}")
        if not s.strip():
            raise ValueError(f"{name}[{i}] must not be blank")
    return x


def label_prompts(labels: Sequence[str], template: str = TEMPLATES["topic"]) -> list[str]:
    """Turn label words into label prompts: ``template.format(label=y)`` for each label ``y``.

    Parameters
    ----------
    labels : list of str
        The label words, e.g. ``["sports", "finance"]`` (distinct).
    template : str
        A sentence with one ``{label}`` field, e.g. one of :data:`TEMPLATES`.

    Raises
    ------
    TypeError, ValueError
        If ``labels`` is not a non-empty list of distinct non-blank strings, or ``template`` has no
        ``{label}`` field.

    Notes
    -----
    Chapter: notebooks/nsp-zero-shot.md
    """
    labels = _check_texts(labels, "labels")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct")
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    if "{label}" not in template:
        raise ValueError(f"template must contain the field '{{label}}', got {template!r}")
    return [template.format(label=y) for y in labels]


def nsp_log_prob(logits: torch.Tensor) -> torch.Tensor:
    r"""Log-probability that the second sentence follows the first, from NSP logits.

    .. math:: \log P(\text{is next}) = \ell_0 - \log(e^{\ell_0} + e^{\ell_1}),

    with index :data:`IS_NEXT` (0) the "is next" logit, as in ``transformers``'
    ``BertForNextSentencePrediction``.

    Parameters
    ----------
    logits : torch.Tensor
        Shape ``(..., 2)``, floating.

    Returns
    -------
    torch.Tensor
        Shape ``(...)``, in ``(-inf, 0]``; finite for finite logits of any size.

    Chapter: notebooks/nsp-zero-shot.md
    """
    logits = check_tensor(logits, "logits", min_dim=1, floating=True)
    if logits.shape[-1] != 2:
        raise ValueError(f"logits must have a last dimension of size 2, got shape {tuple(logits.shape)}")
    return torch.log_softmax(logits, dim=-1)[..., IS_NEXT]


def score_pairs(
    pair_score: Callable[[list[str], list[str]], Any],
    inputs: Sequence[str],
    prompts: Sequence[str],
    batch_size: int = 64,
) -> torch.Tensor:
    r"""Score every ``(input, prompt)`` pair: the matrix :math:`S_{ik} = s(x_i, p_k)`.

    The :math:`N K` pairs are laid out row by row (input-major) and sent to ``pair_score`` in chunks of
    at most ``batch_size``; NSP-BERT's cost is therefore :math:`N K` pair evaluations, one per label,
    where an MLM prompt needs one pass per input.

    Parameters
    ----------
    pair_score : callable
        ``pair_score(firsts, seconds) -> scores``: two equal-length lists of strings to a 1-D tensor (or
        array) of one real score per pair, higher meaning "more likely the next sentence" (e.g.
        :func:`nsp_pair_scorer`).
    inputs : list of str
        The :math:`N` inputs (first sentences).
    prompts : list of str
        The :math:`K` label prompts (second sentences).
    batch_size : int
        Pairs per call of ``pair_score``.

    Returns
    -------
    torch.Tensor
        Shape ``(N, K)``, on the device and in the dtype ``pair_score`` returns.

    Raises
    ------
    TypeError, ValueError
        On empty or non-string inputs or prompts, a non-callable ``pair_score``, or scores of the wrong
        shape or with NaN.

    Notes
    -----
    Chapter: notebooks/nsp-zero-shot.md
    """
    if not callable(pair_score):
        raise TypeError(f"pair_score must be callable, got {type(pair_score).__name__}")
    inputs = _check_texts(inputs, "inputs")
    prompts = _check_texts(prompts, "prompts")
    batch_size = check_int(batch_size, "batch_size", low=1)
    firsts = [x for x in inputs for _ in prompts]
    seconds = [p for _ in inputs for p in prompts]
    chunks = []
    for start in range(0, len(firsts), batch_size):
        a, b = firsts[start : start + batch_size], seconds[start : start + batch_size]
        s = torch.as_tensor(pair_score(a, b))
        if s.shape != (len(a),):
            raise ValueError(
                f"pair_score must return one score per pair, shape ({len(a)},), got {tuple(s.shape)}"
            )
        if s.is_floating_point() and s.device.type != "meta" and bool(torch.isnan(s).any()):
            raise ValueError("pair_score returned NaN scores")
        chunks.append(s)
    return torch.cat(chunks).reshape(len(inputs), len(prompts))


def zero_shot_classify(
    pair_score: Callable[[list[str], list[str]], Any],
    inputs: Sequence[str],
    prompts: Sequence[str],
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""NSP-BERT's zero-shot rule: the label whose prompt the input is most likely to be followed by,
    :math:`\hat y_i = \arg\max_k s(x_i, p_k)` (ties go to the first label).

    Parameters
    ----------
    pair_score, inputs, prompts, batch_size
        As in :func:`score_pairs`.

    Returns
    -------
    tuple of torch.Tensor
        ``(predictions, scores)``: label indices of shape ``(N,)`` (int64) and the ``(N, K)`` scores.

    Chapter: notebooks/nsp-zero-shot.md
    """
    scores = score_pairs(pair_score, inputs, prompts, batch_size)
    return scores.argmax(dim=-1), scores


def _model_device(model: Any) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def nsp_pair_scorer(
    model: Any, tokenizer: Any, max_length: int = 128
) -> Callable[[list[str], list[str]], torch.Tensor]:
    r"""Wrap a ``transformers`` NSP model as a pair-scoring callable returning
    :math:`\log P(\text{is next} \mid a, b)` (:func:`nsp_log_prob` of its logits).

    Each call tokenizes the pairs together (``[CLS] a [SEP] b [SEP]`` with segment ids 0 and 1),
    pads them to the longest, truncates the longest side beyond ``max_length`` tokens and runs the
    model without gradients on the model's device.

    Parameters
    ----------
    model : transformers.BertForNextSentencePrediction
        Or any model whose output has ``logits`` of shape ``(batch, 2)``.
    tokenizer : transformers tokenizer
        Called as ``tokenizer(firsts, seconds, padding=True, truncation=True, ...)``.
    max_length : int
        Token limit per pair.

    Returns
    -------
    callable
        ``scorer(firsts, seconds) -> torch.Tensor`` of shape ``(len(firsts),)`` on the model's device.

    Chapter: notebooks/nsp-zero-shot.md
    """
    if not callable(model) or not hasattr(model, "parameters"):
        raise TypeError(f"model must be a torch module, got {type(model).__name__}")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be callable, got {type(tokenizer).__name__}")
    max_length = check_int(max_length, "max_length", low=4)

    def scorer(firsts: list[str], seconds: list[str]) -> torch.Tensor:
        firsts = _check_texts(firsts, "firsts")
        seconds = _check_texts(seconds, "seconds")
        if len(firsts) != len(seconds):
            raise ValueError(f"firsts and seconds differ in length: {len(firsts)} != {len(seconds)}")
        batch = tokenizer(firsts, seconds, padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        dev = _model_device(model)
        batch = {k: v.to(dev) for k, v in batch.items()}
        with torch.no_grad():
            logits = model(**batch).logits
        return nsp_log_prob(logits.float())

    return scorer


def load_nsp_model(
    name: str, device: Any = None, local_files_only: bool = True
) -> tuple[Any, Any]:
    """Load a pretrained BERT with its next-sentence head (``BertForNextSentencePrediction``) and its
    tokenizer, e.g. ``"bert-base-uncased"`` or ``"bert-base-chinese"`` (NSP-BERT's own choice), or a
    local directory.

    Parameters
    ----------
    name : str
        A Hugging Face model name or a directory holding ``config.json`` and the weights.
    device : str or torch.device, optional
        Where to put the model (default: the CPU).
    local_files_only : bool
        ``True`` (default): use only the local cache or directory, never the network (what the book's
        CI does); ``False`` lets ``transformers`` download the weights (e.g. on Colab).

    Returns
    -------
    tuple
        ``(tokenizer, model)``, the model in evaluation mode.

    Raises
    ------
    NSPWeightsUnavailable
        If the weights are not available (not cached offline, unknown name, no network); the message
        says how to get them.
    ImportError
        If ``transformers`` is missing (the ``suma_lib[models]`` extra).
    TypeError, ValueError
        On a bad ``name``, ``device`` or ``local_files_only``.

    Notes
    -----
    Chapter: notebooks/nsp-zero-shot.md
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name.strip():
        raise ValueError("name must not be blank")
    check_bool(local_files_only, "local_files_only")
    device = check_device(device)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="IProgress not found")
            import transformers
    except ImportError as err:
        raise ImportError(
            "load_nsp_model needs transformers: pip install 'suma_lib[models]'"
        ) from err
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            name, local_files_only=local_files_only
        )
        model = transformers.BertForNextSentencePrediction.from_pretrained(
            name, local_files_only=local_files_only
        )
    except (OSError, ValueError) as err:
        if local_files_only:
            how = ("call load_nsp_model(name, local_files_only=False) where the network is reachable, "
                   "or pass a local directory holding the model")
        elif os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            how = ("HF_HUB_OFFLINE is set, so nothing is downloaded: unset it where the network is "
                   "reachable, or pass a local directory holding the model")
        else:
            how = "check the name and the network, or pass a local directory holding the model"
        raise NSPWeightsUnavailable(
            f"the weights of the NSP model {name!r} are not available"
            f"{' offline' if local_files_only else ''}: {how} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    finally:
        transformers.logging.set_verbosity(verbosity)
    model.eval()
    if device is not None:
        model.to(device)
    return tokenizer, model


def nsp_pairs(
    documents: Sequence[Sequence[str]], n: int, generator: torch.Generator | None = None
) -> tuple[list[str], list[str], torch.Tensor]:
    r"""BERT's NSP training data: ``n`` sentences with their true next sentence and the same ``n``
    with a random one.

    All consecutive pairs :math:`(a_j, b_j)` of the documents are listed; ``n`` of them are drawn
    without replacement; each first sentence :math:`a_i` appears twice, once with its own next
    sentence (label :data:`IS_NEXT`, 0) and once with the next sentence :math:`b_{\sigma(i)}` of
    another drawn pair (label 1), :math:`\sigma` a random cyclic derangement, so that both classes
    share the same sentences and differ only in how they are paired.

    Parameters
    ----------
    documents : list of list of str
        Each document a list of consecutive sentences; documents with one sentence give no pair.
    n : int
        Number of positive pairs (``2 <= n <=`` number of consecutive pairs).
    generator : torch.Generator, optional
        Source of randomness (a CPU generator).

    Returns
    -------
    tuple
        ``(firsts, seconds, labels)``: two lists of ``2n`` strings (the ``n`` true pairs, then the ``n``
        shuffled ones) and an int64 tensor of ``2n`` labels (0 = is next, 1 = random).

    Chapter: notebooks/nsp-zero-shot.md
    """
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of lists of str, got {type(documents).__name__}")
    pairs = []
    for i, doc in enumerate(documents):
        doc = _check_texts(doc, f"documents[{i}]")
        pairs += list(zip(doc[:-1], doc[1:], strict=True))
    n = check_int(n, "n", low=2)
    if n > len(pairs):
        raise ValueError(f"n must be <= the number of consecutive pairs ({len(pairs)}), got {n}")
    generator = check_generator(generator)
    gen_dev = generator.device if generator is not None else "cpu"
    pick = torch.randperm(len(pairs), generator=generator, device=gen_dev)[:n].tolist()
    order = torch.randperm(n, generator=generator, device=gen_dev).tolist()
    sigma = [0] * n
    for j in range(n):  # a cycle through a random order: sigma(i) != i for every i
        sigma[order[j]] = order[(j + 1) % n]
    firsts = [pairs[k][0] for k in pick]
    seconds = [pairs[k][1] for k in pick]
    labels = torch.tensor([IS_NEXT] * n + [1 - IS_NEXT] * n)
    return firsts + firsts, seconds + [seconds[sigma[i]] for i in range(n)], labels


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def docstring_sentences(
    module_names: Sequence[str], min_chars: int = 25, max_chars: int = 200
) -> list[list[str]]:
    """English documents from the docstrings of installed modules: each docstring (of the module, its
    public functions and classes, and their public methods) split into sentences.

    Sentences are cut after ``.``, ``!`` or ``?`` followed by a capital letter; whitespace is collapsed;
    sentences shorter than ``min_chars`` or longer than ``max_chars`` characters, and doctest or
    reStructuredText lines (``>>>``, ``::``), are dropped. The result depends on the Python version
    (its docstrings), not on any download.

    Parameters
    ----------
    module_names : list of str
        Importable module names, e.g. ``["math", "os.path"]``.
    min_chars, max_chars : int
        Sentence length limits.

    Returns
    -------
    list of list of str
        One list of sentences per docstring that keeps at least one sentence, in a fixed order.

    Chapter: notebooks/nsp-zero-shot.md
    """
    module_names = _check_texts(module_names, "module_names")
    min_chars = check_int(min_chars, "min_chars", low=1)
    max_chars = check_int(max_chars, "max_chars", low=min_chars)
    docs = []
    for name in module_names:
        try:
            mod = importlib.import_module(name)
        except ImportError as err:
            raise ValueError(f"module_names: cannot import {name!r}") from err
        root = name.split(".")[0]
        items = [mod] + [
            v for k, v in sorted(vars(mod).items())
            if not k.startswith("_") and (inspect.isroutine(v) or inspect.isclass(v))
            and (getattr(v, "__module__", None) or "").split(".")[0] == root
        ]
        items += [
            f for c in items if inspect.isclass(c)
            for k, f in sorted(vars(c).items()) if not k.startswith("_") and inspect.isroutine(f)
        ]
        for v in items:
            text = re.sub(r"\s+", " ", inspect.getdoc(v) or "").strip()
            sents = [
                s.strip() for s in _SENTENCE_END.split(text)
                if min_chars <= len(s.strip()) <= max_chars and ">>>" not in s and "::" not in s
            ]
            if sents:
                docs.append(sents)
    return docs


def sentence_embeddings(
    model: Any, tokenizer: Any, sentences: Sequence[str], batch_size: int = 64, max_length: int = 64
) -> torch.Tensor:
    r"""Unit-length mean-pooled embeddings :math:`u = \bar h / \lVert \bar h \rVert`, with
    :math:`\bar h` the mean of the encoder's last hidden states over a sentence's tokens (how
    sentence-transformers pools MiniLM).

    Sentences are sorted by length before batching (less padding) and returned in the input order.

    Parameters
    ----------
    model : transformers.BertModel
        E.g. from :func:`suma_lib.models.load_minilm`.
    tokenizer : transformers tokenizer
    sentences : list of str
    batch_size, max_length : int

    Returns
    -------
    torch.Tensor
        Shape ``(len(sentences), hidden)``, float32, on the model's device.

    Chapter: notebooks/nsp-zero-shot.md
    """
    sentences = _check_texts(sentences, "sentences")
    batch_size = check_int(batch_size, "batch_size", low=1)
    max_length = check_int(max_length, "max_length", low=2)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    dev = _model_device(model)
    out: list[torch.Tensor] = [None] * len(sentences)  # type: ignore[list-item]
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer([sentences[i] for i in idx], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            batch = {k: v.to(dev) for k, v in batch.items()}
            h = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            mean = (h * mask).sum(-2) / mask.sum(-2).clamp_min(1.0)
            for i, e in zip(idx, torch.nn.functional.normalize(mean, dim=-1), strict=True):
                out[i] = e
    return torch.stack(out)


class PairNSPHead(nn.Module):
    r"""An NSP head on two sentence embeddings :math:`u, v`: logits
    :math:`W [u \odot v;\ |u - v|] + b` of shape ``(..., 2)``, index :data:`IS_NEXT` = "v follows u"
    (the pair features of Sentence-BERT's classifier).

    A stand-in for BERT's NSP head where the two sentences are encoded separately (a bi-encoder) rather
    than read together.

    Parameters
    ----------
    dim : int
        Embedding width.

    Chapter: notebooks/nsp-zero-shot.md
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", low=1)
        self.linear = nn.Linear(2 * self.dim, 2)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        u = check_tensor(u, "u", min_dim=1, floating=True)
        v = check_tensor(v, "v", min_dim=1, floating=True)
        if u.shape[-1] != self.dim or v.shape[-1] != self.dim:
            raise ValueError(
                f"u and v must have last dimension {self.dim}, got {tuple(u.shape)} and {tuple(v.shape)}"
            )
        check_compatible(u, v, "u", "v", core_dims=1)
        u, v = torch.broadcast_tensors(u, v)
        return self.linear(torch.cat([u * v, (u - v).abs()], dim=-1))
