"""Frozen word vectors of whole treebank files, computed once and memory-mapped from the cache.

Training, evaluation and analysis all read features from here, so nothing runs the encoder twice on one file.
Cache key: encoder fingerprint (model files, layer, pooling) + the file's sha256 + the sentence limit.
"""
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from .concepts import relation_vectors
from .corpus import UDSentence, read_conllu, treebank_codes
from .encoders import FrozenEncoder, SentenceVectors
from .labels import DEPREL_ID, UPOS_ID
from .paths import cache_dir

logger = logging.getLogger(__name__)
_ARRAYS = ("words", "roots", "offsets", "upos", "heads", "deprels")


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
        return FeatureSet(np.asarray(self.words[index], np.float32), np.asarray(self.roots[ids], np.float32), offsets,
                          self.upos[index], self.heads[index], self.deprels[index], self.lang)

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


def extract_features(path: Union[str, Path], encoder: FrozenEncoder, max_sentences: int = 0,
                     use_cache: bool = True, progress: bool = True) -> FeatureSet:
    """Features of a CoNLL-U file (its first `max_sentences` sentences; 0 = all), from the cache when present."""
    path = Path(path)
    lang, treebank = treebank_codes(path)
    file_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    target = cache_dir() / "features" / encoder.fingerprint / f"{path.stem}-{file_hash}-n{max_sentences}"
    if use_cache and (target / "meta.json").exists():
        return _load(target, lang)
    sentences = read_conllu(path)
    if max_sentences:
        sentences = sentences[:max_sentences]
    features = FeatureSet.from_vectors(_encode(encoder, sentences, path.name, progress), sentences, lang)
    if use_cache:
        _save(features, target, {"file": str(path), "treebank": treebank, "encoder": encoder.name,
                                 "layer": encoder.layer, "pooling": encoder.pooling, "sentences": len(sentences)})
    return features


def _encode(encoder: FrozenEncoder, sentences: List[UDSentence], label: str, progress: bool) -> List[SentenceVectors]:
    from tqdm import tqdm

    chunk = 256
    vectors: List[SentenceVectors] = []
    start, n_words = time.perf_counter(), sum(map(len, sentences))
    with tqdm(total=n_words, desc=f"encoding {label}", unit="w", disable=not progress, leave=False) as bar:
        for i in range(0, len(sentences), chunk):
            batch = sentences[i : i + chunk]
            vectors += encoder([s.words for s in batch])
            bar.update(sum(map(len, batch)))
    seconds = time.perf_counter() - start
    logger.info("%s: %d words in %.1f s (%.0f words/s)", label, n_words, seconds, n_words / max(seconds, 1e-9))
    return vectors


def _save(features: FeatureSet, target: Path, meta: dict) -> None:
    """Write to a temporary folder and rename: a folder without meta.json is never trusted."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in _ARRAYS:
        array = getattr(features, name)
        np.save(tmp / f"{name}.npy", array.astype(np.float16) if name in ("words", "roots") else array)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _load(target: Path, lang: str) -> FeatureSet:
    arrays = {name: np.load(target / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
    return FeatureSet(lang=lang, **arrays)
