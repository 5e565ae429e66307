"""Robustness of the whole public API under bad and extreme input (issue 11).

Three parts:

1. Regressions: one test per finding of issue 11 fixed in the shared code and the geometry, entropy
   and penalty modules.
2. A sweep over every public callable, enumerated from the ``__all__`` of every module of
   ``suma_lib`` (walked with :mod:`pkgutil`, so a function is covered the day it is added): bad
   input must raise a clean ``TypeError``/``ValueError``, extreme valid input must give finite
   results (or a meta tensor of the right shape). Each callable needs one example call in
   ``EXAMPLES`` below; the sweep fails for a public callable that has none, so that new functions
   are added here with their first valid call.
3. Hypothesis properties: attention outputs lie within the values' range, entropies in [0, log n],
   probabilities sum to one.

Failures in modules owned by other helpers are marked ``xfail(strict=False)`` with the owner in the
reason.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hst

import suma_lib
from suma_lib import crf, lora, penalty
from suma_lib import geometry as g
from suma_lib.attention.scale import box_min_entropy, max_gap_entropy_estimate
from suma_lib.orthogonality import fit_teacher_student, pairwise_angles, sign_correlation

F32 = torch.float32


# ============================================================================ 1. regressions (issue
# 11)
@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e20, 1e30])
def test_pairwise_angles_orthogonal_rows_any_norm(scale: float) -> None:
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]) * scale
    a = pairwise_angles(w)
    expected = torch.tensor(
        [
            [0.0, math.pi / 2, math.pi / 4],
            [math.pi / 2, 0.0, math.pi / 4],
            [math.pi / 4, math.pi / 4, 0.0],
        ]
    )
    assert torch.allclose(a, expected, atol=1e-6)
    with pytest.raises(ValueError, match="zero row"):
        pairwise_angles(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e20, 1e30])
@pytest.mark.parametrize("sharpness", [10.0, math.inf])
def test_sign_correlation_finite_at_any_scale(scale: float, sharpness: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, generator=gen, dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    ref = sign_correlation(x, w, sharpness=sharpness)
    out = sign_correlation((x * scale).float(), (w * scale).float(), sharpness=sharpness)
    assert torch.isfinite(out).all()
    if sharpness == math.inf or scale >= 1.0:  # the sign regime (tanh saturates) is scale-free
        sat = sign_correlation(x, w, sharpness=math.inf)
        assert torch.allclose(out.double(), sat if scale > 1 else ref, atol=1e-5)
    # orthogonal kernels: correlation near 0 in every regime
    assert abs(float(out[0, 1])) < 0.2


def test_sign_correlation_linear_regime_is_cosine_of_projections() -> None:
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    y = x @ w.T
    yn = y / y.norm(dim=0)
    out = sign_correlation(x * 1e-30, w * 1e-30)  # k = s |x| |w| underflows: tanh is the identity
    assert torch.allclose(out, yn.T @ yn, atol=1e-5)


def test_sign_correlation_gradient_finite_at_extremes() -> None:
    for scale in (1e-30, 1e30):
        w = (torch.eye(3) * scale).requires_grad_(True)
        sign_correlation(torch.randn(16, 3) * scale, w).sum().backward()
        assert torch.isfinite(w.grad).all()


@pytest.mark.parametrize("beta", [1.0, 20.0, 50.0, 400.0])
def test_box_min_entropy_finite_for_large_beta(beta: float) -> None:
    h, k = box_min_entropy(10, beta)
    assert math.isfinite(h) and 0 <= h <= math.log(10) and 1 <= k <= 9
    # brute force in float64 log-space over every k
    best = min(
        float(
            torch.special.entr(
                torch.softmax(torch.tensor([beta] * kk + [-beta] * (10 - kk)).double(), 0)
            ).sum()
        )
        for kk in range(1, 10)
    )
    assert h == pytest.approx(best, abs=1e-12)


def test_max_gap_entropy_estimate_extremes() -> None:
    for v in (1e30, 1e38, -1e38, 1e-30):
        est = max_gap_entropy_estimate(torch.full((1, 6), v))
        assert est.item() == pytest.approx(math.log(6), rel=1e-6)
        assert est.item() <= math.log(6)
    wide = max_gap_entropy_estimate(torch.tensor([[3e38, -3e38, 0.0]]))
    assert torch.isfinite(wide).all() and wide.item() < 0
    wide64 = max_gap_entropy_estimate(torch.tensor([[1.7e308, -1.7e308]], dtype=torch.float64))
    assert torch.isfinite(wide64).all()


def _true_entropy(s: torch.Tensor) -> torch.Tensor:
    s = s.double()
    s = s - s.amax(-1, keepdim=True)
    p = torch.softmax(s, -1)
    return torch.logsumexp(s, -1) - (p * s).nan_to_num().sum(-1)


@settings(max_examples=150, deadline=None)
@given(
    hst.lists(
        hst.one_of(
            hst.floats(-1e30, 1e30),
            hst.floats(-50, 50),
            hst.sampled_from([0.0, 1.0, -1.0, 1e-30]),
        ),
        min_size=1,
        max_size=12,
    ),
    hst.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_max_gap_entropy_estimate_is_a_lower_bound(values: list[float], dtype: torch.dtype) -> None:
    s = torch.tensor([values], dtype=dtype)
    est = max_gap_entropy_estimate(s)
    assert torch.isfinite(est).all() and est.dtype == dtype
    assert est.double().item() <= _true_entropy(s).item()


def test_jl_distortion_collapsed_points_at_extreme_scale() -> None:
    x = torch.tensor([[1e-30, 0.0], [0.0, 1e-30], [2e-30, 1e-30]])
    y = torch.full((3, 2), -1e30)  # every point mapped to one point far away
    assert torch.equal(g.jl_distortion(x, y), torch.full((3,), -1.0))
    x = torch.full((3, 2), -1e30)
    assert torch.equal(g.jl_distortion(x, x.clone()), torch.zeros(3))
    # points at 1e-30 mapped to 1e-30 * (a scaled copy): exact ratios
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert torch.allclose(g.jl_distortion(x * 1e-30, x * 2e-30), torch.full((3,), 3.0))
    assert torch.allclose(g.jl_distortion(x * 1e30, x * 3e30), torch.full((3,), 8.0))


def test_parameter_gradient_penalty_at_huge_input() -> None:
    model = penalty.random_mlp([3, 4, 1], generator=torch.Generator().manual_seed(0))
    x = torch.full((2, 3), 1e30)
    out = penalty.parameter_gradient_penalty(model, x)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, penalty.parameter_gradient_norm(model, x) ** 2, rtol=1e-5)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("n", [2, 3, 4, 50])
def test_angle_pdf_gradient_finite_at_the_ends(n: int) -> None:
    theta = torch.tensor([0.0, math.pi / 2, math.pi], dtype=torch.float64, requires_grad=True)
    g.angle_pdf(theta, n).sum().backward()
    assert torch.isfinite(theta.grad).all()
    if n == 3:  # p = sin(θ)/2: p'(0) = 1/2
        assert theta.grad[0].item() == pytest.approx(0.5)


def _global_state() -> tuple[torch.Tensor, Any]:
    return torch.get_rng_state(), np.random.get_state()[1].copy()


def test_fit_helpers_leave_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a1 = fit_teacher_student(None, d=4, k=3, r=2, steps=2, batch=8, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    a2 = fit_teacher_student(None, d=4, k=3, r=2, steps=2, batch=8, seed=5)
    assert torch.equal(a1[0], a2[0]) and a1[2] == a2[2]  # still reproducible from its own seed


def test_samplers_leave_the_global_rng_alone() -> None:
    torch.manual_seed(7)
    before = torch.get_rng_state()
    gen = torch.Generator().manual_seed(0)
    g.sample_angles(5, 10, generator=gen)
    g.random_projection(torch.ones(3, 8), 4, generator=gen)
    g.randomized_svd(torch.ones(6, 5), 2, generator=gen)
    g.sign_lsh(torch.ones(3, 4), 8, generator=gen)
    penalty.random_mlp([2, 3], generator=gen)
    assert torch.equal(torch.get_rng_state(), before)


# ============================================================================ 2. the API sweep
def _public_callables() -> dict[str, Any]:
    """Every function and class in an ``__all__`` of a public module, under its first public
    path."""
    found: dict[str, Any] = {}
    seen: set[int] = set()
    mods = [suma_lib] + [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(suma_lib.__path__, "suma_lib.")
        if not any(part.startswith("_") for part in m.name.split("."))
    ]
    for mod in mods:
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            found[f"{mod.__name__}.{name}"] = obj
    return found


PUBLIC = _public_callables()


def T(*shape: int, seed: int = 0, dtype: torch.dtype = F32) -> torch.Tensor:
    """A small random float tensor."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def P(*shape: int, seed: int = 0) -> torch.Tensor:
    """A small random probability tensor (last axis sums to one)."""
    return torch.softmax(T(*shape, seed=seed), -1)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@dataclass
class Ex:
    """One valid call of a public callable, and which families of input apply to it.

    ``call`` returns ``(args, kwargs)`` for a function, or ``(module, args, kwargs)`` for a class
    (the module is built by ``call`` and then called with the arguments). Top-level floating tensors
    of the arguments are the ones mutated, except those named in ``fixed`` (positions or keyword
    names) whose values are constrained (probabilities, masks).
    """

    call: Callable[[], tuple]
    fixed: tuple = ()
    scale: bool = (
        True  # extreme magnitudes 1e-30 / 1e30 of the float arguments must give finite output
    )
    overflow_ok: bool = False  # output may be +-inf at 1e30 (documented overflow) but never NaN
    half: bool = True  # float16 / bfloat16 supported (finite output)
    meta: bool = True  # the meta device gives meta output of the right shape
    grad: bool = True  # requires_grad inputs give finite gradients
    nan_error_or_nan: bool = True  # a NaN input raises or gives NaN, never a silent finite answer
    needs_float: bool = True  # int / bool tensors for the float arguments must be rejected
    deterministic: bool = True  # two calls give the same result (for the non-contiguous comparison)


# Callables that are not called by the sweep, with the reason.
NOT_SWEPT = {
    "suma_lib.models.load_minilm": "loads a 90 MB encoder (its checks: test_models.py)",
    "suma_lib.models.minilm_path": "no tensor arguments (a path lookup)",
    "suma_lib.models.encoder_attention_inputs": "needs the real encoder (test_models.py)",
    "suma_lib.setup_notebook": "global side effects (style, claims); tested in test_core.py",
    "suma_lib.use_style": "no arguments",
    "suma_lib.seed_everything": "reseeds the global generators on purpose (test_core.py)",
    "suma_lib.claims.ClaimError": "an exception class",
    "suma_lib.claims.ClaimRecord": "a record type",
    "suma_lib.claims.records": "no arguments",
    "suma_lib.claims.reset": "no arguments",
    "suma_lib.claims.summary": "no arguments; displays the ledger",
    "suma_lib.claims.symbolic": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.close": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.bound": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.monte_carlo": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.holds": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.article_map": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.entropy.EntropyNormalization": "a result type",
    "suma_lib.penalty.PenaltyInequality": "a result type",
    "suma_lib.smooth.MinimaxResult": "a result type",
    "suma_lib.profiling.measure_time": "times a callable (no tensor arguments)",
    "suma_lib.profiling.measure_peak_memory": "measures a callable (no tensor arguments)",
    "suma_lib.attention.train_tagger": "a training loop (seconds); tested in test_synthesizer.py",
    "suma_lib.attention.train_tta": "a training loop (seconds); tested in test_tta.py",
    "suma_lib.orthogonality.fit_teacher_student": "a training loop (seconds); see the regression",
    "suma_lib.smooth.squareplus_minimax": "no tensor arguments (a scalar optimisation)",
    "suma_lib.smooth.convolve_quad": "NumPy quadrature of a Python callable",
    "suma_lib.position.alpha_ramp": "a schedule of Python numbers (no tensor arguments)",
    "suma_lib.claims.VacuousClaimError": "an exception class",
    "suma_lib.claims.anchor_of": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.map_counts": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.render_article_map": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.render_claim": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.render_claims": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.render_summary": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.claims.symbolic_tex": "claim helpers (owner: reader): tested in test_core",
    "suma_lib.optim.AdaFactor": "an optimizer (takes parameters, not tensors): test_optim.py",
    "suma_lib.optim.EGStepSize": "an optimizer (takes parameters, not tensors): test_optim.py",
    "suma_lib.optim.ExponentiatedGradient": "an optimizer (takes parameters, not tensors): test_optim.py",
    "suma_lib.optim.state_bytes": "takes an optimizer (no tensor arguments): test_optim.py",
    "suma_lib.training.train": "a training loop (seconds); tested in test_training.py",
    "suma_lib.extrapolation.run_grid": "a training loop (seconds); tested in test_extrapolation.py",
    "suma_lib.extrapolation.summarise": "no tensor arguments (a table of NumPy arrays)",
    "suma_lib.extrapolation.format_table": "no tensor arguments (a table of NumPy arrays)",
}

def _tiny():
    from suma_lib.extrapolation import TinyDecoder

    return TinyDecoder("rope", 5, 16, 2, 1, 8, generator=_gen())


_MLP = lambda: penalty.random_mlp([3, 4, 2], generator=_gen())  # noqa: E731

EXAMPLES: dict[str, Ex] = {
    # ---------------------------------------------------------------- geometry
    "suma_lib.geometry.angle_pdf": Ex(lambda: ((T(5).abs(), 4), {})),
    "suma_lib.geometry.sample_angles": Ex(lambda: ((4, 3), {"generator": _gen()})),
    "suma_lib.geometry.angle_between": Ex(lambda: ((T(3, 4), T(3, 4, seed=1)), {})),
    "suma_lib.geometry.fan_in_and_fan_out": Ex(lambda: ((T(4, 3),), {}), needs_float=False),
    "suma_lib.geometry.init_std": Ex(lambda: (((4, 3),), {})),
    "suma_lib.geometry.normal_init_": Ex(
        lambda: ((T(4, 3),), {"generator": _gen()}),
        grad=False,
        nan_error_or_nan=False,
        deterministic=False,
    ),
    "suma_lib.geometry.uniform_init_": Ex(
        lambda: ((T(4, 3),), {"generator": _gen()}),
        grad=False,
        nan_error_or_nan=False,
        deterministic=False,
    ),
    "suma_lib.geometry.orthogonality_error": Ex(lambda: ((T(5, 3),), {}), overflow_ok=True),
    "suma_lib.geometry.activation_norms": Ex(lambda: ((T(2, 3), [T(4, 3, seed=1)]), {})),
    "suma_lib.geometry.gaussian_expectation": None,  # SymPy, no tensors: scalar checks only
    "suma_lib.geometry.gaussian_matrix": Ex(lambda: ((3, 2), {"generator": _gen()})),
    "suma_lib.geometry.random_projection": Ex(lambda: ((T(3, 6), 4), {"generator": _gen()})),
    "suma_lib.geometry.jl_min_dim": Ex(lambda: ((100, 0.5), {})),
    "suma_lib.geometry.pairwise_sq_distances": Ex(lambda: ((T(4, 3),), {}), overflow_ok=True),
    "suma_lib.geometry.jl_distortion": Ex(lambda: ((T(4, 3), T(4, 2, seed=1)), {})),
    "suma_lib.geometry.sign_lsh": Ex(lambda: ((T(3, 4), 8), {"generator": _gen()}), grad=False),
    "suma_lib.geometry.hamming_angle": Ex(
        lambda: ((T(3, 8) > 0, T(3, 8, seed=1) > 0), {}), needs_float=False, scale=False, grad=False
    ),
    "suma_lib.geometry.randomized_svd": Ex(lambda: ((T(6, 5), 2), {"generator": _gen()})),
    "suma_lib.geometry.embedding_entropy": Ex(lambda: ((8.0, 10.0), {"grid": 1001})),
    # ---------------------------------------------------------------- entropy
    "suma_lib.entropy.entropy": Ex(lambda: ((P(3, 5),), {}), fixed=(0,), scale=False),
    "suma_lib.entropy.power_transform": Ex(lambda: ((P(3, 5), 2.0), {}), fixed=(0,)),
    "suma_lib.entropy.entropy_bounds": Ex(lambda: ((P(3, 5),), {}), fixed=(0,), grad=False),
    "suma_lib.entropy.entropy_normalize": Ex(lambda: ((P(3, 5), 1.0), {}), fixed=(0,)),
    # ---------------------------------------------------------------- penalty
    "suma_lib.penalty.mlp_layers": Ex(lambda: ((_MLP(),), {}), grad=False),
    "suma_lib.penalty.input_gradient_norm": Ex(lambda: ((_MLP(), T(5, 3)), {}), grad=False),
    "suma_lib.penalty.parameter_gradient_norm": Ex(lambda: ((_MLP(), T(5, 3)), {}), grad=False),
    "suma_lib.penalty.gradient_penalty_bound": Ex(lambda: ((_MLP(), T(5, 3)), {}), grad=False),
    "suma_lib.penalty.penalty_inequality": Ex(  # hidden_sq = |h|^2 overflows at |x| = 1e30
        lambda: ((_MLP(), T(5, 3)), {}), grad=False, overflow_ok=True
    ),
    "suma_lib.penalty.parameter_gradient_penalty": Ex(lambda: ((_MLP(), T(5, 3)), {})),
    "suma_lib.penalty.random_mlp": Ex(lambda: (([3, 4, 2],), {"generator": _gen()})),
    # ---------------------------------------------------------------- position, seeding, device,
    # profiling
    "suma_lib.position.sinusoidal_frequencies": Ex(lambda: ((8,), {})),
    "suma_lib.position.sinusoidal_encoding": Ex(lambda: ((5, 8), {})),
    "suma_lib.position.sinusoidal_shift_matrix": Ex(lambda: ((3.0, 8), {})),
    "suma_lib.make_generator": Ex(lambda: ((3,), {})),
    # ---------------------------------------------------------------- extrapolation (owner: p5b)
    "suma_lib.extrapolation.lag_copy_batch": Ex(lambda: ((2, 8, 5), {"generator": _gen()})),
    "suma_lib.extrapolation.TinyDecoder": Ex(
        lambda: (_tiny(), (torch.randint(5, (2, 12), generator=_gen()),), {})
    ),
    "suma_lib.extrapolation.evaluate": Ex(
        lambda: ((_tiny(), 16), {"generator": _gen()}), meta=False  # an accuracy: a number
    ),
    "suma_lib.get_device": Ex(lambda: (("cpu",), {})),
    "suma_lib.profiling.crossover_length": Ex(lambda: (([64, 128, 256], [2.0, 1.2, 0.8]), {})),
    # ---------------------------------------------------------------- orthogonality
    "suma_lib.orthogonality.pairwise_angles": Ex(lambda: ((T(3, 4),), {})),
    "suma_lib.orthogonality.sign_correlation": Ex(lambda: ((T(16, 4), T(3, 4, seed=1)), {})),
    "suma_lib.orthogonality.self_orthogonality_loss": Ex(lambda: ((T(16, 4), T(3, 4, seed=1)), {})),
    "suma_lib.orthogonality.SelfOrthogonality": Ex(
        lambda: (suma_lib.orthogonality.SelfOrthogonality(), (T(16, 4), T(3, 4, seed=1)), {})
    ),
    # ---------------------------------------------------------------- smooth
    "suma_lib.smooth.squareplus": Ex(lambda: ((T(6),), {})),
    "suma_lib.smooth.SquarePlus": Ex(lambda: (suma_lib.smooth.SquarePlus(), (T(6),), {})),
    "suma_lib.smooth.smooth_relu": Ex(lambda: ((T(6),), {})),
    "suma_lib.smooth.SmoothReLU": Ex(lambda: (suma_lib.smooth.SmoothReLU(), (T(6),), {})),
    "suma_lib.smooth.smooth_abs": Ex(lambda: ((T(6),), {})),
    "suma_lib.smooth.smooth_floor": Ex(lambda: ((T(6),), {})),
    "suma_lib.smooth.smooth_max": Ex(lambda: ((T(6), T(6, seed=1)), {})),
    "suma_lib.smooth.smooth_sign": Ex(lambda: ((T(6),), {})),
    "suma_lib.smooth.kernel_pdf": Ex(lambda: ((np.linspace(-2, 2, 5),), {})),
    "suma_lib.smooth.squareplus_softplus_gap": Ex(lambda: ((np.linspace(-2, 2, 5), 4.0), {})),
}

_att = suma_lib.attention
pos = suma_lib.position
_QKV = lambda: (T(2, 3, 4), T(2, 5, 4, seed=1), T(2, 5, 3, seed=2))  # noqa: E731
_QKV_SQ = lambda: (T(2, 5, 4), T(2, 5, 4, seed=1), T(2, 5, 3, seed=2))  # noqa: E731


def _chain() -> tuple[torch.Tensor, torch.Tensor]:
    return _att.markov_chain(4, generator=_gen(), dtype=F32)


def _ids(*shape: int, high: int = 5) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=_gen())


EXAMPLES.update(
    {
        # ---------------------------------------------------------------- attention (owner: core /
        # perf)
        "suma_lib.attention.softmax_attention": Ex(lambda: (_QKV(), {})),
        "suma_lib.attention.attention_weights": Ex(lambda: (_QKV()[:2], {})),
        "suma_lib.attention.combine_masks": Ex(
            lambda: ((None, True, 3, 3), {"device": torch.device("cpu")})
        ),
        "suma_lib.attention.draw_orthogonal_features": Ex(lambda: ((8, 4, _gen()), {})),
        "suma_lib.attention.favor_features": Ex(  # exp(x.w - |x|^2/2) overflows at 1e30
            lambda: ((T(3, 4), T(8, 4, seed=1)), {}), overflow_ok=True
        ),
        "suma_lib.attention.favor_attention": Ex(
            lambda: (_QKV(), {"n_features": 16, "generator": _gen()})
        ),
        "suma_lib.attention.favor_flops": Ex(lambda: ((64, 8, 16), {})),
        "suma_lib.attention.softmax_attention_flops": Ex(lambda: ((64, 8), {})),
        "suma_lib.attention.linear_attention": Ex(lambda: (_QKV(), {})),
        "suma_lib.attention.elu_feature_map": Ex(lambda: ((T(3, 4),), {})),
        "suma_lib.attention.taylor_feature_map": Ex(lambda: ((T(3, 4),), {})),
        "suma_lib.attention.split_heads": Ex(lambda: ((T(2, 3, 8), 2), {}), needs_float=False),
        "suma_lib.attention.merge_heads": Ex(lambda: ((T(2, 2, 3, 4),), {}), needs_float=False),
        "suma_lib.attention.MultiHeadAttention": Ex(
            lambda: (_att.MultiHeadAttention(8, 2), (T(2, 3, 8),), {})
        ),
        "suma_lib.attention.RealFormerBlock": Ex(
            lambda: (_att.RealFormerBlock(8, 2, 16), (T(2, 3, 8),), {})
        ),
        "suma_lib.attention.RealFormerEncoder": Ex(
            lambda: (_att.RealFormerEncoder(2, 8, 2, 16), (T(2, 3, 8),), {})
        ),
        "suma_lib.attention.ResidualAttention": Ex(
            lambda: (_att.ResidualAttention(8, 2), (T(2, 3, 8),), {})
        ),
        "suma_lib.attention.markov_chain": Ex(lambda: ((4,), {"generator": _gen()})),
        "suma_lib.attention.markov_mlm_task": Ex(
            lambda: ((2, 5, *_chain()), {"generator": _gen()}),
            fixed=(2, 3),
            scale=False,
            grad=False,
        ),
        "suma_lib.attention.markov_posterior": Ex(
            lambda: ((_ids(2, 5, high=5), *_chain()), {}), fixed=(1, 2), scale=False
        ),
        "suma_lib.attention.residual_attention": Ex(lambda: (_QKV(), {})),
        "suma_lib.attention.box_entropy_gap": Ex(lambda: ((1.0,), {})),
        "suma_lib.attention.box_entropy_local_minima": Ex(
            lambda: ((5, 1.0), {"starts": 2, "rng": np.random.default_rng(0)})
        ),
        "suma_lib.attention.box_min_entropy": Ex(lambda: ((10, 1.0), {})),
        "suma_lib.attention.entropy_invariant_attention": Ex(lambda: (_QKV(), {})),
        "suma_lib.attention.entropy_invariant_scale": Ex(lambda: ((10, 4), {})),
        "suma_lib.attention.max_gap_entropy_estimate": Ex(lambda: ((T(3, 5),), {})),
        "suma_lib.attention.noise_change_first_order": Ex(
            lambda: ((T(3, 5), T(3, 5, 2, seed=1), 0.1), {})
        ),
        "suma_lib.attention.noisy_attention_change": Ex(
            lambda: ((T(3, 5), T(3, 5, 2, seed=1), 0.1), {"generator": _gen()})
        ),
        "suma_lib.attention.score_cgf": Ex(lambda: ((np.array([0.5, 1.0]),), {})),
        "suma_lib.attention.softmax_entropy": Ex(lambda: ((T(3, 5),), {})),
        "suma_lib.attention.tilted_entropy": Ex(lambda: ((10.0, np.array([0.5])), {})),
        "suma_lib.attention.atrous_mask": Ex(lambda: ((6, 2), {})),
        "suma_lib.attention.fixed_mask": Ex(lambda: ((6, 2), {})),
        "suma_lib.attention.local_attention": Ex(lambda: ((*_QKV_SQ(), 1), {})),
        "suma_lib.attention.local_mask": Ex(lambda: ((6, 1), {})),
        "suma_lib.attention.reachability": Ex(lambda: (([_att.local_mask(4, 1)],), {})),
        "suma_lib.attention.strided_mask": Ex(lambda: ((6, 2), {})),
        "suma_lib.attention.attention_sparsity": Ex(
            lambda: ((P(3, 5),), {}), fixed=(0,), scale=False
        ),
        "suma_lib.attention.sparsity_stderr": Ex(lambda: ((P(3, 5),), {}), fixed=(0,), scale=False),
        "suma_lib.attention.attention_scores": Ex(  # unnormalised exp(q.k) overflows at 1e30
            lambda: (_QKV()[:2], {}), overflow_ok=True
        ),
        "suma_lib.attention.DenseLogits": Ex(
            lambda: (_att.DenseLogits(8, 2, 4), (T(2, 4, 8),), {})
        ),
        "suma_lib.attention.DotProductLogits": Ex(
            lambda: (_att.DotProductLogits(8, 2), (T(2, 4, 8),), {})
        ),
        "suma_lib.attention.FactorizedDenseLogits": Ex(
            lambda: (_att.FactorizedDenseLogits(8, 2, 4), (T(2, 4, 8),), {})
        ),
        "suma_lib.attention.FactorizedRandomLogits": Ex(
            lambda: (_att.FactorizedRandomLogits(2, 4, 2, generator=_gen()), (T(2, 4, 8),), {}),
            needs_float=False,
            nan_error_or_nan=False,  # x gives only the length
        ),
        "suma_lib.attention.RandomLogits": Ex(
            lambda: (_att.RandomLogits(2, 4, generator=_gen()), (T(2, 4, 8),), {}),
            needs_float=False,
            nan_error_or_nan=False,  # x gives only the length
        ),
        "suma_lib.attention.SynthesizerAttention": Ex(
            lambda: (_att.SynthesizerAttention(8, 2, 4), (T(2, 4, 8),), {})
        ),
        "suma_lib.attention.SequenceTagger": Ex(
            lambda: (_att.SequenceTagger(5, 3, 4, 8, torch.nn.Identity()), (_ids(2, 4),), {}),
            needs_float=False,
            scale=False,
            grad=False,
        ),
        "suma_lib.attention.partner_task": Ex(lambda: ((2, 2, 3), {"generator": _gen()})),
        "suma_lib.attention.permutation_task": Ex(
            lambda: ((2, 4, 5, torch.randperm(4, generator=_gen())), {"generator": _gen()}),
            needs_float=False,
        ),
        "suma_lib.attention.diagonal_free_mask": Ex(lambda: ((4,), {})),
        "suma_lib.attention.TTALayer": Ex(
            lambda: (_att.TTALayer(8, 2), (T(2, 4, 8), T(2, 4, 8, seed=1)), {})
        ),
        "suma_lib.attention.TTAEncoder": Ex(
            lambda: (_att.TTAEncoder(5, 4, 8, 2, 1), (_ids(2, 4),), {}),
            needs_float=False,
            scale=False,
            grad=False,
        ),
        "suma_lib.attention.pseudo_log_likelihood": Ex(lambda: ((T(2, 4, 5), _ids(2, 4)), {})),
        "suma_lib.attention.masked_pseudo_log_likelihood": Ex(
            lambda: ((lambda t: torch.nn.functional.one_hot(t, 6).float(), _ids(2, 4), 5), {}),
            needs_float=False,
            scale=False,
            grad=False,
            meta=False,
        ),
        "suma_lib.attention.sample_markov_chain": Ex(
            lambda: ((*reversed(_chain()), 2, 4), {"generator": _gen()}),
            fixed=(0, 1),
            scale=False,
            grad=False,
        ),
        "suma_lib.attention.markov_conditionals": Ex(
            lambda: ((_ids(2, 4, high=4), *reversed(_chain())), {}), fixed=(1, 2), scale=False
        ),
        # ---------------------------------------------------------------- attention (later names)
        "suma_lib.attention.DiagonalFreeAttention": Ex(
            lambda: (_att.DiagonalFreeAttention(8, 2), (T(2, 3, 8),), {})
        ),
        "suma_lib.attention.favorpp_attention": Ex(
            lambda: (_QKV(), {"n_features": 16, "generator": _gen()})
        ),
        "suma_lib.attention.favorpp_features": Ex(  # the exponent is ~1e60 at 1e30: overflows
            lambda: ((T(3, 4), T(8, 4, seed=1), 0.1), {}), overflow_ok=True
        ),
        "suma_lib.attention.favorpp_parameter": Ex(lambda: ((1.0, 4), {})),
        # ---------------------------------------------------------------- tasks, training
        "suma_lib.tasks.markov_leave_one_out": Ex(
            lambda: ((_ids(2, 4, high=4), *_chain()), {}), fixed=(1, 2), scale=False
        ),
        "suma_lib.tasks.markov_sample": Ex(
            lambda: ((*_chain(), 2, 4), {"generator": _gen()}),
            fixed=(0, 1),
            scale=False,
            grad=False,
        ),
        "suma_lib.training.default_loss": Ex(
            lambda: ((torch.nn.Linear(4, 3), (T(2, 4), T(2, 3, seed=1))), {})
        ),
        # ---------------------------------------------------------------- optim (owner: p7)
        "suma_lib.optim.adafactor_beta2": Ex(lambda: ((10,), {})),
        "suma_lib.optim.adam_effective_beta2": Ex(lambda: ((10, 0.999), {})),
        "suma_lib.optim.i_divergence": Ex(
            lambda: ((T(3, 4).exp(), T(3, 4, seed=1).exp()), {}), scale=False
        ),
        "suma_lib.optim.rank_one_i_divergence": Ex(lambda: ((T(3, 4).exp(),), {}), scale=False),
        "suma_lib.optim.rms": Ex(lambda: ((T(3, 4),), {})),
        # ---------------------------------------------------------------- position (owner: p5)
        "suma_lib.position.LearnedPositionalEmbedding": Ex(
            lambda: (pos.LearnedPositionalEmbedding(8, 4), (T(2, 3, 4),), {})
        ),
        "suma_lib.position.RotaryEmbedding": Ex(
            lambda: (pos.RotaryEmbedding(4), (T(2, 3, 4), T(2, 5, 4, seed=1)), {})
        ),
        "suma_lib.position.XPos": Ex(lambda: (pos.XPos(4), (T(2, 3, 4), T(2, 5, 4, seed=1)), {})),
        "suma_lib.position.LogNScale": Ex(
            lambda: (pos.LogNScale(4), (T(2, 3, 4), T(2, 5, 4, seed=1)), {})
        ),
        "suma_lib.position.ALiBi": Ex(
            lambda: (pos.ALiBi(2), (T(2, 2, 3, 4), T(2, 2, 5, 4, seed=1)), {}),
            nan_error_or_nan=False,
        ),
        "suma_lib.position.T5RelativeBias": Ex(
            lambda: (pos.T5RelativeBias(2), (T(2, 2, 3, 4), T(2, 2, 5, 4, seed=1)), {}),
            nan_error_or_nan=False,
        ),
        "suma_lib.position.KERPLE": Ex(
            lambda: (pos.KERPLE(2), (T(2, 2, 3, 4), T(2, 2, 5, 4, seed=1)), {}),
            nan_error_or_nan=False,
        ),
        "suma_lib.position.Sandwich": Ex(
            lambda: (pos.Sandwich(2, dim=8), (T(2, 2, 3, 4), T(2, 2, 5, 4, seed=1)), {}),
            nan_error_or_nan=False,
        ),
        "suma_lib.position.ShawRelativePosition": Ex(
            lambda: (
                pos.ShawRelativePosition(4, 2, generator=_gen()),
                (T(2, 2, 3, 4), T(2, 2, 5, 4, seed=1)),
                {},
            ),
            nan_error_or_nan=False,
        ),
        "suma_lib.position.PositionalMultiHeadAttention": Ex(
            lambda: (
                pos.PositionalMultiHeadAttention(
                    8, 2, position=[pos.RotaryEmbedding(4), pos.ALiBi(2)]
                ),
                (T(2, 3, 8),),
                {},
            )
        ),
        "suma_lib.position.RoPEBlock": Ex(
            lambda: (pos.RoPEBlock(8, 2, 16, bias=False, norm="rms", gain=False), (T(2, 3, 8),), {})
        ),
        "suma_lib.position.alibi_slopes": Ex(lambda: ((4,), {})),
        "suma_lib.position.apply_rope": Ex(lambda: ((T(2, 3, 4),), {})),
        "suma_lib.position.apply_xpos": Ex(lambda: ((T(2, 3, 4), T(2, 5, 4, seed=1)), {})),
        "suma_lib.position.equal_mean_positions": Ex(lambda: ((5,), {"generator": _gen()})),
        "suma_lib.position.kerple_bias": Ex(lambda: ((T(3, 4), 1.0, 1.5, "power"), {})),
        "suma_lib.position.log_n_scale": Ex(lambda: ((T(3).abs() + 1, 8), {}), needs_float=False),
        "suma_lib.position.random_positions": Ex(lambda: ((4, 10), {"generator": _gen()})),
        "suma_lib.position.relative_positions": Ex(lambda: ((3, 5), {})),
        "suma_lib.position.rope_cos_sin": Ex(lambda: ((T(5), 4), {}), needs_float=False),
        "suma_lib.position.sandwich_bias": Ex(lambda: ((T(3, 4), 8), {}), needs_float=False),
        "suma_lib.position.t5_relative_position_bucket": Ex(
            lambda: ((torch.arange(-5, 6),), {}), needs_float=False
        ),
    }
)


# Optimal transport (owner: p8b). The exact EMD is a linear programme solved on values (SciPy):
# no meta device, no gradient; the masses are constrained (fixed).
_OT = lambda: (P(4, seed=3), P(5, seed=4), T(4, 5).abs())  # noqa: E731
EXAMPLES.update(
    {
        "suma_lib.transport.emd": Ex(lambda: (_OT(), {}), fixed=(0, 1), meta=False),
        "suma_lib.transport.wmd": Ex(lambda: ((T(4, 3), T(5, 3, seed=1)), {}), meta=False),
        "suma_lib.transport.word_centroid_distance": Ex(lambda: ((T(4, 3), T(5, 3, seed=1)), {})),
        "suma_lib.transport.wrd": Ex(lambda: ((T(4, 3), T(5, 3, seed=1)), {}), meta=False),
        "suma_lib.transport.wrd_lower_bound": Ex(lambda: ((T(4, 3), T(5, 3, seed=1)), {})),
        "suma_lib.transport.sinkhorn": Ex(
            lambda: ((P(2, 4, seed=3), P(2, 5, seed=4), T(2, 4, 5).abs(), 0.1), {}), fixed=(0, 1)
        ),
    }
)

# Sequences (suma_lib.crf): emissions (batch, n, K) are swept; tags are integer labels (fixed).
_TAGS = lambda: torch.tensor([[0, 2, 1, 1], [1, 0, 0, 2]])  # noqa: E731
_CRF = lambda: crf.CRF(3, generator=_gen())  # noqa: E731
EXAMPLES.update(
    {
        "suma_lib.crf.crf_score": Ex(lambda: ((T(2, 4, 3), _TAGS(), T(3, 3, seed=1)), {}), fixed=(1,)),
        "suma_lib.crf.crf_log_partition": Ex(lambda: ((T(2, 4, 3), T(3, 3, seed=1)), {})),
        "suma_lib.crf.crf_log_likelihood": Ex(lambda: ((T(2, 4, 3), _TAGS(), T(3, 3, seed=1)), {}), fixed=(1,)),
        "suma_lib.crf.crf_viterbi": Ex(lambda: ((T(2, 4, 3), T(3, 3, seed=1)), {}), grad=False),
        "suma_lib.crf.memm_log_likelihood": Ex(lambda: ((T(2, 4, 3), _TAGS(), T(3, 3, seed=1)), {}), fixed=(1,)),
        "suma_lib.crf.bimemm_log_likelihood": Ex(lambda: ((T(2, 4, 3), _TAGS(), T(3, 3, seed=1)), {}),
                                                 fixed=(1,)),
        "suma_lib.crf.memm_viterbi": Ex(lambda: ((T(2, 4, 3), T(3, 3, seed=1)), {}), grad=False),
        # a plain matrix product of two factors: at |x| = 1e30 the true entries (sums of ±1e60) are not
        # representable in float32, as for torch.matmul itself
        "suma_lib.crf.low_rank_transitions": Ex(lambda: ((T(3, 2), T(3, 2, seed=1)), {}), scale=False),
        "suma_lib.crf.CRF": Ex(lambda: (_CRF(), (T(2, 4, 3), _TAGS()), {}), fixed=(1,)),
        "suma_lib.lora.lora_factor_grads": Ex(lambda: ((T(4, 5), T(4, 2, seed=1), T(2, 5, seed=2)), {}),
                                              scale=False),  # matrix products, as low_rank_transitions
        "suma_lib.lora.block_ones": Ex(lambda: ((4, 2, 2), {})),
        "suma_lib.lora.LoRALinear": Ex(lambda: (lora.LoRALinear(T(4, 5), 2, generator=_gen()), (T(3, 4),), {})),
        "suma_lib.lora.AdditiveLoRALinear": Ex(lambda: (lora.AdditiveLoRALinear(T(4, 6), 2), (T(3, 4),), {})),
    }
)


# ---------------------------------------------------------------------------- known failures (not
# mine)
# (public name, family) -> reason with the owner. Checked as xfail(strict=False): a fix makes them
# pass.
KNOWN: dict[tuple[str, str], str] = {
}


# ---------------------------------------------------------------------------- layers (owner: p6a)
from suma_lib import layers as _layers  # noqa: E402

EXAMPLES.update(
    {
        "suma_lib.layers.RMSNorm": Ex(lambda: (_layers.RMSNorm(8), (T(2, 3, 8),), {})),
        "suma_lib.layers.make_norm": Ex(lambda: (("rmsnorm", 8), {}), scale=False),
        "suma_lib.layers.Residual": Ex(
            lambda: (_layers.Residual(torch.nn.Linear(8, 8), 8, "post", 2.0), (T(2, 3, 8),), {})
        ),
        "suma_lib.layers.FeedForward": Ex(lambda: (_layers.FeedForward(8, 16), (T(2, 3, 8),), {})),
        "suma_lib.layers.TransformerBlock": Ex(
            lambda: (_layers.TransformerBlock(8, 2, 16), (T(2, 3, 8),), {})
        ),
        "suma_lib.layers.Stack": Ex(
            lambda: (_layers.Stack([_layers.TransformerBlock(8, 2, 16)]), (T(2, 3, 8),), {})
        ),
        "suma_lib.layers.build_stack": Ex(
            lambda: ((2, 8), {"num_heads": 2, "alpha": "deepnorm", "generator": _gen()}),
            scale=False,
        ),
        "suma_lib.layers.deepnorm_constants": Ex(lambda: ((6,), {})),
        "suma_lib.layers.residual_scaling": Ex(lambda: ((6, "adam"), {})),
        "suma_lib.layers.deepnorm_init_": Ex(
            lambda: ((_layers.TransformerBlock(8, 2, 16), 0.5), {"generator": _gen()}), scale=False
        ),
        "suma_lib.layers.relu2_attention": Ex(
            lambda: ((T(3, 4), T(5, 4, seed=1)), {}), overflow_ok=True
        ),
        "suma_lib.layers.SafeLayerNorm": Ex(
            lambda: (_layers.SafeLayerNorm(8), (T(2, 3, 8),), {})
        ),
        # the GAU's output is homogeneous of degree 7 in large inputs: beyond any float at 1e30
        "suma_lib.layers.GAU": Ex(
            lambda: (_layers.GAU(8, 2, 4, generator=_gen()), (T(2, 3, 8),), {}), scale=False
        ),
    }
)


# ---------------------------------------------------------------------------- the engine
CLEAN = (TypeError, ValueError)


def _build(name: str) -> tuple[Callable, list, dict]:
    """``(fn, args, kwargs)`` of the example; a class example calls the built module."""
    with torch.random.fork_rng(devices=[]):  # modules initialise from the global generator
        torch.manual_seed(0)
        out = EXAMPLES[name].call()
    if len(out) == 3:
        module, args, kwargs = out
        return module, list(args), dict(kwargs)
    args, kwargs = out
    return PUBLIC[name], list(args), dict(kwargs)


def _slots(ex: Ex, args: list, kwargs: dict) -> list[tuple[Any, torch.Tensor]]:
    """The top-level tensor arguments that may be mutated: ``(position or keyword, tensor)``."""
    slots: list[tuple[Any, torch.Tensor]] = [
        (i, a) for i, a in enumerate(args) if isinstance(a, torch.Tensor)
    ]
    slots += [(k, v) for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    return [(key, t) for key, t in slots if key not in ex.fixed]


def _float_slots(ex: Ex, args: list, kwargs: dict) -> list[tuple[Any, torch.Tensor]]:
    return [(key, t) for key, t in _slots(ex, args, kwargs) if t.is_floating_point()]


def _put(args: list, kwargs: dict, key: Any, value: Any) -> None:
    if isinstance(key, int):
        args[key] = value
    else:
        kwargs[key] = value


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, torch.nn.Module):
        return list(out.parameters())
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v)]
    return []


def _map_tensors(x: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to a tensor, or to the tensors of a list/tuple argument."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in x):
        return type(x)(fn(v) if isinstance(v, torch.Tensor) else v for v in x)
    return x


def _numbers(out: Any) -> list[float]:
    if isinstance(out, (float, np.floating)):
        return [float(out)]
    if isinstance(out, np.ndarray) and out.dtype.kind == "f":
        return [float(v) for v in out.ravel()]
    if isinstance(out, (tuple, list)):
        return [v for o in out for v in _numbers(o)]
    return []


def _module_like(fn: Any, args: list, kwargs: dict) -> list[torch.nn.Module]:
    mods = [fn] if isinstance(fn, torch.nn.Module) else []
    return mods + [a for a in (*args, *kwargs.values()) if isinstance(a, torch.nn.Module)]


def _call(fn: Callable, args: list, kwargs: dict) -> Any:
    return fn(*args, **kwargs)


def _expect_clean(fn: Callable, args: list, kwargs: dict, *, must_raise: bool) -> Any:
    """Call; an exception must be a TypeError/ValueError; with ``must_raise`` one must be raised."""
    try:
        out = _call(fn, args, kwargs)
    except CLEAN:
        return None
    except Exception as err:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"leaked {type(err).__name__}: {err}") from err
    if must_raise:
        raise AssertionError("accepted bad input silently")
    return out


def _assert_finite(out: Any, *, overflow_ok: bool = False) -> None:
    for t in _tensors(out):
        if t.is_floating_point() and t.device.type != "meta":
            bad = torch.isnan(t) if overflow_ok else ~torch.isfinite(t)
            assert not bool(bad.any()), f"non-finite output {t.detach().flatten()[:6]}"
    for v in _numbers(out):
        assert not math.isnan(v) and (overflow_ok or math.isfinite(v)), f"non-finite output {v}"


# Each family returns None when it does not apply to the example.
def fam_wrong_type(name: str) -> bool | None:
    ex = EXAMPLES[name]
    fn, args, kwargs = _build(name)
    slots = _slots(ex, args, kwargs)
    if not slots:
        return None
    for key, t in slots:
        fn, args, kwargs = _build(name)
        _put(args, kwargs, key, t.tolist())
        _expect_clean(fn, args, kwargs, must_raise=True)
    return True


def _dtype_family(name: str, dtype: torch.dtype) -> bool | None:
    ex = EXAMPLES[name]
    fn, args, kwargs = _build(name)
    slots = _float_slots(ex, args, kwargs)
    if not slots or not ex.needs_float:
        return None
    for key, t in slots:
        fn, args, kwargs = _build(name)
        bad = (t > 0) if dtype == torch.bool else t.round().to(dtype)
        _put(args, kwargs, key, bad)
        _expect_clean(fn, args, kwargs, must_raise=True)
    return True


def fam_nan(name: str) -> bool | None:
    ex = EXAMPLES[name]
    fn, args, kwargs = _build(name)
    slots = _float_slots(ex, args, kwargs)
    if not slots or not ex.nan_error_or_nan:
        return None
    for key, t in slots:
        for bad_value in (math.nan, math.inf):
            fn, args, kwargs = _build(name)
            bad = t.clone()
            bad.view(-1)[0] = bad_value
            _put(args, kwargs, key, bad)
            out = _expect_clean(fn, args, kwargs, must_raise=False)
            if (
                out is not None and bad_value != bad_value
            ):  # NaN accepted: it must show in the output
                floats = [o for o in _tensors(out) if o.is_floating_point()]
                assert not floats or any(bool(torch.isnan(o).any()) for o in floats), (
                    "NaN input gave no NaN"
                )
    return True


def fam_empty(name: str) -> bool | None:
    ex = EXAMPLES[name]
    fn, args, kwargs = _build(name)
    slots = _slots(ex, args, kwargs)
    if not slots:
        return None
    for key, t in slots:
        for dim in range(t.dim()):
            fn, args, kwargs = _build(name)
            _put(args, kwargs, key, t.narrow(dim, 0, 0))
            _expect_clean(fn, args, kwargs, must_raise=False)
    return True


def fam_wrong_shape(name: str) -> bool | None:
    """Last axis one longer, or an extra/missing leading axis: a clean error or a valid result."""
    ex = EXAMPLES[name]
    fn, args, kwargs = _build(name)
    slots = _slots(ex, args, kwargs)
    if not slots:
        return None
    for key, t in slots:
        variants = [t[..., None], t.reshape(-1)]
        if t.dim():
            variants.append(torch.cat([t, t[..., :1]], dim=-1))
        for bad in variants:
            fn, args, kwargs = _build(name)
            _put(args, kwargs, key, bad)
            _expect_clean(fn, args, kwargs, must_raise=False)
    return True


def fam_batch_mismatch(name: str) -> bool | None:
    """Leading dimensions 2 and 3 on two tensors do not broadcast: a clean error or a valid
    result."""
    ex = EXAMPLES[name]
    fn, args, kwargs = _build(name)
    slots = _slots(ex, args, kwargs)
    if len(slots) < 2 and not (slots and _module_like(fn, args, kwargs)):
        return None
    fn, args, kwargs = _build(name)
    if len(slots) >= 2:
        (k1, t1), (k2, t2) = slots[:2]
        _put(args, kwargs, k1, torch.stack([t1, t1]))
        _put(args, kwargs, k2, torch.stack([t2, t2, t2]))
        _expect_clean(fn, args, kwargs, must_raise=False)
    return True


def fam_meta_mix(name: str) -> bool | None:
    """One tensor on the meta device, the rest (tensors or a module's parameters) on the CPU."""
    ex = EXAMPLES[name]
    fn, args, kwargs = _build(name)
    slots = _slots(ex, args, kwargs)
    others = len(_tensors([a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]))
    if not slots or (others < 2 and not _module_like(fn, args, kwargs)):
        return None
    key, t = slots[0]
    _put(args, kwargs, key, t.to("meta"))
    out = _expect_clean(fn, args, kwargs, must_raise=False)
    if out is not None:  # accepted: then nothing may come back computed from uninitialised memory
        assert all(o.device.type == "meta" for o in _tensors(out)), "mixed meta/CPU gave CPU output"
    return True


def fam_bad_device(name: str) -> bool | None:
    fn, args, kwargs = _build(name)
    try:
        params = inspect.signature(PUBLIC[name]).parameters
    except (TypeError, ValueError):
        return None
    if "device" not in params:
        return None
    if isinstance(fn, torch.nn.Module):  # a constructor argument: not reached through the call
        return None
    for bad, err in (("gpu0", ValueError), (1.5, TypeError), ("cuda:99", ValueError)):
        fn, args, kwargs = _build(name)
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
        bound.arguments["device"] = bad
        try:
            fn(*bound.args, **bound.kwargs)
        except err:
            continue
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"device={bad!r}: leaked {type(exc).__name__}: {exc}") from exc
        raise AssertionError(f"device={bad!r} accepted")
    return True


def fam_bad_dtype(name: str) -> bool | None:
    fn, args, kwargs = _build(name)
    try:
        params = inspect.signature(PUBLIC[name]).parameters
    except (TypeError, ValueError):
        return None
    if "dtype" not in params or isinstance(fn, torch.nn.Module):
        return None
    for bad in (torch.int64, "float32"):
        fn, args, kwargs = _build(name)
        kwargs["dtype"] = bad
        try:
            _call(fn, args, kwargs)
        except TypeError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"dtype={bad!r}: leaked {type(exc).__name__}: {exc}") from exc
        raise AssertionError(f"dtype={bad!r} accepted")
    return True


def _extreme(name: str, scale: float) -> bool | None:
    ex = EXAMPLES[name]
    fn, args, kwargs = _build(name)
    slots = _float_slots(ex, args, kwargs)
    if not slots or not ex.scale:
        return None
    for key, t in slots:
        _put(args, kwargs, key, t * scale)
    try:
        out = _call(fn, args, kwargs)
    except CLEAN as err:
        raise AssertionError(f"rejected valid extreme input: {err}") from err
    _assert_finite(out, overflow_ok=ex.overflow_ok and scale > 1)
    return True


def _cast_family(name: str, dtype: torch.dtype) -> bool | None:
    ex = EXAMPLES[name]
    if dtype in (torch.float16, torch.bfloat16) and not ex.half:
        return None
    fn, args, kwargs = _build(name)
    slots = _float_slots(ex, args, kwargs)
    mods = _module_like(fn, args, kwargs)
    if not slots and not mods:
        return None
    for key, t in [*enumerate(args), *kwargs.items()]:
        _put(
            args,
            kwargs,
            key,
            _map_tensors(t, lambda x: x.to(dtype) if x.is_floating_point() else x),
        )
    for m in mods:
        m.to(dtype)
    try:
        out = _call(fn, args, kwargs)
    except CLEAN as err:
        raise AssertionError(f"rejected {dtype} input: {err}") from err
    _assert_finite(out)
    for o in _tensors(out):
        if o.is_floating_point() and slots:
            assert o.dtype == dtype, f"{dtype} input gave {o.dtype} output"
    return True


def fam_meta(name: str) -> bool | None:
    ex = EXAMPLES[name]
    if not ex.meta:
        return None
    fn, args, kwargs = _build(name)
    tensors = _tensors([a for a in (*args, *kwargs.values()) if not isinstance(a, torch.nn.Module)])
    mods = _module_like(fn, args, kwargs)
    if not tensors and not mods:
        return None
    ref = _call(*_build(name))
    for key, t in [*enumerate(args), *kwargs.items()]:
        _put(args, kwargs, key, _map_tensors(t, lambda x: x.to("meta")))
    for m in mods:
        m.to("meta")
    try:
        out = _call(fn, args, kwargs)
    except CLEAN as err:
        raise AssertionError(f"rejected meta input: {err}") from err
    got, want = _tensors(out), _tensors(ref)
    assert [tuple(o.shape) for o in got] == [tuple(o.shape) for o in want], (
        "meta output has the wrong shape"
    )
    assert all(o.device.type == "meta" for o in got), "meta input gave real output"
    return True


def fam_noncontiguous(name: str) -> bool | None:
    ex = EXAMPLES[name]
    fn, args, kwargs = _build(name)
    slots = [(k, t) for k, t in _slots(ex, args, kwargs) if t.dim() >= 2]
    if not slots or not ex.deterministic:
        return None
    ref = _call(*_build(name))
    for key, t in slots:
        _put(args, kwargs, key, t.mT.contiguous().mT)
    out = _call(fn, args, kwargs)
    for a, b in zip(_tensors(out), _tensors(ref), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True), (
                "non-contiguous input changed the result"
            )
    return True


def fam_requires_grad(name: str) -> bool | None:
    ex = EXAMPLES[name]
    if not ex.grad:
        return None
    fn, args, kwargs = _build(name)
    slots = _float_slots(ex, args, kwargs)
    if not slots:
        return None
    leaves = []
    for key, t in slots:
        leaf = t.clone().requires_grad_(True)
        leaves.append(leaf)
        _put(args, kwargs, key, leaf)
    out = _call(fn, args, kwargs)
    outs = [o for o in _tensors(out) if o.requires_grad]
    if not outs:
        return True
    grads = torch.autograd.grad(sum(o.sum() for o in outs), leaves, allow_unused=True)
    for gr in grads:
        assert gr is None or bool(torch.isfinite(gr).all()), "non-finite gradient"
    return True


FAMILIES: dict[str, Callable[[str], bool | None]] = {
    "wrong_type": fam_wrong_type,
    "int_tensor": functools.partial(_dtype_family, dtype=torch.int64),
    "bool_tensor": functools.partial(_dtype_family, dtype=torch.bool),
    "nan": fam_nan,
    "empty": fam_empty,
    "wrong_shape": fam_wrong_shape,
    "batch_mismatch": fam_batch_mismatch,
    "meta_mix": fam_meta_mix,
    "bad_device": fam_bad_device,
    "bad_dtype": fam_bad_dtype,
    "tiny": functools.partial(_extreme, scale=1e-30),
    "huge": functools.partial(_extreme, scale=1e30),
    "float16": functools.partial(_cast_family, dtype=torch.float16),
    "bfloat16": functools.partial(_cast_family, dtype=torch.bfloat16),
    "float64": functools.partial(_cast_family, dtype=torch.float64),
    "meta": fam_meta,
    "noncontiguous": fam_noncontiguous,
    "requires_grad": fam_requires_grad,
}


# suma_lib.rank and suma_lib.recompute (owner: p6b)
EXAMPLES.update(
    {
        "suma_lib.rank.singular_values": Ex(lambda: ((T(4, 3),), {})),
        "suma_lib.rank.rank_threshold": Ex(lambda: (((4, 3), torch.float32), {})),
        "suma_lib.rank.numerical_rank": Ex(lambda: ((T(4, 3),), {}), grad=False),
        "suma_lib.rank.causal_attention": Ex(lambda: ((T(5, 3), T(5, 3, seed=1)), {})),
        "suma_lib.rank.bidirectional_attention": Ex(lambda: ((T(5, 3), T(4, 3, seed=1)), {})),
        "suma_lib.rank.linear_attention_matrix": Ex(lambda: ((T(5, 3), T(4, 3, seed=1)), {})),
        "suma_lib.recompute.segment_length": Ex(lambda: ((9,), {})),
        "suma_lib.recompute.segments": Ex(lambda: ((9,), {})),
    }
)
NOT_SWEPT.update(
    {
        "suma_lib.recompute.RecomputeSequential": "wraps user layers (test_recompute.py)",
        "suma_lib.recompute.saved_activation_bytes": "measures a callable (test_recompute.py)",
    }
)

# ---------------------------------------------------------------------------- this session's modules
# (widening, Perturbed Masking, pointers, the CRF learning rate, Theseus, NSP): their examples sit above
# the tests, so that SWEEP below includes them. Add new blocks here too, never after SWEEP.
# -- enlarge
EXAMPLES.update(
    {
        "suma_lib.layers.widen": Ex(lambda: ((_layers.TransformerBlock(8, 2, 16),), {}), scale=False),
        "suma_lib.layers.widen_index": Ex(lambda: ((6,), {"block": 2}), scale=False),
        "suma_lib.layers.widen_vector": Ex(lambda: ((T(3, 4),), {})),
        "suma_lib.layers.widen_linear": Ex(lambda: ((T(4, 3), T(4, seed=1)), {})),
        "suma_lib.layers.widen_norm": Ex(lambda: ((torch.nn.LayerNorm(4),), {}), scale=False),
        "suma_lib.layers.WidenedRotary": Ex(
            lambda: (
                _layers.WidenedRotary(torch.tensor([1.0, 0.01])),
                (T(2, 3, 4), T(2, 5, 4, seed=1)),
                {},
            )
        ),
    }
)


# -- pmask
# Perturbed Masking (owner: pmask). The encoder is a context-free embedding (enough for the sweep:
# test_perturbed.py checks the values against a naive loop on a real attention encoder).
def _pm_encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Embedding(12, 4)


EXAMPLES.update(
    {
        "suma_lib.perturbed.masked_inputs": Ex(lambda: ((_ids(6), 11), {"spans": [(1, 3), (3, 5)]})),
        "suma_lib.perturbed.impact_matrix": Ex(
            lambda: ((_pm_encoder(), _ids(6), 11), {"spans": [(1, 3), (3, 4), (4, 5)]})
        ),
        "suma_lib.perturbed.adjacent_impacts": Ex(
            lambda: ((_pm_encoder(), _ids(6), 11), {"spans": [(1, 3), (3, 4), (4, 5)]})
        ),
        "suma_lib.perturbed.adjacent_relatedness": Ex(lambda: ((T(5, 5),), {})),
        "suma_lib.perturbed.split_scores": Ex(lambda: ((T(5, 5),), {})),
        "suma_lib.perturbed.segment": Ex(lambda: ((T(4), 0.0), {}), meta=False),
        "suma_lib.perturbed.parse_tree": Ex(lambda: ((T(6, 6),), {}), meta=False),
    }
)
NOT_SWEPT.update(
    {
        "suma_lib.perturbed.wordpiece_spans": "no tensor arguments (token strings)",
        "suma_lib.perturbed.tree_spans": "no tensor arguments (a nested tuple)",
        "suma_lib.perturbed.tree_brackets": "no tensor arguments (a nested tuple and labels)",
        "suma_lib.perturbed.plot_tree": "draws a figure (test_perturbed.py)",
    }
)


# -- lic
from suma_lib import pointers as _ptr  # noqa: E402

EXAMPLES.update(
    {
        "suma_lib.pointers.nearest_end": Ex(
            lambda: ((T(2, 7) > 0, T(2, 7, seed=1) > 0), {}), meta=True
        ),
        "suma_lib.pointers.decode_spans": Ex(
            lambda: ((P(2, 7), P(2, 7, seed=1)), {}), fixed=(0, 1), grad=False
        ),
        "suma_lib.pointers.best_span": Ex(lambda: ((T(2, 7), T(2, 7, seed=1), 3), {}), grad=False),
        "suma_lib.pointers.span_labels": Ex(lambda: (([(0, 1), (3, 3)], 5), {})),
        "suma_lib.pointers.triple_labels": Ex(lambda: (([(0, 1, 0, 3, 4)], 5, 2), {})),
        "suma_lib.pointers.subject_vector": Ex(
            lambda: ((T(2, 5, 3), torch.tensor([[0, 1], [2, 4]])), {})
        ),
        "suma_lib.pointers.ConditionalLayerNorm": Ex(
            lambda: (_ptr.ConditionalLayerNorm(8, 4), (T(2, 3, 8), T(2, 4, seed=1)), {})
        ),
        "suma_lib.pointers.power_bce": Ex(
            lambda: ((T(2, 7), (P(2, 7, seed=1) > 0.5).float(), 2.0), {}), fixed=(1,)
        ),
        "suma_lib.pointers.pointer_loss": Ex(
            lambda: ((T(2, 5, 3, 2), (P(2, 5, 3, 2, seed=1) > 0.5).float()), {"power": 4.0}),
            fixed=(1,),
        ),
    }
)
NOT_SWEPT.update(
    {
        "suma_lib.pointers.span_list": "turns decoded ends into Python lists (test_pointers.py)",
        "suma_lib.pointers.decode_triples": "Python list output built from values (test_pointers.py)",
        "suma_lib.pointers.extract_triples": "calls a model callable; list output (test_pointers.py)",
        "suma_lib.pointers.rematch": "string processing, no tensors (test_pointers.py)",
    }
)


# -- crflr
NOT_SWEPT.update(
    {"suma_lib.crf.crf_param_groups": "no tensor arguments (optimiser groups); tested in test_crf_lr.py"}
)


# -- theseus
EXAMPLES.update(
    {
        "suma_lib.layers.TheseusReplacement": Ex(
            lambda: (
                _layers.TheseusReplacement(
                    [[torch.nn.Linear(8, 8), torch.nn.Tanh()]], [torch.nn.Linear(8, 8)],
                    generator=_gen(),
                ),
                (T(2, 3, 8),),
                {},
            )
        ),
        "suma_lib.layers.theseus_replace_rate": Ex(lambda: ((10, 0.1, 0.01), {})),
    }
)


# -- nsp
from suma_lib import nsp as _nsp  # noqa: E402

_SCORE = lambda a, b: torch.tensor([float(len(x) - len(y)) for x, y in zip(a, b, strict=True)])  # noqa: E731
_NSP_EXAMPLES = {
    "suma_lib.nsp.nsp_log_prob": Ex(lambda: ((T(3, 2),), {})),
    "suma_lib.nsp.label_prompts": Ex(lambda: ((["math", "time"],), {})),
    "suma_lib.nsp.score_pairs": Ex(lambda: ((_SCORE, ["a b", "c"], ["d", "e f g"]), {})),
    "suma_lib.nsp.zero_shot_classify": Ex(lambda: ((_SCORE, ["a b", "c"], ["d", "e f g"]), {})),
    "suma_lib.nsp.nsp_pairs": Ex(
        lambda: (([["One is here.", "Two is next.", "Three ends."]], 2), {"generator": _gen()})
    ),
    "suma_lib.nsp.docstring_sentences": Ex(lambda: ((["math"],), {})),
    # a product u * v of two inputs: at |x| = 1e30 it is not representable in float32
    "suma_lib.nsp.PairNSPHead": Ex(
        lambda: (_nsp.PairNSPHead(4), (T(3, 4), T(3, 4, seed=1)), {}), scale=False
    ),
}
EXAMPLES.update(_NSP_EXAMPLES)
NOT_SWEPT.update(
    {
        "suma_lib.nsp.NSPWeightsUnavailable": "an exception class",
        "suma_lib.nsp.nsp_pair_scorer": "needs a transformers model (test_nsp.py)",
        "suma_lib.nsp.load_nsp_model": "loads pretrained weights (test_nsp.py)",
        "suma_lib.nsp.sentence_embeddings": "needs a transformers encoder (test_nsp.py, chapter)",
    }
)


def test_every_public_callable_has_an_example() -> None:
    missing = sorted(k for k in PUBLIC if k not in EXAMPLES and k not in NOT_SWEPT)
    stale = sorted(k for k in [*EXAMPLES, *NOT_SWEPT] if k not in PUBLIC)
    assert not missing, f"add an example call to EXAMPLES (or a reason to NOT_SWEPT) for {missing}"
    assert not stale, f"EXAMPLES / NOT_SWEPT name callables that are no longer public: {stale}"


def test_every_example_runs() -> None:
    failures = {}
    for name, ex in EXAMPLES.items():
        if ex is None:
            continue
        try:
            _call(*_build(name))
        except Exception as err:  # noqa: BLE001
            failures[name] = f"{type(err).__name__}: {err}"
    assert not failures, failures


SWEEP = [(n, fam) for n, ex in EXAMPLES.items() if ex is not None for fam in FAMILIES]


@pytest.mark.parametrize(
    ("name", "family"), SWEEP, ids=[f"{n.removeprefix('suma_lib.')}-{f}" for n, f in SWEEP]
)
def test_sweep(name: str, family: str) -> None:
    try:
        FAMILIES[family](name)
    except AssertionError:
        if (name, family) in KNOWN:
            pytest.xfail(KNOWN[name, family])
        raise
