"""Tests of suma_lib.tasks: the synthetic tasks and the exact answers of the Markov-chain tasks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from suma_lib.attention import markov_conditionals, sample_markov_chain
from suma_lib.tasks import (
    markov_chain,
    markov_leave_one_out,
    markov_mlm_task,
    markov_posterior,
    markov_sample,
    partner_task,
    permutation_task,
)

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_generator_same_draws_and_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    init, trans = markov_chain(4, 2.0, _gen(0))
    draws = [
        lambda g: markov_sample(init, trans, 5, 7, g),
        lambda g: markov_mlm_task(5, 7, init, trans, 0.3, g)[0],
        lambda g: partner_task(3, 4, 2, g)[0],
        lambda g: permutation_task(3, 4, 6, torch.tensor([2, 0, 3, 1]), g)[0],
        lambda g: markov_chain(4, 2.0, g)[1],
    ]
    for draw in draws:
        assert torch.equal(draw(_gen(5)), draw(_gen(5)))
        assert not torch.equal(draw(_gen(5)), draw(_gen(6)))
    assert torch.equal(torch.get_rng_state(), state)


def test_old_markov_api_wraps_the_new_one() -> None:
    init, trans = markov_chain(3, 1.0, _gen(1))
    assert torch.equal(
        sample_markov_chain(trans, init, 4, 6, generator=_gen(2)),
        markov_sample(init, trans, 4, 6, _gen(2)),
    )
    tokens = markov_sample(init, trans, 4, 6, _gen(3))
    assert torch.equal(
        markov_conditionals(tokens, trans, init), markov_leave_one_out(tokens, init, trans)
    )


def test_leave_one_out_is_the_posterior_with_one_position_hidden() -> None:
    init, trans = markov_chain(4, 1.5, _gen(4))
    tokens = markov_sample(init, trans, 3, 5, _gen(5))
    loo = markov_leave_one_out(tokens, init, trans)
    for i in range(5):
        hidden = tokens.clone()
        hidden[:, i] = 4
        torch.testing.assert_close(
            markov_posterior(hidden, init, trans)[:, i], loo[:, i], rtol=1e-12, atol=1e-14
        )


def test_posterior_equals_brute_force() -> None:
    init, trans = markov_chain(3, 1.0, _gen(6))
    x = torch.tensor([[3, 0, 3, 2]])
    post = markov_posterior(x, init, trans)[0]
    joint = torch.zeros(4, 3, dtype=F64)
    for seq in itertools.product(range(3), repeat=4):
        if seq[1] != 0 or seq[3] != 2:
            continue
        p = init[seq[0]] * math.prod(trans[seq[t - 1], seq[t]] for t in range(1, 4))
        for t, s in enumerate(seq):
            joint[t, s] += p
    torch.testing.assert_close(post, joint / joint.sum(-1, keepdim=True))


def test_token_ranges_and_impossible_evidence() -> None:
    init, trans = markov_chain(3, 1.0, _gen(7))
    for bad in ([[0, -1]], [[0, 4]]):
        with pytest.raises(ValueError, match="x must hold ids"):
            markov_posterior(torch.tensor(bad), init, trans)
    for bad in ([[0, -1]], [[0, 3]]):
        with pytest.raises(ValueError, match="tokens must hold ids"):
            markov_leave_one_out(torch.tensor(bad), init, trans)
    cycle = torch.roll(torch.eye(3, dtype=F64), 1, dims=1)  # 0 -> 1 -> 2 -> 0, deterministic
    for fn, ids in ((markov_posterior, [[0, 0]]), (markov_leave_one_out, [[0, 0, 0]])):
        with pytest.raises(ValueError, match="probability zero"):
            fn(torch.tensor(ids), init, cycle)
    with pytest.raises(ValueError, match="perm must hold ids"):
        permutation_task(2, 3, 4, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="permutation"):
        permutation_task(2, 3, 4, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="transition"):
        markov_sample(init, trans * 2, 2, 3)
    with pytest.raises(TypeError, match="device"):
        markov_posterior(torch.zeros(1, 2, dtype=torch.long, device="meta"), init, trans)
    with pytest.raises(TypeError, match="share dtype"):
        markov_sample(init.float(), trans, 2, 3)


def test_meta_device() -> None:
    init, trans = markov_chain(4, device="meta")
    assert markov_sample(init, trans, 2, 3).device.type == "meta"
    x = torch.zeros(2, 5, dtype=torch.long, device="meta")
    assert markov_posterior(x, init, trans).shape == (2, 5, 4)
    assert markov_leave_one_out(x, init, trans).shape == (2, 5, 4)
