"""Input checks shared by :mod:`suma_lib.crf`, and the low-rank transitions."""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_tensor

_MASK_HELP = "mask must be right-padded: True steps first, then False steps"


def _check_emissions(emissions: Any) -> torch.Tensor:
    emissions = check_tensor(emissions, "emissions", min_dim=2, floating=True, finite=True)
    if emissions.shape[-2] < 1:
        raise ValueError(
            f"emissions must have at least one step, got shape {tuple(emissions.shape)}"
        )
    if emissions.shape[-1] < 1:
        raise ValueError(
            f"emissions must have at least one label, got shape {tuple(emissions.shape)}"
        )
    return emissions


def _check_vector(v: Any, name: str, emissions: torch.Tensor) -> torch.Tensor | None:
    if v is None:
        return None
    v = check_tensor(v, name, floating=True, finite=True)
    K = emissions.shape[-1]
    if tuple(v.shape) != (K,):
        raise ValueError(f"{name} must have shape ({K},), got {tuple(v.shape)}")
    _same_place(v, name, emissions)
    return v


def _same_place(t: torch.Tensor, name: str, emissions: torch.Tensor) -> None:
    if t.device != emissions.device:
        raise ValueError(f"{name} is on {t.device} but emissions is on {emissions.device}")
    if t.dtype != emissions.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but emissions has dtype {emissions.dtype}")


def low_rank_transitions(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    r"""The full transition matrix :math:`G = L R^\top` of a low-rank pair.

    Parameters
    ----------
    left, right : torch.Tensor
        ``(K, d)`` factors; :math:`g(i, j) = \langle L_i, R_j \rangle`, so ``2 d K`` parameters instead of ``K**2``.

    Returns
    -------
    torch.Tensor
        ``(K, K)`` matrix ``left @ right.T``.

    Chapter: notebooks/memm-vs-crf.md
    """
    left = check_tensor(left, "left", floating=True, finite=True)
    right = check_tensor(right, "right", floating=True, finite=True)
    if left.dim() != 2 or right.dim() != 2 or left.shape != right.shape:
        raise ValueError(
            f"left and right must both have shape (K, d), got {tuple(left.shape)} and "
            f"{tuple(right.shape)}"
        )
    if left.device != right.device or left.dtype != right.dtype:
        raise ValueError("left and right must share device and dtype")
    return left @ right.transpose(0, 1)


def _check_transitions(transitions: Any, emissions: torch.Tensor, *, allow_low_rank: bool):
    """Return ``("full", G)`` or ``("low", (L, R))`` after validation."""
    K = emissions.shape[-1]
    if isinstance(transitions, (tuple, list)):
        if not allow_low_rank:
            raise TypeError("transitions must be a (K, K) tensor here, not a low-rank pair")
        if len(transitions) != 2:
            raise ValueError(
                f"transitions as a low-rank pair must be (left, right), got {len(transitions)} "
                "items"
            )
        left, right = transitions
        for t, nm in ((left, "transitions[0]"), (right, "transitions[1]")):
            check_tensor(t, nm, floating=True, finite=True)
            if t.dim() != 2 or t.shape[0] != K:
                raise ValueError(f"{nm} must have shape ({K}, d), got {tuple(t.shape)}")
            _same_place(t, nm, emissions)
        if left.shape != right.shape:
            raise ValueError(
                f"transitions[0] and transitions[1] must share shape, got {tuple(left.shape)} and "
                f"{tuple(right.shape)}"
            )
        return "low", (left, right)
    G = check_tensor(transitions, "transitions", floating=True, finite=True)
    if tuple(G.shape) != (K, K):
        raise ValueError(f"transitions must have shape ({K}, {K}), got {tuple(G.shape)}")
    _same_place(G, "transitions", emissions)
    return "full", G


def _check_mask(mask: Any, emissions: torch.Tensor) -> torch.Tensor | None:
    """Validated boolean mask, or ``None`` when every step is valid."""
    if mask is None:
        return None
    mask = check_tensor(mask, "mask")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise TypeError(f"mask must be boolean (or 0/1 integers), got {mask.dtype}")
        if mask.device.type != "meta" and mask.numel() and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("mask must hold only 0 and 1")
        mask = mask != 0
    if tuple(mask.shape) != tuple(emissions.shape[:-1]):
        raise ValueError(
            f"mask must have shape {tuple(emissions.shape[:-1])}, got {tuple(mask.shape)}"
        )
    if mask.device != emissions.device:
        raise ValueError(f"mask is on {mask.device} but emissions is on {emissions.device}")
    if mask.device.type != "meta" and mask.numel():
        if not bool(mask[..., 0].all()):
            raise ValueError(
                "mask's first step must be True for every sequence (empty sequences are not "
                "allowed)"
            )
        if mask.shape[-1] > 1 and bool((mask[..., 1:] & ~mask[..., :-1]).any()):
            raise ValueError(_MASK_HELP)
    return mask


def _check_tags(tags: Any, emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    tags = check_tensor(tags, "tags")
    if tags.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"tags must be an integer tensor, got {tags.dtype}")
    if tuple(tags.shape) != tuple(emissions.shape[:-1]):
        raise ValueError(
            f"tags must have shape {tuple(emissions.shape[:-1])}, got {tuple(tags.shape)}"
        )
    if tags.device != emissions.device:
        raise ValueError(f"tags is on {tags.device} but emissions is on {emissions.device}")
    tags = tags.long()
    if mask is not None:
        tags = torch.where(mask, tags, torch.zeros((), dtype=tags.dtype, device=tags.device))
    K = emissions.shape[-1]
    if tags.device.type != "meta" and tags.numel() and bool(((tags < 0) | (tags >= K)).any()):
        raise ValueError(f"tags must lie in [0, {K}) at every valid step")
    return tags


def _last_index(mask: torch.Tensor | None, emissions: torch.Tensor) -> torch.Tensor:
    """Index of each sequence's last valid step, shape ``(*batch,)``."""
    n = emissions.shape[-2]
    if mask is None:
        return torch.full(emissions.shape[:-2], n - 1, dtype=torch.long, device=emissions.device)
    return mask.sum(-1) - 1


