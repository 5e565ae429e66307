"""Claim checks: every statement a chapter makes is backed by one of these calls.

A claim is checked in one of three ways, the ``method`` recorded in the book's verification ledger:

* ``symbolic``: an identity or equation proved by SymPy (:func:`symbolic`);
* ``numeric``: a number or array compared with its expected value within a stated tolerance
  (:func:`close`, :func:`bound`, :func:`monte_carlo`);
* ``experiment``: the outcome of a torch experiment that reproduces an article's practical point
  (any helper with ``method="experiment"``, or :func:`holds` for a yes/no property).

A passed claim prints one compact line and is recorded; a failed claim is recorded too and then raises
:class:`ClaimError`, which stops the notebook with a message that names the claim and shows measured
against expected. Inside Jupyter each record travels in the cell output's metadata (key ``suma_claim``),
which is how the book's ledger is built from the executed notebooks rather than typed by hand.

The expected value of a claim must come from the derivation (a closed form, a bound, a peer library), never
from the code under test.

Value formatting, anchors and the book's HTML live in the private module ``suma_lib._claims_render``;
every name is importable from here.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._claims_render import MAP_STATUSES as _MAP_STATUSES
from ._claims_render import (  # noqa: F401 (re-exports; tools/ and tests use _fmt, _display, _math_span, _rich)
    METHODS,
    _ClaimList,
    _display,
    _fmt,
    _latex,
    _MapRows,
    _math_span,
    _rich,
    _short,
    anchor_of,
    map_counts,
    render_article_map,
    render_claim,
    render_claims,
    render_summary,
    symbolic_tex,
)

__all__ = [
    "MAP_STATUSES",
    "ClaimError",
    "ClaimRecord",
    "VacuousClaimError",
    "anchor_of",
    "article_map",
    "bound",
    "close",
    "holds",
    "map_counts",
    "monte_carlo",
    "records",
    "render_article_map",
    "render_claim",
    "render_claims",
    "render_summary",
    "reset",
    "summary",
    "symbolic",
    "symbolic_tex",
]

#: The statuses of an article map's rows (see :func:`article_map`).
MAP_STATUSES = _MAP_STATUSES
_RECORDS: list[ClaimRecord] = []


class ClaimError(AssertionError):
    """Raised when a claim does not check out; the message names the claim and shows the numbers."""


class VacuousClaimError(ClaimError, ValueError):
    """Raised before anything is recorded when a claim could not fail.

    A measurement that is empty, ``None`` or NaN, or a tolerance that is infinite, negative or NaN, would
    make the check pass whatever the truth; the message names the argument. It is a :class:`ValueError`
    (bad input) and a :class:`ClaimError` (the claim is not established).
    """


@dataclass(frozen=True)
class ClaimRecord:
    """One checked claim, as it appears in a chapter's summary and in the verification ledger.

    ``anchor`` is the HTML id of the claim's line in its chapter (``claim-<slug of the name>``, with
    ``-2``, ``-3`` ... for repeated names); ``measured_tex`` and ``expected_tex`` hold the two sides of a
    symbolic claim in LaTeX (empty for the other methods).
    """

    claim: str
    method: str
    measured: str
    expected: str
    tolerance: str
    status: str  # "pass" or "fail"
    anchor: str = ""
    measured_tex: str = ""
    expected_tex: str = ""

    @property
    def passed(self) -> bool:
        """Whether the claim checked out."""
        return self.status == "pass"

    def _ipython_display_(self) -> None:
        """Show nothing when a record is a cell's last value: the check already printed its line."""

    def line(self) -> str:
        """The compact one-line report printed for this claim."""
        mark = "✓" if self.passed else "✗"
        return (
            f"{mark} [{self.method}] {self.claim} — measured {self.measured}; "
            f"expected {self.expected} ({self.tolerance})"
        )


# ----------------------------------------------------------------------------------------- helpers
def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert scalars, lists, NumPy arrays and torch tensors (any device) to a float64 NumPy array."""
    if x is None:
        raise VacuousClaimError(f"{name} is None: there is nothing to check")
    try:
        import torch

        if isinstance(x, torch.Tensor):
            if x.device.type == "meta":
                raise ValueError(f"{name} is on the meta device and holds no values to check")
            x = x.detach().to("cpu")
            x = x.to(torch.complex128 if x.is_complex() else torch.float64).numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    try:
        arr = np.asarray(x)
        if arr.dtype == object:
            if any(v is None for v in arr.ravel()):
                raise VacuousClaimError(f"{name} holds None: there is nothing to check")
            arr = arr.astype(np.float64)
        if not np.iscomplexobj(arr):
            arr = arr.astype(np.float64)
    except (TypeError, ValueError) as err:
        if isinstance(err, VacuousClaimError):
            raise
        raise TypeError(f"{name} must be a number, an array or a tensor, got {type(x).__name__}") from err
    return arr


def _nonempty(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.size == 0:
        raise VacuousClaimError(f"{name} is empty (shape {arr.shape}): an empty check cannot fail")
    return arr


def _tolerance(value: Any, name: str, *, positive: bool = False) -> float:
    """A finite, non-negative (or positive) tolerance, as a float; raise naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise VacuousClaimError(f"{name} must be finite, got {value!r}: an infinite tolerance cannot fail")
    if v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return v


def _check_name(claim: Any) -> str:
    if not isinstance(claim, str) or not claim.strip():
        raise TypeError("claim must be a non-empty string that states what is being checked")
    return claim.strip()


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _emit(record: ClaimRecord) -> None:
    """Record the claim and show its line (with the record in the output's metadata under Jupyter)."""
    _RECORDS.append(record)
    if not _display({"text/plain": record.line(), "text/html": render_claim(record)},
                    {"suma_claim": asdict(record)}):
        print(record.line())


def _finish(claim, method, measured, expected, tolerance, ok, measured_tex="", expected_tex="") -> ClaimRecord:
    record = ClaimRecord(
        claim=claim,
        method=method,
        measured=measured,
        expected=expected,
        tolerance=tolerance,
        status="pass" if ok else "fail",
        anchor=anchor_of(claim, (r.anchor for r in _RECORDS)),
        measured_tex=measured_tex,
        expected_tex=expected_tex,
    )
    _emit(record)
    if not ok:
        raise ClaimError(
            f"Claim failed: {claim}\n  measured:  {measured}\n  expected:  {expected}\n"
            f"  tolerance: {tolerance}"
        )
    return record


# ----------------------------------------------------------------------------------------- checks
def symbolic(claim: str, lhs: Any, rhs: Any = 0, *, method: str = "symbolic") -> ClaimRecord:
    """Check the identity ``lhs == rhs`` with SymPy.

    The difference is simplified; the claim passes only if SymPy proves it to be zero (``simplify`` gives
    0, or ``equals(0)`` is ``True``). A difference SymPy cannot decide counts as a failure.

    Parameters
    ----------
    claim : str
        What is being checked, in words.
    lhs, rhs : sympy expression or number
        The two sides of the identity (``rhs`` defaults to 0).
    method : str
        Ledger category, ``"symbolic"`` by default.

    Returns
    -------
    ClaimRecord

    Raises
    ------
    ClaimError
        If the identity is not proved.
    """
    import sympy as sp

    claim = _check_name(claim)
    method = _check_method(method)
    for name, side in (("lhs", lhs), ("rhs", rhs)):
        if side is None:
            raise VacuousClaimError(f"{name} is None: there is nothing to check")
    try:
        lhs_s, rhs_s = sp.sympify(lhs), sp.sympify(rhs)
    except (sp.SympifyError, TypeError) as err:
        raise TypeError("lhs and rhs must be SymPy expressions or numbers") from err
    for name, side in (("lhs", lhs_s), ("rhs", rhs_s)):
        if isinstance(side, sp.MatrixBase) and 0 in side.shape:
            raise VacuousClaimError(f"{name} is an empty matrix: an empty identity cannot fail")
        if side is sp.nan or (isinstance(side, sp.Basic) and side.has(sp.nan)):
            raise VacuousClaimError(f"{name} contains NaN")
    if isinstance(lhs_s, sp.MatrixBase) or isinstance(rhs_s, sp.MatrixBase):
        if getattr(lhs_s, "shape", None) != getattr(rhs_s, "shape", None):
            raise ValueError(f"lhs and rhs must have the same shape, got {getattr(lhs_s, 'shape', ())} "
                             f"and {getattr(rhs_s, 'shape', ())}")
        ok = all(_is_zero(e) for e in (lhs_s - rhs_s))
    else:
        ok = _is_zero(lhs_s - rhs_s)
    measured = _short(lhs_s)
    return _finish(claim, method, measured, _short(rhs_s), "exact (SymPy)", ok,
                   measured_tex=_latex(lhs_s), expected_tex=_latex(rhs_s))



def _is_zero(expr: Any) -> bool:
    """Whether SymPy proves ``expr == 0`` (simplify, then ``equals``, then trig expansion)."""
    import sympy as sp

    diff = sp.simplify(expr)
    if diff == 0:
        return True
    if hasattr(diff, "equals") and diff.equals(0) is True:
        return True
    return sp.simplify(sp.expand(sp.expand_trig(diff))) == 0



def close(
    claim: str,
    measured: Any,
    expected: Any,
    *,
    rtol: float = 1e-7,
    atol: float = 0.0,
    method: str = "numeric",
) -> ClaimRecord:
    """Check ``|measured - expected| <= atol + rtol * |expected|`` elementwise.

    Parameters
    ----------
    claim : str
        What is being checked, in words.
    measured, expected : number, array or tensor
        Broadcastable to each other. Non-finite values fail the claim unless they match exactly
        (e.g. ``inf`` expected and measured).
    rtol, atol : float
        Relative and absolute tolerance; state the reason for the tolerance in the notebook's text.
    method : str
        Ledger category, ``"numeric"`` by default.

    Raises
    ------
    ClaimError
        If any element is outside the tolerance.
    """
    claim = _check_name(claim)
    method = _check_method(method)
    rtol = _tolerance(rtol, "rtol")
    atol = _tolerance(atol, "atol")
    if rtol == 0 and atol == 0:
        tol_text = "exact"
    else:
        tol_text = " + ".join(t for t in (f"atol {atol:.3g}" if atol else "", f"rtol {rtol:.3g}" if rtol else "") if t)
    m = _nonempty(_to_numpy(measured, "measured"), "measured")
    e = _nonempty(_to_numpy(expected, "expected"), "expected")
    try:
        m_b, e_b = np.broadcast_arrays(m, e)
    except ValueError as err:
        raise ValueError(f"measured {m.shape} and expected {e.shape} do not broadcast") from err
    _nonempty(m_b, "measured (broadcast with expected)")
    same = (m_b == e_b)  # equal infinities count as equal
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(m_b - e_b)
        ok_el = same | (np.isfinite(err) & (err <= atol + rtol * np.abs(e_b)))
    ok = bool(np.all(ok_el))
    if m_b.size <= 4:
        meas_text = _fmt(m)
    else:
        worst = float(np.nanmax(np.where(same, 0.0, err))) if m_b.size else 0.0
        meas_text = f"{_fmt(m)} with max |Δ| {worst:.3g}"
    return _finish(claim, method, meas_text, _fmt(e), tol_text, ok)


def bound(
    claim: str,
    value: Any,
    *,
    lower: Any = None,
    upper: Any = None,
    strict: bool = False,
    method: str = "numeric",
) -> ClaimRecord:
    """Check ``lower <= value <= upper`` elementwise (``<`` with ``strict=True``).

    Parameters
    ----------
    claim : str
        What is being checked, in words.
    value : number, array or tensor
        The measured quantity; for arrays the smallest and largest entries are reported.
    lower, upper : number, array or tensor, optional
        The bounds (at least one). They come from the derivation, never from the code under test.
    strict : bool
        Use strict inequalities.
    method : str
        Ledger category, ``"numeric"`` by default.

    Raises
    ------
    ClaimError
        If any entry violates a bound, or is NaN.
    """
    claim = _check_name(claim)
    method = _check_method(method)
    if lower is None and upper is None:
        raise ValueError("bound needs at least one of lower= or upper=")
    v = _nonempty(_to_numpy(value, "value"), "value")
    if np.iscomplexobj(v):
        raise TypeError("value must be real for a bound")
    ok = bool(np.all(~np.isnan(v)))
    parts = []
    for name, b, vacuous in (("lower", lower, -np.inf), ("upper", upper, np.inf)):
        if b is None:
            continue
        arr = _nonempty(_to_numpy(b, name), name)
        if np.iscomplexobj(arr) or np.any(np.isnan(arr)):
            raise VacuousClaimError(f"{name} must be real and not NaN, got {_fmt(b)}")
        if np.all(arr == vacuous):
            raise VacuousClaimError(f"{name}={_fmt(b)} bounds nothing: the claim could not fail")
        try:
            np.broadcast_shapes(v.shape, arr.shape)
        except ValueError as err:
            raise ValueError(f"value {v.shape} and {name} {arr.shape} do not broadcast") from err
        if name == "lower":
            ok &= bool(np.all(v > arr) if strict else np.all(v >= arr))
            parts.append(f"{'>' if strict else '≥'} {_fmt(b)}")
        else:
            ok &= bool(np.all(v < arr) if strict else np.all(v <= arr))
            parts.append(f"{'<' if strict else '≤'} {_fmt(b)}")
    if v.size > 1:
        meas_text = f"min {np.nanmin(v):.6g}, max {np.nanmax(v):.6g} over {v.size}"
    else:
        meas_text = _fmt(v)
    return _finish(claim, method, meas_text, " and ".join(parts), "bound", ok)


def monte_carlo(
    claim: str,
    samples: Any,
    expected: Any,
    *,
    n_sigma: float = 4.0,
    atol: float = 0.0,
    method: str = "numeric",
) -> ClaimRecord:
    """Check that the mean of i.i.d. ``samples`` matches ``expected`` within its statistical error.

    The tolerance is ``n_sigma`` standard errors of the mean (sample standard deviation over the square root
    of the sample size) plus ``atol`` for any known bias (e.g. discretisation). With the default
    ``n_sigma=4`` a correct claim fails with probability below 1e-4; a wrong one fails once the sample is
    large enough to resolve the difference.

    Parameters
    ----------
    claim : str
        What is being checked, in words.
    samples : array or tensor, shape ``(N, ...)``
        ``N >= 2`` independent draws along the first axis; trailing axes are checked componentwise.
    expected : number, array or tensor
        The exact expectation, from the derivation; broadcastable to ``samples.shape[1:]``.
    n_sigma : float
        Width of the acceptance band in standard errors.
    atol : float
        Extra absolute tolerance for a known, bounded bias.
    method : str
        Ledger category, ``"numeric"`` by default.

    Raises
    ------
    ClaimError
        If any component's mean is outside the band.
    """
    claim = _check_name(claim)
    method = _check_method(method)
    n_sigma = _tolerance(n_sigma, "n_sigma", positive=True)
    atol = _tolerance(atol, "atol")
    s = _nonempty(_to_numpy(samples, "samples"), "samples")
    if s.ndim == 0 or s.shape[0] < 2:
        raise ValueError(f"samples must hold at least 2 draws along axis 0, got shape {s.shape}")
    n = s.shape[0]
    mean = s.mean(axis=0)
    sem = s.std(axis=0, ddof=1) / math.sqrt(n)
    e = _nonempty(_to_numpy(expected, "expected"), "expected")
    try:
        np.broadcast_shapes(mean.shape, e.shape)
    except ValueError as err:
        raise ValueError(f"expected {e.shape} does not broadcast to samples' trailing shape "
                         f"{mean.shape}") from err
    tol = n_sigma * sem + atol
    with np.errstate(invalid="ignore"):
        ok = bool(np.all(np.abs(mean - e) <= tol))
    tol_text = f"{n_sigma:g}σ, σ = {_fmt(np.max(sem))}" + (f" + atol {atol:.3g}" if atol else "")
    return _finish(claim, method, f"{_fmt(mean)} (N = {n})", _fmt(e), tol_text, ok)


def holds(
    claim: str,
    condition: Any,
    *,
    measured: Any = None,
    expected: Any = None,
    method: str = "experiment",
) -> ClaimRecord:
    """Check a yes/no property (all entries true for an array or tensor of booleans).

    Use it for structural facts (a mask reaches every token, an output does not depend on an input) and
    for the outcome of an experiment; ``measured`` and ``expected`` describe what was compared.

    Raises
    ------
    ClaimError
        If the condition is false.
    VacuousClaimError
        If the condition is None, empty or NaN.
    """
    claim = _check_name(claim)
    method = _check_method(method)
    c = _to_numpy(condition, "condition")
    if c.size == 0:
        raise VacuousClaimError(f"condition is empty (shape {c.shape}): an empty check cannot fail")
    if np.iscomplexobj(c) or np.any(np.isnan(c)):
        raise VacuousClaimError("condition is NaN (or holds NaN): a NaN is neither true nor false")
    ok = bool(np.all(c.astype(bool)))
    meas_text = _fmt(measured) if measured is not None else str(ok)
    exp_text = _fmt(expected) if expected is not None else "True"
    if isinstance(measured, str):
        meas_text = measured
    if isinstance(expected, str):
        exp_text = expected
    return _finish(claim, method, meas_text, exp_text, "holds", ok)


# ----------------------------------------------------------------------------------------- summary
def records() -> list[ClaimRecord]:
    """Return the claims checked so far in this process (in order)."""
    return list(_RECORDS)


def reset() -> None:
    """Forget the claims recorded so far (a notebook's setup calls this)."""
    _RECORDS.clear()


def summary() -> list[ClaimRecord]:
    """Show the chapter's claims as one folded table and return their records.

    The table opens from a single line of counts (the chapter's prose summary comes first); each row
    links to its claim's line. The returned list shows nothing when it is a cell's last value.

    Raises
    ------
    ClaimError
        If no claim was checked, or if any recorded claim failed.
    """
    recs = records()
    if not recs:
        raise ClaimError("summary(): no claim was checked in this notebook")
    n_pass = sum(r.passed for r in recs)
    text = f"{n_pass} of {len(recs)} claims checked out.\n" + "\n".join(r.line() for r in recs)
    if not _display({"text/html": render_summary(recs), "text/plain": text},
                    {"suma_summary": {"claims": len(recs), "passed": n_pass}}):
        print(text)
    failed = [r.claim for r in recs if not r.passed]
    if failed:
        raise ClaimError(f"{len(failed)} claim(s) failed: {failed}")
    return _ClaimList(recs)


# ----------------------------------------------------------------------------------------- article map
def article_map(rows: Any) -> list[dict]:
    """Record and show the chapter's article map: one row per substantive item of the article.

    Every chapter ends with this call. Each row is a tuple ``(item, status, ref)``, in the article's order:

    * ``item``: the item in a few words (an equation, a derivation step, a quantitative claim, an experiment,
      or one of the author's readings, objections or conjectures), with the article's equation number if it has one;
    * ``status``: ``"checked"`` (a claim of this chapter checks it), ``"retold"`` (explained in the
      chapter's words; it cannot be checked, e.g. an opinion or a paper's reported number), ``"departs"``
      (the article is wrong or loose here; the chapter's Erratum or text says where and why) or
      ``"omitted"`` (left out);
    * ``ref``: for ``checked``, the exact name of a claim checked earlier in this notebook, or a list of
      such names; for the other statuses, a short note: why it cannot be checked, what the chapter says
      instead, or why it is omitted.

    The map travels in the output's metadata (key ``suma_article_map``), from which the ledger computes each
    chapter's coverage (items checked, retold or departing, over all items).

    Returns
    -------
    list of dict
        The rows as recorded (``item``, ``status``, ``claims``, ``note``); the list shows nothing when it
        is a cell's last value.

    Raises
    ------
    TypeError, ValueError
        For a malformed row, an unknown status, a ``checked`` row naming no claim or a claim that was not
        checked in this notebook, or a note missing where one is required.
    """
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise TypeError("rows must be a list of (item, status, ref) tuples")
    rows = list(rows)
    if not rows:
        raise ValueError("rows must list at least one item of the article")
    known = {r.claim: r for r in _RECORDS}
    out: list[dict] = []
    for i, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) != 3:
            raise TypeError(f"rows[{i}] must be an (item, status, ref) tuple, got {row!r}")
        item, status, ref = row
        if not isinstance(item, str) or not item.strip():
            raise TypeError(f"rows[{i}]: item must be a non-empty string")
        if status not in MAP_STATUSES:
            raise ValueError(f"rows[{i}] ({item!r}): status must be one of {MAP_STATUSES}, got {status!r}")
        if status == "checked":
            names = [ref] if isinstance(ref, str) else list(ref or [])
            if not names or not all(isinstance(n, str) for n in names):
                raise ValueError(f"rows[{i}] ({item!r}): a checked item names the claim(s) that check it")
            unknown = [n for n in names if n.strip() not in known]
            if unknown:
                raise ValueError(f"rows[{i}] ({item!r}): no claim named {unknown} was checked in this notebook")
            failed = [n for n in names if not known[n.strip()].passed]
            if failed:
                raise ClaimError(f"rows[{i}] ({item!r}): claims {failed} failed")
            out.append({"item": item.strip(), "status": status, "claims": [n.strip() for n in names],
                        "note": ""})
        else:
            if not isinstance(ref, str) or not ref.strip():
                raise ValueError(f"rows[{i}] ({item!r}): a {status} item needs a short note (why, or where)")
            out.append({"item": item.strip(), "status": status, "claims": [], "note": ref.strip()})
    c = map_counts(out)
    head = ("#", "item", "status", "check or note")
    text_rows = [(str(i), r["item"], r["status"], "; ".join(r["claims"]) or r["note"])
                 for i, r in enumerate(out, 1)]
    text = (f"{c['items']} items: {c['checked']} checked, {c['retold']} retold, {c['departs']} depart, "
            f"{c['omitted']} omitted (coverage {c['coverage']:.0%})\n"
            + "\n".join(" | ".join(row) for row in [head, *text_rows]))
    if not _display({"text/html": render_article_map(out, _RECORDS), "text/plain": text},
                    {"suma_article_map": out}):
        print(text)
    return _MapRows(out)
