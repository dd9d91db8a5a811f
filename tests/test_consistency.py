"""UPOS-relation consistency: the UD validator's rules, counted in the evaluation and enforced by joint decoding."""
import numpy as np

from spacy_concept_align.consistency import COMPATIBLE, joint_decode, violations
from spacy_concept_align.corpus import find_treebank, read_conllu
from spacy_concept_align.labels import DEPREL_ID, DEPRELS, UPOS, UPOS_ID


def _ids(tags, rels):
    return np.array([UPOS_ID[t] for t in tags]), np.array([DEPREL_ID[r] for r in rels])


def test_the_rules_ud_states():
    assert violations(*_ids(["PUNCT", "VERB", "DET", "AUX", "NOUN"], ["punct", "root", "det", "cop", "nsubj"])) == 0
    assert violations(*_ids(["NOUN", "PUNCT", "VERB", "NOUN", "PRON"], ["punct", "nsubj", "aux", "det", "case"])) == 5
    assert COMPATIBLE.shape == (len(UPOS), len(DEPRELS)) and COMPATIBLE.sum(1).min() >= 2


def test_gold_ud_breaks_the_rules_almost_never(ud_file):
    sentences = read_conllu(find_treebank("en_ewt", "test").path) + read_conllu(find_treebank("wo", "test").path)
    upos = np.array([UPOS_ID[t] for s in sentences for t in s.upos])
    rels = np.array([DEPREL_ID[r] for s in sentences for r in s.deprels])
    assert violations(upos, rels) / len(upos) < 0.002


def test_joint_decoding_picks_the_best_allowed_pair():
    rng = np.random.default_rng(0)
    pos = np.log(rng.dirichlet(np.ones(len(UPOS)), size=200))
    rel = np.log(rng.dirichlet(np.ones(len(DEPRELS)), size=200))
    upos, rels = joint_decode(pos, rel)
    assert violations(upos, rels) == 0
    independent = (pos.argmax(1), rel.argmax(1))
    assert violations(*independent) > 0  # random scores do break the rules: the decoder had work to do
    joint = pos[np.arange(200), upos] + rel[np.arange(200), rels]
    best_allowed = np.where(COMPATIBLE[None], pos[:, :, None] + rel[:, None, :], -np.inf).max((1, 2))
    np.testing.assert_allclose(joint, best_allowed)
    keep = COMPATIBLE[independent[0], independent[1]]
    assert (upos[keep] == independent[0][keep]).all() and (rels[keep] == independent[1][keep]).all()
