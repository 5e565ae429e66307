"""Tests of suma_lib.position: the sinusoidal encoding and its shift rotation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suma_lib.position import sinusoidal_encoding, sinusoidal_frequencies, sinusoidal_shift_matrix

F64 = torch.float64


def _numpy_pe(positions: np.ndarray, d: int, base: float = 10000.0) -> np.ndarray:
    """The paper's formula, written independently: PE[p, 2i] = sin(p/base^(2i/d)), PE[p, 2i+1] =
    cos."""
    out = np.empty(positions.shape + (d,))
    for i in range(d // 2):
        angle = positions / base ** (2 * i / d)
        out[..., 2 * i] = np.sin(angle)
        out[..., 2 * i + 1] = np.cos(angle)
    return out


@given(n=st.integers(0, 40), half=st.integers(1, 16), base=st.floats(2.0, 1e5))
@settings(max_examples=30, deadline=None)
def test_encoding_matches_the_formula(n: int, half: int, base: float) -> None:
    d = 2 * half
    got = sinusoidal_encoding(n, d, base, dtype=F64).numpy()
    np.testing.assert_allclose(
        got, _numpy_pe(np.arange(n, dtype=float), d, base), rtol=0, atol=1e-12
    )


def test_concatenated_layout_is_a_permutation_of_interleaved() -> None:
    inter = sinusoidal_encoding(30, 12, dtype=F64)
    cat = sinusoidal_encoding(30, 12, layout="concatenated", dtype=F64)
    torch.testing.assert_close(
        cat, torch.cat((inter[:, 0::2], inter[:, 1::2]), dim=-1), rtol=0, atol=0
    )


def test_frequencies() -> None:
    w = sinusoidal_frequencies(8, 10000.0, dtype=F64)
    torch.testing.assert_close(w, torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=F64))


def test_positions_tensor_shape_dtype_and_float32_accuracy() -> None:
    pos = torch.tensor([[0.0, 1.5], [1e5, 1e6]], dtype=torch.float32)
    pe = sinusoidal_encoding(pos, 16)
    assert pe.shape == (2, 2, 16) and pe.dtype == torch.float32
    # Angles are formed in float64, so even at p = 1e6 the float32 result is accurate to float32
    # rounding.
    np.testing.assert_allclose(pe.numpy(), _numpy_pe(pos.double().numpy(), 16), atol=2e-7)
    assert sinusoidal_encoding(torch.arange(5), 4).dtype == torch.get_default_dtype()


@given(
    k=st.floats(-500, 500),
    half=st.integers(1, 12),
    layout=st.sampled_from(["interleaved", "concatenated"]),
)
@settings(max_examples=40, deadline=None)
def test_shift_matrix_maps_pe_p_to_pe_p_plus_k(k: float, half: int, layout: str) -> None:
    d = 2 * half
    p = torch.linspace(-50, 300, 23, dtype=F64)
    rot = sinusoidal_shift_matrix(k, d, layout=layout, dtype=F64)
    shifted = sinusoidal_encoding(p, d, layout=layout) @ rot.mT
    torch.testing.assert_close(
        shifted, sinusoidal_encoding(p + k, d, layout=layout), rtol=0, atol=1e-11
    )
    torch.testing.assert_close(rot @ rot.mT, torch.eye(d, dtype=F64), rtol=0, atol=1e-14)


def test_shift_matrices_compose_and_batch() -> None:
    ks = torch.tensor([[0.0, 3.0], [-2.0, 7.5]], dtype=F64)
    rots = sinusoidal_shift_matrix(ks, 10)
    assert rots.shape == (2, 2, 10, 10) and rots.dtype == F64
    torch.testing.assert_close(rots[0, 0], torch.eye(10, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(rots[0, 1] @ rots[1, 0], sinusoidal_shift_matrix(1.0, 10, dtype=F64))
    assert torch.linalg.det(rots[1, 1]).item() == pytest.approx(1.0)


def test_meta_device() -> None:
    pe = sinusoidal_encoding(torch.arange(6.0, device="meta").reshape(2, 3), 8)
    assert pe.device.type == "meta" and pe.shape == (2, 3, 8)
    rot = sinusoidal_shift_matrix(torch.zeros(4, device="meta"), 6)
    assert rot.device.type == "meta" and rot.shape == (4, 6, 6)
    assert sinusoidal_encoding(5, 4, device="meta").shape == (5, 4)


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="d must be even"):
        sinusoidal_encoding(4, 5)
    with pytest.raises(ValueError, match="d"):
        sinusoidal_shift_matrix(1, 0)
    with pytest.raises(ValueError, match="base"):
        sinusoidal_encoding(4, 4, base=0.0)
    with pytest.raises(ValueError, match="n"):
        sinusoidal_encoding(-1, 4)
    with pytest.raises(TypeError, match="n"):
        sinusoidal_encoding(3.0, 4)
    with pytest.raises(ValueError, match="n must be finite"):
        sinusoidal_encoding(torch.tensor([0.0, math.nan]), 4)
    with pytest.raises(ValueError, match="layout"):
        sinusoidal_encoding(4, 4, layout="sideways")
    with pytest.raises(ValueError, match="k"):
        sinusoidal_shift_matrix(math.inf, 4)
    with pytest.raises(TypeError, match="k"):
        sinusoidal_shift_matrix("1", 4)
    with pytest.raises(TypeError, match="dtype"):
        sinusoidal_encoding(4, 4, dtype=torch.int64)
