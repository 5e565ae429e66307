"""suma_lib.position against the peers that ship RoPE, XPOS and ALiBi: x-transformers and rotary-embedding-torch.

Both peers rotate interleaved pairs (x_{2i}, x_{2i+1}) only. The half-split layout (x_i, x_{i+d/2}) is the
same rotation with the coordinates permuted, so it is checked by running the peer on the permuted vector and
permuting back (transformers' LLaMA checks it directly in tests/test_position.py). Queries and keys at
different offsets (a KV cache) are checked where the peer supports them.
"""

from __future__ import annotations

import pytest
import torch

from suma_lib.position import RotaryEmbedding, alibi_slopes, apply_rope, apply_xpos

xt = pytest.importorskip("x_transformers.x_transformers")
ret = pytest.importorskip("rotary_embedding_torch")

F64 = torch.float64


def _half_to_interleaved(d: int) -> torch.Tensor:
    """Index ``perm`` with ``x[..., perm]`` interleaved when ``x`` is half-split: (x_0, x_{d/2}, x_1, ...)."""
    h = d // 2
    return torch.stack((torch.arange(h), torch.arange(h) + h), dim=-1).flatten()


def _peer_half(rotate, x: torch.Tensor) -> torch.Tensor:
    """A peer's interleaved rotation applied to a half-split vector: permute, rotate, permute back."""
    perm = _half_to_interleaved(x.shape[-1])
    return rotate(x[..., perm])[..., torch.argsort(perm)]


def _inv_freq(d: int, base: float = 10000.0) -> torch.Tensor:
    """theta_i = base^(-2i/d) in float64 (the peers build theirs in float32 before any ``.double()``)."""
    return 1.0 / base ** (torch.arange(0, d, 2, dtype=F64) / d)


def _zeta(d: int, gamma: float = 0.4) -> torch.Tensor:
    """XPOS's zeta_i = (2i/d + gamma)/(1 + gamma) in float64 (the peers round theirs to float32 first)."""
    return (torch.arange(0, d, 2, dtype=F64) / d + gamma) / (1 + gamma)


def _ret(d: int, base: float = 10000.0, **kw):
    """rotary-embedding-torch's module in float64, with float64 frequencies, without its cache."""
    peer = ret.RotaryEmbedding(d, theta=base, cache_if_possible=False, **kw).double()
    peer.freqs.data = _inv_freq(d, base)
    if kw.get("use_xpos"):
        peer.scale = _zeta(d)
    return peer


def _xt(d: int, **kw):
    """x-transformers' module in float64, with float64 frequencies."""
    peer = xt.RotaryEmbedding(d, **kw).double()
    peer.inv_freq = _inv_freq(d)
    if kw.get("use_xpos"):
        peer.scale = _zeta(d)
    return peer


def _qk(b, h, n, m, d, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, n, d, generator=g, dtype=dtype), torch.randn(b, h, m, d, generator=g, dtype=dtype)


def test_half_permutation_is_the_layout_change() -> None:
    """Sanity of the permutation itself: it maps our half layout onto our interleaved layout."""
    x = torch.randn(3, 5, 12, dtype=F64)
    perm = _half_to_interleaved(12)
    got = apply_rope(x[..., perm], offset=4)[..., torch.argsort(perm)]
    # the layouts take different arithmetic (complex products, fused multiply-adds): rounding apart
    torch.testing.assert_close(got, apply_rope(x, offset=4, layout="half"), rtol=0, atol=1e-15)


# ======================================================================== rotary-embedding-torch
@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("offset", [0, 7, 3000])
@pytest.mark.parametrize("base", [10000.0, 500.0])
def test_rope_matches_rotary_embedding_torch(layout: str, offset: int, base: float) -> None:
    d = 16
    peer = _ret(d, base)
    x, _ = _qk(2, 3, 9, 1, d, seed=offset)

    def rotate(t):
        return peer.rotate_queries_or_keys(t, offset=offset)

    ref = rotate(x) if layout == "interleaved" else _peer_half(rotate, x)
    torch.testing.assert_close(apply_rope(x, offset=offset, base=base, layout=layout), ref, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_kv_cache_matches_rotary_embedding_torch(layout: str) -> None:
    """n new queries against m cached keys: the queries sit at m-n, ..., m-1 (the peer's cached-keys call)."""
    d, n, m = 8, 3, 11
    peer = _ret(d)
    q, k = _qk(2, 2, n, m, d, seed=1)
    ours_q, ours_k = RotaryEmbedding(d, layout=layout)(q, k)
    if layout == "interleaved":
        ref_q, ref_k = peer.rotate_queries_with_cached_keys(q, k)
    else:
        perm = _half_to_interleaved(d)
        inv = torch.argsort(perm)
        ref_q, ref_k = peer.rotate_queries_with_cached_keys(q[..., perm], k[..., perm])
        ref_q, ref_k = ref_q[..., inv], ref_k[..., inv]
    torch.testing.assert_close(ours_q, ref_q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_k, ref_k, rtol=1e-12, atol=1e-12)


def test_rope_float32_matches_rotary_embedding_torch_with_its_cache() -> None:
    """The peer as it is usually run (float32, frequencies cached); ours forms its angles in float64."""
    d = 64
    peer = ret.RotaryEmbedding(d)
    x = torch.randn(2, 4, 300, d, generator=torch.Generator().manual_seed(2))
    peer.rotate_queries_or_keys(x)  # fills the peer's cache
    ref = peer.rotate_queries_or_keys(x)
    # float32 angles p*theta lose about p * 2^-24 radians: a few 1e-5 at p = 300
    torch.testing.assert_close(apply_rope(x), ref, rtol=0, atol=1e-4)


def test_xpos_scores_match_rotary_embedding_torch() -> None:
    """XPOS: the peer centres its scale at n // 2, ours at the midpoint; the centre cancels in q·k."""
    d, n, B = 16, 10, 64.0
    peer = _ret(d, use_xpos=True, xpos_scale_base=B)
    q, k = _qk(1, 2, n, n, d, seed=3)
    pq, pk = peer.rotate_queries_and_keys(q, k)
    oq, ok = apply_xpos(q, k, scale_base=B)
    torch.testing.assert_close(oq @ ok.mT, pq @ pk.mT, rtol=1e-10, atol=1e-10)


# ================================================================================ x-transformers
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rope_matches_x_transformers_at_arbitrary_positions(layout: str) -> None:
    """x-transformers takes a position tensor: random sorted positions, one set per sequence."""
    d = 16
    peer = _xt(d)
    x, _ = _qk(3, 2, 7, 1, d, seed=4)
    g = torch.Generator().manual_seed(5)
    pos = torch.sort(torch.randperm(500, generator=g)[:21].view(3, 7), dim=-1).values
    freqs, _ = peer(pos)  # (batch, n, d)

    def rotate(t):
        return xt.apply_rotary_pos_emb(t, freqs)

    ref = rotate(x) if layout == "interleaved" else _peer_half(rotate, x)
    got = apply_rope(x, pos[:, None, :].to(F64), layout=layout)  # (batch, 1, n): shared by the heads
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_kv_cache_matches_x_transformers(layout: str) -> None:
    """The peer rotates queries by the last n of the keys' angles, as a KV cache needs."""
    d, n, m = 8, 2, 9
    peer = _xt(d)
    q, k = _qk(2, 2, n, m, d, seed=6)
    freqs, _ = peer(torch.arange(m))

    def rotate(t):
        return xt.apply_rotary_pos_emb(t, freqs)

    ref_q, ref_k = (rotate(t) if layout == "interleaved" else _peer_half(rotate, t) for t in (q, k))
    ours_q, ours_k = RotaryEmbedding(d, layout=layout)(q, k)
    torch.testing.assert_close(ours_q, ref_q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_k, ref_k, rtol=1e-12, atol=1e-12)


def test_xpos_scores_match_x_transformers_with_a_cache() -> None:
    """XPOS with n queries after m keys: the peer scales queries by the last n of the keys' factors."""
    d, n, m, B = 16, 4, 12, 32.0
    peer = _xt(d, use_xpos=True, scale_base=B)
    q, k = _qk(1, 2, n, m, d, seed=7)
    freqs, scale = peer(torch.arange(m))
    pq = xt.apply_rotary_pos_emb(q, freqs, scale)
    pk = xt.apply_rotary_pos_emb(k, freqs, scale**-1.0)
    oq, ok = apply_xpos(q, k, scale_base=B)
    torch.testing.assert_close(oq @ ok.mT, pq @ pk.mT, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("heads", list(range(1, 25)) + [32, 48])
def test_alibi_slopes_match_x_transformers(heads: int) -> None:
    """The paper's slopes (powers of two) and its rule for other head counts, as x-transformers ships them."""
    ref = torch.tensor(xt.AlibiPositionalBias._get_slopes(heads), dtype=F64)
    torch.testing.assert_close(alibi_slopes(heads, dtype=F64), ref, rtol=1e-12, atol=0)


def test_xpos_with_a_cache_equals_the_full_run() -> None:
    """Decoding n queries against m cached keys must give the last n rows of the full run's scores.

    Ours does (the centre cancels), and equals the peer's full run. The peer's own cached-keys call is not the
    reference: rotary-embedding-torch 0.9.1's ``rotate_queries_with_cached_keys`` centres the queries' scale
    at n // 2 and the keys' at m // 2, which multiplies pair i of every score by zeta_i^((m//2 - n//2)/B),
    so its cached scores differ from its own full run.
    """
    d, n, m, B = 16, 3, 12, 32.0
    q, k = _qk(1, 2, m, m, d, seed=8)
    full_q, full_k = apply_xpos(q, k, scale_base=B)
    cq, ck = apply_xpos(q[..., -n:, :], k, scale_base=B)
    torch.testing.assert_close(cq @ ck.mT, (full_q @ full_k.mT)[..., -n:, :], rtol=1e-12, atol=1e-12)
    peer = _ret(d, use_xpos=True, xpos_scale_base=B)
    pq, pk = peer.rotate_queries_and_keys(q, k)
    torch.testing.assert_close(cq @ ck.mT, (pq @ pk.mT)[..., -n:, :], rtol=1e-10, atol=1e-10)
