"""Device choice: ``"auto"`` picks CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

__all__ = ["get_device"]


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Return the :class:`torch.device` a notebook or test should run on.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (default) picks ``cuda`` when a GPU is available (Colab, the ``full`` profile), then
        ``mps`` on Apple silicon, then ``cpu``. Any other value is passed to :class:`torch.device`
        (``"cpu"``, ``"cuda:0"``, ``"meta"``, ...).

    Returns
    -------
    torch.device

    Raises
    ------
    TypeError
        If ``device`` is neither a string nor a :class:`torch.device`.
    ValueError
        If the string does not name a device torch knows, or names CUDA on a machine without it.
    """
    if isinstance(device, torch.device):
        chosen = device
    elif isinstance(device, str):
        if device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            chosen = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device must be 'auto' or a torch device string, got {device!r}") from err
    else:
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(chosen)!r} was requested but CUDA is not available")
    return chosen
