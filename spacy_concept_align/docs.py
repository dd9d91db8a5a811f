"""Between Docs and the model: each sentence's words (blank tokens left out, long stretches cut into pieces),
grouped by language, gold labels read from Examples, and what blank tokens get."""
from itertools import islice
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from spacy.attrs import DEP, HEAD
from spacy.tokens import Doc
from spacy.training import Example

from .chars import is_blank, is_symbol
from .corpus import doc_sentences, unannotated
from .features import Sentences
from .labels import DEPREL_ID, DEPRELS, UPOS, UPOS_ID, to_spacy_dep, universal_deprel

#: Longer stretches without a sentence boundary are parsed in pieces of this many words, each its own tree: hardly
#: any real sentence is this long, and arc scores and tree decoding grow with the square of the length.
LONGEST_TREE = 300

#: Per doc, what the pipe predicts: UPOS ids, heads (doc token indices), relation ids, confidences.
Annotation = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
#: A sentence: (index of its doc in the batch, token indices of its words).
SentenceRef = Tuple[int, np.ndarray]


def sentence_words(doc: Doc, longest: int = LONGEST_TREE) -> List[np.ndarray]:
    """Token indices of each sentence's words (blank tokens left out), at most `longest` per tree."""
    result = []
    for sent in doc_sentences(doc):
        words = np.array([t.i for t in sent if not is_blank(t.text)], dtype=np.int64)
        result += [words[start : start + longest] for start in range(0, len(words), longest)]
    return result


def by_language(docs: Sequence[Doc], language_of: Callable[[Doc], Optional[str]],
                longest: int = LONGEST_TREE) -> Dict[Optional[str], List[SentenceRef]]:
    """The docs' sentences, grouped by the language each doc is read as (one model call per language)."""
    groups: Dict[Optional[str], List[SentenceRef]] = {}
    for i, doc in enumerate(docs):
        sentences = sentence_words(doc, longest)
        if sentences:
            groups.setdefault(language_of(doc), []).extend((i, words) for words in sentences)
    return groups


def scatter(results: List[Annotation], sentences: List[SentenceRef], texts: List[List[str]],
            predicted: Tuple[np.ndarray, ...]) -> None:
    """Write one model call's flat predictions (UPOS, heads 0 = root / k = k-th word, relations, n x 2 confidence)
    into the per-doc annotations; pictographs and emoji are SYM whatever the model says."""
    upos, heads, deprels, confidence = predicted
    start = 0
    for (i, words), text in zip(sentences, texts):
        end = start + len(words)
        doc_upos, doc_heads, doc_rels, doc_confidence = results[i]
        doc_confidence[words] = confidence[start:end].prod(1)
        doc_upos[words] = np.where([is_symbol(w) for w in text], UPOS_ID["SYM"], upos[start:end])
        doc_rels[words] = deprels[start:end]
        sent_heads = heads[start:end]  # a spaCy root is its own head
        doc_heads[words] = np.where(sent_heads > 0, words[sent_heads - 1], words)
        start = end


def write_annotation(doc: Doc, annotation: Annotation, overwrite: bool = True) -> None:
    """Set POS, heads and relations (spaCy's "ROOT" for roots) and doc._.concept_confidences on one doc; without
    `overwrite`, annotation the doc already has is kept."""
    if not len(doc):
        return
    upos, heads, deprels, confidence = annotation
    doc._.concept_confidences = [None if np.isnan(c) else round(float(c), 4) for c in confidence]
    keep_pos = not overwrite and doc.has_annotation("POS")
    for token, tag in zip(doc, upos):
        if not (keep_pos and token.pos_):
            token.pos_ = UPOS[tag] if tag >= 0 else "SPACE"
    if not overwrite and doc.has_annotation("DEP"):
        return
    array = np.zeros((len(doc), 2), dtype="uint64")
    array[:, 0] = (heads - np.arange(len(doc))).astype("int64").astype("uint64")
    array[:, 1] = [doc.vocab.strings.add(to_spacy_dep(DEPRELS[r]) if r >= 0 else "dep") for r in deprels]
    doc.from_array([HEAD, DEP], array)


def blank_annotation(doc: Doc) -> Annotation:
    """What blank tokens get (no tag, no relation: -1), each hanging from the word before it (or after it)."""
    blank = np.array([is_blank(t.text) for t in doc], dtype=bool)
    heads = np.arange(len(doc))
    words = np.flatnonzero(~blank)
    if len(words) and blank.any():
        before = np.searchsorted(words, np.flatnonzero(blank)) - 1
        heads[blank] = words[np.maximum(before, 0)]
    return np.full(len(doc), -1, np.int64), heads, np.full(len(doc), -1, np.int64), np.full(len(doc), np.nan)


def gold_sentences(examples: Iterable[Example], language_of: Callable[[Doc], Optional[str]],
                   longest: int = LONGEST_TREE) -> Dict[Optional[str], Sentences]:
    """The examples' sentences with their gold labels (aligned onto the predicted tokens), grouped by language."""
    groups: Dict[Optional[str], Tuple[list, list]] = {}
    for eg in examples:
        doc = eg.predicted
        if not len(doc):
            continue
        pos = eg.get_aligned("POS", as_string=True)
        heads, deps = eg.get_aligned_parse(projectivize=False)
        if not eg.reference.has_annotation("DEP"):  # no parse: spaCy reports every head as the word itself
            heads = [None] * len(heads)
        words, labels = groups.setdefault(language_of(doc), ([], []))
        bounds = eg.reference if len(eg.reference) == len(doc) else doc
        for indices in sentence_words(bounds, longest):
            position = {int(t): k + 1 for k, t in enumerate(indices)}  # token index -> CoNLL-U word number
            words.append([doc[int(t)].text for t in indices])
            for t in map(int, indices):
                head = None if heads[t] is None else (0 if heads[t] == t else position.get(heads[t]))
                labels.append((UPOS_ID.get(pos[t] or "", -1), -1 if head is None else head,
                               DEPREL_ID.get(universal_deprel(deps[t] or ""), -1) if head is not None else -1))
    result = {}
    for lang, (words, labels) in groups.items():
        array = np.array(labels, dtype=np.int64).reshape(-1, 3)
        result[lang] = Sentences(words, lang, array[:, 0], array[:, 1], array[:, 2])
    return result


def annotated_sentences(examples: Iterable[Union[Example, Doc]], lang: str,
                        longest: int = LONGEST_TREE) -> Sentences:
    """A few annotated sentences of `lang` (Examples or gold Docs) for adaptation; ValueError on bad input."""
    examples = [eg if isinstance(eg, Example) else Example(unannotated(eg), eg) for eg in examples]
    check_labels(examples)
    sentences = gold_sentences(examples, lambda doc: lang, longest).get(lang)
    if sentences is None:
        raise ValueError("adapt needs at least one non-empty annotated sentence")
    return sentences


def raw_sentences(texts: Iterable[Union[str, Doc]], batch_size: int = 256,
                  longest: int = LONGEST_TREE) -> Iterator[Sentences]:
    """Raw text (strings, split by spaCy's multi-language tokenizer, or Docs) as batches of sentences."""
    import spacy

    tokenizer = spacy.blank("xx").tokenizer
    stream = iter(texts)
    while batch := list(islice(stream, batch_size)):
        docs = [tokenizer(t) if isinstance(t, str) else t for t in batch]
        words = [[doc[i].text for i in idx] for doc in docs for idx in sentence_words(doc, longest)]
        if words:
            yield Sentences(words)


def check_labels(examples: Sequence[Example]) -> None:
    """Adaptation examples must speak UD: 17 UPOS tags, universal relations (subtypes are stripped)."""
    bad = set()
    for eg in examples:
        for token in eg.reference:
            if token.pos_ and token.pos_ not in UPOS_ID:
                bad.add(f"POS {token.pos_!r}")
            if token.dep_ and universal_deprel(token.dep_) not in DEPREL_ID:
                bad.add(f"relation {token.dep_!r}")
    if bad:
        raise ValueError(f"Labels outside the UD inventory: {', '.join(sorted(bad))} (expected UD UPOS and "
                         "universal relations; `root` or `ROOT` for the root)")
