"""One call that every chapter makes after its parameters cell.

Chapter: every chapter (notebooks/<slug>.md calls :func:`setup_notebook` after its parameters cell).
"""

from __future__ import annotations

import platform
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from . import __version__, claims
from .device import get_device
from .plotting import use_style
from .seeding import make_generator, seed_everything

__all__ = ["setup_notebook", "PROFILES"]

PROFILES = ("ci", "full")


def _device_name(dev: torch.device) -> str:
    """A readable name of the hardware behind ``dev`` (GPU model, or the CPU's model name)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or dev.type


def setup_notebook(
    profile: str = "ci",
    device: str | torch.device = "auto",
    seed: int = 0,
    *,
    ci: dict[str, Any] | None = None,
    full: dict[str, Any] | None = None,
) -> SimpleNamespace:
    """Prepare a chapter: pick the device, seed everything, set the plot style and choose the sizes.

    Parameters
    ----------
    profile : {"ci", "full"}
        ``"ci"`` runs small but real sizes in seconds on a CPU (what CI executes); ``"full"`` runs
        at the article's scale, meant for a GPU. Both run the same code path.
    device : str or torch.device
        ``"auto"`` picks CUDA, then MPS, then the CPU (see :func:`suma_lib.device.get_device`).
    seed : int
        Seed for Python, NumPy and torch (this call is the chapter's own seeding: it seeds the
        global generators on purpose, once, at the top of the chapter; library functions never do).
    ci, full : dict
        The sizes of each profile; both must have the same keys.

    Returns
    -------
    types.SimpleNamespace
        ``profile``, ``device`` (a :class:`torch.device`), ``seed``, ``rng`` (a seeded
        :class:`numpy.random.Generator`), ``gen`` (a :class:`torch.Generator` seeded with ``seed``,
        on ``device`` where torch supports generators there (CPU, CUDA, MPS), else on the CPU: pass
        it as ``generator=cfg.gen`` to every library sampler so that a chapter's draws do not depend
        on global state) and one attribute per size of the chosen profile.

    Examples
    --------
    >>> cfg = setup_notebook("ci", "cpu", 0, ci=dict(n=8), full=dict(n=1024))  # doctest: +SKIP
    >>> x = torch.randn(cfg.n, 3, generator=cfg.gen, device=cfg.gen.device)  # doctest: +SKIP
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    ci = dict(ci or {})
    full = dict(full or {})
    if set(ci) != set(full):
        raise ValueError(
            f"ci and full must define the same sizes; only in ci: {sorted(set(ci) - set(full))}, "
            f"only in full: {sorted(set(full) - set(ci))}"
        )
    reserved = {"profile", "device", "seed", "rng", "gen"} & set(ci)
    if reserved:
        raise ValueError(f"size names {sorted(reserved)} are reserved")
    dev = get_device(device)
    rng = seed_everything(seed)
    gen = _chapter_generator(seed, dev)
    use_style()
    claims.reset()
    sizes = ci if profile == "ci" else full
    env = {
        "profile": profile,
        "device": str(dev),
        "device_name": _device_name(dev),
        "seed": seed,
        "python": platform.python_version(),
        "suma_lib": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sizes": {k: repr(v) for k, v in sizes.items()},
    }
    for mod in ("scipy", "sympy", "matplotlib"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            pass
    line = (
        f"profile={profile} · device={dev} · seed={seed} · torch {torch.__version__} · "
        + ", ".join(f"{k}={v!r}" for k, v in sizes.items())
    )
    if not claims._display({"text/plain": line}, {"suma_env": env}):
        print(line)
    return SimpleNamespace(profile=profile, device=dev, seed=seed, rng=rng, gen=gen, **sizes)


def _chapter_generator(seed: int, dev: torch.device) -> torch.Generator:
    """A generator seeded with ``seed`` on ``dev`` if torch has generators there, else the CPU."""
    if dev.type in ("cuda", "mps"):
        try:
            return make_generator(seed, dev)
        except (RuntimeError, ValueError):  # pragma: no cover - a backend without generators
            pass
    return make_generator(seed, "cpu")
