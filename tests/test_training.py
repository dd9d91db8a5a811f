"""Meta-training: episodes, the support-set loss, and a miniature run on real UD files (tiny encoder)."""
import numpy as np
import pytest
import torch
from confection import Config

from spacy_concept_align.corpus import find_treebank
from spacy_concept_align.encoders import FrozenEncoder
from spacy_concept_align.features import extract_features
from spacy_concept_align.model import ConceptParser
from spacy_concept_align.training import EpisodeSampler, EpisodeSettings, episode_loss, meta_train, pool_file


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def pools(tiny_bert_dir):
    encoder = FrozenEncoder(str(tiny_bert_dir), 2)
    return {lang: extract_features(find_treebank(lang, "dev").path, encoder, max_sentences=40, progress=False)
            for lang in ("en", "de", "fr")}


def test_pool_file_prefers_train_then_dev_then_test():
    assert pool_file("wo").split == "train"
    assert pool_file("en").split == "dev"  # this copy of UD has no en_ewt train file
    assert pool_file("ar").split == "test"  # ar_padt is missing: the PUD test set remains


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
    net = ConceptParser(32, pos_hidden=16, pos_dim=8, rel_hidden=16, rel_dim=8, arc_hidden=16, dropout=0.0)
    net.set_prototypes(pools["en"])
    support, query = EpisodeSampler(pools, EpisodeSettings(5, 10)).sample("de")
    assert set(episode_loss(net, support, query, 0.0, 5.0)) == {"pos", "rel", "arc"}
    losses = episode_loss(net, support, query, 1.0, 5.0)
    assert set(losses) == {"pos", "rel", "arc", "pos_support", "rel_support"}
    assert all(torch.isfinite(v) for v in losses.values())


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


def test_original_method_is_reachable(tiny_bert_dir):
    from spacy_concept_align.aligner import TokenDropout

    cfg = mini_config(tiny_bert_dir, support_loss_weight=0.0, disjoint_queries=False)
    cfg["model"]["token_dropout"] = True
    nlp, report = meta_train(cfg, progress=False)
    net = nlp.get_pipe("concept_align").net
    assert isinstance(net.pos.phi.dropout, TokenDropout) and len(report["history"]) == 3
