"""Benchmark suma_lib's attention against its peers, side by side, and write a markdown table.

Run ``python benchmarks/attention.py`` (``--quick`` for smaller sizes, ``--device cuda`` to choose). It measures:

1. ``softmax_attention`` against :func:`torch.nn.functional.scaled_dot_product_attention` (goal: ratio <= 1.05);
2. causal ``linear_attention`` (elu+1, chunked) for n = 1k ... 16k: time and peak memory, fitted exponents
   (goal: time exponent <= 1.15, memory linear), beside exact causal attention and the length where it
   overtakes it, and beside performer-pytorch's own causal linear attention (``causal_linear_attention_noncuda``);
3. ``favor_attention`` against performer-pytorch's ``FastAttention`` at equal features: time ratio, and the
   relative error against exact softmax attention of FAVOR+ and of the optimised positive features (FAVOR++)
   (goals: no slower; FAVOR++ no less accurate than the peer at any σ, and below uniform averaging at σ = 1).

Timing (``suma_lib.profiling.measure_time``): on the CPU one intra-op thread and that thread's CPU time
(:func:`time.thread_time`), so other processes on a shared machine do not inflate it; on CUDA wall time
between synchronisations. Each entry is the minimum over repeats. Memory
(``suma_lib.profiling.measure_peak_memory``): on CUDA ``torch.cuda.max_memory_allocated`` above the memory
allocated before the call; on the CPU the peak of the running sum of torch's allocator events recorded by
``torch.profiler`` (``profile_memory=True``). Both count tensors allocated during the call, output included.
The table goes to ``benchmarks/results/attention-<device>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import math
import platform
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from suma_lib.attention import (
    draw_orthogonal_features,
    favor_attention,
    favorpp_attention,
    linear_attention,
    softmax_attention,
)
from suma_lib.profiling import crossover_length, measure_peak_memory, measure_time

try:  # run as a script (python benchmarks/attention.py) or as a module
    import _meta
except ImportError:  # pragma: no cover
    from benchmarks import _meta

RESULTS = Path(__file__).resolve().parent / "results"
EXACT_GOAL = 1.05  # softmax_attention / SDPA (issue 12)


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def machine(dev: torch.device) -> str:
    """One line describing the hardware and software."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    parts = [f"CPU: {cpu} ({torch.get_num_threads()} torch threads available)"]
    if dev.type == "cuda":
        parts.append(f"GPU: {torch.cuda.get_device_name(dev)}")
    parts.append(f"torch {torch.__version__}, Python {platform.python_version()}")
    parts.append(f"date {datetime.date.today().isoformat()}, commit {_meta.commit()}")
    parts.append(f"load average (1, 5, 15 min) {_meta.load()} when it started")
    return "; ".join(parts)


def slope(x, y) -> float:
    """Least-squares exponent of y against x in log-log coordinates."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def crossing(ns, ratio) -> str:
    """Where a time ratio crosses 1, or on which side of the measured range it lies."""
    n_cross = crossover_length(ns, ratio)
    if not math.isnan(n_cross):
        return f"{n_cross:.0f}"
    return f"< {ns[0]}" if ratio[0] < 1 else f"> {ns[-1]}"


def rand(shape, dev, gen):
    return torch.randn(*shape, device=dev, generator=gen)


def bench_exact(dev, gen, quick, repeats):
    """softmax_attention against torch's scaled_dot_product_attention on the same inputs."""
    b, h, n, d = (2, 4, 512, 64) if quick else (4, 8, 1024, 64)
    q, k, v = (rand((b, h, n, d), dev, gen) for _ in range(3))
    keep = rand((b, 1, 1, n), dev, gen) > -1.0  # a key-padding mask (about 16% masked), no empty row
    cases = {
        "non-causal": (lambda: softmax_attention(q, k, v), lambda: F.scaled_dot_product_attention(q, k, v)),
        "causal": (
            lambda: softmax_attention(q, k, v, causal=True),
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        ),
        "boolean key mask": (
            lambda: softmax_attention(q, k, v, mask=keep),
            lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=keep),
        ),
    }
    rows = []
    for name, (ours, peer) in cases.items():
        t_ours, t_peer = paired_times(ours, peer, dev, repeats)
        rows.append((name, f"{b}×{h}×{n}×{d}", t_ours, t_peer, t_ours / t_peer))
    return rows


def bench_linear(dev, gen, quick, repeats):
    """Causal linear attention against exact causal attention and performer-pytorch's causal reference."""
    from performer_pytorch.performer_pytorch import causal_linear_attention_noncuda

    ns = [1024, 2048, 4096, 8192] if quick else [1024, 2048, 4096, 8192, 16384]
    h, d = 4, 64
    out = {"n": ns, "lin_t": [], "lin_m": [], "exact_t": [], "exact_m": [], "peer_t": [], "peer_m": []}
    for n in ns:
        q, k, v = (rand((1, h, n, d), dev, gen) for _ in range(3))
        fq, fk = F.elu(q) + 1, F.elu(k) + 1
        lin = lambda: linear_attention(q, k, v, causal=True)
        exact = lambda: softmax_attention(q, k, v, causal=True)
        peer = lambda: causal_linear_attention_noncuda(fq, fk, v, chunk_size=max(1, n // 64))
        for key, fn in (("lin", lin), ("exact", exact), ("peer", peer)):
            out[f"{key}_t"].append(measure_time(fn, device=dev, repeats=repeats))
            out[f"{key}_m"].append(measure_peak_memory(fn, device=dev))
    # Shorter lengths, timed only, to locate where linear attention overtakes exact causal attention.
    out["short_n"], out["short_ratio"] = [128, 256, 512], []
    for n in out["short_n"]:
        q, k, v = (rand((1, h, n, d), dev, gen) for _ in range(3))
        t_lin, t_exact = paired_times(lambda: linear_attention(q, k, v, causal=True),
                                      lambda: softmax_attention(q, k, v, causal=True), dev, repeats)
        out["short_ratio"].append(t_lin / t_exact)
    return out, h, d


def bench_favor(dev, gen, quick, repeats):
    """favor_attention against performer-pytorch's FastAttention with the same number of features."""
    import performer_pytorch as pp

    b, h, d = 1, 8, 64
    m = round(d * math.log(d))  # performer-pytorch's default nb_features = int(d log d) = 266 for d = 64
    timing = []
    for causal in (False, True):
        with contextlib.redirect_stdout(io.StringIO()):  # the peer prints a notice for its causal fallback
            fast = pp.FastAttention(dim_heads=d, nb_features=m, causal=causal).to(dev)
        n = (1024 if causal else 2048) if quick else (2048 if causal else 4096)
        q, k, v = (rand((b, h, n, d), dev, gen) for _ in range(3))
        omega = draw_orthogonal_features(m, d, gen, device=dev)
        t_ours, t_peer = paired_times(lambda: favor_attention(q, k, v, omega=omega, causal=causal),
                                      lambda: fast(q, k, v), dev, repeats)
        timing.append(("causal" if causal else "non-causal", f"{b}×{h}×{n}×{d}", t_ours, t_peer))
    # Accuracy: fresh features for every draw; queries and keys with N(0, sigma^2) entries, values N(0, 1).
    fast = pp.FastAttention(dim_heads=d, nb_features=m).to(dev)
    n, draws = 512, 6 if quick else 12
    accuracy = []
    for sigma in (0.3, 0.5, 1.0):
        q, k, v = (rand((b, h, n, d), dev, gen) * s for s in (sigma, sigma, 1.0))
        ref = softmax_attention(q, k, v)
        rel = lambda out: ((out - ref).norm() / ref.norm()).item()
        e_ours, e_pp, e_peer = [], [], []
        for _ in range(draws):
            e_ours.append(rel(favor_attention(q, k, v, m, generator=gen)))
            e_pp.append(rel(favorpp_attention(q, k, v, m, generator=gen)))
            fast.redraw_projection_matrix(dev)
            e_peer.append(rel(fast(q, k, v)))
        uniform = rel(v.mean(dim=-2, keepdim=True).expand_as(ref))
        stats = [(np.mean(e), np.std(e) / math.sqrt(draws)) for e in (e_ours, e_pp, e_peer)]
        accuracy.append((sigma, *stats, uniform))
    return m, timing, accuracy


def paired_times(fn_a, fn_b, dev, repeats, rounds=5):
    """Minimum times of two callables measured alternately (so that drifting load affects both alike)."""
    t_a, t_b = math.inf, math.inf
    for _ in range(rounds):
        t_a = min(t_a, measure_time(fn_a, device=dev, repeats=repeats))
        t_b = min(t_b, measure_time(fn_b, device=dev, repeats=repeats))
    return t_a, t_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute on a CPU)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cpu' or 'cuda'")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per measurement; entries compared side by side are measured in 5 "
                             "alternating rounds and the minimum is kept")
    args = parser.parse_args()
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    gen = torch.Generator(device=dev).manual_seed(0)
    clock = "one thread's CPU time (time.thread_time)" if dev.type == "cpu" else "wall time between CUDA syncs"
    lines = [
        f"# Attention benchmarks ({dev.type})",
        "",
        f"Machine: {machine(dev)}.",
        f"Timing: {clock}, minimum over {args.repeats} calls (implementations compared side by side are "
        "measured in alternating rounds); memory: peak of torch's allocations during the call (CPU: "
        "torch.profiler allocator events; CUDA: max_memory_allocated), output included."
        + (" Sizes: `--quick`." if args.quick else ""),
        "",
    ]

    lines += [f"## softmax_attention against F.scaled_dot_product_attention (goal: ratio ≤ {EXACT_GOAL})", "",
              "| case | shape (b×h×n×d) | suma_lib (ms) | torch SDPA (ms) | ratio | goal |",
              "|---|---|---|---|---|---|"]
    for name, shape, t1, t2, r in bench_exact(dev, gen, args.quick, args.repeats):
        lines.append(f"| {name} | {shape} | {t1 * 1e3:.2f} | {t2 * 1e3:.2f} | {r:.2f} | "
                     f"≤ {EXACT_GOAL}×: {verdict(r <= EXACT_GOAL)} |")

    lin, h, d = bench_linear(dev, gen, args.quick, args.repeats)
    ns = lin["n"]
    lines += ["", f"## Causal linear attention (elu+1, chunked), {h} heads of size {d}", "",
              f"Goal: time exponent ≤ 1.15 in n ({verdict(slope(ns, lin['lin_t']) <= 1.15)}), memory linear. "
              "Peer: performer-pytorch's "
              "`causal_linear_attention_noncuda` (prefix sums within 64 chunks) with the same features.", "",
              "| n | linear (ms) | exact causal (ms) | peer (ms) | linear / exact | linear / peer | "
              "linear mem (MiB) | exact mem (MiB) | peer mem (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    mib = 2.0**20
    for i, n in enumerate(ns):
        lines.append(
            f"| {n} | {lin['lin_t'][i] * 1e3:.1f} | {lin['exact_t'][i] * 1e3:.1f} | {lin['peer_t'][i] * 1e3:.1f} | "
            f"{lin['lin_t'][i] / lin['exact_t'][i]:.2f} | {lin['lin_t'][i] / lin['peer_t'][i]:.2f} | "
            f"{lin['lin_m'][i] / mib:.1f} | {lin['exact_m'][i] / mib:.1f} | {lin['peer_m'][i] / mib:.1f} |"
        )
    lines += [
        "",
        f"Fitted exponents in n: linear time {slope(ns, lin['lin_t']):.2f}, linear memory "
        f"{slope(ns, lin['lin_m']):.2f}; exact causal time {slope(ns, lin['exact_t']):.2f}, memory "
        f"{slope(ns, lin['exact_m']):.2f}; peer time {slope(ns, lin['peer_t']):.2f}, memory "
        f"{slope(ns, lin['peer_m']):.2f}.",
        "Time ratio linear / exact causal at shorter lengths: "
        + ", ".join(f"n = {n}: {r:.2f}" for n, r in zip(lin["short_n"], lin["short_ratio"], strict=False))
        + ". Linear attention overtakes exact causal attention at n ≈ "
        + crossing(lin["short_n"] + ns, lin["short_ratio"] + list(np.array(lin["lin_t"]) / np.array(lin["exact_t"])))
        + " (log-log interpolation).",
    ]

    m, timing, accuracy = bench_favor(dev, gen, args.quick, args.repeats)
    lines += ["", f"## FAVOR+ against performer-pytorch FastAttention (m = {m} features, orthogonal)", "",
              "Goal: no slower.", "",
              "| mode | shape (b×h×n×d) | suma_lib (ms) | peer (ms) | time ratio | goal |", "|---|---|---|---|---|---|"]
    for mode, shape, t1, t2 in timing:
        lines.append(f"| {mode} | {shape} | {t1 * 1e3:.1f} | {t2 * 1e3:.1f} | {t1 / t2:.2f} | "
                     f"≤ 1.0×: {verdict(t1 <= t2)} |")
    lines += ["", "Relative error ‖output − exact softmax attention‖ / ‖exact‖ (non-causal, 1×8×512×64, queries "
              "and keys with N(0, σ²) entries, mean ± standard error over fresh features). The last column is "
              "the error of plain uniform averaging (every weight 1/n), for scale. performer-pytorch adds "
              "1e-4 to every stabilised feature; with that floor set to 0 its output equals suma_lib's for "
              "the same projection (tests/test_favor.py), so any gap below is that floor's doing.", "",
              "Goal for FAVOR++ (`favorpp_attention`, the optimised positive features of Likhosherstov et al. "
              "2022): no worse than the peer at any σ (within two standard errors), and below uniform averaging "
              "at σ = 1.", "",
              "| σ (logit s.d. σ²) | FAVOR+ error | FAVOR++ error | peer error | uniform averaging | goal |",
              "|---|---|---|---|---|---|"]
    for sigma, ours, pp_err, peer, uniform in accuracy:
        ok = pp_err[0] <= peer[0] + 2 * math.hypot(pp_err[1], peer[1]) and (sigma != 1.0 or pp_err[0] < uniform)
        lines.append(f"| {sigma} ({sigma ** 2:.2f}) | {ours[0]:.4f} ± {ours[1]:.4f} | "
                     f"{pp_err[0]:.4f} ± {pp_err[1]:.4f} "
                     f"| {peer[0]:.4f} ± {peer[1]:.4f} | {uniform:.4f} | {verdict(ok)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"attention-{dev.type}.md"
    path.write_text(text)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
