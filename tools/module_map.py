"""The map from each chapter to the ``suma_lib`` modules it uses, read from the chapters' sources.

Each name a chapter imports from ``suma_lib`` (``from suma_lib.x import f`` or ``suma_lib.x.f``) is resolved to the
module that defines it, so a re-export (``suma_lib.attention.favor_attention``) counts for its home module
(``attention.favor``). The README carries the table between the markers ``<!-- module-map -->`` and
``<!-- /module-map -->``; ``python -m tools.module_map --write`` refreshes it and the hygiene test fails when it is
out of date.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys

from tools.toc import ROOT, toc_notebooks

START, END = "<!-- module-map -->", "<!-- /module-map -->"
CORE = {"claims", "notebook", "device", "seeding", "plotting"}  # every chapter uses these: not listed
NOTES = {"performer": "FAVOR+: module `attention.favor`", "faster-mlm": "the article's T-TA: module `attention.tta`"}


def _cells(slug: str) -> list[str]:
    """The sources of the chapter's code cells (read by jupytext, so cell options are not code)."""
    import jupytext

    nb = jupytext.read(ROOT / "notebooks" / f"{slug}.md", fmt="md:myst")
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _home(module: str, name: str) -> str:
    """The ``suma_lib`` submodule that defines ``module.name`` (``module`` itself for submodules)."""
    mod = importlib.import_module(module)
    obj = getattr(mod, name, None)
    if obj is None:
        try:
            return importlib.import_module(f"{module}.{name}").__name__
        except ImportError:
            return module
    if isinstance(obj, type(mod)):
        return obj.__name__
    home = getattr(obj, "__module__", None) or module
    return home if home.startswith("suma_lib") else module


def modules_of(slug: str) -> list[str]:
    """The library modules (without the ``suma_lib.`` prefix, private ones folded into their parent) a chapter
    uses."""
    found: set[str] = set()
    trees = []
    for src in _cells(slug):
        lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            trees.append(ast.parse("\n".join(lines)))
        except SyntaxError as err:
            raise SyntaxError(f"notebooks/{slug}.md: a code cell does not parse: {err}") from err
    aliases = {"suma_lib": "suma_lib"}  # local name -> module it stands for
    nodes = [n for tree in trees for n in ast.walk(tree)]
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("suma_lib") and alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("suma_lib"):
            for alias in node.names:
                home = _home(node.module, alias.name)
                if home == f"{node.module}.{alias.name}":  # a submodule imported by name
                    aliases[alias.asname or alias.name] = home
                else:
                    found.add(home)
    for node in nodes:
        if isinstance(node, ast.Attribute):
            parts = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in aliases and parts:
                parts.reverse()
                base = aliases[cur.id]
                module = ".".join([base, *parts[:-1]])
                try:
                    found.add(_home(module, parts[-1]))
                except ImportError:
                    continue
    out = set()
    for mod in found:
        rel = mod.removeprefix("suma_lib").lstrip(".")
        rel = ".".join(p for p in rel.split(".") if not p.startswith("_"))
        if rel and rel.split(".")[0] not in CORE:
            out.add(rel)
    return sorted(out)


def table() -> str:
    """The Markdown table of every chapter in the table of contents."""
    rows = ["| chapter (`notebooks/<slug>.md`) | suma_lib modules it uses |", "|---|---|"]
    for slug in toc_notebooks():
        note = f" ({NOTES[slug]})" if slug in NOTES else ""
        mods = ", ".join(f"`{m}`" for m in modules_of(slug)) or "(core helpers only)"
        rows.append(f"| `{slug}`{note} | {mods} |")
    return "\n".join(rows)


def readme_block(text: str) -> str:
    """The table currently between the README's markers."""
    if START not in text or END not in text:
        raise ValueError(f"README.md has no {START} ... {END} block")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the README's table")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = table()
    if args.write:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        readme.write_text(f"{head}{START}\n{new}\n{END}{tail}", encoding="utf-8")
        return 0
    print(new)
    return 0 if readme_block(text) == new else 1


if __name__ == "__main__":
    sys.exit(main())
