"""Repository hygiene: notebooks, table of contents, slugs, docstrings, dependencies, citations."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import pytest
import tomllib
import yaml

import suma_lib
from tools import sync_notebooks
from tools.toc import toc_files, toc_notebooks

ROOT = Path(__file__).resolve().parent.parent

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ARTICLES = ROOT.parent / "shared" / "ARTICLES.md"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPO_URL = CONFIG["repository"]["url"]
BRANCH = CONFIG["repository"]["branch"]


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _src(cell: dict) -> str:
    return "".join(cell.get("source", ""))


def test_every_notebook_has_its_myst_source() -> None:
    sources = {p.stem for p in (ROOT / "notebooks").glob("*.md")}
    assert sources == {p.stem for p in NOTEBOOKS}, (
        "each notebooks/<slug>.ipynb pairs with notebooks/<slug>.md"
    )


def test_notebook_pairs_are_in_sync() -> None:
    bad = sync_notebooks.out_of_sync(sync_notebooks.sources())
    assert not bad, (
        f"notebooks out of sync with their MyST sources: {bad}. The .md is the source; "
        f"regenerate the "
        f"notebooks with: {sync_notebooks.FIX}"
    )


def test_notebooks_and_toc_are_the_same_set() -> None:
    on_disk = {p.stem for p in NOTEBOOKS}
    in_toc = toc_notebooks()
    assert len(in_toc) == len(set(in_toc)), "a notebook is listed twice in _toc.yml"
    assert on_disk == set(in_toc)


def test_toc_files_exist() -> None:
    for f in toc_files():
        candidates = [ROOT / f"{f}{ext}" for ext in (".md", ".ipynb")]
        assert any(c.exists() for c in candidates), f"_toc.yml names {f}, which does not exist"


@pytest.mark.skipif(
    not ARTICLES.exists(), reason="../shared/ARTICLES.md is not beside this checkout"
)
def test_slugs_match_articles() -> None:
    slugs = re.findall(
        r"^\s*\d+\.\s+`([a-z0-9-]+)`", ARTICLES.read_text(encoding="utf-8"), flags=re.M
    )
    assert len(slugs) == 38
    assert {p.stem for p in NOTEBOOKS} <= set(slugs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_well_formed(path: Path) -> None:
    nb = _load(path)
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    assert nb["metadata"].get("accelerator") == "GPU", f"{path.name}: run {sync_notebooks.FIX}"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in code:
        assert not cell.get("outputs"), f"{path.name}: outputs committed"
        assert cell.get("execution_count") is None, f"{path.name}: execution counts committed"
    # Title cell: one H1, the article cited with its link.
    title = _src(nb["cells"][0])
    assert nb["cells"][0]["cell_type"] == "markdown" and title.startswith("# ")
    assert re.search(r"kexue\.fm/archives/\d+", title), (
        f"{path.name}: title cell does not link the article"
    )
    assert "{cite" in title, f"{path.name}: title cell cites nothing"
    # Setup cell: installs suma_lib from the configured repository only when it is not importable.
    setup = _src(code[0])
    assert "except ImportError" in setup and f"git+{REPO_URL}@{BRANCH}" in setup, path.name
    need = sorted(_extras_needed([_src(c) for c in code[1:]]))
    spec = "suma_lib" + (f"[{','.join(need)}]" if need else "") + " @ git+"
    assert spec in setup, f"{path.name}: the setup cell must install {spec!r} (the extras its imports need)"
    # Parameters cell: tagged, with exactly the three parameters.
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    names = re.findall(r"^(\w+)\s*=", _src(params[0]), flags=re.M)
    assert names == ["profile", "device", "seed"], f"{path.name}: parameters are {names}"
    assert 'profile = "ci"' in _src(params[0]) and 'device = "auto"' in _src(params[0])
    assert any("setup_notebook(" in _src(c) for c in code), (
        f"{path.name}: never calls setup_notebook"
    )


# Packages a chapter may import beyond suma_lib's own dependencies, and the extra that brings them.
EXTRA_OF = {"transformers": "models", "suma_lib.models": "models", "sklearn": "peers",
            "performer_pytorch": "peers", "torchcrf": "peers", "ot": "peers", "peft": "peers",
            "rotary_embedding_torch": "peers", "x_transformers": "peers"}


def _extras_needed(sources: list[str]) -> set[str]:
    """The extras of pyproject.toml that a chapter's code cells need (from their import statements)."""
    need = set()
    for src in sources:
        for mod in re.findall(r"^\s*(?:import|from)\s+([A-Za-z_][\w.]*)", src, flags=re.M):
            need |= {extra for name, extra in EXTRA_OF.items() if mod == name or mod.startswith(name + ".")}
        if "suma_lib.models" in src:
            need.add("models")
    return need


def test_extras_cover_the_chapters_imports() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    listed = {extra: {_norm(r).split(">")[0].split("=")[0] for r in reqs} for extra, reqs in extras.items()}
    dist = {"transformers": "transformers", "sklearn": "scikit-learn", "performer_pytorch": "performer-pytorch",
            "torchcrf": "pytorch-crf", "ot": "pot"}
    for mod, extra in EXTRA_OF.items():
        if mod in dist:
            assert dist[mod] in listed[extra], f"{dist[mod]} must be in the [{extra}] extra"


def _bib_keys() -> set[str]:
    text = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    keys = re.findall(r"^@\w+\{([^,\s]+),", text, flags=re.M)
    assert len(keys) == len(set(keys)), "duplicate keys in references.bib"
    return set(keys)


def test_every_citation_is_in_the_bibliography() -> None:
    keys = _bib_keys()
    for path in NOTEBOOKS:
        for cell in _load(path)["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", _src(cell)):
                for key in group.split(","):
                    assert key.strip() in keys, f"{path.name} cites unknown key {key.strip()!r}"


def _public_objects():
    for mod_info in pkgutil.walk_packages(suma_lib.__path__, "suma_lib."):
        if mod_info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        mod = importlib.import_module(mod_info.name)
        for name in getattr(mod, "__all__", []):
            yield mod_info.name, name, getattr(mod, name)


def test_every_public_object_has_a_docstring() -> None:
    missing = []
    for mod, name, obj in _public_objects():
        if inspect.ismodule(obj):
            continue
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(f"{mod}.{name}")
        if inspect.isclass(obj):
            for meth_name, meth in vars(obj).items():
                if (
                    inspect.isfunction(meth)
                    and not meth_name.startswith("_")
                    and not inspect.getdoc(meth)
                ):
                    missing.append(f"{mod}.{name}.{meth_name}")
    assert not missing, f"public objects without a docstring: {missing}"


def test_every_module_is_in_the_api_reference() -> None:
    api = (ROOT / "book" / "api.md").read_text(encoding="utf-8")
    for mod_info in pkgutil.walk_packages(suma_lib.__path__, "suma_lib."):
        if not mod_info.name.rsplit(".", 1)[-1].startswith("_"):
            assert f"automodule:: {mod_info.name}\n" in api, (
                f"{mod_info.name} missing from book/api.md"
            )


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {p for p in pip if not p.startswith("-e")}
    assert {_norm(r) for r in listed} == {_norm(r) for r in wanted}


def test_dependencies_are_lower_bounds_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    for req in reqs:
        assert "==" not in req, f"exact pin {req!r} breaks Colab installs"


def test_library_never_imports_book_tooling_or_peers() -> None:
    banned = re.compile(
        r"^\s*(import|from)\s+(tests|tools|papermill|jupyter_book|sklearn|performer_pytorch|pytest)\b",
        re.M,
    )
    for path in (ROOT / "suma_lib").rglob("*.py"):
        assert not banned.search(path.read_text(encoding="utf-8")), (
            f"{path} imports tooling or a peer"
        )


def test_library_has_no_hidden_device_calls() -> None:
    for path in (ROOT / "suma_lib").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert ".cuda()" not in text, f"{path} calls .cuda()"


def test_readme_module_map_is_current() -> None:
    from tools import module_map

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert module_map.readme_block(text) == module_map.table(), (
        "README.md's chapter-to-module table is out of date: python -m tools.module_map --write"
    )


def test_chapter_pointers_have_one_style() -> None:
    """Docstrings point to their chapter as ``Chapter: notebooks/<slug>.md`` (the source), never the .ipynb."""
    for path in (ROOT / "suma_lib").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"notebooks/[a-z0-9-]+\.ipynb", text), f"{path}: point to notebooks/<slug>.md"
        for slug in re.findall(r"notebooks/([a-z0-9-]+)\.md", text):
            assert (ROOT / "notebooks" / f"{slug}.md").exists(), f"{path} points to a missing chapter {slug}"


def test_no_library_module_is_over_650_lines() -> None:
    """Modules stay readable (issue 8 asks for about 600 lines at most): split along the topic's seams."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "suma_lib").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 650}
    assert not long, f"modules over 650 lines: {long}"
