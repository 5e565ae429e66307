"""Build the verification ledger and the execution report from executed notebooks.

Both pages are generated from ``_build/executed/*.ipynb``: each claim check in a notebook leaves its record
in the metadata of its output (key ``suma_claim``), and ``suma_lib.setup_notebook`` leaves the run's
environment (key ``suma_env``); papermill leaves each cell's duration.
"""

from __future__ import annotations

import json
from pathlib import Path


def _outputs(nb: dict):
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            yield out


def claims_of(nb: dict) -> list[dict]:
    """Every claim record in an executed notebook, in order."""
    return [out["metadata"]["suma_claim"] for out in _outputs(nb) if "suma_claim" in out.get("metadata", {})]


def article_map_of(nb: dict) -> list[dict]:
    """The article map recorded by ``claims.article_map`` ([] if the chapter has none)."""
    for out in _outputs(nb):
        if "suma_article_map" in out.get("metadata", {}):
            return out["metadata"]["suma_article_map"]
    return []


def env_of(nb: dict) -> dict:
    """The environment record of an executed notebook ({} if setup_notebook never ran)."""
    for out in _outputs(nb):
        if "suma_env" in out.get("metadata", {}):
            return out["metadata"]["suma_env"]
    return {}


def runtime_of(nb: dict) -> float:
    """Wall time of the notebook's cells as papermill measured them (seconds)."""
    total = 0.0
    for cell in nb.get("cells", []):
        dur = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if isinstance(dur, (int, float)):
            total += dur
    return total


def title_of(nb: dict, slug: str) -> str:
    """The notebook's first Markdown heading."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return slug


def load(executed_dir: Path, slugs: list[str]) -> dict[str, dict]:
    """Load the executed notebooks of ``slugs`` (raises if one is missing)."""
    out = {}
    for slug in slugs:
        path = executed_dir / f"{slug}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run tools/run_notebooks.py first")
        out[slug] = json.loads(path.read_text(encoding="utf-8"))
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("`", "'")


def ledger_markdown(nbs: dict[str, dict]) -> str:
    """The ledger: one row per claim checked anywhere in the book."""
    rows = []
    counts = {"symbolic": 0, "numeric": 0, "experiment": 0}
    n_pass = 0
    for slug, nb in nbs.items():
        for rec in claims_of(nb):
            counts[rec["method"]] = counts.get(rec["method"], 0) + 1
            n_pass += rec["status"] == "pass"
            status = "✅ pass" if rec["status"] == "pass" else "❌ fail"
            rows.append(
                f"| [{slug}](../notebooks/{slug}.ipynb) | {_cell(rec['claim'])} | {rec['method']} | "
                f"{_cell(rec['measured'])} | {_cell(rec['expected'])} | {_cell(rec['tolerance'])} | {status} |"
            )
    total = len(rows)
    head = (
        f"**{total} claims** in {len(nbs)} chapters: {counts.get('symbolic', 0)} symbolic, "
        f"{counts.get('numeric', 0)} numeric, {counts.get('experiment', 0)} experiment; "
        f"**{n_pass} passed**, {total - n_pass} failed.\n\n"
        "| chapter | claim | method | measured | expected | tolerance | status |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(rows) + "\n"


def report_markdown(nbs: dict[str, dict]) -> str:
    """The execution report: one row per notebook (run time, profile, device, versions)."""
    lines = [
        "| chapter | cells (s) | wall (s) | profile | device | claims | torch | numpy | scipy | sympy | suma_lib |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    for slug, nb in nbs.items():
        env = env_of(nb)
        secs = runtime_of(nb)
        total += secs
        lines.append(
            f"| [{slug}](../notebooks/{slug}.ipynb) | {secs:.1f} | "
            f"{nb.get('metadata', {}).get('suma', {}).get('seconds', float('nan')):.1f} | {env.get('profile', '?')} | "
            f"{_cell(env.get('device', '?'))} | {len(claims_of(nb))} | {env.get('torch', '?')} | "
            f"{env.get('numpy', '?')} | {env.get('scipy', '?')} | {env.get('sympy', '?')} | "
            f"{env.get('suma_lib', '?')} |"
        )
    envs = [env_of(nb) for nb in nbs.values()]
    pythons = sorted({e.get("python", "?") for e in envs})
    devices = sorted({str(e.get("device_name", "?")) for e in envs})
    head = (
        f"{len(nbs)} notebooks, {total:.0f} s of cell time in all (papermill's per-cell durations; wall time "
        "adds the kernel's start, and notebooks run in parallel over the cores). "
        f"Python {', '.join(pythons)}; processor/GPU: {', '.join(_cell(d) for d in devices)}.\n\n"
    )
    return head + "\n".join(lines) + "\n"
