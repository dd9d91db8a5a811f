"""Meta-training: episodes, the support-set loss, and a miniature run on real UD files (tiny encoder)."""
import numpy as np
import pytest
import torch
from confection import Config

from spacy_concept_align.corpus import find_treebank
from spacy_concept_align.encoders import FrozenEncoder
from spacy_concept_align.feature_cache import extract_features
from spacy_concept_align.architecture import concept_decoder
from spacy_concept_align.decoder import ConceptDecoder, concept_loss, tensor
from spacy_concept_align.labels import DEPRELS, UPOS
from spacy_concept_align.lexicon import arc_context
from spacy_concept_align.training import EpisodeSampler, EpisodeSettings, episode_scores, meta_train, one_cycle
from spacy_concept_align.corpus import choose_file


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def pools(tiny_bert_dir):
    """40 sentences each of three languages from the tiny BERT, computed once per module (episodes only select)."""
    encoder = FrozenEncoder(str(tiny_bert_dir), 2)
    return {lang: extract_features(find_treebank(lang, "dev").path, encoder, max_sentences=40, use_cache=False,
                                   progress=False)
            for lang in ("en", "de", "fr")}


def test_pool_file_prefers_train_then_dev_then_test():
    assert choose_file("wo").split == "train"
    assert choose_file("en").split == "dev"  # this copy of UD has no en_ewt train file
    assert choose_file("ar").split == "test"  # ar_padt is missing: the PUD test set remains


@pytest.mark.parametrize("disjoint", [True, False])
def test_episodes_are_monolingual_and_sized(pools, disjoint):
    sampler = EpisodeSampler(pools, EpisodeSettings(n_support=5, n_query=10, disjoint_queries=disjoint), seed=1)
    overlaps = 0
    for lang in pools:
        for _ in range(20):
            support, query = sampler.sample(lang)
            assert (len(support), len(query)) == (5, 10)
            assert support.lang == query.lang == lang
            support_rows = {tuple(np.asarray(support.words[a], np.float32).round(4)) for a in support.offsets[:-1]}
            query_rows = {tuple(np.asarray(query.words[a], np.float32).round(4)) for a in query.offsets[:-1]}
            overlaps += len(support_rows & query_rows)
    if disjoint:
        assert overlaps == 0
    else:
        assert overlaps > 0  # the original's sampler lets queries repeat support sentences


def test_support_loss_is_added_only_when_asked(pools):
    layer = concept_decoder(dict(width=32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8, arc_hidden=16,
                                 dropout=0.0))
    layer.layers[0].shims[0]._model.set_prototypes(pools["en"])
    support, query = EpisodeSampler(pools, EpisodeSettings(5, 10)).sample("de")
    scores, _ = episode_scores(layer, support, query, 0.0, 5.0)
    assert set(scores) == {"pos", "rel", "arc"}
    without, _ = concept_loss(scores)
    scores, backprop = episode_scores(layer, support, query, 1.0, 5.0)
    assert set(scores) == {"pos", "rel", "arc", "pos_support", "rel_support"}
    loss, d_scores = concept_loss(scores)
    assert np.isfinite(loss) and loss > without
    backprop(d_scores)  # gradients reach the decoder's parameters
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.layers[0].shims[0]._model.pos.phi.parameters())


def test_one_cycle_schedule_matches_torch():
    total, peak = 40, 1e-3
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW(params, lr=peak)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total, pct_start=0.05)
    expected = []
    for _ in range(total):
        expected.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["betas"][0]))
        optimizer.step(), schedule.step()
    rates = one_cycle(peak / 25, peak, peak / 25 / 1e4, total)
    betas = one_cycle(0.95, 0.85, 0.95, total)
    assert np.allclose([(next(rates), next(betas)) for _ in range(total)], expected, rtol=1e-6, atol=1e-12)


def mini_config(tiny_dir, **training) -> Config:
    cfg = Config().from_disk("configs/default.cfg")
    cfg["languages"].update(source=["en"], train=["en", "de", "fr"], validation=["af"], max_train_sentences=40,
                            max_validation_sentences=20)
    cfg["model"].update(pos_hidden=32, pos_dim=8, rel_hidden=32, rel_dim=8, arc_hidden=32)
    cfg["model"]["encoder"].update(name=str(tiny_dir), layer=2)
    cfg["training"].update(epochs=3, episodes_per_language=8, n_support=4, n_query=8, **training)
    return cfg


def test_meta_train_learns_and_records_how(tiny_bert_dir):
    nlp, report = meta_train(mini_config(tiny_bert_dir), progress=False)
    history = report["history"]
    assert len(history) == 3 and report["steps"] == 3 * 3 * 8
    assert history[-1]["loss"] < history[0]["loss"]
    assert report["best_validation"] == max(h["score"] for h in history)
    pipe = nlp.get_pipe("concept_align")
    assert pipe.cfg["meta"]["train"] == ["en", "de", "fr"] and pipe.cfg["meta"]["validation"] == ["af"]
    doc = nlp("The cat sat on the mat .")
    assert all(t.pos_ for t in doc) and sum(t.dep_ == "ROOT" for t in doc) == 1
    # how relations go with tags and direction, counted on the training pools (used when its weight is > 0)
    table = pipe.decoder.relation_table
    assert table[UPOS.index("DET"), UPOS.index("NOUN"), 1, DEPRELS.index("det")] > 10  # DET before its NOUN: det
    punct = table[UPOS.index("PUNCT")]
    assert punct[:, :, DEPRELS.index("punct")].sum() > 0.99 * punct.sum() > 0  # (one treebank slip allowed)
    # each meta-training language's word order, kept for languages named but never seen
    assert pipe.decoder.source_arc_tables.shape[0] == 3 == pipe.decoder.source_typology.shape[0]
    assert pipe.decoder.word_order_prior("wo") is not None and pipe.decoder.word_order_prior("qq") is None
    # ... and the tag parser, trained on their trees
    assert pipe.decoder.arcs.tags is not None and bool(pipe.decoder.arcs.tags.biaffine.detach().any())


def test_relation_table_moves_zero_shot_relations_only_when_weighted(pools):
    torch.manual_seed(0)
    decoder = ConceptDecoder(32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8, arc_hidden=16, dropout=0.0,
                             consistent_labels=False)  # the table alone, not the joint decision, is under test
    decoder.set_prototypes(pools["en"])
    test = pools["de"]
    before = decoder.predict(test)
    # a table that names one relation for every (dependent UPOS, head UPOS or root, direction): one the model can
    # predict (it has a prototype) and not root
    allowed = [r for r in np.flatnonzero(decoder.rel.valid.numpy()) if DEPRELS[r] != "root"]
    choice = np.random.default_rng(0).choice(allowed, size=(len(UPOS), len(UPOS) + 1, 2))
    table = np.zeros((len(UPOS), len(UPOS) + 1, 2, len(DEPRELS)), np.float32)
    index = np.indices(choice.shape)
    table[index[0], index[1], index[2], choice] = 100
    decoder.relation_table.copy_(torch.from_numpy(table))
    assert all(np.array_equal(a, b) for a, b in zip(decoder.predict(test), before))  # weight 0: unused
    decoder.relation_table_weight = 1000.0  # now the table decides every relation but the root's
    upos, heads, deprels = decoder.predict(test)
    head_upos, right = arc_context(upos, heads, test.offsets, len(UPOS))
    attached = heads > 0
    assert attached.sum() == test.n_words - len(test)  # one root per sentence
    assert np.array_equal(deprels[attached], choice[upos, head_upos, right][attached])
    assert (deprels[~attached] == DEPRELS.index("root")).all()


def test_a_named_languages_support_arc_table_starts_from_its_sources(pools):
    from spacy_concept_align.adapt import AdaptSettings, adapt_language

    torch.manual_seed(0)
    decoder = ConceptDecoder(32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8, arc_hidden=16, dropout=0.0)
    decoder.set_prototypes(pools["en"])
    decoder.set_sources({lang: pools[lang] for lang in ("en", "de")})
    support = pools["fr"].select(range(5))
    forms = [f"w{i}" for i in range(support.n_words)]
    tables = {}
    for lang, sentences in (("es", 0.0), ("es", 5.0), ("qq", 5.0)):
        adapt_language(decoder, support, lang, AdaptSettings(source_arc_sentences=sentences, steps=1), forms)
        tables[lang, sentences] = decoder.priors[lang].arc_table
    sources = decoder.source_tables("es", 5.0)[0]
    assert sources.any() and np.allclose(tables["es", 5.0], tables["es", 0.0] + sources)
    assert np.array_equal(tables["qq", 5.0], tables["es", 0.0])  # no typology: the support's counts alone


def test_the_nearest_sources_taggers_tag_a_named_language_only(pools):
    torch.manual_seed(0)
    # (the tag parser's heads and relations off: with the sources, a language not named reads their mean typology)
    decoder = ConceptDecoder(32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8, arc_hidden=16, dropout=0.0,
                             consistent_labels=False, unnamed_tag_parser_weight=0.0, tag_relation_weight=0.0)
    decoder.set_prototypes(pools["en"])
    test = pools["fr"]
    before_named, before_unnamed = decoder.predict_with_confidence(test, "es"), decoder.predict_with_confidence(test)
    torch.manual_seed(1)
    decoder.set_sources({lang: pools[lang] for lang in ("en", "de")})
    after = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(3))  # fitting them leaves meta-training's random state alone
    assert decoder.source_taggers.shape == (2, len(UPOS), 33)
    for row, lang in enumerate(("en", "de")):  # each tagger learned its own language's tags
        weights = decoder.source_taggers[row]
        upos = (tensor(pools[lang].words) @ weights[:, :-1].T + weights[:, -1]).argmax(-1).numpy()
        assert (upos == pools[lang].upos).mean() > np.bincount(pools[lang].upos).max() / pools[lang].n_words + 0.1
    scores = decoder.source_tag_scores(test.words, "es")
    assert scores.shape == (test.n_words, len(UPOS))
    assert decoder.source_tag_scores(test.words, None) is None and decoder.source_tag_scores(test.words, "qq") is None
    decoder.source_tagger_weight = 0.0
    heads = decoder.predict(test, "es")[1]
    decoder.source_tagger_weight = 50.0  # the untrained aligner gives way to the taggers
    upos, with_taggers, _, confidence = decoder.predict_with_confidence(test, "es")
    assert (upos == decoder.source_tag_scores(test.words, "es").argmax(-1)).mean() > 0.95
    assert not np.array_equal(upos, before_named[0])
    assert np.array_equal(with_taggers, heads)  # the heads read the aligner's tags, as validated
    # they are saved with the decoder; weights saved before them load without them
    from safetensors.torch import load as load_tensors, save as save_tensors
    from spacy_concept_align.weights import decoder_state, load_decoder_state

    copy = ConceptDecoder(32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8, arc_hidden=16, dropout=0.0,
                          consistent_labels=False, source_tagger_weight=50.0)
    load_decoder_state(copy, *decoder_state(decoder))
    assert np.allclose(copy.source_tag_scores(test.words, "es"), decoder.source_tag_scores(test.words, "es"))
    structure, weights, priors = decoder_state(decoder)
    older = {k: v for k, v in load_tensors(weights).items() if k != "source_taggers"}
    load_decoder_state(copy, structure, save_tensors(older), priors)
    assert len(copy.source_typology) == 2 and copy.source_tag_scores(test.words, "es") is None
    assert all(np.array_equal(a, b) for a, b in zip(decoder.predict_with_confidence(test), before_unnamed))
    decoder.source_tagger_weight = 0.0
    assert decoder.source_tag_scores(test.words, "es") is None


def test_an_adapted_language_keeps_its_sources_taggers_only_if_fitted_beside_them(pools):
    from spacy_concept_align.adapt import AdaptSettings, adapt_language

    torch.manual_seed(0)
    decoder = ConceptDecoder(32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8, arc_hidden=16, dropout=0.0,
                             consistent_labels=False)
    decoder.set_prototypes(pools["en"])
    decoder.set_sources({lang: pools[lang] for lang in ("en", "de")})
    support, test = pools["fr"].select(range(5)), pools["fr"].select(range(5, 40))
    forms = [f"w{i}" for i in range(support.n_words)]
    settings = dict(steps=5, arc_steps=1, source_tagger_words=0)
    for lang, weight in (("es", 0.3), ("qq", 0.0)):  # "qq": no typology, no sources
        adapt_language(decoder, support, lang, AdaptSettings(**settings), forms)
        assert decoder.priors[lang].weights.source_tags == weight
    # fewer words than `source_tagger_words` hear them less; as many or more, not at all
    for words, weight in ((2 * support.n_words, 0.15), (support.n_words, 0.0)):
        adapt_language(decoder, support, "es", AdaptSettings(**{**settings, "source_tagger_words": words}), forms)
        assert np.isclose(decoder.priors["es"].weights.source_tags, weight)
    # taggers that outweigh the language's own layer decide its tags after adapting too (no forms: no word priors)
    adapt_language(decoder, support, "es", AdaptSettings(**{**settings, "source_tagger_weight": 50.0}), forms)
    upos = decoder.predict(test, "es")[0]
    assert (upos == decoder.source_tag_scores(test.words, "es").argmax(-1)).mean() > 0.9
    adapt_language(decoder, support, "es", AdaptSettings(**{**settings, "source_tagger_weight": 0.0}), forms)
    assert decoder.priors["es"].weights.source_tags == 0.0


def test_word_order_of_the_nearest_sources_moves_heads_of_a_named_language_only(pools):
    torch.manual_seed(0)
    # (the tag parser's heads and relations off for a language not named: its typology would tell "es" from no language)
    decoder = ConceptDecoder(32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8, arc_hidden=16, dropout=0.0,
                             unnamed_tag_parser_weight=0.0, tag_relation_weight=0.0)
    decoder.set_prototypes(pools["en"])
    test = pools["fr"]
    unnamed = decoder.predict(test)
    assert all(np.array_equal(a, b) for a, b in zip(decoder.predict(test, "es"), unnamed))  # no tables yet
    decoder.set_sources({lang: pools[lang] for lang in ("en", "de")})
    prior = decoder.word_order_prior("es")
    assert prior is not None and prior.weights.arcs == decoder.word_order_weight > 0
    assert prior.weights.table == decoder.word_order_relation_weight > 0 and prior.table.any()  # and their relations
    assert len(decoder.source_relation_tables) == 2
    assert decoder.word_order_prior("qq") is None  # no typology: nothing to go by
    decoder.word_order_weight = 50.0  # the untrained scorer's heads give way to the sources' word order
    heads = decoder.predict(test, "es")[1]
    assert not np.array_equal(heads, unnamed[1])
    assert np.array_equal(decoder.predict(test)[1], unnamed[1])  # not named: the zero-shot path as it was
    # the word order follows a saved decoder, and one saved without it loads with none
    from spacy_concept_align.weights import decoder_state, load_decoder_state

    copy = ConceptDecoder(32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8, arc_hidden=16, dropout=0.0,
                          word_order_weight=50.0)
    load_decoder_state(copy, *decoder_state(decoder))
    assert torch.equal(copy.source_arc_tables, decoder.source_arc_tables)
    assert np.array_equal(copy.predict(test, "es")[1], heads)
    structure, weights, priors = decoder_state(ConceptDecoder(32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8,
                                                              arc_hidden=16))
    load_decoder_state(copy, structure, weights, priors)
    assert len(copy.source_arc_tables) == len(copy.source_relation_tables) == 0 and copy.word_order_prior("es") is None
    from safetensors.torch import load as load_tensors, save as save_tensors

    structure, weights, priors = decoder_state(decoder)
    older = {k: v for k, v in load_tensors(weights).items() if not k.startswith("source_")}  # saved before them
    load_decoder_state(copy, structure, save_tensors(older), priors)
    assert len(copy.source_typology) == 0 and copy.word_order_prior("es") is None
    # the tag parser, trained on the sources' trees, goes with the decoder; weights saved before it load with none
    decoder.fit_tag_parser({lang: pools[lang] for lang in ("en", "de")})
    by_tags = decoder.tag_arc_prior(test.upos, test.offsets, "es", 1.0)
    assert len(by_tags) == len(test) and decoder.word_order_prior("es").weights.tags == decoder.tag_parser_weight
    load_decoder_state(copy, *decoder_state(decoder))
    assert all(np.array_equal(a, b) for a, b in zip(copy.tag_arc_prior(test.upos, test.offsets, "es", 1.0), by_tags))
    # ... and labels: a named language's relations hear what it says of the tags and the predicted heads
    decoder.tag_relation_weight = 0.3
    assert decoder.word_order_prior("es").weights.tag_relations == 0.3
    labels = decoder.tag_relation_prior(test.upos, test.heads, test.offsets, "es", 1.0)
    assert labels.shape == (test.n_words, len(DEPRELS)) and np.array_equal(
        copy.tag_relation_prior(test.upos, test.heads, test.offsets, "es", 1.0), labels)
    decoder.tag_relation_weight = 0.0
    without = decoder.predict(test, "es")[2]
    decoder.tag_relation_weight = 50.0
    assert not np.array_equal(decoder.predict(test, "es")[2], without)
    structure, weights, priors = decoder_state(decoder)
    older = {k: v for k, v in load_tensors(weights).items() if not k.startswith("arcs.tags.")}
    load_decoder_state(copy, structure, save_tensors(older), priors)
    assert copy.arcs.tags is None and copy.tag_arc_prior(test.upos, test.offsets, "es", 1.0) is None


def test_original_method_is_reachable(tiny_bert_dir):
    from spacy_concept_align.aligner import TokenDropout

    cfg = mini_config(tiny_bert_dir, support_loss_weight=0.0, disjoint_queries=False)
    cfg["model"]["token_dropout"] = True
    nlp, report = meta_train(cfg, progress=False)
    decoder = nlp.get_pipe("concept_align").decoder
    assert isinstance(decoder.pos.phi.dropout, TokenDropout) and len(report["history"]) == 3
