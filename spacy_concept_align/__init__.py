"""spacy-concept-align: zero- and few-shot UD tagging and parsing for any language, as a spaCy component.

Importing the package registers the `concept_align` factory, its architectures, corpus reader and scorer (the
same names are also exposed as entry points, so configs resolve without an explicit import).
"""
from . import architecture, component, corpus, encoders  # noqa: F401  (registration side effects)
from .component import ConceptTaggerParser
from .corpus import LANG_ATTR, read_conllu, read_docs, write_conllu

__version__ = "0.1.0"
__all__ = ["ConceptTaggerParser", "LANG_ATTR", "read_conllu", "read_docs", "write_conllu", "__version__"]
