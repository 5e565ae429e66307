"""Read the book's table of contents (``_toc.yml``)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _files(node) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(str(node["file"]))
        for key in ("root", "parts", "chapters", "sections"):
            if key == "root" and key in node:
                out.append(str(node["root"]))
            elif key in node:
                for child in node[key]:
                    out.extend(_files(child))
    elif isinstance(node, list):
        for child in node:
            out.extend(_files(child))
    return out


def toc_files(root: Path = ROOT) -> list[str]:
    """Every document named in ``_toc.yml`` (paths without suffix, relative to the repository root)."""
    data = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    return _files(data)


def toc_notebooks(root: Path = ROOT) -> list[str]:
    """The slugs of the chapter notebooks listed in ``_toc.yml``, in book order."""
    return [f.split("/", 1)[1] for f in toc_files(root) if f.startswith("notebooks/")]
