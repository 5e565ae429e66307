"""Speed of suma_lib.position's RoPE application against rotary-embedding-torch, x-transformers and transformers.

Times, with ``torch.utils.benchmark`` (one thread on the CPU), the forward pass and forward + backward of
rotating one tensor of queries or keys of shape ``(batch, heads, n, d)`` at positions ``0, ..., n-1``:

* ``apply_rope`` (interleaved pairs, as shipped: the cos/sin table of the default positions is cached per
  length, offset, width, base, device and dtype, and the pairs are multiplied as complex numbers);
* ``apply_rope`` with an explicit positions tensor (the table is recomputed from the positions in float64 on
  every call: what random or per-sequence positions cost);
* ``apply_rope`` with ``layout="half"`` (pairs ``(x_i, x_{i+d/2})``: two fused multiply-adds per half);

against the peers as their own models call them: ``rotary_embedding_torch.RotaryEmbedding.rotate_queries_or_keys``
(interleaved, with its frequency cache), x-transformers' ``RotaryEmbedding`` + ``apply_rotary_pos_emb``
(interleaved, frequencies recomputed per call as in one forward pass of its decoder) and, for the half layout,
transformers' LLaMA formula ``x * cos + rotate_half(x) * sin`` with ``cos`` and ``sin`` computed once before
timing (LLaMA computes them once per forward pass and shares them across layers: this favours the peer).
The candidates are timed in interleaved rounds (a burst of load from other processes then slows one round, not
one candidate) and each keeps its best round. Prints a table per device with the issue-13 goal (≤ 1.0× the
fastest peer of the same layout) marked met or not met and writes it to ``benchmarks/results/position.md``,
with the machine, date, commit and load average. A ratio above 1 means slower than the peer.
Chapter: notebooks/position-encoding-survey.ipynb

Usage: ``OMP_NUM_THREADS=1 python benchmarks/position.py [--shapes 1x8x128x64 4x8x512x64] [--min-time 0.2]
[--rounds 7]``
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
from pathlib import Path

import torch
from _meta import commit, cpu_name, load
from smooth import keep_freed_memory, time_one

from suma_lib.position import apply_rope

INTERLEAVED_PEERS = ("rotary-embedding-torch", "x-transformers")
HALF_PEERS = ("transformers (LLaMA)",)
PEERS = INTERLEAVED_PEERS + HALF_PEERS
#: Which peers each suma_lib candidate is held to (≤ 1.0× the fastest of them); None: shown, no goal.
GOALS = {"apply_rope": INTERLEAVED_PEERS, "apply_rope (half)": HALF_PEERS, "apply_rope (positions tensor)": None}


def candidates(n: int, d: int, device: torch.device) -> dict:
    """The functions timed, each taking the tensor ``x`` of shape ``(..., n, d)``."""
    from rotary_embedding_torch import RotaryEmbedding as RETRotary
    from transformers.models.llama.modeling_llama import rotate_half
    from x_transformers.x_transformers import RotaryEmbedding as XTRotary
    from x_transformers.x_transformers import apply_rotary_pos_emb

    ret = RETRotary(d).to(device)
    xt = XTRotary(d).to(device)
    positions = torch.arange(n, device=device)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
    angles = positions[:, None].float() * inv_freq
    emb = torch.cat((angles, angles), dim=-1)
    cos, sin = emb.cos(), emb.sin()  # LLaMA's table, computed once
    return {
        "apply_rope": lambda x: apply_rope(x),
        "apply_rope (positions tensor)": lambda x: apply_rope(x, positions),
        "apply_rope (half)": lambda x: apply_rope(x, layout="half"),
        "rotary-embedding-torch": lambda x: ret.rotate_queries_or_keys(x),
        "x-transformers": lambda x: apply_rotary_pos_emb(x, xt.forward_from_seq_len(n)[0]),
        "transformers (LLaMA)": lambda x: x * cos + rotate_half(x) * sin,
    }


def check_agreement(cands: dict, x: torch.Tensor) -> None:
    """Refuse to time candidates that do not compute the same rotation.

    The peers form their angles p·θ in float32, off by up to about p·2^-24 radians (ours are formed in float64),
    so the tolerance grows with the length n.
    """
    tol = 1e-4 + 5e-7 * x.shape[-2] * float(x.abs().max())
    ref = cands["apply_rope"](x)
    for name in ("apply_rope (positions tensor)",) + INTERLEAVED_PEERS:
        torch.testing.assert_close(cands[name](x), ref, rtol=0, atol=tol, msg=name)
    torch.testing.assert_close(cands["transformers (LLaMA)"](x), cands["apply_rope (half)"](x), rtol=0, atol=tol)


def run(device: torch.device, shapes: list[tuple[int, ...]], min_time: float, rounds: int
        ) -> tuple[list[str], list[bool]]:
    """Time every candidate on ``device``; return the Markdown rows and whether each goal was met."""
    rows, met = [], []
    gen = torch.Generator(device=device).manual_seed(0)
    for shape in shapes:
        x = torch.randn(shape, device=device, generator=gen)
        cands = candidates(shape[-2], shape[-1], device)
        check_agreement(cands, x)
        for backward in (False, True):
            for fn in cands.values():  # warm-up: fill the caches, touch the memory
                time_one(fn, x, backward, 0.0)
            times = dict.fromkeys(cands, math.inf)
            for _ in range(rounds):
                for name, fn in cands.items():
                    times[name] = min(times[name], time_one(fn, x, backward, min_time / rounds))
            for name, t in times.items():
                if name in PEERS:
                    continue
                ratios = " | ".join(f"{t / times[p]:.2f}" for p in PEERS)
                pas = "fwd+bwd" if backward else "fwd"
                held = GOALS[name]
                if held is None:
                    verdict = ""
                else:
                    fastest = min(held, key=times.__getitem__)
                    ok = t / times[fastest] <= 1.0
                    met.append(ok)
                    verdict = f"≤ 1.0× {fastest}: {'met' if ok else 'not met'}"
                dims = "×".join(str(s) for s in shape)
                rows.append(f"| {device.type} | {dims} | {pas} | {name} | {t * 1e6:.1f} | {ratios} | {verdict} |")
    return rows, met


def _shape(text: str) -> tuple[int, ...]:
    dims = tuple(int(v) for v in text.lower().split("x"))
    if len(dims) < 2 or dims[-1] % 2:
        raise argparse.ArgumentTypeError(f"a shape like 4x8x512x64 with an even last size, got {text!r}")
    return dims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=_shape, nargs="+",
                        default=[(1, 8, 128, 64), (4, 8, 512, 64), (1, 16, 2048, 128)],
                        help="(batch, heads, n, d) as BxHxNxD")
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
        r, m = run(dev, args.shapes, args.min_time, args.rounds)
        rows += r
        met += m
    load_after = load()
    header = [
        "# suma_lib.position: applying RoPE",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, one CPU thread"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
        + f". Date {datetime.date.today().isoformat()}, commit {commit()}. Load average (1, 5, 15 min) "
        f"{load_before} when it started and {load_after} when it ended: the machine is "
        "shared, and a load above the number of CPUs makes every time noisier (the ratios less so, since the "
        "candidates are interleaved). float32 tensors of shape (batch, heads, n, d) rotated at positions "
        f"0, …, n−1; time per call (best of {args.rounds} interleaved rounds of medians) and its ratio to each "
        "peer (above 1: slower than the peer). rotary-embedding-torch and x-transformers rotate interleaved "
        "pairs, transformers' LLaMA formula half-split pairs (its cos/sin computed once, outside the timing). "
        + ("Freed memory is kept by the allocator (glibc mallopt, as jemalloc or tcmalloc do); "
           "`--system-malloc` switches this off. " if tuned
           else "glibc's malloc as it is: fresh tensors page-fault, which adds noise at large sizes. ")
        + "Goal (issue 13): `apply_rope` ≤ 1.0× the fastest peer of its layout, forward and forward + "
        f"backward. Met: {sum(met)} of {len(met)}.",
        "",
        "| device | shape | pass | function | µs | ÷ rotary-embedding-torch | ÷ x-transformers "
        "| ÷ transformers (LLaMA) | goal |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    table = "\n".join(header + rows) + "\n"
    print(table)
    out = Path(__file__).resolve().parent / "results" / "position.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
