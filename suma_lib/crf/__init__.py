r"""Linear-chain CRF, MEMM and Bi-MEMM for sequence labelling.

Every model here scores a label sequence :math:`y = (y_1, \dots, y_n)` for an input :math:`x` with
the same function, per-position emission scores :math:`f(y_k; x)` plus transition scores
:math:`g(y_{k-1}, y_k)`,

.. math::

    s(y; x) = a(y_1) + f(y_1; x) + \sum_{k=2}^{n} \big(g(y_{k-1}, y_k) + f(y_k; x)\big) + b(y_n),

(:math:`a`, :math:`b` optional start and end scores) and differs only in how it normalises it:

* the **CRF** normalises globally, :math:`P(y \mid x) = e^{s(y;x)} / Z(x)` with
  :math:`Z(x) = \sum_{y'} e^{s(y';x)}` computed by the forward algorithm in log space;
* the **MEMM** normalises locally, one softmax per step,
  :math:`P(y \mid x) = P(y_1 \mid x)\prod_{k \ge 2} P(y_k \mid y_{k-1}, x)` with
  :math:`P(y_k \mid y_{k-1}, x) \propto e^{g(y_{k-1}, y_k) + f(y_k; x)}`;
* the **Bi-MEMM** of Su Jianlin's article averages the log-likelihoods of the left-to-right MEMM and
  of the right-to-left one,
  :math:`P(y_{k-1} \mid y_k, x) \propto e^{g(y_{k-1}, y_k) + f(y_{k-1}; x)}`.

Shapes: ``emissions`` ``(*batch, n, K)``, ``tags`` and ``mask`` ``(*batch, n)``, ``transitions``
``(K, K)`` (``transitions[i, j]`` = :math:`g(i, j)`, the score of label ``i`` followed by ``j``) or,
for the low-rank form :math:`g = L R^\top`, a pair ``(L, R)`` of ``(K, d)`` matrices. ``mask`` is
boolean and right-padded (each row is some ``True`` steps then ``False`` steps) with its first step
``True``. Everything is batched over the leading dimensions, follows the inputs' device and dtype,
and runs on the ``meta`` device.

Chapter: notebooks/memm-vs-crf.md (and notebooks/crf-learning-rate.md for
:func:`crf_param_groups`)
"""

from __future__ import annotations

from ._chain import crf_log_likelihood, crf_log_partition, crf_score, crf_viterbi
from ._checks import low_rank_transitions
from ._lr import crf_param_groups
from ._memm import bimemm_log_likelihood, memm_log_likelihood, memm_viterbi
from ._module import CRF

__all__ = [
    "CRF",
    "crf_score",
    "crf_log_partition",
    "crf_log_likelihood",
    "crf_viterbi",
    "memm_log_likelihood",
    "bimemm_log_likelihood",
    "memm_viterbi",
    "low_rank_transitions",
    "crf_param_groups",
]

