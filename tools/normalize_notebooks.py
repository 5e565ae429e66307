"""Normalise the committed notebooks: no outputs, the python3 kernelspec, and Colab's GPU runtime.

Run after converting or editing a notebook (``python tools/normalize_notebooks.py``); the hygiene tests
check the same properties. ``accelerator: GPU`` makes Colab open the notebook on a GPU runtime.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
COLAB = {"provenance": [], "gpuType": "T4"}


def normalize(path: Path) -> bool:
    """Normalise one notebook in place; return whether it changed."""
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    meta = nb.setdefault("metadata", {})
    meta["kernelspec"] = KERNELSPEC
    meta["accelerator"] = "GPU"
    meta["colab"] = COLAB
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if new != text:
        path.write_text(new, encoding="utf-8")
        return True
    return False


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        if normalize(path):
            print(f"normalised {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
