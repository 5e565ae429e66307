r"""A separate, larger learning rate for a model's CRF layers (:func:`crf_param_groups`)."""

from __future__ import annotations

from torch import nn

from .._validation import check_float
from ._module import CRF


def crf_param_groups(model: nn.Module, lr: float, crf_lr_multiplier: float = 100.0) -> list[dict]:
    r"""Optimiser parameter groups giving the CRF layers of ``model`` a multiplied learning rate.

    Every trainable parameter of every :class:`CRF` submodule (transitions, start and end scores)
    goes into a group with learning rate :math:`\lambda\,\eta`, every other trainable parameter into
    a group with :math:`\eta`:

    .. math:: \eta_{\text{CRF}} = \lambda\,\eta, \qquad \eta_{\text{rest}} = \eta .

    Pass the result to any ``torch.optim`` optimiser. (Su Jianlin's bert4keras instead
    reparameterises the transitions as :math:`\lambda\phi`, which multiplies Adam's step by
    :math:`\lambda` but SGD's by :math:`\lambda^2`; a parameter group multiplies both by
    :math:`\lambda`.) Groups that would be empty are left out.

    Parameters
    ----------
    model : torch.nn.Module
        A model with at least one :class:`CRF` submodule (``model`` itself may be one).
    lr : float
        The base learning rate :math:`\eta > 0`.
    crf_lr_multiplier : float
        :math:`\lambda > 0` (default 100).

    Returns
    -------
    list of dict
        ``[{"params": [...], "lr": eta}, {"params": [...], "lr": lambda * eta}]``, each parameter in
        exactly one group, frozen parameters in none.

    Chapter: notebooks/crf-learning-rate.md
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    lr = check_float(lr, "lr", low=0.0, low_open=True)
    mult = check_float(crf_lr_multiplier, "crf_lr_multiplier", low=0.0, low_open=True)
    if lr * mult == float("inf"):
        raise ValueError(f"lr * crf_lr_multiplier overflows: {lr} * {mult}")
    crfs = [m for m in model.modules() if isinstance(m, CRF)]
    if not crfs:
        raise ValueError("model has no suma_lib.crf.CRF submodule: nothing to give its own rate")
    crf_ids = {id(p) for c in crfs for p in c.parameters()}
    seen: set[int] = set()
    rest, crf_params = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (crf_params if id(p) in crf_ids else rest).append(p)
    groups = [{"params": rest, "lr": lr}, {"params": crf_params, "lr": lr * mult}]
    return [g for g in groups if g["params"]]
