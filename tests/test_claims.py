"""Claim helpers never pass vacuously, and their lines, tables and anchors read well on a page."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

from suma_lib import claims


@pytest.fixture(autouse=True)
def _fresh_records():
    claims.reset()
    yield
    claims.reset()


# ---------------------------------------------------------------------------- vacuous claims raise
@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: claims.holds("x", None), "condition"),
        (lambda: claims.holds("x", float("nan")), "condition"),
        (lambda: claims.holds("x", np.array([True, np.nan])), "condition"),
        (lambda: claims.holds("x", np.array([], dtype=bool)), "condition"),
        (lambda: claims.holds("x", torch.tensor([])), "condition"),
        (lambda: claims.close("x", [], 5.0), "measured"),
        (lambda: claims.close("x", 1.0, []), "expected"),
        (lambda: claims.close("x", np.ones((0, 3)), 1.0), "measured"),
        (lambda: claims.close("x", None, 1.0), "measured"),
        (lambda: claims.close("x", 1.0, 1e9, rtol=math.inf), "rtol"),
        (lambda: claims.close("x", 1.0, 1e9, atol=math.inf), "atol"),
        (lambda: claims.close("x", 1.0, 1e9, rtol=math.nan), "rtol"),
        (lambda: claims.bound("x", [], lower=0), "value"),
        (lambda: claims.bound("x", None, lower=0), "value"),
        (lambda: claims.bound("x", 1.0, lower=-math.inf), "lower"),
        (lambda: claims.bound("x", 1.0, upper=math.inf), "upper"),
        (lambda: claims.bound("x", 1.0, lower=math.nan), "lower"),
        (lambda: claims.bound("x", 1.0, lower=[]), "lower"),
        (lambda: claims.monte_carlo("x", [0.0, 1.0], 1e9, n_sigma=math.inf), "n_sigma"),
        (lambda: claims.monte_carlo("x", [0.0, 1.0], 1e9, atol=math.inf), "atol"),
        (lambda: claims.monte_carlo("x", np.ones((5, 0)), 1.0), "samples"),
        (lambda: claims.monte_carlo("x", [0.0, 1.0], []), "expected"),
        (lambda: claims.symbolic("x", None, 1), "lhs"),
        (lambda: claims.symbolic("x", sp.nan, sp.nan), "lhs"),
        (lambda: claims.symbolic("x", sp.Matrix(0, 0, []), sp.Matrix(0, 0, [])), "lhs"),
    ],
)
def test_vacuous_claims_raise_naming_the_argument(call, argument: str) -> None:
    with pytest.raises(claims.VacuousClaimError, match=argument):
        call()
    assert claims.records() == []  # nothing was recorded as checked


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda: claims.close("x", 1.0, 1.0, rtol=-1e-3), ValueError, "rtol"),
        (lambda: claims.close("x", 1.0, 1.0, atol=-1.0), ValueError, "atol"),
        (lambda: claims.close("x", 1.0, 1.0, rtol="1e-3"), TypeError, "rtol"),
        (lambda: claims.close("x", 1.0, 1.0, rtol=True), TypeError, "rtol"),
        (lambda: claims.monte_carlo("x", [0.0, 1.0], 0.5, n_sigma=0), ValueError, "n_sigma"),
        (lambda: claims.monte_carlo("x", [0.0, 1.0], 0.5, n_sigma=-4), ValueError, "n_sigma"),
        (lambda: claims.monte_carlo("x", [0.0, 1.0], 0.5, atol=-1), ValueError, "atol"),
        (lambda: claims.bound("x", np.ones(3), lower=np.zeros(4)), ValueError, "lower"),
        (lambda: claims.monte_carlo("x", np.ones((4, 3)), np.ones(2)), ValueError, "expected"),
    ],
)
def test_bad_tolerances_raise(call, error, argument: str) -> None:
    with pytest.raises(error, match=argument):
        call()


def test_vacuous_error_is_a_value_error_and_a_claim_error() -> None:
    assert issubclass(claims.VacuousClaimError, ValueError)
    assert issubclass(claims.VacuousClaimError, claims.ClaimError)


def test_honest_claims_still_pass_and_fail() -> None:
    claims.close("finite tolerances pass", 1.0, 1.0 + 1e-9, rtol=1e-6, atol=0.0)
    claims.close("numpy scalars are tolerances", 1.0, 1.0, rtol=np.float32(1e-6))
    claims.bound("a partly infinite bound binds", np.array([1.0, 2.0]), lower=np.array([-np.inf, 1.5]))
    claims.holds("integers are conditions", np.array([1, 2]))
    with pytest.raises(claims.ClaimError):
        claims.close("NaN measured fails", math.nan, 1.0, atol=1.0)
    with pytest.raises(claims.ClaimError):
        claims.holds("false fails", np.array([True, False]))


# ---------------------------------------------------------------------------- what the page shows
def test_arrays_show_values_not_shapes() -> None:
    assert claims._fmt(np.linspace(0, 1, 11)) == "[0 … 1] (11 values)"
    assert claims._fmt(np.full(7, 2.5)) == "2.5 (all 7 values)"
    assert claims._fmt(np.arange(4.0)) == "[0, 1, 2, 3]"
    assert "array" not in claims._fmt(np.ones((3, 5)))
    assert claims._fmt(np.array([True] * 5 + [False])) == "5 of 6 true"
    rec = claims.close("many values", np.linspace(0, 1, 11), np.linspace(0, 1, 11))
    assert "array(" not in rec.expected and "11 values" in rec.expected


def test_symbolic_claims_carry_latex() -> None:
    k, s = sp.symbols("k s", positive=True)
    expr = k * s**k - s ** (k - 2) * (k - 1)
    rec = claims.symbolic("an identity", expr, sp.expand(expr))
    assert rec.measured_tex == sp.latex(expr)
    html = claims.render_claim(rec)
    assert r"\(" in html or r"\[" in html
    assert "**" not in html  # no Python syntax on the page


def test_anchors_are_slugs_and_unique() -> None:
    a = claims.holds(r"the $\log n$ scale keeps entropy", True)
    b = claims.holds(r"the $\log n$ scale keeps entropy", True)
    c = claims.holds("Größe ≤ 1", True)
    assert a.anchor == "claim-the-log-n-scale-keeps-entropy"
    assert b.anchor == a.anchor + "-2"
    assert c.anchor.startswith("claim-") and c.anchor.isascii()
    assert f'id="{a.anchor}"' in claims.render_claim(a)


def test_claim_line_renders_math_and_escapes_text() -> None:
    rec = claims.close(r"$\sqrt{x}$ <b>not bold</b> & co", 2.0, 2.0)
    page = claims.render_claim(rec)
    assert '<span class="math notranslate nohighlight">\\(\\sqrt{x}\\)</span>' in page
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; co" in page
    assert page.startswith("<details") and "</summary>" in page
    assert "2 vs 2" in page


def test_summary_and_map_display_nothing_raw() -> None:
    claims.holds("one", True)
    claims.close("two", 1.0, 1.0)
    recs = claims.summary()
    assert len(recs) == 2 and "ClaimRecord" not in repr(recs)
    assert hasattr(recs, "_ipython_display_")
    rows = claims.article_map([("eq. (1)", "checked", "one"), ("an aside", "omitted", "off topic")])
    assert "{" not in repr(rows) and rows[0]["claims"] == ["one"]
    page = claims.render_article_map(rows, claims.records())
    assert 'href="#claim-one"' in page and "suma-badge-checked" in page
    assert "coverage 50%" in page
    summary = claims.render_summary(claims.records())
    assert summary.startswith("<details") and 'href="#claim-two"' in summary


def test_sweeps_fold_into_one_line_keeping_anchors() -> None:
    recs = [claims.close(f"point {i}", float(i), float(i)) for i in range(5)]
    page = claims.render_claims(recs)
    assert page.count("<details") == 1 and "5 claims" in page
    for r in recs:
        assert f'id="{r.anchor}"' in page
