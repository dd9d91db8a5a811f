"""Word identity priors: counts per form, back-off to lower case and suffixes, smoothing, JSON round trip."""
import numpy as np
import pytest

from spacy_concept_align.lexicon import LanguagePriors, Lexicon, PriorWeights, arc_context

NOUN, VERB, ADP = 0, 1, 2


def lexicon():
    return Lexicon.from_words(["ci", "ci", "Ci", "dem", "xale", "xale", "?"], [ADP, ADP, ADP, VERB, NOUN, NOUN, -1], 3)


def test_seen_forms_back_off_to_lower_case_then_suffix_then_nothing():
    lex = lexicon()
    assert lex.lookup("ci")[1] == 0 and lex.lookup("CI")[1] == 1
    counts, level = lex.lookup("jale")  # unseen; shares the suffix "ale" with "xale"
    assert level == 2 and counts.argmax() == NOUN
    assert lex.lookup("zzz") == (None, 3)
    assert "?" not in lex.counts  # unknown labels are not counted


def test_log_prior_prefers_the_seen_label_and_weights_each_level():
    lex = lexicon()
    prior = lex.log_prior(["ci", "jale", "zzz"], PriorWeights(form=1.0, suffix=0.5))
    assert prior[0].argmax() == ADP and prior[1].argmax() == NOUN
    assert np.all(prior[2] == 0)  # nothing known: the model decides alone
    no_suffix = lex.log_prior(["ci", "jale"], PriorWeights(form=1.0, suffix=0.0))
    assert np.all(no_suffix[1] == 0) and np.allclose(no_suffix[0], prior[0])
    assert np.allclose(lex.log_prior(["ci"], PriorWeights(form=2.0))[0], 2 * prior[0])


def test_priors_round_trip_through_json_and_reject_bad_labels():
    forms = ["xale", "bi", "dem", "."]
    upos, heads, rels, offsets = np.array([NOUN, ADP, VERB, 2]), np.array([3, 1, 0, 3]), np.array([4, 2, 1, 3]), np.array([0, 4])
    priors = LanguagePriors.from_treebank(forms, upos, heads, rels, offsets, 3, 5)
    again = LanguagePriors.from_json(priors.to_json())
    assert again.pos.counts == priors.pos.counts and again.rel.counts == priors.rel.counts
    assert np.array_equal(again.table, priors.table)
    table = priors.relation_log_prior(upos, heads, offsets)
    assert table.shape == (4, 5) and table[0].argmax() == 4  # NOUN under a VERB to its right: relation 4
    data = priors.to_json()
    data["pos"][0][1][0][0] = 7  # a label outside the inventory
    with pytest.raises(ValueError, match="labels outside"):
        LanguagePriors.from_json(data)


def test_arc_context_gives_head_tag_and_direction():
    upos, heads, offsets = np.array([NOUN, VERB, NOUN, VERB]), np.array([2, 0, 0, 1]), np.array([0, 2, 4])
    head_upos, right = arc_context(upos, heads, offsets, 3)
    assert list(head_upos) == [VERB, 3, 3, NOUN] and list(right) == [1, 0, 0, 0]


def test_priors_by_language_unpack_on_first_use_and_name_a_broken_language():
    import gzip
    import json

    from spacy_concept_align.lexicon import PriorsByLanguage

    priors = LanguagePriors.from_treebank(["xale", "dem"], np.array([NOUN, VERB]), np.array([2, 0]), np.array([4, 1]),
                                          np.array([0, 2]), 3, 5)
    packed = PriorsByLanguage({"wo": gzip.compress(json.dumps(priors.to_json()).encode())}).packed()
    lazy = PriorsByLanguage(dict(packed, cy=gzip.compress(b"[not json")))
    assert list(lazy) == ["cy", "wo"] and "wo" in lazy and len(lazy) == 2
    assert lazy.packed() == dict(packed, cy=gzip.compress(b"[not json"))  # nothing unpacked, nothing changed
    assert lazy["wo"].pos.counts == priors.pos.counts
    with pytest.raises(ValueError, match="'cy' are unreadable"):
        lazy["cy"]
    with pytest.raises(ValueError, match="not gzipped JSON"):
        PriorsByLanguage({"wo": b"plain bytes"})
    del lazy["wo"]
    assert "wo" not in lazy and lazy.get("wo") is None


def test_prior_weights_come_from_plain_settings():
    from spacy_concept_align.adapt import AdaptSettings

    assert AdaptSettings(prior_weights={"form": 2.0}).prior_weights == PriorWeights(form=2.0)
    with pytest.raises(TypeError):
        AdaptSettings(prior_weights={"lexicon": 1.0})
