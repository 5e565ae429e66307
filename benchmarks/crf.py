"""Speed of suma_lib.crf against pytorch-crf (``torchcrf``), as ratios from one run.

Times, with ``torch.utils.benchmark`` (one CPU thread), for a few (batch, length, labels) sizes with
ragged masks:

* the CRF log-likelihood, forward and forward + backward: ``suma_lib.crf.crf_log_likelihood``
  against ``torchcrf.CRF.forward(..., reduction="none")`` with the same parameters;
* Viterbi decoding: ``suma_lib.crf.crf_viterbi`` (a padded tensor) against ``torchcrf.CRF.decode``
  (lists);
* for the article's speed claim, the MEMM and Bi-MEMM log-likelihoods (``memm_log_likelihood``,
  ``bimemm_log_likelihood``), forward + backward, as ratios to suma_lib's own CRF.

The candidates are timed in interleaved rounds (a burst of load from other processes then slows one
round, not one candidate) and each keeps its best round. Writes ``benchmarks/results/crf.md`` with
the machine, date, commit and load average. Goal (issue 16): ≤ 1.0× pytorch-crf for the
log-likelihood and for decoding. Chapter: notebooks/memm-vs-crf.md

Usage: ``OMP_NUM_THREADS=1 python benchmarks/crf.py [--sizes 32x32x5 ...] [--min-time 0.1]
[--rounds 5]``
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
from pathlib import Path

import torch
import torchcrf
from _meta import commit, cpu_name, load
from torch.utils import benchmark

from suma_lib import crf as C


def setup(B: int, n: int, K: int, device: torch.device):
    """Random emissions, tags, a ragged mask and a pytorch-crf layer with parameters shared with "
    "ours."""
    g = torch.Generator(device="cpu").manual_seed(0)
    e = torch.randn(B, n, K, generator=g).to(device)
    tags = torch.randint(0, K, (B, n), generator=g).to(device)
    lengths = torch.randint(n // 2, n + 1, (B,), generator=g)
    lengths[0] = n
    mask = (torch.arange(n)[None, :] < lengths[:, None]).to(device)
    peer = torchcrf.CRF(K, batch_first=True).to(device)
    return e, tags, mask, peer


def candidates(e, tags, mask, peer):
    G, a, b = peer.transitions, peer.start_transitions, peer.end_transitions
    ours = {
        "crf_log_likelihood": lambda x: C.crf_log_likelihood(x, tags, G, a, b, mask),
        "memm_log_likelihood": lambda x: C.memm_log_likelihood(x, tags, G, a, b, mask),
        "bimemm_log_likelihood": lambda x: C.bimemm_log_likelihood(x, tags, G, a, b, mask),
        "torchcrf forward": lambda x: peer(x, tags, mask, reduction="none"),
    }
    decode = {
        "crf_viterbi": lambda x: C.crf_viterbi(x, G.detach(), a.detach(), b.detach(), mask),
        "torchcrf decode": lambda x: peer.decode(x, mask),
    }
    return ours, decode


def time_one(fn, x: torch.Tensor, backward: bool, min_time: float) -> float:
    """Median seconds per call of ``fn(x)`` (with its backward pass when ``backward``)."""
    if backward:
        x = x.detach().requires_grad_(True)
        stmt = "fn(x).sum().backward()"
    else:
        stmt = "fn(x)"
    with torch.set_grad_enabled(backward):
        timer = benchmark.Timer(stmt=stmt, globals={"fn": fn, "x": x}, num_threads=1)
        return timer.blocked_autorange(min_run_time=min_time).median


def interleaved(fns: dict, x, backward: bool, min_time: float, rounds: int) -> dict:
    for fn in fns.values():
        time_one(fn, x, backward, 0.0)
    times = dict.fromkeys(fns, math.inf)
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] = min(times[name], time_one(fn, x, backward, min_time / rounds))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["32x32x5", "64x64x20", "16x128x50"])
    parser.add_argument("--min-time", type=float, default=0.1, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (best one kept)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    load_before = load()
    rows, met = [], []
    for size in args.sizes:
        B, n, K = (int(v) for v in size.split("x"))
        e, tags, mask, peer = setup(B, n, K, device)
        ll, dec = candidates(e, tags, mask, peer)
        for backward in (False, True):
            fns = ll if backward else {k: ll[k] for k in ("crf_log_likelihood", "torchcrf forward")}
            t = interleaved(fns, e, backward, args.min_time, args.rounds)
            pas = "fwd+bwd" if backward else "fwd"
            ratio = t["crf_log_likelihood"] / t["torchcrf forward"]
            ok = ratio <= 1.0
            met.append(ok)
            rows.append(
                f"| {size} | log-likelihood {pas} | crf_log_likelihood | "
                f"{t['crf_log_likelihood'] * 1e6:.0f} | {t['torchcrf forward'] * 1e6:.0f} | "
                f"{ratio:.2f} | ≤ 1.0×: {'met' if ok else 'not met'} |"
            )
            if backward:
                for name in ("memm_log_likelihood", "bimemm_log_likelihood"):
                    r = t[name] / t["crf_log_likelihood"]
                    rows.append(
                        f"| {size} | log-likelihood {pas} | {name} | {t[name] * 1e6:.0f} | "
                        f"{t['torchcrf forward'] * 1e6:.0f} | {t[name] / t['torchcrf forward']:.2f}"
                        f" | {r:.2f}× our CRF (no goal) |"
                    )
        t = interleaved(dec, e.detach(), False, args.min_time, args.rounds)
        ratio = t["crf_viterbi"] / t["torchcrf decode"]
        ok = ratio <= 1.0
        met.append(ok)
        rows.append(
            f"| {size} | decode | crf_viterbi | {t['crf_viterbi'] * 1e6:.0f} | "
            f"{t['torchcrf decode'] * 1e6:.0f} | {ratio:.2f} | ≤ 1.0×: "
            f"{'met' if ok else 'not met'} |"
        )
    load_after = load()
    header = [
        "# suma_lib.crf: CRF log-likelihood and Viterbi decoding against pytorch-crf",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, pytorch-crf "
        f"{getattr(torchcrf, '__version__', '?')}, one CPU thread. Date "
        f"{datetime.date.today().isoformat()}, "
        f"commit {commit()}. Load average (1, 5, 15 min) {load_before} when it started and "
        f"{load_after} "
        "when it ended: the machine is shared by many processes and loaded above its number of "
        "CPUs, "
        "so every time is noisy (the ratios less so: the candidates are timed in interleaved "
        "rounds). "
        f"float32, ragged masks; time per call (best of {args.rounds} interleaved rounds of "
        "medians). "
        "Sizes are batch × length × labels. Ratio: ours ÷ pytorch-crf (below 1: faster). Goal "
        "(issue 16): ≤ 1.0× pytorch-crf for the log-likelihood and for decoding. "
        f"Met: {sum(met)} of {len(met)}.",
        "",
        "| size | task | function | µs | pytorch-crf µs | ratio | goal |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    table = "\n".join(header + rows) + "\n"
    print(table)
    out = Path(__file__).resolve().parent / "results" / "crf.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
