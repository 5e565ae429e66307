"""Tests of suma_lib.orthogonality: angles, the sign-correlation estimate, the regulariser and its
module.

Peers: NumPy (angles by arccos, the regulariser transcribed from its definition), the closed form
1 − 2θ/π; plus batching, gradients, dtypes, the meta device and errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hst

from suma_lib.orthogonality import (
    SelfOrthogonality,
    pairwise_angles,
    self_orthogonality_loss,
    sign_correlation,
)

META = torch.device("meta")
F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def np_regulariser(x: np.ndarray, w: np.ndarray, lam1: float, lam2: float, s: float) -> float:
    """Peer: λ₁(Σ_{i≠j} ϑ)² + λ₂ Σ_{i≠j} ϑ² with ϑ = normalised tanh(s XWᵀ) columns, in NumPy."""
    t = np.tanh(s * x @ w.T)
    t = t / np.linalg.norm(t, axis=0)
    off = (t.T @ t)[~np.eye(w.shape[0], dtype=bool)]
    return lam1 * off.sum() ** 2 + lam2 * (off**2).sum()


# ----------------------------------------------------------------------------------------- angles
@settings(max_examples=40, deadline=None)
@given(k=hst.integers(1, 6), d=hst.integers(1, 8), seed=hst.integers(0, 10**6))
def test_pairwise_angles_match_arccos(k: int, d: int, seed: int) -> None:
    w = torch.randn(k, d, generator=gen(seed), dtype=F64)
    u = w.numpy() / np.linalg.norm(w.numpy(), axis=1, keepdims=True)
    peer = np.arccos(np.clip(u @ u.T, -1, 1))
    np.testing.assert_allclose(
        pairwise_angles(w), peer, atol=1e-6
    )  # arccos loses digits near 0 and π
    assert torch.all(pairwise_angles(w).diagonal() == 0)


def test_pairwise_angles_accurate_for_nearly_parallel_and_batched() -> None:
    eps = 1e-9
    w = torch.tensor([[1.0, 0.0], [math.cos(eps), math.sin(eps)], [-1.0, 0.0]], dtype=F64)
    a = pairwise_angles(w)
    assert a[0, 1].item() == pytest.approx(eps, rel=1e-7)  # arccos(cos ε) would give 0 or ~1e-8
    assert a[0, 2].item() == pytest.approx(math.pi, rel=1e-15)
    batch = torch.randn(3, 4, 5, 6, generator=gen(1))
    assert pairwise_angles(batch).shape == (3, 4, 5, 5)
    torch.testing.assert_close(pairwise_angles(batch)[1, 2], pairwise_angles(batch[1, 2]))


# ----------------------------------------------------------------------------------------- ϑ
# estimate
def test_sign_correlation_exact_sign_is_average_and_matches_angle() -> None:
    x = torch.randn(200_000, 10, generator=gen(2), dtype=F64)
    w = torch.randn(4, 10, generator=gen(3), dtype=F64)
    c = sign_correlation(x, w, sharpness=math.inf)
    sgn = torch.where(x @ w.T > 0, 1.0, -1.0).to(F64)
    torch.testing.assert_close(c, sgn.T @ sgn / x.shape[0], rtol=0, atol=1e-10)
    expected = 1 - 2 * pairwise_angles(w) / math.pi
    # 5 standard errors of a mean of ±1 products (σ ≤ 1/√N)
    assert (c - expected).abs().max().item() < 5 / math.sqrt(x.shape[0])


def test_sign_correlation_scale_limits() -> None:
    x = torch.randn(100_000, 6, generator=gen(4), dtype=F64)
    w = torch.randn(3, 6, generator=gen(5), dtype=F64)
    w = w / w.norm(dim=-1, keepdim=True)
    cos = torch.nn.functional.cosine_similarity(
        x @ w.T, x @ w.T, dim=0
    )  # = 1: sanity of the helper below
    assert torch.allclose(cos, torch.ones(3, dtype=F64))
    y = x @ w.T
    corr = (y / y.norm(dim=0)).T @ (y / y.norm(dim=0))  # the sample cosine of the projections
    torch.testing.assert_close(sign_correlation(x, w, sharpness=1e-4), corr, atol=1e-7, rtol=0)
    big = sign_correlation(x, w, sharpness=1e6)
    torch.testing.assert_close(big, sign_correlation(x, w, sharpness=math.inf), atol=1e-3, rtol=0)


def test_sign_correlation_batched_and_zero_kernel() -> None:
    x = torch.randn(2, 3, 50, 7, generator=gen(6))
    w = torch.randn(3, 4, 7, generator=gen(7))  # broadcasts against x's leading (2, 3)
    c = sign_correlation(x, w)
    assert c.shape == (2, 3, 4, 4)
    torch.testing.assert_close(c[1, 2], sign_correlation(x[1, 2], w[2]))
    torch.testing.assert_close(c.diagonal(dim1=-2, dim2=-1), torch.ones(2, 3, 4))
    w0 = w[0].clone()
    w0[1] = 0.0
    c0 = sign_correlation(x[0, 0], w0)
    assert torch.isfinite(c0).all() and c0[1].abs().max().item() == 0.0


# -----------------------------------------------------------------------------------------
# regulariser
@settings(max_examples=30, deadline=None)
@given(
    k=hst.integers(1, 6),
    b=hst.integers(1, 40),
    seed=hst.integers(0, 10**6),
    lam1=hst.floats(0, 200),
    lam2=hst.floats(0, 5),
    s=hst.floats(0.1, 50),
)
def test_loss_matches_numpy_peer(
    k: int, b: int, seed: int, lam1: float, lam2: float, s: float
) -> None:
    x = torch.randn(b, 5, generator=gen(seed), dtype=F64)
    w = torch.randn(k, 5, generator=gen(seed + 1), dtype=F64)
    ours = self_orthogonality_loss(x, w, lambda1=lam1, lambda2=lam2, sharpness=s).item()
    peer = np_regulariser(x.numpy(), w.numpy(), lam1, lam2, s)
    if np.isfinite(
        peer
    ):  # the peer divides by zero when a tanh column underflows to 0 (ours gives 0)
        assert ours == pytest.approx(peer, rel=1e-10, abs=1e-10)


def test_loss_is_zero_only_for_orthogonal_signs_and_module() -> None:
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=F64)
    w = torch.eye(2, dtype=F64)  # signs of the two coordinates are balanced: ϑ₁₂ = 0 exactly
    assert self_orthogonality_loss(x, w, sharpness=math.inf).item() == 0.0
    reg = SelfOrthogonality()
    assert "lambda1=100" in repr(reg)
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)  # ϑ₁₂ = 1: 100·2² + 1·2 = 402
    assert reg(x, same).item() == pytest.approx(402.0, rel=1e-12)
    batched = reg(x.expand(3, 4, 2), torch.stack([w, same, w]))
    torch.testing.assert_close(
        batched, torch.tensor([reg(x, w).item(), 402.0, reg(x, w).item()], dtype=F64)
    )


def test_gradients_flow_and_training_reduces_the_loss() -> None:
    g = gen(8)
    w = torch.randn(4, 6, generator=g, dtype=F64, requires_grad=True)
    x = torch.randn(256, 6, generator=g, dtype=F64)
    assert torch.autograd.gradcheck(
        lambda w: self_orthogonality_loss(x[:12], w, sharpness=2.0), (w,)
    )
    assert not self_orthogonality_loss(x, w, sharpness=math.inf).requires_grad
    opt = torch.optim.Adam([w], lr=0.05)
    start = self_orthogonality_loss(x, w, lambda1=0.0).item()
    for _ in range(40):
        opt.zero_grad()
        self_orthogonality_loss(x, w, lambda1=0.0).backward()
        opt.step()
    assert self_orthogonality_loss(x, w, lambda1=0.0).item() < 0.2 * start


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes_and_huge_inputs(dtype: torch.dtype) -> None:
    x = torch.randn(64, 5, generator=gen(9)).to(dtype)
    w = torch.randn(3, 5, generator=gen(10)).to(dtype)
    out = self_orthogonality_loss(x, w)
    assert out.dtype == dtype and torch.isfinite(out)
    huge = self_orthogonality_loss(x.float() * 1e30, w.float())
    assert torch.isfinite(huge)
    torch.testing.assert_close(
        huge, self_orthogonality_loss(x.float(), w.float(), sharpness=math.inf)
    )


def test_meta_device() -> None:
    x = torch.empty(2, 32, 5, device=META)
    w = torch.empty(4, 5, device=META, requires_grad=True)
    assert sign_correlation(x, w).shape == (2, 4, 4)
    out = SelfOrthogonality()(x, w)
    assert out.shape == (2,) and out.device.type == "meta"
    assert pairwise_angles(w).shape == (4, 4)


def test_errors_name_the_argument() -> None:
    x = torch.randn(8, 3)
    w = torch.randn(2, 3)
    with pytest.raises(ValueError, match="x and weight must share the input dimension"):
        sign_correlation(x, torch.randn(2, 4))
    with pytest.raises(TypeError, match="x and weight must share dtype"):
        sign_correlation(x.double(), w)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        sign_correlation(x.numpy(), w)
    with pytest.raises(ValueError, match="weight must have at least 2"):
        sign_correlation(x, torch.randn(3))
    with pytest.raises(ValueError, match="x must be finite"):
        sign_correlation(torch.full((4, 3), math.nan), w)
    with pytest.raises(ValueError, match="sharpness must be > 0"):
        sign_correlation(x, w, sharpness=0.0)
    with pytest.raises(TypeError, match="sharpness"):
        SelfOrthogonality(sharpness="10")
    with pytest.raises(ValueError, match="lambda1 must be >= 0"):
        self_orthogonality_loss(x, w, lambda1=-1.0)
    with pytest.raises(ValueError, match="lambda2"):
        SelfOrthogonality(lambda2=math.inf)
    with pytest.raises(ValueError, match="weight has a zero row"):
        pairwise_angles(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x must hold at least one sample"):
        sign_correlation(torch.randn(0, 3), w)


def test_fit_teacher_student_runs_and_validates() -> None:
    from suma_lib.orthogonality import fit_teacher_student

    init, after, mse = fit_teacher_student((0.0, 1.0), d=6, k=4, r=2, steps=3, batch=16, seed=1)
    assert init.shape == after.shape == (4, 4) and mse > 0
    again = fit_teacher_student((0.0, 1.0), d=6, k=4, r=2, steps=3, batch=16, seed=1)
    assert torch.equal(after, again[1])  # seeded: reproducible
    with pytest.raises(TypeError, match="lambdas"):
        fit_teacher_student((1.0,), d=6, k=4, r=2, steps=1, batch=4)
    with pytest.raises(ValueError, match="steps"):
        fit_teacher_student(None, d=6, k=4, r=2, steps=-1, batch=4)


def test_fit_teacher_student_leaves_the_global_rng_alone() -> None:
    """Issue 11: it used to reseed torch's global generator."""
    from suma_lib.orthogonality import fit_teacher_student

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = fit_teacher_student(None, d=5, k=3, r=2, steps=4, batch=8, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    second = fit_teacher_student(None, d=5, k=3, r=2, steps=4, batch=8, seed=7)
    assert (
        torch.equal(first[0], second[0])
        and torch.equal(first[1], second[1])
        and first[2] == second[2]
    )
