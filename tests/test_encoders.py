"""FrozenEncoder on tiny random models (plumbing) and, marked slow, on the real offline encoder."""
import numpy as np
import pytest
import torch

from spacy_concept_align.corpus import read_conllu
from spacy_concept_align.encoders import FrozenEncoder
from spacy_concept_align.encoders.frozen import _BARE_SPACE, _window_starts


# Words that the tiny BERT's tokenizer keeps as one piece ("▁sa", "▁ta", ...): windows in pieces = windows in words.
SINGLE_PIECE = ["sa", "ta"]


def _states(encoder: FrozenEncoder, ids):
    """Hidden states at the encoder's layer for one input, computed directly with the (truncated) model."""
    with torch.inference_mode():
        out = encoder.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[encoder.layer][0].float().numpy()


def _pieces_of(encoder: FrozenEncoder, words):
    tok = encoder.tokenizer
    enc = tok(list(words), is_split_into_words=True, add_special_tokens=False)
    return enc["input_ids"], enc.word_ids(), tok.convert_ids_to_tokens(enc["input_ids"])


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    return FrozenEncoder(str(tiny_bert_dir), 2)


@pytest.fixture(scope="module")
def ud_sentences(sample_file):
    """A few real sentences in several scripts (the first 5 of each treebank's sample in tests/data)."""
    result = []
    for code in ("en_ewt", "ja_gsd", "ar_pud", "am_att", "ko_kaist", "wo_wtb"):
        result += [s.words for s in read_conllu(sample_file(code))[:5]]
    return result


def test_single_piece_words_are_single_pieces(bert):
    ids, word_ids, _ = _pieces_of(bert, SINGLE_PIECE)
    assert word_ids == list(range(len(SINGLE_PIECE)))


@pytest.mark.parametrize("pooling", ["first", "mean", "last"])
def test_one_vector_per_word(bert, tiny_gpt2_dir, ud_sentences, pooling):
    odd = [["a", "  ", "b"], ["\u200b"], ["x", "\u200b", "\t", "y", " "], ["\u200b", "\u200b"], ["猫はマットの上に座った。"]]
    sentences = ud_sentences + odd
    for encoder in (FrozenEncoder(bert.name, 2, pooling=pooling), FrozenEncoder(str(tiny_gpt2_dir), 2, pooling=pooling)):
        vectors = encoder(sentences)
        assert len(vectors) == len(sentences)
        for words, (word_vectors, root) in zip(sentences, vectors):
            assert word_vectors.shape == (len(words), encoder.width) and word_vectors.dtype == np.float32
            assert root.shape == (encoder.width,) and root.dtype == np.float32
            assert np.isfinite(word_vectors).all() and np.isfinite(root).all()


def test_long_doc_is_windowed_and_every_word_has_a_vector(tiny_bert_dir, ud_file):
    words = [w for s in read_conllu(ud_file("en_ewt", "dev"))[:400] for w in s.words][:2000]
    assert len(words) == 2000
    encoder = FrozenEncoder(str(tiny_bert_dir), 2, max_length=32, batch_size=64)
    ids, _ = encoder._pieces(words)
    window = encoder._window_size(2)
    assert window == 30 and len(_window_starts(len(ids), window)) > 100
    (vectors, root), = encoder([words])
    assert vectors.shape == (2000, encoder.width) and np.isfinite(vectors).all()
    # Different words at different positions do not share one vector (nothing was left unfilled or copied).
    assert len(np.unique(vectors.round(5), axis=0)) > 1900


def test_windows_take_each_piece_from_its_most_central_window(bert):
    rng = np.random.default_rng(0)
    words = list(rng.choice(SINGLE_PIECE, size=100))
    encoder = FrozenEncoder(bert.name, 2, max_length=32)  # 30 pieces per window
    (vectors, root), = encoder([words])
    starts = _window_starts(len(words), 30)
    assert starts == [0, 15, 30, 45, 60, 70]
    whole = {start: encoder([words[start : start + 30]])[0] for start in starts}  # one window each, no windowing
    # The first words come from the first window, the last ones from the last window, exactly.
    np.testing.assert_allclose(vectors[:22], whole[0][0][:22], atol=1e-5)
    np.testing.assert_allclose(vectors[-7:], whole[70][0][-7:], atol=1e-5)
    # Every word: from the window where it is most central.
    for p in range(len(words)):
        best = min((s for s in starts if s <= p < s + 30), key=lambda s: abs(p - s - 15))
        np.testing.assert_allclose(vectors[p], whole[best][0][p - best], atol=1e-5)
    # The root vector is the start token's state of the first window.
    np.testing.assert_allclose(root, whole[0][1], atol=1e-5)


def test_no_windowing_below_the_limit(bert, ud_sentences):
    default = FrozenEncoder(bert.name, 2)
    explicit = FrozenEncoder(bert.name, 2, max_length=64)
    small_batches = FrozenEncoder(bert.name, 2, max_length=64, batch_size=1)
    short = [s for s in ud_sentences if len(default._pieces(s)[0]) <= 62]
    assert len(short) >= 10
    for a, b, c in zip(default(short), explicit(short), small_batches(short)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[0], c[0], atol=1e-5)  # batching and padding do not change the vectors
        np.testing.assert_allclose(a[1], c[1], atol=1e-5)


def test_window_must_leave_room_for_words(bert):
    with pytest.raises(ValueError, match="max_length"):
        FrozenEncoder(bert.name, 2, max_length=3)([["a"]])


def test_pooling_against_manual_hidden_states(bert):
    words = ["猫", "は", "マット", "sa", "The"]
    ids, word_ids, tokens = _pieces_of(bert, words)
    # The tokenizer really gives these words a bare "▁" first piece, and "sa" is one piece ("▁sa").
    assert tokens[word_ids.index(0)] == "▁" and tokens[word_ids.index(2)] == "▁"
    assert [t for t, w in zip(tokens, word_ids) if w == 3] == ["▁sa"]
    hidden = _states(bert, [bert.tokenizer.convert_tokens_to_ids("<s>")] + ids
                     + [bert.tokenizer.convert_tokens_to_ids("</s>")])[1:-1]
    positions = [[p for p, w in enumerate(word_ids) if w == i] for i in range(len(words))]
    informative = [[p for p in pos if tokens[p].strip(_BARE_SPACE)] for pos in positions]
    pooled = {pooling: FrozenEncoder(bert.name, 2, pooling=pooling)([words])[0][0] for pooling in ("first", "mean", "last")}
    for i in range(len(words)):
        # "first" skips a bare "▁" and takes the first piece that carries the word.
        np.testing.assert_allclose(pooled["first"][i], hidden[informative[i][0]], atol=1e-5)
        np.testing.assert_allclose(pooled["last"][i], hidden[positions[i][-1]], atol=1e-5)
        np.testing.assert_allclose(pooled["mean"][i], hidden[informative[i]].mean(0), atol=1e-5)
    # "猫" = "▁" + "猫": first == last (the second piece), not the bare "▁".
    assert positions[0] == [0, 1]
    assert not np.allclose(pooled["first"][0], hidden[0], atol=1e-3)
    # Multi-piece words differ across poolings; a single-piece word is the same under all three.
    assert len(positions[2]) >= 3
    assert not np.allclose(pooled["first"][2], pooled["last"][2], atol=1e-3)
    assert not np.allclose(pooled["first"][2], pooled["mean"][2], atol=1e-3)
    np.testing.assert_allclose(pooled["first"][3], pooled["last"][3], atol=1e-6)
    np.testing.assert_allclose(pooled["first"][3], pooled["mean"][3], atol=1e-6)


def test_root_vector_is_the_start_token(bert):
    words = ["sa", "ta", "sa"]
    ids, _, _ = _pieces_of(bert, words)
    hidden = _states(bert, [0] + ids + [2])
    (_, root), = bert([words])
    np.testing.assert_allclose(root, hidden[0], atol=1e-5)


def test_decoder_only_gpt2(tiny_gpt2_dir, ud_sentences):
    encoder = FrozenEncoder(str(tiny_gpt2_dir), 3, pooling="last")
    assert encoder._special_pieces() == ([], [])
    for words, (vectors, root) in zip(ud_sentences, encoder(ud_sentences)):
        assert vectors.shape == (len(words), 32)
        # No start token: the root vector falls back to the mean of the word vectors.
        np.testing.assert_allclose(root, vectors.mean(axis=0), atol=1e-5)
    # "last" pooling reads the state of each word's last piece (a causal model has seen the whole word there).
    words = ud_sentences[0]
    ids, word_ids, _ = _pieces_of(encoder, words)
    hidden = _states(encoder, ids)
    last = [max(p for p, w in enumerate(word_ids) if w == i) for i in range(len(words))]
    np.testing.assert_allclose(encoder([words])[0][0], hidden[last], atol=1e-5)


def test_gpt2_causal_windows_match_the_unwindowed_prefix(tiny_gpt2_dir, ud_sentences):
    """Causal model: a piece taken from the first window has exactly the unwindowed state."""
    words = next(s for s in ud_sentences if 40 <= len(FrozenEncoder(str(tiny_gpt2_dir), 2)._pieces(s)[0]) <= 64)
    whole = FrozenEncoder(str(tiny_gpt2_dir), 2, pooling="last")([words])[0][0]
    windowed_encoder = FrozenEncoder(str(tiny_gpt2_dir), 2, pooling="last", max_length=16)
    windowed = windowed_encoder([words])[0][0]
    ids, word_ids, _ = _pieces_of(windowed_encoder, words)
    last = [max(p for p, w in enumerate(word_ids) if w == i) for i in range(len(words))]
    # Pieces 0..11 are most central in the first window (0..15; the next one starts at 8).
    early = [i for i, p in enumerate(last) if p < 12]
    late = [i for i, p in enumerate(last) if p >= 16]
    assert early and late
    np.testing.assert_allclose(windowed[early], whole[early], atol=1e-5)
    assert not np.allclose(windowed[late], whole[late], atol=1e-3)


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_model_is_truncated_to_layer(tiny_bert_dir, tiny_gpt2_dir, layer):
    bert = FrozenEncoder(str(tiny_bert_dir), layer)
    assert len(bert.model.encoder.layer) == layer and bert.model.config.num_hidden_layers == layer
    gpt2 = FrozenEncoder(str(tiny_gpt2_dir), layer)
    assert len(gpt2.model.h) == layer
    vectors, _ = bert([["sa", "ta"]])[0]
    assert vectors.shape == (2, 32)


def test_layers_give_different_vectors(tiny_bert_dir):
    words = ["sa", "ta", "sa"]
    one, two = (FrozenEncoder(str(tiny_bert_dir), layer)([words])[0][0] for layer in (1, 2))
    assert not np.allclose(one, two, atol=1e-3)


def test_extra_layers_are_concatenated_after_the_layer(tiny_bert_dir):
    """extra_layers=[1] on layer 2: each word's vector is layer 2's, then layer 1's, from one forward pass."""
    words = [["sa", "ta", "sa"], ["ta"]]
    both = FrozenEncoder(str(tiny_bert_dir), 2, extra_layers=[1])
    assert both.width == 64 and both.settings["extra_layers"] == [1]
    assert both.fingerprint != FrozenEncoder(str(tiny_bert_dir), 2).fingerprint
    for (vectors, root), (top, top_root), (low, low_root) in zip(
            both(words), FrozenEncoder(str(tiny_bert_dir), 2)(words), FrozenEncoder(str(tiny_bert_dir), 1)(words)):
        np.testing.assert_allclose(vectors, np.concatenate([top, low], 1), atol=1e-5)
        np.testing.assert_allclose(root, np.concatenate([top_root, low_root]), atol=1e-5)


@pytest.mark.parametrize("extra", [[2], [3], [-1]])
def test_extra_layers_must_be_below_the_layer(tiny_bert_dir, extra):
    with pytest.raises(ValueError, match="extra_layers must be below layer 2"):
        FrozenEncoder(str(tiny_bert_dir), 2, extra_layers=extra)


@pytest.mark.parametrize("layer", [-1, 4, 100])
def test_invalid_layer(tiny_bert_dir, layer):
    with pytest.raises(ValueError, match="layer must be in 0..3"):
        FrozenEncoder(str(tiny_bert_dir), layer)([["a"]])


def test_invalid_pooling(tiny_bert_dir):
    with pytest.raises(ValueError, match="pooling"):
        FrozenEncoder(str(tiny_bert_dir), 2, pooling="max")


def test_fingerprint(tiny_bert_dir, tiny_gpt2_dir):
    base = FrozenEncoder(str(tiny_bert_dir), 2)
    assert base.fingerprint == FrozenEncoder(str(tiny_bert_dir), 2, batch_size=3, max_length=40).fingerprint
    others = [FrozenEncoder(str(tiny_bert_dir), 1), FrozenEncoder(str(tiny_bert_dir), 2, pooling="mean"),
              FrozenEncoder(str(tiny_bert_dir), 2, pooling="last"), FrozenEncoder(str(tiny_gpt2_dir), 2),
              FrozenEncoder(str(tiny_bert_dir), 2, unknown_characters="keep")]
    prints = {base.fingerprint} | {e.fingerprint for e in others}
    assert len(prints) == 6


def test_unknown_characters_reach_the_model_as_stand_ins(tiny_bert_dir):
    """A word the tokenizer cannot read (Syriac; Yoruba's "ǹ") gets a readable stand-in instead of "<unk>" (as
    "keep" gives it); words it can read, and their vectors, are unchanged."""
    keep, stand_in = (FrozenEncoder(str(tiny_bert_dir), 2, unknown_characters=mode)
                      for mode in ("keep", "transliterate"))
    tok = keep.tokenizer
    for words, expected in ((["ܟܠ", "sa"], ["k", "l"]), (["nǹkan", "sa"], ["n", "n", "k", "a", "n"])):
        kept, read = (tok.convert_ids_to_tokens(enc._pieces(words)[0]) for enc in (keep, stand_in))
        assert "<unk>" in kept and "<unk>" not in read
        assert [p for p in read if p != "▁"][: len(expected)] == expected and read[-1] == "▁sa"
    plain = [["sa", "ta", "sa"], ["ta"], [" ", "sa"]]
    for (a, root_a), (b, root_b) in zip(keep(plain), stand_in(plain)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(root_a, root_b)
    with pytest.raises(ValueError, match="unknown_characters"):
        FrozenEncoder(str(tiny_bert_dir), 2, unknown_characters="drop")


@pytest.mark.slow
def test_a_script_the_encoder_barely_knows_is_read_in_transliteration(offline_encoder_dir):
    """Real tokenizer, each word as the model reads it: a Syriac sentence transliterated, every word (even one of the
    few Syriac letters it has); in a Chinese sentence one rare character's word transliterated whole; Yoruba losing
    only the accents the tokenizer lacks, composed or not; a readable word kept as it is beside an unreadable one
    (Romanian "ș" typed with a combining comma, which the tokenizer composes); nothing readable left: "<unk>"."""
    import unicodedata

    encoder = FrozenEncoder(str(offline_encoder_dir), 6, pooling="mean")
    tok = encoder.tokenizer

    def read(words):
        ids, chosen = encoder._pieces(words)
        return ["".join(tok.convert_ids_to_tokens([ids[p] for p in pos])).lstrip("▁") for pos in chosen]

    assert read(["ܟܠ", "ܚܲܕ", "ܠܐ", "."]) == ["kl", "had", "l'", "."]
    chinese = ["我们", "用", "尾铗", "夹住", "它", "。"]
    assert read(chinese) == chinese[:2] + ["WeiJia"] + chinese[3:]
    yoruba = ["Ó", "jíǹde", "lọ", "."]
    assert read(yoruba) == read([unicodedata.normalize("NFD", w) for w in yoruba]) == ["Ó", "jínde", "lọ", "."]
    romanian = "s\u0326i"
    assert read([romanian, "ܟܠ"]) == read([romanian]) + ["kl"] == ["și", "kl"]
    assert read(["𒀭", "a"]) == ["<unk>", "a"] and read(["The", "cat", "."]) == ["The", "cat", "."]


def test_width_without_loading_weights(tiny_bert_dir, tiny_gpt2_dir):
    assert FrozenEncoder(str(tiny_bert_dir), 2).width == 32
    assert FrozenEncoder(str(tiny_gpt2_dir), 2).width == 32


@pytest.mark.slow
def test_offline_encoder_first_pooling_never_picks_a_bare_space(offline_encoder_dir, sample_file):
    sentences = [s.words for s in read_conllu(sample_file("ja_gsd"))[:3]]
    encoder = FrozenEncoder(str(offline_encoder_dir), 6, pooling="first")
    tokens_with_bare = 0
    for words in sentences:
        ids, chosen = encoder._pieces(words)
        tokens = encoder.tokenizer.convert_ids_to_tokens(ids)
        assert len(chosen) == len(words) and all(len(c) == 1 for c in chosen)
        assert all(tokens[c[0]] != "▁" for c in chosen)
        tokens_with_bare += sum(tokens[p] == "▁" for p in range(len(ids)))
    assert tokens_with_bare > 0  # the rule was actually needed for these sentences
    for words, (vectors, root) in zip(sentences, encoder(sentences)):
        assert vectors.shape == (len(words), 384) and np.isfinite(vectors).all()


@pytest.mark.slow
def test_offline_encoder_words_the_tokenizer_drops(offline_encoder_dir):
    """XLM-R's tokenizer drops a lone DEL ("\\x7f") entirely; the word still gets a vector (from the unknown piece)."""
    encoder = FrozenEncoder(str(offline_encoder_dir), 6)
    tok = encoder.tokenizer
    words = ["a", "\x7f", "\u200b", "  ", "b"]
    assert 1 not in tok(words, is_split_into_words=True, add_special_tokens=False).word_ids()
    ids, chosen = encoder._pieces(words)
    assert len(chosen) == len(words) and all(chosen)
    (vectors, root), = encoder([words])
    assert vectors.shape == (5, 384) and np.isfinite(vectors).all()


def test_padded_batches_bound_count_and_padded_size():
    from spacy_concept_align.batching import padded_batches

    costs = [2, 3, 3, 5, 9, 9, 40, 100]
    batches = list(padded_batches(costs, size=3, budget=20))
    assert [list(b) for b in batches] == [[0, 1, 2], [3, 4], [5], [6], [7]]  # 40 and 100 exceed it alone
    assert [i for b in batches for i in b] == list(range(len(costs)))
    assert list(padded_batches([], size=3, budget=20)) == []
