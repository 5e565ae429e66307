"""Benchmark ``local_attention`` (the band, O(n w)) against masked exact attention (O(n^2)), side by side.

Run ``python benchmarks/local_window.py`` (``--quick`` for smaller sizes, ``--device cuda`` to choose). For
each length it prints the time and peak memory of

1. ``suma_lib.attention.local_attention(q, k, v, w)``, which only forms the n x (2w+1) band of scores;
2. the peer, :func:`torch.nn.functional.scaled_dot_product_attention` with the boolean ``local_mask``
   (through ``softmax_attention``, which dispatches to it);

and the ratios peer / band. Timing and memory use ``suma_lib.profiling.measure_time`` and
``measure_peak_memory`` (CPU: one thread's CPU time, minimum over repeats; CUDA: synchronised wall time).
Chapter: ``notebooks/sparse-attention.ipynb``.
"""

from __future__ import annotations

import argparse

import torch

from suma_lib.attention import local_attention, local_mask, softmax_attention
from suma_lib.profiling import measure_peak_memory, measure_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (seconds on a CPU)")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    dev = torch.device(args.device)
    lengths = [512, 1024, 2048] if args.quick else [1024, 2048, 4096, 8192, 16384]
    w, d = args.window, args.dim
    gen = torch.Generator(device=dev).manual_seed(0)
    print(f"device={dev}, heads x batch = 4, d = {d}, window w = {w}")
    print(
        f"{'n':>6} | {'band ms':>9} | {'masked ms':>9} | {'time ratio':>10} | {'band MiB':>9} | "
        f"{'masked MiB':>10} | {'memory ratio':>12} | max |diff|"
    )
    for n in lengths:
        q, k, v = (torch.randn(4, n, d, generator=gen, device=dev) for _ in range(3))
        mask = local_mask(n, w, device=dev)

        def band(q=q, k=k, v=v):
            return local_attention(q, k, v, w)

        def masked(q=q, k=k, v=v, n=n):  # the mask is part of the masked form's cost
            return softmax_attention(q, k, v, mask=local_mask(n, w, device=dev))

        t_band, t_masked = measure_time(band, device=dev), measure_time(masked, device=dev)
        m_band, m_masked = measure_peak_memory(band, device=dev), measure_peak_memory(masked, device=dev)
        diff = (band() - softmax_attention(q, k, v, mask=mask)).abs().max().item()
        print(
            f"{n:>6} | {1e3 * t_band:9.2f} | {1e3 * t_masked:9.2f} | {t_masked / t_band:10.2f} | "
            f"{m_band / 2**20:9.2f} | {m_masked / 2**20:10.2f} | {m_masked / m_band:12.1f} | {diff:.1e}"
        )


if __name__ == "__main__":
    main()
