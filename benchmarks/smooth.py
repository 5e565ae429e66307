"""Speed of suma_lib.smooth's activations against torch's SoftPlus and GELU, as ratios from one run.

Times, with ``torch.utils.benchmark`` (median of blocked runs, one thread on the CPU), the forward pass and
forward + backward of

* ``suma_lib.smooth.squareplus`` (overflow- and cancellation-free form),
* the textbook ``(x + sqrt(x*x + b)) / 2`` (what the stable form costs),
* ``suma_lib.smooth.smooth_relu`` with the Gaussian kernel (ReLU convolved with a Gaussian),
* with ``--compile``, ``squareplus`` fused by ``torch.compile`` (eager PyTorch runs each of its elementwise
  operations as a kernel of its own, while SoftPlus and GELU are one kernel each),

against ``torch.nn.functional.softplus`` and ``torch.nn.functional.gelu``, for a few tensor sizes, on the CPU
and on CUDA when present. Prints one table per device and writes it to ``benchmarks/results/smooth.md``.
A ratio above 1 means slower than the peer. Chapter: notebooks/squareplus.ipynb

Usage: ``python benchmarks/smooth.py [--sizes 4096 262144 4194304] [--min-time 0.2] [--compile]``
"""

from __future__ import annotations

import argparse
import math
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from suma_lib.smooth import smooth_relu, squareplus

B = 4.0  # SquarePlus's parameter (its value does not change the cost)


def naive_squareplus(x: torch.Tensor) -> torch.Tensor:
    """The textbook formula, which overflows for |x| > 1.8e19 in float32 (reference only)."""
    return 0.5 * (x + torch.sqrt(x * x + B))


CANDIDATES = {
    "squareplus": lambda x: squareplus(x, B),
    "squareplus (textbook)": naive_squareplus,
    "smooth_relu (gaussian)": lambda x: smooth_relu(x, 1.0),
    "softplus": F.softplus,
    "gelu": F.gelu,
}
PEERS = ("softplus", "gelu")


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
    device: torch.device, sizes: list[int], min_time: float, candidates: dict, rounds: int = 5
) -> list[str]:
    """Time every candidate on ``device``; return the Markdown table rows (ratios to the peers)."""
    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    for n in sizes:
        x = torch.randn(n, device=device, generator=gen) * 3
        for backward in (False, True):
            # Round-robin over the candidates, keeping each one's best median: a burst of load from
            # other processes then slows one round, not one candidate.
            times = dict.fromkeys(candidates, math.inf)
            for _ in range(rounds):
                for name, fn in candidates.items():
                    times[name] = min(times[name], time_one(fn, x, backward, min_time / rounds))
            for name, t in times.items():
                if name in PEERS:
                    continue
                ratios = " | ".join(f"{t / times[p]:.2f}" for p in PEERS)
                pas = "fwd+bwd" if backward else "fwd"
                rows.append(
                    f"| {device.type} | {n:,} | {pas} | {name} | {t * 1e6:.1f} | {ratios} |"
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 262144, 4194304])
    parser.add_argument(
        "--min-time", type=float, default=0.2, help="seconds of timing per measurement"
    )
    parser.add_argument(
        "--compile", action="store_true", help="add squareplus fused by torch.compile"
    )
    args = parser.parse_args()
    candidates = dict(CANDIDATES)
    if args.compile:
        candidates["squareplus (torch.compile)"] = torch.compile(
            CANDIDATES["squareplus"], dynamic=False
        )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    header = [
        "# suma_lib.smooth: SquarePlus and the Gaussian-smoothed ReLU",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, one CPU thread"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
        + f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs when it started. float32; time per"
        " call (best of 5 interleaved rounds of medians) and its ratio to each peer (above 1: slower than the"
        " peer). On a busy machine the numbers are noisy; rerun on an idle one with `make bench`.",
        "",
        "| device | elements | pass | function | µs | ÷ softplus | ÷ gelu |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    rows = []
    for dev in devices:
        rows += run(dev, args.sizes, args.min_time, candidates)
    table = "\n".join(header + rows) + "\n"
    print(table)
    out = Path(__file__).resolve().parent / "results" / "smooth.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
