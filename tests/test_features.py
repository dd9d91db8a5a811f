"""Feature extraction and its cache (tiny BERT, real UD files), FeatureSet.select and relation vectors."""
import json

import numpy as np
import pytest

from spacy_concept_align.corpus import read_conllu
from spacy_concept_align.encoders import FrozenEncoder
from spacy_concept_align.feature_cache import extract_features
from spacy_concept_align.features import FeatureSet
from spacy_concept_align.labels import DEPREL_ID, UPOS_ID
from spacy_concept_align.paths import CACHE_ENV


N = 12  # sentences per file (the whole wo_wtb sample in tests/data): keep the tiny encoder's work small


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def counting_encoder(tiny_bert_dir):
    """A tiny-BERT encoder that counts the sentences it encodes."""
    encoder = FrozenEncoder(str(tiny_bert_dir), 2)
    encoder.calls = []
    original = encoder.encode

    def encode(sentences):
        encoder.calls.append(len(sentences))
        return original(sentences)

    encoder.encode = encode
    return encoder


def _feature_dirs(cache):
    return sorted(p for p in (cache / "features").glob("*/*") if p.is_dir())


def test_cache_miss_then_hit(cache, counting_encoder, sample_file):
    path = sample_file("wo_wtb")
    first = extract_features(path, counting_encoder, max_sentences=N, progress=False)
    assert counting_encoder.calls == [N]
    (target,) = _feature_dirs(cache)
    meta = json.loads((target / "meta.json").read_text())
    assert meta["sentences"] == N and meta["encoder"]["layer"] == 2 and meta["encoder"]["pooling"] == "first"
    second = extract_features(path, counting_encoder, max_sentences=N, progress=False)
    assert counting_encoder.calls == [N]  # the hit did not run the encoder
    # The hit is memory-mapped from the cache; vectors are stored as float16.
    for name in ("words", "roots", "offsets", "upos", "heads", "deprels"):
        assert isinstance(getattr(second, name), np.memmap), name
    assert second.words.dtype == np.float16
    # ... and the miss returned what the cache holds, so a first run and a rerun compute the same numbers
    for name in ("words", "roots", "offsets", "upos", "heads", "deprels"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.lang == first.lang == "wo"


def test_labels_match_read_conllu(cache, counting_encoder, sample_file):
    path = sample_file("ja_gsd")
    sentences = read_conllu(path)[:N]
    features = extract_features(path, counting_encoder, max_sentences=N, progress=False)
    assert len(features) == N and features.n_words == sum(map(len, sentences))
    np.testing.assert_array_equal(features.offsets, np.cumsum([0] + [len(s) for s in sentences]))
    assert features.upos.tolist() == [UPOS_ID[t] for s in sentences for t in s.upos]
    assert features.heads.tolist() == [h for s in sentences for h in s.heads]
    assert features.deprels.tolist() == [DEPREL_ID[r] for s in sentences for r in s.deprels]
    assert features.words.shape == (features.n_words, 32) and features.roots.shape == (N, 32)
    # The vectors are the encoder's, sentence by sentence (in half precision, as cached). Encoded alone rather than
    # in a padded batch, a value can differ in float32's last bits and so round to the neighbouring half: one unit
    # in half precision's last place (2**-10 relative) is allowed.
    words, root = FrozenEncoder(counting_encoder.name, 2)([sentences[3].words])[0]
    got_words, got_root = features.sentence(3)
    assert got_words.dtype == got_root.dtype == np.float16
    np.testing.assert_allclose(got_words.astype(np.float32), words, rtol=2**-10, atol=1e-6)
    np.testing.assert_allclose(got_root.astype(np.float32), root, rtol=2**-10, atol=1e-6)


def test_max_sentences_and_encoder_change_the_key(cache, counting_encoder, tiny_bert_dir, sample_file):
    path = sample_file("wo_wtb")
    extract_features(path, counting_encoder, max_sentences=N, progress=False)
    small = extract_features(path, counting_encoder, max_sentences=5, progress=False)
    assert counting_encoder.calls == [N, 5] and len(small) == 5
    assert len(_feature_dirs(cache)) == 2
    extract_features(path, FrozenEncoder(str(tiny_bert_dir), 1), max_sentences=5, progress=False)
    assert len(_feature_dirs(cache)) == 3
    assert len(list((cache / "features").iterdir())) == 2  # one folder per encoder fingerprint


def test_a_folder_without_meta_is_not_trusted(cache, counting_encoder, sample_file):
    path = sample_file("wo_wtb")
    good = extract_features(path, counting_encoder, max_sentences=N, progress=False)
    good_words = np.array(good.words)  # in memory: the arrays below are overwritten in place, under its mapping
    del good
    (target,) = _feature_dirs(cache)
    # Simulate a write that died after the arrays but before meta.json: garbage arrays, no meta.json.
    (target / "meta.json").unlink()
    np.save(target / "words.npy", np.zeros((3, 32), np.float16))
    np.save(target / "offsets.npy", np.array([0, 3]))
    again = extract_features(path, counting_encoder, max_sentences=N, progress=False)
    assert counting_encoder.calls == [N, N]  # recomputed
    assert len(again) == N
    np.testing.assert_array_equal(again.words, good_words)
    assert (target / "meta.json").exists()
    assert np.load(target / "words.npy").shape == good_words.shape  # the cache was rewritten
    assert _feature_dirs(cache) == [target]  # no temporary folder is left behind


def test_use_cache_false_writes_nothing(cache, counting_encoder, sample_file):
    extract_features(sample_file("wo_wtb"), counting_encoder, max_sentences=3, use_cache=False, progress=False)
    extract_features(sample_file("wo_wtb"), counting_encoder, max_sentences=3, use_cache=False, progress=False)
    assert counting_encoder.calls == [3, 3]
    assert not (cache / "features").exists()


# ---------------------------------------------------------------------------------------------------------------
# FeatureSet arithmetic on a hand-made example

def _tiny() -> FeatureSet:
    # Sentence 0: 2 words, word 2 is the root, word 1 depends on it. Sentence 1: 3 words, word 1 is the root.
    words = np.array([[1, 0], [2, 1], [10, 10], [20, 0], [0, 30]], np.float32)
    roots = np.array([[100, 100], [-5, 5]], np.float32)
    offsets = np.array([0, 2, 5])
    return FeatureSet(words, roots, offsets, upos=np.array([7, 15, 11, 15, 12], np.int16),
                      heads=np.array([2, 0, 0, 1, 2], np.int32), deprels=np.array([26, 34, 34, 28, 32], np.int16),
                      lang="xx")


def test_relation_vectors_by_hand():
    features = _tiny()
    expected = np.array([
        [2 - 1, 1 - 0],        # word 1 -> head word 2
        [100 - 2, 100 - 1],    # root: the sentence's root vector minus the word
        [-5 - 10, 5 - 10],     # root of sentence 1: its own root vector
        [10 - 20, 10 - 0],     # head word 1 of sentence 1 (flat index 2)
        [20 - 0, 0 - 30],      # head word 2 of sentence 1 (flat index 3)
    ], np.float32)
    np.testing.assert_array_equal(features.relation_vectors(), expected)
    # Other heads: everything attached to the root.
    to_root = features.relation_vectors(np.zeros(5, np.int64))
    np.testing.assert_array_equal(to_root, np.repeat(features.roots, [2, 3], axis=0) - features.words)


def test_select_by_hand():
    features = _tiny()
    picked = features.select([1])
    assert len(picked) == 1 and picked.n_words == 3
    np.testing.assert_array_equal(picked.words, features.words[2:5])
    np.testing.assert_array_equal(picked.roots, [[-5, 5]])
    np.testing.assert_array_equal(picked.offsets, [0, 3])
    np.testing.assert_array_equal(picked.heads, [0, 1, 2])
    np.testing.assert_array_equal(picked.upos, [11, 15, 12])
    np.testing.assert_array_equal(picked.deprels, [34, 28, 32])
    assert picked.lang == "xx" and picked.words.dtype == np.float32
    # Sentence heads stay sentence-relative, so relation vectors agree with the full set's.
    np.testing.assert_array_equal(picked.relation_vectors(), features.relation_vectors()[2:5])
    swapped = features.select([1, 0])
    np.testing.assert_array_equal(swapped.offsets, [0, 3, 5])
    np.testing.assert_array_equal(swapped.words, features.words[[2, 3, 4, 0, 1]])
    np.testing.assert_array_equal(swapped.relation_vectors(), features.relation_vectors()[[2, 3, 4, 0, 1]])
    empty = features.select([])
    assert len(empty) == 0 and empty.n_words == 0


def test_select_from_memory_mapped_cache(cache, counting_encoder, sample_file):
    path = sample_file("wo_wtb")
    extract_features(path, counting_encoder, max_sentences=N, progress=False)
    cached = extract_features(path, counting_encoder, max_sentences=N, progress=False)
    picked = cached.select([4, 1])
    assert not isinstance(picked.words, np.memmap) and picked.words.dtype == np.float32
    start, end = cached.offsets[4], cached.offsets[5]
    np.testing.assert_array_equal(picked.words[: end - start], np.asarray(cached.words[start:end], np.float32))
    np.testing.assert_array_equal(picked.heads[: end - start], cached.heads[start:end])


def test_from_vectors_without_sentences_has_unknown_labels():
    vectors = [(np.ones((2, 4), np.float32), np.zeros(4, np.float32)), (np.ones((1, 4), np.float32), np.ones(4, np.float32))]
    features = FeatureSet.from_vectors(vectors)
    assert len(features) == 2 and features.n_words == 3
    assert (features.upos == -1).all() and (features.heads == -1).all() and (features.deprels == -1).all()
    empty = FeatureSet.from_vectors([])
    assert len(empty) == 0 and empty.n_words == 0
