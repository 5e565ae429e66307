"""Memory and speed of suma_lib.optim.AdaFactor against torch.optim.Adam and torch.optim.Adafactor.

Measures, for a square weight matrix (4096 x 4096 by default, float32):

* the bytes of optimiser state after one step (all tensors in ``optimizer.state``), AdaFactor against Adam
  (issue-15 goal: at most 1/100 of Adam's);
* the time of one ``optimizer.step()`` (the gradient is fixed, so only the optimiser is timed), the library's
  AdaFactor against ``torch.optim.Adafactor`` (its default single-tensor path) and ``torch.optim.Adam``
  (issue-15 goal: at most 1.0x torch's Adafactor). The candidates are timed in interleaved rounds and each
  keeps its best round, so a burst of load from other processes slows one round, not one candidate.

On the CPU and on CUDA when present. Prints a Markdown table with the goals marked met or not met and writes
it to ``benchmarks/results/optim.md`` with the machine, date, commit and load average.
Chapter: notebooks/adafactor.ipynb

Usage: ``OMP_NUM_THREADS=1 python benchmarks/optim.py [--size 4096] [--rounds 5] [--steps 3]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from suma_lib.optim import AdaFactor, state_bytes

OPTIMISERS = {
    "AdaFactor (suma_lib)": lambda p: AdaFactor([p]),
    "torch.optim.Adafactor": lambda p: torch.optim.Adafactor([p], lr=1e-2),
    "torch.optim.Adam": lambda p: torch.optim.Adam([p], lr=1e-3),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    device: torch.device, size: int, rounds: int, steps: int
) -> dict[str, tuple[int, float]]:
    """State bytes and best seconds per step for each optimiser on a ``size x size`` float32 weight."""
    gen = torch.Generator(device=device).manual_seed(0)
    setups = {}
    for name, make in OPTIMISERS.items():
        p = torch.randn(size, size, device=device, generator=gen).requires_grad_()
        p.grad = torch.randn(size, size, device=device, generator=gen)
        opt = make(p)
        opt.step()  # warm-up, and creates the state
        _sync(device)
        setups[name] = (opt, state_bytes(opt))
    best = dict.fromkeys(OPTIMISERS, float("inf"))
    for _ in range(rounds):
        for name, (opt, _) in setups.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            _sync(device)
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return {name: (setups[name][1], best[name]) for name in OPTIMISERS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        commit = "unknown"
    lines = [
        "# suma_lib.optim: AdaFactor's state and step time",
        "",
        (
            f"Machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), "
            f"load average {load:.1f} on {os.cpu_count()} CPUs when it started; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit}. "
            f"A {args.size} x {args.size} float32 weight; state bytes after one step; time per `step()` "
            f"(best of {args.rounds} interleaved rounds of {args.steps} steps). The machine is shared and "
            "loaded, so the times are noisy; rerun on an idle one with `make bench`."
        ),
        "",
        "| device | optimiser | state bytes | ÷ Adam's state | ms per step | ÷ torch Adafactor's time |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    goals = []
    for dev in devices:
        res = measure(dev, args.size, args.rounds, args.steps)
        adam_b = res["torch.optim.Adam"][0]
        peer_t = res["torch.optim.Adafactor"][1]
        for name, (b, t) in res.items():
            lines.append(
                f"| {dev.type} | {name} | {b:,} | {b / adam_b:.5f} | {1e3 * t:.2f} | {t / peer_t:.2f} |"
            )
        ours_b, ours_t = res["AdaFactor (suma_lib)"]
        goals.append(
            (
                f"{dev.type}: state ≤ 1/100 of Adam's",
                ours_b / adam_b <= 0.01,
                f"{ours_b / adam_b:.5f} (= (m+n)/(2mn+1))",
            )
        )
        goals.append(
            (
                f"{dev.type}: step time ≤ 1.0 x torch.optim.Adafactor",
                ours_t / peer_t <= 1.0,
                f"{ours_t / peer_t:.2f} x",
            )
        )
    lines += ["", "## Goals (issue 15)", "", "| goal | met | measured |", "| --- | --- | --- |"]
    lines += [f"| {g} | {'met' if ok else 'not met'} | {m} |" for g, ok, m in goals]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results" / "optim.md"
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
