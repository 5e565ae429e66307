"""Tests of suma_lib.attention.tta: T-TA's independence of each output from its own token, PLL,
Markov data."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.attention import (
    DiagonalFreeAttention,
    MultiHeadAttention,
    TTAEncoder,
    TTALayer,
    diagonal_free_mask,
    markov_conditionals,
    masked_pseudo_log_likelihood,
    pseudo_log_likelihood,
    sample_markov_chain,
    train_tta,
)

F64 = torch.float64


def _model(stacking="tta", layers=3, seed=0, vocab=7, max_len=10, dtype=F64):
    torch.manual_seed(seed)
    return TTAEncoder(
        vocab, max_len, 16, 4, layers, ff_dim=24, stacking=stacking, dtype=dtype
    ).eval()


def _diag_jacobian_blocks(net, tokens):
    emb = net.token_embedding(tokens).detach()
    jac = torch.autograd.functional.jacobian(net.forward_embeddings, emb)  # (n, V, n, d)
    n = tokens.shape[-1]
    idx = torch.arange(n)
    return jac[idx, :, idx, :].abs().amax(dim=(-2, -1)), jac.abs().amax()


def test_diagonal_free_mask() -> None:
    m = diagonal_free_mask(4)
    assert m.dtype == torch.bool and not m.diagonal().any() and int(m.sum()) == 12
    assert diagonal_free_mask(0).shape == (0, 0)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_output_i_has_zero_jacobian_wrt_token_i(layers: int) -> None:
    net = _model(layers=layers)
    tokens = torch.randint(7, (9,), generator=torch.Generator().manual_seed(layers))
    diag, overall = _diag_jacobian_blocks(net, tokens)
    assert torch.equal(diag, torch.zeros_like(diag))  # exactly zero, not merely small
    assert overall > 1e-6


def test_naive_stacking_leaks_from_the_second_layer() -> None:
    tokens = torch.randint(7, (9,), generator=torch.Generator().manual_seed(0))
    one, _ = _diag_jacobian_blocks(_model("naive", layers=1), tokens)
    two, _ = _diag_jacobian_blocks(_model("naive", layers=2), tokens)
    assert torch.equal(one, torch.zeros_like(one))
    assert (two > 1e-8).all()


@given(seed=st.integers(0, 2**16), n=st.integers(2, 10), i=st.integers(0, 9), new=st.integers(0, 6))
@settings(max_examples=25, deadline=None)
def test_changing_token_i_leaves_output_i_unchanged(seed: int, n: int, i: int, new: int) -> None:
    i = i % n
    net = _model(seed=seed % 3)
    tokens = torch.randint(7, (3, n), generator=torch.Generator().manual_seed(seed))
    edited = tokens.clone()
    edited[:, i] = new
    with torch.no_grad():
        assert torch.equal(net(tokens)[:, i], net(edited)[:, i])


def test_padding_is_never_read() -> None:
    net = _model()
    tokens = torch.randint(7, (2, 8), generator=torch.Generator().manual_seed(1))
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[:, 6:] = False
    edited = tokens.clone()
    edited[:, 6:] = (tokens[:, 6:] + 1) % 7
    with torch.no_grad():
        torch.testing.assert_close(
            net(tokens, keep)[:, :6], net(edited, keep)[:, :6], rtol=0, atol=0
        )


def test_single_token_sequence_is_finite() -> None:
    net = _model()
    with torch.no_grad():
        out = net(torch.tensor([[3]]))
    assert out.shape == (1, 1, 7) and torch.isfinite(out).all()


def test_one_pass_pll_equals_n_masked_passes() -> None:
    net = _model()
    tokens = torch.randint(7, (4, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        one = pseudo_log_likelihood(net(tokens), tokens)
        many = masked_pseudo_log_likelihood(net, tokens, mask_token=0)
        leaky = _model("naive")
        leaky_one = pseudo_log_likelihood(leaky(tokens), tokens)
        leaky_many = masked_pseudo_log_likelihood(leaky, tokens, mask_token=0)
    assert one.shape == (4,) and (one < 0).all()
    torch.testing.assert_close(one, many, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(leaky_one, leaky_many)  # the leaky model's one pass is not a PLL


def test_pll_by_hand() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]], dtype=F64))
    tokens = torch.tensor([1, 0, 1])
    expected = torch.log(torch.tensor(0.5 * 0.9 * 0.8, dtype=F64))
    torch.testing.assert_close(pseudo_log_likelihood(logits, tokens), expected)


def _chain(v=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    trans = torch.rand(v, v, generator=g, dtype=F64) + 0.1
    trans = trans / trans.sum(-1, keepdim=True)
    init = torch.rand(v, generator=g, dtype=F64) + 0.1
    return trans, init / init.sum()


@pytest.mark.parametrize("n", [1, 2, 4])
def test_markov_conditionals_against_brute_force(n: int) -> None:
    trans, init = _chain()
    seqs = torch.tensor(list(itertools.product(range(3), repeat=n)))
    joint = init[seqs[:, 0]] * trans[seqs[:, :-1], seqs[:, 1:]].prod(-1)
    cond = markov_conditionals(seqs, trans, init)
    torch.testing.assert_close(cond.sum(-1), torch.ones(len(seqs), n, dtype=F64))
    table = joint.reshape([3] * n)
    for i in range(n):
        brute = (table / table.sum(i, keepdim=True)).reshape(-1)
        torch.testing.assert_close(cond[:, i].gather(-1, seqs[:, i : i + 1]).squeeze(-1), brute)


def test_sampler_frequencies_match_the_chain() -> None:
    trans, init = _chain(seed=3)
    seqs = sample_markov_chain(trans, init, 4000, 6, generator=torch.Generator().manual_seed(0))
    assert seqs.shape == (4000, 6) and seqs.dtype == torch.long
    first = torch.bincount(seqs[:, 0], minlength=3).to(F64) / 4000
    assert (first - init).abs().max() < 4 * (0.25 / 4000) ** 0.5  # 4 standard errors at worst
    pairs = torch.zeros(3, 3, dtype=F64)
    pairs.index_put_(
        (seqs[:, :-1].flatten(), seqs[:, 1:].flatten()),
        torch.ones(4000 * 5, dtype=F64),
        accumulate=True,
    )
    empirical = pairs / pairs.sum(-1, keepdim=True)
    assert (empirical - trans).abs().max() < 4 * (0.25 / pairs.sum(-1).min()) ** 0.5
    again = sample_markov_chain(trans, init, 4000, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seqs, again)


def test_training_learns_a_deterministic_chain() -> None:
    # x_{t+1} = x_t + 1 (mod 5): every token is fixed by its neighbours, so the loss must fall far
    # below log 5.
    v, n = 5, 6
    trans = torch.roll(torch.eye(v), 1, dims=1)
    data = sample_markov_chain(
        trans, torch.full((v,), 1.0 / v), 256, n, generator=torch.Generator().manual_seed(0)
    )
    torch.manual_seed(0)
    net = TTAEncoder(v, n, 16, 2, 1, ff_dim=16)
    losses = train_tta(
        net, data, 60, batch_size=32, lr=1e-2, generator=torch.Generator().manual_seed(0)
    )
    assert len(losses) == 60 and not net.training
    assert losses[-1] < 0.5 * losses[0]


def test_layer_and_meta_device() -> None:
    layer = TTALayer(8, 2, device="meta")
    q = torch.empty(3, 5, 8, device="meta")
    assert layer(q, q).shape == (3, 5, 8)
    net = TTAEncoder(6, 10, 8, 2, 2, device="meta")
    out = net(torch.zeros(2, 3, 7, dtype=torch.long, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 3, 7, 6)
    trans = torch.empty(4, 4, device="meta")
    tokens = torch.zeros(2, 5, dtype=torch.long, device="meta")
    assert markov_conditionals(tokens, trans, torch.empty(4, device="meta")).shape == (2, 5, 4)


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="stacking"):
        TTAEncoder(5, 8, 8, 2, 1, stacking="deep")
    with pytest.raises(ValueError, match="num_layers"):
        TTAEncoder(5, 8, 8, 2, 0)
    with pytest.raises(ValueError, match="dropout"):
        TTALayer(8, 2, dropout=1.0)
    net = _model()
    with pytest.raises(TypeError, match="tokens"):
        net(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="tokens"):
        net(torch.tensor([[0, 7]]))
    with pytest.raises(ValueError, match="max_len"):
        net(torch.zeros(1, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="padding_mask"):
        net(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="token_vectors"):
        net.forward_embeddings(torch.zeros(1, 4, 5, dtype=F64))
    with pytest.raises(ValueError, match="memory"):
        TTALayer(8, 2)(torch.randn(2, 4, 8), torch.randn(2, 5, 8))
    with pytest.raises(TypeError, match="model"):
        masked_pseudo_log_likelihood("net", torch.zeros(1, 3, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="logits"):
        pseudo_log_likelihood(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    trans, init = _chain()
    with pytest.raises(ValueError, match="transition"):
        sample_markov_chain(trans[:2], init, 3, 3)
    with pytest.raises(ValueError, match="transition"):
        sample_markov_chain(trans * 2, init, 3, 3)
    with pytest.raises(ValueError, match="initial"):
        markov_conditionals(torch.zeros(1, 3, dtype=torch.long), trans, init[:2])
    with pytest.raises(TypeError, match="generator"):
        sample_markov_chain(trans, init, 3, 3, generator=0)
    deterministic = torch.roll(torch.eye(3, dtype=F64), 1, dims=1)
    with pytest.raises(ValueError, match="probability zero"):
        markov_conditionals(torch.tensor([[0, 0, 0]]), deterministic, init)
    with pytest.raises(TypeError, match="model"):
        train_tta(lambda x: x, torch.zeros(4, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="steps"):
        train_tta(net, torch.zeros(4, 3, dtype=torch.long), -1)


def test_token_ids_are_range_checked() -> None:
    """Issue 11: negative ids used to wrap around silently."""
    logits = torch.randn(2, 3, 4, dtype=F64)
    for bad in ([[0, 1, 4], [0, 0, 0]], [[0, -1, 2], [0, 0, 0]]):
        with pytest.raises(ValueError, match="tokens"):
            pseudo_log_likelihood(logits, torch.tensor(bad))
    with pytest.raises(ValueError, match="tokens"):
        masked_pseudo_log_likelihood(_model(), torch.tensor([[0, -2, 1]]), 0)
    with pytest.raises(ValueError, match="tokens"):
        _model()(torch.tensor([[-1, 0]]))
    with pytest.raises(ValueError, match="train_tokens"):
        train_tta(_model(), torch.tensor([[0, -1]]), 1)


def test_diagonal_free_attention_is_a_multihead_attention() -> None:
    torch.manual_seed(0)
    attn = DiagonalFreeAttention(8, 2, dtype=F64)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        out, w = attn(x, return_weights=True)
        assert (w.diagonal(dim1=-2, dim2=-1) == 0).all()
        torch.testing.assert_close(out, attn(x))  # explicit and fused paths agree
        plain = MultiHeadAttention(8, 2, dtype=F64)  # the same weights without the structural mask
        plain.load_state_dict(attn.state_dict())
        torch.testing.assert_close(out, plain(x, mask=diagonal_free_mask(5)))


def test_mixed_meta_and_cpu_inputs_raise() -> None:
    net = _model()
    meta_tokens = torch.zeros(1, 3, dtype=torch.long, device="meta")
    with pytest.raises(TypeError, match="device"):
        net(meta_tokens)
    with pytest.raises(TypeError, match="device"):
        net.forward_embeddings(
            torch.ones(1, 3, net.token_embedding.embedding_dim, dtype=F64, device="meta")
        )
    with pytest.raises(TypeError, match="device"):
        pseudo_log_likelihood(
            torch.ones(1, 3, 4, device="meta"), torch.zeros(1, 3, dtype=torch.long)
        )


def test_tta_layer_finite_at_huge_input() -> None:  # issue 11: LayerNorm and logits at 1e30
    from suma_lib.attention import TTALayer

    torch.manual_seed(0)
    layer = TTALayer(8, 2)
    q, m = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    assert torch.isfinite(layer(q * 1e30, m * 1e30)).all()
    ref = layer.double()(q.double() * 1e30, m.double() * 1e30)
    assert torch.allclose(layer.float()(q * 1e30, m * 1e30).double(), ref, atol=1e-4)
