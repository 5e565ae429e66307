"""Device choice: ``"auto"`` picks CUDA, then Apple's MPS, then the CPU.

Chapter: every chapter (through :func:`suma_lib.notebook.setup_notebook`)
"""

from __future__ import annotations

import torch

from ._validation import check_device

__all__ = ["get_device"]


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Return the :class:`torch.device` a notebook or test should run on.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (default) picks ``cuda`` when a GPU is available (Colab, the ``full`` profile),
        then ``mps`` on Apple silicon, then ``cpu``. Any other string (``"cpu"``, ``"cuda:0"``,
        ``"meta"``, ...), an int (a CUDA ordinal) or a :class:`torch.device` is checked and returned.

    Returns
    -------
    torch.device

    Raises
    ------
    TypeError
        If ``device`` is not a string, an int or a :class:`torch.device`.
    ValueError
        If the string does not name a device torch knows, or names CUDA (or MPS) on a machine without it.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return check_device(device, "device", allow_none=False)
