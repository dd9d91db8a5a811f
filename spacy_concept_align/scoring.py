"""The one scorer: CoNLL 2018 accuracies (gold tokens, every word counts, relations without subtypes).

`conll18_scores` scores label arrays (the evaluation's, `score`'s and the benchmark's); `score_concepts`, the
component's registered scorer, reads the same arrays off spaCy Examples and reports them under spaCy's Scorer keys.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Sequence

import numpy as np
from spacy.training import Example
from spacy.util import registry

from .consistency import violations
from .corpus import CoNLLUError, UDSentence, read_conllu
from .labels import DEPREL_ID, DEPRELS, UPOS_ID, universal_deprel


@dataclass
class Scores:
    upos: float
    uas: float
    las: float
    label_acc: float
    words: int
    inconsistent: float = 0.0  # % of words whose (UPOS, relation) pair UD forbids (consistency.ALLOWED)


@dataclass
class Labels:
    """UPOS ids, heads (0 = root, k = k-th word of the sentence) and relation ids of a run of words (-1: none)."""

    upos: np.ndarray
    heads: np.ndarray
    deprels: np.ndarray

    @property
    def arrays(self) -> tuple:
        return self.upos, self.heads, self.deprels

    @classmethod
    def of_sentences(cls, sentences: Sequence[UDSentence]) -> "Labels":
        return cls(np.array([UPOS_ID[t] for s in sentences for t in s.upos], np.int64),
                   np.array([h for s in sentences for h in s.heads], np.int64),
                   np.array([DEPREL_ID[r] for s in sentences for r in s.deprels], np.int64))

    @classmethod
    def of_docs(cls, docs: Iterable) -> "Labels":
        """What a pipeline set on docs, each doc one sentence (heads relative to the doc)."""
        upos, heads, deprels = [], [], []
        for doc in docs:
            for token in doc:
                upos.append(UPOS_ID.get(token.pos_, UPOS_ID["X"]))
                heads.append(0 if token.head.i == token.i else token.head.i + 1)
                deprels.append(DEPREL_ID.get(universal_deprel(token.dep_), DEPREL_ID["dep"]))
        return cls(np.array(upos, np.int64), np.array(heads, np.int64), np.array(deprels, np.int64))


def conll18_scores(gold, upos: np.ndarray, heads: np.ndarray, deprels: np.ndarray) -> Scores:
    """CoNLL 2018 accuracies of predicted arrays against `gold` (anything with upos, heads, deprels arrays)."""
    n = len(gold.upos)
    if not n:
        return Scores(0.0, 0.0, 0.0, 0.0, 0)
    head_ok, label_ok = heads == gold.heads, deprels == gold.deprels
    return Scores(100 * float(np.mean(upos == gold.upos)), 100 * float(np.mean(head_ok)),
                  100 * float(np.mean(head_ok & label_ok)), 100 * float(np.mean(label_ok)), n,
                  100 * violations(upos, deprels) / n)


def score_files(gold: Path, predicted: Path) -> Scores:
    """CoNLL 2018 UPOS / UAS / LAS of a predicted CoNLL-U file against a gold one with the same words."""
    gold_sentences, predicted_sentences = read_conllu(gold), read_conllu(predicted)
    if [s.words for s in gold_sentences] != [s.words for s in predicted_sentences]:
        first = next((i for i, (g, p) in enumerate(zip(gold_sentences, predicted_sentences)) if g.words != p.words),
                     min(len(gold_sentences), len(predicted_sentences)))
        line = predicted_sentences[first].line if first < len(predicted_sentences) else 0
        raise CoNLLUError(predicted, line, f"sentence {first + 1} does not have the gold file's words")
    return conll18_scores(Labels.of_sentences(gold_sentences), *Labels.of_sentences(predicted_sentences).arrays)


def _example_labels(examples: Iterable[Example]):
    """Gold and predicted Labels over the gold words (heads as doc indices + 1; a word the predicted tokens do not
    match one to one counts as wrong), and the number of gold words."""
    gold, predicted, n_gold = [], [], 0
    for eg in examples:
        doc, n_gold = eg.predicted, n_gold + len(eg.reference)
        pos = eg.get_aligned("POS", as_string=True)
        heads, deps = eg.get_aligned_parse(projectivize=False)
        for token, g_pos, g_head, g_dep in zip(doc, pos, heads, deps):
            if g_pos is None and g_head is None:
                continue
            gold.append((UPOS_ID.get(g_pos or "", -1), -1 if g_head is None else g_head,
                         DEPREL_ID.get(universal_deprel(g_dep or ""), -1)))
            predicted.append((UPOS_ID.get(token.pos_, -2), token.head.i,
                              DEPREL_ID.get(universal_deprel(token.dep_), -2)))
    as_labels = lambda rows: Labels(*np.array(rows, np.int64).reshape(-1, 3).T)  # noqa: E731
    return as_labels(gold), as_labels(predicted), n_gold


def score_concepts(examples: Iterable[Example], **kwargs) -> Dict[str, object]:
    """pos_acc, dep_uas, dep_las and dep_las_per_type (spaCy's Scorer keys, fractions) from conll18_scores."""
    gold, predicted, n_gold = _example_labels(examples)
    if not n_gold:
        return {"pos_acc": None, "dep_uas": None, "dep_las": None, "dep_las_per_type": None}
    scores = conll18_scores(gold, *predicted.arrays)
    share = len(gold.upos) / n_gold  # gold words without a predicted counterpart count as wrong
    per_type = {}
    correct = (gold.heads == predicted.heads) & (gold.deprels == predicted.deprels)
    for rel in sorted(set(gold.deprels[gold.deprels >= 0]) | set(predicted.deprels[predicted.deprels >= 0])):
        n_pred, n_true = int((predicted.deprels == rel).sum()), int((gold.deprels == rel).sum())
        hits = int((correct & (gold.deprels == rel)).sum())
        p, r = hits / n_pred if n_pred else 0.0, hits / n_true if n_true else 0.0
        per_type[DEPRELS[rel]] = {"p": p, "r": r, "f": 2 * p * r / (p + r) if p + r else 0.0}
    return {"pos_acc": scores.upos / 100 * share, "dep_uas": scores.uas / 100 * share,
            "dep_las": scores.las / 100 * share, "dep_las_per_type": per_type}


@registry.scorers("spacy-concept-align.scorer.v1")
def make_concept_scorer() -> Callable:
    """The component's scorer (a module-level function, so pipelines pickle for nlp.pipe(n_process=...))."""
    return score_concepts
