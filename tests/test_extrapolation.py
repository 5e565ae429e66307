"""Tests of suma_lib.extrapolation: the task, the decoder's schemes, the grid and its summary."""

import numpy as np
import pytest
import torch

from suma_lib.extrapolation import (
    SCHEMES,
    TinyDecoder,
    evaluate,
    format_table,
    lag_copy_batch,
    run_grid,
    summarise,
)


def test_lag_copy_targets_are_the_shifted_tokens():
    g = torch.Generator().manual_seed(0)
    x, y = lag_copy_batch(3, 10, 5, lag=2, generator=g)
    assert x.shape == y.shape == (3, 10) and x.dtype == torch.int64
    assert (y[:, :2] == -100).all()
    assert torch.equal(y[:, 2:], x[:, :-2])
    assert int(x.min()) >= 0 and int(x.max()) < 5


@pytest.mark.parametrize("bad", [dict(length=1), dict(vocab=1), dict(lag=0), dict(batch=0)])
def test_lag_copy_rejects_bad_sizes(bad):
    kw = dict(batch=2, length=8, vocab=4, lag=1) | bad
    with pytest.raises(ValueError):
        lag_copy_batch(**kw)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_runs_at_longer_lengths_and_is_causal(scheme):
    g = torch.Generator().manual_seed(1)
    model = TinyDecoder(
        scheme, 7, d_model=16, heads=2, layers=2, train_length=8, generator=g
    ).eval()
    x = torch.randint(7, (2, 32), generator=g)
    pos = model.test_positions(32)
    pos = None if pos is None else pos.expand(2, 32)
    out = model(x, positions=pos, window=model.test_window())
    assert out.shape == (2, 32, 7) and torch.isfinite(out).all()
    # causal: changing the last token leaves every earlier output as it was
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 7
    out2 = model(x2, positions=pos, window=model.test_window())
    torch.testing.assert_close(out2[:, :-1], out[:, :-1])
    # training positions have the batch's shape (or are None)
    tp = model.training_positions(4, g)
    assert tp is None or tp.shape == (4, 8)


def test_same_generator_same_model_and_window_restricts_attention():
    a = TinyDecoder("rope", 5, 16, 2, 1, 8, generator=torch.Generator().manual_seed(3))
    b = TinyDecoder("rope", 5, 16, 2, 1, 8, generator=torch.Generator().manual_seed(3))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    # with window w, output i depends only on tokens i-w..i: changing token 0 leaves outputs >= w+1
    x = torch.randint(5, (1, 20), generator=torch.Generator().manual_seed(4))
    x2 = x.clone()
    x2[0, 0] = (x2[0, 0] + 1) % 5
    o1, o2 = a(x, window=3), a(x2, window=3)
    torch.testing.assert_close(o1[:, 4:], o2[:, 4:])
    assert not torch.allclose(o1[:, :4], o2[:, :4])


def test_random_scheme_tests_on_evenly_spaced_positions_of_its_range():
    m = TinyDecoder("random", 5, 16, 2, 1, 8)
    p = m.test_positions(8)
    assert p[0] == 0 and p[-1] == 63 and (p.diff() > 0).all()
    torch.testing.assert_close(m.test_positions(64), torch.arange(64))
    assert TinyDecoder("rope", 5, 16, 2, 1, 8).test_positions(8) is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="scheme"):
        TinyDecoder("nope", 5)
    with pytest.raises(ValueError, match="d_model"):
        TinyDecoder("rope", 5, d_model=12, heads=4)
    m = TinyDecoder("none", 5, 16, 2, 1, 8)
    with pytest.raises(TypeError, match="x"):
        m(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="positions"):
        m(torch.zeros(1, 4, dtype=torch.int64), positions=torch.zeros(1, 3))
    with pytest.raises(TypeError, match="model"):
        evaluate(torch.nn.Linear(2, 2), 8)
    with pytest.raises(ValueError, match="schemes"):
        run_grid([], [0])
    with pytest.raises(ValueError, match="schemes"):
        run_grid(["bogus"], [0])


def test_grid_is_tidy_deterministic_and_learns():
    kw = dict(
        train_length=8,
        factors=(1, 2),
        steps=60,
        batch=16,
        vocab=6,
        d_model=16,
        layers=1,
        eval_batch=16,
    )
    t1 = run_grid(["rope", "window", "none"], [0, 1], **kw)
    t2 = run_grid(["rope", "window", "none"], [0, 1], **kw)
    assert set(t1) == {"scheme", "seed", "length", "accuracy", "final_loss"}
    assert len(t1["accuracy"]) == 3 * 2 * 2
    np.testing.assert_array_equal(t1["accuracy"], t2["accuracy"])
    # "window" is the same trained model as "rope": equal at the training length (the window covers
    # it)
    at_l = t1["length"] == 8
    np.testing.assert_array_equal(
        t1["accuracy"][at_l & (t1["scheme"] == "rope")],
        t1["accuracy"][at_l & (t1["scheme"] == "window")],
    )
    s = summarise(t1)
    assert list(s["schemes"]) == ["rope", "window", "none"] and list(s["lengths"]) == [8, 16]
    assert (s["min"] <= s["mean"]).all() and (s["mean"] <= s["max"]).all() and (s["n"] == 2).all()
    # RoPE learns the lagged copy at its training length well above chance (1/6)
    assert s["mean"][0, 0] > 0.5
    text = format_table(s)
    assert text.count("\n") == 4 and "±" in text
    with pytest.raises(ValueError, match="accuracy"):
        summarise({"scheme": np.array(["a"]), "length": np.array([1])})
