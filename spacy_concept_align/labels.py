"""The universal inventories that make up the concept space: 17 UPOS tags and 37 dependency relations."""
from typing import Dict, Tuple

# fmt: off
UPOS: Tuple[str, ...] = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT", "SCONJ",
    "SYM", "VERB", "X",
)
DEPRELS: Tuple[str, ...] = (
    "acl", "advcl", "advmod", "amod", "appos", "aux", "case", "cc", "ccomp", "clf", "compound", "conj", "cop",
    "csubj", "dep", "det", "discourse", "dislocated", "expl", "fixed", "flat", "goeswith", "iobj", "list", "mark",
    "nmod", "nsubj", "nummod", "obj", "obl", "orphan", "parataxis", "punct", "reparandum", "root", "vocative",
    "xcomp",
)
# fmt: on
assert len(UPOS) == 17 and len(DEPRELS) == 37

UPOS_ID: Dict[str, int] = {tag: i for i, tag in enumerate(UPOS)}
DEPREL_ID: Dict[str, int] = {rel: i for i, rel in enumerate(DEPRELS)}
ROOT_ID: int = DEPREL_ID["root"]

#: spaCy's name for the root relation. `spacy convert` maps UD's "root" to "ROOT", spaCy's parser and displaCy use
#: it, so Docs carry "ROOT"; every other relation keeps its lower-case UD name. CoNLL-U output writes "root".
SPACY_ROOT = "ROOT"


def universal_deprel(deprel: str) -> str:
    """Strip a language-specific subtype: "nsubj:pass" -> "nsubj", "ROOT" -> "root"."""
    return deprel.split(":", 1)[0].lower()


def to_spacy_dep(deprel: str) -> str:
    """A universal relation as spaCy stores it (only the root is renamed)."""
    rel = universal_deprel(deprel)
    return SPACY_ROOT if rel == "root" else rel
