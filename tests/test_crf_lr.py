"""Tests of suma_lib.crf.crf_param_groups: the CRF's own learning rate in an optimiser."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from suma_lib.crf import CRF, crf_param_groups


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 4)
        self.crf = CRF(4, generator=g)

    def loss(self, x, y):
        return -self.crf(self.out(self.emb(x)), y).mean()


def test_groups_partition_the_trainable_parameters() -> None:
    model = Tagger()
    model.emb.weight.requires_grad_(False)
    groups = crf_param_groups(model, 1e-3, 100)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(0.1)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.crf.parameters()}


def test_first_adam_step_moves_crf_by_multiplied_rate() -> None:
    """Adam's first step is lr * sign(grad) per entry (eps aside): the CRF's entries move 100 x farther."""
    model = Tagger().double()
    x = torch.randint(0, 5, (6, 7), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (6, 7), generator=torch.Generator().manual_seed(2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(crf_param_groups(model, 1e-3, 100.0), eps=1e-30)
    model.loss(x, y).backward()
    opt.step()
    for n, p in model.named_parameters():
        step = (p.detach() - before[n]).abs()
        moved = step[p.grad != 0]
        want = 0.1 if n.startswith("crf.") else 1e-3
        torch.testing.assert_close(moved, torch.full_like(moved, want), rtol=1e-9, atol=0)


def test_model_that_is_a_crf_and_meta() -> None:
    groups = crf_param_groups(CRF(3, device="meta"), 0.5, 2)
    assert len(groups) == 1 and groups[0]["lr"] == 1.0


def test_validation() -> None:
    with pytest.raises(TypeError, match="model"):
        crf_param_groups(torch.ones(3), 1e-3)
    with pytest.raises(ValueError, match="CRF"):
        crf_param_groups(nn.Linear(2, 2), 1e-3)
    with pytest.raises(ValueError, match="crf_lr_multiplier"):
        crf_param_groups(Tagger(), 1e-3, 0)
    with pytest.raises(ValueError, match="lr"):
        crf_param_groups(Tagger(), -1.0)
    with pytest.raises(TypeError, match="lr"):
        crf_param_groups(Tagger(), "fast")
    with pytest.raises(ValueError, match="overflows"):
        crf_param_groups(Tagger(), 1e300, 1e300)
