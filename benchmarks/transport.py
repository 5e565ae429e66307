"""Speed of suma_lib.transport.sinkhorn (batched, log domain) against POT on many pairs, as ratios.

Solves ``B`` entropic transport problems of ``n x n`` points (costs ``1 - cos`` of random unit
vectors, random masses, ``eps = 0.05``) with a fixed number of iterations (``tol = 0``: every
candidate does the same work; each checks its marginals every 10 iterations), float64 on the CPU
with one thread:

* ``suma sinkhorn``: ``suma_lib.transport.sinkhorn`` on the whole batch,
* ``POT batch log (torch)``: ``ot.batch.solve_batch(method="log_sinkhorn")`` on torch tensors
  (POT's own batched log-domain solver, the same iterates: the peer of the goal),
* ``POT batch log (numpy)``: the same on NumPy arrays,
* ``POT loop log``: ``ot.sinkhorn2(method="sinkhorn_log")`` pair by pair (what one writes without
  the batch module; only for the smaller batch, it is slow).

The candidates are timed in interleaved rounds (a burst of load from other processes slows one
round, not one candidate) and each keeps its best round. Before timing, the converged values of suma
and POT are compared. Writes ``benchmarks/results/transport.md`` with the machine, date, commit and
load average. Goal (issue 16): batched Sinkhorn <= 1.0x POT. A ratio above 1 means slower than the
peer. Chapter: notebooks/wmd-wrd.md

Usage: ``OMP_NUM_THREADS=1 python benchmarks/transport.py [--batches 64 1024] [--n 20]
[--iters 100] [--rounds 7]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ot  # noqa: E402
import ot.batch  # noqa: E402
import torch  # noqa: E402
from _meta import commit, cpu_name, load  # noqa: E402

from suma_lib import transport as T  # noqa: E402

EPS = 0.05
PEER = "POT batch log (torch)"


def problem(batch: int, n: int, seed: int = 0):
    """Random masses and cosine-distance costs for ``batch`` pairs of ``n`` points in 16-D."""
    g = torch.Generator().manual_seed(seed)
    unit = torch.nn.functional.normalize
    x = unit(torch.randn(batch, n, 16, generator=g, dtype=torch.float64), dim=-1)
    y = unit(torch.randn(batch, n, 16, generator=g, dtype=torch.float64), dim=-1)
    p = torch.rand(batch, n, generator=g, dtype=torch.float64) + 0.1
    q = torch.rand(batch, n, generator=g, dtype=torch.float64) + 0.1
    return p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True), 1 - x @ y.mT


def candidates(p, q, c, iters: int, with_loop: bool) -> dict:
    """The functions to time, each solving the whole batch and returning the B transport costs."""
    pn, qn, cn = p.numpy(), q.numpy(), c.numpy()
    out = {
        "suma sinkhorn": lambda: T.sinkhorn(p, q, c, EPS, max_iter=iters, tol=0.0),
        PEER: lambda: ot.batch.solve_batch(c, reg=EPS, a=p, b=q, max_iter=iters, tol=0.0,
                                           method="log_sinkhorn", grad="detach").value_linear,
        "POT batch log (numpy)": lambda: ot.batch.solve_batch(
            cn, reg=EPS, a=pn, b=qn, max_iter=iters, tol=0.0, method="log_sinkhorn", grad="detach"
        ).value_linear,
    }
    if with_loop:
        out["POT loop log"] = lambda: [
            ot.sinkhorn2(pn[k], qn[k], cn[k], EPS, method="sinkhorn_log", numItermax=iters,
                         stopThr=0.0)
            for k in range(len(pn))
        ]
    return out


def check_agreement(batch: int, n: int) -> float:
    """Largest relative difference between suma's and POT's converged transport costs."""
    p, q, c = problem(min(batch, 32), n, seed=1)
    ours = T.sinkhorn(p, q, c, EPS, max_iter=20_000, tol=1e-12)
    ref = ot.batch.solve_batch(c, reg=EPS, a=p, b=q, max_iter=20_000, tol=1e-14,
                               method="log_sinkhorn", grad="detach").value_linear
    return float(((ours - ref).abs() / ref.abs()).max())


def time_round(fn, reps: int) -> float:
    """Mean seconds per call over ``reps`` calls."""
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = load()
    agreement = check_agreement(max(args.batches), args.n)
    rows, met, goals = [], 0, 0
    for batch in args.batches:
        p, q, c = problem(batch, args.n)
        cands = candidates(p, q, c, args.iters, with_loop=batch <= 128)
        for name, fn in cands.items():  # warm-up (the slow loop is warm after the check)
            if name != "POT loop log":
                fn()
        reps = max(1, 512 // batch)
        best = {name: float("inf") for name in cands}
        for _ in range(args.rounds):
            for name, fn in cands.items():
                best[name] = min(best[name], time_round(fn, 1 if name == "POT loop log" else reps))
        for name, t in best.items():
            ratio = t / best[PEER]
            goal = ""
            if name == "suma sinkhorn":
                goals += 1
                met += ratio <= 1.0
                goal = f"≤ 1.0× {PEER}: " + ("met" if ratio <= 1.0 else "not met")
            rows.append(f"| {batch:,} | {args.n} | {name} | {t * 1e3:.2f} | {ratio:.2f} | {goal} |")
        print("\n".join(rows[-len(best):]), flush=True)
    load_after = load()
    date = datetime.date.today().isoformat()
    header = (
        "# suma_lib.transport: batched log-domain Sinkhorn against POT\n\n"
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"POT {ot.__version__}, one CPU thread. Date {date}, commit {commit()}. Load average "
        f"(1, 5, 15 min) {load_before} when it started and {load_after} when it ended: the machine "
        "is shared and loaded (a load above the number of CPUs makes every time noisier; the "
        "ratios less so, since the candidates are interleaved). "
        f"float64, {args.n} × {args.n} problems, eps = {EPS}, {args.iters} iterations for every "
        "candidate (tol = 0: the same work), marginals checked every 10 iterations; time per call "
        f"for the whole batch (best of {args.rounds} interleaved rounds) and its ratio to {PEER} "
        f"(above 1: slower). Converged values of suma and POT agree to a relative {agreement:.1e}. "
        f"Goal (issue 16): batched Sinkhorn ≤ 1.0× POT. Met: {met} of {goals}.\n\n"
        f"| pairs | n | candidate | ms | ÷ {PEER} | goal |\n"
        "| ---: | ---: | --- | ---: | ---: | --- |\n"
    )
    table = header + "\n".join(rows) + "\n"
    out = Path(__file__).resolve().parent / "results" / "transport.md"
    out.write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
