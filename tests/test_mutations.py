"""Every check can fail: each key formula of the library, broken on purpose, makes its chapter fail.

``tools/mutate.py`` holds the mutations (a wrong constant, a dropped term, an off-by-one) and the chapters
that must notice each one; every mutation runs on a scratch copy of ``suma_lib``, never on the work tree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import mutate

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mutation", mutate.MUTATIONS, ids=lambda m: m.what)
def test_mutation_snippet_exists_once(mutation: mutate.Mutation) -> None:
    text = (ROOT / "suma_lib" / mutation.path).read_text(encoding="utf-8")
    assert text.count(mutation.old) == 1, f"update tools/mutate.py: {mutation.what!r} no longer applies"
    assert mutation.old != mutation.new


@pytest.mark.mutations
@pytest.mark.parametrize("mutation", mutate.MUTATIONS, ids=lambda m: m.what)
def test_mutation_is_caught_by_its_chapter(mutation: mutate.Mutation) -> None:
    result = mutate.check(mutation)
    survived = [slug for slug, caught in result["caught"].items() if not caught]
    assert not survived, f"{mutation.what}: chapters {survived} still pass with the library broken"
