"""Measuring cost honestly on a shared machine: time, peak memory and the length where one method overtakes another.

Used by the chapters that measure scaling (``linear-attention``, ``performer``,
``sparse-attention``, ``attention-is-all-you-need``) and by ``benchmarks/``. Tests never time
anything: speed claims live in notebooks (as scaling exponents and ratios measured side by side) and in benchmarks.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ._validation import check_int

__all__ = ["measure_time", "measure_peak_memory", "crossover_length"]


def measure_time(
    fn: Callable[[], Any], *, device: torch.device | str = "cpu", repeats: int = 5, warmup: int = 1
) -> float:
    r"""Seconds one call of ``fn()`` takes: the minimum over ``repeats`` timed calls after ``warmup`` calls.

    On CUDA the device is synchronised around each call and wall-clock time is taken. On the CPU the
    call runs on one intra-op thread (``torch.set_num_threads(1)``, restored afterwards) and is
    timed with ``time.thread_time()``, the CPU time of the calling thread: a measure of the work
    done that other processes sharing the machine do not inflate, which is what a scaling exponent
    needs. The minimum over repeats discards the remaining interference (cache, frequency changes).

    Parameters
    ----------
    fn : callable
        Called without arguments.
    device : torch.device or str
        The device ``fn`` computes on.
    repeats, warmup : int
        Timed and untimed calls.

    Returns
    -------
    float

    Notes
    -----
    Chapter: notebooks/linear-attention.md (also used by ``benchmarks/attention.py``).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    repeats = check_int(repeats, "repeats", low=1)
    warmup = check_int(warmup, "warmup", low=0)
    dev = torch.device(device)
    if dev.type == "cuda":
        for _ in range(warmup):
            fn()
        best = float("inf")
        for _ in range(repeats):
            torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize(dev)
            best = min(best, time.perf_counter() - t0)
        return best
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(warmup):
            fn()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.thread_time()
            fn()
            best = min(best, time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return best


def measure_peak_memory(fn: Callable[[], Any], *, device: torch.device | str = "cpu") -> int:
    r"""Peak number of bytes allocated by torch while ``fn()`` runs, above what was allocated before.

    On CUDA: :func:`torch.cuda.max_memory_allocated` after
    :func:`torch.cuda.reset_peak_memory_stats`, minus the memory allocated before the call. On the
    CPU (where torch keeps no allocator statistics): the call runs under
    :class:`torch.profiler.profile` with ``profile_memory=True``, which records every allocation and
    free of torch's CPU allocator; the peak of their running sum is returned. Both count tensors
    only (inputs that exist before the call are excluded, the output is included), not the
    interpreter or library code. On the CPU the call runs on one intra-op thread (restored
    afterwards): profiled multi-threaded operations can be very slow on a busy machine. Unless
    ``KINETO_LOG_LEVEL`` is already set, it is set to 6 so that the profiler does not print a line
    for every measurement.

    Parameters
    ----------
    fn : callable
        Called once, without arguments.
    device : torch.device or str
        The device ``fn`` allocates on (``"cpu"`` or a CUDA device).

    Returns
    -------
    int

    Notes
    -----
    Chapter: notebooks/linear-attention.md (also used by ``benchmarks/attention.py``).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev) - before)
    if dev.type != "cpu":
        raise ValueError(f"device must be 'cpu' or a CUDA device, got {str(dev)!r}")
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # silence kineto's per-trace start/stop lines
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # profiled multi-threaded ops are very slow on a busy machine; same allocations
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    finally:
        torch.set_num_threads(threads)
    events = (
        prof.profiler.kineto_results.events()
    )  # raw allocator events, in time order once sorted
    allocs = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in allocs:
        current += nbytes
        peak = max(peak, current)
    return int(peak)


def crossover_length(lengths: Sequence[float], ratios: Sequence[float]) -> float:
    r"""Length at which a time ratio (new method / reference) first drops below 1.

    Between the last length with ratio :math:`\ge 1` and the first with ratio :math:`< 1`, the
    crossing is interpolated linearly in :math:`(\log n, \log r)`, i.e. the ratio is taken as a power law there.

    Parameters
    ----------
    lengths : sequence of float
        Increasing lengths :math:`n`.
    ratios : sequence of float
        Positive time ratios measured at those lengths.

    Returns
    -------
    float
        The interpolated length; ``nan`` if the ratio is below 1 from the first length on, or never is.

    Notes
    -----
    Chapter: notebooks/linear-attention.md (also notebooks/performer.md and
    ``benchmarks/attention.py``).
    """
    n = np.asarray(lengths, dtype=float)
    r = np.asarray(ratios, dtype=float)
    if n.ndim != 1 or n.shape != r.shape or n.size < 2:
        raise ValueError(
            f"lengths and ratios must be 1-D of the same length >= 2, got {n.shape} and {r.shape}"
        )
    if not (np.all(r > 0) and np.all(np.isfinite(r))):
        raise ValueError("ratios must be positive and finite")
    if not np.all(np.diff(n) > 0) or n[0] <= 0:
        raise ValueError("lengths must be positive and increasing")
    below = np.flatnonzero(r < 1)
    if below.size == 0 or below[0] == 0:
        return float("nan")
    i = int(below[0])
    x0, x1, y0, y1 = np.log(n[i - 1]), np.log(n[i]), np.log(r[i - 1]), np.log(r[i])
    return float(np.exp(x0 - y0 * (x1 - x0) / (y1 - y0)))
