"""Unit tests of the core helpers: claims, device choice, seeding, validation, notebook setup."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import suma_lib
from suma_lib import claims
from suma_lib._validation import check_choice, check_float, check_int, check_tensor


@pytest.fixture(autouse=True)
def _fresh_records():
    claims.reset()
    yield
    claims.reset()


# ------------------------------------------------------------------------------------------- claims
def test_symbolic_passes_true_identity_and_fails_false_one() -> None:
    x = sp.symbols("x", real=True)
    rec = claims.symbolic("sin² + cos² = 1", sp.sin(x) ** 2 + sp.cos(x) ** 2, 1)
    assert rec.passed and rec.method == "symbolic"
    with pytest.raises(claims.ClaimError, match="sin² = 1"):
        claims.symbolic("sin² = 1", sp.sin(x) ** 2, 1)
    assert [r.status for r in claims.records()] == ["pass", "fail"]


def test_symbolic_matrices() -> None:
    a, b = sp.symbols("a b", real=True)
    rot = lambda t: sp.Matrix([[sp.cos(t), -sp.sin(t)], [sp.sin(t), sp.cos(t)]])  # noqa: E731
    claims.symbolic("rotations compose", rot(a) * rot(b), rot(a + b))
    with pytest.raises(claims.ClaimError):
        claims.symbolic(
            "rotations commute with a shear", rot(a) * sp.Matrix([[1, 1], [0, 1]]), rot(a)
        )
    with pytest.raises(ValueError, match="shape"):
        claims.symbolic("shapes", sp.eye(2), sp.eye(3))


def test_symbolic_integral() -> None:
    t = sp.symbols("t", real=True)
    claims.symbolic(
        "∫ e^{-t²} = √π", sp.integrate(sp.exp(-(t**2)), (t, -sp.oo, sp.oo)), sp.sqrt(sp.pi)
    )


def test_close_message_names_claim_and_numbers() -> None:
    claims.close("pi to 6 digits", 3.1415926, math.pi, rtol=1e-7)
    with pytest.raises(claims.ClaimError) as info:
        claims.close("e is 2.7", math.e, 2.7, rtol=1e-3)
    msg = str(info.value)
    assert "e is 2.7" in msg and "2.71828" in msg and "2.7" in msg and "rtol" in msg


def test_close_arrays_tensors_and_nan() -> None:
    claims.close(
        "tensor equals array", torch.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(2, 3)
    )
    with pytest.raises(claims.ClaimError):
        claims.close("nan is never close", float("nan"), 0.0, atol=1.0)
    claims.close("inf equals inf", float("inf"), float("inf"))
    with pytest.raises(ValueError, match="broadcast"):
        claims.close("shapes", np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="rtol"):
        claims.close("tolerance", 1.0, 1.0, rtol=-1)


def test_bound() -> None:
    claims.bound("probabilities in [0, 1]", np.array([0.0, 0.5, 1.0]), lower=0, upper=1)
    with pytest.raises(claims.ClaimError):
        claims.bound("strict", 1.0, upper=1.0, strict=True)
    with pytest.raises(claims.ClaimError):
        claims.bound("nan fails", np.array([0.1, np.nan]), lower=0)
    with pytest.raises(ValueError, match="lower"):
        claims.bound("no bound", 1.0)


def test_monte_carlo_accepts_truth_and_rejects_a_small_bias() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000)
    claims.monte_carlo("E[x] = 0", x, 0.0)
    claims.monte_carlo("E[x²] = 1", x**2, 1.0)
    # A bias of 0.02 is 9 standard errors at this sample size: the check must catch it.
    with pytest.raises(claims.ClaimError):
        claims.monte_carlo("E[x] = 0.02", x, 0.02)
    with pytest.raises(ValueError, match="samples"):
        claims.monte_carlo("one draw", np.ones(1), 1.0)


def test_monte_carlo_false_alarm_rate_is_low() -> None:
    rng = np.random.default_rng(1)
    fails = 0
    for _ in range(200):
        try:
            claims.monte_carlo("E[u] = 1/2", rng.random(1000), 0.5)
        except claims.ClaimError:
            fails += 1
    assert fails <= 1  # 4σ: expected false-alarm rate 6e-5


def test_holds_and_summary() -> None:
    claims.holds("all positive", torch.tensor([1.0, 2.0]) > 0)
    with pytest.raises(claims.ClaimError):
        claims.holds("empty is not evidence", np.array([], dtype=bool))
    claims.reset()
    with pytest.raises(claims.ClaimError, match="no claim"):
        claims.summary()
    claims.holds("one", True, measured=1, expected=1)
    recs = claims.summary()
    assert len(recs) == 1 and recs[0].line().startswith("✓")


def test_claim_arguments_are_validated() -> None:
    with pytest.raises(TypeError, match="claim"):
        claims.close("", 1.0, 1.0)
    with pytest.raises(ValueError, match="method"):
        claims.close("x", 1.0, 1.0, method="vibes")
    with pytest.raises(ValueError, match="meta"):
        claims.close("meta", torch.ones(2, device="meta"), 1.0)


# ------------------------------------------------------------------------------------------- device
def test_get_device() -> None:
    assert suma_lib.get_device("cpu") == torch.device("cpu")
    assert suma_lib.get_device("meta").type == "meta"
    auto = suma_lib.get_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    with pytest.raises(ValueError, match="device"):
        suma_lib.get_device("tpu-of-dreams")
    for bad in (3.0, True, None, torch.ones(1)):
        with pytest.raises(TypeError, match="device"):
            suma_lib.get_device(bad)
    with pytest.raises(ValueError, match="ordinal"):
        suma_lib.get_device(-1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            suma_lib.get_device("cuda")
        with pytest.raises(ValueError, match="CUDA"):
            suma_lib.get_device(0)  # an int is a CUDA ordinal, as in torch


# -------------------------------------------------------------------------------------------
# seeding
def test_seeding_is_reproducible() -> None:
    suma_lib.seed_everything(7)
    a = (torch.randn(3), np.random.rand(3))
    rng = suma_lib.seed_everything(7)
    b = (torch.randn(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert rng.random() == np.random.default_rng(7).random()
    g1, g2 = suma_lib.make_generator(3), suma_lib.make_generator(3)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    with pytest.raises(ValueError, match="seed"):
        suma_lib.seed_everything(-1)
    with pytest.raises(TypeError, match="seed"):
        suma_lib.seed_everything(1.5)


# -------------------------------------------------------------------------------------------
# validation
def test_validation_helpers() -> None:
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        check_tensor([1.0], "x")
    with pytest.raises(ValueError, match="x must have at least 2"):
        check_tensor(torch.ones(3), "x", min_dim=2)
    with pytest.raises(TypeError, match="floating"):
        check_tensor(torch.ones(3, dtype=torch.long), "x", floating=True)
    with pytest.raises(ValueError, match="finite"):
        check_tensor(torch.tensor([1.0, float("nan")]), "x", finite=True)
    check_tensor(torch.ones(3, device="meta"), "x", finite=True)  # meta holds no values
    with pytest.raises(TypeError, match="n must be an int"):
        check_int(True, "n")
    with pytest.raises(ValueError, match="n must be >= 1"):
        check_int(0, "n", low=1)
    with pytest.raises(ValueError, match="eps must be > 0"):
        check_float(0.0, "eps", low=0, low_open=True)
    with pytest.raises(ValueError, match="eps must be finite"):
        check_float(float("inf"), "eps")
    with pytest.raises(ValueError, match="mode"):
        check_choice("x", "mode", ("a", "b"))


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=-1e30, max_value=1e30, allow_nan=False))
def test_check_float_accepts_every_finite_value(x: float) -> None:
    assert check_float(x, "x") == x


# ------------------------------------------------------------------------------------------- setup
def test_setup_notebook(capsys) -> None:
    cfg = suma_lib.setup_notebook("ci", "cpu", 3, ci=dict(n=10), full=dict(n=10_000))
    assert cfg.n == 10 and cfg.device.type == "cpu" and cfg.seed == 3
    assert "profile=ci" in capsys.readouterr().out
    assert suma_lib.setup_notebook("full", "cpu", 0, ci=dict(n=1), full=dict(n=2)).n == 2
    with pytest.raises(ValueError, match="profile"):
        suma_lib.setup_notebook("huge", "cpu", 0)
    with pytest.raises(ValueError, match="same sizes"):
        suma_lib.setup_notebook("ci", "cpu", 0, ci=dict(n=1), full=dict(m=1))
    with pytest.raises(ValueError, match="reserved"):
        suma_lib.setup_notebook("ci", "cpu", 0, ci=dict(seed=1), full=dict(seed=1))


def test_check_compatible() -> None:
    from suma_lib._validation import check_compatible

    assert check_compatible(torch.ones(2, 1), torch.ones(3), "a", "b") == (2, 3)
    with pytest.raises(TypeError, match="a and b must share dtype"):
        check_compatible(torch.ones(2), torch.ones(2, dtype=torch.float64), "a", "b")
    with pytest.raises(ValueError, match="a of shape"):
        check_compatible(torch.ones(2), torch.ones(3), "a", "b")


def test_check_compatible_core_dims_and_meta() -> None:
    from suma_lib._validation import check_compatible

    assert check_compatible(torch.ones(2, 1, 4, 3), torch.ones(5, 4, 7), "x", "y", core_dims=2) == (
        2,
        5,
    )
    with pytest.raises(ValueError, match="batch dimensions"):
        check_compatible(torch.ones(2, 4, 3), torch.ones(3, 4, 3), "x", "y", core_dims=2)
    with pytest.raises(ValueError, match="at least 2"):
        check_compatible(torch.ones(3), torch.ones(4, 3), "x", "y", core_dims=2)
    with pytest.raises(TypeError, match="meta"):
        check_compatible(torch.ones(2, device="meta"), torch.ones(2), "x", "y")
    assert check_compatible(
        torch.ones(2), torch.ones(2, dtype=torch.float64), "x", "y", same_dtype=False
    )


def test_check_bool_dtype_device_index_range() -> None:
    from suma_lib._validation import check_bool, check_device, check_dtype, check_index_range

    assert check_bool(True, "flag") is True
    for bad in (1, 0, None, torch.tensor(True), "yes"):
        with pytest.raises(TypeError, match="flag must be a bool"):
            check_bool(bad, "flag")
    assert check_dtype(None) is None and check_dtype(torch.float16) is torch.float16
    with pytest.raises(TypeError, match="dtype"):
        check_dtype(torch.int64)
    with pytest.raises(TypeError, match="dtype"):
        check_dtype("float32")
    assert check_device("meta").type == "meta" and check_device(None) is None
    with pytest.raises(ValueError, match="where"):
        check_device("gpu0", "where")
    with pytest.raises(TypeError, match="where"):
        check_device(1.5, "where")
    ids = torch.tensor([0, 3, 4])
    assert check_index_range(ids, "ids", 5) is ids
    check_index_range(torch.tensor([99], device="meta"), "ids", 5)  # meta holds no values
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\)"):
        check_index_range(torch.tensor([-1, 2]), "ids", 5)
    with pytest.raises(ValueError, match="ids"):
        check_index_range(torch.tensor([5]), "ids", 5)
    for bad in (torch.tensor([1.0]), torch.tensor([True]), [1, 2]):
        with pytest.raises(TypeError, match="ids"):
            check_index_range(bad, "ids", 5)


# -------------------------------------------------------------------------------------------
# numerics
def test_safe_divisor_keeps_nan() -> None:
    from suma_lib._numerics import safe_divisor, safe_ratio

    x = torch.tensor([0.0, 2.0, float("nan"), -1.0])
    out = safe_divisor(x)
    assert out[0] == 1 and out[1] == 2 and math.isnan(out[2]) and out[3] == 1
    r = safe_ratio(
        torch.tensor([1.0, 3.0, 1.0, float("nan")]), torch.tensor([0.0, 2.0, float("nan"), 0.0])
    )
    assert r[0] == 0 and r[1] == 1.5 and math.isnan(r[2]) and math.isnan(r[3])
    num = torch.tensor([0.0, 3.0], requires_grad=True)
    den = torch.tensor([0.0, 2.0], requires_grad=True)
    safe_ratio(num, den).sum().backward()
    assert torch.isfinite(num.grad).all() and torch.isfinite(den.grad).all()


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e20, 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unit_and_norms_are_scale_free(scale: float, dtype: torch.dtype) -> None:
    from suma_lib._numerics import rms, scaled_norm, unit

    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]], dtype=dtype) * scale
    u = unit(x)
    assert torch.allclose(u, torch.tensor([[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], dtype=dtype))
    s, r = scaled_norm(x)
    assert torch.allclose(
        (s * r / scale).to(torch.float64), torch.tensor([5.0, 0.0, 1.0], dtype=torch.float64)
    )
    assert torch.allclose(
        rms(x) / scale, torch.tensor([5 / math.sqrt(2), 0.0, 1 / math.sqrt(2)], dtype=dtype)
    )
    assert math.isnan(unit(torch.tensor([1.0, float("nan")]))[0])  # NaN in, NaN out
    y = x.clone().requires_grad_(True)
    unit(y).sum().backward()
    assert torch.isfinite(y.grad).all()


def test_half_to_float32_rule() -> None:
    from suma_lib._numerics import half_to_float32, work_dtype

    assert (
        work_dtype(torch.bfloat16) == torch.float32 and work_dtype(torch.float64) == torch.float64
    )
    seen = []

    @half_to_float32
    def eig(a: torch.Tensor):
        seen.append(a.dtype)
        return torch.linalg.eigh(a)

    a = torch.eye(3, dtype=torch.float16) * 2
    vals, vecs = eig(a)
    assert seen == [torch.float32] and vals.dtype == vecs.dtype == torch.float16
    assert torch.equal(vals, torch.full((3,), 2.0, dtype=torch.float16))
    assert eig(torch.eye(2, dtype=torch.float64)).eigenvalues.dtype == torch.float64


def test_setup_notebook_generator() -> None:
    cfg = suma_lib.setup_notebook("ci", "cpu", 5, ci=dict(n=1), full=dict(n=2))
    assert isinstance(cfg.gen, torch.Generator) and cfg.gen.device.type == "cpu"
    a = torch.rand(3, generator=cfg.gen)
    cfg2 = suma_lib.setup_notebook("ci", "meta", 5, ci=dict(n=1), full=dict(n=2))
    assert cfg2.gen.device.type == "cpu"  # no generators on the meta device
    assert torch.equal(a, torch.rand(3, generator=cfg2.gen))
    with pytest.raises(ValueError, match="reserved"):
        suma_lib.setup_notebook("ci", "cpu", 0, ci=dict(gen=1), full=dict(gen=1))


def test_blas_matmul_agrees_with_torch() -> None:
    from suma_lib._numerics import blas_matmul

    a = torch.randn(300, 250, dtype=torch.float64)
    b = torch.randn(250, 7, dtype=torch.float64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the NumPy path
        one = blas_matmul(a, b)
        two = blas_matmul(a.mT.contiguous().mT, -b)  # strided and negated views
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(one, a @ b) and torch.allclose(two, -(a @ b))
    assert blas_matmul(a.float(), b.float()).dtype == torch.float32
    c = b.clone().requires_grad_(True)
    blas_matmul(a, c).sum().backward()  # autograd: plain torch
    assert c.grad is not None
