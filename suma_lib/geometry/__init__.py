r"""Random geometry in high dimensions (Part I of the book).

One module per chapter, every public name re-exported here:

* :mod:`suma_lib.geometry.random_init` — chapter ``init-geometry`` (random directions,
  initialisation, near-orthogonal random matrices);
* :mod:`suma_lib.geometry.jl_lemma` — chapter ``jl-lemma-applications`` (random projections, the
  Johnson–Lindenstrauss dimension, sign random projections, randomized SVD).

Chapter: notebooks/init-geometry.md, notebooks/jl-lemma-applications.md

Conventions: torch code is device- and dtype-agnostic (new tensors follow their inputs, or the
``device`` and ``dtype`` arguments of the samplers), batched over leading dimensions, and draws its
randomness from an optional
:class:`torch.Generator` (which must live on the device the numbers are drawn on). Weight matrices follow
:mod:`torch.nn.init`: a ``Linear`` weight has shape ``(fan_out, fan_in)`` and acts as ``x @ w.T``.
"""

from __future__ import annotations

from .jl_lemma import (
    _unit,  # noqa: F401
    angle_between,
    embedding_entropy,
    gaussian_matrix,
    hamming_angle,
    jl_distortion,
    jl_min_dim,
    pairwise_sq_distances,
    random_projection,
    randomized_svd,
    sign_lsh,
)
from .random_init import (  # noqa: F401  (private, kept for old imports)
    _log_gamma_half_ratio,
    _rms,
    activation_norms,
    angle_pdf,
    fan_in_and_fan_out,
    gaussian_expectation,
    init_std,
    normal_init_,
    orthogonality_error,
    sample_angles,
    uniform_init_,
)

__all__ = [
    "angle_pdf",
    "sample_angles",
    "angle_between",
    "fan_in_and_fan_out",
    "init_std",
    "normal_init_",
    "uniform_init_",
    "orthogonality_error",
    "activation_norms",
    "gaussian_matrix",
    "random_projection",
    "jl_min_dim",
    "pairwise_sq_distances",
    "jl_distortion",
    "sign_lsh",
    "hamming_angle",
    "randomized_svd",
    "gaussian_expectation",
    "embedding_entropy",
]
