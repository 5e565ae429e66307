"""Tests of suma_lib.layers.TheseusReplacement (module replacement, BERT-of-Theseus)."""

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from suma_lib.layers import TheseusReplacement, theseus_replace_rate

D = torch.float64


def _mlp(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(width, width), nn.Tanh()).to(D)


def _model(k: int = 2, width: int = 4, p: float = 0.5, seed: int = 0, **kw) -> TheseusReplacement:
    preds = [[_mlp(width, 10 * i), _mlp(width, 10 * i + 1)] for i in range(k)]
    succs = [_mlp(width, 100 + i) for i in range(k)]
    gen = torch.Generator().manual_seed(seed)
    return TheseusReplacement(preds, succs, p, generator=gen, **kw)


def _chain(modules, x):
    for m in modules:
        x = m(x)
    return x


def test_one_group_expectation_is_the_mixture_monte_carlo():
    model = _model(k=1, p=0.3)
    x = torch.randn(3, 4, dtype=D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        draws = torch.stack([model(x) for _ in range(4000)])
        fs = model.successors[0][0](x)
        fp = _chain(model.predecessors[0], x)
    expected = 0.3 * fs + 0.7 * fp  # closed form of E[r F_s + (1 - r) F_p]
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - expected).abs() <= 4 * se + 1e-12).all()


def test_stack_expectation_is_the_average_over_paths_not_the_chain_of_mixtures():
    p, k = 0.5, 3
    model = _model(k=k, p=p)
    x = torch.randn(5, 4, dtype=D, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        draws = torch.stack([model(x) for _ in range(6000)])
        paths = []
        for path in itertools.product([False, True], repeat=k):
            h = x
            for use, pred, succ in zip(path, model.predecessors, model.successors, strict=True):
                h = _chain(succ if use else pred, h)
            weight = math.prod(p if use else 1 - p for use in path)
            paths.append(weight * h)
        exact = torch.stack(paths).sum(0)
        h = x
        for pred, succ in zip(model.predecessors, model.successors, strict=True):
            h = p * _chain(succ, h) + (1 - p) * _chain(pred, h)
        chained = h
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - exact).abs() <= 4.5 * se + 1e-12).all()
    assert (exact - chained).abs().max() > 1e-3  # tanh layers: the mixture does not compose


def test_replacement_frequency_and_determinism():
    model = _model(k=3, p=0.25, seed=5)
    x = torch.randn(2, 4, dtype=D)
    picks = []
    for _ in range(4000):
        model(x)
        picks.append(model.last_replace)
    freq = torch.tensor(picks, dtype=D).mean(0)
    assert (freq - 0.25).abs().max() < 4 * math.sqrt(0.25 * 0.75 / 4000)
    again = _model(k=3, p=0.25, seed=5)
    seq = []
    for _ in range(50):
        again(x)
        seq.append(again.last_replace)
    assert seq == picks[:50]


def test_eval_runs_only_the_successors():
    model = _model(k=3)
    calls = []
    for group in model.predecessors:
        for layer in group:
            layer.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 4, dtype=D)
    model.eval()
    out = model(x)
    ref = x
    for group in model.successors:
        ref = _chain(group, ref)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert not calls and model.last_replace is None


def test_forced_path_and_rates_zero_and_one():
    model = _model(k=2)
    x = torch.randn(2, 4, dtype=D)
    out = model(x, replace=[True, False])
    ref = _chain(model.predecessors[1], model.successors[0][0](x))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    model.replace_rate = 1.0
    model(x)
    assert model.last_replace == (True, True)
    model.replace_rate = 0.0
    model(x)
    assert model.last_replace == (False, False)


def test_successor_weight_mixes_and_matches_the_articles_masked_sum():
    model = _model(k=2)
    x = torch.randn(2, 4, dtype=D)
    w = [0.25, 1.0]
    h = x
    for wk, pred, succ in zip(w, model.predecessors, model.successors, strict=True):
        h = wk * _chain(succ, h) + (1 - wk) * _chain(pred, h)
    torch.testing.assert_close(model(x, successor_weight=torch.tensor(w, dtype=D)), h)
    # a 0/1 weight equals the forced path
    torch.testing.assert_close(
        model(x, successor_weight=[0.0, 1.0]), model(x, replace=[False, True]), rtol=0, atol=0
    )


def test_gradients_do_not_reach_frozen_predecessors():
    model = _model(k=3)
    x = torch.randn(6, 4, dtype=D, requires_grad=True)
    model.train()
    model(x, replace=[False, True, False]).sum().backward()
    assert all(q.grad is None and not q.requires_grad for q in model.predecessors.parameters())
    assert all(q.grad is not None for q in model.successors[1].parameters())
    assert all(q.grad is None for q in model.successors[0].parameters())  # did not run
    assert x.grad is not None and torch.isfinite(x.grad).all()  # flows through frozen layers


def test_frozen_predecessors_stay_in_eval_mode():
    preds = [nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))]
    model = TheseusReplacement(preds, [nn.Linear(3, 3)])
    model.train()
    assert model.training and model.successors.training and not model.predecessors[0].training
    free = TheseusReplacement([nn.Linear(3, 3)], [nn.Linear(3, 3)], freeze_predecessors=False)
    free.train()
    assert free.predecessors.training
    assert all(q.requires_grad for q in free.predecessors.parameters())


class _Masked(nn.Module):
    """A layer with an extra keyword argument that returns a tuple (old transformers style)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, attention_mask=None):
        return (self.lin(x) * attention_mask[..., None], "extra")


def test_extra_arguments_and_tuple_outputs():
    model = TheseusReplacement([[_Masked(), _Masked()]], [_Masked()])
    x, mask = torch.randn(2, 3, 4), torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    model.eval()
    out = model(x, attention_mask=mask)
    assert out.shape == (2, 3, 4) and (out[0, 2] == 0).all()


def test_transformers_bert_layers():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    layers = list(bert.encoder.layer)
    model = TheseusReplacement(
        [layers[0:2], layers[2:4]], [copy.deepcopy(layers[0]), copy.deepcopy(layers[2])],
        generator=torch.Generator().manual_seed(0),
    )
    x = torch.randn(2, 5, 16)
    mask = torch.zeros(2, 1, 1, 5)
    with torch.no_grad():
        full = model(x, attention_mask=mask, replace=[False, False])
        ref = x
        for layer in layers:
            ref = layer(ref, attention_mask=mask)
            ref = ref[0] if isinstance(ref, tuple) else ref
    torch.testing.assert_close(full, ref)
    model.train()
    model(x, attention_mask=mask, replace=[True, False]).pow(2).mean().backward()
    assert all(q.grad is not None for q in model.successors[0].parameters())
    assert all(q.grad is None for q in model.predecessors.parameters())


def test_meta_device():
    preds = [[nn.Linear(4, 4, device="meta"), nn.Linear(4, 4, device="meta")]]
    model = TheseusReplacement(preds, [nn.Linear(4, 4, device="meta")])
    x = torch.empty(2, 4, device="meta")
    out = model(x)
    assert out.device.type == "meta" and out.shape == (2, 4)
    model.eval()
    assert model(x).device.type == "meta"


def test_bad_input():
    lin = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="as many groups"):
        TheseusReplacement([nn.Linear(2, 2)], [nn.Linear(2, 2), nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="predecessors must hold"):
        TheseusReplacement([], [])
    with pytest.raises(TypeError, match="predecessors"):
        TheseusReplacement(nn.Linear(2, 2), [nn.Linear(2, 2)])
    with pytest.raises(TypeError, match=r"successors\[0\]"):
        TheseusReplacement([nn.Linear(2, 2)], ["layer"])
    with pytest.raises(ValueError, match="empty group"):
        TheseusReplacement([[]], [nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="share parameters"):
        TheseusReplacement([lin], [lin])
    with pytest.raises(ValueError, match="replace_rate"):
        TheseusReplacement([nn.Linear(2, 2)], [nn.Linear(2, 2)], 1.5)
    with pytest.raises(ValueError, match="replace_rate"):
        TheseusReplacement([nn.Linear(2, 2)], [nn.Linear(2, 2)], float("nan"))
    with pytest.raises(TypeError, match="generator"):
        TheseusReplacement([nn.Linear(2, 2)], [nn.Linear(2, 2)], generator=0)
    with pytest.raises(TypeError, match="freeze_predecessors"):
        TheseusReplacement([nn.Linear(2, 2)], [nn.Linear(2, 2)], freeze_predecessors=1)
    model = TheseusReplacement([nn.Linear(2, 2)], [nn.Linear(2, 2)])
    x = torch.randn(3, 2)
    with pytest.raises(TypeError, match="x must"):
        model([1.0, 2.0])
    with pytest.raises(ValueError, match="not both"):
        model(x, replace=[True], successor_weight=[1.0])
    with pytest.raises(ValueError, match="replace must have 1"):
        model(x, replace=[True, False])
    with pytest.raises(TypeError, match="replace must hold bools"):
        model(x, replace=[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(x, successor_weight=[1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(x, successor_weight=[float("nan")])
    with pytest.raises(ValueError, match="replace_rate"):
        model.replace_rate = -0.1
    with pytest.raises(TypeError, match="x must be floating"):
        model(torch.ones(3, 2, dtype=torch.long))
    model.eval()
    with pytest.raises(ValueError, match=r"successor 0, layer 0 \(Linear\) failed on x of shape \(3, 5\)"):
        model(torch.randn(3, 5))


def test_linear_schedule():
    assert theseus_replace_rate(0, 0.1, 6e-4) == pytest.approx(0.1)
    assert theseus_replace_rate(1000, 0.1, 6e-4) == pytest.approx(0.7)
    assert theseus_replace_rate(10_000, 0.1, 6e-4) == 1.0
    with pytest.raises(ValueError, match="step"):
        theseus_replace_rate(-1, 0.1, 0.1)
    with pytest.raises(ValueError, match="base"):
        theseus_replace_rate(0, 1.1, 0.1)
    with pytest.raises(ValueError, match="slope"):
        theseus_replace_rate(0, 0.1, -0.1)
    with pytest.raises(TypeError, match="step"):
        theseus_replace_rate(1.5, 0.1, 0.1)
