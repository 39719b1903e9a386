"""The ONNX fast path (qa.embeddings.OnnxMeanPooling): texts batched by length, vectors back in input order, and
the same vectors as SentenceTransformer.encode."""

from __future__ import annotations

import numpy as np
import pytest

from qa.embeddings import OnnxMeanPooling, length_sorted_batches

TEXTS = [
    "Aspirin lowers the risk of a second heart attack.",
    "Short.",
    "The trial enrolled 1,200 adults over five years; the primary outcome was death from any cause, and the "
    "secondary outcomes were stroke, myocardial infarction and hospital admission for heart failure.",
    "",
    "Vitamin D supplements did not reduce fractures in older women.",
    "Short.",
    "Mice lacking the gene developed tumours earlier.",
]


def test_length_sorted_batches_cover_every_text_once_longest_first():
    lengths = [5, 1, 9, 1, 7, 3, 9]
    batches = length_sorted_batches(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    assert length_sorted_batches([], 32) == [] and length_sorted_batches([4, 2], 0) == [[0], [1]]


class _TokenSumSession:
    """A stand-in ONNX session: each token's hidden state is a fixed function of its id, and padded positions get
    large garbage, so a vector is right only if pooling ignores padding and rows go back to the right text."""

    class _Arg:
        def __init__(self, name):
            self.name = name

    def __init__(self):
        self.widths = []

    def get_inputs(self):
        return [self._Arg("input_ids"), self._Arg("attention_mask"), self._Arg("token_type_ids")]

    def run(self, _outputs, feeds):
        ids, mask = feeds["input_ids"], feeds["attention_mask"]
        self.widths.append(ids.shape[1])
        hidden = np.stack([np.sin(ids * (k + 1)) for k in range(8)], axis=-1).astype(np.float32)
        hidden[mask == 0] = 1000.0
        return [hidden]


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for t in TEXTS for w in t.lower().replace(",", " ").replace(";", " ").split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_truncation(64)
    return tok


def test_batched_vectors_come_back_in_input_order_and_equal_one_at_a_time():
    session = _TokenSumSession()
    fast = OnnxMeanPooling(session, _word_tokenizer(), max_length=64, pad_id=0)
    alone = np.stack([fast.embed([t], 1)[0] for t in TEXTS])
    session.widths.clear()
    batched = fast.embed(TEXTS, 3)
    assert np.abs(batched - alone).max() < 1e-5
    assert np.allclose(np.linalg.norm(batched[[0, 1, 2, 4]], axis=1), 1.0, atol=1e-5)
    assert np.array_equal(batched[1], batched[5])  # the same text, in different batches
    # Longest texts first: the first batch is padded to the longest text, the last to the shortest ones.
    assert session.widths == sorted(session.widths, reverse=True) and len(session.widths) == 3


def _model(backend: str, settings):
    from qa.embeddings import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend=backend, cache_dir=settings.cache_dir)


@pytest.mark.model
def test_the_fast_path_gives_the_vectors_encode_gives(settings):
    """fp32 ONNX: batched by length, the vectors equal encode()'s of each text alone (float noise only)."""
    fp32_model = _model("onnx", settings)
    assert fp32_model._onnx is not None  # MiniLM qualifies; otherwise this compares encode() with itself
    texts = TEXTS * 5 + [t.upper() for t in TEXTS]
    fp32_model.batch_size = 4
    batched = fp32_model.embed_documents(texts)
    alone = np.concatenate(
        [fp32_model._model.encode([t], normalize_embeddings=True, convert_to_numpy=True) for t in texts]
    )
    assert batched.shape == (len(texts), fp32_model.dim) and batched.dtype == np.float32
    assert np.abs(batched - alone).max() < 1e-5
    assert np.abs(fp32_model.embed_query(texts[2]) - alone[2]).max() < 1e-5


@pytest.mark.model
def test_int8_vectors_equal_encode_for_the_same_batch(settings):
    """int8 ONNX quantises activations per batch (one scale for the whole batch), so a text's vector moves with
    its batch neighbours, with encode() as with this path; for the same batches the two agree."""
    int8 = _model("onnx-int8", settings)
    assert int8._onnx is not None
    int8.batch_size = 1
    alone = np.concatenate([int8._model.encode([t], normalize_embeddings=True) for t in TEXTS])
    assert np.abs(int8.embed_documents(TEXTS) - alone).max() < 1e-5
    int8.batch_size = 32  # all seven texts in one batch, as encode() batches them
    together = int8._model.encode(TEXTS, batch_size=32, normalize_embeddings=True)
    assert np.abs(int8.embed_documents(TEXTS) - together).max() < 1e-5


@pytest.mark.model
def test_the_context_stage_scores_a_sentence_the_same_whatever_is_read_with_it(settings):
    """The context stage embeds each sentence alone (qa.context.sentence_vectors): with int8 vectors a sentence's
    score no longer moves with the other sentences of the retrieved chunks, so it can be remembered, and the next
    question over the same chunks embeds nothing."""
    from qa import context

    int8 = _model("onnx-int8", settings)
    calls = []

    class Counting:
        def embed_documents(self, texts):
            calls.append(len(texts))
            return int8.embed_documents(texts)

    counting = Counting()
    sentence, others = TEXTS[2], [TEXTS[0], TEXTS[4] * 3]
    with_one = context.sentence_vectors(counting, [sentence, others[0]])
    context._vectors.clear()
    with_two = context.sentence_vectors(counting, [others[1], sentence, others[0]])
    assert np.array_equal(with_one[0], with_two[1])
    assert np.abs(with_one[0] - int8.embed_documents([sentence])[0]).max() == 0
    # the same sentence in one batch with other texts comes out differently: why it is embedded alone
    assert np.abs(int8.embed_documents([sentence, *others])[0] - with_one[0]).max() > 1e-4
    calls.clear()
    again = context.sentence_vectors(counting, [sentence, others[1], others[0]])
    assert calls == [] and np.array_equal(again[0], with_one[0])
