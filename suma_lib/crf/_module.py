"""The CRF layer (:class:`suma_lib.crf.CRF`)."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_int
from ._chain import crf_log_likelihood, crf_viterbi
from ._memm import bimemm_log_likelihood, memm_log_likelihood, memm_viterbi


class CRF(nn.Module):
    r"""Linear-chain CRF layer with learnable transitions (and optional start/end scores).

    ``forward(emissions, tags, mask)`` returns the per-sequence log-likelihood
    :math:`s(y; x) - \log Z(x)` (see :func:`crf_log_likelihood`); ``decode(emissions, mask)`` the
    Viterbi labels (see :func:`crf_viterbi`). ``memm_log_likelihood`` and ``bimemm_log_likelihood``
    score the same parameters under local normalisation, so one layer can be trained as a CRF, a MEMM or a Bi-MEMM.

    Parameters
    ----------
    num_tags : int
        Number of labels ``K``.
    start_end : bool
        Learn start and end scores :math:`a, b` (default True).
    rank : int, optional
        Factor the transitions as :math:`g = L R^\top` with ``(K, rank)`` factors (``2 K rank``
        parameters); the CRF methods then form the ``(K, K)`` matrix, the MEMM ones never do.
    device, dtype
        Where the parameters live.
    generator : torch.Generator, optional
        Draws the initial parameters (uniform in [-0.1, 0.1]; the factors scaled so that ``L R^T`` is too).

    Chapter: notebooks/memm-vs-crf.md
    """

    def __init__(
        self,
        num_tags: int,
        start_end: bool = True,
        rank: int | None = None,
        *,
        device=None,
        dtype=None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_tags = check_int(num_tags, "num_tags", low=1)
        self.rank = None if rank is None else check_int(rank, "rank", low=1)
        kw = dict(device=device, dtype=dtype)

        def init(*shape, scale=0.1):
            t = torch.empty(*shape, **kw)
            if t.device.type != "meta":
                with torch.no_grad():
                    t.uniform_(-scale, scale, generator=generator)
            return nn.Parameter(t)

        K = self.num_tags
        if self.rank is None:
            self.transitions = init(K, K)
            self.left = self.right = None
        else:
            s = (0.1 / self.rank) ** 0.5
            self.transitions = None
            self.left = init(K, self.rank, scale=s)
            self.right = init(K, self.rank, scale=s)
        self.start = init(K) if start_end else None
        self.end = init(K) if start_end else None

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, rank={self.rank}, start_end={self.start is not None}"

    def transition_matrix(self) -> torch.Tensor:
        """The ``(K, K)`` transition scores (formed from the factors in the low-rank case)."""
        if self.rank is None:
            return self.transitions
        return self.left @ self.right.transpose(0, 1)

    def _trans(self):
        return self.transitions if self.rank is None else (self.left, self.right)

    def forward(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CRF log-likelihood of ``tags``, shape ``(*batch,)``."""
        return crf_log_likelihood(
            emissions, tags, self.transition_matrix(), self.start, self.end, mask
        )

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Viterbi labels, ``(*batch, n)``, ``-1`` at padded steps."""
        return crf_viterbi(emissions, self.transition_matrix(), self.start, self.end, mask)[0]

    def memm_log_likelihood(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor | None = None,
        direction: str = "forward",
    ) -> torch.Tensor:
        """MEMM log-likelihood of ``tags`` with this layer's scores (see "
        ":func:`memm_log_likelihood`)."""
        return memm_log_likelihood(
            emissions, tags, self._trans(), self.start, self.end, mask, direction
        )

    def bimemm_log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Bi-MEMM log-likelihood (see :func:`bimemm_log_likelihood`)."""
        return bimemm_log_likelihood(emissions, tags, self._trans(), self.start, self.end, mask)

    def memm_decode(
        self, emissions: torch.Tensor, mask: torch.Tensor | None = None, direction: str = "forward"
    ) -> torch.Tensor:
        """MEMM / Bi-MEMM Viterbi labels (see :func:`memm_viterbi`)."""
        return memm_viterbi(emissions, self._trans(), self.start, self.end, mask, direction)[0]

