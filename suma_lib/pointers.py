r"""Pointer heads for extraction: span pointers, subject-conditioned relation extraction, reading
comprehension.

The "half-pointer, half-tagging" design marks a span of a sentence with two sigmoid outputs per position,
one saying "a span starts here" and one "a span ends here"; a span is decoded by pairing each start above
its threshold with the nearest end at or after it,

.. math:: \operatorname{spans} = \{(i, j_i) : p^{s}_i > \tau_s,\ j_i = \min\{j \ge i : p^{e}_j > \tau_e\}\}.

Relation extraction runs it twice: subjects first; then, for each subject, one start/end pair per
predicate, from a sequence conditioned on the subject (a conditional layer norm whose gain and offset are
affine in the subject's vector). Reading comprehension uses softmax start/end distributions instead and
keeps the single best span, :math:`\arg\max_{i \le j < i + L} p^s_i p^e_j`.

Chapter: notebooks/lic2020-baselines.md.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._validation import (
    check_bool,
    check_compatible,
    check_device,
    check_dtype,
    check_float,
    check_index_range,
    check_int,
    check_tensor,
)

__all__ = [
    "ConditionalLayerNorm",
    "best_span",
    "decode_spans",
    "decode_triples",
    "extract_triples",
    "nearest_end",
    "pointer_loss",
    "power_bce",
    "rematch",
    "span_labels",
    "span_list",
    "subject_vector",
    "triple_labels",
]


# ----------------------------------------------------------------------------------- validation
def _check_probs(p: Any, name: str) -> torch.Tensor:
    check_tensor(p, name, min_dim=1, floating=True)
    if p.device.type != "meta" and p.numel():
        if bool(torch.isnan(p).any()):
            raise ValueError(f"{name} must not contain NaN")
        if bool(((p < 0) | (p > 1)).any()):
            raise ValueError(f"{name} must hold probabilities in [0, 1]")
    return p


def _check_mask(mask: Any, name: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of booleans, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool, got {mask.dtype}")
    return mask


def _check_span(span: Any, length: int, name: str) -> tuple[int, int]:
    if not isinstance(span, (tuple, list)) or len(span) != 2:
        raise TypeError(f"{name} must be pairs (start, end), got {span!r}")
    i = check_int(span[0], f"{name} start", low=0, high=length - 1)
    j = check_int(span[1], f"{name} end", low=i, high=length - 1)
    return i, j


# ------------------------------------------------------------------------------------- decoding
def nearest_end(starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    r"""Pair every marked start with the nearest marked end at or after it.

    .. math:: J_i = \begin{cases}\min\{j \ge i : e_j\} & s_i \text{ and such } j \text{ exists}\\
       -1 & \text{otherwise}\end{cases}

    Parameters
    ----------
    starts, ends : torch.Tensor
        Boolean ``(..., n)``: where spans start and end (broadcast over leading dimensions).

    Returns
    -------
    torch.Tensor
        ``(..., n)`` int64: the end paired with each position, ``-1`` where no span starts.

    Notes
    -----
    Computed with a reversed running minimum, so it is batched and runs on any device.
    Chapter: notebooks/lic2020-baselines.md.
    """
    _check_mask(starts, "starts")
    _check_mask(ends, "ends")
    check_compatible(starts, ends, "starts", "ends", core_dims=1)
    if starts.dim() < 1 or starts.shape[-1] != ends.shape[-1]:
        raise ValueError(
            f"starts and ends must share their last (position) dimension, got "
            f"{tuple(starts.shape)} and {tuple(ends.shape)}"
        )
    starts, ends = torch.broadcast_tensors(starts, ends)
    n = ends.shape[-1]
    pos = torch.arange(n, device=ends.device).expand(ends.shape)
    idx = torch.where(ends, pos, torch.full_like(pos, n))
    if n:
        idx = torch.flip(torch.cummin(torch.flip(idx, [-1]), -1).values, [-1])
    return torch.where(starts & (idx < n), idx, torch.full_like(idx, -1))


def decode_spans(
    start_probs: torch.Tensor,
    end_probs: torch.Tensor,
    start_threshold: float = 0.5,
    end_threshold: float = 0.5,
) -> torch.Tensor:
    r"""Half-pointer decoding: threshold the start and end probabilities, pair by nearest end.

    .. math:: J_i = \min\{j \ge i : p^e_j > \tau_e\}\ \text{ for every } i \text{ with } p^s_i > \tau_s

    Parameters
    ----------
    start_probs, end_probs : torch.Tensor
        ``(..., n)`` probabilities in [0, 1] (batched over leading dimensions; for per-predicate
        pointers put the predicates in a leading dimension).
    start_threshold, end_threshold : float
        The thresholds :math:`\tau_s, \tau_e` in [0, 1] (strict inequality, as in the article's code).

    Returns
    -------
    torch.Tensor
        ``(..., n)`` int64, the end of the span starting at each position or ``-1``
        (:func:`span_list` turns it into ``(start, end)`` pairs).

    Chapter: notebooks/lic2020-baselines.md.
    """
    _check_probs(start_probs, "start_probs")
    _check_probs(end_probs, "end_probs")
    check_compatible(start_probs, end_probs, "start_probs", "end_probs", core_dims=1)
    ts = check_float(start_threshold, "start_threshold", low=0.0, high=1.0)
    te = check_float(end_threshold, "end_threshold", low=0.0, high=1.0)
    if start_probs.shape[-1] != end_probs.shape[-1]:
        raise ValueError(
            f"start_probs and end_probs must have the same length, got {start_probs.shape[-1]} "
            f"and {end_probs.shape[-1]}"
        )
    return nearest_end(start_probs > ts, end_probs > te)


def span_list(ends: torch.Tensor) -> list:
    """``(start, end)`` pairs from the output of :func:`decode_spans` (nested lists if batched).

    Chapter: notebooks/lic2020-baselines.md.
    """
    check_index_range(ends + 1, "ends (as -1 or an index)", min_dim=1)
    if ends.device.type == "meta":
        raise ValueError("ends is on the meta device: the spans depend on its values")
    if ends.dim() > 1:
        return [span_list(e) for e in ends]
    return [(i, int(j)) for i, j in enumerate(ends.tolist()) if j >= 0]


def decode_triples(
    subjects: torch.Tensor,
    object_probs: torch.Tensor,
    start_threshold: float = 0.5,
    end_threshold: float = 0.5,
) -> list[tuple[int, int, int, int, int]]:
    r"""Triples :math:`(s_0, s_1, p, o_0, o_1)` from each subject's per-predicate object pointers.

    For subject :math:`k` and predicate :math:`p`, an object starts at :math:`i` when
    :math:`P^{k}_{i,p,0} > \tau_s` and ends at the nearest :math:`j \ge i` with
    :math:`P^{k}_{j,p,1} > \tau_e` (the same predicate).

    Parameters
    ----------
    subjects : torch.Tensor
        ``(m, 2)`` int64, the subjects' (start, end).
    object_probs : torch.Tensor
        ``(m, n, P, 2)`` probabilities: start and end of an object of predicate ``p`` given subject ``k``.
    start_threshold, end_threshold : float
        Thresholds in [0, 1].

    Returns
    -------
    list of tuple
        Sorted, each ``(s_start, s_end, predicate, o_start, o_end)``.

    Chapter: notebooks/lic2020-baselines.md.
    """
    check_index_range(subjects, "subjects", min_dim=2)
    _check_probs(object_probs, "object_probs")
    if subjects.dim() != 2 or subjects.shape[-1] != 2:
        raise ValueError(f"subjects must have shape (m, 2), got {tuple(subjects.shape)}")
    if object_probs.dim() != 4 or object_probs.shape[-1] != 2:
        raise ValueError(f"object_probs must have shape (m, n, P, 2), got {tuple(object_probs.shape)}")
    if object_probs.shape[0] != subjects.shape[0]:
        raise ValueError(
            f"object_probs has {object_probs.shape[0]} rows but there are {subjects.shape[0]} subjects"
        )
    probs = object_probs.transpose(1, 2)  # (m, P, n, 2)
    ends = decode_spans(probs[..., 0], probs[..., 1], start_threshold, end_threshold)
    if ends.device.type == "meta":
        raise ValueError("object_probs is on the meta device: the triples depend on its values")
    out = []
    subj = subjects.tolist()
    for k, p, i in torch.nonzero(ends >= 0).tolist():
        out.append((subj[k][0], subj[k][1], p, i, int(ends[k, p, i])))
    return sorted(out)


def extract_triples(
    subject_probs: torch.Tensor,
    object_fn: Callable[[torch.Tensor], torch.Tensor],
    subject_thresholds: tuple[float, float] = (0.5, 0.5),
    object_thresholds: tuple[float, float] = (0.5, 0.5),
) -> list[tuple[int, int, int, int, int]]:
    r"""The two-stage decoder of one sentence: subjects, then each subject's (predicate, object).

    .. math:: P(s, p, o) = P(s)\, P(o, p \mid s)

    Parameters
    ----------
    subject_probs : torch.Tensor
        ``(n, 2)`` start/end probabilities of subjects.
    object_fn : callable
        ``object_fn(subjects) -> (m, n, P, 2)`` object probabilities for the ``(m, 2)`` int64 subjects
        (the model's second stage, run once on all decoded subjects).
    subject_thresholds, object_thresholds : (float, float)
        (start, end) thresholds of each stage.

    Returns
    -------
    list of tuple
        Sorted triples ``(s_start, s_end, predicate, o_start, o_end)``; empty if no subject is found.

    Chapter: notebooks/lic2020-baselines.md.
    """
    _check_probs(subject_probs, "subject_probs")
    if subject_probs.dim() != 2 or subject_probs.shape[-1] != 2:
        raise ValueError(f"subject_probs must have shape (n, 2), got {tuple(subject_probs.shape)}")
    if not callable(object_fn):
        raise TypeError(f"object_fn must be callable, got {type(object_fn).__name__}")
    for name, th in (("subject_thresholds", subject_thresholds),
                     ("object_thresholds", object_thresholds)):
        if not isinstance(th, (tuple, list)) or len(th) != 2:
            raise TypeError(f"{name} must be a pair (start, end) of floats, got {th!r}")
    ends = decode_spans(subject_probs[:, 0], subject_probs[:, 1], *subject_thresholds)
    spans = span_list(ends)
    if not spans:
        return []
    subjects = torch.tensor(spans, dtype=torch.int64, device=subject_probs.device)
    object_probs = object_fn(subjects)
    if not isinstance(object_probs, torch.Tensor):
        raise TypeError(f"object_fn must return a tensor, got {type(object_probs).__name__}")
    if object_probs.dim() != 4 or object_probs.shape[:2] != (len(spans), subject_probs.shape[0]):
        raise ValueError(
            f"object_fn must return shape ({len(spans)}, {subject_probs.shape[0]}, P, 2), got "
            f"{tuple(object_probs.shape)}"
        )
    return decode_triples(subjects, object_probs, *object_thresholds)


def best_span(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    max_length: int,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Reading-comprehension decoding: the one span with the largest :math:`p^s_i p^e_j`.

    .. math:: (i^*, j^*) = \arg\max_{i \le j < i + L,\ m_i = m_j = 1} \big(a_i + b_j\big),

    with :math:`a, b` the start and end logits (or log-probabilities: a softmax over positions adds the
    same constant to every :math:`a_i`, so the argmax is that of :math:`p^s_i p^e_j`). Ties go to the
    smallest :math:`i`, then the smallest :math:`j`.

    Parameters
    ----------
    start_logits, end_logits : torch.Tensor
        ``(..., n)`` floating scores.
    max_length : int
        :math:`L \ge 1`, the longest answer in tokens.
    mask : torch.Tensor, optional
        ``(..., n)`` bool, True where an answer may lie (the context); all positions by default.

    Returns
    -------
    (start, end, score) : tuple of torch.Tensor
        ``(...)`` int64 start and end, and the score :math:`a_{i^*} + b_{j^*}` in the logits' dtype;
        a row with no admissible span gives ``-1, -1, -inf``.

    Notes
    -----
    Builds the ``(..., n, n)`` score table, fine for the sentence lengths of the chapter.
    Chapter: notebooks/lic2020-baselines.md.
    """
    check_tensor(start_logits, "start_logits", min_dim=1, floating=True)
    check_tensor(end_logits, "end_logits", min_dim=1, floating=True)
    check_compatible(start_logits, end_logits, "start_logits", "end_logits", core_dims=1)
    L = check_int(max_length, "max_length", low=1)
    n = start_logits.shape[-1]
    if end_logits.shape[-1] != n:
        raise ValueError(f"start_logits and end_logits must have the same length, got {n} and "
                         f"{end_logits.shape[-1]}")
    for name, t in (("start_logits", start_logits), ("end_logits", end_logits)):
        if t.device.type != "meta" and t.numel() and bool(torch.isnan(t).any()):
            raise ValueError(f"{name} must not contain NaN")
    a, b = torch.broadcast_tensors(start_logits, end_logits)
    pos = torch.arange(n, device=a.device)
    band = (pos[None, :] >= pos[:, None]) & (pos[None, :] < pos[:, None] + L)
    allowed = band.expand(*a.shape[:-1], n, n)
    if mask is not None:
        _check_mask(mask, "mask")
        check_compatible(mask, a, "mask", "start_logits", core_dims=1, same_dtype=False)
        if mask.shape[-1] != n:
            raise ValueError(f"mask must have length {n}, got {mask.shape[-1]}")
        allowed = allowed & mask[..., :, None] & mask[..., None, :]
    table = (a[..., :, None] + b[..., None, :]).masked_fill(~allowed, -math.inf)
    if n == 0:
        shape = a.shape[:-1]
        none = torch.full(shape, -1, dtype=torch.int64, device=a.device)
        return none, none.clone(), torch.full(shape, -math.inf, dtype=a.dtype, device=a.device)
    flat = table.flatten(-2)
    k = flat.argmax(-1)
    score = flat.gather(-1, k[..., None])[..., 0]
    found = allowed.flatten(-2).any(-1)
    start = torch.where(found, torch.div(k, n, rounding_mode="floor"), torch.full_like(k, -1))
    end = torch.where(found, k % n, torch.full_like(k, -1))
    return start, end, score


# -------------------------------------------------------------------------------------- encoding
def span_labels(
    spans: Sequence[tuple[int, int]],
    length: int,
    *,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> torch.Tensor:
    r"""Start/end targets of a set of spans: :math:`y_{i,0} = [i \text{ starts a span}]`,
    :math:`y_{j,1} = [j \text{ ends a span}]`.

    Returns
    -------
    torch.Tensor
        ``(length, 2)`` zeros and ones (float32 by default).

    Chapter: notebooks/lic2020-baselines.md.
    """
    length = check_int(length, "length", low=1)
    dtype = check_dtype(dtype) or torch.float32
    device = check_device(device)
    y = torch.zeros(length, 2, dtype=dtype, device=device)
    for span in spans:
        i, j = _check_span(span, length, "spans")
        y[i, 0] = 1
        y[j, 1] = 1
    return y


def triple_labels(
    triples: Sequence[tuple[int, int, int, int, int]],
    length: int,
    n_predicates: int,
    *,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Targets of the two-stage relation extractor for one sentence.

    Parameters
    ----------
    triples : sequence of tuple
        The sentence's labelled triples ``(s_start, s_end, predicate, o_start, o_end)`` (token
        positions, ends inclusive).
    length : int
        Sentence length :math:`n`.
    n_predicates : int
        Number of predicates :math:`P`.

    Returns
    -------
    subject_labels : torch.Tensor
        ``(n, 2)``: starts and ends of every subject.
    subjects : torch.Tensor
        ``(m, 2)`` int64, the distinct subjects, sorted.
    object_labels : torch.Tensor
        ``(m, n, P, 2)``: for subject ``k``, :math:`y_{i,p,0}=1` where an object of predicate ``p``
        starts and :math:`y_{j,p,1}=1` where it ends.

    Chapter: notebooks/lic2020-baselines.md.
    """
    length = check_int(length, "length", low=1)
    n_predicates = check_int(n_predicates, "n_predicates", low=1)
    dtype = check_dtype(dtype) or torch.float32
    device = check_device(device)
    clean = []
    for t in triples:
        if not isinstance(t, (tuple, list)) or len(t) != 5:
            raise TypeError(f"triples must be 5-tuples (s0, s1, p, o0, o1), got {t!r}")
        s = _check_span(t[:2], length, "triples subject")
        p = check_int(t[2], "triples predicate", low=0, high=n_predicates - 1)
        o = _check_span(t[3:], length, "triples object")
        clean.append((s, p, o))
    subjects = sorted({s for s, _, _ in clean})
    subject_labels = span_labels(subjects, length, dtype=dtype, device=device)
    obj = torch.zeros(len(subjects), length, n_predicates, 2, dtype=dtype, device=device)
    row = {s: k for k, s in enumerate(subjects)}
    for s, p, (i, j) in clean:
        obj[row[s], i, p, 0] = 1
        obj[row[s], j, p, 1] = 1
    subj = torch.tensor(subjects, dtype=torch.int64, device=device).reshape(-1, 2)
    return subject_labels, subj, obj


# ------------------------------------------------------------------------------ model pieces, loss
def subject_vector(hidden: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
    r"""The subject's vector: its first and last token's hidden states, concatenated.

    .. math:: c = [h_{s_0};\ h_{s_1}]

    Parameters
    ----------
    hidden : torch.Tensor
        ``(B, n, d)`` hidden states.
    subjects : torch.Tensor
        ``(B, 2)`` int64 (start, end) per row.

    Returns
    -------
    torch.Tensor
        ``(B, 2 d)``.

    Chapter: notebooks/lic2020-baselines.md.
    """
    check_tensor(hidden, "hidden", floating=True)
    if hidden.dim() != 3:
        raise ValueError(f"hidden must have shape (B, n, d), got {tuple(hidden.shape)}")
    check_index_range(subjects, "subjects", hidden.shape[1])
    if subjects.shape != (hidden.shape[0], 2):
        raise ValueError(f"subjects must have shape ({hidden.shape[0]}, 2), got {tuple(subjects.shape)}")
    if subjects.device != hidden.device:
        raise ValueError(f"subjects is on {subjects.device} but hidden is on {hidden.device}")
    idx = subjects[:, :, None].expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, idx).flatten(1)


class ConditionalLayerNorm(nn.Module):
    r"""Layer norm whose gain and offset are affine functions of a condition vector.

    .. math:: y = (\gamma + W_\gamma c) \odot \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}}
       + (\beta + W_\beta c)

    :math:`W_\gamma, W_\beta` start at zero, so the layer starts as a plain layer norm. The row is
    divided by its largest magnitude before normalising (no overflow at :math:`|x| = 10^{30}`).

    Parameters
    ----------
    dim : int
        Feature size of ``x``.
    cond_dim : int
        Size of the condition ``c``.
    eps : float
        :math:`\epsilon`.

    Notes
    -----
    ``forward(x, c)`` with ``x`` of shape ``(..., n, dim)`` and ``c`` of shape ``(..., cond_dim)``
    (broadcast over the positions). Chapter: notebooks/lic2020-baselines.md.
    """

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6, *, device=None, dtype=None):
        super().__init__()
        self.dim = check_int(dim, "dim", low=1)
        self.cond_dim = check_int(cond_dim, "cond_dim", low=1)
        self.eps = check_float(eps, "eps", low=0.0, low_open=True)
        kw = dict(device=device, dtype=dtype)
        self.gamma = nn.Parameter(torch.ones(self.dim, **kw))
        self.beta = nn.Parameter(torch.zeros(self.dim, **kw))
        self.to_gamma = nn.Linear(self.cond_dim, self.dim, bias=False, **kw)
        self.to_beta = nn.Linear(self.cond_dim, self.dim, bias=False, **kw)
        nn.init.zeros_(self.to_gamma.weight)
        nn.init.zeros_(self.to_beta.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", min_dim=2, floating=True)
        check_tensor(cond, "cond", min_dim=1, floating=True)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension {self.dim}, got {tuple(x.shape)}")
        if cond.shape[-1] != self.cond_dim:
            raise ValueError(f"cond must have last dimension {self.cond_dim}, got {tuple(cond.shape)}")
        check_compatible(x, cond, "x", "cond", core_dims=(2, 1))
        for t, name in ((x, "x"), (cond, "cond")):
            if t.device != self.gamma.device:
                raise ValueError(f"{name} is on {t.device} but the layer is on {self.gamma.device}")
        s = x.abs().amax(-1, keepdim=True)
        s = torch.where(s > 0, s, torch.ones_like(s))
        xs = x / s
        xc = xs - xs.mean(-1, keepdim=True)
        z = xc * torch.rsqrt(xc.square().mean(-1, keepdim=True) + (self.eps / s) / s)
        gamma = self.gamma + self.to_gamma(cond)[..., None, :]
        beta = self.beta + self.to_beta(cond)[..., None, :]
        return gamma * z + beta


def power_bce(logits: torch.Tensor, labels: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    r"""Binary cross-entropy of the probability :math:`q = \sigma(z)^n`, element by element.

    .. math:: \ell = -t \log q - (1 - t) \log(1 - q), \qquad \log q = n \log\sigma(z),
       \quad \log(1 - q) = \log\big(-\operatorname{expm1}(n \log \sigma(z))\big)

    computed in log space; each log is clamped at -100 like
    :func:`torch.nn.functional.binary_cross_entropy` (the peer it equals for moderate logits).

    Parameters
    ----------
    logits : torch.Tensor
        Pre-sigmoid scores :math:`z`.
    labels : torch.Tensor
        Targets :math:`t \in [0, 1]`, same shape.
    power : float
        :math:`n > 0` (1: the ordinary loss; the article's code uses 2 for subjects, 4 for objects).

    Chapter: notebooks/lic2020-baselines.md.
    """
    check_tensor(logits, "logits", floating=True)
    check_tensor(labels, "labels", floating=True)
    check_compatible(logits, labels, "logits", "labels")
    if logits.shape != labels.shape:
        raise ValueError(f"logits and labels must have the same shape, got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    n = check_float(power, "power", low=0.0, low_open=True)
    if labels.device.type != "meta" and labels.numel() and bool(((labels < 0) | (labels > 1)).any()):
        raise ValueError("labels must lie in [0, 1]")
    log_q = n * nn.functional.logsigmoid(logits)
    tiny = torch.finfo(logits.dtype).tiny
    log_1mq = torch.log(-torch.expm1(log_q.clamp(max=-tiny)))
    return -(labels * log_q.clamp(min=-100) + (1 - labels) * log_1mq.clamp(min=-100))


def pointer_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    power: float = 1.0,
) -> torch.Tensor:
    r"""The pointer loss of the article's code: per position, mean over (start, end), sum over the
    heads (predicates), then a masked mean over positions.

    .. math:: \mathcal{L} = \frac{\sum_{b,i} m_{b,i} \sum_{k} \tfrac12 \sum_{c \in \{0,1\}}
       \ell(z_{b,i,k,c}, t_{b,i,k,c})}{\sum_{b,i} m_{b,i}}

    with :math:`\ell` the :func:`power_bce`.

    Parameters
    ----------
    logits, labels : torch.Tensor
        ``(B, n, *heads, 2)``: batch, positions, any head dimensions (none for subjects, one of size
        :math:`P` for objects), start/end.
    mask : torch.Tensor, optional
        ``(B, n)`` bool, True on real tokens (all by default). A fully masked batch gives 0.
    power : float
        :math:`n` of :func:`power_bce`.

    Chapter: notebooks/lic2020-baselines.md.
    """
    check_tensor(logits, "logits", min_dim=3, floating=True)
    if logits.shape[-1] != 2:
        raise ValueError(f"logits must end with a (start, end) axis of size 2, got {logits.shape}")
    per = power_bce(logits, labels, power).mean(-1)
    per = per.flatten(2).sum(-1) if per.dim() > 2 else per
    if mask is None:
        return per.mean()
    _check_mask(mask, "mask")
    if mask.shape != per.shape:
        raise ValueError(f"mask must have shape {tuple(per.shape)}, got {tuple(mask.shape)}")
    check_compatible(mask, per, "mask", "logits", same_dtype=False)
    m = mask.to(per.dtype)
    return (per * m).sum() / m.sum().clamp(min=1)


# -------------------------------------------------------------------------------------- rematch
def rematch(text: str, tokens: Sequence[str], *, lowercase: bool = True) -> list[list[int]]:
    r"""Map each token back to the characters of the original text it came from.

    The text is normalised character by character as a BERT-style tokenizer does (lower case; NFKD,
    which strips accents and folds full-width letters; control characters and spaces dropped), keeping
    each normalised character's source index; the tokens (``##`` removed) are found left to right.

    Parameters
    ----------
    text : str
        The original text.
    tokens : sequence of str
        Its tokens; special tokens such as ``[CLS]`` map to ``[]``.
    lowercase : bool
        Whether the tokenizer lower-cases.

    Returns
    -------
    list of list of int
        For each token, the indices of its characters in ``text`` (so ``text[m[0]:m[-1] + 1]`` is the
        original spelling of the token).

    Chapter: notebooks/lic2020-baselines.md.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be a sequence of str")
    check_bool(lowercase, "lowercase")
    norm, src = [], []
    for k, ch in enumerate(text):
        if lowercase:
            ch = unicodedata.normalize("NFKD", ch.lower())
            ch = "".join(c for c in ch if unicodedata.category(c) != "Mn")
        ch = "".join(c for c in ch if not (c.isspace() or unicodedata.category(c) == "Cc"))
        norm.extend(ch)
        src.extend([k] * len(ch))
    joined = "".join(norm)
    out, at = [], 0
    for tok in tokens:
        if tok.startswith("[") and tok.endswith("]"):
            out.append([])
            continue
        tok = tok[2:] if tok.startswith("##") else tok
        if lowercase:
            tok = "".join(c for c in unicodedata.normalize("NFKD", tok.lower())
                          if unicodedata.category(c) != "Mn")
        k = joined.find(tok, at) if tok else -1
        if k < 0:
            raise ValueError(f"token {tok!r} not found in the text after character {at}")
        out.append(sorted(set(src[k:k + len(tok)])))
        at = k + len(tok)
    return out
