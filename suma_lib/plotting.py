"""The matplotlib style shared by every figure of the book."""

from __future__ import annotations

from importlib import resources

__all__ = ["use_style", "STYLE_PATH"]

STYLE_PATH = str(resources.files("suma_lib").joinpath("suma.mplstyle"))


def use_style() -> None:
    """Apply the book's matplotlib style (colour-blind safe palette, light grid, no top/right spines)."""
    import matplotlib.pyplot as plt

    plt.style.use(STYLE_PATH)
