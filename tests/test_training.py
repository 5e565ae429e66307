"""Tests of suma_lib.training.train: the one loop for the book's small models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from suma_lib.training import default_loss, train


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(seed: int = 0) -> nn.Module:
    net = nn.Linear(3, 1, dtype=torch.float64)
    with torch.no_grad():
        net.weight.copy_(torch.randn(1, 3, generator=_gen(seed), dtype=torch.float64))
        net.bias.zero_()
    return net


def _regression(g: torch.Generator):
    w = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)

    def sample():
        x = torch.randn(32, 3, generator=g, dtype=torch.float64)
        return x, x @ w.T

    return sample


def test_learns_and_is_deterministic_without_touching_the_global_rng() -> None:
    models = [
        _model(),
        _model(),
    ]  # built first: nn.Linear's own initialisation uses the global state
    state = torch.get_rng_state()
    runs = [train(net, _regression(_gen(1)), 200, lr=0.05) for net in models]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(runs[0]["loss"], runs[1]["loss"])
    loss = runs[0]["loss"]
    assert loss.shape == (200,) and loss.device.type == "cpu"
    assert loss[-10:].mean() < 1e-3 * loss[:10].mean()


def test_dataset_mode_draws_rows_with_the_generator() -> None:
    data = torch.arange(20.0, dtype=torch.float64).reshape(10, 2)
    seen = []

    def loss(model, batch):
        seen.append(batch)
        return model(batch[:, :1]).sum() * 0

    net = nn.Linear(1, 1, dtype=torch.float64)
    train(net, data, 3, loss=loss, batch_size=4, generator=_gen(2))
    rows = torch.randint(10, (4,), generator=_gen(2))
    assert torch.equal(seen[0], data[rows])
    seen.clear()
    pairs = train(
        net, (data, data[:, 0]), 2, loss=lambda m, b: m(b[0][:, :1]).sum() * 0, batch_size=3
    )
    assert pairs["loss"].shape == (2,)
    with pytest.raises(TypeError, match="batch_size"):
        train(net, data, 1, loss=loss)


def test_iterable_restarts_eval_callback_and_modes() -> None:
    batches = [(torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64))] * 3
    net = _model()
    net.eval()
    calls = []

    def evaluate(model):
        assert not model.training and not torch.is_grad_enabled()
        calls.append(1)
        return len(calls)

    history = train(
        net, batches, 7, torch.optim.SGD(net.parameters(), lr=0.1), eval_fn=evaluate, eval_every=3
    )
    assert [s for s, _ in history["eval"]] == [3, 6, 7] and history["eval"][-1][1] == 3
    assert not net.training  # back to the mode it had
    assert history["loss"].shape == (7,)


def test_default_loss_cross_entropy_ignores_minus_100() -> None:
    net = nn.Linear(2, 3, dtype=torch.float64)
    x = torch.randn(4, 5, 2, generator=_gen(3), dtype=torch.float64)
    y = torch.tensor([[0, 1, -100, 2, 0]] * 4)
    logits = net(x)
    keep = y != -100
    ref = nn.functional.cross_entropy(logits[keep], y[keep])
    torch.testing.assert_close(default_loss(net, (x, y)), ref)
    with pytest.raises(TypeError, match="loss"):
        default_loss(net, x)


def test_progress_bar_only_when_asked_or_long(capsys) -> None:
    train(_model(), _regression(_gen(4)), 5, progress=True)
    assert "5/5" in capsys.readouterr().err
    train(_model(), _regression(_gen(4)), 5)
    assert capsys.readouterr().err == ""  # short run, not a terminal


def test_errors_name_the_argument() -> None:
    net = _model()
    with pytest.raises(TypeError, match="model"):
        train(lambda x: x, _regression(_gen(0)), 1)
    with pytest.raises(ValueError, match="steps"):
        train(net, _regression(_gen(0)), -1)
    with pytest.raises(TypeError, match="data"):
        train(net, 3, 1)
    with pytest.raises(TypeError, match="generator"):
        train(net, _regression(_gen(0)), 1, generator=0)
    with pytest.raises(TypeError, match="optimizer"):
        train(net, _regression(_gen(0)), 1, optimizer=3)
    with pytest.raises(ValueError, match="lr"):
        train(net, _regression(_gen(0)), 1, lr=0.0)
    with pytest.raises(TypeError, match="loss must return"):
        train(net, _regression(_gen(0)), 1, loss=lambda m, b: 1.0)
    assert train(net, _regression(_gen(0)), 0)["loss"].numel() == 0


def test_sequence_tagger_checks_ids_and_device() -> None:
    from suma_lib.training import SequenceTagger

    tagger = SequenceTagger(5, 3, 4, 8, nn.Identity())
    assert tagger(torch.tensor([[0, 4, 2]])).shape == (1, 3, 3)
    with pytest.raises(ValueError, match="x must hold ids"):
        tagger(torch.tensor([[0, 5]]))
    with pytest.raises(TypeError, match="device"):
        tagger(torch.zeros(1, 3, dtype=torch.long, device="meta"))
