"""Tests of suma_lib.smooth: SquarePlus and the functions smoothed by approximate identities.

Peers: mpmath at high precision (values and derivatives from the textbook formulas), SciPy's special
functions, torch's own softplus / logaddexp / erf, and quadrature of the defining convolution.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from suma_lib import smooth as S

DTYPES = (torch.float32, torch.float64)
KERNELS = S.KERNELS
# Largest |x| tested per dtype: 1e30 (float32), 1e300 (float64).
BIG = {torch.float32: 1e30, torch.float64: 1e300}


def _floats(dtype: torch.dtype, bound: float | None = None):
    """Finite floats of the dtype with |x| <= bound: hypothesis's own mix, plus log-uniform magnitudes."""
    bound = BIG[dtype] if bound is None else bound
    if dtype == torch.float32:
        bound = float(np.nextafter(np.float32(bound), np.float32(0)))
    top = math.log10(bound)
    log_uniform = st.builds(
        lambda sign, e: sign * 10.0**e, st.sampled_from([-1.0, 1.0]), st.floats(top - 40, top)
    ).map(lambda v: float(np.float32(v)) if dtype == torch.float32 else v)
    return st.one_of(
        st.floats(-bound, bound, width=32 if dtype == torch.float32 else 64), log_uniform
    )


def _mp(v: float) -> mpmath.mpf:
    return mpmath.mpf(v)


def _prec(v: float) -> int:
    """Bits enough to evaluate x + sqrt(x^2 + b) for this x in mpmath without cancellation."""
    return 200 + 2 * abs(math.frexp(v)[1])


# ------------------------------------------------------------------------------------------ squareplus
def _squareplus_mp(v: float, b: float) -> tuple[float, float]:
    """SquarePlus and its derivative from the textbook formulas, at enough precision to be exact."""
    with mpmath.workprec(_prec(v)):
        x = _mp(v)
        h = mpmath.sqrt(x * x + _mp(b))
        return float((x + h) / 2), float((1 + x / h) / 2)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=50, deadline=None)
@given(data=st.data(), b=st.floats(1e-3, 1e3))
def test_squareplus_matches_mpmath_over_a_huge_range(dtype, data, b):
    x = torch.tensor(
        data.draw(st.lists(_floats(dtype), min_size=1, max_size=8)), dtype=dtype, requires_grad=True
    )
    y = S.squareplus(x, b)
    y.sum().backward()
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    for xi, yi, gi in zip(x.detach().tolist(), y.detach().tolist(), x.grad.tolist(), strict=False):
        val, der = _squareplus_mp(xi, b)
        assert abs(yi - val) <= 4 * eps * val + tiny, (xi, yi, val)
        assert abs(gi - der) <= 8 * eps * der + tiny, (xi, gi, der)


@pytest.mark.parametrize("dtype", DTYPES)
def test_squareplus_extremes_are_finite_and_exact(dtype):
    b = 1.5
    x = torch.tensor([-BIG[dtype], -1e4, 0.0, 1e4, BIG[dtype]], dtype=dtype, requires_grad=True)
    y = S.squareplus(x, b)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and (y > 0).all()
    expected = [b / (4 * BIG[dtype]), b / (2 * (1e4 + math.sqrt(1e8 + b))), math.sqrt(b) / 2]
    torch.testing.assert_close(
        y[:3].double(), torch.tensor(expected, dtype=torch.float64), rtol=4e-7, atol=0
    )
    assert y[-1].item() == BIG[dtype] if dtype == torch.float64 else y[-1].item() == x[-1].item()
    assert x.grad[2].item() == 0.5  # the exact derivative at 0
    # the textbook formula breaks where this one does not
    naive = (x.detach() + torch.sqrt(x.detach() ** 2 + b)) / 2
    if dtype == torch.float32:  # x^2 overflows at both ends; x + sqrt(x^2 + b) cancels to 0 at -1e4
        assert (
            math.isinf(naive[0].item()) and naive[1].item() == 0.0 and math.isinf(naive[-1].item())
        )


def test_squareplus_inf_and_nan():
    x = torch.tensor([-math.inf, math.inf, math.nan])
    y = S.squareplus(x, 2.0)
    assert y[0].item() == 0.0 and y[1].item() == math.inf and math.isnan(y[2].item())


@settings(max_examples=50, deadline=None)
@given(x=_floats(torch.float64, 1e6), b=st.floats(1e-2, 1e2))
def test_squareplus_reflection_and_convexity(x, b):
    # SquarePlus(x) - SquarePlus(-x) = x, and the second derivative is b / (2 (x^2 + b)^{3/2}) > 0
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = S.squareplus(t, b)
    (g,) = torch.autograd.grad(y, t, create_graph=True)
    (g2,) = torch.autograd.grad(g, t)
    mirror = S.squareplus(-t.detach(), b)
    assert y.item() - mirror.item() == pytest.approx(x, rel=1e-12, abs=1e-12 * (1 + math.sqrt(b)))
    # autograd's second derivative of hypot forms 1/h - x^2/h^3: relative error ~ eps x^2 / b
    assert g2.item() == pytest.approx(
        b / (2 * (x * x + b) ** 1.5), rel=1e-13 * (1 + x * x / b), abs=1e-300
    )


def test_squareplus_derivatives_at_zero_and_gradgradcheck():
    b = 1.7
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(S.squareplus(x, b).sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), x)
    assert g.tolist() == [0.5, 0.5]
    torch.testing.assert_close(g2, torch.full_like(g2, 1 / (2 * math.sqrt(b))))
    pts = torch.tensor([-50.0, -1.0, 0.0, 0.5, 40.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda z: S.squareplus(z, b), (pts,))


def test_squareplus_hot_path_keeps_checks_and_values():
    # after a first call has cached b's constants, later calls skip the checks: they must still refuse
    # what the first call refuses, and give the same values at every size and for extreme inputs
    x = torch.tensor([-1e30, -1e4, -1.0, 0.0, 1.0, 1e4, 1e30])
    for n in (7, 20_000, 70_000):
        t = x.repeat(n // 7 + 1)[:n]
        first = S._squareplus_values(t, 1.0, grad=False)[0]
        S.squareplus(t, 1.0)
        torch.testing.assert_close(S.squareplus(t, 1.0), first, rtol=4e-7, atol=0.0)
        assert S.squareplus(t[:7], 1.0)[0].item() == pytest.approx(0.25e-30, rel=1e-6)
    with pytest.raises(TypeError, match="b"):
        S.squareplus(x, True)
    with pytest.raises(TypeError, match="x"):
        S.squareplus(torch.arange(3), 1.0)
    with pytest.raises(ValueError, match="b"):
        S.squareplus(x, float("nan"))


def test_squareplus_module_and_half_precision():
    m = S.SquarePlus(b=2.0)
    x = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(m(x), S.squareplus(x, 2.0))
    assert "b=2" in repr(m)
    h = S.squareplus(x.half(), 2.0)
    assert h.dtype == torch.float16
    torch.testing.assert_close(h.float(), S.squareplus(x, 2.0), rtol=2e-3, atol=1e-3)


# ------------------------------------------------------------------------------- smooth ReLU and friends
def _relu_mp(v: float, s: float, kernel: str) -> tuple[float, float, float]:
    """(value, derivative, scale of the terms) of relu * delta_s at x = v, from the closed forms in mpmath."""
    if abs(v) > 1e3 * s:  # the kernel's tails beyond 1000 widths are below e^{-1000}: exactly ReLU
        return max(v, 0.0), float(v > 0), abs(v)
    with mpmath.workdps(60):
        x = _mp(v)
        u = x / s
        if kernel == "gaussian":
            t1, t2 = x * mpmath.ncdf(u), s * mpmath.npdf(u)
            return float(t1 + t2), float(mpmath.ncdf(u)), float(abs(t1) + t2)
        val = mpmath.log1p(mpmath.exp(u)) * s
        return float(val), float(1 / (1 + mpmath.exp(-u))), float(val)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=30, deadline=None)
@given(data=st.data(), scale=st.floats(1e-3, 30.0))
def test_smooth_relu_matches_mpmath(kernel, dtype, data, scale):
    values = data.draw(
        st.lists(st.one_of(_floats(dtype), _floats(dtype, 60 * scale)), min_size=1, max_size=8)
    )
    x = torch.tensor(values, dtype=dtype, requires_grad=True)
    y = S.smooth_relu(x, scale, kernel)
    y.sum().backward()
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    for xi, yi, gi in zip(x.detach().tolist(), y.detach().tolist(), x.grad.tolist(), strict=False):
        val, der, size = _relu_mp(xi, scale, kernel)
        u = abs(xi) / scale
        # rounding x/s by eps moves Phi(u) by a relative u^2 eps (sigmoid(u): u eps): the tolerance
        # follows this conditioning; everything else is a few ulp.
        cond = 1 + min(u, 1e4) ** 2 if kernel == "gaussian" else 1 + min(u, 1e4)
        assert abs(yi - val) <= 8 * eps * cond * size + tiny, (xi, yi, val)
        assert abs(gi - der) <= 8 * eps * cond * der + tiny, (xi, gi, der)
        assert yi >= max(xi, 0.0) - 8 * eps * cond * size - tiny


@pytest.mark.parametrize("dtype", DTYPES)
def test_logistic_relu_is_torch_softplus(dtype):
    x = torch.linspace(-30, 30, 601, dtype=dtype)
    # torch switches to x itself above `threshold`, an error of e^{-threshold} / t: 20 is enough in float32
    threshold = 20.0 if dtype == torch.float32 else 40.0
    for t in (0.5, 1.0, 4.0):
        torch.testing.assert_close(
            S.smooth_relu(x, 1 / t, "logistic"), F.softplus(x, beta=t, threshold=threshold)
        )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_smooth_functions_are_finite_at_huge_inputs(kernel, dtype):
    big = 1e30
    x = torch.tensor([-big, -1.0, 0.0, 1.0, big], dtype=dtype, requires_grad=True)
    for fn, limit in (
        (S.smooth_relu, torch.relu),
        (S.smooth_abs, torch.abs),
        (S.smooth_sign, torch.sign),
        (S.smooth_floor, torch.floor),
    ):
        y = fn(x, 0.5, kernel)
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.isfinite(y).all() and torch.isfinite(g).all(), fn.__name__
        assert y[0].item() == limit(x[0]).item() and y[-1].item() == limit(x[-1]).item(), (
            fn.__name__
        )
    # tiny widths and huge inputs together: x / s overflows, the result is still the limit
    s = 1e-30
    y = S.smooth_relu(x, s, kernel)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert y[[0, 1, 3, 4]].tolist() == torch.relu(x)[[0, 1, 3, 4]].tolist() and g.tolist() == [
        0,
        0,
        0.5,
        1,
        1,
    ]
    at0 = s / math.sqrt(2 * math.pi) if kernel == "gaussian" else s * math.log(2)
    assert y[2].item() == pytest.approx(at0, rel=4 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradient_at_zero_and_second_derivative(kernel):
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    s = 0.7
    for fn, d1 in ((S.smooth_relu, 0.5), (S.smooth_sign, 0.0)):
        y = fn(x, s, kernel)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        if fn is S.smooth_relu:
            assert g.tolist() == [d1] * 3
            (g2,) = torch.autograd.grad(g.sum(), x)  # the kernel itself: delta_s(0)
            torch.testing.assert_close(g2, torch.full_like(g2, float(S.kernel_pdf(0.0, s, kernel))))
        else:
            torch.testing.assert_close(
                g, torch.full_like(g, 2 * float(S.kernel_pdf(0.0, s, kernel)))
            )
    # gradcheck on points of both signs (through the custom backward)
    pts = torch.tensor([-3.0, -0.4, 0.0, 0.3, 2.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: S.smooth_relu(z, s, kernel), (pts,))
    assert torch.autograd.gradgradcheck(lambda z: S.smooth_relu(z, s, kernel), (pts,))


@pytest.mark.parametrize("dtype", DTYPES)
def test_smooth_sign_matches_scipy(dtype):
    x = torch.linspace(-20, 20, 401, dtype=dtype)
    s = 1.3
    torch.testing.assert_close(
        S.smooth_sign(x, s, "gaussian").double(),
        torch.from_numpy(special.erf(x.double().numpy() / (math.sqrt(2) * s))),
        rtol=4 * torch.finfo(dtype).eps,
        atol=4 * torch.finfo(dtype).eps,
    )
    torch.testing.assert_close(
        S.smooth_sign(x, s, "logistic").double(),
        torch.from_numpy(2 * special.expit(x.double().numpy() / s) - 1),
        rtol=4 * torch.finfo(dtype).eps,
        atol=4 * torch.finfo(dtype).eps,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_smooth_max_logistic_is_logsumexp_and_bounded(dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 1, generator=g, dtype=dtype) * 5
    b = torch.randn(1, 9, generator=g, dtype=dtype) * 5
    s = 0.8
    m = S.smooth_max(a, b, s, "logistic")
    assert m.shape == (7, 9)
    torch.testing.assert_close(m, s * torch.logaddexp(a / s, b / s))
    torch.testing.assert_close(m, S.smooth_max(b, a, s, "logistic"))  # symmetric
    hard = torch.maximum(a, b)
    for kernel, excess in (("gaussian", s / math.sqrt(2 * math.pi)), ("logistic", s * math.log(2))):
        m = S.smooth_max(a, b, s, kernel)
        ulps = (
            4 * torch.finfo(dtype).eps * (a.abs() + b.abs())
        )  # (a+b)/2 + |d| rounds on the scale of a, b
        assert (m >= hard - ulps).all() and (m <= hard + excess + ulps).all()
        # equal arguments: the excess is the whole ReLU error at 0
        torch.testing.assert_close(S.smooth_max(a, a, s, kernel), a + excess)
        # the definition a + relu_s(b - a), directly
        torch.testing.assert_close(m, a + S.smooth_relu(b - a, s, kernel))


@pytest.mark.parametrize("kernel", KERNELS)
def test_smooth_max_does_not_overflow(kernel):
    big = torch.finfo(torch.float32).max / 1.2
    a = torch.tensor([big, -big, 1e30], requires_grad=True)
    b = torch.tensor([-big, big, -1e30], requires_grad=True)
    m = S.smooth_max(a, b, 1.0, kernel)
    m.sum().backward()
    assert m.tolist() == [big, big, 1e30] or torch.allclose(m, torch.tensor([big, big, 1e30]))
    assert a.grad.tolist() == [1.0, 0.0, 1.0] and b.grad.tolist() == [0.0, 1.0, 0.0]


# ------------------------------------------------------------------------------------------------ floor
@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=30, deadline=None)
@given(x=st.floats(-50, 50), s=st.floats(0.02, 2.0))
def test_smooth_floor_shift_and_midpoints(kernel, x, s):
    t = torch.tensor([x, x + 1.0, float(math.floor(x))], dtype=torch.float64)
    y = S.smooth_floor(t, s, kernel)
    assert y[1].item() == pytest.approx(y[0].item() + 1.0, abs=1e-12)
    assert y[2].item() == pytest.approx(math.floor(x) - 0.5, abs=1e-12)  # the middle of every jump


@pytest.mark.parametrize("kernel", KERNELS)
def test_smooth_floor_matches_quadrature(kernel):
    s = 0.3
    xs = np.array([-2.7, -1.0, -0.2, 0.0, 0.45, 1.5, 3.999])
    brk = lambda x: [x - n for n in range(math.floor(x) - 40, math.floor(x) + 42)]
    ref = S.convolve_quad(math.floor, xs, s, kernel, breaks=brk)
    got = S.smooth_floor(torch.from_numpy(xs), s, kernel)
    torch.testing.assert_close(got, torch.from_numpy(ref), rtol=0, atol=1e-10)
    # and its derivative is the kernel summed over the jumps
    t = torch.from_numpy(xs).requires_grad_(True)
    (g,) = torch.autograd.grad(S.smooth_floor(t, s, kernel).sum(), t)
    comb = sum(S.kernel_pdf(xs - n, s, kernel) for n in range(-60, 61))
    torch.testing.assert_close(g, torch.from_numpy(comb), rtol=1e-10, atol=1e-12)


def test_smooth_floor_is_increasing_and_tends_to_floor():
    x = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    y = S.smooth_floor(x, 0.2)
    assert (y.diff() > 0).all()
    away = (x - x.round()).abs() > 0.1
    torch.testing.assert_close(
        S.smooth_floor(x, 0.01)[away], torch.floor(x)[away], rtol=0, atol=1e-15
    )


# ------------------------------------------------------------------------- closed forms vs quadrature
@pytest.mark.parametrize("kernel", KERNELS)
def test_smooth_relu_and_sign_match_quadrature(kernel):
    s = 0.6
    xs = np.linspace(-4, 4, 9)
    at_kink = lambda x: [x]
    relu_q = S.convolve_quad(lambda z: max(z, 0.0), xs, s, kernel, breaks=at_kink)
    sign_q = S.convolve_quad(lambda z: float(np.sign(z)), xs, s, kernel, breaks=at_kink)
    t = torch.from_numpy(xs)
    torch.testing.assert_close(
        S.smooth_relu(t, s, kernel), torch.from_numpy(relu_q), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        S.smooth_sign(t, s, kernel), torch.from_numpy(sign_q), rtol=1e-10, atol=1e-12
    )


def test_kernel_pdf_is_a_density():
    from scipy import integrate

    for kernel in KERNELS:
        mass = integrate.quad(lambda y, k=kernel: float(S.kernel_pdf(y, 0.3, k)), -np.inf, np.inf)[
            0
        ]
        assert mass == pytest.approx(1.0, abs=1e-10)
    assert np.isfinite(S.kernel_pdf(np.array([-1e300, 1e300]), 1e-3, "logistic")).all()


# ----------------------------------------------------------------------------------- minimax helpers
def test_squareplus_minimax_two_methods_agree_and_equioscillate():
    eq = S.squareplus_minimax("equioscillation")
    mn = S.squareplus_minimax("minimize")
    assert eq.b == pytest.approx(mn.b, rel=1e-7) and eq.gap == pytest.approx(mn.gap, rel=1e-7)
    # equal excursions of opposite sign at 0 and at the peak
    g0 = float(S.squareplus_softplus_gap(0.0, eq.b))
    assert g0 == pytest.approx(-eq.gap, rel=1e-10)
    assert float(S.squareplus_softplus_gap(eq.x_peak, eq.b)) == pytest.approx(eq.gap, rel=1e-12)
    assert 1.0 < eq.b < 4 * math.log(2) ** 2


def test_gap_is_even_and_uses_softplus():
    x = np.linspace(-30, 30, 61)
    g = S.squareplus_softplus_gap(x, 1.7)
    np.testing.assert_allclose(g, g[::-1], rtol=0, atol=1e-14)
    sq = S.squareplus(torch.from_numpy(x), 1.7).numpy()
    np.testing.assert_allclose(
        g, sq - F.softplus(torch.from_numpy(x), threshold=100).numpy(), atol=1e-14
    )


# ------------------------------------------------------------------------------- devices and shapes
FNS = {
    "squareplus": lambda x: S.squareplus(x, 1.0),
    "relu": lambda x: S.smooth_relu(x, 0.5),
    "relu_logistic": lambda x: S.smooth_relu(x, 0.5, "logistic"),
    "abs": lambda x: S.smooth_abs(x, 0.5),
    "sign": lambda x: S.smooth_sign(x, 0.5, "logistic"),
    "floor": lambda x: S.smooth_floor(x, 0.5),
    "max": lambda x: S.smooth_max(x, x.flip(-1), 0.5),
}


@pytest.mark.parametrize("name", FNS)
def test_meta_device_shape_and_dtype(name):
    x = torch.empty(2, 3, 5, device="meta", dtype=torch.float64, requires_grad=True)
    y = FNS[name](x)
    assert y.device.type == "meta" and y.shape == x.shape and y.dtype == x.dtype
    y.sum().backward()
    assert x.grad.device.type == "meta" and x.grad.shape == x.shape


@pytest.mark.parametrize("name", FNS)
def test_batched_elementwise(name):
    x = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = FNS[name](x)
    for i in range(4):
        torch.testing.assert_close(y[i], FNS[name](x[i]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", FNS)
def test_cuda_matches_cpu(name):
    x = torch.linspace(-40, 40, 1001, dtype=torch.float64)
    torch.testing.assert_close(FNS[name](x.to("cuda")).cpu(), FNS[name](x), rtol=1e-12, atol=1e-12)


def test_smooth_relu_module():
    m = S.SmoothReLU(0.25, "logistic")
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(m(x), S.smooth_relu(x, 0.25, "logistic"))
    assert "logistic" in repr(m)


# ------------------------------------------------------------------------------------ error messages
@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_bad_widths_are_named(bad):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="b"):
        S.squareplus(x, bad)
    with pytest.raises(ValueError, match="b"):
        S.SquarePlus(bad)
    for fn in (S.smooth_relu, S.smooth_abs, S.smooth_sign, S.smooth_floor):
        with pytest.raises(ValueError, match="scale"):
            fn(x, bad)
    with pytest.raises(ValueError, match="scale"):
        S.smooth_max(x, x, bad)
    with pytest.raises(ValueError, match="scale"):
        S.SmoothReLU(bad)
    with pytest.raises(ValueError, match="scale"):
        S.kernel_pdf(0.0, bad)


def test_bad_arguments_are_named():
    x = torch.zeros(3)
    with pytest.raises(TypeError, match="x"):
        S.squareplus([1.0, 2.0])
    with pytest.raises(TypeError, match="x"):
        S.smooth_relu(torch.arange(3))
    with pytest.raises(TypeError, match="b"):
        S.squareplus(x, "2")
    with pytest.raises(ValueError, match="kernel"):
        S.smooth_relu(x, 1.0, "cauchy")
    with pytest.raises(ValueError, match="kernel"):
        S.SmoothReLU(1.0, "box")
    with pytest.raises(TypeError, match="a and b"):
        S.smooth_max(x, x.double())
    with pytest.raises(ValueError, match="broadcast"):
        S.smooth_max(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="scale"):
        S.smooth_floor(x, 5000.0)
    with pytest.raises(ValueError, match="method"):
        S.squareplus_minimax("bisect")
    with pytest.raises(TypeError, match="f"):
        S.convolve_quad(3.0, [0.0])


# ------------------------------------------------------------- issue 11 item 11, issue 12: extremes, fast path
def test_squareplus_half_precision_with_a_large_b():
    # sqrt(1e10) = 1e5 does not fit in float16, the result (~5e4) does: computed in float32
    x = torch.tensor([-1e4, 0.0, 1e4], dtype=torch.float16)
    y = S.squareplus(x, 1e10)
    expected = [0.5 * (v + math.sqrt(v * v + 1e10)) for v in (-1e4, 0.0, 1e4)]
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-3, atol=0)


@pytest.mark.parametrize("b", [1e-50, 1e-100, 1e40, 1e80])
def test_squareplus_extreme_b_in_float32(b):
    x = torch.tensor([-1e30, -1.0, 0.0, 1.0, 1e30], requires_grad=True)
    y = S.squareplus(x, b)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert not torch.isnan(y).any() and torch.isfinite(g).all()
    for xi, yi, gi in zip(x.tolist(), y.tolist(), g.tolist(), strict=False):
        val, der = _squareplus_mp(xi, b)
        val32 = float(np.float32(val)) if abs(val) < 3.4e38 else math.inf
        assert yi == pytest.approx(val32, rel=1e-6, abs=1e-44), (b, xi)
        assert gi == pytest.approx(der, rel=1e-6, abs=1e-38), (b, xi)


@pytest.mark.parametrize("kernel", KERNELS)
def test_widths_that_underflow_give_the_limit_or_a_clear_error(kernel):
    x = torch.tensor([-1e30, -1.0, 0.0, 1.0, 1e30], requires_grad=True)
    for fn, limit, slope in (
        (S.smooth_relu, torch.relu(x.detach()), [0.0, 0.0, 0.5, 1.0, 1.0]),
        (S.smooth_abs, x.detach().abs(), [-1.0, -1.0, 0.0, 1.0, 1.0]),
    ):
        y = fn(x, 1e-50, kernel)
        (g,) = torch.autograd.grad(y.sum(), x)
        assert y.tolist() == limit.tolist() and g.tolist() == slope, fn.__name__
    y = S.smooth_max(x, x.flip(0), 1e-50, kernel)
    assert y.tolist() == torch.maximum(x, x.flip(0)).tolist()
    for fn in (S.smooth_sign, S.smooth_floor):  # the derivative is a kernel of height 1e50
        with pytest.raises(ValueError, match="scale .* underflows"):
            fn(x, 1e-50, kernel)
    assert torch.isfinite(S.smooth_sign(x.double(), 1e-50, kernel)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_formulas_match_mpmath(dtype):
    # the expression torch.compile fuses for large tensors, run eagerly here: same values and slopes
    b = 2.5
    pts = [-BIG[dtype], -1e10, -30.0, -1.0, 0.0, 0.3, 5.0, 1e12, BIG[dtype]]
    x = torch.tensor(pts, dtype=dtype)
    cap = S._SQRT_SAFE[dtype][0]
    out = S._squareplus_kernel(x, S._const(b, x), S._const(math.sqrt(b), x), cap)
    slope = S._squareplus_grad_kernel(x, out, torch.ones_like(x), S._const(b, x), cap)
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    for xi, yi, gi in zip(pts, out.tolist(), slope.tolist(), strict=False):
        val, der = _squareplus_mp(xi, b)
        assert abs(yi - val) <= 4 * eps * val + tiny and abs(gi - der) <= 8 * eps * der + tiny, xi


def test_fused_path_falls_back_to_eager_when_compiling_fails(monkeypatch):
    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(S, "_COMPILED", {})
    monkeypatch.setattr(S, "_COMPILE_MIN", 4)
    x = torch.linspace(-5, 5, 11, dtype=torch.float64, requires_grad=True)
    y = S.squareplus(x, 1.5)
    r = S.smooth_relu(x, 0.5)
    assert S._COMPILED == {"squareplus": None}  # switched off for good
    torch.testing.assert_close(y, 0.5 * (x + torch.sqrt(x * x + 1.5)))
    (g,) = torch.autograd.grad(r.sum(), x)
    torch.testing.assert_close(g, torch.special.ndtr(x.detach() / 0.5))


def test_fused_path_wiring_forward_and_backward(monkeypatch):
    # torch.compile replaced by the identity: the fused kernels run eagerly, through the same wiring
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(S, "_COMPILED", {})
    monkeypatch.setattr(S, "_COMPILE_MIN", 4)
    x = torch.tensor([-1e30, -30.0, -1.0, 0.0, 0.5, 40.0, 1e30], dtype=torch.float64, requires_grad=True)
    y = S.squareplus(x, 1.7)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert set(S._COMPILED) == {"squareplus", "squareplus_grad"}  # both fused kernels were used
    for xi, yi, gi in zip(x.tolist(), y.tolist(), g.tolist(), strict=False):
        val, der = _squareplus_mp(xi, 1.7)
        assert yi == pytest.approx(val, rel=1e-14) and gi == pytest.approx(der, rel=1e-14), xi
    pts = x.detach()[1:-1].clone().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda z: S.squareplus(z, 1.7), (pts,))
