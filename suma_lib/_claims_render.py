r"""Formatting and rendering of claims: values on a report line, anchors, LaTeX and the book's HTML.

Private helpers of :mod:`suma_lib.claims`, which re-exports every public name (import from there).
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

import numpy as np

METHODS = ("symbolic", "numeric", "experiment")
MAP_STATUSES = ("checked", "retold", "departs", "omitted")


class _Quiet(list):
    """A list that shows nothing as a cell's last value (the call already displayed its table)."""

    def _ipython_display_(self) -> None:
        """Display nothing."""

    def __repr__(self) -> str:
        return f"<{len(self)} {self._what}>"

    _what = "items"


class _ClaimList(_Quiet):
    _what = "claim records"


class _MapRows(_Quiet):
    _what = "article-map rows"


# ----------------------------------------------------------------------------------------- helpers
def _fmt(x: Any) -> str:
    """Format a number or an array compactly for a report line (values, never just a shape)."""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    arr = np.asarray(x)
    if arr.ndim == 0:
        v = arr.item()
        if isinstance(v, complex):
            return f"{v.real:.6g}{v.imag:+.6g}j"
        if isinstance(v, (int, np.integer)):
            return str(v)
        try:
            return f"{float(v):.6g}"
        except (TypeError, ValueError):
            return str(v)
    if arr.size <= 4:
        return "[" + ", ".join(_fmt(v) for v in arr.ravel()) + "]"
    shape = "×".join(str(n) for n in arr.shape)
    count = f"{arr.size} values" if arr.ndim == 1 else f"{shape} values"
    if arr.dtype == bool:
        return f"{int(arr.sum())} of {arr.size} true"
    try:
        flat = arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64).ravel()
    except (TypeError, ValueError):
        return f"array of {count}"
    if np.iscomplexobj(flat):
        return f"{count}, max |z| {np.nanmax(np.abs(flat)):.4g}"
    finite = flat[np.isfinite(flat)]
    if finite.size and np.all(flat == flat[0]):
        return f"{_fmt(flat[0])} (all {count})"
    if not finite.size:
        return f"no finite entry ({count})"
    extra = "" if finite.size == flat.size else f", {flat.size - finite.size} not finite"
    return f"[{finite.min():.4g} … {finite.max():.4g}] ({count}{extra})"


def _slug(text: str) -> str:
    """A URL- and id-safe slug of a claim name (ASCII letters, digits and dashes)."""
    text = re.sub(r"\\([A-Za-z]+)", r" \1 ", text)  # \log n -> log n
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:60].rstrip("-") or "x"


def anchor_of(claim: str, taken: Any = ()) -> str:
    """The HTML id of a claim's line: ``claim-<slug>``, then ``-2``, ``-3`` ... if ``taken`` has it.

    Parameters
    ----------
    claim : str
        The claim's name.
    taken : iterable of str
        Anchors already used in the same chapter.
    """
    base = "claim-" + _slug(str(claim))
    taken = set(taken)
    anchor, k = base, 1
    while anchor in taken:
        k += 1
        anchor = f"{base}-{k}"
    return anchor


def _display(bundle: dict, metadata: dict) -> bool:
    """Display a MIME bundle with metadata when running in an IPython kernel; report whether it did."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    display(bundle, raw=True, metadata=metadata)
    return True


# ----------------------------------------------------------------------------------------- rendering
_MATH = re.compile(r"(?<!\\)\$(.+?)(?<!\\)\$")


def _math_span(tex: str, display: bool = False) -> str:
    """TeX for the page's MathJax (Sphinx's own markup, which the book's MathJax set-up processes)."""
    open_, close_ = (r"\[", r"\]") if display else (r"\(", r"\)")
    cls = "math notranslate nohighlight"
    return f'<span class="{cls}">{open_}{html.escape(tex, quote=False)}{close_}</span>'


def _rich(text: str) -> str:
    """HTML of a short text: ``$...$`` becomes math, the rest is escaped (no Markdown, no emphasis)."""
    out, pos = [], 0
    for m in _MATH.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        out.append(_math_span(m.group(1)))
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _get(rec: Any, key: str) -> str:
    return str(rec.get(key, "") if isinstance(rec, dict) else getattr(rec, key, ""))


def _clip(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _brief(rec: Any) -> str:
    """The short comparison shown on the claim's line (the details hold the full values)."""
    method, tol = _get(rec, "method"), _get(rec, "tolerance")
    if tol == "exact (SymPy)":
        return "proved by SymPy"
    meas, exp = _get(rec, "measured"), _get(rec, "expected")
    if tol == "holds":
        if meas in ("True", "") and exp in ("True", ""):
            return "holds" if _get(rec, "status") == "pass" else "does not hold"
        return f"{html.escape(_clip(meas))} vs {html.escape(_clip(exp))}"
    if tol == "bound":
        return f"{html.escape(_clip(meas))}, bound {html.escape(_clip(exp, 32))}"
    del method
    tol_html = f'<span class="suma-tol">({html.escape(tol)})</span>'
    worst = re.search(r"^(.*) with max \|Δ\| (\S+)$", meas)
    if worst:  # an array: its worst deviation says more than two ranges of values
        count = re.search(r"\((\d[\d×]* values)", worst.group(1))
        over = f" over {count.group(1)}" if count else ""
        return f"max |Δ| {html.escape(worst.group(2))}{over} {tol_html}"
    return f"{html.escape(_clip(meas))} vs {html.escape(_clip(exp))} {tol_html}"


def symbolic_tex(rec: Any) -> tuple[str, str]:
    """The LaTeX of a symbolic claim's two sides (``("", "")`` for other claims or unreadable ones).

    Records made before claims carried LaTeX hold SymPy's text form; it is parsed back when it is whole
    (not cut short with "…").
    """
    m_tex, e_tex = _get(rec, "measured_tex"), _get(rec, "expected_tex")
    if m_tex or e_tex or _get(rec, "tolerance") != "exact (SymPy)":
        return m_tex, e_tex
    import sympy as sp

    out = []
    for side in (_get(rec, "measured"), _get(rec, "expected")):
        if "…" in side:
            return "", ""
        try:
            out.append(_latex(sp.sympify(side)))
        except (sp.SympifyError, SyntaxError, TypeError, ValueError, AttributeError):
            return "", ""
    return out[0], out[1]


def render_claim(rec: Any) -> str:
    """HTML of one claim's line: a mark, the name, measured against expected; details on demand.

    Parameters
    ----------
    rec : ClaimRecord or dict
        A claim record (as recorded in an output's ``suma_claim`` metadata).
    """
    status = _get(rec, "status")
    passed = status == "pass"
    anchor = _get(rec, "anchor") or anchor_of(_get(rec, "claim"))
    rows = [("method", html.escape(_get(rec, "method")))]
    m_tex, e_tex = symbolic_tex(rec)
    if m_tex or e_tex:
        rows.append(("identity", _math_span(f"{m_tex} = {e_tex}")))
    else:
        rows.append(("measured", html.escape(_get(rec, "measured"))))
        rows.append(("expected", html.escape(_get(rec, "expected"))))
    rows.append(("tolerance", html.escape(_get(rec, "tolerance"))))
    detail = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<details class="suma-claim suma-{"pass" if passed else "fail"}" id="{anchor}"'
        f'{"" if passed else " open"}><summary>'
        f'<span class="suma-mark" title="{"checked" if passed else "failed"}">{"✓" if passed else "✗"}</span> '
        f'<span class="suma-name">{_rich(_get(rec, "claim"))}</span> '
        f'<span class="suma-brief">{_brief(rec)}</span></summary>'
        f'<dl class="suma-detail">{detail}</dl></details>'
    )


def _claim_rows(recs: list) -> str:
    body = []
    for rec in recs:
        passed = _get(rec, "status") == "pass"
        anchor = _get(rec, "anchor") or anchor_of(_get(rec, "claim"))
        name = _rich(_get(rec, "claim"))
        body.append(
            f'<tr id="{anchor}" class="suma-{"pass" if passed else "fail"}">'
            f'<td class="suma-mark">{"✓" if passed else "✗"}</td><td>{name}</td>'
            f"<td>{_brief(rec)}</td></tr>"
        )
    return "".join(body)


def render_claims(recs: list) -> str:
    """HTML of a run of claims from one cell (a sweep): one folded line with a small table.

    Each row keeps its claim's anchor (browsers open the fold when a link lands inside it).
    """
    n_pass = sum(_get(r, "status") == "pass" for r in recs)
    ok = n_pass == len(recs)
    first = _rich(_get(recs[0], "claim"))
    return (
        f'<details class="suma-claim suma-sweep suma-{"pass" if ok else "fail"}"{"" if ok else " open"}>'
        "<summary>"
        f'<span class="suma-mark">{"✓" if ok else "✗"}</span> '
        f'<span class="suma-name">{len(recs)} claims</span> '
        f'<span class="suma-brief">{n_pass} of {len(recs)} checked, from “{first}”</span></summary>'
        f'<table class="suma-claims"><tbody>{_claim_rows(recs)}</tbody></table></details>'
    )


def render_summary(recs: list) -> str:
    """HTML of a chapter's claim table, folded: one line of counts, the table on demand."""
    n_pass = sum(_get(r, "status") == "pass" for r in recs)
    by = {m: sum(_get(r, "method") == m for r in recs) for m in METHODS}
    counts = ", ".join(f"{v} {k}" for k, v in by.items() if v)
    body = "".join(
        f'<tr class="suma-{"pass" if _get(r, "status") == "pass" else "fail"}">'
        f'<td class="suma-mark">{"✓" if _get(r, "status") == "pass" else "✗"}</td>'
        f'<td><a href="#{_get(r, "anchor") or anchor_of(_get(r, "claim"))}">{_rich(_get(r, "claim"))}</a></td>'
        f"<td>{html.escape(_get(r, 'method'))}</td><td>{_brief(r)}</td></tr>"
        for r in recs
    )
    return (
        f'<details class="suma-summary"><summary><b>{n_pass} of {len(recs)} claims checked out</b> '
        f"({counts}). Show the table.</summary>"
        '<table class="suma-claims"><thead><tr><th></th><th>claim</th><th>method</th>'
        f"<th>measured vs expected</th></tr></thead><tbody>{body}</tbody></table></details>"
    )


_BADGE = {"checked": "✓ checked", "retold": "retold", "departs": "departs", "omitted": "omitted"}


def map_counts(rows: list) -> dict:
    """Counts of an article map's rows by status, and its coverage (share of rows not omitted)."""
    counts = {s: sum(r["status"] == s for r in rows) for s in MAP_STATUSES}
    counts["items"] = len(rows)
    counts["coverage"] = (len(rows) - counts["omitted"]) / len(rows) if rows else 0.0
    return counts


def render_article_map(rows: list, recs: Any = ()) -> str:
    """HTML of an article map: status badges; a checked row links to the lines of its claims.

    Parameters
    ----------
    rows : list of dict
        The rows as :func:`article_map` records them.
    recs : list of ClaimRecord or dict
        The chapter's claims (for their anchors).
    """
    anchors: dict[str, str] = {}
    for r in recs:
        anchors.setdefault(_get(r, "claim"), _get(r, "anchor") or anchor_of(_get(r, "claim")))
    c = map_counts(rows)
    body = []
    for i, r in enumerate(rows, 1):
        if r["status"] == "checked":
            ref = "; ".join(
                f'<a href="#{anchors.get(n) or anchor_of(n)}">{_rich(n)}</a>' for n in r["claims"]
            )
        else:
            ref = _rich(r["note"])
        body.append(
            f'<tr class="suma-map-{r["status"]}"><td>{i}</td><td>{_rich(r["item"])}</td>'
            f'<td><span class="suma-badge suma-badge-{r["status"]}">{_BADGE[r["status"]]}</span></td>'
            f"<td>{ref}</td></tr>"
        )
    caption = (
        f'<p class="suma-map-caption"><b>{c["items"]} items</b> of the article: {c["checked"]} checked, '
        f'{c["retold"]} retold, {c["departs"]} depart, {c["omitted"]} omitted '
        f'(coverage {c["coverage"]:.0%}).</p>'
    )
    return (
        f'<div class="suma-map-wrap">{caption}<table class="suma-map"><thead><tr><th>#</th><th>item</th>'
        f'<th>status</th><th>check or note</th></tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def _latex(expr: Any, limit: int = 1000) -> str:
    """LaTeX of a SymPy expression for the page (empty when too long to be read on a line)."""
    import sympy as sp

    tex = sp.latex(expr)
    return tex if len(tex) <= limit else ""


def _short(expr: Any, limit: int = 80) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


