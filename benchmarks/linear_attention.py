"""Where causal linear attention (elu+1) overtakes exact causal attention, as time ratios from one run.

Times ``suma_lib.attention.linear_attention(q, k, v, causal=True)`` (the chunkwise form: exact masked
attention inside chunks of ``chunk_size`` positions, exclusive prefix sums of the chunk states across them,
all chunks in a few batched products) against exact causal attention (``softmax_attention(..., causal=True)``,
torch's fused scaled-dot-product kernel) for one batch of 4 heads of size 64 in float32, at lengths from 128
to 2048, for a few chunk sizes. On the CPU each call runs on one thread and is timed by that thread's CPU
time (``suma_lib.profiling.measure_time``), in alternating rounds, keeping each one's best; on CUDA, wall time
between synchronisations. The crossing length is interpolated in log-log coordinates
(``suma_lib.profiling.crossover_length``). Goal (issue 12): the default chunk size overtakes exact attention
at n ≤ 512 (the per-chunk loop of the previous implementation crossed at n ≈ 850). Writes
``benchmarks/results/linear-attention-<device>.md``. Chapter: notebooks/linear-attention.ipynb

Usage: ``python benchmarks/linear_attention.py [--device auto|cpu|cuda] [--repeats 5] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
from pathlib import Path

import torch
from _meta import commit, cpu_name, load

from suma_lib.attention import linear_attention, softmax_attention
from suma_lib.attention.linear import DEFAULT_CHUNK
from suma_lib.profiling import crossover_length, measure_time

LENGTHS = [128, 256, 384, 512, 768, 1024, 1536, 2048]
CHUNKS = [32, DEFAULT_CHUNK, 128]
HEADS, HEAD_DIM = 4, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (minimum kept)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (best kept)")
    args = parser.parse_args()
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    gen = torch.Generator(device=dev).manual_seed(0)
    load_before = load()
    ratios = {c: [] for c in CHUNKS}
    times_exact = []
    for n in LENGTHS:
        q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, generator=gen, device=dev) for _ in range(3))
        fns = {"exact": lambda q=q, k=k, v=v: softmax_attention(q, k, v, causal=True)}
        for c in CHUNKS:
            fns[c] = lambda c=c, q=q, k=k, v=v: linear_attention(q, k, v, causal=True, chunk_size=c)
        best = dict.fromkeys(fns, math.inf)
        for _ in range(args.rounds):
            for key, fn in fns.items():
                best[key] = min(best[key], measure_time(fn, device=dev, repeats=args.repeats))
        times_exact.append(best["exact"])
        for c in CHUNKS:
            ratios[c].append(best[c] / best["exact"])
    load_after = load()
    cross = {c: crossover_length(LENGTHS, ratios[c]) for c in CHUNKS}
    goal_met = math.isfinite(cross[DEFAULT_CHUNK]) and cross[DEFAULT_CHUNK] <= 512
    cpu = cpu_name()
    clock = "one thread's CPU time" if dev.type == "cpu" else "wall time between CUDA syncs"

    def fmt(x: float) -> str:
        return f"{x:.0f}" if math.isfinite(x) else "not in range"

    lines = [
        f"# Causal linear attention against exact causal attention ({dev.type})",
        "",
        f"Machine: {cpu}, {os.cpu_count()} CPUs"
        + (f", {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else "")
        + f", torch {torch.__version__}. Date {datetime.date.today().isoformat()}, commit {commit()}. Load "
        f"average (1, 5, 15 min) {load_before} when it started and {load_after} when it "
        f"ended (the machine is shared; {clock} is less sensitive to that than wall time). One batch of "
        f"{HEADS} heads of size {HEAD_DIM}, float32; time ratio linear / exact (below 1: linear is faster), "
        f"best of {args.rounds} alternating rounds of the minimum over {args.repeats} calls.",
        "",
        (f"**Goal (issue 12): the default chunk size ({DEFAULT_CHUNK}) overtakes exact causal attention at "
         f"n ≤ 512. Measured: n ≈ {fmt(cross[DEFAULT_CHUNK])}: {'met' if goal_met else 'not met'}.**"),
        "",
        "| n | exact (ms) | " + " | ".join(f"chunk {c}" for c in CHUNKS) + " |",
        "|---:|---:|" + "---:|" * len(CHUNKS),
    ]
    for i, n in enumerate(LENGTHS):
        lines.append(f"| {n} | {times_exact[i] * 1e3:.2f} | " + " | ".join(f"{ratios[c][i]:.2f}" for c in CHUNKS)
                     + " |")
    lines += ["", "Crossing (linear becomes faster): "
              + ", ".join(f"chunk {c}: n ≈ {fmt(cross[c])}" for c in CHUNKS) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results" / f"linear-attention-{dev.type}.md"
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
