"""Speed of suma_lib.smooth's activations against torch's SoftPlus and GELU, as ratios from one run.

Times, with ``torch.utils.benchmark`` (one thread on the CPU), the forward pass and forward + backward of

* ``suma_lib.smooth.squareplus`` as shipped (eager kernels below 65,536 elements, one kernel fused by
  ``torch.compile`` from there on, compiled before timing starts),
* the same forced onto its eager path (what a machine without a C++ compiler, or ``SUMA_COMPILE=0``, gets),
* the textbook ``(x + sqrt(x*x + b)) / 2`` (wrong for |x| > 1.8e19 in float32 and cancelling to 0 for
  x << 0; shown for what exactness costs),
* ``suma_lib.smooth.smooth_relu`` with the Gaussian kernel (ReLU convolved with a Gaussian; eager kernels
  only: a fused version gained little, since its erfc and exp are not vectorised on the CPU),

against ``torch.nn.functional.softplus`` and ``torch.nn.functional.gelu``, for a few tensor sizes, on the CPU
and on CUDA when present. The candidates are timed in interleaved rounds (a burst of load from other processes
then slows one round, not one candidate) and each keeps its best round. Prints a table per device with the
issue-12 goals marked met or not met and writes it to ``benchmarks/results/smooth.md``, with the machine,
date, commit and load average. A ratio above 1 means slower than the peer. Chapter: notebooks/squareplus.ipynb

Usage: ``OMP_NUM_THREADS=1 python benchmarks/smooth.py [--sizes 4096 262144 4194304] [--min-time 0.2]
[--rounds 7]``
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from _meta import commit, cpu_name, load
from torch.utils import benchmark

from suma_lib import smooth as S

B = 4.0  # SquarePlus's parameter (its value does not change the cost)


def naive_squareplus(x: torch.Tensor) -> torch.Tensor:
    """The textbook formula, which overflows for |x| > 1.8e19 in float32 (reference only)."""
    return 0.5 * (x + torch.sqrt(x * x + B))


def eager(fn):
    """``fn`` with the fused torch.compile path switched off (the fallback every machine has)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        saved, S._COMPILE_MIN = S._COMPILE_MIN, 1 << 62
        try:
            return fn(x)
        finally:
            S._COMPILE_MIN = saved

    return run


CANDIDATES = {
    "squareplus": lambda x: S.squareplus(x, B),
    "squareplus (eager)": eager(lambda x: S.squareplus(x, B)),
    "squareplus (textbook)": naive_squareplus,
    "smooth_relu (gaussian)": lambda x: S.smooth_relu(x, 1.0),
    "softplus": F.softplus,
    "gelu": F.gelu,
}
PEERS = ("softplus", "gelu")


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks instead of unmapping them (mallopt), as jemalloc or tcmalloc
    (which PyTorch recommends for the CPU) do by default; True if it could.

    Otherwise every new tensor of a few megabytes is fresh memory from the kernel, page faults and all, and
    a call's time depends on the allocator's history more than on the kernel being timed (a 1 MiB SoftPlus
    measured anywhere between 0.4 and 1.6 ms in one process). It applies to the peers and to suma_lib alike.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 31))
    except (OSError, AttributeError):
        return False


def goal(name: str, n: int) -> tuple[str, float] | None:
    """The issue-12 goal for this candidate and size: (peer, largest ratio allowed), or None."""
    if name == "squareplus":
        return ("softplus", 1.0 if n >= 262_144 else 1.5)
    if name == "smooth_relu (gaussian)":
        return ("gelu", 1.5)
    return None


def time_one(fn, x: torch.Tensor, backward: bool, min_time: float) -> float:
    """Median seconds per call of ``fn(x)`` (and its backward pass when ``backward``), one timing block."""
    if backward:
        x = x.detach().requires_grad_(True)
        grad = torch.ones_like(x)
        stmt = "torch.autograd.grad(fn(x), x, grad)"
    else:
        grad = None
        stmt = "fn(x)"
    timer = benchmark.Timer(
        stmt=stmt, globals={"fn": fn, "x": x, "grad": grad, "torch": torch}, num_threads=1
    )
    return timer.blocked_autorange(min_run_time=min_time).median


def run(
    device: torch.device, sizes: list[int], min_time: float, candidates: dict, rounds: int
) -> tuple[list[str], list[bool]]:
    """Time every candidate on ``device``; return the Markdown rows and whether each goal was met."""
    rows, met = [], []
    gen = torch.Generator(device=device).manual_seed(0)
    for n in sizes:
        x = torch.randn(n, device=device, generator=gen) * 3
        for backward in (False, True):
            for fn in candidates.values():  # warm-up: compile the fused kernels, touch the memory
                time_one(fn, x, backward, 0.0)
            times = dict.fromkeys(candidates, math.inf)
            for _ in range(rounds):
                for name, fn in candidates.items():
                    times[name] = min(times[name], time_one(fn, x, backward, min_time / rounds))
            for name, t in times.items():
                if name in PEERS:
                    continue
                ratios = " | ".join(f"{t / times[p]:.2f}" for p in PEERS)
                pas = "fwd+bwd" if backward else "fwd"
                target = goal(name, n)
                if target is None:
                    verdict = ""
                else:
                    ok = t / times[target[0]] <= target[1]
                    met.append(ok)
                    verdict = f"≤ {target[1]:.1f}× {target[0]}: {'met' if ok else 'not met'}"
                rows.append(
                    f"| {device.type} | {n:,} | {pas} | {name} | {t * 1e6:.1f} | {ratios} | {verdict} |"
                )
    return rows, met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 262144, 4194304])
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (best one is kept)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc as it is (freed large tensors go back to the kernel)")
    args = parser.parse_args()
    tuned = not args.system_malloc and keep_freed_memory()
    torch.set_num_threads(1)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    load_before = load()
    rows, met = [], []
    for dev in devices:
        r, m = run(dev, args.sizes, args.min_time, CANDIDATES, args.rounds)
        rows += r
        met += m
    load_after = load()
    cpu = cpu_name()
    header = [
        "# suma_lib.smooth: SquarePlus and the Gaussian-smoothed ReLU",
        "",
        f"Machine: {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, one CPU thread"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
        + f". Date {datetime.date.today().isoformat()}, commit {commit()}. Load average (1, 5, 15 min) "
        f"{load_before} when it started and {load_after} when it ended: the machine is "
        "shared, and a load above the number of CPUs makes every time noisier (the ratios less so, since the "
        "candidates are interleaved). float32; time per call (best of "
        f"{args.rounds} interleaved rounds of medians) and its ratio to each peer (above 1: slower than the "
        "peer). "
        + ("Freed memory is kept by the allocator (glibc mallopt, as jemalloc or tcmalloc do), so that page "
           "faults of fresh tensors do not swamp the kernels being timed; `--system-malloc` switches this off. "
           if tuned else "glibc's malloc as it is: fresh tensors page-fault, which adds noise at large sizes. ")
        + "Goals (issue 12): `squareplus` ≤ 1.0× `F.softplus` at 262,144 and 4,194,304 elements and "
        "≤ 1.5× at 4,096, forward and forward + backward; `smooth_relu` (Gaussian) ≤ 1.5× `F.gelu`. "
        f"Met: {sum(met)} of {len(met)}.",
        "",
        "| device | elements | pass | function | µs | ÷ softplus | ÷ gelu | goal |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |",
    ]
    table = "\n".join(header + rows) + "\n"
    print(table)
    out = Path(__file__).resolve().parent / "results" / "smooth.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
