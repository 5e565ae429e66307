"""Tests of suma_lib.geometry: closed forms, peers (SciPy, torch.nn.init, scikit-learn), meta,
errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy.spatial.distance import pdist

from suma_lib import geometry as g

META = torch.device("meta")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scipy_angle_pdf(theta: np.ndarray, n: int) -> np.ndarray:
    """Peer: (1 + cos θ)/2 ~ Beta((n-1)/2, (n-1)/2), so p(θ) = beta.pdf((1 + cos θ)/2) sin θ / 2."""
    a = (n - 1) / 2
    return st.beta.pdf((1 + np.cos(theta)) / 2, a, a) * np.sin(theta) / 2


def scipy_angle_cdf(theta: np.ndarray, n: int) -> np.ndarray:
    a = (n - 1) / 2
    return st.beta.sf((1 + np.cos(theta)) / 2, a, a)


# ----------------------------------------------------------------------------------------- angles
@settings(max_examples=60, deadline=None)
@given(n=hst.integers(3, 4000), theta=hst.floats(0.01, math.pi - 0.01))
def test_angle_pdf_matches_scipy_beta(n: int, theta: float) -> None:
    ours = g.angle_pdf(torch.tensor([theta], dtype=torch.float64), n).item()
    peer = float(scipy_angle_pdf(np.array([theta]), n)[0])
    assert ours == pytest.approx(peer, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("n", [2, 3, 10, 1000, 10**6])
def test_angle_pdf_normalised_with_mean_pi_over_2(n: int) -> None:
    half = min(
        math.pi / 2, 30 / math.sqrt(n)
    )  # the density is negligible beyond 30 standard deviations
    t = torch.linspace(math.pi / 2 - half, math.pi / 2 + half, 20_001, dtype=torch.float64)
    p = g.angle_pdf(t, n)
    assert torch.trapezoid(p, t).item() == pytest.approx(1.0, abs=1e-8)
    assert torch.trapezoid(t * p, t).item() == pytest.approx(math.pi / 2, abs=1e-8)


def test_log_gamma_ratio_series_matches_mpmath() -> None:
    import mpmath

    mpmath.mp.dps = 40
    for x in [1e4, 3.7e5, 1e8, 1e12]:
        exact = float(mpmath.loggamma(mpmath.mpf(x) + 0.5) - mpmath.loggamma(mpmath.mpf(x)))
        assert g._log_gamma_half_ratio(x) == pytest.approx(exact, rel=1e-14)


def test_angle_pdf_support_dtype_and_extremes() -> None:
    t = torch.tensor([-1.0, 0.0, math.pi, 4.0])
    out = g.angle_pdf(t, 50)
    assert out.dtype == torch.float32 and torch.equal(out, torch.zeros(4))
    assert torch.allclose(g.angle_pdf(torch.tensor([0.3, 2.0]), 2), torch.full((2,), 1 / math.pi))
    peak = g.angle_pdf(torch.tensor([math.pi / 2], dtype=torch.float64), 10**8).item()
    assert peak == pytest.approx(
        math.sqrt(10**8 / (2 * math.pi)), rel=1e-6
    )  # Gaussian limit, var 1/n
    assert g.angle_pdf(torch.zeros(2, 3, device=META), 5).shape == (2, 3)


def test_angle_pdf_errors() -> None:
    with pytest.raises(TypeError, match="theta"):
        g.angle_pdf([0.5], 3)
    with pytest.raises(TypeError, match="theta"):
        g.angle_pdf(torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="theta"):
        g.angle_pdf(torch.tensor([float("nan")]), 3)
    with pytest.raises(ValueError, match="n"):
        g.angle_pdf(torch.tensor([0.5]), 1)
    with pytest.raises(TypeError, match="n"):
        g.angle_pdf(torch.tensor([0.5]), 3.0)


@pytest.mark.parametrize("n", [2, 3, 40])
def test_sample_angles_follow_the_density(n: int) -> None:
    x = g.sample_angles(n, 20_000, generator=gen(n), dtype=torch.float64).numpy()
    ks = st.kstest(x, lambda t: scipy_angle_cdf(t, n))
    # DKW: P(D > t) <= 2 exp(-2 N t^2); t below has a false-alarm probability of 1e-6.
    assert ks.statistic < math.sqrt(math.log(2 / 1e-6) / (2 * x.size))
    assert x.min() >= 0 and x.max() <= math.pi


def test_sample_angles_shape_reproducibility_devices() -> None:
    a = g.sample_angles(7, (3, 4), generator=gen(1))
    b = g.sample_angles(7, (3, 4), generator=gen(1))
    assert a.shape == (3, 4) and a.dtype == torch.get_default_dtype() and torch.equal(a, b)
    assert g.sample_angles(7, 5, dtype=torch.float64).dtype == torch.float64
    assert g.sample_angles(7, (2, 0)).shape == (2, 0)
    assert g.sample_angles(7, 9, device="meta").device.type == "meta"
    big = g.sample_angles(
        3000, 1500, generator=gen(2)
    )  # 2^22 // 3000 = 1398 rows per chunk: two chunks
    assert big.shape == (1500,) and torch.isfinite(big).all()


def test_sample_angles_errors() -> None:
    with pytest.raises(ValueError, match="n"):
        g.sample_angles(1, 3)
    with pytest.raises(ValueError, match="size"):
        g.sample_angles(3, (2, -1))
    with pytest.raises(TypeError, match="size"):
        g.sample_angles(3, 2.5)
    with pytest.raises(TypeError, match="generator"):
        g.sample_angles(3, 2, generator=0)
    with pytest.raises(TypeError, match="dtype"):
        g.sample_angles(3, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="device"):
        g.sample_angles(3, 2, device="gpu0")
    with pytest.raises(TypeError, match="device"):
        g.gaussian_matrix(2, 2, device=0.5)
    with pytest.raises(ValueError, match="device"):
        g.gaussian_matrix(2, 2, device=-1)
    with pytest.raises(TypeError, match="dtype"):
        g.gaussian_matrix(2, 2, dtype=torch.int32)


def test_angle_between_accuracy_and_extremes() -> None:
    x = torch.randn(100, 30, dtype=torch.float64, generator=gen(3))
    y = torch.randn(100, 30, dtype=torch.float64, generator=gen(4))
    cos = (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))
    torch.testing.assert_close(g.angle_between(x, y), torch.arccos(cos))
    tiny = g.angle_between(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1e-6]))
    assert tiny.item() == pytest.approx(1e-6, rel=1e-5)  # arccos in float32 would give 0
    huge = g.angle_between(torch.tensor([1e30, 1e30]), torch.tensor([-1e30, 1e30]))
    assert huge.item() == pytest.approx(math.pi / 2, rel=1e-6)
    assert g.angle_between(torch.zeros(3), torch.ones(3)).item() == pytest.approx(math.pi / 2)
    assert g.angle_between(torch.ones(3), -torch.ones(3)).item() == pytest.approx(math.pi)
    assert g.angle_between(torch.randn(4, 1, 5), torch.randn(3, 5)).shape == (4, 3)
    assert g.angle_between(
        torch.randn(2, 5, device=META), torch.randn(2, 5, device=META)
    ).shape == (2,)
    with pytest.raises(ValueError, match="last dimension"):
        g.angle_between(torch.ones(3), torch.ones(4))
    with pytest.raises(TypeError, match="dtype and device"):
        g.angle_between(torch.ones(3), torch.ones(3, dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(seed=hst.integers(0, 10_000), d=hst.integers(2, 40), scale=hst.floats(1e-20, 1e20))
def test_angle_between_properties(seed: int, d: int, scale: float) -> None:
    x = torch.randn(d, dtype=torch.float64, generator=gen(seed))
    y = torch.randn(d, dtype=torch.float64, generator=gen(seed + 1))
    t = g.angle_between(x, y).item()
    assert 0.0 <= t <= math.pi
    assert g.angle_between(y, x).item() == pytest.approx(t, abs=1e-12)  # symmetric
    assert g.angle_between(scale * x, y).item() == pytest.approx(t, abs=1e-12)  # scale invariant
    assert g.angle_between(-x, y).item() == pytest.approx(math.pi - t, abs=1e-12)  # supplementary


# -----------------------------------------------------------------------------------------
# initialisation
@pytest.mark.parametrize(
    ("scheme", "peer_normal", "peer_uniform"),
    [
        (
            "lecun",
            lambda w, gn: torch.nn.init.kaiming_normal_(w, nonlinearity="linear", generator=gn),
            lambda w, gn: torch.nn.init.kaiming_uniform_(w, nonlinearity="linear", generator=gn),
        ),
        (
            "he",
            lambda w, gn: torch.nn.init.kaiming_normal_(w, nonlinearity="relu", generator=gn),
            lambda w, gn: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=gn),
        ),
        (
            "xavier",
            lambda w, gn: torch.nn.init.xavier_normal_(w, generator=gn),
            lambda w, gn: torch.nn.init.xavier_uniform_(w, generator=gn),
        ),
    ],
)
@pytest.mark.parametrize("shape", [(64, 32), (16, 8, 3, 3)])
def test_init_matches_torch_nn_init(scheme, peer_normal, peer_uniform, shape) -> None:
    ours = g.normal_init_(torch.empty(shape), scheme, generator=gen(5))
    peer = peer_normal(torch.empty(shape), gen(5))
    torch.testing.assert_close(ours, peer, rtol=1e-6, atol=0)
    ours = g.uniform_init_(torch.empty(shape), scheme, generator=gen(6))
    peer = peer_uniform(torch.empty(shape), gen(6))
    torch.testing.assert_close(ours, peer, rtol=1e-6, atol=1e-7)


def test_init_std_formulas_and_statistics() -> None:
    assert g.fan_in_and_fan_out((10, 20)) == (20, 10)
    assert g.fan_in_and_fan_out(torch.empty(4, 3, 5, 5)) == (75, 100)
    assert g.init_std((10, 20), "lecun") == pytest.approx(math.sqrt(1 / 20))
    assert g.init_std((10, 20), "he", gain=0.5) == pytest.approx(0.5 * math.sqrt(2 / 20))
    assert g.init_std((10, 20), "xavier") == pytest.approx(math.sqrt(2 / 30))
    w = g.uniform_init_(torch.empty(500, 400, dtype=torch.float64), "lecun", generator=gen(7))
    assert w.abs().max().item() <= math.sqrt(3 / 400)
    # variance of U[-a, a] is a^2/3 = 1/fan_in; the sample variance of 2e5 draws has relative sd ~
    # 0.3%
    assert w.var().item() == pytest.approx(1 / 400, rel=0.015)
    m = torch.empty(3, 4, device=META)
    assert g.normal_init_(m, "he") is m and g.uniform_init_(m).device.type == "meta"


def test_init_errors() -> None:
    with pytest.raises(ValueError, match="w"):
        g.normal_init_(torch.empty(5), "lecun")
    with pytest.raises(TypeError, match="w"):
        g.normal_init_(torch.empty(5, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="scheme"):
        g.uniform_init_(torch.empty(5, 5), "glorot")
    with pytest.raises(ValueError, match="gain"):
        g.normal_init_(torch.empty(5, 5), gain=0.0)
    with pytest.raises(ValueError, match="fan"):
        g.init_std((0, 5))
    with pytest.raises(ValueError, match="shape"):
        g.fan_in_and_fan_out((5,))
    with pytest.raises(TypeError, match="generator"):
        g.normal_init_(torch.empty(5, 5), generator="seed")


def test_orthogonality_error_closed_forms() -> None:
    q = torch.linalg.qr(torch.randn(50, 20, dtype=torch.float64, generator=gen(8))).Q
    for norm in ("fro", "rms", "spectral", "max"):
        assert g.orthogonality_error(q, norm).item() < 1e-12
        assert g.orthogonality_error(q.mT, norm).item() < 1e-12  # wide: rows orthonormal
    w = 2 * torch.eye(4, dtype=torch.float64)  # G - I = 3 I
    assert g.orthogonality_error(w, "fro").item() == pytest.approx(6.0)
    assert g.orthogonality_error(w, "rms").item() == pytest.approx(1.5)
    assert g.orthogonality_error(w, "spectral").item() == pytest.approx(3.0)
    assert g.orthogonality_error(w, "max").item() == pytest.approx(3.0)
    batch = torch.randn(3, 2, 7, 5, generator=gen(9))
    assert g.orthogonality_error(batch).shape == (3, 2)
    assert g.orthogonality_error(torch.full((3, 3), 1e30)).item() == math.inf
    assert g.orthogonality_error(torch.full((3, 3), 1e30), "spectral").item() == math.inf
    assert g.orthogonality_error(torch.randn(2, 6, 4, device=META), "spectral").shape == (2,)


@settings(max_examples=30, deadline=None)
@given(seed=hst.integers(0, 10_000), m=hst.integers(1, 12), n=hst.integers(1, 12))
def test_orthogonality_error_is_transpose_and_rotation_invariant(seed: int, m: int, n: int) -> None:
    w = torch.randn(m, n, dtype=torch.float64, generator=gen(seed))
    q = torch.linalg.qr(torch.randn(m, m, dtype=torch.float64, generator=gen(seed + 1))).Q
    for norm in ("fro", "rms", "spectral"):
        e = g.orthogonality_error(w, norm).item()
        assert g.orthogonality_error(w.mT, norm).item() == pytest.approx(e, rel=1e-9, abs=1e-12)
        assert g.orthogonality_error(q @ w, norm).item() == pytest.approx(e, rel=1e-9, abs=1e-12)
    assert (
        g.orthogonality_error(w, "max").item()
        <= g.orthogonality_error(w, "spectral").item() + 1e-12
    )


def test_orthogonality_error_gaussian_expectation() -> None:
    # E ||W^T W - I||_F^2 = n(n+1)/m for W (m x n) with N(0, 1/m) entries (derived in the chapter)
    m, n, reps = 64, 16, 400
    w = torch.randn(reps, m, n, dtype=torch.float64, generator=gen(10)) / math.sqrt(m)
    sq = g.orthogonality_error(w).square()
    assert abs(sq.mean().item() - n * (n + 1) / m) < 4 * sq.std().item() / math.sqrt(reps)


def test_orthogonality_error_errors() -> None:
    with pytest.raises(ValueError, match="norm"):
        g.orthogonality_error(torch.eye(3), "nuclear")
    with pytest.raises(ValueError, match="w"):
        g.orthogonality_error(torch.ones(3))
    with pytest.raises(ValueError, match="w"):
        g.orthogonality_error(torch.ones(0, 3))


def test_activation_norms() -> None:
    q = [
        torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64, generator=gen(i))).Q
        for i in range(5)
    ]
    x = torch.randn(10, 32, dtype=torch.float64, generator=gen(11))
    r = g.activation_norms(x, q, "linear")
    assert r.shape == (6, 10)
    torch.testing.assert_close(r, r[:1].expand(6, 10))  # orthogonal layers preserve norms exactly
    huge = g.activation_norms(1e30 * x.float(), [w.float() for w in q], "linear")
    assert torch.isfinite(huge).all() and huge[-1, 0].item() == pytest.approx(
        huge[0, 0].item(), rel=1e-4
    )
    # ReLU with He init keeps E rms^2; with LeCun it halves it (wide layer, many inputs)
    width = 1024  # batch-mean of rms^2 has relative sd ~ sqrt(5 / (width * batch)) ~ 0.6%
    x = torch.randn(128, width, dtype=torch.float64, generator=gen(12))
    he = g.normal_init_(torch.empty(width, width, dtype=torch.float64), "he", generator=gen(13))
    lecun = he / math.sqrt(2)
    ratio_he = (g.activation_norms(x, [he])[1].square().mean() / x.square().mean()).item()
    ratio_lecun = (g.activation_norms(x, [lecun])[1].square().mean() / x.square().mean()).item()
    assert ratio_he == pytest.approx(1.0, rel=0.03) and ratio_lecun == pytest.approx(0.5, rel=0.03)
    assert g.activation_norms(x[:2], [he, he], activation=torch.sigmoid).shape == (3, 2)
    assert g.activation_norms(
        torch.randn(3, 4, device=META), [torch.randn(5, 4, device=META)]
    ).shape == (2, 3)


def test_activation_norms_errors() -> None:
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        g.activation_norms(x, [torch.randn(5, 4), torch.randn(5, 4)])
    with pytest.raises(TypeError, match="weights"):
        g.activation_norms(x, torch.randn(4, 4))
    with pytest.raises(ValueError, match="activation"):
        g.activation_norms(x, [torch.randn(4, 4)], "gelu")
    with pytest.raises(TypeError, match="activation"):
        g.activation_norms(x, [torch.randn(4, 4)], 3)
    with pytest.raises(TypeError, match="dtype and device"):
        g.activation_norms(x, [torch.randn(4, 4, dtype=torch.float64)])


# ----------------------------------------------------------------------------------------- JL lemma
def test_random_projection_preserves_norm_in_expectation() -> None:
    x = torch.randn(40, dtype=torch.float64, generator=gen(14))
    gn = gen(15)
    r = (
        torch.stack([g.random_projection(x, 16, gn).square().sum() for _ in range(2000)])
        / x.square().sum()
    )
    # ||Ax||^2/||x||^2 ~ chi2_16/16: mean 1, variance 2/16
    assert abs(r.mean().item() - 1) < 4 * math.sqrt(2 / 16 / 2000)
    assert r.var().item() == pytest.approx(2 / 16, rel=0.15)
    y, a = g.random_projection(
        torch.randn(3, 5, 40, dtype=torch.float64), 7, gen(16), return_matrix=True
    )
    assert y.shape == (3, 5, 7) and a.shape == (7, 40)
    assert g.random_projection(torch.randn(5, 40, device=META), 7).device.type == "meta"


def test_random_projection_matrix_has_sklearn_distribution() -> None:
    from sklearn.random_projection import GaussianRandomProjection

    peer = (
        GaussianRandomProjection(n_components=50, random_state=0)
        .fit(np.zeros((2, 400)))
        .components_
    )
    _, ours = g.random_projection(
        torch.zeros(2, 400, dtype=torch.float64), 50, gen(17), return_matrix=True
    )
    # Both have N(0, 1/50) entries: compare the sample variances (2e4 draws each, rel. sd 1%)
    assert ours.var().item() == pytest.approx(float(peer.var()), rel=0.06)
    assert ours.var().item() == pytest.approx(1 / 50, rel=0.05)


def test_random_projection_errors() -> None:
    with pytest.raises(ValueError, match="dim"):
        g.random_projection(torch.randn(3, 4), 0)
    with pytest.raises(TypeError, match="x"):
        g.random_projection(np.ones((3, 4)), 2)
    with pytest.raises(TypeError, match="return_matrix"):
        g.random_projection(torch.randn(3, 4), 2, return_matrix=1)
    with pytest.raises(ValueError, match="std"):
        g.gaussian_matrix(2, 3, std=-1.0)


@pytest.mark.parametrize("n_points", [2, 10, 512, 10**6])
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3, 0.5, 0.9])
def test_jl_min_dim_formula_and_sklearn(n_points: int, eps: float) -> None:
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    bound = 24 * math.log(n_points) / eps**2
    n = g.jl_min_dim(n_points, eps)
    assert n > bound and n - 1 <= bound
    assert g.jl_min_dim(n_points, eps, constant=16) <= n
    sk = int(johnson_lindenstrauss_min_dim(n_points, eps=eps))
    assert n >= sk  # ours is the more conservative bound for 0 < eps < 1
    # exact relation of the two real-valued bounds: 24/eps^2 = (3 - 2 eps) * 4/(eps^2/2 - eps^3/3)
    sk_real = 4 * math.log(n_points) / (eps**2 / 2 - eps**3 / 3)
    assert bound == pytest.approx((3 - 2 * eps) * sk_real, rel=1e-12)
    assert abs(sk - sk_real) <= 1


def test_jl_min_dim_edges_and_errors() -> None:
    assert g.jl_min_dim(1, 0.5) == 1
    with pytest.raises(ValueError, match="eps"):
        g.jl_min_dim(10, 1.0)
    with pytest.raises(ValueError, match="eps"):
        g.jl_min_dim(10, 0.0)
    with pytest.raises(ValueError, match="n_points"):
        g.jl_min_dim(0, 0.5)
    with pytest.raises(TypeError, match="n_points"):
        g.jl_min_dim(True, 0.5)
    with pytest.raises(ValueError, match="constant"):
        g.jl_min_dim(10, 0.5, constant=-1.0)


def test_jl_distortion_against_scipy_pdist() -> None:
    x = torch.randn(12, 30, dtype=torch.float64, generator=gen(18))
    y = g.random_projection(x, 10, gen(19))
    peer = pdist(y.numpy(), "sqeuclidean") / pdist(x.numpy(), "sqeuclidean") - 1
    np.testing.assert_allclose(g.jl_distortion(x, y).numpy(), peer, rtol=1e-10)
    np.testing.assert_allclose(
        g.pairwise_sq_distances(x).numpy(), pdist(x.numpy(), "sqeuclidean"), rtol=1e-12
    )
    close = torch.tensor(
        [[1e8, 0.0], [1e8, 1.0]], dtype=torch.float64
    )  # the mm shortcut would cancel to 0
    assert g.pairwise_sq_distances(close).item() == 1.0
    assert g.pairwise_sq_distances(torch.randn(2, 5, 3, device=META)).shape == (2, 10)
    with pytest.raises(ValueError, match="x"):
        g.pairwise_sq_distances(torch.ones(3))
    xb = torch.stack([x, 2 * x])
    assert g.jl_distortion(xb, xb).abs().max().item() == 0.0 and g.jl_distortion(xb, xb).shape == (
        2,
        66,
    )
    same = torch.zeros(2, 3)
    assert torch.equal(g.jl_distortion(same, torch.zeros(2, 2)), torch.zeros(1))
    assert g.jl_distortion(same, torch.eye(2)).item() == math.inf
    xf, yf = x.float(), y.float()  # entries of 1e30: squared distances would overflow float32
    torch.testing.assert_close(
        g.jl_distortion(1e30 * xf, 1e30 * yf), g.jl_distortion(xf, yf), rtol=1e-4, atol=1e-5
    )
    assert g.jl_distortion(
        torch.randn(4, 5, device=META), torch.randn(4, 2, device=META)
    ).shape == (6,)
    with pytest.raises(ValueError, match="same points"):
        g.jl_distortion(torch.randn(4, 5), torch.randn(3, 2))


def test_sign_lsh_collision_probability_is_theta_over_pi() -> None:
    theta = 1.0
    x = torch.tensor(
        [[1.0, 0.0, 0.0], [math.cos(theta), math.sin(theta), 0.0]], dtype=torch.float64
    )
    bits = g.sign_lsh(x, 40_000, gen(20))
    assert bits.shape == (2, 40_000) and bits.dtype == torch.bool
    p = (bits[0] != bits[1]).double().mean().item()
    assert abs(p - theta / math.pi) < 4 * math.sqrt(
        theta / math.pi * (1 - theta / math.pi) / 40_000
    )
    est = g.hamming_angle(bits[0], bits[1]).item()
    assert est == pytest.approx(math.pi * p)


def test_sign_lsh_codes_planes_and_extremes() -> None:
    x = torch.randn(5, 8, generator=gen(21))
    planes = torch.randn(16, 8, generator=gen(22))
    a = g.sign_lsh(x, 16, planes=planes)
    assert torch.equal(a, (x @ planes.T) > 0)
    s = g.sign_lsh(x, 16, planes=planes, signed=True)
    assert s.dtype == x.dtype and torch.equal(s, torch.where(a, 1.0, -1.0))
    assert g.hamming_angle(a, a).abs().max().item() == 0.0
    assert torch.allclose(
        g.hamming_angle(a, g.sign_lsh(-x, 16, planes=planes)), torch.full((5,), math.pi)
    )
    assert g.hamming_angle(s, s).dtype == x.dtype
    assert torch.equal(g.sign_lsh(1e30 * x, 16, planes=planes), a)  # no overflow for huge inputs
    assert torch.equal(g.sign_lsh(x, 16, gen(3)), g.sign_lsh(x, 16, gen(3)))
    assert g.sign_lsh(torch.randn(2, 8, device=META), 4).shape == (2, 4)


def test_sign_lsh_errors() -> None:
    x = torch.randn(5, 8)
    with pytest.raises(ValueError, match="n_bits"):
        g.sign_lsh(x, 0)
    with pytest.raises(ValueError, match="planes"):
        g.sign_lsh(x, 4, planes=torch.randn(3, 8))
    with pytest.raises(TypeError, match="signed"):
        g.sign_lsh(x, 4, signed="yes")
    with pytest.raises(ValueError, match="same length"):
        g.hamming_angle(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="codes_a"):
        g.hamming_angle(torch.ones(0, dtype=torch.bool), torch.ones(0, dtype=torch.bool))


# -----------------------------------------------------------------------------------------
# randomized SVD
def _matrix_with_spectrum(m: int, n: int, s: torch.Tensor, seed: int) -> torch.Tensor:
    u = torch.linalg.qr(torch.randn(m, len(s), dtype=torch.float64, generator=gen(seed))).Q
    v = torch.linalg.qr(torch.randn(n, len(s), dtype=torch.float64, generator=gen(seed + 1))).Q
    return u * s @ v.T


def test_randomized_svd_exact_for_low_rank() -> None:
    a = _matrix_with_spectrum(60, 40, torch.tensor([5.0, 3.0, 2.0, 1.0], dtype=torch.float64), 23)
    u, s, vh = g.randomized_svd(a, 4, n_iter=0, generator=gen(24))
    torch.testing.assert_close(u * s @ vh, a)
    torch.testing.assert_close(s, torch.tensor([5.0, 3.0, 2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(u.mT @ u, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(vh @ vh.mT, torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(80, 50), (50, 80)])
def test_randomized_svd_against_numpy_and_torch_lowrank(shape) -> None:
    s_true = 1.0 / torch.arange(1, 51, dtype=torch.float64)
    a = _matrix_with_spectrum(*shape, s_true, 25)
    k = 8
    u, s, vh = g.randomized_svd(a, k, n_iter=3, generator=gen(26))
    np_s = np.linalg.svd(a.numpy(), compute_uv=False)
    np.testing.assert_allclose(s.numpy(), np_s[:k], rtol=1e-4)
    _, s_peer, _ = torch.svd_lowrank(a, q=k + 10, niter=3)
    torch.testing.assert_close(s, s_peer[:k], rtol=1e-4, atol=0)
    # Eckart–Young: no rank-k approximation beats sigma_{k+1}; with power iterations we get within
    # 1%
    err = torch.linalg.matrix_norm(a - u * s @ vh, ord=2).item()
    assert np_s[k] * (1 - 1e-9) <= err <= 1.01 * np_s[k]


def test_randomized_svd_batched_complex_meta_and_huge() -> None:
    a = torch.randn(3, 20, 15, dtype=torch.float64, generator=gen(27))
    u, s, vh = g.randomized_svd(a, 15, n_oversamples=0, n_iter=1, generator=gen(28))
    assert u.shape == (3, 20, 15) and s.shape == (3, 15) and vh.shape == (3, 15, 15)
    torch.testing.assert_close(u * s[..., None, :] @ vh, a)  # full rank: exact
    c = torch.randn(10, 6, dtype=torch.complex128, generator=gen(29))
    uc, sc, vhc = g.randomized_svd(c, 6, generator=gen(30))
    torch.testing.assert_close(uc * sc.to(c.dtype) @ vhc, c)
    assert sc.dtype == torch.float64
    big = 1e30 * torch.randn(30, 20, generator=gen(31))
    _, sb, _ = g.randomized_svd(big, 3, generator=gen(32))
    torch.testing.assert_close(sb / 1e30, torch.linalg.svdvals(big / 1e30)[:3], rtol=1e-3, atol=0)
    um, sm, vm = g.randomized_svd(torch.randn(2, 30, 20, device=META), 4)
    assert um.shape == (2, 30, 4) and sm.shape == (2, 4) and vm.shape == (2, 4, 20)


def test_randomized_svd_errors() -> None:
    a = torch.randn(10, 6)
    with pytest.raises(ValueError, match="k"):
        g.randomized_svd(a, 0)
    with pytest.raises(ValueError, match="k"):
        g.randomized_svd(a, 7)
    with pytest.raises(ValueError, match="n_iter"):
        g.randomized_svd(a, 2, n_iter=-1)
    with pytest.raises(ValueError, match="n_oversamples"):
        g.randomized_svd(a, 2, n_oversamples=-1)
    with pytest.raises(TypeError, match="a"):
        g.randomized_svd(torch.ones(4, 4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="a"):
        g.randomized_svd(torch.ones(4), 1)


# ----------------------------------------------------------------------------------------- symbolic
# / scalar
def test_gaussian_expectation_moments_and_sympy_stats() -> None:
    z, w, s, c = sp.symbols("z w sigma c", positive=True)
    assert sp.simplify(g.gaussian_expectation(z**2, [z], s) - s**2) == 0
    assert sp.simplify(g.gaussian_expectation(z**4 + c * z**3, [z], s) - 3 * s**4) == 0
    assert g.gaussian_expectation(z * w, [z, w]) == 0
    from sympy.stats import E, Normal

    zz = Normal("zz", 0, 2)
    assert sp.simplify(E(zz**6 + 3 * zz**2) - g.gaussian_expectation(z**6 + 3 * z**2, [z], 2)) == 0
    assert sp.simplify(g.gaussian_expectation((z + w) ** 2, [z, w], [1, 3]) - 10) == 0


def test_gaussian_expectation_errors() -> None:
    z = sp.Symbol("z")
    with pytest.raises(ValueError, match="polynomial"):
        g.gaussian_expectation(sp.exp(z), [z])
    with pytest.raises(TypeError, match="variables"):
        g.gaussian_expectation(z**2, "z")
    with pytest.raises(ValueError, match="std"):
        g.gaussian_expectation(z**2, [z], [1, 2])


def test_embedding_entropy() -> None:
    from scipy.optimize import brentq

    h = [g.embedding_entropy(n, 512) for n in (10, 40, 80)]
    assert h[0] > h[1] > h[2]
    big_n = 1e40
    crossing = brentq(lambda n: g.embedding_entropy(n, big_n), 10, 5000)
    golden = (1 + math.sqrt(5)) / 2
    assert crossing / math.log(big_n) == pytest.approx(4 / math.log(golden), rel=2e-3)
    with pytest.raises(ValueError, match="dim"):
        g.embedding_entropy(1.5, 10)
    with pytest.raises(ValueError, match="n_points"):
        g.embedding_entropy(10, 0.5)
