"""Tests for suma_lib.recompute (sqrt(n) checkpointing plan, exact activation bytes)."""

import math

import pytest
import torch
from torch.utils.checkpoint import checkpoint_sequential

from suma_lib.recompute import RecomputeSequential, saved_activation_bytes, segment_length, segments


def _stack(n, width=16, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    def block():
        return torch.nn.Sequential(torch.nn.Linear(width, width, dtype=dtype), torch.nn.Tanh())
    return torch.nn.Sequential(*[block() for _ in range(n)])


def test_segment_length_is_ceil_sqrt():
    for n in range(1, 300):
        assert segment_length(n) == math.ceil(math.sqrt(n))
        assert segment_length(n) ** 2 >= n > (segment_length(n) - 1) ** 2


def test_segments_cover_in_order():
    for n in (1, 2, 9, 10, 17):
        b = segments(n)
        assert b[0][0] == 0 and b[-1][1] == n
        assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
        assert all(stop - start == segment_length(n) for start, stop in b[:-1])
    assert segments(5, every=2) == [(0, 2), (2, 4), (4, 5)]


@pytest.mark.parametrize("n", [1, 4, 10])
def test_outputs_and_gradients_match_plain_and_peer(n):
    seq = _stack(n)
    x = torch.randn(8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plan = RecomputeSequential(seq)
    outs, grads = [], []
    def peer(t):
        return checkpoint_sequential(seq, len(plan.bounds), t, use_reentrant=False)
    for f in (seq, plan, peer):
        seq.zero_grad()
        xi = x.clone().requires_grad_()
        y = f(xi)
        (y.square().sum()).backward()
        outs.append(y.detach())
        grads.append([xi.grad] + [p.grad.clone() for p in seq.parameters()])
    for o, g in zip(outs[1:], grads[1:], strict=True):
        torch.testing.assert_close(o, outs[0], rtol=0, atol=0)
        for a, b in zip(g, grads[0], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_parameters_get_gradients_without_input_grad():
    seq = _stack(9)
    plan = RecomputeSequential(seq)
    plan(torch.randn(4, 16, dtype=torch.float64)).sum().backward()
    assert all(p.grad is not None for p in seq.parameters())


def test_saved_bytes_plain_is_linear_and_plan_is_sqrt():
    width, batch = 16, 8
    act = batch * width * 8  # one float64 activation
    for n in (4, 9, 16, 25):
        seq = _stack(n, width)
        x = torch.randn(batch, width, dtype=torch.float64)
        plain, _ = saved_activation_bytes(seq, x, exclude=seq.parameters())
        # Linear saves its input, Tanh its output (= next Linear's input): n + 1 activations
        assert plain == (n + 1) * act
        plan = RecomputeSequential(seq)
        k = segment_length(n)
        last = n - (len(plan.bounds) - 1) * k
        held, _ = saved_activation_bytes(plan, x, exclude=seq.parameters())
        assert held == ((len(plan.bounds) - 1) + last + 1) * act


def test_no_grad_runs_plainly():
    seq = _stack(4)
    x = torch.randn(2, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(RecomputeSequential(seq)(x), seq(x))


def test_meta_device():
    seq = _stack(4).to("meta")
    y = RecomputeSequential(seq)(torch.empty(2, 16, dtype=torch.float64, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    seq = _stack(4).cuda()
    x = torch.randn(2, 16, dtype=torch.float64, device="cuda")
    torch.testing.assert_close(RecomputeSequential(seq)(x), seq(x))


def test_validation():
    with pytest.raises(ValueError, match="n"):
        segment_length(0)
    with pytest.raises(TypeError, match="n"):
        segments(2.5)
    with pytest.raises(ValueError, match="every"):
        segments(4, every=0)
    with pytest.raises(ValueError, match="layers"):
        RecomputeSequential([])
    with pytest.raises(TypeError, match="layers"):
        RecomputeSequential(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="layers"):
        RecomputeSequential([torch.nn.Linear(2, 2), 3])
    with pytest.raises(TypeError, match="x"):
        RecomputeSequential([torch.nn.Linear(2, 2)])([1.0])
    with pytest.raises(TypeError, match="fn"):
        saved_activation_bytes(3)
    with pytest.raises(TypeError, match="exclude"):
        saved_activation_bytes(lambda: 1, exclude=[1])
