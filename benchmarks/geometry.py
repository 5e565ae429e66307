"""Speed and accuracy of suma_lib.geometry's randomized SVD and random projection against their
peers.

Issue 12's goals, measured in one run as ratios against the peers (interleaved rounds: every round
calls each method once, in turn, and the best round of each is kept, so that load from other
processes on a shared machine hits all methods alike; one thread for torch and for NumPy's BLAS):

1. ``suma_lib.geometry.randomized_svd`` (float64, k = 20, p = 10, q = 2) against
   ``torch.svd_lowrank`` and scikit-learn's ``sklearn.utils.extmath.randomized_svd`` with the same
   k, p and q (torch's ``q`` argument is the total number of columns k + p). Goal: at most 1.0x the
   faster peer, at equal or lower error. Each method's Frobenius error is divided by the
   Eckart-Young optimum (exact SVD), averaged over three seeds;
2. ``suma_lib.geometry.random_projection`` (draw the matrix and apply it) against scikit-learn's
   ``GaussianRandomProjection.fit_transform`` (same N(0, 1/n) distribution), both in float64. Goal:
   at most 1.0x.

The table is printed and written to ``benchmarks/results/geometry.md`` with the machine, the date,
the commit and the load average. Run it as issue 12 says (one thread; NumPy's OpenBLAS with its own
kernel choice, i.e. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this command only)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 python benchmarks/geometry.py

Chapter: notebooks/jl-lemma-applications.md

Usage: ``python benchmarks/geometry.py [--quick] [--rounds N] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.random_projection import GaussianRandomProjection
from sklearn.utils.extmath import randomized_svd as sk_randomized_svd

from suma_lib import geometry as geo

RESULTS = Path(__file__).resolve().parent / "results"
GOAL = 1.0


def interleaved_best(
    fns: dict[str, Callable[[], object]], rounds: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Best time (seconds) of each function over ``rounds`` rounds calling every function in
    turn."""
    for fn in fns.values():  # warm-up
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def test_matrix(m: int, n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """An m x n float64 matrix with singular values 1/sqrt(j) (slow decay, the hard case)."""
    g = torch.Generator().manual_seed(seed)
    r = min(m, n)
    u = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64)).Q
    s = 1 / torch.arange(1, r + 1, dtype=torch.float64).sqrt()
    return (u * s @ v.T).to(device)


def _met(ratio: float, ok_error: bool = True) -> str:
    return "met" if ratio <= GOAL and ok_error else "not met"


def bench_svd(shapes, k: int, p: int, q: int, device: torch.device, rounds: int, sync) -> list[str]:
    rows = [
        "| shape | ours (ms) | torch.svd_lowrank (ms) | sklearn (ms) | ratio vs faster peer | "
        "error/optimum: ours, torch, sklearn | goal | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, n in shapes:
        a = test_matrix(m, n, device)
        a_np = a.cpu().numpy()
        sv = np.linalg.svd(a_np, compute_uv=False)
        best = np.sqrt(np.sum(sv[k:] ** 2))

        def ours(seed: int = 1, a=a):
            gen = torch.Generator(device=device).manual_seed(seed)
            return geo.randomized_svd(a, k, n_oversamples=p, n_iter=q, generator=gen)

        def peer_torch(seed: int = 1, a=a):
            torch.manual_seed(seed)
            u, s, v = torch.svd_lowrank(a, q=k + p, niter=q)
            return u[:, :k], s[:k], v[:, :k].mT

        def peer_sk(seed: int = 1, a_np=a_np):
            return sk_randomized_svd(a_np, k, n_oversamples=p, n_iter=q, random_state=seed)

        errs = []
        for fn in (ours, peer_torch, peer_sk):
            e = []
            for seed in (1, 2, 3):
                u, s, vh = fn(seed)
                approx = (
                    np.asarray((u * s) @ vh)
                    if isinstance(u, np.ndarray)
                    else (u * s @ vh).cpu().numpy()
                )
                e.append(np.linalg.norm(a_np - approx) / best)
            errs.append(float(np.mean(e)))
        t = interleaved_best({"ours": ours, "torch": peer_torch, "sklearn": peer_sk}, rounds, sync)
        peer = min(t["torch"], t["sklearn"])
        faster = "torch" if t["torch"] <= t["sklearn"] else "sklearn"
        peer_err = errs[1] if faster == "torch" else errs[2]
        ratio = t["ours"] / peer
        ok_err = errs[0] <= peer_err * (1 + 1e-3)  # equal within the seed-to-seed spread, or lower
        rows.append(
            f"| {m} x {n} | {1e3 * t['ours']:.1f} | {1e3 * t['torch']:.1f} | "
            f"{1e3 * t['sklearn']:.1f} | "
            f"{ratio:.2f} ({faster}) | {errs[0]:.4f}, {errs[1]:.4f}, {errs[2]:.4f} | <= "
            f"{GOAL:.1f}x, "
            f"error <= peer's | {_met(ratio, ok_err)} |"
        )
    return rows


def bench_projection(sizes, dim: int, device: torch.device, rounds: int, sync) -> list[str]:
    rows = [
        "| points x d -> n | ours (ms) | sklearn (ms) | ratio | goal | status |",
        "|---|---|---|---|---|---|",
    ]
    gen = torch.Generator(device=device).manual_seed(2)
    for n_points, d in sizes:
        x = torch.randn(
            n_points, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64
        ).to(device)
        x_np = x.cpu().numpy()
        t = interleaved_best(
            {
                "ours": lambda x=x: geo.random_projection(x, dim, gen),
                "sklearn": lambda x_np=x_np: GaussianRandomProjection(
                    n_components=dim, random_state=0
                ).fit_transform(x_np),
            },
            rounds,
            sync,
        )
        ratio = t["ours"] / t["sklearn"]
        rows.append(
            f"| {n_points} x {d} -> {dim} | {1e3 * t['ours']:.1f} | {1e3 * t['sklearn']:.1f} | "
            f"{ratio:.2f} | "
            f"<= {GOAL:.1f}x | {_met(ratio)} |"
        )
    return rows


def _machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="small sizes (seconds); results are not written"
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    shapes = [(300, 200), (1000, 500)] if args.quick else [(1000, 500), (4000, 2000), (2000, 8000)]
    sizes = [(500, 2000)] if args.quick else [(1000, 5000), (5000, 20000)]
    load_before = _loadavg()
    svd_rows = bench_svd(shapes, k=20, p=10, q=2, device=device, rounds=args.rounds, sync=sync)
    proj_rows = bench_projection(sizes, dim=256, device=device, rounds=args.rounds, sync=sync)
    header = (
        f"## suma_lib.geometry ({device.type})\n\n"
        f"Machine: {_machine()}; torch {torch.__version__}, NumPy {np.__version__}; one thread; "
        f"best of {args.rounds} interleaved rounds.\n"
        f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"commit {_commit()}; load average (1, 5, 15 min) {load_before} before, {_loadavg()} after "
        f"(the machine has {os.cpu_count()} cores: a load above that means other processes "
        f"competed for "
        "them, which the interleaved best-of rounds mitigate but do not remove).\n"
        f"Environment: OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.\n"
    )
    lines = [
        header,
        "### Randomized SVD (float64, k = 20, p = 10, q = 2, singular values 1/sqrt(j))\n",
        *svd_rows,
        "",
        "### Gaussian random projection (float64 for both)\n",
        *proj_rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "geometry.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
