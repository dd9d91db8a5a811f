"""Feature batches: what the decoder reads. Word vectors of sentences, flat, with their offsets and (when known)
gold labels; no I/O here (the cache of whole treebank files is feature_cache)."""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .concepts import relation_vectors
from .corpus import UDSentence
from .encoders import SentenceVectors
from .labels import DEPREL_ID, UPOS_ID

#: The arrays of a FeatureSet, in order.
ARRAYS = ("words", "roots", "offsets", "upos", "heads", "deprels")


@dataclass
class FeatureSet:
    """Word vectors of a list of sentences, flat, with gold labels where known (-1 = unknown).

    words (N x width), roots (S x width): the sentence-start vectors; offsets (S + 1): where sentence s starts in
    `words`; upos, deprels: label ids; heads: 0 = root, k = k-th word of the sentence (CoNLL-U style).
    """

    words: np.ndarray
    roots: np.ndarray
    offsets: np.ndarray
    upos: np.ndarray
    heads: np.ndarray
    deprels: np.ndarray
    lang: Optional[str] = None
    #: The words' forms, in order (the few-shot priors look them up); None where only vectors are known.
    forms: Optional[List[str]] = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_words(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def from_vectors(cls, vectors: Sequence[SentenceVectors], sentences: Optional[Sequence[UDSentence]] = None,
                     lang: Optional[str] = None) -> "FeatureSet":
        """Pack encoder output (and, when given, the sentences' gold labels) into one flat FeatureSet."""
        lengths = [len(words) for words, _ in vectors]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n = int(offsets[-1])
        width = vectors[0][0].shape[1] if vectors else 0
        words = np.concatenate([w for w, _ in vectors]) if vectors else np.zeros((0, width), np.float32)
        roots = np.stack([r for _, r in vectors]) if vectors else np.zeros((0, width), np.float32)
        upos, heads, deprels = (np.full(n, -1, dtype) for dtype in (np.int16, np.int32, np.int16))
        if sentences is not None:
            upos[:] = [UPOS_ID[t] for s in sentences for t in s.upos]
            heads[:] = [h for s in sentences for h in s.heads]
            deprels[:] = [DEPREL_ID[r] for s in sentences for r in s.deprels]
        return cls(words, roots, offsets, upos, heads, deprels, lang)

    def select(self, sentence_ids: Sequence[int]) -> "FeatureSet":
        """The given sentences, copied into float32 arrays (cheap: used for episodes and batches)."""
        ids = np.asarray(sentence_ids, dtype=np.int64)
        starts, ends = self.offsets[ids], self.offsets[ids + 1]
        index = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if len(ids) else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
        forms = None if self.forms is None else [self.forms[i] for i in index]
        return FeatureSet(np.asarray(self.words[index], np.float32), np.asarray(self.roots[ids], np.float32), offsets,
                          self.upos[index], self.heads[index], self.deprels[index], self.lang, forms)

    @classmethod
    def concat(cls, feature_sets: Sequence["FeatureSet"]) -> "FeatureSet":
        """Several FeatureSets as one (e.g. pooled source languages)."""
        offsets, words = [0], 0
        for f in feature_sets:
            offsets += list(np.asarray(f.offsets[1:]) + words)
            words += f.n_words
        cat = lambda name: np.concatenate([np.asarray(getattr(f, name)) for f in feature_sets])  # noqa: E731
        return cls(cat("words").astype(np.float32), cat("roots").astype(np.float32), np.array(offsets),
                   cat("upos"), cat("heads"), cat("deprels"))

    def sentence(self, s: int) -> SentenceVectors:
        return self.words[self.offsets[s] : self.offsets[s + 1]], self.roots[s]

    def relation_vectors(self, heads: Optional[np.ndarray] = None) -> np.ndarray:
        """h(head) - h(dependent) for every word, with the gold heads unless others are given."""
        heads = self.heads if heads is None else heads
        return relation_vectors(self.words, self.roots, self.offsets, np.maximum(heads, 0))


@dataclass
class Sentences:
    """The model's input: sentences of one language as lists of word forms, with gold labels when training
    (flat over the words, as in a FeatureSet: UPOS and relation ids, heads 0 = root / k = k-th word; -1 = unknown)."""

    words: List[List[str]]
    lang: Optional[str] = None
    upos: Optional[np.ndarray] = None
    heads: Optional[np.ndarray] = None
    deprels: Optional[np.ndarray] = None

    @property
    def forms(self) -> List[str]:
        return [word for sentence in self.words for word in sentence]
