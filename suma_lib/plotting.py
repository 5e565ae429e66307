"""The matplotlib style shared by every figure of the book."""

from __future__ import annotations

from importlib import resources

__all__ = ["STYLE_PATH", "use_style"]

STYLE_PATH = str(resources.files("suma_lib").joinpath("suma.mplstyle"))

#: Formats of inline figures: SVG (sharp at any zoom) and a 2x PNG (used by the book when a figure's SVG
#: is too heavy, e.g. a scatter of many points).
INLINE_FORMATS = ("svg", "retina")


def use_style() -> None:
    """Apply the book's matplotlib style (colour-blind safe palette, light grid, no top/right spines).

    Inside Jupyter it also makes inline figures sharp: SVG, plus a PNG at twice the resolution.
    """
    import matplotlib.pyplot as plt

    plt.style.use(STYLE_PATH)
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # pragma: no cover - outside Jupyter
        return
    if get_ipython() is not None:
        set_matplotlib_formats(*INLINE_FORMATS)
