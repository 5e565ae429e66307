"""Mutation check: break one key formula of ``suma_lib`` at a time and show that its chapter notices.

A chapter's claims must fail when the formula they check is wrong. Each mutation in ``MUTATIONS`` names a
library file, an exact snippet of it, the broken replacement (a wrong constant, a dropped term, an
off-by-one) and the chapter(s) that must then fail. For each mutation this tool copies ``suma_lib`` into a
temporary folder, applies the change there (the work tree is never touched), and runs the chapter with
papermill in profile ``ci`` with that copy first on ``PYTHONPATH``. A mutation that leaves its chapter
passing is a hole in the book's checks.

Usage::

    python -m tools.mutate             # every mutation; exit 1 if one survives
    python -m tools.mutate --list      # the mutations, without running anything
    python -m tools.mutate squareplus  # only the mutations aimed at these chapters
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug: in ``path`` (relative to ``suma_lib/``) replace ``old`` by ``new``."""

    path: str
    old: str
    new: str
    chapters: tuple[str, ...]
    what: str


def apply(mutation: Mutation, lib_copy: Path) -> None:
    """Apply ``mutation`` to the copy of ``suma_lib`` in ``lib_copy`` (raises if the snippet is gone)."""
    target = lib_copy / "suma_lib" / mutation.path
    text = target.read_text(encoding="utf-8")
    count = text.count(mutation.old)
    if count != 1:
        raise ValueError(f"{mutation.what}: snippet found {count} times in suma_lib/{mutation.path}, "
                         "expected exactly once (update tools/mutations.py)")
    target.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")


def run_chapter(slug: str, pythonpath: Path, out_dir: Path, timeout: int = 300) -> bool:
    """Run one chapter with papermill against the library in ``pythonpath``; return whether it passed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pythonpath), str(ROOT)]),
               MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{slug}.ipynb"),
           str(out_dir / f"{slug}.ipynb"), "-p", "profile", "ci", "-k", "python3",
           "--cwd", str(ROOT / "notebooks")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc.returncode == 0


def check(mutation: Mutation) -> dict:
    """Apply one mutation in a scratch copy and run its chapters; report which of them caught it."""
    with tempfile.TemporaryDirectory(prefix="suma-mutant-") as tmp:
        tmp_path = Path(tmp)
        shutil.copytree(ROOT / "suma_lib", tmp_path / "suma_lib",
                        ignore=shutil.ignore_patterns("__pycache__"))
        apply(mutation, tmp_path)
        caught = {slug: not run_chapter(slug, tmp_path, tmp_path) for slug in mutation.chapters}
    return {"mutation": mutation, "caught": caught}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", help="only mutations aimed at these chapters")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    muts = [m for m in MUTATIONS if not args.chapters or set(m.chapters) & set(args.chapters)]
    if args.list:
        for m in muts:
            print(f"{m.path}: {m.what} -> {', '.join(m.chapters)}")
        return 0
    survivors = []
    for m in muts:
        res = check(m)
        for slug, caught in res["caught"].items():
            print(f"  {'caught  ' if caught else 'SURVIVED'}  {m.what:<60} {slug}", flush=True)
            if not caught:
                survivors.append((m, slug))
    print(f"{len(muts)} mutations, {len(survivors)} survived")
    return 1 if survivors else 0


# Each row: the file under suma_lib/, the exact snippet, its broken form, the chapters that must fail, and
# what the bug is. Snippets must occur exactly once in their file.
MUTATIONS: tuple[Mutation, ...] = (
    Mutation("geometry/random_init.py",
             "log_c = _log_gamma_half_ratio((n - 1) / 2) - 0.5 * math.log(math.pi)",
             "log_c = _log_gamma_half_ratio((n - 1) / 2) - 0.5 * math.log(2 * math.pi)",
             ("init-geometry",), "angle density: wrong normalising constant"),
    Mutation("geometry/jl_lemma.py",
             "return math.floor(constant * math.log(n_points) / eps**2) + 1",
             "return math.floor(constant * math.log(n_points) / eps**2)",
             ("jl-lemma-applications",), "JL dimension off by one"),
    Mutation("geometry/jl_lemma.py", "    std = 1.0 / math.sqrt(dim)", "    std = 1.0 / math.sqrt(dim + 1)",
             ("jl-lemma-applications",), "random projection scale 1/sqrt(n+1)"),
    Mutation("entropy.py", "return -(p * logp).sum(dim=dim)", "return -1.001 * (p * logp).sum(dim=dim)",
             ("entropy-normalization",), "entropy off by 0.1%"),
    Mutation("smooth.py", "        s = math.sqrt(b)\n        _, b_lo, b_hi",
             "        s = math.sqrt(1.01 * b)\n        _, b_lo, b_hi",
             ("squareplus",), "SquarePlus with b off by 1%"),
    Mutation("_penalty_layers.py", "return torch.linalg.matrix_norm(a, ord=2)",
             'return torch.linalg.matrix_norm(a, ord="fro")',
             ("gradient-penalty-inequality",), "Frobenius norms in place of spectral norms"),
    Mutation("position/_absolute.py",
             "return torch.pow(torch.tensor(base, device=dev, dtype=i.dtype), -2.0 * i / d).to(dt)",
             "return torch.pow(torch.tensor(base, device=dev, dtype=i.dtype), -2.0 * (i + 1) / d).to(dt)",
             ("sinusoidal-origin",), "sinusoid frequencies shifted by one index"),
    Mutation("attention/sparse.py", "if causal else d.abs() <= k", "if causal else d.abs() < k",
             ("sparse-attention",), "local mask one key short on each side"),
    Mutation("attention/multihead.py", "        for term in (bias, prev):",
             "        for term in (bias, None if prev is None else 0.5 * prev):",
             ("realformer",), "RealFormer carries half the scores"),
    Mutation("attention/synthesizer.py", "        b = self.w2(torch.relu(self.w1(x)))",
             "        b = self.w2(self.w1(x))", ("synthesizer",), "dense Synthesizer without its relu"),
    Mutation("attention/tta.py", "    return ~torch.eye(n, dtype=torch.bool, device=check_device(device))",
             "    return torch.ones(n, n, dtype=torch.bool, device=check_device(device))",
             ("faster-mlm",), "T-TA without its diagonal mask"),
    Mutation("attention/linear.py", "    return F.elu(x) + 1.0", "    return F.elu(x) + 1.1",
             ("linear-attention",), "elu + 1.1 feature map"),
    Mutation("layers/_widen.py", "    s_qk = k**-0.25  #", "    s_qk = k**-0.5  #",
             ("lossless-enlargement",), "widened q, k without the fourth root of k"),
    Mutation("layers/_widen.py",
             "            eps=norm.eps * s_i * s_i,\n            elementwise_affine=norm.elementwise_affine,\n"
             "            bias=",
             "            eps=norm.eps,\n            elementwise_affine=norm.elementwise_affine,\n            bias=",
             ("lossless-enlargement",), "widened LayerNorm keeps its epsilon"),
    Mutation("perturbed.py", "    score = tl / s**2 + br / m**2 - (tr + bl) / (s * m)",
             "    score = tl / s**2 + br / m**2 - (tr + bl) / (s * m + 1)",
             ("perturbed-masking",), "split objective with a wrong between-block denominator"),
    Mutation("perturbed.py", "    vi = torch.einsum(\"pl,pld->pd\", avg[index[:, 0]], hidden)",
             "    vi = torch.einsum(\"pl,pld->pd\", avg[index[:, 1]], hidden)",
             ("perturbed-masking",), "impact read at the second masked unit, not the first"),
    Mutation("position/_rotary.py", "            return torch.view_as_real(z * cis).flatten(-2)",
             "            return torch.view_as_real(z * cis.conj()).flatten(-2)",
             ("roformer-v2",), "RoPE (interleaved) rotates the wrong way"),
    Mutation("pointers.py", "    log_q = n * nn.functional.logsigmoid(logits)",
             "    log_q = nn.functional.logsigmoid(logits)",
             ("lic2020-baselines",), "pointer loss ignores the power p^n"),
    Mutation("pointers.py", "(pos[None, :] < pos[:, None] + L)", "(pos[None, :] <= pos[:, None] + L)",
             ("lic2020-baselines",), "best span allows answers one token too long"),
    Mutation("pointers.py", "idx = torch.flip(torch.cummin(torch.flip(idx, [-1]), -1).values, [-1])",
             "idx = torch.cummin(idx, -1).values",
             ("lic2020-baselines",), "span decoding pairs a start with an earlier end"),
    Mutation("crf/_lr.py", '{"params": crf_params, "lr": lr * mult}', '{"params": crf_params, "lr": lr}',
             ("crf-learning-rate",), "CRF learning-rate multiplier ignored"),
    Mutation("crf/_chain.py", "nxt = torch.logsumexp(alpha.unsqueeze(-1) + G, dim=-2)",
             "nxt = torch.logsumexp(alpha.unsqueeze(-1) + G.transpose(-1, -2), dim=-2)",
             ("crf-learning-rate",), "CRF partition function reads the transitions transposed"),
    Mutation("layers/_theseus.py", "(u < self.replace_rate)", "(u < 0.5 * self.replace_rate)",
             ("bert-of-theseus",), "Theseus replacement drawn at half the rate"),
    Mutation("layers/_theseus.py", "x = _run(succ if use else pred,", "x = _run(pred if use else succ,",
             ("bert-of-theseus",), "Theseus runs the predecessor where the successor was drawn"),
    Mutation("nsp.py", "    return torch.log_softmax(logits, dim=-1)[..., IS_NEXT]",
             "    return torch.log_softmax(logits, dim=-1)[..., 1 - IS_NEXT]",
             ("nsp-zero-shot",), "NSP score read from the 'random sentence' logit (index 1)"),
)


if __name__ == "__main__":
    sys.exit(main())
