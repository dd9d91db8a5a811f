"""Word identity priors: counts per form, back-off to lower case and suffixes, smoothing, JSON round trip."""
import numpy as np
import pytest

from spacy_concept_align.lexicon import (OFFSET_BUCKETS, LanguagePriors, Lexicon, PriorWeights, arc_context, arc_counts,
                                         offset_buckets)

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


def test_a_forms_relations_can_count_less_than_its_tags():
    forms = ["xale", "bi", "dem", "."]
    upos, heads, rels, offsets = np.array([NOUN, ADP, VERB, 2]), np.array([3, 1, 0, 3]), np.array([4, 2, 1, 3]), np.array([0, 4])
    as_tags = LanguagePriors.from_treebank(forms, upos, heads, rels, offsets, 3, 5, PriorWeights(form=1.0))
    less = LanguagePriors.from_treebank(forms, upos, heads, rels, offsets, 3, 5, PriorWeights(form=1.0, relation_form=0.25))
    assert np.allclose(as_tags.relation_form_prior(forms), as_tags.rel.log_prior(forms, as_tags.weights))
    assert np.allclose(less.relation_form_prior(forms), 0.25 * as_tags.relation_form_prior(forms))
    assert np.allclose(less.pos.log_prior(forms, less.weights), as_tags.pos.log_prior(forms, as_tags.weights))
    assert LanguagePriors.from_json(less.to_json()).weights.relation_form == 0.25


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


def test_offset_buckets_tell_direction_and_distance_and_the_root_apart():
    buckets = offset_buckets(9)
    assert buckets.shape == (9, 10) and np.all(buckets[:, 0] == OFFSET_BUCKETS - 1)  # column 0: the root
    first, last = buckets[0], buckets[8]  # word 1 looks right only, word 9 left only
    assert list(first[2:]) == [5, 6, 7, 8, 8, 8, 9, 9]  # +1, +2, +3, +4..+6, >= +7
    assert list(last[1:9][::-1]) == [4, 3, 2, 1, 1, 1, 0, 0]  # -1, -2, -3, -6..-4, <= -7


def test_the_arc_table_learns_which_way_heads_go():
    # two sentences "NOUN ADP VERB": the adposition attaches to the noun on its left, the noun to the verb
    upos, heads, offsets = np.array([NOUN, ADP, VERB] * 2), np.array([3, 1, 0] * 2), np.array([0, 3, 6])
    counts = arc_counts(upos, heads, offsets, 3)
    assert counts[..., 1].sum() == 6 and counts[..., 0].sum() == 6 * 3  # each word: 3 candidate heads, 1 arc
    assert counts[ADP, NOUN, 4, 1] == 2 and counts[VERB, 3, OFFSET_BUCKETS - 1, 1] == 2  # -1 to the noun; the root
    priors = LanguagePriors.from_treebank(["a", "b", "c"] * 2, upos, heads, np.zeros(6, int), offsets, 3, 5)
    (prior,) = priors.arc_log_prior(np.array([NOUN, ADP, VERB]), np.array([0, 3]))
    assert prior.shape == (3, 4) and prior[1].argmax() == 1 and prior[0].argmax() == 3 and prior[2].argmax() == 0
    again = LanguagePriors.from_json(priors.to_json())
    assert np.array_equal(again.arc_table, priors.arc_table) and again.heads.counts == priors.heads.counts
    legacy = priors.to_json()
    del legacy["arc_table"], legacy["heads"]  # priors saved before arcs were counted
    legacy = LanguagePriors.from_json(legacy)
    assert not legacy.arc_table.any() and legacy.arc_log_prior(np.array([NOUN, ADP, VERB]), np.array([0, 3]), ["a"] * 3) is None


def test_a_seen_words_own_head_offset_is_preferred():
    # "b" attaches to the word before it, whatever its tag says
    upos, heads, offsets = np.array([NOUN, ADP, VERB]), np.array([3, 1, 0]), np.array([0, 3])
    priors = LanguagePriors.from_treebank(["a", "b", "c"], upos, heads, np.zeros(3, int), offsets, 3, 5,
                                          PriorWeights(arcs=0.0, heads=1.0))
    assert priors.heads.counts["b"] == {4: 1} and priors.heads.counts["c"] == {OFFSET_BUCKETS - 1: 1}
    (prior,) = priors.arc_log_prior(np.array([VERB, VERB, VERB]), np.array([0, 3]), ["x", "b", "c"])
    assert prior[1].argmax() == 1 and prior[2].argmax() == 0  # "b": one word left; "c": the root
    assert np.all(prior[0] == 0)  # an unseen form: nothing added
    assert priors.arc_log_prior(upos, offsets) is None  # no forms, no tag table weight: nothing to add


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
