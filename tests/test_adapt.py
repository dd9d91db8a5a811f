"""Few-shot adaptation: a language's adaptors change its predictions only, and bad input changes nothing."""
from dataclasses import replace

import numpy as np
import pytest
import spacy
import torch
from spacy.training import Example

from spacy_concept_align.adapt import AdaptSettings, adapt_language
from spacy_concept_align.corpus import find_treebank, read_docs, unannotated
from spacy_concept_align.encoders import FrozenEncoder
from spacy_concept_align.feature_cache import extract_features
from spacy_concept_align.decoder import ConceptDecoder


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def features(tiny_bert_dir):
    """English (the source) and Wolof features of 60 sentences each from the tiny BERT, computed once per module
    (tests only read them: FeatureSet.select copies)."""
    encoder = FrozenEncoder(str(tiny_bert_dir), 2)
    english = extract_features(find_treebank("en", "dev").path, encoder, max_sentences=60, use_cache=False,
                               progress=False)
    wolof = extract_features(find_treebank("wo", "train").path, encoder, max_sentences=60, use_cache=False,
                             progress=False)
    return english, wolof


@pytest.fixture
def setup(features):
    english, wolof = features
    torch.manual_seed(0)
    decoder = ConceptDecoder(32, pos_hidden=32, pos_dim=8, rel_hidden=32, rel_dim=8, arc_hidden=32, dropout=0.0)
    decoder.set_prototypes(english)
    return decoder, wolof


def state(decoder):
    return {k: v.clone() for k, v in decoder.state_dict().items()}


def test_adaptation_fits_the_support_and_touches_only_its_language(setup):
    decoder, wolof = setup
    support = wolof.select(range(20))
    before_upos = decoder.predict(support)[0]
    shared = state(decoder)
    report = adapt_language(decoder, support, "wo", AdaptSettings(steps=150))
    assert {"pos_loss", "rel_loss", "arc_loss", "seconds"} <= set(report)
    assert "wo" in decoder.languages and "wo" in decoder.language_arcs
    after = state(decoder)
    assert all(torch.equal(shared[k], after[k]) for k in shared)  # the shared parts are frozen
    adapted_upos = decoder.predict(support, "wo")[0]
    assert np.mean(adapted_upos == support.upos) > np.mean(before_upos == support.upos)
    assert np.array_equal(decoder.predict(support)[0], before_upos)  # no language = the zero-shot path, unchanged


def test_prototype_refinement_and_arc_adaptation_are_settings(setup):
    decoder, wolof = setup
    adapt_language(decoder, wolof.select(range(10)), "wo", AdaptSettings(refine_prototypes=False, adapt_arcs=False))
    assert torch.count_nonzero(decoder.pos.adaptors["wo"].prototype_shift) == 0 and "wo" not in decoder.language_arcs
    adapt_language(decoder, wolof.select(range(10)), "wo", AdaptSettings())
    assert torch.count_nonzero(decoder.pos.adaptors["wo"].prototype_shift) > 0 and "wo" in decoder.language_arcs


def test_original_linear_adaptor_leaves_the_output_layer(setup):
    decoder, wolof = setup
    adapt_language(decoder, wolof.select(range(10)), "wo", AdaptSettings(train="linear", refine_prototypes=False))
    adaptor = decoder.pos.adaptors["wo"]
    assert torch.equal(adaptor.outer.weight, decoder.pos.phi.outer.weight)
    assert not torch.equal(adaptor.linear.weight, torch.eye(adaptor.linear.weight.shape[0]))
    with pytest.raises(ValueError, match="outer"):
        adapt_language(decoder, wolof.select(range(10)), "wo", AdaptSettings(train="everything"))


def test_fewer_support_words_keep_the_output_layer_nearer_the_zero_shot_one(setup):
    decoder, wolof = setup

    def moved(support, anchor_words):
        adapt_language(decoder, support, "wo", AdaptSettings(anchor_words=anchor_words, refine_prototypes=False))
        return float((decoder.pos.adaptors["wo"].outer.weight - decoder.pos.phi.outer.weight).detach().norm())

    few = wolof.select(range(3))
    words = int((few.upos >= 0).sum())
    assert moved(few, 0) > moved(few, 4 * words) > 0  # a stronger anchor for fewer words than anchor_words
    assert moved(few, words // 2) == moved(few, 0)  # never weaker than anchor_weight


def test_below_min_relation_sentences_only_the_relation_prototypes_move(setup):
    decoder, wolof = setup
    report = adapt_language(decoder, wolof.select(range(10)), "wo", AdaptSettings(min_relation_sentences=20))
    relations = decoder.rel.adaptors["wo"]
    assert "rel_loss" not in report and torch.equal(relations.outer.weight, decoder.rel.phi.outer.weight)
    assert torch.count_nonzero(relations.prototype_shift) > 0
    report = adapt_language(decoder, wolof.select(range(10)), "wo", AdaptSettings(min_relation_sentences=5))
    assert "rel_loss" in report


def test_unlabelled_support_fails_and_changes_nothing(setup):
    decoder, wolof = setup
    before = state(decoder)
    unlabelled = wolof.select(range(5))
    unlabelled.upos[:] = -1
    unlabelled.heads[:] = -1
    with pytest.raises(ValueError, match="annotated"):
        adapt_language(decoder, unlabelled, "wo")
    after = state(decoder)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert decoder.languages == [] and "wo" not in decoder.language_arcs


def test_few_sentences_warn(setup, caplog):
    decoder, wolof = setup
    adapt_language(decoder, wolof.select(range(2)), "wo")
    assert "only 2 sentence" in caplog.text


def test_pipe_adapt_saves_with_the_pipeline(tiny_bert_dir, tmp_path, sample_file):
    nlp = spacy.blank("xx")
    pipe = nlp.add_pipe("concept_align", config={"min_count": 1, "model": {
        "encoder": {"name": str(tiny_bert_dir), "layer": 2}, "dropout": 0.0}})
    gold = read_docs(sample_file("en_ewt"), nlp.vocab, limit=20)
    nlp.initialize(lambda: [Example(unannotated(d), d) for d in gold])
    support = read_docs(sample_file("wo_wtb"), nlp.vocab, limit=10)
    pipe.adapt(support, lang="wo", min_relation_sentences=5)  # relations too: their own first layer (structured)
    assert pipe.decoder.rel.adaptors["wo"].inner is not None and pipe.decoder.pos.adaptors["wo"].inner is None
    text = support[0].text
    adapted = [(t.pos_, t.dep_, t.head.i) for t in nlp(text, component_cfg={"concept_align": {"lang": "wo"}})]
    nlp.to_disk(tmp_path / "p")
    reloaded = spacy.load(tmp_path / "p")
    assert reloaded.get_pipe("concept_align").languages == ["wo"]
    assert [(t.pos_, t.dep_, t.head.i) for t in reloaded(text, component_cfg={"concept_align": {"lang": "wo"}})] == adapted
    adapted = [pos for pos, _, _ in adapted]
    doc = reloaded.make_doc(text)
    doc._.concept_lang = "wo"
    assert [t.pos_ for t in reloaded(doc)] == adapted


def test_pipe_adapt_rejects_non_ud_labels(tiny_bert_dir, sample_file):
    nlp = spacy.blank("xx")
    pipe = nlp.add_pipe("concept_align", config={"min_count": 1, "model": {
        "encoder": {"name": str(tiny_bert_dir), "layer": 2}}})
    gold = read_docs(sample_file("en_ewt"), nlp.vocab, limit=10)
    nlp.initialize(lambda: [Example(unannotated(d), d) for d in gold])
    bad = read_docs(sample_file("wo_wtb"), nlp.vocab, limit=5)
    bad[0][0].pos_ = "NOUN"
    bad[0][0].dep_ = "nsubjpass"  # ClearNLP, not UD
    before = pipe.to_bytes()
    with pytest.raises(ValueError, match="nsubjpass"):
        pipe.adapt(bad, lang="wo")
    assert pipe.languages == [] and pipe.to_bytes() == before


def test_a_whole_treebank_trains_the_languages_own_phi_and_contextual_arcs(setup):
    decoder, wolof = setup
    support = wolof.select(range(60))
    shared = state(decoder)
    before = decoder.predict(support)
    settings = AdaptSettings(whole_treebank=50, epochs=3, arc_epochs=2)
    assert settings.mode(len(support)) == "phi" and AdaptSettings().mode(20) == "outer"
    adapt_language(decoder, support, "wo", settings)
    assert decoder.pos.adaptors["wo"].inner is not None and decoder.rel.adaptors["wo"].inner is not None
    assert decoder.language_arcs["wo"].context is not None and decoder.arcs.context is None
    assert decoder.pos.extra_inputs("wo") == decoder.width  # UPOS reads the words in context too
    assert all(torch.equal(shared[k], v) for k, v in state(decoder).items() if k in shared)  # shared parts frozen
    assert np.mean(decoder.predict(support, "wo")[0] == support.upos) > np.mean(before[0] == support.upos)
    assert all(np.array_equal(a, b) for a, b in zip(decoder.predict(support), before))  # zero-shot path unchanged
    with pytest.raises(ValueError, match="must be"):
        AdaptSettings(train="everything").mode(10)


def test_the_languages_word_order_moves_heads_towards_it(setup, ud_file):
    from spacy_concept_align.corpus import read_conllu

    decoder, wolof = setup
    support = wolof.select(range(40))
    forms = [w for s in read_conllu(ud_file("wo_wtb", "train"))[:40] for w in s.words]
    adapt_language(decoder, support, "wo", AdaptSettings(steps=5, arc_steps=5), forms)
    priors = decoder.priors["wo"]
    assert priors.weights.arcs > 0 and priors.arc_table.any() and priors.weights.heads > 0 and len(priors.heads)
    with_table = decoder.predict(support, "wo", forms)[1]
    priors.weights.arcs = priors.weights.heads = 0.0
    without = decoder.predict(support, "wo", forms)[1]
    assert np.mean(with_table == support.heads) > np.mean(without == support.heads)


def test_priors_from_the_support_words_decide_words_seen_there(setup, ud_file):
    from spacy_concept_align.corpus import read_conllu

    decoder, wolof = setup
    support = wolof.select(range(40))
    forms = [w for s in read_conllu(ud_file("wo_wtb", "train"))[:40] for w in s.words]
    adapt_language(decoder, support, "wo", AdaptSettings(steps=5, adapt_arcs=False, priors=False), forms)
    without = decoder.predict(support, "wo", forms)[0]
    adapt_language(decoder, support, "wo", AdaptSettings(steps=5, adapt_arcs=False), forms)
    assert "wo" in decoder.priors
    with_priors = decoder.predict(support, "wo", forms)[0]
    assert np.mean(with_priors == support.upos) > np.mean(without == support.upos)
    assert np.array_equal(decoder.predict(support, "wo")[0], without)  # no forms given: no priors used
    priors, agree = decoder.priors["wo"], {}
    for weight in (0.0, 5.0):  # a seen form's relations count as much as relation_form says
        priors.weights = replace(priors.weights, relation_form=weight)
        agree[weight] = np.mean(decoder.predict(support, "wo", forms)[2] == support.deprels)
    assert agree[5.0] > agree[0.0]
    with pytest.raises(ValueError, match="word forms"):
        adapt_language(decoder, support, "wo", AdaptSettings(steps=1), forms[:-1])


# ---------------------------------------------------------------------------------------------------------------
# Raw text

def test_unlabeled_text_moves_only_its_languages_prototypes(setup):
    from spacy_concept_align.adapt import UnlabeledSettings, adapt_unlabeled

    decoder, wolof = setup
    shared, zero_shot = state(decoder), decoder.predict(wolof)
    whole = adapt_unlabeled(decoder, wolof, "wo", UnlabeledSettings(confidence=0.0))
    expected = decoder.pos.adaptors["wo"].prototype_shift.clone()
    assert whole["pos_confident"] == 1.0 and whole["words"] == wolof.n_words  # no threshold: every word counts
    assert all(torch.equal(shared[k], v) for k, v in state(decoder).items() if k in shared)
    assert torch.count_nonzero(expected) > 0 and torch.count_nonzero(decoder.rel.adaptors["wo"].prototype_shift) > 0
    for got, want in zip(decoder.predict(wolof), zero_shot):  # the zero-shot path is untouched
        assert np.array_equal(got, want)
    # in chunks: the same class sums, so the same prototypes (every word assigned by the model as it was)
    for aligner in (decoder.pos, decoder.rel):
        del aligner.adaptors["wo"]
    adapt_unlabeled(decoder, [wolof.select(range(0, 30)), wolof.select(range(30, 60))], "wo",
                    UnlabeledSettings(confidence=0.0))
    torch.testing.assert_close(decoder.pos.adaptors["wo"].prototype_shift, expected)
    with pytest.raises(ValueError, match="at least one word"):
        adapt_unlabeled(decoder, [], "xx")
    assert "xx" not in decoder.languages


def test_unlabeled_text_gives_word_priors_from_confident_predictions(setup, ud_file):
    """A language without annotated priors gets priors counted on the words the model tags confidently (the same
    counts whether the text comes whole or in chunks); one with annotated priors keeps them."""
    from spacy_concept_align.adapt import UnlabeledSettings, adapt_unlabeled
    from spacy_concept_align.corpus import read_conllu
    from spacy_concept_align.features import FeatureSet
    from spacy_concept_align.labels import UPOS

    decoder, wolof = setup
    forms = [w for s in read_conllu(ud_file("wo_wtb", "train"))[:60] for w in s.words]
    text = FeatureSet(**{**vars(wolof), "forms": forms})
    upos, _, _, confidence = decoder.predict_with_confidence(text, "wo", forms)
    settings = UnlabeledSettings(prior_confidence=float(np.median(confidence[:, 0])), prior_min_words=text.n_words)
    report = adapt_unlabeled(decoder, text, "wo", settings)
    lexicon = decoder.priors["wo"].pos
    confident = confidence[:, 0] >= settings.prior_confidence
    assert sum(sum(c.values()) for c in lexicon.counts.values()) == confident.sum()  # confident words only
    assert all(lexicon.counts[f].get(int(t), 0) > 0 for f, t in zip(np.array(forms)[confident], upos[confident]))
    assert report["prior_types"] == len(lexicon) and decoder.priors["wo"].weights.form == 0.3
    for aligner in (decoder.pos, decoder.rel):  # back to the model as it was: the same counts, read in chunks
        del aligner.adaptors["wo"]
    del decoder.priors["wo"]
    adapt_unlabeled(decoder, [text.select(range(0, 25)), text.select(range(25, 60))], "wo", settings)
    assert decoder.priors["wo"].pos.counts == lexicon.counts
    del decoder.priors["wo"]
    assert "prior_types" not in adapt_unlabeled(decoder, text.select(range(59)), "wo", settings)  # too little text
    assert "wo" not in decoder.priors
    # a language with annotated priors keeps them
    support = wolof.select(range(20))
    adapt_language(decoder, support, "wo", AdaptSettings(steps=1, adapt_arcs=False), forms[: support.n_words])
    annotated = decoder.priors["wo"].pos.counts
    adapt_unlabeled(decoder, text, "wo", settings)
    assert decoder.priors["wo"].pos.counts == annotated and len(UPOS) == lexicon.n_classes


def test_adaptation_is_reproducible_and_leaves_the_callers_random_state(setup):
    """The new layers' initialisation and dropout follow AdaptSettings.seed, whatever the caller's random state."""
    decoder, wolof = setup
    settings = AdaptSettings(whole_treebank=50, epochs=1, arc_epochs=1)
    weights = []
    for caller_seed in (123, 456):
        torch.manual_seed(caller_seed)
        adapt_language(decoder, wolof.select(range(60)), "wo", settings)
        after = torch.rand(3)
        torch.manual_seed(caller_seed)
        assert torch.equal(after, torch.rand(3))  # the caller's random stream is untouched
        weights.append({k: v.clone() for k, v in decoder.state_dict().items() if ".wo." in k})
    assert weights[0].keys() == weights[1].keys() and len(weights[0]) > 0
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    adapt_language(decoder, wolof.select(range(60)), "wo", AdaptSettings(whole_treebank=50, epochs=1, arc_epochs=1,
                                                                         seed=1))
    assert any(not torch.equal(weights[0][k], v) for k, v in decoder.state_dict().items() if k in weights[0])
