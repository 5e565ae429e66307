"""Speed and accuracy of suma_lib.geometry's randomized SVD and random projection against their peers.

Times, with ``torch.utils.benchmark`` (median of blocked runs, one intra-op thread on the CPU, so other processes
on a shared machine inflate it less), in one run:

1. ``suma_lib.geometry.randomized_svd`` against ``torch.svd_lowrank`` and scikit-learn's
   ``sklearn.utils.extmath.randomized_svd`` at the same rank ``k``, oversampling ``p`` and power iterations ``q``
   (torch's ``q`` argument is the total number of columns ``k + p``); besides the time ratio it reports each
   method's Frobenius error divided by the Eckart–Young optimum (exact SVD, NumPy), so speed is never bought
   with accuracy unnoticed;
2. ``suma_lib.geometry.random_projection`` (draw the matrix and apply it) against scikit-learn's
   ``GaussianRandomProjection.fit_transform`` (same distribution, N(0, 1/n) entries).

A ratio above 1 means slower than the peer. The table is printed and written to
``benchmarks/results/geometry.md``. Chapter: notebooks/jl-lemma-applications.ipynb

Usage: ``python benchmarks/geometry.py [--quick] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np
import torch
import torch.utils.benchmark as tb
from sklearn.random_projection import GaussianRandomProjection
from sklearn.utils.extmath import randomized_svd as sk_randomized_svd

from suma_lib import geometry as geo

RESULTS = Path(__file__).resolve().parent / "results"


def timeit(fn, min_time: float) -> float:
    """Median seconds per call of ``fn()`` (one thread), after a warm-up call."""
    fn()
    return tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=1).blocked_autorange(min_run_time=min_time).median


def test_matrix(m: int, n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """An m x n float64 matrix with singular values 1/sqrt(j) (slow decay, the hard case)."""
    g = torch.Generator().manual_seed(seed)
    r = min(m, n)
    u = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64)).Q
    s = 1 / torch.arange(1, r + 1, dtype=torch.float64).sqrt()
    return (u * s @ v.T).to(device)


def bench_svd(shapes, k: int, p: int, q: int, device: torch.device, min_time: float) -> list[str]:
    rows = ["| shape | k, p, q | ours (ms) | torch.svd_lowrank (ms) | sklearn (ms) | ratio vs torch | ratio vs sklearn "
            "| error/optimum: ours, torch, sklearn |", "|---|---|---|---|---|---|---|---|"]
    gen = torch.Generator(device=device).manual_seed(1)
    for m, n in shapes:
        a = test_matrix(m, n, device)
        a_np = a.cpu().numpy()
        sv = np.linalg.svd(a_np, compute_uv=False)
        best = np.sqrt(np.sum(sv[k:] ** 2))

        def ours():
            return geo.randomized_svd(a, k, n_oversamples=p, n_iter=q, generator=gen)

        def peer_torch():
            return torch.svd_lowrank(a, q=k + p, niter=q)

        def peer_sk():
            return sk_randomized_svd(a_np, k, n_oversamples=p, n_iter=q, random_state=0)

        err = []
        for fn, to_np in ((ours, False), (peer_torch, False), (peer_sk, True)):
            u, s, v = fn()
            if fn is peer_torch:
                u, s, v = u[:, :k], s[:k], v[:, :k].mT
            approx = (u * s @ v) if not to_np else torch.from_numpy((u * s) @ v)
            err.append(np.linalg.norm(a_np - approx.cpu().numpy()) / best)
        t = [timeit(fn, min_time) for fn in (ours, peer_torch, peer_sk)]
        rows.append(f"| {m} x {n} | {k}, {p}, {q} | {1e3 * t[0]:.2f} | {1e3 * t[1]:.2f} | {1e3 * t[2]:.2f} | "
                    f"{t[0] / t[1]:.2f} | {t[0] / t[2]:.2f} | {err[0]:.4f}, {err[1]:.4f}, {err[2]:.4f} |")
    return rows


def bench_projection(sizes, dim: int, device: torch.device, min_time: float) -> list[str]:
    rows = ["| points x d -> n | ours (ms) | sklearn (ms) | ratio |", "|---|---|---|---|"]
    gen = torch.Generator(device=device).manual_seed(2)
    for n_points, d in sizes:
        x = torch.randn(n_points, d, generator=torch.Generator().manual_seed(3)).to(device)
        x_np = x.cpu().numpy()
        t_ours = timeit(lambda: geo.random_projection(x, dim, gen), min_time)
        t_sk = timeit(lambda: GaussianRandomProjection(n_components=dim, random_state=0).fit_transform(x_np), min_time)
        rows.append(f"| {n_points} x {d} -> {dim} | {1e3 * t_ours:.2f} | {1e3 * t_sk:.2f} | {t_ours / t_sk:.2f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    min_time = 0.05 if args.quick else 0.3
    shapes = [(300, 200), (1000, 500)] if args.quick else [(1000, 500), (4000, 2000), (2000, 8000)]
    sizes = [(500, 2000)] if args.quick else [(1000, 5000), (5000, 20000)]
    header = (f"## suma_lib.geometry ({device.type})\n\n{platform.processor() or platform.machine()}, "
              f"torch {torch.__version__}, one thread, {datetime.date.today().isoformat()}\n")
    lines = [header, "### Randomized SVD (float64, singular values 1/sqrt(j))\n",
             *bench_svd(shapes, k=20, p=10, q=2, device=device, min_time=min_time), "",
             "### Gaussian random projection (float32 for ours, float64 for scikit-learn's NumPy)\n",
             *bench_projection(sizes, dim=256, device=device, min_time=min_time), ""]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "geometry.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
