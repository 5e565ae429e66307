"""Tests for suma_lib.nsp: batched zero-shot scoring against a brute-force loop on a tiny random
BertForNextSentencePrediction, the "is next" index, NSP pairs, the loader's offline error, bad input."""

from __future__ import annotations

import pytest
import torch

from suma_lib import nsp

WORDS = "the a math file net time text is about this it was number directory socket clock string".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-nsp")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]) + "\n")
    tokenizer = transformers.BertTokenizer(str(vocab))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(WORDS) + 6, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )
    model = transformers.BertForNextSentencePrediction(config).eval()
    return tokenizer, model, folder


def test_is_next_index_matches_transformers_loss(tiny) -> None:
    tokenizer, model, _ = tiny
    batch = tokenizer(["the math is a number ."] * 2, ["it was a string .", "about time"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, labels=torch.tensor([0, 0]))
    torch.testing.assert_close(out.loss, -nsp.nsp_log_prob(out.logits).mean())
    assert nsp.IS_NEXT == 0


def test_scores_match_a_pair_by_pair_loop(tiny) -> None:
    tokenizer, model, _ = tiny
    inputs = ["the math is a number .", "a file in this directory", "it was the clock time .",
              "string text"]
    prompts = nsp.label_prompts(["math", "file", "time"], "this is about {label} .")
    pred, scores = nsp.zero_shot_classify(nsp.nsp_pair_scorer(model, tokenizer), inputs, prompts,
                                          batch_size=5)
    brute = torch.empty(len(inputs), len(prompts))
    for i, x in enumerate(inputs):
        for k, p in enumerate(prompts):
            enc = tokenizer(x, p, return_tensors="pt")
            with torch.no_grad():
                logits = model(**enc).logits[0]
            brute[i, k] = logits[0] - torch.logsumexp(logits, 0)
    torch.testing.assert_close(scores, brute, rtol=1e-4, atol=1e-5)
    assert torch.equal(pred, brute.argmax(-1))


def test_score_pairs_layout_and_chunks() -> None:
    calls = []

    def score(a, b):
        calls.append(len(a))
        return torch.tensor([10.0 * len(x) + len(y) for x, y in zip(a, b, strict=True)])

    inputs, prompts = ["a", "bb", "ccc"], ["x", "yy"]
    s = nsp.score_pairs(score, inputs, prompts, batch_size=4)
    assert s.shape == (3, 2) and calls == [4, 2]
    assert s[2, 1] == 32 and s[0, 0] == 11
    pred, _ = nsp.zero_shot_classify(score, inputs, prompts)
    assert pred.tolist() == [1, 1, 1]


def test_nsp_log_prob_extreme_logits() -> None:
    lp = nsp.nsp_log_prob(torch.tensor([[1e30, -1e30], [-1e30, 1e30], [0.0, 0.0]]))
    assert torch.isfinite(lp[:1]).all() and lp[0] == 0.0
    assert lp[1] < -1e29
    torch.testing.assert_close(lp[2], torch.tensor(-0.6931472))
    assert nsp.nsp_log_prob(torch.zeros(3, 2, device="meta")).shape == (3,)


def test_nsp_pairs() -> None:
    docs = [["One sentence here.", "Two follows it.", "Three ends it."], ["Alone."],
            ["Four starts.", "Five follows four."]]
    g = torch.Generator().manual_seed(0)
    a, b, y = nsp.nsp_pairs(docs, 3, generator=g)
    true_next = {"One sentence here.": "Two follows it.", "Two follows it.": "Three ends it.",
                 "Four starts.": "Five follows four."}
    assert y.tolist() == [0, 0, 0, 1, 1, 1] and a[:3] == a[3:]
    assert all(true_next[x] == s for x, s in zip(a[:3], b[:3], strict=True))
    assert all(true_next[x] != s for x, s in zip(a[3:], b[3:], strict=True))
    assert sorted(b[3:]) == sorted(b[:3])
    again = nsp.nsp_pairs(docs, 3, generator=torch.Generator().manual_seed(0))
    assert again[:2] == (a, b)


def test_docstring_sentences() -> None:
    docs = nsp.docstring_sentences(["math"])
    assert docs and all(25 <= len(s) <= 200 for d in docs for s in d)
    with pytest.raises(ValueError, match="module_names"):
        nsp.docstring_sentences(["surely_not_a_module_xyz"])


def test_pair_head_shapes() -> None:
    head = nsp.PairNSPHead(4)
    u = torch.randn(5, 4)
    assert head(u, u).shape == (5, 2)
    with pytest.raises(ValueError, match="last dimension"):
        head(u, torch.randn(5, 3))


def test_loader_raises_clearly_offline(tmp_path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(nsp.NSPWeightsUnavailable, match="not available offline"):
        nsp.load_nsp_model(str(tmp_path / "no-such-model"))
    with pytest.raises(nsp.NSPWeightsUnavailable, match="local_files_only=False"):
        nsp.load_nsp_model("suma-book/surely-not-a-model-xyz")


def test_loader_reads_a_local_directory(tiny, tmp_path) -> None:
    tokenizer, model, _ = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    tok2, model2 = nsp.load_nsp_model(str(tmp_path), device="cpu")
    assert not model2.training
    enc = tok2("the math", "it was", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model2(**enc).logits, model(**enc).logits)


def test_bad_input() -> None:
    score = lambda a, b: torch.zeros(len(a))  # noqa: E731
    with pytest.raises(TypeError, match="pair_score"):
        nsp.score_pairs("nope", ["a"], ["b"])
    with pytest.raises(TypeError, match="inputs"):
        nsp.score_pairs(score, "a string", ["b"])
    with pytest.raises(ValueError, match="prompts"):
        nsp.score_pairs(score, ["a"], [])
    with pytest.raises(ValueError, match="batch_size"):
        nsp.score_pairs(score, ["a"], ["b"], batch_size=0)
    with pytest.raises(ValueError, match="one score per pair"):
        nsp.score_pairs(lambda a, b: torch.zeros(len(a) + 1), ["a"], ["b"])
    with pytest.raises(ValueError, match="NaN"):
        nsp.score_pairs(lambda a, b: torch.full((len(a),), float("nan")), ["a"], ["b"])
    with pytest.raises(ValueError, match="last dimension"):
        nsp.nsp_log_prob(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="logits"):
        nsp.nsp_log_prob(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="label"):
        nsp.label_prompts(["x"], "no field")
    with pytest.raises(ValueError, match="distinct"):
        nsp.label_prompts(["x", "x"])
    with pytest.raises(ValueError, match="n must be"):
        nsp.nsp_pairs([["A one.", "B two."]], 2)
    with pytest.raises(TypeError, match="name"):
        nsp.load_nsp_model(3)
    with pytest.raises(TypeError, match="local_files_only"):
        nsp.load_nsp_model("x", local_files_only="yes")
