"""Which UPOS a universal relation allows: the UD validator's level-3 rules (rel-upos-*, upos-rel-punct).

Used twice: the evaluation counts the predicted words that break them, and prediction can decode UPOS and
relation jointly so that no word breaks them (`ConceptDecoder.predict(..., consistent=True)`).
The validator's exceptions for words with a `fixed` dependent are not modelled: the rules here are its strict form.
"""
from typing import Dict, FrozenSet

import numpy as np

from .labels import DEPREL_ID, DEPRELS, UPOS, UPOS_ID

_ALL = frozenset(UPOS)
#: relation -> the UPOS it may carry
ALLOWED: Dict[str, FrozenSet[str]] = {
    "det": frozenset({"DET", "PRON"}),
    "nummod": frozenset({"NUM", "NOUN", "SYM"}),
    "advmod": frozenset({"ADV", "ADJ", "CCONJ", "DET", "PART", "SYM"}),
    "expl": frozenset({"PRON", "DET", "PART"}),
    "aux": frozenset({"AUX"}),
    "cop": frozenset({"AUX", "PRON", "DET", "SYM"}),
    "case": _ALL - {"PROPN", "ADJ", "PRON", "DET", "NUM", "AUX"},
    "mark": _ALL - {"NOUN", "PROPN", "ADJ", "PRON", "DET", "NUM", "AUX", "INTJ"},
    "cc": _ALL - {"NOUN", "PROPN", "ADJ", "PRON", "DET", "NUM", "VERB", "AUX", "INTJ"},
    "compound": _ALL - {"AUX"},
    "punct": frozenset({"PUNCT"}),
}
#: UPOS -> the only relations it may take
ONLY: Dict[str, FrozenSet[str]] = {"PUNCT": frozenset({"punct", "root"})}


def compatibility() -> np.ndarray:
    """(17 UPOS x 37 relations) booleans: True where UD allows the pair."""
    table = np.ones((len(UPOS), len(DEPRELS)), dtype=bool)
    for rel, tags in ALLOWED.items():
        table[:, DEPREL_ID[rel]] = [tag in tags for tag in UPOS]
    for tag, rels in ONLY.items():
        table[UPOS_ID[tag]] = [rel in rels for rel in DEPRELS]
    return table


COMPATIBLE = compatibility()


def violations(upos: np.ndarray, deprels: np.ndarray) -> int:
    """How many words carry a (UPOS, relation) pair the rules forbid (unknown labels, < 0, are not counted)."""
    upos, deprels = np.asarray(upos), np.asarray(deprels)
    known = (upos >= 0) & (deprels >= 0)
    return int((~COMPATIBLE[upos[known], deprels[known]]).sum())


def joint_decode(pos_scores: np.ndarray, rel_scores: np.ndarray):
    """The best compatible (UPOS, relation) pair per word from two tables of log-scores."""
    joint = pos_scores[:, :, None] + rel_scores[:, None, :]
    joint = np.where(COMPATIBLE[None], joint, -np.inf)
    best = joint.reshape(len(joint), -1).argmax(-1)
    return best // len(DEPRELS), best % len(DEPRELS)
